//! AI configuration routes: the global layer, an account's layer, a chat's layer (mode, custom
//! prompt, blocked), and the effective config with the source of each value.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_events::account::AccountCommand;
use wagate_events::ai_global::{AiGlobalCommand, GLOBAL_ID};
use wagate_events::chat_settings::{ChatControlsPatch, ChatMode, ChatSettingsCommand};
use wagate_events::ids::{chat_kind, ChatKind};
use wagate_events::settings::{self, origin_of, AiSettingsPatch, LayerState, Patch, SealedKey};
use wagate_projections::effective::{self, defaults, Effective};

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, Caller};
use super::openapi::{AccountId, AiMode, Jid};
use crate::app::{SharedApp, Who};
use crate::service::ai::{change_chat, resume_chat};

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new()
        .routes(routes!(get_global, put_global))
        .routes(routes!(get_account_ai, put_account_ai))
        .routes(routes!(get_chat_ai, put_chat_ai))
        .routes(routes!(get_chat_blocked, put_chat_blocked))
        .routes(routes!(get_effective))
        .routes(routes!(resume_chat_ai))
        .routes(routes!(get_account_usage))
}

/// Longest API key accepted.
const MAX_API_KEY: usize = 4096;

/// A change to one layer's AI settings. Omitted fields keep their value; `null` clears the field
/// at this layer (global: falls back to env / default; account: inherits from global).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiSettingsRequest {
    #[serde(default)]
    #[schema(value_type = Option<bool>)]
    pub enabled: Patch<bool>,
    /// Absolute http(s) URL of an OpenAI-compatible API (without `/chat/completions`).
    #[serde(default)]
    #[schema(value_type = Option<String>, max_length = 2048, pattern = r"^[hH][tT][tT][pP][sS]?://[a-zA-Z0-9]+([.-][a-zA-Z0-9]+)*(:[1-9][0-9]{0,3})?(/[a-zA-Z0-9._~-]*)*$")]
    pub base_url: Patch<String>,
    /// Write-only: stored encrypted, never returned. `null` clears it.
    #[serde(default)]
    #[schema(value_type = Option<String>, max_length = 4096, pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$")]
    pub api_key: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>, max_length = 200, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")]
    pub model_name: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>, max_length = 32768, pattern = r"^[^\x00]*$")]
    pub default_system_prompt: Patch<String>,
    /// 0..=2
    #[serde(default)]
    #[schema(value_type = Option<f64>, minimum = 0, maximum = 2)]
    pub temperature: Patch<f64>,
    /// 1..=32768
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 32768)]
    pub max_tokens: Patch<u32>,
    /// 1..=600
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 600)]
    pub timeout_seconds: Patch<u32>,
    /// 0..=3600
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 3600)]
    pub reply_delay_seconds: Patch<u32>,
    #[serde(default)]
    #[schema(value_type = Option<bool>)]
    pub reply_to_private: Patch<bool>,
    #[serde(default)]
    #[schema(value_type = Option<bool>)]
    pub reply_to_groups: Patch<bool>,
    #[serde(default)]
    #[schema(value_type = Option<bool>)]
    pub reply_to_channels: Patch<bool>,
    /// Reply with the incoming text itself, without calling the model (tests the send path).
    #[serde(default)]
    #[schema(value_type = Option<bool>)]
    pub echo_mode: Patch<bool>,
    /// Human takeover: minutes the AI pauses in a chat after a person answers there (an
    /// operator send, or the owner typing on the phone). 0..=10080; 0 = never pause. Default 30.
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 10080)]
    pub human_takeover_minutes: Patch<u32>,
    /// Burst debounce: customer messages within this many seconds get one reply. 0..=3600;
    /// 0 = off (default).
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 3600)]
    pub debounce_seconds: Patch<u32>,
    /// AI replies per chat per hour; over it the reply is skipped. 0..=1000; 0 = no cap.
    /// Default 30.
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 1000)]
    pub max_replies_per_chat_per_hour: Patch<u32>,
    /// Model tokens per account per UTC day; once used up, replies are skipped.
    /// 0..=1000000000; 0 = no budget (default).
    #[serde(default)]
    #[schema(value_type = Option<u64>, minimum = 0, maximum = 1000000000)]
    pub daily_token_budget: Patch<u64>,
    /// History budget of the prompt in estimated tokens (characters / 4, rounded up, + 4 per
    /// message). 0..=1000000; 0 = only the 20-turn cap. Default 4000.
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 1000000)]
    pub max_history_tokens: Patch<u32>,
    /// Turns older than this many hours stay out of the prompt. 0..=8760; 0 = no window
    /// (default).
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 8760)]
    pub history_window_hours: Patch<u32>,
    /// Retries of a retryable model failure (timeout, 429, 5xx). 0..=10; default 2.
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 10)]
    pub max_retries: Patch<u32>,
    /// The model asked when the primary one still fails after its retries.
    #[serde(default)]
    #[schema(value_type = Option<String>, max_length = 200, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")]
    pub fallback_model_name: Patch<String>,
    /// Base URL of the fallback model (default: the primary's).
    #[serde(default)]
    #[schema(value_type = Option<String>, max_length = 2048, pattern = r"^[hH][tT][tT][pP][sS]?://[a-zA-Z0-9]+([.-][a-zA-Z0-9]+)*(:[1-9][0-9]{0,3})?(/[a-zA-Z0-9._~-]*)*$")]
    pub fallback_base_url: Patch<String>,
    /// Write-only key of the fallback model, for the origin of `fallback_base_url`; never
    /// returned. Without one, the fallback gets the main key only when it has the main key's
    /// origin. `null` clears it.
    #[serde(default)]
    #[schema(value_type = Option<String>, max_length = 4096, pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$")]
    pub fallback_api_key: Patch<String>,
}

/// One stored layer of AI settings: `null` where this layer does not set a value.
#[derive(Debug, Serialize, ToSchema)]
pub struct AiSettingsView {
    pub enabled: Option<bool>,
    pub base_url: Option<String>,
    pub model_name: Option<String>,
    pub default_system_prompt: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    pub timeout_seconds: Option<u32>,
    pub reply_delay_seconds: Option<u32>,
    pub reply_to_private: Option<bool>,
    pub reply_to_groups: Option<bool>,
    pub reply_to_channels: Option<bool>,
    pub echo_mode: Option<bool>,
    pub human_takeover_minutes: Option<u32>,
    pub debounce_seconds: Option<u32>,
    pub max_replies_per_chat_per_hour: Option<u32>,
    pub daily_token_budget: Option<u64>,
    pub max_history_tokens: Option<u32>,
    pub history_window_hours: Option<u32>,
    pub max_retries: Option<u32>,
    pub fallback_model_name: Option<String>,
    pub fallback_base_url: Option<String>,
    /// Whether this layer stores an API key (the key itself is never returned).
    pub has_api_key: bool,
    /// Whether this layer stores a fallback API key.
    pub has_fallback_api_key: bool,
    pub updated_at: Option<DateTime<Utc>>,
}

impl AiSettingsView {
    fn of(layer: &LayerState, updated_at: Option<DateTime<Utc>>) -> Self {
        let s = layer.settings.clone();
        Self {
            enabled: s.enabled,
            base_url: s.base_url,
            model_name: s.model_name,
            default_system_prompt: s.default_system_prompt,
            temperature: s.temperature,
            max_tokens: s.max_tokens,
            timeout_seconds: s.timeout_seconds,
            reply_delay_seconds: s.reply_delay_seconds,
            reply_to_private: s.reply_to_private,
            reply_to_groups: s.reply_to_groups,
            reply_to_channels: s.reply_to_channels,
            echo_mode: s.echo_mode,
            human_takeover_minutes: s.human_takeover_minutes,
            debounce_seconds: s.debounce_seconds,
            max_replies_per_chat_per_hour: s.max_replies_per_chat_per_hour,
            daily_token_budget: s.daily_token_budget,
            max_history_tokens: s.max_history_tokens,
            history_window_hours: s.history_window_hours,
            max_retries: s.max_retries,
            fallback_model_name: s.fallback_model_name,
            fallback_base_url: s.fallback_base_url,
            has_api_key: layer.api_key.is_some(),
            has_fallback_api_key: layer.fallback_api_key.is_some(),
            updated_at,
        }
    }
}

/// Checks a write-only key from a request (`field` names it in the 400).
fn checked_key<'a>(field: &'static str, key: &'a str) -> Result<&'a str, ApiError> {
    let key = key.trim();
    if key.is_empty() {
        return Err(ApiError::invalid(
            field,
            "must not be empty; send null to clear the key",
        ));
    }
    if key.len() > MAX_API_KEY || key.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            format!("at most {MAX_API_KEY} printable characters"),
        ));
    }
    Ok(key)
}

/// What this layer stores today, for sealing keys with the origin they will be used with.
struct LayerUrls<'a> {
    base_url: Option<&'a str>,
    fallback_base_url: Option<&'a str>,
}

/// Turns the request into a domain patch, sealing a new key for `owner` and the origin of the
/// base URL it will be used with at this layer (`fallback_base` when this layer sets none). The
/// fallback key is sealed for the origin of this layer's `fallback_base_url`, or of the base URL
/// the main key would use when the layer sets none.
fn to_patch(
    app: &SharedApp,
    req: AiSettingsRequest,
    owner: &str,
    current: LayerUrls<'_>,
    fallback_base: &str,
) -> Result<AiSettingsPatch, ApiError> {
    let base = match &req.base_url {
        Patch::Set(url) => settings::normalize_base_url(url)?,
        Patch::Clear => fallback_base.to_string(),
        Patch::Keep => current.base_url.unwrap_or(fallback_base).to_string(),
    };
    let api_key = match req.api_key {
        Patch::Keep => Patch::Keep,
        Patch::Clear => Patch::Clear,
        Patch::Set(key) => {
            let key = checked_key("api_key", &key)?;
            let origin = origin_of(&base)
                .ok_or_else(|| ApiError::invalid("base_url", "not an absolute http(s) URL"))?;
            Patch::Set(SealedKey {
                sealed: app.seal_api_key(owner, key),
                origin,
            })
        }
    };
    let fallback_api_key = match req.fallback_api_key {
        Patch::Keep => Patch::Keep,
        Patch::Clear => Patch::Clear,
        Patch::Set(key) => {
            let key = checked_key("fallback_api_key", &key)?;
            let fallback_url = match &req.fallback_base_url {
                Patch::Set(url) => settings::normalize_base_url(url).map_err(|e| match e {
                    wagate_events::DomainError::Invalid { message, .. } => {
                        ApiError::invalid("fallback_base_url", message)
                    }
                    other => other.into(),
                })?,
                Patch::Clear => base.clone(),
                Patch::Keep => current
                    .fallback_base_url
                    .map_or_else(|| base.clone(), str::to_string),
            };
            let origin = origin_of(&fallback_url).ok_or_else(|| {
                ApiError::invalid("fallback_base_url", "not an absolute http(s) URL")
            })?;
            Patch::Set(SealedKey {
                sealed: app.seal_api_key(&crate::crypto::fallback_owner(owner), key),
                origin,
            })
        }
    };
    Ok(AiSettingsPatch {
        enabled: req.enabled,
        base_url: req.base_url,
        model_name: req.model_name,
        default_system_prompt: req.default_system_prompt,
        temperature: req.temperature,
        max_tokens: req.max_tokens,
        timeout_seconds: req.timeout_seconds,
        reply_delay_seconds: req.reply_delay_seconds,
        reply_to_private: req.reply_to_private,
        reply_to_groups: req.reply_to_groups,
        reply_to_channels: req.reply_to_channels,
        echo_mode: req.echo_mode,
        human_takeover_minutes: req.human_takeover_minutes,
        debounce_seconds: req.debounce_seconds,
        max_replies_per_chat_per_hour: req.max_replies_per_chat_per_hour,
        daily_token_budget: req.daily_token_budget,
        max_history_tokens: req.max_history_tokens,
        history_window_hours: req.history_window_hours,
        max_retries: req.max_retries,
        fallback_model_name: req.fallback_model_name,
        fallback_base_url: req.fallback_base_url,
        api_key,
        fallback_api_key,
    })
}

fn env_or_default_base(app: &SharedApp) -> String {
    app.env_layer
        .settings
        .base_url
        .clone()
        .unwrap_or_else(|| defaults::BASE_URL.to_string())
}

/// The global AI settings.
#[utoipa::path(get, path = "/v1/ai/global", tag = "ai",
    responses((status = 200, body = AiSettingsView)),
    security(("admin_jwt" = [])))]
async fn get_global(
    State(app): State<SharedApp>,
    caller: Caller,
) -> Result<Json<AiSettingsView>, ApiError> {
    caller.require_admin()?;
    let m = app.model();
    Ok(Json(AiSettingsView::of(&m.global, m.global_updated_at)))
}

/// Changes the global AI settings (the seed's `PUT /v1/ai/global`).
#[utoipa::path(put, path = "/v1/ai/global", tag = "ai", request_body = AiSettingsRequest,
    responses((status = 200, body = AiSettingsView)),
    security(("admin_jwt" = [])))]
async fn put_global(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiJson(req): ApiJson<AiSettingsRequest>,
) -> Result<Json<AiSettingsView>, ApiError> {
    caller.require_admin()?;
    change_global(&app, &caller.who(), req).await?;
    let m = app.model();
    Ok(Json(AiSettingsView::of(&m.global, m.global_updated_at)))
}

/// Model URLs are checked when saved, not only when called (issue 21, finding 3): one that can
/// never be reached — a metadata, link-local or other never-allowed address, loopback or a
/// private network outside `WAGATE_ALLOW_PRIVATE_NETWORKS`, plain http outside it — is refused for
/// everyone, naming the setting that would allow it. A private target inside the list is the
/// admin's: an account token gets one message for every non-public target (it learns nothing
/// about which networks exist or are allowed) unless `WAGATE_ALLOW_PRIVATE_NETWORKS_FOR_ACCOUNTS`.
/// A name that does not resolve now is accepted; every call checks the addresses again.
async fn check_model_urls(
    app: &SharedApp,
    who: &Who,
    req: &AiSettingsRequest,
) -> Result<(), ApiError> {
    let tenant = who.actor.starts_with("token:");
    let allowed = if tenant && !app.config.allow_private_networks_for_accounts {
        Vec::new()
    } else {
        app.config.allow_private_networks.clone()
    };
    let guard = crate::model::guard::OutboundGuard::new(allowed);
    for (field, patch) in [
        ("base_url", &req.base_url),
        ("fallback_base_url", &req.fallback_base_url),
    ] {
        let Patch::Set(raw) = patch else { continue };
        // A malformed URL is refused by the settings' own validation, with its message.
        let Ok(url) = url::Url::parse(raw.trim()) else {
            continue;
        };
        match guard.check_url(&url).await {
            Ok(()) => {}
            Err(e) if !e.is_policy() => {}
            Err(_) if tenant => {
                return Err(ApiError::invalid(
                    field,
                    "must be a public https URL (private model servers are set by an admin)",
                ))
            }
            Err(e) => return Err(ApiError::invalid(field, e.to_string())),
        }
    }
    Ok(())
}

/// Applies a change to the global layer (shared by the API and the dashboard).
pub async fn change_global(
    app: &SharedApp,
    who: &Who,
    req: AiSettingsRequest,
) -> Result<(), ApiError> {
    check_model_urls(app, who, &req).await?;
    let current = app.model().global.settings.clone();
    let patch = to_patch(
        app,
        req,
        "global",
        LayerUrls {
            base_url: current.base_url.as_deref(),
            fallback_base_url: current.fallback_base_url.as_deref(),
        },
        &env_or_default_base(app),
    )?;
    app.execute(&app.global, GLOBAL_ID, AiGlobalCommand::Change(patch), who)
        .await?;
    Ok(())
}

fn account_ai_view(app: &SharedApp, acc: &str) -> Result<AiSettingsView, ApiError> {
    let m = app.model();
    let a = m
        .account(acc)
        .ok_or_else(|| ApiError::not_found("account not found"))?;
    Ok(AiSettingsView::of(&a.ai, a.ai_updated_at))
}

/// An account's AI overrides (`null` = inherit from global).
#[utoipa::path(get, path = "/v1/accounts/{acc}/ai", tag = "ai", params(("acc" = AccountId, Path)),
    responses((status = 200, body = AiSettingsView)),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn get_account_ai(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath(acc): ApiPath<String>,
) -> Result<Json<AiSettingsView>, ApiError> {
    caller.require_account(&acc)?;
    account_ai_view(&app, &acc).map(Json)
}

/// Changes an account's AI overrides.
#[utoipa::path(put, path = "/v1/accounts/{acc}/ai", tag = "ai", params(("acc" = AccountId, Path)),
    request_body = AiSettingsRequest,
    responses((status = 200, body = AiSettingsView)),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn put_account_ai(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath(acc): ApiPath<String>,
    ApiJson(req): ApiJson<AiSettingsRequest>,
) -> Result<Json<AiSettingsView>, ApiError> {
    caller.require_account(&acc)?;
    change_account_ai(&app, &caller.who(), &acc, req).await?;
    account_ai_view(&app, &acc).map(Json)
}

/// Applies a change to an account's layer (shared by the API and the dashboard).
pub async fn change_account_ai(
    app: &SharedApp,
    who: &Who,
    acc: &str,
    req: AiSettingsRequest,
) -> Result<(), ApiError> {
    check_model_urls(app, who, &req).await?;
    let (current, fallback) = {
        let m = app.model();
        let a = m
            .account(acc)
            .ok_or_else(|| ApiError::not_found("account not found"))?;
        let fallback = m
            .global
            .settings
            .base_url
            .clone()
            .unwrap_or_else(|| env_or_default_base(app));
        (a.ai.settings.clone(), fallback)
    };
    let owner = format!("account:{acc}");
    let urls = LayerUrls {
        base_url: current.base_url.as_deref(),
        fallback_base_url: current.fallback_base_url.as_deref(),
    };
    let patch = to_patch(app, req, &owner, urls, &fallback)?;
    app.execute(&app.accounts, acc, AccountCommand::ChangeAi(patch), who)
        .await?;
    Ok(())
}

/// A chat's own AI layer and blocked flag.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatAiView {
    pub account_id: String,
    pub chat_id: String,
    /// `inherit`, `enabled` or `disabled`.
    #[schema(value_type = String)]
    pub mode: ChatMode,
    pub custom_system_prompt: Option<String>,
    pub blocked: bool,
    /// This chat's own conversation controls (`null`: inherited from the account).
    pub human_takeover_minutes: Option<u32>,
    pub debounce_seconds: Option<u32>,
    pub max_replies_per_chat_per_hour: Option<u32>,
    pub max_history_tokens: Option<u32>,
    pub history_window_hours: Option<u32>,
    pub max_retries: Option<u32>,
}

/// The per-chat toggle of the seed. Omitted fields keep their value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatAiRequest {
    /// `inherit`, `enabled` or `disabled`.
    #[serde(default)]
    #[schema(value_type = Option<AiMode>)]
    pub mode: Option<ChatMode>,
    /// `null` (or an empty string) removes the custom prompt.
    #[serde(default)]
    #[schema(value_type = Option<String>, max_length = 32768, pattern = r"^[^\x00]*$")]
    pub custom_system_prompt: Patch<String>,
    /// Conversation controls for this chat only, with the ranges of the account layer; `null`
    /// inherits. (`daily_token_budget` and the fallback model are per account.)
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 10080)]
    pub human_takeover_minutes: Patch<u32>,
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 3600)]
    pub debounce_seconds: Patch<u32>,
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 1000)]
    pub max_replies_per_chat_per_hour: Patch<u32>,
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 1000000)]
    pub max_history_tokens: Patch<u32>,
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 8760)]
    pub history_window_hours: Patch<u32>,
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 10)]
    pub max_retries: Patch<u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockedRequest {
    pub blocked: bool,
}

/// Checks the account (exists, caller may act on it) and the JID; returns the chat kind.
fn chat_target(
    app: &SharedApp,
    caller: &Caller,
    acc: &str,
    jid: &str,
) -> Result<ChatKind, ApiError> {
    caller.require_account(acc)?;
    let kind = chat_kind(jid, "jid")?;
    if app.model().account(acc).is_none() {
        return Err(ApiError::not_found("account not found"));
    }
    Ok(kind)
}

fn chat_view(app: &SharedApp, acc: &str, jid: &str) -> ChatAiView {
    let m = app.model();
    let c = m.chat(acc, jid).cloned().unwrap_or_default();
    ChatAiView {
        account_id: acc.to_string(),
        chat_id: jid.to_string(),
        mode: c.mode,
        custom_system_prompt: c.custom_system_prompt,
        blocked: c.blocked,
        human_takeover_minutes: c.controls.human_takeover_minutes,
        debounce_seconds: c.controls.debounce_seconds,
        max_replies_per_chat_per_hour: c.controls.max_replies_per_chat_per_hour,
        max_history_tokens: c.controls.max_history_tokens,
        history_window_hours: c.controls.history_window_hours,
        max_retries: c.controls.max_retries,
    }
}

/// A chat's AI mode and custom prompt.
#[utoipa::path(get, path = "/v1/accounts/{acc}/chats/{jid}/ai", tag = "ai",
    params(("acc" = AccountId, Path), ("jid" = Jid, Path, description = "WhatsApp JID, URL-encoded")),
    responses((status = 200, body = ChatAiView)),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn get_chat_ai(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath((acc, jid)): ApiPath<(String, String)>,
) -> Result<Json<ChatAiView>, ApiError> {
    chat_target(&app, &caller, &acc, &jid)?;
    Ok(Json(chat_view(&app, &acc, &jid)))
}

/// Sets a chat's AI mode (`inherit|enabled|disabled`), custom system prompt and its own
/// conversation controls.
#[utoipa::path(put, path = "/v1/accounts/{acc}/chats/{jid}/ai", tag = "ai",
    params(("acc" = AccountId, Path), ("jid" = Jid, Path, description = "WhatsApp JID, URL-encoded")),
    request_body = ChatAiRequest,
    responses((status = 200, body = ChatAiView)),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn put_chat_ai(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath((acc, jid)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<ChatAiRequest>,
) -> Result<Json<ChatAiView>, ApiError> {
    chat_target(&app, &caller, &acc, &jid)?;
    let cmd = ChatSettingsCommand::SetAi {
        mode: req.mode,
        custom_system_prompt: req.custom_system_prompt,
        controls: ChatControlsPatch {
            human_takeover_minutes: req.human_takeover_minutes,
            debounce_seconds: req.debounce_seconds,
            max_replies_per_chat_per_hour: req.max_replies_per_chat_per_hour,
            max_history_tokens: req.max_history_tokens,
            history_window_hours: req.history_window_hours,
            max_retries: req.max_retries,
        },
    };
    change_chat(&app, &caller.who(), &acc, &jid, cmd).await?;
    Ok(Json(chat_view(&app, &acc, &jid)))
}

/// Whether a chat is blocked.
#[utoipa::path(get, path = "/v1/accounts/{acc}/chats/{jid}/blocked", tag = "ai",
    params(("acc" = AccountId, Path), ("jid" = Jid, Path)),
    responses((status = 200, body = ChatAiView)),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn get_chat_blocked(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath((acc, jid)): ApiPath<(String, String)>,
) -> Result<Json<ChatAiView>, ApiError> {
    chat_target(&app, &caller, &acc, &jid)?;
    Ok(Json(chat_view(&app, &acc, &jid)))
}

/// Blocks or unblocks a chat: a blocked chat is never answered.
#[utoipa::path(put, path = "/v1/accounts/{acc}/chats/{jid}/blocked", tag = "ai",
    params(("acc" = AccountId, Path), ("jid" = Jid, Path)),
    request_body = BlockedRequest,
    responses((status = 200, body = ChatAiView)),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn put_chat_blocked(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath((acc, jid)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<BlockedRequest>,
) -> Result<Json<ChatAiView>, ApiError> {
    chat_target(&app, &caller, &acc, &jid)?;
    let cmd = ChatSettingsCommand::SetBlocked {
        blocked: req.blocked,
    };
    change_chat(&app, &caller.who(), &acc, &jid, cmd).await?;
    Ok(Json(chat_view(&app, &acc, &jid)))
}

/// Ends a human-takeover pause in a chat now (the AI answers the next customer message). A chat
/// that is not paused is left as it is. Answers the effective config after the change.
#[utoipa::path(post, path = "/v1/accounts/{acc}/chats/{jid}/ai/resume", tag = "ai",
    params(("acc" = AccountId, Path), ("jid" = Jid, Path, description = "WhatsApp JID, URL-encoded")),
    responses((status = 200, description = "effective config after the resume", body = Object)),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn resume_chat_ai(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath((acc, jid)): ApiPath<(String, String)>,
) -> Result<Json<Effective>, ApiError> {
    let kind = chat_target(&app, &caller, &acc, &jid)?;
    resume_chat(&app, &caller.who(), &acc, &jid).await?;
    effective::resolve(&app.model(), &app.env_layer, &acc, &jid, kind)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("account not found"))
}

/// An account's model token use today and its daily budget.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountUsage {
    pub account_id: String,
    /// The UTC day counted.
    pub day: chrono::NaiveDate,
    /// `total_tokens` of the replies generated today (UTC), folded from the reply events.
    pub tokens_used: u64,
    /// The effective `daily_token_budget` of the account (0 = no budget).
    pub daily_token_budget: u64,
    /// Tokens left today (`null` without a budget).
    pub tokens_remaining: Option<u64>,
}

/// Token use of an account today (UTC) against its `daily_token_budget`.
#[utoipa::path(get, path = "/v1/accounts/{acc}/ai/usage", tag = "ai", params(("acc" = AccountId, Path)),
    responses((status = 200, body = AccountUsage)),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn get_account_usage(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath(acc): ApiPath<String>,
) -> Result<Json<AccountUsage>, ApiError> {
    caller.require_account(&acc)?;
    // As the replies count it: an account's budget above the admin's, on the admin's key, is
    // capped (ADR 0022).
    let budget = effective::account_daily_token_budget(&app.model(), &app.env_layer, &acc)
        .ok_or_else(|| ApiError::not_found("account not found"))?
        .value;
    let day = Utc::now().date_naive();
    let tokens_used = app.messages().tokens_on(&acc, day);
    Ok(Json(AccountUsage {
        account_id: acc,
        day,
        tokens_used,
        daily_token_budget: budget,
        tokens_remaining: (budget > 0).then(|| budget.saturating_sub(tokens_used)),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AsOfQuery {
    /// An RFC 3339 time or an event position: answer from history as of then.
    pub as_of: Option<String>,
}

/// The effective config of a chat: each field with its value and `source`
/// (`chat|account|global|env|default`), plus `will_reply`, `reason` (the human text) and
/// `reason_code` (its stable code, docs/API.md "Reply reasons").
#[utoipa::path(get, path = "/v1/accounts/{acc}/chats/{jid}/ai/effective", tag = "ai",
    params(("acc" = AccountId, Path), ("jid" = Jid, Path), AsOfQuery),
    responses((status = 200, description = "effective config with provenance", body = Object),
        (status = 503, body = ErrorBody, description = "reads the event store, which is unavailable; retry after `Retry-After` seconds")),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn get_effective(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath((acc, jid)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<AsOfQuery>,
) -> Result<Json<Effective>, ApiError> {
    caller.require_account(&acc)?;
    let kind = chat_kind(&jid, "jid")?;
    // Chat actors commit pauses without waiting for the read model: fold what they committed so
    // the answer reflects every write that finished before this request (free when nothing is
    // pending; a store read and the fold lock on every request made this route 10× slower).
    app.catch_up_own().await?;
    let resolved = match q.as_of.as_deref().map(str::trim) {
        None | Some("") => effective::resolve(&app.model(), &app.env_layer, &acc, &jid, kind),
        Some(raw) => {
            // A pause counts as of the time asked about (now, for a position).
            let (position, at) = match raw.parse::<i64>() {
                Ok(p) if p >= 0 => (p, Utc::now()),
                Ok(_) => return Err(ApiError::invalid("as_of", "a position is >= 0")),
                Err(_) => {
                    let t = DateTime::parse_from_rfc3339(raw)
                        .map_err(|_| {
                            ApiError::invalid(
                                "as_of",
                                "expected an RFC 3339 time or an event position",
                            )
                        })?
                        .with_timezone(&Utc);
                    let p = app
                        .store
                        .position_at(t)
                        .await
                        .map_err(crate::app::AppError::from)?;
                    (p, t)
                }
            };
            let model = app.model_at(position).await?;
            effective::resolve_at(&model, &app.env_layer, &acc, &jid, kind, at)
        }
    };
    resolved
        .map(Json)
        .ok_or_else(|| ApiError::not_found("account not found (at that time)"))
}
