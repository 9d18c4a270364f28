//! Group loading of chat streams on PostgreSQL: chat actors starting at the same moment (a burst
//! of new conversations) ask one loader task, which reads every stream asked for by then with one
//! `aggregate_id = ANY($1)` query instead of one query each. The events come back as stored
//! (type, payload text), oldest first per stream; the caller folds them.

use std::collections::HashMap;

use sqlx::postgres::PgPool;
use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

use crate::group_commit::next_batch;
use crate::store::StoreError;

/// Streams read by one query at most.
const MAX_BATCH: usize = 256;
/// Queries running at once.
const IN_FLIGHT: usize = 2;

/// One stored event of a stream: its sequence and payload (JSON text).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub sequence: i64,
    pub payload: String,
}

type Request = (String, oneshot::Sender<Result<Vec<Loaded>, StoreError>>);

/// The handle; the loader task stops when every handle is dropped.
#[derive(Clone)]
pub struct GroupLoader {
    tx: mpsc::UnboundedSender<Request>,
}

impl GroupLoader {
    /// Starts the loader for streams of `aggregate_type` in `pool`.
    pub fn start(pool: PgPool, aggregate_type: &'static str) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, aggregate_type, rx));
        Self { tx }
    }

    /// The stream's events, oldest first (empty for a new stream).
    pub async fn load(&self, aggregate_id: &str) -> Result<Vec<Loaded>, StoreError> {
        let (done, result) = oneshot::channel();
        let gone = || StoreError::Unavailable("the stream loader has stopped".into());
        self.tx
            .send((aggregate_id.to_string(), done))
            .map_err(|_| gone())?;
        result.await.map_err(|_| gone())?
    }
}

async fn run(pool: PgPool, aggregate_type: &'static str, mut rx: mpsc::UnboundedReceiver<Request>) {
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
            match read(&pool, aggregate_type, &ids).await {
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

async fn read(
    pool: &PgPool,
    aggregate_type: &str,
    ids: &[&str],
) -> Result<HashMap<String, Vec<Loaded>>, StoreError> {
    // One index lookup per stream (a nested loop over the ids), planned for each call: a cached
    // generic plan made while the table was small scanned all of it per batch as it grew.
    const SQL: &str = "SELECT e.aggregate_id, e.sequence, e.payload::text AS payload \
        FROM UNNEST($2::text[]) AS ids(id) CROSS JOIN LATERAL \
        (SELECT aggregate_id, sequence, payload FROM events \
         WHERE aggregate_type = $1 AND aggregate_id = ids.id ORDER BY sequence) AS e";
    let rows = sqlx::query(SQL)
        .persistent(false)
        .bind(aggregate_type)
        .bind(ids)
        .fetch_all(pool)
        .await?;
    let mut streams: HashMap<String, Vec<Loaded>> = HashMap::new();
    for r in rows {
        let id: String = r.try_get("aggregate_id")?;
        streams.entry(id).or_default().push(Loaded {
            sequence: r.try_get("sequence")?,
            payload: r.try_get("payload")?,
        });
    }
    // Oldest first whatever order the plan produced.
    for events in streams.values_mut() {
        events.sort_by_key(|e| e.sequence);
    }
    Ok(streams)
}
