//! [`DispatchTransport`] opens each account's session ([`AccountSession`], owned by the account's
//! actor), which sends through the transport the account was created with. A session looks its
//! account up in the live config read model on every call, so a settings change (a new access
//! token, another Graph URL) applies to the next message without restarting anything; a token
//! Meta rejects is flagged on the account, so nothing more is sent with it.

use std::sync::Arc;

use async_trait::async_trait;
use wagate_actors::ports::{SendError, Session, Transport};
use wagate_events::account::{Account, AccountCommand, Transport as TransportKind};

use crate::app::whatsapp_web::WebSessions;
use crate::app::{execute, SettingsView, Who};
use crate::store::Framework;
use crate::transport::cloud_api::{self, access_token_ad, recipient, CloudApiClient, CloudTarget};
use crate::transport::SandboxTransport;

/// Opens accounts' sessions over the transports they were created with.
pub struct DispatchTransport(Arc<Dispatch>);

impl DispatchTransport {
    pub fn new(
        view: SettingsView,
        accounts: Arc<Framework<Account>>,
        cloud: CloudApiClient,
        web: Option<Arc<WebSessions>>,
    ) -> Self {
        Self(Arc::new(Dispatch {
            view,
            accounts,
            cloud,
            web,
        }))
    }
}

#[async_trait]
impl Transport for DispatchTransport {
    async fn open(&self, account: &str) -> Arc<dyn Session> {
        let web = self
            .0
            .view
            .read
            .model()
            .account(account)
            .is_some_and(|a| a.transport == TransportKind::WhatsappWeb);
        if let (true, Some(sessions)) = (web, &self.0.web) {
            // The account's actor owns its WhatsApp Web connection (issue 23).
            return sessions.open(account);
        }
        Arc::new(AccountSession {
            account: account.to_string(),
            dispatch: self.0.clone(),
        })
    }
}

/// What every session shares: the settings (config snapshot, read models), the account
/// commands (to flag a rejected token) and the Graph API client.
struct Dispatch {
    view: SettingsView,
    accounts: Arc<Framework<Account>>,
    cloud: CloudApiClient,
    /// The WhatsApp Web connections (`None`: this process runs none, e.g. a benchmark).
    web: Option<Arc<WebSessions>>,
}

/// One account's session: sends through the transport the account was created with.
pub struct AccountSession {
    account: String,
    dispatch: Arc<Dispatch>,
}

impl Dispatch {
    /// `None` for a sandbox account; the Cloud API target (token opened) otherwise.
    fn target(&self, account: &str) -> Result<Option<CloudTarget>, SendError> {
        let app = &self.view;
        let model = app.read.model();
        let acc = model
            .account(account)
            .ok_or_else(|| SendError::permanent("account not found or deleted"))?;
        match acc.transport {
            TransportKind::Sandbox => return Ok(None),
            TransportKind::WhatsappWeb => {
                return Err(SendError::retryable(
                    "whatsapp_web: the account's connection is not open in this gateway",
                ))
            }
            TransportKind::CloudApi => {}
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
        let who = Who {
            actor: "system:cloud_api".into(),
            request_id: None,
        };
        let cmd = AccountCommand::FlagCloudApiToken { reason };
        if let Err(e) = execute(&self.view.read, &self.accounts, account, cmd, &who).await {
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
impl Session for AccountSession {
    async fn send_text(&self, jid: &str, text: &str) -> Result<String, SendError> {
        let (account, dispatch) = (self.account.as_str(), &self.dispatch);
        let Some(target) = dispatch.target(account)? else {
            return SandboxTransport.send_text(jid, text).await;
        };
        let to = recipient(jid)?;
        match dispatch.cloud.send_text(&target, to, text).await {
            Ok(id) => Ok(id),
            Err(e) => Err(dispatch.graph_failed(account, &e).await),
        }
    }

    fn reaches_customers(&self) -> bool {
        // A sandbox account's sends stay in the gateway (ADR 0025); an account that is gone
        // counts as reaching someone (nothing is sent anyway).
        let model = self.dispatch.view.read.model();
        model
            .account(&self.account)
            .is_none_or(|acc| acc.transport != TransportKind::Sandbox)
    }

    async fn typing(&self, jid: &str, reply_to: Option<&str>) -> Result<(), SendError> {
        let (account, dispatch) = (self.account.as_str(), &self.dispatch);
        let Some(target) = dispatch.target(account)? else {
            return SandboxTransport.typing(jid, reply_to).await;
        };
        // The Cloud API shows typing only on a received message being answered.
        let Some(message_id) = reply_to else {
            return Ok(());
        };
        match dispatch.cloud.typing(&target, message_id).await {
            Ok(()) => Ok(()),
            Err(e) => Err(dispatch.graph_failed(account, &e).await),
        }
    }
}
