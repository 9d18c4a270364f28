//! Conversation control (issue 8) through the real server on both stores, with model stubs on
//! loopback: human takeover and resume, burst debounce (also across a restart), the hourly cap
//! and the daily token budget (also after a replay), the history budget, retries then the
//! fallback model, and bad input.

use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::both_stores;
use crate::helpers::{eventually, TestApp};
use crate::replies::{completion, configure, inbound, messages, settled, JID};

fn effective_path() -> String {
    format!("/v1/accounts/acme/chats/{JID}/ai/effective")
}

pub async fn effective(app: &TestApp) -> Value {
    let r = app.admin("GET", &effective_path(), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json
}

async fn operator_send(app: &TestApp, text: &str) {
    let r = app
        .admin(
            "POST",
            &format!("/v1/accounts/acme/chats/{JID}/messages"),
            Some(json!({ "text": text })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

async fn from_me(app: &TestApp, id: &str, text: &str) -> Value {
    let r = app
        .admin(
            "POST",
            "/v1/accounts/acme/sandbox/inbound",
            Some(json!({"chat_id": JID, "from": "acme", "text": text, "id": id, "from_me": true})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.json
}

pub async fn stub_answering(text: &str) -> MockServer {
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(text)))
        .mount(&stub)
        .await;
    stub
}

async fn calls(stub: &MockServer) -> Vec<Value> {
    stub.received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|r| serde_json::from_slice(&r.body).ok())
        .collect()
}

async fn takeover_pauses_then_auto_resumes(mut app: TestApp) {
    // One takeover "minute" lasts 4 s here, so the pause ends while the test waits.
    app.vars
        .insert("WAGATE_TAKEOVER_MINUTE_SECONDS".into(), "4".into());
    app.restart().await;
    let stub = stub_answering("AI is back").await;
    configure(&app, &stub, json!({"human_takeover_minutes": 1})).await;
    app.create_account("acme").await;
    assert_eq!(effective(&app).await["will_reply"], true);

    operator_send(&app, "Hi, this is Ana from the shop.").await;
    let eff = effective(&app).await;
    assert_eq!(eff["will_reply"], false, "{eff}");
    assert_eq!(eff["pause_cause"], "operator_send");
    assert!(eff["paused_until"].is_string(), "{eff}");
    assert!(
        eff["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("human takeover")),
        "{eff}"
    );
    assert_eq!(eff["reason_code"], "paused_by_human", "{eff}");
    assert_eq!(
        eff["human_takeover_minutes"],
        json!({"value": 1, "source": "global"})
    );

    // A customer message during the pause is recorded and its reply skipped with the reason.
    inbound(&app, "acme", JID, "during", "Thanks Ana!").await;
    let row = settled(&app, "acme", "during").await;
    assert_eq!(row["status"], "skipped", "{row}");
    assert!(
        row["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("human takeover")),
        "{row}"
    );
    assert_eq!(row["reason_code"], "paused_by_human", "{row}");
    assert!(calls(&stub).await.is_empty(), "no model call while paused");

    // The pause ends by itself.
    eventually(20, "the pause ends", || async {
        (effective(&app).await["will_reply"] == true).then_some(())
    })
    .await;
    inbound(&app, "acme", JID, "after", "One more question").await;
    let row = settled(&app, "acme", "after").await;
    assert_eq!(row["status"], "sent", "{row}");
    assert_eq!(calls(&stub).await.len(), 1);
}
both_stores!(takeover_auto_resume, takeover_pauses_then_auto_resumes);

async fn manual_resume_and_pause_survives_restart(mut app: TestApp) {
    let stub = stub_answering("AI here").await;
    configure(&app, &stub, json!({})).await;
    app.create_account("acme").await;
    operator_send(&app, "A human answers.").await;
    let eff = effective(&app).await;
    assert_eq!(eff["will_reply"], false, "{eff}");
    assert_eq!(
        eff["human_takeover_minutes"],
        json!({"value": 30, "source": "default"})
    );
    let chats = app.admin("GET", "/v1/accounts/acme/chats", None).await;
    assert!(
        chats.json["items"][0]["ai_paused_until"].is_string(),
        "{}",
        chats.text
    );

    // The pause is an event: a restart keeps it.
    app.restart().await;
    assert_eq!(effective(&app).await["will_reply"], false);
    inbound(&app, "acme", JID, "paused", "Hello?").await;
    assert_eq!(settled(&app, "acme", "paused").await["status"], "skipped");

    let r = app
        .admin(
            "POST",
            &format!("/v1/accounts/acme/chats/{JID}/ai/resume"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["will_reply"], true, "{}", r.text);
    assert_eq!(r.json["paused_until"], Value::Null);
    // Resuming a chat that is not paused changes nothing.
    let head = app.head().await;
    let again = app
        .admin(
            "POST",
            &format!("/v1/accounts/acme/chats/{JID}/ai/resume"),
            None,
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(app.head().await, head);

    inbound(&app, "acme", JID, "resumed", "Anyone there?").await;
    assert_eq!(settled(&app, "acme", "resumed").await["status"], "sent");
    // After a restart the resume still holds.
    app.restart().await;
    assert_eq!(effective(&app).await["will_reply"], true);
}
both_stores!(manual_resume, manual_resume_and_pause_survives_restart);

async fn own_echo_does_not_pause_but_the_phone_does(app: TestApp) {
    let stub = stub_answering("Hello from the AI").await;
    configure(&app, &stub, json!({})).await;
    app.create_account("acme").await;
    inbound(&app, "acme", JID, "q1", "Are you open?").await;
    let row = settled(&app, "acme", "q1").await;
    assert_eq!(row["status"], "sent", "{row}");
    let sent_id = row["sent_message_id"]
        .as_str()
        .expect("sent id")
        .to_string();

    // The transport echoes the gateway's own reply as from_me: not a human answer.
    let ack = from_me(&app, &sent_id, "Hello from the AI").await;
    assert_eq!(ack["duplicate"], true, "{ack}");
    let eff = effective(&app).await;
    assert_eq!(eff["will_reply"], true, "{eff}");

    // The owner typing on the phone is.
    from_me(&app, "phone-1", "I'll handle this one").await;
    let eff = effective(&app).await;
    assert_eq!(eff["will_reply"], false, "{eff}");
    assert_eq!(eff["pause_cause"], "owner_message");
}
both_stores!(
    own_echo_no_pause,
    own_echo_does_not_pause_but_the_phone_does
);

async fn five_messages_one_call(app: TestApp) {
    let stub = stub_answering("One answer to all").await;
    configure(&app, &stub, json!({"debounce_seconds": 3})).await;
    app.create_account("acme").await;
    for i in 0..5 {
        inbound(&app, "acme", JID, &format!("b{i}"), &format!("part {i}")).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let row = settled(&app, "acme", "b4").await;
    assert_eq!(row["status"], "sent", "{row}");
    assert!(row["not_before"].is_string(), "{row}");
    for i in 0..4 {
        let older = settled(&app, "acme", &format!("b{i}")).await;
        assert_eq!(older["status"], "skipped", "{older}");
        assert!(
            older["reason"]
                .as_str()
                .is_some_and(|r| r.contains("superseded")),
            "{older}"
        );
    }
    let bodies = calls(&stub).await;
    assert_eq!(bodies.len(), 1, "exactly one model call");
    let prompt = bodies[0]["messages"].to_string();
    for i in 0..5 {
        assert!(prompt.contains(&format!("part {i}")), "{prompt}");
    }
    let outbound = messages(&app, "acme", JID)
        .await
        .into_iter()
        .filter(|m| m["direction"] == "outbound")
        .count();
    assert_eq!(outbound, 1);
}
both_stores!(debounce_burst, five_messages_one_call);

async fn restart_inside_the_window_answers_once(mut app: TestApp) {
    let stub = stub_answering("Answered after the restart").await;
    configure(&app, &stub, json!({"debounce_seconds": 3})).await;
    app.create_account("acme").await;
    inbound(&app, "acme", JID, "w1", "Hello, anyone?").await;
    app.restart().await;
    let row = settled(&app, "acme", "w1").await;
    assert_eq!(row["status"], "sent", "{row}");
    // Give a second (wrong) answer the time to appear.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(calls(&stub).await.len(), 1, "exactly one model call");
    let outbound = messages(&app, "acme", JID)
        .await
        .into_iter()
        .filter(|m| m["direction"] == "outbound")
        .count();
    assert_eq!(outbound, 1, "exactly one reply");
}
both_stores!(debounce_restart, restart_inside_the_window_answers_once);

async fn usage(app: &TestApp) -> Value {
    let r = app.admin("GET", "/v1/accounts/acme/ai/usage", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json
}

async fn caps_skip_with_reasons_and_replay_counts_the_same(mut app: TestApp) {
    let stub = stub_answering("ok").await; // 18 tokens per reply
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let r = app
        .admin(
            "POST",
            "/v1/webhooks",
            Some(
                json!({"url": format!("{}/hook", receiver.uri()), "events": ["ai.reply.skipped"]}),
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    configure(
        &app,
        &stub,
        json!({"max_replies_per_chat_per_hour": 1, "daily_token_budget": 30}),
    )
    .await;
    app.create_account("acme").await;
    let other = "491709999999@s.whatsapp.net";
    let third = "491708888888@s.whatsapp.net";

    inbound(&app, "acme", JID, "c1", "first").await;
    assert_eq!(settled(&app, "acme", "c1").await["status"], "sent");
    inbound(&app, "acme", JID, "c2", "second").await;
    let row = settled(&app, "acme", "c2").await;
    assert_eq!(row["status"], "skipped", "{row}");
    assert!(
        row["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("max_replies_per_chat_per_hour")),
        "{row}"
    );
    assert_eq!(row["reason_code"], "hourly_cap", "{row}");

    // Another chat has its own hourly count but shares the account's token budget.
    inbound(&app, "acme", other, "d1", "hello").await;
    assert_eq!(settled(&app, "acme", "d1").await["status"], "sent");
    let u = usage(&app).await;
    assert_eq!(u["tokens_used"], 36, "{u}");
    assert_eq!(u["daily_token_budget"], 30);
    assert_eq!(u["tokens_remaining"], 0);
    inbound(&app, "acme", third, "d2", "again").await;
    let row = settled(&app, "acme", "d2").await;
    assert_eq!(row["status"], "skipped", "{row}");
    assert_eq!(
        row["reason"],
        "daily_token_budget: 36 of 30 tokens used today (UTC) by this account"
    );
    assert_eq!(row["reason_code"], "budget_exhausted", "{row}");
    assert_eq!(calls(&stub).await.len(), 2);
    // Each skip went out as an `ai.reply.skipped` webhook naming the limit.
    let reasons = eventually(20, "both skip webhooks arrive", || async {
        let reasons: Vec<String> = receiver
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .filter(|b| b["type"] == "ai.reply.skipped")
            .filter_map(|b| {
                let text = b["data"]["reason"].as_str()?;
                let code = b["data"]["reason_code"].as_str()?;
                Some(format!("{code}: {text}"))
            })
            .collect();
        (reasons.len() >= 2).then_some(reasons)
    })
    .await;
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("hourly_cap: max_replies_per_chat_per_hour")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("budget_exhausted: daily_token_budget")),
        "{reasons:?}"
    );

    // Replay (a restart folds the history again) gives the same counters and decisions.
    app.restart().await;
    assert_eq!(usage(&app).await, u);
    app.admin(
        "PUT",
        "/v1/ai/global",
        Some(json!({"daily_token_budget": 0})),
    )
    .await;
    inbound(&app, "acme", JID, "c3", "third").await;
    let row = settled(&app, "acme", "c3").await;
    assert!(
        row["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("max_replies_per_chat_per_hour")),
        "the hourly count survives the replay: {row}"
    );
    assert_eq!(calls(&stub).await.len(), 2);
}
both_stores!(budgets, caps_skip_with_reasons_and_replay_counts_the_same);

async fn history_budget_keeps_the_newest_turns(app: TestApp) {
    let stub = stub_answering("ok").await;
    configure(&app, &stub, json!({"max_history_tokens": 20})).await;
    app.create_account("acme").await;
    for i in 0..3 {
        let id = format!("h{i}");
        inbound(&app, "acme", JID, &id, &format!("customer {i}")).await;
        assert_eq!(settled(&app, "acme", &id).await["status"], "sent");
    }
    inbound(&app, "acme", JID, "last", "the last question").await;
    assert_eq!(settled(&app, "acme", "last").await["status"], "sent");
    let bodies = calls(&stub).await;
    let last = bodies.last().expect("a call");
    // Estimate: chars/4 rounded up + 4. "the last question" = 9, "ok" = 5, "customer 2" = 7:
    // 9 + 5 fit in 20, adding 7 does not.
    assert_eq!(
        last["messages"],
        json!([
            {"role": "system", "content": "You are a test assistant."},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "the last question"}
        ])
    );
}
both_stores!(history_budget, history_budget_keeps_the_newest_turns);

async fn server_errors_then_fallback_answers(app: TestApp) {
    let stub = MockServer::start().await;
    let mut fallback_answer = completion("From the fallback");
    fallback_answer["model"] = json!("backup-model");
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains("\"model\":\"backup-model\""))
        .respond_with(ResponseTemplate::new(200).set_body_json(fallback_answer))
        .with_priority(1)
        .mount(&stub)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(503))
        .with_priority(2)
        .mount(&stub)
        .await;
    configure(
        &app,
        &stub,
        json!({"max_retries": 2, "fallback_model_name": "backup-model"}),
    )
    .await;
    app.create_account("acme").await;
    inbound(&app, "acme", JID, "f1", "Is the primary down?").await;
    let row = settled(&app, "acme", "f1").await;
    assert_eq!(row["status"], "sent", "{row}");
    assert_eq!(row["model"], "backup-model");
    assert_eq!(row["fallback"], true);
    assert_eq!(row["reply_text"], "From the fallback");
    let failed = json!({"model": "stub-model", "outcome": "server_error (HTTP 503)"});
    assert_eq!(
        row["attempts"],
        json!([failed, failed, failed, {"model": "backup-model", "fallback": true, "outcome": "ok"}]),
        "{row}"
    );
    // The fallback got the same conversation.
    let bodies = calls(&stub).await;
    assert_eq!(bodies.len(), 4);
    assert_eq!(bodies[3]["messages"], bodies[0]["messages"]);
}
both_stores!(fallback, server_errors_then_fallback_answers);

/// Issue 20: the test routes answer through the reply pipeline: the history budget, retries,
/// the fallback model and the daily token budget apply as they do to a real reply.
async fn test_routes_run_the_reply_pipeline(app: TestApp) {
    let stub = MockServer::start().await;
    let mut fallback_answer = completion("From the fallback");
    fallback_answer["model"] = json!("backup-model");
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains("\"model\":\"backup-model\""))
        .respond_with(ResponseTemplate::new(200).set_body_json(fallback_answer))
        .with_priority(1)
        .mount(&stub)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(503))
        .with_priority(2)
        .mount(&stub)
        .await;
    let settings = json!({"max_retries": 1, "fallback_model_name": "backup-model",
        "max_history_tokens": 10});
    configure(&app, &stub, settings.clone()).await;
    app.create_account("acme").await;
    inbound(
        &app,
        "acme",
        JID,
        "p1",
        "An older question that the history budget leaves out",
    )
    .await;
    assert_eq!(settled(&app, "acme", "p1").await["status"], "sent");
    let before = calls(&stub).await.len();

    let r = app
        .admin(
            "POST",
            "/v1/ai/admin/test",
            Some(json!({"account_id": "acme", "chat_id": JID, "message": "Which colours?"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.json["reply"].as_str(), r.json["model"].as_str()),
        (Some("From the fallback"), Some("backup-model"))
    );
    let test_calls = &calls(&stub).await[before..];
    let models: Vec<&str> = test_calls
        .iter()
        .filter_map(|c| c["model"].as_str())
        .collect();
    assert_eq!(
        models,
        ["stub-model", "stub-model", "backup-model"],
        "one retry of the primary, then the fallback"
    );
    assert_eq!(
        test_calls[0]["messages"],
        json!([{"role": "system", "content": "You are a test assistant."},
            {"role": "user", "content": "Which colours?"}]),
        "only the newest turn fits the history budget"
    );

    // The reply above used 18 tokens today: over a budget of 10, the test makes no model call.
    let mut limited = settings;
    limited["daily_token_budget"] = json!(10);
    configure(&app, &stub, limited).await;
    let before = calls(&stub).await.len();
    let r = app
        .admin(
            "POST",
            "/v1/ai/admin/test",
            Some(json!({"account_id": "acme", "message": "Still there?"})),
        )
        .await;
    assert_eq!(
        (r.status, r.json["error"]["code"].as_str()),
        (409, Some("budget_exhausted")),
        "{}",
        r.text
    );
    assert_eq!(calls(&stub).await.len(), before);
}
both_stores!(test_route_pipeline, test_routes_run_the_reply_pipeline);

async fn no_fallback_fails_with_every_attempt(app: TestApp) {
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&stub)
        .await;
    configure(&app, &stub, json!({"max_retries": 1})).await;
    app.create_account("acme").await;
    inbound(&app, "acme", JID, "x1", "hello").await;
    let row = settled(&app, "acme", "x1").await;
    assert_eq!(row["status"], "failed", "{row}");
    assert_eq!(row["attempts"].as_array().map(Vec::len), Some(2), "{row}");
    assert_eq!(calls(&stub).await.len(), 2);
}
both_stores!(
    retries_without_fallback,
    no_fallback_fails_with_every_attempt
);

async fn absurd_values_are_400_naming_the_field(app: TestApp) {
    app.create_account("acme").await;
    let cases = [
        (json!({"debounce_seconds": 3601}), "debounce_seconds"),
        (json!({"daily_token_budget": -1}), "daily_token_budget"),
        (
            json!({"human_takeover_minutes": -5}),
            "human_takeover_minutes",
        ),
        (
            json!({"human_takeover_minutes": 100000}),
            "human_takeover_minutes",
        ),
        (
            json!({"max_replies_per_chat_per_hour": 5000}),
            "max_replies_per_chat_per_hour",
        ),
        (json!({"max_history_tokens": "lots"}), "max_history_tokens"),
        (
            json!({"history_window_hours": 9000}),
            "history_window_hours",
        ),
        (json!({"max_retries": 11}), "max_retries"),
        (json!({"fallback_model_name": " "}), "fallback_model_name"),
        (json!({"fallback_base_url": "ftp://x"}), "fallback_base_url"),
    ];
    let head = app.head().await;
    for path in ["/v1/ai/global", "/v1/accounts/acme/ai"] {
        for (body, field) in &cases {
            let r = app.admin("PUT", path, Some(body.clone())).await;
            assert_eq!(r.status, 400, "{path} {body}: {}", r.text);
            assert!(r.text.contains(field), "{path} {body}: {}", r.text);
        }
    }
    assert_eq!(app.head().await, head, "nothing written");
    let r = app
        .admin("POST", "/v1/accounts/acme/chats/not-a-jid/ai/resume", None)
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = app
        .admin(
            "POST",
            &format!("/v1/accounts/nobody/chats/{JID}/ai/resume"),
            None,
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(app.head().await, head, "nothing written");

    // Valid values round-trip with their layer.
    let r = app
        .admin(
            "PUT",
            "/v1/accounts/acme/ai",
            Some(json!({"debounce_seconds": 5, "fallback_base_url": "http://127.0.0.1:9/v1/"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["debounce_seconds"], 5);
    assert_eq!(r.json["fallback_base_url"], "http://127.0.0.1:9/v1");
    let eff = effective(&app).await;
    assert_eq!(
        eff["debounce_seconds"],
        json!({"value": 5, "source": "account"})
    );
    assert_eq!(eff["max_retries"], json!({"value": 2, "source": "default"}));

    // The chat layer: same ranges, its own provenance, `null` inherits again.
    let chat_ai = format!("/v1/accounts/acme/chats/{JID}/ai");
    let head = app.head().await;
    for (body, field) in [
        (json!({"debounce_seconds": 3601}), "debounce_seconds"),
        (
            json!({"human_takeover_minutes": -1}),
            "human_takeover_minutes",
        ),
        (json!({"daily_token_budget": 5}), "daily_token_budget"),
    ] {
        let r = app.admin("PUT", &chat_ai, Some(body.clone())).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(r.text.contains(field), "{body}: {}", r.text);
    }
    assert_eq!(app.head().await, head, "nothing written");
    let r = app
        .admin(
            "PUT",
            &chat_ai,
            Some(json!({"human_takeover_minutes": 0, "debounce_seconds": 1})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["human_takeover_minutes"], 0);
    let eff = effective(&app).await;
    assert_eq!(
        eff["human_takeover_minutes"],
        json!({"value": 0, "source": "chat"})
    );
    assert_eq!(
        eff["debounce_seconds"],
        json!({"value": 1, "source": "chat"})
    );
    let r = app
        .admin("PUT", &chat_ai, Some(json!({"debounce_seconds": null})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let eff = effective(&app).await;
    assert_eq!(
        eff["debounce_seconds"],
        json!({"value": 5, "source": "account"})
    );
}
both_stores!(control_bad_input, absurd_values_are_400_naming_the_field);

async fn controls_are_in_the_openapi_document(app: TestApp) {
    let doc = app.call("GET", "/openapi.json", None, None).await;
    assert_eq!(doc.status, 200);
    let paths = &doc.json["paths"];
    assert!(paths["/v1/accounts/{acc}/chats/{jid}/ai/resume"]["post"].is_object());
    assert!(paths["/v1/accounts/{acc}/ai/usage"]["get"].is_object());
    let schemas = &doc.json["components"]["schemas"];
    for field in [
        "human_takeover_minutes",
        "debounce_seconds",
        "max_replies_per_chat_per_hour",
        "daily_token_budget",
        "max_history_tokens",
        "history_window_hours",
        "max_retries",
        "fallback_model_name",
        "fallback_base_url",
        "fallback_api_key",
    ] {
        assert!(
            schemas["AiSettingsRequest"]["properties"][field].is_object(),
            "{field}"
        );
    }
    assert!(schemas["ChatAiRequest"]["properties"]["debounce_seconds"].is_object());
    assert!(schemas["AccountUsage"].is_object());
}
both_stores!(control_openapi, controls_are_in_the_openapi_document);

async fn chat_layer_zero_takeover_never_pauses(app: TestApp) {
    let stub = stub_answering("still here").await;
    configure(&app, &stub, json!({})).await;
    app.create_account("acme").await;
    let r = app
        .admin(
            "PUT",
            &format!("/v1/accounts/acme/chats/{JID}/ai"),
            Some(json!({"human_takeover_minutes": 0})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    operator_send(&app, "A human answers, but this chat keeps the AI on.").await;
    let eff = effective(&app).await;
    assert_eq!(eff["will_reply"], true, "{eff}");
    inbound(&app, "acme", JID, "k1", "Thanks").await;
    assert_eq!(settled(&app, "acme", "k1").await["status"], "sent");
}
both_stores!(takeover_off_per_chat, chat_layer_zero_takeover_never_pauses);

async fn fallback_on_another_origin_uses_its_own_key(app: TestApp) {
    let primary = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429))
        .mount(&primary)
        .await;
    let backup = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(wiremock::matchers::header(
            "authorization",
            "Bearer sk-fallback-key",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("Backup here")))
        .expect(1)
        .mount(&backup)
        .await;
    configure(
        &app,
        &primary,
        json!({
            "max_retries": 0,
            "fallback_model_name": "backup-model",
            "fallback_base_url": format!("{}/v1", backup.uri()),
            "fallback_api_key": "sk-fallback-key"
        }),
    )
    .await;
    let global = app.admin("GET", "/v1/ai/global", None).await;
    assert_eq!(global.json["has_fallback_api_key"], true, "{}", global.text);
    assert!(!global.text.contains("sk-fallback-key"));
    app.create_account("acme").await;
    let eff = effective(&app).await;
    assert_eq!(
        eff["has_fallback_api_key"],
        json!({"value": true, "source": "global"})
    );
    inbound(&app, "acme", JID, "o1", "hello").await;
    let row = settled(&app, "acme", "o1").await;
    assert_eq!(row["status"], "sent", "{row}");
    assert_eq!(row["fallback"], true);
    assert_eq!(
        row["attempts"][0],
        json!({"model": "stub-model", "outcome": "rate_limited (HTTP 429)"})
    );
    // The main key never went to the other origin.
    let sent = backup.received_requests().await.unwrap_or_default();
    assert!(sent.iter().all(|r| r
        .headers
        .get("authorization")
        .is_some_and(|v| v == "Bearer sk-fallback-key")));
    backup.verify().await;

    // Moving the fallback to another origin without a new key drops the key.
    let r = app
        .admin(
            "PUT",
            "/v1/ai/global",
            Some(json!({"fallback_base_url": "http://127.0.0.2:9/v1"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["has_fallback_api_key"], false, "{}", r.text);
}
both_stores!(
    fallback_own_key,
    fallback_on_another_origin_uses_its_own_key
);

/// The fallback key is re-encrypted by key rotation like the main key (SECURITY item 7).
async fn fallback_key_rotates(mut app: TestApp) {
    app.create_account("acme").await;
    let r = app
        .admin(
            "PUT",
            "/v1/accounts/acme/ai",
            Some(json!({"fallback_model_name": "b", "fallback_api_key": "sk-fb"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    app.vars
        .insert("WAGATE_MASTER_KEY".into(), crate::helpers::master_key(100));
    app.vars.insert(
        "WAGATE_MASTER_KEYS_OLD".into(),
        crate::helpers::master_key(1),
    );
    app.restart().await;
    let who = wagate::app::Who {
        actor: "cli:rotate-keys".into(),
        request_id: None,
    };
    let report = wagate::service::keys::rotate_keys(app.app(), &who).await;
    assert_eq!((report.resealed, report.failed.len()), (1, 0), "{report:?}");
    app.vars.remove("WAGATE_MASTER_KEYS_OLD");
    app.restart().await;
    let sealed = app
        .app()
        .model()
        .account("acme")
        .and_then(|a| a.ai.fallback_api_key.clone())
        .expect("fallback key")
        .sealed;
    let keyring = &app.app().config.keyring;
    let opened = keyring
        .open_string(&sealed, "ai_api_key|v1|account:acme#fallback")
        .expect("opens under the new master key");
    assert_eq!(secrecy::ExposeSecret::expose_secret(&opened), "sk-fb");
    // Bound to its owner: it is not the account's main key.
    assert!(keyring
        .open_string(&sealed, "ai_api_key|v1|account:acme")
        .is_err());
}
both_stores!(fallback_key_rotation, fallback_key_rotates);
