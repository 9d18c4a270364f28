//! wagate: a WhatsApp gateway whose AI auto-reply is configured in three layers over env
//! defaults, with every change kept as an event. This crate is the binary's library: config,
//! store, crypto, auth, the HTTP API and the CLI commands; the domain lives in `wagate-events`
//! and the read models in `wagate-projections`.

pub mod app;
pub mod audit;
pub mod auth;
pub mod body_retention;
pub mod chat_store;
pub mod checkpoint;
pub mod cli;
pub mod cold;
pub mod config;
pub mod crypto;
pub mod dashboard;
pub mod group_commit;
pub mod group_load;
pub mod http;
pub mod model_client;
pub mod net_guard;
pub mod plain_http;
pub mod reply;
pub mod revocation;
pub mod startup;
pub mod store;
pub mod transport;
pub mod webhooks;
