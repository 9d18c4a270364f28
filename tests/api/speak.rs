//! When the AI speaks (issue 24) through the real server on both stores, with a model stub on
//! loopback: keyword and mention triggers with the conversation window, a handoff word that pauses
//! the chat and emits a signed `ai.handoff.requested`, business hours with an away message sent
//! once per closed period, a long reply split into parts each with its typing indicator, and bad
//! input refused with nothing written.

use chrono::{Datelike, Duration as TimeDelta, Utc};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::both_stores;
use crate::control::{effective, stub_answering};
use crate::helpers::{eventually, TestApp};
use crate::replies::{configure, inbound, messages, settled, JID};

const GROUP: &str = "120363000000000001@g.us";

async fn put_account_ai(app: &TestApp, body: Value) -> crate::helpers::Resp {
    app.admin("PUT", "/v1/accounts/acme/ai", Some(body)).await
}

async fn group_inbound(app: &TestApp, id: &str, text: &str, extra: Value) {
    let mut body = json!({"chat_id": GROUP, "from": "491709999999", "text": text, "id": id});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    let r = app
        .admin("POST", "/v1/accounts/acme/sandbox/inbound", Some(body))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
}

fn outbound(list: &[Value]) -> Vec<&Value> {
    list.iter()
        .filter(|m| m["direction"] == "outbound")
        .collect()
}

/// `trigger: keywords`: only matching messages start a conversation (plain keywords by the
/// match mode, `/…/` entries as regexes); the window then keeps the AI in it.
async fn keyword_triggers(app: TestApp) {
    let stub = stub_answering("Happy to help").await;
    configure(&app, &stub, json!({})).await;
    app.create_account("acme").await;
    let r = put_account_ai(
        &app,
        json!({"trigger": "keywords", "trigger_match": "word",
               "trigger_keywords": ["price", "/^order\\s+\\d+$/"], "trigger_window_minutes": 0}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json["trigger_keywords"],
        json!(["price", "/^order\\s+\\d+$/"])
    );

    inbound(&app, "acme", JID, "k1", "hello there").await;
    let row = settled(&app, "acme", "k1").await;
    assert_eq!(row["status"], "skipped", "{row}");
    assert_eq!(row["reason_code"], "no_trigger_match", "{row}");
    inbound(&app, "acme", JID, "k2", "What is the PRICE?").await;
    assert_eq!(settled(&app, "acme", "k2").await["status"], "sent");
    // `word`: "prices" is not the word "price".
    inbound(&app, "acme", JID, "k3", "your prices are high").await;
    assert_eq!(
        settled(&app, "acme", "k3").await["reason_code"],
        "no_trigger_match"
    );
    inbound(&app, "acme", JID, "k4", "Order 1234").await;
    assert_eq!(settled(&app, "acme", "k4").await["status"], "sent");

    // `prefix`, and a window of 10 minutes: the next message is answered without a keyword.
    let r = put_account_ai(
        &app,
        json!({"trigger_match": "prefix", "trigger_keywords": ["hi bot"], "trigger_window_minutes": 10}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    inbound(&app, "acme", JID, "k5", "and then?").await;
    assert_eq!(
        settled(&app, "acme", "k5").await["reason_code"],
        "no_trigger_match"
    );
    inbound(&app, "acme", JID, "k6", "Hi bot, can you help?").await;
    assert_eq!(settled(&app, "acme", "k6").await["status"], "sent");
    inbound(&app, "acme", JID, "k7", "and the shipping?").await;
    assert_eq!(settled(&app, "acme", "k7").await["status"], "sent");

    // The effective config shows the trigger and where it came from.
    let eff = effective(&app).await;
    assert_eq!(
        eff["trigger"],
        json!({"value": "keywords", "source": "account"})
    );
    assert_eq!(eff["trigger_match"]["value"], "prefix");
}
both_stores!(keyword_trigger, keyword_triggers);

/// `trigger: mention`: in a group only a message that mentions the account or replies to one of
/// its messages is answered; a private chat is answered as always.
async fn mention_trigger(app: TestApp) {
    let stub = stub_answering("At your service").await;
    configure(
        &app,
        &stub,
        json!({"reply_to_groups": true, "trigger": "mention"}),
    )
    .await;
    app.create_account("acme").await;

    group_inbound(&app, "g1", "anyone here?", json!({})).await;
    let row = settled(&app, "acme", "g1").await;
    assert_eq!(row["reason_code"], "no_trigger_match", "{row}");
    assert!(
        row["reason"].as_str().unwrap_or("").contains("mention"),
        "{row}"
    );
    group_inbound(
        &app,
        "g2",
        "@bot what time do you open?",
        json!({"mentioned": true}),
    )
    .await;
    let row = settled(&app, "acme", "g2").await;
    assert_eq!(row["status"], "sent", "{row}");
    let ours = row["sent_message_id"]
        .as_str()
        .expect("sent id")
        .to_string();
    // A reply to our message addresses us; a reply to someone else's does not.
    group_inbound(&app, "g3", "and on sunday?", json!({"reply_to": ours})).await;
    assert_eq!(settled(&app, "acme", "g3").await["status"], "sent");
    group_inbound(&app, "g4", "lol", json!({"reply_to": "g1"})).await;
    assert_eq!(
        settled(&app, "acme", "g4").await["reason_code"],
        "no_trigger_match"
    );

    inbound(&app, "acme", JID, "p1", "hello in private").await;
    assert_eq!(settled(&app, "acme", "p1").await["status"], "sent");
}
both_stores!(mention, mention_trigger);

/// A handoff word pauses the AI in the chat, sends the handoff message and emits a signed
/// `ai.handoff.requested`; the next message waits for the human.
async fn handoff_keyword(app: TestApp) {
    let rx = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&rx)
        .await;
    let r = app
        .admin(
            "POST",
            "/v1/webhooks",
            Some(json!({"url": format!("{}/hook", rx.uri()), "events": ["ai.handoff.requested"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let secret = r.json["secret"].as_str().expect("secret").to_string();

    let stub = stub_answering("The model speaking").await;
    configure(
        &app,
        &stub,
        json!({"handoff_keywords": ["human", "atendente"],
               "handoff_message": "A person will answer you shortly."}),
    )
    .await;
    app.create_account("acme").await;

    inbound(&app, "acme", JID, "h1", "Quero falar com um ATENDENTE!").await;
    let row = settled(&app, "acme", "h1").await;
    assert_eq!(row["status"], "sent", "{row}");
    assert_eq!(row["model"], "handoff");
    assert_eq!(row["reply_text"], "A person will answer you shortly.");
    let list = messages(&app, "acme", JID).await;
    assert!(outbound(&list)
        .iter()
        .any(|m| m["text"] == "A person will answer you shortly."));
    let eff = effective(&app).await;
    assert_eq!(eff["will_reply"], false, "{eff}");
    assert_eq!(eff["pause_cause"], "handoff_keyword");

    // The help desk hears of it, signed as every webhook.
    let got = eventually(20, "the handoff webhook arrives", || async {
        let reqs = rx.received_requests().await.unwrap_or_default();
        reqs.into_iter().next()
    })
    .await;
    let headers = got.headers.clone();
    standardwebhooks::Webhook::new(&secret)
        .expect("secret")
        .verify(&got.body, &headers)
        .expect("the standardwebhooks library verifies it");
    let body: Value = serde_json::from_slice(&got.body).expect("json");
    assert_eq!(body["type"], "ai.handoff.requested");
    assert_eq!(body["data"]["chat_id"], JID);
    assert_eq!(body["data"]["message_id"], "h1");
    assert_eq!(body["data"]["by"], "keyword");

    // Paused: the model is not asked while the human has the chat.
    inbound(&app, "acme", JID, "h2", "hello?").await;
    assert_eq!(
        settled(&app, "acme", "h2").await["reason_code"],
        "paused_by_human"
    );
    assert_eq!(stub.received_requests().await.unwrap_or_default().len(), 0);

    // Without a handoff message the reply is skipped with its reason (and the chat paused).
    let r = app
        .admin(
            "POST",
            &format!("/v1/accounts/acme/chats/{JID}/ai/resume"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = put_account_ai(&app, json!({"handoff_message": ""})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    inbound(&app, "acme", JID, "h3", "human please").await;
    assert_eq!(
        settled(&app, "acme", "h3").await["reason_code"],
        "handoff_requested"
    );
}
both_stores!(handoff, handoff_keyword);

/// Business hours: outside them the away message goes out once per closed period and later
/// messages are skipped; `silent` sends nothing; inside them the model answers.
async fn business_hours(app: TestApp) {
    let stub = stub_answering("We are open").await;
    // Open only on a day three days from now, for a minute: closed now.
    let day = (Utc::now() + TimeDelta::days(3))
        .weekday()
        .to_string()
        .to_lowercase();
    let closed =
        json!({"time_zone": "UTC", "ranges": [{"days": day, "open": "00:00", "close": "00:01"}]});
    configure(
        &app,
        &stub,
        json!({"business_hours": closed, "outside_hours": "away_message",
               "away_message": "We are closed; we answer from Monday 9:00."}),
    )
    .await;
    app.create_account("acme").await;
    let eff = effective(&app).await;
    assert_eq!(eff["open_now"], false, "{eff}");
    assert!(eff["opens_at"].is_string(), "{eff}");

    inbound(&app, "acme", JID, "b1", "are you there?").await;
    let row = settled(&app, "acme", "b1").await;
    assert_eq!(row["status"], "sent", "{row}");
    assert_eq!(row["model"], "away");
    inbound(&app, "acme", JID, "b2", "hello??").await;
    let row = settled(&app, "acme", "b2").await;
    assert_eq!(row["reason_code"], "outside_business_hours", "{row}");
    let list = messages(&app, "acme", JID).await;
    let away = outbound(&list)
        .iter()
        .filter(|m| m["text"] == "We are closed; we answer from Monday 9:00.")
        .count();
    assert_eq!(away, 1, "one away message per closed period");

    // A chat of its own may be silent.
    let r = app
        .admin(
            "PUT",
            &format!("/v1/accounts/acme/chats/{GROUP}/ai"),
            Some(json!({"outside_hours": "silent"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["outside_hours"], "silent");

    // Open every day, all day: the model answers.
    let r = app
        .admin(
            "PUT",
            "/v1/ai/global",
            Some(json!({"business_hours": {"time_zone": "America/Sao_Paulo",
                        "ranges": [{"days": "daily", "open": "00:00", "close": "24:00"}]}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    inbound(&app, "acme", JID, "b3", "and now?").await;
    let row = settled(&app, "acme", "b3").await;
    assert_eq!(row["status"], "sent", "{row}");
    assert_eq!(row["reply_text"], "We are open");
    assert_eq!(stub.received_requests().await.unwrap_or_default().len(), 1);
}
both_stores!(hours, business_hours);

/// `max_message_chars`: a 3,000-character answer goes out as parts at paragraph ends, each after
/// its own typing indicator; the AI log has one reply with every message id.
async fn split_reply(app: TestApp) {
    let paragraph = |n: usize| {
        format!(
            "Paragraph {n}. {}",
            "Lorem ipsum dolor sit amet. ".repeat(26)
        )
    };
    let text: String = (1..=4).map(paragraph).collect::<Vec<_>>().join("\n\n");
    assert!(text.chars().count() > 2900, "{}", text.len());
    let stub = stub_answering(&text).await;
    configure(
        &app,
        &stub,
        json!({"max_message_chars": 1000, "format_for_whatsapp": false}),
    )
    .await;
    app.create_account("acme").await;
    inbound(&app, "acme", JID, "s1", "tell me everything").await;
    let row = settled(&app, "acme", "s1").await;
    assert_eq!(row["status"], "sent", "{row}");
    let more = row["more_message_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(more.len(), 3, "{row}");

    let list = messages(&app, "acme", JID).await;
    // The list is newest first.
    let parts: Vec<String> = outbound(&list)
        .iter()
        .rev()
        .map(|m| m["text"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(parts.len(), 4, "{parts:?}");
    for (i, p) in parts.iter().enumerate() {
        assert!(p.chars().count() <= 1000, "part {i}: {}", p.len());
        assert!(p.starts_with(&format!("Paragraph {}.", i + 1)), "{p}");
    }

    // In the history: a typing indicator before each part.
    let kinds: Vec<String> = eventually(10, "the reply's events are listed", || async {
        let r = app
            .admin("GET", "/v1/events?limit=1000&aggregate=chat", None)
            .await;
        let kinds: Vec<String> = r.json["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["type"].as_str())
            .filter(|t| ["TypingIndicated", "MessageSent"].contains(t))
            .map(str::to_string)
            .collect();
        (kinds.len() >= 8).then_some(kinds)
    })
    .await;
    assert_eq!(
        kinds,
        [
            "TypingIndicated",
            "MessageSent",
            "TypingIndicated",
            "MessageSent",
            "TypingIndicated",
            "MessageSent",
            "TypingIndicated",
            "MessageSent"
        ]
    );
}
both_stores!(split, split_reply);

/// Bad input is refused with a 400 naming the field, and nothing is written.
async fn bad_speak_input(app: TestApp) {
    app.create_account("acme").await;
    let before = app.head().await;
    for (body, field) in [
        (
            json!({"trigger_keywords": ["ok", "/([a-z/"]}),
            "trigger_keywords",
        ),
        (json!({"trigger_keywords": ["  "]}), "trigger_keywords"),
        (json!({"trigger": "sometimes"}), "trigger"),
        (json!({"max_message_chars": -5}), "max_message_chars"),
        (json!({"max_message_chars": 5000}), "max_message_chars"),
        (
            json!({"business_hours": {"time_zone": "Mars/Olympus", "ranges": [{"days": "mon", "open": "09:00", "close": "17:00"}]}}),
            "business_hours",
        ),
        (
            json!({"business_hours": {"time_zone": "UTC", "ranges": [{"days": "mon", "open": "17:00", "close": "09:00"}]}}),
            "business_hours",
        ),
        (
            json!({"business_hours": {"time_zone": "UTC", "ranges": [
                {"days": "mon-fri", "open": "09:00", "close": "17:00"},
                {"days": "fri", "open": "16:00", "close": "18:00"}]}}),
            "business_hours",
        ),
        (json!({"outside_hours": "maybe"}), "outside_hours"),
    ] {
        for target in ["/v1/ai/global", "/v1/accounts/acme/ai"] {
            let r = app.admin("PUT", target, Some(body.clone())).await;
            assert_eq!(r.status, 400, "{target} {body}: {}", r.text);
            assert!(r.text.contains(field), "{target} {body}: {}", r.text);
        }
    }
    // A chat sets only chat settings.
    let r = app
        .admin(
            "PUT",
            &format!("/v1/accounts/acme/chats/{JID}/ai"),
            Some(json!({"model_name": "gpt-x"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("model_name"), "{}", r.text);
    assert_eq!(app.head().await, before, "nothing was written");
}
both_stores!(bad_input, bad_speak_input);

/// `handoff_tool`: the model is offered `handoff_to_human`; when it calls it, the chat is paused,
/// the handoff message is sent and `ai.handoff.requested` says the model asked.
async fn model_handoff(app: TestApp) {
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-2", "object": "chat.completion", "model": "stub-model",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {
                    "name": "handoff_to_human", "arguments": "{\"reason\":\"refund dispute\"}"}}]}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29}
        })))
        .mount(&stub)
        .await;
    configure(
        &app,
        &stub,
        json!({"handoff_tool": true, "handoff_message": "Passing you to a colleague."}),
    )
    .await;
    app.create_account("acme").await;
    inbound(&app, "acme", JID, "t1", "I want my money back, now").await;
    let row = settled(&app, "acme", "t1").await;
    assert_eq!(row["status"], "sent", "{row}");
    assert_eq!(row["reply_text"], "Passing you to a colleague.");
    assert_eq!(row["usage"]["total_tokens"], 29, "the call's tokens count");
    let calls = stub.received_requests().await.unwrap_or_default();
    let body: Value = serde_json::from_slice(&calls[0].body).expect("json");
    assert_eq!(
        body["tools"][0]["function"]["name"], "handoff_to_human",
        "{body}"
    );
    let eff = effective(&app).await;
    assert_eq!(eff["pause_cause"], "handoff_tool", "{eff}");
    inbound(&app, "acme", JID, "t2", "hello?").await;
    assert_eq!(
        settled(&app, "acme", "t2").await["reason_code"],
        "paused_by_human"
    );

    // Without the setting no tools are offered.
    let r = app
        .admin(
            "POST",
            &format!("/v1/accounts/acme/chats/{JID}/ai/resume"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app
        .admin(
            "PUT",
            "/v1/ai/global",
            Some(json!({"handoff_tool": false, "handoff_message": null})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    inbound(&app, "acme", JID, "t3", "ok then").await;
    // The stub still calls the tool, which was not offered: not a handoff, and no text to send.
    let row = settled(&app, "acme", "t3").await;
    assert_eq!(row["status"], "failed", "{row}");
    assert_eq!(row["reason_code"], "model_error", "{row}");
    let calls = stub.received_requests().await.unwrap_or_default();
    let body: Value = serde_json::from_slice(&calls[1].body).expect("json");
    assert!(body.get("tools").is_none(), "{body}");
}
both_stores!(handoff_tool, model_handoff);
