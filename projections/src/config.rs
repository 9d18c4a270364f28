//! The configuration read model: accounts, their tokens, and the three stored layers of AI
//! settings (global, account, chat), folded from the `ai_global`, `account` and `chat_settings`
//! streams.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use wagate_events::account::{AccountEvent, CloudApiState, Transport};
use wagate_events::chat_settings::{ChatSettings, ChatSettingsEvent};
use wagate_events::settings::{LayerState, SettingsEvent};

use crate::StoredEvent;

/// Aggregate types this model folds.
pub const CONFIG_AGGREGATES: [&str; 3] = ["ai_global", "account", "chat_settings"];

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
    serde_json::from_value(ev.payload.clone()).map_err(|e| FoldError {
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
            _ => {}
        }
        self.position = self.position.max(ev.position);
        Ok(())
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

    pub fn chat(&self, account_id: &str, jid: &str) -> Option<&ChatSettings> {
        self.chats.get(&(account_id.to_string(), jid.to_string()))
    }
}
