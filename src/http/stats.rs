//! `GET /v1/stats`: the overview's numbers for a period, all accounts or one (admin).

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiQuery, Caller};
use super::openapi::AccountId;
use crate::app::SharedApp;
use crate::service::stats::{self as service, Period, Stats};

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new().routes(routes!(get_stats))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// The period ending now: `1h`, `24h` (default), `7d` or `30d`.
    #[param(value_type = Option<Period>)]
    pub period: Option<String>,
    /// One account (default: all accounts).
    #[param(value_type = Option<AccountId>)]
    pub account: Option<String>,
}

/// Replies per hour by how they ended (`sent`, `skipped`, `failed`), the top skip and failure
/// reasons, model latency p50 / p95 per hour, customer messages per hour, model tokens per UTC
/// day per account against its effective `daily_token_budget`, and the webhook deliveries
/// waiting or dead. Folded from the events (a replay answers the same), read after the latest
/// commits.
#[utoipa::path(get, path = "/v1/stats", tag = "operations", params(StatsQuery),
    responses((status = 200, body = Stats),
        (status = 404, body = ErrorBody, description = "the account does not exist"),
        (status = 503, body = ErrorBody, description = "reads the event store, which is unavailable; retry after `Retry-After` seconds")),
    security(("admin_jwt" = [])))]
async fn get_stats(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> Result<Json<Stats>, ApiError> {
    caller.require_admin()?;
    let period = Period::parse(q.period.as_deref())?;
    Ok(Json(
        service::overview(&app, period, q.account.as_deref()).await?,
    ))
}
