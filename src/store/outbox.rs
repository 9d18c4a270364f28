//! The delivery table and the fan-out checkpoint, in the event store's database (both backends
//! run the same SQL; times are epoch milliseconds).
//!
//! Deliveries are inserted together with the checkpoint that covers their events, in one
//! transaction: a crash before it re-reads the same events and inserts the same rows (the unique
//! key `(webhook_id, event_position, event_type)` drops repeats), a crash after it finds them in
//! the table. Senders claim a due row by moving its `next_attempt_at` past the request's timeout
//! (a lease); a sender that dies mid-request leaves the row to be retried when the lease ends.

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

use crate::store::{Store, StoreError};

/// The checkpoint name of the webhook fan-out.
pub const FANOUT: &str = "webhook_fanout";

pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn time(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(|m| Utc.timestamp_millis_opt(m).single())
}

/// A delivery to insert.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: String,
    pub webhook_id: String,
    pub event_position: i64,
    pub event_type: String,
    pub body: String,
}

/// A delivery as listed by the API.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Delivery {
    /// The `webhook-id` header of every attempt.
    pub id: String,
    pub webhook_id: String,
    pub event_type: String,
    pub event_position: i64,
    /// `pending`, `delivered`, `dead` (retries exhausted, or 410 Gone) or `cancelled` (the
    /// webhook was deleted or disabled first).
    pub status: String,
    pub attempts: i64,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A delivery ready to be sent.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: String,
    pub webhook_id: String,
    pub body: String,
    pub round_attempts: i64,
    pub next_attempt_at: i64,
}

const DELIVERY_COLUMNS: &str = "id, webhook_id, event_type, event_position, status, attempts, \
     last_status, last_error, next_attempt_at, created_at, updated_at, delivered_at";

fn delivery<R>(r: &R) -> Result<Delivery, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Delivery {
        id: r.try_get("id")?,
        webhook_id: r.try_get("webhook_id")?,
        event_type: r.try_get("event_type")?,
        event_position: r.try_get("event_position")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        last_status_code: r.try_get("last_status")?,
        last_error: r.try_get("last_error")?,
        next_attempt_at: time(r.try_get("next_attempt_at")?),
        created_at: time(r.try_get("created_at")?).unwrap_or_default(),
        updated_at: time(r.try_get("updated_at")?).unwrap_or_default(),
        delivered_at: time(r.try_get("delivered_at")?),
    })
}

/// The position up to which `name` has consumed the history.
pub async fn checkpoint(store: &Store, name: &str) -> Result<i64, StoreError> {
    const SQL: &str = "SELECT position FROM checkpoints WHERE name = $1";
    let p: Option<i64> =
        on_pool!(store, p => sqlx::query_scalar(SQL).bind(name).fetch_optional(p).await?);
    Ok(p.unwrap_or(0))
}

/// Inserts deliveries (repeats ignored) and advances checkpoint `name` to `position`, atomically.
pub async fn append(
    store: &Store,
    name: &str,
    position: i64,
    deliveries: &[NewDelivery],
) -> Result<u64, StoreError> {
    const INSERT: &str = "INSERT INTO webhook_deliveries \
        (id, webhook_id, event_position, event_type, body, status, attempts, round_attempts, \
         next_attempt_at, created_at, updated_at) \
        VALUES ($1, $2, $3, $4, $5, 'pending', 0, 0, $6, $6, $6) \
        ON CONFLICT (webhook_id, event_position, event_type) DO NOTHING";
    const CHECKPOINT: &str = "INSERT INTO checkpoints (name, position) VALUES ($1, $2) \
        ON CONFLICT (name) DO UPDATE SET position = CASE \
        WHEN excluded.position > checkpoints.position THEN excluded.position \
        ELSE checkpoints.position END";
    let now = now_ms();
    let inserted = on_pool!(store, p => {
        let mut tx = p.begin().await?;
        let mut n = 0;
        for d in deliveries {
            n += sqlx::query(INSERT)
                .bind(&d.id)
                .bind(&d.webhook_id)
                .bind(d.event_position)
                .bind(&d.event_type)
                .bind(&d.body)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        sqlx::query(CHECKPOINT).bind(name).bind(position).execute(&mut *tx).await?;
        tx.commit().await?;
        n
    });
    Ok(inserted)
}

/// Pending deliveries due at `now`, oldest due first.
pub async fn due(store: &Store, now: i64, limit: i64) -> Result<Vec<Due>, StoreError> {
    const SQL: &str = "SELECT id, webhook_id, body, round_attempts, next_attempt_at \
        FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1 \
        ORDER BY next_attempt_at LIMIT $2";
    let rows = on_pool!(store, p => {
        let rows = sqlx::query(SQL).bind(now).bind(limit).fetch_all(p).await?;
        rows.iter()
            .map(|r| {
                Ok(Due {
                    id: r.try_get("id")?,
                    webhook_id: r.try_get("webhook_id")?,
                    body: r.try_get("body")?,
                    round_attempts: r.try_get("round_attempts")?,
                    next_attempt_at: r.try_get("next_attempt_at")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?
    });
    Ok(rows)
}

/// Claims due deliveries until `lease_until`, in one transaction; for each, whether this caller
/// got it (false: another sender claimed it first).
pub async fn claim(store: &Store, due: &[Due], lease_until: i64) -> Result<Vec<bool>, StoreError> {
    const SQL: &str = "UPDATE webhook_deliveries SET next_attempt_at = $1 \
        WHERE id = $2 AND status = 'pending' AND next_attempt_at = $3";
    let got = on_pool!(store, p => {
        let mut tx = p.begin().await?;
        let mut got = Vec::with_capacity(due.len());
        for d in due {
            let n = sqlx::query(SQL)
                .bind(lease_until)
                .bind(&d.id)
                .bind(d.next_attempt_at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            got.push(n == 1);
        }
        tx.commit().await?;
        got
    });
    Ok(got)
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered {
        status: u16,
    },
    /// Try again at `next` (epoch ms).
    Retry {
        status: Option<u16>,
        error: String,
        next: i64,
    },
    /// No more attempts: schedule exhausted, or 410 Gone.
    Dead {
        status: Option<u16>,
        error: String,
    },
}

/// Records the outcomes of attempts on claimed deliveries, in one transaction.
pub async fn record(store: &Store, outcomes: &[(String, Outcome)]) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, \
        round_attempts = round_attempts + 1, last_status = $2, last_error = $3, \
        next_attempt_at = $4, updated_at = $5, delivered_at = $6 \
        WHERE id = $7 AND status = 'pending'";
    let now = now_ms();
    on_pool!(store, p => {
        let mut tx = p.begin().await?;
        for (id, outcome) in outcomes {
            let (status, code, error, next, delivered) = match outcome {
                Outcome::Delivered { status } => ("delivered", Some(*status), None, None, Some(now)),
                Outcome::Retry {
                    status,
                    error,
                    next,
                } => ("pending", *status, Some(error.as_str()), Some(*next), None),
                Outcome::Dead { status, error } => {
                    ("dead", *status, Some(error.as_str()), None, None)
                }
            };
            sqlx::query(SQL)
                .bind(status)
                .bind(code.map(i64::from))
                .bind(error)
                .bind(next)
                .bind(now)
                .bind(delivered)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    });
    Ok(())
}

/// Cancels the pending deliveries of a webhook (deleted or disabled).
pub async fn cancel_pending(store: &Store, webhook_id: &str, why: &str) -> Result<u64, StoreError> {
    const SQL: &str = "UPDATE webhook_deliveries SET status = 'cancelled', last_error = $1, \
        next_attempt_at = NULL, updated_at = $2 WHERE webhook_id = $3 AND status = 'pending'";
    let n = on_pool!(store, p => sqlx::query(SQL)
        .bind(why)
        .bind(now_ms())
        .bind(webhook_id)
        .execute(p)
        .await?
        .rows_affected());
    Ok(n)
}

/// Makes a delivery due now with a fresh retry schedule (same id, so receivers can dedupe).
/// `None` when the webhook has no such delivery.
pub async fn redeliver(
    store: &Store,
    webhook_id: &str,
    id: &str,
) -> Result<Option<Delivery>, StoreError> {
    const SQL: &str = "UPDATE webhook_deliveries SET status = 'pending', round_attempts = 0, \
        next_attempt_at = $1, updated_at = $1, delivered_at = NULL \
        WHERE id = $2 AND webhook_id = $3";
    let n = on_pool!(store, p => sqlx::query(SQL)
        .bind(now_ms())
        .bind(id)
        .bind(webhook_id)
        .execute(p)
        .await?
        .rows_affected());
    if n == 0 {
        return Ok(None);
    }
    get(store, webhook_id, id).await
}

/// One delivery of a webhook.
pub async fn get(
    store: &Store,
    webhook_id: &str,
    id: &str,
) -> Result<Option<Delivery>, StoreError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1 AND webhook_id = $2"
    );
    let d = on_pool!(store, p => {
        match sqlx::query(&sql).bind(id).bind(webhook_id).fetch_optional(p).await? {
            Some(r) => Some(delivery(&r)?),
            None => None,
        }
    });
    Ok(d)
}

/// A page of a webhook's deliveries, newest first, before the cursor `before` (a delivery id).
pub async fn list(
    store: &Store,
    webhook_id: &str,
    status: Option<&str>,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<Delivery>, StoreError> {
    let mut sql =
        format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1");
    let mut n = 1;
    if status.is_some() {
        n += 1;
        sql.push_str(&format!(" AND status = ${n}"));
    }
    if before.is_some() {
        n += 1;
        sql.push_str(&format!(" AND id < ${n}"));
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", n + 1));
    let rows = on_pool!(store, p => {
        let mut q = sqlx::query(&sql).bind(webhook_id);
        if let Some(s) = status {
            q = q.bind(s);
        }
        if let Some(b) = before {
            q = q.bind(b);
        }
        q.bind(limit)
            .fetch_all(p)
            .await?
            .iter()
            .map(delivery)
            .collect::<Result<Vec<_>, sqlx::Error>>()?
    });
    Ok(rows)
}

/// Counts of deliveries by status, and the age in seconds of the oldest pending one (the
/// delivery lag), for `/metrics`.
pub async fn stats(store: &Store) -> Result<(Vec<(String, i64)>, f64), StoreError> {
    const COUNTS: &str = "SELECT status, COUNT(*) AS n FROM webhook_deliveries GROUP BY status";
    const OLDEST: &str = "SELECT MIN(created_at) FROM webhook_deliveries WHERE status = 'pending'";
    let (counts, oldest) = on_pool!(store, p => {
        let counts = sqlx::query(COUNTS)
            .fetch_all(p)
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<String, _>("status")?, r.try_get::<i64, _>("n")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let oldest: Option<i64> = sqlx::query_scalar(OLDEST).fetch_one(p).await?;
        (counts, oldest)
    });
    let lag = oldest.map_or(0.0, |o| ((now_ms() - o).max(0) as f64) / 1000.0);
    Ok((counts, lag))
}

/// The deliveries waiting or given up on, gateway-wide (the overview's webhook table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct DeliveryCounts {
    /// Not delivered yet (`pending`), including those in `failed`.
    pub pending: i64,
    /// Pending after a failed attempt: waiting for their next try.
    pub failed: i64,
    /// Dead-lettered: retries exhausted, or the receiver answered 410 Gone.
    pub dead: i64,
}

/// Counts deliveries now pending, pending after a failed attempt, and dead.
pub async fn delivery_counts(store: &Store) -> Result<DeliveryCounts, StoreError> {
    const SQL: &str = "SELECT \
        COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0) AS pending, \
        COALESCE(SUM(CASE WHEN status = 'pending' AND last_error IS NOT NULL THEN 1 ELSE 0 END), 0) AS failed, \
        COALESCE(SUM(CASE WHEN status = 'dead' THEN 1 ELSE 0 END), 0) AS dead \
        FROM webhook_deliveries WHERE status IN ('pending', 'dead')";
    let counts = on_pool!(store, p => {
        let r = sqlx::query(SQL).fetch_one(p).await?;
        DeliveryCounts {
            pending: r.try_get("pending")?,
            failed: r.try_get("failed")?,
            dead: r.try_get("dead")?,
        }
    });
    Ok(counts)
}
