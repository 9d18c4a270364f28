//! WhatsApp Web routes of a `whatsapp_web` account (issue 23): connect (QR code or pair code),
//! the codes on offer, logout, settings.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{body_rejection, parse_json, ApiJson, ApiPath, Caller};
use super::openapi::AccountId;
use crate::app::SharedApp;
use crate::service::whatsapp_web as service;
pub use crate::service::whatsapp_web::{PairCodeView, QrCodeView, WhatsAppWebStatus};

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new()
        .routes(routes!(whatsapp_web_connect))
        .routes(routes!(whatsapp_web_qr))
        .routes(routes!(whatsapp_web_logout))
        .routes(routes!(change_whatsapp_web))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectRequest {
    /// Pair by phone number instead of a QR code: the phone's number with its country code,
    /// 7 to 15 digits, optionally after a `+`. The answer's `pair_code` is the code to enter on
    /// the phone.
    #[serde(default)]
    #[schema(example = "5511999998888", pattern = r"^\+?[0-9]{7,15}$")]
    pub phone_number: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WhatsAppWebSettingsRequest {
    /// Send read receipts for the messages the AI answers (off by default).
    #[serde(default)]
    pub mark_read: Option<bool>,
}

/// Starts the account's WhatsApp Web connection. Without a session it pairs: the answer (after
/// at most a few seconds) carries the QR code to scan, or with `phone_number` the pair code to
/// enter. A paired account reconnects with its stored session; a connected one is left as it is.
/// The body is optional.
#[utoipa::path(post, path = "/v1/accounts/{acc}/whatsapp-web/connect", tag = "whatsapp_web",
    params(("acc" = AccountId, Path)),
    request_body(content = Option<ConnectRequest>, content_type = "application/json"),
    responses((status = 200, body = WhatsAppWebStatus), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn whatsapp_web_connect(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath(acc): ApiPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<WhatsAppWebStatus>, ApiError> {
    caller.require_account(&acc)?;
    let body = body.map_err(body_rejection)?;
    let req: ConnectRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ConnectRequest::default()
    } else {
        let json = headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
            });
        if !json {
            return Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected Content-Type: application/json (or no body)",
            ));
        }
        parse_json(&body)?
    };
    let status = service::connect(&app, &caller.who(), &acc, req.phone_number.as_deref()).await?;
    Ok(Json(status))
}

/// The account's connection state with the QR code (text and SVG) or pair code on offer while
/// it pairs; both are null once paired. 409 for an account on another transport.
#[utoipa::path(get, path = "/v1/accounts/{acc}/whatsapp-web/qr", tag = "whatsapp_web",
    params(("acc" = AccountId, Path)),
    responses((status = 200, body = WhatsAppWebStatus), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn whatsapp_web_qr(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath(acc): ApiPath<String>,
) -> Result<Json<WhatsAppWebStatus>, ApiError> {
    caller.require_account(&acc)?;
    Ok(Json(service::status(&app, &acc).await?))
}

/// Unlinks this device from the phone and erases the stored session; the AI stops answering
/// until the account is paired again.
#[utoipa::path(post, path = "/v1/accounts/{acc}/whatsapp-web/logout", tag = "whatsapp_web",
    params(("acc" = AccountId, Path)),
    responses((status = 200, body = WhatsAppWebStatus), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn whatsapp_web_logout(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath(acc): ApiPath<String>,
) -> Result<Json<WhatsAppWebStatus>, ApiError> {
    caller.require_account(&acc)?;
    Ok(Json(service::logout(&app, &caller.who(), &acc).await?))
}

/// Changes the account's WhatsApp Web settings (only the fields given).
#[utoipa::path(patch, path = "/v1/accounts/{acc}/whatsapp-web", tag = "whatsapp_web",
    params(("acc" = AccountId, Path)), request_body = WhatsAppWebSettingsRequest,
    responses((status = 200, body = WhatsAppWebStatus), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn change_whatsapp_web(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath(acc): ApiPath<String>,
    ApiJson(req): ApiJson<WhatsAppWebSettingsRequest>,
) -> Result<Json<WhatsAppWebStatus>, ApiError> {
    caller.require_account(&acc)?;
    Ok(Json(
        service::change(&app, &caller.who(), &acc, req.mark_read).await?,
    ))
}
