//! Media in inbound messages (issue 25, ADR 0028): the sandbox takes an image, voice note,
//! sticker or document as base64, checks its size and its MIME type against the bytes, and
//! records kind, MIME type, size and hash (never the bytes), on both stores.

use base64::Engine;
use serde_json::{json, Value};
use wagate::store::replay;

use crate::both_stores;
use crate::helpers::{Backend, TestApp};
use crate::replies::{messages, settled, JID};

/// A voice note's first bytes: an Ogg page carrying Opus (all below 0x80, so the fake
/// transcription endpoint can match the multipart body as text).
pub fn ogg_opus() -> Vec<u8> {
    let mut b = b"OggS\x00\x02".to_vec();
    b.extend_from_slice(&[0; 22]);
    b.extend_from_slice(b"OpusHead\x01\x01\x38\x01\x40\x1f\x00\x00\x00\x00\x00");
    b.extend_from_slice(&[7; 64]);
    b
}

/// A PNG's first bytes.
pub fn png() -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    b.extend_from_slice(&[1; 64]);
    b
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Posts a sandbox message with `media` (and `text`, when given); the response.
pub async fn inbound_media(
    app: &TestApp,
    id: &str,
    text: Option<&str>,
    media: Value,
) -> crate::helpers::Resp {
    let mut body = json!({"chat_id": JID, "from": "491701234567", "id": id, "media": media});
    if let Some(t) = text {
        body["text"] = json!(t);
    }
    app.admin("POST", "/v1/accounts/acme/sandbox/inbound", Some(body))
        .await
}

/// A voice note and an image are recorded with their media's kind, MIME type, size and hash
/// (never the bytes); the caption is the image's text, a message without one shows its kind.
async fn media_recorded(app: TestApp) {
    app.create_account("acme").await;
    let voice = ogg_opus();
    let r = inbound_media(
        &app,
        "v1",
        None,
        json!({"kind": "audio", "mime_type": "audio/ogg; codecs=opus", "data_base64": b64(&voice)}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let image = png();
    let r = inbound_media(
        &app,
        "i1",
        Some("what is this?"),
        json!({"kind": "image", "mime_type": "image/png", "data_base64": b64(&image)}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let all = messages(&app, "acme", JID).await;
    let by_id = |id: &str| {
        all.iter()
            .find(|m| m["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("message {id} in {all:?}"))
    };
    let v = by_id("v1");
    assert_eq!(v["kind"], "audio");
    assert_eq!(v["text"], "[audio]");
    assert_eq!(
        v["media"],
        json!({"mime_type": "audio/ogg", "size": voice.len(), "sha256": sha256_hex(&voice)})
    );
    let i = by_id("i1");
    assert_eq!(i["kind"], "image");
    assert_eq!(i["text"], "what is this?");
    assert_eq!(i["media"]["sha256"], sha256_hex(&image));
    // No bytes anywhere in the history.
    let events = app.admin("GET", "/v1/events?limit=500", None).await;
    assert!(!events.text.contains(&b64(&image)), "{}", events.text);
    // Without the AI on, the replies are skipped as before: the message itself is kept.
    let row = settled(&app, "acme", "v1").await;
    assert_eq!(row["status"], "skipped", "{row}");
}
both_stores!(media_recorded, media_recorded);

/// Bad media is a 400 naming the field, and nothing is recorded.
async fn bad_media_refused(backend: Backend) {
    let Some(app) =
        TestApp::spawn_with_settings(backend, &[("WAGATE_MEDIA_MAX_BYTES", "100")]).await
    else {
        return;
    };
    app.create_account("acme").await;
    let cases: Vec<(&str, Option<&str>, Value, &str, &str)> = vec![
        (
            "too large",
            None,
            json!({"kind": "audio", "mime_type": "audio/ogg", "data_base64": b64(&[ogg_opus(), vec![0; 100]].concat())}),
            "media.data_base64",
            "WAGATE_MEDIA_MAX_BYTES",
        ),
        (
            "MIME type not the bytes'",
            None,
            json!({"kind": "image", "mime_type": "image/jpeg", "data_base64": b64(&png())}),
            "media.mime_type",
            "image/png",
        ),
        (
            "audio that is an image",
            None,
            json!({"kind": "audio", "mime_type": "audio/ogg", "data_base64": b64(&png())}),
            "media.mime_type",
            "image/png",
        ),
        (
            "unknown bytes for an image",
            None,
            json!({"kind": "image", "mime_type": "image/png", "data_base64": b64(b"hello, not an image")}),
            "media.mime_type",
            "not a known image format",
        ),
        (
            "not base64",
            None,
            json!({"kind": "image", "mime_type": "image/png", "data_base64": "%%%"}),
            "media.data_base64",
            "base64",
        ),
        (
            "unknown kind",
            None,
            json!({"kind": "video", "mime_type": "video/mp4", "data_base64": b64(&png())}),
            "media.kind",
            "audio, image",
        ),
        (
            "blank caption",
            Some("  "),
            json!({"kind": "image", "mime_type": "image/png", "data_base64": b64(&png())}),
            "text",
            "blank",
        ),
    ];
    for (i, (what, text, media, field, says)) in cases.into_iter().enumerate() {
        let r = inbound_media(&app, &format!("bad{i}"), text, media).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text);
        assert_eq!(r.json["error"]["field"], field, "{what}: {}", r.text);
        let message = r.json["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(says), "{what}: {}", r.text);
    }
    // Neither text nor media.
    let r = app
        .admin(
            "POST",
            "/v1/accounts/acme/sandbox/inbound",
            Some(json!({"chat_id": JID, "from": "491701234567"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json["error"]["field"], "text", "{}", r.text);
    let chats = app.admin("GET", "/v1/accounts/acme/chats", None).await;
    assert_eq!(chats.json["items"], json!([]), "{}", chats.text);
}
both_stores!(bad_media_refused, bad_media_refused(Backend));

/// A voice note is transcribed through `{base_url}/audio/transcriptions` (multipart `file` and
/// `model`) and answered from its transcript; the transcript is recorded on the message and is
/// still there after a restart.
async fn voice_note_answered_from_its_transcript(app: TestApp) {
    use wiremock::matchers::{body_string_contains, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let mut app = app;
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .and(header("authorization", "Bearer sk-test-key"))
        .and(body_string_contains("name=\"file\""))
        .and(body_string_contains("name=\"model\"\r\n\r\nwhisper-test"))
        .and(body_string_contains("OpusHead"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"text": "Do you deliver to Porto?"})),
        )
        .expect(1)
        .mount(&stub)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains("Do you deliver to Porto?"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(crate::replies::completion("Yes, we deliver to Porto.")),
        )
        .expect(1)
        .mount(&stub)
        .await;
    crate::replies::configure(&app, &stub, json!({"transcription_model": "whisper-test"})).await;
    app.create_account("acme").await;
    let r = inbound_media(
        &app,
        "v1",
        None,
        json!({"kind": "audio", "mime_type": "audio/ogg; codecs=opus", "data_base64": b64(&ogg_opus())}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let row = settled(&app, "acme", "v1").await;
    assert_eq!(row["status"], "sent", "{row}");
    assert_eq!(row["reply_text"], "Yes, we deliver to Porto.");
    // The AI log names the media (never its bytes) and the transcription apart from the reply.
    assert_eq!(
        row["media"],
        json!({"kind": "audio", "mime_type": "audio/ogg", "size": ogg_opus().len(),
               "sha256": sha256_hex(&ogg_opus())}),
        "{row}"
    );
    assert_eq!(row["transcription"]["model"], "whisper-test", "{row}");
    assert!(row["transcription"]["latency_ms"].is_u64(), "{row}");
    // Once the reply settled, the bytes are no longer kept.
    let sha = sha256_hex(&ogg_opus());
    crate::helpers::eventually(10, "the voice note's bytes are deleted", || async {
        let kept = wagate::store::media::get(&app.app().store, "acme", &sha)
            .await
            .expect("media read");
        kept.is_none().then_some(())
    })
    .await;
    let transcript = |all: Vec<Value>| {
        all.iter()
            .find(|m| m["id"] == "v1")
            .map(|m| m["transcript"].clone())
    };
    assert_eq!(
        transcript(messages(&app, "acme", JID).await),
        Some(json!("Do you deliver to Porto?"))
    );
    app.restart().await;
    assert_eq!(
        transcript(messages(&app, "acme", JID).await),
        Some(json!("Do you deliver to Porto?"))
    );
    // A replay of the whole history folds the same models, transcript included.
    app.app().catch_up().await.expect("catch up");
    let live = replay::digest(Some(&app.app().model()), Some(&app.app().messages()));
    let report = replay::replay(
        &app.app().store,
        None,
        replay::Projection::All,
        app.app().config.read_model,
        false,
    )
    .await
    .expect("replay");
    assert_eq!(
        replay::digest(report.config.as_ref(), report.messages.as_ref()),
        live
    );
    let replayed = report.messages.expect("the messages model");
    let chat = replayed
        .chats
        .get(&("acme".to_string(), JID.to_string()))
        .expect("the chat");
    assert!(chat
        .messages
        .iter()
        .any(|m| m.transcript.as_deref() == Some("Do you deliver to Porto?")));
    // The chat page shows it too.
    let mut visitor = crate::dashboard::Visitor::new(&app);
    visitor.login().await;
    let page = visitor
        .get("/accounts/acme/chats/491701234567%40s.whatsapp.net")
        .await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("Transcript: Do you deliver to Porto?"),
        "{}",
        page.body
    );
}
both_stores!(
    voice_note_transcribed,
    voice_note_answered_from_its_transcript
);

/// Without `transcription_model` a voice note's reply is skipped (`transcription_off`); garbage
/// from the transcription endpoint fails it (`media_failed`); the messages stay recorded.
async fn voice_note_not_heard(app: TestApp) {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>oops</html>"))
        .mount(&stub)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(crate::replies::completion("never")))
        .expect(0)
        .mount(&stub)
        .await;
    crate::replies::configure(&app, &stub, json!({})).await;
    app.create_account("acme").await;
    let voice = json!({"kind": "audio", "mime_type": "audio/ogg", "data_base64": b64(&ogg_opus())});
    let r = inbound_media(&app, "off1", None, voice.clone()).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let row = settled(&app, "acme", "off1").await;
    assert_eq!(
        (row["status"].as_str(), row["reason_code"].as_str()),
        (Some("skipped"), Some("transcription_off")),
        "{row}"
    );
    crate::replies::configure(&app, &stub, json!({"transcription_model": "whisper-test"})).await;
    let r = inbound_media(&app, "bad1", None, voice).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let row = settled(&app, "acme", "bad1").await;
    assert_eq!(
        (row["status"].as_str(), row["reason_code"].as_str()),
        (Some("failed"), Some("media_failed")),
        "{row}"
    );
    assert!(
        row["reason"]
            .as_str()
            .unwrap_or("")
            .contains("transcription failed"),
        "{row}"
    );
    assert_eq!(messages(&app, "acme", JID).await.len(), 2);
}
both_stores!(voice_note_not_heard, voice_note_not_heard);

/// With `vision` on, an image goes to the model as an `image_url` part (a `data:` URI) beside
/// its caption; with it off, the caption alone.
async fn images_seen_with_vision(app: TestApp) {
    use wiremock::matchers::{body_string_contains, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let image = png();
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        // The user turn is content parts: the caption as text, the image as a data URI (JSON
        // keys in any order).
        .and(body_string_contains(r#""text":"what is this?""#))
        .and(body_string_contains(r#""type":"image_url""#))
        .and(body_string_contains(format!(
            r#""url":"data:image/png;base64,{}""#,
            b64(&image)
        )))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(crate::replies::completion("A tiny PNG.")),
        )
        .expect(1)
        .mount(&stub)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains(r#""content":"and this one?""#))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(crate::replies::completion("A caption.")),
        )
        .expect(1)
        .mount(&stub)
        .await;
    crate::replies::configure(&app, &stub, json!({"vision": true})).await;
    app.create_account("acme").await;
    let media = json!({"kind": "image", "mime_type": "image/png", "data_base64": b64(&image)});
    let r = inbound_media(&app, "img1", Some("what is this?"), media.clone()).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let row = settled(&app, "acme", "img1").await;
    assert_eq!(row["status"], "sent", "{row}");
    assert_eq!(row["reply_text"], "A tiny PNG.");

    crate::replies::configure(&app, &stub, json!({"vision": false})).await;
    let r = inbound_media(&app, "img2", Some("and this one?"), media).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let row = settled(&app, "acme", "img2").await;
    assert_eq!(row["status"], "sent", "{row}");
    assert_eq!(row["reply_text"], "A caption.");
    let requests = stub.received_requests().await.unwrap_or_default();
    let last = requests
        .last()
        .map(|r| String::from_utf8_lossy(&r.body).to_string());
    assert!(
        last.as_deref().is_some_and(|b| !b.contains("image_url")),
        "vision off sends no image: {last:?}"
    );
}
both_stores!(images_seen_with_vision, images_seen_with_vision);

/// Whether `account` still keeps the bytes `sha256`.
async fn kept(app: &TestApp, sha256: &str) -> bool {
    wagate::store::media::get(&app.app().store, "acme", sha256)
        .await
        .expect("media read")
        .is_some()
}

/// Posts a sandbox message with `media` to chat `jid`; the response.
async fn inbound_media_to(
    app: &TestApp,
    jid: &str,
    id: &str,
    media: Value,
) -> crate::helpers::Resp {
    let body = json!({"chat_id": jid, "from": "491700000001", "id": id, "media": media});
    app.admin("POST", "/v1/accounts/acme/sandbox/inbound", Some(body))
        .await
}

/// The same image sent to two chats is one row with two uses: the first reply to settle leaves
/// the bytes to the second, still waiting in its debounce window, which sees the image too; the
/// bytes go once both settled.
async fn same_bytes_twice_both_answered(app: TestApp) {
    use wiremock::matchers::{body_string_contains, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let image = png();
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains(format!(
            r#""url":"data:image/png;base64,{}""#,
            b64(&image)
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(crate::replies::completion("Seen.")))
        .expect(2)
        .mount(&stub)
        .await;
    crate::replies::configure(&app, &stub, json!({"vision": true})).await;
    app.create_account("acme").await;
    const LATER: &str = "491709999999@s.whatsapp.net";
    // The second chat answers after a 5 s window: its reply reads the bytes after the first
    // chat's reply settled.
    let r = app
        .admin(
            "PUT",
            &format!("/v1/accounts/acme/chats/{LATER}/ai"),
            Some(json!({"debounce_seconds": 5})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let media = json!({"kind": "image", "mime_type": "image/png", "data_base64": b64(&image)});
    let r = inbound_media_to(&app, LATER, "late1", media.clone()).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let r = inbound_media_to(&app, JID, "early1", media).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let sha = sha256_hex(&image);
    let early = settled(&app, "acme", "early1").await;
    assert_eq!(early["status"], "sent", "{early}");
    let late = app
        .admin("GET", "/v1/ai/logs?account_id=acme&limit=50", None)
        .await;
    let pending = late.json["items"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["trigger_message_id"] == "late1"))
        .map(|r| r["status"].clone());
    assert_eq!(pending, Some(json!("pending")), "{}", late.text);
    assert!(
        kept(&app, &sha).await,
        "the second reply still needs the bytes"
    );
    let late = settled(&app, "acme", "late1").await;
    assert_eq!(
        (late["status"].as_str(), late["reply_text"].as_str()),
        (Some("sent"), Some("Seen.")),
        "{late}"
    );
    crate::helpers::eventually(10, "the image's bytes are deleted", || async {
        (!kept(&app, &sha).await).then_some(())
    })
    .await;
}
both_stores!(same_bytes_twice, same_bytes_twice_both_answered);

/// With `WAGATE_MEDIA_KEEP_SECONDS` the bytes outlive the reply that used them; once they are
/// older than that (the purge run as if that time passed) they go. Bytes whose reply never
/// settled are kept for the unsettled bound, not forever.
async fn media_kept_then_purged(backend: Backend) {
    use std::time::Duration;
    use wagate::app::media_retention::{purge, unsettled_bound};
    use wagate::store::media::{self, MediaUse};
    let Some(app) =
        TestApp::spawn_with_settings(backend, &[("WAGATE_MEDIA_KEEP_SECONDS", "3600")]).await
    else {
        return;
    };
    app.create_account("acme").await;
    let voice = ogg_opus();
    let sha = sha256_hex(&voice);
    let r = inbound_media(
        &app,
        "v1",
        None,
        json!({"kind": "audio", "mime_type": "audio/ogg", "data_base64": b64(&voice)}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    // The AI is off: the reply is skipped, and settled.
    let row = settled(&app, "acme", "v1").await;
    assert_eq!(row["status"], "skipped", "{row}");
    let store = &app.app().store;
    // The app's own pass: an hour is not over, the bytes stay.
    let p = purge(app.app()).await.expect("purge");
    assert_eq!(p.media, 0, "{p:?}");
    assert!(kept(&app, &sha).await, "kept after the reply settled");
    // An hour later (a keep time of 0 left), the settled reply's bytes go.
    let p = media::purge(
        store,
        Duration::ZERO,
        unsettled_bound(Duration::from_secs(3600)),
    )
    .await
    .expect("purge");
    assert_eq!(p.media, 1, "{p:?}");
    assert!(!kept(&app, &sha).await);

    // Bytes put for a message whose reply never settles (as if its commit failed).
    let image = png();
    let isha = sha256_hex(&image);
    let used = MediaUse {
        account: "acme",
        chat_id: JID,
        message_id: "never-answered",
        sha256: &isha,
    };
    media::put(store, used, "image/png", &image)
        .await
        .expect("put");
    let p = media::purge(store, Duration::ZERO, Duration::from_secs(3600))
        .await
        .expect("purge");
    assert_eq!((p.uses, p.media), (0, 0), "a reply may still need them");
    assert!(kept(&app, &isha).await);
    // Past the unsettled bound, the wait is given up and the bytes go (the bound is 0 here; the
    // store's clock must have moved past the put: SQLite's has milliseconds).
    tokio::time::sleep(Duration::from_millis(10)).await;
    let p = media::purge(store, Duration::ZERO, Duration::ZERO)
        .await
        .expect("purge");
    assert_eq!((p.uses, p.media), (1, 1), "{p:?}");
    assert!(!kept(&app, &isha).await);
}
both_stores!(media_kept_then_purged, media_kept_then_purged(Backend));

/// The periodic purge deletes the bytes once `WAGATE_MEDIA_KEEP_SECONDS` passed (a settled reply
/// leaves them to it when a keep time is set).
async fn media_purged_by_the_job(backend: Backend) {
    let Some(app) =
        TestApp::spawn_with_settings(backend, &[("WAGATE_MEDIA_KEEP_SECONDS", "1")]).await
    else {
        return;
    };
    app.create_account("acme").await;
    let image = png();
    let r = inbound_media(
        &app,
        "i1",
        Some("look"),
        json!({"kind": "image", "mime_type": "image/png", "data_base64": b64(&image)}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let row = settled(&app, "acme", "i1").await;
    assert_eq!(row["status"], "skipped", "{row}");
    let sha = sha256_hex(&image);
    crate::helpers::eventually(15, "the purge deletes the bytes", || async {
        (!kept(&app, &sha).await).then_some(())
    })
    .await;
    // The message and its hash stay.
    let all = messages(&app, "acme", JID).await;
    assert_eq!(all[0]["media"]["sha256"], sha, "{all:?}");
}
both_stores!(media_purged_by_the_job, media_purged_by_the_job(Backend));

/// A transcription's tokens count against the daily token budget like the reply's; a
/// transcription API that reports no usage counts nothing.
async fn transcription_tokens_counted(app: TestApp) {
    use wiremock::matchers::{body_string_contains, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let stub = MockServer::start().await;
    let first = ogg_opus();
    let mut second = ogg_opus();
    second.extend_from_slice(b"second");
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .and(body_string_contains("second"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"text": "And on Sunday?", "usage": {"type": "duration", "seconds": 3}}),
        ))
        .mount(&stub)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "text": "Are you open today?",
            "usage": {"type": "tokens", "input_tokens": 30, "output_tokens": 12, "total_tokens": 42}
        })))
        .mount(&stub)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(crate::replies::completion("Yes.")))
        .mount(&stub)
        .await;
    crate::replies::configure(
        &app,
        &stub,
        json!({"transcription_model": "whisper-test", "daily_token_budget": 1000}),
    )
    .await;
    app.create_account("acme").await;
    let used = || async {
        let r = app.admin("GET", "/v1/accounts/acme/ai/usage", None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json["tokens_used"].as_u64()
    };
    let r = inbound_media(
        &app,
        "v1",
        None,
        json!({"kind": "audio", "mime_type": "audio/ogg", "data_base64": b64(&first)}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let row = settled(&app, "acme", "v1").await;
    assert_eq!(row["status"], "sent", "{row}");
    assert_eq!(row["transcription"]["usage"]["total_tokens"], 42, "{row}");
    // 42 for the transcription, 18 for the reply (the stub's completion).
    crate::helpers::eventually(10, "the tokens are folded", || async {
        (used().await == Some(42 + 18)).then_some(())
    })
    .await;
    let r = inbound_media(
        &app,
        "v2",
        None,
        json!({"kind": "audio", "mime_type": "audio/ogg", "data_base64": b64(&second)}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let row = settled(&app, "acme", "v2").await;
    assert_eq!(row["status"], "sent", "{row}");
    assert!(row["transcription"]["usage"].is_null(), "{row}");
    crate::helpers::eventually(10, "the reply's tokens are folded", || async {
        (used().await == Some(42 + 18 + 18)).then_some(())
    })
    .await;
    // The overview counts the same tokens.
    let stats = app
        .admin("GET", "/v1/stats?period=24h&account=acme", None)
        .await;
    assert_eq!(stats.status, 200, "{}", stats.text);
    assert_eq!(
        stats.json["totals"]["tokens"],
        42 + 18 + 18,
        "{}",
        stats.text
    );
}
both_stores!(transcription_tokens_counted, transcription_tokens_counted);
