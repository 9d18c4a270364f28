//! The opt-in live test of the `whatsapp_web` transport against WhatsApp itself and a real phone
//! (`WAGATE_LIVE_WA=1`; docs/OPERATIONS.md walks through it). It runs the real library: the QR
//! code is printed to stderr (and written as SVG next to it), you scan it, send the linked number
//! a message from another phone, and the test checks the answer went out, that a restart
//! reconnects without a new scan, and (with `WAGATE_LIVE_WA_LOGOUT=1`) that logout unlinks.
//! Without the variable it does nothing.

use std::time::Duration;

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{eventually, Backend, TestApp};
use crate::replies::{completion, configure};

const ANSWER: &str = "wagate live test: your message arrived.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_phone() {
    if std::env::var("WAGATE_LIVE_WA").as_deref() != Ok("1") {
        eprintln!("whatsapp_web live test not run: set WAGATE_LIVE_WA=1 (docs/OPERATIONS.md)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let vars = TestApp::vars(Backend::Sqlite, &dir).await.expect("sqlite");
    let mut app = TestApp::spawn_with_web(Backend::Sqlite, dir, vars, None).await;
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(ANSWER)))
        .mount(&stub)
        .await;
    configure(&app, &stub, json!({})).await;
    let r = app
        .admin(
            "POST",
            "/v1/accounts",
            Some(json!({"id": "live", "transport": "whatsapp_web"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = app
        .admin("POST", "/v1/accounts/live/whatsapp-web/connect", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Show each new code until the phone scanned one.
    let svg_path = std::env::temp_dir().join("wagate-live-qr.svg");
    let shown = std::sync::Mutex::new(String::new());
    eventually(180, "the phone scans the QR code", || {
        let (app, svg_path, shown) = (&app, &svg_path, &shown);
        async move {
            let s = app
                .admin("GET", "/v1/accounts/live/whatsapp-web/qr", None)
                .await
                .json;
            if s["state"] == "connected" {
                return Some(());
            }
            let fresh = s["qr"]["code"]
                .as_str()
                .filter(|c| *c != shown.lock().unwrap().as_str());
            if let Some(code) = fresh {
                *shown.lock().unwrap() = code.to_string();
                let qr = qrcode::QrCode::new(code.as_bytes()).expect("qr");
                let text = qr
                    .render::<qrcode::render::unicode::Dense1x2>()
                    .quiet_zone(true)
                    .build();
                let _ = std::fs::write(svg_path, s["qr"]["svg"].as_str().unwrap_or(""));
                eprintln!(
                    "\nScan with WhatsApp > Linked devices > Link a device (also in {}):\n{text}\n",
                    svg_path.display()
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            None
        }
    })
    .await;
    eprintln!("connected: send the linked number a message from another phone within 3 minutes");

    eventually(180, "an answer goes out to a customer", || async {
        let logs = app
            .admin("GET", "/v1/ai/logs?account_id=live&limit=50", None)
            .await
            .json;
        logs["items"]
            .as_array()?
            .iter()
            .find(|row| row["status"] == "sent")
            .cloned()
    })
    .await;
    eprintln!("answered; restarting to check the session survives");

    app.restart().await;
    eventually(60, "reconnected with the stored session", || async {
        let s = app
            .admin("GET", "/v1/accounts/live/whatsapp-web/qr", None)
            .await
            .json;
        (s["state"] == "connected" && s["qr"].is_null()).then_some(())
    })
    .await;

    if std::env::var("WAGATE_LIVE_WA_LOGOUT").as_deref() == Ok("1") {
        let r = app
            .admin("POST", "/v1/accounts/live/whatsapp-web/logout", None)
            .await;
        assert_eq!(r.json["state"], "logged_out", "{}", r.text);
        eprintln!("logged out: the device is gone from the phone's Linked devices");
    }
}
