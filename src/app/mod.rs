//! The application service: executes domain commands against the event store (with who / request
//! id / time metadata and bounded retries on write conflicts) and keeps the in-memory config read
//! model caught up with the history in commit order.

pub mod checkpoint;
pub mod cluster;
pub mod cold;
pub mod dispatch;
pub mod media_retention;
pub mod ports;
pub mod retention;
pub mod revocation;
pub mod whatsapp_web;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use cqrs_es::{Aggregate, AggregateError};
use secrecy::ExposeSecret;
use wagate_actors::retry::RetryPolicy;
use wagate_events::account::Account;
use wagate_events::ai_global::AiGlobal;
use wagate_events::chat_settings::ChatSettings;
use wagate_events::metadata;
use wagate_events::settings::AiSettings;
use wagate_events::webhook::Webhook;
use wagate_events::DomainError;
use wagate_projections::config as config_model;
use wagate_projections::messages::MessagesModel;
use wagate_projections::{ConfigModel, EnvLayer};

use crate::auth::LoginLimiter;
use crate::config::Config;
use crate::store::{EventQuery, Framework, Store, StoreError};

/// Why a service call failed, for any front end (HTTP, CLI).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The store is down, or a write kept conflicting: retry later.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or a corrupted store; details are logged, not shown.
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => AppError::Unavailable(m),
            StoreError::Other(m) => AppError::Internal(m),
        }
    }
}

/// Who is acting, recorded in the metadata of every event they cause.
#[derive(Debug, Clone)]
pub struct Who {
    /// `admin:<sub>`, `token:<id>` or `cli:<command>`.
    pub actor: String,
    pub request_id: Option<String>,
}

impl Who {
    pub fn metadata(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert(metadata::ACTOR.to_string(), self.actor.clone());
        if let Some(r) = &self.request_id {
            m.insert(metadata::REQUEST_ID.to_string(), r.clone());
        }
        m.insert(
            metadata::TIME.to_string(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        );
        m
    }
}

/// The env layer of the AI config (`WAGATE_AI_*` / `OPENAI_*`).
pub fn env_layer(config: &Config) -> EnvLayer {
    EnvLayer {
        settings: AiSettings {
            base_url: config.ai_env.base_url.clone(),
            model_name: config.ai_env.model_name.clone(),
            ..Default::default()
        },
        has_api_key: config
            .ai_env
            .api_key
            .as_ref()
            .is_some_and(|k| !k.expose_secret().is_empty()),
    }
}

/// Process-local delivery counters (`/metrics`).
#[derive(Debug, Default)]
pub struct DeliveryCounters {
    pub delivered: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub dead: AtomicU64,
}

/// How many times a command is retried after a write conflict before giving up with 503.
const CONFLICT_RETRIES: u32 = 5;

/// The read models and what keeps them current: the config and messages models folded from
/// the history in commit order, and the signals around them. A narrow handle: the actors' ports
/// hold this (and a config snapshot), never the whole [`App`].
pub struct ReadModels {
    store: Store,
    model: RwLock<ConfigModel>,
    messages: RwLock<MessagesModel>,
    /// The position up to which both read models have folded the history.
    folded: std::sync::atomic::AtomicI64,
    catch_up_lock: tokio::sync::Mutex<()>,
    /// What the chat actors' appends committed (read-your-writes, [`ReadModels::catch_up_own`]).
    commit_stats: Arc<crate::store::group_commit::CommitStats>,
    /// Wakes the background projector after commits made outside `execute` (chat actors).
    pub projector_wake: tokio::sync::Notify,
    /// Wakes the webhook fan-out after the read models folded new events.
    pub outbox_wake: tokio::sync::Notify,
    /// The chat streams (`<account>/<jid>`) each fold touched, for the dashboard's live pages;
    /// sent only while someone listens.
    pub chats_folded: tokio::sync::broadcast::Sender<Arc<[String]>>,
    /// True once the server is stopping: long-lived responses (the live pages) end.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// Store failures seen by background work and commands (`/metrics`).
    store_errors: std::sync::atomic::AtomicU64,
}

impl ReadModels {
    fn new(
        store: Store,
        retention: wagate_projections::messages::Retention,
        commit_stats: Arc<crate::store::group_commit::CommitStats>,
    ) -> Self {
        Self {
            store,
            model: RwLock::new(ConfigModel::default()),
            messages: RwLock::new(MessagesModel::with_retention(retention)),
            folded: std::sync::atomic::AtomicI64::new(0),
            catch_up_lock: tokio::sync::Mutex::new(()),
            commit_stats,
            projector_wake: tokio::sync::Notify::new(),
            outbox_wake: tokio::sync::Notify::new(),
            chats_folded: tokio::sync::broadcast::channel(64).0,
            stopping: tokio::sync::watch::channel(false).0,
            store_errors: Default::default(),
        }
    }

    /// The config read model as of the last catch-up.
    pub fn model(&self) -> RwLockReadGuard<'_, ConfigModel> {
        // A poisoned lock means a panic while folding; the model itself is still consistent
        // up to its position, since `apply` mutates only after parsing.
        self.model.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The messages and AI-log read model as of the last catch-up.
    pub fn messages(&self) -> RwLockReadGuard<'_, MessagesModel> {
        self.messages.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The messages read model, to change it outside a fold (the AI-log retention).
    pub fn messages_mut(&self) -> std::sync::RwLockWriteGuard<'_, MessagesModel> {
        self.messages.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts read models built at start in place, as of `position`.
    async fn install(&self, config: ConfigModel, messages: MessagesModel, position: i64) {
        let _guard = self.catch_up_lock.lock().await;
        *self.model.write().unwrap_or_else(|p| p.into_inner()) = config;
        *self.messages.write().unwrap_or_else(|p| p.into_inner()) = messages;
        self.folded
            .store(position, std::sync::atomic::Ordering::Release);
    }

    /// Folds every committed event not folded yet into the read models, in position order.
    pub async fn catch_up(&self) -> Result<(), AppError> {
        use std::sync::atomic::Ordering;
        let _guard = self.catch_up_lock.lock().await;
        loop {
            let after = self.folded.load(Ordering::Acquire);
            // Chat events are parsed once, from their text into typed events (as a replay
            // does), outside the read models' locks.
            let batch = self
                .store
                .read_raw(&EventQuery {
                    after,
                    limit: 1000,
                    ..Default::default()
                })
                .await?
                .into_iter()
                .map(crate::store::replay::parse_for_fold)
                .collect::<Result<Vec<_>, _>>()?;
            let n = batch.len();
            if let Some((last, _)) = batch.last() {
                let last = last.position;
                {
                    let mut model = self.model.write().unwrap_or_else(|p| p.into_inner());
                    for (ev, _) in batch.iter().filter(|(e, _)| config_model::folds(e)) {
                        model
                            .apply(ev)
                            .map_err(|e| AppError::Internal(e.to_string()))?;
                    }
                    model.position = last;
                }
                let touched = (self.chats_folded.receiver_count() > 0).then(|| {
                    batch
                        .iter()
                        .filter(|(ev, _)| ev.aggregate_type == "chat")
                        .map(|(ev, _)| ev.aggregate_id.clone())
                        .collect::<std::collections::BTreeSet<String>>()
                });
                {
                    let mut messages = self.messages.write().unwrap_or_else(|p| p.into_inner());
                    for (ev, parsed) in batch {
                        messages
                            .apply_parsed(&ev, parsed)
                            .map_err(|e| AppError::Internal(e.to_string()))?;
                    }
                }
                self.folded.store(last, Ordering::Release);
                self.outbox_wake.notify_one();
                if let Some(chats) = touched.filter(|c| !c.is_empty()) {
                    let _ = self.chats_folded.send(chats.into_iter().collect());
                }
            }
            if n < 1000 {
                return Ok(());
            }
        }
    }

    /// Read-your-writes for this process: folds what its chat actors committed and the read
    /// models have not folded yet, so an answer reflects every write that finished before the
    /// request. Free when nothing is pending (no lock, no store read), which is the common case;
    /// commits by other processes arrive with the background projector (at most a second).
    pub async fn catch_up_own(&self) -> Result<(), AppError> {
        if self.commit_stats.committed() <= self.folded() {
            return Ok(());
        }
        self.catch_up().await
    }

    /// The position up to which the read models have folded the history.
    pub fn folded(&self) -> i64 {
        self.folded.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Counts a store failure (`wagate_store_errors_total`).
    pub fn note_store_error(&self) {
        self.store_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn store_errors(&self) -> u64 {
        self.store_errors.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What the reply plane reads its settings through: a config snapshot (keyring, env key, limits)
/// and the read models. A narrow handle, never the whole application.
#[derive(Clone)]
pub struct SettingsView {
    pub config: Arc<Config>,
    pub env_layer: Arc<EnvLayer>,
    pub read: Arc<ReadModels>,
}

impl SettingsView {
    pub fn of(app: &App) -> Self {
        Self {
            config: app.config.clone(),
            env_layer: app.env_layer.clone(),
            read: app.read.clone(),
        }
    }
}

/// Executes a command on one stream, retrying write conflicts, then catches `read` up so the
/// caller reads its own write.
pub async fn execute<A>(
    read: &ReadModels,
    framework: &Framework<A>,
    id: &str,
    command: A::Command,
    who: &Who,
) -> Result<(), AppError>
where
    A: Aggregate<Services = (), Error = DomainError> + 'static,
    A::Command: Clone,
{
    // A write conflict (another writer moved the stream) is decided again on the new state,
    // with the one retry policy; anything else ends the command.
    let conflicts = RetryPolicy {
        max_attempts: CONFLICT_RETRIES + 1,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(100),
    };
    let result = conflicts
        .run(
            || framework.execute(id, command.clone(), who.metadata()),
            |e| matches!(e, AggregateError::AggregateConflict),
            |_| None,
            |_, _| {},
        )
        .await;
    match result {
        Ok(()) => {}
        Err(AggregateError::UserError(e)) => return Err(e.into()),
        Err(AggregateError::AggregateConflict) => {
            return Err(AppError::Unavailable(
                "the stream kept changing concurrently; retry".into(),
            ))
        }
        Err(AggregateError::DatabaseConnectionError(e)) => {
            read.note_store_error();
            return Err(AppError::Unavailable(e.to_string()));
        }
        Err(AggregateError::UnexpectedError(e)) => {
            // The -es crates report pool timeouts and I/O errors as "unexpected".
            let unavailable = e
                .downcast_ref::<sqlx::Error>()
                .is_some_and(crate::store::is_unavailable);
            read.note_store_error();
            return Err(if unavailable {
                AppError::Unavailable(e.to_string())
            } else {
                AppError::Internal(e.to_string())
            });
        }
        Err(e) => return Err(AppError::Internal(e.to_string())),
    }
    read.catch_up().await
}

pub struct App {
    /// The configuration, shared as a snapshot with the actors' ports.
    pub config: Arc<Config>,
    pub store: Store,
    pub global: Arc<Framework<AiGlobal>>,
    pub accounts: Arc<Framework<Account>>,
    pub chats: Arc<Framework<ChatSettings>>,
    pub webhooks: Arc<Framework<Webhook>>,
    pub env_layer: Arc<EnvLayer>,
    pub login_limiter: LoginLimiter,
    pub api_limiter: crate::auth::ApiRateLimiter,
    pub revoked_tokens: crate::app::revocation::RevokedTokens,
    /// The read models (shared with the actors' ports).
    pub read: Arc<ReadModels>,
    /// The actor system, set once at start.
    pub gateway: std::sync::OnceLock<Arc<wagate_actors::Gateway>>,
    /// This node's membership among the gateways sharing a PostgreSQL store (ADR 0026); unset
    /// on SQLite, where one process runs every account.
    pub cluster: std::sync::OnceLock<Arc<crate::app::cluster::Cluster>>,
    /// The WhatsApp Web connections of this process, set once at start (issue 23).
    pub web: std::sync::OnceLock<Arc<crate::app::whatsapp_web::WebSessions>>,
    /// Wakes the webhook senders when deliveries became due.
    pub delivery_wake: tokio::sync::Notify,
    pub delivery_counters: DeliveryCounters,
    /// Appends of the chat actors, grouped into shared transactions.
    pub committer: crate::store::group_commit::GroupCommitter,
    pub commit_stats: Arc<crate::store::group_commit::CommitStats>,
    /// The read-model checkpoint last loaded or written (ADR 0015).
    pub checkpoint_stats: crate::app::checkpoint::CheckpointStats,
    /// How the start folded the history.
    pub start_stats: std::sync::OnceLock<StartStats>,
}

/// How a start built the read models (`/metrics`, the start's log line).
#[derive(Debug, Clone, Copy)]
pub struct StartStats {
    /// Events read and folded (all of the history without a checkpoint).
    pub events_folded: u64,
    /// What became of the checkpoint.
    pub checkpoint: crate::store::checkpoint::Found,
    pub elapsed: Duration,
}

pub type SharedApp = Arc<App>;

impl App {
    /// Builds the service over a migrated store and folds the whole history into the read model.
    pub async fn new(config: Config, store: Store) -> Result<SharedApp, AppError> {
        let env_layer = env_layer(&config);
        let commit_stats = Arc::new(crate::store::group_commit::CommitStats::default());
        let committer =
            crate::store::group_commit::GroupCommitter::start(store.clone(), commit_stats.clone());
        let read = Arc::new(ReadModels::new(
            store.clone(),
            config.read_model,
            commit_stats.clone(),
        ));
        let app = Arc::new(App {
            global: Arc::new(store.framework()),
            accounts: Arc::new(store.framework()),
            chats: Arc::new(store.framework()),
            webhooks: Arc::new(store.framework()),
            delivery_wake: tokio::sync::Notify::new(),
            delivery_counters: Default::default(),
            checkpoint_stats: Default::default(),
            start_stats: std::sync::OnceLock::new(),
            committer,
            commit_stats,
            env_layer: Arc::new(env_layer),
            login_limiter: LoginLimiter::default(),
            api_limiter: crate::auth::ApiRateLimiter::new(
                config.api_rate_limit.map(|l| (l.per_second, l.burst)),
            ),
            revoked_tokens: Default::default(),
            read,
            gateway: std::sync::OnceLock::new(),
            cluster: std::sync::OnceLock::new(),
            web: std::sync::OnceLock::new(),
            config: Arc::new(config),
            store,
        });
        app.load().await?;
        Ok(app)
    }

    /// Folds the history into the read models at start. From the newest usable checkpoint
    /// (ADR 0015): the config model from its own history (its index), the messages model from
    /// the checkpoint plus the chat events after it. Without one: the replay's parallel readers
    /// over the whole history (1.7× a sequential fold on a million events, docs/PERFORMANCE.md).
    /// Then a catch-up for anything committed meanwhile; the server answers nothing before this
    /// is done.
    async fn load(&self) -> Result<(), AppError> {
        use crate::store::checkpoint::Found;
        let started = std::time::Instant::now();
        let head = self.store.head().await?;
        let (checkpoint, found) = if self.config.checkpoint_every > 0 {
            crate::store::checkpoint::load(&self.store, self.config.read_model, head).await?
        } else {
            (None, Found::None)
        };
        let (config, messages, events_folded) = match checkpoint {
            Some(model) => {
                self.checkpoint_stats.record(model.position);
                let config = self.model_at(head).await?;
                let (messages, events) =
                    crate::store::replay::fold_messages_after(&self.store, model, head).await?;
                (config, messages, events)
            }
            None => {
                let report = crate::store::replay::replay(
                    &self.store,
                    Some(head),
                    crate::store::replay::Projection::All,
                    self.config.read_model,
                    false,
                )
                .await?;
                let (Some(config), Some(messages)) = (report.config, report.messages) else {
                    return Err(AppError::Internal("the replay built no read model".into()));
                };
                (config, messages, report.events)
            }
        };
        self.read.install(config, messages, head).await;
        let stats = StartStats {
            events_folded,
            checkpoint: found,
            elapsed: started.elapsed(),
        };
        let _ = self.start_stats.set(stats);
        match found {
            Found::Loaded(position) => tracing::info!(
                checkpoint = position,
                events = events_folded,
                ms = stats.elapsed.as_millis() as u64,
                "read models loaded from a checkpoint"
            ),
            Found::Ignored(why) => tracing::info!(
                reason = why,
                events = events_folded,
                ms = stats.elapsed.as_millis() as u64,
                "read-model checkpoint ignored; folded the whole history"
            ),
            Found::None => tracing::info!(
                events = events_folded,
                ms = stats.elapsed.as_millis() as u64,
                "read models folded from the whole history"
            ),
        }
        self.catch_up().await
    }

    /// The config read model as of the last catch-up.
    pub fn model(&self) -> RwLockReadGuard<'_, ConfigModel> {
        self.read.model()
    }

    /// The messages and AI-log read model as of the last catch-up.
    pub fn messages(&self) -> RwLockReadGuard<'_, MessagesModel> {
        self.read.messages()
    }

    /// The messages read model, to change it outside a fold (the AI-log retention).
    pub fn messages_mut(&self) -> std::sync::RwLockWriteGuard<'_, MessagesModel> {
        self.read.messages_mut()
    }

    /// See [`ReadModels::catch_up`].
    pub async fn catch_up(&self) -> Result<(), AppError> {
        self.read.catch_up().await
    }

    /// See [`ReadModels::catch_up_own`].
    pub async fn catch_up_own(&self) -> Result<(), AppError> {
        self.read.catch_up_own().await
    }

    /// The position up to which the read models have folded the history.
    pub fn folded(&self) -> i64 {
        self.read.folded()
    }

    /// Counts a store failure (`wagate_store_errors_total`).
    pub fn note_store_error(&self) {
        self.read.note_store_error()
    }

    pub fn store_errors(&self) -> u64 {
        self.read.store_errors()
    }

    /// The actor system (present once the server started).
    pub fn gateway(&self) -> Result<&Arc<wagate_actors::Gateway>, AppError> {
        self.gateway
            .get()
            .ok_or_else(|| AppError::Unavailable("the gateway is starting".into()))
    }

    /// Builds the config read model as it was at `position`, from history.
    pub async fn model_at(&self, position: i64) -> Result<ConfigModel, AppError> {
        let mut model = ConfigModel::default();
        loop {
            let batch = self
                .store
                .read(&EventQuery {
                    after: model.position,
                    until: Some(position),
                    limit: 1000,
                    config_history: true,
                    ..Default::default()
                })
                .await?;
            for ev in &batch {
                model
                    .apply(ev)
                    .map_err(|e| AppError::Internal(e.to_string()))?;
            }
            if batch.len() < 1000 {
                model.position = position;
                return Ok(model);
            }
        }
    }

    /// Executes a command on one stream (see [`execute`]).
    pub async fn execute<A>(
        &self,
        framework: &Framework<A>,
        id: &str,
        command: A::Command,
        who: &Who,
    ) -> Result<(), AppError>
    where
        A: Aggregate<Services = (), Error = DomainError> + 'static,
        A::Command: Clone,
    {
        execute(&self.read, framework, id, command, who).await
    }

    /// Seals an API key for the layer `owner` (`global` or `account:<id>`).
    pub fn seal_api_key(&self, owner: &str, key: &str) -> String {
        self.config
            .keyring
            .seal(key.as_bytes(), &crate::crypto::api_key_ad(owner))
    }
}
