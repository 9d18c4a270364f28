//! wagate's actor system (ractor). An [`account::AccountActor`] per account owns the chat actors of
//! its active chats; a [`chat::ChatActor`] per active chat holds the chat's stream state, loaded
//! once, and commits new events at the version it holds; the [`supervisor::AiSupervisor`] spawns
//! one linked [`worker::ReplyWorker`] per reply and outlives them all. Everything outside the
//! process (event store, config, model, transport) is reached through the traits in [`ports`].

pub mod account;
pub mod chat;
pub mod ports;
pub mod retry;
pub mod supervisor;
pub mod worker;

pub use account::Gateway;
pub use ports::{ActorError, Ports};
