//! The histories: the event history for audit (events in commit order with their secrets
//! redacted, the same view for `GET /v1/events` and the dashboard's audit page) and the AI log.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use wagate_events::metadata;
use wagate_projections::messages::AiLogRow;
use wagate_projections::StoredEvent;

use super::error::{Error, Result};
use crate::app::{cold, App};
use crate::store::EventQuery;

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
    /// The event as stored: `{"<Type>": {…}}`, or the bare `"<Type>"` of an event without
    /// fields (`"AccountDeleted"`).
    #[schema(value_type = serde_json::Value)]
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

/// Up to `limit` events after position `after`, oldest first, of the aggregate types `types`
/// (all when empty) and, when given, of aggregate id `id`; secrets redacted.
pub async fn read(
    app: &App,
    after: i64,
    limit: i64,
    types: &[&str],
    id: Option<&str>,
) -> Result<Vec<EventView>> {
    let events = app
        .store
        .read(&EventQuery {
            after,
            until: None,
            limit,
            aggregate_types: types,
            aggregate_id: id,
            config_history: false,
            ai_log_history: false,
        })
        .await?;
    Ok(events.into_iter().map(EventView::from).collect())
}

/// A page of the history as `GET /v1/events` takes it: `after` (default 0, `>= 0`), `limit`
/// (`1..=1000`, default 100) and `aggregate` (a type, or one stream `<type>/<id>`). Answers the
/// page and its size.
pub async fn history(
    app: &App,
    after: Option<i64>,
    limit: Option<i64>,
    aggregate: Option<&str>,
) -> Result<(Vec<EventView>, usize)> {
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Error::invalid("limit", "must be between 1 and 1000"));
    }
    let after = after.unwrap_or(0);
    if after < 0 {
        return Err(Error::invalid("after", "must be >= 0"));
    }
    let (types, id): (Vec<&str>, Option<&str>) = match aggregate {
        None | Some("") => (vec![], None),
        Some(a) => match a.split_once('/') {
            Some((t, id)) => (vec![t], Some(id)),
            None => (vec![a], None),
        },
    };
    let events = read(app, after, limit, &types, id).await?;
    Ok((events, usize::try_from(limit).unwrap_or(0)))
}

/// The AI-log statuses a filter may name.
pub const LOG_STATUSES: [&str; 5] = ["pending", "generated", "sent", "failed", "skipped"];

/// A page of the AI log (one row per reply attempt), oldest first, after position `after`:
/// `limit` is `1..=500` (default 100), `status` one of [`LOG_STATUSES`]. Read after the latest
/// commits, from the store when memory does not hold the page. Answers the page and its size.
pub async fn ai_log(
    app: &App,
    filter: &cold::LogFilter<'_>,
    after: Option<i64>,
    limit: Option<usize>,
) -> Result<(Vec<AiLogRow>, usize)> {
    let limit = limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Error::invalid("limit", "must be between 1 and 500"));
    }
    if let Some(s) = filter.status {
        if !LOG_STATUSES.contains(&s) {
            return Err(Error::invalid(
                "status",
                "must be pending, generated, sent, failed or skipped",
            ));
        }
    }
    app.catch_up().await?;
    let items = cold::ai_log_page(app, filter, after, limit).await?;
    Ok((items, limit))
}
