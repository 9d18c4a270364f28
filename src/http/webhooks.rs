//! Webhook routes (admin): subscribe a URL (the signing secret is shown once), list, delete,
//! and each webhook's deliveries with redelivery. The handlers are thin: the rules live in the
//! `pub` service functions (`create`, `list`, `get`, `delete`, `deliveries`, `redeliver_now`)
//! that the dashboard's Webhooks page calls too.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_events::webhook::{check_events, check_url, WebhookCommand, WebhookStatus};
use wagate_projections::config::WebhookView;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, Caller};
use super::openapi::{AccountId, DeliveryStatus, WebhookEventType};
use super::ListResponse;
use crate::app::{AppError, SharedApp, Who};
use crate::model::guard::OutboundGuard;
use crate::store::outbox::{self, Delivery};
use crate::webhooks::signing;

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(get_webhook, delete_webhook))
        .routes(routes!(list_deliveries))
        .routes(routes!(redeliver))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// Where deliveries are posted: an http(s) URL without credentials that the outbound guard
    /// allows.
    #[schema(
        max_length = 2048,
        pattern = r"^[hH][tT][tT][pP][sS]?://[a-zA-Z0-9]+([.-][a-zA-Z0-9]+)*(:[1-9][0-9]{0,3})?(/[a-zA-Z0-9._~-]*)*$"
    )]
    pub url: String,
    /// Event types (`message.received`, `message.sent`, `ai.reply.generated`, `ai.reply.sent`,
    /// `ai.reply.failed`, `ai.reply.skipped`, `ai.config.changed`) or `["*"]`.
    #[schema(value_type = Vec<WebhookEventType>, min_items = 1, max_items = 8)]
    pub events: Vec<String>,
    /// Only events of this account (an existing one; global config changes are not sent to
    /// filtered webhooks).
    #[serde(default)]
    #[schema(value_type = Option<AccountId>)]
    pub account_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookResponse {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub account_id: Option<String>,
    /// `active`, or `disabled` after the receiver answered 410 Gone.
    pub status: String,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: WebhookResponse,
    /// The signing secret (`whsec_…`), shown only in this response.
    pub secret: String,
}

impl From<&WebhookView> for WebhookResponse {
    fn from(w: &WebhookView) -> Self {
        Self {
            id: w.id.clone(),
            url: w.url.clone(),
            events: w.events.clone(),
            account_id: w.account_id.clone(),
            status: match w.status {
                WebhookStatus::Active => "active",
                WebhookStatus::Disabled => "disabled",
                WebhookStatus::Deleted => "deleted",
                WebhookStatus::Absent => "absent",
            }
            .into(),
            disabled_reason: w.disabled_reason.clone(),
            created_at: w.created_at,
        }
    }
}

/// One webhook as the API shows it (never its secret); 404 when unknown or deleted.
pub fn get(app: &SharedApp, id: &str) -> Result<WebhookResponse, ApiError> {
    app.model()
        .webhook(id)
        .map(WebhookResponse::from)
        .ok_or_else(|| ApiError::not_found("webhook not found"))
}

fn store_error(e: crate::store::StoreError) -> ApiError {
    AppError::from(e).into()
}

/// Subscribes a URL (shared by the API and the dashboard): the same checks, the same event.
/// Nothing is stored when a check fails. The answer carries the signing secret, the only time
/// it is ever shown.
pub async fn create(
    app: &SharedApp,
    who: &Who,
    req: CreateWebhookRequest,
) -> Result<CreatedWebhook, ApiError> {
    check_url(&req.url)?;
    check_events(&req.events)?;
    if let Some(acc) = &req.account_id {
        if app.model().account(acc).is_none() {
            return Err(ApiError::invalid("account_id", "no such account"));
        }
    }
    // The guard decides again at every attempt (DNS may change); refusing a target by policy
    // here tells the user now rather than through a dead letter. A name that does not resolve
    // yet is accepted: its attempts fail and retry until it does.
    let url = url::Url::parse(&req.url).map_err(|e| ApiError::invalid("url", e.to_string()))?;
    if let Err(e) = OutboundGuard::new(app.config.allow_private_networks.clone())
        .check_url(&url)
        .await
    {
        if e.is_policy() {
            return Err(ApiError::invalid("url", format!("refused: {e}")));
        }
    }
    let id = format!("wh_{}", uuid::Uuid::now_v7().simple());
    let secret = signing::new_secret();
    let secret_sealed = app
        .config
        .keyring
        .seal(secret.as_bytes(), &signing::secret_ad(&id));
    let cmd = WebhookCommand::Create {
        url: req.url,
        events: req.events,
        account_id: req.account_id,
        secret_sealed,
    };
    app.execute(&app.webhooks, &id, cmd, who).await?;
    Ok(CreatedWebhook {
        webhook: get(app, &id)?,
        secret,
    })
}

/// Webhooks that are not deleted (never their secrets), oldest first.
pub fn list(app: &SharedApp) -> Vec<WebhookResponse> {
    let m = app.model();
    m.webhooks
        .values()
        .filter(|w| w.status != WebhookStatus::Deleted)
        .map(WebhookResponse::from)
        .collect()
}

/// Deletes a webhook and cancels its pending deliveries (shared by the API and the dashboard).
pub async fn delete(app: &SharedApp, who: &Who, id: &str) -> Result<(), ApiError> {
    app.execute(&app.webhooks, id, WebhookCommand::Delete, who)
        .await?;
    outbox::cancel_pending(&app.store, id, "webhook deleted")
        .await
        .map_err(store_error)?;
    Ok(())
}

/// Subscribes a URL to event types. The response carries the signing secret, once.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhookRequest,
    responses((status = 201, body = CreatedWebhook)),
    security(("admin_jwt" = [])))]
async fn create_webhook(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateWebhookRequest>,
) -> Result<(StatusCode, Json<CreatedWebhook>), ApiError> {
    caller.require_admin()?;
    let created = create(&app, &caller.who(), req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Lists webhooks (never their secrets), oldest first.
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = ListResponse<WebhookResponse>)), security(("admin_jwt" = [])))]
async fn list_webhooks(
    State(app): State<SharedApp>,
    caller: Caller,
) -> Result<Json<ListResponse<WebhookResponse>>, ApiError> {
    caller.require_admin()?;
    Ok(Json(ListResponse {
        items: list(&app),
        next_cursor: None,
    }))
}

/// One webhook.
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = WebhookResponse)),
    security(("admin_jwt" = [])))]
async fn get_webhook(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<WebhookResponse>, ApiError> {
    caller.require_admin()?;
    get(&app, &id).map(Json)
}

/// Deletes a webhook; its pending deliveries are cancelled.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 204)), security(("admin_jwt" = [])))]
async fn delete_webhook(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    delete(&app, &caller.who(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// `pending`, `delivered`, `dead` or `cancelled`.
    #[param(value_type = Option<DeliveryStatus>)]
    pub status: Option<String>,
    /// 1..=500, default 50.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub before: Option<String>,
}

/// The delivery statuses a filter may name.
pub const DELIVERY_STATUSES: [&str; 4] = ["pending", "delivered", "dead", "cancelled"];

/// A page of a webhook's deliveries, newest first (shared by the API and the dashboard): the
/// same checks of the status filter and the limit.
pub async fn deliveries(
    app: &SharedApp,
    id: &str,
    q: &DeliveriesQuery,
) -> Result<ListResponse<Delivery>, ApiError> {
    if app.model().webhook(id).is_none() {
        return Err(ApiError::not_found("webhook not found"));
    }
    if let Some(s) = &q.status {
        if !DELIVERY_STATUSES.contains(&s.as_str()) {
            return Err(ApiError::invalid(
                "status",
                "must be pending, delivered, dead or cancelled",
            ));
        }
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 500"));
    }
    let items = outbox::list(
        &app.store,
        id,
        q.status.as_deref(),
        q.before.as_deref(),
        limit,
    )
    .await
    .map_err(store_error)?;
    Ok(ListResponse::page(
        items,
        usize::try_from(limit).unwrap_or(0),
        |d| d.id.clone(),
    ))
}

/// Whether the webhook's deliveries may be sent again: only while it is active (404 when it is
/// unknown, 409 when it is disabled).
pub fn may_redeliver(app: &SharedApp, id: &str) -> Result<(), ApiError> {
    match app.model().webhook(id).map(|w| w.status) {
        None => Err(ApiError::not_found("webhook not found")),
        Some(WebhookStatus::Active) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "the webhook is disabled; create a new subscription for this receiver",
        )),
    }
}

/// Makes a delivery due now with the same id and a fresh retry schedule (shared by the API and
/// the dashboard).
pub async fn redeliver_now(
    app: &SharedApp,
    who: &Who,
    id: &str,
    delivery: &str,
) -> Result<Delivery, ApiError> {
    may_redeliver(app, id)?;
    let d = outbox::redeliver(&app.store, id, delivery)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("delivery not found"))?;
    app.delivery_wake.notify_one();
    tracing::info!(webhook = %id, delivery = %delivery, actor = %who.actor, "webhook delivery queued again");
    Ok(d)
}

/// A webhook's deliveries, newest first: status, attempts, last status code, next try.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path), DeliveriesQuery),
    responses((status = 200, body = ListResponse<Delivery>),
        (status = 503, body = ErrorBody, description = "reads the event store, which is unavailable; retry after `Retry-After` seconds")),
    security(("admin_jwt" = [])))]
async fn list_deliveries(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> Result<Json<ListResponse<Delivery>>, ApiError> {
    caller.require_admin()?;
    deliveries(&app, &id, &q).await.map(Json)
}

/// Sends a delivery again now, with the same `webhook-id` and a fresh retry schedule.
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery}/redeliver", tag = "webhooks",
    params(("id" = String, Path), ("delivery" = String, Path)),
    responses((status = 202, body = Delivery), (status = 409, body = ErrorBody)),
    security(("admin_jwt" = [])))]
async fn redeliver(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath((id, delivery)): ApiPath<(String, String)>,
) -> Result<(StatusCode, Json<Delivery>), ApiError> {
    caller.require_admin()?;
    let d = redeliver_now(&app, &caller.who(), &id, &delivery).await?;
    Ok((StatusCode::ACCEPTED, Json(d)))
}
