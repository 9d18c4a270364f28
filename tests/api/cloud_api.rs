//! The WhatsApp Cloud API transport against a fake Graph API on loopback (wiremock) that answers
//! with Meta's documented shapes, and webhooks in Meta's documented payload format, on both stores.

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::both_stores;
use crate::helpers::{eventually, Resp, TestApp};
use crate::replies::{completion, configure, messages, settled};

const PHONE_ID: &str = "106540352242922";
const WABA_ID: &str = "102290129340398";
const ACCESS_TOKEN: &str = "EAAGtestaccesstoken0123456789";
const APP_SECRET: &str = "app-secret-0123456789abcdef";
const VERIFY_TOKEN: &str = "my-verify-token";
const CUSTOMER: &str = "16505551234";
const JID: &str = "16505551234@s.whatsapp.net";
const SEND_PATH: &str = "/v21.0/106540352242922/messages";

/// A signed text message from the customer to account `acme`, and its reply's settled AI log row.
async fn customer_says(app: &TestApp, wamid: &str, text: &str) -> Value {
    post_webhook(app, "acme", &text_message(wamid, text), Some(APP_SECRET)).await;
    settled(app, "acme", wamid).await
}

/// Creates a `cloud_api` account whose Graph base URL is the fake.
async fn create_cloud_account(app: &TestApp, acc: &str, graph: &MockServer) -> Resp {
    let r = app
        .admin(
            "POST",
            "/v1/accounts",
            Some(json!({"id": acc, "name": "Acme", "transport": "cloud_api", "cloud_api": {
                "phone_number_id": PHONE_ID, "business_account_id": WABA_ID,
                "access_token": ACCESS_TOKEN, "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN,
                "graph_base_url": graph.uri(), "graph_version": "v21.0"}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Meta's notification envelope around one `value`.
fn envelope(value: Value) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": WABA_ID, "changes": [{
        "field": "messages",
        "value": value
    }]}]})
}

fn metadata() -> Value {
    json!({"display_phone_number": "15550783881", "phone_number_id": PHONE_ID})
}

/// Meta's documented text message notification.
fn text_message(id: &str, text: &str) -> Value {
    envelope(json!({
        "messaging_product": "whatsapp",
        "metadata": metadata(),
        "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": CUSTOMER}],
        "messages": [{"from": CUSTOMER, "id": id, "timestamp": "1749416383", "type": "text",
            "text": {"body": text}}]
    }))
}

/// Meta's documented status notification.
fn status(wamid: &str, status: &str, errors: Option<Value>) -> Value {
    let mut s = json!({"id": wamid, "status": status, "timestamp": "1750263773",
        "recipient_id": CUSTOMER,
        "pricing": {"billable": true, "pricing_model": "PMP", "category": "service"}});
    if let Some(e) = errors {
        s["errors"] = e;
    }
    envelope(json!({"messaging_product": "whatsapp", "metadata": metadata(), "statuses": [s]}))
}

/// POSTs a webhook body, signed with `secret` when given.
async fn post_webhook(app: &TestApp, acc: &str, body: &Value, secret: Option<&str>) -> Resp {
    let bytes = serde_json::to_vec(body).expect("json");
    let mut req = app
        .client
        .post(format!(
            "{}/v1/transports/cloud-api/{acc}/webhook",
            app.base
        ))
        .header("content-type", "application/json");
    if let Some(s) = secret {
        req = req.header("x-hub-signature-256", sign(s, &bytes));
    }
    app.send(req.body(bytes)).await
}

/// Graph's answer to a sent message.
fn sent_response(wamid: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": CUSTOMER, "wa_id": CUSTOMER}],
        "messages": [{"id": wamid}]
    }))
}

/// Graph's error object.
fn graph_error(http: u16, code: i64, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(http).set_body_json(json!({"error": {
        "message": message, "type": "OAuthException", "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": message},
        "fbtrace_id": "AbCdEf123"}}))
}

/// Accepts the read receipt + typing indicator.
async fn accept_typing(graph: &MockServer) {
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(body_partial_json(json!({"status": "read"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"success": true})))
        .with_priority(1)
        .mount(graph)
        .await;
}

async fn send_requests(graph: &MockServer) -> Vec<Value> {
    graph
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .filter(|b| b["type"] == "text")
        .collect()
}

async fn account_settings_are_sealed_and_validated(app: TestApp) {
    let graph = MockServer::start().await;
    let r = create_cloud_account(&app, "acme", &graph).await;
    assert_eq!(r.json["transport"], "cloud_api");
    let c = &r.json["cloud_api"];
    assert_eq!(c["phone_number_id"], PHONE_ID);
    assert_eq!(c["business_account_id"], WABA_ID);
    assert_eq!(c["graph_version"], "v21.0");
    assert_eq!(c["has_access_token"], true);
    assert_eq!(c["has_app_secret"], true);
    assert_eq!(c["token_invalid"], Value::Null);
    assert_eq!(c["webhook_path"], "/v1/transports/cloud-api/acme/webhook");
    let got = app.admin("GET", "/v1/accounts/acme", None).await;
    let events = app.admin("GET", "/v1/events?limit=500", None).await;
    let configured = events.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|e| e["type"] == "CloudApiConfigured")
        .expect("settings event");
    let stored = &configured["payload"]["CloudApiConfigured"]["settings"];
    for k in [
        "access_token_sealed",
        "app_secret_sealed",
        "verify_token_sha256",
    ] {
        assert_eq!(stored[k], "[redacted]", "{k} in {configured}");
    }
    assert_eq!(stored["phone_number_id"], PHONE_ID);
    for body in [&r.text, &got.text, &events.text] {
        for secret in [ACCESS_TOKEN, APP_SECRET, VERIFY_TOKEN] {
            assert!(!body.contains(secret), "a secret leaked: {body}");
        }
    }

    // Bad input: a 400 naming the field, nothing written.
    let head = app.head().await;
    let base = json!({"phone_number_id": PHONE_ID, "business_account_id": WABA_ID,
        "access_token": ACCESS_TOKEN, "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN});
    let cases = [
        (json!({"id": "c1", "transport": "cloud_api"}), "cloud_api"),
        (
            json!({"id": "c1", "transport": "sandbox", "cloud_api": base.clone()}),
            "cloud_api",
        ),
        (
            json!({"id": "c1", "transport": "cloud_api", "cloud_api": {"phone_number_id": PHONE_ID}}),
            "cloud_api.business_account_id",
        ),
        (
            json!({"id": "c1", "transport": "cloud_api",
                "cloud_api": {"phone_number_id": "12ab", "business_account_id": WABA_ID,
                "access_token": ACCESS_TOKEN, "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN}}),
            "cloud_api.phone_number_id",
        ),
        (
            json!({"id": "c1", "transport": "cloud_api",
                "cloud_api": {"phone_number_id": PHONE_ID, "business_account_id": WABA_ID,
                "access_token": "has space", "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN}}),
            "cloud_api.access_token",
        ),
        (
            json!({"id": "c1", "transport": "cloud_api",
                "cloud_api": {"phone_number_id": PHONE_ID, "business_account_id": WABA_ID,
                "access_token": ACCESS_TOKEN, "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN,
                "graph_base_url": "http://169.254.169.254"}}),
            "cloud_api.graph_base_url",
        ),
        (
            json!({"id": "c1", "transport": "cloud_api",
                "cloud_api": {"phone_number_id": PHONE_ID, "business_account_id": WABA_ID,
                "access_token": ACCESS_TOKEN, "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN,
                "graph_version": "21"}}),
            "cloud_api.graph_version",
        ),
    ];
    for (body, field) in cases {
        let r = app.admin("POST", "/v1/accounts", Some(body)).await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.json["error"]["field"], field, "{}", r.text);
    }
    let r = app
        .admin(
            "PATCH",
            "/v1/accounts/acme/cloud_api",
            Some(json!({"graph_version": "v2x"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(app.head().await, head, "bad input wrote nothing");

    // The settings change; secrets still never come back.
    let r = app
        .admin(
            "PATCH",
            "/v1/accounts/acme/cloud_api",
            Some(json!({"graph_version": "v22.0", "app_secret": "new-app-secret"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["cloud_api"]["graph_version"], "v22.0");
    assert!(!r.text.contains("new-app-secret"));
    app.create_account("sbx").await;
    let r = app
        .admin(
            "PATCH",
            "/v1/accounts/sbx/cloud_api",
            Some(json!({"graph_version": "v22.0"})),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
}
both_stores!(
    cloud_account_settings,
    account_settings_are_sealed_and_validated
);

async fn verification_handshake(app: TestApp) {
    let graph = MockServer::start().await;
    create_cloud_account(&app, "acme", &graph).await;
    app.create_account("sbx").await;
    let url = |acc: &str, token: &str| {
        format!(
            "/v1/transports/cloud-api/{acc}/webhook?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444"
        )
    };
    let ok = app
        .call("GET", &url("acme", VERIFY_TOKEN), None, None)
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.text, "1158201444");
    let wrong = app.call("GET", &url("acme", "guess"), None, None).await;
    assert_eq!(wrong.status, 403, "{}", wrong.text);
    assert!(!wrong.text.contains("1158201444"));
    let sandbox = app.call("GET", &url("sbx", VERIFY_TOKEN), None, None).await;
    assert_eq!(sandbox.status, 404);
    let missing = app
        .call(
            "GET",
            "/v1/transports/cloud-api/acme/webhook?hub.mode=subscribe",
            None,
            None,
        )
        .await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.json["error"]["field"], "hub.verify_token");
}
both_stores!(cloud_verification, verification_handshake);

async fn unsigned_or_badly_signed_inbound_is_refused(app: TestApp) {
    let graph = MockServer::start().await;
    create_cloud_account(&app, "acme", &graph).await;
    let head = app.head().await;
    let body = text_message("wamid.IN1", "hello");
    let unsigned = post_webhook(&app, "acme", &body, None).await;
    assert_eq!(unsigned.status, 401, "{}", unsigned.text);
    let wrong = post_webhook(&app, "acme", &body, Some("not-the-app-secret")).await;
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    // A signature over other bytes (the body was altered in transit).
    let bytes = serde_json::to_vec(&body).expect("json");
    let r = app
        .send(
            app.client
                .post(format!("{}/v1/transports/cloud-api/acme/webhook", app.base))
                .header("x-hub-signature-256", sign(APP_SECRET, b"{}"))
                .body(bytes),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(app.head().await, head, "nothing stored");

    // Signed with the app secret: stored, with the contact's name.
    app.echo_mode().await;
    let head = app.head().await;
    let ok = post_webhook(&app, "acme", &body, Some(APP_SECRET)).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.json["messages"], 1);
    assert!(app.head().await > head);
    let msgs = messages(&app, "acme", JID).await;
    let inbound = msgs
        .iter()
        .find(|m| m["id"] == "wamid.IN1")
        .expect("stored");
    assert_eq!(inbound["text"], "hello");
    assert_eq!(inbound["contact_name"], "Sheena Nelson");
    assert_eq!(inbound["kind"], "text");
}
both_stores!(
    cloud_signatures,
    unsigned_or_badly_signed_inbound_is_refused
);

/// The whole loop: signed inbound -> model -> typing on the inbound message -> Graph send with the
/// right body and token -> the wamid on the sent message -> status webhooks move it forward.
async fn whole_loop(app: TestApp) {
    let model = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("Yes, in blue.")))
        .expect(1)
        .mount(&model)
        .await;
    let graph = MockServer::start().await;
    accept_typing(&graph).await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(header(
            "authorization",
            format!("Bearer {ACCESS_TOKEN}").as_str(),
        ))
        .and(body_partial_json(json!({"type": "text"})))
        .respond_with(sent_response("wamid.OUT1"))
        .expect(1)
        .mount(&graph)
        .await;
    configure(&app, &model, json!({})).await;
    create_cloud_account(&app, "acme", &graph).await;

    let body = text_message("wamid.IN1", "Does it come in another color?");
    let r = post_webhook(&app, "acme", &body, Some(APP_SECRET)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Meta delivers again (at-least-once): deduplicated, no second reply.
    let again = post_webhook(&app, "acme", &body, Some(APP_SECRET)).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json["duplicates"], 1);
    assert_eq!(again.json["messages"], 0);

    let row = settled(&app, "acme", "wamid.IN1").await;
    assert_eq!(row["status"], "sent", "{row}");
    assert_eq!(row["sent_message_id"], "wamid.OUT1");

    let requests = graph.received_requests().await.expect("recorded");
    let bodies: Vec<Value> = requests
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("json"))
        .collect();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(
        bodies[0],
        json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.IN1",
            "typing_indicator": {"type": "text"}}),
        "typing indicator first, on the inbound message"
    );
    assert_eq!(
        bodies[1],
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": CUSTOMER,
            "type": "text", "text": {"preview_url": false, "body": "Yes, in blue."}})
    );
    for r in &requests {
        assert_eq!(
            r.headers.get("authorization").and_then(|v| v.to_str().ok()),
            Some(format!("Bearer {ACCESS_TOKEN}").as_str())
        );
    }

    let out = |msgs: &[Value]| {
        msgs.iter()
            .find(|m| m["id"] == "wamid.OUT1")
            .cloned()
            .expect("sent message recorded under its wamid")
    };
    let sent = out(&messages(&app, "acme", JID).await);
    assert_eq!(sent["direction"], "outbound");
    assert_eq!(sent["source"], "ai");
    assert_eq!(sent["status"], "sent");

    for (st, expect_recorded) in [("delivered", 1), ("read", 1), ("delivered", 0)] {
        let r = post_webhook(
            &app,
            "acme",
            &status("wamid.OUT1", st, None),
            Some(APP_SECRET),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["statuses"], expect_recorded, "{st}: {}", r.text);
    }
    let sent = out(&messages(&app, "acme", JID).await);
    assert_eq!(
        sent["status"], "read",
        "a late 'delivered' does not move it back"
    );
    // A status for a message this gateway never sent is accepted and ignored.
    let r = post_webhook(
        &app,
        "acme",
        &status("wamid.UNKNOWN", "read", None),
        Some(APP_SECRET),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["statuses"], 0);

    // A reply that reaches a customer is marked before Graph is called (ADR 0025): the answer and
    // the mark commit first, the sent message after.
    let ev = app
        .admin("GET", "/v1/events?aggregate=chat&limit=1000", None)
        .await;
    let types: Vec<&str> = ev.json["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["type"].as_str())
        .filter(|t| t.starts_with("AiReply") || *t == "MessageSent")
        .collect();
    assert_eq!(
        types,
        [
            "AiReplyRequested",
            "AiReplyGenerated",
            "AiReplySending",
            "MessageSent",
            "AiReplySent"
        ]
    );
}
both_stores!(cloud_whole_loop, whole_loop);

/// The transport is called outside the chat actor: while a reply's send waits on a slow Graph
/// API, the chat keeps taking messages, and a status Meta reports for the reply before its send
/// is recorded waits for that record instead of being dropped as unknown.
async fn a_slow_send_does_not_hold_the_chat(app: TestApp) {
    let model = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("Yes, in blue.")))
        .mount(&model)
        .await;
    let graph = MockServer::start().await;
    accept_typing(&graph).await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(body_partial_json(json!({"type": "text"})))
        .respond_with(sent_response("wamid.SLOW").set_delay(std::time::Duration::from_secs(3)))
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&graph)
        .await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(body_partial_json(json!({"type": "text"})))
        .respond_with(sent_response("wamid.OUT2"))
        .with_priority(3)
        .mount(&graph)
        .await;
    configure(&app, &model, json!({})).await;
    create_cloud_account(&app, "acme", &graph).await;

    let r = post_webhook(
        &app,
        "acme",
        &text_message("wamid.IN1", "Blue?"),
        Some(APP_SECRET),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    eventually(20, "the reply's send reaches the Graph API", || async {
        (!send_requests(&graph).await.is_empty()).then_some(())
    })
    .await;
    // The send is in flight (3 s): the same chat takes the next message now.
    let r = post_webhook(
        &app,
        "acme",
        &text_message("wamid.IN2", "Or red?"),
        Some(APP_SECRET),
    )
    .await;
    assert_eq!(
        (r.status, &r.json["messages"]),
        (200, &json!(1)),
        "{}",
        r.text
    );
    let recorded = messages(&app, "acme", JID).await;
    assert!(
        recorded.iter().any(|m| m["id"] == "wamid.IN2")
            && !recorded.iter().any(|m| m["id"] == "wamid.SLOW"),
        "the second message is recorded while the first reply's send is still in flight: {recorded:?}"
    );
    // Meta reports the reply before the gateway has its id on record.
    let r = post_webhook(
        &app,
        "acme",
        &status("wamid.SLOW", "delivered", None),
        Some(APP_SECRET),
    )
    .await;
    assert_eq!(
        (r.status, &r.json["statuses"]),
        (200, &json!(1)),
        "{}",
        r.text
    );

    let first = settled(&app, "acme", "wamid.IN1").await;
    assert_eq!(
        (first["status"].as_str(), first["sent_message_id"].as_str()),
        (Some("sent"), Some("wamid.SLOW")),
        "a reply the transport took is recorded as sent, though a newer message came meanwhile: {first}"
    );
    let second = settled(&app, "acme", "wamid.IN2").await;
    assert_eq!(second["status"], "sent", "{second}");
    let slow = messages(&app, "acme", JID)
        .await
        .into_iter()
        .find(|m| m["id"] == "wamid.SLOW")
        .expect("the slow reply is recorded");
    assert_eq!(slow["status"], "delivered", "{slow}");
}
both_stores!(cloud_slow_send, a_slow_send_does_not_hold_the_chat);

async fn non_text_messages_are_recorded_not_answered(app: TestApp) {
    let graph = MockServer::start().await;
    create_cloud_account(&app, "acme", &graph).await;
    app.echo_mode().await;
    let body = envelope(json!({
        "messaging_product": "whatsapp", "metadata": metadata(),
        "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": CUSTOMER}],
        "messages": [
            {"from": CUSTOMER, "id": "wamid.IMG", "timestamp": "1", "type": "video",
             "video": {"caption": "this one", "mime_type": "video/mp4", "sha256": "x", "id": "1003383421387256"}},
            {"from": CUSTOMER, "id": "wamid.REACT", "timestamp": "2", "type": "reaction",
             "reaction": {"message_id": "wamid.IMG", "emoji": "\u{1f44d}"}}
        ]
    }));
    let r = post_webhook(&app, "acme", &body, Some(APP_SECRET)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["messages"], 2);
    let row = settled(&app, "acme", "wamid.IMG").await;
    assert_eq!(row["status"], "skipped");
    assert_eq!(
        row["reason"],
        "video message: the AI answers text messages only"
    );
    let row = settled(&app, "acme", "wamid.REACT").await;
    assert_eq!(
        row["reason"],
        "reaction message: the AI answers text messages only"
    );
    let msgs = messages(&app, "acme", JID).await;
    assert_eq!(msgs.len(), 2, "recorded, nothing sent: {msgs:?}");
    assert!(msgs
        .iter()
        .any(|m| m["kind"] == "video" && m["text"] == "this one"));
    assert!(graph
        .received_requests()
        .await
        .unwrap_or_default()
        .is_empty());
}
both_stores!(cloud_non_text, non_text_messages_are_recorded_not_answered);

/// 131047 (outside the 24-hour window) and 131026 (not on WhatsApp) fail the reply at once with
/// a reason naming the class; a failed status webhook records the reason on the message.
async fn permanent_errors_fail_with_their_reason(app: TestApp) {
    let graph = MockServer::start().await;
    accept_typing(&graph).await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(body_partial_json(json!({"text": {"body": "window"}})))
        .respond_with(graph_error(
            400,
            131047,
            "Re-engagement message: more than 24 hours have passed",
        ))
        .expect(1)
        .mount(&graph)
        .await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(body_partial_json(json!({"text": {"body": "nobody"}})))
        .respond_with(graph_error(400, 131026, "Message undeliverable"))
        .expect(1)
        .mount(&graph)
        .await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(body_partial_json(json!({"text": {"body": "later fails"}})))
        .respond_with(sent_response("wamid.OUT9"))
        .mount(&graph)
        .await;
    create_cloud_account(&app, "acme", &graph).await;
    app.echo_mode().await;

    let row = customer_says(&app, "wamid.W", "window").await;
    assert_eq!(row["status"], "failed");
    assert_eq!(
        row["reason"],
        "send failed: cloud_api error 131047: outside the 24-hour customer service window (only a template message may be sent)"
    );
    let row = customer_says(&app, "wamid.N", "nobody").await;
    assert_eq!(row["status"], "failed");
    assert_eq!(
        row["reason"],
        "send failed: cloud_api error 131026: recipient is not on WhatsApp or cannot receive this message"
    );
    // Upstream text never reaches the log.
    assert!(!row.to_string().contains("Message undeliverable"));

    post_webhook(
        &app,
        "acme",
        &text_message("wamid.L", "later fails"),
        Some(APP_SECRET),
    )
    .await;
    assert_eq!(settled(&app, "acme", "wamid.L").await["status"], "sent");
    let failed = status(
        "wamid.OUT9",
        "failed",
        Some(json!([{"code": 131026, "title": "Message undeliverable"}])),
    );
    let r = post_webhook(&app, "acme", &failed, Some(APP_SECRET)).await;
    assert_eq!(r.json["statuses"], 1, "{}", r.text);
    let msgs = messages(&app, "acme", JID).await;
    let m = msgs
        .iter()
        .find(|m| m["id"] == "wamid.OUT9")
        .expect("sent message");
    assert_eq!(m["status"], "failed");
    assert_eq!(
        m["status_error"],
        "cloud_api error 131026: recipient is not on WhatsApp or cannot receive this message"
    );
}
both_stores!(
    cloud_permanent_errors,
    permanent_errors_fail_with_their_reason
);

/// Rate limits (130429, 131056, 4, 80007) are retried with backoff: a passing limit ends in a
/// sent reply, a lasting one in a failure after the last attempt.
async fn rate_limits_are_retried(app: TestApp) {
    let graph = MockServer::start().await;
    accept_typing(&graph).await;
    // "passes": rate limited twice (two different limits), then accepted.
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(body_partial_json(json!({"text": {"body": "passes"}})))
        .respond_with(graph_error(400, 130429, "Rate limit hit"))
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&graph)
        .await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(body_partial_json(json!({"text": {"body": "passes"}})))
        .respond_with(graph_error(400, 80007, "Rate limit issues"))
        .up_to_n_times(1)
        .with_priority(3)
        .mount(&graph)
        .await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(body_partial_json(json!({"text": {"body": "passes"}})))
        .respond_with(sent_response("wamid.OUT2"))
        .with_priority(4)
        .mount(&graph)
        .await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(body_partial_json(json!({"text": {"body": "stays"}})))
        .respond_with(graph_error(400, 131056, "Pair rate limit hit"))
        .mount(&graph)
        .await;
    create_cloud_account(&app, "acme", &graph).await;
    app.echo_mode().await;

    let row = customer_says(&app, "wamid.P", "passes").await;
    assert_eq!(row["status"], "sent", "{row}");
    assert_eq!(row["sent_message_id"], "wamid.OUT2");
    let tries = send_requests(&graph).await;
    assert_eq!(tries.len(), 3, "two refusals, then sent");

    let row = customer_says(&app, "wamid.S", "stays").await;
    assert_eq!(row["status"], "failed", "{row}");
    assert_eq!(
        row["reason"],
        "send failed after 4 attempts: cloud_api error 131056: rate limited (too many messages to this recipient in a short time)"
    );
    let stays = send_requests(&graph)
        .await
        .into_iter()
        .filter(|b| b["text"]["body"] == "stays")
        .count();
    assert_eq!(stays, 4);
}
both_stores!(cloud_rate_limits, rate_limits_are_retried);

/// Error 190: the reply fails, the account is flagged, later sends stop before reaching Meta,
/// and a new access token lifts the flag.
async fn invalid_token_is_flagged_until_replaced(app: TestApp) {
    let graph = MockServer::start().await;
    accept_typing(&graph).await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(header(
            "authorization",
            format!("Bearer {ACCESS_TOKEN}").as_str(),
        ))
        .and(body_partial_json(json!({"type": "text"})))
        .respond_with(graph_error(
            401,
            190,
            "Error validating access token: Session has expired",
        ))
        .expect(1)
        .mount(&graph)
        .await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(header("authorization", "Bearer EAAGfreshtoken"))
        .and(body_partial_json(json!({"type": "text"})))
        .respond_with(sent_response("wamid.OUT3"))
        .expect(1)
        .mount(&graph)
        .await;
    create_cloud_account(&app, "acme", &graph).await;
    app.echo_mode().await;

    let row = customer_says(&app, "wamid.T1", "first").await;
    assert_eq!(row["status"], "failed");
    assert_eq!(
        row["reason"],
        "send failed: cloud_api error 190: access token rejected (expired or revoked); set a new access_token for this account"
    );
    let acc = eventually(10, "account flagged", || async {
        let r = app.admin("GET", "/v1/accounts/acme", None).await;
        r.json["cloud_api"]["token_invalid"]
            .is_string()
            .then_some(r.json)
    })
    .await;
    assert!(!acc.to_string().contains(ACCESS_TOKEN));

    // Flagged: the operator send is refused without calling Meta.
    let r = app
        .admin(
            "POST",
            &format!("/v1/accounts/acme/chats/{JID}/messages"),
            Some(json!({"text": "are you there?"})),
        )
        .await;
    assert_eq!(r.status, 502, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "transport_refused");
    assert!(r.json["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("access token was rejected")));
    assert_eq!(
        send_requests(&graph).await.len(),
        1,
        "Meta not called again"
    );

    let r = app
        .admin(
            "PATCH",
            "/v1/accounts/acme/cloud_api",
            Some(json!({"access_token": "EAAGfreshtoken"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["cloud_api"]["token_invalid"], Value::Null);
    let r = app
        .admin(
            "POST",
            &format!("/v1/accounts/acme/chats/{JID}/messages"),
            Some(json!({"text": "are you there?"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["id"], "wamid.OUT3");
}
both_stores!(cloud_invalid_token, invalid_token_is_flagged_until_replaced);

/// The operator send and the test route's `send_to_chat` go through the Cloud API too; a
/// permanent Graph refusal is a 502 naming the class, and nothing is recorded as sent.
async fn operator_send_through_cloud_api(app: TestApp) {
    let graph = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(body_partial_json(
            json!({"text": {"body": "Hello from the shop"}}),
        ))
        .respond_with(sent_response("wamid.OP1"))
        .expect(1)
        .mount(&graph)
        .await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(body_partial_json(json!({"text": {"body": "too late"}})))
        .respond_with(graph_error(400, 131047, "Re-engagement message"))
        .mount(&graph)
        .await;
    create_cloud_account(&app, "acme", &graph).await;
    let r = app
        .admin(
            "POST",
            &format!("/v1/accounts/acme/chats/{JID}/messages"),
            Some(json!({"text": "Hello from the shop"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["id"], "wamid.OP1");
    let head = app.head().await;
    let r = app
        .admin(
            "POST",
            &format!("/v1/accounts/acme/chats/{JID}/messages"),
            Some(json!({"text": "too late"})),
        )
        .await;
    assert_eq!(r.status, 502, "{}", r.text);
    assert!(r.json["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("131047")));
    assert_eq!(app.head().await, head, "nothing recorded as sent");
    let msgs = messages(&app, "acme", JID).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["source"], "operator");

    // A group chat cannot be reached through the Cloud API.
    let r = app
        .admin(
            "POST",
            "/v1/accounts/acme/chats/120363042@g.us/messages",
            Some(json!({"text": "hi group"})),
        )
        .await;
    assert_eq!(r.status, 502, "{}", r.text);
}
both_stores!(cloud_operator_send, operator_send_through_cloud_api);

/// An operator send the transport took is recorded even when the HTTP client gives up while the
/// Graph API is still answering: the transport call and its record run in a task of their own.
async fn operator_send_is_recorded_when_the_client_leaves(app: TestApp) {
    let graph = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .respond_with(sent_response("wamid.LEFT").set_delay(std::time::Duration::from_secs(2)))
        .expect(1)
        .mount(&graph)
        .await;
    create_cloud_account(&app, "acme", &graph).await;
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(300))
        .build()
        .expect("client");
    let sent = impatient
        .post(format!(
            "{}/v1/accounts/acme/chats/{JID}/messages",
            app.base
        ))
        .bearer_auth(app.admin_token())
        .json(&json!({"text": "Your order has shipped"}))
        .send()
        .await;
    assert!(
        sent.as_ref().is_err_and(reqwest::Error::is_timeout),
        "the client gave up first: {sent:?}"
    );
    let recorded = eventually(20, "the send is recorded", || async {
        messages(&app, "acme", JID)
            .await
            .into_iter()
            .find(|m| m["id"] == "wamid.LEFT")
    })
    .await;
    assert_eq!(
        (recorded["source"].as_str(), recorded["text"].as_str()),
        (Some("operator"), Some("Your order has shipped"))
    );
}
both_stores!(
    cloud_operator_send_client_leaves,
    operator_send_is_recorded_when_the_client_leaves
);

/// The test route's `send_to_chat` sends the model's answer through the Cloud API.
async fn test_route_sends_through_cloud_api(app: TestApp) {
    let model = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("Hi! How can I help?")))
        .mount(&model)
        .await;
    let graph = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(header(
            "authorization",
            format!("Bearer {ACCESS_TOKEN}").as_str(),
        ))
        .and(body_partial_json(
            json!({"to": CUSTOMER, "text": {"body": "Hi! How can I help?"}}),
        ))
        .respond_with(sent_response("wamid.TEST1"))
        .expect(1)
        .mount(&graph)
        .await;
    configure(&app, &model, json!({})).await;
    create_cloud_account(&app, "acme", &graph).await;
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
            Some(json!({"message": "Hello?", "chat_id": JID, "send_to_chat": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["sent"], true);
    let msgs = messages(&app, "acme", JID).await;
    assert_eq!(
        (msgs[0]["id"].as_str(), msgs[0]["source"].as_str()),
        (Some("wamid.TEST1"), Some("test"))
    );
}
both_stores!(cloud_test_route, test_route_sends_through_cloud_api);

/// `rotate-keys` re-encrypts the Cloud API secrets; after the old master key is dropped the
/// account still sends (token opens) and still verifies webhooks (app secret opens).
async fn key_rotation_reseals_cloud_secrets(mut app: TestApp) {
    let graph = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(header(
            "authorization",
            format!("Bearer {ACCESS_TOKEN}").as_str(),
        ))
        .respond_with(sent_response("wamid.ROT1"))
        .expect(1)
        .mount(&graph)
        .await;
    create_cloud_account(&app, "acme", &graph).await;
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
    assert_eq!(
        (report.resealed, report.failed.len()),
        (2, 0),
        "{:?}",
        report.failed
    );
    assert_eq!(
        wagate::service::keys::rotate_keys(app.app(), &who)
            .await
            .resealed,
        0,
        "idempotent"
    );
    app.vars.remove("WAGATE_MASTER_KEYS_OLD");
    app.restart().await;

    let r = app
        .admin(
            "POST",
            &format!("/v1/accounts/acme/chats/{JID}/messages"),
            Some(json!({"text": "still here"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = post_webhook(
        &app,
        "acme",
        &status("wamid.ROT1", "delivered", None),
        Some(APP_SECRET),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["statuses"], 1);
}
both_stores!(cloud_key_rotation, key_rotation_reseals_cloud_secrets);

/// Crash safety with a transport that reaches customers (ADR 0025): the process is killed while
/// Graph holds the reply's send. The reply was marked before the call, so after the restart it
/// ends `interrupted` and Graph is never asked to send it again; a later message is answered.
async fn kill_during_a_graph_send(backend: crate::helpers::Backend) {
    use std::time::Duration;

    use crate::helpers::Binary;

    let dir = tempfile::tempdir().expect("tmp");
    let Some(vars) = TestApp::vars(backend, &dir).await else {
        return;
    };
    let token = TestApp::admin_token_for(&vars, "crash-test");
    let model = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("on its way")))
        .mount(&model)
        .await;
    let graph = MockServer::start().await;
    accept_typing(&graph).await;
    // The first send hangs past the kill; later ones answer at once.
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .respond_with(sent_response("wamid.SLOW").set_delay(Duration::from_secs(20)))
        .up_to_n_times(1)
        .mount(&graph)
        .await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .respond_with(sent_response("wamid.LATER"))
        .mount(&graph)
        .await;

    let http = reqwest::Client::new();
    let call = |base: String, m: reqwest::Method, p: &str, body: Option<Value>| {
        let mut r = http.request(m, format!("{base}{p}")).bearer_auth(&token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let resp = r.send().await.expect("send");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let webhook = |base: String, wamid: &str, text: &str| {
        let bytes = serde_json::to_vec(&text_message(wamid, text)).expect("json");
        let req = http
            .post(format!("{base}/v1/transports/cloud-api/acme/webhook"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sign(APP_SECRET, &bytes))
            .body(bytes);
        async move { req.send().await.expect("webhook").status().as_u16() }
    };
    let row = |base: String, wamid: &'static str| {
        let logs = call(
            base,
            reqwest::Method::GET,
            "/v1/ai/logs?account_id=acme",
            None,
        );
        async move {
            let (_, logs) = logs.await;
            logs["items"]
                .as_array()?
                .iter()
                .find(|r| r["trigger_message_id"] == wamid)
                .cloned()
        }
    };

    let bin = Binary::start(&vars, "info").await;
    let base = bin.base.clone();
    let (status, body) = call(
        base.clone(),
        reqwest::Method::POST,
        "/v1/accounts",
        Some(
            json!({"id": "acme", "transport": "cloud_api", "cloud_api": {
            "phone_number_id": PHONE_ID, "business_account_id": WABA_ID,
            "access_token": ACCESS_TOKEN, "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN,
            "graph_base_url": graph.uri(), "graph_version": "v21.0"}}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(
        base.clone(),
        reqwest::Method::PUT,
        "/v1/ai/global",
        Some(
            json!({"enabled": true, "base_url": format!("{}/v1", model.uri()),
                    "api_key": "sk-crash", "reply_delay_seconds": 0}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(webhook(base.clone(), "wamid.IN1", "hello?").await, 200);
    eventually(20, "Graph holds the send", || async {
        (send_requests(&graph).await.len() == 1).then_some(())
    })
    .await;
    let mut bin = bin;
    bin.kill9().await;

    let bin2 = Binary::start(&vars, "info").await;
    let base = bin2.base.clone();
    let r = eventually(20, "the marked reply is closed", || async {
        row(base.clone(), "wamid.IN1")
            .await
            .filter(|r| r["status"] == "failed")
    })
    .await;
    assert_eq!(r["reason_code"], "interrupted", "{r}");
    // The gateway answers again, and the interrupted reply was never sent a second time.
    assert_eq!(
        webhook(base.clone(), "wamid.IN2", "still there?").await,
        200
    );
    let r = eventually(20, "the next message is answered", || async {
        row(base.clone(), "wamid.IN2")
            .await
            .filter(|r| r["status"] == "sent")
    })
    .await;
    assert_eq!(r["sent_message_id"], "wamid.LATER");
    assert_eq!(send_requests(&graph).await.len(), 2, "one send per reply");
    bin2.finish().await;
}
both_stores!(cloud_kill_during_send, kill_during_a_graph_send(Backend));

/// The account's connection status (issue 26): `waiting` until something comes in, `connected`
/// after a webhook and a send, `send_failing` after a send Graph refuses for good, and
/// `token_rejected` after error 190; a sandbox account is `sandbox`. The list agrees.
async fn connection_status(app: TestApp) {
    let graph = MockServer::start().await;
    accept_typing(&graph).await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(body_partial_json(json!({"text": {"body": "good"}})))
        .respond_with(sent_response("wamid.OUT1"))
        .mount(&graph)
        .await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(body_partial_json(json!({"text": {"body": "nobody"}})))
        .respond_with(graph_error(400, 131026, "Message undeliverable"))
        .mount(&graph)
        .await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(body_partial_json(json!({"text": {"body": "expired"}})))
        .respond_with(graph_error(401, 190, "Error validating access token"))
        .mount(&graph)
        .await;
    let created = create_cloud_account(&app, "acme", &graph).await;
    let c = &created.json["connection"];
    assert_eq!(c["state"], "waiting", "{c}");
    assert_eq!(c["transport"], "cloud_api");
    assert_eq!(c["last_inbound_at"], Value::Null);
    assert_eq!(c["last_sent_at"], Value::Null);
    assert_eq!(c["last_send_error"], Value::Null);
    assert_eq!(c["token_invalid"], false);
    let r = app
        .admin(
            "POST",
            "/v1/accounts",
            Some(json!({"id": "sand", "transport": "sandbox"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["connection"]["state"], "sandbox");
    app.echo_mode().await;
    let connection = |acc: &'static str| {
        let app = &app;
        async move {
            let r = app.admin("GET", &format!("/v1/accounts/{acc}"), None).await;
            assert_eq!(r.status, 200, "{}", r.text);
            r.json["connection"].clone()
        }
    };

    assert_eq!(
        customer_says(&app, "wamid.G", "good").await["status"],
        "sent"
    );
    let c = connection("acme").await;
    assert_eq!(c["state"], "connected", "{c}");
    assert!(c["last_inbound_at"].is_string(), "{c}");
    assert!(c["last_sent_at"].is_string(), "{c}");
    assert_eq!(c["last_send_error"], Value::Null);

    assert_eq!(
        customer_says(&app, "wamid.N", "nobody").await["status"],
        "failed"
    );
    let c = connection("acme").await;
    assert_eq!(c["state"], "send_failing", "{c}");
    assert_eq!(
        c["last_send_error"]["reason"],
        "send failed: cloud_api error 131026: recipient is not on WhatsApp or cannot receive this message"
    );
    assert!(c["last_send_error"]["at"].is_string(), "{c}");
    assert!(!c.to_string().contains("Message undeliverable"));

    assert_eq!(
        customer_says(&app, "wamid.E", "expired").await["status"],
        "failed"
    );
    let c = eventually(10, "token flagged", || async {
        let c = connection("acme").await;
        (c["state"] == "token_rejected").then_some(c)
    })
    .await;
    assert_eq!(c["token_invalid"], true);
    assert!(c["last_send_error"]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("error 190")));

    let list = app.admin("GET", "/v1/accounts", None).await;
    let states: Vec<(&str, &str)> = list.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap_or_default(),
                a["connection"]["state"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(states, [("acme", "token_rejected"), ("sand", "sandbox")]);
    assert_eq!(connection("sand").await["state"], "sandbox");
}
both_stores!(cloud_connection_status, connection_status);

/// The Graph media id's metadata (`GET /v21.0/{id}`, with the bearer token) pointing at a file
/// on another path of the fake, served (with the bearer token) as `bytes`.
async fn serve_media(graph: &MockServer, id: &str, mime: &str, bytes: &[u8]) {
    let file = format!("/cdn/{id}.bin");
    Mock::given(method("GET"))
        .and(path(format!("/v21.0/{id}")))
        .and(header(
            "authorization",
            format!("Bearer {ACCESS_TOKEN}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "messaging_product": "whatsapp",
            "url": format!("{}{file}?ext=1&hash=ATsecret", graph.uri()),
            "mime_type": mime,
            "sha256": "not-checked",
            "file_size": bytes.len(),
            "id": id
        })))
        .expect(1)
        .mount(graph)
        .await;
    Mock::given(method("GET"))
        .and(path(file))
        .and(header(
            "authorization",
            format!("Bearer {ACCESS_TOKEN}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(bytes.to_vec()))
        .expect(1)
        .mount(graph)
        .await;
}

/// A webhook message of `kind` (`audio`, `image`, `sticker`, `document`) with the media object
/// `media`.
fn media_message(id: &str, kind: &str, media: Value) -> Value {
    let mut m = json!({"from": CUSTOMER, "id": id, "timestamp": "1749416383", "type": kind});
    m[kind] = media;
    envelope(json!({
        "messaging_product": "whatsapp", "metadata": metadata(),
        "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": CUSTOMER}],
        "messages": [m]
    }))
}

/// Accepts the typing indicator and the reply's send.
async fn accept_sends(graph: &MockServer) {
    accept_typing(graph).await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(body_partial_json(json!({"type": "text"})))
        .respond_with(sent_response("wamid.OUT"))
        .mount(graph)
        .await;
}

/// A Cloud API voice note is downloaded from the Graph API (its metadata, then the file, both
/// with the bearer token), kept, transcribed and answered from its transcript; an image is
/// shown to the model as an `image_url` part when `vision` is on.
async fn cloud_media_answered(app: TestApp) {
    use crate::media::{b64, ogg_opus, png};
    use wiremock::matchers::body_string_contains;
    let model = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .and(body_string_contains("OpusHead"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"text": "Do you deliver to Porto?"})),
        )
        .expect(1)
        .mount(&model)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains("Do you deliver to Porto?"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("Yes, to Porto.")))
        .expect(1)
        .mount(&model)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains(format!(
            r#""url":"data:image/png;base64,{}""#,
            b64(&png())
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("A tiny PNG.")))
        // Before the voice note's, whose transcript is in this request's history too.
        .with_priority(1)
        .expect(1)
        .mount(&model)
        .await;
    let graph = MockServer::start().await;
    accept_sends(&graph).await;
    serve_media(&graph, "9001", "audio/ogg", &ogg_opus()).await;
    serve_media(&graph, "9002", "image/png", &png()).await;
    configure(
        &app,
        &model,
        json!({"transcription_model": "whisper-test", "vision": true}),
    )
    .await;
    create_cloud_account(&app, "acme", &graph).await;

    let voice = media_message(
        "wamid.VOICE",
        "audio",
        json!({"id": "9001", "mime_type": "audio/ogg; codecs=opus", "sha256": "abc=", "voice": true}),
    );
    let r = post_webhook(&app, "acme", &voice, Some(APP_SECRET)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["messages"], 1);
    let row = settled(&app, "acme", "wamid.VOICE").await;
    assert_eq!(row["status"], "sent", "{row}");
    assert_eq!(row["reply_text"], "Yes, to Porto.");
    assert_eq!(row["media"]["kind"], "audio", "{row}");
    assert_eq!(row["media"]["size"], ogg_opus().len(), "{row}");

    let image = media_message(
        "wamid.IMAGE",
        "image",
        json!({"id": "9002", "mime_type": "image/png", "sha256": "abc=", "caption": "what is this?"}),
    );
    let r = post_webhook(&app, "acme", &image, Some(APP_SECRET)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let row = settled(&app, "acme", "wamid.IMAGE").await;
    assert_eq!(row["status"], "sent", "{row}");
    assert_eq!(row["reply_text"], "A tiny PNG.");
    let msgs = messages(&app, "acme", JID).await;
    let img = msgs
        .iter()
        .find(|m| m["id"] == "wamid.IMAGE")
        .expect("the image is recorded");
    assert_eq!(img["text"], "what is this?");
    assert_eq!(img["media"]["mime_type"], "image/png");
    assert!(img["media"].get("unavailable").is_none(), "{img}");
}
both_stores!(cloud_media_answered, cloud_media_answered);

/// Media the gateway cannot have never refuses the webhook: a file over the cap (by its
/// `file_size`, never fetched), bytes that are not the declared type, a download that fails;
/// each message is stored with its media marked unavailable and its reply fails with the cause.
/// A document reaches the model as its caption and file name (no download).
async fn cloud_media_unavailable(app: TestApp) {
    use crate::media::{ogg_opus, png};
    use wiremock::matchers::body_string_contains;
    let model = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains(
            "Here is the invoice\\n[document: Rechnung.pdf]",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("Thanks, got it.")))
        .expect(1)
        .mount(&model)
        .await;
    let graph = MockServer::start().await;
    accept_sends(&graph).await;
    // Over the cap by its declared size: the file itself is never asked for.
    Mock::given(method("GET"))
        .and(path("/v21.0/9101"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "messaging_product": "whatsapp", "id": "9101", "mime_type": "audio/ogg",
            "url": format!("{}/cdn/huge.bin", graph.uri()), "file_size": 40_000_000_u64})))
        .expect(1)
        .mount(&graph)
        .await;
    Mock::given(method("GET"))
        .and(path("/cdn/huge.bin"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(ogg_opus()))
        .expect(0)
        .mount(&graph)
        .await;
    // Declared a JPEG, the bytes are a PNG.
    serve_media(&graph, "9102", "image/jpeg", &png()).await;
    // The file download fails.
    Mock::given(method("GET"))
        .and(path("/v21.0/9103"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "messaging_product": "whatsapp", "id": "9103", "mime_type": "image/png",
            "url": format!("{}/cdn/broken.bin", graph.uri()), "file_size": 100})))
        .mount(&graph)
        .await;
    Mock::given(method("GET"))
        .and(path("/cdn/broken.bin"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&graph)
        .await;
    configure(
        &app,
        &model,
        json!({"transcription_model": "whisper-test", "vision": true}),
    )
    .await;
    create_cloud_account(&app, "acme", &graph).await;

    let cases = [
        (
            "wamid.HUGE",
            media_message(
                "wamid.HUGE",
                "audio",
                json!({"id": "9101", "mime_type": "audio/ogg"}),
            ),
            "WAGATE_MEDIA_MAX_BYTES",
        ),
        (
            "wamid.LIE",
            media_message(
                "wamid.LIE",
                "image",
                json!({"id": "9102", "mime_type": "image/jpeg"}),
            ),
            "declared image/jpeg, but the bytes are image/png",
        ),
        (
            "wamid.BROKEN",
            media_message(
                "wamid.BROKEN",
                "sticker",
                json!({"id": "9103", "mime_type": "image/webp"}),
            ),
            "download failed: cloud_api HTTP 500",
        ),
    ];
    for (id, body, cause) in cases {
        let r = post_webhook(&app, "acme", &body, Some(APP_SECRET)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["messages"], 1, "{id}");
        let row = settled(&app, "acme", id).await;
        assert_eq!(
            (row["status"].as_str(), row["reason_code"].as_str()),
            (Some("failed"), Some("media_failed")),
            "{row}"
        );
        let reason = row["reason"].as_str().unwrap_or_default();
        assert!(reason.starts_with("media: not available: "), "{reason}");
        assert!(reason.contains(cause), "{id}: {reason}");
        let msgs = messages(&app, "acme", JID).await;
        let m = msgs.iter().find(|m| m["id"] == id).expect("recorded");
        assert!(
            m["media"]["unavailable"]
                .as_str()
                .is_some_and(|u| u.contains(cause)),
            "{m}"
        );
    }

    let doc = media_message(
        "wamid.DOC",
        "document",
        json!({"id": "9104", "mime_type": "application/pdf", "filename": "Rechnung.pdf",
               "caption": "Here is the invoice", "sha256": "abc="}),
    );
    let r = post_webhook(&app, "acme", &doc, Some(APP_SECRET)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let row = settled(&app, "acme", "wamid.DOC").await;
    assert_eq!(row["status"], "sent", "{row}");
    let msgs = messages(&app, "acme", JID).await;
    let d = msgs
        .iter()
        .find(|m| m["id"] == "wamid.DOC")
        .expect("recorded");
    assert_eq!(d["kind"], "document");
    assert_eq!(d["text"], "Here is the invoice");
    assert_eq!(d["media"]["filename"], "Rechnung.pdf");
    assert_eq!(d["media"]["mime_type"], "application/pdf");
    // No Graph call for the document's bytes.
    let asked: Vec<String> = graph
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| r.url.path().to_string())
        .collect();
    assert!(!asked.iter().any(|p| p.ends_with("/9104")), "{asked:?}");
}
both_stores!(cloud_media_unavailable, cloud_media_unavailable);
