#!/usr/bin/env bash
# `make run`: the reference worker on local defaults. Redis and PostgreSQL are started from
# Debian packages with their data kept in .herald/services between runs; mail goes to the
# development mailbox (HERALD_SMTP_URL=capture://). Ctrl-C stops the worker and the servers.
#
# One `make run` per checkout: a lock on .herald/run.lock, held while this script runs. A second
# one says that Herald is already running and exits 1; it stops nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .herald
dir=.herald/services

# The lock lives on fd 9. Every program started below gets fd 9 closed (9>&-), so a server that
# outlives this script never holds the lock.
exec 9>>.herald/run.lock
if ! flock -n 9; then
  pid=$(cat .herald/run.pid 2>/dev/null || true)
  {
    echo "make run: Herald is already running from this checkout${pid:+ (make run, pid $pid)}; a second one would share its servers."
    echo "  Use it from another terminal (bin/enqueue reads .herald/dev.env), or stop it with Ctrl-C in its terminal and run make run again."
  } >&2
  exit 1
fi
echo $$ > .herald/run.pid

# Holding the lock, no other make run owns .herald/services: servers still running there were left
# by one that was killed before it could stop them.
if deploy/dev/services.sh status "$dir" 9>&-; then
  echo "make run: stopping the Redis and PostgreSQL that an earlier make run left running" >&2
  deploy/dev/services.sh stop "$dir" 9>&-
fi

# The servers' URLs come from services.sh below, never from the caller's environment.
unset HERALD_TEST_REDIS_URL HERALD_TEST_DATABASE_URL

cleanup() {
  echo; echo "stopping Redis and PostgreSQL…"
  deploy/dev/services.sh stop "$dir" 9>&-
  rm -f .herald/run.pid
}
trap cleanup EXIT
# Not eval "$(…)": that would hide a failed start, and run on without the servers.
services=$(deploy/dev/services.sh start "$dir" 9>&-) || exit 1
eval "$services"
deploy/dev/services.sh createdb "$dir" herald 9>&-
redis_url=$HERALD_TEST_REDIS_URL
db_url=${HERALD_TEST_DATABASE_URL%/postgres?sslmode=disable}/herald?sslmode=disable

# Keys made once and kept: rotating them would make sealed secrets unreadable.
[ -f .herald/secret_keys ] || echo "dev1:$(head -c 32 /dev/urandom | base64 -w0)" > .herald/secret_keys
[ -f .herald/reset_key ] || head -c 32 /dev/urandom | base64 -w0 > .herald/reset_key
chmod 600 .herald/secret_keys .herald/reset_key

cat > .herald/dev.env <<ENV
# Written by make run; read by bin/enqueue (and by you: set -a; . .herald/dev.env).
HERALD_REDIS_URL=$redis_url
HERALD_DATABASE_URL=$db_url
HERALD_SMTP_URL=capture://
HERALD_MAIL_FROM="Herald Dev <noreply@herald.localhost>"
HERALD_SECRET_KEYS=$(cat .herald/secret_keys)
HERALD_HTTP_ADDR=${HERALD_HTTP_ADDR:-127.0.0.1:8080}
HERALD_EXAMPLE_RESET_KEY=$(cat .herald/reset_key)
HERALD_EXAMPLE_BASE_URL=http://localhost:3000
ENV
chmod 600 .herald/dev.env
set -a; . .herald/dev.env; set +a
unset HERALD_TEST_REDIS_URL HERALD_TEST_DATABASE_URL  # set by services.sh's export lines; the worker does not read them

go build -o bin/worker ./cmd/worker 9>&-
go build -o bin/enqueue ./cmd/enqueue 9>&-
bin/worker migrate 9>&-
bin/worker seed-examples 9>&-

cat <<MSG

  Herald is starting with the development mailbox. In a second terminal:

    bin/enqueue dispatch accounts.password_reset --ref user=users/42
    bin/enqueue status <the id it printed>
    bin/enqueue mailbox list
    bin/enqueue mailbox show <mail id>

  Health: http://$HERALD_HTTP_ADDR/healthz   Ctrl-C stops everything.

MSG
bin/worker 9>&-
