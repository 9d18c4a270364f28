//! P1: end-to-end auto-replies per second against a zero-latency model stub.
//!
//! `chats` chats get `per_chat` messages each, from C concurrent clients. A chat gets its next
//! message only after the reply to its previous one settled (the gateway answers only the newest
//! pending message of a chat and skips older ones as superseded), so every message is answered.
//! Settled replies are found by following the gateway's `events` table by position (commit
//! order); the final numbers are `count(*)`s of that table.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use wagate::store::chats::{self, Backfilled};

use crate::gateway::{self, Api, Gateway};
use crate::p3;
use crate::pg::{self, Counts, Server, WaitSummary};
use crate::stats::{self, Latency};
use crate::stub::Stub;
use crate::Result;

/// `wagate snapshot-chats`' default `--behind`.
const SNAPSHOT_BEHIND: i64 = 512;

#[derive(Debug, Clone)]
pub struct P1Result {
    pub chats: usize,
    pub per_chat: usize,
    pub concurrency: usize,
    pub counts: Counts,
    /// Settled replies (sent + failed + skipped) seen by the follower before the deadline.
    pub complete: bool,
    /// First inject to the last `AiReplySent` (its `recorded_at`).
    pub secs: f64,
    /// First inject to the moment the follower saw the last settled reply.
    pub observed_secs: f64,
    pub replies_per_s: f64,
    pub inject: Latency,
    pub waits: WaitSummary,
    /// WAL syncs (cluster-wide, from the gateway's start to its stop) per reply sent.
    pub wal_syncs_per_reply: Option<f64>,
    /// Database transactions of the gateway (reads included) per reply sent.
    pub db_xacts_per_reply: Option<f64>,
    /// Queries the benchmark itself ran on the phase's database.
    pub monitor_queries: u64,
    /// Injects answered 503 and retried.
    pub inject_retries: u64,
    pub cpu: Option<stats::CpuUse>,
    /// `History::Warm`: what `wagate snapshot-chats` did before the run, and how long it took.
    pub backfill: Option<(Backfilled, Duration)>,
}

impl P1Result {
    /// Leaves what the store held before the run (a generated history, a warm-up) out of the
    /// counts and the rate.
    fn leave_out(&mut self, before: &Counts) {
        let c = &mut self.counts;
        c.sent -= before.sent;
        c.failed -= before.failed;
        c.skipped -= before.skipped;
        c.requested -= before.requested;
        c.events -= before.events;
        c.chat_events -= before.chat_events;
        self.replies_per_s = c.sent as f64 / self.secs;
    }

    pub fn events_per_reply(&self) -> f64 {
        self.counts.events as f64 / self.counts.sent.max(1) as f64
    }
}

/// A long chat's history as the measured run finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum History {
    /// Fresh chats.
    None,
    /// `cycles` reply cycles per chat, written with SQL: the chats were never active since, so
    /// they have no snapshot (a chat's first activation after an upgrade).
    Cold { cycles: i64 },
    /// The same, then `wagate snapshot-chats` (`chats::backfill`, timed) before the gateway
    /// starts: the chats start from their snapshots.
    Warm { cycles: i64 },
}

/// P1 on fresh chats, or on chats that already hold a history (written with SQL by
/// `p3::generate` before the gateway starts: the long-chat phase).
pub async fn run(
    server: &Server,
    concurrency: usize,
    chats: usize,
    per_chat: usize,
    history: History,
    timeout: Duration,
) -> Result<P1Result> {
    run_on(
        server,
        concurrency,
        chats,
        per_chat,
        history,
        Cluster {
            nodes: 1,
            accounts: 1,
        },
        timeout,
    )
    .await
}

/// How many gateways share the phase's database, and over how many accounts the chats are
/// spread (the accounts are what the nodes divide, ADR 0026).
#[derive(Debug, Clone, Copy)]
pub struct Cluster {
    pub nodes: usize,
    pub accounts: usize,
}

/// P1 on fresh chats with `cluster.nodes` gateways on one database: chat `i`'s `k`-th message
/// goes to node `(i + k) % nodes`, so most messages reach a node that does not run their account
/// and are handed over.
pub async fn run_nodes(
    server: &Server,
    concurrency: usize,
    chats: usize,
    per_chat: usize,
    cluster: Cluster,
    timeout: Duration,
) -> Result<P1Result> {
    run_on(
        server,
        concurrency,
        chats,
        per_chat,
        History::None,
        cluster,
        timeout,
    )
    .await
}

async fn run_on(
    server: &Server,
    concurrency: usize,
    chats: usize,
    per_chat: usize,
    history: History,
    cluster: Cluster,
    timeout: Duration,
) -> Result<P1Result> {
    let cycles = match history {
        History::None => 0,
        History::Cold { cycles } | History::Warm { cycles } => cycles,
    };
    let name = match history {
        History::None if cluster.nodes > 1 || cluster.accounts > 1 => {
            format!("p1_{}n_{}a", cluster.nodes, cluster.accounts)
        }
        History::None => "p1".into(),
        History::Cold { .. } => "long".into(),
        History::Warm { .. } => "long_warm".into(),
    };
    let name = if server
        .append_lock_off
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        format!("{name}_nolock")
    } else {
        name
    };
    let (db, url) = server.create(&name).await?;
    let mut before = None;
    let mut backfill = None;
    if cycles > 0 {
        p3::migrated_store(&url).await?.close().await;
        p3::generate(
            &url,
            cycles.saturating_mul(i64::try_from(chats)?),
            i64::try_from(chats)?,
        )
        .await?;
        if history == (History::Warm { cycles }) {
            let store = p3::migrated_store(&url).await?;
            let started = Instant::now();
            let done = chats::backfill(&store, SNAPSHOT_BEHIND, |_, _| {}).await?;
            backfill = Some((done, started.elapsed()));
            store.close().await;
        }
        let monitor = pg::monitor_pool(&url).await?;
        before = Some(pg::counts(&monitor).await?);
        monitor.close().await;
    }
    let stub = Stub::spawn(Duration::ZERO).await?;
    let mut gws = Vec::with_capacity(cluster.nodes);
    for n in 0..cluster.nodes.max(1) {
        let node = (cluster.nodes > 1).then(|| format!("bench-node-{n}"));
        gws.push(Gateway::start_node(&url, concurrency, node.as_deref()).await?);
    }
    let apis: Vec<Api> = gws.iter().map(|g| g.api.clone()).collect();
    gws[0]
        .api
        .configure_accounts(&stub.base, 10, cluster.accounts)
        .await?;
    if cluster.nodes > 1 {
        spread(&gws[0].api, cluster).await?;
    }
    let syncs_before = server.wal_syncs().await;
    let xacts_before = server.xact_commits(&db).await;
    let result = drive(
        server,
        &db,
        &url,
        &apis,
        cluster.accounts,
        concurrency,
        chats,
        per_chat,
        timeout,
    )
    .await;
    for gw in gws {
        gw.stop().await;
    }
    stub.stop().await;
    // Backends report their WAL statistics when they exit: read after the gateway's pool closed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let syncs_after = server.wal_syncs().await;
    let xacts_after = server.xact_commits(&db).await;
    let mut result = result?;
    if let Some(before) = &before {
        result.leave_out(before);
    }
    result.backfill = backfill;
    let sent = result.counts.sent;
    result.wal_syncs_per_reply = stats::per_reply(syncs_before, syncs_after, 0, sent);
    // Minus the benchmark's own reads on this database (follower polls, final counts).
    let own = i64::try_from(result.monitor_queries).unwrap_or(0);
    result.db_xacts_per_reply = stats::per_reply(xacts_before, xacts_after, own, sent);
    Ok(result)
}

/// Waits (at most 30 s) until every account is run by a node and every node runs some.
async fn spread(api: &Api, cluster: Cluster) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = api.get("/v1/nodes").await?;
        let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
        let held: usize = nodes
            .iter()
            .map(|n| n["accounts"].as_array().map_or(0, Vec::len))
            .sum();
        let busy = nodes
            .iter()
            .filter(|n| n["accounts"].as_array().is_some_and(|a| !a.is_empty()))
            .count();
        if nodes.len() == cluster.nodes
            && held == cluster.accounts
            && busy == cluster.nodes.min(cluster.accounts)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the accounts were not spread over the nodes: {v}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    server: &Server,
    db: &str,
    url: &str,
    apis: &[Api],
    accounts: usize,
    concurrency: usize,
    chats: usize,
    per_chat: usize,
    timeout: Duration,
) -> Result<P1Result> {
    let monitor = pg::monitor_pool(url).await?;
    let history_end = pg::last_position(&monitor).await?;
    let total = chats * per_chat;

    // Chats whose next message may be sent.
    let (tx, rx) = mpsc::unbounded_channel::<usize>();
    for i in 0..chats {
        tx.send(i)?;
    }
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let sent_per_chat: Arc<Vec<AtomicUsize>> =
        Arc::new((0..chats).map(|_| AtomicUsize::new(0)).collect());
    let failure: Arc<Mutex<Option<String>>> = Arc::default();
    let retries = Arc::new(AtomicU64::new(0));

    let sampler = server.sample_waits(db, Duration::from_millis(50));
    let cpu = stats::CpuMeter::start();
    let start = Instant::now();
    let start_utc = chrono::Utc::now();

    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let rx = rx.clone();
        let sent_per_chat = sent_per_chat.clone();
        let failure = failure.clone();
        let retries = retries.clone();
        let apis = apis.to_vec();
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let next = rx.lock().await.recv().await;
                let Some(i) = next else { break };
                let k = sent_per_chat[i].fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                let text = format!("Hello, are you open today? This is question {k} of chat {i}.");
                let api = &apis[(i + k) % apis.len()];
                let account = gateway::account_of(i, accounts);
                match api
                    .inject_into(&account, i, &format!("p1-{i}-{k}"), &text)
                    .await
                {
                    Ok(n) => {
                        retries.fetch_add(u64::from(n), Ordering::Relaxed);
                    }
                    Err(e) => {
                        *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                        break;
                    }
                }
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let workers = async {
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.await.unwrap_or_default());
        }
        all
    };

    let follower = async {
        let mut follow_queries = 0u64;
        let mut tx = Some(tx);
        let mut pos = history_end;
        let mut done = vec![0usize; chats];
        let mut settled = 0usize;
        let mut last_report = Instant::now();
        let deadline = start + timeout;
        let mut last_progress = Instant::now();
        while settled < total {
            if let Some(e) = failure.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                return Err(e);
            }
            if Instant::now() > deadline {
                break;
            }
            if last_progress.elapsed() > Duration::from_secs(30) {
                eprintln!("  P1: no reply settled for 30 s; giving up");
                break;
            }
            let pg::Followed {
                events,
                up_to,
                queries,
            } = pg::terminal_after(&monitor, pos)
                .await
                .map_err(|e| e.to_string())?;
            // One poll per FOLLOW_EVERY whether or not it found events: a follower that polls
            // again at once keeps a PostgreSQL backend busy and takes CPU from the gateway it
            // measures (2 cores here).
            if !events.is_empty() {
                last_progress = Instant::now();
            }
            tokio::time::sleep(pg::FOLLOW_EVERY).await;
            pos = up_to;
            follow_queries += queries;
            for (_, stream, _) in events {
                settled += 1;
                if let Some(i) = gateway::chat_index(&stream).filter(|i| *i < chats) {
                    done[i] += 1;
                    if done[i] < per_chat {
                        if let Some(tx) = &tx {
                            let _ = tx.send(i);
                        }
                    }
                }
            }
            if last_report.elapsed() >= Duration::from_secs(2) {
                eprintln!("  P1: {settled}/{total} replies settled");
                last_report = Instant::now();
            }
        }
        let observed = start.elapsed();
        tx.take();
        Ok((settled >= total, observed, follow_queries))
    };
    let (lats, followed) = tokio::join!(workers, follower);
    let (complete, observed, follow_queries) = followed?;
    if let Some(e) = failure.lock().unwrap_or_else(|p| p.into_inner()).clone() {
        return Err(e.into());
    }
    let cpu = cpu.finish();
    let waits = sampler.finish().await;
    let counts = pg::counts(&monitor).await?;
    monitor.close().await;

    let observed_secs = observed.as_secs_f64();
    let secs = counts
        .last_sent_at
        .map(|t| (t - start_utc).num_microseconds().unwrap_or(0) as f64 / 1e6)
        .filter(|s| *s > 0.0)
        .unwrap_or(observed_secs);
    Ok(P1Result {
        chats,
        per_chat,
        concurrency,
        complete,
        secs,
        observed_secs,
        replies_per_s: counts.sent as f64 / secs,
        inject: Latency::of(lats),
        waits,
        wal_syncs_per_reply: None,
        db_xacts_per_reply: None,
        // The follower's polls, the final counts and the starting position.
        monitor_queries: follow_queries + pg::COUNT_QUERIES + 1,
        inject_retries: retries.load(Ordering::Relaxed),
        backfill: None,
        cpu,
        counts,
    })
}
