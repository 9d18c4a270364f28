//! The baseline: what this PostgreSQL does with plain single-row INSERTs into a table shaped like
//! wagate's `events` (same columns, primary key and indexes, a ~300-byte JSON payload), each its
//! own transaction (autocommit), from C connections at once. No advisory-lock trigger: the
//! position comes from a plain sequence default, so concurrent commits can share a WAL flush
//! (group commit).

use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;

use crate::pg::Server;
use crate::Result;

const DDL: &str = "
CREATE SEQUENCE bench_events_position_seq AS bigint;
CREATE TABLE bench_events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    position       bigint                       NOT NULL DEFAULT nextval('bench_events_position_seq'),
    recorded_at    timestamptz                  NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE UNIQUE INDEX bench_events_by_position ON bench_events (position);
CREATE INDEX bench_events_by_recorded_at ON bench_events (recorded_at);
CREATE INDEX bench_events_chat_message_id
    ON bench_events (aggregate_id, json_extract_path_text(payload, event_type, 'message_id'))
    WHERE aggregate_type = 'chat'
      AND event_type IN ('MessageReceived', 'MessageSent', 'MessageStatusUpdated');
";

const INSERT: &str = "INSERT INTO bench_events \
    (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
    VALUES ('chat', $1, $2, 'MessageReceived', '1', $3::json, $4::json)";

#[derive(Debug, Clone)]
pub struct BaselineResult {
    pub concurrency: usize,
    pub rows: u64,
    pub secs: f64,
    pub rows_per_s: f64,
    pub payload_bytes: usize,
    pub wal_syncs_per_row: Option<f64>,
}

/// A MessageReceived-like payload of about 300 bytes.
pub fn payload(worker: usize, seq: u64) -> String {
    let text = "Hello! Are you open today, and do you still have the blue one in size M? \
                I would like to pick it up this afternoon if possible. Thanks a lot!";
    serde_json::json!({"MessageReceived": {
        "message_id": format!("wamid.HBgMNDkxNzAwMDAwMDAwFQIAEhgg{worker:04}{seq:012}"),
        "from": format!("4917{worker:08}"),
        "text": text,
        "from_me": false,
        "at": "2025-01-01T12:00:00.000Z"
    }})
    .to_string()
}

fn metadata(worker: usize, seq: u64) -> String {
    serde_json::json!({
        "actor": "admin:bench",
        "request_id": format!("0196a1b2-c3d4-7e5f-8a9b-{worker:04}{seq:08}"),
        "time": "2025-01-01T12:00:00.000Z"
    })
    .to_string()
}

pub async fn run(server: &Server, concurrency: usize, secs: f64) -> Result<BaselineResult> {
    let (_, url) = server.create("base").await?;
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(concurrency + 1).unwrap_or(u32::MAX))
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url)
        .await?;
    sqlx::raw_sql(DDL).execute(&pool).await?;

    let syncs_before = server.wal_syncs().await;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = pool.acquire().await?;
            let stream = format!("bench/4917{w:08}@s.whatsapp.net");
            let mut seq: u64 = 0;
            while Instant::now() < deadline {
                seq += 1;
                sqlx::query(INSERT)
                    .bind(&stream)
                    .bind(i64::try_from(seq).unwrap_or(i64::MAX))
                    .bind(payload(w, seq))
                    .bind(metadata(w, seq))
                    .execute(&mut *conn)
                    .await?;
            }
            Ok::<u64, sqlx::Error>(seq)
        }));
    }
    let mut rows = 0;
    for t in tasks {
        rows += t.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let counted: i64 = sqlx::query_scalar("SELECT count(*) FROM bench_events")
        .fetch_one(&pool)
        .await?;
    // Backends report their WAL statistics when they exit.
    pool.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let syncs_after = server.wal_syncs().await;
    if u64::try_from(counted).ok() != Some(rows) {
        return Err(format!("baseline: inserted {rows} rows but the table holds {counted}").into());
    }
    Ok(BaselineResult {
        concurrency,
        rows,
        secs: elapsed,
        rows_per_s: rows as f64 / elapsed,
        payload_bytes: payload(0, 1).len(),
        wal_syncs_per_row: match (syncs_before, syncs_after) {
            (Some(a), Some(b)) if rows > 0 => Some((b - a) as f64 / rows as f64),
            _ => None,
        },
    })
}
