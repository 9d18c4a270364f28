//! Start, restart, health, the OpenAPI document, and an unavailable store.

use serde_json::json;

use crate::ai_config::seed_global_body;
use crate::both_stores;
use crate::helpers::{Backend, TestApp};

async fn restart_reads_everything_back(mut app: TestApp) {
    app.create_account("acme").await;
    app.admin("PUT", "/v1/ai/global", Some(seed_global_body()))
        .await;
    app.admin(
        "PUT",
        "/v1/accounts/acme/ai",
        Some(json!({"model_name":"m2","enabled":false})),
    )
    .await;
    let jid = "1@s.whatsapp.net";
    app.admin(
        "PUT",
        &format!("/v1/accounts/acme/chats/{jid}/ai"),
        Some(json!({"mode":"enabled","custom_system_prompt":"p"})),
    )
    .await;
    app.admin(
        "PUT",
        &format!("/v1/accounts/acme/chats/{jid}/blocked"),
        Some(json!({"blocked":true})),
    )
    .await;
    let token = app
        .admin(
            "POST",
            "/v1/accounts/acme/tokens",
            Some(json!({"name":"t"})),
        )
        .await
        .json["token"]
        .as_str()
        .expect("token")
        .to_string();

    let paths = [
        "/v1/ai/global".to_string(),
        "/v1/accounts".to_string(),
        "/v1/accounts/acme/ai".to_string(),
        "/v1/accounts/acme/tokens".to_string(),
        format!("/v1/accounts/acme/chats/{jid}/ai"),
        format!("/v1/accounts/acme/chats/{jid}/ai/effective"),
        "/v1/events".to_string(),
    ];
    let mut before = Vec::new();
    for p in &paths {
        before.push(app.admin("GET", p, None).await.json);
    }
    app.restart().await;
    for (p, b) in paths.iter().zip(before) {
        assert_eq!(
            app.admin("GET", p, None).await.json,
            b,
            "{p} reads back the same"
        );
    }
    assert_eq!(
        app.call("GET", "/v1/accounts/acme", Some(&token), None)
            .await
            .status,
        200,
        "token survives"
    );
}
both_stores!(restart, restart_reads_everything_back);

async fn health_and_openapi(app: TestApp) {
    let h = app.call("GET", "/healthz", None, None).await;
    assert_eq!((h.status, h.json["status"].as_str()), (200, Some("ok")));
    let r = app.call("GET", "/readyz", None, None).await;
    assert_eq!(r.status, 200);
    let kind = match app.backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(r.json["store"], kind);
    assert!(
        r.headers.contains_key("x-request-id"),
        "every response carries a request id"
    );

    let doc = app.call("GET", "/openapi.json", None, None).await;
    assert_eq!(doc.status, 200);
    assert!(doc.json["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with('3')));
    let paths = doc.json["paths"].as_object().expect("paths");
    for p in [
        "/v1/ai/global",
        "/v1/accounts",
        "/v1/accounts/{acc}",
        "/v1/accounts/{acc}/ai",
        "/v1/accounts/{acc}/tokens",
        "/v1/accounts/{acc}/tokens/{id}",
        "/v1/accounts/{acc}/chats/{jid}/ai",
        "/v1/accounts/{acc}/chats/{jid}/blocked",
        "/v1/accounts/{acc}/chats/{jid}/ai/effective",
        "/v1/auth/login",
        "/v1/events",
        "/healthz",
        "/readyz",
    ] {
        assert!(paths.contains_key(p), "{p} documented");
    }
    assert!(doc.json["components"]["schemas"]["AiSettingsRequest"].is_object());
}
both_stores!(health_openapi, health_and_openapi);

/// A store that goes away answers 503 with Retry-After, never a panic or a 500, and the gateway
/// recovers when it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_unavailable_is_503() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    app.create_account("acme").await;
    let url = app.vars["WAGATE_DATABASE_URL"].clone();
    let db = url.rsplit('/').next().expect("db name").to_string();
    let base = std::env::var("WAGATE_TEST_DATABASE_URL").expect("set when the app spawned");
    let admin = sqlx::PgPool::connect(&base).await.expect("admin pool");
    let lock = |on: bool| {
        let limit = if on { 0 } else { -1 };
        format!(
            "ALTER DATABASE \"{db}\" WITH ALLOW_CONNECTIONS {} CONNECTION LIMIT {limit}",
            !on
        )
    };
    sqlx::query(&lock(true))
        .execute(&admin)
        .await
        .expect("lock out");
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&db)
        .execute(&admin)
        .await
        .expect("terminate");

    let r = app
        .admin("PUT", "/v1/ai/global", Some(json!({"enabled": true})))
        .await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "unavailable");
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(app.call("GET", "/readyz", None, None).await.status, 503);
    assert_eq!(app.call("GET", "/healthz", None, None).await.status, 200);

    sqlx::query(&lock(false))
        .execute(&admin)
        .await
        .expect("unlock");
    admin.close().await;
    let r = app
        .admin("PUT", "/v1/ai/global", Some(json!({"enabled": true})))
        .await;
    assert_eq!(r.status, 200, "recovers: {}", r.text);
}
