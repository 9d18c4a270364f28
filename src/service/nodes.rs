//! The gateways sharing the store and the accounts each runs (`GET /v1/nodes`, ADR 0026).

use chrono::{DateTime, Utc};

use crate::app::SharedApp;
use crate::service::Result;
use crate::store::{leases, Store};

/// An account a node runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldAccount {
    pub account_id: String,
    /// The lease's epoch (`None` on SQLite, where no lease is needed).
    pub epoch: Option<i64>,
    /// When the lease runs out unless renewed (the database's clock).
    pub expires_at: Option<DateTime<Utc>>,
}

/// A live node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub node_id: String,
    /// The node answering this request.
    pub this_node: bool,
    pub started_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub accounts: Vec<HeldAccount>,
}

/// The cluster as the store sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nodes {
    /// Whether leases divide the accounts (PostgreSQL); on SQLite one process runs them all.
    pub clustered: bool,
    pub lease_seconds: Option<u64>,
    pub nodes: Vec<Node>,
    /// Accounts no live node holds right now (between a node's death and a takeover).
    pub unowned_accounts: Vec<String>,
}

/// The live nodes and their accounts.
pub async fn list(app: &SharedApp) -> Result<Nodes> {
    let accounts: Vec<String> = app.model().live_account_ids();
    let (Store::Postgres(pool), Some(cluster)) = (&app.store, app.cluster.get()) else {
        return Ok(Nodes {
            clustered: false,
            lease_seconds: None,
            nodes: vec![Node {
                node_id: app.config.cluster.node_id.clone(),
                this_node: true,
                started_at: None,
                heartbeat_at: None,
                expires_at: None,
                accounts: accounts
                    .into_iter()
                    .map(|account_id| HeldAccount {
                        account_id,
                        epoch: None,
                        expires_at: None,
                    })
                    .collect(),
            }],
            unowned_accounts: vec![],
        });
    };
    let rows = leases::live_nodes(pool).await?;
    let held = leases::leases(pool).await?;
    let nodes = rows
        .into_iter()
        .map(|n| Node {
            this_node: n.node_id == cluster.node_id,
            accounts: held
                .iter()
                .filter(|l| l.live && l.owner.as_deref() == Some(n.node_id.as_str()))
                .filter(|l| accounts.contains(&l.account_id))
                .map(|l| HeldAccount {
                    account_id: l.account_id.clone(),
                    epoch: Some(l.epoch),
                    expires_at: Some(l.expires_at),
                })
                .collect(),
            node_id: n.node_id,
            started_at: Some(n.started_at),
            heartbeat_at: Some(n.heartbeat_at),
            expires_at: Some(n.expires_at),
        })
        .collect::<Vec<_>>();
    let unowned_accounts = accounts
        .into_iter()
        .filter(|a| {
            !nodes
                .iter()
                .any(|n| n.accounts.iter().any(|h| &h.account_id == a))
        })
        .collect();
    Ok(Nodes {
        clustered: true,
        lease_seconds: Some(cluster.lease().as_secs()),
        nodes,
        unowned_accounts,
    })
}
