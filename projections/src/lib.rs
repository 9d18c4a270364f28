//! wagate's read models. Each is a pure fold over the event history in commit order
//! ([`StoredEvent::position`]): the running gateway folds new events as they commit, `as_of`
//! questions fold a prefix of the history, and replay folds all of it. No I/O here.

pub mod config;
pub mod connection;
pub mod effective;
pub mod messages;
pub mod outbox;
pub mod stats;
pub mod stored;

pub use config::{AccountView, ConfigModel, TokenView};
pub use effective::{Effective, EnvLayer, KeySource, Source, Sourced};
pub use stored::StoredEvent;
