//! `/accounts` and `/accounts/:id`: the account list and creation, an account's AI overrides,
//! its API tokens (a new token is shown once, on the page answering the POST, never again), its
//! chats, and a form to inject an incoming message into a sandbox account.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup, PreEscaped};
use wagate_events::account::Transport;
use wagate_events::whatsapp_web::{WebConnectionState, WebState};
use wagate_projections::connection::{self, ConnectionState, ConnectionStatus};

use super::ai::{self as layer, Done};
use super::render::{self, FormState, Section};
use super::session::{Posted, Session};
use crate::app::{SharedApp, Who};
use crate::http::error::ApiError;
use crate::service::accounts::{
    create, delete, issue_token, require_live, revoke_token as revoke, CloudApiInput, CreatedToken,
    NewAccount,
};
use crate::service::ai::change_account_ai;
use crate::service::messages::{chat_summaries, inject_inbound, ChatSearch, InboundMessage};
use crate::service::whatsapp_web;
use serde::Deserialize;

pub async fn list(
    State(app): State<SharedApp>,
    session: Session,
    Query(q): Query<Done>,
) -> Response {
    let state = FormState::with([("transport", "sandbox")]);
    render_list(&app, &session, &state, q.done.as_deref()).await
}

async fn render_list(
    app: &SharedApp,
    session: &Session,
    state: &FormState,
    done: Option<&str>,
) -> Response {
    // The connection status includes what this process committed before the request.
    if let Err(e) = app.catch_up_own().await {
        return render::api_error_page(&ApiError::from(e));
    }
    let accounts: Vec<_> = {
        let m = app.model();
        let messages = app.messages();
        let mut v: Vec<_> = m
            .accounts
            .values()
            .filter(|a| !a.deleted)
            .map(|a| {
                let status = connection::status(a, messages.connection.activity(&a.id));
                (a.clone(), status)
            })
            .collect();
        v.sort_by(|(a, _), (b, _)| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        v
    };
    let body = html! {
        (render::notice(done))
        section aria-labelledby="list-h" {
            h2 #list-h { "Accounts" }
            @if accounts.is_empty() {
                p { "No accounts yet. Create one below." }
            } @else {
                div.scroll { table {
                    thead { tr { th scope="col" { "Id" } th scope="col" { "Name" } th scope="col" { "Transport" } th scope="col" { "Connection" } th scope="col" { "Created" } } }
                    tbody {
                        @for (a, status) in &accounts {
                            tr {
                                td { a href=(format!("/accounts/{}", render::enc(&a.id))) { (a.id) } }
                                td { (a.name) }
                                td { (transport_name(a.transport)) }
                                td { (connection_badge(status.state)) }
                                td { (render::when(&a.created_at)) }
                            }
                        }
                    }
                } }
            }
        }
        section aria-labelledby="create-h" {
            h2 #create-h { "Create an account" }
            form.card method="post" action="/accounts" novalidate {
                (render::csrf(session))
                (render::form_error(state))
                (render::text_field(state, "create", "id", "Id", "text", Some("Lowercase letters, digits, - and _; starts with a letter or digit; at most 63 characters.")))
                (render::text_field(state, "create", "name", "Display name", "text", Some("Optional; defaults to the id.")))
                div.field {
                    label for="create-transport" { "Transport" }
                    select #create-transport name="transport" aria-invalid=[state.error("transport").map(|_| "true")]
                        aria-describedby=[render::described_by(state, "create-transport", "transport", false)] {
                        option value="sandbox" selected[state.value("transport") == "sandbox"] { "sandbox (embedded, for trying things out)" }
                        option value="cloud_api" selected[state.value("transport") == "cloud_api"] { "cloud_api (WhatsApp Business Cloud API)" }
                        option value="whatsapp_web" selected[state.value("transport") == "whatsapp_web"] { "whatsapp_web (a phone's WhatsApp, linked by QR code)" }
                    }
                    (render::field_error(state, "create-transport", "transport"))
                }
                fieldset {
                    legend { "Cloud API settings (only with the cloud_api transport; see docs/OPERATIONS.md)" }
                    (render::field_error(state, "create-cloud", "cloud_api"))
                    (render::text_field(state, "create", "cloud_api.phone_number_id", "Phone number id", "text", Some("Digits, from your Meta app's WhatsApp > API Setup page.")))
                    (render::text_field(state, "create", "cloud_api.business_account_id", "WhatsApp Business Account id", "text", None))
                    (render::text_field(state, "create", "cloud_api.access_token", "Access token", "password", Some("Stored encrypted, never shown again.")))
                    (render::text_field(state, "create", "cloud_api.app_secret", "App secret", "password", Some("Stored encrypted; verifies Meta's webhook signatures.")))
                    (render::text_field(state, "create", "cloud_api.verify_token", "Webhook verify token", "password", Some("The token you also enter in Meta's webhook configuration.")))
                    (render::text_field(state, "create", "cloud_api.graph_base_url", "Graph API base URL", "url", Some("Optional; default https://graph.facebook.com.")))
                    (render::text_field(state, "create", "cloud_api.graph_version", "Graph API version", "text", Some("Optional; default v21.0.")))
                }
                button type="submit" { "Create account" }
            }
        }
    };
    render::respond(
        state.status(),
        render::page("Accounts", Some(session), Section::Accounts, body),
    )
}

/// The create form's fields (errors are shown next to them).
const CREATE_FIELDS: [&str; 11] = [
    "id",
    "name",
    "transport",
    "cloud_api",
    "cloud_api.phone_number_id",
    "cloud_api.business_account_id",
    "cloud_api.access_token",
    "cloud_api.app_secret",
    "cloud_api.verify_token",
    "cloud_api.graph_base_url",
    "cloud_api.graph_version",
];

/// The connection state as a badge: its words carry the meaning, the colour only repeats it.
fn connection_badge(state: ConnectionState) -> Markup {
    html! { span class=(format!("badge conn-{}", state.as_str())) data-state=(state.as_str()) { (state.label()) } }
}

/// An optional time, or what its absence means.
fn when_or(t: Option<&chrono::DateTime<chrono::Utc>>, none: &str) -> Markup {
    match t {
        Some(t) => render::when(t),
        None => html! { (none) },
    }
}

/// The account page's "Connection" panel: the state and what it was derived from.
fn connection_panel(status: &ConnectionStatus, token_reason: Option<&str>) -> Markup {
    let explain = match status.state {
        ConnectionState::Sandbox => "Messages stay inside the gateway; nothing reaches WhatsApp.",
        ConnectionState::Waiting => {
            "Configured; nothing has come in from Meta or been sent yet. Check the webhook in Meta's app settings."
        }
        ConnectionState::Connected => "Messages come in from Meta or go out through the Graph API.",
        ConnectionState::SendFailing => {
            "The last send failed and nothing was sent successfully since."
        }
        ConnectionState::TokenRejected => {
            "Meta rejected the access token; nothing is sent until a new one is set (PATCH /v1/accounts/{acc}/cloud_api)."
        }
        ConnectionState::Stopped => "Not connected. Connect it to pair a phone or to resume its session.",
        ConnectionState::Pairing => {
            "Waiting for the phone: scan the QR code below in WhatsApp > Linked devices."
        }
        ConnectionState::Connecting => "Connecting with the paired session.",
        ConnectionState::Disconnected => "The connection dropped; it reconnects by itself.",
        ConnectionState::LoggedOut => {
            "The device was unlinked and its session erased. Connect again to pair a phone."
        }
        ConnectionState::TemporarilyBanned => {
            "WhatsApp banned this number for a while; nothing is sent until the ban ends."
        }
        ConnectionState::ClientOutdated => {
            "WhatsApp refuses this gateway's client version; upgrade the gateway, then connect again."
        }
        ConnectionState::StreamReplaced => {
            "Another connection took this session over (a second gateway or a copy of the session). Connect again here to take it back."
        }
    };
    html! {
        section aria-labelledby="connection-h" {
            h2 #connection-h { "Connection" }
            dl.facts #connection {
                dt { "State" } dd #connection-state { (connection_badge(status.state)) " " (explain) }
                dt { "Last inbound" } dd { (when_or(status.last_inbound_at.as_ref(), "nothing received yet")) }
                dt { "Last sent" } dd { (when_or(status.last_sent_at.as_ref(), "nothing sent yet")) }
                dt { "Last send error" } dd.clip #connection-error {
                    @match &status.last_send_error {
                        Some(e) => { (e.reason) " (" (render::when(&e.at)) ")" }
                        None => "none",
                    }
                }
                @if let Some(reason) = token_reason {
                    dt { "Token" } dd.clip { "rejected: " (reason) }
                }
            }
        }
    }
}

/// A `whatsapp_web` account's panel: the connection, the QR code or pair code while pairing
/// (the page polls the panel until it is paired), and the connect and logout forms.
fn whatsapp_web_panel(
    app: &SharedApp,
    session: &Session,
    acc: &str,
    web: &WebState,
    form: &FormState,
) -> Markup {
    let pairing = app
        .web
        .get()
        .and_then(|w| w.pairing(acc).ok())
        .unwrap_or_default();
    let waiting = matches!(
        web.state,
        WebConnectionState::Pairing | WebConnectionState::Connecting
    );
    let base = format!("/accounts/{}/whatsapp-web", render::enc(acc));
    let svg = pairing
        .qr
        .as_ref()
        .and_then(|o| o.svg.as_deref().map(str::to_string))
        .map(|s| match s.find("<svg") {
            Some(i) => s[i..].to_string(),
            None => s,
        });
    html! {
        section #wa-panel aria-labelledby="wa-h" data-poll=[waiting.then_some("3")] {
            h2 #wa-h { "WhatsApp Web" }
            p #wa-state {
                "State: " strong data-state=(web.state.as_str()) { (web.state.as_str()) }
                @if let Some(r) = &web.reason { " · " span.clip { (r) } }
            }
            @if let (Some(svg), Some(qr)) = (&svg, &pairing.qr) {
                figure #wa-qr {
                    (PreEscaped(svg))
                    figcaption {
                        "On the phone: WhatsApp › Settings › Linked devices › Link a device, then scan this code. It changes by itself; this one expires " (render::when(&qr.expires_at)) "."
                    }
                }
            }
            @if let Some(code) = &pairing.pair_code {
                p #wa-pair-code {
                    "On the phone: Linked devices › Link with phone number instead, then enter "
                    strong { (code.code) } " (expires " (render::when(&code.expires_at)) ")."
                }
            }
            @if let Some(e) = &pairing.pair_error {
                p.alert.error role="alert" { "Pairing ended: " (e) }
            }
            form method="post" action=(format!("{base}/connect")) {
                (render::csrf(session))
                (render::form_error(form))
                label for="wa-phone" { "Phone number for a pair code (optional, with country code)" }
                input #wa-phone type="text" name="phone_number" inputmode="tel" autocomplete="off"
                    value=(form.value("phone_number"))
                    aria-invalid=[form.error("phone_number").map(|_| "true")]
                    aria-describedby=[render::described_by(form, "wa-phone", "phone_number", false)];
                (render::field_error(form, "wa-phone", "phone_number"))
                button type="submit" { "Connect" }
            }
            @if !matches!(web.state, WebConnectionState::Stopped | WebConnectionState::LoggedOut) {
                form method="post" action=(format!("{base}/logout")) {
                    (render::csrf(session))
                    button.danger type="submit" { "Log out and unlink this device" }
                }
            }
        }
    }
}

/// Connects a `whatsapp_web` account (pairing when it has no session).
pub async fn web_connect(
    State(app): State<SharedApp>,
    Path(acc): Path<String>,
    posted: Posted,
) -> Response {
    let Posted { session, fields } = posted;
    // People type numbers with spaces, dashes and brackets; the API takes digits.
    let phone = fields.nonblank("phone_number").map(|p| {
        p.chars()
            .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
            .collect::<String>()
    });
    match whatsapp_web::connect(&app, &session.who(), &acc, phone.as_deref()).await {
        Ok(_) => render::see_other(&format!("/accounts/{}#wa-h", render::enc(&acc))),
        Err(e) => {
            let mut state = FormState::from_fields(&fields);
            state.api_error(e.into(), &["phone_number"]);
            let forms = AccountForms {
                web: state,
                ..AccountForms::default()
            };
            render_account(&app, &session, &acc, forms).await
        }
    }
}

/// Unlinks a `whatsapp_web` account's device and erases its session.
pub async fn web_logout(
    State(app): State<SharedApp>,
    Path(acc): Path<String>,
    posted: Posted,
) -> Response {
    let Posted { session, .. } = posted;
    match whatsapp_web::logout(&app, &session.who(), &acc).await {
        Ok(_) => render::see_other(&format!(
            "/accounts/{}?done=logged_out#wa-h",
            render::enc(&acc)
        )),
        Err(e) => render::api_error_page(&ApiError::from(e)),
    }
}

fn transport_name(t: Transport) -> &'static str {
    t.as_str()
}

pub async fn create_account(State(app): State<SharedApp>, posted: Posted) -> Response {
    let Posted { session, fields } = posted;
    let id = fields.get("id").trim().to_string();
    let transport = fields.get("transport").to_string();
    let cloud_api = (transport == "cloud_api").then(|| CloudApiInput {
        phone_number_id: fields.get("cloud_api.phone_number_id").trim().to_string(),
        business_account_id: fields
            .get("cloud_api.business_account_id")
            .trim()
            .to_string(),
        access_token: fields.get("cloud_api.access_token").trim().to_string(),
        app_secret: fields.get("cloud_api.app_secret").trim().to_string(),
        verify_token: fields.get("cloud_api.verify_token").trim().to_string(),
        graph_base_url: fields.nonblank("cloud_api.graph_base_url"),
        graph_version: fields.nonblank("cloud_api.graph_version"),
    });
    let req = NewAccount {
        id: id.clone(),
        name: fields.nonblank("name"),
        transport,
        cloud_api,
    };
    match create(&app, &session.who(), req).await {
        Ok(_) => render::see_other(&format!("/accounts/{}?done=created", render::enc(&id))),
        Err(e) => {
            let mut state = FormState::from_fields(&fields);
            state.api_error(e.into(), &CREATE_FIELDS);
            render_list(&app, &session, &state, None).await
        }
    }
}

/// The forms of an account page, each with its own values and errors.
#[derive(Default)]
struct AccountForms {
    layer: Option<FormState>,
    token: FormState,
    new_token: Option<CreatedToken>,
    inbound: FormState,
    delete: FormState,
    /// The WhatsApp Web connect form (a refused phone number).
    web: FormState,
    done: Option<String>,
    /// The chat list's page: chats whose newest message is before this position.
    chats_before: Option<i64>,
    /// The chat search as typed (`q`: a number or a name).
    chat_search: String,
}

/// Chats on one page of the account view.
const CHATS_PAGE: usize = 100;

#[derive(Debug, Deserialize)]
pub struct ShowQuery {
    pub done: Option<String>,
    pub chats_before: Option<i64>,
    /// Search the chats by number or name.
    pub q: Option<String>,
}

/// The account page's live feed: a `changed` event each time the read models fold events of one
/// of the account's chats, so the page refreshes its chat list.
pub async fn live(
    State(app): State<SharedApp>,
    _session: Session,
    Path(acc): Path<String>,
) -> Response {
    if require_live(&app, &acc).is_err() {
        return render::error_page(StatusCode::NOT_FOUND, "No such account.");
    }
    let prefix = format!("{acc}/");
    super::live::feed(&app, move |chat| chat.starts_with(&prefix))
}

pub async fn show(
    State(app): State<SharedApp>,
    session: Session,
    Path(acc): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Response {
    render_account(
        &app,
        &session,
        &acc,
        AccountForms {
            done: q.done,
            chats_before: q.chats_before,
            chat_search: q.q.unwrap_or_default(),
            ..AccountForms::default()
        },
    )
    .await
}

async fn render_account(
    app: &SharedApp,
    session: &Session,
    acc: &str,
    forms: AccountForms,
) -> Response {
    if let Err(e) = app.catch_up().await {
        return render::api_error_page(&ApiError::from(e));
    }
    let (account, global, conn) = {
        let m = app.model();
        match m.account(acc) {
            Some(a) => {
                let conn = connection::status(a, app.messages().connection.activity(acc));
                (a.clone(), m.global.clone(), conn)
            }
            None => return render::error_page(StatusCode::NOT_FOUND, "No such account."),
        }
    };
    let token_reason = account
        .cloud_api
        .as_ref()
        .and_then(|c| c.token_invalid.clone());
    let mut search_state = FormState::with([("q", forms.chat_search.trim())]);
    let search = ChatSearch::parse(&forms.chat_search, "q").unwrap_or_else(|e| {
        search_state.api_error(e.into(), &["q"]);
        None
    });
    let chats = if search_state.failed() {
        vec![]
    } else {
        chat_summaries(app, acc, forms.chats_before, CHATS_PAGE, search.as_ref())
    };
    // Pager links keep the search.
    let searched = match &search {
        Some(_) => format!("q={}&", render::enc(forms.chat_search.trim())),
        None => String::new(),
    };
    let older_chats = (chats.len() == CHATS_PAGE)
        .then(|| chats.last().map(|c| c.position))
        .flatten();
    let inherit = layer::inherited(app, Some(&global));
    let layer_state = forms
        .layer
        .clone()
        .unwrap_or_else(|| layer::layer_values(&account.ai.settings));
    let base = format!("/accounts/{}", render::enc(acc));
    let inbound = if forms.inbound.values.is_empty() {
        FormState::with([
            ("from", "+4917600000000"),
            ("chat_id", "4917600000000@s.whatsapp.net"),
        ])
    } else {
        forms.inbound.clone()
    };
    let status = [
        forms.layer.as_ref().map(FormState::status),
        Some(forms.token.status()),
        Some(forms.inbound.status()),
        Some(forms.delete.status()),
        Some(forms.web.status()),
        Some(search_state.status()),
    ]
    .into_iter()
    .flatten()
    .find(|s| *s != StatusCode::OK)
    .unwrap_or(StatusCode::OK);
    let body = html! {
        (render::notice(forms.done.as_deref()))
        p { (account.name) " · " (transport_name(account.transport)) " · created " (render::when(&account.created_at)) }
        nav.local aria-label="On this page" {
            a href="#connection-h" { "Connection" } " · " a href="#overrides-h" { "AI overrides" } " · " a href="#tokens-h" { "Tokens" } " · " a href="#chats-h" { "Chats" }
            " · " a href=(format!("/audit?account_id={}", render::enc(acc))) { "Audit" }
            " · " a href=(format!("/logs?account_id={}", render::enc(acc))) { "AI log" }
        }
        (connection_panel(&conn, token_reason.as_deref()))
        @if let Some(web) = &account.whatsapp_web {
            (whatsapp_web_panel(app, session, acc, web, &forms.web))
        }
        section aria-labelledby="overrides-h" {
            h2 #overrides-h { "AI overrides" }
            (layer::layer_form(session, &format!("{base}/ai"), &account.ai, &inherit, "the global settings", &layer_state))
            (layer::clear_key_form(session, &format!("{base}/ai/clear-key"), &account.ai))
        }
        section aria-labelledby="tokens-h" {
            h2 #tokens-h { "API tokens" }
            @if let Some(t) = &forms.new_token {
                div.alert.ok role="status" {
                    p { strong { "New token — copy it now, it is shown only once:" } }
                    p { code.secret #new-token { (t.token) } }
                }
            }
            @if account.tokens.is_empty() {
                p { "No tokens." }
            } @else {
                div.scroll { table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Created" } th scope="col" { "State" } th scope="col" { span.sr-only { "Actions" } } } }
                    tbody {
                        @for t in account.tokens.values() {
                            tr {
                                td { (t.name) }
                                td { (render::when(&t.created_at)) }
                                td { @if t.revoked { "revoked" } @else { "active" } }
                                td {
                                    @if !t.revoked {
                                        form.inline method="post" action=(format!("{base}/tokens/{}/revoke", render::enc(&t.id))) {
                                            (render::csrf(session))
                                            button.danger type="submit" aria-label=(format!("Revoke token {}", t.name)) { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                } }
            }
            form.card method="post" action=(format!("{base}/tokens")) novalidate {
                (render::csrf(session))
                (render::form_error(&forms.token))
                (render::text_field(&forms.token, "token", "name", "Token name", "text", None))
                button type="submit" { "Create token" }
            }
        }
        section aria-labelledby="chats-h" {
            h2 #chats-h { "Chats" }
            form.card.search role="search" method="get" action=(format!("{base}#chats-h")) {
                (render::text_field(&search_state, "chats", "q", "Search chats", "search", Some("A number (+49 170 …) or the contact's name.")))
                button type="submit" { "Search" }
                @if search.is_some() { " " a #clear-search href=(format!("{base}#chats-h")) { "Show all" } }
            }
            div #chat-list { @if chats.is_empty() {
                @if search.is_some() || search_state.failed() { p #no-chats { "No chats match." } } @else { p { "No chats yet." } }
            } @else {
                div.scroll { table #chats {
                    thead { tr { th scope="col" { "Chat" } th scope="col" { "Name" } th scope="col" { "Kind" } th scope="col" { "Messages" } th scope="col" { "Last message" } th scope="col" { "AI" } } }
                    tbody {
                        @for c in &chats {
                            tr {
                                td { a href=(render::chat_href(acc, &c.chat_id)) { (c.chat_id) } }
                                td { (c.contact_name.as_deref().unwrap_or("")) }
                                td { (c.chat_kind) }
                                td { (c.message_count) }
                                td { @if let Some(t) = &c.last_message_at { (render::when(t)) } }
                                td { (c.ai_mode) @if c.blocked { " · blocked" } }
                            }
                        }
                    }
                } }
            } }
            @if forms.chats_before.is_some() || older_chats.is_some() {
                p.pager {
                    @if forms.chats_before.is_some() { a #newest-chats href=(format!("{base}?{}#chats-h", searched.trim_end_matches('&'))) { "Newest chats" } }
                    @if let Some(p) = older_chats { " " a #older-chats href=(format!("{base}?{searched}chats_before={p}#chats-h")) { "Older chats →" } }
                }
            }
            @if matches!(account.transport, Transport::Sandbox) {
                h3 { "Simulate an incoming message" }
                form.card method="post" action=(format!("{base}/inbound")) novalidate {
                    (render::csrf(session))
                    (render::form_error(&inbound))
                    (render::text_field(&inbound, "inbound", "chat_id", "Chat JID", "text", Some("e.g. 4917600000000@s.whatsapp.net or 12345@g.us")))
                    (render::text_field(&inbound, "inbound", "from", "From", "text", None))
                    (render::text_field(&inbound, "inbound", "contact_name", "Contact name (optional)", "text", Some("The customer's profile name, as WhatsApp reports it.")))
                    (render::textarea_field(&inbound, "inbound", "text", "Message", 3, None))
                    button type="submit" { "Inject message" }
                }
            }
        }
        section aria-labelledby="delete-h" {
            h2 #delete-h { "Delete the account" }
            form.card method="post" action=(format!("{base}/delete")) novalidate {
                (render::csrf(session))
                (render::form_error(&forms.delete))
                p { "Its tokens stop working at once; its history stays in the audit log and its id stays reserved." }
                (render::text_field(&forms.delete, "delete", "confirm", "Type the account id to confirm", "text", None))
                button.danger type="submit" { "Delete account" }
            }
        }
    };
    render::respond(
        status,
        render::page(
            &format!("Account {acc}"),
            Some(session),
            Section::Accounts,
            body,
        ),
    )
}

pub async fn save_ai(
    State(app): State<SharedApp>,
    Path(acc): Path<String>,
    posted: Posted,
) -> Response {
    let Posted { session, fields } = posted;
    let result = match layer::parse_layer_form(&fields) {
        Err(state) => Err(state),
        Ok(req) => change_account_ai(&app, &session.who(), &acc, req)
            .await
            .map_err(|e| {
                let mut state = FormState::from_fields(&fields);
                state.api_error(ApiError::from(e), &layer::field_names());
                state
            }),
    };
    match result {
        Ok(()) => render::see_other(&format!("/accounts/{}?done=saved", render::enc(&acc))),
        Err(state) => {
            let forms = AccountForms {
                layer: Some(state),
                ..AccountForms::default()
            };
            render_account(&app, &session, &acc, forms).await
        }
    }
}

pub async fn clear_key(
    State(app): State<SharedApp>,
    Path(acc): Path<String>,
    posted: Posted,
) -> Response {
    let kind = layer::KeyKind::from_form(&posted.fields);
    match change_account_ai(&app, &posted.session.who(), &acc, kind.clear_request()).await {
        Ok(()) => render::see_other(&format!(
            "/accounts/{}?done={}",
            render::enc(&acc),
            kind.cleared_notice()
        )),
        Err(e) => render::api_error_page(&ApiError::from(e)),
    }
}

pub async fn create_token(
    State(app): State<SharedApp>,
    Path(acc): Path<String>,
    posted: Posted,
) -> Response {
    let Posted { session, fields } = posted;
    let mut forms = AccountForms::default();
    if require_live(&app, &acc).is_err() {
        return render::error_page(StatusCode::NOT_FOUND, "No such account.");
    }
    match issue_token(
        &app,
        &session.who(),
        &acc,
        fields.get("name").trim().to_string(),
    )
    .await
    {
        Ok(created) => forms.new_token = Some(created),
        Err(e) => {
            forms.token = FormState::from_fields(&fields);
            forms.token.api_error(e.into(), &["name"]);
        }
    }
    render_account(&app, &session, &acc, forms).await
}

pub async fn revoke_token(
    State(app): State<SharedApp>,
    Path((acc, token_id)): Path<(String, String)>,
    posted: Posted,
) -> Response {
    match revoke(&app, &posted.session.who(), &acc, token_id).await {
        Ok(()) => render::see_other(&format!("/accounts/{}?done=revoked", render::enc(&acc))),
        Err(e) => render::api_error_page(&ApiError::from(e)),
    }
}

/// Validates and injects an inbound sandbox message; `Ok` is the message's chat.
pub async fn inject(
    app: &SharedApp,
    who: &Who,
    acc: &str,
    fields: &super::session::Fields,
) -> Result<String, FormState> {
    let mut state = FormState::from_fields(fields);
    let chat_id = fields.get("chat_id").trim().to_string();
    let text = fields.get("text").replace("\r\n", "\n");
    if text.trim().is_empty() {
        state.invalid("text", "must not be empty");
        return Err(state);
    }
    let req = InboundMessage {
        chat_id: chat_id.clone(),
        from: fields.get("from").trim().to_string(),
        text: Some(text),
        id: None,
        from_me: false,
        mentioned: false,
        reply_to: None,
        contact_name: fields.nonblank("contact_name"),
        media: None,
    };
    match inject_inbound(app, who, acc, req).await {
        Ok(_) => Ok(chat_id),
        Err(e) => {
            state.api_error(e.into(), &["chat_id", "from", "text", "contact_name"]);
            Err(state)
        }
    }
}

pub async fn inbound(
    State(app): State<SharedApp>,
    Path(acc): Path<String>,
    posted: Posted,
) -> Response {
    let Posted { session, fields } = posted;
    if require_live(&app, &acc).is_err() {
        return render::error_page(StatusCode::NOT_FOUND, "No such account.");
    }
    match inject(&app, &session.who(), &acc, &fields).await {
        Ok(jid) => render::see_other(&format!("{}?done=injected", render::chat_href(&acc, &jid))),
        Err(state) => {
            let forms = AccountForms {
                inbound: state,
                ..AccountForms::default()
            };
            render_account(&app, &session, &acc, forms).await
        }
    }
}

pub async fn delete_account(
    State(app): State<SharedApp>,
    Path(acc): Path<String>,
    posted: Posted,
) -> Response {
    let Posted { session, fields } = posted;
    let mut state = FormState::from_fields(&fields);
    if fields.get("confirm").trim() != acc {
        state.invalid("confirm", "type the account id exactly to confirm");
    } else {
        match delete(&app, &session.who(), &acc).await {
            Ok(()) => return render::see_other("/accounts?done=deleted"),
            Err(e) => state.api_error(e.into(), &["confirm"]),
        }
    }
    let forms = AccountForms {
        delete: state,
        ..AccountForms::default()
    };
    render_account(&app, &session, &acc, forms).await
}
