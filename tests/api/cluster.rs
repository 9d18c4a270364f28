//! Several gateways on one PostgreSQL database (issue 22, ADR 0026): node ids are unique among
//! live processes, the accounts are spread over the nodes by leases, any node takes any request
//! and every message is answered exactly once by the account's owner, a stopping node hands its
//! accounts over at once, and an append under a lease that moved on is refused.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wagate::startup::{self, Running};

use crate::helpers::{eventually, Backend, Resp, TestApp};

const LEASE: &str = "3";

/// A first node `n1` on a fresh database, with echo replies.
async fn first_node() -> Option<TestApp> {
    let app = TestApp::spawn_with_settings(
        Backend::Postgres,
        &[
            ("WAGATE_NODE_ID", "n1"),
            ("WAGATE_LEASE_SECONDS", LEASE),
            // Many chats poll the AI log at once with one admin token.
            ("WAGATE_API_RATE_LIMIT_PER_SECOND", "0"),
        ],
    )
    .await?;
    app.echo_mode().await;
    // The tests' customers answer at once, like bots: the loop guard's quick answers stay off.
    let r = app
        .admin(
            "PUT",
            "/v1/ai/global",
            Some(json!({"loop_guard_quick_seconds": 0})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    Some(app)
}

/// Another node on `app`'s database.
async fn node(app: &TestApp, id: &str) -> Running {
    startup::start(app.config_as(id))
        .await
        .unwrap_or_else(|e| panic!("node {id} starts: {e}"))
}

/// An admin request to the node at `base`.
async fn at(app: &TestApp, base: &str, method: &str, path: &str, body: Option<Value>) -> Resp {
    let token = app.admin_token();
    app.call_at(base, method, path, Some(&token), body).await
}

/// Which node runs each account, once every account has a live owner and each of `nodes` runs
/// its fair share.
async fn spread(app: &TestApp, nodes: usize, accounts: usize) -> BTreeMap<String, String> {
    eventually(30, "the accounts are spread over the nodes", || async {
        let r = app.admin("GET", "/v1/nodes", None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let list = r.json["nodes"].as_array()?.clone();
        if list.len() != nodes || !r.json["unowned_accounts"].as_array()?.is_empty() {
            return None;
        }
        let fair = accounts.div_ceil(nodes);
        let mut owner = BTreeMap::new();
        for n in &list {
            let held = n["accounts"].as_array()?;
            if held.len() > fair || (held.is_empty() && accounts >= nodes) {
                return None;
            }
            for a in held {
                owner.insert(
                    a["account_id"].as_str()?.to_string(),
                    n["node_id"].as_str()?.to_string(),
                );
            }
        }
        (owner.len() == accounts).then_some(owner)
    })
    .await
}

/// The AI-log rows of `account` by trigger message id.
async fn replies(app: &TestApp, account: &str) -> HashMap<String, Vec<Value>> {
    let r = app
        .admin(
            "GET",
            &format!("/v1/ai/logs?account_id={account}&limit=500"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut by: HashMap<String, Vec<Value>> = HashMap::new();
    for row in r.json["items"].as_array().cloned().unwrap_or_default() {
        by.entry(row["trigger_message_id"].as_str().unwrap_or("").to_string())
            .or_default()
            .push(row);
    }
    by
}

/// Sends `messages` messages into each of `chats` chats of each account, one chat's messages one
/// after the other (the next once the previous is answered), the chats at once; message `k` of
/// chat `c` goes to node `(c + k) % nodes`. Every message must be answered exactly once.
async fn converse(
    app: &TestApp,
    bases: &[String],
    accounts: &[String],
    chats: usize,
    messages: usize,
) {
    let mut tasks = Vec::new();
    for (a, account) in accounts.iter().enumerate() {
        for c in 0..chats {
            let jid = format!("4917{:08}@s.whatsapp.net", a * 100 + c);
            let account = account.clone();
            let bases = bases.to_vec();
            let chat_no = a * chats + c;
            tasks.push(async move {
                for k in 0..messages {
                    let base = &bases[(chat_no + k) % bases.len()];
                    let id = format!("m-{account}-{c}-{k}");
                    let r = at(
                        app,
                        base,
                        "POST",
                        &format!("/v1/accounts/{account}/sandbox/inbound"),
                        Some(json!({"chat_id": jid, "from": "4917000", "text": format!("question {k}"), "id": id})),
                    )
                    .await;
                    assert_eq!(r.status, 202, "{}", r.text);
                    eventually(30, &format!("{id} is answered"), || async {
                        let rows = replies(app, &account).await.remove(&id)?;
                        rows.iter().any(|r| r["status"] == "sent").then_some(())
                    })
                    .await;
                }
            });
        }
    }
    futures::future::join_all(tasks).await;
    // Exactly one reply per message, sent; nothing failed or skipped.
    for account in accounts {
        let by = replies(app, account).await;
        assert_eq!(by.len(), chats * messages, "{account}: {by:?}");
        for (id, rows) in &by {
            assert_eq!(rows.len(), 1, "{id}: one reply, got {rows:?}");
            assert_eq!(rows[0]["status"], "sent", "{id}: {rows:?}");
        }
        for c in 0..chats {
            let a = accounts.iter().position(|x| x == account).unwrap_or(0);
            let jid = format!("4917{:08}@s.whatsapp.net", a * 100 + c);
            let r = app
                .admin(
                    "GET",
                    &format!("/v1/accounts/{account}/chats/{jid}/messages?limit=500"),
                    None,
                )
                .await;
            let out = r.json["items"]
                .as_array()
                .map(|l| l.iter().filter(|m| m["direction"] == "outbound").count())
                .unwrap_or(0);
            assert_eq!(out, messages, "{account}/{jid}: one answer per message");
        }
    }
}

/// A second process with the id of a live node refuses to start, with a message naming the
/// setting; the id is free again once that node stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_node_id_is_refused() {
    let Some(mut app) = first_node().await else {
        return;
    };
    let started = Instant::now();
    match startup::start(app.config_as("n1")).await {
        Ok(_) => panic!("a second n1 started"),
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains("WAGATE_NODE_ID") && text.contains("\"n1\""),
                "{text}"
            );
        }
    }
    // It waited to see whether n1 was alive: about one lease, not forever.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let r = app.admin("GET", "/v1/nodes", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["clustered"], true);
    assert_eq!(r.json["nodes"][0]["node_id"], "n1");
    assert_eq!(r.json["nodes"][0]["this_node"], true);
    // A restart (clean stop) takes the id back at once.
    let before = Instant::now();
    app.restart().await;
    assert!(
        before.elapsed() < Duration::from_secs(3),
        "{:?}",
        before.elapsed()
    );
}

/// Three nodes share six accounts (two each); 300 messages in 30 chats go round-robin to the
/// three and each gets exactly one reply (and one webhook delivery); a node that stops hands its
/// accounts to the others at once, and the conversation goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_answer_each_message_once() {
    let Some(app) = first_node().await else {
        return;
    };
    let accounts: Vec<String> = (0..6).map(|i| format!("acc{i}")).collect();
    for a in &accounts {
        app.create_account(a).await;
    }
    let n2 = node(&app, "n2").await;
    let n3 = node(&app, "n3").await;
    let owners = spread(&app, 3, accounts.len()).await;
    let owners_before = owners.clone();
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for n in owners.values() {
        *per_node.entry(n).or_default() += 1;
    }
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "{owners:?}"
    );

    // Webhooks keep working across nodes: each reply is delivered once, whichever node ran it.
    let receiver = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let r = app
        .admin(
            "POST",
            "/v1/webhooks",
            Some(json!({"url": format!("{}/hook", receiver.uri()), "events": ["ai.reply.sent"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    let bases = vec![
        app.base.clone(),
        format!("http://{}", n2.addr),
        format!("http://{}", n3.addr),
    ];
    converse(&app, &bases, &accounts, 5, 10).await;
    let delivered = || async {
        receiver
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r.headers.get("webhook-id").map(|v| v.as_bytes().to_vec()))
            .collect::<Vec<_>>()
    };
    eventually(30, "every reply's webhook is delivered", || async {
        (delivered().await.len() >= 300).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ids = delivered().await;
    let distinct: std::collections::HashSet<&Vec<u8>> = ids.iter().collect();
    assert_eq!(
        (ids.len(), distinct.len()),
        (300, 300),
        "one delivery per reply"
    );

    // n3 stops: its accounts move to n1 and n2 at once (not after a lease).
    let stopped = Instant::now();
    n3.stop().await;
    let owners = spread(&app, 2, accounts.len()).await;
    assert!(
        stopped.elapsed() < Duration::from_secs(3),
        "hand-over took {:?}",
        stopped.elapsed()
    );
    assert!(owners.values().all(|n| n != "n3"), "{owners:?}");
    // Each takeover is an event of the account's history (and an `account.owner.changed`
    // webhook): the accounts n3 ran name it as the previous owner.
    let moved = owners_before
        .iter()
        .filter(|(_, n)| n.as_str() == "n3")
        .map(|(a, _)| a.clone())
        .collect::<Vec<_>>();
    assert_eq!(moved.len(), 2, "{owners_before:?}");
    for account in &moved {
        let changes = eventually(10, "the takeover is recorded", || async {
            let r = app
                .admin(
                    "GET",
                    &format!("/v1/events?aggregate=account/{account}"),
                    None,
                )
                .await;
            let changes: Vec<Value> = r.json["items"]
                .as_array()?
                .iter()
                .filter(|e| e["type"] == "AccountOwnerChanged")
                .cloned()
                .collect();
            changes
                .last()
                .is_some_and(|e| e["payload"]["AccountOwnerChanged"]["previous"] == "n3")
                .then_some(changes)
        })
        .await;
        let last = &changes[changes.len() - 1];
        assert_eq!(
            last["payload"]["AccountOwnerChanged"]["node_id"],
            owners[account].as_str(),
            "{last}"
        );
        assert!(
            last["actor"]
                .as_str()
                .is_some_and(|a| a.starts_with("system:node:")),
            "{last}"
        );
    }
    let metrics = app.metrics().await;
    assert!(metrics.contains("wagate_account_leases_held"), "{metrics}");

    // Fresh chats on the two remaining nodes.
    let more: Vec<String> = accounts.iter().map(|a| a.to_string()).collect();
    let bases = vec![app.base.clone(), format!("http://{}", n2.addr)];
    let r = at(&app, &bases[1], "GET", "/v1/nodes", None).await;
    assert_eq!(
        r.json["nodes"].as_array().map(Vec::len),
        Some(2),
        "{}",
        r.text
    );
    converse_more(&app, &bases, &more).await;
    n2.stop().await;
}

/// A second round of messages in new chats (ids apart from the first round's).
async fn converse_more(app: &TestApp, bases: &[String], accounts: &[String]) {
    for (i, account) in accounts.iter().enumerate() {
        let base = &bases[i % bases.len()];
        let jid = format!("4918{:08}@s.whatsapp.net", i);
        let id = format!("late-{account}");
        let r = at(
            app,
            base,
            "POST",
            &format!("/v1/accounts/{account}/sandbox/inbound"),
            Some(json!({"chat_id": jid, "from": "4918000", "text": "still there?", "id": id})),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.text);
    }
    for account in accounts {
        let id = format!("late-{account}");
        eventually(30, &format!("{id} is answered"), || async {
            let rows = replies(app, account).await.remove(&id)?;
            (rows.len() == 1 && rows[0]["status"] == "sent").then_some(())
        })
        .await;
    }
}

/// An append made under a lease epoch that is no longer current is refused in the store, with
/// nothing written, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_under_a_moved_lease_is_refused() {
    use wagate::store::group_commit::{Append, Appended};
    let Some(app) = first_node().await else {
        return;
    };
    app.create_account("acme").await;
    let owners = spread(&app, 1, 1).await;
    assert_eq!(owners.get("acme").map(String::as_str), Some("n1"));
    let r = app.admin("GET", "/v1/nodes", None).await;
    let epoch = r.json["nodes"][0]["accounts"][0]["epoch"]
        .as_i64()
        .expect("an epoch");
    let append = |expected: i64, fence: i64| Append {
        aggregate_type: "chat",
        aggregate_id: "acme/491700000000@s.whatsapp.net".into(),
        expected,
        events: vec![(
            "AiReplySkipped".into(),
            "1".into(),
            json!({"AiReplySkipped": {"reply_id": format!("r{expected}"), "reason": "test"}})
                .to_string(),
        )],
        metadata: HashMap::from([("actor".to_string(), "system:test".to_string())]),
        fence: Some(fence),
    };
    let committed = app
        .app()
        .committer
        .append(append(0, epoch))
        .await
        .expect("store answers");
    assert!(matches!(committed, Appended::Committed(_)), "{committed:?}");
    // A takeover elsewhere moved the epoch on.
    let head = app.head().await;
    let refused = app
        .app()
        .committer
        .append(append(1, epoch - 1))
        .await
        .expect("store answers");
    assert_eq!(refused, Appended::Fenced);
    assert_eq!(app.head().await, head, "nothing written");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("wagate_fenced_appends_total 1"),
        "{metrics}"
    );
}

/// Real `wagate serve` processes on one fresh database (for SIGKILL and SIGSTOP), with one
/// sandbox account `acme` answered by a model stub that takes `model_delay`.
struct Processes {
    nodes: Vec<crate::helpers::Binary>,
    vars: HashMap<String, String>,
    http: reqwest::Client,
    token: String,
    _stub: wiremock::MockServer,
    _dir: tempfile::TempDir,
}

impl Processes {
    async fn start(ids: &[&str], model_delay: Duration) -> Option<Processes> {
        use wiremock::matchers::method;
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let dir = tempfile::tempdir().expect("tmp");
        let mut vars = TestApp::vars(Backend::Postgres, &dir).await?;
        vars.insert("WAGATE_LEASE_SECONDS".into(), LEASE.into());
        let token = TestApp::admin_token_for(&vars, "cluster-test");
        let stub = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(crate::replies::completion("answered"))
                    .set_delay(model_delay),
            )
            .mount(&stub)
            .await;
        let mut p = Processes {
            nodes: Vec::new(),
            vars,
            http: reqwest::Client::new(),
            token,
            _stub: stub,
            _dir: dir,
        };
        for id in ids {
            p.spawn(id).await;
        }
        let base = p.base(0);
        let (s, _) = p
            .call(
                &base,
                "POST",
                "/v1/accounts",
                Some(json!({"id": "acme", "transport": "sandbox"})),
            )
            .await;
        assert_eq!(s, 201);
        let stub_uri = p._stub.uri();
        let (s, _) = p
            .call(
                &base,
                "PUT",
                "/v1/ai/global",
                Some(
                    json!({"enabled": true, "base_url": format!("{stub_uri}/v1"), "api_key": "sk-x",
                            "reply_delay_seconds": 0, "timeout_seconds": 30}),
                ),
            )
            .await;
        assert_eq!(s, 200);
        Some(p)
    }

    /// Starts node `id` (again).
    async fn spawn(&mut self, id: &str) -> usize {
        let mut v = self.vars.clone();
        v.insert("WAGATE_NODE_ID".into(), id.into());
        self.nodes
            .push(crate::helpers::Binary::start(&v, "warn").await);
        self.nodes.len() - 1
    }

    fn base(&self, node: usize) -> String {
        self.nodes[node].base.clone()
    }

    fn pid(&self, node: usize) -> String {
        self.nodes[node].child.id().expect("running").to_string()
    }

    async fn call(
        &self,
        base: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut r = self
            .http
            .request(method, format!("{base}{path}"))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("send");
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().await.unwrap_or(Value::Null))
    }

    /// The node that runs acme, as `base` answers.
    async fn owner(&self, base: &str) -> Option<String> {
        let (_, nodes) = self.call(base, "GET", "/v1/nodes", None).await;
        nodes["nodes"].as_array()?.iter().find_map(|n| {
            n["accounts"]
                .as_array()?
                .iter()
                .any(|a| a["account_id"] == "acme")
                .then(|| n["node_id"].as_str().map(str::to_string))
                .flatten()
        })
    }

    /// Message `i` into its own chat, through `base` (once that node folded the account: a node
    /// reads the others' commits every second).
    async fn inbound(&self, base: &str, i: usize) {
        let (s, body) = eventually(10, "the node knows the account", || async {
            let (s, body) = self
                .call(
                    base,
                    "POST",
                    "/v1/accounts/acme/sandbox/inbound",
                    Some(
                        json!({"chat_id": format!("4917{i:08}@s.whatsapp.net"), "from": "4917",
                                "text": format!("question {i}"), "id": format!("k-{i}")}),
                    ),
                )
                .await;
            (s != 404).then_some((s, body))
        })
        .await;
        assert_eq!(s, 202, "{body}");
    }

    /// Waits until messages `0..n` are all answered, then checks each got exactly one reply and
    /// each chat exactly one answer.
    async fn all_answered_once(&self, base: &str, n: usize) {
        let rows = eventually(60, "every acknowledged message is answered", || async {
            let (_, logs) = self
                .call(base, "GET", "/v1/ai/logs?account_id=acme&limit=500", None)
                .await;
            let rows = logs["items"].as_array()?.clone();
            let sent = rows.iter().filter(|r| r["status"] == "sent").count();
            (sent == n).then_some(rows)
        })
        .await;
        assert_eq!(rows.len(), n, "one reply per message: {rows:?}");
        for i in 0..n {
            let jid = format!("4917{i:08}@s.whatsapp.net");
            let (_, msgs) = self
                .call(
                    base,
                    "GET",
                    &format!("/v1/accounts/acme/chats/{jid}/messages"),
                    None,
                )
                .await;
            let out = msgs["items"]
                .as_array()
                .map(|l| l.iter().filter(|m| m["direction"] == "outbound").count());
            assert_eq!(out, Some(1), "{jid}: {msgs}");
        }
    }
}

fn signal(pid: &str, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, pid])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// SIGKILL of the node that runs an account while its replies wait on the model: the other node
/// takes the account over within the lease and every acknowledged message is answered exactly
/// once (the replies the dead node had not recorded are worked on again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_owner_moves_its_account() {
    let Some(mut p) = Processes::start(&["n1", "n2"], Duration::from_millis(800)).await else {
        return;
    };
    let owner = eventually(20, "acme has an owner", || p.owner(&p.nodes[0].base)).await;
    let victim = usize::from(owner != "n1");
    let survivor = 1 - victim;
    // Messages on both nodes; the owner dies while their replies wait on the model.
    for i in 0..20 {
        p.inbound(&p.base(i % 2), i).await;
    }
    p.nodes[victim].kill9().await;
    let killed = Instant::now();
    let base = p.base(survivor);
    for i in 20..30 {
        p.inbound(&base, i).await;
    }
    let taken = eventually(20, "the survivor runs acme", || async {
        let owner = p.owner(&base).await?;
        (owner == ["n1", "n2"][survivor]).then(|| killed.elapsed())
    })
    .await;
    eprintln!("takeover after SIGKILL: {} ms", taken.as_millis());
    assert!(taken < Duration::from_secs(6), "takeover took {taken:?}");
    p.all_answered_once(&base, 30).await;
}

/// SIGSTOP of the owner past its lease, then SIGCONT: the other node took the account over, the
/// woken node finds its lease lost, commits nothing of the replies it had in flight (its reply
/// steps are refused) and nothing is answered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_cannot_answer_after_waking() {
    let Some(p) = Processes::start(&["n1", "n2"], Duration::from_millis(1500)).await else {
        return;
    };
    let owner = eventually(20, "acme has an owner", || p.owner(&p.nodes[0].base)).await;
    let paused = usize::from(owner != "n1");
    let other = 1 - paused;
    for i in 0..10 {
        p.inbound(&p.base(i % 2), i).await;
    }
    // The owner stops while the model answers its replies.
    signal(&p.pid(paused), "-STOP");
    let base = p.base(other);
    for i in 10..20 {
        p.inbound(&base, i).await;
    }
    eventually(20, "the other node runs acme", || async {
        (p.owner(&base).await? == ["n1", "n2"][other]).then_some(())
    })
    .await;
    signal(&p.pid(paused), "-CONT");
    p.all_answered_once(&base, 20).await;
    // The woken node learnt that it lost the lease.
    let woken = p.base(paused);
    eventually(20, "the woken node counts its lost lease", || async {
        let text = p
            .http
            .get(format!("{woken}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains("wagate_account_lease_changes_total{change=\"lost\"} 1")
            .then_some(())
    })
    .await;
    // Nothing more arrives late.
    tokio::time::sleep(Duration::from_secs(2)).await;
    p.all_answered_once(&base, 20).await;
}

/// A rolling restart of every node under load: each node in turn stops (handing its accounts
/// over) and comes back while messages keep arriving on the others; every message is answered
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_nothing() {
    let Some(mut p) = Processes::start(&["n1", "n2", "n3"], Duration::from_millis(300)).await
    else {
        return;
    };
    eventually(20, "acme has an owner", || p.owner(&p.nodes[0].base)).await;
    let mut sent = 0;
    for (round, id) in ["n1", "n2", "n3"].iter().enumerate() {
        // Messages on the other nodes while this one restarts.
        let others: Vec<String> = (0..p.nodes.len())
            .filter(|&n| n != round)
            .map(|n| p.base(n))
            .collect();
        for k in 0..5 {
            p.inbound(&others[k % others.len()], sent).await;
            sent += 1;
        }
        // SIGTERM: a clean stop hands the account over at once.
        signal(&p.pid(round), "-TERM");
        let _ = p.nodes[round].child.wait().await;
        for k in 0..5 {
            p.inbound(&others[k % others.len()], sent).await;
            sent += 1;
        }
        let old = std::mem::replace(&mut p.nodes[round], {
            let mut v = p.vars.clone();
            v.insert("WAGATE_NODE_ID".into(), (*id).into());
            crate::helpers::Binary::start(&v, "warn").await
        });
        drop(old);
    }
    p.all_answered_once(&p.base(0), sent).await;
}

/// A TCP relay to PostgreSQL that can be cut: while cut, it closes every relayed connection and
/// refuses new ones (the database unreachable from the gateway).
struct Relay {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    async fn start(upstream: String) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> =
            Default::default();
        let (c, list) = (cut.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                list.lock().expect("lock").push(task.abort_handle());
            }
        });
        Relay { port, cut, conns }
    }

    fn cut(&self, on: bool) {
        self.cut.store(on, std::sync::atomic::Ordering::SeqCst);
        if on {
            for c in self.conns.lock().expect("lock").drain(..) {
                c.abort();
            }
        }
    }
}

/// PostgreSQL unreachable for longer than the lease: the node stops running the account (its
/// lease could not be renewed), answers 503 meanwhile, and once the database is back takes the
/// account again and answers the messages it acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_unreachable_past_the_lease() {
    let Some(db) = crate::helpers::fresh_postgres_url().await else {
        return;
    };
    let mut url = url::Url::parse(&db).expect("url");
    let upstream = format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5432)
    );
    let relay = Relay::start(upstream).await;
    url.set_port(Some(relay.port)).expect("port");
    let dir = tempfile::tempdir().expect("tmp");
    let mut vars = TestApp::vars(Backend::Sqlite, &dir).await.expect("vars");
    vars.insert("WAGATE_DATABASE_URL".into(), url.to_string());
    vars.insert("WAGATE_NODE_ID".into(), "n1".into());
    vars.insert("WAGATE_LEASE_SECONDS".into(), LEASE.into());
    let app = TestApp::spawn_with(Backend::Postgres, dir, vars).await;
    app.echo_mode().await;
    app.create_account("acme").await;
    let jid = "491700000001@s.whatsapp.net";
    let send = |id: &'static str| {
        let app = &app;
        async move {
            app.admin(
                "POST",
                "/v1/accounts/acme/sandbox/inbound",
                Some(json!({"chat_id": jid, "from": "4917", "text": id, "id": id})),
            )
            .await
        }
    };
    assert_eq!(send("before").await.status, 202);
    eventually(20, "the first message is answered", || async {
        let rows = replies(&app, "acme").await.remove("before")?;
        (rows[0]["status"] == "sent").then_some(())
    })
    .await;

    relay.cut(true);
    tokio::time::sleep(Duration::from_secs(7)).await;
    // Meanwhile nothing can be acknowledged.
    let r = send("during").await;
    assert_eq!(r.status, 503, "{}", r.text);
    relay.cut(false);

    // Back: the node takes the account again and answers.
    let answered = eventually(30, "a message after the outage is answered", || async {
        let r = send("after").await;
        if r.status != 202 {
            return None;
        }
        let rows = replies(&app, "acme").await.remove("after")?;
        (rows[0]["status"] == "sent").then_some(rows)
    })
    .await;
    assert_eq!(answered.len(), 1);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("wagate_account_lease_changes_total{change=\"lost\"} 1"),
        "{metrics}"
    );
}

/// Debounce and human takeover across nodes: a burst of messages sent to different nodes gets
/// one answer (the newest, the older ones superseded), and an operator's message sent through a
/// node that does not run the account pauses the AI on the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debounce_and_takeover_across_nodes() {
    let Some(app) = first_node().await else {
        return;
    };
    app.create_account("acme").await;
    let r = app
        .admin("PUT", "/v1/ai/global", Some(json!({"debounce_seconds": 2})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let n2 = node(&app, "n2").await;
    let owners = spread(&app, 2, 1).await;
    let other = if owners["acme"] == "n1" {
        format!("http://{}", n2.addr)
    } else {
        app.base.clone()
    };
    let bases = [app.base.clone(), format!("http://{}", n2.addr)];
    let jid = "491700000042@s.whatsapp.net";
    for (i, base) in bases.iter().cycle().take(4).enumerate() {
        let r = at(
            &app,
            base,
            "POST",
            "/v1/accounts/acme/sandbox/inbound",
            Some(json!({"chat_id": jid, "from": "4917", "text": format!("part {i}"), "id": format!("b{i}")})),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.text);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let by = eventually(20, "the burst settles", || async {
        let by = replies(&app, "acme").await;
        (0..4)
            .all(|i| {
                by.get(&format!("b{i}")).is_some_and(|rows| {
                    rows.iter()
                        .any(|r| r["status"] != "pending" && r["status"] != "generated")
                })
            })
            .then_some(by)
    })
    .await;
    assert_eq!(by["b3"][0]["status"], "sent", "{by:?}");
    for i in 0..3 {
        let row = &by[&format!("b{i}")][0];
        assert_eq!(row["status"], "skipped", "{row}");
        assert_eq!(row["reason_code"], "superseded", "{row}");
    }

    // An operator answers through the node that does not run the account: the chat pauses.
    let r = at(
        &app,
        &other,
        "POST",
        &format!("/v1/accounts/acme/chats/{jid}/messages"),
        Some(json!({"text": "A person here"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    for (i, base) in bases.iter().enumerate() {
        let r = at(
            &app,
            base,
            "POST",
            "/v1/accounts/acme/sandbox/inbound",
            Some(
                json!({"chat_id": jid, "from": "4917", "text": "and now?", "id": format!("p-{i}")}),
            ),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.text);
    }
    let paused = eventually(
        20,
        "the messages after the operator are not answered",
        || async {
            let by = replies(&app, "acme").await;
            let rows: Vec<Value> = by
                .iter()
                .filter(|(id, _)| id.starts_with("p-"))
                .flat_map(|(_, rows)| rows.clone())
                .collect();
            (rows.len() == 2 && rows.iter().all(|r| r["status"] == "skipped")).then_some(rows)
        },
    )
    .await;
    // The newer one is skipped as paused; the older one may be superseded by it first.
    assert!(
        paused.iter().any(|r| r["reason_code"] == "paused_by_human"),
        "{paused:?}"
    );
    assert!(
        paused.iter().all(|r| ["paused_by_human", "superseded"]
            .contains(&r["reason_code"].as_str().unwrap_or(""))),
        "{paused:?}"
    );
    n2.stop().await;
}
