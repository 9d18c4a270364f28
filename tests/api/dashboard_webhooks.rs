//! The dashboard's Webhooks page over plain HTTP: create a subscription to a wiremock receiver on
//! loopback (the signing secret shown once, never again), bad input kept in the form with nothing
//! stored, deliveries listed and redelivered, the 409 of a disabled webhook as a notice, delete,
//! and CSRF refusal.

use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::both_stores;
use crate::dashboard::{Page, Visitor};
use crate::helpers::{eventually, Backend, TestApp};
use crate::replies::{inbound, JID};

async fn receiver(status: u16) -> MockServer {
    let rx = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(status))
        .mount(&rx)
        .await;
    rx
}

async fn api_webhooks(app: &TestApp) -> Vec<Value> {
    let r = app.admin("GET", "/v1/webhooks", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["items"].as_array().cloned().unwrap_or_default()
}

async fn api_deliveries(app: &TestApp, hook: &str) -> Vec<Value> {
    let r = app
        .admin("GET", &format!("/v1/webhooks/{hook}/deliveries"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["items"].as_array().cloned().unwrap_or_default()
}

/// The text of the element with `id` (up to its first tag end), from a page's HTML.
fn text_after(page: &Page, marker: &str) -> String {
    let start = page
        .body
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not on the page: {}", page.body))
        + marker.len();
    let rest = &page.body[start..];
    let rest = &rest[rest.find('>').expect("tag end") + 1..];
    rest[..rest.find('<').expect("text end")].to_string()
}

/// Webhook-ids the receiver got.
async fn received_ids(rx: &MockServer) -> Vec<String> {
    rx.received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| {
            r.headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

async fn webhooks_from_the_dashboard(app: TestApp) {
    let rx = receiver(204).await;
    app.create_account("acme").await;
    let mut v = Visitor::new(&app);
    v.login().await;

    let page = v.get("/webhooks").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("No webhooks yet"));
    assert!(page.body.contains("aria-current=\"page\">Webhooks<"));
    let csrf = page.csrf();

    // Bad input: the error next to its field, everything typed kept, nothing stored.
    let head = app.head().await;
    let typed = "ftp://127.0.0.1/<script>alert(1)</script>";
    let r = v
        .post(
            "/webhooks",
            &[
                ("csrf", &csrf),
                ("url", typed),
                ("events", "ai.reply.sent"),
                ("account_id", "acme"),
            ],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        text_after(&r, "id=\"create-url-error\"").contains("must be an http or https URL"),
        "{}",
        r.body
    );
    assert!(r.body.contains("aria-invalid=\"true\""));
    assert!(r
        .body
        .contains("value=\"ftp://127.0.0.1/&lt;script&gt;alert(1)&lt;/script&gt;\""));
    assert!(!r.body.contains("<script>alert(1)"), "escaped");
    assert!(r.body.contains("value=\"ai.reply.sent\" checked"));
    assert!(r.body.contains("value=\"acme\" selected"));
    // A private address the outbound guard refuses (only loopback is allowed in the tests).
    let r = v
        .post(
            "/webhooks",
            &[
                ("csrf", &csrf),
                ("url", "http://10.1.2.3/hook"),
                ("events", "*"),
            ],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(text_after(&r, "id=\"create-url-error\"").contains("WAGATE_ALLOW_PRIVATE_NETWORKS"));
    assert!(r.body.contains("value=\"http://10.1.2.3/hook\""));
    assert!(r.body.contains("value=\"*\" checked"));
    // No event type chosen.
    let url = format!("{}/hook", rx.uri());
    let r = v.post("/webhooks", &[("csrf", &csrf), ("url", &url)]).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(text_after(&r, "id=\"create-events-error\"").contains("at least one event type"));
    assert!(r.body.contains(&format!("value=\"{url}\"")));
    assert_eq!(app.head().await, head, "a refused form writes nothing");
    assert!(api_webhooks(&app).await.is_empty());

    // Missing CSRF token: 403, nothing stored.
    let r = v
        .post(
            "/webhooks",
            &[("url", url.as_str()), ("events", "message.received")],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(api_webhooks(&app).await.is_empty());

    // Created: the secret is shown once, with how to verify it.
    let r = v
        .post(
            "/webhooks",
            &[
                ("csrf", &csrf),
                ("url", &url),
                ("events", "message.received"),
                ("account_id", "acme"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let secret = text_after(&r, "id=\"new-secret\"");
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert!(r.body.contains("webhook-signature") && r.body.contains("webhook-timestamp"));
    let hooks = api_webhooks(&app).await;
    assert_eq!(hooks.len(), 1);
    let hook = hooks[0]["id"].as_str().expect("id").to_string();
    assert_eq!(hooks[0]["events"], json!(["message.received"]));
    assert_eq!(hooks[0]["account_id"], "acme");
    assert_eq!(hooks[0]["url"], url.as_str());
    let events = app.admin("GET", "/v1/events?limit=500", None).await;
    assert!(events.text.contains("admin:admin"));
    // Never again.
    let list = v.get("/webhooks").await;
    assert!(list.body.contains(&hook) && list.body.contains(&url));
    assert!(!list.body.contains(&secret) && !list.body.contains("new-secret"));
    let detail = v.get(&format!("/webhooks/{hook}")).await;
    assert_eq!(detail.status, 200, "{}", detail.body);
    assert!(!detail.body.contains(&secret));
    assert!(detail.body.contains("No deliveries match."));
    assert!(!events.text.contains(&secret));

    // An event: delivered, and listed on the page.
    inbound(&app, "acme", JID, "m-1", "hello").await;
    let delivered = eventually(20, "the delivery is delivered", || async {
        api_deliveries(&app, &hook)
            .await
            .into_iter()
            .find(|d| d["status"] == "delivered")
    })
    .await;
    let d = delivered["id"].as_str().expect("delivery id").to_string();
    let detail = v.get(&format!("/webhooks/{hook}")).await;
    assert!(detail
        .body
        .contains(&format!("id=\"delivery-{d}\" class=\"status-delivered\"")));
    assert!(detail.body.contains("message.received"));
    assert!(detail
        .body
        .contains(&format!("aria-label=\"Redeliver {d}\"")));
    let filtered = v.get(&format!("/webhooks/{hook}?status=dead")).await;
    assert_eq!(filtered.status, 200);
    assert!(filtered.body.contains("No deliveries match."));
    let bad = v.get(&format!("/webhooks/{hook}?status=%3Cb%3E")).await;
    assert_eq!(bad.status, 400);
    assert!(text_after(&bad, "id=\"filter-status-error\"").contains("must be pending"));
    assert!(!bad.body.contains("<b>"));

    // The secret shown on the page signs the requests.
    let got = rx.received_requests().await.unwrap_or_default();
    assert_eq!(got.len(), 1);
    standardwebhooks::Webhook::new(&secret)
        .expect("secret")
        .verify(&got[0].body, &got[0].headers)
        .expect("signed with the secret shown once");

    // Redeliver: without CSRF 403; with it a notice, and the receiver gets it again.
    let action = format!("/webhooks/{hook}/deliveries/{d}/redeliver");
    let r = v.post(&action, &[]).await;
    assert_eq!(r.status, 403);
    let csrf = detail.csrf();
    let r = v.post(&action, &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), format!("/webhooks/{hook}?done=redelivered"));
    let page = v.get(r.location()).await;
    assert!(page.body.contains("Delivery queued again"));
    eventually(20, "the receiver gets it again", || async {
        let ids = received_ids(&rx).await;
        (ids.len() == 2 && ids.iter().all(|i| *i == d)).then_some(())
    })
    .await;
    eventually(10, "recorded as delivered again", || async {
        api_deliveries(&app, &hook)
            .await
            .into_iter()
            .find(|x| x["id"] == d.as_str() && x["status"] == "delivered" && x["attempts"] == 2)
    })
    .await;
    let r = v
        .post(
            &format!("/webhooks/{hook}/deliveries/msg_nope/redeliver"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, 404);

    // Delete: needs the confirmation (and the CSRF token).
    let r = v
        .post(&format!("/webhooks/{hook}/delete"), &[("confirm", "yes")])
        .await;
    assert_eq!(r.status, 403);
    let r = v
        .post(&format!("/webhooks/{hook}/delete"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(text_after(&r, "id=\"delete-confirm-error\"").contains("tick the box"));
    assert_eq!(api_webhooks(&app).await.len(), 1);
    let r = v
        .post(
            &format!("/webhooks/{hook}/delete"),
            &[("csrf", &csrf), ("confirm", "yes")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), "/webhooks?done=webhook_deleted");
    let page = v.get(r.location()).await;
    assert!(page.body.contains("Webhook deleted"));
    assert!(page.body.contains("No webhooks yet"));
    assert!(api_webhooks(&app).await.is_empty());
    assert_eq!(v.get(&format!("/webhooks/{hook}")).await.status, 404);
}
both_stores!(webhooks_page, webhooks_from_the_dashboard);

/// A webhook disabled by a 410: the page says so and offers no Redeliver button; a redelivery
/// posted anyway is the API's 409, shown as a notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliver_on_a_disabled_webhook_is_a_notice() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    let rx = receiver(410).await;
    app.create_account("acme").await;
    let mut v = Visitor::new(&app);
    v.login().await;
    let csrf = v.get("/webhooks").await.csrf();
    let r = v
        .post(
            "/webhooks",
            &[("csrf", &csrf), ("url", &rx.uri()), ("events", "*")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let hook = api_webhooks(&app).await[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    inbound(&app, "acme", JID, "m-1", "hello").await;
    let dead = eventually(20, "the webhook is disabled", || async {
        let r = app
            .admin("GET", &format!("/v1/webhooks/{hook}"), None)
            .await;
        if r.json["status"] != "disabled" {
            return None;
        }
        api_deliveries(&app, &hook)
            .await
            .into_iter()
            .find(|d| d["status"] == "dead")
    })
    .await;
    let d = dead["id"].as_str().expect("id").to_string();
    let page = v.get(&format!("/webhooks/{hook}")).await;
    assert!(page.body.contains("badge disabled"));
    assert!(page.body.contains("This webhook is disabled"));
    assert!(page.body.contains(&format!("id=\"delivery-{d}\"")));
    assert!(!page.body.contains("aria-label=\"Redeliver"));
    let list = v.get("/webhooks").await;
    assert!(list.body.contains("badge disabled"));

    let before = rx.received_requests().await.unwrap_or_default().len();
    let r = v
        .post(
            &format!("/webhooks/{hook}/deliveries/{d}/redeliver"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(text_after(&r, "id=\"redeliver-refused\"").contains("the webhook is disabled"));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        rx.received_requests().await.unwrap_or_default().len(),
        before
    );
}
