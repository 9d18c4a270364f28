//! Messages: the sandbox transport's inbound route, chats, a chat's messages, and operator sends.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_actors::Inbound;
use wagate_events::chat::{MessageKind, Source};
use wagate_events::ids::{chat_kind, ChatKind};
use wagate_projections::messages::{ChatView, MessageView};

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, Caller};
use super::openapi::{AccountId, Jid};
use super::ListResponse;
use crate::app::cold;
use crate::app::SharedApp;

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new()
        .routes(routes!(sandbox_inbound))
        .routes(routes!(list_chats))
        .routes(routes!(list_messages, send_message))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboundRequest {
    /// The chat JID (`<digits>@s.whatsapp.net`, `<id>@g.us`, …).
    #[schema(value_type = Jid)]
    pub chat_id: String,
    /// The sender (phone number or JID): 1..=128 bytes, not blank.
    #[schema(max_length = 128, pattern = r"\S")]
    pub from: String,
    /// 1..=65536 characters, not blank.
    #[schema(max_length = 65536, pattern = r"\S")]
    pub text: String,
    /// The WhatsApp message id; a repeated id is deduplicated. Generated when absent. 1..=256
    /// bytes, not blank.
    #[serde(default)]
    #[schema(max_length = 256, pattern = r"\S")]
    pub id: Option<String>,
    /// A message the account itself sent from another device (never answered).
    #[serde(default)]
    pub from_me: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InboundAccepted {
    pub message_id: String,
    /// The position of the committed message event.
    pub position: Option<i64>,
    /// True when this id was seen before (nothing new was written).
    pub duplicate: bool,
}

fn live_account(app: &SharedApp, caller: &Caller, acc: &str) -> Result<(), ApiError> {
    caller.require_account(acc)?;
    if app.model().account(acc).is_none() {
        return Err(ApiError::not_found("account not found"));
    }
    Ok(())
}

/// Injects an inbound message into a sandbox account. Answers 202 only after the message event is
/// committed; the AI reply follows asynchronously.
#[utoipa::path(post, path = "/v1/accounts/{acc}/sandbox/inbound", tag = "messages",
    params(("acc" = AccountId, Path)), request_body = InboundRequest,
    responses((status = 202, body = InboundAccepted)),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn sandbox_inbound(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath(acc): ApiPath<String>,
    ApiJson(req): ApiJson<InboundRequest>,
) -> Result<(StatusCode, Json<InboundAccepted>), ApiError> {
    live_account(&app, &caller, &acc)?;
    let accepted = inject_inbound(&app, &caller, &acc, req).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// Validates an inbound sandbox message and hands it to the chat actor; answers once the message
/// event is committed (shared by the API and the dashboard; the caller checked the account).
pub async fn inject_inbound(
    app: &SharedApp,
    caller: &Caller,
    acc: &str,
    req: InboundRequest,
) -> Result<InboundAccepted, ApiError> {
    let kind = chat_kind(&req.chat_id, "chat_id")?;
    if req.from.trim().is_empty() || req.from.len() > 128 {
        return Err(ApiError::invalid("from", "1..=128 characters"));
    }
    let message_id = match req.id {
        Some(id) if id.trim().is_empty() || id.len() > 256 => {
            return Err(ApiError::invalid("id", "1..=256 characters"))
        }
        Some(id) => id,
        None => format!("sbx_in_{}", uuid::Uuid::now_v7().simple()),
    };
    let reply_candidate = !req.from_me && kind != ChatKind::Broadcast;
    let meta = caller.who().metadata();
    let gateway = app.gateway()?;
    let inbound = Inbound {
        message_id: message_id.clone(),
        from: req.from.clone(),
        text: req.text.clone(),
        from_me: req.from_me,
        reply_candidate,
        kind: MessageKind::Text,
        contact_name: None,
    };
    let ack = gateway.receive(acc, &req.chat_id, inbound, meta).await?;
    let position = match ack.position {
        Some(p) => Some(p),
        None => {
            // A duplicate: answer with the position of the original.
            app.catch_up().await?;
            cold::message_position(app, acc, &req.chat_id, &message_id).await?
        }
    };
    Ok(InboundAccepted {
        message_id,
        position,
        duplicate: ack.duplicate,
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatSummary {
    pub chat_id: String,
    /// `private`, `group`, `channel` or `broadcast`.
    pub chat_kind: String,
    pub last_message_at: Option<DateTime<Utc>>,
    pub message_count: usize,
    /// The chat's AI mode: `inherit`, `enabled` or `disabled`.
    pub ai_mode: String,
    pub blocked: bool,
    /// Human takeover: the AI does not answer in this chat before this time (`null`: not paused).
    pub ai_paused_until: Option<DateTime<Utc>>,
    /// Position of the chat's newest message: the list's order and its cursor.
    pub position: i64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ChatsQuery {
    /// Page size 1..=500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// Only chats whose newest message is before this position (the `next_cursor` of the
    /// previous page).
    pub before: Option<i64>,
}

/// The account's chats, most recent first (by their newest message), page by page.
#[utoipa::path(get, path = "/v1/accounts/{acc}/chats", tag = "messages", params(("acc" = AccountId, Path), ChatsQuery),
    responses((status = 200, body = ListResponse<ChatSummary>),
        (status = 503, body = ErrorBody, description = "reads the event store, which is unavailable; retry after `Retry-After` seconds")),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn list_chats(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath(acc): ApiPath<String>,
    ApiQuery(q): ApiQuery<ChatsQuery>,
) -> Result<Json<ListResponse<ChatSummary>>, ApiError> {
    live_account(&app, &caller, &acc)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 500"));
    }
    app.catch_up().await?;
    let items = chat_summaries(&app, &acc, q.before, limit);
    Ok(Json(ListResponse::page(items, limit, |c| {
        c.position.to_string()
    })))
}

/// The account's chats from the read models, most recent first, whose newest message is before
/// position `before`, `limit` at most (shared by the API and the dashboard; call `catch_up`
/// first to read the latest).
pub fn chat_summaries(
    app: &SharedApp,
    acc: &str,
    before: Option<i64>,
    limit: usize,
) -> Vec<ChatSummary> {
    let now = Utc::now();
    let config = app.model();
    let messages = app.messages();
    let mut page: Vec<(&String, &ChatView)> = messages
        .chats
        .range((acc.to_string(), String::new())..)
        .take_while(|((a, _), _)| a == acc)
        .filter(|(_, view)| before.is_none_or(|b| view.last_position < b))
        .map(|((_, jid), view)| (jid, view))
        .collect();
    // Newest first; only the page is built.
    page.sort_unstable_by_key(|(_, view)| std::cmp::Reverse(view.last_position));
    page.truncate(limit);
    page.into_iter()
        .map(|(jid, view)| {
            let settings = config.chat(acc, jid).cloned().unwrap_or_default();
            let ai_paused_until = config
                .pause(acc, jid)
                .map(|p| p.until)
                .filter(|until| *until > now);
            ChatSummary {
                ai_paused_until,
                chat_id: jid.clone(),
                chat_kind: chat_kind(jid, "jid")
                    .map(|k| {
                        serde_json::to_value(k)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default()
                    })
                    .unwrap_or_default(),
                last_message_at: view.last_message_at,
                message_count: view.message_count,
                ai_mode: serde_json::to_value(settings.mode)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                blocked: settings.blocked,
                position: view.last_position,
            }
        })
        .collect()
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MessagesQuery {
    /// Page size 1..=500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// Only messages before this position (the `next_cursor` of the previous page).
    pub before: Option<i64>,
}

/// A chat's messages, newest first.
#[utoipa::path(get, path = "/v1/accounts/{acc}/chats/{jid}/messages", tag = "messages",
    params(("acc" = AccountId, Path), ("jid" = Jid, Path), MessagesQuery),
    responses((status = 200, body = ListResponse<Object>),
        (status = 503, body = ErrorBody, description = "reads the event store, which is unavailable; retry after `Retry-After` seconds")),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn list_messages(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath((acc, jid)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<MessagesQuery>,
) -> Result<Json<ListResponse<MessageView>>, ApiError> {
    live_account(&app, &caller, &acc)?;
    chat_kind(&jid, "jid")?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 500"));
    }
    app.catch_up().await?;
    let items = cold::messages_page(&app, &acc, &jid, q.before, limit).await?;
    Ok(Json(ListResponse::page(items, limit, |m| {
        m.position.to_string()
    })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// 1..=65536 characters, not blank.
    #[schema(max_length = 65536, pattern = r"\S")]
    pub text: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SentMessage {
    pub id: String,
    pub chat_id: String,
    pub position: Option<i64>,
}

/// Sends a text as the account (an operator message).
#[utoipa::path(post, path = "/v1/accounts/{acc}/chats/{jid}/messages", tag = "messages",
    params(("acc" = AccountId, Path), ("jid" = Jid, Path)), request_body = SendRequest,
    responses((status = 201, body = SentMessage),
        (status = 502, body = ErrorBody, description = "the transport refused the message (`transport_refused`)"),
        (status = 503, body = ErrorBody, description = "the store is unavailable, or the transport did not send for now \
            (`transport_unavailable`); retry after `Retry-After` seconds")),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn send_message(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath((acc, jid)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<SendRequest>,
) -> Result<(StatusCode, Json<SentMessage>), ApiError> {
    live_account(&app, &caller, &acc)?;
    chat_kind(&jid, "jid")?;
    let sent = send_as_account(&app, &caller, &acc, &jid, &req.text, Source::Operator).await?;
    Ok((StatusCode::CREATED, Json(sent)))
}

/// Sends `text` into a chat through its chat actor.
pub async fn send_as_account(
    app: &SharedApp,
    caller: &Caller,
    acc: &str,
    jid: &str,
    text: &str,
    source: Source,
) -> Result<SentMessage, ApiError> {
    let meta = caller.who().metadata();
    let ack = app.gateway()?.send(acc, jid, text, source, meta).await?;
    Ok(SentMessage {
        id: ack.message_id,
        chat_id: jid.to_string(),
        position: ack.position,
    })
}
