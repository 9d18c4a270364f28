//! The ports the actors call: the chat streams, the effective config, the model, the transport,
//! and a commit notification for read models. The binary implements them; tests can too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wagate_events::chat::{Chat, ChatEvent, Control, TokenUsage};
use wagate_events::message_window::MessageFact;
use wagate_events::reason::{ModelErrorClass, ReplyReason};
use wagate_events::DomainError;

pub type Meta = HashMap<String, String>;

#[derive(Debug, thiserror::Error)]
pub enum StoreFailure {
    #[error("the stream changed concurrently")]
    Conflict,
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    #[error("event store error: {0}")]
    Other(String),
    /// The append was made under an account lease that is no longer current (another gateway
    /// took the account over): nothing was written (ADR 0026).
    #[error("this gateway no longer holds the account's lease")]
    Fenced,
}

/// What a caller of an actor gets back when a request fails.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ActorError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    /// The transport did not take the message (the reason names the class, never a secret).
    #[error("{0}")]
    Transport(SendError),
}

impl From<StoreFailure> for ActorError {
    fn from(e: StoreFailure) -> Self {
        match e {
            StoreFailure::Conflict => {
                ActorError::Unavailable("the chat kept changing concurrently".into())
            }
            StoreFailure::Unavailable(m) => ActorError::Unavailable(m),
            StoreFailure::Other(m) => ActorError::Internal(m),
            StoreFailure::Fenced => ActorError::Unavailable(
                "another gateway runs this account's replies now; retry".into(),
            ),
        }
    }
}

#[async_trait]
pub trait ChatStreams: Send + Sync + 'static {
    /// The chat's state and version (0 for a new stream), read from the store.
    async fn load(&self, stream_id: &str) -> Result<(Chat, usize), StoreFailure>;
    /// The state a chat actor starts with: as `load`, except that an implementation may answer
    /// "new stream" without reading when it knows of no event of the chat. A wrong guess costs
    /// only a conflict on the chat's first commit, after which the chat reloads with `load`.
    async fn start(&self, stream_id: &str) -> Result<(Chat, usize), StoreFailure> {
        self.load(stream_id).await
    }
    /// Appends after version `expected`; returns the global positions of the new events. With a
    /// `fence` (the epoch of the account's lease the append is made under), the append is refused
    /// as [`StoreFailure::Fenced`] in the same transaction when that epoch is no longer current.
    async fn commit(
        &self,
        stream_id: &str,
        expected: usize,
        events: Vec<ChatEvent>,
        meta: Meta,
        fence: Option<i64>,
    ) -> Result<Vec<i64>, StoreFailure>;
    /// What the stream recorded of `message_id` (received, or sent and its last delivery status),
    /// `None` when it never did. Asked only for ids that fell out of a chat's in-memory window, so
    /// an implementation must answer from an index, not by reading the stream.
    async fn recall(
        &self,
        stream_id: &str,
        message_id: &str,
    ) -> Result<Option<MessageFact>, StoreFailure>;
    /// The kept bytes of `account`'s media `sha256`: `(mime_type, bytes)`, `None` when they are
    /// not (or no longer) kept (ADR 0028). Default: none kept.
    async fn media(
        &self,
        _account: &str,
        _sha256: &str,
    ) -> Result<Option<(String, Vec<u8>)>, StoreFailure> {
        Ok(None)
    }
    /// The reply to message `message_id` of chat `jid`, whose media is `account`'s `sha256`,
    /// settled: that message no longer needs the bytes, which are deleted when no other message
    /// still waits for them and no retention keeps them (ADR 0028). Default: nothing kept,
    /// nothing to forget.
    async fn forget_media(
        &self,
        _account: &str,
        _jid: &str,
        _message_id: &str,
        _sha256: &str,
    ) -> Result<(), StoreFailure> {
        Ok(())
    }
    /// Offers the chat's state at `version` (committed) as a snapshot, so that the next `load`
    /// folds only the events after it. Best effort and off the caller's path: a snapshot that is
    /// not written costs only a longer fold. Default: no snapshots.
    fn snapshot(&self, _stream_id: &str, _version: usize, _chat: &Chat) {}
}

/// The effective config of a chat at reply time, with the key already decrypted.
#[derive(Debug, Clone)]
pub struct ReplyConfig {
    /// `Some(reason)` when the rules say no reply (disabled, blocked, chat kind, no key...).
    pub skip_reason: Option<ReplyReason>,
    pub echo_mode: bool,
    pub base_url: String,
    /// Whether `base_url` may reach the private networks the operator allowed; false for a URL an
    /// account token set (unless the operator lets tokens do so).
    pub private_networks: bool,
    pub api_key: Option<SecretString>,
    pub model: String,
    pub system_prompt: String,
    pub temperature: f64,
    pub max_tokens: u32,
    pub timeout: Duration,
    pub reply_delay: Duration,
    /// Retries of a retryable model failure (timeout, 429, 5xx) after the first attempt.
    pub max_retries: u32,
    /// The model asked when the primary one failed after its retries.
    pub fallback: Option<FallbackModel>,
    /// AI replies allowed per chat per hour (0: no cap).
    pub max_replies_per_hour: u32,
    /// Model tokens the account may use per UTC day (0: no budget), and how many it used today.
    pub daily_token_budget: u64,
    pub tokens_used_today: u64,
    /// History budget of the prompt in estimated tokens (0: only the 20-turn cap).
    pub max_history_tokens: u32,
    /// Turns older than this are left out of the prompt (`None`: no window).
    pub history_window: Option<Duration>,
    /// The model that transcribes audio messages (`None`: off, an audio message is skipped).
    pub transcription_model: Option<String>,
    /// Send images to the model as `image_url` parts (off: the caption alone).
    pub vision: bool,
    /// Write the model's Markdown in WhatsApp's markup (`format::format_for_whatsapp`).
    pub format_for_whatsapp: bool,
    /// Offer the model the handoff function; when it calls it, the chat is paused this long
    /// (`handoff_pause`) and `handoff_message` (else the model's words) is sent.
    pub handoff_tool: bool,
    pub handoff_message: Option<String>,
    pub handoff_pause: chrono::Duration,
}

/// The fallback model of a reply config.
#[derive(Debug, Clone)]
pub struct FallbackModel {
    pub base_url: String,
    /// As [`ReplyConfig::private_networks`], for this URL.
    pub private_networks: bool,
    pub api_key: Option<SecretString>,
    pub model: String,
}

pub trait ConfigSource: Send + Sync + 'static {
    /// `Err(reason)` when no config applies (the account was deleted, the key cannot be
    /// opened...): the reply is skipped with that reason.
    fn reply_config(&self, account: &str, jid: &str) -> Result<ReplyConfig, ReplyReason>;

    /// The conversation controls a chat's inbound messages and operator sends are decided with
    /// (human takeover, debounce). Off unless the implementation says otherwise.
    fn control(&self, _account: &str, _jid: &str) -> Control {
        Control::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptRole {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone)]
pub struct ModelCall {
    pub base_url: String,
    /// Whether the call may reach the private networks the operator allowed (false: public
    /// addresses only, whatever the name resolves to).
    pub private_networks: bool,
    pub api_key: Option<SecretString>,
    pub model: String,
    pub messages: Vec<(PromptRole, String)>,
    pub temperature: f64,
    pub max_tokens: u32,
    pub timeout: Duration,
    /// Attempts in all (the first plus the retries of retryable failures).
    pub max_attempts: u32,
    /// Offer the model the `handoff_to_human` function.
    pub handoff_tool: bool,
    /// Images sent with messages (`vision`): the index in `messages` -> a `data:` URI.
    pub images: std::collections::BTreeMap<usize, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelAnswer {
    pub text: String,
    pub model: String,
    pub usage: TokenUsage,
    pub latency_ms: u64,
    /// The outcome of each attempt (`ok`, or the sanitized failure), in order.
    pub attempts: Vec<String>,
    /// The model called the handoff function (`text` may then be empty).
    pub handoff: bool,
}

/// A model call that failed: a sanitized reason (never a body or a key) with its class and
/// HTTP status, and the outcome of each attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFailure {
    pub reason: String,
    pub class: ModelErrorClass,
    pub status: Option<u16>,
    pub attempts: Vec<String>,
}

/// A transcription of audio (`POST {base_url}/audio/transcriptions`, OpenAI's multipart shape).
#[derive(Debug, Clone)]
pub struct TranscribeCall {
    pub base_url: String,
    /// As [`ModelCall::private_networks`].
    pub private_networks: bool,
    pub api_key: Option<SecretString>,
    pub model: String,
    pub mime_type: String,
    pub bytes: Vec<u8>,
    pub timeout: Duration,
}

/// The transcript of a [`TranscribeCall`].
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub text: String,
    pub latency_ms: u64,
    /// The tokens the endpoint reports, when it does.
    pub usage: Option<TokenUsage>,
}

#[async_trait]
pub trait Model: Send + Sync + 'static {
    async fn complete(&self, call: ModelCall) -> Result<ModelAnswer, ModelFailure>;

    /// Transcribes audio. Default: no transcription endpoint.
    async fn transcribe(&self, _call: TranscribeCall) -> Result<Transcript, ModelFailure> {
        Err(ModelFailure {
            reason: "no transcription endpoint".into(),
            class: ModelErrorClass::Connect,
            status: None,
            attempts: vec![],
        })
    }
}

/// Why a transport did not send. The reason is for logs and the AI log (e.g. `cloud_api error
/// 131047: outside the 24-hour customer service window`): never a token or a message text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct SendError {
    pub reason: String,
    /// Worth trying again after a while (rate limits, a transient outage); otherwise permanent.
    pub retryable: bool,
}

impl SendError {
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

/// An account's connection to WhatsApp. The account's actor opens it when it starts and owns it
/// while it runs; the account's chats and reply workers send through it, outside the chat actors'
/// handlers.
#[async_trait]
pub trait Session: Send + Sync + 'static {
    /// Sends a text into `jid`; returns the transport's message id (which later status updates
    /// refer to).
    async fn send_text(&self, jid: &str, text: &str) -> Result<String, SendError>;
    /// Shows "typing…" in the chat; `reply_to` is the inbound message being answered (the Cloud
    /// API marks it read and shows the indicator on it).
    async fn typing(&self, jid: &str, reply_to: Option<&str>) -> Result<(), SendError>;
    /// The account actor stopped (account deleted, gateway stopping): release what the session
    /// holds open. Default: nothing to release.
    async fn close(&self) {}
    /// Whether a send reaches someone outside the gateway (WhatsApp). Then a reply is marked
    /// `AiReplySending` before the call, and a crash after the mark never sends it again (ADR
    /// 0025). The sandbox's sends reach no one: the recorded event is the delivery, so a reply it
    /// took but did not record is simply delivered again. Default: true.
    fn reaches_customers(&self) -> bool {
        true
    }
}

/// Opens the session of an account, for its account actor.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    async fn open(&self, account: &str) -> Arc<dyn Session>;
}

#[async_trait]
pub trait Notify: Send + Sync + 'static {
    /// Called after every commit (read models catch up).
    async fn committed(&self);
}

/// Whether this process runs an account's replies (ADR 0026).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// It does: its reply steps are committed under the lease's `epoch` (`None`: a single-process
    /// store, where no lease is needed).
    Here { epoch: Option<i64> },
    /// Another gateway sharing the store does (or none yet): this one records inbound messages
    /// and operator sends, and hands requested replies over.
    Elsewhere,
}

/// Which accounts' replies this process runs. Several gateways sharing one store each run the
/// accounts whose lease they hold; the others only record and hand over.
#[async_trait]
pub trait Ownership: Send + Sync + 'static {
    /// Who runs `account`'s replies, as this process knows now. A lease counts only while this
    /// process's clock says it is valid (with a margin), so a gateway paused past its lease does
    /// not send what the next owner will work on.
    fn owner(&self, account: &str) -> Owner;
    /// A reply was requested in `account`'s chat `jid` here, while another process (or none)
    /// runs the account: make the owner work on it.
    async fn hand_over(&self, account: &str, jid: &str) {
        let _ = (account, jid);
    }
}

/// One process runs everything (the embedded store, and tests).
pub struct SoleOwner;

#[async_trait]
impl Ownership for SoleOwner {
    fn owner(&self, _account: &str) -> Owner {
        Owner::Here { epoch: None }
    }
}

/// Bounds on concurrent model calls: across the process, and per account (each account actor
/// owns its account's slots).
pub struct Limits {
    global: Arc<Semaphore>,
    per_account: usize,
}

impl Limits {
    pub fn new(global: usize, per_account: usize) -> Self {
        Self {
            global: Arc::new(Semaphore::new(global.max(1))),
            per_account: per_account.max(1),
        }
    }

    /// A new set of one account's model-call slots.
    pub fn account_slots(&self) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(self.per_account))
    }

    /// Waits for one of the account's slots and a global one (in that order).
    pub async fn acquire(
        &self,
        account_slots: &Arc<Semaphore>,
    ) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let a = account_slots.clone().acquire_owned().await.ok()?;
        let g = self.global.clone().acquire_owned().await.ok()?;
        Some((a, g))
    }
}

/// Everything the actors need from the outside.
pub struct Ports {
    pub streams: Arc<dyn ChatStreams>,
    pub config: Arc<dyn ConfigSource>,
    pub model: Arc<dyn Model>,
    /// Opens each account's session (see [`Session`]).
    pub transport: Arc<dyn Transport>,
    pub notify: Arc<dyn Notify>,
    /// Which accounts' replies run here.
    pub ownership: Arc<dyn Ownership>,
    pub limits: Limits,
    /// A chat actor with nothing to do for this long stops (its state is reloaded on demand).
    pub chat_idle: Duration,
    /// How long a caller waits for an actor's answer.
    pub call_timeout: Duration,
    /// How often a reply's send is tried when the transport says "retry later" (rate limits).
    pub send_attempts: u32,
    /// The wait before the second attempt; it doubles for each further one.
    pub send_backoff: Duration,
}
