//! The transports an account talks to WhatsApp through, behind the actors' [`Transport`] port:
//! the embedded sandbox and Meta's Cloud API. [`DispatchTransport`] looks up each account's
//! transport in the live config read model on every call, so a settings change (a new access
//! token, another Graph URL) applies to the next message without restarting anything.

pub mod cloud_api;

use std::sync::Weak;

use async_trait::async_trait;
use wagate_actors::ports::{SendError, Transport};
use wagate_events::account::{AccountCommand, Transport as TransportKind};

use crate::app::{App, RotateReport, Who};
use cloud_api::{access_token_ad, app_secret_ad, recipient, CloudApiClient, CloudTarget};

/// The embedded transport: nothing leaves the process; "sending" is the recorded outbound
/// message event, "typing" the recorded typing event.
pub struct SandboxTransport;

#[async_trait]
impl Transport for SandboxTransport {
    async fn send_text(&self, _: &str, _: &str, _: &str) -> Result<String, SendError> {
        Ok(format!("sbx_{}", uuid::Uuid::now_v7().simple()))
    }

    async fn typing(&self, _: &str, _: &str, _: Option<&str>) -> Result<(), SendError> {
        Ok(())
    }
}

/// Sends through the transport the account was created with.
pub struct DispatchTransport {
    app: Weak<App>,
    cloud: CloudApiClient,
}

impl DispatchTransport {
    pub fn new(app: Weak<App>, cloud: CloudApiClient) -> Self {
        Self { app, cloud }
    }

    /// `None` for a sandbox account; the Cloud API target (token opened) otherwise.
    fn target(&self, account: &str) -> Result<Option<CloudTarget>, SendError> {
        let app = self
            .app
            .upgrade()
            .ok_or_else(|| SendError::retryable("the gateway is shutting down"))?;
        let model = app.model();
        let acc = model
            .account(account)
            .ok_or_else(|| SendError::permanent("account not found or deleted"))?;
        if acc.transport == TransportKind::Sandbox {
            return Ok(None);
        }
        let cloud = acc
            .cloud_api
            .as_ref()
            .ok_or_else(|| SendError::permanent("cloud_api settings missing for this account"))?;
        if let Some(reason) = &cloud.token_invalid {
            return Err(SendError::permanent(format!(
                "not sent: the access token was rejected earlier ({reason}); set a new one with PATCH /v1/accounts/{account}/cloud_api"
            )));
        }
        let access_token = app
            .config
            .keyring
            .open_string(
                &cloud.settings.access_token_sealed,
                &access_token_ad(account),
            )
            .map_err(|_| {
                SendError::permanent(
                    "the stored cloud_api access token cannot be decrypted (is the master key that sealed it configured?)",
                )
            })?;
        Ok(Some(CloudTarget {
            graph_base_url: cloud.settings.graph_base_url.clone(),
            graph_version: cloud.settings.graph_version.clone(),
            phone_number_id: cloud.settings.phone_number_id.clone(),
            access_token,
        }))
    }

    /// Records that Meta rejected the token, so nothing more is sent with it.
    async fn flag_token(&self, account: &str, reason: String) {
        let Some(app) = self.app.upgrade() else {
            return;
        };
        let who = Who {
            actor: "system:cloud_api".into(),
            request_id: None,
        };
        let cmd = AccountCommand::FlagCloudApiToken { reason };
        if let Err(e) = app.execute(&app.accounts, account, cmd, &who).await {
            tracing::warn!(account, error = %e, "could not flag the rejected cloud_api access token");
        } else {
            tracing::warn!(account, "cloud_api access token rejected by Meta (error 190); sends stop until a new token is set");
        }
    }

    async fn graph_failed(&self, account: &str, e: &cloud_api::GraphError) -> SendError {
        if e.is_invalid_token() {
            self.flag_token(account, e.to_string()).await;
        }
        e.to_send_error()
    }
}

#[async_trait]
impl Transport for DispatchTransport {
    async fn send_text(&self, account: &str, jid: &str, text: &str) -> Result<String, SendError> {
        let Some(target) = self.target(account)? else {
            return SandboxTransport.send_text(account, jid, text).await;
        };
        let to = recipient(jid)?;
        match self.cloud.send_text(&target, to, text).await {
            Ok(id) => Ok(id),
            Err(e) => Err(self.graph_failed(account, &e).await),
        }
    }

    async fn typing(
        &self,
        account: &str,
        jid: &str,
        reply_to: Option<&str>,
    ) -> Result<(), SendError> {
        let Some(target) = self.target(account)? else {
            return SandboxTransport.typing(account, jid, reply_to).await;
        };
        // The Cloud API shows typing only on a received message being answered.
        let Some(message_id) = reply_to else {
            return Ok(());
        };
        match self.cloud.typing(&target, message_id).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.graph_failed(account, &e).await),
        }
    }
}

/// Re-encrypts the Cloud API secrets (access token, app secret) that are not under the current
/// master key; part of `wagate rotate-keys`. Counts each re-sealed secret in `report`.
pub async fn rotate_cloud_secrets(app: &App, who: &Who, report: &mut RotateReport) {
    let todo: Vec<(String, String, String)> = app
        .model()
        .accounts
        .values()
        .filter(|a| !a.deleted)
        .filter_map(|a| {
            let c = a.cloud_api.as_ref()?;
            Some((
                a.id.clone(),
                c.settings.access_token_sealed.clone(),
                c.settings.app_secret_sealed.clone(),
            ))
        })
        .collect();
    let keyring = &app.config.keyring;
    for (account, token, secret) in todo {
        let stale = usize::from(keyring.needs_rotation(&token))
            + usize::from(keyring.needs_rotation(&secret));
        if stale == 0 {
            continue;
        }
        let resealed = keyring
            .reseal(&token, &access_token_ad(&account))
            .and_then(|t| Ok((t, keyring.reseal(&secret, &app_secret_ad(&account))?)));
        let result = match resealed {
            Err(e) => Err(e.to_string()),
            Ok((access_token_sealed, app_secret_sealed)) => {
                let cmd = AccountCommand::ResealCloudApiSecrets {
                    access_token_sealed,
                    app_secret_sealed,
                };
                app.execute(&app.accounts, &account, cmd, who)
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        match result {
            Ok(()) => report.resealed += stale,
            Err(e) => report.failed.push(format!(
                "cannot re-encrypt the cloud_api secrets of account:{account}: {e}"
            )),
        }
    }
}
