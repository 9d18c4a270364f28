//! Bounded read models (ADR 0013): with a retention of a few messages and rows, every answer
//! that reaches past memory comes from the store, and equals what the whole history says.

use serde_json::{json, Value};
use wagate::store::replay;
use wagate::store::Store;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::both_stores;
use crate::helpers::{eventually, Backend, TestApp};
use crate::replies::{inbound, settled, JID};

const OTHER: &str = "491709999999@s.whatsapp.net";
/// Exchanges in `JID` (an inbound message and its echo each).
const ROUNDS: usize = 7;

async fn spawn_small(backend: Backend) -> Option<TestApp> {
    TestApp::spawn_with_settings(
        backend,
        &[
            ("WAGATE_READ_MODEL_MESSAGES", "5"),
            ("WAGATE_READ_MODEL_AI_LOG_ROWS", "3"),
        ],
    )
    .await
}

/// Every page of `path` (a list route with a cursor parameter), concatenated.
async fn all_pages(app: &TestApp, path: &str, cursor: &str) -> Vec<Value> {
    let mut items = vec![];
    let mut next: Option<String> = None;
    loop {
        let url = match &next {
            None => path.to_string(),
            Some(c) => format!("{path}&{cursor}={c}"),
        };
        let r = app.admin("GET", &url, None).await;
        assert_eq!(r.status, 200, "{url}: {}", r.text);
        items.extend(r.json["items"].as_array().expect("items").iter().cloned());
        match r.json["next_cursor"].as_str() {
            Some(c) => next = Some(c.to_string()),
            None => return items,
        }
    }
}

async fn store_of(app: &TestApp) -> Store {
    Store::connect(&app.config().database).await.expect("store")
}

async fn execute(store: &Store, sql: &str) {
    match store {
        Store::Postgres(p) => sqlx::query(sql).execute(p).await.map(drop),
        Store::Sqlite(p) => sqlx::query(sql).execute(p).await.map(drop),
    }
    .expect(sql);
}

/// The `data` of every `ai.reply.*` delivery in the store.
async fn reply_deliveries(store: &Store) -> Vec<Value> {
    const SQL: &str =
        "SELECT body FROM webhook_deliveries WHERE event_type LIKE 'ai.reply.%' ORDER BY event_position";
    let bodies: Vec<String> = match store {
        Store::Postgres(p) => sqlx::query_scalar(SQL).fetch_all(p).await,
        Store::Sqlite(p) => sqlx::query_scalar(SQL).fetch_all(p).await,
    }
    .expect("deliveries");
    bodies
        .iter()
        .map(|b| serde_json::from_str::<Value>(b).expect("json body")["data"].clone())
        .collect()
}

async fn pages_reach_past_memory(mut app: TestApp) {
    let rx = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&rx)
        .await;
    app.create_account("acme").await;
    let r = app
        .admin(
            "POST",
            "/v1/webhooks",
            Some(json!({"url": format!("{}/hook", rx.uri()), "events": ["*"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let subscribed_at = app.head().await;
    app.echo_mode().await;
    // The test answers like a bot (each message right after the reply): the loop guard's quick
    // answers are off here.
    let r = app
        .admin(
            "PUT",
            "/v1/ai/global",
            Some(json!({"loop_guard_quick_seconds": 0})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut first_position = None;
    for i in 0..ROUNDS {
        let ack = inbound(&app, "acme", JID, &format!("a{i}"), &format!("hello {i}")).await;
        first_position.get_or_insert(ack["position"].clone());
        settled(&app, "acme", &format!("a{i}")).await;
        if i % 3 == 0 {
            inbound(&app, "acme", OTHER, &format!("b{i}"), "other chat").await;
            settled(&app, "acme", &format!("b{i}")).await;
        }
    }
    {
        let m = app.app().messages();
        let chat = &m.chats[&("acme".to_string(), JID.to_string())];
        assert!(chat.evicted > 0, "the test must reach past memory");
        assert!(m.log_evicted_upto > 0, "the test must reach past memory");
    }

    check_answers(&app, first_position.clone().expect("position")).await;

    // A restart folds the same bounded model (same digest as a replay) and answers the same.
    app.restart().await;
    check_answers(&app, first_position.clone().expect("position")).await;
    let live = replay::digest(None, Some(&app.app().messages()));
    let out = app.cli_ok(&["replay", "--projection", "messages"]);
    assert!(out.contains(&live), "replay digest {live} not in: {out}");

    // A webhook fan-out far behind (its checkpoint moved back, its deliveries gone) finds the
    // reply rows memory no longer holds.
    let store = store_of(&app).await;
    let before = reply_deliveries(&store).await;
    assert!(before.len() >= ROUNDS * 2, "{}", before.len());
    if let Some(r) = app.running.take() {
        r.stop().await;
    }
    execute(&store, "DELETE FROM webhook_deliveries").await;
    execute(
        &store,
        &format!("UPDATE checkpoints SET position = {subscribed_at} WHERE name = 'webhook_fanout'"),
    )
    .await;
    app.restart().await;
    let after = eventually(20, "the fan-out is done again", || async {
        let d = reply_deliveries(&store).await;
        (d.len() == before.len()).then_some(d)
    })
    .await;
    for d in &after {
        assert!(
            d["trigger_message_id"].is_string() && d["model"] == "echo",
            "a reply delivery without its row: {d}"
        );
    }
    assert_eq!(after, before);
    store.close().await;
}

async fn check_answers(app: &TestApp, first_position: Value) {
    // Messages, newest first, page by page past memory.
    let msgs = all_pages(
        app,
        &format!("/v1/accounts/acme/chats/{JID}/messages?limit=3"),
        "before",
    )
    .await;
    assert_eq!(msgs.len(), ROUNDS * 2);
    let positions: Vec<i64> = msgs
        .iter()
        .map(|m| m["position"].as_i64().expect("position"))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] > w[1]), "{positions:?}");
    for (i, pair) in msgs.rchunks(2).enumerate() {
        assert_eq!(pair[1]["text"], format!("hello {i}"));
        assert_eq!(pair[1]["direction"], "inbound");
        assert_eq!(pair[0]["text"], format!("hello {i}"));
        assert_eq!(pair[0]["source"], "ai");
    }
    // The chat list counts every message.
    let chats = app.admin("GET", "/v1/accounts/acme/chats", None).await;
    let chat = chats.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|c| c["chat_id"] == JID)
        .cloned()
        .expect("chat");
    assert_eq!(chat["message_count"], ROUNDS * 2);
    // The chat list pages, most recent first (OTHER got the last message).
    let pages = all_pages(app, "/v1/accounts/acme/chats?limit=1", "before").await;
    let ids: Vec<&str> = pages
        .iter()
        .map(|c| c["chat_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [OTHER, JID]);
    let r = app
        .admin("GET", "/v1/accounts/acme/chats?limit=0", None)
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    // A repeated id of a message long out of memory answers with the original's position.
    let again = inbound(app, "acme", JID, "a0", "hello 0").await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["position"], first_position);

    // The AI log from the start, oldest first, two rows a page: every reply, sent.
    let rows = all_pages(app, "/v1/ai/logs?limit=2", "after").await;
    let others = ROUNDS.div_ceil(3);
    assert_eq!(rows.len(), ROUNDS + others);
    let positions: Vec<i64> = rows
        .iter()
        .map(|r| r["position"].as_i64().expect("position"))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert!(rows
        .iter()
        .all(|r| r["status"] == "sent" && r["model"] == "echo"));
    let triggers: Vec<&str> = rows
        .iter()
        .filter(|r| r["chat_id"] == JID)
        .map(|r| r["trigger_message_id"].as_str().expect("trigger"))
        .collect();
    let expected: Vec<String> = (0..ROUNDS).map(|i| format!("a{i}")).collect();
    assert_eq!(triggers, expected);
    // One chat's rows (read from its stream), and a filter that matches nothing.
    let chat_rows = all_pages(
        app,
        &format!("/v1/ai/logs?account_id=acme&chat_id={OTHER}&limit=1"),
        "after",
    )
    .await;
    assert_eq!(chat_rows.len(), others);
    let failed = app.admin("GET", "/v1/ai/logs?status=failed", None).await;
    assert_eq!(failed.json["items"], json!([]));
    // The counters count every reply, in memory or not.
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(&format!(
            "wagate_ai_replies_total{{status=\"sent\"}} {}",
            ROUNDS + others
        )),
        "{}",
        metrics
    );
}

async fn pages_past_memory(backend: Backend) {
    if let Some(app) = spawn_small(backend).await {
        pages_reach_past_memory(app).await;
    }
}

both_stores!(pages, pages_past_memory(Backend));

/// Security checklist item 15: with `WAGATE_AI_LOG_BODY_RETENTION`, a reply's text leaves the AI
/// log (and its event) once the retention has passed; the row, its counters and the message
/// sent to the customer stay.
async fn ai_log_texts_expire(backend: Backend) {
    let Some(mut app) =
        TestApp::spawn_with_settings(backend, &[("WAGATE_AI_LOG_BODY_RETENTION", "2s")]).await
    else {
        return;
    };
    app.create_account("acme").await;
    app.echo_mode().await;
    inbound(&app, "acme", JID, "t1", "secret order details").await;
    let row = settled(&app, "acme", "t1").await;
    assert_eq!(row["reply_text"], "secret order details", "kept at first");
    let row = eventually(20, "the reply text is erased", || async {
        let r = app.admin("GET", "/v1/ai/logs?account_id=acme", None).await;
        let row = r.json["items"][0].clone();
        row["reply_text"].is_null().then_some(row)
    })
    .await;
    assert_eq!(
        (row["status"].as_str(), row["model"].as_str()),
        (Some("sent"), Some("echo"))
    );
    // No event holds the text as the AI log's copy any more.
    let store = store_of(&app).await;
    const SQL: &str =
        "SELECT CAST(payload AS text) FROM events WHERE event_type = 'AiReplyGenerated'";
    let payloads: Vec<String> = match &store {
        Store::Postgres(p) => sqlx::query_scalar(SQL).fetch_all(p).await,
        Store::Sqlite(p) => sqlx::query_scalar(SQL).fetch_all(p).await,
    }
    .expect("payloads");
    assert_eq!(payloads.len(), 1);
    assert!(!payloads[0].contains("secret"), "{}", payloads[0]);
    store.close().await;
    // The conversation keeps the message; the counters still count the reply.
    let msgs = all_pages(
        &app,
        &format!("/v1/accounts/acme/chats/{JID}/messages?limit=50"),
        "before",
    )
    .await;
    assert_eq!(
        msgs.iter()
            .filter(|m| m["text"] == "secret order details")
            .count(),
        2
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("wagate_ai_replies_total{status=\"generated\"} 1"),
        "{}",
        metrics
    );
    // A later pass (going on from the last reply erased) erases a newer reply's text too.
    inbound(&app, "acme", JID, "t2", "second secret").await;
    settled(&app, "acme", "t2").await;
    eventually(20, "the newer reply text is erased", || async {
        let r = app.admin("GET", "/v1/ai/logs?account_id=acme", None).await;
        let rows = r.json["items"].as_array()?.clone();
        (rows.len() == 2 && rows.iter().all(|r| r["reply_text"].is_null())).then_some(())
    })
    .await;
    // A restart (a replay of the erased history) answers the same.
    let before = replay::digest(None, Some(&app.app().messages()));
    app.restart().await;
    assert_eq!(replay::digest(None, Some(&app.app().messages())), before);
}

both_stores!(texts_expire, ai_log_texts_expire(Backend));

/// Two gateway processes sharing one store, both with the retention: whichever erases a text in
/// the store, neither keeps it in its read model (the other's pass finds it erased there).
async fn texts_expire_in_every_process(backend: Backend) {
    let Some(app) =
        TestApp::spawn_with_settings(backend, &[("WAGATE_AI_LOG_BODY_RETENTION", "2s")]).await
    else {
        return;
    };
    app.create_account("acme").await;
    app.echo_mode().await;
    let other = wagate::startup::start(app.config_as("second"))
        .await
        .expect("a second gateway on the same store");
    inbound(&app, "acme", JID, "t1", "secret order details").await;
    let row = settled(&app, "acme", "t1").await;
    let id = row["id"].as_str().expect("reply id").to_string();
    eventually(30, "neither process keeps the erased text", || async {
        let here = app
            .app()
            .messages()
            .reply(&id)
            .map(|r| r.reply_text.clone());
        let there = other
            .app
            .messages()
            .reply(&id)
            .map(|r| r.reply_text.clone());
        (here == Some(None) && there == Some(None)).then_some(())
    })
    .await;
    other.stop().await;
}

both_stores!(
    texts_expire_in_every_process,
    texts_expire_in_every_process(Backend)
);
