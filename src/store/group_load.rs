//! Group loading of chat streams on PostgreSQL: chat actors starting at the same moment (a burst
//! of new conversations) ask one loader task, which reads every stream asked for by then with two
//! queries (their snapshots, then their events from each snapshot on, `aggregate_id = ANY($1)`)
//! instead of queries each. The events come back as stored (sequence, payload text), oldest first
//! per stream; the caller folds them onto the snapshot (`chat_store::fold`).

use std::collections::HashMap;

use sqlx::postgres::PgPool;
use sqlx::Row;
use tokio::sync::{mpsc, oneshot};
use wagate_events::chat::Chat;

use crate::store::chats::{Loaded, Snapshot};
use crate::store::group_commit::next_batch;
use crate::store::StoreError;

/// Streams read by one query at most.
const MAX_BATCH: usize = 256;
/// Queries running at once.
const IN_FLIGHT: usize = 2;

/// A chat's snapshot, if one was taken, and its events from the snapshot's version on (all of
/// them without a snapshot).
pub type LoadedStream = (Option<Snapshot>, Vec<Loaded>);

type Request = (String, oneshot::Sender<Result<LoadedStream, StoreError>>);

/// The handle; the loader task stops when every handle is dropped.
#[derive(Clone)]
pub struct GroupLoader {
    tx: mpsc::UnboundedSender<Request>,
}

impl GroupLoader {
    /// Starts the loader for the chat streams in `pool`.
    pub fn start(pool: PgPool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, rx));
        Self { tx }
    }

    /// The chat's snapshot and events (none for a new stream).
    pub async fn load(&self, aggregate_id: &str) -> Result<LoadedStream, StoreError> {
        let (done, result) = oneshot::channel();
        let gone = || StoreError::Unavailable("the stream loader has stopped".into());
        self.tx
            .send((aggregate_id.to_string(), done))
            .map_err(|_| gone())?;
        result.await.map_err(|_| gone())?
    }
}

async fn run(pool: PgPool, mut rx: mpsc::UnboundedReceiver<Request>) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(batch) = next_batch(&mut rx, MAX_BATCH).await else {
            return;
        };
        let pool = pool.clone();
        tokio::spawn(async move {
            let ids: Vec<&str> = batch.iter().map(|(id, _)| id.as_str()).collect();
            match read(&pool, &ids).await {
                Ok(mut streams) => {
                    for (id, done) in batch {
                        let _ = done.send(Ok(streams.remove(&id).unwrap_or_default()));
                    }
                }
                Err(e) => {
                    for (_, done) in batch {
                        let _ = done.send(Err(e.clone()));
                    }
                }
            }
            drop(slot);
        });
    }
}

async fn read(pool: &PgPool, ids: &[&str]) -> Result<HashMap<String, LoadedStream>, StoreError> {
    const SNAPSHOTS: &str = "SELECT aggregate_id, version, state FROM chat_snapshots \
        WHERE aggregate_id = ANY($1) AND format = $2";
    // One index lookup per stream (a nested loop over the ids), planned for each call: a cached
    // generic plan made while the table was small scanned all of it per batch as it grew.
    const EVENTS: &str = "SELECT e.aggregate_id, e.sequence, e.payload::text AS payload \
        FROM UNNEST($1::text[], $2::bigint[]) AS ids(id, from_sequence) CROSS JOIN LATERAL \
        (SELECT aggregate_id, sequence, payload FROM events \
         WHERE aggregate_type = 'chat' AND aggregate_id = ids.id \
           AND sequence >= ids.from_sequence ORDER BY sequence) AS e";
    let mut streams: HashMap<String, LoadedStream> = HashMap::new();
    let snapshots = sqlx::query(SNAPSHOTS)
        .bind(ids)
        .bind(Chat::SNAPSHOT_FORMAT)
        .fetch_all(pool)
        .await?;
    for r in snapshots {
        let id: String = r.try_get("aggregate_id")?;
        let snapshot = Snapshot {
            version: r.try_get("version")?,
            state: r.try_get("state")?,
        };
        streams.insert(id, (Some(snapshot), Vec::new()));
    }
    let from: Vec<i64> = ids
        .iter()
        .map(|id| {
            streams
                .get(*id)
                .and_then(|(s, _)| s.as_ref())
                .map_or(0, |s| s.version)
        })
        .collect();
    let rows = sqlx::query(EVENTS)
        .persistent(false)
        .bind(ids)
        .bind(&from)
        .fetch_all(pool)
        .await?;
    for r in rows {
        let id: String = r.try_get("aggregate_id")?;
        streams.entry(id).or_default().1.push(Loaded {
            sequence: r.try_get("sequence")?,
            payload: r.try_get("payload")?,
        });
    }
    // Oldest first whatever order the plan produced.
    for (_, events) in streams.values_mut() {
        events.sort_by_key(|e| e.sequence);
    }
    Ok(streams)
}
