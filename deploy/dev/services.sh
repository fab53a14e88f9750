#!/usr/bin/env bash
# Throwaway (or kept) Redis and PostgreSQL for Herald's tests and for `make run`.
#
#   services.sh start DIR   start both servers with their data under DIR, print `export` lines;
#                           refuses (and stops nothing) when DIR's servers already run
#   services.sh stop DIR    stop what `start DIR` started, and nothing else
#   services.sh status DIR  exit 0 when a server of DIR runs, 1 when none does
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
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
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

# log_tail FILE WHAT: the end of a server's log on stderr, and where the whole log is.
log_tail() {
  local file=$1 what=$2
  if [ -f "$file" ]; then
    echo "services.sh: the last lines of $what's log ($file):" >&2
    tail -n 20 "$file" >&2 || true
  else
    echo "services.sh: $what wrote no log ($file)" >&2
  fi
}

# redis_pid DIR: the pid of the Redis that `start DIR` started, when it still runs. A stale pid
# file may name a number the system gave to another process since: only a redis-server working
# in DIR/redis is ours.
redis_pid() {
  local dir=$1 pid
  [ -f "$dir/redis/redis.pid" ] || return 1
  pid=$(cat "$dir/redis/redis.pid" 2>/dev/null || true)
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [ "$(readlink "/proc/$pid/cwd" 2>/dev/null || true)" = "$dir/redis" ] || return 1
  grep -qa redis-server "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

# pg_running DIR: whether the PostgreSQL that `start DIR` started still runs.
pg_running() {
  local dir=$1 bindir pg
  [ -f "$dir/pgdata" ] || return 1
  bindir=$(pg_bindir) || return 1
  pg=$(cat "$dir/pgdata")
  as_pg "$bindir/pg_ctl" -D "$pg" status >/dev/null 2>&1
}

# redis_up PORT: whether Redis answers PING on PORT.
redis_up() {
  [ "$(timeout 2 redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null || true)" = PONG ]
}

stop_redis() {
  local dir=$1 pid
  if pid=$(redis_pid "$dir"); then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
  fi
  rm -f "$dir/redis/redis.pid"
}

start() {
  local dir=$1
  mkdir -p "$dir"; dir=$(cd "$dir" && pwd -P)
  ensure_installed
  local bindir; bindir=$(pg_bindir) || die "PostgreSQL server binaries (initdb, pg_ctl) not found"

  # Never a second set of servers on one DIR: they would share Redis's AOF and PostgreSQL's data.
  local pid
  if pid=$(redis_pid "$dir"); then
    die "the Redis of $dir already runs (pid $pid, port $(cat "$dir/redis.port" 2>/dev/null || echo '?')); stop it first: $0 stop $dir"
  fi
  if pg_running "$dir"; then
    die "the PostgreSQL of $dir already runs (port $(cat "$dir/pg.port" 2>/dev/null || echo '?')); stop it first: $0 stop $dir"
  fi

  # Redis, AOF on.
  local rport; rport=$(spare_port)
  mkdir -p "$dir/redis"
  rm -f "$dir/redis/redis.pid"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$rport" --dir "$dir/redis" \
    --appendonly yes --save "" --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/redis.log" >/dev/null \
    || { log_tail "$dir/redis/redis.log" Redis; die "Redis did not start"; }
  local up=""
  for _ in $(seq 1 100); do redis_up "$rport" && { up=1; break; }; sleep 0.1; done
  [ -n "$up" ] || { log_tail "$dir/redis/redis.log" Redis; stop_redis "$dir"; die "Redis did not answer on port $rport"; }
  echo "$rport" > "$dir/redis.port"

  # PostgreSQL.
  if [ "$(id -u)" = 0 ]; then mkdir -p "$dir/pgbox"; chown postgres "$dir/pgbox"; fi
  local pg; pg=$(pgdir_for "$dir")
  local pgbox; pgbox=$(dirname "$pg")
  local pport; pport=$(spare_port)
  if [ ! -f "$pg/PG_VERSION" ]; then
    as_pg mkdir -p "$pg"
    as_pg "$bindir/initdb" -D "$pg" -A trust -U postgres -E UTF8 >"$dir/initdb.log" 2>&1 \
      || { log_tail "$dir/initdb.log" initdb; stop_redis "$dir"; die "initdb failed"; }
  fi
  as_pg mkdir -p "$pgbox/sock"
  echo "$pg" > "$dir/pgdata"
  local out
  if ! out=$(as_pg "$bindir/pg_ctl" -D "$pg" -l "$pgbox/postgres.log" -w -t 60 \
      -o "-p $pport -k $pgbox/sock -c listen_addresses=127.0.0.1 -c fsync=${HERALD_PG_FSYNC:-off} -c synchronous_commit=${HERALD_PG_FSYNC:-off} -c max_connections=300" \
      start 2>&1); then
    printf '%s\n' "$out" | tail -n 5 >&2
    log_tail "$pgbox/postgres.log" PostgreSQL; stop_redis "$dir"; die "PostgreSQL did not start"
  fi
  echo "$pport" > "$dir/pg.port"

  echo "export HERALD_TEST_REDIS_URL=redis://127.0.0.1:$rport/0"
  echo "export HERALD_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$pport/postgres?sslmode=disable"
}

stop() {
  local dir=$1
  [ -d "$dir" ] || return 0
  dir=$(cd "$dir" && pwd -P)
  stop_redis "$dir"
  if pg_running "$dir"; then
    local bindir pg; bindir=$(pg_bindir); pg=$(cat "$dir/pgdata")
    as_pg "$bindir/pg_ctl" -D "$pg" -m fast -w stop >/dev/null 2>&1 || echo "services.sh: PostgreSQL of $dir did not stop" >&2
  fi
}

status() {
  local dir=$1
  [ -d "$dir" ] || return 1
  dir=$(cd "$dir" && pwd -P)
  redis_pid "$dir" >/dev/null || pg_running "$dir" || return 1
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
  start)  [ $# -eq 2 ] || die "usage: services.sh start DIR"; start "$2" ;;
  stop)   [ $# -eq 2 ] || die "usage: services.sh stop DIR"; stop "$2" ;;
  status) [ $# -eq 2 ] || die "usage: services.sh status DIR"; status "$2" ;;
  *) die "usage: services.sh start|stop|status DIR, or createdb DIR NAME" ;;
esac
