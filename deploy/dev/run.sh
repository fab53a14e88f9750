#!/usr/bin/env bash
# `make run`: the reference worker on local defaults. Redis and PostgreSQL are started from
# Debian packages with their data kept in .herald/services between runs; mail goes to the
# development mailbox (HERALD_SMTP_URL=capture://). Ctrl-C stops the worker and the servers.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .herald
dir=.herald/services

cleanup() { echo; echo "stopping Redis and PostgreSQL…"; deploy/dev/services.sh stop "$dir"; }
trap cleanup EXIT
eval "$(deploy/dev/services.sh start "$dir")"
deploy/dev/services.sh createdb "$dir" herald
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
unset HERALD_TEST_REDIS_URL HERALD_TEST_DATABASE_URL

go build -o bin/worker ./cmd/worker
go build -o bin/enqueue ./cmd/enqueue
bin/worker migrate
bin/worker seed-examples

cat <<MSG

  Herald is starting with the development mailbox. In a second terminal:

    bin/enqueue dispatch accounts.password_reset --ref user=users/42
    bin/enqueue status <the id it printed>
    bin/enqueue mailbox list
    bin/enqueue mailbox show <mail id>

  Health: http://$HERALD_HTTP_ADDR/healthz   Ctrl-C stops everything.

MSG
bin/worker
