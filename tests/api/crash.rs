//! Crash safety: the real binary killed with SIGKILL mid-reply, restarted on the same store.
//! Every acknowledged inbound message is there and answered once: a reply that never reached the
//! transport is worked on again (asked of the model, or its recorded answer delivered); only one
//! marked as handed to the transport could end `interrupted` (ADR 0025); nothing is sent twice.

use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{body_string_contains, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::both_stores;
use crate::helpers::{eventually, Backend, Binary, TestApp};
use crate::replies::completion;

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn call(&self, m: reqwest::Method, p: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self
            .http
            .request(m, format!("{}{p}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn row(&self, trigger: &str) -> Option<Value> {
        let (_, logs) = self
            .call(
                reqwest::Method::GET,
                "/v1/ai/logs?account_id=acme&limit=500",
                None,
            )
            .await;
        logs["items"]
            .as_array()?
            .iter()
            .find(|r| r["trigger_message_id"] == trigger)
            .cloned()
    }

    async fn inbound(&self, jid: &str, id: &str, text: &str) {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/v1/accounts/acme/sandbox/inbound",
                Some(json!({"chat_id": jid, "from": "4917", "text": text, "id": id})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
}

async fn kill_mid_reply(backend: Backend) {
    let dir = tempfile::tempdir().expect("tmp");
    let Some(vars) = TestApp::vars(backend, &dir).await else {
        return;
    };
    let token = TestApp::admin_token_for(&vars, "crash-test");
    let stub = MockServer::start().await;
    // The first call for "stuck" hangs past the kill; any other call answers at once.
    Mock::given(method("POST"))
        .and(body_string_contains("stuck in the model"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion("too late"))
                .set_delay(Duration::from_secs(60)),
        )
        .up_to_n_times(1)
        .mount(&stub)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("generated, waiting")))
        .mount(&stub)
        .await;

    let mut bin = Binary::start(&vars, "info").await;
    let c = Client {
        http: reqwest::Client::new(),
        base: bin.base.clone(),
        token: token.clone(),
    };
    c.call(
        reqwest::Method::POST,
        "/v1/accounts",
        Some(json!({"id": "acme", "transport": "sandbox"})),
    )
    .await;
    let (status, _) = c
        .call(
            reqwest::Method::PUT,
            "/v1/ai/global",
            Some(json!({"enabled": true, "base_url": format!("{}/v1", stub.uri()), "api_key": "sk-crash",
                        "reply_delay_seconds": 8, "timeout_seconds": 600})),
        )
        .await;
    assert_eq!(status, 200);
    let (a, b) = ("491700000001@s.whatsapp.net", "491700000002@s.whatsapp.net");
    // Chat A: generated, sleeping in reply_delay. Chat B: waiting on the model.
    c.inbound(a, "gen-1", "please answer").await;
    c.inbound(b, "stuck-1", "stuck in the model").await;
    eventually(20, "A generated", || async {
        c.row("gen-1").await.filter(|r| r["status"] == "generated")
    })
    .await;
    eventually(20, "B pending", || async {
        c.row("stuck-1").await.filter(|r| r["status"] == "pending")
    })
    .await;

    bin.kill9().await;

    let bin2 = Binary::start(&vars, "info").await;
    let c = Client {
        http: reqwest::Client::new(),
        base: bin2.base.clone(),
        token,
    };
    // Neither reply reached the transport: A's recorded answer is delivered (no second model
    // call), B is asked of the model again.
    for trigger in ["gen-1", "stuck-1"] {
        // B's new answer waits out the 8 s reply delay.
        let row = eventually(40, "the interrupted reply is answered", || async {
            c.row(trigger).await.filter(|r| r["status"] == "sent")
        })
        .await;
        assert_eq!(row["reply_text"], "generated, waiting", "{row}");
    }
    for jid in [a, b] {
        let (_, msgs) = c
            .call(
                reqwest::Method::GET,
                &format!("/v1/accounts/acme/chats/{jid}/messages"),
                None,
            )
            .await;
        let items = msgs["items"].as_array().cloned().unwrap_or_default();
        let directions: Vec<&str> = items
            .iter()
            .filter_map(|m| m["direction"].as_str())
            .collect();
        assert_eq!(
            directions,
            ["outbound", "inbound"],
            "the acknowledged message and one answer: {items:?}"
        );
    }
    let calls = stub.received_requests().await.unwrap_or_default().len();
    assert_eq!(calls, 3, "A once, B before the kill and once after");
    // The gateway answers again after recovery.
    c.call(
        reqwest::Method::PUT,
        "/v1/ai/global",
        Some(json!({"reply_delay_seconds": 0})),
    )
    .await;
    c.inbound(a, "after-1", "are you back?").await;
    let row = eventually(20, "reply after restart", || async {
        c.row("after-1").await.filter(|r| r["status"] == "sent")
    })
    .await;
    assert_eq!(row["reply_text"], "generated, waiting");
    // A second restart finds nothing left to close: no reply is touched twice.
    let (out, logs) = bin2.finish().await;
    assert!(out.contains("wagate is running"));
    // Checklist item 15: at INFO, no phone numbers (JIDs sit in request paths) and no bodies.
    for secret in [
        "491700000001",
        "are you back?",
        "generated, waiting",
        "sk-crash",
    ] {
        assert!(!logs.contains(secret), "{secret} in the INFO logs");
    }
    assert!(
        logs.contains("/v1/accounts/{acc}/sandbox/inbound"),
        "route templates are logged"
    );
    let bin3 = Binary::start(&vars, "info").await;
    let c = Client {
        http: reqwest::Client::new(),
        base: bin3.base.clone(),
        token: c.token,
    };
    let (_, ev) = c
        .call(
            reqwest::Method::GET,
            "/v1/events?aggregate=chat&limit=1000",
            None,
        )
        .await;
    let failed = ev["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["type"] == "AiReplyFailed")
        .count();
    let sent = ev["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["type"] == "MessageSent")
        .count();
    assert_eq!(
        (failed, sent),
        (0, 3),
        "nothing failed, each of the three messages answered once"
    );
    let (_, logs) = bin3.finish().await;
    assert!(!logs.contains("sk-crash"));
}

both_stores!(kill_9_mid_reply, kill_mid_reply(Backend));
