//! Checklist item 16: bad input is a 4xx naming the problem, and nothing is written.

use serde_json::json;

use crate::both_stores;
use crate::helpers::TestApp;

async fn bad_input_is_rejected_and_writes_nothing(app: TestApp) {
    app.create_account("acme").await;
    let head = app.head().await;
    let token = app.admin_token();
    let url = format!("{}/v1/ai/global", app.base);

    let raw = |body: &'static str, ctype: &'static str| {
        app.client
            .put(&url)
            .bearer_auth(&token)
            .header("content-type", ctype)
            .body(body)
    };
    let r = app.send(raw("{\"enabled\": tru", "application/json")).await;
    assert_eq!(
        (r.status, r.json["error"]["code"].as_str()),
        (400, Some("malformed_json")),
        "{}",
        r.text
    );
    let r = app
        .send(raw("{\"enabled\": true} trailing", "application/json"))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = app.send(raw("{\"enabled\": true}", "text/plain")).await;
    assert_eq!(r.status, 415, "{}", r.text);
    let big = format!(
        "{{\"default_system_prompt\": \"{}\"}}",
        "x".repeat(300 * 1024)
    );
    let r = app
        .send(
            app.client
                .put(&url)
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(big),
        )
        .await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "payload_too_large");

    let cases = [
        (json!({"enabled": true, "colour": "blue"}), "colour"),
        (json!({"temperature": 2.5}), "temperature"),
        (json!({"temperature": "hot"}), "temperature"),
        (json!({"max_tokens": 0}), "max_tokens"),
        (json!({"max_tokens": -5}), "max_tokens"),
        (json!({"max_tokens": 99999999999u64}), "max_tokens"),
        (json!({"timeout_seconds": 601}), "timeout_seconds"),
        (json!({"reply_delay_seconds": 3601}), "reply_delay_seconds"),
        (json!({"base_url": "ftp://example.com"}), "base_url"),
        (json!({"base_url": "not a url"}), "base_url"),
        (
            json!({"base_url": "https://user:pw@example.com/v1"}),
            "base_url",
        ),
        (json!({"api_key": ""}), "api_key"),
        (json!({"model_name": ""}), "model_name"),
        (
            json!({"default_system_prompt": "x".repeat(33 * 1024)}),
            "default_system_prompt",
        ),
        (json!({"enabled": "yes"}), "enabled"),
    ];
    for (body, field) in cases {
        let r = app
            .call("PUT", "/v1/ai/global", Some(&token), Some(body.clone()))
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.json["error"]["field"], field, "{body}: {}", r.text);
        assert!(r.json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let chat = "/v1/accounts/acme/chats/1@s.whatsapp.net/ai";
    let r = app
        .call(
            "PUT",
            chat,
            Some(&token),
            Some(json!({"mode": "sometimes"})),
        )
        .await;
    assert_eq!(
        (r.status, r.json["error"]["field"].as_str()),
        (400, Some("mode")),
        "{}",
        r.text
    );
    let r = app
        .call(
            "PUT",
            chat,
            Some(&token),
            Some(json!({"mode": "enabled", "x": 1})),
        )
        .await;
    assert_eq!(
        (r.status, r.json["error"]["field"].as_str()),
        (400, Some("x")),
        "{}",
        r.text
    );
    let r = app
        .call(
            "PUT",
            "/v1/accounts/acme/chats/1@s.whatsapp.net/blocked",
            Some(&token),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = app
        .call(
            "POST",
            "/v1/accounts",
            Some(&token),
            Some(json!({"id": "x".repeat(70), "transport": "sandbox"})),
        )
        .await;
    assert_eq!(
        (r.status, r.json["error"]["field"].as_str()),
        (400, Some("id")),
        "{}",
        r.text
    );
    let r = app
        .call(
            "POST",
            "/v1/accounts/acme/tokens",
            Some(&token),
            Some(json!({"name": ""})),
        )
        .await;
    assert_eq!(
        (r.status, r.json["error"]["field"].as_str()),
        (400, Some("name")),
        "{}",
        r.text
    );

    // Unknown route and method: JSON errors too.
    let r = app.call("GET", "/v1/nope", Some(&token), None).await;
    assert_eq!(
        (r.status, r.json["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let r = app.call("PATCH", "/v1/ai/global", Some(&token), None).await;
    assert_eq!(r.status, 405);

    assert_eq!(app.head().await, head, "no event was written for bad input");
}
both_stores!(bad_input, bad_input_is_rejected_and_writes_nothing);
