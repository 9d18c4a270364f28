//! wagate's adapter to [whatsapp-rust](https://crates.io/crates/whatsapp-rust) 0.7.0, the library
//! behind the `whatsapp_web` transport (issue 23). Nothing of the library's types leaves this
//! crate: the gateway drives a [`port::WebConnector`] and reads [`port::WebEvent`]s.
//!
//! - [`port`]: the boundary the gateway sees (connect, send, typing, read receipts, logout; the
//!   connection's events already mapped onto wagate's vocabulary).
//! - [`mapping`]: pure functions from the library's messages and events to the port's types.
//! - [`client`]: [`client::LibraryConnector`], the port on the real library.
//! - `http`: the library's HTTP client trait on reqwest.
//! - [`store`]: the session store (whatsapp-rust's `Backend`) of one account on wagate's SQLite
//!   or PostgreSQL database, every value sealed by the gateway's master key.

pub mod client;
mod http;
pub mod mapping;
pub mod port;
pub mod store;
