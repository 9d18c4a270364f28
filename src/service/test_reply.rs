//! "Test AI": ask the model as an account / chat would, and optionally send the reply into the
//! chat (the two test routes and the dashboard's test page).

use serde::Serialize;
use utoipa::ToSchema;
use wagate_actors::ports::{ModelCall, PromptRole};
use wagate_events::chat::{Source, TokenUsage};
use wagate_events::chat_settings::ChatSettings;
use wagate_events::ids::{chat_kind, ChatKind};
use wagate_projections::effective::{self, Target};

use super::error::{Error, Result};
use super::messages::send_as_account;
use crate::app::cold;
use crate::app::ports::{reply_config_of, to_request};
use crate::app::{App, Who};

#[derive(Debug, Serialize, ToSchema)]
pub struct TestReply {
    pub reply: String,
    pub model: String,
    pub latency_ms: u64,
    #[schema(value_type = Object)]
    pub usage: TokenUsage,
    pub sent: bool,
}

const MAX_TEST_MESSAGE: usize = 65_536;

/// Asks the model as the given account / chat would, without the reply rules (enabled, chat
/// kind, blocked): a test of the model configuration.
pub async fn run_test(
    app: &App,
    account: Option<&str>,
    chat: Option<&str>,
    message: &str,
) -> Result<TestReply> {
    if message.trim().is_empty() || message.chars().count() > MAX_TEST_MESSAGE {
        return Err(Error::invalid("message", "1..=65536 characters"));
    }
    let kind = match chat {
        Some(jid) => chat_kind(jid, "chat_id")?,
        None => ChatKind::Private,
    };
    let eff = {
        let model = app.model();
        let account_layer = match account {
            Some(a) => Some(
                &model
                    .account(a)
                    .ok_or_else(|| Error::not_found("account not found"))?
                    .ai,
            ),
            None => None,
        };
        let chat_settings: ChatSettings = match (account, chat) {
            (Some(a), Some(c)) => model.chat(a, c).cloned().unwrap_or_default(),
            _ => ChatSettings::default(),
        };
        effective::resolve_layers(
            &chat_settings,
            account_layer,
            &model.global,
            &app.env_layer,
            Target {
                account_id: account.unwrap_or(""),
                jid: chat.unwrap_or(""),
                chat_kind: kind,
                position: model.position,
            },
        )
    };
    // The chat's last 20 messages, oldest first.
    let history: Vec<(PromptRole, String)> = match (account, chat) {
        (Some(a), Some(c)) => cold::messages_page(app, a, c, None, 20)
            .await?
            .into_iter()
            .rev()
            .map(|m| {
                let role = if m.from_me {
                    PromptRole::Assistant
                } else {
                    PromptRole::User
                };
                (role, m.text)
            })
            .collect(),
        _ => vec![],
    };
    let cfg = reply_config_of(app, &eff).map_err(|e| Error::Conflict {
        code: "api_key_unusable",
        message: e.to_string(),
    })?;
    if cfg.echo_mode {
        return Ok(TestReply {
            reply: message.to_string(),
            model: "echo".into(),
            latency_ms: 0,
            usage: TokenUsage::default(),
            sent: false,
        });
    }
    if cfg.api_key.is_none() {
        let why = eff
            .api_key_note
            .clone()
            .unwrap_or_else(|| "no API key configured".into());
        return Err(Error::Conflict {
            code: "no_api_key",
            message: why,
        });
    }
    let mut messages = vec![(PromptRole::System, cfg.system_prompt.clone())];
    messages.extend(history);
    messages.push((PromptRole::User, message.to_string()));
    let call = ModelCall {
        base_url: cfg.base_url.clone(),
        api_key: cfg.api_key.clone(),
        model: cfg.model.clone(),
        messages,
        temperature: cfg.temperature,
        max_tokens: cfg.max_tokens,
        timeout: cfg.timeout,
        max_attempts: cfg.max_retries.saturating_add(1),
    };
    let client = app.model_client();
    let reply = client.complete(&to_request(call)).await.map_err(|e| {
        tracing::warn!(class = e.class(), "test model call failed");
        Error::Upstream {
            code: "model_error",
            message: e.to_string(),
        }
    })?;
    Ok(TestReply {
        reply: reply.text,
        model: reply.model,
        latency_ms: reply.latency_ms,
        usage: TokenUsage {
            prompt_tokens: reply.usage.prompt_tokens,
            completion_tokens: reply.usage.completion_tokens,
            total_tokens: reply.usage.total_tokens,
        },
        sent: false,
    })
}

/// Tests the model as `account` would answer in `chat` (see [`run_test`]), then, with
/// `send_to_chat`, sends the reply into that chat through the account's transport.
pub async fn test_and_send(
    app: &App,
    who: &Who,
    account: &str,
    chat: Option<&str>,
    message: &str,
    send_to_chat: bool,
) -> Result<TestReply> {
    if send_to_chat && chat.is_none() {
        return Err(Error::invalid("chat_id", "send_to_chat needs a chat_id"));
    }
    let mut reply = run_test(app, Some(account), chat, message).await?;
    if let (true, Some(jid)) = (send_to_chat, chat) {
        send_as_account(app, who, account, jid, &reply.reply, Source::Test).await?;
        reply.sent = true;
    }
    Ok(reply)
}
