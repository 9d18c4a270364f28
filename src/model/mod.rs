//! Outbound HTTP to AI models: the OpenAI-compatible client ([`client`]) and the guard that
//! decides which addresses any outbound request may reach ([`guard`], also used by webhooks and
//! the Cloud API client).

pub mod client;
pub mod guard;
