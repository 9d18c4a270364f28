//! `GET /v1/stats`: the overview's numbers for a seeded history (replies sent, skipped and
//! failed with their reasons, inbound messages, tokens against the budget, latency, webhook
//! deliveries), its bad input, and that a restart (from the read-model checkpoint) answers the
//! same.

use serde_json::{json, Value};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::both_stores;
use crate::helpers::{eventually, Backend, TestApp};
use crate::replies::{completion, configure, inbound, settled};

/// Seeds: account `acme` (daily token budget 5000) gets three messages answered (18 tokens each)
/// and one whose model call is refused (failed, `model_error`); account `beta` has AI disabled,
/// so its one message is skipped (`disabled`). A webhook on acme's `message.received` answers
/// 500 (its four deliveries wait for a retry), one on beta's answers 410 Gone (dead-lettered).
/// Answers the model stub and the two receivers, to keep alive while the gateway calls them.
async fn seed(app: &TestApp) -> [MockServer; 3] {
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains("please fail"))
        .respond_with(ResponseTemplate::new(400).set_body_string("bad request"))
        .with_priority(1)
        .mount(&stub)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("Hello")))
        .with_priority(2)
        .mount(&stub)
        .await;
    configure(app, &stub, json!({"max_retries": 0})).await;
    app.create_account("acme").await;
    app.create_account("beta").await;
    let r = app
        .admin(
            "PUT",
            "/v1/accounts/acme/ai",
            Some(json!({"daily_token_budget": 5000})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app
        .admin(
            "PUT",
            "/v1/accounts/beta/ai",
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let failing = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&failing)
        .await;
    let gone = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(410))
        .mount(&gone)
        .await;
    for (rx, acc) in [(&failing, "acme"), (&gone, "beta")] {
        let r = app
            .admin(
                "POST",
                "/v1/webhooks",
                Some(json!({"url": rx.uri(), "events": ["message.received"], "account_id": acc})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }

    // One chat per message, so no reply supersedes another.
    for (i, text) in ["Hi", "Open today?", "Thanks", "please fail"]
        .iter()
        .enumerate()
    {
        let jid = format!("4917000000{i}@s.whatsapp.net");
        inbound(app, "acme", &jid, &format!("wamid-a{i}"), text).await;
        let row = settled(app, "acme", &format!("wamid-a{i}")).await;
        let want = if i == 3 { "failed" } else { "sent" };
        assert_eq!(row["status"], want, "{row}");
    }
    inbound(
        app,
        "beta",
        "491700000009@s.whatsapp.net",
        "wamid-b",
        "Hello?",
    )
    .await;
    let row = settled(app, "beta", "wamid-b").await;
    assert_eq!(row["reason_code"], "disabled", "{row}");
    [stub, failing, gone]
}

fn sum(items: &Value, key: &str) -> u64 {
    items
        .as_array()
        .expect("a series")
        .iter()
        .map(|b| b[key].as_u64().unwrap_or(0))
        .sum()
}

/// `GET /v1/stats?…` as the admin, answered 200.
async fn stats(app: &TestApp, query: &str) -> Value {
    let r = app.admin("GET", &format!("/v1/stats{query}"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json
}

/// The answer without the times that move with the clock.
fn settled_part(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("to");
        o.remove("from");
    }
    v
}

async fn stats_of_a_seeded_history(backend: Backend) {
    let Some(mut app) = TestApp::spawn_with_settings(
        backend,
        &[
            ("WAGATE_WEBHOOK_RETRY_SCHEDULE", "1h"),
            ("WAGATE_WEBHOOK_TIMEOUT", "2s"),
        ],
    )
    .await
    else {
        return;
    };
    let _servers = seed(&app).await;

    // Webhook deliveries: acme's four wait after a 500, beta's one is dead after 410 Gone.
    let s = eventually(30, "deliveries attempted", || async {
        let s = stats(&app, "").await;
        (s["webhook_deliveries"] == json!({"pending": 4, "failed": 4, "dead": 1})).then_some(s)
    })
    .await;

    assert_eq!(s["period"], "24h");
    assert_eq!(s["account"], Value::Null);
    assert_eq!(s["bucket"], "hour");
    assert_eq!(s["token_bucket"], "day");
    for series in ["replies", "inbound", "latency_ms"] {
        assert_eq!(s[series].as_array().map(Vec::len), Some(24), "{series}");
    }
    assert_eq!(s["from"], s["replies"][0]["start"]);
    assert_eq!(
        s["totals"],
        json!({"sent": 3, "skipped": 1, "failed": 1, "inbound": 5, "tokens": 54})
    );
    assert_eq!(sum(&s["replies"], "sent"), 3);
    assert_eq!(sum(&s["replies"], "skipped"), 1);
    assert_eq!(sum(&s["replies"], "failed"), 1);
    assert_eq!(sum(&s["inbound"], "count"), 5);
    assert_eq!(
        s["top_reasons"],
        json!([
            {"status": "skipped", "reason_code": "disabled", "count": 1},
            {"status": "failed", "reason_code": "model_error", "count": 1},
        ])
    );
    // Three model answers; the refused call generated nothing.
    assert_eq!(sum(&s["latency_ms"], "count"), 3);
    assert_eq!(s["latency_summary_ms"]["count"], 3);
    let p50 = s["latency_summary_ms"]["p50"].as_u64().expect("a p50");
    let p95 = s["latency_summary_ms"]["p95"].as_u64().expect("a p95");
    assert!(p50 <= p95, "{s}");
    let tokens = s["tokens"].as_array().expect("tokens");
    assert_eq!(tokens.len(), 2, "{s}");
    assert_eq!(tokens[0]["account_id"], "acme");
    assert_eq!(tokens[0]["daily_token_budget"], 5000);
    assert_eq!(sum(&tokens[0]["days"], "tokens"), 54);
    assert_eq!(tokens[1]["account_id"], "beta");
    assert_eq!(sum(&tokens[1]["days"], "tokens"), 0);

    // One account, other periods.
    let acme = stats(&app, "?period=7d&account=acme").await;
    assert_eq!(acme["period"], "7d");
    assert_eq!(acme["account"], "acme");
    assert_eq!(acme["replies"].as_array().map(Vec::len), Some(168));
    assert_eq!(
        acme["totals"],
        json!({"sent": 3, "skipped": 0, "failed": 1, "inbound": 4, "tokens": 54})
    );
    assert_eq!(acme["tokens"].as_array().map(Vec::len), Some(1));
    let beta = stats(&app, "?period=1h&account=beta").await;
    assert_eq!(beta["replies"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        beta["top_reasons"],
        json!([{"status": "skipped", "reason_code": "disabled", "count": 1}])
    );
    let month = stats(&app, "?period=30d").await;
    assert_eq!(month["replies"].as_array().map(Vec::len), Some(720));
    assert_eq!(month["totals"], s["totals"]);

    // Bad input: 400 naming the parameter, 404 for an account that does not exist, 403 for an
    // account token.
    for (query, field) in [
        ("?period=2d", "period"),
        ("?period=24", "period"),
        ("?account=Not%20An%20Id", "account"),
    ] {
        let r = app.admin("GET", &format!("/v1/stats{query}"), None).await;
        assert_eq!(r.status, 400, "{query}: {}", r.text);
        assert_eq!(r.json["error"]["field"], field, "{query}: {}", r.text);
    }
    let r = app.admin("GET", "/v1/stats?colour=red", None).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = app.admin("GET", "/v1/stats?account=nobody", None).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "not_found");
    let token = app.account_token("acme").await;
    let r = app.call("GET", "/v1/stats", Some(&token), None).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = app.call("GET", "/v1/stats", None, None).await;
    assert_eq!(r.status, 401, "{}", r.text);

    // A restart (from the read-model checkpoint written at stop) answers the same.
    let before = settled_part(stats(&app, "?period=30d").await);
    app.restart().await;
    let after = settled_part(stats(&app, "?period=30d").await);
    assert_eq!(after, before);
}
both_stores!(stats_api, stats_of_a_seeded_history(Backend));
