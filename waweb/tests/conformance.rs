//! The session store against whatsapp-rust's reference `InMemoryBackend`: one script of calls
//! covering every method of the five storage traits, run on both, must get the same answers, on
//! SQLite and on PostgreSQL (`WAGATE_TEST_DATABASE_URL`; skipped loudly when unset, failed under
//! `CI`). Plus the store's own promises: accounts are isolated, a row moved to another account or
//! key does not open, `erase` removes one account, values are not stored in plaintext.

use std::collections::BTreeMap;
use std::sync::Arc;

use aes_siv::siv::Aes256Siv;
use aes_siv::KeyInit;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::Row;
use tempfile::TempDir;
use wacore::appstate::hash::HashState;
use wacore::appstate::processor::AppStateMutationMAC;
use wacore::store::traits::{
    AppStateSyncKey, Backend, DeviceInfo, DeviceListRecord, LidPnMappingEntry, MsgSecretEntry,
    PendingInboundKey, PendingInboundRow, TcTokenEntry,
};
use wacore::store::{Device, InMemoryBackend};
use wagate_waweb::store::{Db, SealError, Sealer, SessionCheck, SessionStore};

// ---------------------------------------------------------------------------------------------
// A real sealer: AES-SIV (RFC 5297, 512-bit key), random nonce, base64(nonce || ciphertext).
// ---------------------------------------------------------------------------------------------

struct SivSealer {
    key: [u8; 64],
}

impl SivSealer {
    fn new(seed: u8) -> Self {
        let mut key = [0u8; 64];
        for (i, b) in key.iter_mut().enumerate() {
            *b = seed.wrapping_add(i as u8);
        }
        Self { key }
    }

    fn cipher(&self) -> Aes256Siv {
        Aes256Siv::new_from_slice(&self.key).expect("64-byte key")
    }
}

impl Sealer for SivSealer {
    fn seal(&self, plain: &[u8], ad: &str) -> String {
        let nonce: [u8; 16] = rand::random();
        let headers: [&[u8]; 2] = [ad.as_bytes(), &nonce];
        let sealed = self.cipher().encrypt(headers, plain).expect("encrypt");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        STANDARD.encode(out)
    }

    fn open(&self, sealed: &str, ad: &str) -> Result<Vec<u8>, SealError> {
        let raw = STANDARD
            .decode(sealed)
            .map_err(|_| SealError("not base64".into()))?;
        if raw.len() < 32 {
            return Err(SealError("too short".into()));
        }
        let (nonce, body) = raw.split_at(16);
        let headers: [&[u8]; 2] = [ad.as_bytes(), nonce];
        self.cipher()
            .decrypt(headers, body)
            .map_err(|_| SealError("authentication failed".into()))
    }
}

#[test]
fn the_test_sealer_binds_its_associated_data() {
    let s = SivSealer::new(1);
    let a = s.seal(b"secret", "waweb/a");
    assert_ne!(a, s.seal(b"secret", "waweb/a"), "a random nonce per seal");
    assert_eq!(s.open(&a, "waweb/a").unwrap(), b"secret");
    assert!(s.open(&a, "waweb/b").is_err());
    assert!(SivSealer::new(2).open(&a, "waweb/a").is_err());
}

// ---------------------------------------------------------------------------------------------
// Databases
// ---------------------------------------------------------------------------------------------

/// A test database; dropped (PostgreSQL) with the guard.
struct TestDb {
    db: Db,
    _dir: Option<TempDir>,
    pg_name: Option<(String, String)>,
}

impl TestDb {
    async fn drop_db(self) {
        if let Db::Postgres(pool) = &self.db {
            pool.close().await;
        }
        if let Some((admin_url, name)) = self.pg_name {
            if let Ok(admin) = PgPoolOptions::new()
                .max_connections(1)
                .connect(&admin_url)
                .await
            {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                    .execute(&admin)
                    .await;
                admin.close().await;
            }
        }
    }
}

async fn sqlite_db() -> TestDb {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("wagate.db"))
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(std::time::Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .expect("open SQLite");
    sqlx::migrate!("../migrations/sqlite")
        .run(&pool)
        .await
        .expect("SQLite migrations");
    TestDb {
        db: Db::Sqlite(pool),
        _dir: Some(dir),
        pg_name: None,
    }
}

/// A fresh PostgreSQL database, or `None` when `WAGATE_TEST_DATABASE_URL` is unset (outside CI).
async fn postgres_db() -> Option<TestDb> {
    let base = match std::env::var("WAGATE_TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but WAGATE_TEST_DATABASE_URL is not: the PostgreSQL session store \
                 tests must not be skipped"
            );
            eprintln!(
                "!!! WAGATE_TEST_DATABASE_URL is not set: SKIPPING the PostgreSQL session store \
                 tests !!!"
            );
            return None;
        }
    };
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(&base)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at WAGATE_TEST_DATABASE_URL: {e}"));
    let name = format!("wagate_t_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&admin)
        .await
        .expect("create test database");
    admin.close().await;
    let mut url = url::Url::parse(&base).expect("WAGATE_TEST_DATABASE_URL is a URL");
    url.set_path(&format!("/{name}"));
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(url.as_str())
        .await
        .expect("connect to the test database");
    sqlx::migrate!("../migrations/postgres")
        .run(&pool)
        .await
        .expect("PostgreSQL migrations");
    Some(TestDb {
        db: Db::Postgres(pool),
        _dir: None,
        pg_name: Some((base, name)),
    })
}

/// Runs a raw statement (the tests' tampering).
async fn raw_execute(db: &Db, sql: &str) -> u64 {
    match db {
        Db::Sqlite(pool) => sqlx::query(sql)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
        Db::Postgres(pool) => sqlx::query(sql)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
    }
    .expect(sql)
}

/// Every stored `value` and `key`, raw.
async fn raw_cells(db: &Db) -> Vec<String> {
    let sql = "SELECT key, value FROM whatsapp_web_store";
    let rows: Vec<(String, String)> = match db {
        Db::Sqlite(pool) => sqlx::query(sql)
            .fetch_all(pool)
            .await
            .expect(sql)
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect(),
        Db::Postgres(pool) => sqlx::query(sql)
            .fetch_all(pool)
            .await
            .expect(sql)
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect(),
    };
    rows.into_iter().flat_map(|(k, v)| [k, v]).collect()
}

async fn count_rows(db: &Db, account: &str) -> i64 {
    let sql = "SELECT COUNT(*) FROM whatsapp_web_store WHERE account = $1";
    match db {
        Db::Sqlite(pool) => sqlx::query(sql)
            .bind(account)
            .fetch_one(pool)
            .await
            .expect(sql)
            .get(0),
        Db::Postgres(pool) => sqlx::query(sql)
            .bind(account)
            .fetch_one(pool)
            .await
            .expect(sql)
            .get(0),
    }
}

/// How many prekey rows are flagged uploaded (the trait has no getter for the flag).
async fn uploaded_prekeys(db: &Db) -> i64 {
    let sql = "SELECT COUNT(*) FROM whatsapp_web_store WHERE space = 'prekey' AND num2 = 1";
    match db {
        Db::Sqlite(pool) => sqlx::query(sql).fetch_one(pool).await.expect(sql).get(0),
        Db::Postgres(pool) => sqlx::query(sql).fetch_one(pool).await.expect(sql).get(0),
    }
}

fn store(db: &Db, account: &str) -> SessionStore {
    SessionStore::new(db.clone(), Arc::new(SivSealer::new(7)), account)
}

/// Generates the SQLite and PostgreSQL variants of a test taking a `&Db`.
macro_rules! on_both {
    ($name:ident, $sqlite:ident, $postgres:ident) => {
        #[tokio::test]
        async fn $sqlite() {
            let t = sqlite_db().await;
            $name(&t.db).await;
            t.drop_db().await;
        }

        #[tokio::test]
        async fn $postgres() {
            let Some(t) = postgres_db().await else {
                return;
            };
            $name(&t.db).await;
            t.drop_db().await;
        }
    };
}

// ---------------------------------------------------------------------------------------------
// The conformance script
// ---------------------------------------------------------------------------------------------

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn mac(i: u8) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[0] = i;
    m[31] = 0xA5;
    m
}

fn lid(lid: &str, pn: &str, updated_at: i64) -> LidPnMappingEntry {
    LidPnMappingEntry {
        lid: lid.into(),
        phone_number: pn.into(),
        created_at: 100,
        updated_at,
        learning_source: "usync".into(),
    }
}

fn secret(
    chat: &str,
    sender: &str,
    id: &str,
    byte: u8,
    expires_at: i64,
    message_ts: i64,
) -> MsgSecretEntry {
    MsgSecretEntry {
        chat: Arc::from(chat),
        sender: Arc::from(sender),
        msg_id: Arc::from(id),
        secret: [byte; 32],
        expires_at,
        message_ts,
    }
}

fn device_list(user: &str, devices: &[u32], ts: i64) -> DeviceListRecord {
    DeviceListRecord {
        user: user.into(),
        devices: devices
            .iter()
            .map(|&d| DeviceInfo::new(d, Some(d + 1)).with_hosting(d == 9))
            .collect(),
        timestamp: ts,
        phash: Some(format!("2:{ts}")),
        raw_id: Some(3),
    }
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Records each answer of `b` to one fixed sequence of calls.
async fn script(b: &dyn Backend) -> Vec<String> {
    let mut log: Vec<String> = Vec::new();
    macro_rules! rec {
        ($label:expr, $e:expr) => {{
            let answer = $e;
            log.push(format!("{}: {:?}", $label, answer));
        }};
    }
    macro_rules! ok {
        ($label:expr, $e:expr) => {{
            let answer = $e.await.unwrap_or_else(|e| panic!("{}: {e:?}", $label));
            rec!($label, answer);
        }};
    }
    let a1 = "5511900000001:3@s.whatsapp.net";
    let a2: Arc<str> = Arc::from("5511900000002@s.whatsapp.net");
    let a3: Arc<str> = Arc::from("100000000000003:1@lid");

    // --- identities ---
    ok!("identity missing", b.load_identity(a1));
    ok!("put identity", b.put_identity(a1, [1; 32]));
    ok!("identity", b.load_identity(a1));
    ok!("overwrite identity", b.put_identity(a1, [2; 32]));
    ok!("identity overwritten", b.load_identity(a1));
    ok!(
        "identities batch",
        b.put_identities_batch(&[
            (a2.clone(), [3; 32]),
            (a3.clone(), [4; 32]),
            (a2.clone(), [5; 32]),
        ])
    );
    ok!("identity a2 (last of batch)", b.load_identity(&a2));
    ok!("identity a3", b.load_identity(&a3));
    ok!("delete identity", b.delete_identity(&a3));
    ok!("identity deleted", b.load_identity(&a3));
    ok!("delete missing identity", b.delete_identity("nobody@lid"));

    // --- sessions ---
    ok!("session missing", b.get_session(a1));
    ok!("has session missing", b.has_session(a1));
    ok!("put session", b.put_session(a1, b"session-1"));
    ok!("session", b.get_session(a1));
    ok!("has session", b.has_session(a1));
    ok!(
        "sessions batch",
        b.put_sessions_batch(&[
            (Arc::from(a1), Bytes::from_static(b"session-1b")),
            (a2.clone(), Bytes::from_static(b"session-2")),
            (a2.clone(), Bytes::from_static(b"session-2b")),
        ])
    );
    ok!("session a1 after batch", b.get_session(a1));
    ok!("session a2 after batch", b.get_session(&a2));
    ok!("delete session", b.delete_session(&a2));
    ok!("has session deleted", b.has_session(&a2));
    ok!("session deleted", b.get_session(&a2));
    ok!(
        "signal state: session user",
        b.has_signal_state_for_user("5511900000001")
    );
    ok!(
        "signal state: prefix only",
        b.has_signal_state_for_user("551190000000")
    );
    ok!(
        "signal state: identity user",
        b.has_signal_state_for_user("5511900000002")
    );
    ok!(
        "signal state: deleted user",
        b.has_signal_state_for_user("100000000000003")
    );
    ok!("signal state: nobody", b.has_signal_state_for_user("999"));

    // --- prekeys ---
    ok!("max prekey id on empty store", b.get_max_prekey_id());
    ok!("prekey missing", b.load_prekey(5));
    ok!("store prekey", b.store_prekey(5, b"pk-5", false));
    ok!("prekey", b.load_prekey(5));
    ok!(
        "prekeys batch",
        b.store_prekeys_batch(
            &[
                (6, Bytes::from_static(b"pk-6")),
                (7, Bytes::from_static(b"pk-7")),
                (100, Bytes::from_static(b"pk-100")),
                (6, Bytes::from_static(b"pk-6b")),
            ],
            true,
        )
    );
    ok!("max prekey id", b.get_max_prekey_id());
    ok!(
        "prekeys batch load",
        b.load_prekeys_batch(&[7, 99, 5, 6, 7])
    );
    ok!("prekeys batch load none", b.load_prekeys_batch(&[]));
    ok!("mark uploaded", b.mark_prekeys_uploaded(&[5, 999]));
    ok!("mark uploaded none", b.mark_prekeys_uploaded(&[]));
    ok!("marking does not create", b.load_prekey(999));
    ok!("marked prekey unchanged", b.load_prekey(5));
    ok!("remove prekey", b.remove_prekey(100));
    ok!("prekey removed", b.load_prekey(100));
    ok!("max prekey id after remove", b.get_max_prekey_id());
    ok!("overwrite prekey", b.store_prekey(5, b"pk-5b", true));
    ok!("prekey overwritten", b.load_prekey(5));

    // --- signed prekeys ---
    ok!("signed prekey missing", b.load_signed_prekey(1));
    ok!("all signed prekeys empty", b.load_all_signed_prekeys());
    ok!("store signed 1", b.store_signed_prekey(1, b"spk-1"));
    ok!("store signed 12", b.store_signed_prekey(12, b"spk-12"));
    ok!("overwrite signed 1", b.store_signed_prekey(1, b"spk-1b"));
    ok!("signed prekey", b.load_signed_prekey(1));
    rec!(
        "all signed prekeys",
        sorted(b.load_all_signed_prekeys().await.unwrap())
    );
    ok!("remove signed 12", b.remove_signed_prekey(12));
    rec!(
        "all signed after remove",
        sorted(b.load_all_signed_prekeys().await.unwrap())
    );

    // --- sender keys ---
    let sk = "120363000000000001@g.us::5511900000001::3";
    ok!("sender key missing", b.get_sender_key(sk));
    ok!("put sender key", b.put_sender_key(sk, b"sk-1"));
    ok!("overwrite sender key", b.put_sender_key(sk, b"sk-1b"));
    ok!("sender key", b.get_sender_key(sk));
    ok!(
        "sender keys batch",
        b.put_sender_keys_batch(&[
            (Arc::from("g2::u::1"), Bytes::from_static(b"sk-2")),
            (Arc::from(sk), Bytes::from_static(b"sk-1c")),
        ])
    );
    ok!("sender key after batch", b.get_sender_key(sk));
    ok!("sender key g2", b.get_sender_key("g2::u::1"));
    ok!("delete sender key", b.delete_sender_key(sk));
    ok!("sender key deleted", b.get_sender_key(sk));

    // --- app state ---
    ok!("sync key missing", b.get_sync_key(b"\x00\x01"));
    ok!("latest sync key id none", b.get_latest_sync_key_id());
    let sync_key = |d: u8| AppStateSyncKey {
        key_data: vec![d; 32],
        fingerprint: vec![d, 1, 2],
        timestamp: 1_700_000_000 + i64::from(d),
    };
    ok!("set sync key 1", b.set_sync_key(b"\x00\x01", sync_key(1)));
    ok!("set sync key 2", b.set_sync_key(b"\xff\x02", sync_key(2)));
    ok!("sync key 1", b.get_sync_key(b"\x00\x01"));
    ok!("latest sync key id", b.get_latest_sync_key_id());
    ok!(
        "set sync key 1 again",
        b.set_sync_key(b"\x00\x01", sync_key(3))
    );
    ok!("sync key 1 overwritten", b.get_sync_key(b"\x00\x01"));
    ok!("latest sync key id again", b.get_latest_sync_key_id());

    let version = |s: HashState| {
        let map: BTreeMap<String, Vec<u8>> = s.index_value_map.into_iter().collect();
        format!(
            "{} {:?} {map:?} {}",
            s.version, s.hash, s.mac_mismatch_fatal
        )
    };
    rec!(
        "version missing",
        version(b.get_version("regular").await.unwrap())
    );
    let mut state = HashState {
        version: 7,
        hash: [9; 128],
        ..HashState::default()
    };
    state.index_value_map.insert("a".into(), vec![1, 2]);
    state.index_value_map.insert("b".into(), vec![3]);
    state.mac_mismatch_fatal = true;
    ok!("set version", b.set_version("regular", state.clone()));
    rec!("version", version(b.get_version("regular").await.unwrap()));
    state.version = 8;
    ok!("set version again", b.set_version("regular", state));
    rec!(
        "version overwritten",
        version(b.get_version("regular").await.unwrap())
    );
    rec!(
        "other version",
        version(b.get_version("critical_block").await.unwrap())
    );

    let m = |i: u8, v: u8| AppStateMutationMAC {
        index_mac: mac(i).to_vec(),
        value_mac: vec![v; 8],
    };
    ok!(
        "mutation mac missing",
        b.get_mutation_mac("regular", &mac(1))
    );
    ok!(
        "put mutation macs regular",
        b.put_mutation_macs("regular", 1, &[m(1, 10), m(2, 20), m(1, 11)])
    );
    ok!(
        "put mutation macs critical",
        b.put_mutation_macs("critical", 1, &[m(1, 30)])
    );
    ok!(
        "put mutation macs none",
        b.put_mutation_macs("critical", 2, &[])
    );
    ok!(
        "mutation mac regular 1",
        b.get_mutation_mac("regular", &mac(1))
    );
    ok!(
        "mutation mac critical 1",
        b.get_mutation_mac("critical", &mac(1))
    );
    rec!(
        "mutation macs batch",
        b.get_mutation_macs("regular", &[mac(1), mac(2), mac(3)])
            .await
            .unwrap()
            .into_iter()
            .collect::<BTreeMap<_, _>>()
    );
    ok!(
        "delete mutation macs",
        b.delete_mutation_macs("regular", &[mac(1).to_vec(), vec![7]])
    );
    ok!(
        "delete mutation macs none",
        b.delete_mutation_macs("regular", &[])
    );
    ok!(
        "mutation mac deleted",
        b.get_mutation_mac("regular", &mac(1))
    );
    ok!("mutation mac kept", b.get_mutation_mac("regular", &mac(2)));
    ok!("clear mutation macs", b.clear_mutation_macs("regular"));
    ok!(
        "mutation mac cleared",
        b.get_mutation_mac("regular", &mac(2))
    );
    ok!(
        "other collection kept",
        b.get_mutation_mac("critical", &mac(1))
    );

    // --- sender key devices ---
    let (g1, g2) = ("120363000000000001@g.us", "120363000000000002@g.us");
    let (d1, d2, d3) = (
        "5511900000001:1@s.whatsapp.net",
        "5511900000002@s.whatsapp.net",
        "9:2@lid",
    );
    ok!("sender key devices empty", b.get_sender_key_devices(g1));
    ok!(
        "set sender key status g1",
        b.set_sender_key_status(g1, &[(d1, true), (d2, false), (d3, true)])
    );
    ok!(
        "set sender key status g2",
        b.set_sender_key_status(g2, &[(d1, true)])
    );
    ok!(
        "set sender key status none",
        b.set_sender_key_status(g2, &[])
    );
    rec!(
        "sender key devices g1",
        sorted(b.get_sender_key_devices(g1).await.unwrap())
    );
    ok!(
        "flip d2",
        b.set_sender_key_status(g1, &[(d2, true), (d3, false)])
    );
    rec!(
        "sender key devices g1 flipped",
        sorted(b.get_sender_key_devices(g1).await.unwrap())
    );
    ok!(
        "delete device rows",
        b.delete_sender_key_device_rows(&[d1, "unknown"])
    );
    ok!(
        "delete device rows none",
        b.delete_sender_key_device_rows(&[])
    );
    rec!(
        "g1 without d1",
        sorted(b.get_sender_key_devices(g1).await.unwrap())
    );
    rec!(
        "g2 without d1",
        sorted(b.get_sender_key_devices(g2).await.unwrap())
    );
    ok!("set g2 again", b.set_sender_key_status(g2, &[(d2, false)]));
    ok!("clear g1", b.clear_sender_key_devices(g1));
    rec!(
        "g1 cleared",
        sorted(b.get_sender_key_devices(g1).await.unwrap())
    );
    rec!(
        "g2 kept",
        sorted(b.get_sender_key_devices(g2).await.unwrap())
    );
    ok!("clear all", b.clear_all_sender_key_devices());
    rec!(
        "g2 cleared",
        sorted(b.get_sender_key_devices(g2).await.unwrap())
    );

    // --- LID / phone number ---
    ok!("lid mapping missing", b.get_lid_mapping("100000000000001"));
    ok!("pn mapping missing", b.get_pn_mapping("5511900000001"));
    ok!(
        "put lid 1",
        b.put_lid_mapping(&lid("100000000000001", "5511900000001", 110))
    );
    ok!(
        "put lid mappings",
        b.put_lid_mappings(&[
            lid("100000000000002", "5511900000002", 120),
            lid("100000000000003", "5511900000003", 130),
        ])
    );
    ok!("put lid mappings none", b.put_lid_mappings(&[]));
    ok!("lid -> pn", b.get_lid_mapping("100000000000001"));
    ok!("pn -> lid", b.get_pn_mapping("5511900000002"));
    ok!(
        "remap lid 1",
        b.put_lid_mapping(&lid("100000000000001", "5511900000004", 140))
    );
    ok!("old pn forgotten", b.get_pn_mapping("5511900000001"));
    ok!("new pn", b.get_pn_mapping("5511900000004"));
    ok!("lid 1 remapped", b.get_lid_mapping("100000000000001"));
    ok!(
        "newer lid for pn",
        b.put_lid_mapping(&lid("100000000000005", "5511900000004", 150))
    );
    ok!("pn -> newest lid", b.get_pn_mapping("5511900000004"));
    ok!("older lid still maps", b.get_lid_mapping("100000000000001"));
    let mut all = b.get_all_lid_mappings().await.unwrap();
    all.sort_by(|x, y| x.lid.cmp(&y.lid));
    rec!("all lid mappings", all);

    // --- base keys ---
    ok!("base key missing", b.has_same_base_key(a1, "M1", b"base"));
    ok!("save base key", b.save_base_key(a1, "M1", b"base"));
    ok!("same base key", b.has_same_base_key(a1, "M1", b"base"));
    ok!("other base key", b.has_same_base_key(a1, "M1", b"other"));
    ok!("other message", b.has_same_base_key(a1, "M2", b"base"));
    ok!("overwrite base key", b.save_base_key(a1, "M1", b"base-2"));
    ok!("same base key 2", b.has_same_base_key(a1, "M1", b"base-2"));
    ok!("delete base key", b.delete_base_key(a1, "M1"));
    ok!("base key deleted", b.has_same_base_key(a1, "M1", b"base-2"));

    // --- device lists ---
    ok!("devices missing", b.get_devices("5511900000001"));
    ok!(
        "update device list",
        b.update_device_list(device_list("5511900000001", &[0, 2], 1))
    );
    ok!("devices", b.get_devices("5511900000001"));
    ok!(
        "update device lists",
        b.update_device_lists(vec![
            device_list("5511900000001", &[0, 9], 2),
            device_list("100000000000002", &[0], 3),
        ])
    );
    ok!("update device lists none", b.update_device_lists(vec![]));
    ok!("devices updated", b.get_devices("5511900000001"));
    ok!("devices 2", b.get_devices("100000000000002"));
    ok!("delete devices", b.delete_devices("5511900000001"));
    ok!("devices deleted", b.get_devices("5511900000001"));

    // --- group metadata ---
    ok!("group metadata missing", b.get_group_metadata(g1));
    ok!("put group metadata", b.put_group_metadata(g1, b"blob-1"));
    ok!(
        "put group metadata again",
        b.put_group_metadata(g1, b"blob-2")
    );
    ok!("group metadata", b.get_group_metadata(g1));
    ok!("delete group metadata", b.delete_group_metadata(g1));
    ok!("group metadata deleted", b.get_group_metadata(g1));

    // --- tc tokens ---
    let (j1, j2, j3, j4, j5) = ("1@lid", "2@lid", "3@lid", "4@lid", "5@lid");
    let tc = |token: &[u8], ts: i64, sender: Option<i64>| TcTokenEntry {
        token: token.to_vec(),
        token_timestamp: ts,
        sender_timestamp: sender,
    };
    ok!("tc token missing", b.get_tc_token(j1));
    ok!("all tc jids empty", b.get_all_tc_token_jids());
    ok!(
        "put tc token",
        b.put_tc_token(j1, &tc(b"tok-1", 1000, None))
    );
    ok!("tc token", b.get_tc_token(j1));
    ok!("touch sender", b.touch_tc_token_sender_timestamp(j1, 2000));
    ok!("tc token touched", b.get_tc_token(j1));
    ok!(
        "touch sender older",
        b.touch_tc_token_sender_timestamp(j1, 1500)
    );
    ok!("sender never regresses", b.get_tc_token(j1));
    ok!("touch new jid", b.touch_tc_token_sender_timestamp(j2, 1800));
    ok!("placeholder", b.get_tc_token(j2));
    ok!(
        "received over placeholder",
        b.store_received_tc_token(j2, b"tok-2", 1700)
    );
    ok!("placeholder replaced, sender kept", b.get_tc_token(j2));
    ok!(
        "received stale",
        b.store_received_tc_token(j1, b"tok-old", 900)
    );
    ok!("stale ignored", b.get_tc_token(j1));
    ok!(
        "received newer",
        b.store_received_tc_token(j1, b"tok-1b", 1100)
    );
    ok!("newer wins, sender kept", b.get_tc_token(j1));
    ok!(
        "received same time",
        b.store_received_tc_token(j1, b"tok-1c", 1100)
    );
    ok!("same time wins", b.get_tc_token(j1));
    ok!(
        "received new jid",
        b.store_received_tc_token(j3, b"tok-3", 1000)
    );
    ok!("received new", b.get_tc_token(j3));
    ok!("put empty token", b.put_tc_token(j4, &tc(b"", 5000, None)));
    ok!(
        "put stale token",
        b.put_tc_token(j5, &tc(b"tok-5", 500, Some(600)))
    );
    rec!(
        "all tc jids",
        sorted(b.get_all_tc_token_jids().await.unwrap())
    );
    ok!("expire tc tokens", b.delete_expired_tc_tokens(1000, 1900));
    rec!(
        "tc jids after expiry",
        sorted(b.get_all_tc_token_jids().await.unwrap())
    );
    ok!(
        "expire tc tokens again",
        b.delete_expired_tc_tokens(1101, 1800)
    );
    rec!(
        "tc jids after second expiry",
        sorted(b.get_all_tc_token_jids().await.unwrap())
    );
    ok!("j1 kept by its sender bucket", b.get_tc_token(j1));
    ok!(
        "put tc token overwrite",
        b.put_tc_token(j1, &tc(b"tok-1d", 3000, None))
    );
    ok!("put overwrites sender", b.get_tc_token(j1));
    ok!("delete tc token", b.delete_tc_token(j2));
    ok!("tc token deleted", b.get_tc_token(j2));

    // --- sent messages ---
    let (c1, c2) = ("5511900000001@s.whatsapp.net", "120363000000000001@g.us");
    ok!("take missing", b.take_sent_message(c1, "S1"));
    ok!("store sent 1", b.store_sent_message(c1, "S1", b"payload-1"));
    ok!("store sent 2", b.store_sent_message(c1, "S2", b"payload-2"));
    ok!(
        "store sent other chat",
        b.store_sent_message(c2, "S1", b"payload-3")
    );
    ok!(
        "store sent overwrite",
        b.store_sent_message(c1, "S1", b"payload-1b")
    );
    ok!("take", b.take_sent_message(c1, "S1"));
    ok!("take removes", b.take_sent_message(c1, "S1"));
    ok!(
        "expire sent none",
        b.delete_expired_sent_messages(now() - 1000)
    );
    ok!(
        "expire sent all",
        b.delete_expired_sent_messages(now() + 1000)
    );
    ok!("expired gone", b.take_sent_message(c2, "S1"));

    // --- pending inbound ---
    let (s1, s2) = (
        "5511900000001:3@s.whatsapp.net",
        "5511900000002@s.whatsapp.net",
    );
    ok!("pending missing", b.get_pending_inbound(c1, s1, "P1"));
    ok!(
        "store pending",
        b.store_pending_inbound(c1, s1, "P1", b"msg-1")
    );
    ok!("pending", b.get_pending_inbound(c1, s1, "P1"));
    ok!(
        "store pending overwrite",
        b.store_pending_inbound(c1, s1, "P1", b"msg-1b")
    );
    ok!("pending overwritten", b.get_pending_inbound(c1, s1, "P1"));
    ok!(
        "store pending batch",
        b.store_pending_inbound_batch(&[
            PendingInboundRow {
                chat: c1,
                sender: s1,
                id: "P2",
                message: b"msg-2"
            },
            PendingInboundRow {
                chat: c1,
                sender: s2,
                id: "P1",
                message: b"msg-3"
            },
            PendingInboundRow {
                chat: c2,
                sender: s1,
                id: "P1",
                message: b"msg-4"
            },
        ])
    );
    ok!(
        "store pending batch none",
        b.store_pending_inbound_batch(&[])
    );
    ok!("pending P2", b.get_pending_inbound(c1, s1, "P2"));
    ok!("pending other sender", b.get_pending_inbound(c1, s2, "P1"));
    ok!("pending other chat", b.get_pending_inbound(c2, s1, "P1"));
    ok!(
        "pending sender/id are not mixed",
        b.get_pending_inbound(c1, "P1", s1)
    );
    ok!("delete pending", b.delete_pending_inbound(c1, s1, "P1"));
    ok!("pending deleted", b.get_pending_inbound(c1, s1, "P1"));
    ok!(
        "delete pending batch",
        b.delete_pending_inbound_batch(&[
            PendingInboundKey {
                chat: c1,
                sender: s1,
                id: "P2"
            },
            PendingInboundKey {
                chat: c1,
                sender: s2,
                id: "P1"
            },
            PendingInboundKey {
                chat: c1,
                sender: s2,
                id: "missing"
            },
        ])
    );
    ok!(
        "delete pending batch none",
        b.delete_pending_inbound_batch(&[])
    );
    ok!("pending batch deleted", b.get_pending_inbound(c1, s2, "P1"));
    ok!(
        "expire pending none",
        b.delete_expired_pending_inbound(now() - 1000)
    );
    ok!("pending survives", b.get_pending_inbound(c2, s1, "P1"));
    ok!(
        "expire pending all",
        b.delete_expired_pending_inbound(now() + 1000)
    );
    ok!("pending expired", b.get_pending_inbound(c2, s1, "P1"));

    // --- message secrets ---
    ok!("msg secret missing", b.get_msg_secret(c1, s1, "X1"));
    ok!(
        "msg secret with ts missing",
        b.get_msg_secret_with_ts(c1, s1, "X1")
    );
    ok!("put msg secret", b.put_msg_secret(c1, s1, "X1", &[1; 32]));
    ok!("msg secret", b.get_msg_secret(c1, s1, "X1"));
    ok!("msg secret with ts", b.get_msg_secret_with_ts(c1, s1, "X1"));
    ok!(
        "put msg secrets",
        b.put_msg_secrets(vec![
            secret(c1, s1, "X2", 2, 1000, 50),
            secret(c1, s1, "X3", 3, 2000, 0),
            secret(c1, s1, "X2", 4, 1500, 40),
            secret(c2, s2, "X2", 5, 900, 10),
        ])
    );
    ok!("put msg secrets none", b.put_msg_secrets(vec![]));
    ok!(
        "batch duplicate merged",
        b.get_msg_secret_with_ts(c1, s1, "X2")
    );
    ok!("other chat", b.get_msg_secret_with_ts(c2, s2, "X2"));
    ok!(
        "merge with stored",
        b.put_msg_secrets(vec![
            secret(c1, s1, "X2", 6, 1200, 60),
            secret(c1, s1, "X3", 7, 0, 0),
            secret(c1, s1, "X1", 8, 3000, 70),
        ])
    );
    ok!("X2 merged", b.get_msg_secret_with_ts(c1, s1, "X2"));
    ok!("X3 merged", b.get_msg_secret_with_ts(c1, s1, "X3"));
    ok!("X1 merged", b.get_msg_secret_with_ts(c1, s1, "X1"));
    ok!("expire secrets before", b.delete_expired_msg_secrets(899));
    ok!(
        "expire secrets at cutoff",
        b.delete_expired_msg_secrets(900)
    );
    ok!("expired at cutoff", b.get_msg_secret(c2, s2, "X2"));
    ok!("expire secrets 1499", b.delete_expired_msg_secrets(1499));
    ok!("X2 still there", b.get_msg_secret(c1, s1, "X2"));
    ok!("expire secrets 1500", b.delete_expired_msg_secrets(1500));
    ok!("X2 expired", b.get_msg_secret(c1, s1, "X2"));
    ok!(
        "expire secrets far",
        b.delete_expired_msg_secrets(i64::MAX / 2)
    );
    ok!("never-expiring X1 kept", b.get_msg_secret(c1, s1, "X1"));
    ok!("never-expiring X3 kept", b.get_msg_secret(c1, s1, "X3"));

    // --- device ---
    ok!("device exists on empty", b.exists());
    rec!("device load on empty", b.load().await.unwrap().is_some());
    ok!("create device", b.create());
    ok!("device exists after create", b.exists());
    rec!(
        "device load after create",
        b.load().await.unwrap().is_some()
    );
    let mut device = Device::new();
    device.push_name = "Loja".into();
    device.pn = Some("5511900000009@s.whatsapp.net".parse().unwrap());
    device.lid = Some("100000000000009@lid".parse().unwrap());
    device.next_pre_key_id = 42;
    device.nct_salt = Some(vec![1, 2, 3]);
    device.edge_routing_info = Some(vec![4, 5]);
    let saved = serde_json::to_string(&device).unwrap();
    ok!("save device", b.save(&device));
    rec!(
        "device round trip",
        serde_json::to_string(&b.load().await.unwrap().unwrap()).unwrap() == saved
    );
    device.push_name = "Loja 2".into();
    ok!("save device again", b.save(&device));
    rec!(
        "device overwritten",
        b.load().await.unwrap().unwrap().push_name
    );
    ok!("device exists", b.exists());
    ok!("snapshot", b.snapshot_db("conformance", Some(b"extra")));
    rec!("resource report", b.resource_report().await);

    log
}

async fn conformance(db: &Db) {
    let reference = script(&InMemoryBackend::new()).await;
    let ours = script(&store(db, "acct-1")).await;
    assert_eq!(reference.len(), ours.len());
    for (want, got) in reference.iter().zip(&ours) {
        assert_eq!(got, want, "the session store differs from InMemoryBackend");
    }
    // A second account on the same database answers exactly the same (nothing leaks in).
    let second = script(&store(db, "acct-2")).await;
    for (want, got) in reference.iter().zip(&second) {
        assert_eq!(got, want, "a second account differs from InMemoryBackend");
    }
}
on_both!(conformance, conformance_sqlite, conformance_postgres);

// ---------------------------------------------------------------------------------------------
// The store's own promises
// ---------------------------------------------------------------------------------------------

async fn accounts_are_isolated(db: &Db) {
    use wacore::store::traits::{DeviceStore, ProtocolStore, SignalStore};
    let a = store(db, "acct-a");
    let b = store(db, "acct-b");
    a.put_session("x@lid", b"a-session").await.unwrap();
    a.store_prekey(9, b"a-pk", false).await.unwrap();
    a.put_lid_mapping(&lid("1", "2", 3)).await.unwrap();
    a.create().await.unwrap();
    a.store_sent_message("c", "m", b"p").await.unwrap();

    assert_eq!(b.get_session("x@lid").await.unwrap(), None);
    assert!(!b.has_session("x@lid").await.unwrap());
    assert!(!b.has_signal_state_for_user("x").await.unwrap());
    assert_eq!(b.get_max_prekey_id().await.unwrap(), 0);
    assert!(b.get_all_lid_mappings().await.unwrap().is_empty());
    assert!(b.get_pn_mapping("2").await.unwrap().is_none());
    assert!(!b.exists().await.unwrap());
    assert_eq!(b.check().await.unwrap(), SessionCheck::Empty);
    assert_eq!(b.delete_expired_sent_messages(i64::MAX).await.unwrap(), 0);
    assert_eq!(b.take_sent_message("c", "m").await.unwrap(), None);

    // b's writes and deletes do not touch a.
    b.put_session("x@lid", b"b-session").await.unwrap();
    b.clear_all_sender_key_devices().await.unwrap();
    b.delete_session("x@lid").await.unwrap();
    assert_eq!(
        a.get_session("x@lid").await.unwrap().as_deref(),
        Some(&b"a-session"[..])
    );
    assert_eq!(a.get_max_prekey_id().await.unwrap(), 9);
    assert!(a.exists().await.unwrap());
}
on_both!(accounts_are_isolated, isolated_sqlite, isolated_postgres);

async fn check_and_erase(db: &Db) {
    use wacore::store::traits::{DeviceStore, SignalStore};
    let a = store(db, "acct-a");
    let b = store(db, "acct-b");
    assert_eq!(a.check().await.unwrap(), SessionCheck::Empty);
    a.create().await.unwrap();
    assert_eq!(a.create().await.unwrap(), 1, "create is idempotent");
    assert_eq!(
        a.check().await.unwrap(),
        SessionCheck::Empty,
        "created, not paired"
    );
    let mut device = a.load().await.unwrap().unwrap();
    device.pn = Some("5511900000009@s.whatsapp.net".parse().unwrap());
    a.save(&device).await.unwrap();
    assert_eq!(a.check().await.unwrap(), SessionCheck::Paired);
    a.put_session("x@lid", b"a").await.unwrap();

    b.save(&device).await.unwrap();
    b.put_session("x@lid", b"b").await.unwrap();

    a.erase().await.unwrap();
    assert_eq!(count_rows(db, "acct-a").await, 0);
    assert_eq!(a.check().await.unwrap(), SessionCheck::Empty);
    assert_eq!(a.get_session("x@lid").await.unwrap(), None);
    assert_eq!(b.check().await.unwrap(), SessionCheck::Paired);
    assert_eq!(
        b.get_session("x@lid").await.unwrap().as_deref(),
        Some(&b"b"[..])
    );
}
on_both!(
    check_and_erase,
    check_and_erase_sqlite,
    check_and_erase_postgres
);

async fn moved_rows_do_not_open(db: &Db) {
    use wacore::store::traits::{DeviceStore, SignalStore};
    let a = store(db, "acct-a");
    let b = store(db, "acct-b");
    let mut device = Device::new();
    device.pn = Some("5511900000009@s.whatsapp.net".parse().unwrap());
    a.save(&device).await.unwrap();
    a.put_session("x@lid", b"a-session").await.unwrap();

    // The device row copied to another account.
    raw_execute(
        db,
        "INSERT INTO whatsapp_web_store (account, space, scope, key, value, num, num2) \
         SELECT 'acct-b', space, scope, key, value, num, num2 FROM whatsapp_web_store \
         WHERE account = 'acct-a' AND space = 'device'",
    )
    .await;
    assert!(b.exists().await.unwrap());
    assert!(matches!(b.check().await.unwrap(), SessionCheck::Corrupt(_)));
    assert!(
        b.load().await.is_err(),
        "a foreign device row is an error, not absent"
    );

    // A session row copied to another key of the same account.
    raw_execute(
        db,
        "INSERT INTO whatsapp_web_store (account, space, scope, key, value, num, num2) \
         SELECT account, space, scope, 'y@lid', value, num, num2 FROM whatsapp_web_store \
         WHERE account = 'acct-a' AND space = 'session' AND key = 'x@lid'",
    )
    .await;
    assert!(a.get_session("y@lid").await.is_err());
    // ... and to another space.
    raw_execute(
        db,
        "INSERT INTO whatsapp_web_store (account, space, scope, key, value, num, num2) \
         SELECT account, 'sender_key', scope, key, value, num, num2 FROM whatsapp_web_store \
         WHERE account = 'acct-a' AND space = 'session' AND key = 'x@lid'",
    )
    .await;
    assert!(a.get_sender_key("x@lid").await.is_err());
    assert_eq!(
        a.get_session("x@lid").await.unwrap().as_deref(),
        Some(&b"a-session"[..])
    );
    assert_eq!(a.check().await.unwrap(), SessionCheck::Paired);

    // A device row that opens but is not a device.
    raw_execute(
        db,
        "DELETE FROM whatsapp_web_store WHERE account = 'acct-b'",
    )
    .await;
    let sealer = SivSealer::new(7);
    let ad = format!(
        "waweb/{}",
        serde_json::to_string(&["acct-b", "device", "", ""]).unwrap()
    );
    let garbage = sealer.seal(b"not a device", &ad);
    raw_execute(
        db,
        &format!(
            "INSERT INTO whatsapp_web_store (account, space, scope, key, value) \
             VALUES ('acct-b', 'device', '', '', '{garbage}')"
        ),
    )
    .await;
    assert!(matches!(b.check().await.unwrap(), SessionCheck::Corrupt(_)));

    // Another master key opens nothing.
    let other = SessionStore::new(db.clone(), Arc::new(SivSealer::new(8)), "acct-a");
    assert!(other.get_session("x@lid").await.is_err());
    assert!(matches!(
        other.check().await.unwrap(),
        SessionCheck::Corrupt(_)
    ));
}
on_both!(
    moved_rows_do_not_open,
    moved_rows_sqlite,
    moved_rows_postgres
);

async fn values_are_sealed(db: &Db) {
    use wacore::store::traits::{DeviceStore, MsgSecretStore, SignalStore};
    let a = store(db, "acct-a");
    let key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
    let session = b"a very recognizable session record 0123456789";
    a.put_identity("x@lid", key).await.unwrap();
    a.put_session("x@lid", session).await.unwrap();
    a.put_msg_secret("c", "s", "m", &key).await.unwrap();
    let device = Device::new();
    a.save(&device).await.unwrap();

    let cells = raw_cells(db).await.join("\n");
    let identity_private = device.identity_key.private_key.serialize();
    for needle in [&key[..], &session[..], &identity_private[..]] {
        for form in [
            hex::encode(needle),
            STANDARD.encode(needle),
            String::from_utf8_lossy(needle).into_owned(),
        ] {
            assert!(!cells.contains(&form), "a value is stored in plaintext");
        }
    }
    // And the numbers of the JSON byte arrays of the serialized device.
    let json_bytes = serde_json::to_string(&identity_private.to_vec()).unwrap();
    assert!(!cells.contains(json_bytes.trim_matches(['[', ']'])));
}
on_both!(values_are_sealed, sealed_sqlite, sealed_postgres);

/// The transactions and the multi-row statements hold past one chunk of rows.
async fn large_batches(db: &Db) {
    use wacore::store::traits::{AppSyncStore, SignalStore};
    let a = store(db, "acct-a");
    let keys: Vec<(u32, Bytes)> = (1..=1000u32)
        .map(|i| (i, Bytes::from(i.to_be_bytes().to_vec())))
        .collect();
    a.store_prekeys_batch(&keys, false).await.unwrap();
    assert_eq!(uploaded_prekeys(db).await, 0);
    a.store_prekey(3, b"pk-3", true).await.unwrap();
    assert_eq!(
        uploaded_prekeys(db).await,
        1,
        "store_prekey keeps its uploaded flag"
    );
    assert_eq!(a.get_max_prekey_id().await.unwrap(), 1000);
    let ids: Vec<u32> = (1..=1100).rev().collect();
    let loaded = a.load_prekeys_batch(&ids).await.unwrap();
    assert_eq!(loaded.len(), 1000);
    assert_eq!(
        loaded[0],
        (1000, Bytes::from(1000u32.to_be_bytes().to_vec()))
    );
    a.mark_prekeys_uploaded(&ids).await.unwrap();
    assert_eq!(
        uploaded_prekeys(db).await,
        1000,
        "every stored prekey marked uploaded, none created"
    );

    let macs: Vec<AppStateMutationMAC> = (0..600u32)
        .map(|i| {
            let mut index = [0u8; 32];
            index[..4].copy_from_slice(&i.to_be_bytes());
            AppStateMutationMAC {
                index_mac: index.to_vec(),
                value_mac: vec![1; 4],
            }
        })
        .collect();
    a.put_mutation_macs("regular", 1, &macs).await.unwrap();
    let wanted: Vec<[u8; 32]> = macs
        .iter()
        .map(|m| m.index_mac.clone().try_into().unwrap())
        .collect();
    assert_eq!(
        a.get_mutation_macs("regular", &wanted).await.unwrap().len(),
        600
    );
    let index_macs: Vec<Vec<u8>> = macs.iter().map(|m| m.index_mac.clone()).collect();
    a.delete_mutation_macs("regular", &index_macs)
        .await
        .unwrap();
    assert!(a
        .get_mutation_macs("regular", &wanted)
        .await
        .unwrap()
        .is_empty());
}
on_both!(large_batches, large_batches_sqlite, large_batches_postgres);
