//! The read-model checkpoints' table (ADR 0015): the newest checkpoint of the messages read model
//! loaded if it can be used, and written only over an older one; the body is the model as
//! Zstandard-compressed JSON.

use wagate_projections::messages::{MessagesModel, Retention};

use crate::store::{Store, StoreError};

/// The one checkpoint's name (the table has room for other read models).
const NAME: &str = "messages";
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
    let erased = crate::store::retention::erased_in_store(
        store,
        model.oldest_text_position(),
        model.position,
    )
    .await?;
    model.erase_reply_texts(&erased);
    Ok((Some(model), Found::Loaded(position)))
}

/// Zstandard level of the body: fast enough to stream through on both ends (docs/perf-history.md,
/// "Ninth session": 112 MB of JSON to 4.1 MB on a synthetic store; real texts compress less).
const LEVEL: i32 = 1;

/// The model as a checkpoint's body: JSON, compressed as it is written (no uncompressed copy).
pub fn encode(model: &MessagesModel) -> std::io::Result<Vec<u8>> {
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

/// Stores a checkpoint of a model folded up to `position` with `retention`, unless a newer one
/// of this format and retention is there; whether it was written.
pub async fn save(
    store: &Store,
    position: i64,
    retention: Retention,
    body: Vec<u8>,
) -> Result<bool, StoreError> {
    const SQL: &str =
        "INSERT INTO read_model_checkpoints (name, position, format, retention, body) \
        VALUES ($1, $2, $3, $4, $5) \
        ON CONFLICT (name) DO UPDATE SET position = excluded.position, format = excluded.format, \
        retention = excluded.retention, body = excluded.body, written_at = excluded.written_at \
        WHERE read_model_checkpoints.position <= excluded.position \
        OR read_model_checkpoints.format <> excluded.format \
        OR read_model_checkpoints.retention <> excluded.retention";
    let written: u64 = on_pool!(store, pool => sqlx::query(SQL)
        .bind(NAME)
        .bind(position)
        .bind(MessagesModel::CHECKPOINT_FORMAT)
        .bind(retention_key(retention))
        .bind(body)
        .execute(pool)
        .await?
        .rows_affected());
    Ok(written > 0)
}
