//! `POST /v1/auth/login`: admin credentials -> admin JWT, with attempts rate limited per client
//! address (counted before the password is checked), bounded password-check work, and logs
//! without the password. `POST /v1/auth/logout`: revokes the caller's admin JWT (ADR 0017).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, Caller, Principal};
use crate::app::SharedApp;
use crate::service::auth::{authenticate, revoke_session};

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// An admin JWT for `Authorization: Bearer`.
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// Exchanges the admin username and password for an admin JWT.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody,
            description = "too many attempts from this address, or every password check busy; see Retry-After")))]
async fn login(
    State(app): State<SharedApp>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let (token, expires_at) = authenticate(&app, peer.ip(), req.username, req.password).await?;
    Ok(Json(LoginResponse { token, expires_at }))
}

/// Ends the session of this admin JWT: from now on it is 401 on every gateway sharing the store
/// (on another gateway within a second). Account tokens are revoked with
/// `DELETE /v1/accounts/{acc}/tokens/{id}` instead.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth",
    responses((status = 204, description = "the token is revoked"),
        (status = 401, body = ErrorBody, description = "no valid admin token (also: already logged out)"),
        (status = 403, body = ErrorBody, description = "an account token"),
        (status = 429, body = ErrorBody, description = "API rate limit of this caller; see Retry-After"),
        (status = 503, body = ErrorBody, description = "the store is unavailable; see Retry-After")),
    security(("admin_jwt" = [])))]
async fn logout(State(app): State<SharedApp>, caller: Caller) -> Result<StatusCode, ApiError> {
    let Principal::Admin {
        jti, expires_at, ..
    } = &caller.principal
    else {
        return Err(ApiError::forbidden(
            "account tokens are revoked with DELETE /v1/accounts/{acc}/tokens/{id}",
        ));
    };
    revoke_session(&app, *jti, *expires_at).await?;
    Ok(StatusCode::NO_CONTENT)
}
