//! The `whatsapp_web` transport (issue 23) through the gateway's HTTP API, with a fake WhatsApp
//! Web connection at the library's port (`wagate_waweb::port`): it emits what whatsapp-rust
//! would (a QR code, the pairing, connected, messages, receipts) and records what the gateway
//! sends. The session store under it is the real one, on both stores.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use wagate_events::chat::{DeliveryStatus, MessageKind};
use wagate_waweb::port::{MediaLocator, Quoted, WebError, WebEvent, WebInbound, WebMedia};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::dashboard::Visitor;
use crate::fake_web::{FakeWeb, OWN, QR};
use crate::helpers::{eventually, Backend, TestApp};
use crate::replies::{completion, configure, messages};

const CUSTOMER: &str = "5511999990001@s.whatsapp.net";

fn text(id: &str, chat: &str, sender: &str, body: &str) -> WebInbound {
    WebInbound {
        id: id.into(),
        chat: chat.into(),
        sender: sender.into(),
        from_me: false,
        push_name: Some("Ana".into()),
        kind: MessageKind::Text,
        text: body.into(),
        quoted: None,
        mentions_me: false,
        undecryptable: false,
        media: None,
    }
}

/// A message of `kind` with media at `direct_path` declared as `mime`.
fn with_media(id: &str, kind: MessageKind, mime: &str, direct_path: &str) -> WebInbound {
    let mut m = text(id, CUSTOMER, CUSTOMER, &format!("[{}]", kind.as_str()));
    m.kind = kind;
    m.media = Some(WebMedia {
        kind,
        mime_type: mime.into(),
        size: None,
        sha256: None,
        filename: None,
        voice: kind == MessageKind::Audio,
        locator: MediaLocator {
            direct_path: Some(direct_path.into()),
            media_key: Some(vec![7; 32]),
            ..Default::default()
        },
    });
    m
}

async fn spawn(backend: Backend) -> Option<(TestApp, FakeWeb)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let vars = TestApp::vars(backend, &dir).await?;
    let fake = FakeWeb::default();
    let app = TestApp::spawn_with_web(backend, dir, vars, Some(Arc::new(fake.clone()))).await;
    Some((app, fake))
}

async fn create_web_account(app: &TestApp, acc: &str) {
    let r = app
        .admin(
            "POST",
            "/v1/accounts",
            Some(json!({"id": acc, "name": "Shop", "transport": "whatsapp_web"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["transport"], "whatsapp_web");
    assert_eq!(r.json["whatsapp_web"]["state"], "stopped");
    assert_eq!(r.json["connection"]["state"], "stopped");
}

async fn state(app: &TestApp, acc: &str) -> Value {
    app.admin("GET", &format!("/v1/accounts/{acc}/whatsapp-web/qr"), None)
        .await
        .json
}

async fn wait_state(app: &TestApp, acc: &str, want: &str) -> Value {
    eventually(10, &format!("{acc} reaches {want}"), || async {
        let s = state(app, acc).await;
        (s["state"] == want).then_some(s)
    })
    .await
}

async fn model(answer: &str) -> MockServer {
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(answer)))
        .mount(&stub)
        .await;
    stub
}

/// A new user's path: create the account, connect, see the QR code, scan it, and the AI answers
/// the phone's chats through the connection; a restart reconnects without a new scan.
async fn pair_by_qr_then_answer(backend: Backend) {
    let Some((mut app, fake)) = spawn(backend).await else {
        return;
    };
    let stub = model("Hello from the shop").await;
    configure(&app, &stub, json!({})).await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let hook = app
        .admin(
            "POST",
            "/v1/webhooks",
            Some(json!({"url": format!("{}/hook", receiver.uri()), "events": ["account.connection"]})),
        )
        .await;
    assert_eq!(hook.status, 201, "{}", hook.text);
    create_web_account(&app, "shop").await;

    let r = app
        .admin("POST", "/v1/accounts/shop/whatsapp-web/connect", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["state"], "pairing", "{}", r.text);
    assert_eq!(r.json["qr"]["code"], QR);
    assert!(
        r.json["qr"]["svg"].as_str().unwrap().starts_with("<?xml")
            || r.json["qr"]["svg"].as_str().unwrap().contains("<svg")
    );
    assert!(r.json["qr"]["expires_at"].is_string());

    // The dashboard's account page shows the code while pairing.
    let mut visitor = Visitor::new(&app);
    visitor.login().await;
    let page = visitor.get("/accounts/shop").await;
    assert!(page.body.contains("id=\"wa-qr\""), "{}", page.body);
    assert!(
        page.body.contains("<svg"),
        "the QR code is drawn on the page"
    );

    fake.scan("shop").await;
    let s = wait_state(&app, "shop", "connected").await;
    assert!(s["qr"].is_null());
    let acc = app.admin("GET", "/v1/accounts/shop", None).await;
    assert_eq!(acc.json["connection"]["state"], "connected");

    fake.say(
        "shop",
        text("3EB0C001", CUSTOMER, CUSTOMER, "hi, are you open?"),
    )
    .await
    .expect("committed before the ack");
    let sent = eventually(10, "the AI answer is sent", || async {
        let sent = fake.sent();
        (!sent.is_empty()).then_some(sent)
    })
    .await;
    assert_eq!(
        sent[0],
        ("shop".into(), CUSTOMER.into(), "Hello from the shop".into())
    );
    assert!(fake.st().typing.contains(&("shop".into(), CUSTOMER.into())));
    // A redelivery of the same message (an ack lost) is a duplicate: no second answer.
    fake.say(
        "shop",
        text("3EB0C001", CUSTOMER, CUSTOMER, "hi, are you open?"),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.sent().len(), 1);

    // Delivery receipts update the sent message's status.
    let h = fake.handler("shop");
    let sent_id = messages(&app, "shop", CUSTOMER)
        .await
        .into_iter()
        .find(|m| m["direction"] == "outbound")
        .and_then(|m| m["id"].as_str().map(str::to_string))
        .expect("the answer is stored");
    h.event(WebEvent::Receipt {
        chat: CUSTOMER.into(),
        ids: vec![sent_id.clone()],
        status: DeliveryStatus::Read,
    })
    .await;
    eventually(10, "read receipt recorded", || async {
        messages(&app, "shop", CUSTOMER)
            .await
            .into_iter()
            .find(|m| m["id"] == sent_id.as_str() && m["status"] == "read")
    })
    .await;

    // The history has the states, and the account.connection webhook would carry them.
    let events = app
        .admin("GET", "/v1/events?aggregate=account/shop&limit=1000", None)
        .await;
    let text = events.text.clone();
    assert!(text.contains("WhatsAppWebConnectRequested"), "{text}");
    assert!(text.contains("\"connected\""), "{text}");
    assert!(
        !text.contains("fakeNoiseKey"),
        "a QR code is never recorded"
    );
    // Each state reached the subscriber as `account.connection`, without the code.
    let (states, bodies) = eventually(15, "account.connection webhooks", || async {
        let bodies: Vec<Value> = receiver
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
            .collect();
        let states: Vec<String> = bodies
            .iter()
            .filter(|b| b["type"] == "account.connection")
            .filter_map(|b| b["data"]["state"].as_str().map(str::to_string))
            .collect();
        states
            .contains(&"connected".to_string())
            .then_some((states, bodies))
    })
    .await;
    assert!(states.contains(&"pairing".to_string()), "{states:?}");
    assert!(
        !serde_json::to_string(&bodies)
            .unwrap()
            .contains("fakeNoiseKey"),
        "a webhook never carries the QR code"
    );

    // A restart reconnects with the stored session: no new QR code.
    let before = fake.st().connects["shop"];
    app.restart().await;
    eventually(10, "reconnected after the restart", || async {
        (fake.st().connects["shop"] > before).then_some(())
    })
    .await;
    let s = wait_state(&app, "shop", "connected").await;
    assert!(s["qr"].is_null());
    assert_eq!(fake.st().live["shop"], 1, "one live connection per account");
}

/// Connect on a connected account changes nothing and reports the state; logout unlinks,
/// erases the session, and the next connect pairs again.
async fn connect_is_idempotent_and_logout_erases(backend: Backend) {
    let Some((app, fake)) = spawn(backend).await else {
        return;
    };
    create_web_account(&app, "shop").await;
    app.admin("POST", "/v1/accounts/shop/whatsapp-web/connect", None)
        .await;
    wait_state(&app, "shop", "pairing").await;
    fake.scan("shop").await;
    wait_state(&app, "shop", "connected").await;

    let r = app
        .admin(
            "POST",
            "/v1/accounts/shop/whatsapp-web/connect",
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["state"], "connected");
    assert_eq!(fake.st().connects["shop"], 1, "no second connection");

    let r = app
        .admin("POST", "/v1/accounts/shop/whatsapp-web/logout", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["state"], "logged_out");
    assert_eq!(r.json["wanted"], false);
    assert!(r.json["reason"]
        .as_str()
        .unwrap()
        .contains("logged out by admin:"));
    assert_eq!(fake.st().live["shop"], 0);
    let backend = fake.st().backends["shop"].clone();
    assert!(
        backend.load().await.unwrap().is_none(),
        "the session is erased"
    );

    // Sends fail clearly while logged out (never a retry loop).
    let r = app
        .admin("POST", "/v1/accounts/shop/whatsapp-web/connect", None)
        .await;
    assert_eq!(r.json["state"], "pairing", "{}", r.text);
    assert_eq!(r.json["qr"]["code"], QR);

    // Deleting the account closes its connection and erases its session.
    fake.scan("shop").await;
    wait_state(&app, "shop", "connected").await;
    assert!(backend.load().await.unwrap().is_some());
    let r = app.admin("DELETE", "/v1/accounts/shop", None).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(fake.st().live["shop"], 0);
    assert!(
        backend.load().await.unwrap().is_none(),
        "the session is erased"
    );
}

/// Pairing by phone number shows the 8-character code; a bad number is a 400 that changes
/// nothing.
async fn pair_by_phone_number(backend: Backend) {
    let Some((app, fake)) = spawn(backend).await else {
        return;
    };
    create_web_account(&app, "shop").await;
    let bad = app
        .admin(
            "POST",
            "/v1/accounts/shop/whatsapp-web/connect",
            Some(json!({"phone_number": "12ab"})),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert_eq!(bad.json["error"]["field"], "phone_number", "{}", bad.text);
    assert_eq!(state(&app, "shop").await["state"], "stopped");

    let r = app
        .admin(
            "POST",
            "/v1/accounts/shop/whatsapp-web/connect",
            Some(json!({"phone_number": "+5511988880000"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["pair_code"]["code"], "ABCD-EFGH", "{}", r.text);
    assert_eq!(fake.st().pair_phones, vec!["5511988880000".to_string()]);
}

/// A QR code or logout for an account on another transport is a 409; unknown accounts are 404.
async fn other_transports_are_refused(backend: Backend) {
    let Some((app, _fake)) = spawn(backend).await else {
        return;
    };
    app.create_account("sbx").await;
    for (m, p) in [
        ("GET", "/v1/accounts/sbx/whatsapp-web/qr"),
        ("POST", "/v1/accounts/sbx/whatsapp-web/connect"),
        ("POST", "/v1/accounts/sbx/whatsapp-web/logout"),
    ] {
        let r = app.admin(m, p, None).await;
        assert_eq!(r.status, 409, "{m} {p}: {}", r.text);
        assert!(r.text.contains("whatsapp_web"), "{}", r.text);
    }
    let r = app
        .admin("GET", "/v1/accounts/nope/whatsapp-web/qr", None)
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
}

/// Inbound kinds: the owner's own message pauses the AI; status broadcasts, reactions and
/// undecryptable messages are recorded, never answered; a group message that mentions the
/// account is answered with the quoted text as context.
async fn inbound_kinds(backend: Backend) {
    let Some((app, fake)) = spawn(backend).await else {
        return;
    };
    let stub = model("ok").await;
    configure(
        &app,
        &stub,
        json!({"reply_to_groups": true, "trigger": "mention"}),
    )
    .await;
    create_web_account(&app, "shop").await;
    app.admin("POST", "/v1/accounts/shop/whatsapp-web/connect", None)
        .await;
    wait_state(&app, "shop", "pairing").await;
    fake.scan("shop").await;
    wait_state(&app, "shop", "connected").await;

    let mut status = text("S1", "status@broadcast", CUSTOMER, "my holiday");
    status.kind = MessageKind::Image;
    fake.say("shop", status).await.unwrap();
    let mut reaction = text("R1", CUSTOMER, CUSTOMER, "👍");
    reaction.kind = MessageKind::Reaction;
    fake.say("shop", reaction).await.unwrap();
    let mut broken = text("U1", CUSTOMER, CUSTOMER, "[undecryptable]");
    broken.undecryptable = true;
    broken.kind = MessageKind::Other;
    fake.say("shop", broken).await.unwrap();
    // The real message may come later under the same id: it is not a duplicate.
    fake.say("shop", text("U1", CUSTOMER, CUSTOMER, "now readable"))
        .await
        .unwrap();
    eventually(10, "the readable message is answered", || async {
        (fake.sent().len() == 1).then_some(())
    })
    .await;

    // With mark_read on, a message the AI answers gets a read receipt.
    assert!(fake.st().read.is_empty(), "mark_read is off by default");
    let r = app
        .admin(
            "PATCH",
            "/v1/accounts/shop/whatsapp-web",
            Some(json!({"mark_read": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["wanted"], true);
    let bad = app
        .admin(
            "PATCH",
            "/v1/accounts/shop/whatsapp-web",
            Some(json!({"mark_read": "yes"})),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    fake.say("shop", text("C1", CUSTOMER, CUSTOMER, "read me"))
        .await
        .unwrap();
    eventually(10, "a read receipt for the answered message", || async {
        fake.st()
            .read
            .iter()
            .any(|(_, chat, ids)| chat == CUSTOMER && ids == &vec!["C1".to_string()])
            .then_some(())
    })
    .await;

    let group = "120363021033254949@g.us";
    let mut g = text(
        "G1",
        group,
        "5511777770000@s.whatsapp.net",
        "@shop what time?",
    );
    g.mentions_me = true;
    g.quoted = Some(Quoted {
        id: Some("Q1".into()),
        sender: None,
        text: Some("We open at 9".into()),
    });
    fake.say("shop", g).await.unwrap();
    eventually(10, "the group mention is answered", || async {
        fake.sent().iter().any(|(_, c, _)| c == group).then_some(())
    })
    .await;
    let stored = messages(&app, "shop", group).await;
    assert!(
        stored.iter().any(|m| m["text"]
            .as_str()
            .is_some_and(|t| t.contains("We open at 9") && t.contains("what time?"))),
        "{stored:?}"
    );

    // The owner typed on the phone: the AI pauses in that chat.
    let mut mine = text("M1", CUSTOMER, OWN, "I'll take it from here");
    mine.from_me = true;
    fake.say("shop", mine).await.unwrap();
    let before = fake.sent().len();
    fake.say("shop", text("C2", CUSTOMER, CUSTOMER, "thanks"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.sent().len(), before, "paused by the owner's message");
    assert!(fake.sent().iter().all(|(_, c, _)| c != "status@broadcast"));

    // The device is removed on the phone: the session is erased, the account asks for a new
    // pairing and does not reconnect by itself.
    fake.handler("shop")
        .event(WebEvent::LoggedOut {
            reason: "device removed from the phone (401)".into(),
        })
        .await;
    let s = wait_state(&app, "shop", "logged_out").await;
    assert_eq!(s["wanted"], false);
    assert!(s["reason"].as_str().unwrap().contains("device removed"));
    let backend = fake.st().backends["shop"].clone();
    eventually(10, "the session is erased", || async {
        backend.load().await.unwrap().is_none().then_some(())
    })
    .await;
    assert_eq!(fake.st().live["shop"], 0);
}

/// A session row that does not open (corrupt, or sealed for another account) is refused: the
/// account asks for pairing again, and the other accounts keep working.
async fn corrupt_session_asks_for_pairing(backend: Backend) {
    let Some((mut app, fake)) = spawn(backend).await else {
        return;
    };
    create_web_account(&app, "shop").await;
    create_web_account(&app, "other").await;
    for acc in ["shop", "other"] {
        app.admin(
            "POST",
            &format!("/v1/accounts/{acc}/whatsapp-web/connect"),
            None,
        )
        .await;
        wait_state(&app, acc, "pairing").await;
        fake.scan(acc).await;
        wait_state(&app, acc, "connected").await;
    }
    let sql = "UPDATE whatsapp_web_store SET value = 'not-sealed' WHERE account = 'shop'";
    match &app.app().store {
        wagate::store::Store::Postgres(p) => {
            sqlx::query(sql).execute(p).await.unwrap();
        }
        wagate::store::Store::Sqlite(p) => {
            sqlx::query(sql).execute(p).await.unwrap();
        }
    }
    app.restart().await;
    let s = wait_state(&app, "shop", "pairing").await;
    assert!(
        s["reason"]
            .as_str()
            .unwrap_or("")
            .contains("pair the phone again"),
        "{s}"
    );
    wait_state(&app, "other", "connected").await;
}

crate::both_stores!(web_pair_by_qr_then_answer, pair_by_qr_then_answer(Backend));
crate::both_stores!(
    web_connect_is_idempotent_and_logout_erases,
    connect_is_idempotent_and_logout_erases(Backend)
);
crate::both_stores!(web_pair_by_phone_number, pair_by_phone_number(Backend));
crate::both_stores!(
    web_other_transports_are_refused,
    other_transports_are_refused(Backend)
);
crate::both_stores!(web_inbound_kinds, inbound_kinds(Backend));
crate::both_stores!(
    web_corrupt_session_asks_for_pairing,
    corrupt_session_asks_for_pairing(Backend)
);

/// Two gateways on one PostgreSQL: only the node that runs the account connects it; when that
/// node stops, the other takes the account over and reconnects from the stored session (no new
/// QR code), and there is never more than one live connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_takeover_reconnects_without_a_new_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mut vars) = TestApp::vars(Backend::Postgres, &dir).await else {
        return;
    };
    vars.insert("WAGATE_NODE_ID".into(), "n1".into());
    vars.insert("WAGATE_LEASE_SECONDS".into(), "3".into());
    let fake = FakeWeb::default();
    let app =
        TestApp::spawn_with_web(Backend::Postgres, dir, vars, Some(Arc::new(fake.clone()))).await;
    let n2 = wagate::startup::start_with(
        app.config_as("n2"),
        wagate::startup::Extras {
            web_connector: Some(Arc::new(fake.clone())),
        },
    )
    .await
    .expect("n2 starts");
    let n2_base = format!("http://{}", n2.addr);
    create_web_account(&app, "shop").await;
    let r = app
        .admin("POST", "/v1/accounts/shop/whatsapp-web/connect", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Connect took the free lease on n1, which connects the account and offers the code.
    let token = app.admin_token();
    let qr = "/v1/accounts/shop/whatsapp-web/qr";
    let s = app.call_at(&app.base, "GET", qr, Some(&token), None).await;
    assert_eq!(s.status, 200, "{}", s.text);
    assert_eq!(s.json["qr"]["code"], QR, "{}", s.text);
    // n2 forwards what needs the connection to n1, one hop (once it folded the account: nodes
    // read each other's commits every second).
    let s = eventually(10, "n2 knows the account", || async {
        let s = app.call_at(&n2_base, "GET", qr, Some(&token), None).await;
        (s.status != 404).then_some(s)
    })
    .await;
    assert_eq!(s.status, 200, "{}", s.text);
    assert_eq!(s.json["qr"]["code"], QR, "{}", s.text);
    assert_eq!(s.headers["x-wagate-served-by"], "n1");
    // So does the dashboard: the account's page on n2 shows n1's QR code.
    let mut visitor = crate::dashboard::Visitor::new(&app);
    visitor.login().await;
    visitor.on(&n2_base);
    let page = visitor.get("/accounts/shop").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("id=\"wa-qr\""), "{}", page.body);
    fake.scan("shop").await;
    wait_state(&app, "shop", "connected").await;
    assert_eq!(fake.st().live["shop"], 1);
    let connects = fake.st().connects["shop"];

    // An operator message goes out through n1's connection, also when it is sent to n2.
    let send = format!("/v1/accounts/shop/chats/{CUSTOMER}/messages");
    for base in [&app.base, &n2_base] {
        let r = app
            .call_at(
                base,
                "POST",
                &send,
                Some(&token),
                Some(json!({"text": "hello"})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    assert_eq!(fake.sent().len(), 2);
    // A forwarded request is not forwarded again: a gateway that does not run the account
    // answers 409 itself.
    let r = app
        .send(
            reqwest::Client::new()
                .get(format!("{n2_base}{qr}"))
                .bearer_auth(&token)
                .header("x-wagate-forwarded-by", "n0"),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "other_node", "{}", r.text);
    // Connect on n2 reports n1's state; nothing is connected twice.
    let r = app
        .call_at(
            &n2_base,
            "POST",
            "/v1/accounts/shop/whatsapp-web/connect",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["state"], "connected", "{}", r.text);
    assert_eq!(fake.st().live["shop"], 1);

    // n1 stops: n2 takes over and reconnects with the stored session.
    let old_handler = fake.handler("shop");
    let mut app = app;
    app.running.take().expect("running").stop().await;
    let s = eventually(20, "n2 reconnects the account", || async {
        let s = app.call_at(&n2_base, "GET", qr, Some(&token), None).await;
        (s.status == 200 && s.json["state"] == "connected" && fake.st().connects["shop"] > connects)
            .then_some(s)
    })
    .await;
    assert!(s.json["qr"].is_null(), "no new QR code: {}", s.text);
    assert_eq!(fake.st().live["shop"], 1, "never two live connections");
    // The old connection's late word (WhatsApp replaced it) changes nothing.
    old_handler.event(WebEvent::StreamReplaced).await;
    let s = app.call_at(&n2_base, "GET", qr, Some(&token), None).await;
    assert_eq!(s.json["state"], "connected", "{}", s.text);
    assert_eq!(s.json["wanted"], true, "{}", s.text);
    n2.stop().await;
}

/// A voice note and an image through the connection: downloaded before the message is
/// committed (so before WhatsApp's ack), checked, answered from the transcript and with the
/// image shown; a download that fails, or bytes over the cap, end the reply with the reason
/// while the message is stored.
async fn media_through_the_connection(backend: Backend) {
    use crate::media::{b64, ogg_opus, png};
    use wiremock::matchers::body_string_contains;
    let Some((app, fake)) = spawn(backend).await else {
        return;
    };
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .and(body_string_contains("OpusHead"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"text": "Habt ihr morgen offen?"})),
        )
        .expect(1)
        .mount(&stub)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains(format!(
            r#""url":"data:image/png;base64,{}""#,
            b64(&png())
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("Ein kleines PNG.")))
        .with_priority(1)
        .expect(1)
        .mount(&stub)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains("Habt ihr morgen offen?"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("Ja, ab 9 Uhr.")))
        .expect(1)
        .mount(&stub)
        .await;
    configure(
        &app,
        &stub,
        json!({"transcription_model": "whisper-test", "vision": true}),
    )
    .await;
    create_web_account(&app, "shop").await;
    app.admin("POST", "/v1/accounts/shop/whatsapp-web/connect", None)
        .await;
    wait_state(&app, "shop", "pairing").await;
    fake.scan("shop").await;
    wait_state(&app, "shop", "connected").await;

    fake.serve("/v/voice.enc", Ok(ogg_opus()));
    fake.serve("/v/image.enc", Ok(png()));
    fake.say(
        "shop",
        with_media(
            "V1",
            MessageKind::Audio,
            "audio/ogg; codecs=opus",
            "/v/voice.enc",
        ),
    )
    .await
    .expect("committed");
    let row = crate::replies::settled(&app, "shop", "V1").await;
    assert_eq!(row["status"], "sent", "{row}");
    assert_eq!(row["reply_text"], "Ja, ab 9 Uhr.");
    assert_eq!(row["media"]["mime_type"], "audio/ogg", "{row}");

    let mut image = with_media("I1", MessageKind::Image, "image/png", "/v/image.enc");
    image.text = "was ist das?".into();
    fake.say("shop", image).await.expect("committed");
    let row = crate::replies::settled(&app, "shop", "I1").await;
    assert_eq!(row["status"], "sent", "{row}");
    assert_eq!(row["reply_text"], "Ein kleines PNG.");
    assert_eq!(
        fake.st().downloads,
        ["/v/voice.enc".to_string(), "/v/image.enc".to_string()]
    );

    // The CDN refuses the file; another is declared over the cap (never fetched).
    fake.serve(
        "/v/gone.enc",
        Err(WebError::permanent(
            "the media download failed (WhatsApp's CDN refused it, or it did not decrypt)",
        )),
    );
    fake.say(
        "shop",
        with_media("V2", MessageKind::Audio, "audio/ogg", "/v/gone.enc"),
    )
    .await
    .expect("committed all the same");
    let row = crate::replies::settled(&app, "shop", "V2").await;
    assert_eq!(
        (row["status"].as_str(), row["reason_code"].as_str()),
        (Some("failed"), Some("media_failed")),
        "{row}"
    );
    assert!(
        row["reason"]
            .as_str()
            .is_some_and(|r| r.contains("download failed: the media download failed")),
        "{row}"
    );
    let mut huge = with_media("S1", MessageKind::Sticker, "image/webp", "/v/huge.enc");
    if let Some(m) = huge.media.as_mut() {
        m.size = Some(64 * 1024 * 1024);
    }
    fake.say("shop", huge)
        .await
        .expect("committed all the same");
    let row = crate::replies::settled(&app, "shop", "S1").await;
    assert_eq!(row["reason_code"], "media_failed", "{row}");
    assert!(
        row["reason"]
            .as_str()
            .is_some_and(|r| r.contains("WAGATE_MEDIA_MAX_BYTES")),
        "{row}"
    );
    assert!(!fake.st().downloads.contains(&"/v/huge.enc".to_string()));
    let all = messages(&app, "shop", CUSTOMER).await;
    for id in ["V1", "I1", "V2", "S1"] {
        assert!(all.iter().any(|m| m["id"] == id), "{id} stored: {all:?}");
    }
    let v2 = all.iter().find(|m| m["id"] == "V2").expect("V2");
    assert!(v2["media"]["unavailable"].is_string(), "{v2}");
}
crate::both_stores!(web_media, media_through_the_connection(Backend));
