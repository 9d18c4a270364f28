//! The AI log's retention (security checklist item 15, ADR 0014): a reply's text is erased from
//! its `AiReplyGenerated` event once `WAGATE_AI_LOG_BODY_RETENTION` has passed since the model
//! answered. The row stays (status, model, usage, latency, reason); the message sent to the
//! customer stays in the chat's messages, the conversation's record.
//!
//! This is the one change the gateway makes to a committed event: the text becomes `""`, every
//! other field is kept, and the read models fold an empty text as no text, so a replay after
//! the erasure answers as the running gateway does.

use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::Utc;
use sqlx::Row;

use crate::app::App;
use crate::store::{on_pool, Store, StoreError};

/// Texts erased per statement.
const BATCH: i64 = 1_000;
/// The longest wait between two passes.
const EVERY: Duration = Duration::from_secs(3600);
/// One pass in this many reads every reply from the start of the history; the others go on
/// from the last reply erased.
const FULL_EVERY: u32 = 24;

/// Erases the texts of replies generated before `cutoff` and not erased yet, after position
/// `after`, in the store and then in the read model; how many. `after` moves to the highest
/// position erased.
///
/// Every reply at or below that position was generated before `cutoff` (positions and
/// `recorded_at` grow together: both are taken at commit, under the store's position lock), so
/// it has been looked at: the cursor keeps a pass linear in the events it reads, and a pass that
/// goes on from the last one reads only replies newer than what that one erased. A clock stepped
/// back breaks that order; the full passes ([`FULL_EVERY`]) catch what it hid.
pub async fn erase_before(
    app: &App,
    cutoff: chrono::DateTime<Utc>,
    after: &mut i64,
) -> Result<usize, StoreError> {
    let mut total = 0;
    loop {
        let (ids, last) = erase_batch(&app.store, cutoff, *after).await?;
        *after = (*after).max(last);
        if !ids.is_empty() {
            app.messages_mut().erase_reply_texts(&ids);
        }
        total += ids.len();
        if (ids.len() as i64) < BATCH {
            return Ok(total);
        }
    }
}

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

/// Erases from the read model the texts the store no longer has: erased by another process
/// sharing the store, or folded in after this process erased them (a lagging fold); how many.
pub async fn reconcile(app: &App) -> Result<usize, StoreError> {
    let (from, upto) = {
        let messages = app.messages();
        (messages.oldest_text_position(), messages.position)
    };
    let ids = erased_in_store(&app.store, from, upto).await?;
    if !ids.is_empty() {
        app.messages_mut().erase_reply_texts(&ids);
    }
    Ok(ids.len())
}

/// One statement: up to `BATCH` texts erased after position `after`; the reply ids and the
/// highest position erased.
async fn erase_batch(
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

/// Runs the erasure now and then every `retention / 4` (at most hourly), while the app lives.
/// The first pass, and every [`FULL_EVERY`]th, reads every reply from the start of the history;
/// the others go on from the last reply erased.
pub fn start(app: &Arc<App>, retention: Duration) -> tokio::task::JoinHandle<()> {
    let weak: Weak<App> = Arc::downgrade(app);
    let every = (retention / 4).clamp(Duration::from_secs(1), EVERY);
    tokio::spawn(async move {
        let mut after = 0;
        let mut pass: u32 = 0;
        loop {
            if pass.is_multiple_of(FULL_EVERY) {
                after = 0;
            }
            pass = pass.wrapping_add(1);
            let Some(app) = weak.upgrade() else { return };
            let cutoff = chrono::Duration::from_std(retention)
                .ok()
                .and_then(|d| Utc::now().checked_sub_signed(d));
            let erased = match cutoff {
                Some(cutoff) => erase_before(&app, cutoff, &mut after).await,
                // Longer than the calendar: nothing is that old.
                None => Ok(0),
            };
            let erased = match erased {
                Ok(n) => reconcile(&app).await.map(|elsewhere| (n, elsewhere)),
                Err(e) => Err(e),
            };
            match erased {
                Ok((0, 0)) => {}
                Ok((n, elsewhere)) => {
                    tracing::info!(
                        replies = n,
                        erased_elsewhere = elsewhere,
                        "AI log retention: reply texts erased"
                    );
                    // The stored read-model checkpoint may hold those texts: replace it with the
                    // model as it is now, without them (ADR 0015).
                    if app.config.checkpoint_every > 0 {
                        crate::checkpoint::write_logged(&app, true).await;
                    }
                }
                Err(e) => {
                    app.note_store_error();
                    tracing::warn!(error = %e, "AI log retention failed; will retry");
                }
            }
            drop(app);
            tokio::time::sleep(every).await;
        }
    })
}
