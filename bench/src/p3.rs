//! P3: replay of a large history into every read model vs a raw scan of the events table, both
//! on the same PostgreSQL database in the same run; and webhook fan-out: deliveries per second
//! from committed events to a local receiver.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use secrecy::SecretString;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::Row;
use wagate::config::DatabaseConfig;
use wagate::store::replay::{self, Projection};
use wagate::store::Store;

use crate::gateway::{self, Gateway};
use crate::pg::Server;
use crate::Result;

pub struct ReplayResult {
    pub events: u64,
    pub generate_secs: f64,
    pub scan_secs: f64,
    pub replay_secs: f64,
    pub messages: usize,
    pub replies: usize,
}

impl ReplayResult {
    pub fn scan_rate(&self) -> f64 {
        self.events as f64 / self.scan_secs.max(1e-9)
    }
    pub fn replay_rate(&self) -> f64 {
        self.events as f64 / self.replay_secs.max(1e-9)
    }
}

/// Chats the synthetic history is spread over.
const CHATS: i64 = 1_000;

/// Events in one generated reply cycle.
const EVENTS_PER_CYCLE: i64 = 6;

/// A migrated store on the phase's database.
pub(crate) async fn migrated_store(url: &str) -> Result<Store> {
    let store = Store::connect(&DatabaseConfig::Postgres {
        url: SecretString::from(url.to_owned()),
    })
    .await?;
    store.migrate().await?;
    Ok(store)
}

/// Writes `cycles` reply cycles ([`EVENTS_PER_CYCLE`] events each: received, requested, generated, typing, sent,
/// reply sent) round-robin over `chats` chats (chat `i % chats`, the benchmark's chat numbering),
/// with payloads shaped as the gateway writes them.
pub(crate) async fn generate(url: &str, cycles: i64, chats: i64) -> Result<()> {
    let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
    const CHUNK: i64 = 20_000;
    let mut start = 0;
    while start < cycles {
        let end = (start + CHUNK).min(cycles);
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             SELECT 'chat', 'bench/4917' || lpad((i % $3)::text, 8, '0') || '@s.whatsapp.net', \
                    (i / $3) * 6 + k + 1, t, '1', \
                    CASE k \
                      WHEN 0 THEN json_build_object('MessageReceived', json_build_object('message_id', 'm' || i, 'from', '4917' || lpad((i % $3)::text, 8, '0'), 'text', 'Hello, do you have the blue one in size 42? message ' || i, 'from_me', false, 'at', '2026-11-25T10:00:00Z')) \
                      WHEN 1 THEN json_build_object('AiReplyRequested', json_build_object('reply_id', 'r' || i, 'trigger_message_id', 'm' || i)) \
                      WHEN 2 THEN json_build_object('AiReplyGenerated', json_build_object('reply_id', 'r' || i, 'text', 'Yes, the blue one is in stock in size 42. Shall I reserve it for you?', 'model', 'stub-model', 'usage', json_build_object('prompt_tokens', 120, 'completion_tokens', 20, 'total_tokens', 140), 'latency_ms', 350)) \
                      WHEN 3 THEN json_build_object('TypingIndicated', json_build_object('reply_id', 'r' || i, 'at', '2026-11-25T10:00:01Z')) \
                      WHEN 4 THEN json_build_object('MessageSent', json_build_object('message_id', 'o' || i, 'text', 'Yes, the blue one is in stock in size 42. Shall I reserve it for you?', 'source', 'ai', 'ai_reply_id', 'r' || i, 'at', '2026-11-25T10:00:02Z')) \
                      ELSE json_build_object('AiReplySent', json_build_object('reply_id', 'r' || i, 'message_id', 'o' || i)) \
                    END, \
                    '{\"actor\":\"system\"}'::json \
             FROM generate_series($1::bigint, $2::bigint - 1) AS i \
             CROSS JOIN (VALUES (0, 'MessageReceived'), (1, 'AiReplyRequested'), (2, 'AiReplyGenerated'), \
                                (3, 'TypingIndicated'), (4, 'MessageSent'), (5, 'AiReplySent')) AS e(k, t) \
             ORDER BY i, k",
        )
        .bind(start)
        .bind(end)
        .bind(chats)
        .execute(&pool)
        .await?;
        start = end;
    }
    sqlx::query("ANALYZE events").execute(&pool).await?;
    pool.close().await;
    Ok(())
}

/// The raw rate: every column of every event, in position order, decoded as text (what replay
/// must read at least), in batches of the same size as replay's.
async fn scan(url: &str) -> Result<(u64, f64)> {
    let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
    let started = Instant::now();
    let (mut after, mut n, mut bytes) = (0i64, 0u64, 0usize);
    loop {
        let rows = sqlx::query(
            "SELECT position, aggregate_type, aggregate_id, sequence, event_type, event_version, \
             payload::text AS payload, metadata::text AS metadata, recorded_at \
             FROM events WHERE position > $1 ORDER BY position LIMIT 5000",
        )
        .bind(after)
        .fetch_all(&pool)
        .await?;
        for r in &rows {
            let p: String = r.try_get("payload")?;
            bytes += p.len();
        }
        n += rows.len() as u64;
        match rows.last() {
            Some(last) if rows.len() == 5000 => after = last.try_get("position")?,
            _ => break,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    std::hint::black_box(bytes);
    pool.close().await;
    Ok((n, secs))
}

pub async fn replay(server: &Server, events: u64) -> Result<ReplayResult> {
    let (_, url) = server.create("p3").await?;
    let store = migrated_store(&url).await?;
    let cycles = i64::try_from(events.div_ceil(EVENTS_PER_CYCLE as u64)).unwrap_or(i64::MAX);
    let t = Instant::now();
    generate(&url, cycles, CHATS).await?;
    let generate_secs = t.elapsed().as_secs_f64();
    // Warm the cache the same way for both: one scan first, not timed.
    scan(&url).await?;
    let (scanned, scan_secs) = scan(&url).await?;
    let report = replay::replay(
        &store,
        None,
        Projection::All,
        wagate::config::DEFAULT_READ_MODEL,
        false,
    )
    .await?;
    store.close().await;
    if report.events != scanned {
        return Err(format!(
            "replay folded {} events but the scan read {scanned}",
            report.events
        )
        .into());
    }
    let m = report.messages.as_ref();
    Ok(ReplayResult {
        events: scanned,
        generate_secs,
        scan_secs,
        replay_secs: report.elapsed.as_secs_f64(),
        messages: m.map_or(0, |m| m.message_count()),
        replies: m.map_or(0, |m| m.ai_log_rows_total() as usize),
    })
}

pub struct FanoutResult {
    pub deliveries: u64,
    pub secs: f64,
    pub webhooks: usize,
}

impl FanoutResult {
    pub fn per_sec(&self) -> f64 {
        self.deliveries as f64 / self.secs.max(1e-9)
    }
}

/// `events` inbound messages committed at once, `webhooks` subscriptions to a local receiver
/// that answers 204 at once: time from the commit to the last delivery received.
pub async fn fanout(server: &Server, events: u64, webhooks: usize) -> Result<FanoutResult> {
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let app = Router::new().route(
        "/hook",
        post(move || {
            let c = counter.clone();
            async move {
                c.fetch_add(1, Ordering::Relaxed);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let rx_addr = listener.local_addr()?;
    let rx = tokio::spawn(async move { axum::serve(listener, app).await });

    let (_, url) = server.create("fanout").await?;
    let gw = Gateway::start(&url, 16).await?;
    for _ in 0..webhooks {
        let (status, text) = gw
            .api
            .post(
                "/v1/webhooks",
                json!({"url": format!("http://{rx_addr}/hook"), "events": ["message.received"]}),
            )
            .await?;
        if status != 201 {
            return Err(format!("POST /v1/webhooks: {status} {text}").into());
        }
    }
    // The history grows by `events` inbound messages in one transaction (as if many chats
    // wrote at once); the gateway folds and fans them out on its own.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await?;
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         SELECT 'chat', $2 || '/4917' || lpad(i::text, 8, '0') || '@s.whatsapp.net', 1, 'MessageReceived', '1', \
                json_build_object('MessageReceived', json_build_object('message_id', 'f' || i, 'from', '4917', \
                  'text', 'hello', 'from_me', false, 'at', '2026-11-25T10:00:00Z')), '{\"actor\":\"system\"}'::json \
         FROM generate_series(0, $1::bigint - 1) AS i",
    )
    .bind(i64::try_from(events).unwrap_or(i64::MAX))
    .bind(gateway::ACCOUNT)
    .execute(&pool)
    .await?;
    let want = events * webhooks as u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    while received.load(Ordering::Relaxed) < want {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {want} deliveries arrived within 600 s",
                received.load(Ordering::Relaxed)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    pool.close().await;
    gw.stop().await;
    rx.abort();
    Ok(FanoutResult {
        deliveries: want,
        secs,
        webhooks,
    })
}
