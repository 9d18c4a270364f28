//! The configuration read model: accounts, their tokens, and the three stored layers of AI
//! settings (global, account, chat), folded from the `ai_global`, `account` and `chat_settings`
//! streams.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use wagate_events::account::{AccountEvent, CloudApiState, Transport};
use wagate_events::chat::{ChatEvent, PauseCause};
use wagate_events::chat_settings::{ChatSettings, ChatSettingsEvent};
use wagate_events::settings::{LayerState, SettingsEvent};
use wagate_events::webhook::{WebhookEvent, WebhookStatus};

use crate::StoredEvent;

/// Aggregate types this model folds.
pub const CONFIG_AGGREGATES: [&str; 4] = ["ai_global", "account", "chat_settings", "webhook"];
/// The chat events this model folds (human takeover, ADR 0007).
pub const PAUSE_EVENTS: [&str; 2] = ["AiPaused", "AiResumed"];

/// Whether `ev` changes this model (the catch-up skips the rest, e.g. chat messages).
pub fn folds(ev: &StoredEvent) -> bool {
    folds_kind(&ev.aggregate_type, &ev.event_type)
}

/// [`folds`] by an event's aggregate and event type (before its payload is parsed).
pub fn folds_kind(aggregate_type: &str, event_type: &str) -> bool {
    CONFIG_AGGREGATES.contains(&aggregate_type)
        || (aggregate_type == "chat" && PAUSE_EVENTS.contains(&event_type))
}

/// A human-takeover pause of one chat: the AI does not answer there before `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pause {
    pub until: DateTime<Utc>,
    pub cause: PauseCause,
}

/// A webhook subscription.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub account_id: Option<String>,
    #[serde(skip)]
    pub secret_sealed: String,
    pub status: WebhookStatus,
    /// Why it was disabled (a 410 from the receiver).
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The position of its creation: it receives events committed after it.
    #[serde(skip)]
    pub created_position: i64,
}

impl WebhookView {
    /// Whether the event at `position` of `event_type` for `account_id` goes to this webhook.
    /// An account-filtered webhook receives only events of that account (not global changes).
    pub fn wants(&self, position: i64, event_type: &str, account_id: Option<&str>) -> bool {
        self.status == WebhookStatus::Active
            && position > self.created_position
            && wagate_events::webhook::wants(&self.events, event_type)
            && self
                .account_id
                .as_deref()
                .is_none_or(|filter| account_id == Some(filter))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    #[serde(skip)]
    pub token_hash: String,
    pub created_at: DateTime<Utc>,
    pub revoked: bool,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccountView {
    pub id: String,
    pub name: String,
    pub transport: Transport,
    /// Cloud API settings (sealed secrets) and the invalid-token flag; `None` for sandbox.
    pub cloud_api: Option<CloudApiState>,
    pub created_at: DateTime<Utc>,
    pub deleted: bool,
    pub ai: LayerState,
    pub ai_updated_at: Option<DateTime<Utc>>,
    pub tokens: BTreeMap<String, TokenView>,
}

/// The folded configuration state at some position of the history.
#[derive(Debug, Clone, Default)]
pub struct ConfigModel {
    /// The position of the last event folded in (0 before any).
    pub position: i64,
    pub global: LayerState,
    pub global_updated_at: Option<DateTime<Utc>>,
    pub accounts: BTreeMap<String, AccountView>,
    /// Keyed by (account id, chat JID).
    pub chats: HashMap<(String, String), ChatSettings>,
    /// Human-takeover pauses by (account id, chat JID); expired ones stay until resumed or
    /// replaced (the resolver compares with the time).
    pub pauses: HashMap<(String, String), Pause>,
    /// Webhook subscriptions by id (deleted ones included, marked).
    pub webhooks: BTreeMap<String, WebhookView>,
    /// Live (unrevoked) token hash -> (account id, token id).
    tokens_by_hash: HashMap<String, (String, String)>,
}

/// An event that could not be folded: its payload does not match the type it claims.
#[derive(Debug)]
pub struct FoldError {
    pub position: i64,
    pub message: String,
}

impl std::fmt::Display for FoldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "event at position {} does not fold: {}",
            self.position, self.message
        )
    }
}

impl std::error::Error for FoldError {}

fn parse<T: serde::de::DeserializeOwned>(ev: &StoredEvent) -> Result<T, FoldError> {
    T::deserialize(&ev.payload).map_err(|e| FoldError {
        position: ev.position,
        message: e.to_string(),
    })
}

impl ConfigModel {
    /// Folds one event. Events of other aggregate types only advance the position.
    pub fn apply(&mut self, ev: &StoredEvent) -> Result<(), FoldError> {
        match ev.aggregate_type.as_str() {
            "ai_global" => {
                let e: SettingsEvent = parse(ev)?;
                self.global.apply(&e);
                self.global_updated_at = Some(ev.recorded_at);
            }
            "account" => {
                let e: AccountEvent = parse(ev)?;
                self.apply_account(&ev.aggregate_id, e, ev.recorded_at);
            }
            "chat_settings" => {
                let e: ChatSettingsEvent = parse(ev)?;
                let Some((acc, jid)) = ev.aggregate_id.split_once('/') else {
                    return Err(FoldError {
                        position: ev.position,
                        message: "chat_settings id is not <account>/<jid>".into(),
                    });
                };
                self.chats
                    .entry((acc.to_string(), jid.to_string()))
                    .or_default()
                    .fold(e);
            }
            "webhook" => {
                let e: WebhookEvent = parse(ev)?;
                self.apply_webhook(ev, e);
            }
            "chat" if PAUSE_EVENTS.contains(&ev.event_type.as_str()) => {
                let Some((acc, jid)) = ev.aggregate_id.split_once('/') else {
                    return Err(FoldError {
                        position: ev.position,
                        message: "chat id is not <account>/<jid>".into(),
                    });
                };
                let key = (acc.to_string(), jid.to_string());
                match parse::<ChatEvent>(ev)? {
                    ChatEvent::AiPaused { until, cause, .. } => {
                        self.pauses.insert(key, Pause { until, cause });
                    }
                    ChatEvent::AiResumed { .. } => {
                        self.pauses.remove(&key);
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        self.position = self.position.max(ev.position);
        Ok(())
    }

    fn apply_webhook(&mut self, ev: &StoredEvent, e: WebhookEvent) {
        match e {
            WebhookEvent::WebhookCreated {
                url,
                events,
                account_id,
                secret_sealed,
            } => {
                self.webhooks.insert(
                    ev.aggregate_id.clone(),
                    WebhookView {
                        id: ev.aggregate_id.clone(),
                        url,
                        events,
                        account_id,
                        secret_sealed,
                        status: WebhookStatus::Active,
                        disabled_reason: None,
                        created_at: ev.recorded_at,
                        created_position: ev.position,
                    },
                );
            }
            WebhookEvent::WebhookDeleted => {
                if let Some(w) = self.webhooks.get_mut(&ev.aggregate_id) {
                    w.status = WebhookStatus::Deleted;
                }
            }
            WebhookEvent::WebhookDisabled { reason } => {
                if let Some(w) = self.webhooks.get_mut(&ev.aggregate_id) {
                    w.status = WebhookStatus::Disabled;
                    w.disabled_reason = Some(reason);
                }
            }
        }
    }

    /// A webhook that was created and not deleted.
    pub fn webhook(&self, id: &str) -> Option<&WebhookView> {
        self.webhooks
            .get(id)
            .filter(|w| w.status != WebhookStatus::Deleted)
    }

    fn apply_account(&mut self, id: &str, e: AccountEvent, at: DateTime<Utc>) {
        if let AccountEvent::AccountCreated {
            name, transport, ..
        } = &e
        {
            self.accounts.insert(
                id.to_string(),
                AccountView {
                    id: id.to_string(),
                    name: name.clone(),
                    transport: *transport,
                    cloud_api: None,
                    created_at: at,
                    deleted: false,
                    ai: LayerState::default(),
                    ai_updated_at: None,
                    tokens: BTreeMap::new(),
                },
            );
            return;
        }
        let Some(acc) = self.accounts.get_mut(id) else {
            return;
        };
        if let Some(s) = e.as_settings() {
            acc.ai.apply(&s);
            acc.ai_updated_at = Some(at);
            return;
        }
        CloudApiState::fold(&mut acc.cloud_api, &e);
        match e {
            AccountEvent::AccountDeleted => {
                acc.deleted = true;
                for t in acc.tokens.values() {
                    self.tokens_by_hash.remove(&t.token_hash);
                }
            }
            AccountEvent::TokenIssued {
                token_id,
                name,
                token_hash,
            } => {
                self.tokens_by_hash
                    .insert(token_hash.clone(), (id.to_string(), token_id.clone()));
                acc.tokens.insert(
                    token_id.clone(),
                    TokenView {
                        id: token_id,
                        name,
                        token_hash,
                        created_at: at,
                        revoked: false,
                        revoked_at: None,
                    },
                );
            }
            AccountEvent::TokenRevoked { token_id } => {
                if let Some(t) = acc.tokens.get_mut(&token_id) {
                    t.revoked = true;
                    t.revoked_at = Some(at);
                    self.tokens_by_hash.remove(&t.token_hash);
                }
            }
            _ => {}
        }
    }

    /// A live account (created, not deleted).
    pub fn account(&self, id: &str) -> Option<&AccountView> {
        self.accounts.get(id).filter(|a| !a.deleted)
    }

    /// The account and token id a live token hash belongs to.
    pub fn token_owner(&self, token_hash: &str) -> Option<(&str, &str)> {
        self.tokens_by_hash
            .get(token_hash)
            .map(|(a, t)| (a.as_str(), t.as_str()))
    }

    /// The last pause recorded in a chat (it may have expired).
    pub fn pause(&self, account_id: &str, jid: &str) -> Option<&Pause> {
        self.pauses.get(&(account_id.to_string(), jid.to_string()))
    }

    pub fn chat(&self, account_id: &str, jid: &str) -> Option<&ChatSettings> {
        self.chats.get(&(account_id.to_string(), jid.to_string()))
    }
}
