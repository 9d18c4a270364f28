//! What chat streams need of the store beyond appends (docs/adr/0011-bounded-chat-state.md):
//! snapshots of a chat's folded state, so activating a long chat folds only the events after its
//! snapshot, and the recall of message ids that fell out of a chat's in-memory window, answered
//! from the `events_chat_message_id` index. Both backends run the same statements, except the
//! index expression.

use wagate_events::chat::{fact_of, Chat, ChatEvent};
use wagate_events::message_window::MessageFact;

use crate::store::{Store, StoreError};

/// One stored event of a stream: its sequence and payload (JSON text).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub sequence: i64,
    pub payload: String,
}

/// A chat's state as serialized at `version` (the sequence of the last event folded into it).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub version: i64,
    pub state: String,
}

/// A chat as loaded: its state, its version (the last sequence folded) and how many events were
/// folded to get it (after the snapshot, when one was used).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Folded {
    pub chat: Chat,
    pub version: usize,
    pub folded: usize,
}

/// The chat's snapshot in the running format, if one was taken.
pub async fn read_snapshot(store: &Store, chat: &str) -> Result<Option<Snapshot>, StoreError> {
    const SQL: &str =
        "SELECT version, state FROM chat_snapshots WHERE aggregate_id = $1 AND format = $2";
    let row: Option<(i64, String)> = on_pool!(store, pool => sqlx::query_as(SQL)
        .bind(chat)
        .bind(Chat::SNAPSHOT_FORMAT)
        .fetch_optional(pool)
        .await?);
    Ok(row.map(|(version, state)| Snapshot { version, state }))
}

/// The chat's events from sequence `from` on, oldest first.
pub async fn read_events(store: &Store, chat: &str, from: i64) -> Result<Vec<Loaded>, StoreError> {
    const SQL: &str = "SELECT sequence, CAST(payload AS text) AS payload FROM events \
        WHERE aggregate_type = 'chat' AND aggregate_id = $1 AND sequence >= $2 ORDER BY sequence";
    let rows: Vec<(i64, String)> = on_pool!(store, pool => sqlx::query_as(SQL)
        .bind(chat)
        .bind(from)
        .fetch_all(pool)
        .await?);
    Ok(rows
        .into_iter()
        .map(|(sequence, payload)| Loaded { sequence, payload })
        .collect())
}

/// Writes a snapshot unless a newer one of the same format is there already.
pub async fn save_snapshot(
    store: &Store,
    chat: &str,
    version: i64,
    state: &str,
) -> Result<(), StoreError> {
    const SQL: &str = "INSERT INTO chat_snapshots (aggregate_id, version, format, state) \
        VALUES ($1, $2, $3, $4) \
        ON CONFLICT (aggregate_id) DO UPDATE \
        SET version = excluded.version, format = excluded.format, state = excluded.state \
        WHERE chat_snapshots.version < excluded.version OR chat_snapshots.format <> excluded.format";
    on_pool!(store, pool => sqlx::query(SQL)
        .bind(chat)
        .bind(version)
        .bind(Chat::SNAPSHOT_FORMAT)
        .bind(state)
        .execute(pool)
        .await
        .map(drop)?);
    Ok(())
}

/// What the chat's stream recorded of `message_id`, looked up in the message-id index.
pub async fn recall(
    store: &Store,
    chat: &str,
    message_id: &str,
) -> Result<Option<MessageFact>, StoreError> {
    // The index expressions of migrations/*/0003 (a query uses the index only when it repeats
    // the expression and the index's condition).
    const POSTGRES: &str =
        "SELECT CAST(payload AS text) FROM events WHERE aggregate_type = 'chat' \
        AND event_type IN ('MessageReceived', 'MessageSent', 'MessageStatusUpdated') \
        AND aggregate_id = $1 \
        AND json_extract_path_text(payload, event_type, 'message_id') = $2 ORDER BY sequence";
    const SQLITE: &str = "SELECT CAST(payload AS text) FROM events WHERE aggregate_type = 'chat' \
        AND event_type IN ('MessageReceived', 'MessageSent', 'MessageStatusUpdated') \
        AND aggregate_id = $1 \
        AND json_extract(payload, '$.' || event_type || '.message_id') = $2 ORDER BY sequence";
    let sql = match store {
        Store::Postgres(_) => POSTGRES,
        Store::Sqlite(_) => SQLITE,
    };
    let payloads: Vec<String> = on_pool!(store, pool => sqlx::query_scalar(sql)
        .bind(chat)
        .bind(message_id)
        .fetch_all(pool)
        .await?);
    let events = payloads
        .iter()
        .map(|p| serde_json::from_str::<ChatEvent>(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Other(format!("cannot read a chat event: {e}")))?;
    Ok(fact_of(message_id, &events))
}

/// Folds a chat's stored events (oldest first) onto `snapshot`, as cqrs-es does on load: the
/// state and the last sequence. With a snapshot, `events` must start at the snapshot's own
/// version (read with `sequence >= version`): that event proves the stream reaches the snapshot.
/// `Ok(None)`: the snapshot cannot be used (the stream does not reach it, or it does not
/// deserialize); the caller folds the whole stream instead.
pub fn fold(snapshot: Option<Snapshot>, events: Vec<Loaded>) -> Result<Option<Folded>, StoreError> {
    let mut events = events.into_iter().peekable();
    let mut loaded = Folded::default();
    if let Some(s) = snapshot {
        if events.next_if(|e| e.sequence == s.version).is_none() {
            return Ok(None);
        }
        match serde_json::from_str::<Chat>(&s.state) {
            Ok(chat) => {
                loaded.chat = chat;
                loaded.version = usize::try_from(s.version).unwrap_or(0);
            }
            Err(_) => return Ok(None),
        }
    }
    for e in events {
        let event: ChatEvent = serde_json::from_str(&e.payload)
            .map_err(|err| StoreError::Other(format!("cannot read a chat event: {err}")))?;
        cqrs_es::Aggregate::apply(&mut loaded.chat, event);
        loaded.version = usize::try_from(e.sequence).unwrap_or(0);
        loaded.folded += 1;
    }
    Ok(Some(loaded))
}

/// Loads a chat with single queries (SQLite, and PostgreSQL when a snapshot turned out unusable):
/// its snapshot and the events from it, or every event.
pub async fn load(store: &Store, chat: &str) -> Result<Folded, StoreError> {
    if let Some(snapshot) = read_snapshot(store, chat).await? {
        let events = read_events(store, chat, snapshot.version).await?;
        if let Some(loaded) = fold(Some(snapshot), events)? {
            return Ok(loaded);
        }
        tracing::warn!(
            account = %account_of(chat),
            "chat snapshot not usable (the stream does not reach it); folding every event"
        );
    }
    let events = read_events(store, chat, 0).await?;
    Ok(fold(None, events)?.unwrap_or_default())
}

/// Chats whose stream runs at least `behind` events past their usable snapshot (or that have
/// none), with that lag, the longest first.
pub async fn lagging(store: &Store, behind: i64) -> Result<Vec<(String, i64)>, StoreError> {
    const SQL: &str = "SELECT c.aggregate_id, c.last - COALESCE(s.version, 0) AS lag \
        FROM (SELECT aggregate_id, max(sequence) AS last FROM events \
              WHERE aggregate_type = 'chat' GROUP BY aggregate_id) c \
        LEFT JOIN chat_snapshots s ON s.aggregate_id = c.aggregate_id AND s.format = $2 \
        WHERE c.last - COALESCE(s.version, 0) >= $1 ORDER BY lag DESC, c.aggregate_id";
    let rows: Vec<(String, i64)> = on_pool!(store, pool => sqlx::query_as(SQL)
        .bind(behind)
        .bind(Chat::SNAPSHOT_FORMAT)
        .fetch_all(pool)
        .await?);
    Ok(rows)
}

/// What [`backfill`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backfilled {
    pub chats: u64,
    pub events_folded: u64,
}

/// Writes a snapshot of every chat whose stream runs `behind` or more events past its snapshot,
/// so that its next activation reads only the events after it (ADR 0011: without one, the first
/// activation after an upgrade folds the whole stream). One chat at a time; safe while a gateway
/// runs on the same store: a snapshot is a fold of the events up to its version, and a newer one
/// is never replaced. `after_each(done, total)` is called after every chat.
pub async fn backfill(
    store: &Store,
    behind: i64,
    mut after_each: impl FnMut(usize, usize),
) -> Result<Backfilled, StoreError> {
    let chats = lagging(store, behind.max(1)).await?;
    let mut done = Backfilled::default();
    for (i, (chat, _)) in chats.iter().enumerate() {
        let loaded = load(store, chat).await?;
        let state = serde_json::to_string(&loaded.chat)
            .map_err(|e| StoreError::Other(format!("cannot serialize a chat snapshot: {e}")))?;
        let version = i64::try_from(loaded.version).unwrap_or(i64::MAX);
        save_snapshot(store, chat, version, &state).await?;
        done.chats += 1;
        done.events_folded += u64::try_from(loaded.folded).unwrap_or(u64::MAX);
        after_each(i + 1, chats.len());
    }
    Ok(done)
}

/// The account part of a chat stream id: logs name it, never the chat (its JID is a phone number).
pub fn account_of(stream_id: &str) -> &str {
    stream_id.split_once('/').map_or("", |(account, _)| account)
}
