//! The dashboard's search boxes over plain HTTP: an account's chats by number or contact name
//! (`/accounts/{acc}?q=`), the AI log by reason, status or reply text (`/logs?q=`), and the
//! sandbox's `contact_name` that names a chat (`GET …/chats`).

use serde_json::json;

use crate::both_stores;
use crate::dashboard::Visitor;
use crate::helpers::TestApp;
use crate::replies::settled;

/// Injects a customer message, with a profile name when given.
async fn inbound(app: &TestApp, jid: &str, id: &str, text: &str, name: Option<&str>) {
    let mut body = json!({"chat_id": jid, "from": jid.split('@').next(), "text": text, "id": id});
    if let Some(n) = name {
        body["contact_name"] = json!(n);
    }
    let r = app
        .admin("POST", "/v1/accounts/acme/sandbox/inbound", Some(body))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
}

async fn chats_and_logs_are_searched(app: TestApp) {
    app.echo_mode().await;
    app.create_account("acme").await;
    inbound(
        &app,
        "491701111111@s.whatsapp.net",
        "s-1",
        "hello there",
        Some("Ana María"),
    )
    .await;
    inbound(
        &app,
        "441702222222@s.whatsapp.net",
        "s-2",
        "quiet please",
        Some("Bob"),
    )
    .await;
    inbound(&app, "120363000@g.us", "s-3", "group talk", None).await;
    for id in ["s-1", "s-2"] {
        assert_eq!(settled(&app, "acme", id).await["status"], "sent");
    }
    // Groups are not answered by default: skipped with a reason.
    let group = settled(&app, "acme", "s-3").await;
    assert_eq!(group["status"], "skipped", "{group}");
    let reason = group["reason_code"].as_str().expect("a reason").to_string();

    // The API names chats by their contact and refuses a blank or long name.
    let r = app.admin("GET", "/v1/accounts/acme/chats", None).await;
    let names: Vec<_> = r.json["items"]
        .as_array()
        .expect("chats")
        .iter()
        .map(|c| (c["chat_id"].clone(), c["contact_name"].clone()))
        .collect();
    assert!(names.contains(&(json!("491701111111@s.whatsapp.net"), json!("Ana María"))));
    assert!(names.contains(&(json!("120363000@g.us"), json!(null))));
    for bad in [json!(" "), json!("x".repeat(257))] {
        let r = app
            .admin(
                "POST",
                "/v1/accounts/acme/sandbox/inbound",
                Some(json!({"chat_id": "491703333333@s.whatsapp.net", "from": "1", "text": "x", "contact_name": bad})),
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.json["error"]["field"], "contact_name");
    }

    let mut v = Visitor::new(&app);
    v.login().await;
    let chats = |body: &str| {
        ["491701111111", "441702222222", "120363000"]
            .into_iter()
            .filter(|n| body.contains(&format!("{n}%40")))
            .collect::<Vec<_>>()
    };
    let all = v.get("/accounts/acme").await;
    assert_eq!(all.status, 200);
    assert_eq!(chats(&all.body).len(), 3);
    for (q, want) in [
        ("%2B49%20170%20111", vec!["491701111111"]),
        ("4417022", vec!["441702222222"]),
        ("ana", vec!["491701111111"]),
        ("MARÍA", vec!["491701111111"]),
        ("bob", vec!["441702222222"]),
        ("g.us", vec!["120363000"]),
        ("nobody", vec![]),
    ] {
        let page = v.get(&format!("/accounts/acme?q={q}")).await;
        assert_eq!(page.status, 200, "{q}");
        assert_eq!(chats(&page.body), want, "{q}");
        assert!(page.body.contains("id=\"chats-q\""), "the search box");
    }
    let none = v.get("/accounts/acme?q=nobody").await;
    assert!(none.body.contains("No chats match."));
    let long = v
        .get(&format!("/accounts/acme?q={}", "x".repeat(201)))
        .await;
    assert_eq!(long.status, 400);
    assert!(long.body.contains("chats-q-error"));

    // The AI log: by reply text (echo mode repeats the message), status and reason.
    let rows = |body: &str| body.matches("<tr class=\"status-").count();
    assert_eq!(rows(&v.get("/logs").await.body), 3);
    assert_eq!(rows(&v.get("/logs?q=QUIET").await.body), 1);
    assert_eq!(rows(&v.get("/logs?q=skipped").await.body), 1);
    assert_eq!(rows(&v.get(&format!("/logs?q={reason}")).await.body), 1);
    assert_eq!(rows(&v.get("/logs?q=sent&account_id=acme").await.body), 2);
    let page = v.get("/logs?q=no-such-thing").await;
    assert!(page.body.contains("No AI log rows match."));
    let long = v.get(&format!("/logs?q={}", "x".repeat(201))).await;
    assert_eq!(long.status, 400);
    assert!(long.body.contains("logs-q-error"));
}
both_stores!(dashboard_search, chats_and_logs_are_searched);
