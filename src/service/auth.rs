//! Admin sessions: a login (credentials checked under the login guard, an admin JWT issued), the
//! check of an admin JWT (the API's bearer token, the dashboard's cookie) and a logout (the
//! session revoked for every process on the store, ADR 0017).

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::error::{Error, Result};
use crate::app::App;
use crate::auth::{self, AdminClaims, LoginRefused};

/// Lifetime of a token from a login.
pub const LOGIN_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

/// Revokes the admin session `jti` (expiring at `expires_at`, Unix seconds) for every process on
/// the store.
pub async fn revoke_session(app: &App, jti: Uuid, expires_at: i64) -> Result<()> {
    app.revoked_tokens
        .revoke(&app.store, jti, expires_at)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot record a logout");
            Error::Unavailable("cannot record the logout; retry shortly".into())
        })?;
    tracing::info!("admin logout: session revoked");
    Ok(())
}

/// Checks admin credentials under the login guard of `ip` and issues an admin JWT and its
/// expiry. The attempt is counted before the password is checked, and the argon2 check waits
/// for one of a few process-wide slots: [`Error::RateLimited`] when the address spent its
/// attempts or no slot freed up in time, [`Error::Unauthorized`] on a wrong username or
/// password. Logs name the client address, never the username or password.
pub async fn authenticate(
    app: &App,
    ip: IpAddr,
    username: String,
    password: String,
) -> Result<(String, DateTime<Utc>)> {
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
    let refused = |wait: Duration, message: &str| Error::RateLimited {
        message: message.to_string(),
        retry_after: auth::retry_after_secs(wait),
    };
    match checked {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(client = %ip, "admin login failed");
            return Err(Error::Unauthorized("invalid username or password".into()));
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
        Err(LoginRefused::Internal) => return Err(Error::Internal),
    }
    let issued = app
        .config
        .jwt
        .issue(&app.config.admin_username, LOGIN_TOKEN_TTL)
        .map_err(|_| Error::Internal)?;
    tracing::info!(client = %ip, "admin login");
    Ok(issued)
}

/// An admin JWT that is valid (signature, claims, expiry: [`auth::JwtSigner::verify`]) and whose
/// session no logout revoked, in this process or another on the store (ADR 0017).
/// [`Error::Unauthorized`] otherwise; [`Error::Unavailable`] when the revocations cannot be read
/// (fail closed).
pub async fn verify_admin_token(app: &App, token: &str) -> Result<AdminClaims> {
    let claims = app
        .config
        .jwt
        .verify(token)
        .map_err(|_| Error::Unauthorized("invalid or expired admin token".into()))?;
    match app.revoked_tokens.is_revoked(&app.store, claims.jti).await {
        Ok(false) => Ok(claims),
        Ok(true) => {
            tracing::debug!("admin JWT of a logged-out session rejected");
            Err(Error::Unauthorized(
                "this admin token was revoked by a logout".into(),
            ))
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read token revocations");
            Err(Error::Unavailable(
                "cannot check the token against revoked sessions; retry shortly".into(),
            ))
        }
    }
}
