//! Login abuse under concurrency (checklist item 17, issue 21 finding 1): attempts are counted
//! before the password is checked, the argon2 checks running at once are bounded, and a failed
//! login logs no password. The gateway runs in this process, so its memory is this process's.

use std::net::{IpAddr, Ipv4Addr};

use serde_json::json;

use crate::helpers::{Backend, Binary, TestApp, ADMIN_PASSWORD};

/// Wrong logins sent at once, as in the review.
const PARALLEL: usize = 150;
/// Attempts one address may make (`auth::LOGIN_ATTEMPTS`).
const ATTEMPTS: usize = 5;
/// Growth of the peak RSS the logins may cause. Unbounded, 150 argon2 checks at ~19 MiB each
/// took ~2 GB; bounded, a few checks run at once.
const MAX_RSS_GROWTH_KB: u64 = 256 * 1024;

/// `VmHWM` (peak RSS) and `VmRSS` of this process, in kB.
fn memory_kb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Sends `PARALLEL` wrong logins at once, each from the client of `clients` at its index (modulo),
/// and returns (status, Retry-After) of each.
async fn parallel_wrong_logins(
    app: &TestApp,
    clients: &[reqwest::Client],
) -> Vec<(u16, Option<u64>)> {
    let mut tasks = Vec::with_capacity(PARALLEL);
    for i in 0..PARALLEL {
        let client = clients[i % clients.len()].clone();
        let url = format!("{}/v1/auth/login", app.base);
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .json(&json!({"username": "admin", "password": format!("wrong-{i}")}))
                .send()
                .await
                .expect("request reaches the gateway");
            let retry = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            (r.status().as_u16(), retry)
        }));
    }
    let mut out = Vec::with_capacity(PARALLEL);
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

/// 150 wrong logins at once from one address: at most the limit is checked (401), the rest are
/// 429 with Retry-After, even the right password afterwards; the process's memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_wrong_logins_from_one_address() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let (peak_before, _) = memory_kb();
    let answers = parallel_wrong_logins(&app, std::slice::from_ref(&app.client)).await;
    let (peak_after, rss_after) = memory_kb();

    let checked = answers.iter().filter(|(s, _)| *s == 401).count();
    let limited: Vec<_> = answers.iter().filter(|(s, _)| *s == 429).collect();
    assert!(
        checked <= ATTEMPTS,
        "{checked} of {PARALLEL} parallel wrong logins were checked (401), at most {ATTEMPTS} may be"
    );
    assert_eq!(
        checked + limited.len(),
        PARALLEL,
        "only 401 and 429: {answers:?}"
    );
    assert!(
        limited
            .iter()
            .all(|(_, retry)| retry.is_some_and(|s| s >= 1)),
        "every 429 carries Retry-After: {limited:?}"
    );
    // The address is limited now, whatever the password.
    let r = app
        .call(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({"username": "admin", "password": ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "rate_limited");

    let growth = peak_after.saturating_sub(peak_before);
    eprintln!(
        "one address: {checked} checked, {} limited; peak RSS {peak_before} -> {peak_after} kB, \
         RSS after {rss_after} kB",
        limited.len()
    );
    assert!(
        growth < MAX_RSS_GROWTH_KB,
        "peak RSS grew by {growth} kB ({peak_before} -> {peak_after} kB)"
    );
}

/// 150 wrong logins at once from 150 loopback addresses: each address is within its limit, so
/// only the bound on concurrent password checks keeps the memory down. Every answer is 401, or
/// 429 with Retry-After when no check slot freed up in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_wrong_logins_from_many_addresses() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let clients: Vec<reqwest::Client> = (0..PARALLEL)
        .map(|i| {
            // 127.0.1.0 - 127.0.1.149: loopback, one address per client.
            let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1, i as u8));
            reqwest::Client::builder()
                .local_address(ip)
                .build()
                .expect("client")
        })
        .collect();
    let (peak_before, _) = memory_kb();
    let answers = parallel_wrong_logins(&app, &clients).await;
    let (peak_after, rss_after) = memory_kb();

    let checked = answers.iter().filter(|(s, _)| *s == 401).count();
    let busy: Vec<_> = answers.iter().filter(|(s, _)| *s == 429).collect();
    assert_eq!(
        checked + busy.len(),
        PARALLEL,
        "only 401 and 429: {answers:?}"
    );
    assert!(checked > 0, "some logins were checked");
    assert!(
        busy.iter().all(|(_, retry)| retry.is_some_and(|s| s >= 1)),
        "every 429 carries Retry-After: {busy:?}"
    );
    let growth = peak_after.saturating_sub(peak_before);
    eprintln!(
        "{PARALLEL} addresses: {checked} checked, {} busy; peak RSS {peak_before} -> {peak_after} kB, \
         RSS after {rss_after} kB",
        busy.len()
    );
    assert!(
        growth < MAX_RSS_GROWTH_KB,
        "peak RSS grew by {growth} kB ({peak_before} -> {peak_after} kB)"
    );
    // The right password still works from an address that only failed once.
    let r = app
        .send(
            clients[7]
                .post(format!("{}/v1/auth/login", app.base))
                .json(&json!({"username": "admin", "password": ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// A failed login, by the API and by the dashboard form, logs the client address and never the
/// password or the username typed (the real binary, at trace level).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_log_no_password() {
    const CANARY_PASSWORD: &str = "canary-password-7f3a9c";
    const CANARY_USER: &str = "canary-user-51d2";
    let dir = tempfile::tempdir().expect("tempdir");
    let vars = TestApp::vars(Backend::Sqlite, &dir)
        .await
        .expect("sqlite vars");
    let bin = Binary::start(&vars, "trace").await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for body in [
        json!({"username": "admin", "password": CANARY_PASSWORD}),
        json!({"username": CANARY_USER, "password": CANARY_PASSWORD}),
    ] {
        let r = client
            .post(format!("{}/v1/auth/login", bin.base))
            .json(&body)
            .send()
            .await
            .expect("login");
        assert_eq!(r.status(), 401);
        assert!(!r.text().await.expect("body").contains("canary"));
    }
    // The dashboard form, with its double-submit cookie.
    let page = client
        .get(format!("{}/login", bin.base))
        .send()
        .await
        .expect("login page");
    let cookie = page
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("wagate_login="))
        .and_then(|v| v.split(';').next())
        .expect("login cookie")
        .to_string();
    let r = client
        .post(format!("{}/login", bin.base))
        .header(reqwest::header::COOKIE, format!("wagate_login={cookie}"))
        .form(&[
            ("csrf", cookie.as_str()),
            ("username", "admin"),
            ("password", CANARY_PASSWORD),
            ("next", "/ai"),
        ])
        .send()
        .await
        .expect("dashboard login");
    assert_eq!(r.status(), 401, "the form comes back with the error");
    let (out, logs) = bin.finish().await;
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "trace logging was on"
    );
    assert_eq!(
        logs.matches("admin login failed").count(),
        3,
        "each failure is logged: {logs}"
    );
    for canary in [CANARY_PASSWORD, CANARY_USER, "canary"] {
        assert!(!logs.contains(canary), "{canary} in the logs");
        assert!(!out.contains(canary), "{canary} on stdout");
    }
}
