//! wagate's actor system (ractor). An `AccountActor` per account owns the chat actors of
//! its active chats; a `ChatActor` per active chat holds the chat's stream state, loaded
//! once, and commits new events at the version it holds; the `AiSupervisor` spawns
//! one linked `ReplyWorker` per reply and outlives them all. Everything outside the
//! process (event store, config, model, transport) is reached through the traits in [`ports`].

//!
//! The actors and their messages are private to this crate: the rest of the gateway talks to them
//! through [`Gateway`]'s typed methods only.

mod account;
mod chat;
pub mod format;
pub mod ports;
pub mod retry;
pub mod split;
mod supervisor;
mod worker;

pub use account::{ActorCounts, Gateway, Inbound};
pub use chat::{GeneratedReply, ReceiveAck, SentAck, SNAPSHOT_EVERY};
pub use ports::{ActorError, Ports};
pub use worker::budget_skip;
