#!/usr/bin/env bash
# Throwaway (or kept) Redis and PostgreSQL for Herald's tests and for `make run`.
#
#   services.sh start DIR   start both servers with their data under DIR, print `export` lines
#   services.sh stop DIR    stop what `start DIR` started
#
# Installs redis-server and postgresql from Debian packages when they are missing and we are root.
# HERALD_PG_FSYNC=on keeps PostgreSQL's durability settings (benchmarks); tests run with fsync off.
# initdb and postgres refuse to run as root, so as root they run as the `postgres` user, with data
# and sockets in a folder that user can reach (DIR if it can, otherwise a folder under /tmp).
set -euo pipefail

die() { echo "services.sh: $*" >&2; exit 1; }

pg_bindir() {
  local d
  if command -v pg_config >/dev/null 2>&1; then
    d=$(pg_config --bindir 2>/dev/null || true)
    [ -x "$d/initdb" ] && { echo "$d"; return; }
  fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && { echo "$d"; return; }
  done
  d=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)")
  [ -x "$d/initdb" ] && { echo "$d"; return; }
  return 1
}

ensure_installed() {
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  pg_bindir >/dev/null || missing+=(postgresql)
  [ ${#missing[@]} -eq 0 ] && return
  [ "$(id -u)" = 0 ] || die "missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"
  echo "services.sh: installing ${missing[*]} from Debian packages (log: /tmp/herald-apt.log)" >&2
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >/tmp/herald-apt.log 2>&1; then
    tail -20 /tmp/herald-apt.log >&2
    die "apt-get install ${missing[*]} failed"
  fi
  # Debian's package starts its own cluster; we do not use it, and leave it as the package set it up.
}

spare_port() {
  local p
  for _ in $(seq 1 50); do
    p=$(( (RANDOM % 20000) + 20000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  die "no spare port found"
}

as_pg() {
  # From /: the postgres user may not be able to enter the current folder (a 0700 home).
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# pgdir DIR: where postgres keeps its data; reachable by the postgres user.
pgdir_for() {
  local dir=$1
  if [ "$(id -u)" != 0 ]; then echo "$dir/pg"; return; fi
  id postgres >/dev/null 2>&1 || die "user postgres does not exist (is the postgresql package installed?)"
  if runuser -u postgres -- test -x "$dir" 2>/dev/null && runuser -u postgres -- test -w "$dir/pgbox" 2>/dev/null; then
    echo "$dir/pgbox/pg"; return
  fi
  if [ -f "$dir/pgdir" ]; then cat "$dir/pgdir"; return; fi
  local t; t=$(mktemp -d /tmp/herald-pg.XXXXXX)
  chmod 755 "$t"; chown postgres "$t"
  echo "$t/pg" > "$dir/pgdir"
  echo "$t/pg"
}

start() {
  local dir=$1
  mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
  ensure_installed
  local bindir; bindir=$(pg_bindir) || die "PostgreSQL server binaries (initdb, pg_ctl) not found"

  # Redis, AOF on.
  local rport; rport=$(spare_port)
  mkdir -p "$dir/redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$rport" --dir "$dir/redis" \
    --appendonly yes --save "" --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/redis.log" >/dev/null
  echo "$rport" > "$dir/redis.port"

  # PostgreSQL.
  if [ "$(id -u)" = 0 ]; then mkdir -p "$dir/pgbox"; chown postgres "$dir/pgbox"; fi
  local pg; pg=$(pgdir_for "$dir")
  local pport; pport=$(spare_port)
  if [ ! -f "$pg/PG_VERSION" ]; then
    as_pg mkdir -p "$pg"
    as_pg "$bindir/initdb" -D "$pg" -A trust -U postgres -E UTF8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  fi
  as_pg mkdir -p "$pg/../sock"
  as_pg "$bindir/pg_ctl" -D "$pg" -l "$pg/../postgres.log" -w -t 60 \
    -o "-p $pport -k $pg/../sock -c listen_addresses=127.0.0.1 -c fsync=${HERALD_PG_FSYNC:-off} -c synchronous_commit=${HERALD_PG_FSYNC:-off} -c max_connections=300" start >/dev/null \
    || { cat "$pg/../postgres.log" >&2 || true; die "postgres did not start"; }
  echo "$pport" > "$dir/pg.port"
  echo "$pg" > "$dir/pgdata"

  echo "export HERALD_TEST_REDIS_URL=redis://127.0.0.1:$rport/0"
  echo "export HERALD_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$pport/postgres?sslmode=disable"
}

stop() {
  local dir=$1
  [ -d "$dir" ] || return 0
  if [ -f "$dir/redis/redis.pid" ]; then
    kill "$(cat "$dir/redis/redis.pid")" 2>/dev/null || true
    rm -f "$dir/redis/redis.pid"
  fi
  if [ -f "$dir/pgdata" ]; then
    local bindir pg; bindir=$(pg_bindir) || true; pg=$(cat "$dir/pgdata")
    [ -n "$bindir" ] && as_pg "$bindir/pg_ctl" -D "$pg" -m fast -w stop >/dev/null 2>&1 || true
  fi
}

createdb() {
  local dir=$1 name=$2 bindir port
  bindir=$(pg_bindir) || die "PostgreSQL binaries not found"
  port=$(cat "$dir/pg.port")
  as_pg "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'" | grep -q 1 \
    || as_pg "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres "$name"
}

case "${1:-}" in
  createdb) [ $# -eq 3 ] || die "usage: services.sh createdb DIR NAME"; createdb "$2" "$3" ;;
  start) [ $# -eq 2 ] || die "usage: services.sh start DIR"; start "$2" ;;
  stop)  [ $# -eq 2 ] || die "usage: services.sh stop DIR"; stop "$2" ;;
  *) die "usage: services.sh start|stop DIR" ;;
esac
