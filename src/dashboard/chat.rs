//! `/accounts/:id/chats/:jid`: the thread (inbound messages, AI replies, operator and test
//! messages, failed or skipped replies marked), the operator send box, the gear opening the
//! chat's own settings (mode, custom system prompt, blocked), the effective config with the
//! source of each value, and (sandbox) a form simulating the customer.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use maud::{html, Markup};
use wagate_events::chat::Source as MsgSource;
use wagate_events::chat_settings::{ChatMode, ChatSettings, ChatSettingsCommand};
use wagate_events::ids::chat_kind;
use wagate_events::settings::Patch;
use wagate_projections::effective;
use wagate_projections::messages::{AiLogRow, MessageView, ReplyStatus};

use super::accounts::inject;
use super::ai::{self as layer, eff_cell, Done};
use super::render::{self, FormState, Section};
use super::session::{Posted, Session};
use crate::app::cold;
use crate::app::SharedApp;
use crate::http::error::ApiError;
use crate::service::accounts::require_live;
use crate::service::ai::{change_chat, resume_chat};
use crate::service::messages::send_as_account;

/// Messages shown in the thread (the most recent).
const THREAD_LIMIT: usize = 200;

#[derive(Default)]
struct ChatForms {
    send: FormState,
    settings: Option<FormState>,
    inbound: FormState,
    done: Option<String>,
}

/// One entry of the thread, in history order.
enum Entry<'a> {
    Message(&'a MessageView),
    Reply(&'a AiLogRow),
}

impl Entry<'_> {
    fn position(&self) -> i64 {
        match self {
            Entry::Message(m) => m.position,
            Entry::Reply(r) => r.position,
        }
    }
}

/// Checks the account and the JID: `Some` is the error page to answer instead.
fn check(app: &SharedApp, acc: &str, jid: &str) -> Option<Response> {
    if let Err(e) = chat_kind(jid, "jid") {
        return Some(render::api_error_page(&ApiError::from(e)));
    }
    if require_live(app, acc).is_err() {
        return Some(render::error_page(
            StatusCode::NOT_FOUND,
            "No such account.",
        ));
    }
    None
}

pub async fn show(
    State(app): State<SharedApp>,
    session: Session,
    Path((acc, jid)): Path<(String, String)>,
    Query(q): Query<Done>,
) -> Response {
    let forms = ChatForms {
        done: q.done,
        ..ChatForms::default()
    };
    render_chat(&app, &session, &acc, &jid, forms).await
}

/// The chat page's live feed (Server-Sent Events): a `changed` event each time the read models
/// fold events of this chat (a message, the AI's typing, a reply's progress), so the page
/// refreshes its thread within a fold of the commit instead of polling.
pub async fn live(
    State(app): State<SharedApp>,
    _session: Session,
    Path((acc, jid)): Path<(String, String)>,
) -> Response {
    if let Some(page) = check(&app, &acc, &jid) {
        return page;
    }
    let stream = format!("{acc}/{jid}");
    super::live::feed(&app, move |chat| chat == stream)
}

fn mode_str(m: ChatMode) -> &'static str {
    match m {
        ChatMode::Inherit => "inherit",
        ChatMode::Enabled => "enabled",
        ChatMode::Disabled => "disabled",
    }
}

async fn render_chat(
    app: &SharedApp,
    session: &Session,
    acc: &str,
    jid: &str,
    forms: ChatForms,
) -> Response {
    if let Some(page) = check(app, acc, jid) {
        return page;
    }
    if let Err(e) = app.catch_up().await {
        return render::api_error_page(&ApiError::from(e));
    }
    let Ok(kind) = chat_kind(jid, "jid") else {
        return render::error_page(StatusCode::BAD_REQUEST, "Not a chat JID.");
    };
    let (settings, eff, inherit, sandbox) = {
        let m = app.model();
        let settings = m.chat(acc, jid).cloned().unwrap_or_default();
        let eff = effective::resolve(&m, &app.env_layer, acc, jid, kind);
        // What the chat gets without its own controls (the hints of the gear's control fields).
        let without_controls = ChatSettings {
            controls: Default::default(),
            ..settings.clone()
        };
        let inherit = effective::resolve_layers(
            &without_controls,
            m.account(acc).map(|a| &a.ai),
            &m.global,
            &app.env_layer,
            effective::Target {
                account_id: acc,
                jid,
                chat_kind: kind,
                position: m.position,
            },
        );
        let sandbox = m
            .account(acc)
            .is_some_and(|a| matches!(a.transport, wagate_events::account::Transport::Sandbox));
        (settings, eff, inherit, sandbox)
    };
    let Some(eff) = eff else {
        return render::error_page(StatusCode::NOT_FOUND, "No such account.");
    };
    let settings_state = forms.settings.clone().unwrap_or_else(|| {
        let mut s = FormState::with([
            ("mode", mode_str(settings.mode).to_string()),
            (
                "custom_system_prompt",
                settings.custom_system_prompt.clone().unwrap_or_default(),
            ),
        ]);
        if settings.blocked {
            s.values.insert("blocked".into(), "on".into());
        }
        layer::chat_control_values(&settings.controls, &mut s);
        s
    });
    let inbound_state = if forms.inbound.values.is_empty() {
        FormState::with([("from", jid.split('@').next().unwrap_or(jid).to_string())])
    } else {
        forms.inbound.clone()
    };
    let status = [
        forms.send.status(),
        forms
            .settings
            .as_ref()
            .map_or(StatusCode::OK, FormState::status),
        forms.inbound.status(),
    ]
    .into_iter()
    .find(|s| *s != StatusCode::OK)
    .unwrap_or(StatusCode::OK);
    let base = render::chat_href(acc, jid);
    let (thread_msgs, rows) = match cold::thread(app, acc, jid, THREAD_LIMIT).await {
        Ok(t) => t,
        Err(e) => return render::api_error_page(&ApiError::from(e)),
    };
    let mut entries: Vec<Entry<'_>> = thread_msgs.iter().map(Entry::Message).collect();
    entries.extend(
        rows.iter()
            .filter(|r| !matches!(r.status, ReplyStatus::Sent))
            .map(Entry::Reply),
    );
    entries.sort_by_key(Entry::position);
    let body = html! {
        (render::notice(forms.done.as_deref()))
        p.crumbs { a href=(format!("/accounts/{}", render::enc(acc))) { "Account " (acc) } " · " (kind_name(kind))
            " · AI: " strong #ai-state { @if eff.will_reply { "will reply" } @else { "will not reply" } }
            @if let Some(r) = &eff.reason { " (" span title=[eff.reason_code.map(|c| c.as_str())] { (r) } ")" } }
        @if let Some(until) = eff.paused_until.filter(|u| *u > Utc::now()) {
            div.alert.warn #ai-paused role="status" {
                p { strong { "AI paused in this chat" } " until " (render::when(&until))
                    @if let Some(cause) = eff.pause_cause { " because " (cause.describe()) }
                    ". A person is handling this conversation; the AI steps back for the account's human-takeover time." }
                form.inline method="post" action=(format!("{base}/resume")) {
                    (render::csrf(session))
                    button type="submit" { "Resume AI now" }
                }
            }
        }
        details.gear #chat-settings open[settings_state.failed()] {
            summary { span aria-hidden="true" { "⚙" } " Chat AI settings" }
            form.card method="post" action=(format!("{base}/settings")) novalidate {
                (render::csrf(session))
                (render::form_error(&settings_state))
                fieldset {
                    legend { "AI mode for this chat" }
                    @for (value, label) in [("inherit", "Inherit (account / global)"), ("enabled", "Enabled"), ("disabled", "Disabled")] {
                        div.radio {
                            input type="radio" name="mode" id=(format!("mode-{value}")) value=(value)
                                checked[settings_state.value("mode") == value];
                            label for=(format!("mode-{value}")) { (label) }
                        }
                    }
                    (render::field_error(&settings_state, "mode", "mode"))
                }
                (render::textarea_field(&settings_state, "chat", "custom_system_prompt", "Custom system prompt", 4,
                    Some("Replaces the system prompt of the layers above for this chat. Empty = inherit.")))
                div.check {
                    input type="checkbox" id="chat-blocked" name="blocked" value="on" checked[settings_state.value("blocked") == "on"];
                    label for="chat-blocked" { "Blocked (never answered)" }
                }
                (layer::chat_control_fields(&inherit, &settings_state))
                button type="submit" { "Save chat settings" }
            }
        }
        section aria-labelledby="thread-h" {
            h2 #thread-h { "Messages" }
            p { a href=(base.clone()) { "Refresh" } }
            @if entries.is_empty() {
                p { "No messages yet." }
            }
            ol.thread #thread {
                @for e in &entries { (entry(e)) }
            }
        }
        section aria-labelledby="send-h" {
            h2 #send-h { "Send as the account" }
            form.card method="post" action=(format!("{base}/send")) novalidate {
                (render::csrf(session))
                (render::form_error(&forms.send))
                (render::textarea_field(&forms.send, "send", "text", "Message", 3, None))
                button type="submit" { "Send" }
            }
        }
        @if sandbox {
            section aria-labelledby="inbound-h" {
                h2 #inbound-h { "Simulate the customer (sandbox)" }
                form.card method="post" action=(format!("{base}/inbound")) novalidate {
                    (render::csrf(session))
                    (render::form_error(&inbound_state))
                    input type="hidden" name="chat_id" value=(jid);
                    (render::text_field(&inbound_state, "inbound", "from", "From", "text", None))
                    (render::textarea_field(&inbound_state, "inbound", "text", "Incoming message", 3, None))
                    button type="submit" { "Inject incoming message" }
                }
            }
        }
        section aria-labelledby="eff-h" {
            h2 #eff-h { "Effective config" }
            div.scroll { table #effective {
                thead { tr { th scope="col" { "Field" } th scope="col" { "Value and source" } } }
                tbody {
                    tr { th scope="row" { "mode" } td { span.value { (mode_str(eff.mode)) } " " span.src { "chat" } } }
                    tr { th scope="row" { "blocked" } td { span.value { (eff.blocked) } " " span.src { "chat" } } }
                    @for name in ["enabled", "base_url", "model_name", "system_prompt", "temperature", "max_tokens",
                                  "timeout_seconds", "reply_delay_seconds", "reply_to_private", "reply_to_groups",
                                  "reply_to_channels", "echo_mode", "has_api_key",
                                  "human_takeover_minutes", "debounce_seconds", "max_replies_per_chat_per_hour",
                                  "daily_token_budget", "max_history_tokens", "history_window_hours", "max_retries",
                                  "fallback_model_name", "fallback_base_url", "has_fallback_api_key"] {
                        tr { th scope="row" { (name) } (eff_cell(&eff, name)) }
                    }
                }
            } }
            @if let Some(note) = &eff.api_key_note { p.alert.warn { (note) } }
            p { a href=(format!("/test?account_id={}&chat_id={}", render::enc(acc), render::enc(jid))) { "Test the AI for this chat" }
                " · " a href=(format!("/logs?account_id={}&chat_id={}", render::enc(acc), render::enc(jid))) { "AI log of this chat" }
                " · " a href=(format!("/audit?account_id={}&chat_id={}", render::enc(acc), render::enc(jid))) { "Audit" } }
        }
    };
    render::respond(
        status,
        render::page(
            &format!("Chat {jid}"),
            Some(session),
            Section::Accounts,
            body,
        ),
    )
}

fn kind_name(k: wagate_events::ids::ChatKind) -> &'static str {
    use wagate_events::ids::ChatKind as K;
    match k {
        K::Private => "private chat",
        K::Group => "group",
        K::Channel => "channel",
        K::Broadcast => "broadcast",
    }
}

fn entry(e: &Entry<'_>) -> Markup {
    match e {
        Entry::Message(m) => {
            let (class, who) = match m.source {
                MsgSource::Customer => ("in", "Customer"),
                MsgSource::Ai => ("out ai", "AI reply"),
                MsgSource::Operator
                    if m.from_me
                        && m.direction == wagate_projections::messages::Direction::Inbound =>
                {
                    ("out op", "Operator (other device)")
                }
                MsgSource::Operator => ("out op", "Operator"),
                MsgSource::Test => ("out test", "AI test"),
            };
            html! {
                li class=(format!("msg {class}")) {
                    p.meta { span.who { (who) } " · " (m.from) " · " (render::when(&m.created_at)) }
                    p.text { (m.text) }
                    @if let Some(media) = &m.media {
                        p.meta.media { (m.kind.as_str()) " · " (media.mime_type) " · " (media.size) " bytes" }
                    }
                    @if let Some(t) = &m.transcript {
                        p.text.transcript { "Transcript: " (t) }
                    }
                }
            }
        }
        Entry::Reply(r) => {
            let (class, label) = match r.status {
                ReplyStatus::Failed => ("note failed", "AI reply failed"),
                ReplyStatus::Skipped => ("note skipped", "AI reply skipped"),
                ReplyStatus::Pending => ("note pending", "AI reply pending…"),
                ReplyStatus::Generated => ("note pending", "AI reply generated, sending…"),
                ReplyStatus::Sent => ("note", "AI reply sent"),
            };
            html! {
                li class=(class) {
                    p.meta { span.who { (label) } " · " (render::when(&r.updated_at)) }
                    @if let Some(reason) = &r.reason { p.text title=[r.reason_code.map(|c| c.as_str())] { (reason) } }
                }
            }
        }
    }
}

pub async fn send(
    State(app): State<SharedApp>,
    Path((acc, jid)): Path<(String, String)>,
    posted: Posted,
) -> Response {
    let Posted { session, fields } = posted;
    if let Some(page) = check(&app, &acc, &jid) {
        return page;
    }
    let text = fields.get("text").replace("\r\n", "\n");
    let mut state = FormState::from_fields(&fields);
    if text.trim().is_empty() {
        state.invalid("text", "must not be empty");
    } else {
        match send_as_account(&app, &session.who(), &acc, &jid, &text, MsgSource::Operator).await {
            Ok(_) => {
                return render::see_other(&format!("{}?done=sent", render::chat_href(&acc, &jid)))
            }
            Err(e) => state.api_error(e.into(), &["text"]),
        }
    }
    let forms = ChatForms {
        send: state,
        ..ChatForms::default()
    };
    render_chat(&app, &session, &acc, &jid, forms).await
}

pub async fn save_settings(
    State(app): State<SharedApp>,
    Path((acc, jid)): Path<(String, String)>,
    posted: Posted,
) -> Response {
    let Posted { session, fields } = posted;
    if let Some(page) = check(&app, &acc, &jid) {
        return page;
    }
    let mut state = FormState::from_fields(&fields);
    let mode = match fields.get("mode") {
        "inherit" => Some(ChatMode::Inherit),
        "enabled" => Some(ChatMode::Enabled),
        "disabled" => Some(ChatMode::Disabled),
        _ => {
            state.invalid("mode", "choose inherit, enabled or disabled");
            None
        }
    };
    let blocked = match fields.opt("blocked") {
        None => false,
        Some("on") => true,
        Some(_) => {
            state.invalid("blocked", "a checkbox: on or absent");
            false
        }
    };
    let controls = layer::parse_chat_controls(&fields, &mut state);
    if !state.failed() {
        let prompt = fields
            .get("custom_system_prompt")
            .replace("\r\n", "\n")
            .trim()
            .to_string();
        let prompt = if prompt.is_empty() {
            Patch::Clear
        } else {
            Patch::Set(prompt)
        };
        let who = session.who();
        let result = async {
            change_chat(
                &app,
                &who,
                &acc,
                &jid,
                ChatSettingsCommand::SetAi {
                    mode,
                    custom_system_prompt: prompt,
                    controls,
                },
            )
            .await?;
            let current = app.model().chat(&acc, &jid).is_some_and(|c| c.blocked);
            if current != blocked {
                change_chat(
                    &app,
                    &who,
                    &acc,
                    &jid,
                    ChatSettingsCommand::SetBlocked { blocked },
                )
                .await?;
            }
            Ok::<(), ApiError>(())
        }
        .await;
        match result {
            Ok(()) => {
                return render::see_other(&format!("{}?done=saved", render::chat_href(&acc, &jid)))
            }
            Err(e) => {
                let names: Vec<&str> = ["mode", "custom_system_prompt", "blocked"]
                    .into_iter()
                    .chain(layer::chat_controls().map(|spec| spec.name))
                    .collect();
                state.api_error(e, &names)
            }
        }
    }
    let forms = ChatForms {
        settings: Some(state),
        ..ChatForms::default()
    };
    render_chat(&app, &session, &acc, &jid, forms).await
}

pub async fn inbound(
    State(app): State<SharedApp>,
    Path((acc, jid)): Path<(String, String)>,
    posted: Posted,
) -> Response {
    let Posted { session, fields } = posted;
    if let Some(page) = check(&app, &acc, &jid) {
        return page;
    }
    let mut pairs = fields.0.clone();
    pairs.retain(|(k, _)| k != "chat_id");
    pairs.push(("chat_id".into(), jid.clone()));
    let fields = super::session::Fields(pairs);
    match inject(&app, &session.who(), &acc, &fields).await {
        Ok(_) => render::see_other(&format!("{}?done=injected", render::chat_href(&acc, &jid))),
        Err(state) => {
            let forms = ChatForms {
                inbound: state,
                ..ChatForms::default()
            };
            render_chat(&app, &session, &acc, &jid, forms).await
        }
    }
}

/// "Resume AI now": ends the chat's human-takeover pause.
pub async fn resume(
    State(app): State<SharedApp>,
    Path((acc, jid)): Path<(String, String)>,
    posted: Posted,
) -> Response {
    if let Some(page) = check(&app, &acc, &jid) {
        return page;
    }
    match resume_chat(&app, &posted.session.who(), &acc, &jid).await {
        Ok(_) => render::see_other(&format!("{}?done=resumed", render::chat_href(&acc, &jid))),
        Err(e) => render::api_error_page(&ApiError::from(e)),
    }
}
