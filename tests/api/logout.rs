//! Logout ends a session (issue 21 finding 4, ADR 0017): `POST /v1/auth/logout` and the
//! dashboard's logout revoke the admin JWT's `jti` in the store, so the same token or cookie is
//! refused afterwards, here at once and on another gateway sharing the store within a second.

use std::time::Duration;

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use serde_json::json;

use crate::both_stores;
use wagate::store::Store;

use crate::helpers::{Backend, TestApp, ADMIN_PASSWORD};

/// How stale a gateway's copy of another's revocations may be (`revocation::REFRESH_EVERY`),
/// plus slack.
const OTHER_PROCESS_BOUND: Duration = Duration::from_millis(1300);

async fn login(app: &TestApp) -> String {
    let r = app
        .call(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({"username": "admin", "password": ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["token"].as_str().expect("token").to_string()
}

async fn status_at(base: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}/v1/ai/global"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

async fn api_logout_revokes_everywhere(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let other = wagate::startup::start(app.config_as("second"))
        .await
        .expect("a second gateway on the same store");
    let other_base = format!("http://{}", other.addr);

    let token = login(&app).await;
    let kept = login(&app).await;
    assert_eq!(status_at(&app.base, &token).await, 200);
    assert_eq!(
        status_at(&other_base, &token).await,
        200,
        "the other gateway"
    );

    let r = app
        .call("POST", "/v1/auth/logout", Some(&token), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let logged_out = std::time::Instant::now();
    let r = app.call("GET", "/v1/ai/global", Some(&token), None).await;
    assert_eq!(r.status, 401, "at once on this gateway: {}", r.text);
    assert_eq!(r.json["error"]["code"], "unauthorized");
    let r = app
        .call("POST", "/v1/auth/logout", Some(&token), None)
        .await;
    assert_eq!(r.status, 401, "a second logout: {}", r.text);
    // Another session of the same admin goes on.
    assert_eq!(status_at(&app.base, &kept).await, 200);

    // The other gateway honours it within its bound.
    tokio::time::sleep(OTHER_PROCESS_BOUND.saturating_sub(logged_out.elapsed())).await;
    assert_eq!(
        status_at(&other_base, &token).await,
        401,
        "the other gateway, {:?} after the logout",
        logged_out.elapsed()
    );
    assert_eq!(status_at(&other_base, &kept).await, 200);

    // A logout on the other gateway reaches this one too.
    let r = reqwest::Client::new()
        .post(format!("{other_base}/v1/auth/logout"))
        .bearer_auth(&kept)
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), 204);
    tokio::time::sleep(OTHER_PROCESS_BOUND).await;
    assert_eq!(status_at(&app.base, &kept).await, 401);

    // And after a restart (the revocations are in the store, not in memory).
    other.stop().await;
    let mut app = app;
    app.restart().await;
    assert_eq!(status_at(&app.base, &token).await, 401);
    assert_eq!(status_at(&app.base, &kept).await, 401);

    // Account tokens are revoked through their own route.
    app.create_account("acme").await;
    let r = app
        .admin(
            "POST",
            "/v1/accounts/acme/tokens",
            Some(json!({"name": "ci"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let account_token = r.json["token"].as_str().expect("token").to_string();
    let r = app
        .call("POST", "/v1/auth/logout", Some(&account_token), None)
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = app.call("POST", "/v1/auth/logout", None, None).await;
    assert_eq!(r.status, 401, "{}", r.text);

    // The route is in the OpenAPI document, with its answers.
    let doc = app.call("GET", "/openapi.json", None, None).await;
    let op = &doc.json["paths"]["/v1/auth/logout"]["post"];
    for status in ["204", "401", "403", "429", "503"] {
        assert!(op["responses"][status].is_object(), "{status} in {op}");
    }
    assert!(
        doc.json["paths"]["/v1/auth/login"]["post"]["responses"]["429"].is_object(),
        "the login's 429"
    );
}

both_stores!(api_logout, api_logout_revokes_everywhere(Backend));

/// The `wagate_session` cookie value of a response, if it sets one.
fn session_cookie(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("wagate_session="))
        .and_then(|v| v.split(';').next())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

fn csrf_of(body: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = body.find(marker).expect("a csrf field") + marker.len();
    body[start..].split('"').next().expect("value").to_string()
}

/// Logs in through the dashboard form and returns the session cookie's value.
async fn dashboard_login(client: &reqwest::Client, base: &str) -> String {
    let page = client
        .get(format!("{base}/login"))
        .send()
        .await
        .expect("login page");
    let login_cookie = page
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("wagate_login="))
        .and_then(|v| v.split(';').next())
        .expect("login cookie")
        .to_string();
    let r = client
        .post(format!("{base}/login"))
        .header(COOKIE, format!("wagate_login={login_cookie}"))
        .form(&[
            ("csrf", login_cookie.as_str()),
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("next", "/ai"),
        ])
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), 303);
    session_cookie(&r).expect("session cookie")
}

/// GET `path` with the session cookie: (status, Location, body).
async fn page(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    session: &str,
) -> (u16, String, String) {
    let r = client
        .get(format!("{base}{path}"))
        .header(COOKIE, format!("wagate_session={session}"))
        .send()
        .await
        .expect("page");
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, location, r.text().await.expect("body"))
}

async fn dashboard_logout_ends_the_session(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let other = wagate::startup::start(app.config_as("second"))
        .await
        .expect("a second gateway on the same store");
    let other_base = format!("http://{}", other.addr);
    let client = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client");

    let session = dashboard_login(&client, &app.base).await;
    let (status, _, body) = page(&client, &app.base, "/ai", &session).await;
    assert_eq!(status, 200);
    assert_eq!(page(&client, &other_base, "/ai", &session).await.0, 200);

    let r = client
        .post(format!("{}/logout", app.base))
        .header(COOKIE, format!("wagate_session={session}"))
        .form(&[("csrf", csrf_of(&body))])
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), 303);
    let logged_out = std::time::Instant::now();

    // The same cookie, replayed: back to the login page, here and on the other gateway.
    let (status, location, _) = page(&client, &app.base, "/ai", &session).await;
    assert_eq!((status, location.as_str()), (302, "/login?next=%2Fai"));
    assert_eq!(
        status_at(&app.base, &session).await,
        401,
        "the cookie's JWT as a bearer token"
    );
    tokio::time::sleep(OTHER_PROCESS_BOUND.saturating_sub(logged_out.elapsed())).await;
    let (status, location, _) = page(&client, &other_base, "/ai", &session).await;
    assert_eq!((status, location.as_str()), (302, "/login?next=%2Fai"));

    // An API logout of the cookie's token ends a dashboard session too.
    let session = dashboard_login(&client, &app.base).await;
    assert_eq!(page(&client, &app.base, "/ai", &session).await.0, 200);
    let r = app
        .call("POST", "/v1/auth/logout", Some(&session), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(page(&client, &app.base, "/ai", &session).await.0, 302);
    other.stop().await;
}

both_stores!(dashboard_logout, dashboard_logout_ends_the_session(Backend));

/// Rows of tokens that have expired are deleted (the first check of a process purges, then every
/// 10 minutes); live ones stay and are honoured.
async fn expired_revocations_are_purged(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let store = &app.app().store;
    let now = chrono::Utc::now().timestamp();
    let expired = uuid::Uuid::now_v7().to_string();
    let live = uuid::Uuid::now_v7().to_string();
    for (jti, exp) in [(&expired, now - 3600), (&live, now + 3600)] {
        match store {
            Store::Postgres(p) => {
                sqlx::query("INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2)")
                    .bind(jti)
                    .bind(exp)
                    .execute(p)
                    .await
                    .map(drop)
            }
            Store::Sqlite(p) => {
                sqlx::query("INSERT INTO revoked_tokens (jti, expires_at) VALUES (?1, ?2)")
                    .bind(jti)
                    .bind(exp)
                    .execute(p)
                    .await
                    .map(drop)
            }
        }
        .expect("insert");
    }
    // The first admin request loads the revocations, purging the expired row.
    assert_eq!(app.admin("GET", "/v1/ai/global", None).await.status, 200);
    const SQL: &str = "SELECT jti FROM revoked_tokens ORDER BY jti";
    let rows: Vec<String> = match store {
        Store::Postgres(p) => sqlx::query_scalar(SQL).fetch_all(p).await,
        Store::Sqlite(p) => sqlx::query_scalar(SQL).fetch_all(p).await,
    }
    .expect("rows");
    assert_eq!(rows, vec![live], "only the live revocation is kept");
}

both_stores!(revocations_purged, expired_revocations_are_purged(Backend));
