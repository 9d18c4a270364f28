//! The one error type of the domain: why a command was refused.

/// Why a command was refused. Each variant maps to one HTTP status in the API layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A field of the command is out of range or malformed (HTTP 400).
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The thing the command targets does not exist (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The command conflicts with the current state (HTTP 409).
    #[error("{0}")]
    Conflict(String),
}

impl DomainError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }
}
