//! End-to-end dashboard tests in a real browser: Debian's Chromium, headless, driven through
//! chromedriver (WebDriver, fantoccini) against a gateway spawned on a loopback port, with the
//! model stubbed by wiremock on loopback. Screenshots of each page land in
//! `target/screenshots/`.
//!
//! Without chromium / chromedriver these tests fail when `CI` is set and are skipped loudly
//! otherwise (`scripts/test.sh` installs both).

#[allow(dead_code)]
#[path = "../api/fake_web.rs"]
mod fake_web;
#[allow(dead_code, unused_imports, unused_macros)]
#[path = "../api/helpers.rs"]
mod helpers;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use helpers::{eventually, Backend, TestApp, ADMIN_PASSWORD};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const JID: &str = "491701234567@s.whatsapp.net";
const STUB_REPLY: &str = "Hello from the model stub";

/// A chromedriver process on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    url: String,
    /// The browser profile, fresh for each driver.
    profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts chromedriver, or `None` (skip) when the browser is not installed outside CI.
fn start_driver() -> Option<Driver> {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but {missing:?} is missing: install chromium and chromium-driver \
             (scripts/test.sh does)"
        );
        eprintln!(
            "\n!!!!! SKIPPING THE BROWSER TESTS: {missing:?} not found. \
             Install them with: apt-get install chromium chromium-driver !!!!!\n"
        );
        return None;
    }
    // The free port is picked before chromedriver binds it, so another process may take it in
    // between, and a loaded machine may start chromedriver slowly: a driver that exits or does
    // not listen in time is started again on another port.
    for attempt in 1..=3 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let listening = loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break true;
            }
            let exited = child.try_wait().ok().flatten().is_some();
            if exited || std::time::Instant::now() >= deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if listening {
            return Some(Driver {
                child,
                url: format!("http://127.0.0.1:{port}"),
                profile: tempfile::tempdir().expect("profile dir"),
            });
        }
        let _ = child.kill();
        let _ = child.wait();
        eprintln!(
            "chromedriver did not listen on port {port} (attempt {attempt}); starting it again"
        );
    }
    panic!("chromedriver did not listen after 3 attempts");
}

/// A headless Chromium session.
async fn browser(driver: &Driver) -> Client {
    browser_with(driver, &[]).await
}

/// A headless Chromium session with `extra` command-line switches.
async fn browser_with(driver: &Driver, extra: &[&str]) -> Client {
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-quic",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ]
    .iter()
    .chain(extra)
    .map(|a| a.to_string())
    .collect();
    args.push(format!(
        "--user-data-dir={}",
        driver.profile.path().display()
    ));
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": args
        }
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    // Two rustls crypto providers are compiled in (fantoccini's and reqwest's); pick one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    ClientBuilder::rustls()
        .expect("rustls connector")
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a browser session")
}

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).expect("write screenshot");
}

/// A screenshot of the whole page at `width` px: the window is made as tall as the page for it,
/// then `height` again.
async fn full_shot(c: &Client, name: &str, width: u32, height: u32) {
    let page = c
        .execute("return document.documentElement.scrollHeight;", vec![])
        .await
        .expect("script")
        .as_u64()
        .unwrap_or(u64::from(height));
    let tall = u32::try_from(page).unwrap_or(height).clamp(height, 8000);
    c.set_window_size(width, tall + 100).await.expect("resize");
    shot(c, name).await;
    c.set_window_size(width, height).await.expect("resize");
}

/// The text of the element `css`. The chat page swaps its thread in when the chat changes, so an
/// element found may be replaced before its text is read: then it is found again.
async fn text_of(c: &Client, css: &str) -> String {
    let mut last = None;
    for _ in 0..20 {
        match c.find(Locator::Css(css)).await {
            Ok(el) => match el.text().await {
                Ok(text) => return text,
                Err(e) => last = Some(e),
            },
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{css}: {last:?}")
}

async fn fill(c: &Client, css: &str, value: &str) {
    let el = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    el.clear().await.expect("clear");
    el.send_keys(value).await.expect("type");
}

async fn select(c: &Client, css: &str, value: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .select_by_value(value)
        .await
        .expect("select");
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .expect("click");
}

/// Clicks something that loads a new page and waits until the new page has loaded.
async fn submit(c: &Client, css: &str) {
    c.execute("window.__wagate_old_page = true;", vec![])
        .await
        .expect("mark page");
    click(c, css).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let loaded = c
            .execute(
                "return window.__wagate_old_page === undefined && document.readyState === 'complete';",
                vec![],
            )
            .await;
        if matches!(loaded, Ok(Value::Bool(true))) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new page after clicking {css}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn path_of(c: &Client) -> String {
    let u = c.current_url().await.expect("url");
    match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    }
}

async fn login(c: &Client) {
    fill(c, "#login-username", "admin").await;
    fill(c, "#login-password", ADMIN_PASSWORD).await;
    submit(c, "form button[type=submit]").await;
}

async fn model_stub() -> MockServer {
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "stub-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": STUB_REPLY}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        })))
        .mount(&stub)
        .await;
    stub
}

/// AI log rows of the chat, via the API.
async fn log_rows(app: &TestApp) -> Vec<Value> {
    let r = app
        .admin("GET", "/v1/ai/logs?account_id=acme&limit=500", None)
        .await;
    r.json["items"].as_array().cloned().unwrap_or_default()
}

/// Injects a customer message from the chat page's sandbox form.
async fn inject_from_chat_page(c: &Client, text: &str) {
    fill(c, "#inbound-text", text).await;
    submit(c, "#inbound-h ~ form button[type=submit]").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_end_to_end() {
    let Some(driver) = start_driver() else { return };
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite app");
    let stub = model_stub().await;
    let c = browser(&driver).await;
    let base = app.base.clone();

    // A protected page sends us to the login page and back.
    c.goto(&format!("{base}/ai")).await.expect("goto");
    assert_eq!(path_of(&c).await, "/login?next=%2Fai");
    shot(&c, "01-login").await;
    fill(&c, "#login-username", "admin").await;
    fill(&c, "#login-password", "wrong password").await;
    submit(&c, "form button[type=submit]").await;
    assert!(text_of(&c, ".alert.error")
        .await
        .contains("invalid username or password"));
    assert_eq!(
        c.find(Locator::Css("#login-username"))
            .await
            .expect("username")
            .prop("value")
            .await
            .expect("value")
            .as_deref(),
        Some("admin"),
        "the username stays in the form"
    );
    login(&c).await;
    assert_eq!(path_of(&c).await, "/ai");

    // Bad input: the error is next to the field, the values stay, nothing is saved.
    let head = app.head().await;
    select(&c, "#layer-enabled", "true").await;
    fill(&c, "#layer-temperature", "5").await;
    fill(&c, "#layer-model_name", "kept-model").await;
    submit(&c, "form.card button[type=submit]").await;
    assert!(text_of(&c, "#layer-temperature-error")
        .await
        .contains("from 0 to 2"));
    let kept = c
        .find(Locator::Css("#layer-model_name"))
        .await
        .expect("field")
        .prop("value")
        .await
        .expect("value");
    assert_eq!(kept.as_deref(), Some("kept-model"));
    assert_eq!(app.head().await, head, "a refused form writes nothing");
    shot(&c, "02-ai-invalid").await;

    // Global config through the form.
    fill(&c, "#layer-temperature", "0.3").await;
    fill(&c, "#layer-base_url", &format!("{}/v1", stub.uri())).await;
    fill(&c, "#layer-model_name", "stub-model").await;
    fill(&c, "#layer-reply_delay_seconds", "0").await;
    fill(&c, "#layer-timeout_seconds", "5").await;
    fill(&c, "#layer-api_key", "sk-browser-test-key").await;
    select(&c, "#layer-enabled", "true").await;
    submit(&c, "form.card button[type=submit]").await;
    assert_eq!(path_of(&c).await, "/ai?done=saved");
    let page = c.source().await.expect("source");
    assert!(page.contains("key set"), "the page says the key is set");
    assert!(
        !page.contains("sk-browser-test-key"),
        "the key is never shown"
    );
    shot(&c, "03-ai").await;

    // An account, created from the accounts page.
    submit(&c, "nav a[href='/accounts']").await;
    fill(&c, "#create-id", "acme").await;
    fill(&c, "#create-name", "Acme <b>Corp</b>").await;
    submit(&c, "#create-h ~ form button[type=submit]").await;
    assert_eq!(path_of(&c).await, "/accounts/acme?done=created");
    assert!(c
        .source()
        .await
        .expect("source")
        .contains("Acme &lt;b&gt;Corp&lt;/b&gt;"));
    // A token is shown once.
    fill(&c, "#token-name", "ci").await;
    submit(&c, "#tokens-h ~ form.card button[type=submit]").await;
    let token = text_of(&c, "#new-token").await;
    assert!(token.starts_with("wgt_"), "{token}");
    shot(&c, "04-account").await;
    c.goto(&format!("{base}/accounts/acme"))
        .await
        .expect("goto");
    assert!(!c.source().await.expect("source").contains(&token));
    // The connection panel and the list's badge say it in words.
    assert!(
        text_of(&c, "#connection-state")
            .await
            .starts_with("Sandbox"),
        "connection panel"
    );
    c.goto(&format!("{base}/accounts")).await.expect("goto");
    assert_eq!(text_of(&c, "td .badge[data-state]").await, "Sandbox");

    // The chat page; the gear turns AI off for this chat.
    let chat = format!("{base}/accounts/acme/chats/{}", JID.replace('@', "%40"));
    c.goto(&chat).await.expect("goto");
    // The gear opens from the keyboard (Enter on the focused summary).
    c.find(Locator::Css("details.gear > summary"))
        .await
        .expect("gear")
        .send_keys("\u{E007}")
        .await
        .expect("enter");
    let open = c
        .execute(
            "return document.querySelector('details.gear').open;",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(open, json!(true), "Enter opens the gear");
    click(&c, "#mode-disabled").await;
    submit(&c, "#chat-settings button[type=submit]").await;
    assert!(path_of(&c).await.ends_with("?done=saved"));
    assert!(text_of(&c, "#ai-state").await.contains("will not reply"));
    inject_from_chat_page(&c, "are you there?").await;
    let row = eventually(20, "the reply is skipped", || async {
        log_rows(&app)
            .await
            .into_iter()
            .find(|r| r["status"] != "pending")
    })
    .await;
    assert_eq!(row["status"], "skipped", "{row}");
    c.goto(&chat).await.expect("goto");
    assert!(text_of(&c, "#thread").await.contains("AI reply skipped"));
    assert!(c
        .find_all(Locator::Css("#thread .msg.ai"))
        .await
        .expect("find")
        .is_empty());
    shot(&c, "05-chat-disabled").await;

    // Enabled again: the reply appears (the page refreshes its thread by itself).
    click(&c, "details.gear > summary").await;
    click(&c, "#mode-enabled").await;
    submit(&c, "#chat-settings button[type=submit]").await;
    inject_from_chat_page(&c, "hello again").await;
    eventually(20, "the AI reply appears on the page", || async {
        let els = c
            .find_all(Locator::Css("#thread .msg.ai .text"))
            .await
            .ok()?;
        for e in els {
            if e.text().await.ok()? == STUB_REPLY {
                return Some(());
            }
        }
        None
    })
    .await;
    // Pushed, not polled: a message injected through the API shows on the open page at once
    // (the chat's live feed), without a reload (a marker set on this page survives).
    c.execute("window.__samePage = true;", vec![])
        .await
        .expect("script");
    let started = std::time::Instant::now();
    let r = app
        .admin(
            "POST",
            "/v1/accounts/acme/sandbox/inbound",
            Some(json!({"chat_id": JID, "from": "491701234567", "text": "pushed to the page", "id": "push-1"})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    eventually(10, "the pushed message shows", || async {
        text_of(&c, "#thread")
            .await
            .contains("pushed to the page")
            .then_some(())
    })
    .await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(2500),
        "shown after {waited:?}"
    );
    let same = c
        .execute("return window.__samePage === true;", vec![])
        .await
        .expect("script");
    assert_eq!(same, json!(true), "the page was not reloaded");
    // The operator send box.
    fill(&c, "#send-text", "an operator writes").await;
    submit(&c, "#send-h ~ form button[type=submit]").await;
    assert!(text_of(&c, "#thread").await.contains("an operator writes"));
    shot(&c, "06-chat-enabled").await;
    // The operator answered: the AI steps back in this chat (human takeover, 30 minutes by
    // default) and the page says so, with a way to resume it now.
    assert!(text_of(&c, "#ai-paused")
        .await
        .contains("because an operator answered"));
    assert!(text_of(&c, "#ai-state").await.contains("will not reply"));
    shot(&c, "06b-chat-paused").await;

    // An XSS payload in a message renders as text and never runs.
    let payload = "<script>window.__xss=1</script><img src=x onerror=\"window.__xss=2\">";
    inject_from_chat_page(&c, payload).await;
    let thread = text_of(&c, "#thread").await;
    assert!(thread.contains(payload), "{thread}");
    let ran = c
        .execute("return window.__xss === undefined;", vec![])
        .await
        .expect("script");
    assert_eq!(ran, json!(true), "the payload did not run");
    assert!(c
        .find_all(Locator::Css("#thread img"))
        .await
        .expect("find")
        .is_empty());
    shot(&c, "07-chat-xss").await;
    // That message came while the AI was paused: skipped. Resume brings the AI back.
    submit(&c, "#ai-paused button[type=submit]").await;
    assert!(path_of(&c).await.ends_with("?done=resumed"));
    assert!(c
        .find_all(Locator::Css("#ai-paused"))
        .await
        .expect("find")
        .is_empty());
    assert!(text_of(&c, "#ai-state").await.contains("will reply"));

    // The AI chat / test page against the stub.
    submit(&c, "nav a[href='/test']").await;
    select(&c, "#test-account_id", "acme").await;
    fill(&c, "#test-chat_id", JID).await;
    fill(&c, "#test-message", "Say hi").await;
    submit(&c, "#test-form button[type=submit]").await;
    assert_eq!(text_of(&c, "#test-reply").await, STUB_REPLY);
    assert_eq!(text_of(&c, "#test-model").await, "stub-model");
    assert!(text_of(&c, "#test-tokens").await.contains("18"));
    assert!(text_of(&c, "#test-latency").await.ends_with("ms"));
    shot(&c, "08-test").await;

    // The AI log, filtered.
    c.goto(&format!("{base}/logs?account_id=acme&status=skipped"))
        .await
        .expect("goto");
    let rows = c
        .find_all(Locator::Css("#ai-log tbody tr"))
        .await
        .expect("rows");
    assert_eq!(rows.len(), 2, "skipped while disabled and while paused");
    c.goto(&format!("{base}/logs")).await.expect("goto");
    assert!(text_of(&c, "#ai-log").await.contains("sent"));
    shot(&c, "09-logs").await;
    // The open AI log follows new replies by itself (its live feed), without a reload.
    let rows_before = c
        .find_all(Locator::Css("#ai-log tbody tr"))
        .await
        .expect("rows")
        .len();
    let r = app
        .admin(
            "POST",
            "/v1/accounts/acme/sandbox/inbound",
            Some(json!({"chat_id": "491705555555@s.whatsapp.net", "from": "491705555555", "text": "a new chat", "id": "log-live-1"})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    eventually(10, "the new reply's row shows on the open log", || async {
        let rows = c.find_all(Locator::Css("#ai-log tbody tr")).await.ok()?;
        (rows.len() > rows_before).then_some(())
    })
    .await;

    // The audit history of the account names the dashboard user.
    c.goto(&format!("{base}/audit?account_id=acme"))
        .await
        .expect("goto");
    assert!(text_of(&c, "#audit").await.contains("admin:admin"));
    shot(&c, "10-audit").await;

    // Phone width: no horizontal scrolling.
    c.set_window_size(375, 812).await.expect("resize");
    for page in [
        "/ai",
        "/accounts/acme",
        &chat.replace(&base, ""),
        "/logs",
        "/test",
    ] {
        c.goto(&format!("{base}{page}")).await.expect("goto");
        let fits = c
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth;",
                vec![],
            )
            .await
            .expect("script");
        assert_eq!(fits, json!(true), "{page} scrolls sideways on a phone");
    }
    c.goto(&chat).await.expect("goto");
    shot(&c, "11-chat-phone").await;
    c.set_window_size(1280, 900).await.expect("resize");

    // A lost session goes to the login page and back.
    c.delete_all_cookies().await.expect("cookies");
    c.goto(&format!("{base}/logs?status=sent"))
        .await
        .expect("goto");
    assert!(path_of(&c).await.starts_with("/login?next="));
    login(&c).await;
    assert_eq!(path_of(&c).await, "/logs?status=sent");

    // Deleting an account needs its id typed.
    c.goto(&format!("{base}/accounts/acme"))
        .await
        .expect("goto");
    fill(&c, "#delete-confirm", "acme").await;
    submit(&c, "#delete-h ~ form button[type=submit]").await;
    assert_eq!(path_of(&c).await, "/accounts?done=deleted");
    assert!(text_of(&c, "main").await.contains("No accounts yet"));

    // Logging out ends the session.
    submit(&c, "form.logout button").await;
    assert_eq!(path_of(&c).await, "/login");
    c.goto(&format!("{base}/ai")).await.expect("goto");
    assert!(path_of(&c).await.starts_with("/login"));

    c.close().await.expect("close");
}

/// The Webhooks page: create a subscription (the secret shown once), see its delivery, send it
/// again, at desktop and phone width.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_page() {
    let Some(driver) = start_driver() else { return };
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite app");
    let rx = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&rx)
        .await;
    app.create_account("acme").await;
    let c = browser(&driver).await;
    let base = app.base.clone();

    c.goto(&format!("{base}/webhooks")).await.expect("goto");
    login(&c).await;
    assert_eq!(path_of(&c).await, "/webhooks");
    // A bad URL: the error next to the field, the choices kept.
    fill(&c, "#create-url", "ftp://127.0.0.1/hook").await;
    click(&c, "#create-event-message-received").await;
    submit(&c, "#create-webhook button[type=submit]").await;
    assert!(text_of(&c, "#create-url-error")
        .await
        .contains("http or https"));
    let checked = c
        .find(Locator::Css("#create-event-message-received"))
        .await
        .expect("checkbox")
        .prop("checked")
        .await
        .expect("checked");
    assert_eq!(checked.as_deref(), Some("true"), "the choice stays");
    // Created: the secret is shown once.
    fill(&c, "#create-url", &format!("{}/hook", rx.uri())).await;
    select(&c, "#create-account_id", "acme").await;
    submit(&c, "#create-webhook button[type=submit]").await;
    let secret = text_of(&c, "#new-secret").await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert!(text_of(&c, "#webhooks").await.contains("message.received"));
    shot(&c, "webhooks").await;
    let hook = text_of(&c, "#webhooks tbody tr td a").await;
    c.goto(&format!("{base}/webhooks")).await.expect("goto");
    assert!(!c.source().await.expect("source").contains(&secret));

    // An incoming message is delivered; the page lists it; Redeliver sends it again.
    let r = app
        .admin(
            "POST",
            "/v1/accounts/acme/sandbox/inbound",
            Some(json!({"chat_id": JID, "from": "491701234567", "text": "hello", "id": "w-1"})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    eventually(20, "the delivery is delivered", || async {
        let r = app
            .admin("GET", &format!("/v1/webhooks/{hook}/deliveries"), None)
            .await;
        r.json["items"]
            .as_array()?
            .iter()
            .any(|d| d["status"] == "delivered")
            .then_some(())
    })
    .await;
    c.goto(&format!("{base}/webhooks/{hook}"))
        .await
        .expect("goto");
    assert!(text_of(&c, "#deliveries").await.contains("delivered"));
    shot(&c, "webhook-deliveries").await;
    submit(&c, "#deliveries form button[type=submit]").await;
    assert!(path_of(&c).await.ends_with("?done=redelivered"));
    assert!(text_of(&c, ".alert.ok").await.contains("queued again"));
    eventually(20, "the receiver gets it twice", || async {
        (rx.received_requests().await?.len() == 2).then_some(())
    })
    .await;

    // Phone width: no sideways scrolling.
    c.set_window_size(375, 812).await.expect("resize");
    for page in ["/webhooks".to_string(), format!("/webhooks/{hook}")] {
        c.goto(&format!("{base}{page}")).await.expect("goto");
        let fits = c
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth;",
                vec![],
            )
            .await
            .expect("script");
        assert_eq!(fits, json!(true), "{page} scrolls sideways on a phone");
    }
    c.close().await.expect("close");
}

/// A gateway whose read model holds only 3 messages and 2 AI-log rows (ADR 0013): the chat page
/// still shows the whole conversation (read from the store), and the AI log page says where the
/// older rows are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_past_the_read_models_memory() {
    let Some(driver) = start_driver() else { return };
    let app = TestApp::spawn_with_settings(
        Backend::Sqlite,
        &[
            ("WAGATE_READ_MODEL_MESSAGES", "3"),
            ("WAGATE_READ_MODEL_AI_LOG_ROWS", "2"),
        ],
    )
    .await
    .expect("a SQLite gateway");
    app.create_account("acme").await;
    app.echo_mode().await;
    for i in 0..5 {
        let r = app
            .admin(
                "POST",
                "/v1/accounts/acme/sandbox/inbound",
                Some(json!({"chat_id": JID, "from": "491701234567", "text": format!("hello {i}")})),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
        eventually(20, "the echo is sent", || async {
            let rows = log_rows(&app).await;
            (rows.len() == i + 1 && rows.iter().all(|r| r["status"] == "sent")).then_some(())
        })
        .await;
    }
    let c = browser(&driver).await;
    let base = app.base.clone();
    c.goto(&format!("{base}/accounts/acme/chats/{JID}"))
        .await
        .expect("goto");
    login(&c).await;
    let thread = text_of(&c, "#thread").await;
    for i in 0..5 {
        assert_eq!(
            thread.matches(&format!("hello {i}")).count(),
            2,
            "message {i} and its echo: {thread}"
        );
    }
    let items = c
        .find_all(Locator::Css("#thread li"))
        .await
        .expect("thread items");
    assert_eq!(items.len(), 10);
    shot(&c, "20-chat-past-memory").await;

    c.goto(&format!("{base}/logs")).await.expect("goto");
    assert!(text_of(&c, "#older-rows").await.contains("GET /v1/ai/logs"));
    let rows = c
        .find_all(Locator::Css("#ai-log tbody tr"))
        .await
        .expect("rows");
    assert_eq!(rows.len(), 2, "the rows held in memory");
    shot(&c, "21-logs-past-memory").await;

    // 100 newer chats: the account page shows them, and links to the older one.
    let r = app
        .admin("PUT", "/v1/ai/global", Some(json!({"enabled": false})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for i in 0..100 {
        let r = app
            .admin(
                "POST",
                "/v1/accounts/acme/sandbox/inbound",
                Some(json!({"chat_id": format!("4915000{i:05}@s.whatsapp.net"), "from": "4915000", "text": "hi"})),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
    }
    c.goto(&format!("{base}/accounts/acme"))
        .await
        .expect("goto");
    let listed = c
        .find_all(Locator::Css("#chats-h ~ div table tbody tr"))
        .await
        .expect("chat rows");
    assert_eq!(listed.len(), 100);
    assert!(!text_of(&c, "#chats-h ~ div table").await.contains(JID));
    click(&c, "#older-chats").await;
    let older = text_of(&c, "#chats-h ~ div table").await;
    assert!(older.contains(JID), "{older}");
    assert!(text_of(&c, "#newest-chats").await.contains("Newest chats"));
    shot(&c, "22-older-chats").await;
    c.close().await.expect("close");
}

/// What the overview's charts show, read from the page: every element with a `data-series`
/// inside `css`, as (series, bucket start, value, its SVG title).
async fn chart_marks(c: &Client, css: &str) -> Vec<(String, String, u64, String)> {
    let script = format!(
        "return Array.from(document.querySelectorAll({css:?} + ' [data-series]')).map(e => [\
           e.dataset.series, e.dataset.start || '', Number(e.dataset.value), \
           (e.querySelector('title') || {{}}).textContent || '']);"
    );
    let v = c.execute(&script, vec![]).await.expect("script");
    v.as_array()
        .expect("marks")
        .iter()
        .map(|m| {
            (
                m[0].as_str().unwrap_or("").to_string(),
                m[1].as_str().unwrap_or("").to_string(),
                m[2].as_u64().unwrap_or(u64::MAX),
                m[3].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The marks a chart should have for a series of the API's answer: (series, start, value) of
/// every bucket with a value (bars: above 0; latency points: not null).
fn expected_marks(items: &Value, series: &str, key: &str) -> Vec<(String, String, u64)> {
    items
        .as_array()
        .expect("a series")
        .iter()
        .filter_map(|b| {
            let v = b[key]
                .as_u64()
                .filter(|v| *v > 0 || series.starts_with('p'))?;
            let start = b["start"].as_str().or(b["day"].as_str())?.to_string();
            Some((series.to_string(), start, v))
        })
        .collect()
}

fn without_titles(
    marks: &[(String, String, u64, String)],
    series: &str,
) -> Vec<(String, String, u64)> {
    marks
        .iter()
        .filter(|m| m.0 == series)
        .map(|m| (m.0.clone(), m.1.clone(), m.2))
        .collect()
}

/// The overview page: for a seeded history (three replies sent, one failed, one skipped, two
/// accounts, one with a token budget), its charts' titles and numbers are the ones
/// `GET /v1/stats` answers; it works at desktop and phone width (390 px, no sideways scroll).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_page() {
    let Some(driver) = start_driver() else { return };
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite app");
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(wiremock::matchers::body_string_contains("please fail"))
        .respond_with(ResponseTemplate::new(400))
        .with_priority(1)
        .mount(&stub)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "stub-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": STUB_REPLY}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        })))
        .with_priority(2)
        .mount(&stub)
        .await;
    let r = app
        .admin(
            "PUT",
            "/v1/ai/global",
            Some(json!({"enabled": true, "base_url": format!("{}/v1", stub.uri()), "api_key": "sk-test",
                        "model_name": "stub-model", "reply_delay_seconds": 0, "max_retries": 0})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    app.create_account("acme").await;
    app.create_account("beta").await;
    for (acc, body) in [
        ("acme", json!({"daily_token_budget": 100})),
        ("beta", json!({"enabled": false})),
    ] {
        let r = app
            .admin("PUT", &format!("/v1/accounts/{acc}/ai"), Some(body))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let messages = [
        ("acme", "Hi"),
        ("acme", "Open today?"),
        ("acme", "Thanks"),
        ("acme", "please fail"),
        ("beta", "Hello?"),
    ];
    for (i, (acc, text)) in messages.iter().enumerate() {
        let r = app
            .admin(
                "POST",
                &format!("/v1/accounts/{acc}/sandbox/inbound"),
                Some(
                    json!({"chat_id": format!("4917000000{i}@s.whatsapp.net"), "from": "4917000000",
                            "text": text, "id": format!("ov-{i}")}),
                ),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
    }
    let stats = eventually(20, "every reply ended", || async {
        let s = app.admin("GET", "/v1/stats", None).await.json;
        (s["totals"] == json!({"sent": 3, "skipped": 1, "failed": 1, "inbound": 5, "tokens": 54}))
            .then_some(s)
    })
    .await;

    let c = browser(&driver).await;
    let base = app.base.clone();
    c.goto(&format!("{base}/")).await.expect("goto");
    login(&c).await;
    assert_eq!(path_of(&c).await, "/overview", "the home is the overview");
    assert_eq!(
        text_of(&c, "nav li:first-child a").await,
        "Overview",
        "first in the navigation"
    );

    // The summary and the charts say what the API says.
    for (id, key) in [
        ("#total-sent", "sent"),
        ("#total-skipped", "skipped"),
        ("#total-failed", "failed"),
        ("#total-inbound", "inbound"),
        ("#total-tokens", "tokens"),
    ] {
        assert_eq!(
            text_of(&c, id).await,
            stats["totals"][key].to_string(),
            "{id}"
        );
    }
    let replies = chart_marks(&c, "#chart-replies").await;
    for kind in ["sent", "skipped", "failed"] {
        assert_eq!(
            without_titles(&replies, kind),
            expected_marks(&stats["replies"], kind, kind),
            "{kind} bars"
        );
    }
    for (_, _, value, title) in &replies {
        assert!(title.contains(&format!(" — {value} ")), "{title}");
    }
    let total_sent: u64 = without_titles(&replies, "sent").iter().map(|m| m.2).sum();
    assert_eq!(total_sent, 3);
    assert!(
        replies
            .iter()
            .any(|m| m.0 == "sent" && m.3.ends_with(&format!("— {} sent", m.2))),
        "a title like `12:00 — 3 sent`: {replies:?}"
    );
    let inbound = chart_marks(&c, "#chart-inbound").await;
    assert_eq!(
        without_titles(&inbound, "inbound"),
        expected_marks(&stats["inbound"], "inbound", "count")
    );
    assert!(inbound
        .iter()
        .all(|m| m.3.ends_with(&format!("— {} received", m.2))));
    let latency = chart_marks(&c, "#chart-latency").await;
    for p in ["p50", "p95"] {
        let want = expected_marks(&stats["latency_ms"], p, p);
        assert_eq!(without_titles(&latency, p), want, "{p} points");
        assert!(!want.is_empty(), "three answers were timed");
    }
    let acme = chart_marks(&c, "#chart-tokens-acme").await;
    assert_eq!(
        without_titles(&acme, "tokens"),
        expected_marks(&stats["tokens"][0]["days"], "tokens", "tokens")
    );
    assert!(acme
        .iter()
        .any(|m| m.0 == "tokens" && m.2 == 54 && m.3.ends_with("— 54 tokens")));
    assert!(acme
        .iter()
        .any(|m| m.0 == "budget" && m.2 == 100 && m.3.contains("100 tokens")));
    assert!(chart_marks(&c, "#chart-tokens-beta").await.is_empty());
    // The reasons table.
    let reasons = text_of(&c, "#top-reasons tbody").await;
    for r in stats["top_reasons"].as_array().expect("reasons") {
        let code = r["reason_code"].as_str().expect("code");
        assert!(reasons.contains(code), "{reasons}");
    }
    assert_eq!(
        text_of(&c, "#deliveries-pending").await,
        stats["webhook_deliveries"]["pending"].to_string()
    );
    // Charts have accessible names.
    let labelled = c
        .execute(
            "return Array.from(document.querySelectorAll('svg[role=img]')).every(s => \
               s.getAttribute('aria-labelledby') && s.querySelector('title').textContent.length > 0);",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(labelled, json!(true));
    full_shot(&c, "overview-desktop", 1280, 900).await;

    // One account and another period, from the form.
    select(&c, "#overview-period", "7d").await;
    select(&c, "#overview-account", "acme").await;
    submit(&c, "form.filters button[type=submit]").await;
    assert_eq!(path_of(&c).await, "/overview?period=7d&account=acme");
    let week = app
        .admin("GET", "/v1/stats?period=7d&account=acme", None)
        .await
        .json;
    assert_eq!(
        text_of(&c, "#total-sent").await,
        week["totals"]["sent"].to_string()
    );
    assert_eq!(text_of(&c, "#total-skipped").await, "0");
    assert_eq!(
        without_titles(&chart_marks(&c, "#chart-replies").await, "failed"),
        expected_marks(&week["replies"], "failed", "failed")
    );
    // A bad period is refused next to its field.
    c.goto(&format!("{base}/overview?period=2d"))
        .await
        .expect("goto");
    assert!(text_of(&c, "#overview-period-error")
        .await
        .contains("1h, 24h, 7d or 30d"));

    // Phone width: no sideways scrolling.
    c.set_window_size(390, 844).await.expect("resize");
    c.goto(&format!("{base}/overview")).await.expect("goto");
    let fits = c
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth;",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(fits, json!(true), "/overview scrolls sideways on a phone");
    full_shot(&c, "overview-phone", 390, 844).await;
    c.close().await.expect("close");
}

/// Whether the page fits the window's width (no sideways scrolling).
async fn fits_width(c: &Client) -> bool {
    c.execute(
        "return document.documentElement.scrollWidth <= window.innerWidth;",
        vec![],
    )
    .await
    .expect("script")
        == json!(true)
}

/// Every page at desktop width and at a phone's (390 px): none scrolls sideways, each is
/// photographed at both widths (`target/screenshots/page-<name>-{desktop,phone}.png`); the
/// chat search from the account page; and dark mode, which follows the browser's preference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_at_phone_width_and_in_dark_mode() {
    let Some(driver) = start_driver() else { return };
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite app");
    let rx = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&rx)
        .await;
    app.echo_mode().await;
    app.create_account("acme").await;
    let r = app
        .admin(
            "POST",
            "/v1/webhooks",
            Some(json!({"url": format!("{}/hook", rx.uri()), "events": ["*"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let hook = r.json["id"].as_str().expect("id").to_string();
    for (jid, name, text) in [
        (
            JID,
            "Ana María",
            "Hello, a rather long first message to see how the thread wraps on a narrow screen",
        ),
        ("441702222222@s.whatsapp.net", "Bob", "second"),
    ] {
        let r = app
            .admin(
                "POST",
                "/v1/accounts/acme/sandbox/inbound",
                Some(json!({"chat_id": jid, "from": jid.split('@').next(), "text": text, "contact_name": name})),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
    }
    eventually(20, "both replies sent", || async {
        let rows = log_rows(&app).await;
        (rows.iter().filter(|r| r["status"] == "sent").count() == 2).then_some(())
    })
    .await;

    let c = browser(&driver).await;
    let base = app.base.clone();
    c.goto(&format!("{base}/")).await.expect("goto");
    login(&c).await;
    let chat = format!("/accounts/acme/chats/{}", JID.replace('@', "%40"));
    let hook_page = format!("/webhooks/{hook}");
    let pages = [
        ("overview", "/overview"),
        ("ai", "/ai"),
        ("accounts", "/accounts"),
        ("account", "/accounts/acme"),
        ("chat", chat.as_str()),
        ("test", "/test"),
        ("logs", "/logs"),
        ("audit", "/audit"),
        ("webhooks", "/webhooks"),
        ("webhook", hook_page.as_str()),
    ];
    for (name, page) in pages {
        c.set_window_size(1280, 900).await.expect("resize");
        c.goto(&format!("{base}{page}")).await.expect("goto");
        assert!(fits_width(&c).await, "{page} scrolls sideways at 1280 px");
        full_shot(&c, &format!("page-{name}-desktop"), 1280, 900).await;
        c.set_window_size(390, 844).await.expect("resize");
        c.goto(&format!("{base}{page}")).await.expect("goto");
        assert!(fits_width(&c).await, "{page} scrolls sideways at 390 px");
        full_shot(&c, &format!("page-{name}-phone"), 390, 844).await;
    }

    // The chat search, from the account page's box.
    c.set_window_size(1280, 900).await.expect("resize");
    c.goto(&format!("{base}/accounts/acme"))
        .await
        .expect("goto");
    assert_eq!(
        c.find_all(Locator::Css("#chats tbody tr"))
            .await
            .expect("rows")
            .len(),
        2
    );
    fill(&c, "#chats-q", "maría").await;
    submit(&c, "form.search button[type=submit]").await;
    let rows = c
        .find_all(Locator::Css("#chats tbody tr"))
        .await
        .expect("rows");
    assert_eq!(rows.len(), 1);
    assert!(text_of(&c, "#chats tbody").await.contains("Ana María"));
    fill(&c, "#chats-q", "+44 170").await;
    submit(&c, "form.search button[type=submit]").await;
    assert!(text_of(&c, "#chats tbody").await.contains("441702222222"));
    // The AI log's search box.
    c.goto(&format!("{base}/logs")).await.expect("goto");
    fill(&c, "#logs-q", "second").await;
    submit(&c, "form.filters button[type=submit]").await;
    assert_eq!(
        c.find_all(Locator::Css("#ai-log tbody tr"))
            .await
            .expect("rows")
            .len(),
        1
    );
    c.close().await.expect("close");

    // Dark mode follows the browser's preference.
    let dark = browser_with(
        &driver,
        &[
            "--force-dark-mode",
            "--blink-settings=preferredColorScheme=0",
        ],
    )
    .await;
    // (The profile is the first browser's: its session may still be there.)
    dark.goto(&format!("{base}/overview")).await.expect("goto");
    if path_of(&dark).await.starts_with("/login") {
        login(&dark).await;
    }
    assert_eq!(path_of(&dark).await, "/overview");
    let prefers = dark
        .execute(
            "return window.matchMedia('(prefers-color-scheme: dark)').matches;",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(prefers, json!(true), "the browser prefers dark");
    let background = dark
        .execute(
            "return getComputedStyle(document.body).backgroundColor;",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(
        background,
        json!("rgb(18, 20, 23)"),
        "the dark palette applies"
    );
    full_shot(&dark, "overview-dark-desktop", 1280, 900).await;
    dark.set_window_size(390, 844).await.expect("resize");
    dark.goto(&format!("{base}{chat}")).await.expect("goto");
    assert!(fits_width(&dark).await);
    full_shot(&dark, "chat-dark-phone", 390, 844).await;
    dark.close().await.expect("close");
}

/// A new user's WhatsApp Web pairing in the browser: create the account on the accounts page,
/// connect it, see the QR code drawn on its page; when the phone scans it, the panel turns
/// "connected" by itself, without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_web_pairing_panel() {
    let Some(driver) = start_driver() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let vars = TestApp::vars(Backend::Sqlite, &dir).await.expect("sqlite");
    let fake = fake_web::FakeWeb::default();
    let app = TestApp::spawn_with_web(
        Backend::Sqlite,
        dir,
        vars,
        Some(std::sync::Arc::new(fake.clone())),
    )
    .await;
    let c = browser(&driver).await;
    c.goto(&format!("{}/accounts", app.base))
        .await
        .expect("open");
    login(&c).await;
    fill(&c, "#create-id", "shop").await;
    select(&c, "#create-transport", "whatsapp_web").await;
    submit(&c, "form[action='/accounts'] button[type=submit]").await;
    c.goto(&format!("{}/accounts/shop", app.base))
        .await
        .expect("open");
    assert_eq!(text_of(&c, "#wa-state strong").await, "stopped");
    submit(&c, "#wa-panel form button[type=submit]").await;
    eventually(10, "the QR code is drawn", || async {
        c.find(Locator::Css("#wa-qr svg")).await.ok()
    })
    .await;
    assert_eq!(text_of(&c, "#wa-state strong").await, "pairing");
    full_shot(&c, "whatsapp-web-pairing", 1280, 1000).await;

    fake.scan("shop").await;
    eventually(15, "the panel shows connected by itself", || async {
        let state = c
            .find(Locator::Css("#wa-state strong"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (state == "connected").then_some(())
    })
    .await;
    assert!(
        c.find(Locator::Css("#wa-qr")).await.is_err(),
        "the code is gone once paired"
    );
    let _ = c.close().await;
}
