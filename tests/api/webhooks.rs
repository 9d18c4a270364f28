//! Webhooks: subscriptions, Standard Webhooks signatures checked by an independent library
//! (`standardwebhooks`), at-least-once delivery through receiver outages and a kill -9, 410,
//! dead letters and redelivery, bad input.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::both_stores;
use crate::helpers::{eventually, Backend, Binary, TestApp};
use crate::replies::{completion, configure, inbound, settled, JID};

/// A gateway whose webhook retries come fast (tests must not wait hours).
async fn spawn_fast(backend: Backend, schedule: &str) -> Option<TestApp> {
    TestApp::spawn_with_settings(
        backend,
        &[
            ("WAGATE_WEBHOOK_RETRY_SCHEDULE", schedule),
            ("WAGATE_WEBHOOK_TIMEOUT", "2s"),
        ],
    )
    .await
}

async fn subscribe(app: &TestApp, url: &str, events: Value) -> (String, String) {
    let r = app
        .admin(
            "POST",
            "/v1/webhooks",
            Some(json!({"url": url, "events": events})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let secret = r.json["secret"].as_str().expect("secret").to_string();
    assert!(secret.starts_with("whsec_"));
    (r.json["id"].as_str().expect("id").to_string(), secret)
}

/// Requests the receiver got, as (webhook-id, parsed body, raw body, headers).
async fn received(rx: &MockServer) -> Vec<(String, Value, Vec<u8>, reqwest::header::HeaderMap)> {
    rx.received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            let headers = r.headers.clone();
            let id = headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            (id, body, r.body, headers)
        })
        .collect()
}

async fn deliveries(app: &TestApp, hook: &str) -> Vec<Value> {
    let r = app
        .admin("GET", &format!("/v1/webhooks/{hook}/deliveries"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["items"].as_array().cloned().unwrap_or_default()
}

async fn ok_receiver() -> MockServer {
    let rx = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&rx)
        .await;
    rx
}

async fn model_stub() -> MockServer {
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("Hello from the stub")))
        .mount(&stub)
        .await;
    stub
}

/// The seed's flow: a reply emits signed `ai.reply.generated` and `ai.reply.sent` webhooks.
async fn reply_webhooks_are_signed(app: TestApp) {
    let rx = ok_receiver().await;
    let (hook, secret) = subscribe(
        &app,
        &format!("{}/hook", rx.uri()),
        json!(["ai.reply.generated", "ai.reply.sent"]),
    )
    .await;
    let stub = model_stub().await;
    app.create_account("acme").await;
    configure(&app, &stub, json!({})).await;
    inbound(&app, "acme", JID, "wamid-1", "hi there").await;
    let row = settled(&app, "acme", "wamid-1").await;
    assert_eq!(row["status"], "sent", "{row}");

    let got = eventually(20, "both reply webhooks arrive", || async {
        let got = received(&rx).await;
        (got.len() >= 2).then_some(got)
    })
    .await;
    let verifier = standardwebhooks::Webhook::new(&secret).expect("secret accepted");
    let mut types = vec![];
    for (_, body, raw, headers) in &got {
        verifier
            .verify(raw, headers)
            .expect("the independent library verifies the signature");
        types.push(body["type"].as_str().unwrap_or_default().to_string());
        let data = &body["data"];
        assert_eq!(data["account_id"], "acme");
        assert_eq!(data["chat_id"], JID);
        assert_eq!(data["trigger_message_id"], "wamid-1");
        assert_eq!(data["reply_text"], "Hello from the stub");
        assert_eq!(data["model"], "stub-model");
        assert_eq!(data["usage"]["total_tokens"], 18);
        assert!(body["timestamp"].is_string());
        assert!(!String::from_utf8_lossy(raw).contains("sk-test-key"));
    }
    types.sort();
    assert_eq!(types, ["ai.reply.generated", "ai.reply.sent"]);

    // A tampered body fails the same verifier.
    let (_, _, raw, headers) = &got[0];
    let mut tampered = raw.clone();
    tampered.push(b' ');
    assert!(verifier.verify(&tampered, headers).is_err());

    let list = eventually(10, "deliveries recorded as delivered", || async {
        let list = deliveries(&app, &hook).await;
        (list.len() == 2 && list.iter().all(|d| d["status"] == "delivered")).then_some(list)
    })
    .await;
    for d in &list {
        assert_eq!(d["attempts"], 1);
        assert_eq!(d["last_status_code"], 204);
        assert!(got
            .iter()
            .any(|(id, ..)| id == d["id"].as_str().unwrap_or("")));
    }
    // Never the secret again.
    let r = app
        .admin("GET", &format!("/v1/webhooks/{hook}"), None)
        .await;
    assert_eq!(r.status, 200);
    assert!(!r.text.contains(&secret) && r.json.get("secret").is_none());
    let r = app.admin("GET", "/v1/webhooks", None).await;
    assert!(!r.text.contains(&secret));
    let r = app.admin("GET", "/v1/events?limit=500", None).await;
    assert!(!r.text.contains(&secret));
}
both_stores!(reply_webhooks, reply_webhooks_are_signed);

/// A receiver that is down (connection refused) and comes back gets every event, with the ids
/// of the first attempts.
async fn receiver_outage(backend: Backend) {
    let Some(app) = spawn_fast(backend, "300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms").await
    else {
        return;
    };
    // Reserve a port, then close it: the receiver is down.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let (hook, secret) = subscribe(
        &app,
        &format!("http://{addr}/hook"),
        json!(["message.received"]),
    )
    .await;
    app.create_account("acme").await;
    for i in 0..3 {
        inbound(
            &app,
            "acme",
            JID,
            &format!("m-{i}"),
            &format!("message {i}"),
        )
        .await;
    }
    let failed = eventually(15, "attempts fail while the receiver is down", || async {
        let list = deliveries(&app, &hook).await;
        (list.len() == 3
            && list
                .iter()
                .all(|d| d["attempts"].as_i64().unwrap_or(0) >= 1 && d["status"] == "pending"))
        .then_some(list)
    })
    .await;
    assert_eq!(failed[0]["last_error"], "connect error", "{failed:?}");
    let ids: Vec<String> = failed
        .iter()
        .map(|d| d["id"].as_str().unwrap_or_default().to_string())
        .collect();

    // The receiver comes back on the same address.
    let listener = std::net::TcpListener::bind(addr).expect("rebind the receiver port");
    let rx = MockServer::builder().listener(listener).start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&rx)
        .await;
    let got = eventually(20, "every event arrives", || async {
        let got = received(&rx).await;
        let mut seen: Vec<String> = got.iter().map(|(id, ..)| id.clone()).collect();
        seen.sort();
        seen.dedup();
        (seen.len() == 3).then_some(got)
    })
    .await;
    let verifier = standardwebhooks::Webhook::new(&secret).expect("secret");
    let mut texts = vec![];
    for (id, body, raw, headers) in &got {
        assert!(ids.contains(id), "same webhook-id as the failed attempts");
        verifier.verify(raw, headers).expect("signature");
        texts.push(
            body["data"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    texts.sort();
    texts.dedup();
    assert_eq!(texts, ["message 0", "message 1", "message 2"]);
}

both_stores!(receiver_outage, receiver_outage(Backend));

/// 410 Gone disables the webhook; its other deliveries are cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_webhook() {
    let Some(app) = spawn_fast(Backend::Sqlite, "200ms").await else {
        return;
    };
    let rx = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(410))
        .mount(&rx)
        .await;
    let (hook, _) = subscribe(&app, &rx.uri(), json!(["*"])).await;
    app.create_account("acme").await;
    inbound(&app, "acme", JID, "m-1", "hello").await;
    eventually(10, "the webhook is disabled", || async {
        let r = app
            .admin("GET", &format!("/v1/webhooks/{hook}"), None)
            .await;
        (r.json["status"] == "disabled").then_some(())
    })
    .await;
    // The disable is an event; the webhook's pending deliveries are cancelled right after it.
    let list = eventually(10, "no delivery of the gone webhook is pending", || async {
        let list = deliveries(&app, &hook).await;
        list.iter()
            .all(|d| d["status"] != "pending")
            .then_some(list)
    })
    .await;
    assert!(list
        .iter()
        .any(|d| d["status"] == "dead" && d["last_status_code"] == 410));
    // Later events are not delivered to it.
    let before = received(&rx).await.len();
    inbound(&app, "acme", JID, "m-2", "again").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(received(&rx).await.len(), before);
    let r = app
        .admin(
            "POST",
            &format!(
                "/v1/webhooks/{hook}/deliveries/{}/redeliver",
                list[0]["id"].as_str().unwrap_or("")
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
}

/// Failures (5xx, redirects) retry on the schedule, then dead-letter; redeliver sends the same
/// id again with a fresh schedule.
async fn dead_letter_then_redeliver(backend: Backend) {
    let Some(app) = spawn_fast(backend, "100ms,100ms").await else {
        return;
    };
    let rx = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(302).insert_header("location", "http://127.0.0.1:1/"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&rx)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).set_body_string("upstream garbage"))
        .with_priority(2)
        .mount(&rx)
        .await;
    let (hook, _) = subscribe(&app, &rx.uri(), json!(["message.received"])).await;
    app.create_account("acme").await;
    inbound(&app, "acme", JID, "m-1", "hello").await;
    let dead = eventually(10, "dead-lettered after the schedule", || async {
        let list = deliveries(&app, &hook).await;
        list.into_iter().find(|d| d["status"] == "dead")
    })
    .await;
    assert_eq!(dead["attempts"], 3, "{dead}");
    assert_eq!(dead["last_status_code"], 503);
    assert!(!dead.to_string().contains("upstream garbage"));
    let got = received(&rx).await;
    assert_eq!(got.len(), 3);
    assert!(got
        .iter()
        .all(|(id, ..)| id == dead["id"].as_str().unwrap_or("")));

    rx.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&rx)
        .await;
    let id = dead["id"].as_str().unwrap_or_default();
    let r = app
        .admin(
            "POST",
            &format!("/v1/webhooks/{hook}/deliveries/{id}/redeliver"),
            None,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    eventually(10, "redelivered", || async {
        let list = deliveries(&app, &hook).await;
        list.into_iter()
            .find(|d| d["id"] == id && d["status"] == "delivered" && d["attempts"] == 4)
    })
    .await;
    assert_eq!(received(&rx).await[0].0, id);
    let r = app
        .admin(
            "POST",
            &format!("/v1/webhooks/{hook}/deliveries/msg_nope/redeliver"),
            None,
        )
        .await;
    assert_eq!(r.status, 404);
}

both_stores!(
    dead_letter_then_redeliver,
    dead_letter_then_redeliver(Backend)
);

/// A receiver that hangs does not delay another webhook's deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_does_not_delay_others() {
    let Some(app) = spawn_fast(Backend::Sqlite, "10s").await else {
        return;
    };
    let slow = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&slow)
        .await;
    let fast = ok_receiver().await;
    let (slow_hook, _) = subscribe(&app, &slow.uri(), json!(["message.received"])).await;
    subscribe(&app, &fast.uri(), json!(["message.received"])).await;
    app.create_account("acme").await;
    for i in 0..20 {
        inbound(&app, "acme", JID, &format!("m-{i}"), "hello").await;
    }
    let started = std::time::Instant::now();
    eventually(5, "the fast receiver gets all 20", || async {
        (received(&fast).await.len() >= 20).then_some(())
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    // The slow receiver's attempts time out (2 s here) and are retried.
    let d = eventually(10, "the slow receiver's attempts time out", || async {
        deliveries(&app, &slow_hook)
            .await
            .into_iter()
            .find(|d| d["attempts"].as_i64().unwrap_or(0) >= 1)
    })
    .await;
    assert_eq!(d["status"], "pending", "{d}");
    assert_eq!(d["last_error"], "timeout after 2s", "{d}");
}

/// A receiver that accepts the connection and closes it without answering: a failed attempt,
/// retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_socket_is_a_failed_attempt() {
    let Some(app) = spawn_fast(Backend::Sqlite, "10s").await else {
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            drop(sock);
        }
    });
    let (hook, _) = subscribe(
        &app,
        &format!("http://{addr}/"),
        json!(["message.received"]),
    )
    .await;
    app.create_account("acme").await;
    inbound(&app, "acme", JID, "m-1", "hello").await;
    let d = eventually(10, "the attempt fails", || async {
        deliveries(&app, &hook)
            .await
            .into_iter()
            .find(|d| d["attempts"] == 1)
    })
    .await;
    assert_eq!(d["status"], "pending");
    assert!(d["last_status_code"].is_null());
    assert_eq!(
        d["last_error"], "the connection failed before a response",
        "{d}"
    );
}

/// Config changes reach subscribers without the key; an account filter keeps other accounts'
/// events away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_and_account_filter() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    app.create_account("acme").await;
    app.create_account("other").await;
    let rx = ok_receiver().await;
    let r = app
        .admin(
            "POST",
            "/v1/webhooks",
            Some(json!({"url": rx.uri(), "events": ["*"], "account_id": "acme"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = app
        .admin(
            "PUT",
            "/v1/accounts/acme/ai",
            Some(json!({"model_name": "m1", "api_key": "sk-canary-webhook-123", "base_url": "https://api.openai.com/v1"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    inbound(&app, "other", JID, "o-1", "not for acme").await;
    inbound(&app, "acme", JID, "a-1", "for acme").await;
    let got = eventually(10, "acme's events arrive", || async {
        let got = received(&rx).await;
        got.iter()
            .any(|(_, b, ..)| b["type"] == "message.received")
            .then_some(got)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = if got.len() < 3 {
        received(&rx).await
    } else {
        got
    };
    let types: Vec<&str> = got
        .iter()
        .map(|(_, b, ..)| b["type"].as_str().unwrap_or(""))
        .collect();
    assert!(types.contains(&"ai.config.changed"), "{types:?}");
    for (_, body, raw, _) in &got {
        assert_eq!(body["data"]["account_id"], "acme", "{body}");
        let raw = String::from_utf8_lossy(raw);
        assert!(!raw.contains("sk-canary-webhook-123"));
    }
    let change = got
        .iter()
        .find(|(_, b, ..)| {
            b["type"] == "ai.config.changed" && b["data"]["change"]["api_key"] == "set"
        })
        .expect("key change announced");
    assert_eq!(change.1["data"]["actor"], "admin:tester");
}

/// Bad subscriptions are 400 naming the field, and write nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscriptions_are_refused() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    let head = app.head().await;
    for (body, field) in [
        (
            json!({"url": "ftp://example.com/x", "events": ["*"]}),
            "url",
        ),
        (json!({"url": "not a url", "events": ["*"]}), "url"),
        (
            json!({"url": "http://169.254.169.254/latest", "events": ["*"]}),
            "url",
        ),
        (
            json!({"url": "http://10.1.2.3/hook", "events": ["*"]}),
            "url",
        ),
        (
            json!({"url": "https://example.com/h", "events": ["ai.reply.exploded"]}),
            "events",
        ),
        (
            json!({"url": "https://example.com/h", "events": []}),
            "events",
        ),
        (
            json!({"url": "https://example.com/h", "events": ["*"], "account_id": "ghost"}),
            "account_id",
        ),
        (
            json!({"url": "https://example.com/h", "events": ["*"], "secret": "mine"}),
            "secret",
        ),
    ] {
        let r = app.admin("POST", "/v1/webhooks", Some(body.clone())).await;
        assert_eq!(r.status, 400, "{body} -> {}", r.text);
        assert_eq!(r.json["error"]["field"], field, "{body} -> {}", r.text);
    }
    let r = app
        .admin(
            "POST",
            "/v1/webhooks",
            Some(json!({"url": "http://10.1.2.3/hook", "events": ["*"]})),
        )
        .await;
    assert!(r.json["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("WAGATE_ALLOW_PRIVATE_NETWORKS"));
    assert_eq!(app.head().await, head, "nothing written");
    // Account tokens cannot manage webhooks.
    app.create_account("acme").await;
    let r = app
        .admin(
            "POST",
            "/v1/accounts/acme/tokens",
            Some(json!({"name": "t"})),
        )
        .await;
    let token = r.json["token"].as_str().unwrap_or_default().to_string();
    let r = app.call("GET", "/v1/webhooks", Some(&token), None).await;
    assert_eq!(r.status, 403);
    let r = app.admin("DELETE", "/v1/webhooks/wh_nope", None).await;
    assert_eq!(r.status, 404);
}

/// kill -9 after the event is committed and before the delivery went out: delivered after the
/// restart.
async fn kill_between_commit_and_delivery(backend: Backend) {
    let dir = tempfile::tempdir().expect("tmp");
    let Some(mut vars) = TestApp::vars(backend, &dir).await else {
        return;
    };
    vars.insert(
        "WAGATE_WEBHOOK_RETRY_SCHEDULE".into(),
        "200ms,200ms,200ms,200ms,200ms".into(),
    );
    let token = wagate::config::Config::from_vars(&vars)
        .expect("config")
        .0
        .jwt
        .issue("crash-test", Duration::from_secs(600))
        .expect("token")
        .0;
    let http = reqwest::Client::new();
    let call = |base: String, m: reqwest::Method, p: &str, body: Value| {
        http.request(m, format!("{base}{p}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    // The receiver is down while the first process runs.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let mut bin = Binary::start(&vars, "info").await;
    let r = call(
        bin.base.clone(),
        reqwest::Method::POST,
        "/v1/webhooks",
        json!({"url": format!("http://{addr}/"), "events": ["message.received"]}),
    )
    .await
    .expect("subscribe");
    assert_eq!(r.status(), 201);
    let r = call(
        bin.base.clone(),
        reqwest::Method::POST,
        "/v1/accounts",
        json!({"id": "acme", "transport": "sandbox"}),
    )
    .await
    .expect("account");
    assert_eq!(r.status(), 201);
    let r = call(
        bin.base.clone(),
        reqwest::Method::POST,
        "/v1/accounts/acme/sandbox/inbound",
        json!({"chat_id": JID, "from": "491701234567", "text": "survives", "id": "k-1"}),
    )
    .await
    .expect("inbound");
    assert_eq!(r.status(), 202);
    bin.kill9().await;

    let listener = std::net::TcpListener::bind(addr).expect("rebind");
    let rx = MockServer::builder().listener(listener).start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&rx)
        .await;
    let bin2 = Binary::start(&vars, "info").await;
    let got = eventually(20, "delivered after the restart", || async {
        let got = received(&rx).await;
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(got[0].1["data"]["text"], "survives");
    assert_eq!(got[0].1["data"]["message_id"], "k-1");
    let _ = bin2.finish().await;
}

both_stores!(
    kill_9_between_commit_and_delivery,
    kill_between_commit_and_delivery(Backend)
);

/// `/metrics` answers in the Prometheus format with the reply and webhook families.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_exposed() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    let stub = model_stub().await;
    app.create_account("acme").await;
    configure(&app, &stub, json!({})).await;
    inbound(&app, "acme", JID, "w-1", "hi").await;
    settled(&app, "acme", "w-1").await;
    let r = app.call("GET", "/metrics", None, None).await;
    assert_eq!(r.status, 200);
    let ct = r
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(ct.starts_with("text/plain"), "{ct}");
    let lines: HashMap<&str, &str> = r
        .text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .collect();
    assert_eq!(
        lines.get("wagate_ai_replies_total{status=\"sent\"}"),
        Some(&"1"),
        "{}",
        r.text
    );
    assert_eq!(
        lines.get("wagate_model_tokens_total{kind=\"prompt\"}"),
        Some(&"11")
    );
    assert_eq!(lines.get("wagate_model_latency_seconds_count"), Some(&"1"));
    assert!(lines.contains_key("wagate_webhook_deliveries{status=\"pending\"}"));
    assert!(lines.contains_key("wagate_webhook_delivery_lag_seconds"));
    assert!(lines.contains_key("wagate_actors{kind=\"chat\"}"));
    assert!(lines.contains_key("wagate_store_errors_total"));
    assert!(!r.text.contains("sk-test-key") && !r.text.contains("491701234567"));
}

/// History from before a subscription is never delivered to it, also when the fan-out skipped
/// reading that history because nobody was subscribed then.
async fn only_events_after_the_subscription(app: TestApp) {
    app.create_account("acme").await;
    inbound(&app, "acme", JID, "before-1", "before").await;
    inbound(&app, "acme", JID, "before-2", "before again").await;
    let rx = ok_receiver().await;
    let (hook, _) = subscribe(&app, &rx.uri(), json!(["message.received"])).await;
    inbound(&app, "acme", JID, "after-1", "after").await;
    let got = eventually(10, "the later message is delivered", || async {
        let got = received(&rx).await;
        (!got.is_empty()).then_some(got)
    })
    .await;
    // Give a wrongly owed older event time to show up too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = received(&rx).await.len().max(got.len());
    assert_eq!(got, 1, "only the message after the subscription");
    let list = deliveries(&app, &hook).await;
    assert_eq!(list.len(), 1, "{list:?}");
}
both_stores!(
    history_before_a_subscription_is_not_delivered,
    only_events_after_the_subscription
);
