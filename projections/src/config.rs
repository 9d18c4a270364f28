//! The configuration read model: accounts, their tokens, and the three stored layers of AI
//! settings (global, account, chat), folded from the `ai_global`, `account` and `chat_settings`
//! streams.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use wagate_events::account::{AccountEvent, CloudApiState, Transport};
use wagate_events::chat::{ChatEvent, PauseCause};
use wagate_events::chat_settings::{ChatSettings, ChatSettingsEvent};
use wagate_events::settings::{AiField, LayerState, SettingsEvent};
use wagate_events::webhook::{WebhookEvent, WebhookStatus};
use wagate_events::whatsapp_web::WebState;

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
    /// WhatsApp Web state and settings; `Some` exactly for a `whatsapp_web` account.
    pub whatsapp_web: Option<WebState>,
    pub created_at: DateTime<Utc>,
    pub deleted: bool,
    pub ai: LayerState,
    pub ai_updated_at: Option<DateTime<Utc>>,
    /// Who last set the account layer's model URLs (issue 21, finding 3).
    pub model_urls: ModelUrlOrigins,
    pub tokens: BTreeMap<String, TokenView>,
}

/// Whether the account layer's `base_url` and `fallback_base_url` were last set by an account
/// token (a tenant) rather than an admin. A tenant's URL is called with the public-only outbound
/// guard unless `WAGATE_ALLOW_PRIVATE_NETWORKS_FOR_ACCOUNTS`, whatever its name resolves to later
/// (a name that did not resolve when saved, or resolves elsewhere now: DNS rebinding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelUrlOrigins {
    pub base_url_by_tenant: bool,
    pub fallback_base_url_by_tenant: bool,
}

impl ModelUrlOrigins {
    /// Notes who set or cleared the layer's model URLs in a settings change.
    fn fold(&mut self, event: &SettingsEvent, actor: &str) {
        let SettingsEvent::AiSettingsChanged { set, cleared } = event else {
            return;
        };
        let tenant = actor.starts_with("token:");
        if set.base_url.is_some() {
            self.base_url_by_tenant = tenant;
        }
        if set.fallback_base_url.is_some() {
            self.fallback_base_url_by_tenant = tenant;
        }
        for field in cleared {
            match field {
                AiField::BaseUrl => self.base_url_by_tenant = false,
                AiField::FallbackBaseUrl => self.fallback_base_url_by_tenant = false,
                _ => {}
            }
        }
    }
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
                self.apply_account(&ev.aggregate_id, e, ev.recorded_at, ev.actor());
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

    fn apply_account(&mut self, id: &str, e: AccountEvent, at: DateTime<Utc>, actor: &str) {
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
                    whatsapp_web: (*transport == Transport::WhatsappWeb).then(WebState::default),
                    created_at: at,
                    deleted: false,
                    ai: LayerState::default(),
                    ai_updated_at: None,
                    model_urls: ModelUrlOrigins::default(),
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
            acc.model_urls.fold(&s, actor);
            acc.ai_updated_at = Some(at);
            return;
        }
        CloudApiState::fold(&mut acc.cloud_api, &e);
        WebState::fold(&mut acc.whatsapp_web, &e);
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

    /// The ids of the accounts that exist (not deleted), in order.
    pub fn live_account_ids(&self) -> Vec<String> {
        self.accounts
            .values()
            .filter(|a| !a.deleted)
            .map(|a| a.id.clone())
            .collect()
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

#[cfg(test)]
mod tests {
    use wagate_events::settings::{AiField, AiSettings, SettingsEvent};

    use super::ModelUrlOrigins;

    fn changed(base: Option<&str>, fallback: Option<&str>, cleared: Vec<AiField>) -> SettingsEvent {
        SettingsEvent::AiSettingsChanged {
            set: AiSettings {
                base_url: base.map(str::to_string),
                fallback_base_url: fallback.map(str::to_string),
                ..Default::default()
            },
            cleared,
        }
    }

    #[test]
    fn model_urls_remember_who_set_each_of_them() {
        let mut o = ModelUrlOrigins::default();
        o.fold(
            &changed(Some("https://a.example/v1"), None, vec![]),
            "token:t1",
        );
        assert!(o.base_url_by_tenant && !o.fallback_base_url_by_tenant);
        // An admin's change of the other URL leaves the tenant's as it was.
        o.fold(
            &changed(None, Some("https://b.example/v1"), vec![]),
            "admin:admin",
        );
        assert!(o.base_url_by_tenant && !o.fallback_base_url_by_tenant);
        o.fold(
            &changed(None, Some("https://c.example/v1"), vec![]),
            "token:t1",
        );
        assert!(o.fallback_base_url_by_tenant);
        // The admin taking a URL over, or clearing it, makes it no tenant's.
        o.fold(
            &changed(Some("https://d.example/v1"), None, vec![]),
            "admin:admin",
        );
        o.fold(
            &changed(None, None, vec![AiField::FallbackBaseUrl]),
            "token:t1",
        );
        assert_eq!(o, ModelUrlOrigins::default());
        // Other settings changes and key events do not touch the origins.
        o.fold(
            &changed(Some("https://e.example/v1"), None, vec![]),
            "token:t2",
        );
        o.fold(
            &changed(None, None, vec![AiField::ModelName]),
            "admin:admin",
        );
        assert!(o.base_url_by_tenant);
    }
}
