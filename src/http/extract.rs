//! Request extractors that fail with the API's JSON error shape: JSON bodies (415 / 413 / 400
//! naming the field), path and query parameters, the request id, and the caller's credentials
//! (with the revocation check of admin sessions and the per-caller API rate limit).

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::app::{App, SharedApp, Who};
use crate::auth;
use crate::service::auth::verify_admin_token;

/// A JSON body: `Content-Type: application/json` (415 otherwise), within the body limit (413),
/// and deserializable into `T` (400 naming the offending field; unknown fields are refused by the
/// `deny_unknown_fields` of each request type).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Deserializes JSON, reporting the path of the field at fault.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad_request("malformed_json", format!("malformed JSON: {inner}"));
        }
        let msg = inner.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        // The path names the field at fault (for an unknown field, the field itself); a missing
        // field is reported at its parent, so take its name from the message.
        let missing = msg
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
            .map(|name| {
                if path == "." {
                    name.to_string()
                } else {
                    format!("{path}.{name}")
                }
            });
        match missing {
            Some(field) => ApiError::invalid(field, msg),
            None if path == "." => ApiError::bad_request("invalid_body", msg),
            None => ApiError::invalid(path, msg),
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request("malformed_json", format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// Path parameters, 400 in the API shape when they do not parse.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request("invalid_path", r.body_text())
    }
}

/// Query parameters, 400 in the API shape when they do not parse.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", r.body_text())
    }
}

/// Who is calling, from `Authorization: Bearer …`.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A valid admin JWT whose session was not revoked.
    Admin {
        sub: String,
        /// The session id (the JWT's `jti`), which a logout revokes.
        jti: uuid::Uuid,
        /// The token's `exp` (Unix seconds).
        expires_at: i64,
    },
    /// A live account token.
    Account {
        account_id: String,
        token_id: String,
    },
}

/// The caller plus the request id, as recorded in event metadata.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub request_id: Option<String>,
}

impl Caller {
    pub fn who(&self) -> Who {
        Who {
            actor: match &self.principal {
                Principal::Admin { sub, .. } => format!("admin:{sub}"),
                Principal::Account { token_id, .. } => format!("token:{token_id}"),
            },
            request_id: self.request_id.clone(),
        }
    }

    /// Admin only: an account token is a 403.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match &self.principal {
            Principal::Admin { .. } => Ok(()),
            Principal::Account { .. } => Err(ApiError::forbidden(
                "this route needs an admin token; account tokens are scoped to their account",
            )),
        }
    }

    /// An admin, or a token of this very account; any other account's token is a 403.
    pub fn require_account(&self, account_id: &str) -> Result<(), ApiError> {
        match &self.principal {
            Principal::Admin { .. } => Ok(()),
            Principal::Account {
                account_id: own, ..
            } if own == account_id => Ok(()),
            Principal::Account { .. } => Err(ApiError::forbidden(
                "this account token is scoped to another account",
            )),
        }
    }
}

pub fn request_id(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// 429 `rate_limited` with `Retry-After` once the caller spent its API budget, kept per actor
/// (`admin:<sub>`, `token:<id>`).
fn check_rate_limit(app: &App, caller: &Caller) -> Result<(), ApiError> {
    app.api_limiter.check(&caller.who().actor).map_err(|wait| {
        tracing::debug!("API rate limit reached");
        ApiError {
            retry_after: Some(auth::retry_after_secs(wait)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests with this token; retry after the number of seconds in Retry-After",
            )
        }
    })
}

impl FromRequestParts<SharedApp> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &SharedApp) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token>"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("expected Authorization: Bearer <token>"))?;
        let principal = if auth::looks_like_account_token(token) {
            let hash = auth::hash_account_token(token);
            let model = app.model();
            let (account_id, token_id) = model
                .token_owner(&hash)
                .ok_or_else(|| ApiError::unauthorized("unknown or revoked account token"))?;
            Principal::Account {
                account_id: account_id.to_string(),
                token_id: token_id.to_string(),
            }
        } else {
            let claims = verify_admin_token(app, token).await?;
            Principal::Admin {
                sub: claims.sub,
                jti: claims.jti,
                expires_at: claims.exp,
            }
        };
        let caller = Caller {
            principal,
            request_id: request_id(parts),
        };
        check_rate_limit(app, &caller)?;
        Ok(caller)
    }
}

/// A raw body that could not be read, in the API's error shape (axum's own rejection is text):
/// JSON bodies here, and Meta's raw-body webhook.
pub(crate) fn body_rejection(rej: axum::extract::rejection::BytesRejection) -> ApiError {
    if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {} bytes", super::BODY_LIMIT),
        )
    } else {
        ApiError::bad_request("unreadable_body", "could not read the request body")
    }
}
