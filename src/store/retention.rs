//! The AI log's text retention in the store (ADR 0014): the one statement that changes committed
//! events (a reply's text becomes `""`), and the look-up of what it erased, for every process
//! sharing the store and for checkpoint loads (ADR 0015). The schedule lives in
//! `app::retention`.

use chrono::Utc;
use sqlx::Row;

use crate::store::{Store, StoreError};

/// Texts erased per statement.
pub const BATCH: i64 = 1_000;

/// Reply ids whose texts the AI-log retention erased from the store (whichever process did),
/// among the `AiReplyGenerated` events from position `from` (the oldest row holding a text in a
/// read model, `None`: no row does) up to the highest position it ever erased, at most `upto`
/// (the model's position). In steady state nothing is that old and nothing is read.
pub async fn erased_in_store(
    store: &Store,
    from: Option<i64>,
    upto: i64,
) -> Result<Vec<String>, StoreError> {
    let Some(from) = from else {
        return Ok(vec![]);
    };
    const MARK: &str = "SELECT upto_position FROM ai_log_erasures WHERE id = 1";
    let mark: Option<i64> =
        on_pool!(store, pool => sqlx::query_scalar(MARK).fetch_optional(pool).await?);
    let upto = mark.unwrap_or(0).min(upto);
    if upto < from {
        return Ok(vec![]);
    }
    const PG: &str = "SELECT payload->'AiReplyGenerated'->>'reply_id' FROM events \
        WHERE event_type = 'AiReplyGenerated' AND position >= $1 AND position <= $2 \
        AND payload->'AiReplyGenerated'->>'text' = ''";
    const SQLITE: &str = "SELECT json_extract(payload, '$.AiReplyGenerated.reply_id') FROM events \
        WHERE event_type = 'AiReplyGenerated' AND position >= $1 AND position <= $2 \
        AND json_extract(payload, '$.AiReplyGenerated.text') = ''";
    let sql = match store {
        Store::Postgres(_) => PG,
        Store::Sqlite(_) => SQLITE,
    };
    let ids: Vec<String> = on_pool!(store, pool => sqlx::query_scalar(sql)
        .bind(from)
        .bind(upto)
        .fetch_all(pool)
        .await?);
    Ok(ids)
}

/// One statement: up to `BATCH` texts erased after position `after`; the reply ids and the
/// highest position erased.
pub async fn erase_batch(
    store: &Store,
    cutoff: chrono::DateTime<Utc>,
    after: i64,
) -> Result<(Vec<String>, i64), StoreError> {
    const PG: &str = "UPDATE events \
        SET payload = jsonb_set(payload::jsonb, '{AiReplyGenerated,text}', '\"\"')::json \
        WHERE position IN (SELECT position FROM events WHERE event_type = 'AiReplyGenerated' \
        AND position > $3 AND recorded_at < CAST($1 AS timestamptz) \
        AND payload->'AiReplyGenerated'->>'text' <> '' \
        ORDER BY position LIMIT $2) \
        RETURNING position, payload->'AiReplyGenerated'->>'reply_id' AS reply_id";
    const SQLITE: &str = "UPDATE events \
        SET payload = json_set(payload, '$.AiReplyGenerated.text', '') \
        WHERE position IN (SELECT position FROM events WHERE event_type = 'AiReplyGenerated' \
        AND position > $3 AND recorded_at < $1 \
        AND json_extract(payload, '$.AiReplyGenerated.text') <> '' ORDER BY position LIMIT $2) \
        RETURNING position, json_extract(payload, '$.AiReplyGenerated.reply_id') AS reply_id";
    // In the erasure's transaction: the highest position erased, so a start from an older
    // read-model checkpoint erases these texts in memory too (ADR 0015).
    const MARK_PG: &str = "INSERT INTO ai_log_erasures (id, upto_position) VALUES (1, $1) \
        ON CONFLICT (id) DO UPDATE \
        SET upto_position = GREATEST(ai_log_erasures.upto_position, excluded.upto_position)";
    const MARK_SQLITE: &str = "INSERT INTO ai_log_erasures (id, upto_position) VALUES (1, $1) \
        ON CONFLICT (id) DO UPDATE \
        SET upto_position = MAX(ai_log_erasures.upto_position, excluded.upto_position)";
    let (erase, mark) = match store {
        Store::Postgres(_) => (PG, MARK_PG),
        Store::Sqlite(_) => (SQLITE, MARK_SQLITE),
    };
    // As text in SQLite's time format, which PostgreSQL reads as a time too.
    let cutoff = cutoff.format(crate::store::SQLITE_TIME).to_string();
    let rows: Vec<(i64, String)> = on_pool!(store, pool => {
        let mut tx = pool.begin().await?;
        let rows = sqlx::query(erase)
            .bind(&cutoff)
            .bind(BATCH)
            .bind(after)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("position")?, r.try_get("reply_id")?)))
            .collect::<Result<Vec<(i64, String)>, sqlx::Error>>()?;
        if let Some(last) = rows.iter().map(|(p, _)| *p).max() {
            sqlx::query(mark).bind(last).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        rows
    });
    let last = rows.iter().map(|(p, _)| *p).max().unwrap_or(after);
    Ok((rows.into_iter().map(|(_, id)| id).collect(), last))
}
