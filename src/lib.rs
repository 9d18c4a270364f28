//! wagate: a WhatsApp gateway whose AI auto-reply is configured in three layers over env
//! defaults, with every change kept as an event. This crate is the binary's library; the domain
//! lives in `wagate-events`, the read models in `wagate-projections`, the actors in
//! `wagate-actors`.
//!
//! The modules are layers; each uses only the ones listed before it (docs/ARCHITECTURE.md,
//! "Layers"; `tests/layers.rs` checks that no two import each other):
//! - foundations: [`config`], [`crypto`], [`auth`];
//! - [`store`]: every SQL statement (event store, group commit, loads, snapshots, checkpoints,
//!   replay folds, retention, outbox);
//! - [`model`]: the model client (reqwest) and the outbound guard;
//! - [`transport`]: how a message reaches WhatsApp (sandbox, Cloud API client);
//! - [`app`]: the running application: read models, command execution, the actors' ports,
//!   reads past memory, checkpoints and retention tasks;
//! - [`webhooks`]: fan-out and delivery;
//! - [`service`]: the application functions both front ends call (accounts, messages, webhooks,
//!   histories, the AI test, admin sessions, key rotation), with their own error type;
//! - front ends: [`http`], [`dashboard`], [`cli`]; [`startup`] wires them together.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod dashboard;
pub mod http;
pub mod model;
pub mod service;
pub mod startup;
pub mod store;
pub mod transport;
pub mod webhooks;
