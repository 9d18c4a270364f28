#!/usr/bin/env bash
# Where P2's memory goes: runs `wagate-bench p2` under heaptrack (system allocator, line tables)
# and prints the heap at its peak by owner (docs/PERFORMANCE.md, "P2 memory, by owner").
#
#   bash scripts/p2-heap.sh                       # 10,000 replies, model delay 30 s: all in flight
#   bash scripts/p2-heap.sh --replies 2000        # extra arguments go to `wagate-bench p2`
#   bash scripts/p2-heap.sh --analyze FILE.zst    # only the breakdown of an earlier recording
#
# Needs PostgreSQL as the benchmark does (WAGATE_BENCH_DATABASE_URL or the local default) and
# heaptrack (installed with apt-get when missing). Builds into target/heap-profile, so the normal
# release build is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

analyze() {
    local recording=$1 stacks
    stacks=$(mktemp)
    heaptrack_print -f "$recording" --print-peaks 0 --print-allocators 0 --print-leaks 0 \
        --print-temporary 0 --flamegraph-cost-type peak -F "$stacks" >/dev/null
    python3 - "$stacks" <<'EOF'
import collections, sys

# Frames are named "function (file)" by heaptrack, without generic arguments: owners are told
# apart by file.
OWNERS = [
    # reqwest's request future, hyper-util's pool and connect, hyper's HTTP/1 connection: its
    # dispatch channel and read and write buffers (the frames interleave through inlining).
    ("HTTP calls (reqwest, hyper: one HTTP/1 connection per concurrent call)",
     ("(dispatch.rs)", "(conn.rs)", "(http1.rs)", "(io.rs)", "(connect.rs)", "(client.rs)",
      "(request.rs)")),
    ("actor mailboxes (ractor: tokio channels per actor)", ("(actor_cell.rs)",)),
    ("actor message loops (ractor: one boxed future per actor)", ("(actor.rs)",)),
    ("tokio task cells", ("new<> (core.rs)",)),
]
OURS = ("(chat.rs)", "(worker.rs)", "(supervisor.rs)", "(account.rs)", "(reply.rs)",
        "(model_client.rs)", "(messages.rs)", "(group_commit.rs)", "(store.rs)")

peak = collections.Counter()
total = 0
for line in open(sys.argv[1]):
    stack, _, n = line.rstrip("\n").rpartition(" ")
    n = int(n)
    total += n
    # The innermost frame that names an owner decides (from the allocation outwards).
    owner = "other"
    for frame in reversed(stack.split(";")):
        hit = next((name for name, marks in OWNERS if any(m in frame for m in marks)), None)
        if hit is None and frame.endswith(OURS) and not frame.startswith("run_task"):
            hit = "wagate: " + frame
        if hit:
            owner = hit
            break
    peak[owner] += n

print(f"heap at its peak: {total / 1e6:.1f} MB (bytes asked for; the allocator adds its own)")
shown = 0
for name, n in peak.most_common():
    if n < total * 0.005:
        break
    shown += n
    print(f"  {n / 1e6:8.1f} MB  {100 * n / total:5.1f} %  {name}")
print(f"  {(total - shown) / 1e6:8.1f} MB  {100 * (total - shown) / total:5.1f} %  (smaller owners)")
EOF
    rm -f "$stacks"
}

if [[ ${1:-} == --analyze ]]; then
    analyze "$2"
    exit 0
fi

if ! command -v heaptrack >/dev/null; then
    apt-get update -qq && apt-get install -y -qq heaptrack >/dev/null
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/heap-profile}
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
    cargo build --release --locked -p wagate-bench --no-default-features
out=$(mktemp -d)/p2
# A model delay long enough for all replies to be in flight at once, even under heaptrack.
heaptrack -o "$out" "$CARGO_TARGET_DIR/release/wagate-bench" p2 --delay-ms 30000 \
    --phase-timeout-secs 300 "$@"
analyze "$out.zst"
echo "recording: $out.zst (heaptrack_gui or heaptrack_print for the stacks)"
