//! `POST /v1/auth/login`: admin credentials -> admin JWT, with failed attempts rate limited per
//! client address and logged without the password.

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
use super::extract::ApiJson;
use crate::app::SharedApp;
use crate::auth;

/// Lifetime of a token from the login route.
pub const LOGIN_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new().routes(routes!(login))
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
        (status = 429, body = ErrorBody, description = "too many failed attempts; see Retry-After")))]
async fn login(
    State(app): State<SharedApp>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let (token, expires_at) = authenticate(&app, peer.ip(), req.username, req.password).await?;
    Ok(Json(LoginResponse { token, expires_at }))
}

/// Checks admin credentials under the failed-login limiter of `ip` and issues an admin JWT
/// (shared by the API and the dashboard login form): 429 while the address is limited, 401 on
/// a wrong username or password.
pub async fn authenticate(
    app: &SharedApp,
    ip: IpAddr,
    username: String,
    password: String,
) -> Result<(String, DateTime<Utc>), ApiError> {
    if let Err(wait) = app.login_limiter.check(ip) {
        tracing::warn!(client = %ip, "admin login refused: too many failed attempts");
        return Err(ApiError {
            retry_after: Some(wait.as_secs().max(1)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many failed logins; retry later",
            )
        });
    }
    let expected_user = app.config.admin_username.clone();
    let hash = app.config.admin_password_hash.clone();
    // Argon2 is deliberately slow: keep it off the async workers.
    let ok = tokio::task::spawn_blocking(move || {
        let user_ok = auth::constant_time_eq(username.as_bytes(), expected_user.as_bytes());
        let pw_ok = auth::verify_password(&hash, &password);
        user_ok && pw_ok
    })
    .await
    .map_err(|_| ApiError::internal())?;
    if !ok {
        app.login_limiter.record_failure(ip);
        tracing::warn!(client = %ip, "admin login failed");
        return Err(ApiError::unauthorized("invalid username or password"));
    }
    app.login_limiter.record_success(ip);
    let issued = app
        .config
        .jwt
        .issue(&app.config.admin_username, LOGIN_TOKEN_TTL)
        .map_err(|_| ApiError::internal())?;
    tracing::info!(client = %ip, "admin login");
    Ok(issued)
}
