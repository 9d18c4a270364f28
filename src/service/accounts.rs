//! Accounts: create (with a `cloud_api` account's sealed secrets), list, get, delete, change the
//! Cloud API settings, and the account's API tokens (shown once, stored only as hashes).

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use wagate_events::account::{
    AccountCommand, CloudApiPatch, CloudApiSettings, Transport, DEFAULT_GRAPH_BASE_URL,
    DEFAULT_GRAPH_VERSION,
};
use wagate_events::ids::validate_account_id;
use wagate_projections::connection::{self, ConnectionState, ConnectionStatus};
use wagate_projections::messages::MessagesModel;
use wagate_projections::{AccountView, TokenView};

use super::error::{Error, Result};
use crate::app::{App, Who};
use crate::auth;
use crate::model::guard::OutboundGuard;
use crate::transport::cloud_api::{access_token_ad, app_secret_ad, verify_token_digest};

/// A new account, as parsed by a front end (not yet checked).
#[derive(Debug)]
pub struct NewAccount {
    pub id: String,
    /// Defaults to the id.
    pub name: Option<String>,
    /// `sandbox`, `cloud_api` or `whatsapp_web`.
    pub transport: String,
    /// Required with `cloud_api`, refused otherwise.
    pub cloud_api: Option<CloudApiInput>,
}

/// A Cloud API account's settings with the plain secrets (sealed before they are stored).
#[derive(Debug)]
pub struct CloudApiInput {
    pub phone_number_id: String,
    pub business_account_id: String,
    pub access_token: String,
    pub app_secret: String,
    pub verify_token: String,
    pub graph_base_url: Option<String>,
    pub graph_version: Option<String>,
}

/// A change of Cloud API settings: only the fields given change.
#[derive(Debug, Default)]
pub struct CloudApiChange {
    pub phone_number_id: Option<String>,
    pub business_account_id: Option<String>,
    pub access_token: Option<String>,
    pub app_secret: Option<String>,
    pub verify_token: Option<String>,
    pub graph_base_url: Option<String>,
    pub graph_version: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountResponse {
    pub id: String,
    pub name: String,
    /// `sandbox`, `cloud_api` or `whatsapp_web`
    pub transport: String,
    /// Present for `cloud_api` accounts; never contains a secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_api: Option<CloudApiResponse>,
    /// Present for `whatsapp_web` accounts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whatsapp_web: Option<WhatsAppWebResponse>,
    pub created_at: DateTime<Utc>,
    pub connection: ConnectionResponse,
}

/// The account's connection status, folded from its chats' events (a replay gives the same).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionResponse {
    /// `sandbox` (a sandbox account); for `cloud_api`: `token_rejected` (Meta rejected the access
    /// token, sends stop until a new one is set), `send_failing` (the last send failure is newer
    /// than the last successful send), `connected` (something came in or went out), `waiting`
    /// (configured, nothing received or sent yet); for `whatsapp_web` the connection's state
    /// (`stopped`, `pairing`, `connecting`, `connected`, `disconnected`, `logged_out`,
    /// `temporarily_banned`, `client_outdated`, `stream_replaced`) or `send_failing`.
    #[schema(schema_with = connection_state_schema)]
    pub state: ConnectionState,
    /// `sandbox`, `cloud_api` or `whatsapp_web`
    pub transport: String,
    /// When the last event from the transport was recorded: a received message or a delivery
    /// status (for `cloud_api`, the last webhook from Meta that carried one). Null: none yet.
    pub last_inbound_at: Option<DateTime<Utc>>,
    /// When the account last sent a message successfully (the transport took it). Null: never.
    pub last_sent_at: Option<DateTime<Utc>>,
    /// The last send failure, kept after later successes (compare with `last_sent_at`). Null:
    /// none.
    pub last_send_error: Option<SendErrorResponse>,
    /// Whether Meta rejected the access token (`cloud_api.token_invalid` says why).
    pub token_invalid: bool,
}

/// The OpenAPI schema of [`ConnectionState`] (the projection's enum, named as it serializes).
fn connection_state_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(ConnectionState::ALL.iter().map(|s| s.as_str())))
        .build()
}

/// A send failure: a reply the transport refused (`send_failed`), or a delivery it reported
/// `failed`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SendErrorResponse {
    /// When the failure was recorded.
    pub at: DateTime<Utc>,
    /// What went wrong, as the transport said it (sanitized: never a message body or a token).
    pub reason: String,
}

impl From<ConnectionStatus> for ConnectionResponse {
    fn from(s: ConnectionStatus) -> Self {
        Self {
            state: s.state,
            transport: transport_name(s.transport).into(),
            last_inbound_at: s.last_inbound_at,
            last_sent_at: s.last_sent_at,
            last_send_error: s.last_send_error.map(|e| SendErrorResponse {
                at: e.at,
                reason: e.reason,
            }),
            token_invalid: s.token_invalid,
        }
    }
}

fn transport_name(t: Transport) -> &'static str {
    t.as_str()
}

/// A `whatsapp_web` account's connection and settings (the QR code itself is at
/// `GET /v1/accounts/{acc}/whatsapp-web/qr` while pairing).
#[derive(Debug, Serialize, ToSchema)]
pub struct WhatsAppWebResponse {
    /// `stopped`, `pairing`, `connecting`, `connected`, `disconnected`, `logged_out`,
    /// `temporarily_banned`, `client_outdated` or `stream_replaced`.
    pub state: String,
    /// Why the connection is in this state, when known (never a key or a QR code).
    pub reason: Option<String>,
    /// The operator asked to connect and no logout came since: the gateway keeps it connected.
    pub wanted: bool,
    /// Read receipts are sent for the messages the AI answers.
    pub mark_read: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CloudApiResponse {
    pub phone_number_id: String,
    pub business_account_id: String,
    pub graph_base_url: String,
    pub graph_version: String,
    pub has_access_token: bool,
    pub has_app_secret: bool,
    pub has_verify_token: bool,
    /// Why sends are stopped: Meta rejected the access token (error 190). Null when fine.
    pub token_invalid: Option<String>,
    /// The path to enter as Meta's callback URL (after your public base URL).
    pub webhook_path: String,
}

impl AccountResponse {
    /// The account as the API shows it, with its connection status from the messages model.
    pub fn new(a: &AccountView, messages: &MessagesModel) -> Self {
        Self {
            id: a.id.clone(),
            name: a.name.clone(),
            transport: transport_name(a.transport).into(),
            cloud_api: a.cloud_api.as_ref().map(|c| CloudApiResponse {
                phone_number_id: c.settings.phone_number_id.clone(),
                business_account_id: c.settings.business_account_id.clone(),
                graph_base_url: c.settings.graph_base_url.clone(),
                graph_version: c.settings.graph_version.clone(),
                has_access_token: !c.settings.access_token_sealed.is_empty(),
                has_app_secret: !c.settings.app_secret_sealed.is_empty(),
                has_verify_token: !c.settings.verify_token_sha256.is_empty(),
                token_invalid: c.token_invalid.clone(),
                webhook_path: format!("/v1/transports/cloud-api/{}/webhook", a.id),
            }),
            whatsapp_web: a.whatsapp_web.as_ref().map(|w| WhatsAppWebResponse {
                state: w.state.as_str().into(),
                reason: w.reason.clone(),
                wanted: w.wanted,
                mark_read: w.mark_read,
            }),
            created_at: a.created_at,
            connection: connection::status(a, messages.connection.activity(&a.id)).into(),
        }
    }
}

/// Checks a secret's shape: present, bounded, and printable ASCII (it travels in an HTTP
/// header or is compared byte for byte).
fn check_secret(field: &'static str, v: &str, max: usize) -> Result<()> {
    if v.is_empty() || v.len() > max || !v.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(Error::invalid(
            field,
            format!("1..={max} printable ASCII characters without spaces"),
        ));
    }
    Ok(())
}

/// The outbound guard's verdict on a Graph base URL other than Meta's: a test double or proxy
/// must be in `WAGATE_ALLOW_PRIVATE_NETWORKS` to be reachable, and the operator learns it now
/// rather than at the first reply.
async fn check_graph_url(app: &App, url: &str) -> Result<()> {
    if url.trim_end_matches('/') == DEFAULT_GRAPH_BASE_URL {
        return Ok(());
    }
    let parsed = url::Url::parse(url).map_err(|_| {
        Error::invalid(
            "cloud_api.graph_base_url",
            "must be an absolute http(s) URL without credentials, query or fragment",
        )
    })?;
    let guard = OutboundGuard::new(app.config.allow_private_networks.clone());
    match guard.check_url(&parsed).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_policy() => Err(Error::invalid("cloud_api.graph_base_url", e.to_string())),
        // Unresolvable now is not a policy refusal; every request is checked again anyway.
        Err(_) => Ok(()),
    }
}

/// Seals the input's secrets for `account` and builds the stored settings.
async fn cloud_settings(app: &App, account: &str, req: CloudApiInput) -> Result<CloudApiSettings> {
    check_secret("cloud_api.access_token", &req.access_token, 4096)?;
    check_secret("cloud_api.app_secret", &req.app_secret, 256)?;
    check_secret("cloud_api.verify_token", &req.verify_token, 256)?;
    let graph_base_url = req
        .graph_base_url
        .unwrap_or_else(|| DEFAULT_GRAPH_BASE_URL.to_string());
    check_graph_url(app, &graph_base_url).await?;
    let keyring = &app.config.keyring;
    Ok(CloudApiSettings {
        phone_number_id: req.phone_number_id,
        business_account_id: req.business_account_id,
        access_token_sealed: keyring.seal(req.access_token.as_bytes(), &access_token_ad(account)),
        app_secret_sealed: keyring.seal(req.app_secret.as_bytes(), &app_secret_ad(account)),
        verify_token_sha256: verify_token_digest(&req.verify_token),
        graph_base_url: graph_base_url.trim_end_matches('/').to_string(),
        graph_version: req
            .graph_version
            .unwrap_or_else(|| DEFAULT_GRAPH_VERSION.to_string()),
    })
}

/// One live account; 404 when unknown or deleted. Its connection status includes what this
/// process committed before the call.
pub async fn get(app: &App, id: &str) -> Result<AccountResponse> {
    app.catch_up_own().await?;
    let config = app.model();
    let messages = app.messages();
    config
        .account(id)
        .map(|a| AccountResponse::new(a, &messages))
        .ok_or_else(|| Error::not_found("account not found"))
}

/// 404 unless `acc` is a live account.
pub fn require_live(app: &App, acc: &str) -> Result<()> {
    if app.model().account(acc).is_none() {
        return Err(Error::not_found("account not found"));
    }
    Ok(())
}

/// The ids of live accounts, oldest first.
pub fn live_ids(app: &App) -> Vec<String> {
    let m = app.model();
    let mut items: Vec<&AccountView> = m.accounts.values().filter(|a| !a.deleted).collect();
    items.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    items.into_iter().map(|a| a.id.clone()).collect()
}

/// Live accounts, oldest first, with their connection status (including what this process
/// committed before the call).
pub async fn list(app: &App) -> Result<Vec<AccountResponse>> {
    app.catch_up_own().await?;
    let m = app.model();
    let messages = app.messages();
    let mut items: Vec<&AccountView> = m.accounts.values().filter(|a| !a.deleted).collect();
    items.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    Ok(items
        .into_iter()
        .map(|a| AccountResponse::new(a, &messages))
        .collect())
}

/// Validates and creates an account.
pub async fn create(app: &App, who: &Who, req: NewAccount) -> Result<AccountResponse> {
    validate_account_id(&req.id)?;
    let transport = match req.transport.as_str() {
        "sandbox" => Transport::Sandbox,
        "cloud_api" => Transport::CloudApi,
        "whatsapp_web" => Transport::WhatsappWeb,
        _ => {
            return Err(Error::invalid(
                "transport",
                "must be sandbox, cloud_api or whatsapp_web",
            ))
        }
    };
    let cloud_api = match (transport, req.cloud_api) {
        (Transport::CloudApi, None) => {
            return Err(Error::invalid(
                "cloud_api",
                "required when transport is cloud_api",
            ))
        }
        (Transport::Sandbox | Transport::WhatsappWeb, Some(_)) => {
            return Err(Error::invalid(
                "cloud_api",
                "only allowed when transport is cloud_api",
            ))
        }
        (_, Some(c)) => Some(cloud_settings(app, &req.id, c).await?),
        (_, None) => None,
    };
    let name = req.name.unwrap_or_else(|| req.id.clone());
    let cmd = AccountCommand::Create {
        id: req.id.clone(),
        name,
        transport,
        cloud_api,
    };
    app.execute(&app.accounts, &req.id, cmd, who).await?;
    get(app, &req.id).await
}

/// Deletes an account and stops its actors: its tokens stop working; its history stays
/// replayable and its id stays reserved.
pub async fn delete(app: &App, who: &Who, acc: &str) -> Result<()> {
    let web = app
        .model()
        .account(acc)
        .is_some_and(|a| a.transport == Transport::WhatsappWeb);
    app.execute(&app.accounts, acc, AccountCommand::Delete, who)
        .await?;
    if let (true, Some(sessions)) = (web, app.web.get()) {
        sessions.account_deleted(acc).await;
    }
    if let Ok(gateway) = app.gateway() {
        gateway.stop_account(acc).await;
    }
    Ok(())
}

/// Changes a `cloud_api` account's settings (only the fields given). Secrets are sealed again
/// for this account; a new access token lifts the "token rejected" flag.
pub async fn change_cloud_api(
    app: &App,
    who: &Who,
    acc: &str,
    req: CloudApiChange,
) -> Result<AccountResponse> {
    let keyring = &app.config.keyring;
    if let Some(t) = &req.access_token {
        check_secret("access_token", t, 4096)?;
    }
    if let Some(t) = &req.app_secret {
        check_secret("app_secret", t, 256)?;
    }
    if let Some(t) = &req.verify_token {
        check_secret("verify_token", t, 256)?;
    }
    if let Some(u) = &req.graph_base_url {
        check_graph_url(app, u).await?;
    }
    let patch = CloudApiPatch {
        phone_number_id: req.phone_number_id,
        business_account_id: req.business_account_id,
        access_token_sealed: req
            .access_token
            .map(|t| keyring.seal(t.as_bytes(), &access_token_ad(acc))),
        app_secret_sealed: req
            .app_secret
            .map(|t| keyring.seal(t.as_bytes(), &app_secret_ad(acc))),
        verify_token_sha256: req.verify_token.map(|t| verify_token_digest(&t)),
        graph_base_url: req
            .graph_base_url
            .map(|u| u.trim_end_matches('/').to_string()),
        graph_version: req.graph_version,
    };
    app.execute(
        &app.accounts,
        acc,
        AccountCommand::ChangeCloudApi(patch),
        who,
    )
    .await?;
    get(app, acc).await
}

/// The new token: `token` is shown this once and never again.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    pub id: String,
    pub token: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked: bool,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<&TokenView> for TokenResponse {
    fn from(t: &TokenView) -> Self {
        Self {
            id: t.id.clone(),
            name: t.name.clone(),
            created_at: t.created_at,
            revoked: t.revoked,
            revoked_at: t.revoked_at,
        }
    }
}

/// Issues an account token (`wgt_…`, 256 random bits) scoped to `acc`; the secret is in the
/// answer only.
pub async fn issue_token(app: &App, who: &Who, acc: &str, name: String) -> Result<CreatedToken> {
    let (token, token_hash) = auth::generate_account_token();
    let token_id = uuid::Uuid::now_v7().to_string();
    let cmd = AccountCommand::IssueToken {
        token_id: token_id.clone(),
        name,
        token_hash,
    };
    app.execute(&app.accounts, acc, cmd, who).await?;
    let created_at = app
        .model()
        .account(acc)
        .and_then(|a| a.tokens.get(&token_id).map(|t| t.created_at))
        .unwrap_or_else(Utc::now);
    Ok(CreatedToken {
        id: token_id,
        token,
        created_at,
    })
}

/// An account's tokens (never the secrets); 404 when the account is unknown.
pub fn tokens(app: &App, acc: &str) -> Result<Vec<TokenResponse>> {
    let m = app.model();
    let a = m
        .account(acc)
        .ok_or_else(|| Error::not_found("account not found"))?;
    Ok(a.tokens.values().map(TokenResponse::from).collect())
}

/// Revokes a token; it stops working at once.
pub async fn revoke_token(app: &App, who: &Who, acc: &str, token_id: String) -> Result<()> {
    app.execute(
        &app.accounts,
        acc,
        AccountCommand::RevokeToken { token_id },
        who,
    )
    .await?;
    Ok(())
}
