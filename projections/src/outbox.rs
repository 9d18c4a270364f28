//! What each stored event means to webhook subscribers: zero or more typed, self-contained
//! messages (`message.received`, `ai.reply.sent`, `ai.config.changed`, ...). A pure function of
//! the event and the messages read model folded up to (at least) that event, so a fan-out that
//! re-reads the history after a crash produces the same messages again.
//!
//! Payloads carry ids, texts, models, usage and reasons; never a key or a sealed secret (config
//! changes say only that a key was set or cleared).

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use wagate_events::account::AccountEvent;
use wagate_events::chat::{ChatEvent, PauseCause};
use wagate_events::chat_settings::ChatSettingsEvent;
use wagate_events::settings::SettingsEvent;

use crate::config::FoldError;
use crate::messages::{AiLogRow, MessagesModel};
use crate::StoredEvent;

/// One webhook message, before it is addressed to subscriptions.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub event_type: &'static str,
    /// The account it concerns (`None`: the global config layer).
    pub account_id: Option<String>,
    pub timestamp: DateTime<Utc>,
    pub data: Value,
}

impl Outgoing {
    /// The Standard Webhooks body: `{"type","timestamp","data"}`.
    pub fn body(&self) -> Value {
        json!({
            "type": self.event_type,
            "timestamp": self.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "data": self.data,
        })
    }
}

fn parse<T: serde::de::DeserializeOwned>(ev: &StoredEvent) -> Result<T, FoldError> {
    T::deserialize(&ev.payload).map_err(|e| FoldError {
        position: ev.position,
        message: e.to_string(),
    })
}

fn reply_data(
    account: &str,
    jid: &str,
    reply_id: &str,
    row: Option<&AiLogRow>,
    with_text: bool,
) -> Value {
    let mut data = json!({
        "account_id": account,
        "chat_id": jid,
        "reply_id": reply_id,
        "trigger_message_id": row.map(|r| r.trigger_message_id.as_str()),
        "model": row.and_then(|r| r.model.as_deref()),
        "usage": row.and_then(|r| r.usage),
        "latency_ms": row.and_then(|r| r.latency_ms),
    });
    if with_text {
        data["reply_text"] = json!(row.and_then(|r| r.reply_text.as_deref()));
    }
    data
}

fn settings_change(e: &SettingsEvent) -> Option<Value> {
    Some(match e {
        SettingsEvent::AiSettingsChanged { set, cleared } => {
            json!({ "set": set, "cleared": cleared })
        }
        SettingsEvent::AiApiKeySet { .. } => json!({ "api_key": "set" }),
        SettingsEvent::AiApiKeyCleared { reason } => {
            json!({ "api_key": "cleared", "reason": reason })
        }
        SettingsEvent::AiFallbackApiKeySet { .. } => json!({ "fallback_api_key": "set" }),
        SettingsEvent::AiFallbackApiKeyCleared { reason } => {
            json!({ "fallback_api_key": "cleared", "reason": reason })
        }
        // The same key under a new master key: nothing a subscriber would see changed.
        SettingsEvent::AiApiKeyResealed { .. } | SettingsEvent::AiFallbackApiKeyResealed { .. } => {
            return None
        }
    })
}

fn config_changed(
    ev: &StoredEvent,
    layer: &str,
    account: Option<&str>,
    chat: Option<&str>,
    change: Value,
) -> Outgoing {
    Outgoing {
        event_type: "ai.config.changed",
        account_id: account.map(str::to_string),
        timestamp: ev.recorded_at,
        data: json!({
            "layer": layer,
            "account_id": account,
            "chat_id": chat,
            "actor": ev.actor(),
            "change": change,
            "position": ev.position,
        }),
    }
}

/// Where [`outgoing`] finds the row of a reply (its trigger, model, usage, text).
pub trait Replies {
    fn reply(&self, reply_id: &str) -> Option<&AiLogRow>;
}

impl Replies for MessagesModel {
    fn reply(&self, reply_id: &str) -> Option<&AiLogRow> {
        MessagesModel::reply(self, reply_id)
    }
}

/// The webhook messages of one event.
pub fn outgoing(ev: &StoredEvent, messages: &dyn Replies) -> Result<Vec<Outgoing>, FoldError> {
    let at = ev.recorded_at;
    let out = match ev.aggregate_type.as_str() {
        "ai_global" => {
            let e: SettingsEvent = parse(ev)?;
            settings_change(&e)
                .map(|c| config_changed(ev, "global", None, None, c))
                .into_iter()
                .collect()
        }
        "account" => match parse::<AccountEvent>(ev)? {
            // Another gateway runs the account's replies now (ADR 0026).
            AccountEvent::AccountOwnerChanged {
                node_id,
                epoch,
                previous,
            } => vec![Outgoing {
                event_type: "account.owner.changed",
                account_id: Some(ev.aggregate_id.clone()),
                timestamp: at,
                data: json!({
                    "account_id": ev.aggregate_id, "node_id": node_id,
                    "previous_node_id": previous, "epoch": epoch, "at": at,
                }),
            }],
            // A WhatsApp Web connection's new state (issue 23).
            AccountEvent::WhatsAppWebStateChanged { state, reason } => vec![Outgoing {
                event_type: "account.connection",
                account_id: Some(ev.aggregate_id.clone()),
                timestamp: at,
                data: json!({
                    "account_id": ev.aggregate_id, "transport": "whatsapp_web",
                    "state": state.as_str(), "reason": reason, "at": at,
                }),
            }],
            e => e
                .as_settings()
                .and_then(|s| settings_change(&s))
                .map(|c| config_changed(ev, "account", Some(&ev.aggregate_id), None, c))
                .into_iter()
                .collect(),
        },
        "chat_settings" => {
            let Some((acc, jid)) = ev.aggregate_id.split_once('/') else {
                return Ok(vec![]);
            };
            let change = match parse::<ChatSettingsEvent>(ev)? {
                ChatSettingsEvent::ChatAiSettingsChanged {
                    mode,
                    custom_system_prompt,
                } => json!({ "mode": mode, "custom_system_prompt": custom_system_prompt }),
                ChatSettingsEvent::ChatBlockedChanged { blocked } => json!({ "blocked": blocked }),
                // Every chat setting, `null` where the chat inherits.
                ChatSettingsEvent::ChatControlsChanged { controls: c } => {
                    let mut change = serde_json::Map::new();
                    for spec in wagate_events::settings::FIELDS.iter().filter(|f| f.chat) {
                        change.insert(spec.name.to_string(), json!(c.get(spec.field)));
                    }
                    Value::Object(change)
                }
            };
            vec![config_changed(ev, "chat", Some(acc), Some(jid), change)]
        }
        "chat" => {
            let Some((acc, jid)) = ev.aggregate_id.split_once('/') else {
                return Ok(vec![]);
            };
            let one = |event_type: &'static str, data: Value| Outgoing {
                event_type,
                account_id: Some(acc.to_string()),
                timestamp: at,
                data,
            };
            match parse::<ChatEvent>(ev)? {
                ChatEvent::MessageReceived {
                    message_id,
                    from,
                    text,
                    from_me,
                    at,
                    kind,
                    contact_name,
                    media: _,
                } => vec![one(
                    "message.received",
                    json!({
                        "account_id": acc, "chat_id": jid, "message_id": message_id,
                        "from": from, "contact_name": contact_name, "kind": kind,
                        "text": text, "from_me": from_me, "at": at,
                    }),
                )],
                ChatEvent::MessageSent {
                    message_id,
                    text,
                    source,
                    ai_reply_id,
                    at,
                } => vec![one(
                    "message.sent",
                    json!({
                        "account_id": acc, "chat_id": jid, "message_id": message_id,
                        "text": text, "source": source, "ai_reply_id": ai_reply_id, "at": at,
                    }),
                )],
                ChatEvent::AiReplyGenerated { reply_id, .. } => vec![one(
                    "ai.reply.generated",
                    reply_data(acc, jid, &reply_id, messages.reply(&reply_id), true),
                )],
                ChatEvent::AiReplySent {
                    reply_id,
                    message_id,
                    more_message_ids,
                } => {
                    let mut data = reply_data(acc, jid, &reply_id, messages.reply(&reply_id), true);
                    data["message_id"] = json!(message_id);
                    if !more_message_ids.is_empty() {
                        data["more_message_ids"] = json!(more_message_ids);
                    }
                    vec![one("ai.reply.sent", data)]
                }
                ChatEvent::AiReplyFailed {
                    reply_id, reason, ..
                } => {
                    let mut data =
                        reply_data(acc, jid, &reply_id, messages.reply(&reply_id), false);
                    data["reason"] = json!(reason.text());
                    data["reason_code"] = json!(reason.code());
                    vec![one("ai.reply.failed", data)]
                }
                ChatEvent::AiReplySkipped { reply_id, reason } => {
                    let mut data =
                        reply_data(acc, jid, &reply_id, messages.reply(&reply_id), false);
                    data["reason"] = json!(reason.text());
                    data["reason_code"] = json!(reason.code());
                    vec![one("ai.reply.skipped", data)]
                }
                // A customer (or the model) asked for a human: the chat is paused for them.
                ChatEvent::AiPaused {
                    until,
                    cause: cause @ (PauseCause::HandoffKeyword | PauseCause::HandoffTool),
                    message_id,
                    at,
                } => vec![one(
                    "ai.handoff.requested",
                    json!({
                        "account_id": acc, "chat_id": jid, "message_id": message_id,
                        "by": if cause == PauseCause::HandoffKeyword { "keyword" } else { "model" },
                        "paused_until": until, "at": at,
                    }),
                )],
                // Delivery receipts are not among the subscribable event types (yet).
                // Other pauses show in the effective config; no webhook type exists for them.
                ChatEvent::AiReplyRequested { .. }
                | ChatEvent::TypingIndicated { .. }
                | ChatEvent::AiReplySending { .. }
                | ChatEvent::MessageStatusUpdated { .. }
                | ChatEvent::AiPaused { .. }
                | ChatEvent::AiResumed { .. }
                | ChatEvent::MessageTranscribed { .. } => vec![],
            }
        }
        _ => vec![],
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use wagate_events::chat::TokenUsage;
    use wagate_events::settings::{AiSettings, SealedKey};

    use super::*;

    fn stored(position: i64, ty: &str, id: &str, payload: Value) -> StoredEvent {
        StoredEvent {
            position,
            aggregate_type: ty.into(),
            aggregate_id: id.into(),
            sequence: position,
            event_type: String::new(),
            event_version: "1".into(),
            payload,
            metadata: HashMap::from([("actor".to_string(), "admin:alice".to_string())]),
            recorded_at: Utc::now(),
        }
    }

    fn chat(position: i64, e: ChatEvent) -> StoredEvent {
        stored(
            position,
            "chat",
            "acme/123@s.whatsapp.net",
            serde_json::to_value(e).unwrap_or_default(),
        )
    }

    #[test]
    fn reply_lifecycle_carries_the_log_row() {
        let mut model = MessagesModel::default();
        let history = [
            chat(
                1,
                ChatEvent::MessageReceived {
                    message_id: "m1".into(),
                    from: "123".into(),
                    text: "hi".into(),
                    from_me: false,
                    at: Utc::now(),
                    kind: Default::default(),
                    contact_name: None,
                    media: None,
                },
            ),
            chat(
                2,
                ChatEvent::AiReplyRequested {
                    reply_id: "r1".into(),
                    trigger_message_id: "m1".into(),
                    not_before: None,
                    engaged_until: None,
                },
            ),
            chat(
                3,
                ChatEvent::AiReplyGenerated {
                    reply_id: "r1".into(),
                    text: "hello!".into(),
                    model: "gpt-4o-mini".into(),
                    usage: TokenUsage {
                        prompt_tokens: 3,
                        completion_tokens: 2,
                        total_tokens: 5,
                    },
                    latency_ms: 42,
                    attempts: vec![],
                    fallback: false,
                    notice: None,
                },
            ),
            chat(
                4,
                ChatEvent::AiReplySent {
                    reply_id: "r1".into(),
                    message_id: "o1".into(),
                    more_message_ids: vec![],
                },
            ),
        ];
        let mut types = vec![];
        for ev in &history {
            model.apply(ev).unwrap();
            for o in outgoing(ev, &model).unwrap() {
                types.push(o.event_type);
                if o.event_type == "ai.reply.sent" {
                    assert_eq!(o.data["trigger_message_id"], "m1");
                    assert_eq!(o.data["reply_text"], "hello!");
                    assert_eq!(o.data["model"], "gpt-4o-mini");
                    assert_eq!(o.data["usage"]["total_tokens"], 5);
                    assert_eq!(o.data["message_id"], "o1");
                    assert_eq!(o.account_id.as_deref(), Some("acme"));
                    assert_eq!(o.body()["type"], "ai.reply.sent");
                }
            }
        }
        assert_eq!(
            types,
            ["message.received", "ai.reply.generated", "ai.reply.sent"]
        );
    }

    #[test]
    fn config_changes_never_carry_the_key() {
        let model = MessagesModel::default();
        let set = stored(
            1,
            "ai_global",
            "global",
            serde_json::to_value(SettingsEvent::AiApiKeySet {
                key: SealedKey {
                    sealed: "SEALED-CIPHERTEXT".into(),
                    origin: "https://api.openai.com".into(),
                },
            })
            .unwrap_or_default(),
        );
        let out = outgoing(&set, &model).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].event_type, "ai.config.changed");
        assert_eq!(out[0].data["actor"], "admin:alice");
        assert!(!out[0].body().to_string().contains("SEALED-CIPHERTEXT"));

        let resealed = stored(
            2,
            "ai_global",
            "global",
            serde_json::to_value(SettingsEvent::AiApiKeyResealed {
                key: SealedKey {
                    sealed: "X".into(),
                    origin: "o".into(),
                },
            })
            .unwrap_or_default(),
        );
        assert!(outgoing(&resealed, &model).unwrap().is_empty());

        let changed = stored(
            3,
            "account",
            "acme",
            serde_json::to_value(AccountEvent::AiSettingsChanged {
                set: AiSettings {
                    model_name: Some("m".into()),
                    ..Default::default()
                },
                cleared: vec![],
            })
            .unwrap_or_default(),
        );
        let out = outgoing(&changed, &model).unwrap();
        assert_eq!(out[0].account_id.as_deref(), Some("acme"));
        assert_eq!(out[0].data["layer"], "account");
    }
}
