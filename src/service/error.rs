//! The service layer's error: what went wrong, in terms a front end can show. The JSON API turns
//! it into its error body (status, stable code, message, field); the dashboard renders it.

use wagate_actors::ActorError;
use wagate_events::DomainError;

use crate::app::AppError;
use crate::store::StoreError;

/// Why a service function refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is wrong: `field` names it (400 `invalid_field`).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The thing named does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The state forbids it now (409), with a stable code (`conflict`, `no_api_key`, …).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The account runs on another gateway of the cluster and this request needs that gateway
    /// (its WhatsApp Web connection): 409 `other_node`, which the HTTP layer forwards to it, one
    /// hop, when it can (ADR 0029). Nothing was changed here.
    #[error("{message}")]
    OtherNode { account: String, message: String },
    /// The caller may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// Wrong credentials (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Too many attempts: retry after `retry_after` seconds (429 `rate_limited`).
    #[error("{message}")]
    RateLimited { message: String, retry_after: u64 },
    /// A dependency is down; the message is the client's (503, retry after a second).
    #[error("{0}")]
    Unavailable(String),
    /// An upstream (the model) failed (502), with a stable code.
    #[error("{message}")]
    Upstream { code: &'static str, message: String },
    /// A failure whose cause was already logged (500 without details).
    #[error("internal error")]
    Internal,
    /// The application's error (domain refusals, store unavailable, internal).
    #[error(transparent)]
    App(#[from] AppError),
    /// An actor's error (domain refusals, the transport's verdict).
    #[error(transparent)]
    Actor(#[from] ActorError),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }
}

impl From<DomainError> for Error {
    fn from(e: DomainError) -> Self {
        Self::App(AppError::Domain(e))
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Self::App(AppError::from(e))
    }
}

/// A service result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
