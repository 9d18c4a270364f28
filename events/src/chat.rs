//! A chat's message stream (`chat` / `<account>/<jid>`): inbound and outbound messages and the
//! life of every AI reply in it. One stream per chat keeps a chat's messages and replies in one
//! order and lets a send and its "sent" mark commit together.
//!
//! Reply life: `AiReplyRequested` (committed with the inbound message that triggers it) ->
//! `AiReplySkipped` | (`AiReplyGenerated` -> [`TypingIndicated`] -> `MessageSent` + `AiReplySent`)
//! | `AiReplyFailed`. A reply that has not reached a terminal event when the process dies is
//! closed as `AiReplyFailed` with reason `interrupted` at the next start: never sent twice.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::hours::BusinessHours;
use crate::matcher::Matcher;
use crate::message_window::{MessageFact, MessageWindow};
use crate::reason::{HandoffBy, ReplyReason, SupersededAt, TriggerKind};
use crate::DomainError;

/// Longest message text accepted (WhatsApp's own limit is 65,536 characters).
pub const MAX_TEXT: usize = 65_536;
/// Turns kept for the prompt.
pub const HISTORY_LEN: usize = 20;
/// The former loop guard's numbers (at most this many AI replies per chat within
/// [`LOOP_WINDOW_MINUTES`]), kept for the reasons of replies recorded with it and for the bounded
/// list of recent AI sends in the chat's state. The guard now looks for bot loops ([`LoopGuard`]).
pub const LOOP_CAP: usize = 8;
pub const LOOP_WINDOW_MINUTES: i64 = 10;
/// An echo shorter than this is not a loop ("ok", "thanks" come back from people too).
const ECHO_MIN_CHARS: usize = 12;
/// The reason of a reply closed by a restart.
pub const INTERRUPTED: &str = "interrupted";
/// Entries kept for the hourly reply cap (the largest accepted `max_replies_per_chat_per_hour`
/// plus one).
const HOURLY_KEEP: usize = 1001;

pub fn stream_id(account_id: &str, jid: &str) -> String {
    format!("{account_id}/{jid}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Customer,
    Ai,
    Operator,
    Test,
}

/// What an inbound message carries. Text, and voice notes, images, stickers and documents with
/// their media, are answered by the AI (see [`answerable`]); the other kinds are recorded (with
/// their caption or a `[kind]` marker as text) and their reply is skipped with a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    #[default]
    Text,
    Image,
    Audio,
    Video,
    Document,
    Sticker,
    Reaction,
    Location,
    Contacts,
    Interactive,
    Button,
    /// Anything else (Meta's `unsupported`, new types).
    Other,
}

impl MessageKind {
    /// Meta's `type` of a webhook message (unknown types are [`MessageKind::Other`]).
    pub fn from_cloud_type(t: &str) -> Self {
        match t {
            "text" => Self::Text,
            "image" => Self::Image,
            "audio" | "voice" => Self::Audio,
            "video" => Self::Video,
            "document" => Self::Document,
            "sticker" => Self::Sticker,
            "reaction" => Self::Reaction,
            "location" => Self::Location,
            "contacts" => Self::Contacts,
            "interactive" => Self::Interactive,
            "button" => Self::Button,
            _ => Self::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Image => "image",
            Self::Audio => "audio",
            Self::Video => "video",
            Self::Document => "document",
            Self::Sticker => "sticker",
            Self::Reaction => "reaction",
            Self::Location => "location",
            Self::Contacts => "contacts",
            Self::Interactive => "interactive",
            Self::Button => "button",
            Self::Other => "other",
        }
    }
}

/// The media of an inbound message (an image, voice note, sticker, document) as the events
/// record it: its MIME type, size and content hash, never its bytes (ADR 0028).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaInfo {
    /// The MIME type, as declared and checked against the bytes.
    pub mime_type: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
    /// The file name the sender gave (documents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Why the bytes could not be had at the edge (a download that failed or timed out, a file
    /// over `WAGATE_MEDIA_MAX_BYTES`, bytes that are not the declared type): the message is
    /// recorded all the same, `size` and `sha256` are then what was declared (`0` and `""` when
    /// nothing was), and a reply to it ends with this reason (ADR 0028).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

impl MediaInfo {
    /// Whether the bytes were had and checked (not [`MediaInfo::unavailable`]).
    pub fn available(&self) -> bool {
        self.unavailable.is_none()
    }
}

/// Delivery progress of an outbound message as the transport reports it. Ordered: a status
/// update that does not move forward is ignored (webhooks arrive late, twice, out of order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Sent,
    Delivered,
    Read,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
        }
    }
}

/// Why the AI stepped back in a chat (human takeover).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseCause {
    /// An operator sent a message through the API or the dashboard.
    OperatorSend,
    /// A `from_me` message the gateway did not send (the owner typed on the phone).
    OwnerMessage,
    /// The customer's message matched `handoff_keywords`.
    HandoffKeyword,
    /// The model called the `handoff_to_human` tool.
    HandoffTool,
}

impl PauseCause {
    pub fn describe(self) -> &'static str {
        match self {
            Self::OperatorSend => "an operator answered",
            Self::OwnerMessage => "the account owner answered from the phone",
            Self::HandoffKeyword => "the customer asked for a human",
            Self::HandoffTool => "the model handed the chat to a human",
        }
    }
}

/// One model attempt of a reply, as recorded in its generated / failed event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelAttempt {
    /// The model asked.
    pub model: String,
    /// Whether this was the fallback model.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fallback: bool,
    /// `ok`, or the sanitized failure (class and HTTP status, never a body or a key).
    pub outcome: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ChatEvent {
    MessageReceived {
        message_id: String,
        from: String,
        text: String,
        from_me: bool,
        at: DateTime<Utc>,
        /// Absent in events written before kinds existed: those were all text.
        #[serde(default)]
        kind: MessageKind,
        /// The sender's profile name as the transport reported it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        contact_name: Option<String>,
        /// The message's media (kind, MIME type, size, hash; never the bytes), when it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media: Option<MediaInfo>,
    },
    /// A reply is owed to `trigger_message_id`; the rules are evaluated when it is worked on.
    AiReplyRequested {
        reply_id: String,
        trigger_message_id: String,
        /// Burst debounce: the reply is not worked on before this time (a newer customer message
        /// supersedes it meanwhile). Absent: at once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        not_before: Option<DateTime<Utc>>,
        /// `trigger: keywords`: the AI stays in the conversation until this time (the message
        /// matched a keyword, or came within the window).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        engaged_until: Option<DateTime<Utc>>,
    },
    AiReplySkipped {
        reply_id: String,
        /// Written as `{"code": ..}` with its details; events written before codes existed hold
        /// the text, read by [`crate::reason::compat`].
        #[serde(deserialize_with = "crate::reason::compat")]
        reason: ReplyReason,
    },
    AiReplyGenerated {
        reply_id: String,
        text: String,
        /// The model that answered (the fallback's name when it did).
        model: String,
        usage: TokenUsage,
        latency_ms: u64,
        /// Every model attempt, in order (absent in events written before retries were recorded).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attempts: Vec<ModelAttempt>,
        /// Whether the fallback model answered.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        fallback: bool,
        /// A notice (handoff or away message) rather than an answer: sent even though the chat
        /// is paused or a newer message came.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        notice: Option<Notice>,
    },
    TypingIndicated {
        reply_id: Option<String>,
        at: DateTime<Utc>,
    },
    /// The reply is about to be handed to the transport (committed before the call): after a
    /// crash, a reply with this mark may have reached the customer and is closed as
    /// `interrupted`; one without it is worked on again.
    AiReplySending { reply_id: String, at: DateTime<Utc> },
    MessageSent {
        message_id: String,
        text: String,
        source: Source,
        ai_reply_id: Option<String>,
        at: DateTime<Utc>,
    },
    AiReplySent {
        reply_id: String,
        /// The (first) message the reply was sent as.
        message_id: String,
        /// The further messages of a reply sent in parts (`max_message_chars`), in order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        more_message_ids: Vec<String>,
    },
    AiReplyFailed {
        reply_id: String,
        #[serde(deserialize_with = "crate::reason::compat")]
        reason: ReplyReason,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attempts: Vec<ModelAttempt>,
    },
    /// Human takeover: the AI does not answer in this chat until `until`.
    AiPaused {
        until: DateTime<Utc>,
        cause: PauseCause,
        /// The message that caused the pause.
        message_id: String,
        at: DateTime<Utc>,
    },
    /// The pause was ended before its time (`POST .../ai/resume`).
    AiResumed { at: DateTime<Utc> },
    /// A voice note or audio message was transcribed (for the reply to it): the transcript is
    /// what the model hears as the customer's turn.
    MessageTranscribed {
        message_id: String,
        text: String,
        /// The transcription model.
        model: String,
        latency_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<TokenUsage>,
    },
    /// The transport reported progress of an outbound message (`message_id` is the id the
    /// transport returned when it was sent, e.g. Meta's `wamid`).
    MessageStatusUpdated {
        message_id: String,
        status: DeliveryStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for ChatEvent {
    fn event_type(&self) -> String {
        match self {
            Self::MessageReceived { .. } => "MessageReceived",
            Self::AiReplyRequested { .. } => "AiReplyRequested",
            Self::AiReplySkipped { .. } => "AiReplySkipped",
            Self::AiReplyGenerated { .. } => "AiReplyGenerated",
            Self::TypingIndicated { .. } => "TypingIndicated",
            Self::MessageSent { .. } => "MessageSent",
            Self::AiReplySent { .. } => "AiReplySent",
            Self::AiReplySending { .. } => "AiReplySending",
            Self::AiReplyFailed { .. } => "AiReplyFailed",
            Self::MessageStatusUpdated { .. } => "MessageStatusUpdated",
            Self::AiPaused { .. } => "AiPaused",
            Self::AiResumed { .. } => "AiResumed",
            Self::MessageTranscribed { .. } => "MessageTranscribed",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

/// A reply that is a notice to the customer rather than an answer to the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notice {
    /// `handoff_message`: the chat was handed to a human.
    Handoff { by: HandoffBy },
    /// `away_message`: sent once in the closed period that ends at `opens_at`.
    Away { opens_at: DateTime<Utc> },
}

/// Where a reply stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReplyState {
    Requested {
        trigger: String,
        #[serde(default)]
        not_before: Option<DateTime<Utc>>,
    },
    Generated {
        trigger: String,
        text: String,
        /// A notice: sent whatever came since (paused, superseded, loop guard).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        notice: bool,
        /// Handed to the transport (`AiReplySending`): never handed over again.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        sending: bool,
    },
}

/// One turn of the conversation, for the prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// true: the customer (user role); false: the account (assistant role).
    pub inbound: bool,
    pub text: String,
    pub message_id: String,
    /// When it was received or sent (`None` only in state folded before times were kept).
    #[serde(default)]
    pub at: Option<DateTime<Utc>>,
    /// An AI reply (not an operator's or a test's message): what the loop guard watches.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ai: bool,
    /// A customer's voice note or image: its kind and media (`text` is then its caption, or
    /// the transcript once [`ChatEvent::MessageTranscribed`] recorded one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<TurnMedia>,
}

/// The media of a turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnMedia {
    pub kind: MessageKind,
    pub info: MediaInfo,
    /// `text` is the transcript of this audio.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transcribed: bool,
}

impl Turn {
    /// An audio turn whose transcript is not recorded yet.
    pub fn needs_transcript(&self) -> bool {
        self.media
            .as_ref()
            .is_some_and(|m| m.kind == MessageKind::Audio && !m.transcribed)
    }
}

/// Whether a customer message of `kind` is answered: text, and voice notes, audio, images,
/// stickers and documents that came with their media (the AI hears the transcript, sees the
/// image, reads a document's caption and file name). Media whose bytes could not be had is
/// answered too: its reply ends with the reason ([`MediaInfo::unavailable`]).
pub fn answerable(kind: MessageKind, media: Option<&MediaInfo>) -> bool {
    kind == MessageKind::Text
        || (media.is_some()
            && matches!(
                kind,
                MessageKind::Audio
                    | MessageKind::Image
                    | MessageKind::Sticker
                    | MessageKind::Document
            ))
}

/// Whether the bytes of media of `kind` are kept for its reply: a voice note's are transcribed,
/// an image's or sticker's shown; a document reaches the model as its caption and file name.
pub fn keeps_bytes(kind: MessageKind) -> bool {
    matches!(
        kind,
        MessageKind::Audio | MessageKind::Image | MessageKind::Sticker
    )
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Chat {
    /// The newest message ids with what is known of each (received, or sent and its delivery
    /// status); older ids are asked of the store (see [`MessageWindow`]).
    pub message_ids: MessageWindow,
    /// The last [`HISTORY_LEN`] text turns.
    pub history: VecDeque<Turn>,
    /// Replies without a terminal event, by reply id.
    pub open_replies: BTreeMap<String, ReplyState>,
    /// Send times of recent AI replies (loop guard).
    pub recent_ai_sends: VecDeque<DateTime<Utc>>,
    /// The newest inbound customer text message id (a pending reply to an older one is
    /// superseded).
    pub last_customer_message: Option<String>,
    /// Human takeover: the AI does not answer before this time.
    #[serde(default)]
    pub paused_until: Option<DateTime<Utc>>,
    /// Send times of AI replies within the last hour of the newest one (hourly cap).
    #[serde(default)]
    pub hourly_ai_sends: VecDeque<DateTime<Utc>>,
    /// `trigger: keywords`: the AI answers every message until this time.
    #[serde(default)]
    pub engaged_until: Option<DateTime<Utc>>,
    /// The opening time of the closed period whose away message was sent.
    #[serde(default)]
    pub away_sent_for: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChatCommand {
    /// An inbound message. A known `message_id` is a duplicate: no events.
    Receive {
        message_id: String,
        from: String,
        text: String,
        from_me: bool,
        /// Whether this message may get an AI reply at all (not from the account itself, not a
        /// status broadcast); the caller decides by JID and flags.
        reply_candidate: bool,
        reply_id: String,
        at: DateTime<Utc>,
        kind: MessageKind,
        contact_name: Option<String>,
        /// The message mentions the account or replies to one of its messages (groups).
        mentioned: bool,
        /// The effective conversation controls at `at`.
        control: Control,
        /// The message's media, when it has one.
        media: Option<MediaInfo>,
    },
    /// A message sent as the account by an operator or the test route.
    Send {
        message_id: String,
        text: String,
        source: Source,
        at: DateTime<Utc>,
        /// How long an operator send pauses the AI (zero: never).
        takeover: Duration,
    },
    /// Ends a human-takeover pause early; a no-op when the chat is not paused.
    Resume { at: DateTime<Utc> },
    SkipReply {
        reply_id: String,
        reason: ReplyReason,
    },
    /// Records the transcript of the audio message `message_id`.
    RecordTranscript {
        message_id: String,
        text: String,
        model: String,
        latency_ms: u64,
        usage: Option<TokenUsage>,
    },
    RecordGenerated {
        reply_id: String,
        text: String,
        model: String,
        usage: TokenUsage,
        latency_ms: u64,
        attempts: Vec<ModelAttempt>,
        fallback: bool,
        /// The model called the handoff tool: the chat is paused for `pause` from `at`, and the
        /// text (the handoff message, or the model's words) is sent as a notice (skipped when
        /// empty).
        handoff: Option<(Duration, DateTime<Utc>)>,
    },
    Typing {
        reply_id: Option<String>,
        at: DateTime<Utc>,
    },
    /// Decides whether a generated reply is sent now: the sent events under `message_id`, or why
    /// not (superseded, paused, loop guard, text erased). The chat asks this before the transport
    /// is called, with a provisional id, and commits it as it is when the answer is "not sent".
    SendReply {
        reply_id: String,
        message_id: String,
        at: DateTime<Utc>,
        /// The loop guard's settings at the time of the decision.
        loop_guard: LoopGuard,
    },
    /// The transport accepted a generated reply as `message_id`: recorded whatever happened in the
    /// chat since the send was decided (a reply the customer has is never recorded as skipped).
    RecordSent {
        reply_id: String,
        /// The messages it was sent as, in order (one unless it was split); at least one.
        parts: Vec<SentPart>,
    },
    FailReply {
        reply_id: String,
        reason: ReplyReason,
        attempts: Vec<ModelAttempt>,
    },
    /// Marks a generated reply as being handed to the transport (before the call); a no-op when
    /// it is already marked.
    StartSend { reply_id: String, at: DateTime<Utc> },
    /// Start-up recovery: a reply that may have been handed to the transport (`AiReplySending`)
    /// fails as `interrupted`; a request a newer customer message superseded is skipped; every
    /// other open reply stays open to be worked on again (asked of the model, or delivered).
    CloseInterrupted {
        /// Replies this process is working on (a worker has them): left as they are.
        keep: Vec<String>,
    },
    /// A delivery status for an outbound message; unknown ids and non-advancing statuses are
    /// no-ops.
    UpdateStatus {
        message_id: String,
        status: DeliveryStatus,
        error: Option<String>,
        at: DateTime<Utc>,
    },
}

/// What the loop guard counts as another bot (the `loop_guard_*` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopGuard {
    /// A message within this many seconds of our reply is a quick answer (0: off).
    pub quick_seconds: u32,
    /// This many quick answers in a row are a loop.
    pub quick_replies: u32,
    /// The same message this many times in a row is a loop (0 or 1: off).
    pub repeats: u32,
}

impl Default for LoopGuard {
    /// The settings table's built-in defaults.
    fn default() -> Self {
        use crate::settings::{default_of, AiField};
        Self {
            quick_seconds: default_of(AiField::LoopGuardQuickSeconds).unwrap_or(2),
            quick_replies: default_of(AiField::LoopGuardQuickReplies).unwrap_or(5),
            repeats: default_of(AiField::LoopGuardRepeats).unwrap_or(4),
        }
    }
}

/// The conversation controls a command is decided with (from the effective config).
#[derive(Debug, Clone, Default)]
pub struct Control {
    /// How long a human answer pauses the AI (zero: never).
    pub takeover: Duration,
    /// Burst debounce window (zero: off).
    pub debounce: Duration,
    /// What counts as another bot.
    pub loop_guard: LoopGuard,
    /// When the AI speaks (triggers, handoff, business hours); shared, built once per config.
    pub speak: Arc<Speak>,
    /// `max_message_chars`: a longer reply is sent in parts (0: one message).
    pub max_message_chars: u32,
}

/// Controls are equal when their values are and they share one [`Speak`] (which holds compiled
/// patterns, compared by identity).
impl PartialEq for Control {
    fn eq(&self, other: &Self) -> bool {
        self.takeover == other.takeover
            && self.debounce == other.debounce
            && self.loop_guard == other.loop_guard
            && self.max_message_chars == other.max_message_chars
            && Arc::ptr_eq(&self.speak, &other.speak)
    }
}

/// When the AI speaks to a customer message (issue 24): a handoff word hands the chat to a
/// human, business hours keep it quiet (or send an away message), a trigger decides which
/// messages start a conversation. Off by default.
#[derive(Debug, Clone, Default)]
pub struct Speak {
    pub handoff: Option<Handoff>,
    pub hours: Option<Hours>,
    pub trigger: Trigger,
}

/// `handoff_keywords`, `handoff_message`, and how long a handoff pauses the AI.
#[derive(Debug, Clone)]
pub struct Handoff {
    pub keywords: Matcher,
    /// Sent to the customer (none: the reply is skipped as `handoff_requested`).
    pub message: Option<String>,
    pub pause: Duration,
}

/// `business_hours` and `outside_hours`.
#[derive(Debug, Clone)]
pub struct Hours {
    pub schedule: BusinessHours,
    pub outside: Outside,
}

/// What a message outside business hours gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outside {
    /// An answer, as inside.
    Reply,
    /// Nothing (skipped as `outside_business_hours`).
    Silent,
    /// This text, once per closed period.
    Away(String),
}

/// `trigger`: which messages the AI answers.
#[derive(Debug, Clone, Default)]
pub enum Trigger {
    #[default]
    Always,
    /// Messages matching a keyword, and every message for `window` after an answered one.
    Keywords { keywords: Matcher, window: Duration },
    /// In groups, messages that mention the account or reply to it.
    Mention,
}

/// What [`Chat::speak`] decided for a customer text message.
enum Spoken {
    /// Answer it (`engaged_until`: the keyword trigger's window).
    Answer {
        engaged_until: Option<DateTime<Utc>>,
    },
    /// Do not answer, for this reason.
    Skip(ReplyReason),
    /// Send this notice instead of an answer.
    Notice(Notice, String),
}

/// The events of a sent AI reply: the outbound message and the reply's sent mark.
fn sent_reply_events(
    reply_id: String,
    message_id: String,
    text: String,
    at: DateTime<Utc>,
) -> Vec<ChatEvent> {
    let part = SentPart {
        message_id,
        text,
        typed_at: None,
        at,
    };
    sent_parts_events(reply_id, vec![part])
}

/// The events of an AI reply sent as `parts` (one, or several with `max_message_chars`): each
/// part's typing indicator and outbound message, then the reply's sent mark with every id.
fn sent_parts_events(reply_id: String, parts: Vec<SentPart>) -> Vec<ChatEvent> {
    let mut events = Vec::with_capacity(parts.len() * 2 + 1);
    let mut ids = Vec::with_capacity(parts.len());
    for part in parts {
        if let Some(at) = part.typed_at {
            events.push(ChatEvent::TypingIndicated {
                reply_id: Some(reply_id.clone()),
                at,
            });
        }
        ids.push(part.message_id.clone());
        events.push(ChatEvent::MessageSent {
            message_id: part.message_id,
            text: part.text,
            source: Source::Ai,
            ai_reply_id: Some(reply_id.clone()),
            at: part.at,
        });
    }
    let mut ids = ids.into_iter();
    events.push(ChatEvent::AiReplySent {
        reply_id,
        message_id: ids.next().unwrap_or_default(),
        more_message_ids: ids.collect(),
    });
    events
}

/// One message of a sent AI reply: what the transport took, when, and when its typing indicator
/// showed (`None`: not shown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentPart {
    pub message_id: String,
    pub text: String,
    pub typed_at: Option<DateTime<Utc>>,
    pub at: DateTime<Utc>,
}

/// The generated event of a notice: a fixed text, no model.
fn notice_event(reply_id: String, notice: Notice, text: String) -> ChatEvent {
    let model = match notice {
        Notice::Handoff { .. } => "handoff",
        Notice::Away { .. } => "away",
    };
    ChatEvent::AiReplyGenerated {
        reply_id,
        text,
        model: model.to_string(),
        usage: TokenUsage::default(),
        latency_ms: 0,
        attempts: vec![],
        fallback: false,
        notice: Some(notice),
    }
}

/// A message's text as the loop guard compares it: lower case, words separated by one space.
fn normalized(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn check_text(text: &str) -> Result<(), DomainError> {
    if text.trim().is_empty() {
        return Err(DomainError::invalid("text", "must not be empty"));
    }
    if text.chars().count() > MAX_TEXT {
        return Err(DomainError::invalid(
            "text",
            format!("longer than {MAX_TEXT} characters"),
        ));
    }
    Ok(())
}

/// What `events` (events of one stream, oldest first) record of `message_id`: received, or sent
/// with the last delivery status reported (`None`: nothing). The answer a store gives for an id
/// that fell out of a chat's [`MessageWindow`].
pub fn fact_of<'a>(
    message_id: &str,
    events: impl IntoIterator<Item = &'a ChatEvent>,
) -> Option<MessageFact> {
    let mut window = MessageWindow::default();
    for e in events {
        match e {
            ChatEvent::MessageReceived { message_id: id, .. } if id == message_id => {
                window.received(id.clone());
            }
            ChatEvent::MessageSent { message_id: id, .. } if id == message_id => {
                window.sent(id.clone());
            }
            ChatEvent::MessageStatusUpdated {
                message_id: id,
                status,
                ..
            } if id == message_id => window.status(id, *status),
            _ => {}
        }
    }
    window.get(message_id)
}

impl Chat {
    /// The shape of a serialized `Chat` as snapshots store it. Bump it with any change to the
    /// fields of `Chat` (or of what they hold) or to `apply`: snapshots of another format are
    /// ignored, and the chat is folded from its events. The test
    /// `snapshot_format_pins_the_folded_state` fails until it is bumped.
    pub const SNAPSHOT_FORMAT: i32 = 5;

    /// Whether the other side looks like another bot (`guard`), judged on the chat's last turns
    /// (only AI replies count as ours: an operator's conversation is never a loop):
    /// our own reply coming back as a message; the same message `repeats` times in a row; or each
    /// of our last `quick_replies` replies answered within `quick_seconds`. People asking many
    /// questions are not stopped here, however many (`max_replies_per_chat_per_hour` caps volume).
    pub fn loop_guard(&self, guard: &LoopGuard) -> Result<(), ReplyReason> {
        use crate::reason::LoopPattern;
        let turns: Vec<&Turn> = self.history.iter().collect();
        let Some(newest_at) = turns.iter().rposition(|t| t.inbound) else {
            return Ok(());
        };
        let newest = normalized(&turns[newest_at].text);
        let ours_before = turns[..newest_at].iter().rev().find(|t| !t.inbound);
        let ours_before = ours_before.filter(|t| t.ai);
        if ours_before.is_some_and(|ours| {
            newest.chars().count() >= ECHO_MIN_CHARS && normalized(&ours.text) == newest
        }) {
            return Err(ReplyReason::BotLoop {
                pattern: LoopPattern::Echo,
                count: 1,
                seconds: None,
            });
        }
        if guard.repeats >= 2 {
            let same = turns
                .iter()
                .rev()
                .filter(|t| t.inbound)
                .take_while(|t| normalized(&t.text) == newest)
                .count();
            if same >= guard.repeats as usize {
                return Err(ReplyReason::BotLoop {
                    pattern: LoopPattern::Repeats,
                    count: u32::try_from(same).unwrap_or(u32::MAX),
                    seconds: None,
                });
            }
        }
        if guard.quick_seconds > 0 {
            let limit = Duration::seconds(i64::from(guard.quick_seconds));
            let mut quick = 0u32;
            let mut inbound = newest_at;
            // Walk back over exchanges: a message right after one of our replies, soon after it.
            while let Some(ours) = inbound.checked_sub(1).map(|i| turns[i]) {
                let answered_quickly = match (ours.ai, ours.at, turns[inbound].at) {
                    (true, Some(sent), Some(came)) => came >= sent && came - sent <= limit,
                    _ => false,
                };
                if !answered_quickly {
                    break;
                }
                quick += 1;
                if quick >= guard.quick_replies {
                    return Err(ReplyReason::BotLoop {
                        pattern: LoopPattern::QuickReplies,
                        count: quick,
                        seconds: Some(guard.quick_seconds),
                    });
                }
                match turns[..inbound - 1].iter().rposition(|t| t.inbound) {
                    Some(previous) => inbound = previous,
                    None => break,
                }
            }
        }
        Ok(())
    }

    /// Whether, and how, the AI speaks to the customer text `text` received at `at` (the chat
    /// is not paused by a handoff here; the caller pauses it).
    fn speak(&self, speak: &Speak, text: &str, mentioned: bool, at: DateTime<Utc>) -> Spoken {
        // A human has the chat: no handoff, no away message, no trigger — the reply is skipped
        // as paused when it is worked on.
        if self.paused_at(at).is_some() {
            return Spoken::Answer {
                engaged_until: None,
            };
        }
        if let Some(h) = &speak.handoff {
            if h.keywords.matches(text) {
                return match &h.message {
                    Some(m) => Spoken::Notice(
                        Notice::Handoff {
                            by: HandoffBy::Keyword,
                        },
                        m.clone(),
                    ),
                    None => Spoken::Skip(ReplyReason::HandoffRequested {
                        by: HandoffBy::Keyword,
                    }),
                };
            }
        }
        if let Some(hours) = &speak.hours {
            if let Some(opens_at) = hours.schedule.next_open(at) {
                match &hours.outside {
                    Outside::Reply => {}
                    Outside::Away(m) if self.away_sent_for != Some(opens_at) => {
                        return Spoken::Notice(Notice::Away { opens_at }, m.clone());
                    }
                    Outside::Away(_) | Outside::Silent => {
                        return Spoken::Skip(ReplyReason::OutsideBusinessHours {
                            opens_at: Some(opens_at),
                        });
                    }
                }
            }
        }
        match &speak.trigger {
            Trigger::Always => Spoken::Answer {
                engaged_until: None,
            },
            Trigger::Mention if mentioned => Spoken::Answer {
                engaged_until: None,
            },
            Trigger::Mention => Spoken::Skip(ReplyReason::NoTriggerMatch {
                trigger: TriggerKind::Mention,
            }),
            Trigger::Keywords { keywords, window } => {
                let engaged = self.engaged_until.is_some_and(|until| at < until);
                if engaged || keywords.matches(text) {
                    Spoken::Answer {
                        engaged_until: (*window > Duration::zero()).then(|| at + *window),
                    }
                } else {
                    Spoken::Skip(ReplyReason::NoTriggerMatch {
                        trigger: TriggerKind::Keywords,
                    })
                }
            }
        }
    }

    /// Whether an open reply is a notice (handoff or away message).
    pub fn is_notice(&self, reply_id: &str) -> bool {
        matches!(
            self.open_replies.get(reply_id),
            Some(ReplyState::Generated { notice: true, .. })
        )
    }

    /// The trigger of an open reply.
    pub fn trigger_of(&self, reply_id: &str) -> Option<&str> {
        match self.open_replies.get(reply_id)? {
            ReplyState::Requested { trigger, .. } | ReplyState::Generated { trigger, .. } => {
                Some(trigger)
            }
        }
    }

    /// The debounce time of an open, not yet generated reply.
    pub fn not_before_of(&self, reply_id: &str) -> Option<DateTime<Utc>> {
        match self.open_replies.get(reply_id)? {
            ReplyState::Requested { not_before, .. } => *not_before,
            ReplyState::Generated { .. } => None,
        }
    }

    /// Until when the AI is paused at `now` (human takeover), if it is.
    pub fn paused_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.paused_until.filter(|until| *until > now)
    }

    /// The skip reason of a reply while the AI is paused at `now`.
    pub fn pause_reason(&self, now: DateTime<Utc>) -> Option<ReplyReason> {
        self.paused_at(now)
            .map(|until| ReplyReason::PausedByHuman { until, cause: None })
    }

    /// AI replies sent in this chat in the hour before `now` (from the stream, so a replay
    /// counts the same).
    pub fn ai_replies_last_hour(&self, now: DateTime<Utc>) -> usize {
        let since = now - Duration::hours(1);
        self.hourly_ai_sends.iter().filter(|t| **t > since).count()
    }

    /// Whether a reply is superseded: a newer customer message arrived after its trigger (a
    /// notice never is).
    pub fn superseded(&self, reply_id: &str) -> bool {
        !self.is_notice(reply_id)
            && self
                .trigger_of(reply_id)
                .is_some_and(|t| self.last_customer_message.as_deref() != Some(t))
    }

    /// The pause a human answer at `at` causes, if any.
    fn pause(
        &self,
        takeover: Duration,
        cause: PauseCause,
        message_id: &str,
        at: DateTime<Utc>,
    ) -> Option<ChatEvent> {
        if takeover <= Duration::zero() {
            return None;
        }
        Some(ChatEvent::AiPaused {
            until: at + takeover,
            cause,
            message_id: message_id.to_string(),
            at,
        })
    }

    fn open(&self, reply_id: &str) -> Result<&ReplyState, DomainError> {
        self.open_replies
            .get(reply_id)
            .ok_or_else(|| DomainError::Conflict(format!("reply {reply_id} is not open")))
    }

    /// Whether start-up recovery resumes this open reply instead of closing it: it was never
    /// handed to the transport (no `AiReplySending`), and it is not superseded. Working on it again
    /// cannot send twice.
    pub fn resumable(&self, reply_id: &str) -> bool {
        match self.open_replies.get(reply_id) {
            Some(ReplyState::Requested { .. }) => !self.superseded(reply_id),
            Some(ReplyState::Generated { sending, .. }) => !sending && !self.superseded(reply_id),
            None => false,
        }
    }

    /// Whether an open reply was handed to the transport (`AiReplySending`): it is never handed
    /// over again, only recorded or closed as `interrupted`.
    pub fn is_sending(&self, reply_id: &str) -> bool {
        matches!(
            self.open_replies.get(reply_id),
            Some(ReplyState::Generated { sending: true, .. })
        )
    }

    /// Whether an open reply has its text recorded (an answer or a notice) and only waits to be
    /// delivered.
    pub fn is_generated(&self, reply_id: &str) -> bool {
        matches!(
            self.open_replies.get(reply_id),
            Some(ReplyState::Generated { .. })
        )
    }

    fn push_turn(&mut self, turn: Turn) {
        self.history.push_back(turn);
        while self.history.len() > HISTORY_LEN {
            self.history.pop_front();
        }
    }
}

impl Aggregate for Chat {
    const TYPE: &'static str = "chat";
    type Command = ChatCommand;
    type Event = ChatEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: ChatCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        for e in self.decide(command)? {
            sink.write(e, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: ChatEvent) {
        match event {
            ChatEvent::MessageReceived {
                message_id,
                text,
                from_me,
                kind,
                at,
                media,
                ..
            } => {
                self.message_ids.received(message_id.clone());
                // Only text, voice notes and images are turns of the conversation (and
                // questions to answer).
                if !answerable(kind, media.as_ref()) {
                    return;
                }
                if !from_me {
                    self.last_customer_message = Some(message_id.clone());
                }
                self.push_turn(Turn {
                    inbound: !from_me,
                    text,
                    message_id,
                    at: Some(at),
                    ai: false,
                    media: media.map(|info| TurnMedia {
                        kind,
                        info,
                        transcribed: false,
                    }),
                });
            }
            ChatEvent::AiReplyRequested {
                reply_id,
                trigger_message_id,
                not_before,
                engaged_until,
            } => {
                if engaged_until.is_some() {
                    self.engaged_until = engaged_until.max(self.engaged_until);
                }
                self.open_replies.insert(
                    reply_id,
                    ReplyState::Requested {
                        trigger: trigger_message_id,
                        not_before,
                    },
                );
            }
            ChatEvent::AiReplyGenerated {
                reply_id,
                text,
                notice,
                ..
            } => {
                if let Some(Notice::Away { opens_at }) = notice {
                    self.away_sent_for = Some(opens_at);
                }
                if let Some(trigger) = self.trigger_of(&reply_id).map(str::to_string) {
                    self.open_replies.insert(
                        reply_id,
                        ReplyState::Generated {
                            trigger,
                            text,
                            notice: notice.is_some(),
                            sending: false,
                        },
                    );
                }
            }
            ChatEvent::MessageSent {
                message_id,
                text,
                source,
                at,
                ..
            } => {
                self.message_ids.sent(message_id.clone());
                self.push_turn(Turn {
                    inbound: false,
                    text,
                    message_id,
                    at: Some(at),
                    ai: source == Source::Ai,
                    media: None,
                });
            }
            ChatEvent::AiReplySent { reply_id, .. } => {
                self.open_replies.remove(&reply_id);
                // One reply, however many messages it was sent as: it counts when its last
                // message was sent (the turn just folded).
                if let Some(at) = self.history.back().filter(|t| t.ai).and_then(|t| t.at) {
                    self.recent_ai_sends.push_back(at);
                    while self.recent_ai_sends.len() > LOOP_CAP {
                        self.recent_ai_sends.pop_front();
                    }
                    self.hourly_ai_sends.push_back(at);
                    let since = at - Duration::hours(1);
                    while self.hourly_ai_sends.front().is_some_and(|t| *t <= since)
                        || self.hourly_ai_sends.len() > HOURLY_KEEP
                    {
                        self.hourly_ai_sends.pop_front();
                    }
                }
            }
            ChatEvent::AiReplySkipped { reply_id, .. }
            | ChatEvent::AiReplyFailed { reply_id, .. } => {
                self.open_replies.remove(&reply_id);
            }
            ChatEvent::TypingIndicated { .. } => {}
            ChatEvent::AiReplySending { reply_id, .. } => {
                if let Some(ReplyState::Generated { sending, .. }) =
                    self.open_replies.get_mut(&reply_id)
                {
                    *sending = true;
                }
            }
            ChatEvent::MessageStatusUpdated {
                message_id, status, ..
            } => self.message_ids.status(&message_id, status),
            ChatEvent::AiPaused { until, .. } => self.paused_until = Some(until),
            ChatEvent::AiResumed { .. } => self.paused_until = None,
            ChatEvent::MessageTranscribed {
                message_id, text, ..
            } => {
                if let Some(turn) = self.history.iter_mut().find(|t| t.message_id == message_id) {
                    turn.text = text;
                    if let Some(m) = turn.media.as_mut() {
                        m.transcribed = true;
                    }
                }
            }
        }
    }
}

impl Chat {
    /// The pure decision for a command (used by `handle` and by the chat actor, which keeps the
    /// aggregate in memory and commits with the expected version itself).
    pub fn decide(&self, command: ChatCommand) -> Result<Vec<ChatEvent>, DomainError> {
        Ok(match command {
            ChatCommand::Receive {
                message_id,
                from,
                text,
                from_me,
                reply_candidate,
                reply_id,
                at,
                kind,
                contact_name,
                mentioned,
                control,
                media,
            } => {
                if message_id.is_empty() || message_id.len() > 256 {
                    return Err(DomainError::invalid(
                        "id",
                        "message id must be 1..=256 characters",
                    ));
                }
                check_text(&text)?;
                if self.message_ids.contains(&message_id) {
                    return Ok(vec![]);
                }
                let answerable = answerable(kind, media.as_ref());
                let spoken = (reply_candidate && !from_me && answerable)
                    .then(|| self.speak(&control.speak, &text, mentioned, at));
                let mut events = vec![ChatEvent::MessageReceived {
                    message_id: message_id.clone(),
                    from,
                    text,
                    from_me,
                    at,
                    kind,
                    contact_name,
                    media,
                }];
                // A `from_me` message the gateway did not send itself: the owner answered on the
                // phone. (An echo of the gateway's own send carries the id it recorded in
                // `MessageSent`, so it is a duplicate and never gets here; the check stays
                // explicit for transports that echo without deduplication.)
                if from_me
                    && !matches!(
                        self.message_ids.get(&message_id),
                        Some(MessageFact::Sent(_))
                    )
                {
                    events.extend(self.pause(
                        control.takeover,
                        PauseCause::OwnerMessage,
                        &message_id,
                        at,
                    ));
                }
                if reply_candidate && !from_me {
                    if !answerable {
                        // The reply is recorded and closed at once, so the AI log says why
                        // nothing was answered.
                        events.push(ChatEvent::AiReplyRequested {
                            reply_id: reply_id.clone(),
                            trigger_message_id: message_id,
                            not_before: None,
                            engaged_until: None,
                        });
                        events.push(ChatEvent::AiReplySkipped {
                            reply_id,
                            reason: ReplyReason::NotText { kind },
                        });
                        return Ok(events);
                    }
                    let Some(spoken) = spoken else {
                        return Ok(events);
                    };
                    if let (
                        Spoken::Notice(Notice::Handoff { .. }, _)
                        | Spoken::Skip(ReplyReason::HandoffRequested { .. }),
                        Some(h),
                    ) = (&spoken, &control.speak.handoff)
                    {
                        events.push(ChatEvent::AiPaused {
                            until: at + h.pause,
                            cause: PauseCause::HandoffKeyword,
                            message_id: message_id.clone(),
                            at,
                        });
                    }
                    let requested = |not_before, engaged_until| ChatEvent::AiReplyRequested {
                        reply_id: reply_id.clone(),
                        trigger_message_id: message_id.clone(),
                        not_before,
                        engaged_until,
                    };
                    match spoken {
                        Spoken::Answer { engaged_until } => {
                            let not_before = (control.debounce > Duration::zero())
                                .then(|| at + control.debounce);
                            events.push(requested(not_before, engaged_until));
                        }
                        Spoken::Skip(reason) => {
                            events.push(requested(None, None));
                            events.push(ChatEvent::AiReplySkipped {
                                reply_id: reply_id.clone(),
                                reason,
                            });
                        }
                        Spoken::Notice(notice, text) => {
                            events.push(requested(None, None));
                            events.push(notice_event(reply_id.clone(), notice, text));
                        }
                    }
                }
                events
            }
            ChatCommand::Send {
                message_id,
                text,
                source,
                at,
                takeover,
            } => {
                check_text(&text)?;
                let mut events = vec![ChatEvent::MessageSent {
                    message_id: message_id.clone(),
                    text,
                    source,
                    ai_reply_id: None,
                    at,
                }];
                if source == Source::Operator {
                    events.extend(self.pause(takeover, PauseCause::OperatorSend, &message_id, at));
                }
                events
            }
            ChatCommand::Resume { at } => match self.paused_at(at) {
                Some(_) => vec![ChatEvent::AiResumed { at }],
                None => vec![],
            },
            ChatCommand::SkipReply { reply_id, reason } => {
                self.open(&reply_id)?;
                vec![ChatEvent::AiReplySkipped { reply_id, reason }]
            }
            ChatCommand::RecordTranscript {
                message_id,
                text,
                model,
                latency_ms,
                usage,
            } => {
                check_text(&text)?;
                if !self
                    .history
                    .iter()
                    .any(|t| t.message_id == message_id && t.needs_transcript())
                {
                    return Err(DomainError::Conflict(format!(
                        "message {message_id} is no audio waiting for its transcript"
                    )));
                }
                vec![ChatEvent::MessageTranscribed {
                    message_id,
                    text,
                    model,
                    latency_ms,
                    usage,
                }]
            }
            ChatCommand::RecordGenerated {
                reply_id,
                text,
                model,
                usage,
                latency_ms,
                attempts,
                fallback,
                handoff,
            } => {
                let trigger = match self.open(&reply_id)? {
                    ReplyState::Requested { trigger, .. } => trigger.clone(),
                    ReplyState::Generated { .. } => {
                        return Err(DomainError::Conflict(format!(
                            "reply {reply_id} was already generated"
                        )))
                    }
                };
                let mut events = Vec::new();
                let mut notice = None;
                if let Some((pause, at)) = handoff {
                    events.push(ChatEvent::AiPaused {
                        until: at + pause,
                        cause: PauseCause::HandoffTool,
                        message_id: trigger,
                        at,
                    });
                    notice = Some(Notice::Handoff {
                        by: HandoffBy::Model,
                    });
                }
                events.push(ChatEvent::AiReplyGenerated {
                    reply_id: reply_id.clone(),
                    text: text.clone(),
                    model,
                    usage,
                    latency_ms,
                    attempts,
                    fallback,
                    notice,
                });
                if notice.is_some() && text.trim().is_empty() {
                    events.push(ChatEvent::AiReplySkipped {
                        reply_id,
                        reason: ReplyReason::HandoffRequested {
                            by: HandoffBy::Model,
                        },
                    });
                }
                events
            }
            ChatCommand::Typing { reply_id, at } => {
                vec![ChatEvent::TypingIndicated { reply_id, at }]
            }
            ChatCommand::SendReply {
                reply_id,
                message_id,
                at,
                loop_guard,
            } => {
                let (trigger, text) = match self.open(&reply_id)? {
                    // Erased by the AI-log retention while it waited (a chat reloaded from
                    // the store): never send an empty message.
                    ReplyState::Generated { text, .. } if text.is_empty() => {
                        return Ok(vec![ChatEvent::AiReplyFailed {
                            reply_id,
                            reason: ReplyReason::TextErased,
                            attempts: vec![],
                        }]);
                    }
                    // A notice is sent whatever came since.
                    ReplyState::Generated {
                        text, notice: true, ..
                    } => return Ok(sent_reply_events(reply_id, message_id, text.clone(), at)),
                    ReplyState::Generated { trigger, text, .. } => (trigger.clone(), text.clone()),
                    ReplyState::Requested { .. } => {
                        return Err(DomainError::Conflict(format!(
                            "reply {reply_id} has no text yet"
                        )))
                    }
                };
                // A newer customer message arrived while this reply waited: the reply to that
                // one sees the whole conversation, so this one is not sent.
                if self.last_customer_message.as_deref() != Some(trigger.as_str()) {
                    return Ok(vec![ChatEvent::AiReplySkipped {
                        reply_id,
                        reason: ReplyReason::Superseded {
                            at: SupersededAt::Send,
                        },
                    }]);
                }
                if let Some(reason) = self.pause_reason(at) {
                    return Ok(vec![ChatEvent::AiReplySkipped { reply_id, reason }]);
                }
                if let Err(reason) = self.loop_guard(&loop_guard) {
                    return Ok(vec![ChatEvent::AiReplySkipped { reply_id, reason }]);
                }
                sent_reply_events(reply_id, message_id, text, at)
            }
            ChatCommand::RecordSent { reply_id, parts } => match self.open(&reply_id)? {
                ReplyState::Generated { .. } if parts.is_empty() => {
                    return Err(DomainError::invalid("parts", "a sent reply has a message"))
                }
                ReplyState::Generated { .. } => sent_parts_events(reply_id, parts),
                ReplyState::Requested { .. } => {
                    return Err(DomainError::Conflict(format!(
                        "reply {reply_id} has no text yet"
                    )))
                }
            },
            ChatCommand::FailReply {
                reply_id,
                reason,
                attempts,
            } => {
                self.open(&reply_id)?;
                vec![ChatEvent::AiReplyFailed {
                    reply_id,
                    reason,
                    attempts,
                }]
            }
            ChatCommand::StartSend { reply_id, at } => match self.open(&reply_id)? {
                ReplyState::Generated { sending: true, .. } => vec![],
                ReplyState::Generated { .. } => vec![ChatEvent::AiReplySending { reply_id, at }],
                ReplyState::Requested { .. } => {
                    return Err(DomainError::Conflict(format!(
                        "reply {reply_id} has no text yet"
                    )))
                }
            },
            ChatCommand::CloseInterrupted { keep } => self
                .open_replies
                .iter()
                .filter(|(reply_id, _)| !self.resumable(reply_id) && !keep.contains(reply_id))
                .map(|(reply_id, state)| match state {
                    ReplyState::Generated { sending: true, .. } => ChatEvent::AiReplyFailed {
                        reply_id: reply_id.clone(),
                        reason: ReplyReason::Interrupted,
                        attempts: vec![],
                    },
                    _ => ChatEvent::AiReplySkipped {
                        reply_id: reply_id.clone(),
                        reason: ReplyReason::Superseded {
                            at: SupersededAt::Queue,
                        },
                    },
                })
                .collect(),
            ChatCommand::UpdateStatus {
                message_id,
                status,
                error,
                at,
            } => match self.message_ids.get(&message_id) {
                Some(MessageFact::Sent(current)) if current.is_none_or(|c| status > c) => {
                    vec![ChatEvent::MessageStatusUpdated {
                        message_id,
                        status,
                        error,
                        at,
                    }]
                }
                _ => vec![],
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    /// Media recorded before `unavailable` existed still reads, and available media writes no
    /// such field.
    #[test]
    fn media_info_without_unavailable_reads() {
        let old = r#"{"mime_type":"audio/ogg","size":10,"sha256":"ab"}"#;
        let info: MediaInfo = serde_json::from_str(old).expect("old media info");
        assert!(info.available());
        assert_eq!(serde_json::to_string(&info).expect("json"), old);
        let gone = MediaInfo {
            unavailable: Some("download failed".into()),
            ..info
        };
        assert!(!gone.available());
        assert!(serde_json::to_string(&gone)
            .expect("json")
            .contains(r#""unavailable":"download failed""#));
        assert!(answerable(MessageKind::Document, Some(&gone)));
        assert!(!answerable(MessageKind::Document, None));
        assert!(!keeps_bytes(MessageKind::Document));
    }

    type Fw = TestFramework<Chat>;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn received(id: &str) -> ChatEvent {
        ChatEvent::MessageReceived {
            message_id: id.into(),
            from: "491701234567".into(),
            text: format!("hi {id}"),
            from_me: false,
            at: t0(),
            kind: MessageKind::Text,
            contact_name: None,
            media: None,
        }
    }

    fn requested(reply: &str, trigger: &str) -> ChatEvent {
        ChatEvent::AiReplyRequested {
            reply_id: reply.into(),
            trigger_message_id: trigger.into(),
            not_before: None,
            engaged_until: None,
        }
    }

    fn generated(reply: &str) -> ChatEvent {
        ChatEvent::AiReplyGenerated {
            reply_id: reply.into(),
            text: "hello!".into(),
            model: "m".into(),
            usage: TokenUsage::default(),
            latency_ms: 5,
            attempts: vec![],
            fallback: false,
            notice: None,
        }
    }

    /// The events of generated reply `reply` sent as `id`.
    fn sent_reply(reply: &str, id: &str) -> Vec<ChatEvent> {
        vec![
            ChatEvent::MessageSent {
                message_id: id.into(),
                text: "hello!".into(),
                source: Source::Ai,
                ai_reply_id: Some(reply.into()),
                at: t0(),
            },
            ChatEvent::AiReplySent {
                reply_id: reply.into(),
                message_id: id.into(),
                more_message_ids: vec![],
            },
        ]
    }

    fn part(id: &str) -> SentPart {
        SentPart {
            message_id: id.into(),
            text: "hello!".into(),
            typed_at: None,
            at: t0(),
        }
    }

    fn receive(id: &str, reply_candidate: bool, from_me: bool) -> ChatCommand {
        ChatCommand::Receive {
            message_id: id.into(),
            from: "491701234567".into(),
            text: format!("hi {id}"),
            from_me,
            reply_candidate,
            reply_id: format!("r-{id}"),
            at: t0(),
            kind: MessageKind::Text,
            contact_name: None,
            mentioned: false,
            control: Control::default(),
            media: None,
        }
    }

    #[test]
    fn inbound_customer_message_requests_a_reply() {
        Fw::with(())
            .given_no_previous_events()
            .when(receive("m1", true, false))
            .then_expect_events(vec![received("m1"), requested("r-m1", "m1")]);
    }

    #[test]
    fn duplicate_inbound_is_a_no_op() {
        Fw::with(())
            .given(vec![received("m1"), requested("r-m1", "m1")])
            .when(receive("m1", true, false))
            .then_expect_events(vec![]);
    }

    #[test]
    fn from_me_and_non_candidates_get_no_reply() {
        let mut own = received("m2");
        if let ChatEvent::MessageReceived { from_me, .. } = &mut own {
            *from_me = true;
        }
        Fw::with(())
            .given_no_previous_events()
            .when(receive("m2", true, true))
            .then_expect_events(vec![own]);
        Fw::with(())
            .given_no_previous_events()
            .when(receive("m3", false, false))
            .then_expect_events(vec![received("m3")]);
    }

    #[test]
    fn generated_reply_is_sent_with_its_sent_mark() {
        Fw::with(())
            .given(vec![received("m1"), requested("r1", "m1"), generated("r1")])
            .when(ChatCommand::SendReply {
                reply_id: "r1".into(),
                message_id: "out1".into(),
                at: t0(),
                loop_guard: LoopGuard::default(),
            })
            .then_expect_events(sent_reply("r1", "out1"));
    }

    #[test]
    fn a_reply_whose_text_was_erased_fails_instead_of_sending_nothing() {
        let mut erased = generated("r1");
        if let ChatEvent::AiReplyGenerated { text, .. } = &mut erased {
            text.clear();
        }
        Fw::with(())
            .given(vec![received("m1"), requested("r1", "m1"), erased])
            .when(ChatCommand::SendReply {
                reply_id: "r1".into(),
                message_id: "out1".into(),
                at: t0(),
                loop_guard: LoopGuard::default(),
            })
            .then_expect_events(vec![ChatEvent::AiReplyFailed {
                reply_id: "r1".into(),
                reason: ReplyReason::TextErased,
                attempts: vec![],
            }]);
    }

    #[test]
    fn a_reply_is_never_sent_twice() {
        Fw::with(())
            .given(vec![
                received("m1"),
                requested("r1", "m1"),
                generated("r1"),
                ChatEvent::AiReplySent {
                    reply_id: "r1".into(),
                    message_id: "out1".into(),
                    more_message_ids: vec![],
                },
            ])
            .when(ChatCommand::SendReply {
                reply_id: "r1".into(),
                message_id: "out2".into(),
                at: t0(),
                loop_guard: LoopGuard::default(),
            })
            .then_expect_error_message("reply r1 is not open");
    }

    #[test]
    fn a_reply_the_transport_took_is_recorded_even_if_superseded_meanwhile() {
        Fw::with(())
            .given(vec![
                received("m1"),
                requested("r1", "m1"),
                generated("r1"),
                received("m2"),
                requested("r2", "m2"),
            ])
            .when(ChatCommand::RecordSent {
                reply_id: "r1".into(),
                parts: vec![part("out1")],
            })
            .then_expect_events(sent_reply("r1", "out1"));
    }

    #[test]
    fn a_send_is_recorded_once_and_only_for_a_generated_reply() {
        let record = |id: &str| ChatCommand::RecordSent {
            reply_id: "r1".into(),
            parts: vec![part(id)],
        };
        Fw::with(())
            .given(vec![received("m1"), requested("r1", "m1")])
            .when(record("out1"))
            .then_expect_error_message("reply r1 has no text yet");
        let mut sent = vec![received("m1"), requested("r1", "m1"), generated("r1")];
        sent.extend(sent_reply("r1", "out1"));
        Fw::with(())
            .given(sent)
            .when(record("out2"))
            .then_expect_error_message("reply r1 is not open");
    }

    #[test]
    fn newer_message_supersedes_pending_reply() {
        Fw::with(())
            .given(vec![
                received("m1"),
                requested("r1", "m1"),
                generated("r1"),
                received("m2"),
                requested("r2", "m2"),
            ])
            .when(ChatCommand::SendReply {
                reply_id: "r1".into(),
                message_id: "out1".into(),
                at: t0(),
                loop_guard: LoopGuard::default(),
            })
            .then_expect_events(vec![ChatEvent::AiReplySkipped {
                reply_id: "r1".into(),
                reason: ReplyReason::Superseded {
                    at: SupersededAt::Send,
                },
            }]);
    }

    /// A chat after these turns: (from the customer?, text, milliseconds after `t0`).
    fn chat_of(turns: &[(bool, String, i64)]) -> Chat {
        let mut chat = Chat::default();
        for (i, (inbound, text, ms)) in turns.iter().enumerate() {
            let at = t0() + Duration::milliseconds(*ms);
            chat.apply(if *inbound {
                ChatEvent::MessageReceived {
                    message_id: format!("m{i}"),
                    from: "491701234567".into(),
                    text: text.clone(),
                    from_me: false,
                    at,
                    kind: MessageKind::Text,
                    contact_name: None,
                    media: None,
                }
            } else {
                ChatEvent::MessageSent {
                    message_id: format!("o{i}"),
                    text: text.clone(),
                    source: Source::Ai,
                    ai_reply_id: None,
                    at,
                }
            });
        }
        chat
    }

    /// Issue 24: a person asking 24 different questions, each 3 s or more after our previous
    /// answer, is answered every time under the defaults.
    #[test]
    fn people_asking_many_questions_are_answered() {
        let mut turns = Vec::new();
        let mut ms = 0;
        for i in 0..24 {
            turns.push((true, format!("question number {i}?"), ms));
            assert_eq!(
                chat_of(&turns).loop_guard(&LoopGuard::default()),
                Ok(()),
                "question {i}"
            );
            turns.push((false, format!("answer number {i}"), ms + 1_500));
            ms += 1_500 + 3_000;
        }
    }

    /// A bot that answers each of our replies within a second is stopped after
    /// `quick_replies` quick answers, with the `bot_loop` code; off with `quick_seconds` 0.
    #[test]
    fn a_bot_answering_at_once_is_stopped_within_a_few_turns() {
        let mut turns = Vec::new();
        let mut ms = 0;
        let mut stopped = None;
        for i in 0..12 {
            turns.push((true, format!("bot line {i}"), ms));
            if let Err(reason) = chat_of(&turns).loop_guard(&LoopGuard::default()) {
                assert_eq!(reason.code(), "bot_loop");
                assert_eq!(
                    reason.text(),
                    "bot loop: the other side answered within 2 s of each of our last 5 replies"
                );
                stopped = Some(i);
                break;
            }
            turns.push((false, format!("our answer {i}"), ms + 1_000));
            ms += 1_000 + 600;
        }
        assert_eq!(
            stopped,
            Some(5),
            "the sixth message, after five quick answers"
        );
        let off = LoopGuard {
            quick_seconds: 0,
            ..LoopGuard::default()
        };
        assert_eq!(chat_of(&turns).loop_guard(&off), Ok(()));
    }

    #[test]
    fn our_own_reply_coming_back_is_a_loop() {
        let ours = "Thanks for your message, we will get back to you soon.";
        let chat = chat_of(&[
            (true, "hello".into(), 0),
            (false, ours.into(), 2_000),
            (true, format!("  {}", ours.to_uppercase()), 60_000),
        ]);
        let reason = chat.loop_guard(&LoopGuard::default()).expect_err("an echo");
        assert_eq!(
            reason.text(),
            "bot loop: our own reply came back as a message"
        );
        // A short answer repeated back ("ok") is what people do too.
        let chat = chat_of(&[
            (true, "ok?".into(), 0),
            (false, "ok".into(), 2_000),
            (true, "ok".into(), 60_000),
        ]);
        assert_eq!(chat.loop_guard(&LoopGuard::default()), Ok(()));
    }

    #[test]
    fn the_same_message_again_and_again_is_a_loop() {
        let mut turns = Vec::new();
        for i in 0..4 {
            let ms = i * 60_000;
            turns.push((true, "Hello there".to_string(), ms));
            let verdict = chat_of(&turns).loop_guard(&LoopGuard::default());
            if i < 3 {
                assert_eq!(verdict, Ok(()), "repeat {i}");
            } else {
                assert_eq!(
                    verdict.map_err(|r| r.text()),
                    Err("bot loop: the same message 4 times in a row".to_string())
                );
            }
            turns.push((false, format!("answer {i}"), ms + 5_000));
        }
    }

    /// The send decision applies the guard it is given: a reply to the sixth quick answer is
    /// skipped as a bot loop.
    #[test]
    fn the_send_decision_skips_a_bot_loop() {
        let mut turns = Vec::new();
        for i in 0..5 {
            turns.push((true, format!("bot line {i}"), i * 1_600));
            turns.push((false, format!("our answer {i}"), i * 1_600 + 1_000));
        }
        let mut chat = chat_of(&turns);
        for e in [received("m1"), requested("r1", "m1"), generated("r1")] {
            chat.apply(e);
        }
        // `received` is stamped at `t0`: move the trigger to just after our last answer.
        if let Some(last) = chat.history.back_mut() {
            last.at = Some(t0() + Duration::milliseconds(4 * 1_600 + 1_500));
        }
        let decide = |guard| {
            chat.decide(ChatCommand::SendReply {
                reply_id: "r1".into(),
                message_id: "out".into(),
                at: t0() + Duration::minutes(1),
                loop_guard: guard,
            })
        };
        let events = decide(LoopGuard::default()).unwrap_or_default();
        assert!(
            matches!(&events[..], [ChatEvent::AiReplySkipped { reason, .. }] if reason.code() == "bot_loop"),
            "{events:?}"
        );
        let relaxed = LoopGuard {
            quick_replies: 10,
            ..LoopGuard::default()
        };
        let events = decide(relaxed).unwrap_or_default();
        assert!(
            matches!(
                &events[..],
                [ChatEvent::MessageSent { .. }, ChatEvent::AiReplySent { .. }]
            ),
            "{events:?}"
        );
    }

    #[test]
    fn restart_closes_only_what_may_have_been_sent() {
        let sending = |r: &str| ChatEvent::AiReplySending {
            reply_id: r.into(),
            at: t0(),
        };
        // r1 superseded by m2; r2 handed to the transport (may have been sent); r3 generated but
        // not handed over, r4 waiting for the model: both are worked on again.
        Fw::with(())
            .given(vec![
                received("m1"),
                requested("r1", "m1"),
                received("m2"),
                requested("r2", "m2"),
                generated("r2"),
                sending("r2"),
            ])
            .when(ChatCommand::CloseInterrupted { keep: vec![] })
            .then_expect_events(vec![
                ChatEvent::AiReplySkipped {
                    reply_id: "r1".into(),
                    reason: ReplyReason::Superseded {
                        at: SupersededAt::Queue,
                    },
                },
                ChatEvent::AiReplyFailed {
                    reply_id: "r2".into(),
                    reason: ReplyReason::Interrupted,
                    attempts: vec![],
                },
            ]);
        for open in [
            vec![received("m3"), requested("r3", "m3"), generated("r3")],
            vec![received("m4"), requested("r4", "m4")],
        ] {
            let mut chat = Chat::default();
            for e in open.clone() {
                chat.apply(e);
            }
            let reply = chat.open_replies.keys().next().cloned().unwrap_or_default();
            assert!(chat.resumable(&reply));
            Fw::with(())
                .given(open)
                .when(ChatCommand::CloseInterrupted { keep: vec![] })
                .then_expect_events(vec![]);
        }
        // The mark is written once, and only for an answer.
        Fw::with(())
            .given(vec![received("m1"), requested("r1", "m1"), generated("r1")])
            .when(ChatCommand::StartSend {
                reply_id: "r1".into(),
                at: t0(),
            })
            .then_expect_events(vec![sending("r1")]);
        Fw::with(())
            .given(vec![
                received("m1"),
                requested("r1", "m1"),
                generated("r1"),
                sending("r1"),
            ])
            .when(ChatCommand::StartSend {
                reply_id: "r1".into(),
                at: t0(),
            })
            .then_expect_events(vec![]);
        Fw::with(())
            .given(vec![received("m1"), requested("r1", "m1")])
            .when(ChatCommand::StartSend {
                reply_id: "r1".into(),
                at: t0(),
            })
            .then_expect_error_message("reply r1 has no text yet");
    }

    #[test]
    fn empty_or_oversized_text_refused() {
        Fw::with(())
            .given_no_previous_events()
            .when(ChatCommand::Send {
                message_id: "o".into(),
                text: "  ".into(),
                source: Source::Operator,
                at: t0(),
                takeover: Duration::zero(),
            })
            .then_expect_error_message("text: must not be empty");
    }

    #[test]
    fn non_text_inbound_is_recorded_and_its_reply_skipped_with_a_reason() {
        let cmd = ChatCommand::Receive {
            message_id: "img1".into(),
            from: "491701234567".into(),
            text: "[image]".into(),
            from_me: false,
            reply_candidate: true,
            reply_id: "r-img1".into(),
            at: t0(),
            kind: MessageKind::Image,
            contact_name: Some("Ana".into()),
            mentioned: false,
            control: Control::default(),
            media: None,
        };
        Fw::with(())
            .given_no_previous_events()
            .when(cmd)
            .then_expect_events(vec![
                ChatEvent::MessageReceived {
                    message_id: "img1".into(),
                    from: "491701234567".into(),
                    text: "[image]".into(),
                    from_me: false,
                    at: t0(),
                    kind: MessageKind::Image,
                    contact_name: Some("Ana".into()),
                    media: None,
                },
                requested("r-img1", "img1"),
                ChatEvent::AiReplySkipped {
                    reply_id: "r-img1".into(),
                    reason: ReplyReason::NotText {
                        kind: MessageKind::Image,
                    },
                },
            ]);
        // It neither supersedes a pending text reply nor enters the prompt history.
        let mut chat = Chat::default();
        for e in [received("m1"), requested("r1", "m1")] {
            chat.apply(e);
        }
        chat.apply(ChatEvent::MessageReceived {
            message_id: "img1".into(),
            from: "491701234567".into(),
            text: "[image]".into(),
            from_me: false,
            at: t0(),
            kind: MessageKind::Image,
            contact_name: None,
            media: None,
        });
        assert_eq!(chat.last_customer_message.as_deref(), Some("m1"));
        assert_eq!(chat.history.len(), 1);
        assert!(chat.message_ids.contains("img1"));
    }

    #[test]
    fn old_message_events_without_kind_read_as_text() {
        let e: ChatEvent = serde_json::from_value(serde_json::json!({"MessageReceived":
            {"message_id":"m1","from":"1","text":"hi","from_me":false,"at":"2026-11-25T10:00:00Z"}}))
        .expect("old payload parses");
        assert!(matches!(
            e,
            ChatEvent::MessageReceived {
                kind: MessageKind::Text,
                contact_name: None,
                ..
            }
        ));
    }

    /// A voice note with its media is answered (a reply is requested, not skipped); its
    /// transcript, recorded once, becomes the customer's turn; a text has none to record.
    #[test]
    fn a_voice_note_is_answered_from_its_transcript() {
        let media = MediaInfo {
            mime_type: "audio/ogg".into(),
            size: 10,
            sha256: "cd".repeat(32),
            filename: None,
            unavailable: None,
        };
        let mut cmd = receive("v1", true, false);
        if let ChatCommand::Receive {
            kind,
            media: m,
            text,
            ..
        } = &mut cmd
        {
            *kind = MessageKind::Audio;
            *m = Some(media);
            *text = "[audio]".into();
        }
        let mut chat = Chat::default();
        let events = step(&mut chat, cmd);
        assert!(events
            .iter()
            .any(|e| matches!(e, ChatEvent::AiReplyRequested { .. })));
        assert!(!events
            .iter()
            .any(|e| matches!(e, ChatEvent::AiReplySkipped { .. })));
        assert!(chat.history.back().is_some_and(Turn::needs_transcript));
        let transcript = |id: &str| ChatCommand::RecordTranscript {
            message_id: id.into(),
            text: "do you deliver?".into(),
            model: "whisper-1".into(),
            latency_ms: 12,
            usage: None,
        };
        let events = step(&mut chat, transcript("v1"));
        assert!(matches!(
            &events[..],
            [ChatEvent::MessageTranscribed { .. }]
        ));
        let turn = chat.history.back().expect("turn");
        assert_eq!(turn.text, "do you deliver?");
        assert!(!turn.needs_transcript());
        // Once heard, and never for a text.
        assert!(chat.decide(transcript("v1")).is_err());
        step(&mut chat, receive("t1", true, false));
        assert!(chat.decide(transcript("t1")).is_err());
    }

    /// A message with media records its MIME type, size and hash (never bytes); events written
    /// before media existed read as without it.
    #[test]
    fn media_is_recorded_with_the_message() {
        let media = MediaInfo {
            mime_type: "audio/ogg".into(),
            size: 1234,
            sha256: "ab".repeat(32),
            filename: None,
            unavailable: None,
        };
        let mut cmd = receive("v1", true, false);
        if let ChatCommand::Receive { kind, media: m, .. } = &mut cmd {
            *kind = MessageKind::Audio;
            *m = Some(media.clone());
        }
        let events = Chat::default().decide(cmd).expect("decided");
        let ChatEvent::MessageReceived {
            media: got, kind, ..
        } = &events[0]
        else {
            panic!("{events:?}");
        };
        assert_eq!((got.as_ref(), *kind), (Some(&media), MessageKind::Audio));
        let json = serde_json::to_value(&events[0]).expect("serializes");
        assert_eq!(
            json["MessageReceived"]["media"],
            serde_json::json!({"mime_type": "audio/ogg", "size": 1234, "sha256": "ab".repeat(32)})
        );
        let old: ChatEvent = serde_json::from_value(serde_json::json!({"MessageReceived":
            {"message_id":"m1","from":"1","text":"[audio]","from_me":false,"kind":"audio",
             "at":"2026-11-25T10:00:00Z"}}))
        .expect("old payload parses");
        assert!(matches!(
            old,
            ChatEvent::MessageReceived { media: None, .. }
        ));
    }

    #[test]
    fn status_updates_move_forward_only_and_only_for_sent_messages() {
        let sent = ChatEvent::MessageSent {
            message_id: "wamid.1".into(),
            text: "hello".into(),
            source: Source::Ai,
            ai_reply_id: None,
            at: t0(),
        };
        let update = |status| ChatCommand::UpdateStatus {
            message_id: "wamid.1".into(),
            status,
            error: None,
            at: t0(),
        };
        let updated = |status| ChatEvent::MessageStatusUpdated {
            message_id: "wamid.1".into(),
            status,
            error: None,
            at: t0(),
        };
        Fw::with(())
            .given(vec![sent.clone()])
            .when(update(DeliveryStatus::Delivered))
            .then_expect_events(vec![updated(DeliveryStatus::Delivered)]);
        // Late, repeated or backwards: nothing new.
        Fw::with(())
            .given(vec![sent.clone(), updated(DeliveryStatus::Read)])
            .when(update(DeliveryStatus::Delivered))
            .then_expect_events(vec![]);
        Fw::with(())
            .given(vec![sent.clone(), updated(DeliveryStatus::Read)])
            .when(update(DeliveryStatus::Read))
            .then_expect_events(vec![]);
        // Unknown and inbound ids are not ours to track.
        Fw::with(())
            .given(vec![received("wamid.1")])
            .when(update(DeliveryStatus::Read))
            .then_expect_events(vec![]);
    }

    fn operator_send(id: &str, minutes: i64) -> ChatCommand {
        ChatCommand::Send {
            message_id: id.into(),
            text: "a human here".into(),
            source: Source::Operator,
            at: t0(),
            takeover: Duration::minutes(minutes),
        }
    }

    fn sent(id: &str, source: Source) -> ChatEvent {
        ChatEvent::MessageSent {
            message_id: id.into(),
            text: "a human here".into(),
            source,
            ai_reply_id: None,
            at: t0(),
        }
    }

    fn paused(id: &str, cause: PauseCause, minutes: i64) -> ChatEvent {
        ChatEvent::AiPaused {
            until: t0() + Duration::minutes(minutes),
            cause,
            message_id: id.into(),
            at: t0(),
        }
    }

    #[test]
    fn operator_send_pauses_the_ai() {
        Fw::with(())
            .given(vec![received("m1")])
            .when(operator_send("o1", 30))
            .then_expect_events(vec![
                sent("o1", Source::Operator),
                paused("o1", PauseCause::OperatorSend, 30),
            ]);
    }

    #[test]
    fn takeover_zero_and_test_sends_never_pause() {
        Fw::with(())
            .given_no_previous_events()
            .when(operator_send("o1", 0))
            .then_expect_events(vec![sent("o1", Source::Operator)]);
        Fw::with(())
            .given_no_previous_events()
            .when(ChatCommand::Send {
                message_id: "t1".into(),
                text: "a human here".into(),
                source: Source::Test,
                at: t0(),
                takeover: Duration::minutes(30),
            })
            .then_expect_events(vec![sent("t1", Source::Test)]);
    }

    #[test]
    fn owner_message_from_the_phone_pauses_but_an_echo_of_our_send_does_not() {
        let mut cmd = receive("p1", true, true);
        if let ChatCommand::Receive { control, .. } = &mut cmd {
            control.takeover = Duration::minutes(30);
        }
        let mut own = received("p1");
        if let ChatEvent::MessageReceived { from_me, .. } = &mut own {
            *from_me = true;
        }
        Fw::with(())
            .given_no_previous_events()
            .when(cmd)
            .then_expect_events(vec![own, paused("p1", PauseCause::OwnerMessage, 30)]);
        // The gateway's own AI reply comes back as from_me with the id it recorded: nothing.
        let mut echo = receive("out1", true, true);
        if let ChatCommand::Receive { control, .. } = &mut echo {
            control.takeover = Duration::minutes(30);
        }
        Fw::with(())
            .given(vec![sent("out1", Source::Ai)])
            .when(echo)
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_paused_chat_skips_the_send_and_resumes_after_the_time_or_on_request() {
        let given = vec![
            received("m1"),
            requested("r1", "m1"),
            generated("r1"),
            paused("o1", PauseCause::OperatorSend, 30),
        ];
        let mut chat = Chat::default();
        for e in given.clone() {
            chat.apply(e);
        }
        let during = chat
            .decide(ChatCommand::SendReply {
                reply_id: "r1".into(),
                message_id: "x".into(),
                at: t0() + Duration::minutes(10),
                loop_guard: LoopGuard::default(),
            })
            .unwrap_or_default();
        assert!(
            matches!(&during[..], [ChatEvent::AiReplySkipped { reason, .. }] if reason.code() == "paused_by_human" && reason.text().starts_with("human takeover")),
            "{during:?}"
        );
        // After the pause, it sends again without any event in between.
        let after = chat
            .decide(ChatCommand::SendReply {
                reply_id: "r1".into(),
                message_id: "x".into(),
                at: t0() + Duration::minutes(31),
                loop_guard: LoopGuard::default(),
            })
            .unwrap_or_default();
        assert!(matches!(&after[..], [ChatEvent::MessageSent { .. }, _]));
        // Manual resume while paused; a second resume is a no-op.
        Fw::with(())
            .given(given.clone())
            .when(ChatCommand::Resume {
                at: t0() + Duration::minutes(1),
            })
            .then_expect_events(vec![ChatEvent::AiResumed {
                at: t0() + Duration::minutes(1),
            }]);
        let mut resumed = given;
        resumed.push(ChatEvent::AiResumed { at: t0() });
        Fw::with(())
            .given(resumed)
            .when(ChatCommand::Resume {
                at: t0() + Duration::minutes(2),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn debounce_sets_not_before_and_recovery_keeps_the_newest_waiting_request() {
        let mut cmd = receive("m1", true, false);
        if let ChatCommand::Receive { control, .. } = &mut cmd {
            control.debounce = Duration::seconds(3);
        }
        let debounced = |reply: &str, trigger: &str| ChatEvent::AiReplyRequested {
            reply_id: reply.into(),
            trigger_message_id: trigger.into(),
            not_before: Some(t0() + Duration::seconds(3)),
            engaged_until: None,
        };
        Fw::with(())
            .given_no_previous_events()
            .when(cmd)
            .then_expect_events(vec![received("m1"), debounced("r-m1", "m1")]);
        // Restart: the older debounced request is closed, the newest one stays open.
        Fw::with(())
            .given(vec![
                received("m1"),
                debounced("r1", "m1"),
                received("m2"),
                debounced("r2", "m2"),
            ])
            .when(ChatCommand::CloseInterrupted { keep: vec![] })
            .then_expect_events(vec![ChatEvent::AiReplySkipped {
                reply_id: "r1".into(),
                reason: ReplyReason::Superseded {
                    at: SupersededAt::Queue,
                },
            }]);
    }

    #[test]
    fn hourly_count_comes_from_the_stream() {
        let mut chat = Chat::default();
        for (i, minutes) in [0i64, 30, 50, 70].iter().enumerate() {
            // The reply at 50 minutes was sent in two parts: one reply, counted once.
            let parts = if *minutes == 50 { 2 } else { 1 };
            for p in 0..parts {
                chat.apply(ChatEvent::MessageSent {
                    message_id: format!("o{i}-{p}"),
                    text: "x".into(),
                    source: Source::Ai,
                    ai_reply_id: Some(format!("r{i}")),
                    at: t0() + Duration::minutes(*minutes),
                });
            }
            chat.apply(ChatEvent::AiReplySent {
                reply_id: format!("r{i}"),
                message_id: format!("o{i}-0"),
                more_message_ids: (1..parts).map(|p| format!("o{i}-{p}")).collect(),
            });
        }
        assert_eq!(chat.ai_replies_last_hour(t0() + Duration::minutes(71)), 3);
        assert_eq!(chat.ai_replies_last_hour(t0() + Duration::minutes(200)), 0);
    }

    #[test]
    fn old_reply_events_without_new_fields_still_read() {
        let e: ChatEvent = serde_json::from_value(serde_json::json!({"AiReplyRequested":
            {"reply_id":"r1","trigger_message_id":"m1"}}))
        .expect("old payload parses");
        assert!(matches!(
            e,
            ChatEvent::AiReplyRequested {
                not_before: None,
                ..
            }
        ));
        let e: ChatEvent = serde_json::from_value(serde_json::json!({"AiReplyFailed":
            {"reply_id":"r1","reason":"x"}}))
        .expect("old payload parses");
        assert!(matches!(e, ChatEvent::AiReplyFailed { attempts, .. } if attempts.is_empty()));
    }

    /// Given a chat whose reply events were stored before reasons had codes (plain text), when
    /// they are read and folded, then the replies are closed the same and the texts map to their
    /// codes; new events store the code and details only.
    #[test]
    fn legacy_reason_texts_fold_and_new_events_store_codes() {
        let legacy: Vec<ChatEvent> = [
            serde_json::json!({"AiReplySkipped":{"reply_id":"r1","reason":"no API key configured"}}),
            serde_json::json!({"AiReplyFailed":{"reply_id":"r2","reason":"interrupted"}}),
            serde_json::json!({"AiReplySkipped":{"reply_id":"r3","reason":"human takeover: AI paused in this chat until 2026-11-25T10:30:00Z"}}),
        ]
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("a legacy payload reads"))
        .collect();
        let codes: Vec<&str> = legacy
            .iter()
            .filter_map(|e| match e {
                ChatEvent::AiReplySkipped { reason, .. }
                | ChatEvent::AiReplyFailed { reason, .. } => Some(reason.code()),
                _ => None,
            })
            .collect();
        assert_eq!(codes, ["no_api_key", "interrupted", "paused_by_human"]);
        let mut chat = Chat::default();
        for e in [
            received("m1"),
            requested("r1", "m1"),
            requested("r2", "m1"),
            requested("r3", "m1"),
        ]
        .into_iter()
        .chain(legacy.clone())
        {
            chat.apply(e);
        }
        assert!(chat.open_replies.is_empty());
        // Written again, a legacy event takes the new shape.
        assert_eq!(
            serde_json::to_value(&legacy[0]).ok(),
            Some(
                serde_json::json!({"AiReplySkipped":{"reply_id":"r1","reason":{"code":"no_api_key"}}})
            )
        );
        Fw::with(())
            .given(vec![received("m1"), requested("r1", "m1")])
            .when(ChatCommand::SkipReply {
                reply_id: "r1".into(),
                reason: ReplyReason::BudgetExhausted { used: 10, limit: 5 },
            })
            .then_expect_events(vec![ChatEvent::AiReplySkipped {
                reply_id: "r1".into(),
                reason: ReplyReason::BudgetExhausted { used: 10, limit: 5 },
            }]);
        let written = ChatEvent::AiReplyFailed {
            reply_id: "r1".into(),
            reason: ReplyReason::SendFailed {
                attempts: Some(3),
                detail: "rate limited".into(),
            },
            attempts: vec![],
        };
        let pinned = serde_json::json!({"AiReplyFailed":{"reply_id":"r1","reason":
            {"code":"send_failed","attempts":3,"detail":"rate limited"}}});
        assert_eq!(serde_json::to_value(&written).ok(), Some(pinned.clone()));
        assert_eq!(
            serde_json::from_value::<ChatEvent>(pinned).ok(),
            Some(written)
        );
    }

    /// One event of every kind, folded: what a snapshot of format [`Chat::SNAPSHOT_FORMAT`] holds.
    fn every_kind_folded() -> Chat {
        let mut chat = Chat::default();
        let mut events = vec![
            received("m1"),
            requested("r1", "m1"),
            generated("r1"),
            ChatEvent::TypingIndicated {
                reply_id: Some("r1".into()),
                at: t0(),
            },
        ];
        events.extend(sent_reply("r1", "out1"));
        events.extend([
            ChatEvent::MessageStatusUpdated {
                message_id: "out1".into(),
                status: DeliveryStatus::Read,
                error: None,
                at: t0(),
            },
            received("m2"),
            requested("r2", "m2"),
            ChatEvent::AiReplySkipped {
                reply_id: "r2".into(),
                reason: ReplyReason::Other { text: "x".into() },
            },
            requested("r3", "m2"),
            ChatEvent::AiReplyFailed {
                reply_id: "r3".into(),
                reason: ReplyReason::Other { text: "x".into() },
                attempts: vec![],
            },
            ChatEvent::AiPaused {
                until: t0() + Duration::minutes(30),
                cause: PauseCause::OperatorSend,
                message_id: "out1".into(),
                at: t0(),
            },
            ChatEvent::AiResumed { at: t0() },
            ChatEvent::AiPaused {
                until: t0() + Duration::minutes(60),
                cause: PauseCause::OwnerMessage,
                message_id: "m2".into(),
                at: t0(),
            },
            received("m3"),
            requested("r4", "m3"),
        ]);
        for e in events {
            chat.apply(e);
        }
        chat
    }

    /// Snapshots store `Chat` as serialized; one folded with another shape or fold would be read
    /// wrong. If this fails, the state or its fold changed: bump `Chat::SNAPSHOT_FORMAT` and pin
    /// the new state here.
    #[test]
    fn snapshot_format_pins_the_folded_state() {
        let pinned = serde_json::json!({
            "format": 5,
            "state": {
                "message_ids": {
                    "order": ["m1", "out1", "m2", "m3"],
                    "facts": {"m1": "received", "out1": {"sent": "read"}, "m2": "received", "m3": "received"},
                    "evicted": 0
                },
                "history": [
                    {"inbound": true, "text": "hi m1", "message_id": "m1", "at": "2026-11-25T10:00:00Z"},
                    {"inbound": false, "text": "hello!", "message_id": "out1", "at": "2026-11-25T10:00:00Z", "ai": true},
                    {"inbound": true, "text": "hi m2", "message_id": "m2", "at": "2026-11-25T10:00:00Z"},
                    {"inbound": true, "text": "hi m3", "message_id": "m3", "at": "2026-11-25T10:00:00Z"}
                ],
                "open_replies": {"r4": {"Requested": {"trigger": "m3", "not_before": null}}},
                "recent_ai_sends": ["2026-11-25T10:00:00Z"],
                "last_customer_message": "m3",
                "paused_until": "2026-11-25T11:00:00Z",
                "hourly_ai_sends": ["2026-11-25T10:00:00Z"],
                "engaged_until": null,
                "away_sent_for": null
            }
        });
        let chat = every_kind_folded();
        let now = serde_json::json!({"format": Chat::SNAPSHOT_FORMAT, "state": chat});
        assert_eq!(
            now,
            pinned,
            "the snapshot of a folded chat changed: bump Chat::SNAPSHOT_FORMAT and pin it here:\n{}",
            serde_json::to_string_pretty(&now).unwrap_or_default()
        );
        let back: Chat = serde_json::from_value(now["state"].clone()).expect("reads back");
        assert_eq!(back, chat);
    }

    /// A chat longer than its id window: a redelivered old id is new to the pure decision until
    /// the store's answer is remembered, then a duplicate; a late status of an old sent message
    /// counts once remembered.
    #[test]
    fn ids_out_of_the_window_are_decided_after_they_are_remembered() {
        use crate::message_window::ID_WINDOW;
        let mut chat = Chat::default();
        let mut events = vec![];
        events.push(ChatEvent::MessageSent {
            message_id: "out0".into(),
            text: "hello!".into(),
            source: Source::Operator,
            ai_reply_id: None,
            at: t0(),
        });
        for i in 0..ID_WINDOW {
            events.push(received(&format!("m{i}")));
        }
        for e in &events {
            chat.apply(e.clone());
        }
        assert!(!chat.message_ids.complete());
        assert!(chat.message_ids.needs_recall("out0"));
        assert_eq!(fact_of("out0", &events), Some(MessageFact::Sent(None)));
        assert_eq!(fact_of("m0", &events), Some(MessageFact::Received));
        assert_eq!(fact_of("nope", &events), None);

        let redelivered = receive("out0", true, true);
        let status = ChatCommand::UpdateStatus {
            message_id: "out0".into(),
            status: DeliveryStatus::Delivered,
            error: None,
            at: t0(),
        };
        assert_eq!(chat.decide(status.clone()).expect("decides"), vec![]);
        chat.message_ids
            .remember("out0".into(), MessageFact::Sent(None));
        assert_eq!(chat.decide(redelivered).expect("decides"), vec![]);
        assert_eq!(chat.decide(status).expect("decides").len(), 1);
        // A genuinely new id is new, whatever the window.
        assert_eq!(
            chat.decide(receive("fresh", true, false))
                .expect("decides")
                .len(),
            2
        );
    }

    // When the AI speaks (issue 24): triggers, handoff, business hours.

    fn speaking(speak: Speak) -> Control {
        Control {
            takeover: Duration::minutes(30),
            speak: Arc::new(speak),
            ..Control::default()
        }
    }

    fn say(id: &str, text: &str, at: DateTime<Utc>, control: &Control) -> ChatCommand {
        ChatCommand::Receive {
            message_id: id.into(),
            from: "491701234567".into(),
            text: text.into(),
            from_me: false,
            reply_candidate: true,
            reply_id: format!("r-{id}"),
            at,
            kind: MessageKind::Text,
            contact_name: None,
            mentioned: false,
            control: control.clone(),
            media: None,
        }
    }

    /// Decides `command` on `chat` and folds the events; returns them.
    fn step(chat: &mut Chat, command: ChatCommand) -> Vec<ChatEvent> {
        let events = chat.decide(command).expect("decided");
        for e in events.clone() {
            chat.apply(e);
        }
        events
    }

    fn skipped_for(events: &[ChatEvent]) -> Option<ReasonCode> {
        events.iter().find_map(|e| match e {
            ChatEvent::AiReplySkipped { reason, .. } => Some(reason.kind()),
            _ => None,
        })
    }

    use crate::reason::ReasonCode;

    fn words(mode: crate::matcher::MatchMode, list: &[&str]) -> Matcher {
        let list: Vec<String> = list.iter().map(|w| w.to_string()).collect();
        Matcher::new(mode, &list).expect("keywords compile")
    }

    #[test]
    fn keyword_trigger_answers_matches_then_the_window() {
        let control = speaking(Speak {
            trigger: Trigger::Keywords {
                keywords: words(
                    crate::matcher::MatchMode::Word,
                    &["price", "/^order \\d+$/"],
                ),
                window: Duration::minutes(10),
            },
            ..Speak::default()
        });
        let mut chat = Chat::default();
        let e = step(&mut chat, say("m1", "hello", t0(), &control));
        assert_eq!(skipped_for(&e), Some(ReasonCode::NoTriggerMatch));
        let e = step(
            &mut chat,
            say("m2", "the Price?", t0() + Duration::minutes(1), &control),
        );
        assert_eq!(skipped_for(&e), None);
        assert!(matches!(
            e.last(),
            Some(ChatEvent::AiReplyRequested { engaged_until: Some(until), .. })
                if *until == t0() + Duration::minutes(11)
        ));
        // Within the window: answered without a keyword, and the window moves on.
        let e = step(
            &mut chat,
            say("m3", "and shipping", t0() + Duration::minutes(8), &control),
        );
        assert_eq!(skipped_for(&e), None);
        let e = step(
            &mut chat,
            say("m4", "ok", t0() + Duration::minutes(17), &control),
        );
        assert_eq!(skipped_for(&e), None);
        // After it: a keyword again.
        let e = step(
            &mut chat,
            say("m5", "thanks", t0() + Duration::minutes(40), &control),
        );
        assert_eq!(skipped_for(&e), Some(ReasonCode::NoTriggerMatch));
        let e = step(
            &mut chat,
            say("m6", "order 12", t0() + Duration::minutes(41), &control),
        );
        assert_eq!(skipped_for(&e), None);
    }

    #[test]
    fn mention_trigger_needs_a_mention() {
        let control = speaking(Speak {
            trigger: Trigger::Mention,
            ..Speak::default()
        });
        let mut chat = Chat::default();
        let e = step(&mut chat, say("m1", "hi all", t0(), &control));
        assert_eq!(skipped_for(&e), Some(ReasonCode::NoTriggerMatch));
        let mut cmd = say("m2", "@bot hi", t0(), &control);
        if let ChatCommand::Receive { mentioned, .. } = &mut cmd {
            *mentioned = true;
        }
        assert_eq!(skipped_for(&step(&mut chat, cmd)), None);
    }

    #[test]
    fn a_handoff_word_pauses_and_sends_the_handoff_message_even_if_paused() {
        let control = speaking(Speak {
            handoff: Some(Handoff {
                keywords: words(crate::matcher::MatchMode::Word, &["human"]),
                message: Some("A person will answer.".into()),
                pause: Duration::minutes(30),
            }),
            ..Speak::default()
        });
        let mut chat = Chat::default();
        let e = step(&mut chat, say("m1", "a HUMAN please", t0(), &control));
        assert!(matches!(
            &e[1],
            ChatEvent::AiPaused { cause: PauseCause::HandoffKeyword, until, .. }
                if *until == t0() + Duration::minutes(30)
        ));
        assert!(matches!(
            e.last(),
            Some(ChatEvent::AiReplyGenerated {
                notice: Some(Notice::Handoff {
                    by: HandoffBy::Keyword
                }),
                ..
            })
        ));
        // A newer message meanwhile: the notice is neither superseded nor held by the pause.
        step(&mut chat, say("m2", "hello?", t0(), &control));
        assert!(!chat.superseded("r-m1"));
        let e = step(
            &mut chat,
            ChatCommand::SendReply {
                reply_id: "r-m1".into(),
                message_id: "out1".into(),
                at: t0(),
                loop_guard: LoopGuard::default(),
            },
        );
        assert!(
            matches!(&e[0], ChatEvent::MessageSent { text, .. } if text == "A person will answer.")
        );
        // The next message meets the pause (the worker skips it); no second handoff.
        let e = step(
            &mut chat,
            say("m3", "human!!", t0() + Duration::minutes(1), &control),
        );
        assert!(!e.iter().any(|e| matches!(e, ChatEvent::AiPaused { .. })));
    }

    /// Europe/Berlin, weekdays 09:00-18:00, across the spring DST change (2026-03-29): one away
    /// message for the closed period from Friday evening to Monday 09:00 CEST (07:00Z).
    #[test]
    fn away_message_once_per_closed_period_across_a_dst_change() {
        let schedule: BusinessHours = serde_json::from_value(serde_json::json!({
            "time_zone": "Europe/Berlin",
            "ranges": [{"days": "mon-fri", "open": "09:00", "close": "18:00"}]
        }))
        .expect("hours");
        let control = speaking(Speak {
            hours: Some(Hours {
                schedule,
                outside: Outside::Away("Closed until Monday.".into()),
            }),
            ..Speak::default()
        });
        let at = |s: &str| s.parse::<DateTime<Utc>>().expect("time");
        let mut chat = Chat::default();
        // Friday 17:59 CET is open; 18:00 is closed.
        let e = step(
            &mut chat,
            say("m1", "hi", at("2026-03-27T16:59:00Z"), &control),
        );
        assert_eq!(skipped_for(&e), None);
        assert!(!e
            .iter()
            .any(|e| matches!(e, ChatEvent::AiReplyGenerated { .. })));
        let e = step(
            &mut chat,
            say("m2", "hi?", at("2026-03-27T17:00:00Z"), &control),
        );
        let monday = at("2026-03-30T07:00:00Z");
        assert!(matches!(
            e.last(),
            Some(ChatEvent::AiReplyGenerated { notice: Some(Notice::Away { opens_at }), text, .. })
                if *opens_at == monday && text == "Closed until Monday."
        ));
        // Sunday, after the change, and Monday 08:59 CEST: the same closed period, no second one.
        for (id, t) in [
            ("m3", "2026-03-29T12:00:00Z"),
            ("m4", "2026-03-30T06:59:00Z"),
        ] {
            let e = step(&mut chat, say(id, "hello??", at(t), &control));
            assert_eq!(
                skipped_for(&e),
                Some(ReasonCode::OutsideBusinessHours),
                "{t}"
            );
        }
        // While a human has the chat, no away message.
        let mut paused = chat.clone();
        paused.apply(ChatEvent::AiPaused {
            until: at("2026-03-30T06:00:00Z"),
            cause: PauseCause::OperatorSend,
            message_id: "op".into(),
            at: at("2026-03-29T12:00:00Z"),
        });
        paused.away_sent_for = None;
        let e = step(
            &mut paused,
            say("p1", "hi", at("2026-03-29T13:00:00Z"), &control),
        );
        assert!(!e
            .iter()
            .any(|e| matches!(e, ChatEvent::AiReplyGenerated { .. })));
        // Monday 09:00 CEST: open, answered.
        let e = step(&mut chat, say("m5", "good morning", monday, &control));
        assert_eq!(skipped_for(&e), None);
        assert!(matches!(e.last(), Some(ChatEvent::AiReplyRequested { .. })));
        // The next closed period gets its own away message.
        let e = step(
            &mut chat,
            say("m6", "bye", at("2026-03-30T16:30:00Z"), &control),
        );
        assert!(matches!(
            e.last(),
            Some(ChatEvent::AiReplyGenerated {
                notice: Some(Notice::Away { .. }),
                ..
            })
        ));
    }

    #[test]
    fn silent_outside_hours_skips_with_the_opening_time() {
        let schedule: BusinessHours = serde_json::from_value(serde_json::json!({
            "time_zone": "America/New_York",
            "ranges": [{"days": "daily", "open": "08:00", "close": "20:00"}]
        }))
        .expect("hours");
        let control = speaking(Speak {
            hours: Some(Hours {
                schedule,
                outside: Outside::Silent,
            }),
            ..Speak::default()
        });
        let at = |s: &str| s.parse::<DateTime<Utc>>().expect("time");
        let mut chat = Chat::default();
        // 2026-11-01: New York falls back at 02:00; 07:59 EST is 12:59Z, 08:00 EST is 13:00Z.
        let e = step(
            &mut chat,
            say("m1", "early", at("2026-11-01T12:59:00Z"), &control),
        );
        assert!(e.iter().any(|e| matches!(
            e,
            ChatEvent::AiReplySkipped {
                reason: ReplyReason::OutsideBusinessHours { opens_at: Some(t) },
                ..
            } if *t == at("2026-11-01T13:00:00Z")
        )));
        let e = step(
            &mut chat,
            say("m2", "now", at("2026-11-01T13:00:00Z"), &control),
        );
        assert_eq!(skipped_for(&e), None);
    }

    /// The model's handoff: the chat pauses and the handoff text is a notice; without a text the
    /// reply is skipped as `handoff_requested`.
    #[test]
    fn the_models_handoff_pauses_the_chat() {
        let record = |text: &str| ChatCommand::RecordGenerated {
            reply_id: "r1".into(),
            text: text.into(),
            model: "m".into(),
            usage: TokenUsage::default(),
            latency_ms: 5,
            attempts: vec![],
            fallback: false,
            handoff: Some((Duration::minutes(30), t0())),
        };
        let given = || vec![received("m1"), requested("r1", "m1")];
        let paused = ChatEvent::AiPaused {
            until: t0() + Duration::minutes(30),
            cause: PauseCause::HandoffTool,
            message_id: "m1".into(),
            at: t0(),
        };
        let mut generated = generated("r1");
        if let ChatEvent::AiReplyGenerated { notice, .. } = &mut generated {
            *notice = Some(Notice::Handoff {
                by: HandoffBy::Model,
            });
        }
        Fw::with(())
            .given(given())
            .when(record("hello!"))
            .then_expect_events(vec![paused.clone(), generated.clone()]);
        if let ChatEvent::AiReplyGenerated { text, .. } = &mut generated {
            *text = String::new();
        }
        Fw::with(())
            .given(given())
            .when(record(""))
            .then_expect_events(vec![
                paused,
                generated,
                ChatEvent::AiReplySkipped {
                    reply_id: "r1".into(),
                    reason: ReplyReason::HandoffRequested {
                        by: HandoffBy::Model,
                    },
                },
            ]);
    }

    #[test]
    fn a_reply_sent_in_parts_is_one_reply_with_every_id() {
        let parts = ["one", "two", "three"].map(|id| SentPart {
            message_id: id.into(),
            text: format!("part {id}"),
            typed_at: Some(t0()),
            at: t0(),
        });
        let events = Chat::default();
        let mut chat = events;
        for e in [received("m1"), requested("r1", "m1"), generated("r1")] {
            chat.apply(e);
        }
        let e = step(
            &mut chat,
            ChatCommand::RecordSent {
                reply_id: "r1".into(),
                parts: parts.to_vec(),
            },
        );
        let kinds: Vec<String> = e.iter().map(DomainEvent::event_type).collect();
        assert_eq!(
            kinds,
            [
                "TypingIndicated",
                "MessageSent",
                "TypingIndicated",
                "MessageSent",
                "TypingIndicated",
                "MessageSent",
                "AiReplySent"
            ]
        );
        assert!(matches!(
            e.last(),
            Some(ChatEvent::AiReplySent { message_id, more_message_ids, .. })
                if message_id == "one" && *more_message_ids == ["two", "three"]
        ));
        assert_eq!(
            chat.ai_replies_last_hour(t0()),
            1,
            "one reply, three messages"
        );
    }
}
