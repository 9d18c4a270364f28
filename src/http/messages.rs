//! Messages: the sandbox transport's inbound route, chats, a chat's messages, and operator sends.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_events::chat::Source;
use wagate_events::ids::chat_kind;
use wagate_projections::messages::MessageView;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, Caller};
use super::openapi::{AccountId, Jid};
use super::ListResponse;
use crate::app::SharedApp;
use crate::service::accounts::require_live;
use crate::service::messages::{self as service, InboundMedia, InboundMessage};
pub use crate::service::messages::{ChatSummary, InboundAccepted, SentMessage};

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new()
        .routes(with_body_limit(
            routes!(sandbox_inbound),
            SANDBOX_BODY_LIMIT,
        ))
        .routes(routes!(list_chats))
        .routes(routes!(list_messages, send_message))
}

/// The sandbox inbound route's body limit: room for the largest media
/// (`config::MEDIA_MAX_BYTES_LIMIT`) in base64, and the rest of the message (413 above). The
/// media's own cap, `WAGATE_MEDIA_MAX_BYTES`, is checked on the decoded bytes.
pub const SANDBOX_BODY_LIMIT: usize =
    crate::config::MEDIA_MAX_BYTES_LIMIT / 3 * 4 + super::BODY_LIMIT;

/// `route` with its own body limit instead of the API's.
fn with_body_limit(
    (schemas, paths, route): utoipa_axum::router::UtoipaMethodRouter<SharedApp>,
    limit: usize,
) -> utoipa_axum::router::UtoipaMethodRouter<SharedApp> {
    (
        schemas,
        paths,
        route.layer(axum::extract::DefaultBodyLimit::max(limit)),
    )
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
    /// The message's text, 1..=65536 characters, not blank. Required without `media`; with
    /// `media` it is the caption and optional (a message without one is recorded with
    /// `[audio]`, `[image]`, … as its text).
    #[serde(default)]
    #[schema(max_length = 65536, pattern = r"\S")]
    pub text: Option<String>,
    /// The WhatsApp message id; a repeated id is deduplicated. Generated when absent. 1..=256
    /// bytes, not blank.
    #[serde(default)]
    #[schema(max_length = 256, pattern = r"\S")]
    pub id: Option<String>,
    /// A message the account itself sent from another device (never answered).
    #[serde(default)]
    pub from_me: bool,
    /// The message mentions the account (`@` in a group; `trigger: mention`).
    #[serde(default)]
    pub mentioned: bool,
    /// The id of the message this one replies to (quotes); a reply to one of the account's
    /// messages counts as a mention.
    #[serde(default)]
    #[schema(max_length = 256, pattern = r"\S")]
    pub reply_to: Option<String>,
    /// The sender's profile name, as WhatsApp reports it (shown in the chat list and found by
    /// the dashboard's chat search): 1..=256 bytes, not blank.
    #[serde(default)]
    #[schema(max_length = 256, pattern = r"\S")]
    pub contact_name: Option<String>,
    /// An image, voice note, sticker or document the customer sent (ADR 0028). Its bytes are
    /// checked (size at most `WAGATE_MEDIA_MAX_BYTES`, the declared MIME type against the type
    /// the bytes show) and kept only until the AI reply that uses them settles; the message
    /// records kind, MIME type, size and SHA-256.
    #[serde(default)]
    pub media: Option<InboundMediaRequest>,
}

/// The media of a sandbox inbound message.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboundMediaRequest {
    /// `audio` (a voice note or audio file), `image`, `sticker` or `document`.
    #[schema(pattern = "^(audio|image|sticker|document)$")]
    pub kind: String,
    /// The MIME type (`audio/ogg; codecs=opus`, `image/jpeg`, …); it must match the bytes.
    #[schema(max_length = 255)]
    pub mime_type: String,
    /// The bytes, base64 (standard alphabet, padded).
    pub data_base64: String,
    /// The file name (documents): 1..=255 bytes, without `/` or `\`.
    #[serde(default)]
    #[schema(max_length = 255)]
    pub filename: Option<String>,
}

impl From<InboundRequest> for InboundMessage {
    fn from(r: InboundRequest) -> Self {
        Self {
            chat_id: r.chat_id,
            from: r.from,
            text: r.text,
            id: r.id,
            from_me: r.from_me,
            mentioned: r.mentioned,
            reply_to: r.reply_to,
            contact_name: r.contact_name,
            media: r.media.map(|m| InboundMedia {
                kind: m.kind,
                mime_type: m.mime_type,
                data_base64: m.data_base64,
                filename: m.filename,
            }),
        }
    }
}

fn live_account(app: &SharedApp, caller: &Caller, acc: &str) -> Result<(), ApiError> {
    caller.require_account(acc)?;
    Ok(require_live(app, acc)?)
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
    let accepted = service::inject_inbound(&app, &caller.who(), &acc, req.into()).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
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
    let (items, limit) = service::chats_page(&app, &acc, q.before, q.limit).await?;
    Ok(Json(ListResponse::page(items, limit, |c| {
        c.position.to_string()
    })))
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
    let (items, limit) = service::messages_page(&app, &acc, &jid, q.before, q.limit).await?;
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
    let who = caller.who();
    let sent =
        service::send_as_account(&app, &who, &acc, &jid, &req.text, Source::Operator).await?;
    Ok((StatusCode::CREATED, Json(sent)))
}
