//! The cluster tables of PostgreSQL (migration 0008, ADR 0026): the nodes that share the store and
//! the account leases that say which node runs each account's replies. Times are the database's
//! (`now()`), so the nodes' clocks never decide an expiry.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::store::StoreError;

/// A lease or heartbeat duration as SQL's `make_interval` seconds.
fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// What registering a node id found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// The id is this process's now.
    Held,
    /// A process that was alive at its last heartbeat holds the id; its row expires in `expires_in`.
    Taken {
        heartbeat_at: DateTime<Utc>,
        expires_in: Duration,
    },
}

/// Takes `node_id` for the process `instance`, unless another process that has not expired holds it.
pub async fn register(
    pool: &PgPool,
    node_id: &str,
    instance: &str,
    lease: Duration,
) -> Result<Registered, StoreError> {
    const TAKE: &str =
        "INSERT INTO cluster_nodes (node_id, instance, started_at, heartbeat_at, expires_at) \
        VALUES ($1, $2, now(), now(), now() + make_interval(secs => $3)) \
        ON CONFLICT (node_id) DO UPDATE SET instance = excluded.instance, started_at = now(), \
        heartbeat_at = now(), expires_at = excluded.expires_at \
        WHERE cluster_nodes.expires_at <= now() OR cluster_nodes.instance = excluded.instance \
        RETURNING node_id";
    const HOLDER: &str = "SELECT heartbeat_at, \
        GREATEST(EXTRACT(EPOCH FROM (expires_at - now())), 0)::float8 FROM cluster_nodes WHERE node_id = $1";
    let taken: Option<String> = sqlx::query_scalar(TAKE)
        .bind(node_id)
        .bind(instance)
        .bind(secs(lease))
        .fetch_optional(pool)
        .await?;
    if taken.is_some() {
        return Ok(Registered::Held);
    }
    let holder: Option<(DateTime<Utc>, f64)> = sqlx::query_as(HOLDER)
        .bind(node_id)
        .fetch_optional(pool)
        .await?;
    Ok(match holder {
        Some((heartbeat_at, left)) => Registered::Taken {
            heartbeat_at,
            expires_in: Duration::from_secs_f64(left.max(0.0)),
        },
        // Deleted in between (its process stopped): free now.
        None => Registered::Taken {
            heartbeat_at: DateTime::<Utc>::MIN_UTC,
            expires_in: Duration::ZERO,
        },
    })
}

/// Renews the node's row; false when another process holds the id now.
pub async fn heartbeat(
    pool: &PgPool,
    node_id: &str,
    instance: &str,
    lease: Duration,
    url: Option<&str>,
) -> Result<bool, StoreError> {
    const SQL: &str = "UPDATE cluster_nodes SET heartbeat_at = now(), \
        expires_at = now() + make_interval(secs => $3), url = COALESCE($4, url) \
        WHERE node_id = $1 AND instance = $2";
    let done = sqlx::query(SQL)
        .bind(node_id)
        .bind(instance)
        .bind(secs(lease))
        .bind(url)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes the node's row (a clean stop).
pub async fn deregister(pool: &PgPool, node_id: &str, instance: &str) -> Result<(), StoreError> {
    const SQL: &str = "DELETE FROM cluster_nodes WHERE node_id = $1 AND instance = $2";
    sqlx::query(SQL)
        .bind(node_id)
        .bind(instance)
        .execute(pool)
        .await?;
    Ok(())
}

/// A node sharing the store.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NodeRow {
    pub node_id: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The nodes whose row has not expired.
pub async fn live_nodes(pool: &PgPool) -> Result<Vec<NodeRow>, StoreError> {
    const SQL: &str = "SELECT node_id, started_at, heartbeat_at, expires_at FROM cluster_nodes \
        WHERE expires_at > now() ORDER BY node_id";
    Ok(sqlx::query_as(SQL).fetch_all(pool).await?)
}

/// An account's lease.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LeaseRow {
    pub account_id: String,
    /// The node that holds or last held it.
    pub owner: Option<String>,
    pub epoch: i64,
    pub expires_at: DateTime<Utc>,
    /// Held now: not released and not expired (by the database's clock).
    pub live: bool,
}

/// The columns of a [`LeaseRow`].
const LEASE_ROW: &str = "SELECT account_id, owner, epoch, expires_at, \
    (owner_instance IS NOT NULL AND expires_at > now()) AS live FROM account_leases";

/// Every account's lease.
pub async fn leases(pool: &PgPool) -> Result<Vec<LeaseRow>, StoreError> {
    let sql = format!("{LEASE_ROW} ORDER BY account_id");
    Ok(sqlx::query_as(&sql).fetch_all(pool).await?)
}

/// Extends the leases `instance` holds; the ones it still holds, with their epochs.
pub async fn renew(
    pool: &PgPool,
    instance: &str,
    lease: Duration,
) -> Result<Vec<(String, i64)>, StoreError> {
    const SQL: &str = "UPDATE account_leases SET expires_at = now() + make_interval(secs => $2) \
        WHERE owner_instance = $1 AND expires_at > now() RETURNING account_id, epoch";
    Ok(sqlx::query_as(SQL)
        .bind(instance)
        .bind(secs(lease))
        .fetch_all(pool)
        .await?)
}

/// A lease taken by [`acquire`].
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Acquired {
    pub account_id: String,
    pub epoch: i64,
    /// The node that held it before (`None`: nobody ever did).
    pub previous: Option<String>,
}

/// Takes the leases of `accounts` that nobody holds: never taken, released, expired, or held by
/// an earlier process of this node id. Each one taken gets the next epoch, so whatever the
/// previous holder still tries to append under its epoch is refused.
pub async fn acquire(
    pool: &PgPool,
    node_id: &str,
    instance: &str,
    accounts: &[String],
    lease: Duration,
) -> Result<Vec<Acquired>, StoreError> {
    const SQL: &str = "WITH before AS (SELECT account_id, owner FROM account_leases \
        WHERE account_id = ANY($1)), \
        taken AS (INSERT INTO account_leases \
        (account_id, owner, owner_instance, epoch, acquired_at, expires_at) \
        SELECT a, $2, $3, 1, now(), now() + make_interval(secs => $4) FROM UNNEST($1::text[]) AS a \
        ON CONFLICT (account_id) DO UPDATE SET owner = excluded.owner, \
        owner_instance = excluded.owner_instance, epoch = account_leases.epoch + 1, \
        acquired_at = now(), expires_at = excluded.expires_at \
        WHERE account_leases.owner_instance IS NULL OR account_leases.expires_at <= now() \
        OR (account_leases.owner = excluded.owner \
            AND account_leases.owner_instance IS DISTINCT FROM excluded.owner_instance) \
        RETURNING account_id, epoch) \
        SELECT taken.account_id, taken.epoch, before.owner AS previous FROM taken \
        LEFT JOIN before ON before.account_id = taken.account_id ORDER BY taken.account_id";
    if accounts.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_as(SQL)
        .bind(accounts)
        .bind(node_id)
        .bind(instance)
        .bind(secs(lease))
        .fetch_all(pool)
        .await?)
}

/// Gives up the leases of `accounts` that `instance` holds, so another node takes them at once
/// (the row keeps the node as the last owner).
pub async fn release(pool: &PgPool, instance: &str, accounts: &[String]) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE account_leases SET owner_instance = NULL, expires_at = now() \
        WHERE owner_instance = $1 AND account_id = ANY($2)";
    sqlx::query(SQL)
        .bind(instance)
        .bind(accounts)
        .execute(pool)
        .await?;
    Ok(())
}

/// Drops the leases of accounts that no longer exist.
pub async fn forget(pool: &PgPool, accounts: &[String]) -> Result<(), StoreError> {
    const SQL: &str = "DELETE FROM account_leases WHERE account_id = ANY($1)";
    sqlx::query(SQL).bind(accounts).execute(pool).await?;
    Ok(())
}

/// The channel a gateway that recorded a reply request tells the account's owner on, with the
/// chat's stream id as payload.
pub const REPLIES_CHANNEL: &str = "wagate_replies";
/// The channel a node announces a join or a release on, so the others rebalance at once.
pub const CLUSTER_CHANNEL: &str = "wagate_cluster";

/// Sends `payload` on `channel` to every listening node.
pub async fn notify(pool: &PgPool, channel: &str, payload: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(pool)
        .await?;
    Ok(())
}

/// A listener on the cluster's channels.
pub async fn listen(pool: &PgPool) -> Result<sqlx::postgres::PgListener, StoreError> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener
        .listen_all([REPLIES_CHANNEL, CLUSTER_CHANNEL])
        .await?;
    Ok(listener)
}

/// The live node that holds `account`'s live lease: its id and the URL it advertised (`None`
/// before it advertised one). `None` when no live node holds the account.
pub async fn owner_of(
    pool: &PgPool,
    account: &str,
) -> Result<Option<(String, Option<String>)>, StoreError> {
    const SQL: &str = "SELECT n.node_id, n.url FROM account_leases l \
        JOIN cluster_nodes n ON n.node_id = l.owner AND n.instance = l.owner_instance \
        WHERE l.account_id = $1 AND l.expires_at > now() AND n.expires_at > now()";
    Ok(sqlx::query_as(SQL)
        .bind(account)
        .fetch_optional(pool)
        .await?)
}

/// One account's lease, if it ever had one.
pub async fn leases_of(pool: &PgPool, account: &str) -> Result<Option<LeaseRow>, StoreError> {
    let sql = format!("{LEASE_ROW} WHERE account_id = $1");
    Ok(sqlx::query_as(&sql)
        .bind(account)
        .fetch_optional(pool)
        .await?)
}
