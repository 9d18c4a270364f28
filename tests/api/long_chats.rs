//! Long chats (docs/adr/0011-bounded-chat-state.md): a chat keeps a bounded window of message ids
//! in memory and is loaded from its snapshot plus the events after it; ids that fell out of the
//! window are recalled from the store's message-id index.

use std::collections::HashMap;

use serde_json::json;
use wagate::app::ports::StoreStreams;
use wagate::store::chats;
use wagate::store::Store;
use wagate_actors::ports::ChatStreams;
use wagate_actors::SNAPSHOT_EVERY;
use wagate_events::chat::{Chat, ChatEvent, DeliveryStatus, MessageKind, Source};
use wagate_events::message_window::{MessageFact, ID_WINDOW};

use crate::both_stores;
use crate::helpers::{eventually, TestApp};

fn meta() -> HashMap<String, String> {
    HashMap::from([("actor".to_string(), "system:test".to_string())])
}

fn received(id: &str) -> ChatEvent {
    ChatEvent::MessageReceived {
        message_id: id.into(),
        from: "4915550002".into(),
        text: format!("hi {id}"),
        from_me: false,
        at: chrono::Utc::now(),
        kind: MessageKind::Text,
        contact_name: None,
        media: None,
    }
}

/// A chat's history written straight to the store (as a long-running chat would have it): one
/// message sent by an operator (`out0`), then customer messages `m1`, `m2`... up to `len` events.
async fn write_history(streams: &StoreStreams, stream: &str, len: usize) {
    let mut events = vec![ChatEvent::MessageSent {
        message_id: "out0".into(),
        text: "welcome".into(),
        source: Source::Operator,
        ai_reply_id: None,
        at: chrono::Utc::now(),
    }];
    events.extend((1..len).map(|i| received(&format!("m{i}"))));
    let mut version = 0;
    for chunk in events.chunks(200) {
        streams
            .commit(stream, version, chunk.to_vec(), meta(), None)
            .await
            .expect("history written");
        version += chunk.len();
    }
}

/// The chat folded from every event, as cqrs-es loads it (no snapshot, no window shortcut).
async fn folded(store: &Store, stream: &str) -> (Chat, usize) {
    crate::helpers::cqrs_load::<Chat>(store, stream).await
}

async fn set_snapshot_format(store: &Store, format: i32) {
    const SQL: &str = "UPDATE chat_snapshots SET format = $1";
    match store {
        Store::Postgres(p) => sqlx::query(SQL).bind(format).execute(p).await.map(drop),
        Store::Sqlite(p) => sqlx::query(SQL).bind(format).execute(p).await.map(drop),
    }
    .expect("snapshot format set");
}

/// Waits until the chat's snapshot is the one at `version`.
async fn snapshot_written(store: &Store, stream: &str, version: usize) {
    eventually(
        10,
        "the snapshot at the version is written",
        || async move {
            chats::read_snapshot(store, stream)
                .await
                .expect("read")
                .filter(|s| s.version == version as i64)
        },
    )
    .await;
}

/// Loads from a snapshot equal folding every event; snapshots the stream does not reach, or of
/// another format, are ignored; old ids and their delivery status are recalled from the index.
async fn snapshots_and_recall_through_the_store(app: TestApp) {
    let a = app.app().clone();
    let store = a.store.clone();
    let stream = "acme/4915550002@s.whatsapp.net";
    let streams = StoreStreams::new(&store, a.committer.clone());
    write_history(&streams, stream, ID_WINDOW + 100).await;

    let (full, version) = folded(&store, stream).await;
    assert_eq!(version, ID_WINDOW + 100);
    assert!(!full.message_ids.complete());
    assert!(full.message_ids.needs_recall("m1"));
    assert_eq!(streams.load(stream).await.expect("load"), (full, version));
    // That load folded more than SNAPSHOT_EVERY events: it leaves a snapshot behind.
    snapshot_written(&store, stream, version).await;

    let recall = |id: &'static str| {
        let streams = &streams;
        async move { streams.recall(stream, id).await.expect("recall") }
    };
    assert_eq!(recall("m1").await, Some(MessageFact::Received));
    assert_eq!(recall("out0").await, Some(MessageFact::Sent(None)));
    assert_eq!(recall("never").await, None);
    let read = ChatEvent::MessageStatusUpdated {
        message_id: "out0".into(),
        status: DeliveryStatus::Read,
        error: None,
        at: chrono::Utc::now(),
    };
    streams
        .commit(stream, version, vec![read], meta(), None)
        .await
        .expect("status written");
    assert_eq!(
        recall("out0").await,
        Some(MessageFact::Sent(Some(DeliveryStatus::Read)))
    );

    // A snapshot, then more events: snapshot + the events after it equal the whole fold.
    let (chat, version) = streams.load(stream).await.expect("load");
    streams.snapshot(stream, version, &chat);
    snapshot_written(&store, stream, version).await;
    streams
        .commit(
            stream,
            version,
            vec![received("after1"), received("after2")],
            meta(),
            None,
        )
        .await
        .expect("more events");
    let whole = folded(&store, stream).await;
    assert_eq!(streams.load(stream).await.expect("load"), whole);

    // The snapshot is what a load starts from: a different (valid) state at the head is taken
    // as it is.
    let head = (whole.1) as i64;
    let blank = serde_json::to_string(&Chat::default()).expect("serializes");
    chats::save_snapshot(&store, stream, head, &blank)
        .await
        .expect("snapshot");
    assert_eq!(
        streams.load(stream).await.expect("load"),
        (Chat::default(), whole.1)
    );
    // One of another format is ignored...
    set_snapshot_format(&store, Chat::SNAPSHOT_FORMAT + 1).await;
    assert_eq!(streams.load(stream).await.expect("load"), whole);
    // ...and so is one the stream does not reach (a store restored without its newest events).
    chats::save_snapshot(&store, stream, head + 1_000, &blank)
        .await
        .expect("snapshot");
    assert_eq!(streams.load(stream).await.expect("load"), whole);
}
both_stores!(long_chat_store, snapshots_and_recall_through_the_store);

/// `chats::backfill` (`wagate snapshot-chats`): writes a snapshot for the chats whose stream
/// runs `behind` events or more past their snapshot, none for the others, and is a no-op when
/// run again.
async fn backfill_snapshots_the_long_chats(app: TestApp) {
    let a = app.app().clone();
    let store = a.store.clone();
    let streams = StoreStreams::new(&store, a.committer.clone());
    let (long, short) = (
        "acme/4915550002@s.whatsapp.net",
        "acme/4915550003@s.whatsapp.net",
    );
    write_history(&streams, long, ID_WINDOW + 100).await;
    write_history(&streams, short, 10).await;
    let behind = i64::try_from(SNAPSHOT_EVERY).expect("fits");

    assert_eq!(
        chats::lagging(&store, behind).await.expect("lagging"),
        vec![(long.to_string(), (ID_WINDOW + 100) as i64)]
    );
    let mut calls = Vec::new();
    let done = chats::backfill(&store, behind, |i, n| calls.push((i, n)))
        .await
        .expect("backfill");
    assert_eq!(
        (done.chats, done.events_folded, calls),
        (1, (ID_WINDOW + 100) as u64, vec![(1, 1)])
    );
    assert!(chats::read_snapshot(&store, short)
        .await
        .expect("read")
        .is_none());
    let snapshot = chats::read_snapshot(&store, long)
        .await
        .expect("read")
        .expect("snapshot written");
    assert_eq!(snapshot.version, (ID_WINDOW + 100) as i64);
    // A load starts from it and folds nothing more, and equals the whole fold.
    let loaded = chats::load(&store, long).await.expect("load");
    assert_eq!(loaded.folded, 0);
    assert_eq!((loaded.chat, loaded.version), folded(&store, long).await);

    let again = chats::backfill(&store, behind, |_, _| {})
        .await
        .expect("backfill");
    assert_eq!(again, chats::Backfilled::default());
    // `--behind 1` takes every chat past its snapshot, the short one included.
    let all = chats::backfill(&store, 1, |_, _| {})
        .await
        .expect("backfill");
    assert_eq!((all.chats, all.events_folded), (1, 10));
}
both_stores!(long_chat_backfill, backfill_snapshots_the_long_chats);

/// Injects a customer message into the test chat; answers whether it was a duplicate.
async fn inject(app: &TestApp, id: &str) -> bool {
    let r = app
        .admin(
            "POST",
            "/v1/accounts/acme/sandbox/inbound",
            Some(json!({"chat_id": JID, "from": "4915550002", "text": "hello", "id": id})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.json["duplicate"] == true
}

const JID: &str = "4915550002@s.whatsapp.net";

/// Through the API: in a chat whose history is longer than the id window, a redelivered old
/// message is a duplicate, new ones are taken, the chat actor writes a snapshot as it passes 1,024 events as the stream
/// passes a multiple of `SNAPSHOT_EVERY`, and after a restart (loading from that snapshot) old and
/// new ids are still recognized.
async fn a_long_chat_keeps_deduplicating(mut app: TestApp) {
    app.create_account("acme").await;
    let stream = format!("acme/{JID}");
    {
        let a = app.app().clone();
        let streams = StoreStreams::new(&a.store, a.committer.clone());
        write_history(&streams, &stream, 2 * SNAPSHOT_EVERY - 2).await;
    }
    // The read model takes the history in before the chat is first used.
    app.restart().await;
    assert!(
        inject(&app, "m1").await,
        "an id older than the window is a duplicate"
    );
    assert!(!inject(&app, "fresh1").await);
    let store = app.app().store.clone();
    let snapshot = eventually(
        10,
        "the chat actor writes a snapshot as it passes 1,024 events",
        || {
            let store = store.clone();
            let stream = stream.clone();
            async move {
                chats::read_snapshot(&store, &stream)
                    .await
                    .expect("read")
                    .filter(|s| s.version >= 2 * SNAPSHOT_EVERY as i64)
            }
        },
    )
    .await;
    let state: Chat = serde_json::from_str(&snapshot.state).expect("a chat state");
    assert!(state.message_ids.contains("fresh1"));

    app.restart().await;
    assert!(inject(&app, "m1").await);
    assert!(inject(&app, "fresh1").await);
    assert!(!inject(&app, "fresh2").await);
    let store = app.app().store.clone();
    let events = chats::read_events(&store, &stream, 0).await.expect("read");
    let received = |id: &str| {
        events
            .iter()
            .filter_map(|e| serde_json::from_str::<ChatEvent>(&e.payload).ok())
            .filter(
                |e| matches!(e, ChatEvent::MessageReceived { message_id, .. } if message_id == id),
            )
            .count()
    };
    assert_eq!(
        (received("m1"), received("fresh1"), received("fresh2")),
        (1, 1, 1)
    );
}
both_stores!(long_chat_api, a_long_chat_keeps_deduplicating);

/// `wagate snapshot-chats` as an operator runs it after an upgrade, next to a running gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_snapshot_chats() {
    let Some(app) = TestApp::spawn(crate::helpers::Backend::Sqlite).await else {
        return;
    };
    let a = app.app().clone();
    let stream = format!("acme/{JID}");
    let streams = StoreStreams::new(&a.store, a.committer.clone());
    write_history(&streams, &stream, SNAPSHOT_EVERY + 1).await;
    let stdout = app.cli_ok(&["snapshot-chats"]);
    assert!(
        stdout.contains("snapshots written for 1 chat(s)"),
        "{stdout}"
    );
    let snapshot = chats::read_snapshot(&a.store, &stream)
        .await
        .expect("read")
        .expect("written");
    assert_eq!(snapshot.version, (SNAPSHOT_EVERY + 1) as i64);
    assert!(
        String::from_utf8_lossy(&app.cli(&["snapshot-chats"]).stdout)
            .contains("snapshots written for 0 chat(s)")
    );
    assert_eq!(
        app.cli(&["snapshot-chats", "--behind", "0"]).status.code(),
        Some(2)
    );
}
