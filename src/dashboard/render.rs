//! The page shell (head, navigation, main landmark), form helpers that put errors next to their
//! field, and the response headers every dashboard page carries. All text goes through maud's
//! escaping; nothing user-supplied is ever emitted with `PreEscaped`.

use std::collections::BTreeMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use crate::http::error::ApiError;

/// Sections of the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Ai,
    Accounts,
    Test,
    Logs,
    Audit,
    Webhooks,
    None,
}

const NAV: [(Section, &str, &str); 7] = [
    (Section::Overview, "/overview", "Overview"),
    (Section::Ai, "/ai", "AI settings"),
    (Section::Accounts, "/accounts", "Accounts"),
    (Section::Test, "/test", "AI chat / test"),
    (Section::Logs, "/logs", "AI log"),
    (Section::Audit, "/audit", "Audit"),
    (Section::Webhooks, "/webhooks", "Webhooks"),
];

/// Scripts only from this origin, no framing, no inline script: an escaped payload that slipped
/// through would still not run.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// The hidden form field every POST must carry (checked by `session`).
pub const CSRF_FIELD: &str = "csrf";

/// Who a page is shown to: the signed-in admin's name and the CSRF token its forms carry
/// (`session::Session` is one). Pages need only these two, not the session itself.
pub trait Viewer {
    fn name(&self) -> &str;
    fn csrf_token(&self) -> &str;
}

/// A whole page.
pub fn page(title: &str, session: Option<&dyn Viewer>, active: Section, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · wagate" }
                link rel="stylesheet" href="/assets/dashboard.css";
                script src="/assets/dashboard.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "wagate" }
                    @if let Some(s) = session {
                        nav aria-label="Main" {
                            ul {
                                @for (section, href, label) in NAV {
                                    li {
                                        a href=(href) aria-current=[(section == active).then_some("page")] { (label) }
                                    }
                                }
                            }
                        }
                        form.logout method="post" action="/logout" {
                            (csrf(s))
                            button.link type="submit" { "Log out " span.muted { "(" (s.name()) ")" } }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The hidden CSRF field of a form.
pub fn csrf(session: &dyn Viewer) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(session.csrf_token()); }
}

/// An HTML response with the dashboard's security headers; never cached (pages show secrets'
/// presence, one-time tokens and private messages).
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    let mut resp = (status, markup).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A 303 to `location` (after a successful POST).
pub fn see_other(location: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A stand-alone error page (no session needed).
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    respond(
        status,
        page(
            title,
            None,
            Section::None,
            html! {
                p.alert.error role="alert" { (message) }
                p { a href="/" { "Back to the dashboard" } }
            },
        ),
    )
}

/// The error page of a form that could not be read: 413 when it is over the body limit, 400
/// otherwise (axum's own rejections are plain text).
pub fn form_rejection(rej: &axum::extract::rejection::FormRejection) -> Response {
    if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return error_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "The form is larger than {} KiB and was not saved.",
                crate::http::BODY_LIMIT / 1024
            ),
        );
    }
    error_page(StatusCode::BAD_REQUEST, "The form could not be read.")
}

/// The error page of a failed service call outside a form (404, 503, …).
pub fn api_error_page(e: &ApiError) -> Response {
    error_page(e.status, &e.message)
}

/// Percent-encodes a path segment or query value (everything but unreserved characters).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The path of a chat's page.
pub fn chat_href(acc: &str, jid: &str) -> String {
    format!("/accounts/{}/chats/{}", enc(acc), enc(jid))
}

pub fn when(t: &DateTime<Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S UTC")) } }
}

/// The outcome of a form: values as typed and errors by field name (`""` = about the form).
#[derive(Debug, Clone, Default)]
pub struct FormState {
    pub values: BTreeMap<String, String>,
    pub errors: BTreeMap<String, String>,
    /// Set when the form failed: the HTTP status of the re-rendered page.
    pub status: Option<StatusCode>,
}

impl FormState {
    /// A state pre-filled with `values`.
    pub fn with(values: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>) -> Self {
        Self {
            values: values
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            ..Self::default()
        }
    }

    /// The values of a posted form, to show again.
    pub fn from_fields(fields: impl AsRef<[(String, String)]>) -> Self {
        let mut s = Self::default();
        for (k, v) in fields.as_ref() {
            if k != CSRF_FIELD && k != "api_key" && k != "password" {
                s.values.insert(k.clone(), v.clone());
            }
        }
        s
    }

    pub fn value(&self, name: &str) -> &str {
        self.values.get(name).map_or("", String::as_str)
    }

    pub fn error(&self, name: &str) -> Option<&str> {
        self.errors.get(name).map(String::as_str)
    }

    pub fn failed(&self) -> bool {
        self.status.is_some()
    }

    /// Records a field error (400).
    pub fn invalid(&mut self, field: &str, message: impl Into<String>) {
        self.errors.insert(field.to_string(), message.into());
        self.status.get_or_insert(StatusCode::BAD_REQUEST);
    }

    /// Records a failed service call: next to its field when it names one of `fields`, else
    /// about the whole form.
    pub fn api_error(&mut self, e: ApiError, fields: &[&str]) {
        let key = e
            .field
            .as_deref()
            .map(|f| f.trim_start_matches('.'))
            .filter(|f| fields.contains(f))
            .unwrap_or("")
            .to_string();
        let message = match (&e.field, key.is_empty()) {
            (Some(f), true) => format!("{f}: {}", e.message),
            _ => e.message,
        };
        self.errors.insert(key, message);
        self.status = Some(e.status);
    }

    /// The status of the re-rendered page.
    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or(StatusCode::OK)
    }
}

/// The form-level error box, if any.
pub fn form_error(state: &FormState) -> Markup {
    html! {
        @if let Some(e) = state.error("") {
            p.alert.error role="alert" { (e) }
        }
    }
}

/// The error under a field.
pub fn field_error(state: &FormState, id: &str, name: &str) -> Markup {
    html! {
        @if let Some(e) = state.error(name) {
            p.field-error id=(format!("{id}-error")) { (e) }
        }
    }
}

/// `aria-describedby` of a field: its error and its hint, when present.
pub fn described_by(state: &FormState, id: &str, name: &str, hint: bool) -> Option<String> {
    let mut ids = Vec::new();
    if state.error(name).is_some() {
        ids.push(format!("{id}-error"));
    }
    if hint {
        ids.push(format!("{id}-hint"));
    }
    (!ids.is_empty()).then(|| ids.join(" "))
}

/// A labelled one-line text input. A password input never echoes a value back into the page.
pub fn text_field(
    state: &FormState,
    form: &str,
    name: &str,
    label: &str,
    input_type: &str,
    hint: Option<&str>,
) -> Markup {
    let id = format!("{form}-{name}");
    html! {
        div.field {
            label for=(id) { (label) }
            input id=(id) name=(name) type=(input_type)
                value=[(input_type != "password").then(|| state.value(name))]
                aria-invalid=[state.error(name).map(|_| "true")]
                aria-describedby=[described_by(state, &id, name, hint.is_some())];
            @if let Some(h) = hint { p.hint id=(format!("{id}-hint")) { (h) } }
            (field_error(state, &id, name))
        }
    }
}

/// A labelled choice among `options`, with "any" (the empty value) first: the filters of the list
/// pages.
pub fn filter_select(
    state: &FormState,
    form: &str,
    name: &str,
    label: &str,
    options: &[&str],
) -> Markup {
    let id = format!("{form}-{name}");
    let current = state.value(name);
    html! {
        div.field {
            label for=(id) { (label) }
            select id=(id) name=(name) aria-invalid=[state.error(name).map(|_| "true")]
                aria-describedby=[described_by(state, &id, name, false)] {
                option value="" selected[current.is_empty()] { "any" }
                @for o in options { option value=(o) selected[current == *o] { (o) } }
            }
            (field_error(state, &id, name))
        }
    }
}

/// A labelled multi-line text input.
pub fn textarea_field(
    state: &FormState,
    form: &str,
    name: &str,
    label: &str,
    rows: u32,
    hint: Option<&str>,
) -> Markup {
    let id = format!("{form}-{name}");
    html! {
        div.field {
            label for=(id) { (label) }
            textarea id=(id) name=(name) rows=(rows)
                aria-invalid=[state.error(name).map(|_| "true")]
                aria-describedby=[described_by(state, &id, name, hint.is_some())] { (state.value(name)) }
            @if let Some(h) = hint { p.hint id=(format!("{id}-hint")) { (h) } }
            (field_error(state, &id, name))
        }
    }
}

/// A fixed notice after a redirect (`?done=<code>`); unknown codes show nothing, so no text from
/// the URL is ever reflected.
pub fn notice(done: Option<&str>) -> Markup {
    let text = match done {
        Some("saved") => "Saved.",
        Some("created") => "Created.",
        Some("revoked") => "Token revoked.",
        Some("sent") => "Message sent.",
        Some("injected") => "Incoming message injected.",
        Some("key_cleared") => "API key cleared.",
        Some("fallback_key_cleared") => "Fallback API key cleared.",
        Some("resumed") => "AI resumed in this chat.",
        Some("deleted") => "Account deleted.",
        _ => return html! {},
    };
    html! { p.alert.ok role="status" { (text) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enc_keeps_only_unreserved() {
        assert_eq!(enc("491@s.whatsapp.net"), "491%40s.whatsapp.net");
        assert_eq!(enc("/a b?c"), "%2Fa%20b%3Fc");
    }

    #[test]
    fn user_text_is_escaped() {
        let s = FormState::with([("x", "<script>alert(1)</script>")]);
        let out = text_field(&s, "f", "x", "X", "text", None).into_string();
        assert!(!out.contains("<script>"));
        assert!(out.contains("&lt;script&gt;"));
    }
}
