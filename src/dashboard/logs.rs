//! `/logs`: the AI log (one row per reply attempt), newest first, filtered by account, chat and
//! status; and `/audit`: the event history of the whole gateway, an account or a chat, with
//! secrets redacted exactly as `GET /v1/events` does.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;
use serde::Deserialize;

use super::render::{self, FormState, Section};
use super::session::Session;
use crate::app::SharedApp;
use crate::http::error::ApiError;
use crate::service::events::{self as history, EventView, LOG_STATUSES as STATUSES};
use wagate_projections::messages::AiLogRow;

/// Rows shown on one page.
const PAGE: usize = 200;

#[derive(Debug, Default, Deserialize)]
pub struct Filter {
    pub account_id: Option<String>,
    pub chat_id: Option<String>,
    pub status: Option<String>,
    pub after: Option<String>,
    /// Search the rows: reason (text or code), status, reply text (while retained), chat, model.
    pub q: Option<String>,
}

/// The longest AI-log search accepted.
const MAX_SEARCH: usize = 200;

/// Whether an AI-log row matches the search `q` (lower case): its reason text or code, status,
/// reply text while the retention keeps it, chat, model or trigger message id.
fn row_matches(r: &AiLogRow, q: &str) -> bool {
    let has = |s: &str| s.to_lowercase().contains(q);
    has(r.status.as_str())
        || r.reason.as_deref().is_some_and(has)
        || r.reason_code.is_some_and(|c| has(c.as_str()))
        || r.reply_text.as_deref().is_some_and(has)
        || has(&r.chat_id)
        || r.model.as_deref().is_some_and(has)
        || has(&r.trigger_message_id)
}

fn blank_to_none(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

pub async fn logs(
    State(app): State<SharedApp>,
    session: Session,
    Query(f): Query<Filter>,
) -> Response {
    let account = blank_to_none(f.account_id);
    let chat = blank_to_none(f.chat_id);
    let status = blank_to_none(f.status);
    let search = blank_to_none(f.q);
    let mut state = FormState::with([
        ("account_id", account.clone().unwrap_or_default()),
        ("chat_id", chat.clone().unwrap_or_default()),
        ("status", status.clone().unwrap_or_default()),
        ("q", search.clone().unwrap_or_default()),
    ]);
    if search.as_ref().is_some_and(|q| q.len() > MAX_SEARCH) {
        state.invalid("q", format!("at most {MAX_SEARCH} characters"));
    }
    let needle = search.as_deref().map(str::to_lowercase);
    if let Some(s) = status.as_deref() {
        if !STATUSES.contains(&s) {
            state.invalid(
                "status",
                "must be pending, generated, sent, failed or skipped",
            );
        }
    }
    if let Err(e) = app.catch_up().await {
        return render::api_error_page(&ApiError::from(e));
    }
    // The newest rows, which the read model holds in memory (ADR 0013); the API pages through
    // older ones.
    let (rows, older_elsewhere): (Vec<_>, bool) = if state.failed() {
        (vec![], false)
    } else {
        let m = app.messages();
        let rows: Vec<_> = m
            .ai_log
            .iter()
            .rev()
            .filter(|r| account.as_deref().is_none_or(|a| r.account_id == a))
            .filter(|r| chat.as_deref().is_none_or(|c| r.chat_id == c))
            .filter(|r| status.as_deref().is_none_or(|s| r.status.as_str() == s))
            .filter(|r| needle.as_deref().is_none_or(|q| row_matches(r, q)))
            .take(PAGE)
            .cloned()
            .collect();
        let older = rows.len() < PAGE && m.log_evicted_upto > 0;
        (rows, older)
    };
    let body = html! {
        form.card.filters method="get" action="/logs" {
            (render::text_field(&state, "logs", "q", "Search", "search", Some("Reason, status, reply text, chat or model.")))
            (render::text_field(&state, "logs", "account_id", "Account", "text", None))
            (render::text_field(&state, "logs", "chat_id", "Chat JID", "text", None))
            (render::filter_select(&state, "logs", "status", "Status", &STATUSES))
            button type="submit" { "Filter" }
        }
        @if older_elsewhere {
            p.muted #older-rows { "Only the newest " (app.config.read_model.ai_log)
                " replies are searched here; " code { "GET /v1/ai/logs" } " pages through all of them." }
        }
        div #log-rows { @if rows.is_empty() { p { "No AI log rows match." } } @else {
            p.muted { "Newest first; at most " (PAGE) " rows." }
            div.scroll { table #ai-log {
                thead { tr {
                    th scope="col" { "Time" } th scope="col" { "Account" } th scope="col" { "Chat" } th scope="col" { "Status" }
                    th scope="col" { "Reason" } th scope="col" { "Model" } th scope="col" { "Latency" } th scope="col" { "Tokens" } th scope="col" { "Reply" }
                } }
                tbody {
                    @for r in &rows {
                        tr class=(format!("status-{}", r.status.as_str())) {
                            td { (render::when(&r.created_at)) }
                            td { a href=(format!("/accounts/{}", render::enc(&r.account_id))) { (r.account_id) } }
                            td { a href=(render::chat_href(&r.account_id, &r.chat_id)) { (r.chat_id) } }
                            td { span class=(format!("badge {}", r.status.as_str())) { (r.status.as_str()) } }
                            td title=[r.reason_code.map(|c| c.as_str())] { (r.reason.as_deref().unwrap_or("")) }
                            td { (r.model.as_deref().unwrap_or("")) }
                            td { @if let Some(l) = r.latency_ms { (l) " ms" } }
                            td { @if let Some(u) = &r.usage { (u.total_tokens) } }
                            td.clip { (r.reply_text.as_deref().unwrap_or("")) }
                        }
                    }
                }
            } }
        } }
    };
    render::respond(
        state.status(),
        render::page("AI log", Some(&session), Section::Logs, body),
    )
}

/// The AI log page's live feed: a `changed` event each time the read models fold events of any
/// chat (a reply requested, generated, sent, skipped or failed), so the page refreshes its rows.
pub async fn live(State(app): State<SharedApp>, _session: Session) -> Response {
    super::live::feed(&app, |_| true)
}

pub async fn audit(
    State(app): State<SharedApp>,
    session: Session,
    Query(f): Query<Filter>,
) -> Response {
    let account = blank_to_none(f.account_id);
    let chat = blank_to_none(f.chat_id);
    let mut state = FormState::with([
        ("account_id", account.clone().unwrap_or_default()),
        ("chat_id", chat.clone().unwrap_or_default()),
    ]);
    let after = match blank_to_none(f.after).map(|a| a.parse::<i64>()) {
        None => 0,
        Some(Ok(a)) if a >= 0 => a,
        Some(_) => {
            state.invalid("after", "a position >= 0");
            0
        }
    };
    if chat.is_some() && account.is_none() {
        state.invalid("account_id", "a chat needs its account");
    }
    // One account's own stream, or one chat's two streams (settings and messages), or all.
    let stream_id = match (&account, &chat) {
        (Some(a), Some(c)) => Some(format!("{a}/{c}")),
        (Some(a), None) => Some(a.clone()),
        _ => None,
    };
    let types: &[&str] = match (&account, &chat) {
        (Some(_), Some(_)) => &["chat_settings", "chat"],
        (Some(_), None) => &["account"],
        _ => &[],
    };
    let events = if state.failed() {
        Ok(vec![])
    } else {
        history::read(&app, after, PAGE as i64, types, stream_id.as_deref()).await
    };
    let events: Vec<EventView> = match events {
        Ok(ev) => ev,
        Err(e) => return render::api_error_page(&ApiError::from(e)),
    };
    let next = (events.len() == PAGE)
        .then(|| events.last().map(|e| e.position))
        .flatten();
    let body = html! {
        form.card.filters method="get" action="/audit" {
            (render::form_error(&state))
            (render::text_field(&state, "audit", "account_id", "Account", "text", None))
            (render::text_field(&state, "audit", "chat_id", "Chat JID", "text", Some("Needs the account.")))
            (render::field_error(&state, "audit-after", "after"))
            button type="submit" { "Filter" }
        }
        @if events.is_empty() { p { "No events." } } @else {
            p.muted { "Oldest first; secrets are redacted." }
            div.scroll { table #audit {
                thead { tr { th scope="col" { "#" } th scope="col" { "Time" } th scope="col" { "Stream" } th scope="col" { "Event" } th scope="col" { "By" } th scope="col" { "Payload" } } }
                tbody {
                    @for e in &events {
                        tr {
                            td { (e.position) }
                            td { (render::when(&e.time)) }
                            td { (e.stream) }
                            td { (e.event_type) }
                            td { (e.actor) }
                            td { code.payload { (e.payload.to_string()) } }
                        }
                    }
                }
            } }
            @if let Some(n) = next {
                p { a href=(format!("/audit?account_id={}&chat_id={}&after={n}",
                    render::enc(account.as_deref().unwrap_or("")), render::enc(chat.as_deref().unwrap_or("")))) { "Next page" } }
            }
        }
    };
    let status = if state.failed() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    render::respond(
        status,
        render::page("Audit", Some(&session), Section::Audit, body),
    )
}
