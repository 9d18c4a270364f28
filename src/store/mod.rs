//! The event store: pools for the embedded SQLite or for PostgreSQL (built here, never with the
//! panicking helpers of the -es crates), migrations from `migrations/`, the cqrs-es frameworks in
//! plain event-store mode, and reads of the history in commit order by global position.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, CqrsFramework};
use postgres_es::PostgresEventRepository;
use secrecy::ExposeSecret;
use sqlite_es::SqliteEventRepository;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Row, SqlitePool};
use wagate_projections::StoredEvent;

use crate::config::DatabaseConfig;

/// Runs `$body` with `$pool` bound to the store's pool, whichever backend it is: for statements
/// that are the same on both. Visible to this module's children only: SQL stays in `store/`.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::store::Store::Postgres($pool) => $body,
            $crate::store::Store::Sqlite($pool) => $body,
        }
    };
}

pub mod chats;
pub mod checkpoint;
pub mod group_commit;
pub mod group_load;
pub mod leases;
pub mod media;
pub mod outbox;
pub mod replay;
pub mod retention;
pub mod revocations;

/// The store could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Connection refused, pool timed out, database gone: retry later (HTTP 503).
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// Anything else (bad SQL, undecodable row): a bug or a corrupted store.
    #[error("event store error: {0}")]
    Other(String),
}

/// Whether an sqlx error means "the database cannot be reached or is refusing work right now"
/// (retry later) rather than a bug: I/O, pool exhaustion, and the SQLSTATEs of connection
/// failures (class 08), shutdowns (57P0x), too many connections (53300), a database that does not
/// accept connections (55000), and SQLite's busy/locked codes. Every store error is classified
/// here, so this is also where connection trouble is noted: for a while afterwards every pooled
/// connection is pinged before use (see `Store::connect`).
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    let unavailable = match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            c.starts_with("08")
                || c.starts_with("57P0")
                || matches!(c.as_ref(), "53300" | "55000" | "5" | "6" | "261" | "517")
        }),
        _ => false,
    };
    if unavailable {
        connection_trouble_seen();
    }
    unavailable
}

/// When (milliseconds on `TROUBLE_CLOCK`) a store error last looked like a lost connection or an
/// unavailable server; 0: never.
static TROUBLE_AT_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static TROUBLE_CLOCK: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn trouble_clock_ms() -> u64 {
    let start = TROUBLE_CLOCK.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn connection_trouble_seen() {
    TROUBLE_AT_MS.store(trouble_clock_ms(), std::sync::atomic::Ordering::Relaxed);
}

/// Whether pooled connections should be pinged before use: after connection trouble, for a
/// while, every one is (a server restart leaves every pooled connection broken).
fn connection_trouble_recently() -> bool {
    let at = TROUBLE_AT_MS.load(std::sync::atomic::Ordering::Relaxed);
    at != 0 && trouble_clock_ms().saturating_sub(at) < PING_ALL_AFTER_TROUBLE.as_millis() as u64
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Other(e.to_string())
        }
    }
}

/// Which database holds the history.
#[derive(Clone, Debug)]
pub enum Store {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// A read of the history: events after a position, optionally up to another, optionally only of
/// some aggregate types or one stream, oldest first.
#[derive(Debug, Clone, Default)]
pub struct EventQuery<'a> {
    pub after: i64,
    pub until: Option<i64>,
    pub limit: i64,
    pub aggregate_types: &'a [&'a str],
    pub aggregate_id: Option<&'a str>,
    /// Only the configuration's history: the events the config read model folds
    /// ([`CONFIG_HISTORY`], read through its own index).
    pub config_history: bool,
    /// Only the AI log's history: the chat events that open or change an AI-log row
    /// ([`AI_LOG_HISTORY`], read through its own index).
    pub ai_log_history: bool,
}

/// The events the config read model folds (`config::folds_kind`): every event that is not a
/// chat's, and the chats' human-takeover pauses. Written exactly as the partial index
/// `events_config_history` (migration 0004) states it, so both stores use that index.
pub const CONFIG_HISTORY: &str =
    "(aggregate_type <> 'chat' OR event_type IN ('AiPaused', 'AiResumed'))";

/// The chat events that open or change an AI-log row (`messages::AI_LOG_EVENTS`; no other
/// aggregate has these event types). Written exactly as the partial index
/// `events_ai_log_history` (migration 0005) states it.
pub const AI_LOG_HISTORY: &str = "(event_type IN ('AiReplyRequested', 'AiReplyGenerated', \
    'AiReplySent', 'AiReplyFailed', 'AiReplySkipped'))";

/// A pooled PostgreSQL connection idle this long is pinged before it is handed out.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);
/// After a store error that looks like a lost connection, every pooled connection is pinged
/// before use for this long.
const PING_ALL_AFTER_TROUBLE: Duration = Duration::from_secs(30);

pub(crate) const SQLITE_TIME: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

/// Creates the SQLite database file (and missing parent dirs, 0700) readable by its owner only,
/// 0600, before SQLite opens it: SQLite gives its `-wal` and `-shm` files the database file's
/// mode. Files an older version left readable by others are narrowed to 0600.
fn prepare_sqlite_files(path: &std::path::Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let io = |what: &std::path::Path, e: std::io::Error| {
        StoreError::Other(format!("cannot prepare {}: {e}", what.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io(dir, e))?;
    }
    // An empty file is an empty database to SQLite.
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| io(path, e))?;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = std::path::PathBuf::from(name);
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| io(&file, e))?;
            tracing::warn!(file = %file.display(), "database file was readable by other users; now 0600");
        }
    }
    Ok(())
}

impl Store {
    /// Opens the pool. Never panics: a bad URL or an unreachable server is an error.
    pub async fn connect(db: &DatabaseConfig) -> Result<Store, StoreError> {
        match db {
            DatabaseConfig::Postgres { url } => {
                let opts = PgConnectOptions::from_str(url.expose_secret()).map_err(|e| {
                    StoreError::Other(format!("invalid PostgreSQL URL: {}", redact_db_error(&e)))
                })?;
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(5))
                    // A connection in steady use is not pinged before each use (that doubled the
                    // round trips of every group commit under load); one idle for a while is, and
                    // after a lost connection every one is for a while, so connections broken by
                    // a server restart are replaced before use.
                    .test_before_acquire(false)
                    .before_acquire(|conn, meta| {
                        Box::pin(async move {
                            if meta.idle_for >= PING_WHEN_IDLE_FOR || connection_trouble_recently()
                            {
                                sqlx::Connection::ping(conn).await?;
                            }
                            Ok(true)
                        })
                    })
                    .connect_with(opts)
                    .await?;
                Ok(Store::Postgres(pool))
            }
            DatabaseConfig::Sqlite { path } => {
                prepare_sqlite_files(path)?;
                let opts = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // FULL: an acknowledged commit survives power loss, not only a crash.
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true);
                let pool = SqlitePoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(opts)
                    .await?;
                Ok(Store::Sqlite(pool))
            }
        }
    }

    /// Applies the migrations of `migrations/<backend>/` that are not applied yet.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let res = match self {
            Store::Postgres(p) => sqlx::migrate!("./migrations/postgres").run(p).await,
            Store::Sqlite(p) => sqlx::migrate!("./migrations/sqlite").run(p).await,
        };
        res.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(inner) => StoreError::from(inner),
            other => StoreError::Other(format!("migration failed: {other}")),
        })
    }

    /// `postgres` or `sqlite`.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgres",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// A cheap round trip, for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(p) => sqlx::query("SELECT 1").execute(p).await.map(drop)?,
            Store::Sqlite(p) => sqlx::query("SELECT 1").execute(p).await.map(drop)?,
        }
        Ok(())
    }

    pub async fn close(&self) {
        match self {
            Store::Postgres(p) => p.close().await,
            Store::Sqlite(p) => p.close().await,
        }
    }

    /// The cqrs-es framework of aggregate `A` over this store, in plain event-store mode (no
    /// snapshots, no aggregate store: see docs/design and ADR 0001).
    pub fn framework<A>(&self) -> Framework<A>
    where
        A: Aggregate<Services = ()> + 'static,
    {
        match self {
            Store::Postgres(p) => Framework::Postgres(CqrsFramework::new(
                PersistedEventStore::new_event_store(PostgresEventRepository::new(p.clone())),
                vec![],
                (),
            )),
            Store::Sqlite(p) => Framework::Sqlite(CqrsFramework::new(
                PersistedEventStore::new_event_store(SqliteEventRepository::new(p.clone())),
                vec![],
                (),
            )),
        }
    }

    /// Reads events in commit order (by global position).
    pub async fn read(&self, q: &EventQuery<'_>) -> Result<Vec<StoredEvent>, StoreError> {
        self.read_raw(q)
            .await?
            .into_iter()
            .map(RawEvent::parse)
            .collect()
    }

    /// Reads events in commit order with their payload and metadata as JSON text (a replay parses
    /// them straight into typed events, in parallel).
    pub async fn read_raw(&self, q: &EventQuery<'_>) -> Result<Vec<RawEvent>, StoreError> {
        let mut sql = String::from(
            "SELECT position, aggregate_type, aggregate_id, sequence, event_type, event_version, ",
        );
        sql.push_str(match self {
            Store::Postgres(_) => {
                "payload::text AS payload, metadata::text AS metadata, recorded_at"
            }
            Store::Sqlite(_) => "payload, metadata, recorded_at",
        });
        sql.push_str(" FROM events WHERE position > $1");
        let mut n = 1;
        if q.until.is_some() {
            n += 1;
            sql.push_str(&format!(" AND position <= ${n}"));
        }
        if !q.aggregate_types.is_empty() {
            let list: Vec<String> = q
                .aggregate_types
                .iter()
                .map(|_| {
                    n += 1;
                    format!("${n}")
                })
                .collect();
            sql.push_str(&format!(" AND aggregate_type IN ({})", list.join(", ")));
        }
        if q.aggregate_id.is_some() {
            n += 1;
            sql.push_str(&format!(" AND aggregate_id = ${n}"));
        }
        if q.config_history {
            sql.push_str(" AND ");
            sql.push_str(CONFIG_HISTORY);
        }
        if q.ai_log_history {
            sql.push_str(" AND ");
            sql.push_str(AI_LOG_HISTORY);
        }
        n += 1;
        sql.push_str(&format!(" ORDER BY position LIMIT ${n}"));

        macro_rules! bind_all {
            ($query:expr) => {{
                let mut query = $query.bind(q.after);
                if let Some(u) = q.until {
                    query = query.bind(u);
                }
                for t in q.aggregate_types {
                    query = query.bind(*t);
                }
                if let Some(id) = q.aggregate_id {
                    query = query.bind(id);
                }
                query.bind(q.limit)
            }};
        }
        match self {
            Store::Postgres(p) => {
                let rows = bind_all!(sqlx::query(&sql)).fetch_all(p).await?;
                rows.iter()
                    .map(|r| {
                        let at: DateTime<Utc> = r.try_get("recorded_at")?;
                        row_to_raw(r, at)
                    })
                    .collect()
            }
            Store::Sqlite(p) => {
                let rows = bind_all!(sqlx::query(&sql)).fetch_all(p).await?;
                rows.iter()
                    .map(|r| row_to_raw(r, sqlite_time(r.try_get("recorded_at")?)?))
                    .collect()
            }
        }
    }

    /// One stream's events after sequence `after_sequence`, in sequence order, `limit` at most:
    /// read through the primary key, whatever the length of the history.
    pub async fn read_stream_raw(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        after_sequence: i64,
        limit: i64,
    ) -> Result<Vec<RawEvent>, StoreError> {
        const WHERE: &str = " FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
            AND sequence > $3 ORDER BY sequence LIMIT $4";
        const COLUMNS: &str =
            "SELECT position, aggregate_type, aggregate_id, sequence, event_type, event_version, ";
        match self {
            Store::Postgres(p) => {
                let sql = format!(
                    "{COLUMNS}payload::text AS payload, metadata::text AS metadata, recorded_at{WHERE}"
                );
                let rows = sqlx::query(&sql)
                    .bind(aggregate_type)
                    .bind(aggregate_id)
                    .bind(after_sequence)
                    .bind(limit)
                    .fetch_all(p)
                    .await?;
                rows.iter()
                    .map(|r| row_to_raw(r, r.try_get("recorded_at")?))
                    .collect()
            }
            Store::Sqlite(p) => {
                let sql = format!("{COLUMNS}payload, metadata, recorded_at{WHERE}");
                let rows = sqlx::query(&sql)
                    .bind(aggregate_type)
                    .bind(aggregate_id)
                    .bind(after_sequence)
                    .bind(limit)
                    .fetch_all(p)
                    .await?;
                rows.iter()
                    .map(|r| row_to_raw(r, sqlite_time(r.try_get("recorded_at")?)?))
                    .collect()
            }
        }
    }

    /// The highest position committed at or before `t` (0 when none).
    pub async fn position_at(&self, t: DateTime<Utc>) -> Result<i64, StoreError> {
        const SQL: &str =
            "SELECT COALESCE(MAX(position), 0) AS p FROM events WHERE recorded_at <= $1";
        let p: i64 = match self {
            Store::Postgres(pool) => sqlx::query(SQL)
                .bind(t)
                .fetch_one(pool)
                .await?
                .try_get("p")?,
            Store::Sqlite(pool) => sqlx::query(SQL)
                .bind(t.format(SQLITE_TIME).to_string())
                .fetch_one(pool)
                .await?
                .try_get("p")?,
        };
        Ok(p)
    }

    /// The highest committed position (0 for an empty store).
    pub async fn head(&self) -> Result<i64, StoreError> {
        const SQL: &str = "SELECT COALESCE(MAX(position), 0) AS p FROM events";
        Ok(match self {
            Store::Postgres(pool) => sqlx::query(SQL).fetch_one(pool).await?.try_get("p")?,
            Store::Sqlite(pool) => sqlx::query(SQL).fetch_one(pool).await?.try_get("p")?,
        })
    }
}

/// An event row with its payload and metadata still as JSON text.
#[derive(Debug, Clone)]
pub struct RawEvent {
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    pub metadata: String,
    pub recorded_at: DateTime<Utc>,
}

impl RawEvent {
    /// Parses payload and metadata.
    pub fn parse(self) -> Result<StoredEvent, StoreError> {
        let position = self.position;
        let payload = serde_json::from_str(&self.payload)
            .map_err(|e| StoreError::Other(format!("event {position}: bad payload: {e}")))?;
        let mut ev = self.without_payload()?;
        ev.payload = payload;
        Ok(ev)
    }

    /// The event with its metadata parsed and a `null` payload (for a caller that parses the
    /// payload text itself).
    pub fn without_payload(self) -> Result<StoredEvent, StoreError> {
        let position = self.position;
        Ok(StoredEvent {
            position,
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            sequence: self.sequence,
            event_type: self.event_type,
            event_version: self.event_version,
            payload: serde_json::Value::Null,
            metadata: serde_json::from_str(&self.metadata)
                .map_err(|e| StoreError::Other(format!("event {position}: bad metadata: {e}")))?,
            recorded_at: self.recorded_at,
        })
    }
}

/// SQLite keeps `recorded_at` as RFC 3339 text.
fn sqlite_time(raw: String) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(&raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Other(format!("bad recorded_at {raw:?}: {e}")))
}

fn row_to_raw<R>(r: &R, recorded_at: DateTime<Utc>) -> Result<RawEvent, StoreError>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(RawEvent {
        position: r.try_get("position")?,
        aggregate_type: r.try_get("aggregate_type")?,
        aggregate_id: r.try_get("aggregate_id")?,
        sequence: r.try_get("sequence")?,
        event_type: r.try_get("event_type")?,
        event_version: r.try_get("event_version")?,
        payload: r.try_get("payload")?,
        metadata: r.try_get("metadata")?,
        recorded_at,
    })
}

/// sqlx's URL errors can echo the URL (and its password): keep only the kind of error.
fn redact_db_error(e: &sqlx::Error) -> &'static str {
    match e {
        sqlx::Error::Configuration(_) => "malformed connection string",
        _ => "unusable connection string",
    }
}

/// The cqrs-es framework of one aggregate over the configured backend.
pub enum Framework<A>
where
    A: Aggregate<Services = ()> + 'static,
{
    Postgres(CqrsFramework<A, PersistedEventStore<PostgresEventRepository, A>>),
    Sqlite(CqrsFramework<A, PersistedEventStore<SqliteEventRepository, A>>),
}

impl<A> Framework<A>
where
    A: Aggregate<Services = ()> + 'static,
{
    /// Loads the stream, decides, and commits the new events with the loaded version (a
    /// concurrent writer makes this fail with `AggregateConflict`).
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        metadata: std::collections::HashMap<String, String>,
    ) -> Result<(), AggregateError<A::Error>> {
        match self {
            Framework::Postgres(f) => f.execute_with_metadata(id, command, metadata).await,
            Framework::Sqlite(f) => f.execute_with_metadata(id, command, metadata).await,
        }
    }
}

/// Why a commit failed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Another writer appended to the stream first: reload and decide again.
    #[error("the stream changed concurrently")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use wagate_projections::config::{folds_kind, CONFIG_AGGREGATES, PAUSE_EVENTS};
    use wagate_projections::messages::AI_LOG_EVENTS;

    /// The terms of an `event_type IN (...)` list.
    fn named(predicate: &str) -> Vec<&str> {
        let (_, names) = predicate.split_once("event_type IN (").expect("an IN list");
        names
            .trim_end_matches("))")
            .split(", ")
            .map(|n| n.trim_matches('\''))
            .collect()
    }

    /// The migration that creates a partial index states `predicate` as queries write it.
    fn migration_states(file: &str, predicate: &str) {
        let predicate = predicate.trim_start_matches('(').trim_end_matches(')');
        for backend in ["postgres", "sqlite"] {
            let path = format!("{}/migrations/{backend}/{file}", env!("CARGO_MANIFEST_DIR"));
            let sql = std::fs::read_to_string(&path).expect("migration");
            assert!(sql.contains(predicate), "{path}");
        }
    }

    /// `AI_LOG_HISTORY` names the events that make the AI log (the index and the fold in step).
    #[test]
    fn ai_log_history_is_what_makes_the_ai_log() {
        assert_eq!(named(AI_LOG_HISTORY), AI_LOG_EVENTS);
        assert!(AI_LOG_HISTORY.starts_with("(event_type IN ("));
        migration_states("0005_ai_log_history.sql", AI_LOG_HISTORY);
    }

    /// `CONFIG_HISTORY` selects what the config model folds: every config aggregate's events and
    /// exactly the chat events it names (the partial index and the fold must not drift apart).
    #[test]
    fn config_history_is_what_the_config_model_folds() {
        assert_eq!(named(CONFIG_HISTORY), PAUSE_EVENTS);
        assert!(CONFIG_HISTORY.starts_with("(aggregate_type <> 'chat' OR "));
        for ty in CONFIG_AGGREGATES {
            assert!(folds_kind(ty, "AnyEvent"), "{ty}");
        }
        for ev in ["MessageReceived", "AiReplySent", "TypingIndicated"] {
            assert!(!folds_kind("chat", ev), "{ev}");
        }
        for ev in PAUSE_EVENTS {
            assert!(folds_kind("chat", ev), "{ev}");
        }
        migration_states("0004_config_history.sql", CONFIG_HISTORY);
    }
}
