#!/usr/bin/env python3
"""Three gateways on one PostgreSQL database, as a new user would run them (issue 22, ADR 0026).

Starts a model stub (OpenAI-shaped, answers after --model-delay seconds) and three `wagate serve`
processes (node ids gw1..gw3) on a fresh database, creates --accounts sandbox accounts, then sends
--messages messages spread over --chats chats round-robin to the three nodes (a chat's next message
after its previous one was answered). After --kill-after acknowledgements it SIGKILLs the node
that runs the first account, keeps sending to the other two, and at the end prints how many
messages were acknowledged, answered once, answered twice or not at all, the takeover time and
where each account runs. Exit code 0 only when every acknowledged message got exactly one reply.

    cargo build --release
    python3 scripts/cluster-scenario.py                       # 300 messages, 30 chats, kill after 120
    python3 scripts/cluster-scenario.py --binary target/debug/wagate --kill-after 0

Needs python3 (standard library only), `psql`, and PostgreSQL at --database (trust auth, or a
URL with the password). Everything listens on 127.0.0.1.
"""

import argparse
import base64
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stub(http.server.BaseHTTPRequestHandler):
    delay = 0.3

    def do_POST(self):
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        time.sleep(Stub.delay)
        body = json.dumps({
            "id": "chatcmpl-scenario", "object": "chat.completion", "model": "stub",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "answered"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
        }).encode()
        try:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway that asked was killed

    def log_message(self, *args):
        pass


def call(base, token, method, path, body=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("authorization", "Bearer " + token)
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
    except (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout) as e:
        return 0, str(e)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="target/release/wagate")
    ap.add_argument("--database", default="postgres://postgres@127.0.0.1:5432")
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--chats", type=int, default=30)
    ap.add_argument("--accounts", type=int, default=3)
    ap.add_argument("--kill-after", type=int, default=120, help="acknowledgements before the SIGKILL (0: no kill)")
    ap.add_argument("--model-delay", type=float, default=0.3)
    ap.add_argument("--lease-seconds", type=int, default=10)
    args = ap.parse_args()

    db = "wagate_scenario_%d" % os.getpid()
    subprocess.run(["psql", args.database + "/postgres", "-qc", "CREATE DATABASE " + db], check=True)
    url = args.database + "/" + db
    Stub.delay = args.model_delay
    stub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    stub_url = "http://127.0.0.1:%d/v1" % stub.server_address[1]

    work = tempfile.mkdtemp(prefix="wagate-scenario-")
    env = dict(os.environ)
    env.update({
        "WAGATE_DATABASE_URL": url,
        "WAGATE_JWT_SECRET": base64.b64encode(os.urandom(48)).decode(),
        "WAGATE_MASTER_KEY": base64.b64encode(os.urandom(64)).decode(),
        "WAGATE_ADMIN_PASSWORD": "scenario Kettle 7 umbrella orbit",
        "WAGATE_ALLOW_PRIVATE_NETWORKS": "127.0.0.0/8",
        "WAGATE_API_RATE_LIMIT_PER_SECOND": "0",
        "WAGATE_LEASE_SECONDS": str(args.lease_seconds),
        "RUST_LOG": "warn",
    })
    nodes = {}
    for i in (1, 2, 3):
        port = free_port()
        node_env = dict(env, WAGATE_NODE_ID="gw%d" % i, WAGATE_LISTEN="127.0.0.1:%d" % port,
                        WAGATE_DATA_DIR=os.path.join(work, "gw%d" % i))
        log = open(os.path.join(work, "gw%d.log" % i), "w")
        proc = subprocess.Popen([args.binary, "serve"], env=node_env, stdout=log, stderr=log)
        nodes["gw%d" % i] = {"proc": proc, "base": "http://127.0.0.1:%d" % port}
    token = subprocess.run([args.binary, "admin-token"], env=env, capture_output=True, text=True,
                           check=True).stdout.strip().split()[-1]
    for n in nodes.values():
        for _ in range(300):
            if call(n["base"], token, "GET", "/healthz")[0] == 200:
                break
            time.sleep(0.1)
    first = nodes["gw1"]["base"]
    status, body = call(first, token, "PUT", "/v1/ai/global", {
        "enabled": True, "base_url": stub_url, "api_key": "sk-scenario", "model_name": "stub",
        "reply_delay_seconds": 0, "timeout_seconds": 30, "loop_guard_quick_seconds": 0})
    assert status == 200, body
    accounts = ["shop%d" % i for i in range(args.accounts)]
    for a in accounts:
        status, body = call(first, token, "POST", "/v1/accounts", {"id": a, "transport": "sandbox"})
        assert status == 201, body

    def owners(base):
        status, body = call(base, token, "GET", "/v1/nodes")
        if status != 200:
            return {}
        return {a["account_id"]: n["node_id"] for n in body["nodes"] for a in n["accounts"]}

    deadline = time.time() + 30
    while len(owners(first)) < len(accounts) and time.time() < deadline:
        time.sleep(0.2)
    print("accounts by node:", owners(first))

    acked, answers = [], {}
    lock = threading.Lock()
    killed = {"at": None, "node": None}
    alive = set(nodes)
    per_chat = args.messages // args.chats

    def replies_of(account, chat_id=None):
        rows, cursor = [], None
        while True:
            q = "/v1/ai/logs?account_id=%s&limit=500" % account + ("&cursor=" + cursor if cursor else "")
            if chat_id:
                q += "&chat_id=" + chat_id
            for base in [nodes[n]["base"] for n in sorted(alive)]:
                status, body = call(base, token, "GET", q)
                if status == 200:
                    break
                if 400 <= status < 500:
                    raise SystemExit("GET %s: %d %s" % (q, status, body))
            else:
                return rows
            rows += body["items"]
            cursor = body.get("next_cursor")
            if not cursor:
                return rows

    def watch_takeover():
        base = nodes[sorted(alive)[0]]["base"]
        while time.time() < killed["at"] + 60:
            now = owners(base)
            if killed["node"] not in now.values() and len(now) == len(accounts):
                killed["takeover"] = time.time() - killed["at"]
                return
            time.sleep(0.05)

    def chat(c):
        account = accounts[c % len(accounts)]
        jid = "4917%08d@s.whatsapp.net" % c
        for k in range(per_chat):
            mid = "sc-%d-%d" % (c, k)
            while True:
                with lock:
                    live = sorted(alive)
                node = live[(c + k) % len(live)]
                status, body = call(nodes[node]["base"], token, "POST",
                                    "/v1/accounts/%s/sandbox/inbound" % account,
                                    {"chat_id": jid, "from": "4917%08d" % c, "text": "question %d" % k, "id": mid})
                if status == 202:
                    break
                time.sleep(0.2)  # the node died under us: send to another (a webhook sender retries too)
            with lock:
                acked.append((account, mid))
                if args.kill_after and killed["at"] is None and len(acked) >= args.kill_after:
                    victim = owners(first if "gw1" in alive else nodes[sorted(alive)[0]]["base"]).get(accounts[0])
                    if victim:
                        nodes[victim]["proc"].send_signal(signal.SIGKILL)
                        alive.discard(victim)
                        killed.update(at=time.time(), node=victim)
                        print("SIGKILL %s after %d acknowledgements" % (victim, len(acked)))
                        threading.Thread(target=watch_takeover, daemon=True).start()
            end = time.time() + 60
            while time.time() < end:
                rows = [r for r in replies_of(account, jid) if r["trigger_message_id"] == mid]
                if any(r["status"] in ("sent", "failed", "skipped") for r in rows):
                    break
                time.sleep(0.05)

    started = time.time()
    with ThreadPoolExecutor(max_workers=args.chats) as pool:
        list(pool.map(chat, range(args.chats)))
    elapsed = time.time() - started
    takeover = None
    if killed["at"]:
        moved = killed.get("takeover")
        takeover = ("every account of %s runs on another node %.2f s after the SIGKILL" % (killed["node"], moved)
                    if moved is not None else "the accounts of %s did not move within 60 s" % killed["node"])

    once = twice = none = failed = 0
    by_account = {a: replies_of(a) for a in accounts}
    for account, mid in acked:
        rows = [r for r in by_account[account] if r["trigger_message_id"] == mid]
        sent = [r for r in rows if r["status"] == "sent"]
        if len(rows) > 1 or len(sent) > 1:
            twice += 1
        elif sent:
            once += 1
        elif rows and rows[0]["status"] in ("failed", "skipped"):
            failed += 1
        else:
            none += 1
    print("acknowledged %d in %.1f s: answered once %d, more than once %d, failed/skipped %d, unanswered %d"
          % (len(acked), elapsed, once, twice, failed, none))
    if takeover:
        print("takeover:", takeover)
    print("accounts by node now:", owners(nodes[sorted(alive)[0]]["base"]))
    print("logs in", work)
    for n in nodes.values():
        if n["proc"].poll() is None:
            n["proc"].send_signal(signal.SIGTERM)
    for n in nodes.values():
        n["proc"].wait(timeout=30)
    stub.shutdown()
    subprocess.run(["psql", args.database + "/postgres", "-qc", "DROP DATABASE " + db], check=False)
    sys.exit(0 if once == len(acked) else 1)


if __name__ == "__main__":
    main()
