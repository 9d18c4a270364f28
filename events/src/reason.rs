//! Why an AI reply was skipped or failed: a closed set of stable codes ([`ReasonCode`], what
//! clients match on) with the details that vary kept in typed fields of [`ReplyReason`], and the
//! human text derived from both ([`ReplyReason::text`], what people read).
//!
//! Reasons live inside permanent events (`AiReplySkipped`, `AiReplyFailed`). Events written
//! before codes existed hold the human text; [`compat`] reads both shapes and maps a known legacy
//! text to its reason (only when the reason's text is that very text, so an old event folds to
//! the same answer), keeping any other text as [`ReplyReason::Other`].

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use crate::chat::{MessageKind, PauseCause, LOOP_CAP, LOOP_WINDOW_MINUTES};
use crate::ids::ChatKind;

/// Which configuration layer a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    Chat,
    Account,
    Global,
    Env,
    Default,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Account => "account",
            Self::Global => "global",
            Self::Env => "env",
            Self::Default => "default",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "chat" => Self::Chat,
            "account" => Self::Account,
            "global" => Self::Global,
            "env" => Self::Env,
            "default" => Self::Default,
            _ => return None,
        })
    }
}

/// Where a reply was found superseded by a newer customer message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupersededAt {
    /// Waiting in the chat's queue, or when its worker started.
    Queue,
    /// Within its burst-debounce window.
    Debounce,
    /// Already generated, at the send (not sent).
    Send,
}

/// The class of a failed model call (its HTTP status, if any, is kept beside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelErrorClass {
    /// The outbound guard refused the target, or the base URL is not valid.
    Refused,
    Timeout,
    Connect,
    Unauthorized,
    RateLimited,
    ServerError,
    /// Another 4xx or a 3xx.
    Rejected,
    Malformed,
    Setup,
}

/// The stable code of a reason: what clients match on (`reason_code` in the API and webhooks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    Blocked,
    Disabled,
    StatusBroadcast,
    ChatKindOff,
    NoApiKey,
    KeyOriginMismatch,
    KeyUndecryptable,
    AccountNotFound,
    InvalidChat,
    ShuttingDown,
    PausedByHuman,
    LoopGuard,
    BotLoop,
    HourlyCap,
    BudgetExhausted,
    NotText,
    TranscriptionOff,
    MediaFailed,
    OutsideBusinessHours,
    NoTriggerMatch,
    HandoffRequested,
    Superseded,
    ModelError,
    SendFailed,
    TextErased,
    Interrupted,
    SupervisorUnavailable,
    WorkerStopped,
    /// A legacy text no code was found for.
    Other,
}

impl ReasonCode {
    /// Every code, in the order docs/API.md lists them.
    pub const ALL: [ReasonCode; 29] = [
        Self::Blocked,
        Self::Disabled,
        Self::StatusBroadcast,
        Self::ChatKindOff,
        Self::NoApiKey,
        Self::KeyOriginMismatch,
        Self::KeyUndecryptable,
        Self::AccountNotFound,
        Self::InvalidChat,
        Self::ShuttingDown,
        Self::PausedByHuman,
        Self::LoopGuard,
        Self::BotLoop,
        Self::HourlyCap,
        Self::BudgetExhausted,
        Self::NotText,
        Self::TranscriptionOff,
        Self::MediaFailed,
        Self::OutsideBusinessHours,
        Self::NoTriggerMatch,
        Self::HandoffRequested,
        Self::Superseded,
        Self::ModelError,
        Self::SendFailed,
        Self::TextErased,
        Self::Interrupted,
        Self::SupervisorUnavailable,
        Self::WorkerStopped,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blocked => "blocked",
            Self::Disabled => "disabled",
            Self::StatusBroadcast => "status_broadcast",
            Self::ChatKindOff => "chat_kind_off",
            Self::NoApiKey => "no_api_key",
            Self::KeyOriginMismatch => "key_origin_mismatch",
            Self::KeyUndecryptable => "key_undecryptable",
            Self::AccountNotFound => "account_not_found",
            Self::InvalidChat => "invalid_chat",
            Self::ShuttingDown => "shutting_down",
            Self::PausedByHuman => "paused_by_human",
            Self::LoopGuard => "loop_guard",
            Self::BotLoop => "bot_loop",
            Self::HourlyCap => "hourly_cap",
            Self::BudgetExhausted => "budget_exhausted",
            Self::NotText => "not_text",
            Self::TranscriptionOff => "transcription_off",
            Self::MediaFailed => "media_failed",
            Self::OutsideBusinessHours => "outside_business_hours",
            Self::NoTriggerMatch => "no_trigger_match",
            Self::HandoffRequested => "handoff_requested",
            Self::Superseded => "superseded",
            Self::ModelError => "model_error",
            Self::SendFailed => "send_failed",
            Self::TextErased => "text_erased",
            Self::Interrupted => "interrupted",
            Self::SupervisorUnavailable => "supervisor_unavailable",
            Self::WorkerStopped => "worker_stopped",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What made the loop guard think the other side is a bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoopPattern {
    /// Each of our last replies was answered within seconds.
    QuickReplies,
    /// The same message again and again.
    Repeats,
    /// Our own reply sent back to us.
    Echo,
}

/// Which trigger a message did not meet (`trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    /// `keywords`: no keyword matched and the conversation window was over.
    Keywords,
    /// `mention`: a group message that neither mentions the account nor replies to it.
    Mention,
}

/// Who asked for a human.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoffBy {
    /// The customer's message matched `handoff_keywords`.
    Keyword,
    /// The model called the `handoff_to_human` tool.
    Model,
}

/// Why a reply was skipped or failed. Serialized as `{"code": "<code>", <details>}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum ReplyReason {
    /// The chat is blocked.
    Blocked,
    /// `enabled` is false in the layer that decides it.
    Disabled { source: Layer },
    /// Status broadcasts are never answered.
    StatusBroadcast,
    /// The `reply_to_*` flag of the chat's kind is false.
    ChatKindOff { kind: ChatKind, source: Layer },
    /// No API key at all (the seed's `no API key configured`).
    NoApiKey,
    /// A key exists, but it was entered for another origin than the effective base URL's.
    KeyOriginMismatch {
        source: Layer,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_origin: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base_origin: Option<String>,
    },
    /// The stored key cannot be opened with the configured master keys.
    KeyUndecryptable,
    /// The account was deleted (or never existed) when the reply was worked on.
    AccountNotFound,
    /// The chat id does not name a chat kind (`detail`: why).
    InvalidChat { detail: String },
    /// The gateway was shutting down.
    ShuttingDown,
    /// Human takeover: the AI is paused in this chat until `until`.
    PausedByHuman {
        until: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<PauseCause>,
    },
    /// The former loop guard: `limit` AI replies in `window_minutes` in this chat (replies before
    /// issue 24; the plain volume cap is now `max_replies_per_chat_per_hour`).
    LoopGuard { limit: u32, window_minutes: u32 },
    /// The other side looks like a bot: the `pattern` seen `count` times in a row (`seconds`: the
    /// quick-answer threshold, for that pattern).
    BotLoop {
        pattern: LoopPattern,
        count: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seconds: Option<u32>,
    },
    /// `max_replies_per_chat_per_hour`: `count` replies in the last hour reached `limit`.
    HourlyCap { count: u64, limit: u32 },
    /// `daily_token_budget`: `used` of `limit` tokens used today (UTC) by the account.
    BudgetExhausted { used: u64, limit: u64 },
    /// The trigger is not a text message.
    NotText { kind: MessageKind },
    /// The trigger is a voice note or audio, and no `transcription_model` is set.
    TranscriptionOff,
    /// The trigger's media could not be used: its bytes are gone, they could not be had at the
    /// edge (`not available: <why>`: a failed download, an oversize file, a MIME mismatch; see
    /// `MediaInfo::unavailable`), or the transcription failed (`detail`: the cause, sanitized:
    /// never a body, a key, a URL or a transcript).
    MediaFailed { detail: String },
    /// The message came outside business hours, and `outside_hours` is `silent` (or the away
    /// message was sent already in this closed period). `opens_at`: when the business opens.
    OutsideBusinessHours {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        opens_at: Option<DateTime<Utc>>,
    },
    /// `trigger` is `keywords` or `mention`, and the message did not trigger the AI.
    NoTriggerMatch { trigger: TriggerKind },
    /// A human was asked for (by a handoff keyword or the model): the chat is paused, and no
    /// handoff message is set.
    HandoffRequested { by: HandoffBy },
    /// A newer customer message arrived; its reply answers the whole conversation.
    Superseded { at: SupersededAt },
    /// The model call failed (after retries, and the fallback's when there is one: `class` and
    /// `status` are the last failure's). `message` is the sanitized text (never a body or a key).
    ModelError {
        class: ModelErrorClass,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        message: String,
    },
    /// The transport did not send (`attempts`: set when retryable refusals ran out). `detail`
    /// is the transport's sanitized reason.
    SendFailed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempts: Option<u32>,
        detail: String,
    },
    /// The AI-log retention erased the reply's text before it was sent.
    TextErased,
    /// The process stopped before the reply reached a terminal event.
    Interrupted,
    /// The AI supervisor could not start the reply's worker.
    SupervisorUnavailable,
    /// The reply's worker ended without recording an outcome.
    WorkerStopped,
    /// A legacy text no code was found for.
    Other { text: String },
}

impl fmt::Display for ReplyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

impl std::error::Error for ReplyReason {}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn kind_flag(kind: ChatKind) -> &'static str {
    match kind {
        ChatKind::Private => "reply_to_private",
        ChatKind::Group => "reply_to_groups",
        ChatKind::Channel => "reply_to_channels",
        ChatKind::Broadcast => "reply_to_broadcasts",
    }
}

const NO_API_KEY: &str = "no API key configured";
const KEY_UNDECRYPTABLE: &str =
    "the stored API key cannot be decrypted (is the master key that sealed it configured?)";

impl ReplyReason {
    /// The loop guard's reason with the domain's limits.
    pub fn loop_guard() -> Self {
        Self::LoopGuard {
            limit: LOOP_CAP as u32,
            window_minutes: LOOP_WINDOW_MINUTES as u32,
        }
    }

    pub fn kind(&self) -> ReasonCode {
        match self {
            Self::Blocked => ReasonCode::Blocked,
            Self::Disabled { .. } => ReasonCode::Disabled,
            Self::StatusBroadcast => ReasonCode::StatusBroadcast,
            Self::ChatKindOff { .. } => ReasonCode::ChatKindOff,
            Self::NoApiKey => ReasonCode::NoApiKey,
            Self::KeyOriginMismatch { .. } => ReasonCode::KeyOriginMismatch,
            Self::KeyUndecryptable => ReasonCode::KeyUndecryptable,
            Self::AccountNotFound => ReasonCode::AccountNotFound,
            Self::InvalidChat { .. } => ReasonCode::InvalidChat,
            Self::ShuttingDown => ReasonCode::ShuttingDown,
            Self::PausedByHuman { .. } => ReasonCode::PausedByHuman,
            Self::LoopGuard { .. } => ReasonCode::LoopGuard,
            Self::BotLoop { .. } => ReasonCode::BotLoop,
            Self::HourlyCap { .. } => ReasonCode::HourlyCap,
            Self::BudgetExhausted { .. } => ReasonCode::BudgetExhausted,
            Self::NotText { .. } => ReasonCode::NotText,
            Self::TranscriptionOff => ReasonCode::TranscriptionOff,
            Self::MediaFailed { .. } => ReasonCode::MediaFailed,
            Self::OutsideBusinessHours { .. } => ReasonCode::OutsideBusinessHours,
            Self::NoTriggerMatch { .. } => ReasonCode::NoTriggerMatch,
            Self::HandoffRequested { .. } => ReasonCode::HandoffRequested,
            Self::Superseded { .. } => ReasonCode::Superseded,
            Self::ModelError { .. } => ReasonCode::ModelError,
            Self::SendFailed { .. } => ReasonCode::SendFailed,
            Self::TextErased => ReasonCode::TextErased,
            Self::Interrupted => ReasonCode::Interrupted,
            Self::SupervisorUnavailable => ReasonCode::SupervisorUnavailable,
            Self::WorkerStopped => ReasonCode::WorkerStopped,
            Self::Other { .. } => ReasonCode::Other,
        }
    }

    /// The stable code (`no_api_key`, `paused_by_human`, ...).
    pub fn code(&self) -> &'static str {
        self.kind().as_str()
    }

    /// The human text (what the AI log and the effective config have always shown).
    pub fn text(&self) -> String {
        match self {
            Self::Blocked => "chat is blocked".into(),
            Self::Disabled { source } => format!("AI is disabled (source: {})", source.as_str()),
            Self::StatusBroadcast => "status broadcasts are never answered".into(),
            Self::ChatKindOff { kind, source } => {
                format!("{} is false (source: {})", kind_flag(*kind), source.as_str())
            }
            Self::NoApiKey => NO_API_KEY.into(),
            Self::KeyOriginMismatch {
                source,
                key_origin,
                base_origin,
            } => format!(
                "the {} API key was entered for {}, not for {}; set the key again for this base_url",
                source.as_str(),
                key_origin.as_deref().unwrap_or("another origin"),
                base_origin.as_deref().unwrap_or("this base_url"),
            ),
            Self::KeyUndecryptable => KEY_UNDECRYPTABLE.into(),
            Self::AccountNotFound => "account not found or deleted".into(),
            Self::InvalidChat { detail } => format!("invalid chat: {detail}"),
            Self::ShuttingDown => "the gateway is shutting down".into(),
            Self::PausedByHuman {
                until,
                cause: Some(cause),
            } => format!(
                "human takeover: {}; AI paused in this chat until {} (POST .../ai/resume ends it now)",
                cause.describe(),
                rfc3339(*until)
            ),
            Self::PausedByHuman { until, cause: None } => {
                format!("human takeover: AI paused in this chat until {}", rfc3339(*until))
            }
            Self::LoopGuard {
                limit,
                window_minutes,
            } => format!(
                "loop guard: {limit} AI replies in {window_minutes} minutes in this chat; cooling down"
            ),
            Self::BotLoop {
                pattern: LoopPattern::QuickReplies,
                count,
                seconds,
            } => format!(
                "bot loop: the other side answered within {} s of each of our last {count} replies",
                seconds.unwrap_or(0)
            ),
            Self::BotLoop {
                pattern: LoopPattern::Repeats,
                count,
                ..
            } => format!("bot loop: the same message {count} times in a row"),
            Self::BotLoop {
                pattern: LoopPattern::Echo,
                ..
            } => "bot loop: our own reply came back as a message".into(),
            Self::HourlyCap { count, limit } => format!(
                "max_replies_per_chat_per_hour: {count} AI replies in this chat in the last hour (limit {limit})"
            ),
            Self::BudgetExhausted { used, limit } => format!(
                "daily_token_budget: {used} of {limit} tokens used today (UTC) by this account"
            ),
            Self::NotText { kind } => {
                format!("{} message: the AI answers text messages only", kind.as_str())
            }
            Self::TranscriptionOff => {
                "audio message: no transcription_model is set, so the AI cannot hear it".into()
            }
            Self::MediaFailed { detail } => format!("media: {detail}"),
            Self::OutsideBusinessHours { opens_at: Some(t) } => {
                format!("outside business hours; open again at {}", rfc3339(*t))
            }
            Self::OutsideBusinessHours { opens_at: None } => "outside business hours".into(),
            Self::NoTriggerMatch {
                trigger: TriggerKind::Keywords,
            } => "trigger keywords: the message matched none, outside a conversation window".into(),
            Self::NoTriggerMatch {
                trigger: TriggerKind::Mention,
            } => "trigger mention: the group message neither mentions the account nor replies to it"
                .into(),
            Self::HandoffRequested {
                by: HandoffBy::Keyword,
            } => "handoff: the customer asked for a human; AI paused in this chat".into(),
            Self::HandoffRequested {
                by: HandoffBy::Model,
            } => "handoff: the model handed the chat to a human; AI paused in this chat".into(),
            Self::Superseded { at } => match at {
                SupersededAt::Queue => "superseded by a newer message in this chat",
                SupersededAt::Debounce => "superseded by a newer message within the debounce window",
                SupersededAt::Send => "superseded by a newer message in this chat; not sent",
            }
            .into(),
            Self::ModelError { message, .. } => message.clone(),
            Self::SendFailed {
                attempts: None,
                detail,
            } => format!("send failed: {detail}"),
            Self::SendFailed {
                attempts: Some(n),
                detail,
            } => format!("send failed after {n} attempts: {detail}"),
            Self::TextErased => {
                "the reply's text was erased by the AI-log retention before it was sent".into()
            }
            Self::Interrupted => crate::chat::INTERRUPTED.into(),
            Self::SupervisorUnavailable => "AI supervisor unavailable".into(),
            Self::WorkerStopped => "reply worker stopped before finishing".into(),
            Self::Other { text } => text.clone(),
        }
    }

    /// The reason a legacy event's text stands for: a known text maps to its code when the
    /// code's text is exactly that text (so the fold answers the same); anything else is kept
    /// as [`ReplyReason::Other`].
    pub fn from_legacy(text: &str) -> Self {
        legacy_candidate(text)
            .filter(|r| r.text() == text)
            .unwrap_or_else(|| Self::Other {
                text: text.to_string(),
            })
    }
}

/// The model error class a legacy model-failure text names (see `ModelError`'s texts in the
/// binary's model client).
fn legacy_model_error(text: &str) -> Option<ReplyReason> {
    // The last failure decides the class (a fallback's failure follows the primary's).
    let last = text.rsplit("; fallback ").next().unwrap_or(text);
    let last = last.split_once(": model ").map_or(last, |(_, rest)| rest);
    let class = if text.starts_with("model endpoint refused") || last.contains("endpoint refused") {
        ModelErrorClass::Refused
    } else if last.contains("timed out") {
        ModelErrorClass::Timeout
    } else if last.contains("could not connect") {
        ModelErrorClass::Connect
    } else if last.contains("unauthorized") {
        ModelErrorClass::Unauthorized
    } else if last.contains("rate limited") {
        ModelErrorClass::RateLimited
    } else if last.contains("server error") {
        ModelErrorClass::ServerError
    } else if last.contains("malformed body") {
        ModelErrorClass::Malformed
    } else if last.contains("setup failed") {
        ModelErrorClass::Setup
    } else if last.contains("HTTP ") {
        ModelErrorClass::Rejected
    } else {
        return None;
    };
    let status = last
        .split_once("HTTP ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|n| n.parse().ok());
    Some(ReplyReason::ModelError {
        class,
        status,
        message: text.to_string(),
    })
}

fn legacy_candidate(text: &str) -> Option<ReplyReason> {
    use ReplyReason as R;
    let exact = [
        R::Blocked,
        R::StatusBroadcast,
        R::NoApiKey,
        R::KeyUndecryptable,
        R::AccountNotFound,
        R::ShuttingDown,
        R::loop_guard(),
        R::Superseded {
            at: SupersededAt::Queue,
        },
        R::Superseded {
            at: SupersededAt::Debounce,
        },
        R::Superseded {
            at: SupersededAt::Send,
        },
        R::TextErased,
        R::Interrupted,
        R::SupervisorUnavailable,
        R::WorkerStopped,
    ];
    if let Some(r) = exact.into_iter().find(|r| r.text() == text) {
        return Some(r);
    }
    let source_of = |rest: &str| {
        rest.strip_prefix("(source: ")
            .and_then(|s| s.strip_suffix(')'))
            .and_then(Layer::parse)
    };
    if let Some(rest) = text.strip_prefix("AI is disabled ") {
        return source_of(rest).map(|source| R::Disabled { source });
    }
    if let Some((flag, rest)) = text.split_once(" is false ") {
        let kind = [ChatKind::Private, ChatKind::Group, ChatKind::Channel]
            .into_iter()
            .find(|k| kind_flag(*k) == flag)?;
        return source_of(rest).map(|source| R::ChatKindOff { kind, source });
    }
    if let Some(rest) = text.strip_prefix("human takeover: AI paused in this chat until ") {
        let until = DateTime::parse_from_rfc3339(rest).ok()?.with_timezone(&Utc);
        return Some(R::PausedByHuman { until, cause: None });
    }
    if let Some(rest) = text.strip_prefix("max_replies_per_chat_per_hour: ") {
        let (count, rest) = rest.split_once(' ')?;
        let limit = rest.rsplit_once("(limit ")?.1.strip_suffix(')')?;
        return Some(R::HourlyCap {
            count: count.parse().ok()?,
            limit: limit.parse().ok()?,
        });
    }
    if let Some(rest) = text.strip_prefix("daily_token_budget: ") {
        let (used, rest) = rest.split_once(" of ")?;
        let limit = rest.split(' ').next()?;
        return Some(R::BudgetExhausted {
            used: used.parse().ok()?,
            limit: limit.parse().ok()?,
        });
    }
    if let Some(kind) = text.strip_suffix(" message: the AI answers text messages only") {
        return Some(R::NotText {
            kind: MessageKind::from_cloud_type(kind),
        });
    }
    if let Some(rest) = text.strip_prefix("send failed after ") {
        let (n, detail) = rest.split_once(" attempts: ")?;
        return Some(R::SendFailed {
            attempts: Some(n.parse().ok()?),
            detail: detail.to_string(),
        });
    }
    if let Some(detail) = text.strip_prefix("send failed: ") {
        return Some(R::SendFailed {
            attempts: None,
            detail: detail.to_string(),
        });
    }
    if let Some(rest) = text.strip_prefix("the ") {
        let (source, rest) = rest.split_once(" API key was entered for ")?;
        let (key_origin, rest) = rest.split_once(", not for ")?;
        let base_origin = rest.strip_suffix("; set the key again for this base_url")?;
        return Some(R::KeyOriginMismatch {
            source: Layer::parse(source)?,
            key_origin: Some(key_origin.to_string()),
            base_origin: Some(base_origin.to_string()),
        });
    }
    if text.starts_with("model ") {
        return legacy_model_error(text);
    }
    None
}

/// Reads a reason in either shape: the coded object events are written with now, or the plain
/// text of events written before codes existed ([`ReplyReason::from_legacy`]). Use it as
/// `#[serde(deserialize_with = "crate::reason::compat")]` on a stored reason field.
pub fn compat<'de, D: Deserializer<'de>>(d: D) -> Result<ReplyReason, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Wire {
        Legacy(String),
        Coded(ReplyReason),
    }
    Ok(match Wire::deserialize(d)? {
        Wire::Legacy(text) => ReplyReason::from_legacy(&text),
        Wire::Coded(r) => r,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default()
    }

    /// One reason of every code, with its details.
    fn every_reason() -> Vec<ReplyReason> {
        use ReplyReason as R;
        vec![
            R::Blocked,
            R::Disabled {
                source: Layer::Chat,
            },
            R::StatusBroadcast,
            R::ChatKindOff {
                kind: ChatKind::Group,
                source: Layer::Global,
            },
            R::NoApiKey,
            R::KeyOriginMismatch {
                source: Layer::Global,
                key_origin: Some("https://api.openai.com".into()),
                base_origin: Some("https://other.example".into()),
            },
            R::KeyUndecryptable,
            R::AccountNotFound,
            R::InvalidChat {
                detail: "jid: not a chat".into(),
            },
            R::ShuttingDown,
            R::PausedByHuman {
                until: t("2026-11-25T10:30:00Z"),
                cause: None,
            },
            R::loop_guard(),
            R::BotLoop {
                pattern: LoopPattern::QuickReplies,
                count: 5,
                seconds: Some(2),
            },
            R::HourlyCap { count: 2, limit: 2 },
            R::BudgetExhausted {
                used: 120,
                limit: 100,
            },
            R::NotText {
                kind: MessageKind::Image,
            },
            R::TranscriptionOff,
            R::MediaFailed {
                detail: "the transcription is empty".into(),
            },
            R::OutsideBusinessHours { opens_at: None },
            R::NoTriggerMatch {
                trigger: TriggerKind::Keywords,
            },
            R::HandoffRequested {
                by: HandoffBy::Keyword,
            },
            R::Superseded {
                at: SupersededAt::Debounce,
            },
            R::ModelError {
                class: ModelErrorClass::ServerError,
                status: Some(503),
                message: "model call failed: HTTP 503 server error (3 attempts)".into(),
            },
            R::SendFailed {
                attempts: Some(3),
                detail: "rate limited".into(),
            },
            R::TextErased,
            R::Interrupted,
            R::SupervisorUnavailable,
            R::WorkerStopped,
            R::Other {
                text: "something old".into(),
            },
        ]
    }

    #[test]
    fn every_code_is_listed_once_and_named_in_snake_case() {
        let reasons = every_reason();
        assert_eq!(reasons.len(), ReasonCode::ALL.len());
        for (r, code) in reasons.iter().zip(ReasonCode::ALL) {
            assert_eq!(r.kind(), code);
            assert_eq!(
                serde_json::to_value(code).ok(),
                Some(json!(code.as_str())),
                "serde and as_str agree"
            );
            assert_eq!(
                serde_json::to_value(r).ok().map(|v| v["code"].clone()),
                Some(json!(r.code()))
            );
        }
    }

    /// docs/API.md ("Reply reasons") lists every code clients may see.
    #[test]
    fn the_api_document_lists_every_code() {
        let doc = include_str!("../../docs/API.md");
        for code in ReasonCode::ALL {
            assert!(
                doc.contains(&format!("| `{code}` |")),
                "docs/API.md does not list `{code}`"
            );
        }
    }

    #[test]
    fn the_seed_text_stays_the_text_of_no_api_key() {
        assert_eq!(ReplyReason::NoApiKey.code(), "no_api_key");
        assert_eq!(ReplyReason::NoApiKey.text(), "no API key configured");
        assert_eq!(
            ReplyReason::from_legacy("no API key configured"),
            ReplyReason::NoApiKey
        );
    }

    /// Given the text of every reason as a legacy event stored it, when it is read, then it maps
    /// to the same reason (same code, same details, same text).
    #[test]
    fn legacy_texts_map_back_to_their_codes() {
        for r in every_reason() {
            let legacy = json!(r.text());
            let back = compat(&legacy).expect("a legacy text reads");
            if matches!(
                r.kind(),
                ReasonCode::InvalidChat
                    | ReasonCode::BotLoop
                    | ReasonCode::OutsideBusinessHours
                    | ReasonCode::NoTriggerMatch
                    | ReasonCode::HandoffRequested
                    | ReasonCode::TranscriptionOff
                    | ReasonCode::MediaFailed
            ) {
                // Never stored as text: the text is kept as is.
                assert_eq!(back.kind(), ReasonCode::Other);
            } else {
                assert_eq!(back, r, "{legacy}");
            }
            assert_eq!(back.text(), r.text());
        }
    }

    #[test]
    fn legacy_model_failures_get_their_class_and_status() {
        let r = ReplyReason::from_legacy("model call timed out after 30 s");
        assert!(matches!(
            r,
            ReplyReason::ModelError {
                class: ModelErrorClass::Timeout,
                status: None,
                ..
            }
        ));
        let r = ReplyReason::from_legacy(
            "model call failed: HTTP 500 server error (1 attempt); fallback local: model call failed: HTTP 429 rate limited (2 attempts)",
        );
        assert!(matches!(
            r,
            ReplyReason::ModelError {
                class: ModelErrorClass::RateLimited,
                status: Some(429),
                ..
            }
        ));
    }

    #[test]
    fn unknown_legacy_text_is_kept_as_other() {
        let r = compat(json!("something nobody wrote a code for")).expect("reads");
        assert_eq!(r.code(), "other");
        assert_eq!(r.text(), "something nobody wrote a code for");
        // A known prefix with details that do not read back is kept too.
        let r = ReplyReason::from_legacy("AI is disabled (source: moon)");
        assert_eq!(r.code(), "other");
        let r = ReplyReason::from_legacy("send failed after x attempts: y");
        assert_eq!(r.code(), "other");
    }

    /// New events store the code and the details, never the text.
    #[test]
    fn new_shape_is_pinned() {
        let r = ReplyReason::PausedByHuman {
            until: t("2026-11-25T10:30:00Z"),
            cause: None,
        };
        assert_eq!(
            serde_json::to_value(&r).ok(),
            Some(json!({"code": "paused_by_human", "until": "2026-11-25T10:30:00Z"}))
        );
        assert_eq!(
            serde_json::to_value(ReplyReason::NoApiKey).ok(),
            Some(json!({"code": "no_api_key"}))
        );
        assert_eq!(
            serde_json::to_value(ReplyReason::HourlyCap { count: 3, limit: 2 }).ok(),
            Some(json!({"code": "hourly_cap", "count": 3, "limit": 2}))
        );
        for r in every_reason() {
            let v = serde_json::to_value(&r).expect("serializes");
            assert_eq!(compat(&v).ok(), Some(r.clone()), "{v}");
        }
    }
}
