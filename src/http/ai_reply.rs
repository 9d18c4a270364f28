//! The AI log and the two "Test AI" routes of the seed.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_actors::ports::{ModelCall, PromptRole};
use wagate_events::chat::{Source, TokenUsage};
use wagate_events::chat_settings::ChatSettings;
use wagate_events::ids::{chat_kind, ChatKind};
use wagate_projections::effective::{self, Target};
use wagate_projections::messages::AiLogRow;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiQuery, Caller, Principal};
use super::messages::send_as_account;
use super::openapi::{AccountId, Jid, LogStatus};
use super::ListResponse;
use crate::app::cold;
use crate::app::ports::{reply_config_of, to_request};
use crate::app::SharedApp;

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new()
        .routes(routes!(list_logs))
        .routes(routes!(chat_test))
        .routes(routes!(admin_test))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    pub account_id: Option<String>,
    pub chat_id: Option<String>,
    /// `pending`, `generated`, `sent`, `failed` or `skipped`.
    #[param(value_type = Option<LogStatus>)]
    pub status: Option<String>,
    /// Page size 1..=500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// Only rows after this position (the `next_cursor` of the previous page).
    pub after: Option<i64>,
}

/// One row per reply attempt, oldest first. A failed or skipped row carries `reason` (the human
/// text) and `reason_code` (its stable code, docs/API.md "Reply reasons").
#[utoipa::path(get, path = "/v1/ai/logs", tag = "ai", params(LogsQuery),
    responses((status = 200, body = ListResponse<Object>),
        (status = 503, body = ErrorBody, description = "reads the event store, which is unavailable; retry after `Retry-After` seconds")),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn list_logs(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> Result<Json<ListResponse<AiLogRow>>, ApiError> {
    if let Principal::Account { account_id, .. } = &caller.principal {
        if q.account_id.as_deref() != Some(account_id.as_str()) {
            return Err(ApiError::forbidden(
                "account tokens must filter by their own account_id",
            ));
        }
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 500"));
    }
    if let Some(s) = q.status.as_deref() {
        if !["pending", "generated", "sent", "failed", "skipped"].contains(&s) {
            return Err(ApiError::invalid(
                "status",
                "must be pending, generated, sent, failed or skipped",
            ));
        }
    }
    app.catch_up().await?;
    let filter = cold::LogFilter {
        account_id: q.account_id.as_deref(),
        chat_id: q.chat_id.as_deref(),
        status: q.status.as_deref(),
    };
    let items = cold::ai_log_page(&app, &filter, q.after, limit).await?;
    Ok(Json(ListResponse::page(items, limit, |r| {
        r.position.to_string()
    })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatTestRequest {
    /// 1..=65536 characters, not blank.
    #[schema(max_length = 65536, pattern = r"\S")]
    pub message: String,
    /// A chat of the token's account: its settings and history shape the prompt.
    #[serde(default)]
    #[schema(value_type = Option<Jid>)]
    pub chat_id: Option<String>,
    /// Also send the reply into `chat_id` through the account's transport.
    #[serde(default)]
    pub send_to_chat: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminTestRequest {
    #[serde(default)]
    #[schema(value_type = Option<AccountId>)]
    pub account_id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Jid>)]
    pub chat_id: Option<String>,
    /// 1..=65536 characters, not blank.
    #[schema(max_length = 65536, pattern = r"\S")]
    pub message: String,
}

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
/// kind, blocked): a test of the model configuration. Shared by the API and the dashboard.
pub async fn run_test(
    app: &SharedApp,
    account: Option<&str>,
    chat: Option<&str>,
    message: &str,
) -> Result<TestReply, ApiError> {
    if message.trim().is_empty() || message.chars().count() > MAX_TEST_MESSAGE {
        return Err(ApiError::invalid("message", "1..=65536 characters"));
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
                    .ok_or_else(|| ApiError::not_found("account not found"))?
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
    let cfg = reply_config_of(app, &eff)
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "api_key_unusable", e.to_string()))?;
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
        return Err(ApiError::new(StatusCode::CONFLICT, "no_api_key", why));
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
        ApiError::new(StatusCode::BAD_GATEWAY, "model_error", e.to_string())
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

/// Test AI with an account token (the seed's token route).
#[utoipa::path(post, path = "/v1/ai/chat/test", tag = "ai", request_body = ChatTestRequest,
    responses((status = 200, body = TestReply),
        (status = 409, body = ErrorBody, description = "no usable API key"), (status = 502, body = ErrorBody)),
    security(("account_token" = [])))]
async fn chat_test(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiJson(req): ApiJson<ChatTestRequest>,
) -> Result<Json<TestReply>, ApiError> {
    let Principal::Account { account_id, .. } = caller.principal.clone() else {
        return Err(ApiError::forbidden(
            "this route takes an account token; admins use /v1/ai/admin/test",
        ));
    };
    if req.send_to_chat && req.chat_id.is_none() {
        return Err(ApiError::invalid("chat_id", "send_to_chat needs a chat_id"));
    }
    let mut reply = run_test(
        &app,
        Some(&account_id),
        req.chat_id.as_deref(),
        &req.message,
    )
    .await?;
    if let (true, Some(jid)) = (req.send_to_chat, req.chat_id.as_deref()) {
        send_as_account(&app, &caller, &account_id, jid, &reply.reply, Source::Test).await?;
        reply.sent = true;
    }
    Ok(Json(reply))
}

/// Test AI as an admin (the dashboard's AI chat / test page).
#[utoipa::path(post, path = "/v1/ai/admin/test", tag = "ai", request_body = AdminTestRequest,
    responses((status = 200, body = TestReply), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "no usable API key"), (status = 502, body = ErrorBody)),
    security(("admin_jwt" = [])))]
async fn admin_test(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiJson(req): ApiJson<AdminTestRequest>,
) -> Result<Json<TestReply>, ApiError> {
    caller.require_admin()?;
    if req.chat_id.is_some() && req.account_id.is_none() {
        return Err(ApiError::invalid(
            "account_id",
            "a chat_id needs its account_id",
        ));
    }
    run_test(
        &app,
        req.account_id.as_deref(),
        req.chat_id.as_deref(),
        &req.message,
    )
    .await
    .map(Json)
}
