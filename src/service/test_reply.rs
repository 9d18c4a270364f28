//! "Test AI": ask the model as an account / chat would, and optionally send the reply into the
//! chat (the two test routes and the dashboard's test page).

use serde::Serialize;
use utoipa::ToSchema;
use wagate_actors::budget_skip;
use wagate_events::chat::{MessageKind, Source, TokenUsage, Turn, HISTORY_LEN};
use wagate_events::chat_settings::ChatSettings;
use wagate_events::ids::{chat_kind, ChatKind};
use wagate_events::reason::ReplyReason;
use wagate_projections::effective::{self, Target};

use super::error::{Error, Result};
use super::messages::send_as_account;
use crate::app::cold;
use crate::app::ports::reply_config_of;
use crate::app::SettingsView;
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

/// Asks the model as the given account / chat would, through the reply pipeline's answer step
/// (the chat's history within the history budget and window, the model-call limits, retries,
/// the fallback model), without the rules that decide whether a chat is answered (enabled, chat
/// kind, blocked, paused): a test of the model configuration.
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
    // The chat's text turns as a reply sees them (the newest `HISTORY_LEN`, the test message
    // being the newest), oldest first.
    let mut history: Vec<Turn> = match (account, chat) {
        (Some(a), Some(c)) => cold::messages_page(app, a, c, None, 2 * HISTORY_LEN)
            .await?
            .into_iter()
            .filter(|m| m.kind == MessageKind::Text)
            .take(HISTORY_LEN - 1)
            .map(|m| Turn {
                inbound: !m.from_me,
                // A voice note is what its transcript says.
                text: m.transcript.unwrap_or(m.text),
                message_id: m.id,
                at: Some(m.created_at),
                ai: m.source == Source::Ai,
                media: None,
            })
            .collect(),
        _ => vec![],
    };
    history.reverse();
    history.push(Turn {
        inbound: true,
        text: message.to_string(),
        message_id: "test".into(),
        at: Some(chrono::Utc::now()),
        ai: false,
        media: None,
    });
    let cfg = reply_config_of(&SettingsView::of(app), &eff).map_err(|e| Error::Conflict {
        code: "api_key_unusable",
        message: e.to_string(),
    })?;
    // The test answers whatever the reply rules say of the chat (enabled, chat kind, blocked,
    // paused): it tests the model configuration. What it cannot do without a key or over the
    // account's daily token budget, it refuses as a reply would be skipped.
    if !cfg.echo_mode && cfg.api_key.is_none() {
        let why = eff
            .api_key_note
            .clone()
            .unwrap_or_else(|| ReplyReason::NoApiKey.text());
        return Err(Error::Conflict {
            code: ReplyReason::NoApiKey.code(),
            message: why,
        });
    }
    if let Some(reason) = budget_skip(&cfg) {
        return Err(Error::Conflict {
            code: reason.code(),
            message: reason.text(),
        });
    }
    let gateway = app.gateway()?;
    let reply = gateway
        .generate(account, &cfg, &history, message)
        .await
        .map_err(|reason| {
            tracing::warn!(reason = reason.code(), "test model call failed");
            match reason {
                ReplyReason::ModelError { message, .. } => Error::Upstream {
                    code: "model_error",
                    message,
                },
                other => Error::Upstream {
                    code: "model_error",
                    message: other.text(),
                },
            }
        })?;
    Ok(TestReply {
        reply: reply.text,
        model: reply.model,
        latency_ms: reply.latency_ms,
        usage: reply.usage,
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
    if send_to_chat {
        super::whatsapp_web::require_connection_here(app, account)?;
    }
    let mut reply = run_test(app, Some(account), chat, message).await?;
    if let (true, Some(jid)) = (send_to_chat, chat) {
        send_as_account(app, who, account, jid, &reply.reply, Source::Test).await?;
        reply.sent = true;
    }
    Ok(reply)
}
