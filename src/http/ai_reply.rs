//! The AI log and the two "Test AI" routes of the seed (their rules in `service::events` and
//! `service::test_reply`).

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_projections::messages::AiLogRow;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiQuery, Caller, Principal};
use super::openapi::{AccountId, Jid, LogStatus};
use super::ListResponse;
use crate::app::cold;
use crate::app::SharedApp;
use crate::service::events::ai_log;
pub use crate::service::test_reply::TestReply;
use crate::service::test_reply::{run_test, test_and_send};

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
    let filter = cold::LogFilter {
        account_id: q.account_id.as_deref(),
        chat_id: q.chat_id.as_deref(),
        status: q.status.as_deref(),
    };
    let (items, limit) = ai_log(&app, &filter, q.after, q.limit).await?;
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
    let reply = test_and_send(
        &app,
        &caller.who(),
        &account_id,
        req.chat_id.as_deref(),
        &req.message,
        req.send_to_chat,
    )
    .await?;
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
    let reply = run_test(
        &app,
        req.account_id.as_deref(),
        req.chat_id.as_deref(),
        &req.message,
    )
    .await?;
    Ok(Json(reply))
}
