//! Checkpoints of the messages read model (ADR 0015): the model as folded up to a position,
//! stored in the store itself, so a start folds only the events after it instead of the whole
//! history. The config read model needs none: its own history is read through its index
//! (`events_config_history`).
//!
//! A checkpoint is a cache of the events, never the truth. One whose format or retention is not
//! the running gateway's, whose position the history does not reach, or that does not read
//! back, is ignored and the start folds everything; deleting the table's rows is always safe.
//! Texts the AI-log retention erased after a checkpoint was written are erased again when it is
//! loaded (`ai_log_erasures`, written in the erasure's own transaction).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use wagate_projections::messages::{MessagesModel, Retention};

use crate::app::App;
use crate::store::{on_pool, Store, StoreError};

/// The one checkpoint's name (the table has room for other read models).
const NAME: &str = "messages";
/// How often the writer looks at how far the read models folded.
const LOOK_EVERY: Duration = Duration::from_secs(10);

/// How a checkpoint records the retention it was folded with: a model folded with another
/// retention holds other messages and rows.
fn retention_key(r: Retention) -> String {
    format!("messages={},ai_log={}", r.messages, r.ai_log)
}

/// What a start found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// No checkpoint (or checkpoints are off).
    None,
    /// A checkpoint that cannot be used, and why.
    Ignored(&'static str),
    /// Loaded, at this position.
    Loaded(i64),
}

/// The newest checkpoint, if it can be used with `retention` on a history whose newest position
/// is `head`, with the texts erased since it was written erased in it too.
pub async fn load(
    store: &Store,
    retention: Retention,
    head: i64,
) -> Result<(Option<MessagesModel>, Found), StoreError> {
    const SQL: &str =
        "SELECT position, format, retention, body FROM read_model_checkpoints WHERE name = $1";
    let row: Option<(i64, i32, String, Vec<u8>)> = on_pool!(store, pool => sqlx::query_as(SQL)
        .bind(NAME)
        .fetch_optional(pool)
        .await?);
    let Some((position, format, kept, body)) = row else {
        return Ok((None, Found::None));
    };
    if format != MessagesModel::CHECKPOINT_FORMAT {
        return Ok((None, Found::Ignored("written by another version")));
    }
    if kept != retention_key(retention) {
        return Ok((
            None,
            Found::Ignored("written with other read-model settings"),
        ));
    }
    if position > head {
        return Ok((None, Found::Ignored("newer than the history")));
    }
    let parsed = tokio::task::spawn_blocking(move || decode(&body))
        .await
        .map_err(|e| StoreError::Other(format!("reading the checkpoint failed: {e}")))?;
    let mut model = match parsed {
        Ok(m) if m.position == position && m.retention() == retention => m,
        Ok(_) => return Ok((None, Found::Ignored("its model does not match its row"))),
        Err(e) => {
            tracing::warn!(error = %e, "the read-model checkpoint does not read back");
            return Ok((None, Found::Ignored("it does not read back")));
        }
    };
    let erased =
        crate::body_retention::erased_in_store(store, model.oldest_text_position(), model.position)
            .await?;
    model.erase_reply_texts(&erased);
    Ok((Some(model), Found::Loaded(position)))
}

/// Zstandard level of the body: fast enough to stream through on both ends (docs/perf-history.md,
/// "Ninth session": 112 MB of JSON to 4.1 MB on a synthetic store; real texts compress less).
const LEVEL: i32 = 1;

/// The model as a checkpoint's body: JSON, compressed as it is written (no uncompressed copy).
fn encode(model: &MessagesModel) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), LEVEL)?;
    {
        let mut out = std::io::BufWriter::with_capacity(1 << 16, &mut encoder);
        serde_json::to_writer(&mut out, model)?;
        out.flush()?;
    }
    encoder.finish()
}

/// A checkpoint's body back into the model, decompressed as it is read.
fn decode(body: &[u8]) -> Result<MessagesModel, String> {
    let decoder = zstd::stream::Decoder::new(body).map_err(|e| e.to_string())?;
    serde_json::from_reader(std::io::BufReader::with_capacity(1 << 16, decoder))
        .map_err(|e| e.to_string())
}

/// What one write did.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub position: i64,
    pub bytes: usize,
    pub elapsed: Duration,
}

/// Writes the messages read model as folded now, unless a newer checkpoint is there, or
/// (without `force`) this process already loaded or wrote one at its position (`None` then).
/// `force` rewrites one at the same position: after the AI-log retention erased texts from the
/// model, so the stored checkpoint does not keep them.
pub async fn write(app: &Arc<App>, force: bool) -> Result<Option<Written>, StoreError> {
    let started = Instant::now();
    if !force && app.checkpoint_stats.position() >= app.messages().position {
        return Ok(None);
    }
    let serializing = app.clone();
    // Serializing a large model takes a while (see docs/perf-history.md, "Ninth session"): off
    // the async workers, under the model's read lock (folds wait meanwhile, readers do not).
    let (position, retention, body) = tokio::task::spawn_blocking(move || {
        let model = serializing.messages();
        encode(&model).map(|body| (model.position, model.retention(), body))
    })
    .await
    .map_err(|e| StoreError::Other(format!("serializing the checkpoint failed: {e}")))?
    .map_err(|e| StoreError::Other(format!("serializing the checkpoint failed: {e}")))?;
    const SQL: &str =
        "INSERT INTO read_model_checkpoints (name, position, format, retention, body) \
        VALUES ($1, $2, $3, $4, $5) \
        ON CONFLICT (name) DO UPDATE SET position = excluded.position, format = excluded.format, \
        retention = excluded.retention, body = excluded.body, written_at = excluded.written_at \
        WHERE read_model_checkpoints.position <= excluded.position \
        OR read_model_checkpoints.format <> excluded.format \
        OR read_model_checkpoints.retention <> excluded.retention";
    let bytes = body.len();
    let written = on_pool!(&app.store, pool => sqlx::query(SQL)
        .bind(NAME)
        .bind(position)
        .bind(MessagesModel::CHECKPOINT_FORMAT)
        .bind(retention_key(retention))
        .bind(body)
        .execute(pool)
        .await?
        .rows_affected());
    Ok((written > 0).then(|| Written {
        position,
        bytes,
        elapsed: started.elapsed(),
    }))
}

/// Writes a checkpoint (see [`write`]) and logs what happened; the position written, if any.
pub async fn write_logged(app: &Arc<App>, force: bool) -> Option<i64> {
    match write(app, force).await {
        Ok(Some(w)) => {
            app.checkpoint_stats.record(w.position);
            tracing::info!(
                position = w.position,
                bytes = w.bytes,
                ms = w.elapsed.as_millis() as u64,
                "read-model checkpoint written"
            );
            Some(w.position)
        }
        Ok(None) => None,
        Err(e) => {
            app.note_store_error();
            tracing::warn!(error = %e, "cannot write the read-model checkpoint; will retry");
            None
        }
    }
}

/// Writes a checkpoint whenever `every` events were folded since the last one, while the app
/// lives.
pub fn start(app: &Arc<App>, every: u64) -> tokio::task::JoinHandle<()> {
    let weak: Weak<App> = Arc::downgrade(app);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(LOOK_EVERY).await;
            let Some(app) = weak.upgrade() else { return };
            let since = app.checkpoint_stats.position();
            if app.folded().saturating_sub(since) >= i64::try_from(every).unwrap_or(i64::MAX) {
                write_logged(&app, false).await;
            }
        }
    })
}

/// The checkpoint's position as last loaded or written (`/metrics`, the writer's pace).
#[derive(Debug, Default)]
pub struct CheckpointStats {
    position: std::sync::atomic::AtomicI64,
}

impl CheckpointStats {
    pub fn record(&self, position: i64) {
        self.position
            .fetch_max(position, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn position(&self) -> i64 {
        self.position.load(std::sync::atomic::Ordering::Relaxed)
    }
}
