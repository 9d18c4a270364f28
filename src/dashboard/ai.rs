//! `/ai`: the global AI layer, and the layer form shared with the per-account overrides on
//! `/accounts/:id`. Every field is either a value or empty (= inherit from the layer below; for
//! the global layer that is the env, then the built-in default). The API key is write-only:
//! the page says "key set" and offers replace and clear, never the key.

use axum::extract::{Query, State};
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;
use wagate_events::chat_settings::ChatSettings;
use wagate_events::ids::ChatKind;
use wagate_events::settings::{AiSettings, LayerState, Patch};
use wagate_projections::effective::{self, defaults, Effective, Source, Target};

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
    Int { min: u32, max: u32 },
}

struct FieldDef {
    name: &'static str,
    label: &'static str,
    kind: Kind,
}

const FIELDS: [FieldDef; 12] = [
    FieldDef {
        name: "enabled",
        label: "AI auto-reply enabled",
        kind: Kind::Bool,
    },
    FieldDef {
        name: "base_url",
        label: "Base URL (OpenAI-compatible API)",
        kind: Kind::Url,
    },
    FieldDef {
        name: "model_name",
        label: "Model",
        kind: Kind::Text,
    },
    FieldDef {
        name: "default_system_prompt",
        label: "Default system prompt",
        kind: Kind::Prompt,
    },
    FieldDef {
        name: "temperature",
        label: "Temperature (0–2)",
        kind: Kind::Float { min: 0.0, max: 2.0 },
    },
    FieldDef {
        name: "max_tokens",
        label: "Max tokens (1–32768)",
        kind: Kind::Int {
            min: 1,
            max: 32_768,
        },
    },
    FieldDef {
        name: "timeout_seconds",
        label: "Timeout, seconds (1–600)",
        kind: Kind::Int { min: 1, max: 600 },
    },
    FieldDef {
        name: "reply_delay_seconds",
        label: "Reply delay, seconds (0–3600)",
        kind: Kind::Int { min: 0, max: 3600 },
    },
    FieldDef {
        name: "reply_to_private",
        label: "Reply in private chats",
        kind: Kind::Bool,
    },
    FieldDef {
        name: "reply_to_groups",
        label: "Reply in groups",
        kind: Kind::Bool,
    },
    FieldDef {
        name: "reply_to_channels",
        label: "Reply in channels",
        kind: Kind::Bool,
    },
    FieldDef {
        name: "echo_mode",
        label: "Echo mode (reply with the incoming text, no model call)",
        kind: Kind::Bool,
    },
];

/// Names of the layer form's fields (for placing service errors).
pub const FIELD_NAMES: [&str; 13] = [
    "enabled",
    "base_url",
    "model_name",
    "default_system_prompt",
    "temperature",
    "max_tokens",
    "timeout_seconds",
    "reply_delay_seconds",
    "reply_to_private",
    "reply_to_groups",
    "reply_to_channels",
    "echo_mode",
    "api_key",
];

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
                let p = patch!(trimmed
                    .parse::<u32>()
                    .ok()
                    .filter(|v| (min..=max).contains(v))
                    .ok_or(format!("a whole number from {min} to {max}")));
                match name {
                    "max_tokens" => req.max_tokens = p,
                    "timeout_seconds" => req.timeout_seconds = p,
                    _ => req.reply_delay_seconds = p,
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
    if state.failed() {
        Err(state)
    } else {
        Ok(req)
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
                @for def in &FIELDS {
                    (layer_field(def, inherit, state))
                }
            }
            fieldset.key {
                legend { "API key" }
                @if let Some(k) = &layer.api_key {
                    p { strong.badge.ok { "key set" } " for " code { (k.origin) } }
                } @else {
                    p { span.badge { "no key at this layer" } " — effective: "
                        @if let Some((v, src)) = effective_field(inherit, "has_api_key") {
                            (v) " (" (source_name(src)) ")"
                        }
                    }
                }
                @let id = "layer-api_key";
                div.field {
                    label for=(id) { @if layer.api_key.is_some() { "Replace API key" } @else { "Set API key" } }
                    input id=(id) name="api_key" type="password" autocomplete="off" value=""
                        aria-invalid=[state.error("api_key").map(|_| "true")]
                        aria-describedby=(format!("{id}-hint"));
                    p.hint id=(format!("{id}-hint")) {
                        "Write-only: stored encrypted and never shown again. Leave empty to keep the current key."
                        @if state.failed() { " Re-enter the key if you were setting one." }
                    }
                    (render::field_error(state, id, "api_key"))
                }
            }
            button type="submit" { "Save" }
        }
    }
}

/// The "clear key" action, next to the layer form.
pub fn clear_key_form(session: &Session, action: &str, layer: &LayerState) -> Markup {
    html! {
        @if layer.api_key.is_some() {
            form.inline method="post" action=(action) {
                (render::csrf(session))
                button.danger type="submit" { "Clear API key" }
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
            p.hint id=(format!("{id}-hint")) { (hint) }
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
            state.api_error(e, &FIELD_NAMES);
            render_page(&app, &session, &state, None)
        }
    }
}

pub async fn clear_key(State(app): State<SharedApp>, posted: Posted) -> Response {
    let req = AiSettingsRequest {
        api_key: Patch::Clear,
        ..AiSettingsRequest::default()
    };
    match change_global(&app, &posted.session.who(), req).await {
        Ok(()) => render::see_other("/ai?done=key_cleared"),
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
