//! Account routes: create, list, get, delete, and the account's API tokens (shown once, stored
//! only as hashes, revocable).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_events::account::{AccountCommand, Transport};
use wagate_events::ids::validate_account_id;
use wagate_projections::{AccountView, TokenView};

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, Caller};
use super::ListResponse;
use crate::app::{SharedApp, Who};
use crate::auth;

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new()
        .routes(routes!(create_account, list_accounts))
        .routes(routes!(get_account, delete_account))
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountRequest {
    /// Slug: `[a-z0-9][a-z0-9_-]{0,62}`.
    pub id: String,
    /// Display name (defaults to the id).
    #[serde(default)]
    pub name: Option<String>,
    /// `sandbox` (the embedded transport). `cloud_api` is not available in this build yet.
    pub transport: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountResponse {
    pub id: String,
    pub name: String,
    /// `sandbox`
    pub transport: String,
    pub created_at: DateTime<Utc>,
}

impl From<&AccountView> for AccountResponse {
    fn from(a: &AccountView) -> Self {
        Self {
            id: a.id.clone(),
            name: a.name.clone(),
            transport: match a.transport {
                Transport::Sandbox => "sandbox".into(),
            },
            created_at: a.created_at,
        }
    }
}

fn account_response(app: &SharedApp, id: &str) -> Result<AccountResponse, ApiError> {
    app.model()
        .account(id)
        .map(AccountResponse::from)
        .ok_or_else(|| ApiError::not_found("account not found"))
}

/// Creates an account.
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", request_body = CreateAccountRequest,
    responses((status = 201, body = AccountResponse), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
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
        "cloud_api" => {
            return Err(ApiError::invalid(
                "transport",
                "the cloud_api transport is not available in this build yet; use sandbox",
            ))
        }
        _ => {
            return Err(ApiError::invalid(
                "transport",
                "must be sandbox or cloud_api",
            ))
        }
    };
    let name = req.name.unwrap_or_else(|| req.id.clone());
    let cmd = AccountCommand::Create {
        id: req.id.clone(),
        name,
        transport,
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
#[utoipa::path(get, path = "/v1/accounts/{acc}", tag = "accounts", params(("acc" = String, Path)),
    responses((status = 200, body = AccountResponse), (status = 404, body = ErrorBody)),
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
#[utoipa::path(delete, path = "/v1/accounts/{acc}", tag = "accounts", params(("acc" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("admin_jwt" = [])))]
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
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
#[utoipa::path(post, path = "/v1/accounts/{acc}/tokens", tag = "accounts", params(("acc" = String, Path)),
    request_body = CreateTokenRequest,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
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
#[utoipa::path(get, path = "/v1/accounts/{acc}/tokens", tag = "accounts", params(("acc" = String, Path)),
    responses((status = 200, body = ListResponse<TokenResponse>), (status = 404, body = ErrorBody)),
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
    params(("acc" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("admin_jwt" = [])))]
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
