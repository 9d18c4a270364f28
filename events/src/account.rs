//! A WhatsApp account: its creation and deletion, its transport settings (for the WhatsApp
//! Business Cloud API: ids, sealed secrets, the verify token's hash), its layer of the AI
//! settings, and its API tokens (stored only as hashes). One stream per account
//! (`account` / `<id>`).

use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::ids::validate_account_id;
use crate::settings::{
    self, AiSettings, AiSettingsPatch, KeyClearReason, LayerState, SealedKey, SettingsEvent,
};
use crate::whatsapp_web::{WebConnectionState, WebState};
use crate::DomainError;

/// Longest account or token name accepted.
pub const MAX_NAME: usize = 200;

/// How the account talks to WhatsApp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// The embedded default: messages are injected over HTTP and "sent" by recording them.
    Sandbox,
    /// Meta's WhatsApp Business Cloud API (Graph API out, signed webhooks in).
    CloudApi,
    /// A phone's WhatsApp linked as a device (QR code or pair code), through whatsapp-rust.
    WhatsappWeb,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sandbox => "sandbox",
            Self::CloudApi => "cloud_api",
            Self::WhatsappWeb => "whatsapp_web",
        }
    }
}

/// Meta's public Graph API, the default `graph_base_url`.
pub const DEFAULT_GRAPH_BASE_URL: &str = "https://graph.facebook.com";
/// The Graph API version used when none is configured.
pub const DEFAULT_GRAPH_VERSION: &str = "v21.0";

/// A Cloud API account's settings as stored. The access token and the app secret arrive already
/// sealed by the caller (ciphertext bound to this account); the verify token only as its SHA-256
/// hex digest, since the gateway only ever compares it. Nothing here is a usable secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudApiSettings {
    pub phone_number_id: String,
    pub business_account_id: String,
    pub access_token_sealed: String,
    pub app_secret_sealed: String,
    pub verify_token_sha256: String,
    pub graph_base_url: String,
    pub graph_version: String,
}

/// A change of the Cloud API settings; `None` keeps the current value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CloudApiPatch {
    pub phone_number_id: Option<String>,
    pub business_account_id: Option<String>,
    pub access_token_sealed: Option<String>,
    pub app_secret_sealed: Option<String>,
    pub verify_token_sha256: Option<String>,
    pub graph_base_url: Option<String>,
    pub graph_version: Option<String>,
}

/// The Cloud API state of an account: its settings and, once Meta rejected the access token
/// (Graph error 190), why no message is sent until a new token is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudApiState {
    pub settings: CloudApiSettings,
    pub token_invalid: Option<String>,
}

impl CloudApiState {
    /// Folds a Cloud API event into an account's state (shared with the read model so both agree
    /// on when the invalid-token flag is lifted: only by a different access token).
    pub fn fold(state: &mut Option<CloudApiState>, event: &AccountEvent) {
        match event {
            AccountEvent::CloudApiConfigured { settings } => {
                let token_invalid = match state {
                    Some(c) if c.settings.access_token_sealed == settings.access_token_sealed => {
                        c.token_invalid.clone()
                    }
                    _ => None,
                };
                *state = Some(CloudApiState {
                    settings: settings.clone(),
                    token_invalid,
                });
            }
            AccountEvent::CloudApiTokenInvalid { reason } => {
                if let Some(c) = state {
                    c.token_invalid = Some(reason.clone());
                }
            }
            AccountEvent::CloudApiSecretsResealed {
                access_token_sealed,
                app_secret_sealed,
            } => {
                if let Some(c) = state {
                    c.settings.access_token_sealed = access_token_sealed.clone();
                    c.settings.app_secret_sealed = app_secret_sealed.clone();
                }
            }
            _ => {}
        }
    }
}

fn check_numeric_id(field: &'static str, v: &str) -> Result<(), DomainError> {
    if v.is_empty() || v.len() > 32 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DomainError::invalid(
            field,
            "must be 1..=32 digits (as Meta shows it)",
        ));
    }
    Ok(())
}

impl CloudApiSettings {
    /// Checks every field: the ids are Meta's numeric ids, the secrets are present, the base URL
    /// is an absolute http(s) URL without credentials, query or fragment, and the version looks
    /// like `v21.0`.
    pub fn validate(&self) -> Result<(), DomainError> {
        check_numeric_id("cloud_api.phone_number_id", &self.phone_number_id)?;
        check_numeric_id("cloud_api.business_account_id", &self.business_account_id)?;
        if self.access_token_sealed.is_empty() {
            return Err(DomainError::invalid(
                "cloud_api.access_token",
                "must not be empty",
            ));
        }
        if self.app_secret_sealed.is_empty() {
            return Err(DomainError::invalid(
                "cloud_api.app_secret",
                "must not be empty",
            ));
        }
        if self.verify_token_sha256.len() != 64
            || !self
                .verify_token_sha256
                .bytes()
                .all(|b| b.is_ascii_hexdigit())
        {
            return Err(DomainError::invalid(
                "cloud_api.verify_token",
                "must be given (stored as its SHA-256 digest)",
            ));
        }
        let url_err = || {
            DomainError::invalid(
                "cloud_api.graph_base_url",
                "must be an absolute http(s) URL without credentials, query or fragment",
            )
        };
        let url = url::Url::parse(&self.graph_base_url).map_err(|_| url_err())?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host_str().is_none()
            || !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
            || self.graph_base_url.len() > 2048
        {
            return Err(url_err());
        }
        let v = &self.graph_version;
        let ok_version = v.len() <= 16
            && v.strip_prefix('v').is_some_and(|rest| {
                let mut parts = rest.split('.');
                let major = parts.next().unwrap_or("");
                let minor = parts.next().unwrap_or("");
                parts.next().is_none()
                    && !major.is_empty()
                    && !minor.is_empty()
                    && major.bytes().all(|b| b.is_ascii_digit())
                    && minor.bytes().all(|b| b.is_ascii_digit())
            });
        if !ok_version {
            return Err(DomainError::invalid(
                "cloud_api.graph_version",
                "must look like v21.0",
            ));
        }
        Ok(())
    }

    fn patched(&self, p: CloudApiPatch) -> Self {
        Self {
            phone_number_id: p
                .phone_number_id
                .unwrap_or_else(|| self.phone_number_id.clone()),
            business_account_id: p
                .business_account_id
                .unwrap_or_else(|| self.business_account_id.clone()),
            access_token_sealed: p
                .access_token_sealed
                .unwrap_or_else(|| self.access_token_sealed.clone()),
            app_secret_sealed: p
                .app_secret_sealed
                .unwrap_or_else(|| self.app_secret_sealed.clone()),
            verify_token_sha256: p
                .verify_token_sha256
                .unwrap_or_else(|| self.verify_token_sha256.clone()),
            graph_base_url: p
                .graph_base_url
                .unwrap_or_else(|| self.graph_base_url.clone()),
            graph_version: p
                .graph_version
                .unwrap_or_else(|| self.graph_version.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenState {
    pub name: String,
    pub token_hash: String,
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Account {
    pub created: bool,
    pub deleted: bool,
    pub name: String,
    pub transport: Option<Transport>,
    #[serde(default)]
    pub cloud_api: Option<CloudApiState>,
    /// `Some` exactly for a `whatsapp_web` account.
    #[serde(default)]
    pub whatsapp_web: Option<WebState>,
    pub ai: LayerState,
    pub tokens: BTreeMap<String, TokenState>,
    /// The node that runs the account's replies and its lease epoch, as last recorded (several
    /// gateways on one store, ADR 0026).
    #[serde(default)]
    pub owner: Option<(String, i64)>,
}

#[derive(Debug, Clone, PartialEq)]
// Decided and folded one at a time; the size is not worth a box (and the serialized form must
// stay the same).
#[allow(clippy::large_enum_variant)]
pub enum AccountCommand {
    /// `cloud_api` must be given exactly when `transport` is [`Transport::CloudApi`].
    Create {
        id: String,
        name: String,
        transport: Transport,
        cloud_api: Option<CloudApiSettings>,
    },
    Delete,
    /// A node took the account's lease under `epoch` (ADR 0026): recorded unless this or a later
    /// epoch is recorded already.
    RecordOwner {
        node_id: String,
        epoch: i64,
        previous: Option<String>,
    },
    /// Changes a Cloud API account's settings. A new access token lifts the invalid-token flag.
    ChangeCloudApi(CloudApiPatch),
    /// Meta rejected the access token (Graph error 190): flag it so sends stop until replaced.
    FlagCloudApiToken {
        reason: String,
    },
    /// The same secrets re-sealed under the current master key (key rotation).
    ResealCloudApiSecrets {
        access_token_sealed: String,
        app_secret_sealed: String,
    },
    /// Connect a `whatsapp_web` account (pairing first when it has no session).
    ConnectWhatsAppWeb,
    /// The state a `whatsapp_web` account's connection reported.
    RecordWhatsAppWebState {
        state: WebConnectionState,
        reason: Option<String>,
    },
    /// Changes a `whatsapp_web` account's settings (`None` keeps the value).
    ChangeWhatsAppWeb {
        mark_read: Option<bool>,
    },
    ChangeAi(AiSettingsPatch),
    ResealApiKey {
        sealed: String,
    },
    /// Re-encrypt the stored fallback key under the current master key (key rotation).
    ResealFallbackApiKey {
        sealed: String,
    },
    /// The token itself is generated by the caller; only its hash reaches the domain.
    IssueToken {
        token_id: String,
        name: String,
        token_hash: String,
    },
    RevokeToken {
        token_id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// Decided and folded one at a time; the size is not worth a box (and the serialized form must
// stay the same).
#[allow(clippy::large_enum_variant)]
pub enum AccountEvent {
    AccountCreated {
        id: String,
        name: String,
        transport: Transport,
    },
    AccountDeleted,
    /// The whole Cloud API settings after a create or change (secrets sealed, verify token hashed).
    CloudApiConfigured {
        settings: CloudApiSettings,
    },
    CloudApiTokenInvalid {
        reason: String,
    },
    CloudApiSecretsResealed {
        access_token_sealed: String,
        app_secret_sealed: String,
    },
    AiSettingsChanged {
        set: AiSettings,
        cleared: Vec<settings::AiField>,
    },
    AiApiKeySet {
        key: SealedKey,
    },
    AiApiKeyCleared {
        reason: KeyClearReason,
    },
    AiApiKeyResealed {
        key: SealedKey,
    },
    AiFallbackApiKeySet {
        key: SealedKey,
    },
    AiFallbackApiKeyCleared {
        reason: KeyClearReason,
    },
    AiFallbackApiKeyResealed {
        key: SealedKey,
    },
    TokenIssued {
        token_id: String,
        name: String,
        token_hash: String,
    },
    TokenRevoked {
        token_id: String,
    },
    /// Another node runs the account's replies now: it took the lease under `epoch` from
    /// `previous` (none: nobody held it).
    AccountOwnerChanged {
        node_id: String,
        epoch: i64,
        previous: Option<String>,
    },
    /// The operator asked to connect the account's WhatsApp Web session.
    WhatsAppWebConnectRequested,
    /// The connection reported a new state.
    WhatsAppWebStateChanged {
        state: WebConnectionState,
        reason: Option<String>,
    },
    WhatsAppWebSettingsChanged {
        mark_read: bool,
    },
}

impl From<SettingsEvent> for AccountEvent {
    fn from(e: SettingsEvent) -> Self {
        match e {
            SettingsEvent::AiSettingsChanged { set, cleared } => {
                Self::AiSettingsChanged { set, cleared }
            }
            SettingsEvent::AiApiKeySet { key } => Self::AiApiKeySet { key },
            SettingsEvent::AiApiKeyCleared { reason } => Self::AiApiKeyCleared { reason },
            SettingsEvent::AiApiKeyResealed { key } => Self::AiApiKeyResealed { key },
            SettingsEvent::AiFallbackApiKeySet { key } => Self::AiFallbackApiKeySet { key },
            SettingsEvent::AiFallbackApiKeyCleared { reason } => {
                Self::AiFallbackApiKeyCleared { reason }
            }
            SettingsEvent::AiFallbackApiKeyResealed { key } => {
                Self::AiFallbackApiKeyResealed { key }
            }
        }
    }
}

impl AccountEvent {
    /// The settings part of this event, if it is one.
    pub fn as_settings(&self) -> Option<SettingsEvent> {
        Some(match self {
            Self::AiSettingsChanged { set, cleared } => SettingsEvent::AiSettingsChanged {
                set: set.clone(),
                cleared: cleared.clone(),
            },
            Self::AiApiKeySet { key } => SettingsEvent::AiApiKeySet { key: key.clone() },
            Self::AiApiKeyCleared { reason } => SettingsEvent::AiApiKeyCleared { reason: *reason },
            Self::AiApiKeyResealed { key } => SettingsEvent::AiApiKeyResealed { key: key.clone() },
            Self::AiFallbackApiKeySet { key } => {
                SettingsEvent::AiFallbackApiKeySet { key: key.clone() }
            }
            Self::AiFallbackApiKeyCleared { reason } => {
                SettingsEvent::AiFallbackApiKeyCleared { reason: *reason }
            }
            Self::AiFallbackApiKeyResealed { key } => {
                SettingsEvent::AiFallbackApiKeyResealed { key: key.clone() }
            }
            _ => return None,
        })
    }
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> String {
        match self {
            Self::AccountCreated { .. } => "AccountCreated",
            Self::AccountDeleted => "AccountDeleted",
            Self::CloudApiConfigured { .. } => "CloudApiConfigured",
            Self::CloudApiTokenInvalid { .. } => "CloudApiTokenInvalid",
            Self::CloudApiSecretsResealed { .. } => "CloudApiSecretsResealed",
            Self::AiSettingsChanged { .. } => "AiSettingsChanged",
            Self::AiApiKeySet { .. } => "AiApiKeySet",
            Self::AiApiKeyCleared { .. } => "AiApiKeyCleared",
            Self::AiApiKeyResealed { .. } => "AiApiKeyResealed",
            Self::AiFallbackApiKeySet { .. } => "AiFallbackApiKeySet",
            Self::AiFallbackApiKeyCleared { .. } => "AiFallbackApiKeyCleared",
            Self::AiFallbackApiKeyResealed { .. } => "AiFallbackApiKeyResealed",
            Self::TokenIssued { .. } => "TokenIssued",
            Self::TokenRevoked { .. } => "TokenRevoked",
            Self::AccountOwnerChanged { .. } => "AccountOwnerChanged",
            Self::WhatsAppWebConnectRequested => "WhatsAppWebConnectRequested",
            Self::WhatsAppWebStateChanged { .. } => "WhatsAppWebStateChanged",
            Self::WhatsAppWebSettingsChanged { .. } => "WhatsAppWebSettingsChanged",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

fn check_name(field: &'static str, name: &str) -> Result<(), DomainError> {
    if name.trim().is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            field,
            format!("at most {MAX_NAME} characters, no control characters"),
        ));
    }
    Ok(())
}

impl Account {
    fn live(&self) -> Result<(), DomainError> {
        if !self.created || self.deleted {
            return Err(DomainError::NotFound("account not found".into()));
        }
        Ok(())
    }

    fn web(&self) -> Result<&WebState, DomainError> {
        self.live()?;
        self.whatsapp_web.as_ref().ok_or_else(|| {
            DomainError::Conflict("this account does not use the whatsapp_web transport".into())
        })
    }

    fn cloud(&self) -> Result<&CloudApiState, DomainError> {
        self.live()?;
        self.cloud_api.as_ref().ok_or_else(|| {
            DomainError::Conflict("this account does not use the cloud_api transport".into())
        })
    }
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let events: Vec<AccountEvent> = match command {
            AccountCommand::Create {
                id,
                name,
                transport,
                cloud_api,
            } => {
                validate_account_id(&id)?;
                check_name("name", &name)?;
                match (transport, &cloud_api) {
                    (Transport::CloudApi, None) => {
                        return Err(DomainError::invalid(
                            "cloud_api",
                            "required when transport is cloud_api",
                        ))
                    }
                    (Transport::Sandbox | Transport::WhatsappWeb, Some(_)) => {
                        return Err(DomainError::invalid(
                            "cloud_api",
                            "only allowed when transport is cloud_api",
                        ))
                    }
                    (_, Some(settings)) => settings.validate()?,
                    (Transport::Sandbox | Transport::WhatsappWeb, None) => {}
                }
                if self.created {
                    return Err(DomainError::Conflict(format!(
                        "account id {id} is already taken (ids of deleted accounts stay reserved)"
                    )));
                }
                let mut events = vec![AccountEvent::AccountCreated {
                    id,
                    name,
                    transport,
                }];
                if let Some(settings) = cloud_api {
                    events.push(AccountEvent::CloudApiConfigured { settings });
                }
                events
            }
            AccountCommand::Delete => {
                self.live()?;
                vec![AccountEvent::AccountDeleted]
            }
            AccountCommand::RecordOwner {
                node_id,
                epoch,
                previous,
            } => {
                self.live()?;
                match &self.owner {
                    Some((_, recorded)) if *recorded >= epoch => vec![],
                    _ => vec![AccountEvent::AccountOwnerChanged {
                        node_id,
                        epoch,
                        previous,
                    }],
                }
            }
            AccountCommand::ChangeCloudApi(patch) => {
                let current = self.cloud()?;
                let settings = current.settings.patched(patch);
                settings.validate()?;
                if settings == current.settings {
                    vec![]
                } else {
                    vec![AccountEvent::CloudApiConfigured { settings }]
                }
            }
            AccountCommand::FlagCloudApiToken { reason } => {
                let current = self.cloud()?;
                if current.token_invalid.is_some() {
                    vec![]
                } else {
                    vec![AccountEvent::CloudApiTokenInvalid { reason }]
                }
            }
            AccountCommand::ResealCloudApiSecrets {
                access_token_sealed,
                app_secret_sealed,
            } => {
                self.cloud()?;
                vec![AccountEvent::CloudApiSecretsResealed {
                    access_token_sealed,
                    app_secret_sealed,
                }]
            }
            AccountCommand::ConnectWhatsAppWeb => self.web()?.decide_connect(),
            AccountCommand::RecordWhatsAppWebState { state, reason } => {
                self.web()?.decide_state(state, reason)?
            }
            AccountCommand::ChangeWhatsAppWeb { mark_read } => {
                self.web()?.decide_settings(mark_read)
            }
            AccountCommand::ChangeAi(patch) => {
                self.live()?;
                settings::decide(&self.ai, patch)?
                    .into_iter()
                    .map(Into::into)
                    .collect()
            }
            AccountCommand::ResealApiKey { sealed } => {
                self.live()?;
                settings::decide_reseal(&self.ai, sealed)?
                    .into_iter()
                    .map(Into::into)
                    .collect()
            }
            AccountCommand::ResealFallbackApiKey { sealed } => {
                self.live()?;
                settings::decide_reseal_fallback(&self.ai, sealed)?
                    .into_iter()
                    .map(Into::into)
                    .collect()
            }
            AccountCommand::IssueToken {
                token_id,
                name,
                token_hash,
            } => {
                self.live()?;
                check_name("name", &name)?;
                if self.tokens.contains_key(&token_id) {
                    return Err(DomainError::Conflict("token id already used".into()));
                }
                vec![AccountEvent::TokenIssued {
                    token_id,
                    name,
                    token_hash,
                }]
            }
            AccountCommand::RevokeToken { token_id } => {
                self.live()?;
                match self.tokens.get(&token_id) {
                    None => return Err(DomainError::NotFound("token not found".into())),
                    Some(t) if t.revoked => vec![],
                    Some(_) => vec![AccountEvent::TokenRevoked { token_id }],
                }
            }
        };
        for e in events {
            sink.write(e, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        if let Some(s) = event.as_settings() {
            self.ai.apply(&s);
            return;
        }
        match event {
            AccountEvent::AccountCreated {
                name, transport, ..
            } => {
                self.created = true;
                self.name = name;
                self.transport = Some(transport);
                if transport == Transport::WhatsappWeb {
                    self.whatsapp_web = Some(WebState::default());
                }
            }
            AccountEvent::AccountDeleted => self.deleted = true,
            e @ (AccountEvent::CloudApiConfigured { .. }
            | AccountEvent::CloudApiTokenInvalid { .. }
            | AccountEvent::CloudApiSecretsResealed { .. }) => {
                CloudApiState::fold(&mut self.cloud_api, &e);
            }
            AccountEvent::TokenIssued {
                token_id,
                name,
                token_hash,
            } => {
                self.tokens.insert(
                    token_id,
                    TokenState {
                        name,
                        token_hash,
                        revoked: false,
                    },
                );
            }
            AccountEvent::TokenRevoked { token_id } => {
                if let Some(t) = self.tokens.get_mut(&token_id) {
                    t.revoked = true;
                }
            }
            AccountEvent::AccountOwnerChanged { node_id, epoch, .. } => {
                self.owner = Some((node_id, epoch));
            }
            e @ (AccountEvent::WhatsAppWebConnectRequested
            | AccountEvent::WhatsAppWebStateChanged { .. }
            | AccountEvent::WhatsAppWebSettingsChanged { .. }) => {
                WebState::fold(&mut self.whatsapp_web, &e);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::settings::Patch;

    type Fw = TestFramework<Account>;

    fn created() -> AccountEvent {
        AccountEvent::AccountCreated {
            id: "acme".into(),
            name: "Acme".into(),
            transport: Transport::Sandbox,
        }
    }

    /// A takeover is recorded once per epoch; a stale or repeated one changes nothing, and a
    /// deleted account has no owner to record.
    #[test]
    fn owner_changes_by_epoch() {
        let record = |node: &str, epoch, previous: Option<&str>| AccountCommand::RecordOwner {
            node_id: node.into(),
            epoch,
            previous: previous.map(Into::into),
        };
        let changed =
            |node: &str, epoch, previous: Option<&str>| AccountEvent::AccountOwnerChanged {
                node_id: node.into(),
                epoch,
                previous: previous.map(Into::into),
            };
        Fw::with(())
            .given(vec![created()])
            .when(record("gw1", 1, None))
            .then_expect_events(vec![changed("gw1", 1, None)]);
        Fw::with(())
            .given(vec![created(), changed("gw1", 1, None)])
            .when(record("gw2", 2, Some("gw1")))
            .then_expect_events(vec![changed("gw2", 2, Some("gw1"))]);
        Fw::with(())
            .given(vec![created(), changed("gw2", 2, Some("gw1"))])
            .when(record("gw1", 1, None))
            .then_expect_events(vec![]);
        Fw::with(())
            .given(vec![created(), AccountEvent::AccountDeleted])
            .when(record("gw1", 1, None))
            .then_expect_error(DomainError::NotFound("account not found".into()));
    }

    fn web_created() -> AccountEvent {
        AccountEvent::AccountCreated {
            id: "shop".into(),
            name: "Shop".into(),
            transport: Transport::WhatsappWeb,
        }
    }

    /// Connect is recorded once; a state is recorded when it changes; logged out ends the wish
    /// to connect, so the next connect is recorded again.
    #[test]
    fn whatsapp_web_connect_and_states() {
        use crate::whatsapp_web::WebConnectionState as S;
        let state = |s: S, r: Option<&str>| AccountEvent::WhatsAppWebStateChanged {
            state: s,
            reason: r.map(Into::into),
        };
        let record = |s: S| AccountCommand::RecordWhatsAppWebState {
            state: s,
            reason: None,
        };
        Fw::with(())
            .given(vec![web_created()])
            .when(AccountCommand::ConnectWhatsAppWeb)
            .then_expect_events(vec![AccountEvent::WhatsAppWebConnectRequested]);
        Fw::with(())
            .given(vec![
                web_created(),
                AccountEvent::WhatsAppWebConnectRequested,
            ])
            .when(AccountCommand::ConnectWhatsAppWeb)
            .then_expect_events(vec![]);
        Fw::with(())
            .given(vec![
                web_created(),
                AccountEvent::WhatsAppWebConnectRequested,
            ])
            .when(record(S::Pairing))
            .then_expect_events(vec![state(S::Pairing, None)]);
        Fw::with(())
            .given(vec![web_created(), state(S::Connected, None)])
            .when(record(S::Connected))
            .then_expect_events(vec![]);
        Fw::with(())
            .given(vec![
                web_created(),
                AccountEvent::WhatsAppWebConnectRequested,
                state(S::LoggedOut, Some("unlinked")),
            ])
            .when(AccountCommand::ConnectWhatsAppWeb)
            .then_expect_events(vec![AccountEvent::WhatsAppWebConnectRequested]);
        Fw::with(())
            .given(vec![web_created()])
            .when(AccountCommand::ChangeWhatsAppWeb {
                mark_read: Some(true),
            })
            .then_expect_events(vec![AccountEvent::WhatsAppWebSettingsChanged {
                mark_read: true,
            }]);
    }

    /// The WhatsApp Web commands are refused for another transport (409) and for a deleted
    /// account (404); a whatsapp_web account takes no cloud_api settings.
    #[test]
    fn whatsapp_web_commands_need_a_whatsapp_web_account() {
        Fw::with(())
            .given(vec![created()])
            .when(AccountCommand::ConnectWhatsAppWeb)
            .then_expect_error(DomainError::Conflict(
                "this account does not use the whatsapp_web transport".into(),
            ));
        Fw::with(())
            .given(vec![web_created(), AccountEvent::AccountDeleted])
            .when(AccountCommand::ConnectWhatsAppWeb)
            .then_expect_error(DomainError::NotFound("account not found".into()));
        Fw::with(())
            .given(vec![web_created()])
            .when(AccountCommand::ChangeCloudApi(CloudApiPatch::default()))
            .then_expect_error(DomainError::Conflict(
                "this account does not use the cloud_api transport".into(),
            ));
    }

    #[test]
    fn create_account() {
        Fw::with(())
            .given_no_previous_events()
            .when(AccountCommand::Create {
                id: "acme".into(),
                name: "Acme".into(),
                transport: Transport::Sandbox,
                cloud_api: None,
            })
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn create_twice_conflicts_even_after_delete() {
        let cmd = || AccountCommand::Create {
            id: "acme".into(),
            name: "Acme".into(),
            transport: Transport::Sandbox,
            cloud_api: None,
        };
        Fw::with(())
            .given(vec![created()])
            .when(cmd())
            .then_expect_error_message(
                "account id acme is already taken (ids of deleted accounts stay reserved)",
            );
        Fw::with(())
            .given(vec![created(), AccountEvent::AccountDeleted])
            .when(cmd())
            .then_expect_error_message(
                "account id acme is already taken (ids of deleted accounts stay reserved)",
            );
    }

    #[test]
    fn bad_id_refused() {
        Fw::with(())
            .given_no_previous_events()
            .when(AccountCommand::Create {
                id: "Bad Id".into(),
                name: "x".into(),
                transport: Transport::Sandbox,
                cloud_api: None,
            })
            .then_expect_error_message("id: account id must match [a-z0-9][a-z0-9_-]{0,62}");
    }

    #[test]
    fn commands_on_missing_or_deleted_account_are_not_found() {
        Fw::with(())
            .given_no_previous_events()
            .when(AccountCommand::Delete)
            .then_expect_error_message("account not found");
        Fw::with(())
            .given(vec![created(), AccountEvent::AccountDeleted])
            .when(AccountCommand::ChangeAi(AiSettingsPatch {
                enabled: Patch::Set(false),
                ..Default::default()
            }))
            .then_expect_error_message("account not found");
    }

    #[test]
    fn account_override_is_recorded() {
        Fw::with(())
            .given(vec![created()])
            .when(AccountCommand::ChangeAi(AiSettingsPatch {
                model_name: Patch::Set("gpt-4.1".into()),
                ..Default::default()
            }))
            .then_expect_events(vec![AccountEvent::AiSettingsChanged {
                set: AiSettings {
                    model_name: Some("gpt-4.1".into()),
                    ..Default::default()
                },
                cleared: vec![],
            }]);
    }

    #[test]
    fn issue_and_revoke_token() {
        let issued = AccountEvent::TokenIssued {
            token_id: "t1".into(),
            name: "bot".into(),
            token_hash: "abc".into(),
        };
        Fw::with(())
            .given(vec![created()])
            .when(AccountCommand::IssueToken {
                token_id: "t1".into(),
                name: "bot".into(),
                token_hash: "abc".into(),
            })
            .then_expect_events(vec![issued.clone()]);
        Fw::with(())
            .given(vec![created(), issued.clone()])
            .when(AccountCommand::RevokeToken {
                token_id: "t1".into(),
            })
            .then_expect_events(vec![AccountEvent::TokenRevoked {
                token_id: "t1".into(),
            }]);
        Fw::with(())
            .given(vec![
                created(),
                issued,
                AccountEvent::TokenRevoked {
                    token_id: "t1".into(),
                },
            ])
            .when(AccountCommand::RevokeToken {
                token_id: "t1".into(),
            })
            .then_expect_events(vec![]);
        Fw::with(())
            .given(vec![created()])
            .when(AccountCommand::RevokeToken {
                token_id: "nope".into(),
            })
            .then_expect_error_message("token not found");
    }

    fn cloud_settings() -> CloudApiSettings {
        CloudApiSettings {
            phone_number_id: "106540352242922".into(),
            business_account_id: "102290129340398".into(),
            access_token_sealed: "sealed-token-1".into(),
            app_secret_sealed: "sealed-secret-1".into(),
            verify_token_sha256: "a".repeat(64),
            graph_base_url: DEFAULT_GRAPH_BASE_URL.into(),
            graph_version: DEFAULT_GRAPH_VERSION.into(),
        }
    }

    fn cloud_created() -> Vec<AccountEvent> {
        vec![
            AccountEvent::AccountCreated {
                id: "acme".into(),
                name: "Acme".into(),
                transport: Transport::CloudApi,
            },
            AccountEvent::CloudApiConfigured {
                settings: cloud_settings(),
            },
        ]
    }

    #[test]
    fn create_cloud_account_records_its_settings() {
        Fw::with(())
            .given_no_previous_events()
            .when(AccountCommand::Create {
                id: "acme".into(),
                name: "Acme".into(),
                transport: Transport::CloudApi,
                cloud_api: Some(cloud_settings()),
            })
            .then_expect_events(cloud_created());
    }

    #[test]
    fn cloud_settings_must_match_the_transport_and_be_valid() {
        let create = |transport, cloud_api| AccountCommand::Create {
            id: "acme".into(),
            name: "Acme".into(),
            transport,
            cloud_api,
        };
        Fw::with(())
            .given_no_previous_events()
            .when(create(Transport::CloudApi, None))
            .then_expect_error_message("cloud_api: required when transport is cloud_api");
        Fw::with(())
            .given_no_previous_events()
            .when(create(Transport::Sandbox, Some(cloud_settings())))
            .then_expect_error_message("cloud_api: only allowed when transport is cloud_api");
        let mut bad = cloud_settings();
        bad.phone_number_id = "12ab".into();
        Fw::with(())
            .given_no_previous_events()
            .when(create(Transport::CloudApi, Some(bad)))
            .then_expect_error_message(
                "cloud_api.phone_number_id: must be 1..=32 digits (as Meta shows it)",
            );
        let mut bad = cloud_settings();
        bad.graph_base_url = "ftp://graph.example".into();
        Fw::with(())
            .given_no_previous_events()
            .when(create(Transport::CloudApi, Some(bad)))
            .then_expect_error_message(
                "cloud_api.graph_base_url: must be an absolute http(s) URL without credentials, query or fragment",
            );
        let mut bad = cloud_settings();
        bad.graph_version = "21".into();
        Fw::with(())
            .given_no_previous_events()
            .when(create(Transport::CloudApi, Some(bad)))
            .then_expect_error_message("cloud_api.graph_version: must look like v21.0");
    }

    #[test]
    fn invalid_token_flag_is_set_once_and_lifted_by_a_new_token_only() {
        let flagged = AccountEvent::CloudApiTokenInvalid {
            reason: "cloud_api error 190: access token rejected".into(),
        };
        let flag = || AccountCommand::FlagCloudApiToken {
            reason: "cloud_api error 190: access token rejected".into(),
        };
        Fw::with(())
            .given(cloud_created())
            .when(flag())
            .then_expect_events(vec![flagged.clone()]);
        let mut given = cloud_created();
        given.push(flagged.clone());
        Fw::with(())
            .given(given.clone())
            .when(flag())
            .then_expect_events(vec![]);

        let mut account = Account::default();
        for e in given {
            account.apply(e);
        }
        // A change that keeps the token keeps the flag.
        let mut same_token = cloud_settings();
        same_token.graph_version = "v22.0".into();
        account.apply(AccountEvent::CloudApiConfigured {
            settings: same_token.clone(),
        });
        assert!(account
            .cloud_api
            .as_ref()
            .is_some_and(|c| c.token_invalid.is_some()));
        let mut new_token = same_token;
        new_token.access_token_sealed = "sealed-token-2".into();
        account.apply(AccountEvent::CloudApiConfigured {
            settings: new_token,
        });
        assert!(account
            .cloud_api
            .as_ref()
            .is_some_and(|c| c.token_invalid.is_none()));
    }

    #[test]
    fn change_cloud_settings_patches_and_refuses_sandbox_accounts() {
        let mut expected = cloud_settings();
        expected.graph_base_url = "http://127.0.0.1:9999".into();
        Fw::with(())
            .given(cloud_created())
            .when(AccountCommand::ChangeCloudApi(CloudApiPatch {
                graph_base_url: Some("http://127.0.0.1:9999".into()),
                ..Default::default()
            }))
            .then_expect_events(vec![AccountEvent::CloudApiConfigured {
                settings: expected,
            }]);
        Fw::with(())
            .given(cloud_created())
            .when(AccountCommand::ChangeCloudApi(CloudApiPatch::default()))
            .then_expect_events(vec![]);
        Fw::with(())
            .given(vec![created()])
            .when(AccountCommand::ChangeCloudApi(CloudApiPatch::default()))
            .then_expect_error_message("this account does not use the cloud_api transport");
    }
}
