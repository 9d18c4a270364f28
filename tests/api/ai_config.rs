//! The seed's configuration curls, verbatim, and the effective config with provenance.

use serde_json::{json, Value};

use crate::both_stores;
use crate::helpers::TestApp;

/// The body of the seed's `PUT /v1/ai/global`, verbatim.
pub fn seed_global_body() -> Value {
    serde_json::from_str(
        r#"{
    "enabled": true,
    "base_url": "https://api.openai.com/v1",
    "api_key": "sk-...",
    "model_name": "gpt-4.1-mini",
    "default_system_prompt": "You are a helpful WhatsApp assistant.",
    "temperature": 0.3,
    "max_tokens": 700,
    "timeout_seconds": 60,
    "reply_delay_seconds": 2,
    "reply_to_private": true,
    "reply_to_groups": false,
    "reply_to_channels": false,
    "echo_mode": false
  }"#,
    )
    .expect("seed body is JSON")
}

const CHAT: &str = "491701234567@s.whatsapp.net";

async fn seed_global_config_verbatim(app: TestApp) {
    let r = app
        .admin("PUT", "/v1/ai/global", Some(seed_global_body()))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["has_api_key"], true);
    assert!(
        r.json.get("api_key").is_none(),
        "never returns the key: {}",
        r.text
    );
    assert_eq!(r.json["model_name"], "gpt-4.1-mini");
    assert_eq!(r.json["temperature"], 0.3);
    assert_eq!(r.json["reply_to_groups"], false);

    let g = app.admin("GET", "/v1/ai/global", None).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.json["has_api_key"], true);
    assert_eq!(g.json["max_tokens"], 700);

    // Omitted fields keep their value; null clears the key.
    let r = app
        .admin("PUT", "/v1/ai/global", Some(json!({"api_key": null})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["has_api_key"], false);
    assert_eq!(r.json["model_name"], "gpt-4.1-mini");
}
both_stores!(seed_global_config, seed_global_config_verbatim);

async fn seed_chat_toggle_verbatim(app: TestApp) {
    app.create_account("acme").await;
    let path = format!("/v1/accounts/acme/chats/{}/ai", CHAT);
    let r = app
        .admin(
            "PUT",
            &path,
            Some(json!({"mode":"disabled","custom_system_prompt":null})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["mode"], "disabled");
    assert_eq!(r.json["custom_system_prompt"], Value::Null);

    // URL-encoded JID works the same.
    let encoded = "/v1/accounts/acme/chats/491701234567%40s.whatsapp.net/ai";
    let r = app
        .admin(
            "PUT",
            encoded,
            Some(json!({"mode":"enabled","custom_system_prompt":"Answer in German."})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let g = app.admin("GET", &path, None).await;
    assert_eq!(g.json["mode"], "enabled");
    assert_eq!(g.json["custom_system_prompt"], "Answer in German.");

    let r = app
        .admin(
            "PUT",
            &format!("/v1/accounts/acme/chats/{CHAT}/blocked"),
            Some(json!({"blocked": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["blocked"], true);

    // Unknown account: 404; bad JID: 400 naming the field.
    let r = app
        .admin(
            "PUT",
            &format!("/v1/accounts/nope/chats/{CHAT}/ai"),
            Some(json!({"mode":"disabled"})),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = app
        .admin(
            "PUT",
            "/v1/accounts/acme/chats/CHAT_JID/ai",
            Some(json!({"mode":"disabled"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json["error"]["field"], "jid");
}
both_stores!(seed_chat_toggle, seed_chat_toggle_verbatim);

async fn effective_config_with_sources_and_as_of(app: TestApp) {
    app.create_account("acme").await;
    let eff = format!("/v1/accounts/acme/chats/{CHAT}/ai/effective");

    let e = app.admin("GET", &eff, None).await;
    assert_eq!(e.status, 200, "{}", e.text);
    assert_eq!(
        e.json["enabled"],
        json!({"value": false, "source": "default"})
    );
    assert_eq!(e.json["will_reply"], false);
    let before = e.json["position"].as_i64().expect("position");

    assert_eq!(
        app.admin("PUT", "/v1/ai/global", Some(seed_global_body()))
            .await
            .status,
        200
    );
    let r = app
        .admin(
            "PUT",
            "/v1/accounts/acme/ai",
            Some(json!({"model_name": "gpt-4.1", "temperature": 0.9})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["model_name"], "gpt-4.1");
    assert_eq!(
        r.json["enabled"],
        Value::Null,
        "account inherits what it does not set"
    );
    let r = app
        .admin(
            "PUT",
            &format!("/v1/accounts/acme/chats/{CHAT}/ai"),
            Some(json!({"mode":"inherit","custom_system_prompt":"Be brief."})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let e = app.admin("GET", &eff, None).await;
    let j = &e.json;
    assert_eq!(j["enabled"], json!({"value": true, "source": "global"}));
    assert_eq!(
        j["model_name"],
        json!({"value": "gpt-4.1", "source": "account"})
    );
    assert_eq!(j["temperature"], json!({"value": 0.9, "source": "account"}));
    assert_eq!(j["max_tokens"], json!({"value": 700, "source": "global"}));
    assert_eq!(
        j["system_prompt"],
        json!({"value": "Be brief.", "source": "chat"})
    );
    assert_eq!(j["has_api_key"], json!({"value": true, "source": "global"}));
    assert_eq!(j["will_reply"], true, "{}", e.text);
    assert_eq!(j["reason"], Value::Null);
    assert_eq!(j["reason_code"], Value::Null);

    // Disable at the chat: the reason names the layer.
    app.admin(
        "PUT",
        &format!("/v1/accounts/acme/chats/{CHAT}/ai"),
        Some(json!({"mode":"disabled"})),
    )
    .await;
    let e = app.admin("GET", &eff, None).await;
    assert_eq!(e.json["will_reply"], false);
    assert_eq!(e.json["reason"], "AI is disabled (source: chat)");
    assert_eq!(e.json["reason_code"], "disabled");

    // Group chats follow reply_to_groups (false in the seed).
    let g = app
        .admin(
            "GET",
            "/v1/accounts/acme/chats/120363042-1@g.us/ai/effective",
            None,
        )
        .await;
    assert_eq!(
        g.json["reason"], "reply_to_groups is false (source: global)",
        "{}",
        g.text
    );

    // as_of by position answers from history.
    let past = app
        .admin("GET", &format!("{eff}?as_of={before}"), None)
        .await;
    assert_eq!(past.status, 200, "{}", past.text);
    assert_eq!(
        past.json["enabled"],
        json!({"value": false, "source": "default"})
    );
    // as_of by time: now gives the current answer; before the account existed gives 404.
    let now = chrono::Utc::now().to_rfc3339();
    let cur = app
        .admin("GET", &format!("{eff}?as_of={}", urlencode(&now)), None)
        .await;
    assert_eq!(
        cur.json["reason"], "AI is disabled (source: chat)",
        "{}",
        cur.text
    );
    let old = app
        .admin(
            "GET",
            &format!("{eff}?as_of={}", urlencode("2001-01-01T00:00:00Z")),
            None,
        )
        .await;
    assert_eq!(old.status, 404, "{}", old.text);
    let bad = app
        .admin("GET", &format!("{eff}?as_of=yesterday"), None)
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json["error"]["field"], "as_of");
}
both_stores!(effective_config, effective_config_with_sources_and_as_of);

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Checklist item 10: a key never follows base_url to another host.
async fn key_follows_its_host(app: TestApp) {
    app.create_account("acme").await;
    assert_eq!(
        app.admin("PUT", "/v1/ai/global", Some(seed_global_body()))
            .await
            .status,
        200
    );
    // Same host, other path: the key stays.
    let r = app
        .admin(
            "PUT",
            "/v1/ai/global",
            Some(json!({"base_url": "https://api.openai.com/v2"})),
        )
        .await;
    assert_eq!(r.json["has_api_key"], true, "{}", r.text);
    // Another host without a new key: the key is cleared.
    let r = app
        .admin(
            "PUT",
            "/v1/ai/global",
            Some(json!({"base_url": "https://openrouter.ai/api/v1"})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["has_api_key"], false, "{}", r.text);
    // Another host with a new key in the same request: kept.
    let r = app
        .admin(
            "PUT",
            "/v1/ai/global",
            Some(json!({"base_url": "https://api.groq.com/openai/v1", "api_key": "gsk-1"})),
        )
        .await;
    assert_eq!(r.json["has_api_key"], true);
    // An account that moves to another host inherits no usable key.
    app.admin(
        "PUT",
        "/v1/accounts/acme/ai",
        Some(json!({"base_url": "https://evil.example/v1"})),
    )
    .await;
    let e = app
        .admin(
            "GET",
            &format!("/v1/accounts/acme/chats/{CHAT}/ai/effective"),
            None,
        )
        .await;
    assert_eq!(e.json["has_api_key"]["value"], false, "{}", e.text);
    assert!(
        e.json["reason"]
            .as_str()
            .unwrap_or("")
            .contains("https://api.groq.com"),
        "{}",
        e.text
    );
}
both_stores!(key_follows_host, key_follows_its_host);

/// Issue 21, finding 2 (ADR 0022): an account token cannot lift the admin's spend limits while
/// the account spends the admin's key; the effective config names the ceiling that applied.
async fn account_token_cannot_lift_the_admins_spend_limits(app: TestApp) {
    app.create_account("acme").await;
    let r = app
        .admin(
            "PUT",
            "/v1/ai/global",
            Some(
                json!({"enabled": true, "api_key": "sk-admin", "max_tokens": 500,
                        "daily_token_budget": 1000, "max_replies_per_chat_per_hour": 5}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let token = app.account_token("acme").await;
    let lift = json!({"max_tokens": 32768, "daily_token_budget": 0,
                      "max_replies_per_chat_per_hour": 1000});
    let r = app
        .call("PUT", "/v1/accounts/acme/ai", Some(&token), Some(lift))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let eff = app
        .call(
            "GET",
            "/v1/accounts/acme/chats/491701234567@s.whatsapp.net/ai/effective",
            Some(&token),
            None,
        )
        .await
        .json;
    assert_eq!(eff["max_tokens"], json!({"value": 500, "source": "global"}));
    assert_eq!(
        eff["daily_token_budget"],
        json!({"value": 1000, "source": "global"})
    );
    assert_eq!(
        eff["max_replies_per_chat_per_hour"],
        json!({"value": 5, "source": "global"})
    );
    let capped: Vec<&str> = eff["spend_ceilings"]
        .as_array()
        .expect("the ceilings that applied")
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert_eq!(
        capped,
        [
            "max_tokens",
            "max_replies_per_chat_per_hour",
            "daily_token_budget"
        ]
    );
    let usage = app
        .call("GET", "/v1/accounts/acme/ai/usage", Some(&token), None)
        .await
        .json;
    assert_eq!(usage["daily_token_budget"], 1000, "{usage}");
    // With its own key the account pays, and its limits apply as set.
    let r = app
        .call(
            "PUT",
            "/v1/accounts/acme/ai",
            Some(&token),
            Some(json!({"api_key": "sk-tenant"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let eff = app
        .admin(
            "GET",
            "/v1/accounts/acme/chats/491701234567@s.whatsapp.net/ai/effective",
            None,
        )
        .await
        .json;
    assert_eq!(
        eff["max_tokens"],
        json!({"value": 32768, "source": "account"})
    );
    assert!(eff.get("spend_ceilings").is_none(), "{eff}");
}
both_stores!(
    spend_ceilings,
    account_token_cannot_lift_the_admins_spend_limits
);
