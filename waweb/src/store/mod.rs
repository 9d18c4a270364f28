//! The session store: whatsapp-rust's storage [`Backend`](wacore::store::traits::Backend) for one
//! wagate account, on the gateway's SQLite or PostgreSQL database (table `whatsapp_web_store`,
//! migrations `0008_whatsapp_web.sql` / `0009_whatsapp_web.sql`).
//!
//! Every value is sealed by the gateway's [`Sealer`] and bound to its account and row, so a row
//! copied to another account or key does not open; such a row is an error, never "absent".
//! Keys (JIDs, message ids, hex-encoded binary ids) and the few numbers the range queries need
//! stay in plain columns. The associated data of a value is
//! `waweb/["<account>","<space>","<scope>","<key>"]` (a JSON array, so no two rows share one).

mod backend;
mod db;

use std::sync::Arc;

use serde::Serialize;
use wacore::store::error::StoreError;

pub use db::Db;
use db::{Param, Row, Stmt};

/// Seals values for the database (the gateway: AES-SIV under its master-key keyring).
pub trait Sealer: Send + Sync + 'static {
    /// Seals `plain`, bound to `ad` (associated data): opening with any other `ad` fails.
    fn seal(&self, plain: &[u8], ad: &str) -> String;
    /// Opens what [`Sealer::seal`] sealed with the same `ad`.
    fn open(&self, sealed: &str, ad: &str) -> Result<Vec<u8>, SealError>;
}

/// A sealed value that does not open (wrong key, account or row, or altered).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sealed value does not open: {0}")]
pub struct SealError(pub String);

/// A stored row that cannot be read back: it does not open, or its content is not what the space
/// holds. Reaches whatsapp-rust as [`StoreError::Serialization`]; names the space, never the key
/// or the value.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error("a stored {space} row does not open: {source}")]
    Open {
        space: &'static str,
        #[source]
        source: SealError,
    },
    #[error("a stored {space} row is malformed: {reason}")]
    Malformed { space: &'static str, reason: String },
}

impl From<RowError> for StoreError {
    fn from(e: RowError) -> Self {
        StoreError::Serialization(Box::new(e))
    }
}

/// What [`SessionStore::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCheck {
    /// No device, or one never paired (no phone number): pairing is needed.
    Empty,
    /// A paired device.
    Paired,
    /// The device row does not open or does not deserialize: erase and pair again.
    Corrupt(String),
}

/// whatsapp-rust's session store for one account, sealed, on the gateway's database.
pub struct SessionStore {
    db: Db,
    sealer: Arc<dyn Sealer>,
    account: String,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// The row spaces (the `space` column).
mod space {
    pub const IDENTITY: &str = "identity";
    pub const SESSION: &str = "session";
    /// `num` = id, `num2` = uploaded (0/1).
    pub const PREKEY: &str = "prekey";
    /// `num` = id.
    pub const SIGNED_PREKEY: &str = "signed_prekey";
    pub const SENDER_KEY: &str = "sender_key";
    /// Key: hex key id.
    pub const SYNC_KEY: &str = "sync_key";
    /// One row: the id of the sync key stored last.
    pub const SYNC_KEY_LATEST: &str = "sync_key_latest";
    pub const APP_VERSION: &str = "app_version";
    /// Scope: collection; key: hex index MAC.
    pub const MUTATION_MAC: &str = "mutation_mac";
    /// Scope: group JID; key: device JID; value: one byte, has-key.
    pub const SENDER_KEY_DEVICE: &str = "sender_key_device";
    /// Scope: phone number; key: LID; `num` = updated_at.
    pub const LID_PN: &str = "lid_pn";
    /// Scope: address; key: message id.
    pub const BASE_KEY: &str = "base_key";
    pub const DEVICE_LIST: &str = "device_list";
    pub const GROUP_METADATA: &str = "group_metadata";
    /// `num` = token timestamp (NULL when the token is empty), `num2` = sender timestamp.
    pub const TC_TOKEN: &str = "tc_token";
    /// Scope: chat; key: message id; `num` = stored at (unix seconds).
    pub const SENT_MESSAGE: &str = "sent_message";
    /// Scope: chat; key: `[sender, id]`; `num` = stored at (unix seconds).
    pub const PENDING_INBOUND: &str = "pending_inbound";
    /// Scope: chat; key: `[sender, msg_id]`; `num` = expires_at (0: never), `num2` = message_ts.
    pub const MSG_SECRET: &str = "msg_secret";
    /// One row: the serialized device.
    pub const DEVICE: &str = "device";
}

/// The columns every `SELECT` reads (see [`Row`]).
const COLUMNS: &str = "scope, key, value, num2";
const TABLE: &str = "whatsapp_web_store";
/// Rows per multi-row statement (keeps far below both databases' bind-parameter limits).
const CHUNK: usize = 200;

/// A row to write; sealed on the way in.
struct Put {
    scope: String,
    key: String,
    plain: Vec<u8>,
    num: Option<i64>,
    num2: Option<i64>,
}

/// What a multi-row insert does with a row that exists.
#[derive(Clone, Copy)]
enum OnConflict {
    /// Overwrite value, `num` and `num2`.
    Replace,
    /// Overwrite the value; merge `num` as an expiry (0 = never wins, else the later) and `num2`
    /// as a time (the later).
    MsgSecret,
}

impl OnConflict {
    fn sql(self) -> String {
        match self {
            OnConflict::Replace => "DO UPDATE SET value = excluded.value, num = excluded.num, \
                                    num2 = excluded.num2"
                .to_owned(),
            OnConflict::MsgSecret => format!(
                "DO UPDATE SET value = excluded.value, \
                 num = CASE WHEN {TABLE}.num = 0 OR excluded.num = 0 THEN 0 \
                            WHEN excluded.num > {TABLE}.num THEN excluded.num ELSE {TABLE}.num END, \
                 num2 = CASE WHEN excluded.num2 > {TABLE}.num2 THEN excluded.num2 \
                             ELSE {TABLE}.num2 END"
            ),
        }
    }
}

fn db_err(e: sqlx::Error) -> StoreError {
    StoreError::Database(Box::new(e))
}

/// An unambiguous key made of several strings (a JSON array).
fn compose(parts: &[&str]) -> String {
    // Serializing a slice of strings cannot fail.
    serde_json::to_string(parts).unwrap_or_default()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn to_json<T: Serialize>(space: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| {
        RowError::Malformed {
            space,
            reason: e.to_string(),
        }
        .into()
    })
}

fn from_json<T: serde::de::DeserializeOwned>(
    space: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| malformed(space, e.to_string()))
}

fn malformed(space: &'static str, reason: impl Into<String>) -> StoreError {
    RowError::Malformed {
        space,
        reason: reason.into(),
    }
    .into()
}

/// `$from, $from+1, ...` for `n` values.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl SessionStore {
    /// The store of `account` on `db` (migrated), sealing with `sealer`.
    pub fn new(db: Db, sealer: Arc<dyn Sealer>, account: &str) -> Self {
        Self {
            db,
            sealer,
            account: account.to_owned(),
        }
    }

    /// The account this store belongs to.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// Whether the account has a usable paired device. Database errors are `Err`.
    pub async fn check(&self) -> Result<SessionCheck, StoreError> {
        let Some(row) = self.get_row(space::DEVICE, "", "").await? else {
            return Ok(SessionCheck::Empty);
        };
        let plain = match self.open(space::DEVICE, &row) {
            Ok(plain) => plain,
            Err(e) => return Ok(SessionCheck::Corrupt(e.to_string())),
        };
        match serde_json::from_slice::<wacore::store::Device>(&plain) {
            Ok(device) if device.pn.is_some() => Ok(SessionCheck::Paired),
            Ok(_) => Ok(SessionCheck::Empty),
            Err(e) => Ok(SessionCheck::Corrupt(format!(
                "the stored device does not deserialize: {e}"
            ))),
        }
    }

    /// Deletes everything of the account (logout, or before pairing again).
    pub async fn erase(&self) -> Result<(), StoreError> {
        self.db
            .execute(
                &format!("DELETE FROM {TABLE} WHERE account = $1"),
                vec![self.account.as_str().into()],
            )
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// The associated data binding a value to its row.
    fn ad(&self, space: &str, scope: &str, key: &str) -> String {
        format!("waweb/{}", compose(&[&self.account, space, scope, key]))
    }

    fn seal(&self, space: &str, scope: &str, key: &str, plain: &[u8]) -> String {
        self.sealer.seal(plain, &self.ad(space, scope, key))
    }

    fn open(&self, space: &'static str, row: &Row) -> Result<Vec<u8>, RowError> {
        self.sealer
            .open(&row.value, &self.ad(space, &row.scope, &row.key))
            .map_err(|source| RowError::Open { space, source })
    }

    /// One row by its full address.
    async fn get_row(
        &self,
        space: &'static str,
        scope: &str,
        key: &str,
    ) -> Result<Option<Row>, StoreError> {
        let rows = self
            .db
            .fetch(
                &format!(
                    "SELECT {COLUMNS} FROM {TABLE} \
                     WHERE account = $1 AND space = $2 AND scope = $3 AND key = $4"
                ),
                vec![
                    self.account.as_str().into(),
                    space.into(),
                    scope.into(),
                    key.into(),
                ],
            )
            .await
            .map_err(db_err)?;
        Ok(rows.into_iter().next())
    }

    /// One value, opened, with its numbers.
    async fn get(
        &self,
        space: &'static str,
        scope: &str,
        key: &str,
    ) -> Result<Option<(Vec<u8>, Row)>, StoreError> {
        match self.get_row(space, scope, key).await? {
            Some(row) => Ok(Some((self.open(space, &row)?, row))),
            None => Ok(None),
        }
    }

    async fn get_value(
        &self,
        space: &'static str,
        scope: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get(space, scope, key).await?.map(|(plain, _)| plain))
    }

    /// Rows of a space matching `filter` (SQL using `$3...`), opened, in key order.
    async fn select(
        &self,
        space: &'static str,
        filter: &str,
        params: Vec<Param>,
    ) -> Result<Vec<(Vec<u8>, Row)>, StoreError> {
        let mut all = vec![self.account.as_str().into(), space.into()];
        all.extend(params);
        let rows = self
            .db
            .fetch(
                &format!(
                    "SELECT {COLUMNS} FROM {TABLE} WHERE account = $1 AND space = $2{filter} \
                     ORDER BY scope, key"
                ),
                all,
            )
            .await
            .map_err(db_err)?;
        rows.into_iter()
            .map(|row| Ok((self.open(space, &row)?, row)))
            .collect()
    }

    /// Rows of `space` (and `scope`, when given) whose key is one of `keys`, opened.
    async fn select_keys(
        &self,
        space: &'static str,
        scope: Option<&str>,
        keys: &[String],
    ) -> Result<Vec<(Vec<u8>, Row)>, StoreError> {
        let mut out = Vec::new();
        for chunk in keys.chunks(CHUNK) {
            let (filter, params) = key_filter(scope, chunk);
            out.extend(self.select(space, &filter, params).await?);
        }
        Ok(out)
    }

    /// Writes `puts` into `space`: multi-row upserts, all in one transaction.
    async fn put_rows(
        &self,
        space: &'static str,
        puts: Vec<Put>,
        on_conflict: OnConflict,
    ) -> Result<(), StoreError> {
        let stmts = puts
            .chunks(CHUNK)
            .map(|chunk| self.upsert_stmt(space, chunk, on_conflict))
            .collect();
        self.db.transaction(stmts).await.map_err(db_err)?;
        Ok(())
    }

    fn upsert_stmt(&self, space: &'static str, chunk: &[Put], on_conflict: OnConflict) -> Stmt {
        let mut params: Vec<Param> = vec![self.account.as_str().into(), space.into()];
        let mut values = Vec::with_capacity(chunk.len());
        for put in chunk {
            let n = params.len() + 1;
            values.push(format!("($1, $2, {})", placeholders(n, 5)));
            params.push(put.scope.clone().into());
            params.push(put.key.clone().into());
            params.push(self.seal(space, &put.scope, &put.key, &put.plain).into());
            params.push(put.num.into());
            params.push(put.num2.into());
        }
        Stmt {
            sql: format!(
                "INSERT INTO {TABLE} (account, space, scope, key, value, num, num2) VALUES {} \
                 ON CONFLICT (account, space, scope, key) {}",
                values.join(", "),
                on_conflict.sql()
            ),
            params,
        }
    }

    async fn put_one(
        &self,
        space: &'static str,
        scope: &str,
        key: &str,
        plain: &[u8],
        num: Option<i64>,
        num2: Option<i64>,
    ) -> Result<(), StoreError> {
        let stmt = self.upsert_stmt(
            space,
            &[Put {
                scope: scope.to_owned(),
                key: key.to_owned(),
                plain: plain.to_vec(),
                num,
                num2,
            }],
            OnConflict::Replace,
        );
        self.db
            .execute(&stmt.sql, stmt.params)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Deletes rows of `space` matching `filter` (SQL using `$3...`); how many.
    async fn delete_where(
        &self,
        space: &'static str,
        filter: &str,
        params: Vec<Param>,
    ) -> Result<u64, StoreError> {
        let stmt = self.delete_stmt(space, filter, params);
        self.db
            .execute(&stmt.sql, stmt.params)
            .await
            .map_err(db_err)
    }

    fn delete_stmt(&self, space: &'static str, filter: &str, params: Vec<Param>) -> Stmt {
        let mut all = vec![self.account.as_str().into(), space.into()];
        all.extend(params);
        Stmt {
            sql: format!("DELETE FROM {TABLE} WHERE account = $1 AND space = $2{filter}"),
            params: all,
        }
    }

    async fn delete_one(
        &self,
        space: &'static str,
        scope: &str,
        key: &str,
    ) -> Result<(), StoreError> {
        self.delete_where(
            space,
            " AND scope = $3 AND key = $4",
            vec![scope.into(), key.into()],
        )
        .await?;
        Ok(())
    }

    /// Deletes the rows of `space` (and `scope`, when given) whose key is one of `keys`, in one
    /// transaction.
    async fn delete_keys(
        &self,
        space: &'static str,
        scope: Option<&str>,
        keys: &[String],
    ) -> Result<(), StoreError> {
        let stmts = keys
            .chunks(CHUNK)
            .map(|chunk| {
                let (filter, params) = key_filter(scope, chunk);
                self.delete_stmt(space, &filter, params)
            })
            .collect();
        self.db.transaction(stmts).await.map_err(db_err)?;
        Ok(())
    }
}

/// ` AND [scope = $3 AND] key IN ($.., ...)` and its parameters (numbered from `$3`).
fn key_filter(scope: Option<&str>, keys: &[String]) -> (String, Vec<Param>) {
    let mut params: Vec<Param> = Vec::with_capacity(keys.len() + 1);
    let mut filter = String::new();
    if let Some(scope) = scope {
        params.push(scope.into());
        filter.push_str(" AND scope = $3");
    }
    let from = 3 + params.len();
    filter.push_str(&format!(" AND key IN ({})", placeholders(from, keys.len())));
    params.extend(keys.iter().map(|k| Param::Text(k.clone())));
    (filter, params)
}
