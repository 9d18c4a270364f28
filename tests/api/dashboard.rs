//! The dashboard over plain HTTP (no browser): login redirects with `next`, the session cookie's
//! attributes, CSRF refusal, form errors that keep the values and write nothing, and escaping.
//! The browser tests (tests/browser) drive the same pages in Chromium.

use std::collections::BTreeMap;

use reqwest::header::{HeaderMap, COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use serde_json::json;

use crate::both_stores;
use crate::helpers::{Backend, Binary, TestApp, ADMIN_PASSWORD, JWT_SECRET};

/// A cookie-keeping client that does not follow redirects.
pub(crate) struct Visitor<'a> {
    app: &'a TestApp,
    client: reqwest::Client,
    cookies: BTreeMap<String, String>,
    /// The gateway visited (the app's unless [`Visitor::on`] changed it).
    base: String,
}

pub(crate) struct Page {
    pub(crate) status: u16,
    headers: HeaderMap,
    pub(crate) body: String,
}

impl Page {
    pub(crate) fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .map(str::to_string)
    }

    /// The CSRF token of the first form on the page.
    pub(crate) fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).expect("a csrf field") + marker.len();
        self.body[start..]
            .split('"')
            .next()
            .expect("value")
            .to_string()
    }
}

impl<'a> Visitor<'a> {
    pub(crate) fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            client: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .expect("client"),
            cookies: BTreeMap::new(),
            base: app.base.clone(),
        }
    }

    /// Visits another gateway of the same cluster from now on, with the same cookies.
    pub(crate) fn on(&mut self, base: &str) {
        self.base = base.to_string();
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let req = if cookie.is_empty() {
            req
        } else {
            req.header(COOKIE, cookie)
        };
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        for v in headers.get_all(SET_COOKIE).iter() {
            let v = v.to_str().expect("ascii cookie");
            let (kv, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (k, val) = kv.split_once('=').expect("name=value");
            if val.is_empty() || attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), val.to_string());
            }
        }
        let body = resp.text().await.expect("body");
        Page {
            status,
            headers,
            body,
        }
    }

    /// The session's cookies as a `Cookie` header value.
    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub(crate) async fn get(&mut self, path: &str) -> Page {
        let req = self.client.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    pub(crate) async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self.client.post(format!("{}{path}", self.base)).form(form);
        self.send(req).await
    }

    pub(crate) async fn login(&mut self) {
        let page = self.get("/login").await;
        let csrf = page.csrf();
        let r = self
            .post(
                "/login",
                &[
                    ("csrf", &csrf),
                    ("username", "admin"),
                    ("password", ADMIN_PASSWORD),
                    ("next", "/ai"),
                ],
            )
            .await;
        assert_eq!(r.status, 303, "{}", r.body);
    }

    /// Posts a form that must be refused: 400, the error next to `field_id`, nothing written.
    async fn refused(&mut self, path: &str, form: &[(&str, &str)], field_id: &str) -> Page {
        let head = self.app.head().await;
        let r = self.post(path, form).await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert!(
            r.body.contains(&format!("id=\"{field_id}-error\"")),
            "{path}: no error for {field_id}: {}",
            r.body
        );
        assert_eq!(self.app.head().await, head, "{path}: nothing is written");
        r
    }
}

/// An admin JWT that expired an hour ago, signed with the test secret.
fn expired_token() -> String {
    let now = chrono::Utc::now().timestamp();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "admin", "iat": now - 7200, "exp": now - 3600, "iss": "wagate", "aud": "wagate-admin"}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("sign")
}

#[tokio::test]
async fn pages_need_a_session_and_come_back_after_login() {
    let Some(app) = TestApp::spawn(crate::helpers::Backend::Sqlite).await else {
        return;
    };
    let mut v = Visitor::new(&app);
    let r = v.get("/").await;
    assert_eq!((r.status, r.location()), (302, "/login"));
    let r = v.get("/accounts?x=1").await;
    assert_eq!(r.status, 302);
    assert_eq!(r.location(), "/login?next=%2Faccounts%3Fx%3D1");
    // A forged or expired session is no session.
    v.cookies
        .insert("wagate_session".into(), "not.a.jwt".into());
    assert_eq!(v.get("/ai").await.status, 302);
    v.cookies.insert("wagate_session".into(), expired_token());
    let r = v.get("/logs?status=sent").await;
    assert_eq!(r.location(), "/login?next=%2Flogs%3Fstatus%3Dsent");
    // A POST without a session goes to the login page too, and changes nothing.
    v.cookies.clear();
    let head = app.head().await;
    let r = v.post("/ai", &[("enabled", "true")]).await;
    assert_eq!((r.status, r.location()), (302, "/login?next=%2F"));
    assert_eq!(app.head().await, head);
    // The login goes back to `next`, and only to a local path.
    let page = v.get("/login?next=%2Flogs%3Fstatus%3Dsent").await;
    assert!(page.body.contains("value=\"/logs?status=sent\""));
    let csrf = page.csrf();
    let r = v
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("username", "admin"),
                ("password", ADMIN_PASSWORD),
                ("next", "/logs?status=sent"),
            ],
        )
        .await;
    assert_eq!((r.status, r.location()), (303, "/logs?status=sent"));
    assert_eq!(v.get("/logs?status=sent").await.status, 200);
    let mut other = Visitor::new(&app);
    let csrf = other.get("/login").await.csrf();
    let r = other
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("username", "admin"),
                ("password", ADMIN_PASSWORD),
                ("next", "//evil.example/x"),
            ],
        )
        .await;
    assert_eq!((r.status, r.location()), (303, "/"));
    // The JSON API keeps its JSON 404 for unknown routes.
    let r = app.call("GET", "/v1/nope", None, None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json["error"]["code"], "not_found");
}

#[tokio::test]
async fn session_cookie_is_httponly_strict_and_secure_behind_tls() {
    let Some(app) = TestApp::spawn(crate::helpers::Backend::Sqlite).await else {
        return;
    };
    let mut v = Visitor::new(&app);
    let page = v.get("/login").await;
    let login_cookie = page.set_cookie("wagate_login").expect("login cookie");
    assert!(login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Strict"));
    // Wrong password: 401 page, the username stays, no session.
    let csrf = page.csrf();
    let r = v
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("username", "admin<b>"),
                ("password", "nope"),
            ],
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(r.body.contains("value=\"admin&lt;b&gt;\""), "{}", r.body);
    assert!(r.body.contains("invalid username or password"));
    assert!(r.set_cookie("wagate_session").is_none());
    // Right password over plain http: no Secure.
    let csrf = r.csrf();
    let r = v
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("username", "admin"),
                ("password", ADMIN_PASSWORD),
            ],
        )
        .await;
    let session = r.set_cookie("wagate_session").expect("session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session.contains(attr), "{session} lacks {attr}");
    }
    assert!(!session.contains("Secure"), "{session}");
    // Behind a TLS-terminating proxy: Secure.
    let mut tls = Visitor::new(&app);
    let page = tls
        .send(
            tls.client
                .get(format!("{}/login", app.base))
                .header("x-forwarded-proto", "https"),
        )
        .await;
    assert!(page
        .set_cookie("wagate_login")
        .is_some_and(|c| c.contains("Secure")));
    let csrf = page.csrf();
    let r = tls
        .send(
            tls.client
                .post(format!("{}/login", app.base))
                .header("x-forwarded-proto", "https")
                .form(&[
                    ("csrf", csrf.as_str()),
                    ("username", "admin"),
                    ("password", ADMIN_PASSWORD),
                ]),
        )
        .await;
    let session = r.set_cookie("wagate_session").expect("session cookie");
    assert!(session.contains("Secure"), "{session}");
    // Pages carry a restrictive CSP and are not cached.
    let page = tls.get("/ai").await;
    let csp = page.headers["content-security-policy"]
        .to_str()
        .expect("csp");
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(page.headers["cache-control"], "no-store");
    // Logging out deletes the cookie.
    let csrf = page.csrf();
    let r = tls.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!((r.status, r.location()), (303, "/login"));
    assert!(r
        .set_cookie("wagate_session")
        .is_some_and(|c| c.contains("Max-Age=0")));
}

#[tokio::test]
async fn every_post_needs_the_csrf_token() {
    let Some(app) = TestApp::spawn(crate::helpers::Backend::Sqlite).await else {
        return;
    };
    app.create_account("acme").await;
    let mut v = Visitor::new(&app);
    v.login().await;
    let csrf = v.get("/ai").await.csrf();
    let head = app.head().await;
    // Every POST route of the dashboard, read from its router, so a new one cannot miss the check
    // (the login form has its own double-submit check, below).
    let routes = dashboard_post_routes();
    assert!(routes.len() >= 16, "{routes:?}");
    for template in routes.iter().filter(|r| r.as_str() != "/login") {
        let path = template
            .replace("{acc}", "acme")
            .replace("{jid}", "491701234567%40s.whatsapp.net")
            .replace("{id}", "0190b8a0-0000-7000-8000-000000000000")
            .replace("{delivery}", "1");
        let form: &[(&str, &str)] = &[("enabled", "true"), ("text", "hi"), ("name", "x")];
        let r = v.post(&path, form).await;
        assert_eq!(r.status, 403, "{path} without a token: {}", r.body);
        let mut with_wrong: Vec<(&str, &str)> = form.to_vec();
        with_wrong.push(("csrf", "00"));
        assert_eq!(v.post(&path, &with_wrong).await.status, 403, "{path}");
    }
    // The right token from another origin is refused too.
    let r = v
        .send(
            v.client
                .post(format!("{}/ai", app.base))
                .header("origin", "http://evil.example")
                .form(&[("csrf", csrf.as_str()), ("enabled", "true")]),
        )
        .await;
    assert_eq!(r.status, 403);
    // The token of one session does not work in another.
    let mut other = Visitor::new(&app);
    other.login().await;
    // Two logins are two sessions (each JWT has its own `jti`), even within one second.
    assert_ne!(
        other.cookies.get("wagate_session"),
        v.cookies.get("wagate_session")
    );
    assert_eq!(
        other
            .post("/ai", &[("csrf", &csrf), ("enabled", "true")])
            .await
            .status,
        403
    );
    // The login form needs its double-submit cookie.
    let mut anon = Visitor::new(&app);
    let r = anon
        .post(
            "/login",
            &[
                ("csrf", "abc"),
                ("username", "admin"),
                ("password", ADMIN_PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(r.set_cookie("wagate_session").is_none());
    assert_eq!(app.head().await, head, "refused posts wrote nothing");
    // With the token, it works.
    let r = v.post("/ai", &[("csrf", &csrf), ("enabled", "true")]).await;
    assert_eq!((r.status, r.location()), (303, "/ai?done=saved"));
    let r = app
        .admin("GET", "/v1/events?aggregate=ai_global", None)
        .await;
    let last = r.json["items"].as_array().and_then(|i| i.last().cloned());
    assert_eq!(
        last.expect("an event")["actor"],
        "admin:admin",
        "dashboard events name the admin"
    );
}

/// The paths of the dashboard's POST routes, as `src/dashboard/mod.rs` declares them.
fn dashboard_post_routes() -> Vec<String> {
    let source = include_str!("../../src/dashboard/mod.rs");
    source
        .split(".route(")
        .skip(1)
        .filter(|route| {
            route
                .split(".route(")
                .next()
                .is_some_and(|r| r.contains("post("))
        })
        .filter_map(|route| Some(route.split('"').nth(1)?.to_string()))
        .collect()
}

async fn form_errors_keep_values(app: TestApp) {
    let mut v = Visitor::new(&app);
    v.login().await;
    let csrf = v.get("/ai").await.csrf();
    let head = app.head().await;
    let r = v
        .post(
            "/ai",
            &[
                ("csrf", &csrf),
                ("temperature", "hot"),
                ("max_tokens", "0"),
                ("model_name", "kept <model>"),
                ("api_key", "sk-never-echoed"),
            ],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("id=\"layer-temperature-error\""),
        "{}",
        r.body
    );
    assert!(r.body.contains("id=\"layer-max_tokens-error\""));
    assert!(r.body.contains("value=\"kept &lt;model&gt;\""));
    assert!(
        !r.body.contains("sk-never-echoed"),
        "a key is never sent back"
    );
    // A domain rule (the URL) is reported next to its field as well.
    let r = v
        .post("/ai", &[("csrf", &csrf), ("base_url", "ftp://x")])
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("id=\"layer-base_url-error\""), "{}", r.body);
    assert!(r.body.contains("value=\"ftp://x\""));
    // Account creation.
    let r = v
        .post(
            "/accounts",
            &[
                ("csrf", &csrf),
                ("id", "Bad Id!"),
                ("name", "Kept"),
                ("transport", "sandbox"),
            ],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("id=\"create-id-error\""), "{}", r.body);
    assert!(r.body.contains("value=\"Bad Id!\"") && r.body.contains("value=\"Kept\""));
    assert_eq!(app.head().await, head, "nothing was saved");
    // The chat settings of an existing account: a bad mode keeps the prompt.
    app.create_account("acme").await;
    let head = app.head().await;
    let chat = "/accounts/acme/chats/491701234567%40s.whatsapp.net";
    let r = v
        .post(
            &format!("{chat}/settings"),
            &[
                ("csrf", &csrf),
                ("mode", "sometimes"),
                ("custom_system_prompt", "Be brief."),
            ],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("Be brief.</textarea>"), "{}", r.body);
    assert!(r
        .body
        .contains("<details class=\"gear\" id=\"chat-settings\" open"));
    assert_eq!(app.head().await, head);
    // An empty operator message.
    let r = v
        .post(&format!("{chat}/send"), &[("csrf", &csrf), ("text", "  ")])
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("id=\"send-text-error\""));
    // The test page needs the account of a chat.
    let r = v
        .post(
            "/test",
            &[
                ("csrf", &csrf),
                ("chat_id", "491701234567@s.whatsapp.net"),
                ("message", "hi"),
            ],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("id=\"test-account_id-error\""));
    assert!(r.body.contains(">hi</textarea>"));
    // Deleting an account needs its id typed exactly.
    let r = v
        .post(
            "/accounts/acme/delete",
            &[("csrf", &csrf), ("confirm", "acm")],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("id=\"delete-confirm-error\""));
    assert!(r.body.contains("value=\"acm\""));
    // A bad filter on the log page.
    let r = v.get("/logs?status=weird").await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("id=\"logs-status-error\""));
    assert_eq!(app.head().await, head);
}
both_stores!(
    form_errors_keep_values_and_write_nothing,
    form_errors_keep_values
);

async fn user_content_escaped(app: TestApp) {
    let evil = "<script>alert('x')</script><img src=x onerror=alert(1)>";
    let r = app
        .admin(
            "POST",
            "/v1/accounts",
            Some(json!({"id": "acme", "name": evil, "transport": "sandbox"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Replies echo the inbound text (so the AI log holds the payload), under a global prompt
    // that carries it too (the /ai page).
    app.echo_mode().await;
    let r = app
        .admin(
            "PUT",
            "/v1/ai/global",
            Some(json!({"default_system_prompt": evil})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // A webhook whose URL carries it (the /webhooks pages).
    let r = app
        .admin(
            "POST",
            "/v1/webhooks",
            Some(json!({"url": format!("http://127.0.0.1:9/hook?q={evil}"), "events": ["*"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let hook = r.json["id"].as_str().expect("id").to_string();
    let r = app
        .admin(
            "POST",
            "/v1/accounts/acme/sandbox/inbound",
            Some(json!({"chat_id": "491701234567@s.whatsapp.net", "from": evil, "text": evil})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let r = app
        .admin(
            "PUT",
            "/v1/accounts/acme/chats/491701234567@s.whatsapp.net/ai",
            Some(json!({"custom_system_prompt": evil})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut v = Visitor::new(&app);
    v.login().await;
    let escaped = "&lt;script&gt;alert('x')&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;";
    // The echoed reply reaches the AI log.
    let mut tries = 0;
    while !v.get("/logs").await.body.contains(escaped) {
        tries += 1;
        assert!(tries < 200, "the echoed reply never reached /logs");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for path in ["/ai", "/logs", "/webhooks", &format!("/webhooks/{hook}")] {
        let page = v.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(
            page.body.contains(escaped),
            "{path} shows the payload, escaped"
        );
    }
    for path in [
        "/accounts",
        "/accounts/acme",
        "/accounts/acme/chats/491701234567%40s.whatsapp.net",
        "/test?account_id=acme",
        "/audit?account_id=acme",
        "/audit?account_id=acme&chat_id=491701234567%40s.whatsapp.net",
        "/ai",
        "/logs",
        // A filter value is shown back in its field.
        "/logs?account_id=%3Cscript%3Ealert('x')%3C%2Fscript%3E",
        "/webhooks",
        &format!("/webhooks/{hook}"),
    ] {
        let page = v.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(
            !page.body.contains("<script>alert"),
            "{path} has a live script"
        );
        assert!(!page.body.contains("<img src=x"), "{path} has a live img");
    }
    let chat = v
        .get("/accounts/acme/chats/491701234567%40s.whatsapp.net")
        .await;
    assert!(chat
        .body
        .contains("&lt;script&gt;alert('x')&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"));
    // The only script is the dashboard's own file.
    assert_eq!(chat.body.matches("<script").count(), 1);
    assert!(chat
        .body
        .contains("<script src=\"/assets/dashboard.js\" defer></script>"));
}
both_stores!(user_content_is_escaped, user_content_escaped);

#[tokio::test]
async fn assets_are_served_from_the_binary() {
    let Some(app) = TestApp::spawn(crate::helpers::Backend::Sqlite).await else {
        return;
    };
    let mut v = Visitor::new(&app);
    let css = v.get("/assets/dashboard.css").await;
    assert_eq!(css.status, 200);
    assert!(css.headers["content-type"]
        .to_str()
        .expect("type")
        .starts_with("text/css"));
    let js = v.get("/assets/dashboard.js").await;
    assert_eq!(js.status, 200);
    assert!(
        !css.body.contains("http://") && !css.body.contains("https://"),
        "no CDN"
    );
}

#[tokio::test]
async fn serve_prints_the_dashboard_url() {
    let dir = tempfile::tempdir().expect("tmp");
    let Some(vars) = TestApp::vars(Backend::Sqlite, &dir).await else {
        return;
    };
    let mut bin = Binary::start(&vars, "warn").await;
    let base = bin.base.clone();
    bin.wait_for_line("dashboard:").await;
    // The printed URL opens the dashboard: the login page for a new visitor.
    let client = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client");
    let r = client.get(format!("{base}/")).send().await.expect("get /");
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()[LOCATION], "/login");
    let login = client
        .get(format!("{base}/login"))
        .send()
        .await
        .expect("get /login");
    assert_eq!(login.status(), 200);
    let (out, _) = bin.finish().await;
    assert!(
        out.contains(&format!("dashboard: {base}/")),
        "the banner names the dashboard URL: {out}"
    );
}

async fn delete_from_the_dashboard(app: TestApp) {
    app.create_account("acme").await;
    let mut v = Visitor::new(&app);
    v.login().await;
    let csrf = v.get("/accounts/acme").await.csrf();
    let r = v
        .post(
            "/accounts/acme/delete",
            &[("csrf", &csrf), ("confirm", "acme")],
        )
        .await;
    assert_eq!((r.status, r.location()), (303, "/accounts?done=deleted"));
    assert_eq!(
        app.admin("GET", "/v1/accounts/acme", None).await.status,
        404
    );
    assert_eq!(v.get("/accounts/acme").await.status, 404);
}
both_stores!(
    account_deleted_from_the_dashboard,
    delete_from_the_dashboard
);

#[tokio::test]
async fn test_page_shows_sanitized_errors() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    let mut v = Visitor::new(&app);
    v.login().await;
    let csrf = v.get("/test").await.csrf();
    // No key anywhere: the API's message as a form-level error, status 409.
    let r = v.post("/test", &[("csrf", &csrf), ("message", "hi")]).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("no API key configured"), "{}", r.body);
    assert!(r.body.contains(">hi</textarea>"));
    // A failing model: the sanitized reason, never the upstream body or the key.
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(500).set_body_string("UPSTREAM-SECRET-BODY"))
        .mount(&stub)
        .await;
    let r = app
        .admin(
            "PUT",
            "/v1/ai/global",
            Some(
                json!({"base_url": format!("{}/v1", stub.uri()), "api_key": "sk-canary-dash",
                        "timeout_seconds": 5}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = v.post("/test", &[("csrf", &csrf), ("message", "hi")]).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("class=\"alert error\""), "{}", r.body);
    assert!(!r.body.contains("UPSTREAM-SECRET-BODY") && !r.body.contains("sk-canary-dash"));
    assert!(!r.body.contains("id=\"test-reply\""));
}

/// Issue 8 on the dashboard: the conversation controls on the layer form (with their ranges),
/// per chat in the gear, and the human-takeover pause with "Resume AI now".
async fn conversation_controls(app: TestApp) {
    let mut v = Visitor::new(&app);
    v.login().await;
    let page = v.get("/ai").await;
    assert!(page.body.contains("id=\"conversation-control\""));
    for help in ["the AI stays quiet there", "get one reply", "UTC day"] {
        assert!(page.body.contains(help), "the page explains: {help}");
    }
    let csrf = page.csrf();
    let r = v
        .post(
            "/ai",
            &[
                ("csrf", &csrf),
                ("human_takeover_minutes", "45"),
                ("debounce_seconds", "3"),
                ("daily_token_budget", "5000"),
                ("max_retries", "1"),
                ("fallback_model_name", "backup-model"),
            ],
        )
        .await;
    assert_eq!(
        (r.status, r.location()),
        (303, "/ai?done=saved"),
        "{}",
        r.body
    );
    let global = app.admin("GET", "/v1/ai/global", None).await.json;
    assert_eq!(global["human_takeover_minutes"], 45, "{global}");
    assert_eq!(global["debounce_seconds"], 3);
    assert_eq!(global["daily_token_budget"], 5000);
    assert_eq!(global["fallback_model_name"], "backup-model");

    // Out of range: the error next to the field, the value kept, nothing written.
    let r = v
        .refused(
            "/ai",
            &[
                ("csrf", &csrf),
                ("debounce_seconds", "4000"),
                ("max_retries", "2"),
            ],
            "layer-debounce_seconds",
        )
        .await;
    assert!(r.body.contains("value=\"4000\""));

    // A chat's own cap from the gear; a bad value there is refused the same way.
    app.create_account("acme").await;
    let jid = "491701234567@s.whatsapp.net";
    let chat = "/accounts/acme/chats/491701234567%40s.whatsapp.net";
    let effective = format!("/v1/accounts/acme/chats/{jid}/ai/effective");
    let page = v.get(chat).await;
    assert!(page.body.contains("id=\"chat-controls\""));
    let r = v
        .post(
            &format!("{chat}/settings"),
            &[
                ("csrf", &csrf),
                ("mode", "inherit"),
                ("max_replies_per_chat_per_hour", "3"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let eff = app.admin("GET", &effective, None).await.json;
    assert_eq!(
        eff["max_replies_per_chat_per_hour"],
        json!({"value": 3, "source": "chat"}),
        "{eff}"
    );
    assert_eq!(eff["debounce_seconds"]["source"], "global");
    v.refused(
        &format!("{chat}/settings"),
        &[
            ("csrf", &csrf),
            ("mode", "inherit"),
            ("history_window_hours", "-2"),
        ],
        "layer-history_window_hours",
    )
    .await;

    // An operator answers from the dashboard: the AI steps back, the page says until when and
    // why, and "Resume AI now" ends it.
    let r = v
        .post(
            &format!("{chat}/send"),
            &[("csrf", &csrf), ("text", "a person here")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let page = v.get(chat).await;
    assert!(page.body.contains("id=\"ai-paused\""), "{}", page.body);
    assert!(page.body.contains("because an operator answered"));
    let eff = app.admin("GET", &effective, None).await.json;
    assert!(eff["paused_until"].is_string(), "{eff}");
    let r = v.post(&format!("{chat}/resume"), &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(r.location().ends_with("?done=resumed"));
    let page = v.get(chat).await;
    assert!(!page.body.contains("id=\"ai-paused\""));
    let eff = app.admin("GET", &effective, None).await.json;
    assert_eq!(eff["paused_until"], serde_json::Value::Null, "{eff}");
}
both_stores!(
    conversation_controls_on_the_dashboard,
    conversation_controls
);

/// When the AI speaks (issue 24) from the dashboard: keyword lists one per line, business hours
/// as the time zone then one range per line, choices as selects; they read back in the same form,
/// and bad entries are refused next to their field with nothing written.
async fn speak_settings(app: TestApp) {
    let mut v = Visitor::new(&app);
    v.login().await;
    let page = v.get("/ai").await;
    assert!(page.body.contains("id=\"when-to-speak\""), "{}", page.body);
    let csrf = page.csrf();
    let hours = "Europe/Lisbon\nmon-fri 09:00-18:00\nsat 10:00-13:00";
    let r = v
        .post(
            "/ai",
            &[
                ("csrf", &csrf),
                ("trigger", "keywords"),
                ("trigger_keywords", "price\r\n/^order \\d+$/\r\n"),
                ("business_hours", hours),
                ("outside_hours", "away_message"),
                ("away_message", "We are closed."),
                ("handoff_keywords", "human\nagent"),
                ("max_message_chars", "1000"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let global = app.admin("GET", "/v1/ai/global", None).await.json;
    assert_eq!(global["trigger"], "keywords", "{global}");
    assert_eq!(
        global["trigger_keywords"],
        json!(["price", "/^order \\d+$/"])
    );
    assert_eq!(global["handoff_keywords"], json!(["human", "agent"]));
    assert_eq!(
        global["business_hours"],
        json!({"time_zone": "Europe/Lisbon", "ranges": [
            {"days": "mon-fri", "open": "09:00", "close": "18:00"},
            {"days": "sat", "open": "10:00", "close": "13:00"}]})
    );
    assert_eq!(global["max_message_chars"], 1000);
    let page = v.get("/ai").await;
    assert!(
        page.body
            .contains(">Europe/Lisbon\nmon-fri 09:00-18:00\nsat 10:00-13:00<"),
        "the form shows what was saved"
    );

    for (field, value) in [
        ("trigger_keywords", "/([a-z/"),
        ("business_hours", "Europe/Lisbon\nmon-fri 18:00-09:00"),
        ("business_hours", "Mars/Olympus\nmon 09:00-17:00"),
        ("business_hours", "UTC\nsometimes"),
        ("trigger", "sometimes"),
    ] {
        v.refused(
            "/ai",
            &[("csrf", &csrf), (field, value)],
            &format!("layer-{field}"),
        )
        .await;
    }
}
both_stores!(speak_on_the_dashboard, speak_settings);

/// The chat page's live feed: a `changed` event arrives within a second of a message committed
/// for this chat (and not for another chat); it needs a session; it ends when the server stops.
async fn live_chat_feed(mut app: TestApp) {
    app.create_account("acme").await;
    let mut v = Visitor::new(&app);
    let jid = "491701234567@s.whatsapp.net";
    let path = "/accounts/acme/chats/491701234567%40s.whatsapp.net/live";
    // Without a session: the login page, no stream.
    let r = v.get(path).await;
    assert!(
        r.location().starts_with("/login"),
        "{} {}",
        r.status,
        r.location()
    );
    v.login().await;
    let mut feed = v
        .client
        .get(format!("{}{path}", app.base))
        .header(COOKIE, v.cookie_header())
        .send()
        .await
        .expect("feed");
    assert_eq!(feed.status(), 200);
    assert!(feed
        .headers()
        .get("content-type")
        .and_then(|t| t.to_str().ok())
        .is_some_and(|t| t.starts_with("text/event-stream")));
    let inject = |chat: &'static str, id: &'static str| {
        app.admin(
            "POST",
            "/v1/accounts/acme/sandbox/inbound",
            Some(json!({"chat_id": chat, "from": "4917", "text": "hi", "id": id})),
        )
    };
    // Another chat's message: nothing for this feed.
    assert_eq!(
        inject("491709999999@s.whatsapp.net", "other-1")
            .await
            .status,
        202
    );
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(700), feed.chunk()).await;
    assert!(quiet.is_err(), "no event for another chat: {quiet:?}");
    let started = std::time::Instant::now();
    assert_eq!(inject(jid, "mine-1").await.status, 202);
    let chunk = tokio::time::timeout(std::time::Duration::from_secs(2), feed.chunk())
        .await
        .expect("an event within the deadline")
        .expect("chunk")
        .expect("open stream");
    let text = String::from_utf8_lossy(&chunk).to_string();
    assert!(text.contains("event: changed"), "{text}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // The account page's feed hears of any of its chats, the AI log's of every chat; an unknown
    // account has none.
    let open = |path: &'static str| {
        v.client
            .get(format!("{}{path}", app.base))
            .header(COOKIE, v.cookie_header())
            .send()
    };
    let mut account = open("/accounts/acme/live").await.expect("account feed");
    let mut log = open("/logs/live").await.expect("log feed");
    assert_eq!(
        (account.status().as_u16(), log.status().as_u16()),
        (200, 200)
    );
    assert_eq!(
        open("/accounts/nobody/live").await.expect("feed").status(),
        404
    );
    assert_eq!(
        inject("491708888888@s.whatsapp.net", "other-2")
            .await
            .status,
        202
    );
    for feed in [&mut account, &mut log] {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(2), feed.chunk())
            .await
            .expect("an event within the deadline")
            .expect("chunk")
            .expect("open stream");
        assert!(String::from_utf8_lossy(&chunk).contains("event: changed"));
    }
    drop((account, log));
    // A stop ends the stream (it does not hold the shutdown).
    let stop = tokio::spawn(async move { app.restart().await });
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Ok(Some(_)) = feed.chunk().await {}
    })
    .await;
    assert!(end.is_ok(), "the feed ended with the server");
    stop.await.expect("restarted");
}
both_stores!(live_feed, live_chat_feed);
