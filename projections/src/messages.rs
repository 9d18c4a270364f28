//! Messages, chats and the AI log, folded from the `chat` streams: what `GET .../chats`,
//! `GET .../messages` and `GET /v1/ai/logs` answer.
//!
//! The model keeps the newest part of the history in memory, as much as its [`Retention`] allows
//! (ADR 0013): the newest messages across all chats and the newest AI-log rows. What leaves
//! memory stays in the store, and the gateway reads it from there when a page asks for it. A
//! chat's summary (its message count, its last message time) and the totals of every reply stay
//! in memory whatever the retention. Eviction is part of the fold, so a replay with the same
//! retention builds the same model as a running gateway.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use wagate_events::chat::{ChatEvent, MessageKind, ModelAttempt, Source, TokenUsage};
use wagate_events::reason::ReasonCode;

use crate::config::FoldError;
use crate::connection::ConnectionModel;
use crate::stats::StatsModel;
use crate::StoredEvent;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageView {
    pub id: String,
    pub chat_id: String,
    pub direction: Direction,
    pub from: String,
    pub text: String,
    pub from_me: bool,
    pub source: Source,
    /// `text`, `image`, `audio`, … (only text is answered by the AI).
    pub kind: MessageKind,
    /// The sender's profile name, when the transport reports one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_name: Option<String>,
    /// The message's media: MIME type, size, SHA-256 (never the bytes), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<wagate_events::chat::MediaInfo>,
    /// The transcript of a voice note or audio message, once a reply transcribed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<String>,
    /// `received` (inbound); outbound: `sent`, then `delivered`, `read` or `failed` as the
    /// transport reports them.
    #[serde(deserialize_with = "message_status")]
    pub status: StatusName,
    /// Why delivery failed, when the transport said so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_updated_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ai_reply_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub position: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyStatus {
    /// Requested, not decided yet.
    Pending,
    Generated,
    Sent,
    Failed,
    Skipped,
}

impl ReplyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Generated => "generated",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AiLogRow {
    pub id: String,
    pub account_id: String,
    pub chat_id: String,
    pub trigger_message_id: String,
    pub status: ReplyStatus,
    /// Why it was skipped or failed: the human text, and its stable code.
    pub reason: Option<String>,
    pub reason_code: Option<ReasonCode>,
    pub model: Option<String>,
    pub latency_ms: Option<u64>,
    pub usage: Option<TokenUsage>,
    pub reply_text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_message_id: Option<String>,
    /// The further messages of a reply sent in parts (`max_message_chars`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_message_ids: Vec<String>,
    /// Burst debounce: the reply waits for more messages until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// Every model attempt and its outcome (which model, `ok` or the failure class).
    pub attempts: Vec<ModelAttempt>,
    /// Whether the fallback model answered.
    pub fallback: bool,
    /// The trigger's media: kind, MIME type, size, SHA-256 (never the bytes). An image's went to
    /// the model when `vision` was on, a voice note's as its transcript.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<LoggedMedia>,
    /// The transcription of the trigger's voice note, apart from the reply's own model call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcription: Option<LoggedTranscription>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Position of the event that opened the row (the cursor of `GET /v1/ai/logs`).
    pub position: i64,
}

/// The media of a reply's trigger, as the AI log shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedMedia {
    pub kind: MessageKind,
    #[serde(flatten)]
    pub info: wagate_events::chat::MediaInfo,
}

/// A transcription made for a reply: the model, its latency and the usage it reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedTranscription {
    pub model: String,
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
}

impl AiLogRow {
    /// Not decided yet: `pending` or `generated`.
    pub fn is_open(&self) -> bool {
        matches!(self.status, ReplyStatus::Pending | ReplyStatus::Generated)
    }
}

/// How much of the history the model keeps in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// The newest messages, across all chats.
    pub messages: usize,
    /// The newest AI-log rows. A row that leaves while still open stays in memory until it is
    /// decided (start-up recovery and the webhooks need it).
    pub ai_log: usize,
}

impl Retention {
    /// Everything in memory (folds of one chat, scans, tests).
    pub const UNBOUNDED: Retention = Retention {
        messages: usize::MAX,
        ai_log: usize::MAX,
    };
}

impl Default for Retention {
    fn default() -> Self {
        Self::UNBOUNDED
    }
}

/// The chat events that open or change an AI-log row: a fold of these alone gives the AI log
/// (`GET /v1/ai/logs` past memory scans only them, through their own index).
pub const AI_LOG_EVENTS: [&str; 5] = [
    "AiReplyRequested",
    "AiReplyGenerated",
    "AiReplySent",
    "AiReplyFailed",
    "AiReplySkipped",
];

/// Upper bounds (seconds) of the model latency histogram of `/metrics`.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0,
];

/// What AI-log rows add up to (the `/metrics` counters): by status, tokens and model latency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyTotals {
    /// Rows by status.
    pub pending: u64,
    pub in_generated: u64,
    /// Replies the model produced (whatever became of them).
    pub generated: u64,
    pub sent: u64,
    pub failed: u64,
    pub skipped: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Model latency of generated replies (not `echo`): count per bucket of
    /// [`LATENCY_BUCKETS`] (cumulative, as Prometheus wants), count and sum.
    pub latency_buckets: [u64; 12],
    pub latency_count: u64,
    pub latency_sum_ms: u64,
}

impl ReplyTotals {
    /// Counts one row as it is now.
    pub fn add(&mut self, row: &AiLogRow) {
        match row.status {
            ReplyStatus::Pending => self.pending += 1,
            ReplyStatus::Generated => self.in_generated += 1,
            ReplyStatus::Sent => self.sent += 1,
            ReplyStatus::Failed => self.failed += 1,
            ReplyStatus::Skipped => self.skipped += 1,
        }
        // `model` is set with the text; the text itself may be erased by the retention.
        if row.model.is_some() {
            self.generated += 1;
        }
        if let Some(u) = row.usage {
            self.prompt_tokens += u.prompt_tokens;
            self.completion_tokens += u.completion_tokens;
        }
        if let (Some(ms), Some(model)) = (row.latency_ms, &row.model) {
            if model != "echo" {
                let s = ms as f64 / 1000.0;
                self.latency_count += 1;
                self.latency_sum_ms += ms;
                for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
                    if s <= *le {
                        self.latency_buckets[i] += 1;
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatView {
    /// The chat's newest messages, oldest first: all of them unless `evicted > 0`.
    pub messages: VecDeque<MessageView>,
    pub last_message_at: Option<DateTime<Utc>>,
    /// Position of the chat's newest message (the order and cursor of the chat list).
    pub last_position: i64,
    /// Every message the chat has had.
    pub message_count: usize,
    /// How many of its oldest messages left memory (the store has them).
    pub evicted: usize,
    /// The customer's profile name as the transport last reported it (the chat search).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The chat's number in the model's eviction order.
    slot: u32,
}

/// Serializable whole (the start-up checkpoint, ADR 0015): every field, private ones included,
/// is part of the state a fold builds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessagesModel {
    pub position: i64,
    /// Keyed by (account id, JID). Every chat stays; only old messages leave.
    #[serde(with = "pairs")]
    pub chats: BTreeMap<(String, String), ChatView>,
    /// The newest rows, in the order replies were requested.
    pub ai_log: VecDeque<AiLogRow>,
    /// Reply id -> number of its row (the first row ever is 0; `ai_log[0]` is `log_base`).
    index: HashMap<String, u64>,
    log_base: u64,
    /// Rows that left `ai_log` while still open, until they are decided.
    lingering: HashMap<String, AiLogRow>,
    /// Position of the newest row that left `ai_log` (0: none did): every row at or below it is
    /// out of `ai_log`, every row above it is in.
    pub log_evicted_upto: i64,
    /// What decided rows out of memory add to the totals.
    evicted_totals: ReplyTotals,
    /// Chat keys by slot, and the slot of every message in memory, oldest first.
    slots: Vec<(String, String)>,
    order: VecDeque<u32>,
    retention: Retention,
    /// Model tokens (`total_tokens` of generated replies and of transcriptions) per (account id,
    /// UTC day of the event): the daily token budget counts these, so a replay counts the same.
    #[serde(with = "pairs")]
    pub tokens_by_day: HashMap<(String, NaiveDate), u64>,
    /// The overview's numbers (replies, reasons, latency, inbound, tokens by hour and day),
    /// folded from the same events: part of the checkpoint, so a start from one counts as a fold
    /// of the whole history.
    pub stats: StatsModel,
    /// Each account's transport activity (last inbound, last sent, last send failure), the
    /// connection status's folded half: part of the checkpoint like the stats.
    pub connection: ConnectionModel,
}

/// Maps with tuple keys, serialized as sequences of pairs (JSON objects take only text keys).
mod pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<'a, S, M, K, V>(map: &'a M, s: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        &'a M: IntoIterator<Item = (&'a K, &'a V)>,
        K: Serialize + 'a,
        V: Serialize + 'a,
    {
        s.collect_seq(map)
    }

    pub fn deserialize<'de, D, M, K, V>(d: D) -> Result<M, D::Error>
    where
        D: Deserializer<'de>,
        M: FromIterator<(K, V)>,
        K: Deserialize<'de>,
        V: Deserialize<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

/// A message status's name. An alias, not `&'static str` written out: serde's derive would
/// otherwise make the whole model borrow from its input (`'de: 'static`).
pub type StatusName = &'static str;

/// A message's status, as one of the names the fold uses (a checkpoint holds them as text).
fn message_status<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    const NAMES: [&str; 5] = ["received", "sent", "delivered", "read", "failed"];
    let name = String::deserialize(d)?;
    NAMES
        .into_iter()
        .find(|n| *n == name)
        .ok_or_else(|| serde::de::Error::unknown_variant(&name, &NAMES))
}

fn parse(ev: &StoredEvent) -> Result<ChatEvent, FoldError> {
    ChatEvent::deserialize(&ev.payload).map_err(|e| FoldError {
        position: ev.position,
        message: e.to_string(),
    })
}

impl MessagesModel {
    /// The shape of the model as a checkpoint stores it (ADR 0015): a checkpoint of another
    /// format is ignored. Bump it with any change to the model's fields or to its fold, and pin
    /// the new shape in `checkpoint_format_pins_the_folded_model`.
    pub const CHECKPOINT_FORMAT: i32 = 5;

    /// The position of the oldest AI-log row in memory that still has its reply text, if any
    /// (a start from a checkpoint looks for texts erased since, from there on).
    pub fn oldest_text_position(&self) -> Option<i64> {
        self.ai_log
            .iter()
            .chain(self.lingering.values())
            .filter(|r| r.reply_text.is_some())
            .map(|r| r.position)
            .min()
    }

    /// An empty model that keeps at most what `retention` allows in memory.
    pub fn with_retention(retention: Retention) -> Self {
        Self {
            retention,
            ..Self::default()
        }
    }

    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// Folds one event; other aggregate types only advance the position.
    pub fn apply(&mut self, ev: &StoredEvent) -> Result<(), FoldError> {
        let parsed = Self::parse(ev)?;
        self.apply_parsed(ev, parsed)
    }

    /// The typed chat event of `ev` (`None` for other aggregate types). Separate from
    /// [`apply_parsed`](Self::apply_parsed) so a replay can parse in parallel and fold in order.
    pub fn parse(ev: &StoredEvent) -> Result<Option<ChatEvent>, FoldError> {
        if ev.aggregate_type != "chat" {
            return Ok(None);
        }
        parse(ev).map(Some)
    }

    /// Folds an event parsed by [`parse`](Self::parse).
    pub fn apply_parsed(
        &mut self,
        ev: &StoredEvent,
        parsed: Option<ChatEvent>,
    ) -> Result<(), FoldError> {
        self.position = self.position.max(ev.position);
        let Some(parsed) = parsed else {
            return Ok(());
        };
        let Some((acc, jid)) = ev.aggregate_id.split_once('/') else {
            return Err(FoldError {
                position: ev.position,
                message: "chat id is not <account>/<jid>".into(),
            });
        };
        let at = ev.recorded_at;
        self.stats.apply(acc, at, &parsed);
        self.connection.apply(acc, at, ev.position, &parsed);
        let key = || (acc.to_string(), jid.to_string());
        match parsed {
            ChatEvent::MessageReceived {
                message_id,
                from,
                text,
                from_me,
                kind,
                contact_name,
                media,
                ..
            } => {
                if let Some(name) = contact_name.as_ref().filter(|n| !from_me && !n.is_empty()) {
                    self.chat_mut(acc, jid).name = Some(name.clone());
                }
                self.push_message(
                    acc,
                    jid,
                    MessageView {
                        id: message_id,
                        chat_id: jid.to_string(),
                        direction: Direction::Inbound,
                        from,
                        text,
                        from_me,
                        source: if from_me {
                            Source::Operator
                        } else {
                            Source::Customer
                        },
                        kind,
                        contact_name,
                        media,
                        transcript: None,
                        status: "received",
                        status_error: None,
                        status_updated_at: None,
                        ai_reply_id: None,
                        created_at: at,
                        position: ev.position,
                    },
                );
            }
            ChatEvent::MessageSent {
                message_id,
                text,
                source,
                ai_reply_id,
                ..
            } => {
                self.push_message(
                    acc,
                    jid,
                    MessageView {
                        id: message_id,
                        chat_id: jid.to_string(),
                        direction: Direction::Outbound,
                        from: acc.to_string(),
                        text,
                        from_me: true,
                        source,
                        kind: MessageKind::Text,
                        contact_name: None,
                        media: None,
                        transcript: None,
                        status: "sent",
                        status_error: None,
                        status_updated_at: None,
                        ai_reply_id,
                        created_at: at,
                        position: ev.position,
                    },
                );
            }
            ChatEvent::AiReplyRequested {
                reply_id,
                trigger_message_id,
                not_before,
                ..
            } => {
                let media = self.chats.get(&key()).and_then(|c| {
                    c.messages
                        .iter()
                        .rev()
                        .find(|m| m.id == trigger_message_id)
                        .and_then(|m| {
                            m.media
                                .clone()
                                .map(|info| LoggedMedia { kind: m.kind, info })
                        })
                });
                self.push_row(AiLogRow {
                    id: reply_id,
                    account_id: acc.to_string(),
                    chat_id: jid.to_string(),
                    trigger_message_id,
                    status: ReplyStatus::Pending,
                    reason: None,
                    reason_code: None,
                    model: None,
                    latency_ms: None,
                    usage: None,
                    reply_text: None,
                    sent_message_id: None,
                    more_message_ids: vec![],
                    not_before,
                    attempts: vec![],
                    fallback: false,
                    media,
                    transcription: None,
                    created_at: at,
                    updated_at: at,
                    position: ev.position,
                });
            }
            ChatEvent::AiReplySkipped { reply_id, reason } => {
                self.update(&reply_id, at, |r| {
                    r.status = ReplyStatus::Skipped;
                    r.reason_code = Some(reason.kind());
                    r.reason = Some(reason.text());
                });
            }
            ChatEvent::AiReplyGenerated {
                reply_id,
                text,
                model,
                usage,
                latency_ms,
                attempts,
                fallback,
                ..
            } => {
                *self
                    .tokens_by_day
                    .entry((acc.to_string(), at.date_naive()))
                    .or_default() += usage.total_tokens;
                self.update(&reply_id, at, |r| {
                    r.status = ReplyStatus::Generated;
                    // Empty: erased by the AI-log retention.
                    r.reply_text = (!text.is_empty()).then_some(text);
                    r.model = Some(model);
                    r.usage = Some(usage);
                    r.latency_ms = Some(latency_ms);
                    r.attempts = attempts;
                    r.fallback = fallback;
                });
            }
            ChatEvent::AiReplySent {
                reply_id,
                message_id,
                more_message_ids,
            } => {
                self.update(&reply_id, at, |r| {
                    r.status = ReplyStatus::Sent;
                    r.sent_message_id = Some(message_id);
                    r.more_message_ids = more_message_ids;
                });
            }
            ChatEvent::AiReplyFailed {
                reply_id,
                reason,
                attempts,
            } => {
                self.update(&reply_id, at, |r| {
                    r.status = ReplyStatus::Failed;
                    r.reason_code = Some(reason.kind());
                    r.reason = Some(reason.text());
                    if !attempts.is_empty() {
                        r.attempts = attempts;
                    }
                });
            }
            ChatEvent::TypingIndicated { .. }
            | ChatEvent::AiReplySending { .. }
            | ChatEvent::AiPaused { .. }
            | ChatEvent::AiResumed { .. } => {}
            ChatEvent::MessageStatusUpdated {
                message_id,
                status,
                error,
                ..
            } => {
                if let Some(m) = self.chats.get_mut(&key()).and_then(|c| {
                    c.messages
                        .iter_mut()
                        .rev()
                        .find(|m| m.id == message_id && m.direction == Direction::Outbound)
                }) {
                    m.status = status.as_str();
                    m.status_error = error;
                    m.status_updated_at = Some(at);
                }
            }
            ChatEvent::MessageTranscribed {
                message_id,
                text,
                model,
                latency_ms,
                usage,
            } => {
                // The transcription's tokens count against the daily budget like a reply's
                // (none when the transcription API reported no usage).
                if let Some(u) = usage.as_ref().filter(|u| u.total_tokens > 0) {
                    *self
                        .tokens_by_day
                        .entry((acc.to_string(), at.date_naive()))
                        .or_default() += u.total_tokens;
                }
                let logged = LoggedTranscription {
                    model,
                    latency_ms,
                    usage,
                };
                let for_trigger = |r: &&mut AiLogRow| {
                    r.account_id == acc
                        && r.chat_id == jid
                        && r.trigger_message_id == message_id
                        && r.is_open()
                };
                if let Some(row) = self.ai_log.iter_mut().rev().find(for_trigger) {
                    row.transcription = Some(logged);
                } else if let Some(row) = self.lingering.values_mut().find(for_trigger) {
                    row.transcription = Some(logged);
                }
                if let Some(m) = self.chats.get_mut(&key()).and_then(|c| {
                    c.messages
                        .iter_mut()
                        .rev()
                        .find(|m| m.id == message_id && m.direction == Direction::Inbound)
                }) {
                    m.transcript = Some(text);
                }
            }
        }
        Ok(())
    }

    /// A chat's view, made (with the next slot) when it is new.
    fn chat_mut(&mut self, acc: &str, jid: &str) -> &mut ChatView {
        let next_slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        let key = (acc.to_string(), jid.to_string());
        if !self.chats.contains_key(&key) {
            self.slots.push(key.clone());
        }
        self.chats.entry(key).or_insert_with(|| ChatView {
            slot: next_slot,
            ..ChatView::default()
        })
    }

    /// Adds a message to its chat, then lets the oldest messages in memory go past the
    /// retention.
    fn push_message(&mut self, acc: &str, jid: &str, view: MessageView) {
        let chat = self.chat_mut(acc, jid);
        chat.last_message_at = Some(view.created_at);
        chat.last_position = view.position;
        chat.message_count += 1;
        chat.messages.push_back(view);
        let slot = chat.slot;
        if self.retention.messages == usize::MAX {
            return;
        }
        self.order.push_back(slot);
        while self.order.len() > self.retention.messages {
            // Messages enter `order` in position order, so the front is its chat's oldest.
            let Some(slot) = self.order.pop_front() else {
                break;
            };
            if let Some(chat) = self
                .slots
                .get(slot as usize)
                .and_then(|key| self.chats.get_mut(key))
            {
                chat.messages.pop_front();
                chat.evicted += 1;
            }
        }
    }

    /// Adds a reply's row, then lets the oldest rows go past the retention.
    fn push_row(&mut self, row: AiLogRow) {
        self.index
            .insert(row.id.clone(), self.log_base + self.ai_log.len() as u64);
        self.ai_log.push_back(row);
        while self.ai_log.len() > self.retention.ai_log {
            let Some(row) = self.take_front_row() else {
                break;
            };
            self.log_evicted_upto = row.position;
            if row.is_open() {
                self.lingering.insert(row.id.clone(), row);
            } else {
                self.evicted_totals.add(&row);
            }
        }
    }

    /// Removes the oldest row in memory and returns it (no totals kept: a scan of the store
    /// uses this to hand rows out in order).
    pub fn take_front_row(&mut self) -> Option<AiLogRow> {
        let row = self.ai_log.pop_front()?;
        self.log_base += 1;
        self.index.remove(&row.id);
        Some(row)
    }

    /// Where a reply's row is in `ai_log`, if it is there.
    fn log_slot(&self, reply_id: &str) -> Option<usize> {
        self.index
            .get(reply_id)
            .and_then(|n| usize::try_from(n - self.log_base).ok())
    }

    /// A reply's row in memory, to change it.
    fn row_mut(&mut self, reply_id: &str) -> Option<&mut AiLogRow> {
        match self.log_slot(reply_id) {
            Some(i) => self.ai_log.get_mut(i),
            None => self.lingering.get_mut(reply_id),
        }
    }

    fn update(&mut self, reply_id: &str, at: DateTime<Utc>, f: impl FnOnce(&mut AiLogRow)) {
        if let Some(row) = self.row_mut(reply_id) {
            f(row);
            row.updated_at = at;
        }
        // A row out of memory that got decided leaves for good.
        if self.lingering.get(reply_id).is_some_and(|r| !r.is_open()) {
            if let Some(row) = self.lingering.remove(reply_id) {
                self.evicted_totals.add(&row);
            }
        }
    }

    /// Forgets these replies' texts (the AI-log retention erased them from their events).
    pub fn erase_reply_texts(&mut self, reply_ids: &[String]) {
        for id in reply_ids {
            if let Some(row) = self.row_mut(id) {
                row.reply_text = None;
            }
        }
    }

    /// Model tokens the account used on UTC day `day`.
    pub fn tokens_on(&self, account_id: &str, day: NaiveDate) -> u64 {
        self.tokens_by_day
            .get(&(account_id.to_string(), day))
            .copied()
            .unwrap_or(0)
    }

    /// A reply's row, if it is in memory (every open row is).
    pub fn reply(&self, reply_id: &str) -> Option<&AiLogRow> {
        match self.log_slot(reply_id) {
            Some(i) => self.ai_log.get(i),
            None => self.lingering.get(reply_id),
        }
    }

    /// Rows that left `ai_log` while open and are not decided yet.
    pub fn lingering(&self) -> impl Iterator<Item = &AiLogRow> {
        self.lingering.values()
    }

    /// Every row the model has folded, in memory or not.
    pub fn ai_log_rows_total(&self) -> u64 {
        self.log_base + self.ai_log.len() as u64
    }

    /// The totals of every row the model has folded.
    pub fn totals(&self) -> ReplyTotals {
        let mut t = self.evicted_totals;
        for row in self.ai_log.iter().chain(self.lingering.values()) {
            t.add(row);
        }
        t
    }

    /// Every message the model has folded, in memory or not.
    pub fn message_count(&self) -> usize {
        self.chats.values().map(|c| c.message_count).sum()
    }

    /// Chats with replies that have not reached a terminal state (start-up recovery).
    /// The replies open, unchanged, since before `before`: (account, chat, reply ids).
    pub fn replies_open_before(
        &self,
        before: DateTime<Utc>,
    ) -> Vec<((String, String), Vec<String>)> {
        let mut by_chat: std::collections::BTreeMap<(String, String), Vec<String>> =
            Default::default();
        for r in self.ai_log.iter().chain(self.lingering.values()) {
            if r.is_open() && r.updated_at < before {
                by_chat
                    .entry((r.account_id.clone(), r.chat_id.clone()))
                    .or_default()
                    .push(r.id.clone());
            }
        }
        by_chat.into_iter().collect()
    }

    pub fn chats_with_open_replies(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .ai_log
            .iter()
            .chain(self.lingering.values())
            .filter(|r| r.is_open())
            .map(|r| (r.account_id.clone(), r.chat_id.clone()))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ev(pos: i64, payload: serde_json::Value) -> StoredEvent {
        StoredEvent {
            position: pos,
            aggregate_type: "chat".into(),
            aggregate_id: "acme/1@s.whatsapp.net".into(),
            sequence: pos,
            event_type: String::new(),
            event_version: "1".into(),
            payload,
            metadata: Default::default(),
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn folds_messages_and_reply_life() {
        let mut m = MessagesModel::default();
        let at = "2026-11-25T10:00:00Z";
        for (i, p) in [
            json!({"MessageReceived":{"message_id":"m1","from":"1","text":"hi","from_me":false,"at":at}}),
            json!({"AiReplyRequested":{"reply_id":"r1","trigger_message_id":"m1"}}),
            json!({"AiReplyGenerated":{"reply_id":"r1","text":"hello","model":"gpt","usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5},"latency_ms":7}}),
        ]
        .into_iter()
        .enumerate()
        {
            m.apply(&ev(i as i64 + 1, p)).expect("fold");
        }
        assert_eq!(m.chats_with_open_replies().len(), 1);
        m.apply(&ev(4, json!({"MessageSent":{"message_id":"o1","text":"hello","source":"ai","ai_reply_id":"r1","at":at}})))
            .expect("fold");
        m.apply(&ev(
            5,
            json!({"AiReplySent":{"reply_id":"r1","message_id":"o1"}}),
        ))
        .expect("fold");
        let row = m.reply("r1").expect("row");
        assert_eq!(row.status, ReplyStatus::Sent);
        assert_eq!(row.usage.map(|u| u.total_tokens), Some(5));
        assert!(m.chats_with_open_replies().is_empty());
        let chat = &m.chats[&("acme".to_string(), "1@s.whatsapp.net".to_string())];
        assert_eq!(chat.messages.len(), 2);
        assert_eq!(chat.messages[1].direction, Direction::Outbound);
        assert_eq!(chat.messages[1].status, "sent");
        m.apply(&ev(
            6,
            json!({"MessageStatusUpdated":{"message_id":"o1","status":"read","at":at}}),
        ))
        .expect("fold");
        let chat = &m.chats[&("acme".to_string(), "1@s.whatsapp.net".to_string())];
        assert_eq!(chat.messages[1].status, "read");
        assert_eq!(chat.messages[0].kind, MessageKind::Text);
    }

    /// A transcription's tokens count against the day's budget like a reply's; one without a
    /// reported usage counts nothing.
    #[test]
    fn transcription_tokens_count_toward_the_day() {
        let mut m = MessagesModel::default();
        let at = "2026-11-25T10:00:00Z";
        for (i, p) in [
            json!({"MessageReceived":{"message_id":"m1","from":"1","text":"[audio]","from_me":false,"at":at}}),
            json!({"AiReplyRequested":{"reply_id":"r1","trigger_message_id":"m1"}}),
            json!({"MessageTranscribed":{"message_id":"m1","text":"hello","model":"whisper","latency_ms":9,"usage":{"prompt_tokens":20,"completion_tokens":4,"total_tokens":24}}}),
            json!({"AiReplyGenerated":{"reply_id":"r1","text":"hi","model":"gpt","usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5},"latency_ms":7}}),
            json!({"MessageReceived":{"message_id":"m2","from":"1","text":"[audio]","from_me":false,"at":at}}),
            json!({"MessageTranscribed":{"message_id":"m2","text":"again","model":"whisper","latency_ms":9}}),
        ]
        .into_iter()
        .enumerate()
        {
            m.apply(&ev(i as i64 + 1, p)).expect("fold");
        }
        let day = Utc::now().date_naive();
        assert_eq!(m.tokens_on("acme", day), 24 + 5);
        assert_eq!(m.stats.tokens_on("acme", day), 24 + 5, "the overview too");
    }

    fn chat_ev(pos: i64, chat: &str, payload: serde_json::Value) -> StoredEvent {
        StoredEvent {
            aggregate_id: format!("acme/{chat}@s.whatsapp.net"),
            ..ev(pos, payload)
        }
    }

    /// Three chats take turns: an inbound message, a reply requested, generated, sent.
    fn exchanges(n: i64) -> Vec<StoredEvent> {
        let at = "2026-11-25T10:00:00Z";
        let mut out = vec![];
        for i in 0..n {
            let chat = (i % 3).to_string();
            let p = out.len() as i64;
            out.push(chat_ev(p + 1, &chat, json!({"MessageReceived":{"message_id":format!("m{i}"),"from":"1","text":"hi","from_me":false,"at":at}})));
            out.push(chat_ev(p + 2, &chat, json!({"AiReplyRequested":{"reply_id":format!("r{i}"),"trigger_message_id":format!("m{i}")}})));
            out.push(chat_ev(p + 3, &chat, json!({"AiReplyGenerated":{"reply_id":format!("r{i}"),"text":"hello","model":"gpt","usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5},"latency_ms":700}})));
            if i != 1 {
                out.push(chat_ev(p + 4, &chat, json!({"MessageSent":{"message_id":format!("o{i}"),"text":"hello","source":"ai","ai_reply_id":format!("r{i}"),"at":at}})));
                out.push(chat_ev(p + 5, &chat, json!({"AiReplySent":{"reply_id":format!("r{i}"),"message_id":format!("o{i}")}})));
            }
        }
        out
    }

    #[test]
    fn retention_keeps_the_newest_and_the_totals_of_everything() {
        let mut all = MessagesModel::default();
        let mut bounded = MessagesModel::with_retention(Retention {
            messages: 4,
            ai_log: 3,
        });
        for e in exchanges(10) {
            all.apply(&e).expect("fold");
            bounded.apply(&e).expect("fold");
        }
        // Messages: the newest 4 across chats, each chat's in order; counts of everything.
        let in_memory: usize = bounded.chats.values().map(|c| c.messages.len()).sum();
        assert_eq!(in_memory, 4);
        assert_eq!(bounded.message_count(), all.message_count());
        assert_eq!(bounded.message_count(), 19);
        for (key, chat) in &bounded.chats {
            let full = &all.chats[key];
            assert_eq!(chat.message_count, full.message_count);
            assert_eq!(chat.evicted + chat.messages.len(), full.messages.len());
            assert!(full
                .messages
                .iter()
                .skip(chat.evicted)
                .eq(chat.messages.iter()));
        }
        // Rows: the newest 3, the open r1 kept until decided, totals of all ten.
        let ids: Vec<&str> = bounded.ai_log.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["r7", "r8", "r9"]);
        assert_eq!(
            bounded.reply("r1").map(|r| r.status),
            Some(ReplyStatus::Generated)
        );
        assert!(bounded.reply("r2").is_none());
        assert_eq!(bounded.ai_log_rows_total(), 10);
        assert_eq!(bounded.totals(), all.totals());
        assert_eq!(bounded.totals().sent, 9);
        assert_eq!(bounded.totals().generated, 10);
        assert_eq!(bounded.totals().latency_count, 10);
        assert_eq!(
            bounded.chats_with_open_replies(),
            all.chats_with_open_replies()
        );
        assert_eq!(
            bounded.log_evicted_upto,
            all.reply("r6").map(|r| r.position).unwrap_or_default()
        );
        // r1 is decided: it leaves memory, and the totals still count it once.
        let failed = chat_ev(
            1000,
            "1",
            json!({"AiReplyFailed":{"reply_id":"r1","reason":"interrupted"}}),
        );
        all.apply(&failed).expect("fold");
        bounded.apply(&failed).expect("fold");
        assert!(bounded.reply("r1").is_none());
        assert_eq!(bounded.lingering().count(), 0);
        assert_eq!(bounded.totals(), all.totals());
        assert_eq!(bounded.totals().failed, 1);
        assert!(bounded.chats_with_open_replies().is_empty());
    }

    #[test]
    fn no_messages_in_memory_still_counts_chats() {
        let mut m = MessagesModel::with_retention(Retention {
            messages: 0,
            ai_log: 0,
        });
        for e in exchanges(4) {
            m.apply(&e).expect("fold");
        }
        assert_eq!(m.chats.len(), 3);
        assert!(m.chats.values().all(|c| c.messages.is_empty()));
        assert_eq!(m.message_count(), 7);
        assert!(m.ai_log.is_empty());
        assert_eq!(m.chats_with_open_replies().len(), 1);
        assert_eq!(m.totals().sent, 3);
    }

    /// Given reply events stored before reasons had codes (text) and after (code + details),
    /// when they are folded, then the AI log shows the same text for both and the code.
    #[test]
    fn ai_log_rows_carry_the_reason_text_and_code_of_old_and_new_events() {
        let at = "2026-11-25T10:00:00Z";
        let mut m = MessagesModel::default();
        let events = [
            json!({"MessageReceived":{"message_id":"x","from":"1","text":"hi","from_me":false,"at":at}}),
            json!({"AiReplyRequested":{"reply_id":"old","trigger_message_id":"x"}}),
            json!({"AiReplyRequested":{"reply_id":"new","trigger_message_id":"x"}}),
            json!({"AiReplyRequested":{"reply_id":"odd","trigger_message_id":"x"}}),
            json!({"AiReplySkipped":{"reply_id":"old","reason":"no API key configured"}}),
            json!({"AiReplySkipped":{"reply_id":"new","reason":{"code":"no_api_key"}}}),
            json!({"AiReplyFailed":{"reply_id":"odd","reason":"a text from an older build"}}),
        ];
        for (i, e) in events.into_iter().enumerate() {
            m.apply(&chat_ev(i as i64 + 1, "1", e)).expect("fold");
        }
        let row = |id: &str| {
            m.reply(id)
                .map(|r| (r.reason.clone(), r.reason_code.map(|c| c.as_str())))
        };
        let no_key = Some((
            Some("no API key configured".to_string()),
            Some("no_api_key"),
        ));
        assert_eq!(row("old"), no_key);
        assert_eq!(row("new"), no_key);
        assert_eq!(
            row("odd"),
            Some((
                Some("a text from an older build".to_string()),
                Some("other")
            ))
        );
    }

    #[test]
    fn the_ai_log_events_alone_make_the_ai_log() {
        let mut events = exchanges(6);
        let at = "2026-11-25T10:00:00Z";
        let n = events.len() as i64;
        events.push(chat_ev(n + 1, "2", json!({"MessageReceived":{"message_id":"x","from":"1","text":"hi","from_me":false,"at":at}})));
        events.push(chat_ev(
            n + 2,
            "2",
            json!({"AiReplyRequested":{"reply_id":"rx","trigger_message_id":"x"}}),
        ));
        events.push(chat_ev(
            n + 3,
            "2",
            json!({"AiReplySkipped":{"reply_id":"rx","reason":"no API key configured"}}),
        ));
        events.push(chat_ev(
            n + 4,
            "1",
            json!({"AiReplyFailed":{"reply_id":"r1","reason":"interrupted"}}),
        ));
        events.push(chat_ev(
            n + 5,
            "1",
            json!({"MessageStatusUpdated":{"message_id":"o0","status":"read","at":at}}),
        ));
        let mut all = MessagesModel::default();
        let mut only = MessagesModel::default();
        for mut e in events {
            e.event_type = e
                .payload
                .as_object()
                .and_then(|o| o.keys().next().cloned())
                .unwrap_or_default();
            all.apply(&e).expect("fold");
            if AI_LOG_EVENTS.contains(&e.event_type.as_str()) {
                only.apply(&e).expect("fold");
            }
        }
        assert_eq!(only.ai_log, all.ai_log);
        assert_eq!(only.totals(), all.totals());
        assert_eq!(all.totals().skipped, 1);
        assert_eq!(all.totals().failed, 1);
    }

    /// A small model with something in every part of its state: messages and rows evicted, a
    /// row lingering open, totals and tokens of evicted rows, a delivery status.
    fn every_part_folded() -> MessagesModel {
        let mut m = MessagesModel::with_retention(Retention {
            messages: 3,
            ai_log: 1,
        });
        let at = "2026-11-25T10:00:00Z";
        let recorded: DateTime<Utc> = at.parse().expect("time");
        for (pos, chat, p) in [
            (
                1,
                "1",
                json!({"MessageReceived":{"message_id":"m1","from":"1","text":"hi","from_me":false,"at":at}}),
            ),
            (
                2,
                "1",
                json!({"AiReplyRequested":{"reply_id":"r1","trigger_message_id":"m1"}}),
            ),
            (
                3,
                "1",
                json!({"AiReplyGenerated":{"reply_id":"r1","text":"hello","model":"gpt","usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5},"latency_ms":700}}),
            ),
            (
                4,
                "1",
                json!({"MessageSent":{"message_id":"o1","text":"hello","source":"ai","ai_reply_id":"r1","at":at}}),
            ),
            (
                5,
                "1",
                json!({"AiReplySent":{"reply_id":"r1","message_id":"o1"}}),
            ),
            (
                6,
                "1",
                json!({"MessageStatusUpdated":{"message_id":"o1","status":"read","at":at}}),
            ),
            (
                7,
                "2",
                json!({"MessageReceived":{"message_id":"m2","from":"2","text":"yo","from_me":false,"at":at,"contact_name":"Ana"}}),
            ),
            (
                8,
                "2",
                json!({"AiReplyRequested":{"reply_id":"r2","trigger_message_id":"m2"}}),
            ),
            (
                9,
                "2",
                json!({"MessageReceived":{"message_id":"m3","from":"2","text":"?","from_me":false,"at":at}}),
            ),
            (
                10,
                "2",
                json!({"AiReplyRequested":{"reply_id":"r3","trigger_message_id":"m3"}}),
            ),
        ] {
            let mut e = chat_ev(pos, chat, p);
            e.recorded_at = recorded;
            m.apply(&e).expect("fold");
        }
        m
    }

    const PINNED: &str = r#"{
 "ai_log": [
  {
   "account_id": "acme",
   "attempts": [],
   "chat_id": "2@s.whatsapp.net",
   "created_at": "2026-11-25T10:00:00Z",
   "fallback": false,
   "id": "r3",
   "latency_ms": null,
   "model": null,
   "position": 10,
   "reason": null,
   "reason_code": null,
   "reply_text": null,
   "status": "pending",
   "trigger_message_id": "m3",
   "updated_at": "2026-11-25T10:00:00Z",
   "usage": null
  }
 ],
 "chats": [
  [
   [
    "acme",
    "1@s.whatsapp.net"
   ],
   {
    "evicted": 1,
    "last_message_at": "2026-11-25T10:00:00Z",
    "last_position": 4,
    "message_count": 2,
    "messages": [
     {
      "ai_reply_id": "r1",
      "chat_id": "1@s.whatsapp.net",
      "created_at": "2026-11-25T10:00:00Z",
      "direction": "outbound",
      "from": "acme",
      "from_me": true,
      "id": "o1",
      "kind": "text",
      "position": 4,
      "source": "ai",
      "status": "read",
      "status_updated_at": "2026-11-25T10:00:00Z",
      "text": "hello"
     }
    ],
    "slot": 0
   }
  ],
  [
   [
    "acme",
    "2@s.whatsapp.net"
   ],
   {
    "evicted": 0,
    "last_message_at": "2026-11-25T10:00:00Z",
    "last_position": 9,
    "message_count": 2,
    "messages": [
     {
      "chat_id": "2@s.whatsapp.net",
      "contact_name": "Ana",
      "created_at": "2026-11-25T10:00:00Z",
      "direction": "inbound",
      "from": "2",
      "from_me": false,
      "id": "m2",
      "kind": "text",
      "position": 7,
      "source": "customer",
      "status": "received",
      "text": "yo"
     },
     {
      "chat_id": "2@s.whatsapp.net",
      "created_at": "2026-11-25T10:00:00Z",
      "direction": "inbound",
      "from": "2",
      "from_me": false,
      "id": "m3",
      "kind": "text",
      "position": 9,
      "source": "customer",
      "status": "received",
      "text": "?"
     }
    ],
    "name": "Ana",
    "slot": 1
   }
  ]
 ],
 "connection": {
  "accounts": {
   "acme": {
    "last_inbound": {
     "at": "2026-11-25T10:00:00Z",
     "position": 9
    },
    "last_send_error": null,
    "last_sent": {
     "at": "2026-11-25T10:00:00Z",
     "position": 4
    }
   }
  }
 },
 "evicted_totals": {
  "completion_tokens": 2,
  "failed": 0,
  "generated": 1,
  "in_generated": 0,
  "latency_buckets": [
   0,
   0,
   0,
   0,
   1,
   1,
   1,
   1,
   1,
   1,
   1,
   1
  ],
  "latency_count": 1,
  "latency_sum_ms": 700,
  "pending": 0,
  "prompt_tokens": 3,
  "sent": 1,
  "skipped": 0
 },
 "index": {
  "r3": 2
 },
 "lingering": {
  "r2": {
   "account_id": "acme",
   "attempts": [],
   "chat_id": "2@s.whatsapp.net",
   "created_at": "2026-11-25T10:00:00Z",
   "fallback": false,
   "id": "r2",
   "latency_ms": null,
   "model": null,
   "position": 8,
   "reason": null,
   "reason_code": null,
   "reply_text": null,
   "status": "pending",
   "trigger_message_id": "m2",
   "updated_at": "2026-11-25T10:00:00Z",
   "usage": null
  }
 },
 "log_base": 2,
 "log_evicted_upto": 8,
 "order": [
  0,
  1,
  1
 ],
 "position": 10,
 "retention": {
  "ai_log": 1,
  "messages": 3
 },
 "slots": [
  [
   "acme",
   "1@s.whatsapp.net"
  ],
  [
   "acme",
   "2@s.whatsapp.net"
  ]
 ],
 "stats": {
  "days": {
   "2026-11-25": {
    "acme": 5
   }
  },
  "hours": {
   "498778": {
    "acme": {
     "failed": 0,
     "inbound": 3,
     "latency": {
      "buckets": {
       "279": 1
      }
     },
     "reasons": [],
     "sent": 1,
     "skipped": 0
    }
   }
  },
  "newest_hour": 498778
 },
 "tokens_by_day": [
  [
   [
    "acme",
    "2026-11-25"
   ],
   5
  ]
 ]
}"#;

    /// Checkpoints store the model as serialized; one folded with another shape or fold would be
    /// read wrong. If this fails, the model or its fold changed: bump
    /// `MessagesModel::CHECKPOINT_FORMAT` and pin the new shape here.
    #[test]
    fn checkpoint_format_pins_the_folded_model() {
        let model: serde_json::Value = serde_json::from_str(PINNED).expect("pinned JSON");
        let pinned = json!({"format": 5, "model": model});
        let model = every_part_folded();
        let now = json!({"format": MessagesModel::CHECKPOINT_FORMAT, "model": model});
        assert_eq!(
            now,
            pinned,
            "the checkpoint of a folded model changed: bump MessagesModel::CHECKPOINT_FORMAT and pin it here:\n{}",
            serde_json::to_string(&now["model"]).unwrap_or_default()
        );
        let back: MessagesModel = serde_json::from_value(now["model"].clone()).expect("reads back");
        assert_eq!(back, model);
        assert_eq!(
            back.oldest_text_position(),
            None,
            "r1's row left memory decided"
        );
    }
}
