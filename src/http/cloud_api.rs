//! Meta's webhook for `cloud_api` accounts: `GET` answers the subscription handshake, `POST`
//! takes signed notifications (messages, contact names, delivery statuses) into the chat actors.
//!
//! No bearer auth here: Meta authenticates with the verify token (handshake) and with
//! `X-Hub-Signature-256`, the HMAC-SHA256 of the raw body under the app secret (every POST). A
//! POST is answered 200 only after its events are committed; a store failure is a 503 so Meta
//! retries, and a retried delivery is deduplicated by message id.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::ExposeSecret;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_actors::Inbound;
use wagate_events::account::Transport;

use super::error::{ApiError, ErrorBody};
use super::extract::{body_rejection, ApiPath, ApiQuery};
use super::openapi::AccountId;
use crate::app::{SharedApp, Who};
use crate::model::guard::OutboundGuard;
use crate::transport::cloud_api::{
    access_token_ad, app_secret_ad, parse_webhook, signature_valid, verify_token_matches,
    CloudApiClient, CloudTarget, InboundMessage,
};
use crate::transport::media::{declared_info, Received};
use wagate_events::chat::keeps_bytes;

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new().routes(routes!(verify_webhook, receive_webhook))
}

/// The stored Cloud API settings the webhook needs, or 404 for any account that is not a live
/// `cloud_api` account.
struct WebhookAccount {
    phone_number_id: String,
    app_secret_sealed: String,
    verify_token_sha256: String,
    access_token_sealed: String,
    graph_base_url: String,
    graph_version: String,
}

fn webhook_account(app: &SharedApp, acc: &str) -> Result<WebhookAccount, ApiError> {
    let model = app.model();
    let not_found = || ApiError::not_found("no cloud_api account with this id");
    let a = model.account(acc).ok_or_else(not_found)?;
    if a.transport != Transport::CloudApi {
        return Err(not_found());
    }
    let c = a.cloud_api.as_ref().ok_or_else(not_found)?;
    Ok(WebhookAccount {
        phone_number_id: c.settings.phone_number_id.clone(),
        app_secret_sealed: c.settings.app_secret_sealed.clone(),
        verify_token_sha256: c.settings.verify_token_sha256.clone(),
        access_token_sealed: c.settings.access_token_sealed.clone(),
        graph_base_url: c.settings.graph_base_url.clone(),
        graph_version: c.settings.graph_version.clone(),
    })
}

/// Meta's subscription handshake: with `hub.mode=subscribe` and the account's verify token,
/// answers `hub.challenge` as plain text; a wrong token is a 403.
#[utoipa::path(get, path = "/v1/transports/cloud-api/{acc}/webhook", tag = "transports",
    params(("acc" = AccountId, Path),
        ("hub.mode" = String, Query, description = "subscribe", pattern = "^subscribe$"),
        ("hub.verify_token" = String, Query, description = "the account's verify token (403 when it differs)"),
        ("hub.challenge" = String, Query, min_length = 1, max_length = 256)),
    responses((status = 200, body = String, content_type = "text/plain"),
        (status = 403, body = ErrorBody)))]
async fn verify_webhook(
    State(app): State<SharedApp>,
    ApiPath(acc): ApiPath<String>,
    ApiQuery(q): ApiQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let account = webhook_account(&app, &acc)?;
    let param = |name: &'static str| {
        q.get(name)
            .map(String::as_str)
            .ok_or_else(|| ApiError::invalid(name, "required"))
    };
    if param("hub.mode")? != "subscribe" {
        return Err(ApiError::invalid("hub.mode", "must be subscribe"));
    }
    let token = param("hub.verify_token")?;
    let challenge = param("hub.challenge")?;
    if challenge.is_empty() || challenge.len() > 256 {
        return Err(ApiError::invalid("hub.challenge", "1..=256 characters"));
    }
    if !verify_token_matches(&account.verify_token_sha256, token) {
        tracing::warn!(account = %acc, "cloud_api webhook verification with a wrong verify token");
        return Err(ApiError::forbidden(
            "hub.verify_token does not match this account's verify token",
        ));
    }
    tracing::info!(account = %acc, "cloud_api webhook verified");
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        challenge.to_string(),
    )
        .into_response())
}

/// The media of each message of a batch (`None` for a message without): audio, images and
/// stickers downloaded from the Graph API and checked as every transport's media are; a
/// document's declared type and file name only.
async fn fetch_media(
    app: &SharedApp,
    acc: &str,
    account: &WebhookAccount,
    messages: &[InboundMessage],
) -> Vec<Option<Received>> {
    let max_bytes = app.config.media_max_bytes;
    let wanted = messages
        .iter()
        .any(|m| m.media.is_some() && keeps_bytes(m.kind));
    let fetcher = if wanted {
        let token = app
            .config
            .keyring
            .open_string(&account.access_token_sealed, &access_token_ad(acc));
        let client = CloudApiClient::new(std::sync::Arc::new(OutboundGuard::new(
            app.config.allow_private_networks.clone(),
        )));
        match (token, client) {
            (Ok(access_token), Ok(client)) => Ok((
                client,
                CloudTarget {
                    graph_base_url: account.graph_base_url.clone(),
                    graph_version: account.graph_version.clone(),
                    phone_number_id: account.phone_number_id.clone(),
                    access_token,
                },
            )),
            (Err(_), _) => Err("the stored cloud_api access token cannot be decrypted".to_string()),
            (_, Err(e)) => Err(e.to_string()),
        }
    } else {
        Err(String::new())
    };
    let fetches = messages.iter().map(|m| {
        let fetcher = &fetcher;
        async move {
            let media = m.media.as_ref()?;
            let fetched = if !keeps_bytes(m.kind) {
                // A document: its caption and file name reach the model, its bytes are not
                // needed.
                return Some(Received::Declared(declared_info(
                    &media.mime_type,
                    None,
                    media.sha256.as_deref(),
                    media.filename.clone(),
                    None,
                )));
            } else {
                match fetcher {
                    Ok((client, target)) => client
                        .download_media(target, &media.id, max_bytes)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(why) => Err(format!("download failed: {why}")),
                }
            };
            if let Err(why) = &fetched {
                tracing::warn!(account = %acc, kind = m.kind.as_str(), reason = %why, "cloud_api media not downloaded; the message is recorded without it");
            }
            Some(Received::from_download(
                m.kind,
                &media.mime_type,
                None,
                media.sha256.as_deref(),
                media.filename.clone(),
                fetched,
                max_bytes,
            ))
        }
    });
    futures::future::join_all(fetches).await
}

/// What a notification carried.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAccepted {
    /// New inbound messages committed.
    pub messages: usize,
    /// Messages seen before (a retried delivery): nothing written.
    pub duplicates: usize,
    /// Delivery statuses that moved a sent message forward.
    pub statuses: usize,
    /// Changes and items not understood or not for this number (accepted, not stored).
    pub ignored: usize,
}

/// Meta's notifications: verifies `X-Hub-Signature-256` over the raw body (401 and nothing stored
/// when missing or wrong), then commits every message and status through the chat actors and
/// answers 200. Text messages get an AI reply as usual; voice notes, images and stickers are
/// downloaded from the Graph API first (a failed or refused download records the message with
/// its media unavailable, and its reply fails with the reason); documents are answered from
/// their caption and file name; other kinds are recorded and their reply skipped with a reason.
#[utoipa::path(post, path = "/v1/transports/cloud-api/{acc}/webhook", tag = "transports",
    params(("acc" = AccountId, Path), ("X-Hub-Signature-256" = String, Header, description = "sha256=<hex HMAC-SHA256 of the body under the app secret>")),
    request_body(content = Object, description = "Meta's webhook payload (object whatsapp_business_account)"),
    responses((status = 200, body = WebhookAccepted), (status = 401, body = ErrorBody),
        (status = 408, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn receive_webhook(
    State(app): State<SharedApp>,
    ApiPath(acc): ApiPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<WebhookAccepted>, ApiError> {
    let body = body.map_err(body_rejection)?;
    let account = webhook_account(&app, &acc)?;
    let secret = app
        .config
        .keyring
        .open(&account.app_secret_sealed, &app_secret_ad(&acc))
        .map_err(|e| {
            tracing::error!(account = %acc, error = %e, "cannot open the cloud_api app secret");
            ApiError::internal()
        })?;
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    if !signature_valid(secret.expose_secret(), &body, signature) {
        tracing::warn!(account = %acc, present = signature.is_some(), "cloud_api webhook with a bad or missing signature refused");
        return Err(ApiError::unauthorized(
            "missing or invalid X-Hub-Signature-256",
        ));
    }
    let batch = parse_webhook(&body, &account.phone_number_id)
        .map_err(|e| ApiError::bad_request("malformed_json", e.to_string()))?;
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let meta = Who {
        actor: "transport:cloud_api".into(),
        request_id,
    }
    .metadata();
    let gateway = app.gateway()?;
    let mut accepted = WebhookAccepted {
        messages: 0,
        duplicates: 0,
        statuses: 0,
        ignored: batch.ignored,
    };
    // Media a reply may use is fetched (all of the batch's at once) before its message is
    // committed; a failed fetch marks the media unavailable, it never refuses the webhook.
    let media = fetch_media(&app, &acc, &account, &batch.messages).await;
    for (m, media) in batch.messages.into_iter().zip(media) {
        let jid = m.jid();
        if let Some(kept) = media.as_ref().and_then(Received::kept) {
            let used = crate::store::media::MediaUse {
                account: &acc,
                chat_id: &jid,
                message_id: &m.id,
                sha256: &kept.info.sha256,
            };
            crate::store::media::put(&app.store, used, &kept.info.mime_type, &kept.bytes)
            .await
            .map_err(|e| {
                tracing::error!(account = %acc, error = %e, "cannot keep a cloud_api message's media");
                ApiError::unavailable("the store is unavailable; retry")
            })?;
        }
        let inbound = Inbound {
            message_id: m.id.clone(),
            from: m.from.clone(),
            text: m.text.clone(),
            from_me: false,
            reply_candidate: true,
            kind: m.kind,
            contact_name: m.contact_name.clone(),
            // The Cloud API serves one-to-one chats: a mention trigger never applies.
            mentioned: false,
            reply_to: None,
            media: media.map(Received::into_info),
        };
        let ack = gateway.receive(&acc, &jid, inbound, meta.clone()).await?;
        if ack.duplicate {
            accepted.duplicates += 1;
        } else {
            accepted.messages += 1;
        }
    }
    for s in batch.statuses {
        let jid = s.jid();
        let recorded = gateway
            .status(
                &acc,
                &jid,
                &s.message_id,
                s.status,
                s.error.clone(),
                meta.clone(),
            )
            .await?;
        if recorded {
            accepted.statuses += 1;
        }
        if let Some(reason) = &s.error {
            tracing::warn!(account = %acc, status = s.status.as_str(), reason = %reason, "cloud_api reported a delivery failure");
        }
    }
    tracing::info!(
        account = %acc,
        messages = accepted.messages,
        duplicates = accepted.duplicates,
        statuses = accepted.statuses,
        ignored = accepted.ignored,
        "cloud_api webhook processed"
    );
    Ok(Json(accepted))
}
