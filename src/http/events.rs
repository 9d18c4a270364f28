//! `GET /v1/events`: the event history in commit order, for audit. Secrets appear only redacted.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiQuery, Caller};
use super::ListResponse;
use crate::app::SharedApp;
use crate::service::events as service;
pub use crate::service::events::EventView;

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new().routes(routes!(list_events))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events after this position (exclusive); use `next_cursor` of the previous page.
    pub after: Option<i64>,
    /// Page size, 1..=1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// An aggregate type (`ai_global`, `account`, `chat_settings`) or one stream
    /// `<type>/<id>` (e.g. `account/acme`, `chat_settings/acme/4917…@s.whatsapp.net`).
    pub aggregate: Option<String>,
}

/// The event history, oldest first, paged by position.
#[utoipa::path(get, path = "/v1/events", tag = "audit", params(EventsQuery),
    responses((status = 200, body = ListResponse<EventView>),
        (status = 503, body = ErrorBody, description = "reads the event store, which is unavailable; retry after `Retry-After` seconds")),
    security(("admin_jwt" = [])))]
async fn list_events(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<ListResponse<EventView>>, ApiError> {
    caller.require_admin()?;
    let (events, limit) = service::history(&app, q.after, q.limit, q.aggregate.as_deref()).await?;
    Ok(Json(ListResponse::page(events, limit, |e| {
        e.position.to_string()
    })))
}
