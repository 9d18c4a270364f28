//! The `media` table (ADR 0028): the bytes of an inbound message's media, kept until the AI reply
//! that uses them settles. Events hold only the media's MIME type, size and SHA-256.

use crate::store::{Store, StoreError};

/// Keeps `bytes` (whose SHA-256 is `sha256`) for `account`. The same content kept twice is one
/// row.
pub async fn put(
    store: &Store,
    account: &str,
    sha256: &str,
    mime_type: &str,
    bytes: &[u8],
) -> Result<(), StoreError> {
    const SQL: &str = "INSERT INTO media (account_id, sha256, mime_type, bytes) \
                       VALUES ($1, $2, $3, $4) ON CONFLICT (account_id, sha256) DO NOTHING";
    on_pool!(store, pool => sqlx::query(SQL)
        .bind(account)
        .bind(sha256)
        .bind(mime_type)
        .bind(bytes)
        .execute(pool)
        .await
        .map(drop))?;
    Ok(())
}

/// The kept media `sha256` of `account`: `(mime_type, bytes)`, `None` when it is not (or no
/// longer) kept.
pub async fn get(
    store: &Store,
    account: &str,
    sha256: &str,
) -> Result<Option<(String, Vec<u8>)>, StoreError> {
    const SQL: &str = "SELECT mime_type, bytes FROM media WHERE account_id = $1 AND sha256 = $2";
    Ok(on_pool!(store, pool => sqlx::query_as(SQL)
        .bind(account)
        .bind(sha256)
        .fetch_optional(pool)
        .await?))
}

/// Forgets the media `sha256` of `account`; whether a row was deleted.
pub async fn delete(store: &Store, account: &str, sha256: &str) -> Result<bool, StoreError> {
    const SQL: &str = "DELETE FROM media WHERE account_id = $1 AND sha256 = $2";
    Ok(on_pool!(store, pool => sqlx::query(SQL)
        .bind(account)
        .bind(sha256)
        .execute(pool)
        .await?
        .rows_affected())
        > 0)
}
