//! The transports an account talks to WhatsApp through, behind the actors' [`Session`] port: the
//! embedded sandbox ([`SandboxTransport`]), Meta's Cloud API ([`cloud_api`]) and WhatsApp Web
//! ([`whatsapp_web`], with the connections in `app::whatsapp_web`). Which one an
//! account uses is decided per call by its session (`app::dispatch`), from the live config read
//! model.

pub mod cloud_api;
pub mod media;
pub mod whatsapp_web;

use async_trait::async_trait;
use wagate_actors::ports::{SendError, Session};

/// The embedded transport: nothing leaves the process; "sending" is the recorded outbound
/// message event, "typing" the recorded typing event.
pub struct SandboxTransport;

#[async_trait]
impl Session for SandboxTransport {
    async fn send_text(&self, _: &str, _: &str) -> Result<String, SendError> {
        Ok(format!("sbx_{}", uuid::Uuid::now_v7().simple()))
    }

    async fn typing(&self, _: &str, _: Option<&str>) -> Result<(), SendError> {
        Ok(())
    }

    fn reaches_customers(&self) -> bool {
        false
    }
}
