//! `GET /v1/events`: every change, in commit order, with who made it.

use serde_json::json;

use crate::ai_config::seed_global_body;
use crate::both_stores;
use crate::helpers::TestApp;

async fn events_show_every_change_with_actor(app: TestApp) {
    app.create_account("acme").await;
    app.admin("PUT", "/v1/ai/global", Some(seed_global_body()))
        .await;
    let r = app
        .client
        .put(format!("{}/v1/accounts/acme/ai", app.base))
        .bearer_auth(app.admin_token())
        .header("x-request-id", "req-123")
        .json(&json!({"model_name": "gpt-4.1"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "req-123", "request id echoed");

    let ev = app.admin("GET", "/v1/events", None).await;
    assert_eq!(ev.status, 200, "{}", ev.text);
    let items = ev.json["items"].as_array().expect("items");
    let types: Vec<&str> = items
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        types,
        [
            "AccountCreated",
            "AiSettingsChanged",
            "AiApiKeySet",
            "AiSettingsChanged"
        ]
    );
    let positions: Vec<i64> = items
        .iter()
        .map(|e| e["position"].as_i64().unwrap_or(0))
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "increasing: {positions:?}"
    );
    for e in items {
        assert_eq!(e["actor"], "admin:tester");
        assert_eq!(e["version"], "1");
        assert!(e["time"].as_str().is_some());
    }
    assert_eq!(items[3]["request_id"], "req-123");
    assert_eq!(items[3]["stream"], "account/acme");
    assert_eq!(
        items[2]["payload"]["AiApiKeySet"]["key"]["sealed"],
        "[redacted]"
    );

    // Paging and filters.
    let p1 = app.admin("GET", "/v1/events?limit=2", None).await;
    assert_eq!(p1.json["items"].as_array().map(Vec::len), Some(2));
    let cursor = p1.json["next_cursor"].as_str().expect("cursor").to_string();
    let p2 = app
        .admin("GET", &format!("/v1/events?after={cursor}&limit=2"), None)
        .await;
    assert_eq!(p2.json["items"][0]["position"], items[2]["position"]);
    let acc = app
        .admin("GET", "/v1/events?aggregate=account/acme", None)
        .await;
    assert_eq!(acc.json["items"].as_array().map(Vec::len), Some(2));
    let bad = app.admin("GET", "/v1/events?limit=0", None).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json["error"]["field"], "limit");
}
both_stores!(events_history, events_show_every_change_with_actor);
