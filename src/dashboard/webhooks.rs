//! `/webhooks` and `/webhooks/:id`: the webhook subscriptions (create one, its signing secret
//! shown once on the page answering the POST and never again; delete one), and a webhook's
//! deliveries with their status, attempts and last error, filtered by status and paged, each with
//! a Redeliver button. The pages call the service functions the API calls (`service::webhooks`), so
//! the rules (URL checks, the outbound guard, event types, the 409 on a disabled webhook) are the
//! same.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;
use wagate_events::webhook::{check_events, check_url, EVENT_TYPES};

use super::render::{self, FormState, Section};
use super::session::{Fields, Posted, Session};
use crate::app::SharedApp;
use crate::http::error::ApiError;
use crate::service::webhooks::{
    self as api, CreatedWebhook, DeliveryFilter, NewWebhook, WebhookResponse, DELIVERY_STATUSES,
};
use crate::store::outbox::Delivery;

/// Deliveries shown on one page.
const PAGE: i64 = 50;

/// The create form's fields (errors are shown next to them).
const CREATE_FIELDS: [&str; 3] = ["url", "events", "account_id"];

/// The query of the pages: the notice after a redirect, and on a webhook's page the deliveries'
/// status filter and the paging cursor.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub done: Option<String>,
    pub status: Option<String>,
    pub before: Option<String>,
}

/// The fixed notices of these pages (`?done=<code>`); other codes go to the shared ones, and
/// unknown codes show nothing, so no URL text is ever reflected.
fn notice(done: Option<&str>) -> Markup {
    let text = match done {
        Some("webhook_deleted") => "Webhook deleted; its pending deliveries are cancelled.",
        Some("redelivered") => "Delivery queued again: it is sent now, with the same webhook-id.",
        _ => return render::notice(done),
    };
    html! { p.alert.ok role="status" { (text) } }
}

/// How a receiver checks a request, next to the secret.
fn verify_note() -> Markup {
    html! {
        p.hint #verify-note {
            "Receivers verify each request with the Standard Webhooks headers "
            code { "webhook-id" } ", " code { "webhook-timestamp" } " and " code { "webhook-signature" }
            ": the signature is " code { "v1," } " + base64(HMAC-SHA256(key, "
            code { "{webhook-id}.{webhook-timestamp}.{body}" } ")), where the key is the base64-decoded part of the secret after "
            code { "whsec_" } ". Reject stale timestamps (e.g. older than 5 minutes) and ignore a "
            code { "webhook-id" } " already seen (retries and redeliveries repeat it). Any Standard Webhooks library does this for you."
        }
    }
}

fn events_text(events: &[String]) -> String {
    if events.iter().any(|e| e == "*") {
        "all (*)".to_string()
    } else {
        events.join(", ")
    }
}

fn status_markup(w: &WebhookResponse) -> Markup {
    html! {
        span class=(format!("badge {}", w.status)) { (w.status) }
        @if let Some(r) = &w.disabled_reason { " " span.muted { (r) } }
    }
}

fn hook_href(id: &str) -> String {
    format!("/webhooks/{}", render::enc(id))
}

/// The create form's state and the secret of a webhook just created.
#[derive(Default)]
struct ListForms {
    create: FormState,
    created: Option<CreatedWebhook>,
    done: Option<String>,
}

pub async fn list(
    State(app): State<SharedApp>,
    session: Session,
    Query(q): Query<PageQuery>,
) -> Response {
    render_list(
        &app,
        &session,
        ListForms {
            done: q.done,
            ..ListForms::default()
        },
    )
    .await
}

async fn render_list(app: &SharedApp, session: &Session, forms: ListForms) -> Response {
    if let Err(e) = app.catch_up().await {
        return render::api_error_page(&ApiError::from(e));
    }
    let hooks = api::list(app);
    let accounts: Vec<String> = {
        let m = app.model();
        let mut v: Vec<String> = m
            .accounts
            .values()
            .filter(|a| !a.deleted)
            .map(|a| a.id.clone())
            .collect();
        v.sort();
        v
    };
    let state = &forms.create;
    let chosen: Vec<&str> = state.value("events").split(',').collect();
    let account = state.value("account_id");
    let body = html! {
        (notice(forms.done.as_deref()))
        @if let Some(c) = &forms.created {
            div.alert.ok role="status" #created {
                p { strong { "Webhook " a href=(hook_href(&c.webhook.id)) { (c.webhook.id) } " created. Its signing secret — copy it now, it is shown only once:" } }
                p { code.secret #new-secret { (c.secret) } }
                (verify_note())
            }
        }
        section aria-labelledby="hooks-h" {
            h2 #hooks-h { "Subscriptions" }
            @if hooks.is_empty() {
                p { "No webhooks yet. Create one below." }
            } @else {
                div.scroll { table #webhooks {
                    thead { tr {
                        th scope="col" { "Id" } th scope="col" { "URL" } th scope="col" { "Events" }
                        th scope="col" { "Account" } th scope="col" { "Status" } th scope="col" { "Created" }
                    } }
                    tbody {
                        @for w in &hooks {
                            tr {
                                td { a href=(hook_href(&w.id)) { (w.id) } }
                                td.clip { (w.url) }
                                td { (events_text(&w.events)) }
                                td { @if let Some(a) = &w.account_id { (a) } @else { span.muted { "all" } } }
                                td { (status_markup(w)) }
                                td { (render::when(&w.created_at)) }
                            }
                        }
                    }
                } }
            }
        }
        section aria-labelledby="create-h" {
            h2 #create-h { "Create a webhook" }
            form.card #create-webhook method="post" action="/webhooks" novalidate {
                (render::csrf(session))
                (render::form_error(state))
                (render::text_field(state, "create", "url", "Receiver URL", "url",
                    Some("An http(s) URL that answers 2xx. Private and loopback addresses are refused unless WAGATE_ALLOW_PRIVATE_NETWORKS lists them; link-local and metadata addresses always are.")))
                fieldset #create-events aria-invalid=[state.error("events").map(|_| "true")]
                    aria-describedby=[render::described_by(state, "create-events", "events", false)] {
                    legend { "Event types" }
                    div.checks {
                        div.check {
                            input type="checkbox" id="create-event-all" name="events" value="*" checked[chosen.contains(&"*")];
                            label for="create-event-all" { "All (*), including types added later" }
                        }
                        @for t in EVENT_TYPES {
                            @let id = format!("create-event-{}", t.replace('.', "-"));
                            div.check {
                                input type="checkbox" id=(id) name="events" value=(t) checked[chosen.contains(&t)];
                                label for=(id) { code { (t) } }
                            }
                        }
                    }
                    (render::field_error(state, "create-events", "events"))
                }
                div.field {
                    label for="create-account_id" { "Account filter" }
                    select #create-account_id name="account_id" aria-invalid=[state.error("account_id").map(|_| "true")]
                        aria-describedby=[render::described_by(state, "create-account_id", "account_id", true)] {
                        option value="" selected[account.is_empty()] { "all accounts" }
                        @for a in &accounts { option value=(a) selected[account == a.as_str()] { (a) } }
                        @if !account.is_empty() && !accounts.iter().any(|a| a == account) {
                            option value=(account) selected { (account) }
                        }
                    }
                    p.hint #create-account_id-hint { "With an account, only its events are sent (global AI config changes are not)." }
                    (render::field_error(state, "create-account_id", "account_id"))
                }
                button type="submit" { "Create webhook" }
            }
        }
    };
    render::respond(
        state.status(),
        render::page("Webhooks", Some(session), Section::Webhooks, body),
    )
}

/// The form's request, or its state with every error the pure checks find (all fields at
/// once); the service checks them again, with the outbound guard and the account.
fn parse_create(fields: &Fields) -> Result<NewWebhook, FormState> {
    let url = fields.get("url").trim().to_string();
    let events: Vec<String> = fields
        .0
        .iter()
        .filter(|(k, _)| k == "events")
        .map(|(_, v)| v.clone())
        .collect();
    let mut state = state_of(fields, &events);
    if let Err(e) = check_url(&url) {
        state.api_error(ApiError::from(e), &CREATE_FIELDS);
    }
    if events.is_empty() {
        state.invalid("events", "choose at least one event type, or All");
    } else if let Err(e) = check_events(&events) {
        state.api_error(ApiError::from(e), &CREATE_FIELDS);
    }
    if state.failed() {
        return Err(state);
    }
    Ok(NewWebhook {
        url,
        events,
        account_id: fields.nonblank("account_id"),
    })
}

/// The create form's values as typed; the checked event types joined by commas.
fn state_of(fields: &Fields, events: &[String]) -> FormState {
    let mut state = FormState::from_fields(fields);
    state.values.insert("events".into(), events.join(","));
    state
}

pub async fn create(State(app): State<SharedApp>, posted: Posted) -> Response {
    let Posted { session, fields } = posted;
    let mut forms = ListForms::default();
    match parse_create(&fields) {
        Err(state) => forms.create = state,
        Ok(req) => {
            let events = req.events.clone();
            match api::create(&app, &session.who(), req).await {
                Ok(created) => forms.created = Some(created),
                Err(e) => {
                    forms.create = state_of(&fields, &events);
                    forms.create.api_error(e.into(), &CREATE_FIELDS);
                }
            }
        }
    }
    render_list(&app, &session, forms).await
}

/// A webhook page's forms: the delete confirmation, and the refusal of a redelivery.
#[derive(Default)]
struct DetailForms {
    delete: FormState,
    refused: Option<ApiError>,
}

pub async fn show(
    State(app): State<SharedApp>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    render_detail(&app, &session, &id, q, DetailForms::default()).await
}

/// A status filter that is one of the known statuses (anything else is not carried along).
fn known_status(s: Option<&str>) -> Option<&'static str> {
    s.and_then(|s| DELIVERY_STATUSES.into_iter().find(|k| *k == s))
}

async fn render_detail(
    app: &SharedApp,
    session: &Session,
    id: &str,
    q: PageQuery,
    forms: DetailForms,
) -> Response {
    if let Err(e) = app.catch_up().await {
        return render::api_error_page(&ApiError::from(e));
    }
    let hook = match api::get(app, id) {
        Ok(w) => w,
        Err(e) => return render::api_error_page(&ApiError::from(e)),
    };
    let status = q
        .status
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let before = q
        .before
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let mut filter = FormState::with([("status", status.clone().unwrap_or_default())]);
    let query = DeliveryFilter {
        status: status.clone(),
        limit: Some(PAGE),
        before: before.clone(),
    };
    let page = match api::deliveries(app, id, &query)
        .await
        .map_err(ApiError::from)
    {
        Ok(p) => Some(p),
        Err(e) if e.status == StatusCode::BAD_REQUEST => {
            filter.api_error(e, &["status"]);
            None
        }
        Err(e) => return render::api_error_page(&e),
    };
    let (items, next): (Vec<Delivery>, Option<String>) =
        page.map_or((vec![], None), |p| (p.items, p.next_cursor));
    let base = hook_href(id);
    let active = hook.status == "active";
    let kept_status = known_status(status.as_deref());
    let with_status = |extra: &str| -> String {
        let mut parts = vec![];
        if let Some(s) = kept_status {
            parts.push(format!("status={s}"));
        }
        if !extra.is_empty() {
            parts.push(extra.to_string());
        }
        if parts.is_empty() {
            base.clone()
        } else {
            format!("{base}?{}", parts.join("&"))
        }
    };
    let page_status = [
        forms.refused.as_ref().map(|e| e.status),
        filter.status,
        forms.delete.status,
    ]
    .into_iter()
    .flatten()
    .next()
    .unwrap_or(StatusCode::OK);
    let body = html! {
        (notice(q.done.as_deref()))
        @if let Some(e) = &forms.refused {
            p.alert.error role="alert" #redeliver-refused { (e.message) }
        }
        p { a href="/webhooks" { "← All webhooks" } }
        dl.facts #webhook {
            dt { "URL" } dd.clip { (hook.url) }
            dt { "Events" } dd { (events_text(&hook.events)) }
            dt { "Account" } dd { @if let Some(a) = &hook.account_id { a href=(format!("/accounts/{}", render::enc(a))) { (a) } } @else { "all accounts" } }
            dt { "Status" } dd #webhook-status { (status_markup(&hook)) }
            dt { "Created" } dd { (render::when(&hook.created_at)) }
        }
        @if !active {
            p.alert.warn { "This webhook is disabled: nothing more is sent to it and its deliveries cannot be sent again. Create a new subscription for this receiver." }
        }
        details {
            summary { "How receivers verify requests" }
            (verify_note())
        }
        section aria-labelledby="deliveries-h" {
            h2 #deliveries-h { "Deliveries" }
            form.card.filters method="get" action=(base) {
                (render::filter_select(&filter, "filter", "status", "Status", &DELIVERY_STATUSES))
                button type="submit" { "Filter" }
            }
            @if items.is_empty() {
                p { @if before.is_some() { "No older deliveries." } @else { "No deliveries match." } }
            } @else {
                p.muted { "Newest first; " (PAGE) " per page. A delivery is retried on failure, then dead-lettered; " code { "pending" } " with an error is waiting for its next try." }
                div.scroll { table #deliveries {
                    thead { tr {
                        th scope="col" { "Created" } th scope="col" { "Event type" } th scope="col" { "Event" }
                        th scope="col" { "Delivery id" } th scope="col" { "Status" } th scope="col" { "Attempts" }
                        th scope="col" { "Last code" } th scope="col" { "Last error" } th scope="col" { "Next try" }
                        th scope="col" { span.sr-only { "Actions" } }
                    } }
                    tbody {
                        @for d in &items {
                            tr id=(format!("delivery-{}", d.id)) class=(format!("status-{}", d.status)) {
                                td { (render::when(&d.created_at)) }
                                td { code { (d.event_type) } }
                                td { "#" (d.event_position) }
                                td { code { (d.id) } }
                                td {
                                    span class=(format!("badge {}", d.status)) { (d.status) }
                                    @if d.status == "pending" && d.last_error.is_some() { " " span.muted { "(retrying)" } }
                                }
                                td { (d.attempts) }
                                td { @if let Some(c) = d.last_status_code { (c) } }
                                td.clip { (d.last_error.as_deref().unwrap_or("")) }
                                td { @if let Some(t) = &d.next_attempt_at { @if d.status == "pending" { (render::when(t)) } } }
                                td {
                                    @if active {
                                        form.inline method="post" action=(format!("{base}/deliveries/{}/redeliver", render::enc(&d.id))) {
                                            (render::csrf(session))
                                            @if let Some(s) = kept_status { input type="hidden" name="status" value=(s); }
                                            button type="submit" aria-label=(format!("Redeliver {}", d.id)) { "Redeliver" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                } }
            }
            p.pager {
                @if before.is_some() { a href=(with_status("")) { "Newest" } " " }
                @if let Some(n) = &next { a href=(with_status(&format!("before={}", render::enc(n)))) rel="next" { "Older deliveries →" } }
            }
        }
        section aria-labelledby="delete-h" {
            h2 #delete-h { "Delete the webhook" }
            form.card method="post" action=(format!("{base}/delete")) novalidate {
                (render::csrf(session))
                (render::form_error(&forms.delete))
                p { "Nothing more is sent to it and its pending deliveries are cancelled. Its history stays in the audit log." }
                div.field {
                    div.check {
                        input type="checkbox" id="delete-confirm" name="confirm" value="yes"
                            aria-invalid=[forms.delete.error("confirm").map(|_| "true")]
                            aria-describedby=[render::described_by(&forms.delete, "delete-confirm", "confirm", false)];
                        label for="delete-confirm" { "Yes, delete this webhook" }
                    }
                    (render::field_error(&forms.delete, "delete-confirm", "confirm"))
                }
                button.danger type="submit" { "Delete webhook" }
            }
        }
    };
    render::respond(
        page_status,
        render::page(
            &format!("Webhook {id}"),
            Some(session),
            Section::Webhooks,
            body,
        ),
    )
}

pub async fn delete(
    State(app): State<SharedApp>,
    Path(id): Path<String>,
    posted: Posted,
) -> Response {
    let Posted { session, fields } = posted;
    let mut state = FormState::from_fields(&fields);
    if fields.get("confirm") != "yes" {
        state.invalid("confirm", "tick the box to confirm");
    } else {
        match api::delete(&app, &session.who(), &id)
            .await
            .map_err(ApiError::from)
        {
            Ok(()) => return render::see_other("/webhooks?done=webhook_deleted"),
            Err(e) if e.status == StatusCode::NOT_FOUND => return render::api_error_page(&e),
            Err(e) => state.api_error(e, &["confirm"]),
        }
    }
    let forms = DetailForms {
        delete: state,
        ..DetailForms::default()
    };
    render_detail(&app, &session, &id, PageQuery::default(), forms).await
}

pub async fn redeliver(
    State(app): State<SharedApp>,
    Path((id, delivery)): Path<(String, String)>,
    posted: Posted,
) -> Response {
    let Posted { session, fields } = posted;
    let status = known_status(fields.opt("status"));
    match api::redeliver_now(&app, &session.who(), &id, &delivery)
        .await
        .map_err(ApiError::from)
    {
        Ok(_) => {
            let filter = status.map(|s| format!("status={s}&")).unwrap_or_default();
            render::see_other(&format!("{}?{filter}done=redelivered", hook_href(&id)))
        }
        // The rule's refusal (a disabled webhook) shows on the webhook's page.
        Err(e) if e.status == StatusCode::CONFLICT => {
            let q = PageQuery {
                status: status.map(str::to_string),
                ..PageQuery::default()
            };
            let forms = DetailForms {
                refused: Some(e),
                ..DetailForms::default()
            };
            render_detail(&app, &session, &id, q, forms).await
        }
        Err(e) => render::api_error_page(&e),
    }
}
