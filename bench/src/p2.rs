//! P2: N replies in flight. N chats get one message each, injected as fast as C concurrent
//! clients can, against a stub that answers after a fixed delay (2 s). Measured against the
//! targets: the time from the last inbound message's 202 to the last `AiReplySent` (its
//! `recorded_at`), and the peak RSS of this process (the gateway runs in-process, so it includes
//! the benchmark's own client; the stub runs in a child process and is not included). Also the
//! wall time from the first inject and the time to inject all N.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::gateway::{Api, Gateway};
use crate::pg::{self, Counts, Server, WaitSummary};
use crate::stats::{self, Latency};
use crate::stub::Stub;
use crate::Result;

#[derive(Debug, Clone)]
pub struct P2Result {
    pub replies: usize,
    pub concurrency: usize,
    pub model_delay: Duration,
    pub counts: Counts,
    pub complete: bool,
    /// First inject to the last `AiReplySent` (its `recorded_at`).
    pub wall_secs: f64,
    /// First inject to the moment the follower saw the last settled reply.
    pub observed_secs: f64,
    /// First inject to the last 202.
    pub inject_secs: f64,
    /// The last 202 to the last `AiReplySent` (its `recorded_at`): the target's measure.
    pub tail_secs: Option<f64>,
    pub inject: Latency,
    /// VmHWM after the run; `peak_reset` tells whether it was reset before P2 started.
    pub peak_rss_kb: Option<u64>,
    pub peak_reset: bool,
    pub rss_before_kb: Option<u64>,
    /// RSS once every reply settled (before the gateway stops).
    pub rss_end_kb: Option<u64>,
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
    /// CPU use from the first inject to the last 202 (the stub's included).
    pub inject_cpu: Option<stats::CpuUse>,
    /// Per reply: its message's commit to its `AiReplySent` (both `recorded_at`).
    pub reply_latency: Latency,
    /// The most replies seen injected but not yet settled at once.
    pub max_in_flight: usize,
}

pub async fn run(
    server: &Server,
    concurrency: usize,
    replies: usize,
    model_delay: Duration,
    timeout: Duration,
) -> Result<P2Result> {
    let (db, url) = server.create("p2").await?;
    let stub = Stub::spawn(model_delay).await?;
    let gw = Gateway::start(&url, concurrency).await?;
    let syncs_before = server.wal_syncs().await;
    let xacts_before = server.xact_commits(&db).await;
    let result = drive(
        server,
        &db,
        &url,
        &gw.api,
        &stub,
        concurrency,
        replies,
        model_delay,
        timeout,
    )
    .await;
    gw.stop().await;
    stub.stop().await;
    // Backends report their WAL statistics when they exit: read after the gateway's pool closed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let syncs_after = server.wal_syncs().await;
    let xacts_after = server.xact_commits(&db).await;
    let mut result = result?;
    let sent = result.counts.sent;
    result.wal_syncs_per_reply = stats::per_reply(syncs_before, syncs_after, 0, sent);
    // Minus the benchmark's own reads on this database (follower polls, final counts).
    let own = i64::try_from(result.monitor_queries).unwrap_or(0);
    result.db_xacts_per_reply = stats::per_reply(xacts_before, xacts_after, own, sent);
    Ok(result)
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    server: &Server,
    db: &str,
    url: &str,
    api: &Api,
    stub: &Stub,
    concurrency: usize,
    replies: usize,
    model_delay: Duration,
    timeout: Duration,
) -> Result<P2Result> {
    let model_timeout = u32::try_from(model_delay.as_secs() + 30)
        .unwrap_or(600)
        .min(600);
    api.configure(&stub.base, model_timeout).await?;
    let monitor = pg::monitor_pool(url).await?;

    let rss_before_kb = stats::rss_kb();
    let peak_reset = stats::reset_peak_rss();
    let sampler = server.sample_waits(db, Duration::from_millis(50));
    let next = Arc::new(AtomicUsize::new(0));
    let injected = Arc::new(AtomicUsize::new(0));
    let failure: Arc<Mutex<Option<String>>> = Arc::default();
    let retries = Arc::new(AtomicU64::new(0));
    // When the last 202 arrived (µs since the Unix epoch, the clock of `recorded_at`).
    let last_ack_us = Arc::new(AtomicI64::new(i64::MIN));
    let cpu = stats::CpuMeter::with_stub(stub.pid());
    let start = Instant::now();
    let start_utc = chrono::Utc::now();

    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (api, next, injected, failure, retries, last_ack_us) = (
            api.clone(),
            next.clone(),
            injected.clone(),
            failure.clone(),
            retries.clone(),
            last_ack_us.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= replies {
                    break;
                }
                let t = Instant::now();
                let text = format!("Hi! Do you deliver to my area? (chat {i})");
                match api.inject(i, &format!("p2-{i}"), &text).await {
                    Ok(n) => {
                        let now = chrono::Utc::now().timestamp_micros();
                        last_ack_us.fetch_max(now, Ordering::Relaxed);
                        retries.fetch_add(u64::from(n), Ordering::Relaxed);
                    }
                    Err(e) => {
                        *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                        break;
                    }
                }
                lat.push(t.elapsed());
                injected.fetch_add(1, Ordering::Relaxed);
            }
            lat
        }));
    }
    let injector = async {
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.await.unwrap_or_default());
        }
        (start.elapsed(), all, cpu.finish())
    };

    let follower = async {
        let mut follow_queries = 0u64;
        let mut pos = 0i64;
        let mut settled = 0usize;
        let mut max_in_flight = 0usize;
        let mut last_report = Instant::now();
        let deadline = start + timeout;
        // Give up early when nothing settles for this long after the last inject or settle.
        let stall = model_delay + Duration::from_secs(30);
        let mut last_progress = Instant::now();
        while settled < replies {
            if let Some(e) = failure.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                return Err(e);
            }
            if Instant::now() > deadline {
                break;
            }
            let all_injected = injected.load(Ordering::Relaxed) >= replies;
            if all_injected && last_progress.elapsed() > stall {
                eprintln!(
                    "  P2: no reply settled for {} s; giving up",
                    stall.as_secs()
                );
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
            if !all_injected {
                last_progress = Instant::now();
            }
            pos = up_to;
            follow_queries += queries;
            settled += events.len();
            max_in_flight =
                max_in_flight.max(injected.load(Ordering::Relaxed).saturating_sub(settled));
            if last_report.elapsed() >= Duration::from_secs(2) {
                eprintln!(
                    "  P2: {:>5.1} s: {}/{replies} injected, {settled} settled",
                    start.elapsed().as_secs_f64(),
                    injected.load(Ordering::Relaxed)
                );
                last_report = Instant::now();
            }
        }
        Ok((
            settled >= replies,
            start.elapsed(),
            max_in_flight,
            follow_queries,
        ))
    };
    let ((inject_time, lats, inject_cpu), followed) = tokio::join!(injector, follower);
    let peak_rss_kb = stats::peak_rss_kb();
    let rss_end_kb = stats::rss_kb();
    let (complete, observed, max_in_flight, follow_queries) = followed?;
    if let Some(e) = failure.lock().unwrap_or_else(|p| p.into_inner()).clone() {
        return Err(e.into());
    }
    let cpu = cpu.finish();
    let waits = sampler.finish().await;
    let counts = pg::counts(&monitor).await?;
    let reply_latency = Latency::of(pg::reply_latencies(&monitor).await?);
    monitor.close().await;

    let observed_secs = observed.as_secs_f64();
    let wall_secs = counts
        .last_sent_at
        .map(|t| (t - start_utc).num_microseconds().unwrap_or(0) as f64 / 1e6)
        .filter(|s| *s > 0.0)
        .unwrap_or(observed_secs);
    let last_ack_us = last_ack_us.load(Ordering::Relaxed);
    let tail_secs = counts
        .last_sent_at
        .filter(|_| last_ack_us != i64::MIN)
        .map(|t| (t.timestamp_micros() - last_ack_us) as f64 / 1e6);
    Ok(P2Result {
        replies,
        concurrency,
        model_delay,
        complete,
        wall_secs,
        observed_secs,
        inject_secs: inject_time.as_secs_f64(),
        tail_secs,
        inject: Latency::of(lats),
        peak_rss_kb,
        peak_reset,
        rss_before_kb,
        rss_end_kb,
        waits,
        wal_syncs_per_reply: None,
        db_xacts_per_reply: None,
        // `counts` and `reply_latencies`.
        monitor_queries: follow_queries + pg::COUNT_QUERIES + 1,
        inject_retries: retries.load(Ordering::Relaxed),
        cpu,
        inject_cpu,
        reply_latency,
        max_in_flight,
        counts,
    })
}
