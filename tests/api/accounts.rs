//! Accounts and account tokens (checklist item 4: scoping, hashing, revocation).

use serde_json::json;

use crate::both_stores;
use crate::helpers::TestApp;

async fn account_lifecycle(app: TestApp) {
    let r = app
        .admin(
            "POST",
            "/v1/accounts",
            Some(json!({"id":"acme","name":"Acme GmbH","transport":"sandbox"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["id"], "acme");
    assert_eq!(r.json["transport"], "sandbox");

    let dup = app
        .admin(
            "POST",
            "/v1/accounts",
            Some(json!({"id":"acme","transport":"sandbox"})),
        )
        .await;
    assert_eq!(dup.status, 409, "{}", dup.text);

    let bad = app
        .admin(
            "POST",
            "/v1/accounts",
            Some(json!({"id":"Bad Id","transport":"sandbox"})),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json["error"]["field"], "id");

    let cloud = app
        .admin(
            "POST",
            "/v1/accounts",
            Some(json!({"id":"c1","transport":"cloud_api"})),
        )
        .await;
    assert_eq!(cloud.status, 400);
    assert_eq!(cloud.json["error"]["field"], "cloud_api");

    app.create_account("beta").await;
    let list = app.admin("GET", "/v1/accounts", None).await;
    let ids: Vec<&str> = list.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|a| a["id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(ids, ["acme", "beta"]);
    assert_eq!(list.json["next_cursor"], serde_json::Value::Null);

    assert_eq!(
        app.admin("GET", "/v1/accounts/acme", None).await.json["name"],
        "Acme GmbH"
    );
    assert_eq!(
        app.admin("DELETE", "/v1/accounts/beta", None).await.status,
        204
    );
    assert_eq!(
        app.admin("GET", "/v1/accounts/beta", None).await.status,
        404
    );
    assert_eq!(
        app.admin("DELETE", "/v1/accounts/beta", None).await.status,
        404
    );
    // The id of a deleted account stays reserved (its history stays replayable).
    let again = app
        .admin(
            "POST",
            "/v1/accounts",
            Some(json!({"id":"beta","transport":"sandbox"})),
        )
        .await;
    assert_eq!(again.status, 409);
}
both_stores!(accounts, account_lifecycle);

async fn account_tokens_are_scoped_and_revocable(app: TestApp) {
    app.create_account("acme").await;
    app.create_account("other").await;
    let created = app
        .admin(
            "POST",
            "/v1/accounts/acme/tokens",
            Some(json!({"name":"crm"})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let token = created.json["token"].as_str().expect("token").to_string();
    let token_id = created.json["id"].as_str().expect("id").to_string();
    assert!(
        token.starts_with("wgt_") && token.len() >= 4 + 43,
        "256-bit token: {token}"
    );

    // Listing never shows the secret (nor its hash).
    let list = app.admin("GET", "/v1/accounts/acme/tokens", None).await;
    assert!(!list.text.contains(&token[4..]), "{}", list.text);
    assert!(!list.text.contains("hash"), "{}", list.text);
    assert_eq!(list.json["items"][0]["name"], "crm");

    // In scope: its own account.
    let own = app
        .call("GET", "/v1/accounts/acme", Some(&token), None)
        .await;
    assert_eq!(own.status, 200, "{}", own.text);
    let own_ai = app
        .call(
            "PUT",
            "/v1/accounts/acme/chats/1@s.whatsapp.net/ai",
            Some(&token),
            Some(json!({"mode":"enabled"})),
        )
        .await;
    assert_eq!(own_ai.status, 200, "{}", own_ai.text);
    // Out of scope: another account, admin routes.
    for (m, p) in [
        ("GET", "/v1/accounts/other"),
        ("GET", "/v1/accounts/other/ai"),
        ("GET", "/v1/accounts"),
        ("GET", "/v1/ai/global"),
        ("GET", "/v1/events"),
        ("GET", "/v1/accounts/acme/tokens"),
    ] {
        let r = app.call(m, p, Some(&token), None).await;
        assert_eq!(r.status, 403, "{m} {p}: {}", r.text);
    }
    let r = app
        .call(
            "PUT",
            "/v1/ai/global",
            Some(&token),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(r.status, 403);

    // Events name the token, not the secret.
    let ev = app
        .admin("GET", "/v1/events?aggregate=chat_settings", None)
        .await;
    assert_eq!(ev.json["items"][0]["actor"], format!("token:{token_id}"));

    // Revoked: 401 at once.
    let del = app
        .admin(
            "DELETE",
            &format!("/v1/accounts/acme/tokens/{token_id}"),
            None,
        )
        .await;
    assert_eq!(del.status, 204);
    let r = app
        .call("GET", "/v1/accounts/acme", Some(&token), None)
        .await;
    assert_eq!(r.status, 401);
    // A made-up token: 401.
    let r = app
        .call(
            "GET",
            "/v1/accounts/acme",
            Some("wgt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            None,
        )
        .await;
    assert_eq!(r.status, 401);
}
both_stores!(account_tokens, account_tokens_are_scoped_and_revocable);

async fn deleting_an_account_kills_its_tokens(app: TestApp) {
    app.create_account("acme").await;
    let created = app
        .admin(
            "POST",
            "/v1/accounts/acme/tokens",
            Some(json!({"name":"crm"})),
        )
        .await;
    let token = created.json["token"].as_str().expect("token").to_string();
    assert_eq!(
        app.admin("DELETE", "/v1/accounts/acme", None).await.status,
        204
    );
    let r = app
        .call("GET", "/v1/accounts/acme", Some(&token), None)
        .await;
    assert_eq!(r.status, 401);
}
both_stores!(account_delete_tokens, deleting_an_account_kills_its_tokens);
