#!/usr/bin/env bash
# Runs the whole test suite: domain unit tests, and every integration test against both the
# embedded SQLite store and PostgreSQL (WAGATE_TEST_DATABASE_URL, default: the local server).
set -euo pipefail
cd "$(dirname "$0")/.."

export WAGATE_TEST_DATABASE_URL="${WAGATE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"

# PostgreSQL must answer: start the local cluster if it is installed but stopped.
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -d "$WAGATE_TEST_DATABASE_URL"; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    for v in /etc/postgresql/*; do
      pg_ctlcluster --skip-systemctl-redirect "$(basename "$v")" main start || true
    done
    for _ in $(seq 1 30); do pg_isready -q -d "$WAGATE_TEST_DATABASE_URL" && break; sleep 1; done
  fi
fi

exec cargo test --workspace --locked "$@"
