//! `GET /v1/events`: the event history in commit order, for audit. Secrets appear only redacted.

use std::collections::HashMap;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_events::metadata;
use wagate_projections::StoredEvent;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiQuery, Caller};
use super::ListResponse;
use crate::app::{AppError, SharedApp};
use crate::store::EventQuery;

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

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub position: i64,
    /// `<aggregate_type>/<aggregate_id>`
    pub stream: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: String,
    pub time: DateTime<Utc>,
    /// Who caused it: `admin:<sub>`, `token:<id>`, `cli:<command>` or `system`.
    pub actor: String,
    pub request_id: Option<String>,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

impl From<StoredEvent> for EventView {
    fn from(e: StoredEvent) -> Self {
        let mut payload = e.payload;
        crate::store::replay::redact(&mut payload);
        let meta: HashMap<String, String> = e.metadata;
        Self {
            position: e.position,
            stream: format!("{}/{}", e.aggregate_type, e.aggregate_id),
            actor: meta
                .get(metadata::ACTOR)
                .cloned()
                .unwrap_or_else(|| "system".into()),
            request_id: meta.get(metadata::REQUEST_ID).cloned(),
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            sequence: e.sequence,
            event_type: e.event_type,
            version: e.event_version,
            time: e.recorded_at,
            payload,
        }
    }
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
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    let after = q.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::invalid("after", "must be >= 0"));
    }
    let (types, id): (Vec<&str>, Option<&str>) = match q.aggregate.as_deref() {
        None | Some("") => (vec![], None),
        Some(a) => match a.split_once('/') {
            Some((t, id)) => (vec![t], Some(id)),
            None => (vec![a], None),
        },
    };
    let events = app
        .store
        .read(&EventQuery {
            after,
            until: None,
            limit,
            aggregate_types: &types,
            aggregate_id: id,
            config_history: false,
            ai_log_history: false,
        })
        .await
        .map_err(AppError::from)?;
    Ok(Json(ListResponse::page(
        events.into_iter().map(EventView::from).collect(),
        usize::try_from(limit).unwrap_or(0),
        |e| e.position.to_string(),
    )))
}
