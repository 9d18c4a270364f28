//! Writing checkpoints of the messages read model (ADR 0015): at stop, every
//! `WAGATE_READ_MODEL_CHECKPOINT_EVERY` events, and after the AI-log retention erased texts.
//! Loading one, and the table, are `store::checkpoint`'s. The model as folded up to a position is
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

use crate::app::App;
use crate::store::checkpoint::encode;
use crate::store::StoreError;

/// How often the writer looks at how far the read models folded.
const LOOK_EVERY: Duration = Duration::from_secs(10);

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
    let bytes = body.len();
    let written = crate::store::checkpoint::save(&app.store, position, retention, body).await?;
    Ok(written.then(|| Written {
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
