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
use wagate_events::settings::{
    AiSettings, BusinessHours, FieldSpec, Group, Kind, LayerState, Patch, SealedKey, Value, FIELDS,
};
use wagate_projections::effective::{self, Effective, Source, Sourced, Target};

use super::render::{self, FormState, Section};
use super::session::{Fields, Posted, Session};
use crate::app::SharedApp;
use crate::http::error::ApiError;
use crate::service::ai::{change_global, SettingsInput};

/// Names of the layer form's fields (for placing service errors).
pub fn field_names() -> Vec<&'static str> {
    FIELDS
        .iter()
        .map(|f| f.name)
        .chain(["api_key", "fallback_api_key"])
        .collect()
}

/// A stored layer as form values (empty = not set at this layer).
pub fn layer_values(s: &AiSettings) -> FormState {
    FormState::with(FIELDS.iter().map(|spec| {
        (
            spec.name,
            s.get(spec.field).map(|v| form_text(&v)).unwrap_or_default(),
        )
    }))
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
    let key = |set: &Sourced<bool>| {
        let text = if set.value { "set" } else { "not set" };
        Some((text.to_string(), set.source))
    };
    match name {
        "has_api_key" => return key(&e.has_api_key),
        "has_fallback_api_key" => return key(&e.has_fallback_api_key),
        "system_prompt" => return effective_field(e, "default_system_prompt"),
        _ => {}
    }
    let spec = FieldSpec::named(name)?;
    Some(match e.setting(spec.field) {
        Some((Value::Bool(b), source)) => (on_off(b), source),
        Some((v, source)) => (v.display(), source),
        // Only the fallback model's fields have no value; they take their source from the layer
        // that would set them.
        None => ("none".into(), Source::Default),
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

/// A value as its form field holds it: keywords one per line; business hours as the time zone
/// on the first line and one `days open-close` range per line.
fn form_text(v: &Value) -> String {
    match v {
        Value::List(items) => items.join("\n"),
        Value::Hours(h) => std::iter::once(h.time_zone.clone())
            .chain(
                h.ranges
                    .iter()
                    .map(|r| format!("{} {}-{}", r.days, r.open, r.close)),
            )
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.display(),
    }
}

/// Parses business hours as [`form_text`] writes them (checked by the settings' validation).
fn parse_hours(raw: &str) -> Result<Value, String> {
    let mut lines = raw.lines().map(str::trim).filter(|l| !l.is_empty());
    let time_zone = lines.next().unwrap_or_default().to_string();
    let mut ranges = Vec::new();
    for line in lines {
        let parsed = line
            .rsplit_once(char::is_whitespace)
            .and_then(|(days, hours)| {
                let (open, close) = hours.split_once('-')?;
                Some(wagate_events::hours::HoursRange {
                    days: days.trim().to_string(),
                    open: open.trim().to_string(),
                    close: close.trim().to_string(),
                })
            });
        match parsed {
            Some(r) => ranges.push(r),
            None => {
                return Err(format!(
                    "write the time zone on the first line, then one range per line like \
                     “mon-fri 09:00-18:00” (not “{line}”)"
                ))
            }
        }
    }
    Ok(Value::Hours(BusinessHours { time_zone, ranges }))
}

/// Parses one field of the form by its kind: `Ok(None)` for an empty field (clear: inherit),
/// `Err` with the message for a value the field cannot take.
fn parse_value(spec: &FieldSpec, raw: &str) -> Result<Option<Value>, String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let value = match spec.kind {
        Kind::Bool => match trimmed {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err("choose inherit, on or off".into()),
        },
        Kind::U32 { min, max } => Value::U32(
            trimmed
                .parse::<u32>()
                .ok()
                .filter(|v| (min..=max).contains(v))
                .ok_or(format!("a whole number from {min} to {max}"))?,
        ),
        Kind::U64 { min, max } => Value::U64(
            trimmed
                .parse::<u64>()
                .ok()
                .filter(|v| (min..=max).contains(v))
                .ok_or(format!("a whole number from {min} to {max}"))?,
        ),
        Kind::Float { min, max } => Value::Float(
            trimmed
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && (min..=max).contains(v))
                .ok_or(format!("a number from {min} to {max}"))?,
        ),
        // Keep the prompt as typed, with browser line ends normalized.
        Kind::Prompt { .. } => Value::Text(raw.replace("\r\n", "\n").trim().to_string()),
        Kind::Name { .. } | Kind::Url => Value::Text(trimmed.to_string()),
        Kind::Choice { options } => {
            if !options.contains(&trimmed) {
                return Err(format!("choose one of {}", options.join(", ")));
            }
            Value::Text(trimmed.to_string())
        }
        Kind::Keywords => Value::List(
            raw.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
        ),
        Kind::Hours => parse_hours(raw)?,
    };
    Ok(Some(value))
}

/// Parses the layer form. Absent fields are kept, empty ones cleared (inherit), others set;
/// every unparsable field is reported, and nothing is saved unless all parse.
pub fn parse_layer_form(f: &Fields) -> Result<SettingsInput, FormState> {
    let mut state = FormState::from_fields(f);
    let mut req = SettingsInput::default();
    for spec in FIELDS {
        let Some(raw) = f.opt(spec.name) else {
            continue;
        };
        match parse_value(spec, raw) {
            Ok(Some(v)) => req.set(spec.field, Patch::Set(v)),
            Ok(None) => req.set(spec.field, Patch::Clear),
            Err(msg) => state.invalid(spec.name, msg),
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

/// The settings a chat may override from its gear (`ChatControls`).
pub fn chat_controls() -> impl Iterator<Item = &'static FieldSpec> {
    FIELDS.iter().filter(|spec| spec.chat)
}

/// A chat's own controls as form values (empty = inherit).
pub fn chat_control_values(own: &ChatControls, state: &mut FormState) {
    for spec in chat_controls() {
        let v = own
            .get(spec.field)
            .map(|v| form_text(&v))
            .unwrap_or_default();
        state.values.insert(spec.name.into(), v);
    }
}

/// Parses the chat gear's controls with the ranges of the layers: absent keeps, empty clears
/// (inherit), a value sets; errors are reported on `state`.
pub fn parse_chat_controls(f: &Fields, state: &mut FormState) -> ChatControlsPatch {
    let mut patch = SettingsInput::default();
    for spec in chat_controls() {
        let Some(raw) = f.opt(spec.name) else {
            continue;
        };
        match parse_value(spec, raw) {
            Ok(Some(v)) => patch.set(spec.field, Patch::Set(v)),
            Ok(None) => patch.set(spec.field, Patch::Clear),
            Err(msg) => state.invalid(spec.name, msg),
        }
    }
    ChatControlsPatch::from_settings(&patch)
}

/// The chat gear's control inputs; `inherit` is what the chat gets without its own values.
pub fn chat_control_fields(inherit: &Effective, state: &FormState) -> Markup {
    html! {
        fieldset.controls #chat-controls {
            legend { "This chat's own settings" }
            p.hint { "Empty = the account / global value (shown under each field)." }
            div.grid {
                @for def in chat_controls() {
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
            fieldset.controls #when-to-speak {
                legend { "When the AI speaks" }
                p.hint { "Triggers, handoff to a human and business hours. A chat can override them from its gear." }
                div.grid {
                    @for def in FIELDS.iter().filter(|d| d.group == Group::Speak) {
                        (layer_field(def, inherit, state))
                    }
                }
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
    pub fn clear_request(self) -> SettingsInput {
        let mut req = SettingsInput::default();
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

fn layer_field(def: &FieldSpec, inherit: &Effective, state: &FormState) -> Markup {
    let id = format!("layer-{}", def.name);
    let (inh_value, inh_source) = effective_field(inherit, def.name)
        .map(|(v, s)| (short(&v), source_name(s)))
        .unwrap_or_default();
    let value = state.value(def.name);
    let hint = format!("Inherits: {inh_value} ({inh_source})");
    let invalid = state.error(def.name).map(|_| "true");
    let describedby = render::described_by(state, &id, def.name, true);
    html! {
        div.field.wide[matches!(def.kind, Kind::Prompt { .. } | Kind::Url | Kind::Keywords | Kind::Hours)] {
            label for=(id) { (def.label) }
            @match def.kind {
                Kind::Bool => {
                    select id=(id) name=(def.name) aria-invalid=[invalid] aria-describedby=[describedby] {
                        option value="" selected[value.is_empty()] { "inherit (" (inh_value) ")" }
                        option value="true" selected[value == "true"] { "on" }
                        option value="false" selected[value == "false"] { "off" }
                    }
                }
                Kind::Prompt { .. } => {
                    textarea id=(id) name=(def.name) rows="4" aria-invalid=[invalid] aria-describedby=[describedby] { (value) }
                }
                Kind::Keywords => {
                    textarea id=(id) name=(def.name) rows="3" placeholder="one per line" aria-invalid=[invalid] aria-describedby=[describedby] { (value) }
                }
                Kind::Hours => {
                    textarea id=(id) name=(def.name) rows="4" placeholder="Europe/Lisbon\nmon-fri 09:00-18:00\nsat 10:00-13:00" aria-invalid=[invalid] aria-describedby=[describedby] { (value) }
                }
                Kind::Choice { options } => {
                    select id=(id) name=(def.name) aria-invalid=[invalid] aria-describedby=[describedby] {
                        option value="" selected[value.is_empty()] { "inherit (" (inh_value) ")" }
                        @for o in options {
                            option value=(o) selected[value == *o] { (o) }
                        }
                    }
                }
                Kind::Float { min, max } => {
                    input id=(id) name=(def.name) type="number" step="0.01" min=(min) max=(max) value=(value)
                        placeholder=(inh_value) aria-invalid=[invalid] aria-describedby=[describedby];
                }
                Kind::U32 { min, max } => {
                    input id=(id) name=(def.name) type="number" step="1" min=(min) max=(max) value=(value)
                        placeholder=(inh_value) aria-invalid=[invalid] aria-describedby=[describedby];
                }
                Kind::U64 { min, max } => {
                    input id=(id) name=(def.name) type="number" step="1" min=(min) max=(max) value=(value)
                        placeholder=(inh_value) aria-invalid=[invalid] aria-describedby=[describedby];
                }
                Kind::Url => {
                    input id=(id) name=(def.name) type="url" value=(value) placeholder=(inh_value)
                        aria-invalid=[invalid] aria-describedby=[describedby];
                }
                Kind::Name { .. } => {
                    input id=(id) name=(def.name) type="text" value=(value) placeholder=(inh_value)
                        aria-invalid=[invalid] aria-describedby=[describedby];
                }
            }
            p.hint id=(format!("{id}-hint")) {
                (def.help) " "
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
                        tr { th scope="row" { "api_key" } td { @if env.has_api_key { "set" } @else { "—" } } td { "—" } (eff_cell(&now, "has_api_key")) }
                        @for spec in FIELDS {
                            tr {
                                th scope="row" { (spec.name) }
                                td { @match env.settings.get(spec.field) { Some(v) => (short(&v.display())), None => "—" } }
                                td { @match spec.default.value() { Some(Value::Bool(b)) => (on_off(b)), Some(v) => (short(&v.display())), None => "none" } }
                                (eff_cell(&now, spec.name))
                            }
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
            state.api_error(ApiError::from(e), &field_names());
            render_page(&app, &session, &state, None)
        }
    }
}

pub async fn clear_key(State(app): State<SharedApp>, posted: Posted) -> Response {
    let kind = KeyKind::from_form(&posted.fields);
    match change_global(&app, &posted.session.who(), kind.clear_request()).await {
        Ok(()) => render::see_other(&format!("/ai?done={}", kind.cleared_notice())),
        Err(e) => render::api_error_page(&ApiError::from(e)),
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
