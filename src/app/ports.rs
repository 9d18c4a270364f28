//! The binary's side of the reply plane: the actors' ports implemented over the event store, the
//! config read model and keyring, the HTTP model client and the transports (see
//! [`crate::transport`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;
use wagate_actors::ports::{
    ChatStreams, ConfigSource, FallbackModel, Meta, Model, ModelAnswer, ModelCall, ModelFailure,
    Notify, PromptRole, ReplyConfig, StoreFailure, TranscribeCall, Transcript,
};
use wagate_actors::SNAPSHOT_EVERY;
use wagate_events::chat::{Chat, ChatEvent, Control, LoopGuard, TokenUsage};
use wagate_events::ids::chat_kind;
use wagate_events::message_window::MessageFact;
use wagate_events::reason::{ModelErrorClass, ReplyReason};
use wagate_projections::effective::{self, Effective, FallbackKey, KeySource};

use crate::app::dispatch::DispatchTransport;
use crate::app::{App, ReadModels, SettingsView};
use crate::crypto::{api_key_ad, fallback_owner};
use crate::model::client::{ChatMessage, HttpModelClient, ModelError, ModelRequest, Role};
use crate::store::chats::{self, account_of};
use crate::store::group_commit::{Append, Appended, GroupCommitter};
use crate::store::group_load::GroupLoader;
use crate::store::{CommitError, Store, StoreError};
use crate::transport::cloud_api::CloudApiClient;

/// Chat streams in the event store: loaded from their snapshots (`chat_store`) by the group
/// loader on PostgreSQL (many chats' loads share one query) and with single queries on SQLite,
/// appended through the group committer (many chats' appends share one transaction).
pub struct StoreStreams {
    store: Store,
    loader: Option<GroupLoader>,
    committer: GroupCommitter,
    /// The read model that tells which chats have any event (see `ChatStreams::start`).
    known: Option<Arc<ReadModels>>,
    /// Whether settled replies leave their media's bytes for the purge
    /// (`WAGATE_MEDIA_KEEP_SECONDS` > 0) instead of deleting them (ADR 0028).
    keep_media: bool,
}

impl StoreStreams {
    pub fn new(store: &Store, committer: GroupCommitter) -> Self {
        let loader = match store {
            Store::Postgres(pool) => Some(GroupLoader::start(pool.clone())),
            Store::Sqlite(_) => None,
        };
        Self {
            store: store.clone(),
            loader,
            committer,
            known: None,
            keep_media: false,
        }
    }

    /// Settled replies leave their media's bytes to the time-based purge (`keep` > 0).
    pub fn keeping_media(mut self, keep: Duration) -> Self {
        self.keep_media = !keep.is_zero();
        self
    }

    /// Starts chats that the messages read model has never seen as new streams, without reading the
    /// store (a burst of new conversations then costs one commit each, not a read and a commit).
    /// Every chat stream begins with a message event, which the messages read model folds into a
    /// chat; a stream it has not folded yet (committed by another process in the last second)
    /// makes the first commit conflict, and the chat reloads from the store.
    pub fn guessing_new_chats(mut self, read: Arc<ReadModels>) -> Self {
        self.known = Some(read);
        self
    }
}

fn failure(e: CommitError) -> StoreFailure {
    match e {
        CommitError::Conflict => StoreFailure::Conflict,
        CommitError::Store(StoreError::Unavailable(m)) => StoreFailure::Unavailable(m),
        CommitError::Store(StoreError::Other(m)) => StoreFailure::Other(m),
    }
}

#[async_trait]
impl ChatStreams for StoreStreams {
    async fn start(&self, stream_id: &str) -> Result<(Chat, usize), StoreFailure> {
        let unknown = self.known.as_ref().is_some_and(|read| {
            stream_id.split_once('/').is_some_and(|(account, jid)| {
                !read
                    .messages()
                    .chats
                    .contains_key(&(account.to_string(), jid.to_string()))
            })
        });
        if unknown {
            return Ok((Chat::default(), 0));
        }
        self.load(stream_id).await
    }

    async fn load(&self, stream_id: &str) -> Result<(Chat, usize), StoreFailure> {
        let store_failure = |e| failure(CommitError::Store(e));
        let mut loaded = None;
        if let Some(loader) = &self.loader {
            let (snapshot, events) = loader.load(stream_id).await.map_err(store_failure)?;
            loaded = chats::fold(snapshot, events).map_err(store_failure)?;
        }
        let loaded = match loaded {
            Some(loaded) => loaded,
            None => chats::load(&self.store, stream_id)
                .await
                .map_err(store_failure)?,
        };
        // A long fold (a chat from before snapshots, or one whose snapshot was dropped) is not
        // repeated at the next activation.
        if loaded.folded > SNAPSHOT_EVERY {
            self.snapshot(stream_id, loaded.version, &loaded.chat);
        }
        Ok((loaded.chat, loaded.version))
    }

    async fn recall(
        &self,
        stream_id: &str,
        message_id: &str,
    ) -> Result<Option<MessageFact>, StoreFailure> {
        chats::recall(&self.store, stream_id, message_id)
            .await
            .map_err(|e| failure(CommitError::Store(e)))
    }

    async fn media(
        &self,
        account: &str,
        sha256: &str,
    ) -> Result<Option<(String, Vec<u8>)>, StoreFailure> {
        crate::store::media::get(&self.store, account, sha256)
            .await
            .map_err(|e| failure(CommitError::Store(e)))
    }

    async fn forget_media(
        &self,
        account: &str,
        jid: &str,
        message_id: &str,
        sha256: &str,
    ) -> Result<(), StoreFailure> {
        let used = crate::store::media::MediaUse {
            account,
            chat_id: jid,
            message_id,
            sha256,
        };
        crate::store::media::release(&self.store, used, self.keep_media)
            .await
            .map(drop)
            .map_err(|e| failure(CommitError::Store(e)))
    }

    fn snapshot(&self, stream_id: &str, version: usize, chat: &Chat) {
        let state = match serde_json::to_string(chat) {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(account = %account_of(stream_id), error = %e, "cannot serialize a chat snapshot");
                return;
            }
        };
        let store = self.store.clone();
        let stream_id = stream_id.to_string();
        let version = i64::try_from(version).unwrap_or(i64::MAX);
        tokio::spawn(async move {
            if let Err(e) = chats::save_snapshot(&store, &stream_id, version, &state).await {
                tracing::warn!(account = %account_of(&stream_id), error = %e, "chat snapshot not written");
            }
        });
    }

    async fn commit(
        &self,
        stream_id: &str,
        expected: usize,
        events: Vec<ChatEvent>,
        meta: Meta,
        fence: Option<i64>,
    ) -> Result<Vec<i64>, StoreFailure> {
        use cqrs_es::DomainEvent;
        let append = Append {
            aggregate_type: "chat",
            aggregate_id: stream_id.to_string(),
            expected: i64::try_from(expected).unwrap_or(i64::MAX),
            events: events
                .iter()
                .map(|e| {
                    serde_json::to_string(e)
                        .map(|payload| (e.event_type(), e.event_version(), payload))
                        .map_err(|err| {
                            StoreFailure::Other(format!("cannot serialize an event: {err}"))
                        })
                })
                .collect::<Result<_, _>>()?,
            metadata: meta,
            fence,
        };
        match self.committer.append(append).await {
            Ok(Appended::Committed(positions)) => Ok(positions),
            Ok(Appended::Conflict) => Err(StoreFailure::Conflict),
            Ok(Appended::Fenced) => Err(StoreFailure::Fenced),
            Err(e) => Err(failure(CommitError::Store(e))),
        }
    }
}

/// A stored API key that the configured master keys cannot open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", ReplyReason::KeyUndecryptable.text())]
pub struct KeyUndecryptable;

impl From<KeyUndecryptable> for ReplyReason {
    fn from(_: KeyUndecryptable) -> Self {
        ReplyReason::KeyUndecryptable
    }
}

/// Opens a key of `source`; `fallback` selects the layer's fallback key.
fn open_key(
    app: &SettingsView,
    eff: &Effective,
    source: &KeySource,
    fallback: bool,
) -> Result<Option<SecretString>, KeyUndecryptable> {
    let open = |sealed: &str, owner: String| {
        let owner = if fallback {
            fallback_owner(&owner)
        } else {
            owner
        };
        app.config
            .keyring
            .open_string(sealed, &api_key_ad(&owner))
            .map(Some)
            .map_err(|_| KeyUndecryptable)
    };
    match source {
        KeySource::Global(k) => open(&k.sealed, "global".into()),
        KeySource::Account(k) => open(&k.sealed, format!("account:{}", eff.account_id)),
        KeySource::Env => Ok(app.config.ai_env.api_key.clone()),
    }
}

/// The decrypted key an effective config points at, or why there is none usable.
pub fn api_key_for(
    app: &SettingsView,
    eff: &Effective,
) -> Result<Option<SecretString>, KeyUndecryptable> {
    match &eff.key {
        None => Ok(None),
        Some(source) => open_key(app, eff, source, false),
    }
}

/// The decrypted key of the fallback model, if it gets one.
pub fn fallback_key_for(
    app: &SettingsView,
    eff: &Effective,
) -> Result<Option<SecretString>, KeyUndecryptable> {
    match &eff.fallback_key {
        None => Ok(None),
        Some(FallbackKey::Own(source)) => open_key(app, eff, source, true),
        Some(FallbackKey::Main(source)) => open_key(app, eff, source, false),
    }
}

/// The fallback model of an effective config: its base URL is the fallback's own or the
/// primary's; its key is the fallback key entered for that origin, or the main key when the
/// fallback has the main key's origin (a key follows its origin, ADR 0003), else none (a local
/// model server, for instance).
fn fallback_of(
    app: &SettingsView,
    eff: &Effective,
    private_networks: bool,
) -> Result<Option<FallbackModel>, KeyUndecryptable> {
    let Some(model) = eff.fallback_model_name.value.clone() else {
        return Ok(None);
    };
    let base_url = eff
        .fallback_base_url
        .value
        .clone()
        .unwrap_or_else(|| eff.base_url.value.clone());
    Ok(Some(FallbackModel {
        base_url,
        private_networks,
        api_key: fallback_key_for(app, eff)?,
        model,
    }))
}

/// Turns an effective config into what a reply needs. A model URL an account token set reaches
/// public addresses only, unless `WAGATE_ALLOW_PRIVATE_NETWORKS_FOR_ACCOUNTS` (issue 21, F3).
pub fn reply_config_of(
    app: &SettingsView,
    eff: &Effective,
) -> Result<ReplyConfig, KeyUndecryptable> {
    let api_key = api_key_for(app, eff)?;
    let origins = app
        .read
        .model()
        .account(&eff.account_id)
        .map(|a| a.model_urls)
        .unwrap_or_default();
    let (tenant_primary, tenant_fallback) = eff.tenant_model_urls(&origins);
    let trusted = |tenant: bool| !tenant || app.config.allow_private_networks_for_accounts;
    let tokens_used_today = app
        .read
        .messages()
        .tokens_on(&eff.account_id, chrono::Utc::now().date_naive());
    let window_hours = u64::from(eff.history_window_hours.value);
    Ok(ReplyConfig {
        fallback: fallback_of(app, eff, trusted(tenant_fallback))?,
        max_retries: eff.max_retries.value,
        max_replies_per_hour: eff.max_replies_per_chat_per_hour.value,
        daily_token_budget: eff.daily_token_budget.value,
        tokens_used_today,
        max_history_tokens: eff.max_history_tokens.value,
        history_window: (window_hours > 0).then(|| Duration::from_secs(window_hours * 3600)),
        format_for_whatsapp: eff.format_for_whatsapp.value,
        transcription_model: eff.transcription_model.value.clone(),
        vision: eff.vision.value,
        handoff_tool: eff.handoff_tool.value,
        handoff_message: eff.handoff_message.value.clone(),
        handoff_pause: handoff_pause(app, eff),
        skip_reason: eff.why_not.clone(),
        echo_mode: eff.echo_mode.value,
        base_url: eff.base_url.value.clone(),
        private_networks: trusted(tenant_primary),
        api_key,
        model: eff.model_name.value.clone(),
        system_prompt: eff.system_prompt.value.clone(),
        temperature: eff.temperature.value,
        max_tokens: eff.max_tokens.value,
        timeout: Duration::from_secs(u64::from(eff.timeout_seconds.value)),
        reply_delay: Duration::from_secs(u64::from(eff.reply_delay_seconds.value)),
    })
}

/// How long a human answer pauses the AI: `minutes` takeover minutes (a minute is
/// `WAGATE_TAKEOVER_MINUTE_SECONDS` in tests).
fn takeover_of(config: &crate::config::Config, minutes: u32) -> chrono::Duration {
    let minute = chrono::Duration::from_std(config.takeover_minute)
        .unwrap_or_else(|_| chrono::Duration::minutes(1));
    minute * i32::try_from(minutes).unwrap_or(i32::MAX)
}

/// How long a handoff pauses the AI: the takeover, or a day when human takeover is off.
fn handoff_pause(app: &SettingsView, eff: &Effective) -> chrono::Duration {
    effective::handoff_pause(takeover_of(&app.config, eff.human_takeover_minutes.value))
}

/// The effective config from the live read model.
pub struct LiveConfig(pub SettingsView);

impl ConfigSource for LiveConfig {
    fn reply_config(&self, account: &str, jid: &str) -> Result<ReplyConfig, ReplyReason> {
        let view = &self.0;
        let kind = chat_kind(jid, "jid").map_err(|e| ReplyReason::InvalidChat {
            detail: e.to_string(),
        })?;
        let eff = effective::resolve(&view.read.model(), &view.env_layer, account, jid, kind)
            .ok_or(ReplyReason::AccountNotFound)?;
        Ok(reply_config_of(view, &eff)?)
    }

    fn control(&self, account: &str, jid: &str) -> Control {
        let app = &self.0;
        let Ok(kind) = chat_kind(jid, "jid") else {
            return Control::default();
        };
        let Some(eff) = effective::resolve(&app.read.model(), &app.env_layer, account, jid, kind)
        else {
            return Control::default();
        };
        let takeover = takeover_of(&app.config, eff.human_takeover_minutes.value);
        Control {
            takeover,
            debounce: chrono::Duration::seconds(i64::from(eff.debounce_seconds.value)),
            loop_guard: LoopGuard {
                quick_seconds: eff.loop_guard_quick_seconds.value,
                quick_replies: eff.loop_guard_quick_replies.value,
                repeats: eff.loop_guard_repeats.value,
            },
            speak: std::sync::Arc::new(eff.speak(takeover)),
            max_message_chars: eff.max_message_chars.value,
        }
    }
}

/// The reason class of a failed model call.
fn model_error_class(e: &ModelError) -> ModelErrorClass {
    match e {
        ModelError::Refused(_) => ModelErrorClass::Refused,
        ModelError::Timeout { .. } => ModelErrorClass::Timeout,
        ModelError::Connect => ModelErrorClass::Connect,
        ModelError::Unauthorized { .. } => ModelErrorClass::Unauthorized,
        ModelError::RateLimited { .. } => ModelErrorClass::RateLimited,
        ModelError::Server { .. } => ModelErrorClass::ServerError,
        ModelError::Rejected { .. } => ModelErrorClass::Rejected,
        ModelError::Malformed(_) => ModelErrorClass::Malformed,
        ModelError::Setup(_) => ModelErrorClass::Setup,
    }
}

/// The HTTP status of a failed model call, when the server answered.
fn model_error_status(e: &ModelError) -> Option<u16> {
    match e {
        ModelError::Unauthorized { status }
        | ModelError::RateLimited { status, .. }
        | ModelError::Server { status, .. }
        | ModelError::Rejected { status } => Some(*status),
        _ => None,
    }
}

/// The OpenAI-compatible HTTP clients: one whose outbound guard allows the operator's private
/// networks, one that reaches public addresses only (model URLs set by account tokens).
pub struct HttpModel {
    pub private_networks: HttpModelClient,
    pub public_only: HttpModelClient,
}

fn to_request(call: ModelCall) -> ModelRequest {
    ModelRequest {
        base_url: call.base_url,
        api_key: call.api_key,
        model: call.model,
        messages: call
            .messages
            .into_iter()
            .map(|(role, content)| ChatMessage {
                role: match role {
                    PromptRole::System => Role::System,
                    PromptRole::User => Role::User,
                    PromptRole::Assistant => Role::Assistant,
                },
                content,
            })
            .collect(),
        temperature: call.temperature,
        max_tokens: call.max_tokens,
        timeout: call.timeout,
        max_attempts: Some(call.max_attempts),
        handoff_tool: call.handoff_tool,
        images: call.images,
    }
}

#[async_trait]
impl Model for HttpModel {
    async fn complete(&self, call: ModelCall) -> Result<ModelAnswer, ModelFailure> {
        let client = if call.private_networks {
            &self.private_networks
        } else {
            &self.public_only
        };
        let (result, attempts) = client.complete_logged(&to_request(call)).await;
        let reply = result.map_err(|e| ModelFailure {
            reason: e.to_string(),
            class: model_error_class(&e),
            status: model_error_status(&e),
            attempts: attempts.clone(),
        })?;
        Ok(ModelAnswer {
            attempts,
            handoff: reply.handoff,
            text: reply.text,
            model: reply.model,
            usage: TokenUsage {
                prompt_tokens: reply.usage.prompt_tokens,
                completion_tokens: reply.usage.completion_tokens,
                total_tokens: reply.usage.total_tokens,
            },
            latency_ms: reply.latency_ms,
        })
    }

    async fn transcribe(&self, call: TranscribeCall) -> Result<Transcript, ModelFailure> {
        let client = if call.private_networks {
            &self.private_networks
        } else {
            &self.public_only
        };
        let req = crate::model::client::TranscriptionRequest {
            base_url: call.base_url,
            api_key: call.api_key,
            model: call.model,
            mime_type: call.mime_type,
            bytes: call.bytes,
            timeout: call.timeout,
        };
        let reply = client.transcribe(&req).await.map_err(|e| ModelFailure {
            reason: e.to_string(),
            class: model_error_class(&e),
            status: model_error_status(&e),
            attempts: vec![],
        })?;
        Ok(Transcript {
            text: reply.text,
            latency_ms: reply.latency_ms,
            usage: reply.usage.map(|u| TokenUsage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                total_tokens: u.total_tokens,
            }),
        })
    }
}

/// Wakes the background projector.
pub struct WakeProjector(pub Arc<ReadModels>);

#[async_trait]
impl Notify for WakeProjector {
    async fn committed(&self) {
        self.0.projector_wake.notify_one();
    }
}

pub use crate::transport::SandboxTransport;

/// The Graph API client of Cloud API accounts, behind the same outbound guard as model calls.
fn cloud_client(app: &App) -> CloudApiClient {
    let guard = Arc::new(crate::model::guard::OutboundGuard::new(
        app.config.allow_private_networks.clone(),
    ));
    match CloudApiClient::new(guard) {
        Ok(c) => c,
        Err(e) => {
            // Building a reqwest client fails only without a TLS backend (as for the model client).
            tracing::error!(error = %e, "cannot build the cloud_api client");
            std::process::abort()
        }
    }
}

/// A model client behind the outbound guard that allows `private_networks` (replies and the test
/// routes call through these).
fn model_client(private_networks: Vec<ipnet::IpNet>) -> HttpModelClient {
    let guard = Arc::new(crate::model::guard::OutboundGuard::new(private_networks));
    match HttpModelClient::new(guard, crate::model::client::RetryPolicy::default()) {
        Ok(c) => c,
        Err(e) => {
            // Building a reqwest client fails only without a TLS backend.
            tracing::error!(error = %e, "cannot build the model client");
            std::process::abort()
        }
    }
}

/// Builds the actors' ports for `app`.
pub fn ports(app: &Arc<App>) -> wagate_actors::Ports {
    let cloud = cloud_client(app);
    let model = HttpModel {
        private_networks: model_client(app.config.allow_private_networks.clone()),
        public_only: model_client(Vec::new()),
    };
    wagate_actors::Ports {
        streams: Arc::new(
            StoreStreams::new(&app.store, app.committer.clone())
                .guessing_new_chats(app.read.clone())
                .keeping_media(app.config.media_keep),
        ),
        config: Arc::new(LiveConfig(SettingsView::of(app))),
        model: Arc::new(model),
        transport: Arc::new(DispatchTransport::new(
            SettingsView::of(app),
            app.accounts.clone(),
            cloud,
            app.web.get().cloned(),
        )),
        notify: Arc::new(WakeProjector(app.read.clone())),
        ownership: match app.cluster.get() {
            Some(cluster) => Arc::new(crate::app::cluster::ClusterOwnership::new(
                cluster.clone(),
                app,
            )),
            None => Arc::new(wagate_actors::ports::SoleOwner),
        },
        limits: wagate_actors::ports::Limits::new(
            app.config.max_model_calls,
            app.config.max_model_calls_per_account,
        ),
        chat_idle: Duration::from_secs(600),
        call_timeout: Duration::from_secs(30),
        // Rate-limited sends: 4 tries, 0.5 s, 1 s and 2 s apart.
        send_attempts: 4,
        send_backoff: Duration::from_millis(500),
    }
}
