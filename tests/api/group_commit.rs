//! The group committer: concurrent appends of many streams share transactions; a conflicting
//! append fails alone and the others in its batch still commit; positions come back in order.

use std::collections::HashMap;

use serde_json::json;
use wagate::store::group_commit::{Append, Appended};

use crate::both_stores;
use crate::helpers::TestApp;

fn append(stream: &str, expected: i64, n: usize) -> Append {
    Append {
        aggregate_type: "chat",
        aggregate_id: stream.to_string(),
        expected,
        events: (0..n)
            .map(|i| {
                (
                    "AiReplySkipped".to_string(),
                    "1".to_string(),
                    json!({"AiReplySkipped": {"reply_id": format!("r{expected}-{i}"), "reason": "test"}})
                        .to_string(),
                )
            })
            .collect(),
        metadata: HashMap::from([("actor".to_string(), "system:test".to_string())]),
        fence: None,
    }
}

async fn batches_and_isolates_conflicts(app: TestApp) {
    let a = app.app().clone();
    let before = a
        .commit_stats
        .transactions
        .load(std::sync::atomic::Ordering::Relaxed);
    // 64 streams at once, plus two writers racing on one stream at the same version.
    let mut tasks = Vec::new();
    for i in 0..64 {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            a.committer
                .append(append(&format!("acme/{i}@s.whatsapp.net"), 0, 3))
                .await
        }));
    }
    for _ in 0..2 {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            a.committer
                .append(append("acme/race@s.whatsapp.net", 0, 2))
                .await
        }));
    }
    let mut committed = 0;
    let mut conflicts = 0;
    let mut all_positions = vec![];
    for t in tasks {
        match t.await.expect("task").expect("store answers") {
            Appended::Committed(p) => {
                assert!(p.windows(2).all(|w| w[0] < w[1]), "{p:?}");
                all_positions.extend(p);
                committed += 1;
            }
            Appended::Conflict => conflicts += 1,
            Appended::Fenced => panic!("no append here is fenced"),
        }
    }
    assert_eq!((committed, conflicts), (65, 1));
    all_positions.sort_unstable();
    all_positions.dedup();
    assert_eq!(all_positions.len(), 64 * 3 + 2);
    let after = a
        .commit_stats
        .transactions
        .load(std::sync::atomic::Ordering::Relaxed);
    // At least some sharing happened (66 appends, fewer transactions than that even with the
    // one-by-one retry of the batch that held the conflict).
    assert!(after - before < 66 + 66, "transactions: {}", after - before);
    // The history reads back in position order with the right sequences.
    let (chat, version) = crate::helpers::cqrs_load::<wagate_events::chat::Chat>(
        &a.store,
        "acme/race@s.whatsapp.net",
    )
    .await;
    assert_eq!(version, 2);
    drop(chat);
    // A stale writer conflicts and writes nothing.
    let head = app.head().await;
    let r = a
        .committer
        .append(append("acme/0@s.whatsapp.net", 1, 1))
        .await
        .expect("answer");
    assert_eq!(r, Appended::Conflict);
    assert_eq!(app.head().await, head);
}
both_stores!(group_commit, batches_and_isolates_conflicts);

/// Chat streams read by the reply plane's loader (grouped on PostgreSQL) equal what cqrs-es
/// loads, for streams loaded together, of different lengths, and for streams that do not exist.
async fn grouped_loads_equal_single_loads(app: TestApp) {
    use wagate_actors::ports::ChatStreams;
    use wagate_events::chat::Chat;

    let a = app.app().clone();
    let streams: Vec<String> = (0..40)
        .map(|i| format!("acme/load{i}@s.whatsapp.net"))
        .collect();
    for (i, s) in streams.iter().enumerate() {
        // Stream i has i % 4 appends of 1..=2 events: some are empty.
        let mut version = 0;
        for k in 0..(i % 4) {
            let n = 1 + k % 2;
            let r = a
                .committer
                .append(append(s, version, n))
                .await
                .expect("commit");
            assert!(matches!(r, Appended::Committed(_)));
            version += n as i64;
        }
    }
    let loader = std::sync::Arc::new(wagate::app::ports::StoreStreams::new(
        &a.store,
        a.committer.clone(),
    ));
    let tasks: Vec<_> = streams
        .iter()
        .cloned()
        .map(|s| {
            let loader = loader.clone();
            tokio::spawn(async move { (loader.load(&s).await, s) })
        })
        .collect();
    for t in tasks {
        let (grouped, stream) = t.await.expect("task");
        let grouped = grouped.expect("grouped load");
        let single = crate::helpers::cqrs_load::<Chat>(&a.store, &stream).await;
        assert_eq!(grouped, single, "{stream}");
    }
    let (chat, version) = loader
        .load("acme/never@s.whatsapp.net")
        .await
        .expect("load");
    assert_eq!((chat, version), (Chat::default(), 0));
}
both_stores!(group_load, grouped_loads_equal_single_loads);

/// A chat the read model has not seen starts as a new stream without reading the store; when the
/// stream did exist (written here behind the read model's back, as another process would), the
/// first commit conflicts and the chat reloads: duplicates are still recognized and new
/// messages follow the existing events.
async fn a_chat_started_as_new_reloads_when_it_was_not(app: TestApp) {
    use cqrs_es::DomainEvent;
    use wagate_events::chat::{Chat, ChatEvent, MessageKind};

    app.create_account("acme").await;
    let a = app.app().clone();
    let jid = "4915550001@s.whatsapp.net";
    let stream = format!("acme/{jid}");
    let received = ChatEvent::MessageReceived {
        message_id: "wamid.first".into(),
        from: "4915550001".into(),
        text: "first".into(),
        from_me: false,
        at: chrono::Utc::now(),
        kind: MessageKind::Text,
        contact_name: None,
        media: None,
    };
    let written = a
        .committer
        .append(Append {
            aggregate_type: "chat",
            aggregate_id: stream.clone(),
            expected: 0,
            events: vec![(
                received.event_type(),
                received.event_version(),
                serde_json::to_string(&received).expect("serialize"),
            )],
            metadata: HashMap::from([("actor".to_string(), "system:test".to_string())]),
            fence: None,
        })
        .await
        .expect("commit");
    assert!(matches!(written, Appended::Committed(_)));

    let inject = |id: &'static str, text: &'static str| {
        app.admin(
            "POST",
            "/v1/accounts/acme/sandbox/inbound",
            Some(json!({"chat_id": jid, "from": "4915550001", "text": text, "id": id})),
        )
    };
    let again = inject("wamid.first", "first").await;
    assert_eq!(again.status, 202, "{}", again.text);
    assert_eq!(again.json["duplicate"], true, "{}", again.text);
    let next = inject("wamid.second", "second").await;
    assert_eq!(next.status, 202, "{}", next.text);
    assert_eq!(next.json["duplicate"], false, "{}", next.text);

    let (chat, version) = crate::helpers::cqrs_load::<Chat>(&a.store, &stream).await;
    assert!(version >= 2, "version {version}");
    assert!(chat.message_ids.contains("wamid.first"));
    assert!(chat.message_ids.contains("wamid.second"));
}
both_stores!(
    new_chat_guess,
    a_chat_started_as_new_reloads_when_it_was_not
);
