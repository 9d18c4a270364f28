//! wagate's pure domain: the aggregates (global AI settings, accounts, per-chat AI settings), their
//! commands and events, and the decisions that turn one into the other. No I/O, no clock, no async
//! runtime: everything the decisions need (sealed keys, token hashes) arrives in the command.

pub mod account;
pub mod ai_global;
pub mod chat;
pub mod chat_settings;
pub mod error;
pub mod ids;
pub mod message_window;
pub mod metadata;
pub mod reason;
pub mod settings;
pub mod webhook;

pub use error::DomainError;

/// The version written with every event of this crate. Bumped per event type when its payload
/// changes shape; an upcaster then lifts the older payloads (see docs/adr/0002).
pub const EVENT_VERSION: &str = "1";
