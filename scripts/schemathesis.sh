#!/usr/bin/env bash
# Checks that the OpenAPI document served at GET /openapi.json is exact: schemathesis (pinned, in
# its own Python venv under target/) fuzzes every documented operation of a live `wagate serve`
# (loopback, port 0, a temporary data dir, the embedded SQLite store, an admin JWT from
# `wagate admin-token`) and fails on any of these checks:
#   not_a_server_error            no 5xx for any input (scripts/schemathesis.toml allows the
#                                 documented 502/503 of the routes that call out, with reasons)
#   status_code_conformance       every status answered is documented for that operation
#   response_schema_conformance   every body matches the documented schema
# The last line is `N passed, N failed` (operations), for CI.
#
# No request may leave loopback. When the kernel allows it (unprivileged user namespaces), the
# server and schemathesis run in a private network namespace that has only a loopback interface,
# so fuzzed model, webhook or Graph URLs cannot be reached whatever they are. Where that is not
# possible, the operations that can make the server call out are excluded (reasons below).
#
# Settings (environment): SCHEMATHESIS_MAX_EXAMPLES (default 30 per operation and phase),
# SCHEMATHESIS_SEED (default: random, fixed under CI; printed), WAGATE_BIN (a built binary; default: cargo build).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
VENV=target/schemathesis-venv
REQUIREMENTS=scripts/schemathesis-requirements.txt
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-30}"
# Under CI a fixed seed, so a red run is reproducible and a green one is not luck; by hand, random.
if [ -n "${CI:-}" ]; then default_seed=20261204; else default_seed="$RANDOM$RANDOM"; fi
SEED="${SCHEMATHESIS_SEED:-$default_seed}"

if [ "${1:-}" != "--inside" ]; then
  # 1. The pinned venv (re-created when the pinned set changes).
  stamp="$VENV/requirements.txt"
  if ! { [ -x "$VENV/bin/st" ] && cmp -s "$REQUIREMENTS" "$stamp"; }; then
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    if ! python3 -m venv "$VENV"; then
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing python3-venv for schemathesis..." >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq python3-venv >/dev/null
        rm -rf "$VENV"
        python3 -m venv "$VENV"
      else
        echo "error: python3 -m venv failed; install python3-venv (apt-get install python3-venv)" >&2
        exit 1
      fi
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    "$VENV/bin/st" --version | grep -qx "st, version $SCHEMATHESIS_VERSION"
    cp "$REQUIREMENTS" "$stamp"
  fi

  # 2. The server binary.
  if [ -z "${WAGATE_BIN:-}" ]; then
    cargo build --locked --quiet --bin wagate
    target_dir="$(cargo metadata --format-version 1 --no-deps |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
    export WAGATE_BIN="$target_dir/debug/wagate"
  fi
  export SCHEMATHESIS_SEED="$SEED"

  # 3. Run inside a network namespace with loopback only, when we may create one.
  if command -v unshare >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 &&
    unshare --user --map-root-user --net true 2>/dev/null; then
    exec unshare --user --map-root-user --net -- "$PWD/scripts/schemathesis.sh" --inside isolated
  fi
  echo "note: no private network namespace here (unshare --user --net refused);" \
    "excluding the operations that can call out (see scripts/schemathesis.sh)" >&2
  exec "$PWD/scripts/schemathesis.sh" --inside shared
fi

isolation="$2"
exclude=()
if [ "$isolation" = isolated ]; then
  ip link set lo up
else
  # Without a private namespace, these operations could make the server send traffic to a fuzzed
  # public address (the outbound guard refuses only private ones), so they are not fuzzed:
  # - the AI test routes call the configured model at once;
  # - AI settings, Cloud API accounts and webhook subscriptions store base URLs that later
  #   replies, sends and deliveries call (and their checks resolve the host name);
  # - inbound and outbound messages and redeliveries set those calls off.
  exclude+=(
    --exclude-operation-id chat_test --exclude-operation-id admin_test
    --exclude-operation-id put_global --exclude-operation-id put_account_ai
    --exclude-operation-id create_account --exclude-operation-id change_cloud_api
    --exclude-operation-id create_webhook --exclude-operation-id redeliver
    --exclude-operation-id sandbox_inbound --exclude-operation-id send_message
  )
fi
# Never fuzzed, in either mode: Meta's webhook (POST) is authenticated by an HMAC of the exact
# body under the account's app secret, so every generated request is a 401 before any parsing;
# its verification handshake (GET) is fuzzed.
exclude+=(--exclude-operation-id receive_webhook)

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A server of its own: nothing from the caller's environment may point it elsewhere.
while IFS= read -r var; do unset "$var"; done < <(env | sed -n 's/^\(\(WAGATE\|OPENAI\)_[A-Z0-9_]*\)=.*/\1/p' | grep -vx WAGATE_BIN)
export WAGATE_DATA_DIR="$work/data" WAGATE_LISTEN=127.0.0.1:0
export WAGATE_DATABASE_URL="sqlite://$work/data/wagate.db" RUST_LOG="${RUST_LOG:-warn}"
# WhatsApp Web accounts it creates connect to a closed loopback port, never to WhatsApp.
export WAGATE_WHATSAPP_WEB_URL="ws://127.0.0.1:9/ws/chat" WAGATE_WHATSAPP_WEB_VERSION="2.3000.1"
mkdir -p "$WAGATE_DATA_DIR"
: >"$work/serve.log" # exists before the server (a background job) opens it
"$WAGATE_BIN" serve >>"$work/serve.log" 2>&1 &
server_pid=$!
base=""
for _ in $(seq 1 300); do
  base="$(sed -n 's/^  API: *\(http:\/\/127\.0\.0\.1:[0-9]*\).*/\1/p' "$work/serve.log")"
  [ -n "$base" ] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    cat "$work/serve.log" >&2
    echo "error: wagate serve exited before listening" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$base" ]; then
  cat "$work/serve.log" >&2
  echo "error: wagate serve did not start within 30 s" >&2
  exit 1
fi
WAGATE_SCHEMATHESIS_TOKEN="$("$WAGATE_BIN" admin-token --ttl 2h)"
# POST /v1/auth/logout revokes the token it is sent with: a second session for that route only.
WAGATE_SCHEMATHESIS_LOGOUT_TOKEN="$("$WAGATE_BIN" admin-token --ttl 2h)"
export WAGATE_SCHEMATHESIS_TOKEN WAGATE_SCHEMATHESIS_LOGOUT_TOKEN
# POST /v1/ai/chat/test takes only account tokens: an account and a token of it for that route.
WAGATE_SCHEMATHESIS_ACCOUNT_TOKEN="$(python3 - "$base" <<'EOF'
import json, os, sys, urllib.request

def post(path, body):
    req = urllib.request.Request(
        sys.argv[1] + path, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json",
                 "Authorization": "Bearer " + os.environ["WAGATE_SCHEMATHESIS_TOKEN"]})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)

post("/v1/accounts", {"id": "schemathesis", "transport": "sandbox"})
print(post("/v1/accounts/schemathesis/tokens", {"name": "schemathesis"})["token"])
EOF
)"
export WAGATE_SCHEMATHESIS_ACCOUNT_TOKEN

echo "schemathesis $SCHEMATHESIS_VERSION against $base ($isolation network, seed $SCHEMATHESIS_SEED," \
  "$MAX_EXAMPLES examples per operation)"
# One worker: hypothesis describes its strategies with ast.parse, which CPython 3.11 does not
# allow from two threads at once ("AST constructor recursion depth mismatch").
# schemathesis keeps its state (a cache of past failures, replayed first) in its working
# directory: target/schemathesis-state, out of git.
repo="$PWD"
mkdir -p target/schemathesis-state
cd target/schemathesis-state
set +e
"$repo/$VENV/bin/st" --config-file "$repo/scripts/schemathesis.toml" run "$base/openapi.json" \
  --checks not_a_server_error,status_code_conformance,response_schema_conformance \
  --max-examples "$MAX_EXAMPLES" --seed "$SCHEMATHESIS_SEED" --workers 1 \
  --request-timeout 30 --suppress-health-check too_slow,filter_too_much \
  --report junit --report-junit-path "$work/junit.xml" \
  "${exclude[@]}"
status=$?
set -e

# One line for CI, from the JUnit report (one test case per operation).
summary="$(python3 - "$work/junit.xml" <<'EOF'
import sys, xml.etree.ElementTree as ET
try:
    cases = list(ET.parse(sys.argv[1]).getroot().iter("testcase"))
except (OSError, ET.ParseError):
    print("0 passed, 1 failed")
    sys.exit()
failed = sum(1 for c in cases if c.find("failure") is not None or c.find("error") is not None)
skipped = sum(1 for c in cases if c.find("skipped") is not None)
print(f"{len(cases) - failed - skipped} passed, {failed} failed")
EOF
)"
if [ "$status" != 0 ] && [ "${summary#* passed, }" = "0 failed" ]; then
  # schemathesis failed without a failing operation (an error of its own): count it.
  summary="${summary%%,*}, 1 failed"
fi
if [ "$status" != 0 ]; then
  echo "--- last lines of the server log ---" >&2
  grep -v -i password "$work/serve.log" | tail -n 40 >&2
fi
echo "$summary"
exit "$status"
