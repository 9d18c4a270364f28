//! Messages, chats and the AI log, folded from the `chat` streams: what `GET .../chats`,
//! `GET .../messages` and `GET /v1/ai/logs` answer.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use wagate_events::chat::{ChatEvent, MessageKind, ModelAttempt, Source, TokenUsage};

use crate::config::FoldError;
use crate::StoredEvent;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
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
    /// `received` (inbound); outbound: `sent`, then `delivered`, `read` or `failed` as the
    /// transport reports them.
    pub status: &'static str,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AiLogRow {
    pub id: String,
    pub account_id: String,
    pub chat_id: String,
    pub trigger_message_id: String,
    pub status: ReplyStatus,
    pub reason: Option<String>,
    pub model: Option<String>,
    pub latency_ms: Option<u64>,
    pub usage: Option<TokenUsage>,
    pub reply_text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_message_id: Option<String>,
    /// Burst debounce: the reply waits for more messages until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// Every model attempt and its outcome (which model, `ok` or the failure class).
    pub attempts: Vec<ModelAttempt>,
    /// Whether the fallback model answered.
    pub fallback: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Position of the event that opened the row (the cursor of `GET /v1/ai/logs`).
    pub position: i64,
}

#[derive(Debug, Clone, Default)]
pub struct ChatView {
    pub messages: Vec<MessageView>,
    pub last_message_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default)]
pub struct MessagesModel {
    pub position: i64,
    /// Keyed by (account id, JID).
    pub chats: BTreeMap<(String, String), ChatView>,
    /// In the order replies were requested.
    pub ai_log: Vec<AiLogRow>,
    index: HashMap<String, usize>,
    /// Model tokens (`total_tokens` of generated replies) per (account id, UTC day of the
    /// event): the daily token budget counts these, so a replay counts the same.
    pub tokens_by_day: HashMap<(String, NaiveDate), u64>,
}

fn parse(ev: &StoredEvent) -> Result<ChatEvent, FoldError> {
    ChatEvent::deserialize(&ev.payload).map_err(|e| FoldError {
        position: ev.position,
        message: e.to_string(),
    })
}

impl MessagesModel {
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
        let key = || (acc.to_string(), jid.to_string());
        match parsed {
            ChatEvent::MessageReceived {
                message_id,
                from,
                text,
                from_me,
                kind,
                contact_name,
                ..
            } => {
                let chat = self.chats.entry(key()).or_default();
                chat.last_message_at = Some(at);
                chat.messages.push(MessageView {
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
                    status: "received",
                    status_error: None,
                    status_updated_at: None,
                    ai_reply_id: None,
                    created_at: at,
                    position: ev.position,
                });
            }
            ChatEvent::MessageSent {
                message_id,
                text,
                source,
                ai_reply_id,
                ..
            } => {
                let chat = self.chats.entry(key()).or_default();
                chat.last_message_at = Some(at);
                chat.messages.push(MessageView {
                    id: message_id,
                    chat_id: jid.to_string(),
                    direction: Direction::Outbound,
                    from: acc.to_string(),
                    text,
                    from_me: true,
                    source,
                    kind: MessageKind::Text,
                    contact_name: None,
                    status: "sent",
                    status_error: None,
                    status_updated_at: None,
                    ai_reply_id,
                    created_at: at,
                    position: ev.position,
                });
            }
            ChatEvent::AiReplyRequested {
                reply_id,
                trigger_message_id,
                not_before,
            } => {
                self.index.insert(reply_id.clone(), self.ai_log.len());
                self.ai_log.push(AiLogRow {
                    id: reply_id,
                    account_id: acc.to_string(),
                    chat_id: jid.to_string(),
                    trigger_message_id,
                    status: ReplyStatus::Pending,
                    reason: None,
                    model: None,
                    latency_ms: None,
                    usage: None,
                    reply_text: None,
                    sent_message_id: None,
                    not_before,
                    attempts: vec![],
                    fallback: false,
                    created_at: at,
                    updated_at: at,
                    position: ev.position,
                });
            }
            ChatEvent::AiReplySkipped { reply_id, reason } => {
                self.update(&reply_id, at, |r| {
                    r.status = ReplyStatus::Skipped;
                    r.reason = Some(reason);
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
            } => {
                *self
                    .tokens_by_day
                    .entry((acc.to_string(), at.date_naive()))
                    .or_default() += usage.total_tokens;
                self.update(&reply_id, at, |r| {
                    r.status = ReplyStatus::Generated;
                    r.reply_text = Some(text);
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
            } => {
                self.update(&reply_id, at, |r| {
                    r.status = ReplyStatus::Sent;
                    r.sent_message_id = Some(message_id);
                });
            }
            ChatEvent::AiReplyFailed {
                reply_id,
                reason,
                attempts,
            } => {
                self.update(&reply_id, at, |r| {
                    r.status = ReplyStatus::Failed;
                    r.reason = Some(reason);
                    if !attempts.is_empty() {
                        r.attempts = attempts;
                    }
                });
            }
            ChatEvent::TypingIndicated { .. }
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
        }
        Ok(())
    }

    fn update(&mut self, reply_id: &str, at: DateTime<Utc>, f: impl FnOnce(&mut AiLogRow)) {
        if let Some(row) = self
            .index
            .get(reply_id)
            .and_then(|i| self.ai_log.get_mut(*i))
        {
            f(row);
            row.updated_at = at;
        }
    }

    /// Model tokens the account used on UTC day `day`.
    pub fn tokens_on(&self, account_id: &str, day: NaiveDate) -> u64 {
        self.tokens_by_day
            .get(&(account_id.to_string(), day))
            .copied()
            .unwrap_or(0)
    }

    pub fn reply(&self, reply_id: &str) -> Option<&AiLogRow> {
        self.index.get(reply_id).and_then(|i| self.ai_log.get(*i))
    }

    /// Chats with replies that have not reached a terminal state (start-up recovery).
    pub fn chats_with_open_replies(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .ai_log
            .iter()
            .filter(|r| matches!(r.status, ReplyStatus::Pending | ReplyStatus::Generated))
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
}
