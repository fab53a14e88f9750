#!/usr/bin/env bash
# `make test`: the whole suite with -race against real Redis and PostgreSQL.
# Uses HERALD_TEST_REDIS_URL / HERALD_TEST_DATABASE_URL when both are set (and stops at once if they
# do not answer); otherwise starts throwaway servers under .herald/test-services and stops them after.
set -euo pipefail
cd "$(dirname "$0")/../.."

# The scale tests (files built with `!race`: the detector slows their hot loops tenfold) in a
# pass of their own without it, then the whole suite with the race detector. Extra arguments
# (make bench) run once, as given.
run_tests() {
  if [ $# -gt 0 ]; then
    go test ${HERALD_RACE--race} -count=1 -timeout 20m "$@" ./...
    return
  fi
  if [ -n "${HERALD_RACE--race}" ]; then
    echo "--- scale tests (without -race)"
    go test -count=1 -timeout 20m -run '^TestScale' ./tasks/
  fi
  go test ${HERALD_RACE--race} -count=1 -timeout 20m ./...
}

if [ -n "${HERALD_TEST_REDIS_URL:-}" ] || [ -n "${HERALD_TEST_DATABASE_URL:-}" ]; then
  [ -n "${HERALD_TEST_REDIS_URL:-}" ] && [ -n "${HERALD_TEST_DATABASE_URL:-}" ] \
    || { echo "make test: set both HERALD_TEST_REDIS_URL and HERALD_TEST_DATABASE_URL, or neither" >&2; exit 2; }
  go run ./internal/devsvc/ping || exit 2
  run_tests "$@"
  exit
fi

dir=".herald/test-services/$$"
mkdir -p "$dir"
cleanup() {
  deploy/dev/services.sh stop "$dir"
  [ -f "$dir/pgdir" ] && rm -rf "$(dirname "$(cat "$dir/pgdir")")"
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
eval "$(deploy/dev/services.sh start "$dir")"
export HERALD_TEST_REDIS_URL HERALD_TEST_DATABASE_URL
go run ./internal/devsvc/ping
run_tests "$@"
