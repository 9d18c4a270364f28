//! Meta's WhatsApp Business Cloud API: the Graph API client (send a text, mark an inbound message
//! read with the typing indicator), the classification of Graph errors into the reasons the AI
//! log shows, and the pure pieces of the inbound webhook (signature check, verify token digest,
//! payload parsing).
//!
//! Nothing here logs or returns the access token, the app secret or a message text: errors name
//! the Graph error code and its meaning, never the upstream body.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{redirect, Client, ClientBuilder};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use url::{Host, Url};
use wagate_actors::ports::SendError;
use wagate_events::chat::{DeliveryStatus, MessageKind};

use crate::model::guard::{GuardError, OutboundGuard};

/// Largest Graph response body read.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A Graph call that takes longer than this is abandoned (and retried as a transient failure).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// A media download (the file's bytes, after its metadata) that takes longer than this is
/// abandoned: the message is recorded with its media unavailable.
const MEDIA_TIMEOUT: Duration = Duration::from_secs(60);

/// Associated data binding a sealed access token to its account.
pub fn access_token_ad(account: &str) -> String {
    format!("cloud_access_token|v1|account:{account}")
}

/// Associated data binding a sealed app secret to its account.
pub fn app_secret_ad(account: &str) -> String {
    format!("cloud_app_secret|v1|account:{account}")
}

/// The stored form of a webhook verify token: its SHA-256, hex. The gateway only ever compares
/// it, so it never needs the token back.
pub fn verify_token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `given` is the verify token whose digest is `stored_hex` (constant time).
pub fn verify_token_matches(stored_hex: &str, given: &str) -> bool {
    let given = verify_token_digest(given);
    bool::from(given.as_bytes().ct_eq(stored_hex.as_bytes()))
}

/// Checks `X-Hub-Signature-256: sha256=<hex>`: the HMAC-SHA256 of the raw body under the app
/// secret, compared in constant time. A missing, malformed or wrong header is `false`.
pub fn signature_valid(app_secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(app_secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// The meaning of a Graph / WhatsApp error code and whether trying again later may succeed.
pub fn describe_code(code: i64) -> (&'static str, bool) {
    match code {
        131047 => (
            "outside the 24-hour customer service window (only a template message may be sent)",
            false,
        ),
        130429 => ("rate limited (throughput limit reached)", true),
        131056 => (
            "rate limited (too many messages to this recipient in a short time)",
            true,
        ),
        4 => ("rate limited (application request limit reached)", true),
        80007 => (
            "rate limited (business account request limit reached)",
            true,
        ),
        190 => (
            "access token rejected (expired or revoked); set a new access_token for this account",
            false,
        ),
        131026 => (
            "recipient is not on WhatsApp or cannot receive this message",
            false,
        ),
        131030 => (
            "recipient is not in the allowed list of this test number",
            false,
        ),
        131048 => ("rate limited (spam rate limit)", true),
        131000 | 1 | 2 => ("temporary error at Meta", true),
        _ => ("rejected by the Graph API", false),
    }
}

/// The AI-log reason for a Graph error code.
pub fn code_reason(code: i64) -> String {
    format!("cloud_api error {code}: {}", describe_code(code).0)
}

/// A failed Graph call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    /// Graph answered with its error object.
    #[error("{}", code_reason(*code))]
    Api { status: u16, code: i64 },
    /// A non-success status without a Graph error object.
    #[error("cloud_api HTTP {status} from the Graph API")]
    Http { status: u16 },
    #[error("cloud_api call timed out")]
    Timeout,
    #[error("cloud_api call failed: could not connect to the Graph API")]
    Connect,
    #[error("cloud_api endpoint refused: {0}")]
    Refused(GuardError),
    #[error("cloud_api returned a malformed body ({0})")]
    Malformed(&'static str),
    #[error("cloud_api client setup failed: {0}")]
    Setup(&'static str),
}

impl GraphError {
    /// Rate limits, timeouts, connect failures and 5xx may pass later; the rest will not.
    pub fn is_retryable(&self) -> bool {
        match self {
            GraphError::Api { status, code } => describe_code(*code).1 || *status >= 500,
            GraphError::Http { status } => *status == 429 || *status >= 500,
            GraphError::Timeout | GraphError::Connect => true,
            GraphError::Refused(_) | GraphError::Malformed(_) | GraphError::Setup(_) => false,
        }
    }

    /// Meta rejected the access token itself (error 190).
    pub fn is_invalid_token(&self) -> bool {
        matches!(self, GraphError::Api { code: 190, .. })
    }

    pub fn to_send_error(&self) -> SendError {
        SendError {
            reason: self.to_string(),
            retryable: self.is_retryable(),
        }
    }
}

/// Where and as whom a Cloud API account sends.
pub struct CloudTarget {
    pub graph_base_url: String,
    pub graph_version: String,
    pub phone_number_id: String,
    pub access_token: SecretString,
}

impl CloudTarget {
    fn media_url(&self, media_id: &str) -> Result<Url, GraphError> {
        let u = format!(
            "{}/{}/{}",
            self.graph_base_url.trim_end_matches('/'),
            self.graph_version,
            media_id
        );
        Url::parse(&u).map_err(|e| {
            GraphError::Refused(GuardError::InvalidUrl {
                reason: e.to_string(),
            })
        })
    }

    fn messages_url(&self) -> Result<Url, GraphError> {
        let u = format!(
            "{}/{}/{}/messages",
            self.graph_base_url.trim_end_matches('/'),
            self.graph_version,
            self.phone_number_id
        );
        Url::parse(&u).map_err(|e| {
            GraphError::Refused(GuardError::InvalidUrl {
                reason: e.to_string(),
            })
        })
    }
}

/// The Graph API client. Like the model client it never follows redirects, ignores proxy
/// variables, resolves names through the outbound guard and checks literal-IP hosts before each
/// request.
#[derive(Debug, Clone)]
pub struct CloudApiClient {
    guard: Arc<OutboundGuard>,
    http: Client,
}

fn builder(guard: &Arc<OutboundGuard>) -> ClientBuilder {
    Client::builder()
        .redirect(redirect::Policy::none())
        .dns_resolver2(guard.resolver())
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("wagate/", env!("CARGO_PKG_VERSION")))
}

fn build(b: ClientBuilder) -> Result<Client, GraphError> {
    b.build()
        .map_err(|_| GraphError::Setup("could not build the HTTP client"))
}

fn transport_error(err: &reqwest::Error) -> GraphError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(guard) = e.downcast_ref::<GuardError>() {
            return from_guard(guard.clone());
        }
        source = e.source();
    }
    if err.is_timeout() && !err.is_connect() {
        GraphError::Timeout
    } else {
        GraphError::Connect
    }
}

fn from_guard(err: GuardError) -> GraphError {
    if err.is_policy() {
        GraphError::Refused(err)
    } else {
        GraphError::Connect
    }
}

/// The Graph API's request and answer bodies, typed (only the fields we send or read).
mod graph {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize)]
    pub struct SendText<'a> {
        pub messaging_product: &'static str,
        pub recipient_type: &'static str,
        pub to: &'a str,
        #[serde(rename = "type")]
        pub kind: &'static str,
        pub text: TextBody<'a>,
    }

    #[derive(Serialize)]
    pub struct TextBody<'a> {
        pub preview_url: bool,
        pub body: &'a str,
    }

    #[derive(Serialize)]
    pub struct MarkRead<'a> {
        pub messaging_product: &'static str,
        pub status: &'static str,
        pub message_id: &'a str,
        pub typing_indicator: TypingIndicator,
    }

    #[derive(Serialize)]
    pub struct TypingIndicator {
        #[serde(rename = "type")]
        pub kind: &'static str,
    }

    /// `{"messages": [{"id": "wamid.…"}], …}`
    #[derive(Deserialize)]
    pub struct Sent {
        #[serde(default)]
        pub messages: Vec<SentMessage>,
    }

    #[derive(Deserialize)]
    pub struct SentMessage {
        pub id: String,
    }

    /// `{"error": {"code": 190, …}}`
    #[derive(Deserialize)]
    pub struct Failed {
        pub error: FailedError,
    }

    #[derive(Deserialize)]
    pub struct FailedError {
        pub code: Option<i64>,
    }
}

impl CloudApiClient {
    pub fn new(guard: Arc<OutboundGuard>) -> Result<Self, GraphError> {
        let http = build(builder(&guard))?;
        Ok(Self { guard, http })
    }

    /// `POST {graph}/{version}/{phone_number_id}/messages` with a text message to `to` (the
    /// recipient's number, digits only); returns Meta's message id (`wamid.…`).
    pub async fn send_text(
        &self,
        target: &CloudTarget,
        to: &str,
        text: &str,
    ) -> Result<String, GraphError> {
        let body = graph::SendText {
            messaging_product: "whatsapp",
            recipient_type: "individual",
            to,
            kind: "text",
            text: graph::TextBody {
                preview_url: false,
                body: text,
            },
        };
        let sent: graph::Sent = self.post(target, &body).await?;
        sent.messages
            .into_iter()
            .next()
            .map(|m| m.id)
            .filter(|id| is_message_id(id))
            .ok_or(GraphError::Malformed("no messages[0].id"))
    }

    /// Marks the inbound message `message_id` read and shows the typing indicator on it (Meta
    /// hides it after 25 s or when the reply arrives).
    pub async fn typing(&self, target: &CloudTarget, message_id: &str) -> Result<(), GraphError> {
        let body = graph::MarkRead {
            messaging_product: "whatsapp",
            status: "read",
            message_id,
            typing_indicator: graph::TypingIndicator { kind: "text" },
        };
        self.post::<_, serde::de::IgnoredAny>(target, &body)
            .await
            .map(drop)
    }

    /// Posts `body` to the phone number's `messages` edge; the answer as `T`, or the Graph error
    /// (its code only, never the upstream body).
    async fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        target: &CloudTarget,
        body: &B,
    ) -> Result<T, GraphError> {
        let url = target.messages_url()?;
        let body = serde_json::to_vec(body).map_err(|_| GraphError::Setup("unencodable body"))?;
        self.call(reqwest::Method::POST, url, target, Some(body))
            .await
    }

    /// One Graph API call with a JSON answer: `T`, or the Graph error (its code only).
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        target: &CloudTarget,
        body: Option<Vec<u8>>,
    ) -> Result<T, GraphError> {
        let resp = self
            .request(method, url, target, body, REQUEST_TIMEOUT)
            .await?;
        let status = resp.status().as_u16();
        let buf = read_capped(resp, MAX_RESPONSE_BYTES)
            .await?
            .ok_or(GraphError::Malformed("response too large"))?;
        parse_answer(status, &buf)
    }

    /// Sends one request with the account's bearer token, through the outbound guard: the URL's
    /// addresses are checked first, and plain http to a domain connects only to those.
    async fn request(
        &self,
        method: reqwest::Method,
        url: Url,
        target: &CloudTarget,
        json: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<reqwest::Response, GraphError> {
        let addrs = self.guard.checked_addrs(&url).await.map_err(from_guard)?;
        // Plain http to a domain: connect only to the addresses just checked.
        let pinned;
        let client = match url.host() {
            Some(Host::Domain(domain)) if url.scheme() == "http" => {
                pinned = build(builder(&self.guard).resolve_to_addrs(domain, &addrs))?;
                &pinned
            }
            _ => &self.http,
        };
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {}", target.access_token.expose_secret()))
                .map_err(|_| GraphError::Setup("the access token is not a valid header value"))?;
        auth.set_sensitive(true);
        let mut req = client
            .request(method, url)
            .header(AUTHORIZATION, auth)
            .timeout(timeout);
        if let Some(body) = json {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        req.send().await.map_err(|e| transport_error(&e))
    }

    /// Fetches the bytes of the Graph media `media_id` (from a webhook message): its metadata
    /// (`GET {graph}/{version}/{media_id}`), refused before the download when its `file_size`
    /// is over `max_bytes`, then the file from the URL Meta gave (any host, through the outbound
    /// guard, with the same bearer token), read to at most `max_bytes`. Nothing here logs the
    /// URL (it is signed) or the token.
    pub async fn download_media(
        &self,
        target: &CloudTarget,
        media_id: &str,
        max_bytes: usize,
    ) -> Result<Vec<u8>, MediaFetchError> {
        if !is_media_id(media_id) {
            return Err(GraphError::Malformed("not a media id").into());
        }
        let meta_url = target.media_url(media_id)?;
        let found: payload::MediaUrl = self
            .call(reqwest::Method::GET, meta_url, target, None)
            .await?;
        if let Some(size) = found.file_size.filter(|s| *s > max_bytes as u64) {
            return Err(MediaFetchError::TooLarge(
                crate::transport::media::too_large(size, max_bytes).message,
            ));
        }
        let file_url = Url::parse(&found.url)
            .map_err(|_| GraphError::Malformed("the media url is not a URL"))?;
        let resp = self
            .request(reqwest::Method::GET, file_url, target, None, MEDIA_TIMEOUT)
            .await?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            tracing::debug!(status, "media file download failed");
            return Err(GraphError::Http { status }.into());
        }
        if let Some(size) = resp.content_length().filter(|s| *s > max_bytes as u64) {
            return Err(MediaFetchError::TooLarge(
                crate::transport::media::too_large(size, max_bytes).message,
            ));
        }
        read_capped(resp, max_bytes).await?.ok_or_else(|| {
            MediaFetchError::TooLarge(format!(
                "the media is over {max_bytes} bytes; at most {max_bytes} are accepted \
                 (WAGATE_MEDIA_MAX_BYTES)"
            ))
        })
    }
}

/// Reads a response body of at most `cap` bytes (`None`: it is longer).
async fn read_capped(
    mut resp: reqwest::Response,
    cap: usize,
) -> Result<Option<Vec<u8>>, GraphError> {
    let mut buf = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > cap {
                    return Ok(None);
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(Some(buf)),
            Err(e) => return Err(transport_error(&e)),
        }
    }
}

/// A Graph answer: the body as `T` on success, else the Graph error (its code only, never the
/// upstream body).
fn parse_answer<T: serde::de::DeserializeOwned>(status: u16, buf: &[u8]) -> Result<T, GraphError> {
    if (200..300).contains(&status) {
        return serde_json::from_slice(buf)
            .map_err(|_| GraphError::Malformed("not the expected JSON"));
    }
    let code = serde_json::from_slice::<graph::Failed>(buf)
        .ok()
        .and_then(|f| f.error.code);
    let err = match code {
        Some(code) => GraphError::Api { status, code },
        None => GraphError::Http { status },
    };
    tracing::debug!(status, error = %err, "graph call failed");
    Err(err)
}

/// Why a media's bytes were not fetched: the reason a message's media is recorded unavailable
/// with (never the URL or the token).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MediaFetchError {
    #[error("download failed: {0}")]
    Graph(#[from] GraphError),
    /// Over `WAGATE_MEDIA_MAX_BYTES` (declared, or as read).
    #[error("{0}")]
    TooLarge(String),
}

/// The recipient of a chat: Cloud API chats are private chats `<digits>@s.whatsapp.net`.
pub fn recipient(jid: &str) -> Result<&str, SendError> {
    match jid.strip_suffix("@s.whatsapp.net") {
        Some(n) if !n.is_empty() && n.len() <= 20 && n.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(SendError::permanent(
            "cloud_api sends to private chats (<digits>@s.whatsapp.net) only",
        )),
    }
}

/// An inbound message from the webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMessage {
    pub id: String,
    /// The sender's WhatsApp id (digits).
    pub from: String,
    pub kind: MessageKind,
    /// The text body; for other kinds the caption or `[<kind>]`.
    pub text: String,
    pub contact_name: Option<String>,
    /// The media of an audio (voice note), image, sticker or document message.
    pub media: Option<InboundMedia>,
}

/// The media a webhook message announces: its bytes are fetched with
/// [`CloudApiClient::download_media`] (audio, images and stickers; a document reaches the model
/// as its caption and file name only).
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMedia {
    /// The Graph media id.
    pub id: String,
    /// The declared MIME type (empty when Meta gave none).
    pub mime_type: String,
    /// The declared SHA-256, as Meta gave it.
    pub sha256: Option<String>,
    /// The file name (documents).
    pub filename: Option<String>,
}

impl InboundMessage {
    pub fn jid(&self) -> String {
        format!("{}@s.whatsapp.net", self.from)
    }
}

/// A delivery status from the webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    pub message_id: String,
    pub recipient: String,
    pub status: DeliveryStatus,
    pub error: Option<String>,
}

impl StatusUpdate {
    pub fn jid(&self) -> String {
        format!("{}@s.whatsapp.net", self.recipient)
    }
}

/// What a webhook payload carried for this account.
#[derive(Debug, Default, PartialEq)]
pub struct WebhookBatch {
    pub messages: Vec<InboundMessage>,
    pub statuses: Vec<StatusUpdate>,
    /// Entries not understood or not for this phone number (accepted and ignored).
    pub ignored: usize,
}

fn is_wa_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_message_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256
}

/// Meta's webhook payload, typed (`object: whatsapp_business_account`,
/// `entry[].changes[].value.{metadata,contacts,messages,statuses}`). Every list item is
/// [`Lenient`]: an item of a shape we do not know is counted as ignored, never an error (Meta
/// retries anything that is not a 200).
mod payload {
    use serde::Deserialize;

    /// A `T`, or anything else (kept as nothing).
    #[derive(Deserialize)]
    #[serde(untagged)]
    pub enum Lenient<T> {
        Known(T),
        Unknown(serde::de::IgnoredAny),
    }

    impl<T> Lenient<T> {
        pub fn known(self) -> Option<T> {
            match self {
                Lenient::Known(t) => Some(t),
                Lenient::Unknown(_) => None,
            }
        }
    }

    #[derive(Deserialize)]
    pub struct Webhook {
        #[serde(default)]
        pub object: String,
        #[serde(default)]
        pub entry: Vec<Lenient<Entry>>,
    }

    #[derive(Deserialize)]
    pub struct Entry {
        #[serde(default)]
        pub changes: Vec<Lenient<Change>>,
    }

    #[derive(Deserialize)]
    pub struct Change {
        #[serde(default)]
        pub field: String,
        pub value: Option<Value>,
    }

    #[derive(Deserialize)]
    pub struct Value {
        pub metadata: Option<Metadata>,
        #[serde(default)]
        pub contacts: Vec<Lenient<Contact>>,
        #[serde(default)]
        pub messages: Vec<Lenient<Message>>,
        #[serde(default)]
        pub statuses: Vec<Lenient<Status>>,
    }

    #[derive(Deserialize)]
    pub struct Metadata {
        pub phone_number_id: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct Contact {
        pub wa_id: String,
        pub profile: Profile,
    }

    #[derive(Deserialize)]
    pub struct Profile {
        pub name: String,
    }

    #[derive(Deserialize)]
    pub struct Message {
        pub id: String,
        pub from: String,
        #[serde(rename = "type")]
        pub kind: Option<String>,
        pub text: Option<Text>,
        pub image: Option<Media>,
        pub video: Option<Media>,
        pub document: Option<Media>,
        pub audio: Option<Media>,
        pub voice: Option<Media>,
        pub sticker: Option<Media>,
    }

    #[derive(Deserialize)]
    pub struct Text {
        pub body: String,
    }

    /// A media object: its Graph media id, declared type and hash, caption and file name.
    #[derive(Deserialize)]
    pub struct Media {
        pub id: Option<String>,
        pub mime_type: Option<String>,
        pub sha256: Option<String>,
        pub caption: Option<String>,
        pub filename: Option<String>,
    }

    /// `GET /{version}/{media-id}`: where the file is and what it is.
    #[derive(Deserialize)]
    pub struct MediaUrl {
        pub url: String,
        pub file_size: Option<u64>,
    }

    #[derive(Deserialize)]
    pub struct Status {
        pub id: String,
        pub recipient_id: String,
        pub status: String,
        #[serde(default)]
        pub errors: Vec<Lenient<StatusError>>,
    }

    #[derive(Deserialize)]
    pub struct StatusError {
        pub code: Option<i64>,
    }
}

/// The body of a webhook call is not JSON at all (a 400; any JSON is accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the body is not JSON")]
pub struct NotJson;

/// Parses Meta's webhook payload for the account of `phone_number_id`. Changes for another phone
/// number id and shapes it does not know are counted as ignored, never an error.
pub fn parse_webhook(body: &[u8], phone_number_id: &str) -> Result<WebhookBatch, NotJson> {
    let mut batch = WebhookBatch::default();
    let parsed: payload::Lenient<payload::Webhook> =
        serde_json::from_slice(body).map_err(|_| NotJson)?;
    let Some(webhook) = parsed
        .known()
        .filter(|w| w.object == "whatsapp_business_account")
    else {
        batch.ignored += 1;
        return Ok(batch);
    };
    let changes = webhook
        .entry
        .into_iter()
        .filter_map(payload::Lenient::known)
        .flat_map(|e| e.changes);
    for change in changes {
        let Some(change) = change.known() else {
            batch.ignored += 1;
            continue;
        };
        let Some(value) = change.value else {
            batch.ignored += 1;
            continue;
        };
        let for_us = value
            .metadata
            .as_ref()
            .and_then(|m| m.phone_number_id.as_deref())
            == Some(phone_number_id);
        if change.field != "messages" || !for_us {
            batch.ignored += 1;
            continue;
        }
        let names: Vec<payload::Contact> = value
            .contacts
            .into_iter()
            .filter_map(payload::Lenient::known)
            .collect();
        for m in value.messages {
            match m.known().and_then(|m| inbound_message(m, &names)) {
                Some(msg) => batch.messages.push(msg),
                None => batch.ignored += 1,
            }
        }
        for s in value.statuses {
            match s.known().and_then(status_update) {
                Some(st) => batch.statuses.push(st),
                None => batch.ignored += 1,
            }
        }
    }
    Ok(batch)
}

fn is_media_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn inbound_message(m: payload::Message, names: &[payload::Contact]) -> Option<InboundMessage> {
    if !is_message_id(&m.id) || !is_wa_id(&m.from) {
        return None;
    }
    let kind = MessageKind::from_cloud_type(m.kind.as_deref().unwrap_or("unsupported"));
    let object = match kind {
        MessageKind::Image => m.image,
        MessageKind::Video => m.video,
        MessageKind::Document => m.document,
        MessageKind::Audio => m.audio.or(m.voice),
        MessageKind::Sticker => m.sticker,
        _ => None,
    };
    let media = object.as_ref().and_then(|o| {
        let id = o.id.as_deref().filter(|id| is_media_id(id))?;
        matches!(
            kind,
            MessageKind::Audio | MessageKind::Image | MessageKind::Sticker | MessageKind::Document
        )
        .then(|| InboundMedia {
            id: id.to_string(),
            mime_type: o.mime_type.clone().unwrap_or_default(),
            sha256: o.sha256.clone(),
            filename: crate::transport::media::clean_filename(o.filename.as_deref()),
        })
    });
    let caption = object
        .and_then(|o| o.caption)
        .filter(|c| !c.trim().is_empty());
    let text = match kind {
        MessageKind::Text => m.text.map(|t| t.body).filter(|b| !b.trim().is_empty())?,
        _ => caption.unwrap_or_else(|| format!("[{}]", kind.as_str())),
    };
    let contact_name = names
        .iter()
        .find(|c| c.wa_id == m.from)
        .map(|c| c.profile.name.chars().take(200).collect::<String>())
        .filter(|n| !n.trim().is_empty());
    Some(InboundMessage {
        id: m.id,
        from: m.from,
        kind,
        text,
        contact_name,
        media,
    })
}

fn status_update(s: payload::Status) -> Option<StatusUpdate> {
    if !is_message_id(&s.id) || !is_wa_id(&s.recipient_id) {
        return None;
    }
    let status = match s.status.as_str() {
        "sent" => DeliveryStatus::Sent,
        "delivered" => DeliveryStatus::Delivered,
        "read" => DeliveryStatus::Read,
        "failed" => DeliveryStatus::Failed,
        _ => return None,
    };
    let error = s
        .errors
        .into_iter()
        .next()
        .map(|e| match e.known().and_then(|e| e.code) {
            Some(code) => code_reason(code),
            None => "cloud_api reported a delivery failure without a code".to_string(),
        });
    Some(StatusUpdate {
        message_id: s.id,
        recipient: s.recipient_id,
        status,
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn signature_check() {
        let body = br#"{"object":"whatsapp_business_account"}"#;
        let good = sign(b"app-secret", body);
        assert!(signature_valid(b"app-secret", body, Some(&good)));
        assert!(!signature_valid(b"other-secret", body, Some(&good)));
        assert!(!signature_valid(b"app-secret", b"{}", Some(&good)));
        assert!(!signature_valid(b"app-secret", body, None));
        assert!(!signature_valid(b"app-secret", body, Some("sha256=zz")));
        assert!(!signature_valid(
            b"app-secret",
            body,
            Some(good.trim_start_matches("sha256="))
        ));
    }

    #[test]
    fn verify_token_is_compared_by_digest() {
        let stored = verify_token_digest("my-verify-token");
        assert_eq!(stored.len(), 64);
        assert!(verify_token_matches(&stored, "my-verify-token"));
        assert!(!verify_token_matches(&stored, "my-verify-token "));
    }

    #[test]
    fn error_classes() {
        let e = |code| GraphError::Api { status: 400, code };
        assert!(!e(131047).is_retryable());
        assert_eq!(
            e(131047).to_string(),
            "cloud_api error 131047: outside the 24-hour customer service window (only a template message may be sent)"
        );
        for code in [130429, 131056, 4, 80007] {
            assert!(e(code).is_retryable(), "{code}");
        }
        assert!(e(190).is_invalid_token() && !e(190).is_retryable());
        assert!(!e(131026).is_retryable());
        assert!(GraphError::Http { status: 503 }.is_retryable());
        assert!(!GraphError::Http { status: 404 }.is_retryable());
    }

    #[test]
    fn recipients_are_private_chats() {
        assert_eq!(
            recipient("491701234567@s.whatsapp.net").ok(),
            Some("491701234567")
        );
        assert!(recipient("1203630@g.us").is_err());
        assert!(recipient("abc@s.whatsapp.net").is_err());
    }

    #[test]
    fn parses_meta_payload_shapes() {
        let payload = json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
                "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}],
                "messages": [
                    {"from": "16505551234", "id": "wamid.A", "timestamp": "1749416383", "type": "text",
                     "text": {"body": "Does it come in another color?"}},
                    {"from": "16505551234", "id": "wamid.B", "timestamp": "1749416384", "type": "image",
                     "image": {"caption": "this one", "mime_type": "image/jpeg", "id": "1003383421387256"}},
                    {"from": "16505551234", "id": "wamid.C", "timestamp": "1749416385", "type": "reaction",
                     "reaction": {"message_id": "wamid.A", "emoji": "\u{1f44d}"}}
                ],
                "statuses": [
                    {"id": "wamid.OUT", "status": "failed", "timestamp": "1", "recipient_id": "16505551234",
                     "errors": [{"code": 131047, "title": "Re-engagement message"}]},
                    {"id": "wamid.OUT", "status": "deleted", "timestamp": "1", "recipient_id": "16505551234"}
                ]
            }}, {"field": "messages", "value": {"metadata": {"phone_number_id": "999"}, "messages": []}}]}]
        });
        let b = parse_webhook(payload.to_string().as_bytes(), "106540352242922").expect("JSON");
        assert_eq!(b.messages.len(), 3);
        assert_eq!(b.messages[0].text, "Does it come in another color?");
        assert_eq!(b.messages[0].contact_name.as_deref(), Some("Sheena Nelson"));
        assert_eq!(b.messages[0].jid(), "16505551234@s.whatsapp.net");
        assert_eq!(b.messages[1].kind, MessageKind::Image);
        assert_eq!(b.messages[1].text, "this one");
        assert_eq!(
            b.messages[1].media,
            Some(InboundMedia {
                id: "1003383421387256".into(),
                mime_type: "image/jpeg".into(),
                sha256: None,
                filename: None,
            })
        );
        assert_eq!(b.messages[0].media, None);
        assert_eq!(b.messages[2].kind, MessageKind::Reaction);
        assert_eq!(b.messages[2].text, "[reaction]");
        assert_eq!(b.statuses.len(), 1);
        assert_eq!(b.statuses[0].status, DeliveryStatus::Failed);
        assert!(b.statuses[0]
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("cloud_api error 131047")));
        // The unknown status and the other number's change.
        assert_eq!(b.ignored, 2);
        assert_eq!(
            parse_webhook(br#"{"object": "page"}"#, "1"),
            Ok(WebhookBatch {
                ignored: 1,
                ..Default::default()
            })
        );
    }

    #[test]
    fn media_messages_carry_their_graph_media() {
        let payload = json!({
            "object": "whatsapp_business_account",
            "entry": [{"changes": [{"field": "messages", "value": {
                "metadata": {"phone_number_id": "1"},
                "messages": [
                    {"from": "16505551234", "id": "wamid.V", "type": "audio",
                     "audio": {"id": "111", "mime_type": "audio/ogg; codecs=opus", "sha256": "h=", "voice": true}},
                    {"from": "16505551234", "id": "wamid.S", "type": "sticker",
                     "sticker": {"id": "222", "mime_type": "image/webp", "animated": false}},
                    {"from": "16505551234", "id": "wamid.D", "type": "document",
                     "document": {"id": "333", "mime_type": "application/pdf",
                                  "filename": "../Rechnung.pdf", "caption": "the invoice"}},
                    {"from": "16505551234", "id": "wamid.X", "type": "image",
                     "image": {"id": "../../me", "mime_type": "image/png"}}
                ]
            }}]}]
        });
        let b = parse_webhook(payload.to_string().as_bytes(), "1").expect("JSON");
        let media = |i: usize| b.messages[i].media.clone();
        assert_eq!(b.messages[0].kind, MessageKind::Audio);
        assert_eq!(b.messages[0].text, "[audio]");
        assert_eq!(
            media(0).map(|m| (m.id, m.mime_type)),
            Some(("111".into(), "audio/ogg; codecs=opus".into()))
        );
        assert_eq!(b.messages[1].kind, MessageKind::Sticker);
        assert_eq!(media(1).map(|m| m.id), Some("222".into()));
        assert_eq!(b.messages[2].text, "the invoice");
        assert_eq!(
            media(2).and_then(|m| m.filename),
            Some("Rechnung.pdf".into())
        );
        // A media id that is not one is never put into a Graph URL.
        assert_eq!(media(3), None);
    }

    #[test]
    fn unknown_shapes_are_ignored_and_only_non_json_is_refused() {
        assert_eq!(parse_webhook(b"{not json", "1"), Err(NotJson));
        assert_eq!(parse_webhook(b"[1, 2]", "1").map(|b| b.ignored), Ok(1));
        // A change whose value has the wrong type, a message of the wrong shape, a status with a
        // number for its id: each ignored, the rest parsed.
        let payload = json!({
            "object": "whatsapp_business_account",
            "entry": [{"changes": [
                {"field": "messages", "value": "nope"},
                {"field": "messages", "value": {
                    "metadata": {"phone_number_id": "1"},
                    "messages": [
                        {"from": "16505551234", "id": "wamid.OK", "type": "text", "text": {"body": "hi"}},
                        {"from": 16505551234_u64, "id": "wamid.NUM", "type": "text", "text": {"body": "x"}},
                        {"from": "not-digits", "id": "wamid.BAD", "type": "text", "text": {"body": "x"}}
                    ],
                    "statuses": [{"id": 7, "status": "read", "recipient_id": "16505551234"}]
                }}
            ]}, "not an entry"]
        });
        let b = parse_webhook(payload.to_string().as_bytes(), "1").expect("JSON");
        assert_eq!(b.messages.len(), 1);
        assert_eq!(b.messages[0].id, "wamid.OK");
        assert_eq!(b.ignored, 4);
    }
}
