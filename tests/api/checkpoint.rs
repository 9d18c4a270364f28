//! Start-up from a read-model checkpoint (ADR 0015): a start folds only the events after the
//! newest checkpoint, and answers exactly as a fold of the whole history does; a checkpoint that
//! cannot be used is ignored, never trusted.

use wagate::app::StartStats;
use wagate::store::checkpoint::Found;
use wagate::store::replay;
use wagate::store::Store;

use crate::both_stores;
use crate::helpers::{eventually, Backend, TestApp};
use crate::replies::{inbound, settled, JID};

const OTHER: &str = "491709999999@s.whatsapp.net";

async fn spawn(backend: Backend, extra: &[(&str, &str)]) -> Option<TestApp> {
    // A few messages and rows in memory: the checkpoint holds evicted state too.
    let mut settings = vec![
        ("WAGATE_READ_MODEL_MESSAGES", "5"),
        ("WAGATE_READ_MODEL_AI_LOG_ROWS", "3"),
    ];
    settings.extend_from_slice(extra);
    TestApp::spawn_with_settings(backend, &settings).await
}

/// `n` exchanges (an inbound message and its echo), alternating between two chats.
async fn traffic(app: &TestApp, tag: &str, n: usize) {
    for i in 0..n {
        let chat = if i % 2 == 0 { JID } else { OTHER };
        let id = format!("{tag}{i}");
        inbound(app, "acme", chat, &id, &format!("order {tag} {i}")).await;
        settled(app, "acme", &id).await;
    }
}

fn start_of(app: &TestApp) -> StartStats {
    *app.app().start_stats.get().expect("start stats")
}

/// The live read models' digest, and that it equals a replay of the whole history.
async fn digest_equals_replay(app: &TestApp) -> String {
    let live = {
        let config = app.app().model();
        let messages = app.app().messages();
        replay::digest(Some(&config), Some(&messages))
    };
    let store = Store::connect(&app.config().database).await.expect("store");
    let replayed = replay::replay(
        &store,
        None,
        replay::Projection::All,
        app.config().read_model,
        false,
    )
    .await
    .expect("replay");
    store.close().await;
    assert_eq!(
        replay::digest(replayed.config.as_ref(), replayed.messages.as_ref()),
        live,
        "the gateway's read models equal a fold of the whole history"
    );
    live
}

/// The stored checkpoint: position and body.
async fn saved(app: &TestApp) -> (i64, Vec<u8>) {
    const SQL: &str = "SELECT position, body FROM read_model_checkpoints WHERE name = 'messages'";
    match &app.app().store {
        Store::Postgres(p) => sqlx::query_as(SQL).fetch_one(p).await,
        Store::Sqlite(p) => sqlx::query_as(SQL).fetch_one(p).await,
    }
    .expect("a checkpoint")
}

/// Puts an older checkpoint back (as a crash after it would have left it), or changes one
/// column, with the gateway stopped.
async fn overwrite(app: &TestApp, set: &str, position: i64, body: &[u8]) {
    let store = Store::connect(&app.config().database).await.expect("store");
    let sql = format!(
        "UPDATE read_model_checkpoints SET position = $1, body = $2{set} WHERE name = 'messages'"
    );
    match &store {
        Store::Postgres(p) => sqlx::query(&sql)
            .bind(position)
            .bind(body)
            .execute(p)
            .await
            .map(drop),
        Store::Sqlite(p) => sqlx::query(&sql)
            .bind(position)
            .bind(body)
            .execute(p)
            .await
            .map(drop),
    }
    .expect("overwrite the checkpoint");
    store.close().await;
}

/// How many events the store holds.
async fn events(app: &TestApp) -> u64 {
    const SQL: &str = "SELECT COUNT(*) FROM events";
    let n: i64 = match &app.app().store {
        Store::Postgres(p) => sqlx::query_scalar(SQL).fetch_one(p).await,
        Store::Sqlite(p) => sqlx::query_scalar(SQL).fetch_one(p).await,
    }
    .expect("count");
    n as u64
}

async fn stop(app: &mut TestApp) {
    app.running.take().expect("running").stop().await;
}

async fn start_from_checkpoints(backend: Backend) {
    let Some(mut app) = spawn(backend, &[]).await else {
        return;
    };
    app.create_account("acme").await;
    app.echo_mode().await;
    traffic(&app, "a", 6).await;
    let first = digest_equals_replay(&app).await;

    // A stop writes a checkpoint of everything: the next start folds no event.
    app.restart().await;
    let start = start_of(&app);
    let head = app.head().await;
    assert_eq!(start.checkpoint, Found::Loaded(head));
    assert_eq!(start.events_folded, 0);
    assert_eq!(digest_equals_replay(&app).await, first);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(&format!("wagate_read_model_checkpoint_position {head}"))
            && metrics.contains("wagate_start_events_folded 0"),
        "{}",
        metrics
    );

    // An older checkpoint (the process died after more traffic): the start folds the events
    // after it, and answers as the whole history does.
    let (old_position, old_body) = saved(&app).await;
    traffic(&app, "b", 5).await;
    let second = digest_equals_replay(&app).await;
    stop(&mut app).await;
    overwrite(&app, "", old_position, &old_body).await;
    app.restart().await;
    let start = start_of(&app);
    assert_eq!(start.checkpoint, Found::Loaded(old_position));
    assert!(start.events_folded > 10, "{start:?}");
    assert_eq!(digest_equals_replay(&app).await, second);
    // Old pages still come from the store, new traffic folds on.
    traffic(&app, "c", 1).await;
    let third = digest_equals_replay(&app).await;

    // Checkpoints that cannot be used are ignored: the whole history is folded.
    let (position, body) = saved(&app).await;
    for (set, position, body, why) in [
        (
            ", format = 999",
            position,
            body.clone(),
            "written by another version",
        ),
        (
            "",
            position,
            b"{\"not\": \"a model\"}".to_vec(),
            "it does not read back",
        ),
        ("", position + 1_000, body.clone(), "newer than the history"),
        (
            ", retention = 'messages=9,ai_log=9'",
            position,
            body.clone(),
            "written with other read-model settings",
        ),
    ] {
        stop(&mut app).await;
        overwrite(&app, set, position, &body).await;
        app.restart().await;
        let start = start_of(&app);
        assert_eq!(start.checkpoint, Found::Ignored(why));
        assert_eq!(start.events_folded, events(&app).await, "{why}");
        assert_eq!(digest_equals_replay(&app).await, third, "{why}");
    }

    // Other read-model settings: the checkpoint is ignored, and the next one is theirs.
    stop(&mut app).await;
    app.vars
        .insert("WAGATE_READ_MODEL_MESSAGES".into(), "7".into());
    app.restart().await;
    assert_eq!(
        start_of(&app).checkpoint,
        Found::Ignored("written with other read-model settings")
    );
    digest_equals_replay(&app).await;
    app.restart().await;
    assert_eq!(start_of(&app).checkpoint, Found::Loaded(app.head().await));

    // Checkpoints off: none read, none written.
    let before = saved(&app).await;
    stop(&mut app).await;
    app.vars
        .insert("WAGATE_READ_MODEL_CHECKPOINT_EVERY".into(), "0".into());
    app.restart().await;
    assert_eq!(start_of(&app).checkpoint, Found::None);
    traffic(&app, "d", 1).await;
    digest_equals_replay(&app).await;
    app.restart().await;
    assert_eq!(
        saved(&app).await,
        before,
        "nothing written with checkpoints off"
    );
}

both_stores!(starts, start_from_checkpoints(Backend));

/// A checkpoint written before the AI-log retention erased texts holds them; a start from it
/// erases them again (they must not come back from the cache).
async fn erased_texts_stay_erased(backend: Backend) {
    let Some(mut app) = spawn(backend, &[]).await else {
        return;
    };
    app.create_account("acme").await;
    app.echo_mode().await;
    traffic(&app, "a", 2).await;
    stop(&mut app).await;
    app.restart().await;
    let (old_position, old_body) = saved(&app).await;
    let model: serde_json::Value =
        serde_json::from_slice(&zstd::decode_all(&old_body[..]).expect("a Zstandard body"))
            .expect("JSON");
    assert_eq!(model["ai_log"][1]["reply_text"], "order a 1");

    stop(&mut app).await;
    app.vars
        .insert("WAGATE_AI_LOG_BODY_RETENTION".into(), "1s".into());
    app.restart().await;
    eventually(20, "the reply texts are erased", || async {
        let r = app.admin("GET", "/v1/ai/logs?account_id=acme", None).await;
        let rows = r.json["items"].as_array()?.clone();
        (rows.len() == 2 && rows.iter().all(|r| r["reply_text"].is_null())).then_some(())
    })
    .await;
    // The stored checkpoint is rewritten without them.
    eventually(20, "the checkpoint holds no erased text", || async {
        let (_, body) = saved(&app).await;
        let model: serde_json::Value =
            serde_json::from_slice(&zstd::decode_all(&body[..]).expect("a Zstandard body"))
                .expect("JSON");
        let rows = model["ai_log"].as_array().expect("rows");
        (rows.len() == 2 && rows.iter().all(|r| r["reply_text"].is_null())).then_some(())
    })
    .await;
    let erased = digest_equals_replay(&app).await;

    // Back to the checkpoint written before the erasure, without the retention.
    stop(&mut app).await;
    overwrite(&app, "", old_position, &old_body).await;
    app.vars.remove("WAGATE_AI_LOG_BODY_RETENTION");
    app.restart().await;
    assert_eq!(start_of(&app).checkpoint, Found::Loaded(old_position));
    let r = app.admin("GET", "/v1/ai/logs?account_id=acme", None).await;
    let rows = r.json["items"].as_array().expect("items");
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["reply_text"].is_null()), "{}", r.text);
    assert_eq!(digest_equals_replay(&app).await, erased);
}

both_stores!(erased_texts, erased_texts_stay_erased(Backend));

/// The writer: with a checkpoint every event, one is written while the gateway runs.
async fn written_while_running(backend: Backend) {
    let Some(app) = spawn(backend, &[("WAGATE_READ_MODEL_CHECKPOINT_EVERY", "1")]).await else {
        return;
    };
    app.create_account("acme").await;
    app.echo_mode().await;
    traffic(&app, "a", 1).await;
    let head = app.head().await;
    eventually(30, "a checkpoint is written", || async {
        (app.app().checkpoint_stats.position() >= head).then_some(())
    })
    .await;
    assert!(saved(&app).await.0 >= head);
}

both_stores!(written_while_running, written_while_running(Backend));
