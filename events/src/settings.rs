//! The AI settings of one configuration layer (global or one account), the patch that changes
//! them, and the pure decision that turns a patch into events. Both the global aggregate and the
//! account aggregate hold a [`LayerState`] and delegate to [`decide`] / [`LayerState::apply`].

use serde::{Deserialize, Deserializer, Serialize};

use crate::DomainError;

/// Longest system prompt accepted (32 KiB).
pub const MAX_PROMPT_BYTES: usize = 32 * 1024;
/// Longest model name accepted.
pub const MAX_MODEL_NAME: usize = 200;
/// Longest base URL accepted.
pub const MAX_URL: usize = 2048;

/// Conversation-control limits (ADR 0007). Values outside them are refused with a 400 naming
/// the field: they are typos, not settings (a week of takeover, an hour of debounce).
pub const MAX_TAKEOVER_MINUTES: u32 = 7 * 24 * 60;
pub const MAX_DEBOUNCE_SECONDS: u32 = 3600;
pub const MAX_REPLIES_PER_HOUR: u32 = 1000;
pub const MAX_DAILY_TOKEN_BUDGET: u64 = 1_000_000_000;
pub const MAX_HISTORY_TOKENS: u32 = 1_000_000;
pub const MAX_HISTORY_WINDOW_HOURS: u32 = 24 * 365;
pub const MAX_RETRIES: u32 = 10;

/// The values one layer sets. `None` means "this layer does not set it" (inherit).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AiSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_system_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_delay_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_private: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_groups: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_channels: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_mode: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub human_takeover_minutes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replies_per_chat_per_hour: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_token_budget: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_history_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_window_hours: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_model_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_base_url: Option<String>,
}

/// The name of one AI setting, as it appears in the API and in `cleared` lists of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AiField {
    Enabled,
    BaseUrl,
    ModelName,
    DefaultSystemPrompt,
    Temperature,
    MaxTokens,
    TimeoutSeconds,
    ReplyDelaySeconds,
    ReplyToPrivate,
    ReplyToGroups,
    ReplyToChannels,
    EchoMode,
    HumanTakeoverMinutes,
    DebounceSeconds,
    MaxRepliesPerChatPerHour,
    DailyTokenBudget,
    MaxHistoryTokens,
    HistoryWindowHours,
    MaxRetries,
    FallbackModelName,
    FallbackBaseUrl,
}

/// A change to one field: leave it, clear it (JSON `null`), or set it.
///
/// Deserializes from an optional field: absent -> `Keep` (needs `#[serde(default)]`),
/// `null` -> `Clear`, a value -> `Set`.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Patch<T> {
    #[default]
    Keep,
    Clear,
    Set(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            None => Patch::Clear,
            Some(v) => Patch::Set(v),
        })
    }
}

impl<T> Patch<T> {
    pub fn is_keep(&self) -> bool {
        matches!(self, Patch::Keep)
    }

    /// The same change with the value converted.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Patch<U> {
        match self {
            Patch::Keep => Patch::Keep,
            Patch::Clear => Patch::Clear,
            Patch::Set(v) => Patch::Set(f(v)),
        }
    }
}

/// An API key sealed by the gateway's keyring (base64 of version || key id || nonce ||
/// ciphertext) together with the origin (`scheme://host[:port]`) of the base URL it was entered
/// for. The plain key never reaches the domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedKey {
    pub sealed: String,
    pub origin: String,
}

/// A patch of one layer's AI settings, validated by [`decide`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AiSettingsPatch {
    pub enabled: Patch<bool>,
    pub base_url: Patch<String>,
    pub model_name: Patch<String>,
    pub default_system_prompt: Patch<String>,
    pub temperature: Patch<f64>,
    pub max_tokens: Patch<u32>,
    pub timeout_seconds: Patch<u32>,
    pub reply_delay_seconds: Patch<u32>,
    pub reply_to_private: Patch<bool>,
    pub reply_to_groups: Patch<bool>,
    pub reply_to_channels: Patch<bool>,
    pub echo_mode: Patch<bool>,
    pub human_takeover_minutes: Patch<u32>,
    pub debounce_seconds: Patch<u32>,
    pub max_replies_per_chat_per_hour: Patch<u32>,
    pub daily_token_budget: Patch<u64>,
    pub max_history_tokens: Patch<u32>,
    pub history_window_hours: Patch<u32>,
    pub max_retries: Patch<u32>,
    pub fallback_model_name: Patch<String>,
    pub fallback_base_url: Patch<String>,
    /// Already sealed by the caller; `Set` carries the ciphertext and its origin.
    pub api_key: Patch<SealedKey>,
    /// The fallback model's own key, sealed like `api_key`, for the origin of the fallback base
    /// URL.
    pub fallback_api_key: Patch<SealedKey>,
}

/// Why a stored key was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyClearReason {
    /// `"api_key": null` in a request.
    Requested,
    /// `base_url` moved to another origin without a new key (checklist item 10).
    BaseUrlOriginChanged,
}

/// The events a settings change produces, shared by the global and account aggregates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// Events are decided and folded one at a time; their size is not worth a box (and the serialized
// form must stay the same).
#[allow(clippy::large_enum_variant)]
pub enum SettingsEvent {
    /// Fields set to new values (`set`) and fields removed from this layer (`cleared`).
    AiSettingsChanged {
        set: AiSettings,
        cleared: Vec<AiField>,
    },
    AiApiKeySet {
        key: SealedKey,
    },
    AiApiKeyCleared {
        reason: KeyClearReason,
    },
    /// The same key re-encrypted under the current master key (key rotation).
    AiApiKeyResealed {
        key: SealedKey,
    },
    /// The fallback model's key (ADR 0007); it follows `fallback_base_url`'s origin as the main
    /// key follows `base_url`'s.
    AiFallbackApiKeySet {
        key: SealedKey,
    },
    AiFallbackApiKeyCleared {
        reason: KeyClearReason,
    },
    AiFallbackApiKeyResealed {
        key: SealedKey,
    },
}

/// One layer's state: its settings and its sealed key.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LayerState {
    pub settings: AiSettings,
    pub api_key: Option<SealedKey>,
    #[serde(default)]
    pub fallback_api_key: Option<SealedKey>,
}

/// `scheme://host[:port]` of an absolute http(s) URL, or `None` when it is not one.
pub fn origin_of(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    match parsed.scheme() {
        "http" | "https" => {}
        _ => return None,
    }
    let host = parsed.host_str()?;
    Some(match parsed.port() {
        Some(port) => format!("{}://{}:{}", parsed.scheme(), host, port),
        None => format!("{}://{}", parsed.scheme(), host),
    })
}

/// Validates and normalizes a model base URL (absolute http(s), no credentials, no query or
/// fragment; a trailing `/` is dropped).
pub fn normalize_base_url(raw: &str) -> Result<String, DomainError> {
    let field = "base_url";
    if raw.len() > MAX_URL {
        return Err(DomainError::invalid(field, "longer than 2048 characters"));
    }
    let url = url::Url::parse(raw.trim())
        .map_err(|e| DomainError::invalid(field, format!("not an absolute URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(DomainError::invalid(field, "scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(DomainError::invalid(field, "URL has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(DomainError::invalid(
            field,
            "credentials in the URL are not allowed; use api_key",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(DomainError::invalid(
            field,
            "query strings and fragments are not allowed",
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

fn check_range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &'static str,
    v: T,
    lo: T,
    hi: T,
) -> Result<(), DomainError> {
    if v < lo || v > hi {
        return Err(DomainError::invalid(
            field,
            format!("must be between {lo} and {hi}, got {v}"),
        ));
    }
    Ok(())
}

fn check_text(
    field: &'static str,
    v: &str,
    max: usize,
    allow_empty: bool,
) -> Result<(), DomainError> {
    if !allow_empty && v.trim().is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    if v.len() > max {
        return Err(DomainError::invalid(
            field,
            format!("longer than {max} bytes"),
        ));
    }
    if v.contains('\0') {
        return Err(DomainError::invalid(
            field,
            "must not contain NUL characters",
        ));
    }
    Ok(())
}

/// Validates a patch in isolation (ranges, URL syntax, lengths). Returns the patch with
/// `base_url` normalized.
pub fn validate(mut patch: AiSettingsPatch) -> Result<AiSettingsPatch, DomainError> {
    if let Patch::Set(url) = &patch.base_url {
        patch.base_url = Patch::Set(normalize_base_url(url)?);
    }
    if let Patch::Set(v) = &patch.model_name {
        check_text("model_name", v, MAX_MODEL_NAME, false)?;
    }
    if let Patch::Set(v) = &patch.default_system_prompt {
        check_text("default_system_prompt", v, MAX_PROMPT_BYTES, true)?;
    }
    if let Patch::Set(v) = patch.temperature {
        if !v.is_finite() {
            return Err(DomainError::invalid("temperature", "must be a number"));
        }
        check_range("temperature", v, 0.0, 2.0)?;
    }
    if let Patch::Set(v) = patch.max_tokens {
        check_range("max_tokens", v, 1, 32_768)?;
    }
    if let Patch::Set(v) = patch.timeout_seconds {
        check_range("timeout_seconds", v, 1, 600)?;
    }
    if let Patch::Set(v) = patch.reply_delay_seconds {
        check_range("reply_delay_seconds", v, 0, 3600)?;
    }
    if let Patch::Set(v) = patch.human_takeover_minutes {
        check_range("human_takeover_minutes", v, 0, MAX_TAKEOVER_MINUTES)?;
    }
    if let Patch::Set(v) = patch.debounce_seconds {
        check_range("debounce_seconds", v, 0, MAX_DEBOUNCE_SECONDS)?;
    }
    if let Patch::Set(v) = patch.max_replies_per_chat_per_hour {
        check_range("max_replies_per_chat_per_hour", v, 0, MAX_REPLIES_PER_HOUR)?;
    }
    if let Patch::Set(v) = patch.daily_token_budget {
        check_range("daily_token_budget", v, 0, MAX_DAILY_TOKEN_BUDGET)?;
    }
    if let Patch::Set(v) = patch.max_history_tokens {
        check_range("max_history_tokens", v, 0, MAX_HISTORY_TOKENS)?;
    }
    if let Patch::Set(v) = patch.history_window_hours {
        check_range("history_window_hours", v, 0, MAX_HISTORY_WINDOW_HOURS)?;
    }
    if let Patch::Set(v) = patch.max_retries {
        check_range("max_retries", v, 0, MAX_RETRIES)?;
    }
    if let Patch::Set(v) = &patch.fallback_model_name {
        check_text("fallback_model_name", v, MAX_MODEL_NAME, false)?;
    }
    if let Patch::Set(url) = &patch.fallback_base_url {
        let normalized = normalize_base_url(url).map_err(|e| match e {
            DomainError::Invalid { message, .. } => {
                DomainError::invalid("fallback_base_url", message)
            }
            other => other,
        })?;
        patch.fallback_base_url = Patch::Set(normalized);
    }
    Ok(patch)
}

/// Applies one field's patch to `slot`, recording what changed into `set_slot` / `cleared`.
fn diff_field<T: Clone + PartialEq>(
    field: AiField,
    slot: &Option<T>,
    patch: &Patch<T>,
    set_slot: &mut Option<T>,
    cleared: &mut Vec<AiField>,
) {
    match patch {
        Patch::Keep => {}
        Patch::Clear => {
            if slot.is_some() {
                cleared.push(field);
            }
        }
        Patch::Set(v) => {
            if slot.as_ref() != Some(v) {
                *set_slot = Some(v.clone());
            }
        }
    }
}

/// Decides the events for a settings patch on a layer: only real changes become events (a PUT
/// that changes nothing writes nothing). The key follows its origin: when this layer's
/// `base_url` moves to another origin and the same patch brings no new key, the key is cleared.
pub fn decide(
    state: &LayerState,
    patch: AiSettingsPatch,
) -> Result<Vec<SettingsEvent>, DomainError> {
    let patch = validate(patch)?;
    let cur = &state.settings;
    let mut set = AiSettings::default();
    let mut cleared = Vec::new();
    use AiField as F;
    diff_field(
        F::Enabled,
        &cur.enabled,
        &patch.enabled,
        &mut set.enabled,
        &mut cleared,
    );
    diff_field(
        F::BaseUrl,
        &cur.base_url,
        &patch.base_url,
        &mut set.base_url,
        &mut cleared,
    );
    diff_field(
        F::ModelName,
        &cur.model_name,
        &patch.model_name,
        &mut set.model_name,
        &mut cleared,
    );
    diff_field(
        F::DefaultSystemPrompt,
        &cur.default_system_prompt,
        &patch.default_system_prompt,
        &mut set.default_system_prompt,
        &mut cleared,
    );
    diff_field(
        F::Temperature,
        &cur.temperature,
        &patch.temperature,
        &mut set.temperature,
        &mut cleared,
    );
    diff_field(
        F::MaxTokens,
        &cur.max_tokens,
        &patch.max_tokens,
        &mut set.max_tokens,
        &mut cleared,
    );
    diff_field(
        F::TimeoutSeconds,
        &cur.timeout_seconds,
        &patch.timeout_seconds,
        &mut set.timeout_seconds,
        &mut cleared,
    );
    diff_field(
        F::ReplyDelaySeconds,
        &cur.reply_delay_seconds,
        &patch.reply_delay_seconds,
        &mut set.reply_delay_seconds,
        &mut cleared,
    );
    diff_field(
        F::ReplyToPrivate,
        &cur.reply_to_private,
        &patch.reply_to_private,
        &mut set.reply_to_private,
        &mut cleared,
    );
    diff_field(
        F::ReplyToGroups,
        &cur.reply_to_groups,
        &patch.reply_to_groups,
        &mut set.reply_to_groups,
        &mut cleared,
    );
    diff_field(
        F::ReplyToChannels,
        &cur.reply_to_channels,
        &patch.reply_to_channels,
        &mut set.reply_to_channels,
        &mut cleared,
    );
    diff_field(
        F::EchoMode,
        &cur.echo_mode,
        &patch.echo_mode,
        &mut set.echo_mode,
        &mut cleared,
    );

    diff_field(
        F::HumanTakeoverMinutes,
        &cur.human_takeover_minutes,
        &patch.human_takeover_minutes,
        &mut set.human_takeover_minutes,
        &mut cleared,
    );
    diff_field(
        F::DebounceSeconds,
        &cur.debounce_seconds,
        &patch.debounce_seconds,
        &mut set.debounce_seconds,
        &mut cleared,
    );
    diff_field(
        F::MaxRepliesPerChatPerHour,
        &cur.max_replies_per_chat_per_hour,
        &patch.max_replies_per_chat_per_hour,
        &mut set.max_replies_per_chat_per_hour,
        &mut cleared,
    );
    diff_field(
        F::DailyTokenBudget,
        &cur.daily_token_budget,
        &patch.daily_token_budget,
        &mut set.daily_token_budget,
        &mut cleared,
    );
    diff_field(
        F::MaxHistoryTokens,
        &cur.max_history_tokens,
        &patch.max_history_tokens,
        &mut set.max_history_tokens,
        &mut cleared,
    );
    diff_field(
        F::HistoryWindowHours,
        &cur.history_window_hours,
        &patch.history_window_hours,
        &mut set.history_window_hours,
        &mut cleared,
    );
    diff_field(
        F::MaxRetries,
        &cur.max_retries,
        &patch.max_retries,
        &mut set.max_retries,
        &mut cleared,
    );
    diff_field(
        F::FallbackModelName,
        &cur.fallback_model_name,
        &patch.fallback_model_name,
        &mut set.fallback_model_name,
        &mut cleared,
    );
    diff_field(
        F::FallbackBaseUrl,
        &cur.fallback_base_url,
        &patch.fallback_base_url,
        &mut set.fallback_base_url,
        &mut cleared,
    );

    let mut events = Vec::new();
    if set != AiSettings::default() || !cleared.is_empty() {
        events.push(SettingsEvent::AiSettingsChanged { set, cleared });
    }

    let main = key_change(
        state.api_key.as_ref(),
        patch.api_key,
        cur.base_url.as_deref(),
        &patch.base_url,
    );
    events.extend(main.map(|c| match c {
        KeyChange::Set(key) => SettingsEvent::AiApiKeySet { key },
        KeyChange::Cleared(reason) => SettingsEvent::AiApiKeyCleared { reason },
    }));
    let fallback = key_change(
        state.fallback_api_key.as_ref(),
        patch.fallback_api_key,
        cur.fallback_base_url.as_deref(),
        &patch.fallback_base_url,
    );
    events.extend(fallback.map(|c| match c {
        KeyChange::Set(key) => SettingsEvent::AiFallbackApiKeySet { key },
        KeyChange::Cleared(reason) => SettingsEvent::AiFallbackApiKeyCleared { reason },
    }));
    Ok(events)
}

enum KeyChange {
    Set(SealedKey),
    Cleared(KeyClearReason),
}

/// What happens to a stored key: a new one replaces it, `null` clears it, and a URL moved to
/// another origin without a new key in the same patch clears it (the key follows its origin).
fn key_change(
    stored: Option<&SealedKey>,
    patch: Patch<SealedKey>,
    current_url: Option<&str>,
    url_patch: &Patch<String>,
) -> Option<KeyChange> {
    match patch {
        Patch::Set(key) => (stored != Some(&key)).then_some(KeyChange::Set(key)),
        Patch::Clear => stored
            .is_some()
            .then_some(KeyChange::Cleared(KeyClearReason::Requested)),
        Patch::Keep => {
            let old_origin = current_url.and_then(origin_of);
            let new_origin = match url_patch {
                Patch::Keep => old_origin.clone(),
                Patch::Clear => None,
                Patch::Set(url) => origin_of(url),
            };
            (stored.is_some() && !url_patch.is_keep() && old_origin != new_origin)
                .then_some(KeyChange::Cleared(KeyClearReason::BaseUrlOriginChanged))
        }
    }
}

/// Decides the re-encryption of this layer's fallback key under the current master key.
pub fn decide_reseal_fallback(
    state: &LayerState,
    resealed: String,
) -> Result<Vec<SettingsEvent>, DomainError> {
    let Some(current) = &state.fallback_api_key else {
        return Err(DomainError::NotFound(
            "no fallback API key stored at this layer".into(),
        ));
    };
    if current.sealed == resealed {
        return Ok(vec![]);
    }
    Ok(vec![SettingsEvent::AiFallbackApiKeyResealed {
        key: SealedKey {
            sealed: resealed,
            origin: current.origin.clone(),
        },
    }])
}

/// Decides the re-encryption of this layer's key under the current master key.
pub fn decide_reseal(
    state: &LayerState,
    resealed: String,
) -> Result<Vec<SettingsEvent>, DomainError> {
    let Some(current) = &state.api_key else {
        return Err(DomainError::NotFound(
            "no API key stored at this layer".into(),
        ));
    };
    if current.sealed == resealed {
        return Ok(vec![]);
    }
    Ok(vec![SettingsEvent::AiApiKeyResealed {
        key: SealedKey {
            sealed: resealed,
            origin: current.origin.clone(),
        },
    }])
}

fn clear_field(s: &mut AiSettings, f: AiField) {
    use AiField as F;
    match f {
        F::Enabled => s.enabled = None,
        F::BaseUrl => s.base_url = None,
        F::ModelName => s.model_name = None,
        F::DefaultSystemPrompt => s.default_system_prompt = None,
        F::Temperature => s.temperature = None,
        F::MaxTokens => s.max_tokens = None,
        F::TimeoutSeconds => s.timeout_seconds = None,
        F::ReplyDelaySeconds => s.reply_delay_seconds = None,
        F::ReplyToPrivate => s.reply_to_private = None,
        F::ReplyToGroups => s.reply_to_groups = None,
        F::ReplyToChannels => s.reply_to_channels = None,
        F::EchoMode => s.echo_mode = None,
        F::HumanTakeoverMinutes => s.human_takeover_minutes = None,
        F::DebounceSeconds => s.debounce_seconds = None,
        F::MaxRepliesPerChatPerHour => s.max_replies_per_chat_per_hour = None,
        F::DailyTokenBudget => s.daily_token_budget = None,
        F::MaxHistoryTokens => s.max_history_tokens = None,
        F::HistoryWindowHours => s.history_window_hours = None,
        F::MaxRetries => s.max_retries = None,
        F::FallbackModelName => s.fallback_model_name = None,
        F::FallbackBaseUrl => s.fallback_base_url = None,
    }
}

/// Overlays the `Some` fields of `from` onto `onto`.
fn overlay(onto: &mut AiSettings, from: &AiSettings) {
    macro_rules! take {
        ($($f:ident),*) => { $( if from.$f.is_some() { onto.$f = from.$f.clone(); } )* };
    }
    take!(
        enabled,
        base_url,
        model_name,
        default_system_prompt,
        temperature,
        max_tokens,
        timeout_seconds,
        reply_delay_seconds,
        reply_to_private,
        reply_to_groups,
        reply_to_channels,
        echo_mode,
        human_takeover_minutes,
        debounce_seconds,
        max_replies_per_chat_per_hour,
        daily_token_budget,
        max_history_tokens,
        history_window_hours,
        max_retries,
        fallback_model_name,
        fallback_base_url
    );
}

impl LayerState {
    /// Folds one settings event into the layer.
    pub fn apply(&mut self, event: &SettingsEvent) {
        match event {
            SettingsEvent::AiSettingsChanged { set, cleared } => {
                for f in cleared {
                    clear_field(&mut self.settings, *f);
                }
                overlay(&mut self.settings, set);
            }
            SettingsEvent::AiApiKeySet { key } | SettingsEvent::AiApiKeyResealed { key } => {
                self.api_key = Some(key.clone());
            }
            SettingsEvent::AiApiKeyCleared { .. } => self.api_key = None,
            SettingsEvent::AiFallbackApiKeySet { key }
            | SettingsEvent::AiFallbackApiKeyResealed { key } => {
                self.fallback_api_key = Some(key.clone());
            }
            SettingsEvent::AiFallbackApiKeyCleared { .. } => self.fallback_api_key = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str, origin: &str) -> SealedKey {
        SealedKey {
            sealed: s.into(),
            origin: origin.into(),
        }
    }

    fn state_with_key() -> LayerState {
        let mut st = LayerState::default();
        st.apply(&SettingsEvent::AiSettingsChanged {
            set: AiSettings {
                base_url: Some("https://api.openai.com/v1".into()),
                ..Default::default()
            },
            cleared: vec![],
        });
        st.apply(&SettingsEvent::AiApiKeySet {
            key: key("ct", "https://api.openai.com"),
        });
        st
    }

    #[test]
    fn patch_deserializes_missing_null_and_value() {
        #[derive(Deserialize)]
        struct P {
            #[serde(default)]
            a: Patch<u32>,
            #[serde(default)]
            b: Patch<u32>,
            #[serde(default)]
            c: Patch<u32>,
        }
        let p: P = serde_json::from_str(r#"{"b":null,"c":3}"#).unwrap();
        assert_eq!((p.a, p.b, p.c), (Patch::Keep, Patch::Clear, Patch::Set(3)));
    }

    #[test]
    fn unchanged_values_write_nothing() {
        let st = state_with_key();
        let patch = AiSettingsPatch {
            base_url: Patch::Set("https://api.openai.com/v1/".into()),
            ..Default::default()
        };
        assert_eq!(decide(&st, patch), Ok(vec![]));
    }

    #[test]
    fn base_url_to_other_host_clears_key() {
        let st = state_with_key();
        let patch = AiSettingsPatch {
            base_url: Patch::Set("https://evil.example/v1".into()),
            ..Default::default()
        };
        let events = decide(&st, patch).unwrap();
        assert_eq!(
            events.last(),
            Some(&SettingsEvent::AiApiKeyCleared {
                reason: KeyClearReason::BaseUrlOriginChanged
            })
        );
    }

    #[test]
    fn base_url_same_host_other_path_keeps_key() {
        let st = state_with_key();
        let patch = AiSettingsPatch {
            base_url: Patch::Set("https://api.openai.com/v2".into()),
            ..Default::default()
        };
        let events = decide(&st, patch).unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
    }

    #[test]
    fn base_url_change_with_new_key_keeps_new_key() {
        let st = state_with_key();
        let patch = AiSettingsPatch {
            base_url: Patch::Set("https://openrouter.ai/api/v1".into()),
            api_key: Patch::Set(key("ct2", "https://openrouter.ai")),
            ..Default::default()
        };
        let events = decide(&st, patch).unwrap();
        assert!(matches!(
            events.last(),
            Some(SettingsEvent::AiApiKeySet { .. })
        ));
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let cases: Vec<(AiSettingsPatch, &str)> = vec![
            (
                AiSettingsPatch {
                    temperature: Patch::Set(2.5),
                    ..Default::default()
                },
                "temperature",
            ),
            (
                AiSettingsPatch {
                    temperature: Patch::Set(f64::NAN),
                    ..Default::default()
                },
                "temperature",
            ),
            (
                AiSettingsPatch {
                    max_tokens: Patch::Set(0),
                    ..Default::default()
                },
                "max_tokens",
            ),
            (
                AiSettingsPatch {
                    max_tokens: Patch::Set(40_000),
                    ..Default::default()
                },
                "max_tokens",
            ),
            (
                AiSettingsPatch {
                    timeout_seconds: Patch::Set(601),
                    ..Default::default()
                },
                "timeout_seconds",
            ),
            (
                AiSettingsPatch {
                    reply_delay_seconds: Patch::Set(3601),
                    ..Default::default()
                },
                "reply_delay_seconds",
            ),
            (
                AiSettingsPatch {
                    base_url: Patch::Set("ftp://x/".into()),
                    ..Default::default()
                },
                "base_url",
            ),
            (
                AiSettingsPatch {
                    base_url: Patch::Set("not a url".into()),
                    ..Default::default()
                },
                "base_url",
            ),
            (
                AiSettingsPatch {
                    base_url: Patch::Set("https://u:p@h/".into()),
                    ..Default::default()
                },
                "base_url",
            ),
            (
                AiSettingsPatch {
                    model_name: Patch::Set(" ".into()),
                    ..Default::default()
                },
                "model_name",
            ),
            (
                AiSettingsPatch {
                    default_system_prompt: Patch::Set("x".repeat(MAX_PROMPT_BYTES + 1)),
                    ..Default::default()
                },
                "default_system_prompt",
            ),
            (
                AiSettingsPatch {
                    debounce_seconds: Patch::Set(MAX_DEBOUNCE_SECONDS + 1),
                    ..Default::default()
                },
                "debounce_seconds",
            ),
            (
                AiSettingsPatch {
                    human_takeover_minutes: Patch::Set(MAX_TAKEOVER_MINUTES + 1),
                    ..Default::default()
                },
                "human_takeover_minutes",
            ),
            (
                AiSettingsPatch {
                    max_retries: Patch::Set(11),
                    ..Default::default()
                },
                "max_retries",
            ),
            (
                AiSettingsPatch {
                    daily_token_budget: Patch::Set(MAX_DAILY_TOKEN_BUDGET + 1),
                    ..Default::default()
                },
                "daily_token_budget",
            ),
            (
                AiSettingsPatch {
                    fallback_base_url: Patch::Set("file:///etc".into()),
                    ..Default::default()
                },
                "fallback_base_url",
            ),
            (
                AiSettingsPatch {
                    fallback_model_name: Patch::Set("".into()),
                    ..Default::default()
                },
                "fallback_model_name",
            ),
        ];
        for (patch, field) in cases {
            match decide(&LayerState::default(), patch) {
                Err(DomainError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn clear_then_apply_round_trip() {
        let mut st = state_with_key();
        let events = decide(
            &st,
            AiSettingsPatch {
                base_url: Patch::Clear,
                temperature: Patch::Set(0.3),
                ..Default::default()
            },
        )
        .unwrap();
        for e in &events {
            st.apply(e);
        }
        assert_eq!(st.settings.base_url, None);
        assert_eq!(st.settings.temperature, Some(0.3));
        assert_eq!(st.api_key, None, "key follows its origin");
    }

    #[test]
    fn fallback_key_follows_the_fallback_origin() {
        let mut st = LayerState::default();
        let set = decide(
            &st,
            AiSettingsPatch {
                fallback_base_url: Patch::Set("http://127.0.0.1:8080/v1".into()),
                fallback_api_key: Patch::Set(key("fb", "http://127.0.0.1:8080")),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(matches!(
            set.last(),
            Some(SettingsEvent::AiFallbackApiKeySet { .. })
        ));
        for e in &set {
            st.apply(e);
        }
        assert!(st.api_key.is_none(), "the main key is untouched");
        let moved = decide(
            &st,
            AiSettingsPatch {
                fallback_base_url: Patch::Set("https://elsewhere.example/v1".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            moved.last(),
            Some(&SettingsEvent::AiFallbackApiKeyCleared {
                reason: KeyClearReason::BaseUrlOriginChanged
            })
        );
        // The primary base URL moving does not touch the fallback key.
        let primary = decide(
            &st,
            AiSettingsPatch {
                base_url: Patch::Set("https://elsewhere.example/v1".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(primary.len(), 1, "{primary:?}");
    }
}
