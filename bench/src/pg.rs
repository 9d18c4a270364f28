//! The PostgreSQL side of a run: fresh databases (and their removal at the end), the read-only
//! monitor queries that follow the gateway's `events` table, and the server counters sampled
//! around each phase (WAL syncs, wait events).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use url::{Host, Url};

use crate::Result;

/// The server a run uses: an admin pool on the database of the given URL, and the names of the
/// databases this run created.
pub struct Server {
    base: Url,
    admin: PgPool,
    prefix: String,
    created: Mutex<Vec<String>>,
    pub version: String,
    /// Diagnostic: create the databases with `synchronous_commit = off` (commits stop waiting
    /// for their WAL flush), to see how much of a commit is the fsync.
    pub async_commit: bool,
    /// Diagnostic: the event store's position trigger without its global append lock, to see
    /// how much of a cluster's throughput the lock costs. Positions may then commit out of
    /// order (a reader following them could skip an event): never a real store's setting.
    pub append_lock_off: std::sync::atomic::AtomicBool,
}

/// The position trigger of `migrations/postgres/0001_events.sql` without
/// `pg_advisory_xact_lock` (the `--compare-append-lock` diagnostic).
const TRIGGER_WITHOUT_LOCK: &str = "CREATE OR REPLACE FUNCTION wagate_assign_event_position() \
    RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
    NEW.position := nextval('events_position_seq'); NEW.recorded_at := clock_timestamp(); \
    RETURN NEW; END $$";

/// Refuses anything but a loopback (or local socket) server: the benchmark never leaves the host.
fn check_loopback(url: &Url) -> Result<()> {
    let ok = match url.host() {
        None => true,
        // Non-special schemes (postgres://) keep IPv4 hosts as text.
        Some(Host::Domain(d)) => {
            d == "localhost"
                || d.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
    };
    if ok {
        Ok(())
    } else {
        Err(
            "--database-url must point at a loopback PostgreSQL (127.0.0.1, ::1 or localhost)"
                .into(),
        )
    }
}

impl Server {
    pub async fn connect(url: &str) -> Result<Server> {
        let base = Url::parse(url).map_err(|e| format!("--database-url is not a URL: {e}"))?;
        check_loopback(&base)?;
        let opts = PgConnectOptions::from_str(url)?;
        let admin = PgPoolOptions::new()
            .max_connections(3)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await
            .map_err(|e| format!("cannot reach PostgreSQL: {e}"))?;
        let version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&admin)
            .await?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Ok(Server {
            base,
            admin,
            prefix: format!("wagate_bench_{stamp}_{}", std::process::id()),
            created: Mutex::new(Vec::new()),
            async_commit: false,
            append_lock_off: std::sync::atomic::AtomicBool::new(false),
            version,
        })
    }

    /// Drops databases left by earlier runs that crashed (only those nobody is connected to).
    pub async fn sweep(&self) {
        let old: Vec<String> = sqlx::query_scalar(
            "SELECT datname FROM pg_database d WHERE datname LIKE 'wagate\\_bench\\_%' \
             AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)",
        )
        .fetch_all(&self.admin)
        .await
        .unwrap_or_default();
        for name in old {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                .execute(&self.admin)
                .await;
        }
    }

    /// Creates `<prefix>_<suffix>` and returns its name and URL.
    pub async fn create(&self, suffix: &str) -> Result<(String, String)> {
        let name = format!("{}_{suffix}", self.prefix);
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&self.admin)
            .await
            .map_err(|e| format!("cannot create database {name}: {e}"))?;
        self.created
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(name.clone());
        if self.async_commit {
            sqlx::query(&format!(
                "ALTER DATABASE \"{name}\" SET synchronous_commit = off"
            ))
            .execute(&self.admin)
            .await?;
        }
        // Every phase starts right after a checkpoint, so none of them runs into one that the
        // WAL of the phase before triggered (its flushes and full-page writes moved the P1 ratio
        // by a quarter between runs).
        if let Err(e) = sqlx::query("CHECKPOINT").execute(&self.admin).await {
            eprintln!("  (CHECKPOINT before the phase refused: {e}; numbers may vary more)");
        }
        let mut url = self.base.clone();
        url.set_path(&format!("/{name}"));
        if self
            .append_lock_off
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            let store = crate::p3::migrated_store(url.as_str()).await?;
            if let wagate::store::Store::Postgres(pool) = &store {
                sqlx::query(TRIGGER_WITHOUT_LOCK).execute(pool).await?;
            }
            store.close().await;
        }
        Ok((name, url.to_string()))
    }

    /// Drops every database this run created (forcibly: a stopped gateway may leave a
    /// connection closing).
    pub async fn drop_all(&self) {
        let names = std::mem::take(&mut *self.created.lock().unwrap_or_else(|p| p.into_inner()));
        for name in names {
            let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            if let Err(e) = sqlx::query(&sql).execute(&self.admin).await {
                eprintln!("warning: could not drop database {name}: {e}");
            }
        }
        self.admin.close().await;
    }

    /// Cluster-wide count of WAL syncs (fsyncs of the WAL), from `pg_stat_wal`. Other clients of
    /// the same server count too.
    pub async fn wal_syncs(&self) -> Option<i64> {
        sqlx::query_scalar("SELECT wal_sync FROM pg_stat_wal")
            .fetch_one(&self.admin)
            .await
            .ok()
    }

    /// Transactions committed in database `datname` so far (`pg_stat_database.xact_commit`,
    /// read-only statements in autocommit included; reported by backends when they exit).
    pub async fn xact_commits(&self, datname: &str) -> Option<i64> {
        sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
            .bind(datname)
            .fetch_one(&self.admin)
            .await
            .ok()
    }

    /// Samples what the backends connected to `datname` are doing, every `every`, until stopped.
    pub fn sample_waits(&self, datname: &str, every: Duration) -> WaitSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let pool = self.admin.clone();
        let datname = datname.to_string();
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut acc = WaitSummary::default();
            while !flag.load(Ordering::Relaxed) {
                let rows = sqlx::query(
                    "SELECT CASE WHEN state = 'idle in transaction' THEN 'idle in transaction' \
                                 WHEN wait_event IS NULL THEN 'running (CPU)' \
                                 ELSE wait_event_type || ':' || wait_event END AS what, \
                            count(*) AS n \
                     FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid() \
                       AND state IN ('active', 'idle in transaction') \
                     GROUP BY 1",
                )
                .bind(&datname)
                .fetch_all(&pool)
                .await
                .unwrap_or_default();
                acc.samples += 1;
                for r in rows {
                    let what: String = r.try_get("what").unwrap_or_default();
                    let n: i64 = r.try_get("n").unwrap_or(0);
                    *acc.counts.entry(what).or_default() += u64::try_from(n).unwrap_or(0);
                }
                tokio::time::sleep(every).await;
            }
            acc
        });
        WaitSampler { stop, task }
    }
}

/// What the database backends were doing, summed over samples.
#[derive(Debug, Default, Clone)]
pub struct WaitSummary {
    pub samples: u64,
    pub counts: BTreeMap<String, u64>,
}

impl WaitSummary {
    /// The average number of busy backends, and the top states with their share, e.g.
    /// `5.1 busy: Lock:advisory 71%, IO:WALSync 12%, …`.
    pub fn describe(&self, top: usize) -> String {
        let total: u64 = self.counts.values().sum();
        if self.samples == 0 || total == 0 {
            return "no busy backends sampled".into();
        }
        let mut v: Vec<(&String, &u64)> = self.counts.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1));
        let parts: Vec<String> = v
            .iter()
            .take(top)
            .map(|(k, n)| format!("{k} {:.0}%", **n as f64 * 100.0 / total as f64))
            .collect();
        format!(
            "{:.1} busy backends on average: {}",
            total as f64 / self.samples as f64,
            parts.join(", ")
        )
    }
}

pub struct WaitSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<WaitSummary>,
}

impl WaitSampler {
    pub async fn finish(self) -> WaitSummary {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// A small read-only pool on one benchmark database.
pub async fn monitor_pool(url: &str) -> Result<PgPool> {
    // The follower's poll must read only the rows past its position: on a table that grew since
    // its last ANALYZE the planner picks a sequential scan of the whole table, which made the
    // benchmark's own poll the most expensive statement of a P1 run (2.5 ms per poll). Without
    // JIT: the costs of a disabled plan are above its threshold, and compiling took more CPU
    // than the gateway's own statements.
    let options =
        PgConnectOptions::from_str(url)?.options([("enable_seqscan", "off"), ("jit", "off")]);
    Ok(PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?)
}

/// How often the benchmark's follower polls for settled replies.
pub const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// The newest position in the events table (0 when empty): where a follower starts, so that
/// events written before a phase (a generated history) are not taken for its replies.
pub async fn last_position(pool: &PgPool) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COALESCE(MAX(position), 0)::bigint FROM events")
            .fetch_one(pool)
            .await?,
    )
}

/// What one poll of the follower found: the terminal reply events past its position, and the
/// position up to which it has now read every event.
pub struct Followed {
    /// `(position, stream id, type)` of `AiReplySent`, `AiReplyFailed` and `AiReplySkipped`.
    pub events: Vec<(i64, String, String)>,
    /// Where the next poll starts: every event up to here has been looked at.
    pub up_to: i64,
    /// Queries the poll ran.
    pub queries: u64,
}

/// The most terminal events one poll returns.
const FOLLOW_LIMIT: usize = 20_000;

/// Terminal reply events after `after`, by global position. Positions are commit-ordered in
/// wagate's store (ADR 0001): once the newest position is visible, every lower one is committed
/// or gone for good, so the follower reads up to the newest position it saw first and then moves
/// past all of it. (Moving only to the last terminal event made every poll during an injection
/// with no reply settled yet read the whole table again: ~1 million rows looked at in P2's first
/// seconds, on the cores the gateway is measured on.)
pub async fn terminal_after(pool: &PgPool, after: i64) -> Result<Followed> {
    let top = last_position(pool).await?;
    if top <= after {
        return Ok(Followed {
            events: vec![],
            up_to: after,
            queries: 1,
        });
    }
    let rows = sqlx::query(
        // No `aggregate_type = 'chat'` (these types are chat events only): the planner answered
        // it with a scan of the whole primary key, 10 ms per poll on 90,000 events.
        "SELECT position, aggregate_id, event_type FROM events \
         WHERE position > $1 AND position <= $2 \
           AND event_type IN ('AiReplySent', 'AiReplyFailed', 'AiReplySkipped') \
         ORDER BY position LIMIT $3",
    )
    // Planned for each call's own range (an unnamed statement): a cached generic plan guesses
    // a third of the table in range and scans it (see `monitor_pool` too).
    .persistent(false)
    .bind(after)
    .bind(top)
    .bind(FOLLOW_LIMIT as i64)
    .fetch_all(pool)
    .await?;
    let events = rows
        .iter()
        .map(|r| {
            Ok((
                r.try_get("position")?,
                r.try_get("aggregate_id")?,
                r.try_get("event_type")?,
            ))
        })
        .collect::<Result<Vec<(i64, String, String)>>>()?;
    // A full page may stop short of `top`: go on from its last event.
    let up_to = match events.last() {
        Some((p, _, _)) if events.len() == FOLLOW_LIMIT => *p,
        _ => top,
    };
    Ok(Followed {
        events,
        up_to,
        queries: 2,
    })
}

/// For every chat with one inbound message and its reply (P2's shape): the time from the
/// message's commit to the reply's `AiReplySent`, from their `recorded_at`. A chat with several
/// messages or replies would pair each with each: use it on P2's database only.
pub async fn reply_latencies(pool: &PgPool) -> Result<Vec<std::time::Duration>> {
    let secs: Vec<f64> = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM (s.recorded_at - r.recorded_at))::float8 \
         FROM events r JOIN events s ON s.aggregate_type = 'chat' \
           AND s.aggregate_id = r.aggregate_id AND s.event_type = 'AiReplySent' \
         WHERE r.aggregate_type = 'chat' AND r.event_type = 'MessageReceived'",
    )
    .fetch_all(pool)
    .await?;
    Ok(secs
        .into_iter()
        .map(|s| std::time::Duration::from_secs_f64(s.max(0.0)))
        .collect())
}

/// Final counts of a phase, read with `count(*)` from the gateway's events table.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub sent: i64,
    pub failed: i64,
    pub skipped: i64,
    pub events: i64,
    pub chat_events: i64,
    /// Average size of a chat event's JSON payload, in bytes.
    pub avg_payload: f64,
    pub requested: i64,
    /// The most frequent reasons of `AiReplyFailed`, with their counts.
    pub failure_reasons: Vec<(String, i64)>,
    /// `recorded_at` of the last `AiReplySent`.
    pub last_sent_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Counts {
    /// Replies requested that never reached a terminal event.
    pub fn open(&self) -> i64 {
        self.requested - self.sent - self.failed - self.skipped
    }

    /// e.g. `sent 9000, failed 12, skipped 0, never settled 988; failures: "…" ×12`.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "sent {}, failed {}, skipped {}, never settled {}",
            self.sent,
            self.failed,
            self.skipped,
            self.open()
        );
        if !self.failure_reasons.is_empty() {
            let reasons: Vec<String> = self
                .failure_reasons
                .iter()
                .map(|(r, n)| format!("{r:?} ×{n}"))
                .collect();
            s.push_str(&format!("; failures: {}", reasons.join(", ")));
        }
        s
    }
}

/// How many queries [`counts`] runs.
pub const COUNT_QUERIES: u64 = 9;

pub async fn counts(pool: &PgPool) -> Result<Counts> {
    let count = |ty: &'static str| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE event_type = $1")
            .bind(ty)
            .fetch_one(pool)
            .await
    };
    Ok(Counts {
        sent: count("AiReplySent").await?,
        failed: count("AiReplyFailed").await?,
        skipped: count("AiReplySkipped").await?,
        requested: count("AiReplyRequested").await?,
        failure_reasons: sqlx::query_as(
            "SELECT COALESCE(payload->'AiReplyFailed'->>'reason', '?') AS reason, count(*) AS n \
             FROM events WHERE event_type = 'AiReplyFailed' GROUP BY 1 ORDER BY 2 DESC LIMIT 3",
        )
        .fetch_all(pool)
        .await?,
        events: sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(pool)
            .await?,
        chat_events: sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'chat'")
            .fetch_one(pool)
            .await?,
        avg_payload: sqlx::query_scalar::<_, Option<f64>>(
            "SELECT avg(octet_length(payload::text))::float8 FROM events WHERE aggregate_type = 'chat'",
        )
        .fetch_one(pool)
        .await?
        .unwrap_or(0.0),
        last_sent_at: sqlx::query_scalar(
            "SELECT max(recorded_at) FROM events WHERE event_type = 'AiReplySent'",
        )
        .fetch_one(pool)
        .await?,
    })
}
