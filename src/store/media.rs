//! The `media` table (ADR 0028): the bytes of an inbound message's media, kept until the AI reply
//! that uses them settles (or, with `WAGATE_MEDIA_KEEP_SECONDS`, that long after they were last
//! received). Events hold only the media's MIME type, size and SHA-256.
//!
//! The same content is one row, however many messages carry it; `media_uses` holds one row per
//! message that put it, so a settled reply deletes the bytes only when no other message still
//! waits for them ([`release`]). [`purge`] deletes what outlived the setting, and gives up the
//! uses of replies that never settled after a bound, so nothing is kept forever.

use std::time::Duration;

use crate::store::{Store, StoreError};

/// One message's use of media bytes: the message `message_id` of chat `chat_id` of `account`
/// carries the media whose SHA-256 (hex) is `sha256`.
#[derive(Debug, Clone, Copy)]
pub struct MediaUse<'a> {
    pub account: &'a str,
    pub chat_id: &'a str,
    pub message_id: &'a str,
    pub sha256: &'a str,
}

/// Now, in each store's time format (SQLite keeps times as sortable text).
const NOW_SQLITE: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";
const NOW_PG: &str = "now()";

/// Keeps `bytes` (whose SHA-256 is `used.sha256`) for `used.message_id`: the row is written, or
/// when the same content is already kept, its `touched_at` is renewed; the message's use is
/// recorded in the same transaction.
pub async fn put(
    store: &Store,
    used: MediaUse<'_>,
    mime_type: &str,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let now = match store {
        Store::Postgres(_) => NOW_PG,
        Store::Sqlite(_) => NOW_SQLITE,
    };
    // The media row first: on PostgreSQL its row lock orders this put against a concurrent
    // `release` or `purge` of the same content (see there).
    let media = format!(
        "INSERT INTO media (account_id, sha256, mime_type, bytes, touched_at) \
         VALUES ($1, $2, $3, $4, {now}) \
         ON CONFLICT (account_id, sha256) DO UPDATE SET touched_at = excluded.touched_at"
    );
    let uses = format!(
        "INSERT INTO media_uses (account_id, sha256, chat_id, message_id, created_at) \
         VALUES ($1, $2, $3, $4, {now}) \
         ON CONFLICT (account_id, sha256, chat_id, message_id) \
         DO UPDATE SET created_at = excluded.created_at"
    );
    on_pool!(store, pool => {
        let mut tx = pool.begin().await?;
        sqlx::query(&media)
            .bind(used.account)
            .bind(used.sha256)
            .bind(mime_type)
            .bind(bytes)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&uses)
            .bind(used.account)
            .bind(used.sha256)
            .bind(used.chat_id)
            .bind(used.message_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    });
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

/// The reply to `used.message_id` settled: its use is dropped and, unless `keep` (the bytes are
/// kept for a time and [`purge`] deletes them), the bytes are deleted when no other message's
/// use is left; whether they were.
///
/// Atomic against a concurrent [`put`] of the same content: on SQLite the first statement takes
/// the database's write lock, so the check for other uses sees every committed put; on
/// PostgreSQL the media row is locked first (a put upserts it first, so one in flight is waited
/// for), and the check, a new statement, sees the uses committed until then.
pub async fn release(store: &Store, used: MediaUse<'_>, keep: bool) -> Result<bool, StoreError> {
    const LOCK: &str = "SELECT 1 FROM media WHERE account_id = $1 AND sha256 = $2 FOR UPDATE";
    const DROP_USE: &str = "DELETE FROM media_uses \
        WHERE account_id = $1 AND sha256 = $2 AND chat_id = $3 AND message_id = $4";
    const DELETE_UNUSED: &str = "DELETE FROM media WHERE account_id = $1 AND sha256 = $2 \
        AND NOT EXISTS (SELECT 1 FROM media_uses u \
                        WHERE u.account_id = $1 AND u.sha256 = $2)";
    let deleted = on_pool!(store, pool => {
        let mut tx = pool.begin().await?;
        if matches!(store, Store::Postgres(_)) && !keep {
            sqlx::query(LOCK)
                .bind(used.account)
                .bind(used.sha256)
                .fetch_optional(&mut *tx)
                .await?;
        }
        sqlx::query(DROP_USE)
            .bind(used.account)
            .bind(used.sha256)
            .bind(used.chat_id)
            .bind(used.message_id)
            .execute(&mut *tx)
            .await?;
        let deleted = if keep {
            0
        } else {
            sqlx::query(DELETE_UNUSED)
                .bind(used.account)
                .bind(used.sha256)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        };
        tx.commit().await?;
        deleted
    });
    Ok(deleted > 0)
}

/// Rows deleted per statement by [`purge`].
pub const PURGE_BATCH: i64 = 100;

/// The key of the transaction-scoped advisory lock that lets one PostgreSQL process at a time
/// purge (the others skip their pass).
const PURGE_LOCK: i64 = 2_002_937_698;

/// What one [`purge`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Uses given up: their reply did not settle within `unsettled`.
    pub uses: u64,
    /// Media rows deleted.
    pub media: u64,
    /// Another process was purging (PostgreSQL): this pass did nothing.
    pub skipped: bool,
}

/// Gives up the uses recorded more than `unsettled` ago (replies that never settled: superseded
/// in their debounce window, or whose worker stopped), then deletes the bytes last put more than
/// `keep` ago that no use is left for, [`PURGE_BATCH`] rows per statement. Times are the store's
/// clock, the one [`put`] wrote them with.
///
/// Safe with several processes on one PostgreSQL store: a pass holds an advisory lock (another
/// process's pass meanwhile skips), rows are locked with `SKIP LOCKED` (a put or release in
/// flight is left for the next pass) and each is deleted only if, seen after its lock, no use is
/// left. On SQLite the first statement takes the write lock, which orders the pass against puts.
pub async fn purge(
    store: &Store,
    keep: Duration,
    unsettled: Duration,
) -> Result<Purged, StoreError> {
    let mut total = Purged::default();
    loop {
        let pass = purge_batch(store, keep, unsettled).await?;
        total.uses += pass.uses;
        total.media += pass.media;
        if pass.skipped {
            total.skipped = true;
            return Ok(total);
        }
        if pass.media < PURGE_BATCH as u64 {
            return Ok(total);
        }
    }
}

async fn purge_batch(
    store: &Store,
    keep: Duration,
    unsettled: Duration,
) -> Result<Purged, StoreError> {
    let keep = keep.as_secs_f64();
    let unsettled = unsettled.as_secs_f64();
    Ok(match store {
        Store::Postgres(pool) => {
            const TRY_LOCK: &str = "SELECT pg_try_advisory_xact_lock($1)";
            const GIVE_UP: &str = "DELETE FROM media_uses \
                WHERE created_at < now() - $1 * interval '1 second'";
            const PICK: &str = "SELECT m.account_id, m.sha256 FROM media m \
                WHERE m.touched_at < now() - $1 * interval '1 second' \
                AND NOT EXISTS (SELECT 1 FROM media_uses u \
                                WHERE u.account_id = m.account_id AND u.sha256 = m.sha256) \
                ORDER BY m.touched_at LIMIT $2 FOR UPDATE OF m SKIP LOCKED";
            const DELETE: &str = "DELETE FROM media m \
                WHERE (m.account_id, m.sha256) IN \
                      (SELECT * FROM unnest($1::text[], $2::text[])) \
                AND NOT EXISTS (SELECT 1 FROM media_uses u \
                                WHERE u.account_id = m.account_id AND u.sha256 = m.sha256)";
            let mut tx = pool.begin().await?;
            let locked: bool = sqlx::query_scalar(TRY_LOCK)
                .bind(PURGE_LOCK)
                .fetch_one(&mut *tx)
                .await?;
            if !locked {
                return Ok(Purged {
                    skipped: true,
                    ..Purged::default()
                });
            }
            let uses = sqlx::query(GIVE_UP)
                .bind(unsettled)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let picked: Vec<(String, String)> = sqlx::query_as(PICK)
                .bind(keep)
                .bind(PURGE_BATCH)
                .fetch_all(&mut *tx)
                .await?;
            let media = if picked.is_empty() {
                0
            } else {
                let (accounts, hashes): (Vec<String>, Vec<String>) = picked.into_iter().unzip();
                // A new statement: it sees the uses committed before the rows were locked.
                sqlx::query(DELETE)
                    .bind(accounts)
                    .bind(hashes)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
            };
            tx.commit().await?;
            Purged {
                uses,
                media,
                skipped: false,
            }
        }
        Store::Sqlite(pool) => {
            const GIVE_UP: &str = "DELETE FROM media_uses \
                WHERE created_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', $1)";
            const DELETE: &str = "DELETE FROM media WHERE rowid IN (SELECT m.rowid FROM media m \
                WHERE m.touched_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', $1) \
                AND NOT EXISTS (SELECT 1 FROM media_uses u \
                                WHERE u.account_id = m.account_id AND u.sha256 = m.sha256) \
                ORDER BY m.touched_at LIMIT $2)";
            let ago = |secs: f64| format!("-{secs} seconds");
            let mut tx = pool.begin().await?;
            let uses = sqlx::query(GIVE_UP)
                .bind(ago(unsettled))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let media = sqlx::query(DELETE)
                .bind(ago(keep))
                .bind(PURGE_BATCH)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Purged {
                uses,
                media,
                skipped: false,
            }
        }
    })
}
