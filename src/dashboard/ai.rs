//! `/ai`: the global AI layer, and the layer form shared with the per-account overrides on
//! `/accounts/:id`. Every field is either a value or empty (= inherit from the layer below; for
//! the global layer that is the env, then the built-in default). The API key is write-only:
//! the page says "key set" and offers replace and clear, never the key.

use axum::extract::{Query, State};
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;
use wagate_events::chat_settings::{ChatControls, ChatControlsPatch, ChatSettings};
use wagate_events::ids::ChatKind;
use wagate_events::settings::{self, AiSettings, LayerState, Patch, SealedKey};
use wagate_projections::effective::{self, defaults, Effective, Source, Sourced, Target};

use super::render::{self, FormState, Section};
use super::session::{Fields, Posted, Session};
use crate::app::SharedApp;
use crate::http::ai::{change_global, AiSettingsRequest};

/// How a field is edited.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Bool,
    Text,
    Url,
    Prompt,
    Float { min: f64, max: f64 },
    Int { min: u64, max: u64 },
}

/// Where a field sits on the form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    /// The model and when to reply.
    Reply,
    /// Conversation control (ADR 0007): takeover, debounce, limits, history, retries, fallback.
    Control,
}

struct FieldDef {
    name: &'static str,
    label: &'static str,
    kind: Kind,
    group: Group,
    /// What the setting does, shown under the field.
    help: &'static str,
}

const fn field(name: &'static str, label: &'static str, kind: Kind) -> FieldDef {
    FieldDef {
        name,
        label,
        kind,
        group: Group::Reply,
        help: "",
    }
}

const fn control(
    name: &'static str,
    label: &'static str,
    kind: Kind,
    help: &'static str,
) -> FieldDef {
    FieldDef {
        name,
        label,
        kind,
        group: Group::Control,
        help,
    }
}

const FIELDS: [FieldDef; 21] = [
    field("enabled", "AI auto-reply enabled", Kind::Bool),
    field("base_url", "Base URL (OpenAI-compatible API)", Kind::Url),
    field("model_name", "Model", Kind::Text),
    field(
        "default_system_prompt",
        "Default system prompt",
        Kind::Prompt,
    ),
    field(
        "temperature",
        "Temperature (0–2)",
        Kind::Float { min: 0.0, max: 2.0 },
    ),
    field(
        "max_tokens",
        "Max tokens (1–32768)",
        Kind::Int {
            min: 1,
            max: 32_768,
        },
    ),
    field(
        "timeout_seconds",
        "Timeout, seconds (1–600)",
        Kind::Int { min: 1, max: 600 },
    ),
    field(
        "reply_delay_seconds",
        "Reply delay, seconds (0–3600)",
        Kind::Int { min: 0, max: 3600 },
    ),
    field("reply_to_private", "Reply in private chats", Kind::Bool),
    field("reply_to_groups", "Reply in groups", Kind::Bool),
    field("reply_to_channels", "Reply in channels", Kind::Bool),
    field(
        "echo_mode",
        "Echo mode (reply with the incoming text, no model call)",
        Kind::Bool,
    ),
    control(
        "human_takeover_minutes",
        "Human takeover, minutes (0–10080)",
        Kind::Int {
            min: 0,
            max: settings::MAX_TAKEOVER_MINUTES as u64,
        },
        "When a person answers in a chat (a send from this dashboard or the API, or the owner \
         typing on the phone), the AI stays quiet there for this long. 0 = never step back. \
         Resume early from the chat page.",
    ),
    control(
        "debounce_seconds",
        "Burst debounce, seconds (0–3600)",
        Kind::Int {
            min: 0,
            max: settings::MAX_DEBOUNCE_SECONDS as u64,
        },
        "Customer messages arriving within this window get one reply that answers all of them; \
         each new message restarts the window. 0 = off.",
    ),
    control(
        "max_replies_per_chat_per_hour",
        "Max AI replies per chat per hour (0–1000)",
        Kind::Int {
            min: 0,
            max: settings::MAX_REPLIES_PER_HOUR as u64,
        },
        "Over the cap a reply is skipped (logged and sent to webhooks as ai.reply.skipped). \
         0 = no cap.",
    ),
    control(
        "daily_token_budget",
        "Daily token budget per account (0–1000000000)",
        Kind::Int {
            min: 0,
            max: settings::MAX_DAILY_TOKEN_BUDGET,
        },
        "Model tokens an account may use per UTC day, counted from the usage the model reports. \
         Once used up, replies are skipped until midnight UTC. 0 = no budget.",
    ),
    control(
        "max_history_tokens",
        "History budget, estimated tokens (0–1000000)",
        Kind::Int {
            min: 0,
            max: settings::MAX_HISTORY_TOKENS as u64,
        },
        "The prompt keeps the newest messages (at most 20) that fit, estimating a message as \
         its characters / 4 (rounded up) + 4 tokens. 0 = only the 20-message cap.",
    ),
    control(
        "history_window_hours",
        "History window, hours (0–8760)",
        Kind::Int {
            min: 0,
            max: settings::MAX_HISTORY_WINDOW_HOURS as u64,
        },
        "Messages older than this stay out of the prompt. 0 = no window.",
    ),
    control(
        "max_retries",
        "Retries of a failed model call (0–10)",
        Kind::Int {
            min: 0,
            max: settings::MAX_RETRIES as u64,
        },
        "A timeout, 429 or 5xx is retried with backoff this many times before the fallback \
         model (if any) is asked.",
    ),
    control(
        "fallback_model_name",
        "Fallback model",
        Kind::Text,
        "Answers when the main model still fails after the retries. Empty = no fallback.",
    ),
    control(
        "fallback_base_url",
        "Fallback base URL",
        Kind::Url,
        "Where the fallback model is served; empty = the main base URL. A different origin \
         needs its own fallback API key below.",
    ),
];

/// Names of the layer form's fields (for placing service errors).
pub fn field_names() -> Vec<&'static str> {
    FIELDS
        .iter()
        .map(|f| f.name)
        .chain(["api_key", "fallback_api_key"])
        .collect()
}

fn bool_str(v: Option<bool>) -> String {
    v.map(|b| b.to_string()).unwrap_or_default()
}

fn opt_str<T: ToString>(v: Option<&T>) -> String {
    v.map(ToString::to_string).unwrap_or_default()
}

/// A stored layer as form values (empty = not set at this layer).
pub fn layer_values(s: &AiSettings) -> FormState {
    FormState::with([
        ("enabled", bool_str(s.enabled)),
        ("base_url", opt_str(s.base_url.as_ref())),
        ("model_name", opt_str(s.model_name.as_ref())),
        (
            "default_system_prompt",
            opt_str(s.default_system_prompt.as_ref()),
        ),
        ("temperature", opt_str(s.temperature.as_ref())),
        ("max_tokens", opt_str(s.max_tokens.as_ref())),
        ("timeout_seconds", opt_str(s.timeout_seconds.as_ref())),
        (
            "reply_delay_seconds",
            opt_str(s.reply_delay_seconds.as_ref()),
        ),
        ("reply_to_private", bool_str(s.reply_to_private)),
        ("reply_to_groups", bool_str(s.reply_to_groups)),
        ("reply_to_channels", bool_str(s.reply_to_channels)),
        ("echo_mode", bool_str(s.echo_mode)),
        (
            "human_takeover_minutes",
            opt_str(s.human_takeover_minutes.as_ref()),
        ),
        ("debounce_seconds", opt_str(s.debounce_seconds.as_ref())),
        (
            "max_replies_per_chat_per_hour",
            opt_str(s.max_replies_per_chat_per_hour.as_ref()),
        ),
        ("daily_token_budget", opt_str(s.daily_token_budget.as_ref())),
        ("max_history_tokens", opt_str(s.max_history_tokens.as_ref())),
        (
            "history_window_hours",
            opt_str(s.history_window_hours.as_ref()),
        ),
        ("max_retries", opt_str(s.max_retries.as_ref())),
        (
            "fallback_model_name",
            opt_str(s.fallback_model_name.as_ref()),
        ),
        ("fallback_base_url", opt_str(s.fallback_base_url.as_ref())),
    ])
}

fn source_name(s: Source) -> &'static str {
    match s {
        Source::Chat => "chat",
        Source::Account => "account",
        Source::Global => "global",
        Source::Env => "env",
        Source::Default => "built-in default",
    }
}

fn on_off(b: bool) -> String {
    if b { "on" } else { "off" }.to_string()
}

fn num<T: ToString>(v: &Sourced<T>) -> (String, Source) {
    (v.value.to_string(), v.source)
}

fn none_or(v: &Sourced<Option<String>>) -> (String, Source) {
    (v.value.clone().unwrap_or_else(|| "none".into()), v.source)
}

/// A resolved field as display text and its source.
pub fn effective_field(e: &Effective, name: &str) -> Option<(String, Source)> {
    Some(match name {
        "enabled" => (on_off(e.enabled.value), e.enabled.source),
        "base_url" => (e.base_url.value.clone(), e.base_url.source),
        "model_name" => (e.model_name.value.clone(), e.model_name.source),
        "default_system_prompt" | "system_prompt" => {
            (e.system_prompt.value.clone(), e.system_prompt.source)
        }
        "temperature" => (e.temperature.value.to_string(), e.temperature.source),
        "max_tokens" => (e.max_tokens.value.to_string(), e.max_tokens.source),
        "timeout_seconds" => (
            e.timeout_seconds.value.to_string(),
            e.timeout_seconds.source,
        ),
        "reply_delay_seconds" => (
            e.reply_delay_seconds.value.to_string(),
            e.reply_delay_seconds.source,
        ),
        "reply_to_private" => (on_off(e.reply_to_private.value), e.reply_to_private.source),
        "reply_to_groups" => (on_off(e.reply_to_groups.value), e.reply_to_groups.source),
        "reply_to_channels" => (
            on_off(e.reply_to_channels.value),
            e.reply_to_channels.source,
        ),
        "echo_mode" => (on_off(e.echo_mode.value), e.echo_mode.source),
        "human_takeover_minutes" => num(&e.human_takeover_minutes),
        "debounce_seconds" => num(&e.debounce_seconds),
        "max_replies_per_chat_per_hour" => num(&e.max_replies_per_chat_per_hour),
        "daily_token_budget" => num(&e.daily_token_budget),
        "max_history_tokens" => num(&e.max_history_tokens),
        "history_window_hours" => num(&e.history_window_hours),
        "max_retries" => num(&e.max_retries),
        "fallback_model_name" => none_or(&e.fallback_model_name),
        "fallback_base_url" => none_or(&e.fallback_base_url),
        "has_fallback_api_key" => (
            if e.has_fallback_api_key.value {
                "set"
            } else {
                "not set"
            }
            .to_string(),
            e.has_fallback_api_key.source,
        ),
        "has_api_key" => (
            if e.has_api_key.value {
                "set"
            } else {
                "not set"
            }
            .to_string(),
            e.has_api_key.source,
        ),
        _ => return None,
    })
}

/// What a layer inherits: the layers below it resolved for a private chat.
pub fn inherited(app: &SharedApp, below: Option<&LayerState>) -> Effective {
    let empty = LayerState::default();
    effective::resolve_layers(
        &ChatSettings::default(),
        None,
        below.unwrap_or(&empty),
        &app.env_layer,
        Target {
            account_id: "",
            jid: "",
            chat_kind: ChatKind::Private,
            position: app.model().position,
        },
    )
}

fn short(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() > MAX {
        format!("{}…", s.chars().take(MAX).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Parses the layer form. Absent fields are kept, empty ones cleared (inherit), others set;
/// every unparsable field is reported, and nothing is saved unless all parse.
pub fn parse_layer_form(f: &Fields) -> Result<AiSettingsRequest, FormState> {
    let mut state = FormState::from_fields(f);
    let mut req = AiSettingsRequest::default();
    for def in &FIELDS {
        let Some(raw) = f.opt(def.name) else { continue };
        let trimmed = raw.trim();
        macro_rules! patch {
            ($parse:expr) => {
                if trimmed.is_empty() {
                    Patch::Clear
                } else {
                    match $parse {
                        Ok(v) => Patch::Set(v),
                        Err(msg) => {
                            state.invalid(def.name, msg);
                            Patch::Keep
                        }
                    }
                }
            };
        }
        match (def.name, def.kind) {
            (name, Kind::Bool) => {
                let p = patch!(match trimmed {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    _ => Err("choose inherit, on or off"),
                });
                match name {
                    "enabled" => req.enabled = p,
                    "reply_to_private" => req.reply_to_private = p,
                    "reply_to_groups" => req.reply_to_groups = p,
                    "reply_to_channels" => req.reply_to_channels = p,
                    _ => req.echo_mode = p,
                }
            }
            (name, Kind::Int { min, max }) => {
                let p: Patch<u64> = patch!(trimmed
                    .parse::<u64>()
                    .ok()
                    .filter(|v| (min..=max).contains(v))
                    .ok_or(format!("a whole number from {min} to {max}")));
                if name == "daily_token_budget" {
                    req.daily_token_budget = p;
                    continue;
                }
                // Every other whole-number field is a u32 and its range fits one.
                let p = p.map(|v| u32::try_from(v).unwrap_or(u32::MAX));
                match name {
                    "max_tokens" => req.max_tokens = p,
                    "timeout_seconds" => req.timeout_seconds = p,
                    "reply_delay_seconds" => req.reply_delay_seconds = p,
                    "human_takeover_minutes" => req.human_takeover_minutes = p,
                    "debounce_seconds" => req.debounce_seconds = p,
                    "max_replies_per_chat_per_hour" => req.max_replies_per_chat_per_hour = p,
                    "max_history_tokens" => req.max_history_tokens = p,
                    "history_window_hours" => req.history_window_hours = p,
                    _ => req.max_retries = p,
                }
            }
            (_, Kind::Float { min, max }) => {
                req.temperature = patch!(trimmed
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && (min..=max).contains(v))
                    .ok_or(format!("a number from {min} to {max}")));
            }
            ("base_url", _) => req.base_url = patch!(Ok::<_, String>(trimmed.to_string())),
            ("model_name", _) => req.model_name = patch!(Ok::<_, String>(trimmed.to_string())),
            ("fallback_model_name", _) => {
                req.fallback_model_name = patch!(Ok::<_, String>(trimmed.to_string()))
            }
            ("fallback_base_url", _) => {
                req.fallback_base_url = patch!(Ok::<_, String>(trimmed.to_string()))
            }
            (_, _) => {
                // Keep the prompt as typed, with browser line ends normalized.
                req.default_system_prompt = patch!(Ok::<_, String>(
                    raw.replace("\r\n", "\n").trim().to_string()
                ))
            }
        }
    }
    if let Some(key) = f.opt("api_key").filter(|k| !k.trim().is_empty()) {
        req.api_key = Patch::Set(key.to_string());
    }
    if let Some(key) = f.opt("fallback_api_key").filter(|k| !k.trim().is_empty()) {
        req.fallback_api_key = Patch::Set(key.to_string());
    }
    if state.failed() {
        Err(state)
    } else {
        Ok(req)
    }
}

/// The conversation controls a chat may override from its gear (`ChatControls`).
pub const CHAT_CONTROLS: [&str; 6] = [
    "human_takeover_minutes",
    "debounce_seconds",
    "max_replies_per_chat_per_hour",
    "max_history_tokens",
    "history_window_hours",
    "max_retries",
];

/// A chat's own controls as form values (empty = inherit).
pub fn chat_control_values(c: &ChatControls, state: &mut FormState) {
    for (name, v) in [
        ("human_takeover_minutes", c.human_takeover_minutes),
        ("debounce_seconds", c.debounce_seconds),
        (
            "max_replies_per_chat_per_hour",
            c.max_replies_per_chat_per_hour,
        ),
        ("max_history_tokens", c.max_history_tokens),
        ("history_window_hours", c.history_window_hours),
        ("max_retries", c.max_retries),
    ] {
        state.values.insert(name.into(), opt_str(v.as_ref()));
    }
}

/// Parses the chat gear's controls with the ranges of the layers: absent keeps, empty clears
/// (inherit), a value sets; errors are reported on `state`.
pub fn parse_chat_controls(f: &Fields, state: &mut FormState) -> ChatControlsPatch {
    let mut patch = ChatControlsPatch::default();
    for def in FIELDS.iter().filter(|d| CHAT_CONTROLS.contains(&d.name)) {
        let Kind::Int { min, max } = def.kind else {
            continue;
        };
        let Some(raw) = f.opt(def.name) else { continue };
        let raw = raw.trim();
        let p = if raw.is_empty() {
            Patch::Clear
        } else {
            match raw
                .parse::<u32>()
                .ok()
                .filter(|v| (min..=max).contains(&u64::from(*v)))
            {
                Some(v) => Patch::Set(v),
                None => {
                    state.invalid(def.name, format!("a whole number from {min} to {max}"));
                    Patch::Keep
                }
            }
        };
        match def.name {
            "human_takeover_minutes" => patch.human_takeover_minutes = p,
            "debounce_seconds" => patch.debounce_seconds = p,
            "max_replies_per_chat_per_hour" => patch.max_replies_per_chat_per_hour = p,
            "max_history_tokens" => patch.max_history_tokens = p,
            "history_window_hours" => patch.history_window_hours = p,
            _ => patch.max_retries = p,
        }
    }
    patch
}

/// The chat gear's control inputs; `inherit` is what the chat gets without its own values.
pub fn chat_control_fields(inherit: &Effective, state: &FormState) -> Markup {
    html! {
        fieldset.controls #chat-controls {
            legend { "Conversation control for this chat" }
            p.hint { "Empty = the account / global value (shown under each field)." }
            div.grid {
                @for def in FIELDS.iter().filter(|d| CHAT_CONTROLS.contains(&d.name)) {
                    (layer_field(def, inherit, state))
                }
            }
        }
    }
}

/// The layer form. `below` names what an empty field inherits from.
pub fn layer_form(
    session: &Session,
    action: &str,
    layer: &LayerState,
    inherit: &Effective,
    below: &str,
    state: &FormState,
) -> Markup {
    html! {
        form.card method="post" action=(action) novalidate {
            (render::csrf(session))
            (render::form_error(state))
            p.hint { "Leave a field empty (or choose “inherit”) to use the value from " (below) "." }
            div.grid {
                @for def in FIELDS.iter().filter(|d| d.group == Group::Reply) {
                    (layer_field(def, inherit, state))
                }
            }
            (key_fieldset(KeyKind::Main, layer.api_key.as_ref(), inherit, state))
            fieldset.controls #conversation-control {
                legend { "Conversation control" }
                p.hint { "How the AI shares a chat with people, how much it may spend, and what happens when the model fails. "
                    "A chat can override the per-chat controls from its gear." }
                div.grid {
                    @for def in FIELDS.iter().filter(|d| d.group == Group::Control) {
                        (layer_field(def, inherit, state))
                    }
                }
                (key_fieldset(KeyKind::Fallback, layer.fallback_api_key.as_ref(), inherit, state))
            }
            button type="submit" { "Save" }
        }
    }
}

/// Which write-only key a control is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Main,
    Fallback,
}

impl KeyKind {
    fn field(self) -> &'static str {
        match self {
            KeyKind::Main => "api_key",
            KeyKind::Fallback => "fallback_api_key",
        }
    }

    fn name(self) -> &'static str {
        match self {
            KeyKind::Main => "API key",
            KeyKind::Fallback => "fallback API key",
        }
    }

    /// From the clear-key form's `which` field (absent: the main key).
    pub fn from_form(f: &Fields) -> Self {
        match f.opt("which") {
            Some("fallback") => KeyKind::Fallback,
            _ => KeyKind::Main,
        }
    }

    /// The request that clears this key.
    pub fn clear_request(self) -> AiSettingsRequest {
        let mut req = AiSettingsRequest::default();
        match self {
            KeyKind::Main => req.api_key = Patch::Clear,
            KeyKind::Fallback => req.fallback_api_key = Patch::Clear,
        }
        req
    }

    /// The `done` notice after clearing it.
    pub fn cleared_notice(self) -> &'static str {
        match self {
            KeyKind::Main => "key_cleared",
            KeyKind::Fallback => "fallback_key_cleared",
        }
    }
}

/// A write-only key: whether this layer has one (never the key), and the input replacing it.
fn key_fieldset(
    kind: KeyKind,
    key: Option<&SealedKey>,
    inherit: &Effective,
    state: &FormState,
) -> Markup {
    let field = kind.field();
    let id = format!("layer-{field}");
    let effective_name = match kind {
        KeyKind::Main => "has_api_key",
        KeyKind::Fallback => "has_fallback_api_key",
    };
    html! {
        fieldset.key {
            legend { @if kind == KeyKind::Main { "API key" } @else { "Fallback API key" } }
            @if let Some(k) = key {
                p { strong.badge.ok { "key set" } " for " code { (k.origin) } }
            } @else {
                p { span.badge { "no key at this layer" } " — effective: "
                    @if let Some((v, src)) = effective_field(inherit, effective_name) {
                        (v) " (" (source_name(src)) ")"
                    }
                }
            }
            div.field {
                label for=(id) { @if key.is_some() { "Replace " } @else { "Set " } (kind.name()) }
                input id=(id) name=(field) type="password" autocomplete="off" value=""
                    aria-invalid=[state.error(field).map(|_| "true")]
                    aria-describedby=(format!("{id}-hint"));
                p.hint id=(format!("{id}-hint")) {
                    "Write-only: stored encrypted and never shown again. Leave empty to keep the current key."
                    @if kind == KeyKind::Fallback { " Needed only when the fallback base URL has another origin than the main one." }
                    @if state.failed() { " Re-enter the key if you were setting one." }
                }
                (render::field_error(state, &id, field))
            }
        }
    }
}

/// The "clear key" actions, next to the layer form.
pub fn clear_key_form(session: &Session, action: &str, layer: &LayerState) -> Markup {
    html! {
        @for (kind, key) in [(KeyKind::Main, &layer.api_key), (KeyKind::Fallback, &layer.fallback_api_key)] {
            @if key.is_some() {
                form.inline method="post" action=(action) {
                    (render::csrf(session))
                    @if kind == KeyKind::Fallback { input type="hidden" name="which" value="fallback"; }
                    button.danger type="submit" { "Clear " (kind.name()) }
                }
            }
        }
    }
}

fn layer_field(def: &FieldDef, inherit: &Effective, state: &FormState) -> Markup {
    let id = format!("layer-{}", def.name);
    let (inh_value, inh_source) = effective_field(inherit, def.name)
        .map(|(v, s)| (short(&v), source_name(s)))
        .unwrap_or_default();
    let value = state.value(def.name);
    let hint = format!("Inherits: {inh_value} ({inh_source})");
    let invalid = state.error(def.name).map(|_| "true");
    let describedby = render::described_by(state, &id, def.name, true);
    html! {
        div.field.wide[matches!(def.kind, Kind::Prompt | Kind::Url)] {
            label for=(id) { (def.label) }
            @match def.kind {
                Kind::Bool => {
                    select id=(id) name=(def.name) aria-invalid=[invalid] aria-describedby=[describedby] {
                        option value="" selected[value.is_empty()] { "inherit (" (inh_value) ")" }
                        option value="true" selected[value == "true"] { "on" }
                        option value="false" selected[value == "false"] { "off" }
                    }
                }
                Kind::Prompt => {
                    textarea id=(id) name=(def.name) rows="4" aria-invalid=[invalid] aria-describedby=[describedby] { (value) }
                }
                Kind::Float { min, max } => {
                    input id=(id) name=(def.name) type="number" step="0.01" min=(min) max=(max) value=(value)
                        placeholder=(inh_value) aria-invalid=[invalid] aria-describedby=[describedby];
                }
                Kind::Int { min, max } => {
                    input id=(id) name=(def.name) type="number" step="1" min=(min) max=(max) value=(value)
                        placeholder=(inh_value) aria-invalid=[invalid] aria-describedby=[describedby];
                }
                Kind::Url => {
                    input id=(id) name=(def.name) type="url" value=(value) placeholder=(inh_value)
                        aria-invalid=[invalid] aria-describedby=[describedby];
                }
                Kind::Text => {
                    input id=(id) name=(def.name) type="text" value=(value) placeholder=(inh_value)
                        aria-invalid=[invalid] aria-describedby=[describedby];
                }
            }
            p.hint id=(format!("{id}-hint")) {
                @if !def.help.is_empty() { (def.help) " " }
                (hint)
            }
            (render::field_error(state, &id, def.name))
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct Done {
    pub done: Option<String>,
}

pub async fn page(
    State(app): State<SharedApp>,
    session: Session,
    Query(q): Query<Done>,
) -> Response {
    let state = layer_values(&app.model().global.settings);
    render_page(&app, &session, &state, q.done.as_deref())
}

fn render_page(
    app: &SharedApp,
    session: &Session,
    state: &FormState,
    done: Option<&str>,
) -> Response {
    let (global, updated) = {
        let m = app.model();
        (m.global.clone(), m.global_updated_at)
    };
    let from_env = inherited(app, None);
    let now = inherited(app, Some(&global));
    let env = &app.env_layer;
    // The env layer as the form shows a layer: empty where the env sets nothing.
    let env_values = layer_values(&env.settings);
    let body = html! {
        (render::notice(done))
        p { "Applies to every account unless the account or the chat overrides it. "
            "Effective config is resolved chat → account → global → env → built-in default." }
        @if let Some(t) = updated { p.muted { "Last changed " (render::when(&t)) } }
        section aria-labelledby="global-h" {
            h2 #global-h { "Global settings" }
            (layer_form(session, "/ai", &global, &from_env, "the env or the built-in default", state))
            (clear_key_form(session, "/ai/clear-key", &global))
        }
        section aria-labelledby="env-h" {
            h2 #env-h { "Env defaults and effective values" }
            div.scroll {
                table {
                    thead { tr { th scope="col" { "Field" } th scope="col" { "Env" } th scope="col" { "Built-in default" } th scope="col" { "Effective now" } } }
                    tbody {
                        tr { th scope="row" { "base_url" } td { (env.settings.base_url.as_deref().unwrap_or("—")) } td { (defaults::BASE_URL) } (eff_cell(&now, "base_url")) }
                        tr { th scope="row" { "model_name" } td { (env.settings.model_name.as_deref().unwrap_or("—")) } td { (defaults::MODEL_NAME) } (eff_cell(&now, "model_name")) }
                        tr { th scope="row" { "api_key" } td { @if env.has_api_key { "set" } @else { "—" } } td { "—" } (eff_cell(&now, "has_api_key")) }
                        tr { th scope="row" { "enabled" } td { "—" } td { (on_off(defaults::ENABLED)) } (eff_cell(&now, "enabled")) }
                        tr { th scope="row" { "default_system_prompt" } td { "—" } td { (defaults::SYSTEM_PROMPT) } (eff_cell(&now, "default_system_prompt")) }
                        tr { th scope="row" { "temperature" } td { "—" } td { (defaults::TEMPERATURE) } (eff_cell(&now, "temperature")) }
                        tr { th scope="row" { "max_tokens" } td { "—" } td { (defaults::MAX_TOKENS) } (eff_cell(&now, "max_tokens")) }
                        tr { th scope="row" { "timeout_seconds" } td { "—" } td { (defaults::TIMEOUT_SECONDS) } (eff_cell(&now, "timeout_seconds")) }
                        tr { th scope="row" { "reply_delay_seconds" } td { "—" } td { (defaults::REPLY_DELAY_SECONDS) } (eff_cell(&now, "reply_delay_seconds")) }
                        tr { th scope="row" { "reply_to_private" } td { "—" } td { (on_off(defaults::REPLY_TO_PRIVATE)) } (eff_cell(&now, "reply_to_private")) }
                        tr { th scope="row" { "reply_to_groups" } td { "—" } td { (on_off(defaults::REPLY_TO_GROUPS)) } (eff_cell(&now, "reply_to_groups")) }
                        tr { th scope="row" { "reply_to_channels" } td { "—" } td { (on_off(defaults::REPLY_TO_CHANNELS)) } (eff_cell(&now, "reply_to_channels")) }
                        tr { th scope="row" { "echo_mode" } td { "—" } td { (on_off(defaults::ECHO_MODE)) } (eff_cell(&now, "echo_mode")) }
                        @for (name, default) in [
                            ("human_takeover_minutes", defaults::HUMAN_TAKEOVER_MINUTES.to_string()),
                            ("debounce_seconds", defaults::DEBOUNCE_SECONDS.to_string()),
                            ("max_replies_per_chat_per_hour", defaults::MAX_REPLIES_PER_CHAT_PER_HOUR.to_string()),
                            ("daily_token_budget", defaults::DAILY_TOKEN_BUDGET.to_string()),
                            ("max_history_tokens", defaults::MAX_HISTORY_TOKENS.to_string()),
                            ("history_window_hours", defaults::HISTORY_WINDOW_HOURS.to_string()),
                            ("max_retries", defaults::MAX_RETRIES.to_string()),
                            ("fallback_model_name", "none".to_string()),
                        ] {
                            tr { th scope="row" { (name) } td { @match env_values.value(name) { "" => "—", v => (v) } } td { (default) } (eff_cell(&now, name)) }
                        }
                    }
                }
            }
            @if let Some(note) = &now.api_key_note { p.alert.warn { (note) } }
        }
    };
    render::respond(
        state.status(),
        render::page("AI settings", Some(session), Section::Ai, body),
    )
}

/// A table cell with a resolved value and its source.
pub fn eff_cell(e: &Effective, name: &str) -> Markup {
    html! {
        td {
            @if let Some((v, src)) = effective_field(e, name) {
                span.value { (short(&v)) } " " span.src { (source_name(src)) }
            }
        }
    }
}

pub async fn save(State(app): State<SharedApp>, posted: Posted) -> Response {
    let Posted { session, fields } = posted;
    let req = match parse_layer_form(&fields) {
        Ok(r) => r,
        Err(state) => return render_page(&app, &session, &state, None),
    };
    match change_global(&app, &session.who(), req).await {
        Ok(()) => render::see_other("/ai?done=saved"),
        Err(e) => {
            let mut state = FormState::from_fields(&fields);
            state.api_error(e, &field_names());
            render_page(&app, &session, &state, None)
        }
    }
}

pub async fn clear_key(State(app): State<SharedApp>, posted: Posted) -> Response {
    let kind = KeyKind::from_form(&posted.fields);
    match change_global(&app, &posted.session.who(), kind.clear_request()).await {
        Ok(()) => render::see_other(&format!("/ai?done={}", kind.cleared_notice())),
        Err(e) => render::api_error_page(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        Fields(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn empty_clears_absent_keeps_value_sets() {
        let req = parse_layer_form(&fields(&[
            ("enabled", "true"),
            ("model_name", "  m1 "),
            ("temperature", ""),
            ("max_tokens", "700"),
            ("default_system_prompt", "line one\r\nline two\r\n"),
            ("api_key", ""),
        ]))
        .expect("valid");
        assert!(matches!(req.enabled, Patch::Set(true)));
        assert!(matches!(req.model_name, Patch::Set(ref m) if m == "m1"));
        assert!(matches!(req.temperature, Patch::Clear));
        assert!(matches!(req.max_tokens, Patch::Set(700)));
        assert!(
            matches!(req.default_system_prompt, Patch::Set(ref p) if p == "line one\nline two")
        );
        assert!(req.base_url.is_keep(), "an absent field is kept");
        assert!(req.api_key.is_keep(), "an empty key field keeps the key");
    }

    #[test]
    fn every_bad_field_is_reported_and_values_stay() {
        let state = parse_layer_form(&fields(&[
            ("enabled", "maybe"),
            ("temperature", "2.5"),
            ("timeout_seconds", "-1"),
            ("reply_delay_seconds", "x"),
            ("model_name", "kept"),
            ("api_key", "sk-secret"),
        ]))
        .expect_err("invalid");
        for f in [
            "enabled",
            "temperature",
            "timeout_seconds",
            "reply_delay_seconds",
        ] {
            assert!(state.error(f).is_some(), "{f}");
        }
        assert_eq!(state.value("model_name"), "kept");
        assert_eq!(state.value("api_key"), "", "a key is never echoed back");
    }
}
