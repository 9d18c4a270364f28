//! wagate's pure domain: the aggregates (global AI settings, accounts, per-chat AI settings), their
//! commands and events, and the decisions that turn one into the other. No I/O, no clock, no async
//! runtime: everything the decisions need (sealed keys, token hashes) arrives in the command.

pub mod account;
pub mod ai_global;
pub mod chat;
pub mod chat_settings;
pub mod error;
pub mod hours;
pub mod ids;
pub mod matcher;
pub mod message_window;
pub mod metadata;
pub mod reason;
pub mod settings;
pub mod webhook;
pub mod whatsapp_web;

pub use error::DomainError;

/// The version written with every event of this crate. Payloads so far change shape compatibly,
/// read by serde itself: new fields have defaults, and a field whose type changed reads both
/// shapes (a reply reason: the legacy text or the coded object, [`reason::compat`]). A change
/// that cannot be read that way bumps it per event type, with an upcaster for the older payloads.
pub const EVENT_VERSION: &str = "1";
