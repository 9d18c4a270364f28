//! The `revoked_tokens` table (ADR 0017): admin sessions ended by a logout, until their token
//! expires. The cache every request checks is `app::revocation`.

use crate::store::{Store, StoreError};

/// Records that the session `jti`, whose token expires at `exp` (Unix seconds), was revoked.
/// Revoking twice is harmless.
pub async fn insert(store: &Store, jti: &str, exp: i64) -> Result<(), StoreError> {
    const SQL: &str = "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) \
                       ON CONFLICT (jti) DO NOTHING";
    on_pool!(store, pool => sqlx::query(SQL).bind(jti).bind(exp).execute(pool).await.map(drop))?;
    Ok(())
}

/// Deletes the revocations of tokens that expired before `before`; how many.
pub async fn purge(store: &Store, before: i64) -> Result<u64, StoreError> {
    const SQL: &str = "DELETE FROM revoked_tokens WHERE expires_at < $1";
    Ok(on_pool!(store, pool => sqlx::query(SQL)
        .bind(before)
        .execute(pool)
        .await?
        .rows_affected()))
}

/// The revocations of tokens expiring at or after `after`: `(jti, expires_at)`.
pub async fn live(store: &Store, after: i64) -> Result<Vec<(String, i64)>, StoreError> {
    const SQL: &str = "SELECT jti, expires_at FROM revoked_tokens WHERE expires_at >= $1";
    Ok(on_pool!(store, pool => sqlx::query_as(SQL).bind(after).fetch_all(pool).await?))
}
