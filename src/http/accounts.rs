//! Account routes: create, list, get, delete, the Cloud API settings of a `cloud_api` account
//! (secrets sealed, never returned), and the account's API tokens (shown once, stored only as
//! hashes, revocable).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_events::account::{
    AccountCommand, CloudApiPatch, CloudApiSettings, Transport, DEFAULT_GRAPH_BASE_URL,
    DEFAULT_GRAPH_VERSION,
};
use wagate_events::ids::validate_account_id;
use wagate_projections::{AccountView, TokenView};

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, Caller};
use super::openapi::{AccountId, TransportName};
use super::ListResponse;
use crate::app::{SharedApp, Who};
use crate::auth;
use crate::model::guard::OutboundGuard;
use crate::transport::cloud_api::{access_token_ad, app_secret_ad, verify_token_digest};

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new()
        .routes(routes!(create_account, list_accounts))
        .routes(routes!(get_account, delete_account))
        .routes(routes!(change_cloud_api))
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountRequest {
    /// Slug: `[a-z0-9][a-z0-9_-]{0,62}`.
    #[schema(value_type = AccountId)]
    pub id: String,
    /// Display name (defaults to the id): 1..=200 characters, not blank, no control characters.
    #[serde(default)]
    #[schema(
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: Option<String>,
    /// `sandbox` (the embedded transport) or `cloud_api` (Meta's WhatsApp Business Cloud API,
    /// with `cloud_api` settings).
    #[schema(value_type = TransportName)]
    pub transport: String,
    /// Required with `"transport": "cloud_api"`, refused otherwise.
    #[serde(default)]
    pub cloud_api: Option<CloudApiRequest>,
}

/// A Cloud API account's settings. The access token and the app secret are stored encrypted and
/// never returned; the verify token only as its SHA-256.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloudApiRequest {
    /// The phone number id from the app's WhatsApp > API Setup page (1..=32 digits).
    #[schema(pattern = r"^[0-9]{1,32}$")]
    pub phone_number_id: String,
    /// The WhatsApp Business Account id (1..=32 digits).
    #[schema(pattern = r"^[0-9]{1,32}$")]
    pub business_account_id: String,
    /// A system-user access token with `whatsapp_business_messaging` (printable ASCII, no
    /// spaces).
    #[schema(max_length = 4096, pattern = r"^[\x21-\x7e]+$")]
    pub access_token: String,
    /// The Meta app's secret: webhooks are signed with it (`X-Hub-Signature-256`).
    #[schema(max_length = 256, pattern = r"^[\x21-\x7e]+$")]
    pub app_secret: String,
    /// The token you enter in Meta's webhook configuration.
    #[schema(max_length = 256, pattern = r"^[\x21-\x7e]+$")]
    pub verify_token: String,
    /// Default `https://graph.facebook.com` (point it at a proxy or a test double): an absolute
    /// http(s) URL without credentials, query or fragment, that the outbound guard allows.
    #[serde(default)]
    #[schema(
        max_length = 2048,
        pattern = r"^[hH][tT][tT][pP][sS]?://[a-zA-Z0-9]+([.-][a-zA-Z0-9]+)*(:[1-9][0-9]{0,3})?(/[a-zA-Z0-9._~-]*)*$"
    )]
    pub graph_base_url: Option<String>,
    /// Default `v21.0`.
    #[serde(default)]
    #[schema(max_length = 16, pattern = r"^v[0-9]+\.[0-9]+$")]
    pub graph_version: Option<String>,
}

/// A change of Cloud API settings: only the fields given change. A new `access_token` lifts the
/// "token rejected" flag.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloudApiPatchRequest {
    #[serde(default)]
    #[schema(pattern = r"^[0-9]{1,32}$")]
    pub phone_number_id: Option<String>,
    #[serde(default)]
    #[schema(pattern = r"^[0-9]{1,32}$")]
    pub business_account_id: Option<String>,
    #[serde(default)]
    #[schema(max_length = 4096, pattern = r"^[\x21-\x7e]+$")]
    pub access_token: Option<String>,
    #[serde(default)]
    #[schema(max_length = 256, pattern = r"^[\x21-\x7e]+$")]
    pub app_secret: Option<String>,
    #[serde(default)]
    #[schema(max_length = 256, pattern = r"^[\x21-\x7e]+$")]
    pub verify_token: Option<String>,
    #[serde(default)]
    #[schema(
        max_length = 2048,
        pattern = r"^[hH][tT][tT][pP][sS]?://[a-zA-Z0-9]+([.-][a-zA-Z0-9]+)*(:[1-9][0-9]{0,3})?(/[a-zA-Z0-9._~-]*)*$"
    )]
    pub graph_base_url: Option<String>,
    #[serde(default)]
    #[schema(max_length = 16, pattern = r"^v[0-9]+\.[0-9]+$")]
    pub graph_version: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountResponse {
    pub id: String,
    pub name: String,
    /// `sandbox` or `cloud_api`
    pub transport: String,
    /// Present for `cloud_api` accounts; never contains a secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_api: Option<CloudApiResponse>,
    pub created_at: DateTime<Utc>,
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

impl From<&AccountView> for AccountResponse {
    fn from(a: &AccountView) -> Self {
        Self {
            id: a.id.clone(),
            name: a.name.clone(),
            transport: match a.transport {
                Transport::Sandbox => "sandbox".into(),
                Transport::CloudApi => "cloud_api".into(),
            },
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
            created_at: a.created_at,
        }
    }
}

/// Checks a secret's shape: present, bounded, and printable ASCII (it travels in an HTTP
/// header or is compared byte for byte).
fn check_secret(field: &'static str, v: &str, max: usize) -> Result<(), ApiError> {
    if v.is_empty() || v.len() > max || !v.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(ApiError::invalid(
            field,
            format!("1..={max} printable ASCII characters without spaces"),
        ));
    }
    Ok(())
}

/// The outbound guard's verdict on a Graph base URL other than Meta's: a test double or proxy
/// must be in `WAGATE_ALLOW_PRIVATE_NETWORKS` to be reachable, and the operator learns it now
/// rather than at the first reply.
async fn check_graph_url(app: &SharedApp, url: &str) -> Result<(), ApiError> {
    if url.trim_end_matches('/') == DEFAULT_GRAPH_BASE_URL {
        return Ok(());
    }
    let parsed = url::Url::parse(url).map_err(|_| {
        ApiError::invalid(
            "cloud_api.graph_base_url",
            "must be an absolute http(s) URL without credentials, query or fragment",
        )
    })?;
    let guard = OutboundGuard::new(app.config.allow_private_networks.clone());
    match guard.check_url(&parsed).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_policy() => {
            Err(ApiError::invalid("cloud_api.graph_base_url", e.to_string()))
        }
        // Unresolvable now is not a policy refusal; every request is checked again anyway.
        Err(_) => Ok(()),
    }
}

/// Seals the request's secrets for `account` and builds the stored settings.
async fn cloud_settings(
    app: &SharedApp,
    account: &str,
    req: CloudApiRequest,
) -> Result<CloudApiSettings, ApiError> {
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

fn account_response(app: &SharedApp, id: &str) -> Result<AccountResponse, ApiError> {
    app.model()
        .account(id)
        .map(AccountResponse::from)
        .ok_or_else(|| ApiError::not_found("account not found"))
}

/// Creates an account.
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", request_body = CreateAccountRequest,
    responses((status = 201, body = AccountResponse), (status = 409, body = ErrorBody)),
    security(("admin_jwt" = [])))]
async fn create_account(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateAccountRequest>,
) -> Result<(StatusCode, Json<AccountResponse>), ApiError> {
    caller.require_admin()?;
    let created = create(&app, &caller.who(), req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Validates and creates an account (shared by the API and the dashboard).
pub async fn create(
    app: &SharedApp,
    who: &Who,
    req: CreateAccountRequest,
) -> Result<AccountResponse, ApiError> {
    validate_account_id(&req.id)?;
    let transport = match req.transport.as_str() {
        "sandbox" => Transport::Sandbox,
        "cloud_api" => Transport::CloudApi,
        _ => {
            return Err(ApiError::invalid(
                "transport",
                "must be sandbox or cloud_api",
            ))
        }
    };
    let cloud_api = match (transport, req.cloud_api) {
        (Transport::CloudApi, None) => {
            return Err(ApiError::invalid(
                "cloud_api",
                "required when transport is cloud_api",
            ))
        }
        (Transport::Sandbox, Some(_)) => {
            return Err(ApiError::invalid(
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
    account_response(app, &req.id)
}

/// Lists live accounts, oldest first.
#[utoipa::path(get, path = "/v1/accounts", tag = "accounts",
    responses((status = 200, body = ListResponse<AccountResponse>)), security(("admin_jwt" = [])))]
async fn list_accounts(
    State(app): State<SharedApp>,
    caller: Caller,
) -> Result<Json<ListResponse<AccountResponse>>, ApiError> {
    caller.require_admin()?;
    let m = app.model();
    let mut items: Vec<&AccountView> = m.accounts.values().filter(|a| !a.deleted).collect();
    items.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    Ok(Json(ListResponse {
        items: items.into_iter().map(AccountResponse::from).collect(),
        next_cursor: None,
    }))
}

/// One account.
#[utoipa::path(get, path = "/v1/accounts/{acc}", tag = "accounts", params(("acc" = AccountId, Path)),
    responses((status = 200, body = AccountResponse)),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn get_account(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath(acc): ApiPath<String>,
) -> Result<Json<AccountResponse>, ApiError> {
    caller.require_account(&acc)?;
    account_response(&app, &acc).map(Json)
}

/// Deletes an account: its tokens stop working; its history stays replayable and its id stays
/// reserved.
#[utoipa::path(delete, path = "/v1/accounts/{acc}", tag = "accounts", params(("acc" = AccountId, Path)),
    responses((status = 204)), security(("admin_jwt" = [])))]
async fn delete_account(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath(acc): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    delete(&app, &caller.who(), &acc).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes an account and stops its actors (shared by the API and the dashboard).
pub async fn delete(app: &SharedApp, who: &Who, acc: &str) -> Result<(), ApiError> {
    app.execute(&app.accounts, acc, AccountCommand::Delete, who)
        .await?;
    if let Ok(gateway) = app.gateway() {
        gateway.stop_account(acc).await;
    }
    Ok(())
}

/// Changes a `cloud_api` account's settings (only the fields given). Secrets are sealed again for
/// this account; a new `access_token` lifts the "token rejected" flag.
#[utoipa::path(patch, path = "/v1/accounts/{acc}/cloud_api", tag = "accounts",
    params(("acc" = AccountId, Path)), request_body = CloudApiPatchRequest,
    responses((status = 200, body = AccountResponse),
        (status = 409, body = ErrorBody)),
    security(("admin_jwt" = [])))]
async fn change_cloud_api(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath(acc): ApiPath<String>,
    ApiJson(req): ApiJson<CloudApiPatchRequest>,
) -> Result<Json<AccountResponse>, ApiError> {
    caller.require_admin()?;
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
        check_graph_url(&app, u).await?;
    }
    let patch = CloudApiPatch {
        phone_number_id: req.phone_number_id,
        business_account_id: req.business_account_id,
        access_token_sealed: req
            .access_token
            .map(|t| keyring.seal(t.as_bytes(), &access_token_ad(&acc))),
        app_secret_sealed: req
            .app_secret
            .map(|t| keyring.seal(t.as_bytes(), &app_secret_ad(&acc))),
        verify_token_sha256: req.verify_token.map(|t| verify_token_digest(&t)),
        graph_base_url: req
            .graph_base_url
            .map(|u| u.trim_end_matches('/').to_string()),
        graph_version: req.graph_version,
    };
    app.execute(
        &app.accounts,
        &acc,
        AccountCommand::ChangeCloudApi(patch),
        &caller.who(),
    )
    .await?;
    account_response(&app, &acc).map(Json)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// 1..=200 characters, not blank, no control characters.
    #[schema(
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
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

/// Creates an account token (`wgt_…`, 256 random bits), scoped to this account.
#[utoipa::path(post, path = "/v1/accounts/{acc}/tokens", tag = "accounts", params(("acc" = AccountId, Path)),
    request_body = CreateTokenRequest,
    responses((status = 201, body = CreatedToken)),
    security(("admin_jwt" = [])))]
async fn create_token(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath(acc): ApiPath<String>,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    caller.require_admin()?;
    let created = issue_token(&app, &caller.who(), &acc, req.name).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Issues an account token (shared by the API and the dashboard); the secret is in the answer
/// only.
pub async fn issue_token(
    app: &SharedApp,
    who: &Who,
    acc: &str,
    name: String,
) -> Result<CreatedToken, ApiError> {
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

/// Lists an account's tokens (never the secrets).
#[utoipa::path(get, path = "/v1/accounts/{acc}/tokens", tag = "accounts", params(("acc" = AccountId, Path)),
    responses((status = 200, body = ListResponse<TokenResponse>)),
    security(("admin_jwt" = [])))]
async fn list_tokens(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath(acc): ApiPath<String>,
) -> Result<Json<ListResponse<TokenResponse>>, ApiError> {
    caller.require_admin()?;
    let m = app.model();
    let a = m
        .account(&acc)
        .ok_or_else(|| ApiError::not_found("account not found"))?;
    Ok(Json(ListResponse {
        items: a.tokens.values().map(TokenResponse::from).collect(),
        next_cursor: None,
    }))
}

/// Revokes a token; it stops working at once.
#[utoipa::path(delete, path = "/v1/accounts/{acc}/tokens/{id}", tag = "accounts",
    params(("acc" = AccountId, Path), ("id" = String, Path)),
    responses((status = 204)), security(("admin_jwt" = [])))]
async fn revoke_token(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath((acc, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    app.execute(
        &app.accounts,
        &acc,
        AccountCommand::RevokeToken { token_id: id },
        &caller.who(),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
