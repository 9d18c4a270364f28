//! Webhook routes (admin): subscribe a URL (the signing secret is shown once), list, delete,
//! and each webhook's deliveries with redelivery. The handlers are thin: the rules live in
//! `service::webhooks`, which the dashboard's Webhooks page calls too.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, Caller};
use super::openapi::{AccountId, DeliveryStatus, WebhookEventType};
use super::ListResponse;
use crate::app::SharedApp;
use crate::service::webhooks::{self as service, DeliveryFilter, NewWebhook};
pub use crate::service::webhooks::{CreatedWebhook, WebhookResponse, DELIVERY_STATUSES};
use crate::store::outbox::Delivery;

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

impl From<CreateWebhookRequest> for NewWebhook {
    fn from(r: CreateWebhookRequest) -> Self {
        Self {
            url: r.url,
            events: r.events,
            account_id: r.account_id,
        }
    }
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
    let created = service::create(&app, &caller.who(), req.into()).await?;
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
        items: service::list(&app),
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
    Ok(Json(service::get(&app, &id)?))
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
    service::delete(&app, &caller.who(), &id).await?;
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

impl From<&DeliveriesQuery> for DeliveryFilter {
    fn from(q: &DeliveriesQuery) -> Self {
        Self {
            status: q.status.clone(),
            limit: q.limit,
            before: q.before.clone(),
        }
    }
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
    let page = service::deliveries(&app, &id, &DeliveryFilter::from(&q)).await?;
    Ok(Json(ListResponse {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
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
    let d = service::redeliver_now(&app, &caller.who(), &id, &delivery).await?;
    Ok((StatusCode::ACCEPTED, Json(d)))
}
