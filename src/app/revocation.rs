//! Revoked admin sessions (docs/adr/0017-token-revocation.md): a logout writes the token's `jti`
//! and expiry to the `revoked_tokens` table, which every gateway on the store reads.
//!
//! Verifying a token does not query the database each time: each process keeps the live
//! revocations in memory and reloads them when its copy is older than [`REFRESH_EVERY`] (the
//! first request after that reloads, the others wait for it). So a revocation made by this process
//! applies at once, and one made by another process within [`REFRESH_EVERY`]. When the reload
//! fails (the store is down), verification fails closed: the caller answers 503. Rows whose token
//! has expired are purged every [`PURGE_EVERY`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use chrono::Utc;
use uuid::Uuid;

use crate::store::{Store, StoreError};

/// How stale this process's copy of another process's revocations may be.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// How often expired rows are deleted.
pub const PURGE_EVERY: Duration = Duration::from_secs(600);
/// Rows are kept this long past their token's `exp` (the JWT leeway is 30 s).
const PURGE_GRACE_SECS: i64 = 120;

/// This process's view of `revoked_tokens`.
#[derive(Debug)]
pub struct RevokedTokens {
    /// jti → `exp` (Unix seconds) of every revoked, unexpired token.
    cache: RwLock<HashMap<Uuid, i64>>,
    /// When the cache was last loaded, in milliseconds since `epoch` + 1 (0: never).
    loaded_at: AtomicU64,
    epoch: Instant,
    /// Serializes reloads and holds the time of the last purge.
    reload: tokio::sync::Mutex<Option<Instant>>,
}

impl Default for RevokedTokens {
    fn default() -> Self {
        Self {
            cache: RwLock::default(),
            loaded_at: AtomicU64::new(0),
            epoch: Instant::now(),
            reload: tokio::sync::Mutex::new(None),
        }
    }
}

impl RevokedTokens {
    fn millis_now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    fn fresh(&self) -> bool {
        let at = self.loaded_at.load(Ordering::Acquire);
        at != 0 && self.millis_now().saturating_sub(at) < REFRESH_EVERY.as_millis() as u64
    }

    fn cached(&self, jti: &Uuid) -> bool {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(jti)
    }

    /// Whether the session `jti` was revoked (here at once, elsewhere within [`REFRESH_EVERY`]).
    pub async fn is_revoked(&self, store: &Store, jti: Uuid) -> Result<bool, StoreError> {
        if self.cached(&jti) {
            return Ok(true);
        }
        if !self.fresh() {
            self.reload(store).await?;
        }
        Ok(self.cached(&jti))
    }

    /// Revokes the session `jti` whose token expires at `exp` (Unix seconds), for every process
    /// on the store. Revoking twice is harmless.
    pub async fn revoke(&self, store: &Store, jti: Uuid, exp: i64) -> Result<(), StoreError> {
        crate::store::revocations::insert(store, &jti.to_string(), exp).await?;
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(jti, exp);
        Ok(())
    }

    /// Loads the unexpired revocations (one reload at a time; a caller that waited for another's
    /// reload uses it), purging expired rows every [`PURGE_EVERY`].
    async fn reload(&self, store: &Store) -> Result<(), StoreError> {
        let mut purged_at = self.reload.lock().await;
        if self.fresh() {
            return Ok(());
        }
        let started = self.millis_now();
        let now = Utc::now().timestamp();
        if purged_at.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
            let before = now - PURGE_GRACE_SECS;
            let deleted = crate::store::revocations::purge(store, before).await?;
            if deleted > 0 {
                tracing::debug!(deleted, "purged expired token revocations");
            }
            *purged_at = Some(Instant::now());
        }
        // Rows within the JWT leeway of their expiry still matter.
        let live_after = now - PURGE_GRACE_SECS;
        let rows = crate::store::revocations::live(store, live_after).await?;
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        // A revocation is never undone: keep what this process revoked meanwhile, drop only the
        // expired ones.
        cache.retain(|_, exp| *exp >= live_after);
        cache.extend(
            rows.into_iter()
                .filter_map(|(jti, exp)| Some((Uuid::parse_str(&jti).ok()?, exp))),
        );
        drop(cache);
        self.loaded_at.store(started, Ordering::Release);
        Ok(())
    }
}
