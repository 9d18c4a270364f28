//! The HTTP error: one stable JSON shape (`{"error":{"code","message","field"?}}`) for every
//! failure. Internal causes are logged with the request id; the client sees a code and a message,
//! never SQL, a stack trace, a key or an upstream body.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use wagate_events::DomainError;

use crate::app::AppError;
use crate::service;

/// On an error response: the request needs the gateway that runs this account (read by
/// the forwarding layer, `forward.rs`, which sends the request there).
#[derive(Debug, Clone)]
pub struct NeedsOwner(pub String);

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub retry_after: Option<u64>,
    /// The request needs the gateway that runs this account (`other_node`): the response says
    /// so to the forwarding layer (`forward.rs`).
    pub owner_of: Option<String>,
}

/// The error body.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable snake_case code, e.g. `invalid_field`, `unauthorized`, `not_found`.
    pub code: String,
    pub message: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
            owner_of: None,
        }
    }
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_field", message)
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log for this request id",
        )
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid { field, message } => ApiError::invalid(field, message),
            DomainError::NotFound(m) => ApiError::not_found(m),
            DomainError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
        }
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Domain(d) => d.into(),
            AppError::Unavailable(m) => {
                tracing::warn!(cause = %m, "store unavailable");
                ApiError::unavailable("the event store is unavailable; retry shortly")
            }
            AppError::Internal(m) => {
                tracing::error!(cause = %m, "internal error");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                field: self.field,
            },
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(account) = self.owner_of {
            resp.extensions_mut().insert(NeedsOwner(account));
        }
        resp
    }
}

impl From<wagate_actors::ActorError> for ApiError {
    fn from(e: wagate_actors::ActorError) -> Self {
        match e {
            wagate_actors::ActorError::Domain(d) => d.into(),
            wagate_actors::ActorError::Unavailable(m) => AppError::Unavailable(m).into(),
            wagate_actors::ActorError::Internal(m) => AppError::Internal(m).into(),
            // The transport's reason is sanitized (a class and a code, never a body or token).
            wagate_actors::ActorError::Transport(e) if e.retryable => Self {
                retry_after: Some(5),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "transport_unavailable",
                    format!(
                        "the transport did not send the message for now: {}",
                        e.reason
                    ),
                )
            },
            wagate_actors::ActorError::Transport(e) => Self::new(
                StatusCode::BAD_GATEWAY,
                "transport_refused",
                format!("the transport did not send the message: {}", e.reason),
            ),
        }
    }
}

impl From<service::Error> for ApiError {
    fn from(e: service::Error) -> Self {
        use service::Error as E;
        match e {
            E::Invalid { field, message } => ApiError::invalid(field, message),
            E::NotFound(m) => ApiError::not_found(m),
            E::Conflict { code, message } => ApiError::new(StatusCode::CONFLICT, code, message),
            E::OtherNode { account, message } => ApiError {
                owner_of: Some(account),
                ..ApiError::new(StatusCode::CONFLICT, "other_node", message)
            },
            E::Forbidden(m) => ApiError::forbidden(m),
            E::Unauthorized(m) => ApiError::unauthorized(m),
            E::RateLimited {
                message,
                retry_after,
            } => ApiError {
                retry_after: Some(retry_after),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
            },
            E::Unavailable(m) => ApiError::unavailable(m),
            E::Upstream { code, message } => ApiError::new(StatusCode::BAD_GATEWAY, code, message),
            E::Internal => ApiError::internal(),
            E::App(e) => e.into(),
            E::Actor(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each service error keeps the status, code, message, field and `Retry-After` the handlers
    /// answered before the service layer existed.
    #[test]
    fn service_errors_keep_their_http_shape() {
        use service::Error as E;
        // (error, status, code, field, Retry-After)
        type Case = (
            E,
            StatusCode,
            &'static str,
            Option<&'static str>,
            Option<u64>,
        );
        let cases: Vec<Case> = vec![
            (
                E::invalid("limit", "must be between 1 and 500"),
                StatusCode::BAD_REQUEST,
                "invalid_field",
                Some("limit"),
                None,
            ),
            (
                E::not_found("account not found"),
                StatusCode::NOT_FOUND,
                "not_found",
                None,
                None,
            ),
            (
                E::Conflict {
                    code: "no_api_key",
                    message: "no API key configured".into(),
                },
                StatusCode::CONFLICT,
                "no_api_key",
                None,
                None,
            ),
            (
                E::Forbidden("no".into()),
                StatusCode::FORBIDDEN,
                "forbidden",
                None,
                None,
            ),
            (
                E::Unauthorized("invalid username or password".into()),
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                None,
                None,
            ),
            (
                E::RateLimited {
                    message: "too many login attempts; retry later".into(),
                    retry_after: 12,
                },
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                None,
                Some(12),
            ),
            (
                E::Unavailable("cannot record the logout; retry shortly".into()),
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                None,
                Some(1),
            ),
            (
                E::Upstream {
                    code: "model_error",
                    message: "model answered 500".into(),
                },
                StatusCode::BAD_GATEWAY,
                "model_error",
                None,
                None,
            ),
            (
                E::Internal,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                None,
                None,
            ),
            (
                E::from(DomainError::Conflict("exists".into())),
                StatusCode::CONFLICT,
                "conflict",
                None,
                None,
            ),
            (
                E::from(AppError::Unavailable("down".into())),
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                None,
                Some(1),
            ),
        ];
        for (e, status, code, field, retry_after) in cases {
            let shown = format!("{e:?}");
            let api = ApiError::from(e);
            assert_eq!(api.status, status, "{shown}");
            assert_eq!(api.code, code, "{shown}");
            assert_eq!(api.field.as_deref(), field, "{shown}");
            assert_eq!(api.retry_after, retry_after, "{shown}");
        }
    }
}
