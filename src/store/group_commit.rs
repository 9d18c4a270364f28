//! Group commit for stream appends: chat actors hand their appends to one committer task, which
//! writes every append waiting at that moment in one transaction, so many chats' events share one
//! WAL flush (and one hold of PostgreSQL's position lock, ADR 0001) instead of paying one each.
//!
//! Each append keeps its own optimistic check: its events take sequences `expected + 1 ..`, and
//! the primary key `(aggregate_type, aggregate_id, sequence)` refuses them if the stream moved. A
//! refused append makes the batch's transaction fail; the committer then writes the batch's
//! appends one transaction each, so only the stream that really conflicted sees `Conflict`.
//! Nothing is acknowledged before its transaction committed.
//!
//! One batch is written at a time: a second batch in flight would only wait for the first's
//! position lock (ADR 0001), and measured slower (ADR 0009).

use std::collections::HashMap;

use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

use crate::store::{Store, StoreError};

/// Appends taken into one transaction at most.
const MAX_BATCH: usize = 256;

/// One stream's new events.
#[derive(Debug, Clone)]
pub struct Append {
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    /// The stream version the writer holds (its events get the next sequences).
    pub expected: i64,
    /// (event type, event version, payload as JSON text)
    pub events: Vec<(String, String, String)>,
    pub metadata: HashMap<String, String>,
    /// The epoch of the account lease the append is made under (PostgreSQL, ADR 0026): refused
    /// in the same statement when the account's lease has another epoch now. The account is the
    /// stream id's first part.
    pub fence: Option<i64>,
}

/// What became of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Committed; the events' global positions, in order.
    Committed(Vec<i64>),
    /// The stream moved past `expected`: nothing was written.
    Conflict,
    /// The account's lease is no longer held under the append's fence: nothing was written.
    Fenced,
}

type Request = (Append, oneshot::Sender<Result<Appended, StoreError>>);

/// The handle writers use; the committer task stops when every handle is dropped.
#[derive(Clone)]
pub struct GroupCommitter {
    tx: mpsc::UnboundedSender<Request>,
}

/// Counts of the committer's work (for the benchmark and `/metrics`).
#[derive(Debug, Default)]
pub struct CommitStats {
    pub transactions: std::sync::atomic::AtomicU64,
    pub appends: std::sync::atomic::AtomicU64,
    /// The highest position committed through this committer, recorded before the append is
    /// answered: a read that starts after a commit finished sees at least this position.
    committed: std::sync::atomic::AtomicI64,
    /// Appends refused because their account lease had moved on (`/metrics`).
    pub fenced: std::sync::atomic::AtomicU64,
}

impl CommitStats {
    /// The highest position this process's chat appends committed.
    pub fn committed(&self) -> i64 {
        self.committed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// What became of one append of a written batch (`None`: refused by its fence).
    fn appended(&self, positions: Option<Vec<i64>>) -> Appended {
        let Some(positions) = positions else {
            self.fenced
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Appended::Fenced;
        };
        if let Some(&last) = positions.iter().max() {
            self.committed
                .fetch_max(last, std::sync::atomic::Ordering::AcqRel);
        }
        Appended::Committed(positions)
    }
}

impl GroupCommitter {
    pub fn start(store: Store, stats: std::sync::Arc<CommitStats>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, rx, stats));
        Self { tx }
    }

    /// Appends and waits for the commit.
    pub async fn append(&self, append: Append) -> Result<Appended, StoreError> {
        if append.events.is_empty() {
            return Ok(Appended::Committed(vec![]));
        }
        let (done, result) = oneshot::channel();
        self.tx
            .send((append, done))
            .map_err(|_| StoreError::Unavailable("the committer has stopped".into()))?;
        result
            .await
            .map_err(|_| StoreError::Unavailable("the committer has stopped".into()))?
    }
}

async fn run(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<Request>,
    stats: std::sync::Arc<CommitStats>,
) {
    while let Some(batch) = next_batch(&mut rx, MAX_BATCH).await {
        commit_batch(&store, batch, &stats).await;
    }
}

/// Waits for one request, then takes every request waiting by then, `max` at most; `None` when
/// every sender is gone.
pub(crate) async fn next_batch<T>(
    rx: &mut mpsc::UnboundedReceiver<T>,
    max: usize,
) -> Option<Vec<T>> {
    let mut batch = vec![rx.recv().await?];
    while batch.len() < max {
        match rx.try_recv() {
            Ok(r) => batch.push(r),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Writes one batch and answers each of its appends.
async fn commit_batch(store: &Store, mut batch: Vec<Request>, stats: &CommitStats) {
    use std::sync::atomic::Ordering::Relaxed;
    let appends: Vec<&Append> = batch.iter().map(|(a, _)| a).collect();
    stats.transactions.fetch_add(1, Relaxed);
    stats.appends.fetch_add(appends.len() as u64, Relaxed);
    match write(store, &appends).await {
        Ok(positions) => {
            for ((_, done), p) in batch.into_iter().zip(positions) {
                let _ = done.send(Ok(stats.appended(p)));
            }
        }
        Err(WriteError::Conflict) if batch.len() == 1 => {
            if let Some((_, done)) = batch.pop() {
                let _ = done.send(Ok(Appended::Conflict));
            }
        }
        Err(WriteError::Conflict) => {
            // Find the stream(s) that moved: one transaction per append.
            for (append, done) in batch {
                stats.transactions.fetch_add(1, Relaxed);
                let r = match write(store, &[&append]).await {
                    Ok(mut p) => Ok(stats.appended(p.pop().flatten())),
                    Err(WriteError::Conflict) => Ok(Appended::Conflict),
                    Err(WriteError::Store(e)) => Err(e),
                };
                let _ = done.send(r);
            }
        }
        Err(WriteError::Store(e)) => {
            for (_, done) in batch {
                let _ = done.send(Err(e.clone()));
            }
        }
    }
}

enum WriteError {
    Conflict,
    Store(StoreError),
}

impl From<sqlx::Error> for WriteError {
    fn from(e: sqlx::Error) -> Self {
        let duplicate = match &e {
            sqlx::Error::Database(db) => db
                .code()
                .is_some_and(|c| matches!(c.as_ref(), "23505" | "1555" | "2067")),
            _ => false,
        };
        if duplicate {
            WriteError::Conflict
        } else {
            WriteError::Store(StoreError::from(e))
        }
    }
}

/// A batch's events as one array per column (PostgreSQL `UNNEST`).
#[derive(Default)]
struct Columns<'a> {
    aggregate_type: Vec<&'a str>,
    aggregate_id: Vec<&'a str>,
    sequence: Vec<i64>,
    event_type: Vec<&'a str>,
    event_version: Vec<&'a str>,
    payload: Vec<&'a str>,
    metadata: Vec<String>,
    fence_account: Vec<Option<&'a str>>,
    fence_epoch: Vec<Option<i64>>,
}

/// Writes the appends in one transaction; their positions in order, `None` for an append its
/// fence refused (nothing of it written).
async fn write(store: &Store, appends: &[&Append]) -> Result<Vec<Option<Vec<i64>>>, WriteError> {
    const INSERT: &str = "INSERT INTO events \
        (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) ";
    const POSITIONS: &str = "SELECT position FROM events WHERE aggregate_type = $1 \
        AND aggregate_id = $2 AND sequence > $3 ORDER BY sequence";
    // SQLite: one statement per append, `VALUES (...), (...)` for its events.
    let statement = |a: &Append| {
        let mut sql = String::from(INSERT);
        sql.push_str("VALUES ");
        for i in 0..a.events.len() {
            let b = i * 7;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7
            ));
        }
        sql
    };
    macro_rules! bind_events {
        ($q:expr, $a:expr, $meta:expr) => {{
            let mut q = $q;
            for (i, (ty, version, payload)) in $a.events.iter().enumerate() {
                q = q
                    .bind($a.aggregate_type)
                    .bind(&$a.aggregate_id)
                    .bind($a.expected + 1 + i as i64)
                    .bind(ty)
                    .bind(version)
                    .bind(payload)
                    .bind($meta.clone());
            }
            q
        }};
    }
    let mut out = Vec::with_capacity(appends.len());
    match store {
        Store::Postgres(p) => {
            // The whole batch in one statement: one round trip while the position lock is held,
            // and one prepared statement whatever the batch's shape. A fenced row is written only
            // while its account's lease has its epoch; `FOR SHARE` holds the lease row until the
            // commit, so a takeover (which updates it) either comes first and refuses the row, or
            // waits for this commit and then finds the events (ADR 0026).
            const BATCH_INSERT: &str = "WITH u AS (SELECT * FROM UNNEST($1::text[], $2::text[], \
                $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
                $9::bigint[]) AS u(t, i, s, e, v, p, m, fa, fe)), \
                fence AS (SELECT account_id, epoch FROM account_leases \
                WHERE account_id IN (SELECT fa FROM u WHERE fa IS NOT NULL) FOR SHARE) \
                INSERT INTO events \
                (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
                SELECT t, i, s, e, v, p::json, m::json FROM u WHERE u.fa IS NULL OR EXISTS \
                (SELECT 1 FROM fence WHERE fence.account_id = u.fa AND fence.epoch = u.fe) \
                RETURNING aggregate_type, aggregate_id, sequence, position";
            let rows_total: usize = appends.iter().map(|a| a.events.len()).sum();
            let mut cols = Columns::default();
            for a in appends {
                let meta = serde_json::to_string(&a.metadata).unwrap_or_else(|_| "{}".into());
                for (i, (ty, version, payload)) in a.events.iter().enumerate() {
                    cols.aggregate_type.push(a.aggregate_type);
                    cols.aggregate_id.push(&a.aggregate_id);
                    cols.sequence.push(a.expected + 1 + i as i64);
                    cols.event_type.push(ty);
                    cols.event_version.push(version);
                    cols.payload.push(payload);
                    cols.metadata.push(meta.clone());
                    cols.fence_account.push(
                        a.fence
                            .map(|_| crate::store::chats::account_of(&a.aggregate_id)),
                    );
                    cols.fence_epoch.push(a.fence);
                }
            }
            // One statement is its own transaction (autocommit): no BEGIN / COMMIT round trips
            // while the position lock is held.
            let rows = sqlx::query(BATCH_INSERT)
                .bind(&cols.aggregate_type)
                .bind(&cols.aggregate_id)
                .bind(&cols.sequence)
                .bind(&cols.event_type)
                .bind(&cols.event_version)
                .bind(&cols.payload)
                .bind(&cols.metadata)
                .bind(&cols.fence_account)
                .bind(&cols.fence_epoch)
                .fetch_all(p)
                .await?;
            // RETURNING does not promise the input order: place each row by its stream and
            // sequence, then hand every append its events' positions in order.
            let slots: HashMap<(&str, &str, i64), usize> = (0..rows_total)
                .map(|k| {
                    let key = (
                        cols.aggregate_type[k],
                        cols.aggregate_id[k],
                        cols.sequence[k],
                    );
                    (key, k)
                })
                .collect();
            let mut flat: Vec<Option<i64>> = vec![None; rows_total];
            for r in &rows {
                let ty: String = r.try_get("aggregate_type")?;
                let id: String = r.try_get("aggregate_id")?;
                let sequence: i64 = r.try_get("sequence")?;
                if let Some(&k) = slots.get(&(ty.as_str(), id.as_str(), sequence)) {
                    flat[k] = Some(r.try_get("position")?);
                }
            }
            let mut flat = flat.into_iter();
            for a in appends {
                let mine: Vec<Option<i64>> = flat.by_ref().take(a.events.len()).collect();
                let written: Option<Vec<i64>> = mine.iter().copied().collect();
                match written {
                    Some(positions) => out.push(Some(positions)),
                    // Nothing of it written: its fence refused it.
                    None if a.fence.is_some() && mine.iter().all(Option::is_none) => out.push(None),
                    None => {
                        return Err(WriteError::Store(StoreError::Other(
                            "a committed event's position was not returned".into(),
                        )))
                    }
                }
            }
        }
        Store::Sqlite(p) => {
            let mut tx = p.begin().await?;
            for a in appends {
                let meta = serde_json::to_string(&a.metadata).unwrap_or_else(|_| "{}".into());
                let sql = statement(a);
                bind_events!(sqlx::query(&sql), a, meta)
                    .execute(&mut *tx)
                    .await?;
                // Positions are set by an AFTER INSERT trigger, after RETURNING would run.
                let positions: Vec<i64> = sqlx::query_scalar(POSITIONS)
                    .bind(a.aggregate_type)
                    .bind(&a.aggregate_id)
                    .bind(a.expected)
                    .fetch_all(&mut *tx)
                    .await?;
                out.push(Some(positions));
            }
            tx.commit().await?;
        }
    }
    Ok(out)
}
