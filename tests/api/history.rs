//! Replay and audit: rebuilding the read models from history gives the answers the running
//! gateway gives; the audit names who changed what, with the effective config after each change;
//! the CLI commands work on the same store.

use serde_json::json;
use wagate::cli::audit;
use wagate::store::replay::{self, Projection};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::both_stores;
use crate::helpers::TestApp;
use crate::replies::{completion, configure, inbound, settled, JID};

async fn scenario(app: &TestApp) {
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("replayed answer")))
        .mount(&stub)
        .await;
    app.create_account("acme").await;
    configure(app, &stub, json!({"temperature": 0.3})).await;
    let r = app
        .admin(
            "PUT",
            "/v1/accounts/acme/ai",
            Some(json!({"model_name": "account-model"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app
        .admin(
            "PUT",
            &format!("/v1/accounts/acme/chats/{JID}/ai"),
            Some(json!({"mode": "enabled", "custom_system_prompt": "Be brief."})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for i in 0..3 {
        inbound(
            app,
            "acme",
            JID,
            &format!("h-{i}"),
            &format!("question {i}"),
        )
        .await;
        settled(app, "acme", &format!("h-{i}")).await;
    }
    // A human answers (the AI steps back: `AiPaused`), a second chat is resumed at once
    // (`AiResumed`): both fold into the config model too (human takeover, ADR 0007).
    let other = "491709999999@s.whatsapp.net";
    for (path, body, status) in [
        (
            format!("/v1/accounts/acme/chats/{JID}/messages"),
            Some(json!({"text": "Hi, this is Ana from the shop."})),
            201,
        ),
        (
            format!("/v1/accounts/acme/chats/{other}/messages"),
            Some(json!({"text": "We have news for you."})),
            201,
        ),
        (
            format!("/v1/accounts/acme/chats/{other}/ai/resume"),
            None,
            200,
        ),
    ] {
        let r = app.admin("POST", &path, body).await;
        assert_eq!(r.status, status, "{path}: {}", r.text);
    }
}

async fn answers(app: &TestApp) -> Vec<String> {
    let mut out = vec![];
    for p in [
        "/v1/accounts/acme/chats".to_string(),
        format!("/v1/accounts/acme/chats/{JID}/messages?limit=500"),
        "/v1/ai/logs?limit=500".to_string(),
        format!("/v1/accounts/acme/chats/{JID}/ai/effective"),
        "/v1/ai/global".to_string(),
        "/v1/accounts/acme/ai".to_string(),
    ] {
        let r = app.admin("GET", &p, None).await;
        assert_eq!(r.status, 200, "{p}: {}", r.text);
        out.push(r.text);
    }
    out
}

async fn replay_matches_the_live_models(mut app: TestApp) {
    scenario(&app).await;
    app.app().catch_up().await.expect("catch up");
    let live = replay::digest(Some(&app.app().model()), Some(&app.app().messages()));
    let report = replay::replay(
        &app.app().store,
        None,
        Projection::All,
        app.app().config.read_model,
        false,
    )
    .await
    .expect("replay");
    assert!(report.events > 10);
    assert_eq!(
        replay::digest(report.config.as_ref(), report.messages.as_ref()),
        live
    );
    // The config model alone, from the configuration's history only (its own index): the same
    // as the live model, pauses included.
    let config = replay::replay(
        &app.app().store,
        None,
        Projection::Config,
        app.app().config.read_model,
        false,
    )
    .await
    .expect("config replay");
    assert_eq!(
        replay::digest(config.config.as_ref(), None),
        replay::digest(Some(&app.app().model()), None)
    );
    assert!(config.events < report.events, "{} events", config.events);
    assert_eq!(
        replay::digest(
            Some(&app.app().model_at(report.position).await.unwrap()),
            None
        ),
        replay::digest(Some(&app.app().model()), None)
    );
    // Read models wiped (a restart rebuilds them from history): same answers.
    let before = answers(&app).await;
    app.restart().await;
    assert_eq!(answers(&app).await, before);

    // As of a past position: the same config as `as_of` answers.
    let mid = report.position / 2;
    let partial = replay::replay(
        &app.app().store,
        Some(mid),
        Projection::Config,
        app.app().config.read_model,
        false,
    )
    .await
    .expect("partial replay");
    let at = app.app().model_at(mid).await.expect("model_at");
    assert_eq!(
        replay::digest(partial.config.as_ref(), None),
        replay::digest(Some(&at), None)
    );
    assert!(partial.messages.is_none());
}
both_stores!(replay_matches, replay_matches_the_live_models);

async fn audit_names_actors_and_effective_config(app: TestApp) {
    scenario(&app).await;
    let env = wagate::app::env_layer(&app.app().config);
    let entries = audit::audit(&app.app().store, &env, "acme", Some(JID))
        .await
        .expect("audit");
    let layers: Vec<&str> = entries.iter().map(|e| e.layer.as_str()).collect();
    assert!(layers.contains(&"global"), "{layers:?}");
    assert!(layers.contains(&"account"));
    assert!(layers.iter().any(|l| l.starts_with("chat ")));
    assert!(entries.iter().all(|e| e.actor == "admin:tester"));
    let account_change = entries
        .iter()
        .find(|e| e.layer == "account" && e.event_type == "AiSettingsChanged")
        .expect("account change");
    assert_eq!(account_change.effective.model_name.value, "account-model");
    let first_global = entries
        .iter()
        .find(|e| e.layer == "global")
        .expect("global change");
    assert_ne!(first_global.effective.model_name.value, "account-model");
    let text = audit::render_audit(&entries);
    assert!(!text.contains("sk-test-key"));
    assert!(text.contains("[redacted]"), "sealed key shown redacted");
    assert!(audit::audit(&app.app().store, &env, "ghost", None)
        .await
        .is_err());
}
both_stores!(audit_history, audit_names_actors_and_effective_config);

/// `wagate replay` and `wagate audit` as a user runs them, on the same store as a live gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_replay_and_audit() {
    let Some(app) = TestApp::spawn(crate::helpers::Backend::Sqlite).await else {
        return;
    };
    scenario(&app).await;
    let stdout = app.cli_ok(&["replay"]);
    assert!(stdout.contains("events/s"), "{stdout}");
    app.app().catch_up().await.expect("catch up");
    let live = replay::digest(Some(&app.app().model()), Some(&app.app().messages()));
    assert!(stdout.contains(&live), "{stdout} vs {live}");

    let stdout = app.cli_ok(&["audit", "--account", "acme", "--chat", JID]);
    assert!(
        stdout.contains("admin:tester") && stdout.contains("account-model"),
        "{stdout}"
    );
    assert!(!stdout.contains("sk-test-key"));

    let out = app.cli(&["audit", "--account", "ghost"]);
    assert!(!out.status.success());
    let out = app.cli(&["replay", "--as-of", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
}
