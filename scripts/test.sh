#!/usr/bin/env bash
# Runs the whole test suite: domain unit tests, every integration test against both the
# embedded SQLite store and PostgreSQL (WAGATE_TEST_DATABASE_URL, default: the local server), and
# the dashboard's browser tests in headless Chromium (installed here when missing), then checks the
# OpenAPI document against a live server with schemathesis (scripts/schemathesis.sh).
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

# The browser tests drive Debian's Chromium through chromedriver. Install both when missing and we
# may (root, apt available); otherwise the tests skip loudly (or fail under CI).
if ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium and chromium-driver for the browser tests..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "warning: chromium / chromedriver missing and cannot install them (not root or no apt-get)" >&2
  fi
fi

cargo test --workspace --locked "$@"

# The OpenAPI document against the live server (schemathesis in a pinned venv under target/;
# prints "N passed, N failed" last).
scripts/schemathesis.sh
