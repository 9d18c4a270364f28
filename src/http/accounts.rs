//! Account routes: create, list, get, delete, the Cloud API settings of a `cloud_api` account
//! (secrets sealed, never returned), and the account's API tokens (shown once, stored only as
//! hashes, revocable).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, Caller};
use super::openapi::{AccountId, TransportName};
use super::ListResponse;
use crate::app::SharedApp;
use crate::service::accounts::{self as service, CloudApiChange, CloudApiInput, NewAccount};
pub use crate::service::accounts::{
    AccountResponse, CloudApiResponse, CreatedToken, TokenResponse,
};

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

impl From<CloudApiRequest> for CloudApiInput {
    fn from(r: CloudApiRequest) -> Self {
        Self {
            phone_number_id: r.phone_number_id,
            business_account_id: r.business_account_id,
            access_token: r.access_token,
            app_secret: r.app_secret,
            verify_token: r.verify_token,
            graph_base_url: r.graph_base_url,
            graph_version: r.graph_version,
        }
    }
}

impl From<CreateAccountRequest> for NewAccount {
    fn from(r: CreateAccountRequest) -> Self {
        Self {
            id: r.id,
            name: r.name,
            transport: r.transport,
            cloud_api: r.cloud_api.map(CloudApiInput::from),
        }
    }
}

impl From<CloudApiPatchRequest> for CloudApiChange {
    fn from(r: CloudApiPatchRequest) -> Self {
        Self {
            phone_number_id: r.phone_number_id,
            business_account_id: r.business_account_id,
            access_token: r.access_token,
            app_secret: r.app_secret,
            verify_token: r.verify_token,
            graph_base_url: r.graph_base_url,
            graph_version: r.graph_version,
        }
    }
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
    let created = service::create(&app, &caller.who(), req.into()).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Lists live accounts, oldest first.
#[utoipa::path(get, path = "/v1/accounts", tag = "accounts",
    responses((status = 200, body = ListResponse<AccountResponse>)), security(("admin_jwt" = [])))]
async fn list_accounts(
    State(app): State<SharedApp>,
    caller: Caller,
) -> Result<Json<ListResponse<AccountResponse>>, ApiError> {
    caller.require_admin()?;
    Ok(Json(ListResponse {
        items: service::list(&app).await?,
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
    Ok(Json(service::get(&app, &acc).await?))
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
    service::delete(&app, &caller.who(), &acc).await?;
    Ok(StatusCode::NO_CONTENT)
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
    let changed = service::change_cloud_api(&app, &caller.who(), &acc, req.into()).await?;
    Ok(Json(changed))
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
    let created = service::issue_token(&app, &caller.who(), &acc, req.name).await?;
    Ok((StatusCode::CREATED, Json(created)))
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
    Ok(Json(ListResponse {
        items: service::tokens(&app, &acc)?,
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
    service::revoke_token(&app, &caller.who(), &acc, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
