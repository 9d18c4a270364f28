//! Several gateways on one PostgreSQL store (ADR 0026). Each node registers its id, keeps a
//! heartbeat, and holds the leases of a fair share of the accounts: it runs the replies of those
//! accounts only. Any node records inbound messages and operator sends for any account; a reply
//! requested on a node that does not run the account is handed to the owner with a
//! `NOTIFY` (and found by the owner's periodic sweep if that notification is lost).
//!
//! Every reply step is appended under the epoch of the lease it was started with, and the store
//! refuses it once the epoch moved on ([`crate::store::group_commit`]), so a node that was paused
//! or cut off past its lease cannot commit, nor (it checks its lease first) send. Expiry is the
//! database's clock; a node's own clock only makes it stop early.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use wagate_actors::ports::{Owner, Ownership};

use crate::app::{App, SharedApp, Who};
use crate::config::ClusterConfig;
use crate::store::leases::{self, Acquired, Registered};
use crate::store::StoreError;
use wagate_events::account::AccountCommand;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "WAGATE_NODE_ID {node_id:?} is in use by another running gateway on this database (its \
         last heartbeat was at {heartbeat_at}); give each gateway its own WAGATE_NODE_ID"
    )]
    NodeIdInUse {
        node_id: String,
        heartbeat_at: DateTime<Utc>,
    },
    #[error("cannot register the node: {0}")]
    Store(#[from] StoreError),
}

/// Counts of the cluster's work (`/metrics`).
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Leases this node took (from nobody, a released lease, or an expired one).
    pub acquired: AtomicU64,
    /// Of those, leases another node held before (a takeover).
    pub takeovers: AtomicU64,
    /// Leases this node gave up for the balance or at its stop.
    pub released: AtomicU64,
    /// Leases this node found gone at a renewal (expired and taken, or the store unreachable).
    pub lost: AtomicU64,
}

/// This node's membership: its id, the leases it holds, and until when they are valid by its own
/// clock.
pub struct Cluster {
    pub node_id: String,
    /// This process (a restarted node has the same id and another instance).
    instance: String,
    lease: Duration,
    pool: PgPool,
    /// The accounts whose lease this node holds, with their epochs.
    held: std::sync::RwLock<HashMap<String, i64>>,
    /// The leases are not trusted past this instant (the last renewal's start plus most of the
    /// lease): a node that cannot renew stops acting before the database lets another take over.
    valid_until: std::sync::Mutex<Option<Instant>>,
    /// Serializes balancing and hand-overs (both take leases).
    busy: tokio::sync::Mutex<()>,
    /// Accounts another node held at the last round (a hand-over to them needs no read).
    elsewhere: std::sync::RwLock<HashSet<String>>,
    /// Balance now (a node joined or released accounts).
    wake: tokio::sync::Notify,
    /// Where the other nodes reach this one (set once the listener is bound; sent with every
    /// heartbeat, so a row taken over again carries it too).
    url: std::sync::OnceLock<String>,
    pub stats: ClusterStats,
}

impl Cluster {
    /// Registers `config.node_id` for this process. When a row of that id has not expired yet,
    /// waits until it would have: a process that died leaves it to this one, a live one (its
    /// heartbeat moved meanwhile) makes this start fail.
    pub async fn join(pool: PgPool, config: &ClusterConfig) -> Result<Arc<Cluster>, ClusterError> {
        let instance = uuid::Uuid::now_v7().to_string();
        let mut seen: Option<DateTime<Utc>> = None;
        loop {
            match leases::register(&pool, &config.node_id, &instance, config.lease).await? {
                Registered::Held => break,
                Registered::Taken {
                    heartbeat_at,
                    expires_in,
                } => {
                    if seen.is_some_and(|before| heartbeat_at > before) {
                        return Err(ClusterError::NodeIdInUse {
                            node_id: config.node_id.clone(),
                            heartbeat_at,
                        });
                    }
                    if seen.is_none() {
                        tracing::warn!(
                            node = %config.node_id,
                            wait_ms = expires_in.as_millis() as u64,
                            "this node id was held by a process that has not expired yet; waiting to see whether it is alive"
                        );
                    }
                    seen = Some(heartbeat_at);
                    tokio::time::sleep(expires_in + Duration::from_millis(100)).await;
                }
            }
        }
        let cluster = Arc::new(Cluster {
            node_id: config.node_id.clone(),
            instance,
            lease: config.lease,
            pool,
            held: Default::default(),
            valid_until: std::sync::Mutex::new(None),
            busy: tokio::sync::Mutex::new(()),
            elsewhere: Default::default(),
            wake: tokio::sync::Notify::new(),
            url: std::sync::OnceLock::new(),
            stats: ClusterStats::default(),
        });
        cluster.announce().await;
        tracing::info!(node = %cluster.node_id, lease_s = config.lease.as_secs(), "joined the cluster");
        Ok(cluster)
    }

    /// The lease duration.
    /// Advertises `url` as where the other nodes reach this one (requests that need the node
    /// running an account are forwarded there, ADR 0029).
    pub async fn advertise(&self, url: String) -> Result<(), StoreError> {
        let url = self.url.get_or_init(|| url);
        leases::heartbeat(
            &self.pool,
            &self.node_id,
            &self.instance,
            self.lease,
            Some(url),
        )
        .await?;
        Ok(())
    }

    /// The URL this node advertised.
    pub fn url(&self) -> Option<&str> {
        self.url.get().map(String::as_str)
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The accounts this node runs, with their lease epochs.
    pub fn held(&self) -> HashMap<String, i64> {
        self.held.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn valid(&self) -> bool {
        self.valid_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }

    /// Whether this node runs `account` now (holds a valid lease).
    pub fn runs(&self, account: &str) -> bool {
        self.epoch(account).is_some()
    }

    fn epoch(&self, account: &str) -> Option<i64> {
        if !self.valid() {
            return None;
        }
        self.held
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(account)
            .copied()
    }

    /// Tells the other nodes to balance now.
    async fn announce(&self) {
        if let Err(e) = leases::notify(&self.pool, leases::CLUSTER_CHANNEL, &self.node_id).await {
            tracing::debug!(error = %e, "cluster notification not sent");
        }
    }

    /// Takes the leases of `accounts` it can; records them as held, and each change of owner as
    /// an event of the account (`AccountOwnerChanged`, the `account.owner.changed` webhook).
    async fn take(
        &self,
        app: &SharedApp,
        accounts: &[String],
    ) -> Result<Vec<Acquired>, StoreError> {
        let taken = leases::acquire(
            &self.pool,
            &self.node_id,
            &self.instance,
            accounts,
            self.lease,
        )
        .await?;
        {
            let mut held = self.held.write().unwrap_or_else(|p| p.into_inner());
            for a in &taken {
                held.insert(a.account_id.clone(), a.epoch);
                self.stats.acquired.fetch_add(1, Ordering::Relaxed);
                let takeover = a.previous.as_ref().is_some_and(|p| *p != self.node_id);
                if takeover {
                    self.stats.takeovers.fetch_add(1, Ordering::Relaxed);
                }
                tracing::info!(account = %a.account_id, epoch = a.epoch, previous = a.previous.as_deref().unwrap_or("-"), "account lease taken");
            }
        }
        let who = Who {
            actor: format!("system:node:{}", self.node_id),
            request_id: None,
        };
        for a in &taken {
            // Only a change of node is recorded: not the first owner of a new account, nor a
            // restart of this node id.
            if a.previous.is_none() || a.previous.as_deref() == Some(self.node_id.as_str()) {
                continue;
            }
            let cmd = AccountCommand::RecordOwner {
                node_id: self.node_id.clone(),
                epoch: a.epoch,
                previous: a.previous.clone(),
            };
            if let Err(e) = app.execute(&app.accounts, &a.account_id, cmd, &who).await {
                tracing::warn!(account = %a.account_id, error = %e, "the account's new owner was not recorded");
            }
        }
        Ok(taken)
    }

    /// Drops every lease locally (they could not be renewed): the account actors restart as
    /// non-owners.
    async fn drop_all(&self, app: &SharedApp, why: &str) {
        let gone: Vec<String> = {
            let mut held = self.held.write().unwrap_or_else(|p| p.into_inner());
            held.drain().map(|(a, _)| a).collect()
        };
        *self.valid_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if gone.is_empty() {
            return;
        }
        tracing::error!(
            accounts = gone.len(),
            reason = why,
            "stopped running accounts: their leases cannot be renewed"
        );
        self.stats
            .lost
            .fetch_add(gone.len() as u64, Ordering::Relaxed);
        restart(app, &gone).await;
    }

    /// One round: heartbeat, renew the held leases (restarting the accounts whose lease is gone),
    /// then give up the accounts past this node's fair share or take free ones up to it, and
    /// recover the replies of the accounts taken.
    pub async fn balance(&self, app: &SharedApp) {
        let _busy = self.busy.lock().await;
        let started = Instant::now();
        match leases::heartbeat(
            &self.pool,
            &self.node_id,
            &self.instance,
            self.lease,
            self.url.get().map(String::as_str),
        )
        .await
        {
            Ok(true) => {}
            Ok(false) => {
                // Another process registered this id after this one's row expired.
                self.drop_all(app, "node id taken by another process").await;
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "node heartbeat failed");
                if !self.valid() {
                    self.drop_all(app, "store unreachable").await;
                }
                return;
            }
        }
        let renewed = match leases::renew(&self.pool, &self.instance, self.lease).await {
            Ok(r) => r.into_iter().collect::<HashMap<String, i64>>(),
            Err(e) => {
                tracing::warn!(error = %e, "lease renewal failed");
                if !self.valid() {
                    self.drop_all(app, "store unreachable").await;
                }
                return;
            }
        };
        // Trusted until a tenth of the lease before the database would let it go.
        *self.valid_until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(started + self.lease - self.lease / 10);
        let lost: Vec<String> = {
            let mut held = self.held.write().unwrap_or_else(|p| p.into_inner());
            let lost = held
                .iter()
                .filter(|(a, e)| renewed.get(*a) != Some(e))
                .map(|(a, _)| a.clone())
                .collect::<Vec<_>>();
            *held = renewed;
            lost
        };
        if !lost.is_empty() {
            tracing::warn!(
                accounts = lost.len(),
                "account leases lost (expired and taken over)"
            );
            self.stats
                .lost
                .fetch_add(lost.len() as u64, Ordering::Relaxed);
            restart(app, &lost).await;
        }
        if let Err(e) = self.share(app).await {
            tracing::warn!(error = %e, "balancing the accounts failed; will retry");
        }
        // The WhatsApp Web accounts this node runs now connect (issue 23).
        if let Some(web) = app.web.get() {
            web.resume().await;
        }
    }

    /// Gives up or takes leases toward this node's fair share of the accounts.
    async fn share(&self, app: &SharedApp) -> Result<(), StoreError> {
        let nodes = leases::live_nodes(&self.pool).await?.len().max(1);
        let accounts: Vec<String> = app.model().live_account_ids();
        let exists: HashSet<&String> = accounts.iter().collect();
        let fair = accounts.len().div_ceil(nodes);
        let held = self.held();
        // Accounts deleted since: nothing to run.
        let mut give_up: Vec<String> = held
            .keys()
            .filter(|a| !exists.contains(a))
            .cloned()
            .collect();
        let mut mine: Vec<&String> = held.keys().filter(|a| exists.contains(a)).collect();
        if mine.len() > fair {
            mine.sort();
            give_up.extend(mine.split_off(fair).into_iter().cloned());
        }
        if !give_up.is_empty() {
            self.give_up(app, &give_up).await?;
            self.announce().await;
        }
        let rows = leases::leases(&self.pool).await?;
        let busy: HashSet<&str> = rows
            .iter()
            .filter(|r| r.live && r.owner.as_deref() != Some(&self.node_id))
            .map(|r| r.account_id.as_str())
            .collect();
        *self.elsewhere.write().unwrap_or_else(|p| p.into_inner()) =
            busy.iter().map(|a| a.to_string()).collect();
        if mine.len() < fair {
            // Free accounts, in an order of this node's own (so joining nodes spread out).
            let mut free: Vec<&String> = accounts
                .iter()
                .filter(|a| !held.contains_key(*a) && !busy.contains(a.as_str()))
                .collect();
            free.sort_by_key(|a| spread(&self.node_id, a));
            let want: Vec<String> = free.into_iter().take(fair - mine.len()).cloned().collect();
            if !want.is_empty() {
                let taken = self.take(app, &want).await?;
                let accounts: Vec<String> = taken.into_iter().map(|a| a.account_id).collect();
                recover(app, &accounts, None).await;
            }
        }
        Ok(())
    }

    /// Stops running `accounts` here and releases their leases.
    async fn give_up(&self, app: &SharedApp, accounts: &[String]) -> Result<(), StoreError> {
        {
            let mut held = self.held.write().unwrap_or_else(|p| p.into_inner());
            for a in accounts {
                held.remove(a);
            }
        }
        // No reply step of these accounts runs here from now on; then others may take them.
        restart(app, accounts).await;
        leases::release(&self.pool, &self.instance, accounts).await?;
        self.stats
            .released
            .fetch_add(accounts.len() as u64, Ordering::Relaxed);
        tracing::info!(accounts = accounts.len(), "account leases released");
        Ok(())
    }

    /// A reply was requested in `account`'s chat `jid` on this node, which does not run the
    /// account: tell its owner, or take the lease when nobody holds it (a new account).
    async fn hand_over(&self, app: &SharedApp, account: &str, jid: &str) {
        let stream = format!("{account}/{jid}");
        if self.claim(app, account).await {
            recover(app, &[account.to_string()], Some(jid)).await;
        } else if let Err(e) = leases::notify(&self.pool, leases::REPLIES_CHANNEL, &stream).await {
            // The owner's sweep finds the reply.
            tracing::warn!(error = %e, "cannot notify the account's owner");
        }
    }

    /// Whether this node runs `account` now, taking its lease when no live node holds it (a new
    /// account).
    pub async fn claim(&self, app: &SharedApp, account: &str) -> bool {
        // Held by another node at the last round: without a lock or a read.
        let elsewhere = self
            .elsewhere
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(account);
        let owned = if elsewhere {
            false
        } else {
            let _busy = self.busy.lock().await;
            if self.epoch(account).is_some() {
                true
            } else {
                match leases::leases_of(&self.pool, account).await {
                    Ok(Some(row)) if row.live => false,
                    Ok(_) => match self.take(app, &[account.to_string()]).await {
                        Ok(taken) => !taken.is_empty(),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot take a free account lease");
                            false
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the account's lease");
                        false
                    }
                }
            }
        };
        owned
    }

    /// Leaves the cluster (a clean stop): releases every lease and the node id, so the other
    /// nodes take the accounts over at once.
    pub async fn leave(&self) {
        let held: Vec<String> = self.held().into_keys().collect();
        if !held.is_empty() {
            if let Err(e) = leases::release(&self.pool, &self.instance, &held).await {
                tracing::warn!(error = %e, "leases not released at stop; they expire");
            }
        }
        if let Err(e) = leases::deregister(&self.pool, &self.node_id, &self.instance).await {
            tracing::warn!(error = %e, "node not deregistered at stop; it expires");
        }
        self.announce().await;
    }
}

/// A stable pseudo-random order of accounts per node.
fn spread(node: &str, account: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (node, account).hash(&mut h);
    h.finish()
}

/// Restarts the actors of `accounts` (they learn who runs them now).
async fn restart(app: &SharedApp, accounts: &[String]) {
    if let Some(gateway) = app.gateway.get() {
        for a in accounts {
            gateway.restart_account(a).await;
        }
    }
}

/// Runs the replies of `accounts` this node just took: every chat with an open reply (and `jid`)
/// reloads its stream and is recovered as at a start: a reply that may have been handed to the
/// transport is closed as `interrupted`, the others are worked on.
async fn recover(app: &SharedApp, accounts: &[String], jid: Option<&str>) {
    if accounts.is_empty() {
        return;
    }
    // The other nodes' events, so the read model knows their open replies.
    if let Err(e) = app.catch_up().await {
        tracing::warn!(error = %e, "catch-up before recovery failed");
    }
    let Some(gateway) = app.gateway.get() else {
        return;
    };
    let mut chats: Vec<(String, String)> = app
        .messages()
        .chats_with_open_replies()
        .into_iter()
        .filter(|(a, _)| accounts.contains(a))
        .collect();
    if let (Some(jid), [account]) = (jid, accounts) {
        chats.push((account.clone(), jid.to_string()));
        chats.sort();
        chats.dedup();
    }
    for (account, jid) in chats {
        match gateway.close_interrupted(&account, &jid).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(account = %account, replies = n, "closed replies the previous owner left (superseded, or maybe sent)");
            }
            Err(e) => {
                tracing::warn!(account = %account, error = %e, "cannot recover a chat's replies")
            }
        }
    }
}

/// Balances every third of the lease, or at once when another node joins or leaves; follows the
/// hand-overs of other nodes; sweeps for replies a lost notification left waiting.
pub fn start(app: &SharedApp, cluster: Arc<Cluster>) -> Vec<tokio::task::JoinHandle<()>> {
    let every = cluster.lease / 3;
    let weak = Arc::downgrade(app);
    let c = cluster.clone();
    let balancer = tokio::spawn(async move {
        loop {
            let _ = tokio::time::timeout(every, c.wake.notified()).await;
            let Some(app) = weak.upgrade() else { return };
            c.balance(&app).await;
            sweep(&app, &c).await;
        }
    });
    let weak = Arc::downgrade(app);
    let c = cluster;
    let listener = tokio::spawn(async move {
        loop {
            let mut listener = match leases::listen(&c.pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for cluster notifications; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            loop {
                let n = match listener.recv().await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "cluster notifications interrupted; reconnecting");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        break;
                    }
                };
                let Some(app) = weak.upgrade() else { return };
                match n.channel() {
                    leases::REPLIES_CHANNEL => {
                        if let Some((account, jid)) = n.payload().split_once('/') {
                            if c.epoch(account).is_some() {
                                let (account, jid) = (account.to_string(), jid.to_string());
                                tokio::spawn(async move {
                                    if let Some(g) = app.gateway.get() {
                                        if let Err(e) = g.close_interrupted(&account, &jid).await {
                                            tracing::warn!(account = %account, error = %e, "cannot take a handed-over reply");
                                        }
                                    }
                                });
                            }
                        }
                    }
                    _ => c.wake.notify_one(),
                }
            }
        }
    });
    vec![balancer, listener]
}

/// Works on the replies of held accounts that have waited longer than a balancing round (their
/// hand-over notification was lost).
async fn sweep(app: &SharedApp, cluster: &Cluster) {
    let Some(gateway) = app.gateway.get() else {
        return;
    };
    let before = Utc::now()
        - chrono::Duration::from_std(cluster.lease / 3).unwrap_or(chrono::Duration::seconds(3));
    let open = app.messages().replies_open_before(before);
    for ((account, jid), replies) in open {
        if cluster.epoch(&account).is_some() {
            if let Err(e) = gateway.adopt(&account, &jid, replies).await {
                tracing::debug!(account = %account, error = %e, "sweep could not recover a chat");
            }
        }
    }
}

/// The actors' view of the cluster.
pub struct ClusterOwnership {
    cluster: Arc<Cluster>,
    app: Weak<App>,
}

impl ClusterOwnership {
    pub fn new(cluster: Arc<Cluster>, app: &SharedApp) -> Self {
        Self {
            cluster,
            app: Arc::downgrade(app),
        }
    }
}

#[async_trait]
impl Ownership for ClusterOwnership {
    fn owner(&self, account: &str) -> Owner {
        match self.cluster.epoch(account) {
            Some(epoch) => Owner::Here { epoch: Some(epoch) },
            None => Owner::Elsewhere,
        }
    }

    async fn hand_over(&self, account: &str, jid: &str) {
        if let Some(app) = self.app.upgrade() {
            self.cluster.hand_over(&app, account, jid).await;
        }
    }
}
