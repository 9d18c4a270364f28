//! The boundary between the gateway and one account's WhatsApp Web connection. The gateway
//! starts a connection with a [`WebConnector`], drives it through [`WebConnection`], and hears
//! from it through its [`WebHandler`]; everything here is in wagate's vocabulary, so the gateway
//! (and its tests, with a fake connector) never touch whatsapp-rust's types.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use wagate_events::chat::{DeliveryStatus, MessageKind};

/// The session store a connection runs on (Signal sessions, keys, app state, the device):
/// whatsapp-rust's storage trait, implemented on wagate's databases by [`crate::store`] and in
/// memory by `wacore::store::InMemoryBackend`.
pub use wacore::store::traits::Backend as SessionBackend;

/// Why a call on a connection did not succeed. The reason is for logs, the AI log and the API:
/// never a key, a QR code or a message text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct WebError {
    pub reason: String,
    /// Worth trying again after a while (not connected yet, a transient outage); otherwise
    /// permanent (WhatsApp refused it).
    pub retryable: bool,
}

impl WebError {
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            retryable: false,
        }
    }
    pub fn retryable(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            retryable: true,
        }
    }
}

/// A message quoted by an inbound message (a reply).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Quoted {
    /// The quoted message's id (`stanzaId`), when WhatsApp gave it.
    pub id: Option<String>,
    /// Who wrote it (a JID without device part), when given.
    pub sender: Option<String>,
    /// Its text (or caption), when it had one.
    pub text: Option<String>,
}

/// A message that came in on the connection, mapped onto wagate's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebInbound {
    /// WhatsApp's message (stanza) id.
    pub id: String,
    /// The chat, as a JID without device part: `<digits>@s.whatsapp.net`, `<digits>@lid`,
    /// `<id>@g.us`, `<digits>@newsletter`, `status@broadcast` or `<id>@broadcast`.
    pub chat: String,
    /// Who sent it (JID without device part): the participant in a group, the chat's user
    /// otherwise, the account itself when `from_me`.
    pub sender: String,
    /// Typed by the account's owner (on the phone, or another linked device).
    pub from_me: bool,
    /// The sender's push name, when WhatsApp gave one.
    pub push_name: Option<String>,
    pub kind: MessageKind,
    /// The text: the body of a text, the caption of media, the emoji of a reaction, or
    /// `[<kind>]` when there is none.
    pub text: String,
    /// The message it replies to.
    pub quoted: Option<Quoted>,
    /// It mentions the account (an @-mention of the account's own number or LID).
    pub mentions_me: bool,
    /// It could not be decrypted: recorded with its kind, never answered.
    pub undecryptable: bool,
    /// The media of a voice note or other audio, an image, a sticker or a document: what
    /// WhatsApp declared of it, and where [`WebConnection::download`] fetches it.
    pub media: Option<WebMedia>,
}

/// Media an inbound message carries, as WhatsApp declared it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebMedia {
    /// `Audio`, `Image`, `Sticker` or `Document`.
    pub kind: MessageKind,
    /// The declared MIME type (empty when WhatsApp gave none).
    pub mime_type: String,
    /// The declared size of the plain file, in bytes.
    pub size: Option<u64>,
    /// The declared SHA-256 of the plain file.
    pub sha256: Option<Vec<u8>>,
    /// The file name (documents).
    pub filename: Option<String>,
    /// A voice note (push-to-talk), not an audio file.
    pub voice: bool,
    /// Where the encrypted file is and how it is opened: only the connection reads it.
    pub locator: MediaLocator,
}

/// Where a media file is on WhatsApp's CDN and the key that opens it. Opaque to the gateway
/// (a fake connection may put anything here); its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct MediaLocator {
    pub direct_path: Option<String>,
    pub static_url: Option<String>,
    pub media_key: Option<Vec<u8>>,
    pub file_enc_sha256: Option<Vec<u8>>,
}

impl std::fmt::Debug for MediaLocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaLocator")
            .field("direct_path", &self.direct_path.as_ref().map(|_| ".."))
            .field("static_url", &self.static_url.as_ref().map(|_| ".."))
            .field("media_key", &self.media_key.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// What happens to a connection, other than inbound messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebEvent {
    /// Not paired: a QR code to scan with the phone (WhatsApp > Linked devices), valid for
    /// `valid_for`; a new one follows when it expires.
    Qr { code: String, valid_for: Duration },
    /// Pairing by phone number: the 8-character code to enter on the phone.
    PairCode { code: String, valid_for: Duration },
    /// Pairing by phone number could not start (bad number, rate limit…).
    PairError { reason: String },
    /// The phone accepted the pairing; `jid` is the account's own number.
    Paired { jid: String },
    /// Connected and logged in.
    Connected,
    /// The connection dropped; the library reconnects by itself.
    Disconnected,
    /// The device was unlinked (from the phone, or WhatsApp removed it): the session is void and
    /// a new pairing is needed. No reconnect.
    LoggedOut { reason: String },
    /// WhatsApp banned the number for a while.
    TemporarilyBanned {
        reason: String,
        expires_in: Option<Duration>,
    },
    /// WhatsApp refuses this client version.
    ClientOutdated,
    /// Another connection with the same session replaced this one.
    StreamReplaced,
    /// Delivery or read receipts for messages the account sent.
    Receipt {
        chat: String,
        ids: Vec<String>,
        status: DeliveryStatus,
    },
}

/// Hears from one connection. Called from the connection's tasks; implementations must not
/// block for long (a slow `messages` holds up the connection's receive path, which is what makes
/// it durable).
#[async_trait]
pub trait WebHandler: Send + Sync + 'static {
    /// Inbound messages, in order. Return `Ok` only once they are committed: the connection
    /// then acknowledges them to WhatsApp. On `Err` they stay unacknowledged and WhatsApp
    /// delivers them again on the next connect (so the same id can arrive twice).
    async fn messages(&self, batch: Vec<WebInbound>) -> Result<(), String>;
    /// Everything else: pairing codes, connection state, receipts.
    async fn event(&self, event: WebEvent);
}

/// What a connection starts with.
pub struct ConnectOptions {
    /// The wagate account (for logs only).
    pub account: String,
    /// Where the session lives; an empty store means "pair first".
    pub backend: Arc<dyn SessionBackend>,
    /// Pair by phone number (digits, with country code) instead of a QR code.
    pub pair_phone: Option<String>,
    pub handler: Arc<dyn WebHandler>,
}

/// Starts connections.
#[async_trait]
pub trait WebConnector: Send + Sync + 'static {
    /// Starts a connection in the background: it pairs (QR or pair code) when the store holds no
    /// device, connects, and reconnects by itself with backoff until stopped or logged out. It
    /// reports through `options.handler`.
    async fn connect(&self, options: ConnectOptions) -> Result<Arc<dyn WebConnection>, WebError>;
}

/// One running connection.
#[async_trait]
pub trait WebConnection: Send + Sync + 'static {
    /// Sends a text to a chat JID; returns WhatsApp's message id.
    async fn send_text(&self, chat: &str, text: &str) -> Result<String, WebError>;
    /// Shows (`true`: composing) or clears (`false`: paused) the typing indicator.
    async fn typing(&self, chat: &str, composing: bool) -> Result<(), WebError>;
    /// Sends read receipts for `ids` received in `chat` from `sender` (the participant, in a
    /// group).
    async fn mark_read(&self, chat: &str, sender: &str, ids: &[String]) -> Result<(), WebError>;
    /// Downloads (and decrypts) the plain bytes of `media`, refused before the download when
    /// its declared size is over `max_bytes`. The caller checks the bytes.
    async fn download(&self, media: &WebMedia, max_bytes: usize) -> Result<Vec<u8>, WebError> {
        let _ = (media, max_bytes);
        Err(WebError::permanent("this connection cannot download media"))
    }
    /// Unlinks this device from the phone. The caller erases the session store afterwards.
    async fn logout(&self) -> Result<(), WebError>;
    /// Stops the connection for good (no reconnect); the session stays in the store.
    async fn stop(&self);
}
