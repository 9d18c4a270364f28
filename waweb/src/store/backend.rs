//! The five storage traits of whatsapp-rust on [`SessionStore`].

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use wacore::appstate::hash::HashState;
use wacore::appstate::processor::AppStateMutationMAC;
use wacore::store::error::Result;
use wacore::store::traits::{
    merge_msg_secret_expiry, merge_msg_secret_message_ts, AppStateSyncKey, AppSyncStore,
    DeviceListRecord, DeviceStore, LidPnMappingEntry, MsgSecretEntry, MsgSecretStore,
    PendingInboundKey, PendingInboundRow, ProtocolStore, SignalStore, TcTokenEntry,
};
use wacore::store::Device;

use super::db::{Param, Stmt};
use super::{
    compose, db_err, from_json, malformed, now_secs, space, to_json, OnConflict, Put, SessionStore,
    TABLE,
};

/// Keeps the last of several writes to one key, in first-seen order.
fn last_wins<K: Eq + std::hash::Hash + Clone, V>(
    items: impl IntoIterator<Item = (K, V)>,
) -> Vec<(K, V)> {
    let mut index: HashMap<K, usize> = HashMap::new();
    let mut out: Vec<(K, V)> = Vec::new();
    for (k, v) in items {
        match index.get(&k) {
            Some(&i) => out[i].1 = v,
            None => {
                index.insert(k.clone(), out.len());
                out.push((k, v));
            }
        }
    }
    out
}

fn plain_put(scope: &str, key: String, plain: Vec<u8>) -> Put {
    Put {
        scope: scope.to_owned(),
        key,
        plain,
        num: None,
        num2: None,
    }
}

fn identity_key(bytes: &[u8]) -> Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| malformed(space::IDENTITY, "not 32 bytes"))
}

fn id_of(space: &'static str, key: &str) -> Result<u32> {
    key.parse()
        .map_err(|_| malformed(space, "the key is not an id"))
}

/// The sealed form of a tc token: its timestamp (8 bytes, big endian), then the token.
fn tc_token_value(token: &[u8], token_timestamp: i64) -> Vec<u8> {
    let mut plain = Vec::with_capacity(8 + token.len());
    plain.extend_from_slice(&token_timestamp.to_be_bytes());
    plain.extend_from_slice(token);
    plain
}

/// `num` of a tc token row: its timestamp, or `NULL` for a byte-less placeholder.
fn tc_token_num(token: &[u8], token_timestamp: i64) -> Option<i64> {
    (!token.is_empty()).then_some(token_timestamp)
}

#[async_trait]
impl SignalStore for SessionStore {
    async fn put_identity(&self, address: &str, key: [u8; 32]) -> Result<()> {
        self.put_one(space::IDENTITY, "", address, &key, None, None)
            .await
    }

    async fn put_identities_batch(&self, identities: &[(Arc<str>, [u8; 32])]) -> Result<()> {
        let puts = last_wins(identities.iter().map(|(a, k)| (a.to_string(), k.to_vec())))
            .into_iter()
            .map(|(a, k)| plain_put("", a, k))
            .collect();
        self.put_rows(space::IDENTITY, puts, OnConflict::Replace)
            .await
    }

    async fn load_identity(&self, address: &str) -> Result<Option<[u8; 32]>> {
        match self.get_value(space::IDENTITY, "", address).await? {
            Some(bytes) => Ok(Some(identity_key(&bytes)?)),
            None => Ok(None),
        }
    }

    async fn delete_identity(&self, address: &str) -> Result<()> {
        self.delete_one(space::IDENTITY, "", address).await
    }

    async fn get_session(&self, address: &str) -> Result<Option<Bytes>> {
        Ok(self
            .get_value(space::SESSION, "", address)
            .await?
            .map(Bytes::from))
    }

    async fn put_session(&self, address: &str, session: &[u8]) -> Result<()> {
        self.put_one(space::SESSION, "", address, session, None, None)
            .await
    }

    async fn put_sessions_batch(&self, sessions: &[(Arc<str>, Bytes)]) -> Result<()> {
        let puts = last_wins(sessions.iter().map(|(a, s)| (a.to_string(), s.to_vec())))
            .into_iter()
            .map(|(a, s)| plain_put("", a, s))
            .collect();
        self.put_rows(space::SESSION, puts, OnConflict::Replace)
            .await
    }

    async fn delete_session(&self, address: &str) -> Result<()> {
        self.delete_one(space::SESSION, "", address).await
    }

    async fn has_session(&self, address: &str) -> Result<bool> {
        Ok(self.get_row(space::SESSION, "", address).await?.is_some())
    }

    async fn has_signal_state_for_user(&self, user: &str) -> Result<bool> {
        // Addresses are `user@server` or `user:device@server`.
        let len = i64::try_from(user.chars().count() + 1).unwrap_or(i64::MAX);
        let found = self
            .db
            .fetch_num(
                &format!(
                    "SELECT CAST(1 AS BIGINT) FROM {TABLE} WHERE account = $1 AND space IN ($2, $3) AND scope = '' \
                     AND substr(key, 1, CAST($4 AS INTEGER)) IN ($5, $6) LIMIT 1"
                ),
                vec![
                    self.account.as_str().into(),
                    space::SESSION.into(),
                    space::IDENTITY.into(),
                    len.into(),
                    format!("{user}@").into(),
                    format!("{user}:").into(),
                ],
            )
            .await
            .map_err(db_err)?;
        Ok(found.is_some())
    }

    async fn store_prekey(&self, id: u32, record: &[u8], uploaded: bool) -> Result<()> {
        self.put_one(
            space::PREKEY,
            "",
            &id.to_string(),
            record,
            Some(i64::from(id)),
            Some(i64::from(uploaded)),
        )
        .await
    }

    async fn store_prekeys_batch(&self, keys: &[(u32, Bytes)], uploaded: bool) -> Result<()> {
        let puts = last_wins(keys.iter().map(|(id, r)| (*id, r.to_vec())))
            .into_iter()
            .map(|(id, record)| Put {
                scope: String::new(),
                key: id.to_string(),
                plain: record,
                num: Some(i64::from(id)),
                num2: Some(i64::from(uploaded)),
            })
            .collect();
        self.put_rows(space::PREKEY, puts, OnConflict::Replace)
            .await
    }

    async fn load_prekey(&self, id: u32) -> Result<Option<Bytes>> {
        Ok(self
            .get_value(space::PREKEY, "", &id.to_string())
            .await?
            .map(Bytes::from))
    }

    async fn load_prekeys_batch(&self, ids: &[u32]) -> Result<Vec<(u32, Bytes)>> {
        let keys: Vec<String> = ids.iter().map(u32::to_string).collect();
        let found: HashMap<String, Vec<u8>> = self
            .select_keys(space::PREKEY, Some(""), &keys)
            .await?
            .into_iter()
            .map(|(plain, row)| (row.key, plain))
            .collect();
        Ok(ids
            .iter()
            .zip(&keys)
            .filter_map(|(id, key)| found.get(key).map(|r| (*id, Bytes::from(r.clone()))))
            .collect())
    }

    async fn mark_prekeys_uploaded(&self, ids: &[u32]) -> Result<()> {
        let keys: Vec<String> = ids.iter().map(u32::to_string).collect();
        let stmts = keys
            .chunks(super::CHUNK)
            .map(|chunk| {
                let (filter, mut params) = super::key_filter(Some(""), chunk);
                let mut all: Vec<Param> = vec![self.account.as_str().into(), space::PREKEY.into()];
                all.append(&mut params);
                Stmt {
                    sql: format!(
                        "UPDATE {TABLE} SET num2 = 1 WHERE account = $1 AND space = $2{filter}"
                    ),
                    params: all,
                }
            })
            .collect();
        self.db.transaction(stmts).await.map_err(db_err)?;
        Ok(())
    }

    async fn remove_prekey(&self, id: u32) -> Result<()> {
        self.delete_one(space::PREKEY, "", &id.to_string()).await
    }

    async fn get_max_prekey_id(&self) -> Result<u32> {
        let max = self
            .db
            .fetch_num(
                &format!("SELECT MAX(num) FROM {TABLE} WHERE account = $1 AND space = $2"),
                vec![self.account.as_str().into(), space::PREKEY.into()],
            )
            .await
            .map_err(db_err)?;
        match max {
            Some(n) => u32::try_from(n).map_err(|_| malformed(space::PREKEY, "id out of range")),
            None => Ok(0),
        }
    }

    async fn store_signed_prekey(&self, id: u32, record: &[u8]) -> Result<()> {
        self.put_one(
            space::SIGNED_PREKEY,
            "",
            &id.to_string(),
            record,
            Some(i64::from(id)),
            None,
        )
        .await
    }

    async fn load_signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>> {
        self.get_value(space::SIGNED_PREKEY, "", &id.to_string())
            .await
    }

    async fn load_all_signed_prekeys(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        self.select(space::SIGNED_PREKEY, "", vec![])
            .await?
            .into_iter()
            .map(|(plain, row)| Ok((id_of(space::SIGNED_PREKEY, &row.key)?, plain)))
            .collect()
    }

    async fn remove_signed_prekey(&self, id: u32) -> Result<()> {
        self.delete_one(space::SIGNED_PREKEY, "", &id.to_string())
            .await
    }

    async fn put_sender_key(&self, address: &str, record: &[u8]) -> Result<()> {
        self.put_one(space::SENDER_KEY, "", address, record, None, None)
            .await
    }

    async fn put_sender_keys_batch(&self, sender_keys: &[(Arc<str>, Bytes)]) -> Result<()> {
        let puts = last_wins(sender_keys.iter().map(|(a, r)| (a.to_string(), r.to_vec())))
            .into_iter()
            .map(|(a, r)| plain_put("", a, r))
            .collect();
        self.put_rows(space::SENDER_KEY, puts, OnConflict::Replace)
            .await
    }

    async fn get_sender_key(&self, address: &str) -> Result<Option<Vec<u8>>> {
        self.get_value(space::SENDER_KEY, "", address).await
    }

    async fn delete_sender_key(&self, address: &str) -> Result<()> {
        self.delete_one(space::SENDER_KEY, "", address).await
    }
}

#[async_trait]
impl AppSyncStore for SessionStore {
    async fn get_sync_key(&self, key_id: &[u8]) -> Result<Option<AppStateSyncKey>> {
        match self
            .get_value(space::SYNC_KEY, "", &hex::encode(key_id))
            .await?
        {
            Some(plain) => Ok(Some(from_json(space::SYNC_KEY, &plain)?)),
            None => Ok(None),
        }
    }

    async fn set_sync_key(&self, key_id: &[u8], key: AppStateSyncKey) -> Result<()> {
        let key_stmt = self.upsert_stmt(
            space::SYNC_KEY,
            &[plain_put(
                "",
                hex::encode(key_id),
                to_json(space::SYNC_KEY, &key)?,
            )],
            OnConflict::Replace,
        );
        let latest_stmt = self.upsert_stmt(
            space::SYNC_KEY_LATEST,
            &[plain_put("", String::new(), key_id.to_vec())],
            OnConflict::Replace,
        );
        self.db
            .transaction(vec![key_stmt, latest_stmt])
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn get_version(&self, name: &str) -> Result<HashState> {
        match self.get_value(space::APP_VERSION, "", name).await? {
            Some(plain) => from_json(space::APP_VERSION, &plain),
            None => Ok(HashState::default()),
        }
    }

    async fn set_version(&self, name: &str, state: HashState) -> Result<()> {
        let plain = to_json(space::APP_VERSION, &state)?;
        self.put_one(space::APP_VERSION, "", name, &plain, None, None)
            .await
    }

    async fn put_mutation_macs(
        &self,
        name: &str,
        _version: u64,
        mutations: &[AppStateMutationMAC],
    ) -> Result<()> {
        let puts = last_wins(
            mutations
                .iter()
                .map(|m| (hex::encode(&m.index_mac), m.value_mac.clone())),
        )
        .into_iter()
        .map(|(k, v)| plain_put(name, k, v))
        .collect();
        self.put_rows(space::MUTATION_MAC, puts, OnConflict::Replace)
            .await
    }

    async fn get_mutation_mac(&self, name: &str, index_mac: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get_value(space::MUTATION_MAC, name, &hex::encode(index_mac))
            .await
    }

    async fn get_mutation_macs(
        &self,
        name: &str,
        index_macs: &[[u8; 32]],
    ) -> Result<HashMap<[u8; 32], Vec<u8>>> {
        let keys: Vec<String> = index_macs.iter().map(hex::encode).collect();
        let by_key: HashMap<String, Vec<u8>> = self
            .select_keys(space::MUTATION_MAC, Some(name), &keys)
            .await?
            .into_iter()
            .map(|(plain, row)| (row.key, plain))
            .collect();
        Ok(index_macs
            .iter()
            .zip(&keys)
            .filter_map(|(mac, key)| by_key.get(key).map(|v| (*mac, v.clone())))
            .collect())
    }

    async fn delete_mutation_macs(&self, name: &str, index_macs: &[Vec<u8>]) -> Result<()> {
        let keys: Vec<String> = index_macs.iter().map(hex::encode).collect();
        self.delete_keys(space::MUTATION_MAC, Some(name), &keys)
            .await
    }

    async fn clear_mutation_macs(&self, name: &str) -> Result<()> {
        self.delete_where(space::MUTATION_MAC, " AND scope = $3", vec![name.into()])
            .await?;
        Ok(())
    }

    async fn get_latest_sync_key_id(&self) -> Result<Option<Vec<u8>>> {
        self.get_value(space::SYNC_KEY_LATEST, "", "").await
    }
}

#[async_trait]
impl ProtocolStore for SessionStore {
    async fn get_sender_key_devices(&self, group_jid: &str) -> Result<Vec<(String, bool)>> {
        self.select(
            space::SENDER_KEY_DEVICE,
            " AND scope = $3",
            vec![group_jid.into()],
        )
        .await?
        .into_iter()
        .map(|(plain, row)| match plain.as_slice() {
            [flag] => Ok((row.key, *flag != 0)),
            _ => Err(malformed(space::SENDER_KEY_DEVICE, "not one byte")),
        })
        .collect()
    }

    async fn set_sender_key_status(&self, group_jid: &str, entries: &[(&str, bool)]) -> Result<()> {
        let puts = last_wins(entries.iter().map(|(d, has)| (d.to_string(), *has)))
            .into_iter()
            .map(|(device, has_key)| plain_put(group_jid, device, vec![u8::from(has_key)]))
            .collect();
        self.put_rows(space::SENDER_KEY_DEVICE, puts, OnConflict::Replace)
            .await
    }

    async fn clear_sender_key_devices(&self, group_jid: &str) -> Result<()> {
        self.delete_where(
            space::SENDER_KEY_DEVICE,
            " AND scope = $3",
            vec![group_jid.into()],
        )
        .await?;
        Ok(())
    }

    async fn delete_sender_key_device_rows(&self, device_jids: &[&str]) -> Result<()> {
        let keys: Vec<String> = device_jids.iter().map(|d| d.to_string()).collect();
        self.delete_keys(space::SENDER_KEY_DEVICE, None, &keys)
            .await
    }

    async fn clear_all_sender_key_devices(&self) -> Result<()> {
        self.delete_where(space::SENDER_KEY_DEVICE, "", vec![])
            .await?;
        Ok(())
    }

    async fn get_lid_mapping(&self, lid: &str) -> Result<Option<LidPnMappingEntry>> {
        let rows = self
            .select(space::LID_PN, " AND key = $3", vec![lid.into()])
            .await?;
        match rows.into_iter().next() {
            Some((plain, _)) => Ok(Some(from_json(space::LID_PN, &plain)?)),
            None => Ok(None),
        }
    }

    async fn get_pn_mapping(&self, phone: &str) -> Result<Option<LidPnMappingEntry>> {
        // The most recently updated LID of this phone number (the trait's "most recent").
        let rows = self
            .select(
                space::LID_PN,
                &format!(
                    " AND scope = $3 AND num = (SELECT MAX(num) FROM {TABLE} \
                     WHERE account = $1 AND space = $2 AND scope = $3)"
                ),
                vec![phone.into()],
            )
            .await?;
        match rows.into_iter().last() {
            Some((plain, _)) => Ok(Some(from_json(space::LID_PN, &plain)?)),
            None => Ok(None),
        }
    }

    async fn put_lid_mapping(&self, entry: &LidPnMappingEntry) -> Result<()> {
        self.put_lid_mappings(std::slice::from_ref(entry)).await
    }

    async fn put_lid_mappings(&self, entries: &[LidPnMappingEntry]) -> Result<()> {
        let entries = last_wins(entries.iter().map(|e| (e.lid.clone(), e)));
        if entries.is_empty() {
            return Ok(());
        }
        // A LID has one row whatever its phone number (the scope): drop the old one first.
        let lids: Vec<String> = entries.iter().map(|(lid, _)| lid.clone()).collect();
        let mut stmts: Vec<Stmt> = lids
            .chunks(super::CHUNK)
            .map(|chunk| {
                let (filter, params) = super::key_filter(None, chunk);
                self.delete_stmt(space::LID_PN, &filter, params)
            })
            .collect();
        let mut puts = Vec::with_capacity(entries.len());
        for (lid, entry) in entries {
            puts.push(Put {
                scope: entry.phone_number.clone(),
                key: lid,
                plain: to_json(space::LID_PN, entry)?,
                num: Some(entry.updated_at),
                num2: None,
            });
        }
        stmts.extend(
            puts.chunks(super::CHUNK)
                .map(|chunk| self.upsert_stmt(space::LID_PN, chunk, OnConflict::Replace)),
        );
        self.db.transaction(stmts).await.map_err(db_err)?;
        Ok(())
    }

    async fn get_all_lid_mappings(&self) -> Result<Vec<LidPnMappingEntry>> {
        self.select(space::LID_PN, "", vec![])
            .await?
            .into_iter()
            .map(|(plain, _)| from_json(space::LID_PN, &plain))
            .collect()
    }

    async fn save_base_key(&self, address: &str, message_id: &str, base_key: &[u8]) -> Result<()> {
        self.put_one(space::BASE_KEY, address, message_id, base_key, None, None)
            .await
    }

    async fn has_same_base_key(
        &self,
        address: &str,
        message_id: &str,
        current_base_key: &[u8],
    ) -> Result<bool> {
        Ok(self
            .get_value(space::BASE_KEY, address, message_id)
            .await?
            .is_some_and(|stored| stored == current_base_key))
    }

    async fn delete_base_key(&self, address: &str, message_id: &str) -> Result<()> {
        self.delete_one(space::BASE_KEY, address, message_id).await
    }

    async fn update_device_list(&self, record: DeviceListRecord) -> Result<()> {
        self.update_device_lists(vec![record]).await
    }

    async fn update_device_lists(&self, records: Vec<DeviceListRecord>) -> Result<()> {
        let mut puts = Vec::with_capacity(records.len());
        for (user, record) in last_wins(records.into_iter().map(|r| (r.user.clone(), r))) {
            puts.push(plain_put("", user, to_json(space::DEVICE_LIST, &record)?));
        }
        self.put_rows(space::DEVICE_LIST, puts, OnConflict::Replace)
            .await
    }

    async fn get_devices(&self, user: &str) -> Result<Option<DeviceListRecord>> {
        match self.get_value(space::DEVICE_LIST, "", user).await? {
            Some(plain) => Ok(Some(from_json(space::DEVICE_LIST, &plain)?)),
            None => Ok(None),
        }
    }

    async fn delete_devices(&self, user: &str) -> Result<()> {
        self.delete_one(space::DEVICE_LIST, "", user).await
    }

    async fn get_group_metadata(&self, group_jid: &str) -> Result<Option<Vec<u8>>> {
        self.get_value(space::GROUP_METADATA, "", group_jid).await
    }

    async fn put_group_metadata(&self, group_jid: &str, blob: &[u8]) -> Result<()> {
        self.put_one(space::GROUP_METADATA, "", group_jid, blob, None, None)
            .await
    }

    async fn delete_group_metadata(&self, group_jid: &str) -> Result<()> {
        self.delete_one(space::GROUP_METADATA, "", group_jid).await
    }

    async fn get_tc_token(&self, jid: &str) -> Result<Option<TcTokenEntry>> {
        let Some((plain, row)) = self.get(space::TC_TOKEN, "", jid).await? else {
            return Ok(None);
        };
        let (ts, token) = plain
            .split_first_chunk::<8>()
            .ok_or_else(|| malformed(space::TC_TOKEN, "too short"))?;
        Ok(Some(TcTokenEntry {
            token: token.to_vec(),
            token_timestamp: i64::from_be_bytes(*ts),
            sender_timestamp: row.num2,
        }))
    }

    async fn put_tc_token(&self, jid: &str, entry: &TcTokenEntry) -> Result<()> {
        self.put_one(
            space::TC_TOKEN,
            "",
            jid,
            &tc_token_value(&entry.token, entry.token_timestamp),
            tc_token_num(&entry.token, entry.token_timestamp),
            entry.sender_timestamp,
        )
        .await
    }

    async fn delete_tc_token(&self, jid: &str) -> Result<()> {
        self.delete_one(space::TC_TOKEN, "", jid).await
    }

    async fn get_all_tc_token_jids(&self) -> Result<Vec<String>> {
        // Keys only: nothing to open.
        let rows = self
            .db
            .fetch(
                &format!(
                    "SELECT {} FROM {TABLE} WHERE account = $1 AND space = $2 ORDER BY key",
                    super::COLUMNS
                ),
                vec![self.account.as_str().into(), space::TC_TOKEN.into()],
            )
            .await
            .map_err(db_err)?;
        Ok(rows.into_iter().map(|r| r.key).collect())
    }

    async fn delete_expired_tc_tokens(&self, token_cutoff: i64, sender_cutoff: i64) -> Result<u32> {
        let deleted = self
            .delete_where(
                space::TC_TOKEN,
                " AND (num IS NULL OR num < $3) AND (num2 IS NULL OR num2 < $4)",
                vec![token_cutoff.into(), sender_cutoff.into()],
            )
            .await?;
        Ok(u32::try_from(deleted).unwrap_or(u32::MAX))
    }

    async fn touch_tc_token_sender_timestamp(
        &self,
        jid: &str,
        sender_timestamp: i64,
    ) -> Result<()> {
        // One atomic upsert: a byte-less placeholder when absent, else only `num2` moves forward.
        let placeholder = self.seal(
            space::TC_TOKEN,
            "",
            jid,
            &tc_token_value(&[], sender_timestamp),
        );
        self.db
            .execute(
                &format!(
                    "INSERT INTO {TABLE} (account, space, scope, key, value, num, num2) \
                     VALUES ($1, $2, '', $3, $4, NULL, $5) \
                     ON CONFLICT (account, space, scope, key) DO UPDATE SET \
                     num2 = CASE WHEN {TABLE}.num2 IS NULL OR {TABLE}.num2 < excluded.num2 \
                                 THEN excluded.num2 ELSE {TABLE}.num2 END"
                ),
                vec![
                    self.account.as_str().into(),
                    space::TC_TOKEN.into(),
                    jid.into(),
                    placeholder.into(),
                    sender_timestamp.into(),
                ],
            )
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn store_received_tc_token(
        &self,
        jid: &str,
        token: &[u8],
        token_timestamp: i64,
    ) -> Result<()> {
        // One atomic upsert, newer-wins: a stored real token (`num` not NULL) is replaced only by
        // one at least as new; the sender timestamp (`num2`) is kept.
        let value = self.seal(
            space::TC_TOKEN,
            "",
            jid,
            &tc_token_value(token, token_timestamp),
        );
        self.db
            .execute(
                &format!(
                    "INSERT INTO {TABLE} (account, space, scope, key, value, num, num2) \
                     VALUES ($1, $2, '', $3, $4, $5, NULL) \
                     ON CONFLICT (account, space, scope, key) DO UPDATE SET \
                     value = excluded.value, num = excluded.num \
                     WHERE {TABLE}.num IS NULL OR {TABLE}.num <= $6"
                ),
                vec![
                    self.account.as_str().into(),
                    space::TC_TOKEN.into(),
                    jid.into(),
                    value.into(),
                    tc_token_num(token, token_timestamp).into(),
                    token_timestamp.into(),
                ],
            )
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn store_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
        payload: &[u8],
    ) -> Result<()> {
        self.put_one(
            space::SENT_MESSAGE,
            chat_jid,
            message_id,
            payload,
            Some(now_secs()),
            None,
        )
        .await
    }

    async fn take_sent_message(&self, chat_jid: &str, message_id: &str) -> Result<Option<Vec<u8>>> {
        let rows = self
            .db
            .fetch(
                &format!(
                    "DELETE FROM {TABLE} \
                     WHERE account = $1 AND space = $2 AND scope = $3 AND key = $4 \
                     RETURNING {}",
                    super::COLUMNS
                ),
                vec![
                    self.account.as_str().into(),
                    space::SENT_MESSAGE.into(),
                    chat_jid.into(),
                    message_id.into(),
                ],
            )
            .await
            .map_err(db_err)?;
        match rows.into_iter().next() {
            Some(row) => Ok(Some(self.open(space::SENT_MESSAGE, &row)?)),
            None => Ok(None),
        }
    }

    async fn delete_expired_sent_messages(&self, cutoff_timestamp: i64) -> Result<u32> {
        let deleted = self
            .delete_where(
                space::SENT_MESSAGE,
                " AND num < $3",
                vec![cutoff_timestamp.into()],
            )
            .await?;
        Ok(u32::try_from(deleted).unwrap_or(u32::MAX))
    }

    async fn store_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
        message: &[u8],
    ) -> Result<()> {
        self.store_pending_inbound_batch(&[PendingInboundRow {
            chat,
            sender,
            id,
            message,
        }])
        .await
    }

    async fn get_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>> {
        self.get_value(space::PENDING_INBOUND, chat, &compose(&[sender, id]))
            .await
    }

    async fn delete_pending_inbound(&self, chat: &str, sender: &str, id: &str) -> Result<()> {
        self.delete_one(space::PENDING_INBOUND, chat, &compose(&[sender, id]))
            .await
    }

    async fn delete_expired_pending_inbound(&self, cutoff_timestamp: i64) -> Result<u32> {
        let deleted = self
            .delete_where(
                space::PENDING_INBOUND,
                " AND num < $3",
                vec![cutoff_timestamp.into()],
            )
            .await?;
        Ok(u32::try_from(deleted).unwrap_or(u32::MAX))
    }

    async fn store_pending_inbound_batch(&self, rows: &[PendingInboundRow<'_>]) -> Result<()> {
        let now = now_secs();
        let puts = last_wins(
            rows.iter()
                .map(|r| ((r.chat, compose(&[r.sender, r.id])), r.message)),
        )
        .into_iter()
        .map(|((chat, key), message)| Put {
            scope: chat.to_owned(),
            key,
            plain: message.to_vec(),
            num: Some(now),
            num2: None,
        })
        .collect();
        self.put_rows(space::PENDING_INBOUND, puts, OnConflict::Replace)
            .await
    }

    async fn delete_pending_inbound_batch(&self, keys: &[PendingInboundKey<'_>]) -> Result<()> {
        let stmts = keys
            .iter()
            .map(|k| {
                self.delete_stmt(
                    space::PENDING_INBOUND,
                    " AND scope = $3 AND key = $4",
                    vec![k.chat.into(), compose(&[k.sender, k.id]).into()],
                )
            })
            .collect();
        self.db.transaction(stmts).await.map_err(db_err)?;
        Ok(())
    }
}

#[async_trait]
impl MsgSecretStore for SessionStore {
    async fn put_msg_secrets(&self, entries: Vec<MsgSecretEntry>) -> Result<usize> {
        let stored = entries.len();
        // Several writes of one key in the batch merge here as the database merges with a stored
        // row (a multi-row upsert may not touch one row twice).
        let mut index: HashMap<(Arc<str>, Arc<str>, Arc<str>), usize> = HashMap::new();
        let mut merged: Vec<MsgSecretEntry> = Vec::with_capacity(entries.len());
        for entry in entries {
            let key = (
                Arc::clone(&entry.chat),
                Arc::clone(&entry.sender),
                Arc::clone(&entry.msg_id),
            );
            match index.get(&key) {
                Some(&i) => {
                    let kept = &mut merged[i];
                    kept.secret = entry.secret;
                    kept.expires_at = merge_msg_secret_expiry(kept.expires_at, entry.expires_at);
                    kept.message_ts =
                        merge_msg_secret_message_ts(kept.message_ts, entry.message_ts);
                }
                None => {
                    index.insert(key, merged.len());
                    merged.push(entry);
                }
            }
        }
        let puts = merged
            .into_iter()
            .map(|e| Put {
                scope: e.chat.to_string(),
                key: compose(&[&e.sender, &e.msg_id]),
                plain: e.secret.to_vec(),
                num: Some(e.expires_at),
                num2: Some(e.message_ts),
            })
            .collect();
        self.put_rows(space::MSG_SECRET, puts, OnConflict::MsgSecret)
            .await?;
        Ok(stored)
    }

    async fn get_msg_secret(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get_msg_secret_with_ts(chat, sender, msg_id)
            .await?
            .map(|(secret, _)| secret))
    }

    async fn get_msg_secret_with_ts(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<(Vec<u8>, i64)>> {
        Ok(self
            .get(space::MSG_SECRET, chat, &compose(&[sender, msg_id]))
            .await?
            .map(|(secret, row)| (secret, row.num2.unwrap_or(0))))
    }

    async fn delete_expired_msg_secrets(&self, cutoff_timestamp: i64) -> Result<u32> {
        let deleted = self
            .delete_where(
                space::MSG_SECRET,
                " AND num <> 0 AND num <= $3",
                vec![cutoff_timestamp.into()],
            )
            .await?;
        Ok(u32::try_from(deleted).unwrap_or(u32::MAX))
    }
}

#[async_trait]
impl DeviceStore for SessionStore {
    async fn save(&self, device: &Device) -> Result<()> {
        let plain = to_json(space::DEVICE, device)?;
        self.put_one(space::DEVICE, "", "", &plain, None, None)
            .await
    }

    async fn load(&self) -> Result<Option<Device>> {
        match self.get_value(space::DEVICE, "", "").await? {
            Some(plain) => Ok(Some(from_json(space::DEVICE, &plain)?)),
            None => Ok(None),
        }
    }

    async fn exists(&self) -> Result<bool> {
        Ok(self.get_row(space::DEVICE, "", "").await?.is_some())
    }

    /// One device per account: materializes a fresh device unless one exists; always id 1.
    async fn create(&self) -> Result<i32> {
        let plain = to_json(space::DEVICE, &Device::new())?;
        let value = self.seal(space::DEVICE, "", "", &plain);
        self.db
            .execute(
                &format!(
                    "INSERT INTO {TABLE} (account, space, scope, key, value) \
                     VALUES ($1, $2, '', '', $3) ON CONFLICT (account, space, scope, key) DO NOTHING"
                ),
                vec![
                    self.account.as_str().into(),
                    space::DEVICE.into(),
                    value.into(),
                ],
            )
            .await
            .map_err(db_err)?;
        Ok(1)
    }
}
