//! The auto-reply flow against a real HTTP model stub on loopback (wiremock), on both stores.

use serde_json::{json, Value};
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::both_stores;
use crate::helpers::{eventually, TestApp};

pub const JID: &str = "491701234567@s.whatsapp.net";

pub fn completion(text: &str) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "stub-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    })
}

/// Global config pointing at the stub, replies immediately.
pub async fn configure(app: &TestApp, stub: &MockServer, extra: Value) {
    let mut body = json!({
        "enabled": true,
        "base_url": format!("{}/v1", stub.uri()),
        "api_key": "sk-test-key",
        "model_name": "stub-model",
        "default_system_prompt": "You are a test assistant.",
        "reply_delay_seconds": 0,
        "timeout_seconds": 5
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    let r = app.admin("PUT", "/v1/ai/global", Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

pub async fn inbound(app: &TestApp, acc: &str, jid: &str, id: &str, text: &str) -> Value {
    let r = app
        .admin(
            "POST",
            &format!("/v1/accounts/{acc}/sandbox/inbound"),
            Some(json!({"chat_id": jid, "from": "491701234567", "text": text, "id": id})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.json
}

/// The AI log row for the reply triggered by `message_id`, once it reached a terminal status.
pub async fn settled(app: &TestApp, acc: &str, message_id: &str) -> Value {
    eventually(20, &format!("reply to {message_id} settles"), || async {
        let r = app
            .admin(
                "GET",
                &format!("/v1/ai/logs?account_id={acc}&limit=500"),
                None,
            )
            .await;
        r.json["items"]
            .as_array()?
            .iter()
            .find(|row| {
                row["trigger_message_id"] == message_id
                    && ["sent", "failed", "skipped"].contains(&row["status"].as_str().unwrap_or(""))
            })
            .cloned()
    })
    .await
}

pub async fn messages(app: &TestApp, acc: &str, jid: &str) -> Vec<Value> {
    let r = app
        .admin(
            "GET",
            &format!("/v1/accounts/{acc}/chats/{jid}/messages?limit=500"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["items"].as_array().cloned().unwrap_or_default()
}

async fn happy_path(app: TestApp) {
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer sk-test-key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("Hello from the model")))
        .expect(1)
        .mount(&stub)
        .await;
    configure(&app, &stub, json!({})).await;
    app.create_account("acme").await;
    let ack = inbound(&app, "acme", JID, "wamid-1", "Hi, are you open today?").await;
    assert_eq!(ack["message_id"], "wamid-1");
    assert!(ack["position"].as_i64().is_some_and(|p| p > 0), "{ack}");
    assert_eq!(ack["duplicate"], false);

    let row = settled(&app, "acme", "wamid-1").await;
    assert_eq!(row["status"], "sent", "{row}");
    assert_eq!(row["model"], "stub-model");
    assert_eq!(
        row["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18})
    );
    assert_eq!(row["reply_text"], "Hello from the model");
    assert!(row["latency_ms"].as_u64().is_some());

    let msgs = messages(&app, "acme", JID).await;
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert_eq!(msgs[0]["direction"], "outbound");
    assert_eq!(msgs[0]["source"], "ai");
    assert_eq!(msgs[0]["text"], "Hello from the model");
    assert_eq!(msgs[0]["ai_reply_id"], row["id"]);
    assert_eq!(msgs[1]["direction"], "inbound");
    assert_eq!(msgs[1]["source"], "customer");

    let req = &stub.received_requests().await.expect("recorded")[0];
    let body: Value = serde_json::from_slice(&req.body).expect("json body");
    assert_eq!(body["model"], "stub-model");
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "You are a test assistant."})
    );
    assert_eq!(
        body["messages"][1],
        json!({"role": "user", "content": "Hi, are you open today?"})
    );

    let ev = app.admin("GET", "/v1/events?aggregate=chat", None).await;
    let types: Vec<&str> = ev.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "MessageReceived",
            "AiReplyRequested",
            "AiReplyGenerated",
            "TypingIndicated",
            "MessageSent",
            "AiReplySent"
        ]
    );
    let chats = app.admin("GET", "/v1/accounts/acme/chats", None).await;
    assert_eq!(chats.json["items"][0]["chat_id"], JID);
    assert_eq!(chats.json["items"][0]["message_count"], 2);
    stub.verify().await;
}
both_stores!(auto_reply_happy_path, happy_path);

async fn history_of_twenty_with_roles(app: TestApp) {
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("ok")))
        .mount(&stub)
        .await;
    // The operator's answers must not pause the AI here (human takeover is tested in control.rs).
    configure(&app, &stub, json!({"human_takeover_minutes": 0})).await;
    app.create_account("acme").await;
    let chat_ai = format!("/v1/accounts/acme/chats/{JID}/ai");
    app.admin(
        "PUT",
        &chat_ai,
        Some(json!({"mode": "disabled", "custom_system_prompt": "Chat prompt."})),
    )
    .await;
    for i in 0..12 {
        inbound(
            &app,
            "acme",
            JID,
            &format!("in-{i}"),
            &format!("customer {i}"),
        )
        .await;
        let r = app
            .admin(
                "POST",
                &format!("/v1/accounts/acme/chats/{JID}/messages"),
                Some(json!({"text": format!("agent {i}")})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    app.admin("PUT", &chat_ai, Some(json!({"mode": "enabled"})))
        .await;
    inbound(&app, "acme", JID, "last", "the last question").await;
    assert_eq!(settled(&app, "acme", "last").await["status"], "sent");
    let reqs = stub.received_requests().await.expect("recorded");
    assert_eq!(reqs.len(), 1, "disabled messages made no calls");
    let body: Value = serde_json::from_slice(&reqs[0].body).expect("json");
    let msgs = body["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 21, "system prompt + the last 20 turns");
    assert_eq!(
        msgs[0],
        json!({"role": "system", "content": "Chat prompt."})
    );
    assert_eq!(
        msgs[20],
        json!({"role": "user", "content": "the last question"})
    );
    assert_eq!(
        msgs[19],
        json!({"role": "assistant", "content": "agent 11"})
    );
    assert_eq!(msgs[18], json!({"role": "user", "content": "customer 11"}));
    assert_eq!(msgs[1], json!({"role": "assistant", "content": "agent 2"}));
}
both_stores!(history_of_twenty, history_of_twenty_with_roles);

async fn rules_decide_before_any_call(app: TestApp) {
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("ok")))
        .mount(&stub)
        .await;
    app.create_account("acme").await;
    // No key: skipped with the seed's reason, nothing sent.
    let r = app
        .admin("PUT", "/v1/ai/global", Some(json!({"enabled": true, "base_url": format!("{}/v1", stub.uri()), "reply_delay_seconds": 0})))
        .await;
    assert_eq!(r.status, 200);
    inbound(&app, "acme", JID, "k1", "hello").await;
    let row = settled(&app, "acme", "k1").await;
    assert_eq!(
        (row["status"].as_str(), row["reason"].as_str()),
        (Some("skipped"), Some("no API key configured"))
    );
    assert_eq!(row["reason_code"], "no_api_key", "{row}");

    configure(&app, &stub, json!({})).await;
    // Disabled at each layer.
    app.admin("PUT", "/v1/ai/global", Some(json!({"enabled": false})))
        .await;
    inbound(&app, "acme", JID, "g1", "hello").await;
    assert_eq!(
        settled(&app, "acme", "g1").await["reason"],
        "AI is disabled (source: global)"
    );
    app.admin("PUT", "/v1/ai/global", Some(json!({"enabled": true})))
        .await;
    app.admin(
        "PUT",
        "/v1/accounts/acme/ai",
        Some(json!({"enabled": false})),
    )
    .await;
    inbound(&app, "acme", JID, "a1", "hello").await;
    assert_eq!(
        settled(&app, "acme", "a1").await["reason"],
        "AI is disabled (source: account)"
    );
    app.admin(
        "PUT",
        "/v1/accounts/acme/ai",
        Some(json!({"enabled": null})),
    )
    .await;
    app.admin(
        "PUT",
        &format!("/v1/accounts/acme/chats/{JID}/ai"),
        Some(json!({"mode": "disabled"})),
    )
    .await;
    inbound(&app, "acme", JID, "c1", "hello").await;
    assert_eq!(
        settled(&app, "acme", "c1").await["reason"],
        "AI is disabled (source: chat)"
    );
    app.admin(
        "PUT",
        &format!("/v1/accounts/acme/chats/{JID}/ai"),
        Some(json!({"mode": "inherit"})),
    )
    .await;
    // Blocked.
    app.admin(
        "PUT",
        &format!("/v1/accounts/acme/chats/{JID}/blocked"),
        Some(json!({"blocked": true})),
    )
    .await;
    inbound(&app, "acme", JID, "b1", "hello").await;
    assert_eq!(
        settled(&app, "acme", "b1").await["reason"],
        "chat is blocked"
    );
    // Groups follow reply_to_groups.
    let group = "120363042-1@g.us";
    inbound(&app, "acme", group, "gr1", "hello group").await;
    assert_eq!(
        settled(&app, "acme", "gr1").await["reason"],
        "reply_to_groups is false (source: default)"
    );
    app.admin(
        "PUT",
        "/v1/ai/global",
        Some(json!({"reply_to_groups": true})),
    )
    .await;
    inbound(&app, "acme", group, "gr2", "hello group").await;
    assert_eq!(settled(&app, "acme", "gr2").await["status"], "sent");
    // from_me and status broadcasts never open a reply.
    let r = app
        .admin("POST", "/v1/accounts/acme/sandbox/inbound", Some(json!({"chat_id": group, "from": "me", "text": "mine", "id": "fm1", "from_me": true})))
        .await;
    assert_eq!(r.status, 202);
    inbound(&app, "acme", "status@broadcast", "st1", "a status").await;
    let logs = app
        .admin("GET", "/v1/ai/logs?account_id=acme&limit=500", None)
        .await;
    let triggers: Vec<&str> = logs.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["trigger_message_id"].as_str())
        .collect();
    assert!(
        !triggers.contains(&"fm1") && !triggers.contains(&"st1"),
        "{triggers:?}"
    );
    assert_eq!(
        stub.received_requests().await.map(|r| r.len()),
        Some(1),
        "only gr2 called the model"
    );
}
both_stores!(reply_rules, rules_decide_before_any_call);

async fn echo_mode_needs_no_model(app: TestApp) {
    app.create_account("acme").await;
    app.echo_mode().await;
    inbound(&app, "acme", JID, "e1", "echo me").await;
    let row = settled(&app, "acme", "e1").await;
    assert_eq!(
        (row["status"].as_str(), row["model"].as_str()),
        (Some("sent"), Some("echo"))
    );
    assert_eq!(messages(&app, "acme", JID).await[0]["text"], "echo me");
}
both_stores!(echo_mode, echo_mode_needs_no_model);

async fn duplicate_inbound_is_deduplicated(app: TestApp) {
    app.create_account("acme").await;
    app.admin(
        "PUT",
        "/v1/ai/global",
        Some(json!({"enabled": true, "echo_mode": true, "reply_delay_seconds": 0})),
    )
    .await;
    let first = inbound(&app, "acme", JID, "dup-1", "once").await;
    let second = inbound(&app, "acme", JID, "dup-1", "once").await;
    assert_eq!(first["position"], second["position"], "same answer");
    assert_eq!(second["duplicate"], true);
    settled(&app, "acme", "dup-1").await;
    let ev = app.admin("GET", "/v1/events?aggregate=chat", None).await;
    let received = ev.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["type"] == "MessageReceived")
        .count();
    assert_eq!(received, 1);
    let msgs = messages(&app, "acme", JID).await;
    assert_eq!(
        msgs.iter().filter(|m| m["source"] == "ai").count(),
        1,
        "one reply"
    );
}
both_stores!(duplicate_inbound, duplicate_inbound_is_deduplicated);

async fn model_failures_are_classified(app: TestApp) {
    let stub = MockServer::start().await;
    for (marker, resp) in [
        (
            "case-500",
            ResponseTemplate::new(500).set_body_string("UPSTREAM-SECRET-BODY"),
        ),
        (
            "case-401",
            ResponseTemplate::new(401).set_body_string("UPSTREAM-SECRET-BODY"),
        ),
        (
            "case-bad",
            ResponseTemplate::new(200).set_body_string("UPSTREAM-SECRET-BODY not json"),
        ),
    ] {
        Mock::given(method("POST"))
            .and(body_string_contains(marker))
            .respond_with(resp)
            .mount(&stub)
            .await;
    }
    // 429 once, then success.
    Mock::given(method("POST"))
        .and(body_string_contains("case-429"))
        .respond_with(ResponseTemplate::new(429))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&stub)
        .await;
    Mock::given(method("POST"))
        .and(body_string_contains("case-429"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("after retry")))
        .with_priority(2)
        .mount(&stub)
        .await;
    configure(&app, &stub, json!({})).await;
    app.create_account("acme").await;
    let cases = [
        ("case-500", "500"),
        ("case-401", "401"),
        ("case-bad", "malformed"),
    ];
    for (i, (marker, needle)) in cases.iter().enumerate() {
        let jid = format!("49170000000{i}@s.whatsapp.net");
        inbound(&app, "acme", &jid, marker, marker).await;
        let row = settled(&app, "acme", marker).await;
        assert_eq!(row["status"], "failed", "{row}");
        let reason = row["reason"].as_str().unwrap_or("");
        assert!(reason.contains(needle), "{marker}: {reason}");
        assert_eq!(row["reason_code"], "model_error", "{row}");
        assert!(
            !reason.contains("UPSTREAM-SECRET-BODY") && !reason.contains("sk-test-key"),
            "{reason}"
        );
        assert!(messages(&app, "acme", &jid)
            .await
            .iter()
            .all(|m| m["direction"] == "inbound"));
    }
    // A model slower than timeout_seconds (an account override): failed, naming the timeout.
    Mock::given(method("POST"))
        .and(body_string_contains("case-timeout"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion("late"))
                .set_delay(std::time::Duration::from_secs(3)),
        )
        .with_priority(1)
        .mount(&stub)
        .await;
    app.create_account("slowacc").await;
    app.admin(
        "PUT",
        "/v1/accounts/slowacc/ai",
        Some(json!({"timeout_seconds": 1})),
    )
    .await;
    inbound(&app, "slowacc", JID, "case-timeout", "case-timeout").await;
    let row = settled(&app, "slowacc", "case-timeout").await;
    assert_eq!(row["status"], "failed", "{row}");
    assert!(
        row["reason"].as_str().unwrap_or("").contains("timed out"),
        "{row}"
    );
    inbound(
        &app,
        "acme",
        "491700000009@s.whatsapp.net",
        "case-429",
        "case-429",
    )
    .await;
    let row = settled(&app, "acme", "case-429").await;
    assert_eq!(
        (row["status"].as_str(), row["reply_text"].as_str()),
        (Some("sent"), Some("after retry")),
        "{row}"
    );
}
both_stores!(model_failures, model_failures_are_classified);

async fn slow_chat_does_not_delay_others(app: TestApp) {
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_string_contains("slow please"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion("slow answer"))
                .set_delay(std::time::Duration::from_secs(3)),
        )
        .mount(&stub)
        .await;
    Mock::given(method("POST"))
        .and(body_string_contains("fast please"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("fast answer")))
        .mount(&stub)
        .await;
    configure(&app, &stub, json!({})).await;
    app.create_account("acme").await;
    let (a, b) = ("491700000001@s.whatsapp.net", "491700000002@s.whatsapp.net");
    let start = std::time::Instant::now();
    inbound(&app, "acme", a, "slow-1", "slow please").await;
    inbound(&app, "acme", b, "fast-1", "fast please").await;
    assert_eq!(settled(&app, "acme", "fast-1").await["status"], "sent");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(2),
        "chat B waited for chat A: {:?}",
        start.elapsed()
    );
    let slow = app
        .admin(
            "GET",
            "/v1/ai/logs?account_id=acme&chat_id=491700000001@s.whatsapp.net",
            None,
        )
        .await;
    assert_eq!(
        slow.json["items"][0]["status"], "pending",
        "A is still waiting on its model"
    );
    assert_eq!(settled(&app, "acme", "slow-1").await["status"], "sent");
}
both_stores!(chats_in_parallel, slow_chat_does_not_delay_others);

async fn replies_in_order_within_a_chat(app: TestApp) {
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion("answer"))
                .set_delay(std::time::Duration::from_millis(300)),
        )
        .mount(&stub)
        .await;
    configure(&app, &stub, json!({})).await;
    app.create_account("acme").await;
    for i in 0..4 {
        inbound(
            &app,
            "acme",
            JID,
            &format!("o{i}"),
            &format!("question {i}"),
        )
        .await;
    }
    let last = settled(&app, "acme", "o3").await;
    assert_eq!(last["status"], "sent", "{last}");
    let mut sent_positions = vec![];
    for i in 0..4 {
        let row = settled(&app, "acme", &format!("o{i}")).await;
        match row["status"].as_str() {
            Some("sent") => sent_positions.push((i, row["position"].as_i64().unwrap_or(0))),
            Some("skipped") => assert!(
                row["reason"].as_str().unwrap_or("").contains("superseded")
                    && row["reason_code"] == "superseded",
                "{row}"
            ),
            other => panic!("unexpected {other:?}: {row}"),
        }
    }
    // The newest outbound message answers the newest question.
    let msgs = messages(&app, "acme", JID).await;
    assert_eq!(msgs[0]["ai_reply_id"], last["id"]);
    assert!(sent_positions.windows(2).all(|w| w[0].1 < w[1].1));
}
both_stores!(order_within_chat, replies_in_order_within_a_chat);

async fn test_routes(app: TestApp) {
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_string_contains("please fail"))
        .respond_with(ResponseTemplate::new(503).set_body_string("UPSTREAM-SECRET-BODY"))
        .mount(&stub)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("Hi! How can I help?")))
        .mount(&stub)
        .await;
    app.create_account("acme").await;
    // No key yet: a clear 409.
    let r = app
        .admin(
            "POST",
            "/v1/ai/admin/test",
            Some(json!({"account_id": "acme", "message": "Say hi"})),
        )
        .await;
    assert_eq!(
        (r.status, r.json["error"]["code"].as_str()),
        (409, Some("no_api_key")),
        "{}",
        r.text
    );
    configure(&app, &stub, json!({"enabled": false})).await;
    let r = app
        .admin(
            "POST",
            "/v1/ai/admin/test",
            Some(json!({"message": "Say hi"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["reply"], "Hi! How can I help?");
    assert_eq!(r.json["model"], "stub-model");
    assert_eq!(r.json["usage"]["total_tokens"], 18);
    assert_eq!(r.json["sent"], false);
    let r = app
        .admin(
            "POST",
            "/v1/ai/admin/test",
            Some(json!({"account_id": "nope", "message": "x"})),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = app
        .admin(
            "POST",
            "/v1/ai/admin/test",
            Some(json!({"message": "please fail"})),
        )
        .await;
    assert_eq!(
        (r.status, r.json["error"]["code"].as_str()),
        (502, Some("model_error")),
        "{}",
        r.text
    );
    assert!(
        !r.text.contains("UPSTREAM-SECRET-BODY") && r.text.contains("503"),
        "{}",
        r.text
    );

    let token = app
        .admin(
            "POST",
            "/v1/accounts/acme/tokens",
            Some(json!({"name": "t"})),
        )
        .await
        .json["token"]
        .as_str()
        .expect("token")
        .to_string();
    let r = app
        .call(
            "POST",
            "/v1/ai/chat/test",
            Some(&token),
            Some(
                json!({"message": "Hello, can you help me?", "chat_id": JID, "send_to_chat": true}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["sent"], true);
    let msgs = messages(&app, "acme", JID).await;
    assert_eq!(
        (msgs[0]["source"].as_str(), msgs[0]["text"].as_str()),
        (Some("test"), Some("Hi! How can I help?"))
    );
    let r = app
        .call(
            "POST",
            "/v1/ai/chat/test",
            Some(&token),
            Some(json!({"message": "Hello", "send_to_chat": false})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app
        .admin(
            "POST",
            "/v1/ai/chat/test",
            Some(json!({"message": "Hello"})),
        )
        .await;
    assert_eq!(r.status, 403, "admins use the admin route");
}
both_stores!(ai_test_routes, test_routes);

/// Checklist item 9: without WAGATE_ALLOW_PRIVATE_NETWORKS a loopback model URL is refused when
/// saved (the call-time refusal is `tests/model_client.rs` `guard_without_allow_list_*`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_model_refused_without_allow_list() {
    let dir = tempfile::tempdir().expect("tmp");
    let Some(mut vars) = TestApp::vars(crate::helpers::Backend::Sqlite, &dir).await else {
        return;
    };
    vars.remove("WAGATE_ALLOW_PRIVATE_NETWORKS");
    let app = TestApp::spawn_with(crate::helpers::Backend::Sqlite, dir, vars).await;
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("never")))
        .expect(0)
        .mount(&stub)
        .await;
    let head = app.head().await;
    // Refused when saved (issue 21, finding 3), naming the setting that would allow it.
    for url in [
        format!("{}/v1", stub.uri()),
        "http://169.254.169.254/v1".to_string(),
    ] {
        let r = app
            .admin(
                "PUT",
                "/v1/ai/global",
                Some(json!({"enabled": true, "base_url": url, "api_key": "sk-test-key"})),
            )
            .await;
        assert_eq!(r.status, 400, "{url}: {}", r.text);
        assert_eq!(r.json["error"]["field"], "base_url", "{}", r.text);
    }
    let r = app
        .admin(
            "PUT",
            "/v1/ai/global",
            Some(json!({"base_url": format!("{}/v1", stub.uri())})),
        )
        .await;
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("WAGATE_ALLOW_PRIVATE_NETWORKS"),
        "{}",
        r.text
    );
    assert_eq!(app.head().await, head, "nothing written");
    stub.verify().await;
}

/// Private model servers are the admin's (issue 21, finding 3): an account token cannot point
/// its account into the allowed private networks, and learns nothing from trying (an open port,
/// a closed one and a metadata address get the same answer), unless the operator opts accounts in.
#[tokio::test]
async fn private_model_urls_are_the_admins() {
    for opted_in in [false, true] {
        let dir = tempfile::tempdir().expect("tmp");
        let Some(mut vars) = TestApp::vars(crate::helpers::Backend::Sqlite, &dir).await else {
            return;
        };
        vars.insert("WAGATE_ALLOW_PRIVATE_NETWORKS".into(), "127.0.0.0/8".into());
        if opted_in {
            vars.insert(
                "WAGATE_ALLOW_PRIVATE_NETWORKS_FOR_ACCOUNTS".into(),
                "true".into(),
            );
        }
        let app = TestApp::spawn_with(crate::helpers::Backend::Sqlite, dir, vars).await;
        let stub = MockServer::start().await;
        app.create_account("acme").await;
        let token = app.account_token("acme").await;
        let open = format!("{}/v1", stub.uri());
        let answers: Vec<(u16, String)> = {
            let mut out = Vec::new();
            for url in [
                open.clone(),
                "http://127.0.0.1:1/v1".to_string(),
                "http://169.254.169.254/v1".to_string(),
            ] {
                let r = app
                    .call(
                        "PUT",
                        "/v1/accounts/acme/ai",
                        Some(&token),
                        Some(json!({"base_url": url})),
                    )
                    .await;
                out.push((r.status, r.json["error"]["message"].to_string()));
            }
            out
        };
        if opted_in {
            assert_eq!(answers[0].0, 200, "{answers:?}");
            assert_eq!(answers[1].0, 200, "{answers:?}");
        } else {
            assert_eq!(answers[0].0, 400, "{answers:?}");
            assert_eq!(answers[0], answers[1], "open and closed ports answer alike");
            assert!(!answers[0].1.contains("WAGATE_"), "{answers:?}");
        }
        // Metadata addresses are never allowed, for anyone.
        assert_eq!(answers[2].0, 400, "{answers:?}");
        // The admin may point an account at a private server in the list.
        let r = app
            .admin(
                "PUT",
                "/v1/accounts/acme/ai",
                Some(json!({"base_url": open})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
}

/// F3 at call time: a model URL an account token saved reaches public addresses only, whatever
/// its name resolves to when called (a name that did not resolve when saved, DNS rebinding), unless
/// the operator lets tokens use the private networks. Here the operator withdraws that opt-in: the
/// tenant's saved loopback URL is no longer called, while the admin's own (the global layer's, the
/// same server) still is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_model_urls_stay_public_when_called() {
    let dir = tempfile::tempdir().expect("tmp");
    let Some(mut vars) = TestApp::vars(crate::helpers::Backend::Sqlite, &dir).await else {
        return;
    };
    vars.insert(
        "WAGATE_ALLOW_PRIVATE_NETWORKS_FOR_ACCOUNTS".into(),
        "true".into(),
    );
    let mut app = TestApp::spawn_with(crate::helpers::Backend::Sqlite, dir, vars).await;
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("Hello")))
        .mount(&stub)
        .await;
    configure(&app, &stub, json!({})).await;
    app.create_account("acme").await;
    app.create_account("other").await;
    let token = app.account_token("acme").await;
    let r = app
        .call(
            "PUT",
            "/v1/accounts/acme/ai",
            Some(&token),
            Some(json!({"base_url": format!("{}/v1", stub.uri()), "api_key": "sk-tenant"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    inbound(&app, "acme", JID, "t1", "hi").await;
    assert_eq!(settled(&app, "acme", "t1").await["status"], "sent");
    let calls = || async { stub.received_requests().await.unwrap_or_default().len() };
    assert_eq!(calls().await, 1);

    app.vars
        .remove("WAGATE_ALLOW_PRIVATE_NETWORKS_FOR_ACCOUNTS");
    app.restart().await;
    inbound(&app, "acme", JID, "t2", "hi again").await;
    let row = settled(&app, "acme", "t2").await;
    assert_eq!(
        (row["status"].as_str(), row["reason_code"].as_str()),
        (Some("failed"), Some("model_error")),
        "{row}"
    );
    assert!(
        row["reason"]
            .as_str()
            .is_some_and(|r| r.contains("refused")),
        "{row}"
    );
    assert_eq!(calls().await, 1, "the tenant's URL was not called");
    // The same server set by the admin (the global layer) is still called.
    inbound(&app, "other", JID, "o1", "hi").await;
    assert_eq!(settled(&app, "other", "o1").await["status"], "sent");
    assert_eq!(calls().await, 2);
}

/// Issue 24, first slice: the model's Markdown reaches the customer in WhatsApp's markup
/// (`format_for_whatsapp`, on by default); turned off, the answer is sent as it came.
async fn markdown_replies_are_formatted_for_whatsapp(app: TestApp) {
    let stub = MockServer::start().await;
    let markdown = "## Colours\n\nWe have it in **blue** and _red_:\n\n- [blue](https://shop.example/b)\n- red";
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(markdown)))
        .mount(&stub)
        .await;
    configure(&app, &stub, json!({})).await;
    app.create_account("acme").await;
    let sent_text = |msgs: Vec<Value>, id: &str| {
        msgs.iter()
            .find(|m| m["id"] == id)
            .and_then(|m| m["text"].as_str().map(str::to_string))
            .expect("the sent reply")
    };
    inbound(&app, "acme", JID, "md1", "Which colours?").await;
    let row = settled(&app, "acme", "md1").await;
    assert_eq!(row["status"], "sent", "{row}");
    let whatsapp =
        "*Colours*\n\nWe have it in *blue* and _red_:\n\n- blue (https://shop.example/b)\n- red";
    assert_eq!(row["reply_text"], whatsapp, "{row}");
    let id = row["sent_message_id"].as_str().expect("id").to_string();
    assert_eq!(sent_text(messages(&app, "acme", JID).await, &id), whatsapp);
    let eff = app
        .admin(
            "GET",
            &format!("/v1/accounts/acme/chats/{JID}/ai/effective"),
            None,
        )
        .await;
    assert_eq!(
        (
            &eff.json["format_for_whatsapp"]["value"],
            &eff.json["format_for_whatsapp"]["source"]
        ),
        (&json!(true), &json!("default")),
        "{}",
        eff.text
    );

    let r = app
        .admin(
            "PUT",
            "/v1/accounts/acme/ai",
            Some(json!({"format_for_whatsapp": false})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["format_for_whatsapp"], false);
    inbound(&app, "acme", JID, "md2", "And sizes?").await;
    let row = settled(&app, "acme", "md2").await;
    let id = row["sent_message_id"].as_str().expect("id").to_string();
    assert_eq!(sent_text(messages(&app, "acme", JID).await, &id), markdown);
}
both_stores!(
    whatsapp_formatting,
    markdown_replies_are_formatted_for_whatsapp
);

/// Replies recorded before reasons had codes hold the text in their events: after a restart folds
/// the history again, the AI log shows the same text with its code (`other` for a text no code
/// matches), and new replies in the same chat store the code.
async fn legacy_reason_texts_read_back_with_codes(mut app: TestApp) {
    use wagate::store::group_commit::{Append, Appended};

    app.create_account("acme").await;
    let stream = format!("acme/{JID}");
    let at = "2026-11-25T10:00:00Z";
    let legacy = [
        json!({"MessageReceived":{"message_id":"old1","from":"491701234567","text":"hi","from_me":false,"at":at}}),
        json!({"AiReplyRequested":{"reply_id":"r-old1","trigger_message_id":"old1"}}),
        json!({"AiReplySkipped":{"reply_id":"r-old1","reason":"no API key configured"}}),
        json!({"MessageReceived":{"message_id":"old2","from":"491701234567","text":"hi again","from_me":false,"at":at}}),
        json!({"AiReplyRequested":{"reply_id":"r-old2","trigger_message_id":"old2"}}),
        json!({"AiReplyFailed":{"reply_id":"r-old2","reason":"a text from an older build"}}),
    ];
    let events = legacy
        .iter()
        .map(|p| {
            let kind = p.as_object().and_then(|o| o.keys().next()).cloned();
            (kind.unwrap_or_default(), "1".to_string(), p.to_string())
        })
        .collect();
    let appended = app
        .app()
        .committer
        .append(Append {
            aggregate_type: "chat",
            aggregate_id: stream.clone(),
            expected: 0,
            events,
            metadata: Default::default(),
            fence: None,
        })
        .await;
    assert!(
        matches!(appended, Ok(Appended::Committed(_))),
        "{appended:?}"
    );
    app.restart().await;

    let row = settled(&app, "acme", "old1").await;
    assert_eq!(
        (row["reason"].as_str(), row["reason_code"].as_str()),
        (Some("no API key configured"), Some("no_api_key")),
        "{row}"
    );
    let row = settled(&app, "acme", "old2").await;
    assert_eq!(
        (row["reason"].as_str(), row["reason_code"].as_str()),
        (Some("a text from an older build"), Some("other")),
        "{row}"
    );

    let r = app
        .admin("PUT", "/v1/ai/global", Some(json!({"enabled": true})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    inbound(&app, "acme", JID, "new1", "hello").await;
    let row = settled(&app, "acme", "new1").await;
    assert_eq!(
        (row["reason"].as_str(), row["reason_code"].as_str()),
        (Some("no API key configured"), Some("no_api_key")),
        "{row}"
    );
    let stored = wagate::store::chats::read_events(&app.app().store, &stream, 0)
        .await
        .expect("read");
    let last = stored.last().map(|e| e.payload.clone()).unwrap_or_default();
    let last: Value = serde_json::from_str(&last).unwrap_or_default();
    assert_eq!(
        last["AiReplySkipped"]["reason"],
        json!({"code": "no_api_key"}),
        "{last}"
    );
}
both_stores!(legacy_reasons, legacy_reason_texts_read_back_with_codes);
