//! `POST /v1/auth/login`: admin credentials -> admin JWT, with attempts rate limited per client
//! address (counted before the password is checked), bounded password-check work, and logs
//! without the password. `POST /v1/auth/logout`: revokes the caller's admin JWT (ADR 0017).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

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
use crate::auth::{self, LoginRefused};
use uuid::Uuid;

/// Lifetime of a token from the login route.
pub const LOGIN_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

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

/// Revokes the admin session `jti` (expiring at `expires_at`, Unix seconds) for every process on
/// the store (shared by the API and the dashboard logout).
pub async fn revoke_session(app: &SharedApp, jti: Uuid, expires_at: i64) -> Result<(), ApiError> {
    app.revoked_tokens
        .revoke(&app.store, jti, expires_at)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot record a logout");
            ApiError::unavailable("cannot record the logout; retry shortly")
        })?;
    tracing::info!("admin logout: session revoked");
    Ok(())
}

/// Checks admin credentials under the login guard of `ip` and issues an admin JWT (shared by the
/// API and the dashboard login form). The attempt is counted before the password is checked, and
/// the argon2 check waits for one of a few process-wide slots: 429 with `Retry-After` when the
/// address spent its attempts or no slot freed up in time, 401 on a wrong username or password.
/// Logs name the client address, never the username or password.
pub async fn authenticate(
    app: &SharedApp,
    ip: IpAddr,
    username: String,
    password: String,
) -> Result<(String, DateTime<Utc>), ApiError> {
    let expected_user = app.config.admin_username.clone();
    let hash = app.config.admin_password_hash.clone();
    let checked = app
        .login_limiter
        .attempt(ip, move |memory| {
            // Both are always checked: the time does not tell which one was wrong.
            let user_ok = auth::constant_time_eq(username.as_bytes(), expected_user.as_bytes());
            let pw_ok = auth::verify_password_in(&hash, &password, memory);
            user_ok && pw_ok
        })
        .await;
    let refused = |wait: Duration, message: &str| ApiError {
        retry_after: Some(auth::retry_after_secs(wait)),
        ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
    };
    match checked {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(client = %ip, "admin login failed");
            return Err(ApiError::unauthorized("invalid username or password"));
        }
        Err(LoginRefused::TooManyAttempts(wait)) => {
            tracing::warn!(client = %ip, "admin login refused: too many attempts");
            return Err(refused(wait, "too many login attempts; retry later"));
        }
        Err(LoginRefused::Busy(wait)) => {
            tracing::warn!(client = %ip, "admin login refused: password checks busy");
            return Err(refused(
                wait,
                "too many logins in progress; retry in a moment",
            ));
        }
        Err(LoginRefused::Internal) => return Err(ApiError::internal()),
    }
    let issued = app
        .config
        .jwt
        .issue(&app.config.admin_username, LOGIN_TOKEN_TTL)
        .map_err(|_| ApiError::internal())?;
    tracing::info!(client = %ip, "admin login");
    Ok(issued)
}
