//! `GET /v1/nodes`: the gateways sharing the store and the accounts each runs (ADR 0026).

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::Caller;
use crate::app::SharedApp;
use crate::service;

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new().routes(routes!(list_nodes))
}

/// An account a node runs.
#[derive(Serialize, ToSchema)]
pub struct HeldAccountView {
    pub account_id: String,
    /// The lease's epoch: it grows with every takeover (absent on SQLite).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    /// When the lease runs out unless renewed, by the database's clock (absent on SQLite).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A live node.
#[derive(Serialize, ToSchema)]
pub struct NodeView {
    /// `WAGATE_NODE_ID`.
    pub node_id: String,
    /// The node that answered this request.
    pub this_node: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// Its last heartbeat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// When it counts as dead unless it beats again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The accounts whose replies it runs.
    pub accounts: Vec<HeldAccountView>,
}

#[derive(Serialize, ToSchema)]
pub struct NodesView {
    /// Whether account leases divide the accounts among the nodes (PostgreSQL). On SQLite one
    /// process runs every account and `nodes` is this one.
    pub clustered: bool,
    /// `WAGATE_LEASE_SECONDS` of the answering node (absent on SQLite).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<u64>,
    pub nodes: Vec<NodeView>,
    /// Accounts no live node runs right now (a node died and its leases have not expired yet).
    pub unowned_accounts: Vec<String>,
}

impl From<service::nodes::Nodes> for NodesView {
    fn from(n: service::nodes::Nodes) -> Self {
        Self {
            clustered: n.clustered,
            lease_seconds: n.lease_seconds,
            nodes: n
                .nodes
                .into_iter()
                .map(|n| NodeView {
                    node_id: n.node_id,
                    this_node: n.this_node,
                    started_at: n.started_at,
                    heartbeat_at: n.heartbeat_at,
                    expires_at: n.expires_at,
                    accounts: n
                        .accounts
                        .into_iter()
                        .map(|a| HeldAccountView {
                            account_id: a.account_id,
                            epoch: a.epoch,
                            expires_at: a.expires_at,
                        })
                        .collect(),
                })
                .collect(),
            unowned_accounts: n.unowned_accounts,
        }
    }
}

/// The live gateways sharing this store, the accounts each runs and their lease expiries.
#[utoipa::path(get, path = "/v1/nodes", tag = "operations",
    responses((status = 200, body = NodesView),
        (status = 503, body = ErrorBody, description = "the store is unavailable; retry after `Retry-After` seconds")),
    security(("admin_jwt" = [])))]
async fn list_nodes(
    State(app): State<SharedApp>,
    caller: Caller,
) -> Result<Json<NodesView>, ApiError> {
    caller.require_admin()?;
    Ok(Json(service::nodes::list(&app).await?.into()))
}
