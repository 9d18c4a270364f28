//! The per-caller API rate limit (`WAGATE_API_RATE_LIMIT_PER_SECOND` / `_BURST`): each admin
//! subject and each account token has its own budget; past it, 429 `rate_limited` with
//! `Retry-After`. The Cloud API webhook (no bearer) is not limited by it.

use serde_json::json;

use crate::both_stores;
use crate::helpers::{Backend, TestApp};

const BURST: usize = 4;

fn retry_after(r: &crate::helpers::Resp) -> u64 {
    r.headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("Retry-After on a 429: {:?}", r.headers))
}

async fn per_token_budgets(backend: Backend) {
    let burst = BURST.to_string();
    let Some(app) = TestApp::spawn_with_settings(
        backend,
        &[
            ("WAGATE_API_RATE_LIMIT_PER_SECOND", "1"),
            ("WAGATE_API_RATE_LIMIT_BURST", &burst),
        ],
    )
    .await
    else {
        return;
    };
    // The admin subject's budget: account, token, then reads up to the burst.
    let admin = app.admin_token();
    let r = app
        .call(
            "POST",
            "/v1/accounts",
            Some(&admin),
            Some(json!({"id": "acme", "transport": "sandbox"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = app
        .call(
            "POST",
            "/v1/accounts/acme/tokens",
            Some(&admin),
            Some(json!({"name": "ci"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let account_token = r.json["token"].as_str().expect("token").to_string();
    for i in 2..BURST {
        let r = app.call("GET", "/v1/ai/global", Some(&admin), None).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text);
    }
    let r = app.call("GET", "/v1/ai/global", Some(&admin), None).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "rate_limited");
    assert!(retry_after(&r) >= 1);
    // Another admin token of the same subject shares the budget.
    let r = app.admin("GET", "/v1/ai/global", None).await;
    assert_eq!(r.status, 429, "keyed by subject: {}", r.text);

    // The account token has a budget of its own.
    for i in 0..BURST {
        let r = app
            .call("GET", "/v1/accounts/acme", Some(&account_token), None)
            .await;
        assert_eq!(r.status, 200, "account request {i}: {}", r.text);
    }
    let r = app
        .call("GET", "/v1/accounts/acme", Some(&account_token), None)
        .await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "rate_limited");
    let wait = retry_after(&r);
    assert!((1..=2).contains(&wait), "one request a second: {wait}");

    // Unauthenticated requests are not spent from anyone's budget: still 401, and the Cloud API
    // webhook (signed by Meta, no bearer) answers as always.
    for _ in 0..BURST + 2 {
        let r = app.call("GET", "/v1/ai/global", Some("wrong"), None).await;
        assert_eq!(r.status, 401, "{}", r.text);
        let r = app
            .call(
                "GET",
                "/v1/transports/cloud-api/acme/webhook?hub.mode=subscribe&hub.verify_token=x&hub.challenge=1",
                None,
                None,
            )
            .await;
        assert_ne!(r.status, 429, "the webhook is not rate limited: {}", r.text);
    }

    // After Retry-After the budget is back.
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    let r = app
        .call("GET", "/v1/accounts/acme", Some(&account_token), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

both_stores!(per_token_rate_limit, per_token_budgets(Backend));
