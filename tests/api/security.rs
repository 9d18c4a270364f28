//! Security properties that need the real binary or the stored bytes: the canary key never
//! leaks (item 8), ciphertext is bound to its row (item 6), key rotation (item 7), boot refuses
//! weak config (item 3).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::ai_config::seed_global_body;
use crate::both_stores;
use crate::helpers::{master_key, Backend, Binary, TestApp};

const CANARY: &str = "sk-canary-7f3a9c1e5b2d4068-do-not-leak";
const CANARY2: &str = "sk-canary-account-55aa11ee99-do-not-leak";
/// Sent to a model stub that answers 401 quoting it, as OpenAI's "Incorrect API key" does.
const CANARY3: &str = "sk-canary-model-call-0c0ffee123-do-not-leak";

/// Everything the events table holds, as text, whatever the backend.
async fn dump_events(vars: &HashMap<String, String>, dir: &std::path::Path) -> String {
    let rows: Vec<(String, String, String)> = match vars.get("WAGATE_DATABASE_URL") {
        Some(url) => {
            let pool = sqlx::PgPool::connect(url).await.expect("pg");
            let rows =
                sqlx::query_as("SELECT event_type, payload::text, metadata::text FROM events")
                    .fetch_all(&pool)
                    .await
                    .expect("dump");
            pool.close().await;
            rows
        }
        None => {
            let path = dir.join("wagate.db");
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                .await
                .expect("sqlite");
            let rows = sqlx::query_as("SELECT event_type, payload, metadata FROM events")
                .fetch_all(&pool)
                .await
                .expect("dump");
            pool.close().await;
            rows
        }
    };
    rows.into_iter()
        .map(|(a, b, c)| format!("{a} {b} {c}\n"))
        .collect()
}

async fn canary_never_leaks(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mut vars) = TestApp::vars(backend, &dir).await else {
        return;
    };
    // A model server on loopback that refuses the key and quotes it back in its error body.
    let model = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(401).set_body_json(json!({
            "error": {"message": format!("Incorrect API key provided: {CANARY3}"),
                      "type": "invalid_request_error", "code": "invalid_api_key"}
        })))
        .mount(&model)
        .await;
    vars.insert("WAGATE_ALLOW_PRIVATE_NETWORKS".into(), "127.0.0.0/8".into());
    let bin = Binary::start(&vars, "trace").await;
    let base = bin.base.clone();
    let client = reqwest::Client::new();
    let token = wagate::config::Config::from_vars(&vars)
        .expect("config")
        .0
        .jwt
        .issue("leak-test", Duration::from_secs(600))
        .expect("token")
        .0;
    let mut bodies = String::new();
    let call = |m: reqwest::Method, p: &str, b: Option<serde_json::Value>| {
        let mut r = client.request(m, format!("{base}{p}")).bearer_auth(&token);
        if let Some(b) = b {
            r = r.json(&b);
        }
        r
    };
    let mut global = seed_global_body();
    global["api_key"] = json!(CANARY);
    let reqs = vec![
        call(
            reqwest::Method::POST,
            "/v1/accounts",
            Some(json!({"id":"acme","transport":"sandbox"})),
        ),
        call(reqwest::Method::PUT, "/v1/ai/global", Some(global)),
        call(
            reqwest::Method::PUT,
            "/v1/accounts/acme/ai",
            Some(json!({"api_key": CANARY2, "base_url": "https://api.groq.com/openai/v1"})),
        ),
        // A request that fails validation while carrying the key.
        call(
            reqwest::Method::PUT,
            "/v1/ai/global",
            Some(json!({"api_key": CANARY, "temperature": 9})),
        ),
        call(
            reqwest::Method::PUT,
            "/v1/ai/global",
            Some(json!({"api_key": CANARY, "bogus": 1})),
        ),
        call(reqwest::Method::GET, "/v1/ai/global", None),
        call(reqwest::Method::GET, "/v1/accounts/acme/ai", None),
        call(
            reqwest::Method::GET,
            "/v1/accounts/acme/chats/1@s.whatsapp.net/ai/effective",
            None,
        ),
        call(
            reqwest::Method::POST,
            "/v1/accounts",
            Some(json!({"id":"beta","transport":"sandbox"})),
        ),
        call(
            reqwest::Method::PUT,
            "/v1/accounts/beta/ai",
            Some(
                json!({"api_key": CANARY3, "base_url": format!("{}/v1", model.uri()),
                        "reply_delay_seconds": 0}),
            ),
        ),
        // A real reply: the model call carries the key, the model quotes it back.
        call(
            reqwest::Method::POST,
            "/v1/accounts/beta/sandbox/inbound",
            Some(
                json!({"chat_id": "491701234567@s.whatsapp.net", "from": "491701234567",
                        "text": "hello"}),
            ),
        ),
    ];
    for r in reqs {
        let resp = r.send().await.expect("send");
        bodies.push_str(&format!("{:?}\n", resp.headers()));
        bodies.push_str(&resp.text().await.expect("text"));
    }
    // The reply fails on the model's 401; wait for its row.
    let mut failed = false;
    for _ in 0..100 {
        let logs = call(reqwest::Method::GET, "/v1/ai/logs?account_id=beta", None)
            .send()
            .await
            .expect("logs")
            .text()
            .await
            .expect("text");
        if logs.contains("\"failed\"") {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failed, "the reply to beta failed on the model's 401");
    let sent_key = model
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .any(|r| {
            r.headers
                .get("authorization")
                .is_some_and(|v| v.to_str().is_ok_and(|v| v.ends_with(CANARY3)))
        });
    assert!(sent_key, "the model call carried the key");
    // Every read after the calls: the API, /metrics, and the dashboard's pages (the session
    // cookie is the admin JWT).
    let mut reads: Vec<reqwest::RequestBuilder> = [
        "/v1/ai/logs",
        "/v1/ai/logs?account_id=beta",
        "/v1/accounts/beta/chats/491701234567@s.whatsapp.net/messages",
        "/v1/accounts/beta/chats/491701234567@s.whatsapp.net/ai/effective",
        "/v1/events",
        "/openapi.json",
    ]
    .iter()
    .map(|p| call(reqwest::Method::GET, p, None))
    .collect();
    reads.push(client.get(format!("{base}/metrics")));
    for page in [
        "/ai",
        "/accounts",
        "/accounts/acme",
        "/accounts/beta",
        "/accounts/beta/chats/491701234567%40s.whatsapp.net",
        "/logs",
        "/audit",
        "/test",
    ] {
        reads.push(
            client
                .get(format!("{base}{page}"))
                .header("cookie", format!("wagate_session={token}")),
        );
    }
    let mut pages_read = 0;
    for r in reads {
        let resp = r.send().await.expect("send");
        if resp.status() == 200 {
            pages_read += 1;
        }
        bodies.push_str(&format!("{:?}\n", resp.headers()));
        bodies.push_str(&resp.text().await.expect("text"));
    }
    assert_eq!(pages_read, 15, "every read answered 200");
    assert!(
        bodies.contains("wagate_replies_total") || bodies.contains("# TYPE"),
        "metrics read"
    );
    let (out, logs) = bin.finish().await;
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "trace logging was on"
    );
    let stored = dump_events(&vars, dir.path()).await;
    assert!(stored.contains("AiApiKeySet"), "keys were stored: {stored}");
    for canary in [CANARY, CANARY2, CANARY3, "canary"] {
        assert!(!bodies.contains(canary), "{canary} in a response");
        assert!(!logs.contains(canary), "{canary} in the logs");
        assert!(!out.contains(canary), "{canary} on stdout");
        assert!(!stored.contains(canary), "{canary} in the event store");
    }
}

both_stores!(canary_key_never_leaks, canary_never_leaks(Backend));

/// Item 6: the stored ciphertext of one owner does not open as another owner's.
async fn ciphertext_is_bound_to_its_owner(app: TestApp) {
    app.create_account("a").await;
    let r = app
        .admin(
            "PUT",
            "/v1/accounts/a/ai",
            Some(json!({"api_key": "sk-owner-a"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let sealed = app
        .app()
        .model()
        .account("a")
        .and_then(|a| a.ai.api_key.clone())
        .expect("stored key")
        .sealed;
    let keyring = &app.app().config.keyring;
    let opened = keyring.open_string(&sealed, &wagate::crypto::api_key_ad("account:a"));
    assert!(opened.is_ok(), "opens for its owner");
    assert!(keyring
        .open_string(&sealed, &wagate::crypto::api_key_ad("account:b"))
        .is_err());
    assert!(keyring
        .open_string(&sealed, &wagate::crypto::api_key_ad("global"))
        .is_err());
}
both_stores!(ciphertext_bound_to_owner, ciphertext_is_bound_to_its_owner);

/// Item 7: after a new master key, old ciphertexts still open; rotate-keys re-encrypts them, and
/// the old key can then be dropped while history still replays.
async fn key_rotation_keeps_keys_readable(mut app: TestApp) {
    app.create_account("acme").await;
    app.admin("PUT", "/v1/ai/global", Some(seed_global_body()))
        .await;
    app.admin(
        "PUT",
        "/v1/accounts/acme/ai",
        Some(json!({"api_key": "sk-acct"})),
    )
    .await;

    // New current key, old key kept for decryption.
    app.vars.insert("WAGATE_MASTER_KEY".into(), master_key(100));
    app.vars
        .insert("WAGATE_MASTER_KEYS_OLD".into(), master_key(1));
    app.restart().await;
    let who = wagate::app::Who {
        actor: "cli:rotate-keys".into(),
        request_id: None,
    };
    let report = wagate::service::keys::rotate_keys(app.app(), &who).await;
    assert_eq!(
        (report.resealed, report.failed.len()),
        (2, 0),
        "{:?}",
        report.failed
    );
    // Idempotent.
    assert_eq!(
        wagate::service::keys::rotate_keys(app.app(), &who)
            .await
            .resealed,
        0
    );

    // Drop the old key: everything still loads and every key opens.
    app.vars.remove("WAGATE_MASTER_KEYS_OLD");
    app.restart().await;
    let m = app.app().model().clone();
    let keyring = &app.app().config.keyring;
    let g = m.global.api_key.clone().expect("global key").sealed;
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(
            &keyring
                .open_string(&g, "ai_api_key|v1|global")
                .expect("opens")
        ),
        "sk-..."
    );
    let a = m
        .account("acme")
        .and_then(|a| a.ai.api_key.clone())
        .expect("account key")
        .sealed;
    assert!(keyring
        .open_string(&a, "ai_api_key|v1|account:acme")
        .is_ok());
    let ev = app
        .admin("GET", "/v1/events?aggregate=ai_global", None)
        .await;
    let types: Vec<&str> = ev.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(types.contains(&"AiApiKeyResealed"), "{types:?}");
    let e = app
        .admin(
            "GET",
            "/v1/accounts/acme/chats/1@s.whatsapp.net/ai/effective",
            None,
        )
        .await;
    assert_eq!(e.json["has_api_key"]["value"], true, "{}", e.text);
}
both_stores!(key_rotation, key_rotation_keeps_keys_readable);

/// Item 3: the binary refuses to start on weak configuration.
#[tokio::test]
async fn boot_refuses_weak_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = |extra: &[(&str, &str)]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_wagate"));
        c.arg("serve")
            .env_clear()
            .env("WAGATE_DATA_DIR", dir.path())
            .env("WAGATE_LISTEN", "127.0.0.1:0");
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().expect("run wagate")
    };
    let mk3 = master_key(3);
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("WAGATE_JWT_SECRET", "short")], "WAGATE_JWT_SECRET"),
        (
            vec![("WAGATE_MASTER_KEY", "bm90LWEta2V5")],
            "WAGATE_MASTER_KEY",
        ),
        (
            vec![
                (
                    "WAGATE_DATABASE_URL",
                    "postgres://postgres@127.0.0.1:5432/test",
                ),
                (
                    "WAGATE_JWT_SECRET",
                    "0123456789abcdef0123456789abcdef-long-enough",
                ),
                ("WAGATE_MASTER_KEY", &mk3),
                ("WAGATE_ADMIN_PASSWORD", "admin"),
            ],
            "WAGATE_ADMIN_PASSWORD",
        ),
        (
            vec![(
                "WAGATE_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/test",
            )],
            "WAGATE_JWT_SECRET",
        ),
        (vec![("WAGATE_LISTEN", "not-an-address")], "WAGATE_LISTEN"),
        (
            vec![("WAGATE_ALLOW_PRIVATE_NETWORKS", "10.0.0.0/33")],
            "WAGATE_ALLOW_PRIVATE_NETWORKS",
        ),
    ];
    for (env, needle) in cases {
        let out = base(&env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{env:?} must not start");
        assert!(stderr.contains(needle), "{env:?}: {stderr}");
        for (k, v) in &env {
            if [
                "WAGATE_JWT_SECRET",
                "WAGATE_MASTER_KEY",
                "WAGATE_ADMIN_PASSWORD",
            ]
            .contains(k)
            {
                assert!(!stderr.contains(v), "the error echoes no secret: {stderr}");
            }
        }
    }
}

/// Issue 21, finding 8: weak or well-known secrets refuse to start outside a loopback listen
/// address, on the embedded SQLite store too (192.0.2.1 is a documentation address: the check
/// comes before the bind, and a gateway that skipped it could not bind there either).
#[tokio::test]
async fn boot_refuses_weak_secrets_outside_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let same = "a".repeat(32);
    let mk = master_key(4);
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[("WAGATE_ADMIN_PASSWORD", "admin")],
            "WAGATE_ADMIN_PASSWORD",
        ),
        (
            &[("WAGATE_ADMIN_PASSWORD", "changeme")],
            "WAGATE_ADMIN_PASSWORD",
        ),
        (&[("WAGATE_JWT_SECRET", &same)], "WAGATE_JWT_SECRET"),
    ];
    for (env, var) in cases {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_wagate"));
        c.arg("serve")
            .env_clear()
            .env("WAGATE_DATA_DIR", dir.path())
            .env("WAGATE_LISTEN", "192.0.2.1:0")
            .env("WAGATE_MASTER_KEY", &mk)
            .env(
                "WAGATE_JWT_SECRET",
                "integration-test-jwt-secret-0123456789abcdef",
            )
            .env("WAGATE_ADMIN_PASSWORD", "correct horse battery staple")
            .kill_on_drop(true);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = tokio::time::timeout(Duration::from_secs(30), c.output())
            .await
            .expect("wagate exits")
            .expect("run wagate");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{env:?} must not start");
        assert!(
            stderr.contains(var) && stderr.contains("loopback"),
            "{env:?}: {stderr}"
        );
        for (_, v) in env {
            assert!(!stderr.contains(v), "the error echoes no secret: {stderr}");
        }
    }
}
