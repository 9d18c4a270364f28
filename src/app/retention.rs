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

use crate::app::App;
use crate::store::retention::{erase_batch, erased_in_store, BATCH};
use crate::store::StoreError;

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
                        crate::app::checkpoint::write_logged(&app, true).await;
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
