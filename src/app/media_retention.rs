//! The media's retention (ADR 0028): a periodic purge of the `media` table, so that no bytes are
//! kept forever.
//!
//! By default (`WAGATE_MEDIA_KEEP_SECONDS` = 0) a reply deletes its trigger's bytes once it
//! settled, unless another message still waits for the same content; with a keep time the bytes
//! stay that long after a message last brought them. The purge deletes what is older than the
//! keep time and no message waits for, and gives up waiting for replies that never settled
//! (superseded in their debounce window, a worker that stopped, a message that failed to commit)
//! after [`unsettled_bound`]; a reply that then looks for the bytes ends `media_failed`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::app::App;
use crate::store::media::{self, Purged};
use crate::store::StoreError;

/// The least time a message's bytes are kept for a reply that has not settled.
pub const UNSETTLED_AT_LEAST: Duration = Duration::from_secs(3600);
/// The longest wait between two passes.
const EVERY: Duration = Duration::from_secs(3600);

/// How long the bytes wait for a reply that has not settled: the keep time, at least an hour.
pub fn unsettled_bound(keep: Duration) -> Duration {
    keep.max(UNSETTLED_AT_LEAST)
}

/// How often the purge runs: a quarter of the shortest time it enforces, from 1 s to an hour.
pub fn every(keep: Duration) -> Duration {
    let shortest = if keep.is_zero() {
        unsettled_bound(keep)
    } else {
        keep
    };
    (shortest / 4).clamp(Duration::from_secs(1), EVERY)
}

/// One pass with the app's keep time.
pub async fn purge(app: &App) -> Result<Purged, StoreError> {
    let keep = app.config.media_keep;
    media::purge(&app.store, keep, unsettled_bound(keep)).await
}

/// Runs the purge now and then every [`every`], while the app lives. Every process sharing a
/// PostgreSQL store runs it; one pass at a time does the work (the store's advisory lock).
pub fn start(app: &Arc<App>) -> tokio::task::JoinHandle<()> {
    let weak: Weak<App> = Arc::downgrade(app);
    let every = every(app.config.media_keep);
    tokio::spawn(async move {
        loop {
            let Some(app) = weak.upgrade() else { return };
            match purge(&app).await {
                Ok(Purged {
                    uses: 0, media: 0, ..
                }) => {}
                Ok(p) => {
                    tracing::info!(
                        media = p.media,
                        unsettled_given_up = p.uses,
                        "media retention: bytes purged"
                    );
                }
                Err(e) => {
                    app.note_store_error();
                    tracing::warn!(error = %e, "media retention failed; will retry");
                }
            }
            drop(app);
            tokio::time::sleep(every).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_schedule() {
        let h = Duration::from_secs(3600);
        assert_eq!(unsettled_bound(Duration::ZERO), h);
        assert_eq!(unsettled_bound(Duration::from_secs(5)), h);
        assert_eq!(unsettled_bound(2 * h), 2 * h);
        assert_eq!(every(Duration::ZERO), h / 4);
        assert_eq!(every(Duration::from_secs(1)), Duration::from_secs(1));
        assert_eq!(every(Duration::from_secs(60)), Duration::from_secs(15));
        assert_eq!(every(30 * 24 * h), h);
    }
}
