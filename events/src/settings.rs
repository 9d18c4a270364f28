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
    /// Already sealed by the caller; `Set` carries the ciphertext and its origin.
    pub api_key: Patch<SealedKey>,
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
}

/// One layer's state: its settings and its sealed key.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LayerState {
    pub settings: AiSettings,
    pub api_key: Option<SealedKey>,
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

    let mut events = Vec::new();
    if set != AiSettings::default() || !cleared.is_empty() {
        events.push(SettingsEvent::AiSettingsChanged { set, cleared });
    }

    let old_origin = cur.base_url.as_deref().and_then(origin_of);
    let new_origin = match &patch.base_url {
        Patch::Keep => old_origin.clone(),
        Patch::Clear => None,
        Patch::Set(url) => origin_of(url),
    };
    match patch.api_key {
        Patch::Set(key) => {
            if state.api_key.as_ref() != Some(&key) {
                events.push(SettingsEvent::AiApiKeySet { key });
            }
        }
        Patch::Clear => {
            if state.api_key.is_some() {
                events.push(SettingsEvent::AiApiKeyCleared {
                    reason: KeyClearReason::Requested,
                });
            }
        }
        Patch::Keep => {
            if state.api_key.is_some() && !patch.base_url.is_keep() && old_origin != new_origin {
                events.push(SettingsEvent::AiApiKeyCleared {
                    reason: KeyClearReason::BaseUrlOriginChanged,
                });
            }
        }
    }
    Ok(events)
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
        echo_mode
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
}
