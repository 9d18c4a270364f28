//! The HTTP edge (issue 21, findings 5, 6, 7 and 9): client request ids are bounded, a request
//! must arrive in time (head and body) and connections are capped, every response says
//! `nosniff`, 413s keep the error shape of their surface, the SQLite files are the owner's only,
//! and a plain-http webhook to a name is delivered to the address that was checked.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::both_stores;
use crate::dashboard::Visitor;
use crate::helpers::{eventually, Backend, TestApp};

/// The request id stored with the events of stream `stream` (e.g. `account/acme`).
async fn stored_request_id(app: &TestApp, stream: &str) -> String {
    let r = app
        .admin("GET", &format!("/v1/events?aggregate={stream}"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let items = r.json["items"].as_array().expect("items");
    assert!(!items.is_empty(), "no event in {stream}");
    items[0]["request_id"]
        .as_str()
        .expect("a request id")
        .to_string()
}

/// Finding 5: a client `x-request-id` is kept only when it is 1..=128 visible ASCII characters;
/// otherwise a generated one is stored in the event and sent back.
async fn request_ids_are_bounded(app: TestApp) {
    let token = app.admin_token();
    let huge = "a".repeat(100 * 1024);
    let just_too_long = "b".repeat(129);
    let longest = "c".repeat(128);
    let cases: Vec<(&str, &[u8], bool)> = vec![
        ("huge", huge.as_bytes(), false),
        ("too-long", just_too_long.as_bytes(), false),
        ("space", b"has space", false),
        ("tab", b"has\ttab", false),
        ("non-ascii", "caf\u{e9}".as_bytes(), false),
        ("kept", b"req-42_ok.A~!", true),
        ("longest", longest.as_bytes(), true),
    ];
    for (id, header_value, kept) in cases {
        let value = reqwest::header::HeaderValue::from_bytes(header_value).expect("header value");
        let r = app
            .send(
                app.client
                    .post(format!("{}/v1/accounts", app.base))
                    .bearer_auth(&token)
                    .header("x-request-id", value)
                    .json(&json!({"id": id, "name": id, "transport": "sandbox"})),
            )
            .await;
        assert_eq!(r.status, 201, "{id}: {}", r.text);
        let echoed = r.headers["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_string();
        let stored = stored_request_id(&app, &format!("account/{id}")).await;
        assert_eq!(stored, echoed, "{id}: the response carries the stored id");
        if kept {
            assert_eq!(stored.as_bytes(), header_value, "{id}");
        } else {
            assert_ne!(stored.as_bytes(), header_value, "{id}");
            assert!(
                uuid::Uuid::parse_str(&stored).is_ok(),
                "{id}: generated: {stored}"
            );
        }
    }
    // Two ids in one request: neither is trusted.
    let r = app
        .send(
            app.client
                .post(format!("{}/v1/accounts", app.base))
                .bearer_auth(&token)
                .header("x-request-id", "first")
                .header("x-request-id", "second")
                .json(&json!({"id": "twice", "transport": "sandbox"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let stored = stored_request_id(&app, "account/twice").await;
    assert!(uuid::Uuid::parse_str(&stored).is_ok(), "{stored}");
}
both_stores!(request_id_is_bounded, request_ids_are_bounded);

/// Reads from `stream` until the server closes it (or `limit` passes); returns what arrived and
/// when the close came.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let start = Instant::now();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (
        String::from_utf8_lossy(&got).into_owned(),
        closed.then(|| start.elapsed()),
    )
}

async fn spawn_sqlite(settings: &[(&str, &str)]) -> TestApp {
    TestApp::spawn_with_settings(Backend::Sqlite, settings)
        .await
        .expect("sqlite is always available")
}

fn addr(app: &TestApp) -> std::net::SocketAddr {
    app.running.as_ref().expect("running").addr
}

/// Finding 6: a request head that never completes (sent slowly, or not at all) is cut off after
/// `WAGATE_HEADER_READ_TIMEOUT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_are_cut_off() {
    let app = spawn_sqlite(&[("WAGATE_HEADER_READ_TIMEOUT", "500ms")]).await;
    // Part of a head, then a header line every 200 ms: never complete.
    let mut slow = TcpStream::connect(addr(&app)).await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let (mut reader, mut writer) = slow.into_split();
    let drip = tokio::spawn(async move {
        for i in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer
                .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    let cut = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(cut.is_ok(), "a slow head was not cut off within 5 s");
    let after = start.elapsed();
    assert!(after < Duration::from_secs(3), "cut after {after:?}");
    drip.abort();

    // A connection that sends nothing at all.
    let mut silent = TcpStream::connect(addr(&app)).await.expect("connect");
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    let closed = closed.expect("a silent connection was not closed within 5 s");
    assert!(closed < Duration::from_secs(3), "closed after {closed:?}");

    // A keep-alive connection idle after its answer is closed too.
    let mut kept = TcpStream::connect(addr(&app)).await.expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let (answer, closed) = read_until_closed(&mut kept, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let closed = closed.expect("an idle keep-alive connection was not closed within 5 s");
    assert!(closed < Duration::from_secs(3), "closed after {closed:?}");
}

/// Finding 6: a body still arriving after `WAGATE_BODY_READ_TIMEOUT` (here one byte every
/// 100 ms, which no idle timeout would catch) is answered 408 in the API's error shape and the
/// connection closed; nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_bodies_are_cut_off() {
    let app = spawn_sqlite(&[("WAGATE_BODY_READ_TIMEOUT", "500ms")]).await;
    let head_before = app.head().await;
    for (target, content_type) in [
        ("/v1/accounts", "application/json"),
        ("/v1/transports/cloud-api/acme/webhook", "application/json"),
        ("/login", "application/x-www-form-urlencoded"),
    ] {
        let stream = TcpStream::connect(addr(&app)).await.expect("connect");
        let (mut reader, mut writer) = stream.into_split();
        let token = app.admin_token();
        let head = format!(
            "POST {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: {content_type}\r\nContent-Length: 10000\r\n\r\n{{\"id\":"
        );
        writer.write_all(head.as_bytes()).await.expect("write");
        let drip = tokio::spawn(async move {
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if writer.write_all(b" ").await.is_err() {
                    return;
                }
            }
        });
        let start = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let closed = tokio::time::timeout(Duration::from_secs(6), async {
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        drip.abort();
        assert!(closed.is_ok(), "{target}: not cut off within 6 s");
        let after = start.elapsed();
        assert!(
            after < Duration::from_secs(3),
            "{target}: cut after {after:?}"
        );
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 408"), "{target}: {text}");
        assert!(
            text.contains(r#"{"error":{"code":"request_timeout""#),
            "{target}: {text}"
        );
    }
    assert_eq!(app.head().await, head_before, "nothing was written");
    // A body sent at once is read as usual.
    app.create_account("acme").await;
}

/// Finding 6: at most `WAGATE_MAX_CONNECTIONS` connections are served at once; the next one is
/// served when one of them closes (here: idle ones cut by the header read timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped() {
    let app = spawn_sqlite(&[
        ("WAGATE_MAX_CONNECTIONS", "2"),
        ("WAGATE_HEADER_READ_TIMEOUT", "1500ms"),
    ])
    .await;
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(TcpStream::connect(addr(&app)).await.expect("connect"));
    }
    // Let the server accept both.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{}/healthz", app.base))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("served once a connection closes");
    let waited = start.elapsed();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        waited >= Duration::from_millis(900),
        "the third connection was served after {waited:?}, while two were open"
    );
    drop(idle);
}

/// Finding 9: every response carries `X-Content-Type-Options: nosniff`, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_says_nosniff() {
    let app = spawn_sqlite(&[]).await;
    let token = app.admin_token();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let reqs = [
        client.get(format!("{}/healthz", app.base)),
        client.get(format!("{}/openapi.json", app.base)),
        client.get(format!("{}/metrics", app.base)),
        client.get(format!("{}/v1/accounts", app.base)),
        client
            .get(format!("{}/v1/accounts", app.base))
            .bearer_auth(&token),
        client.get(format!("{}/no/such/route", app.base)),
        client.delete(format!("{}/healthz", app.base)),
        client
            .post(format!("{}/v1/accounts", app.base))
            .bearer_auth(&token)
            .body("{"),
        client.get(format!("{}/login", app.base)),
        client.get(format!("{}/ai", app.base)),
        client.get(format!("{}/assets/dashboard.js", app.base)),
    ];
    for req in reqs {
        let resp = req.send().await.expect("send");
        let what = format!("{} {}", resp.status(), resp.url().path());
        let values: Vec<_> = resp
            .headers()
            .get_all("x-content-type-options")
            .iter()
            .collect();
        assert_eq!(values, ["nosniff"], "{what}");
    }
}

/// Finding 9: a body over the limit is a 413 in the error shape of its surface: JSON on the
/// Cloud API webhook, the dashboard's HTML error page on its forms (login and a session form).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_too_large_keeps_the_error_shape() {
    let app = spawn_sqlite(&[]).await;
    let big = "x".repeat(300 * 1024);
    let r = app
        .send(
            app.client
                .post(format!("{}/v1/transports/cloud-api/acme/webhook", app.base))
                .header("content-type", "application/json")
                .header("x-hub-signature-256", "sha256=00")
                .body(big.clone()),
        )
        .await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "payload_too_large", "{}", r.text);
    assert!(r.headers["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("application/json"));

    let mut v = Visitor::new(&app);
    let login = v
        .post("/login", &[("username", "admin"), ("password", &big)])
        .await;
    assert_eq!(login.status, 413, "{}", login.body);
    assert!(login.body.contains("<!DOCTYPE html>"), "{}", login.body);
    assert!(login.body.contains("larger than 256 KiB"), "{}", login.body);

    v.login().await;
    let csrf = v.get("/ai").await.csrf();
    let head = app.head().await;
    let form = v
        .post("/ai", &[("csrf", &csrf), ("system_prompt", &big)])
        .await;
    assert_eq!(form.status, 413, "{}", form.body);
    assert!(form.body.contains("larger than 256 KiB"), "{}", form.body);
    assert_eq!(app.head().await, head, "nothing was written");
}

/// Finding 9: the SQLite database and its WAL and shared-memory files are the owner's only
/// (0600), also when an older version left the database file readable by others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_files_are_private() {
    for preexisting in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("wagate.db");
        if preexisting {
            std::fs::write(&db, b"").expect("write");
            std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        let vars = TestApp::vars(Backend::Sqlite, &dir).await.expect("vars");
        let app = TestApp::spawn_with(Backend::Sqlite, dir, vars).await;
        app.create_account("acme").await;
        let dir = app._dir.path();
        for name in ["wagate.db", "wagate.db-wal", "wagate.db-shm"] {
            let mode = std::fs::metadata(dir.join(name))
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600, "{name} (pre-existing: {preexisting})");
        }
    }
}

/// Finding 7: a plain-http webhook to a name (`localhost`) is delivered, to the address the
/// outbound guard checked (the unit test `webhooks::tests::plain_http_domain_is_sent_only_to_the_checked_addresses`
/// shows no second lookup is made), with the name in `Host`.
async fn webhook_to_a_name_is_delivered(app: TestApp) {
    let rx = MockServer::start().await;
    let port = rx.address().port();
    Mock::given(method("POST"))
        .and(path("/hook"))
        .and(header("host", format!("localhost:{port}").as_str()))
        .respond_with(ResponseTemplate::new(204))
        .mount(&rx)
        .await;
    let r = app
        .admin(
            "POST",
            "/v1/webhooks",
            Some(json!({"url": format!("http://localhost:{port}/hook"), "events": ["ai.config.changed"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = app
        .admin(
            "PUT",
            "/v1/ai/global",
            Some(json!({"enabled": true, "echo_mode": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let got = eventually(20, "the webhook arrives", || async {
        let got = rx.received_requests().await.unwrap_or_default();
        (!got.is_empty()).then_some(got)
    })
    .await;
    let body: serde_json::Value = serde_json::from_slice(&got[0].body).expect("json");
    assert_eq!(body["type"], "ai.config.changed", "{body}");
}
both_stores!(webhook_to_localhost_name, webhook_to_a_name_is_delivered);

/// A request not answered within `WAGATE_REQUEST_TIMEOUT` (here a test reply waiting on a model
/// that takes 5 s) is answered 503 `timeout` with `Retry-After` when the deadline passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_end_at_the_request_deadline() {
    let app = spawn_sqlite(&[("WAGATE_REQUEST_TIMEOUT", "1s")]).await;
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(crate::replies::completion("late"))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&stub)
        .await;
    crate::replies::configure(&app, &stub, json!({"timeout_seconds": 30})).await;
    let start = Instant::now();
    let r = app
        .admin(
            "POST",
            "/v1/ai/admin/test",
            Some(json!({"message": "hello"})),
        )
        .await;
    let took = start.elapsed();
    assert_eq!(
        (r.status, r.json["error"]["code"].as_str()),
        (503, Some("timeout")),
        "{}",
        r.text
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "answered after {took:?}"
    );
    // Other requests are answered as usual.
    assert_eq!(app.admin("GET", "/v1/ai/global", None).await.status, 200);
}
