//! `/test`: the seed's "AI chat / test" page. Asks the model as an account / chat would (the
//! same service call as `POST /v1/ai/admin/test`) and shows the reply, the model, the latency
//! and the token counts; a failure shows the sanitized error message.

use axum::extract::{Query, State};
use axum::response::Response;
use maud::html;
use serde::Deserialize;

use super::render::{self, FormState, Section};
use super::session::{Posted, Session};
use crate::app::SharedApp;
use crate::service::test_reply::{run_test, TestReply};

#[derive(Debug, Deserialize)]
pub struct Prefill {
    pub account_id: Option<String>,
    pub chat_id: Option<String>,
}

pub async fn page(
    State(app): State<SharedApp>,
    session: Session,
    Query(q): Query<Prefill>,
) -> Response {
    let state = FormState::with([
        ("account_id", q.account_id.unwrap_or_default()),
        ("chat_id", q.chat_id.unwrap_or_default()),
    ]);
    render_page(&app, &session, &state, None)
}

fn render_page(
    app: &SharedApp,
    session: &Session,
    state: &FormState,
    reply: Option<&TestReply>,
) -> Response {
    let accounts: Vec<(String, String)> = app
        .model()
        .accounts
        .values()
        .filter(|a| !a.deleted)
        .map(|a| (a.id.clone(), a.name.clone()))
        .collect();
    let chats: Vec<String> = {
        let m = app.messages();
        let mut jids: Vec<String> = m.chats.keys().map(|(_, jid)| jid.clone()).collect();
        jids.sort();
        jids.dedup();
        jids
    };
    let chosen = state.value("account_id");
    let body = html! {
        p { "Sends one message to the model with the effective settings of the chosen account and chat "
            "(the reply rules — enabled, chat kind, blocked — are not applied). Nothing is sent to WhatsApp." }
        @if let Some(r) = reply {
            section.card #test-result aria-labelledby="result-h" aria-live="polite" {
                h2 #result-h { "Reply" }
                p.reply #test-reply { (r.reply) }
                dl.facts {
                    dt { "Model" } dd #test-model { (r.model) }
                    dt { "Latency" } dd #test-latency { (r.latency_ms) " ms" }
                    dt { "Tokens" } dd #test-tokens { (r.usage.prompt_tokens) " prompt + " (r.usage.completion_tokens)
                        " completion = " (r.usage.total_tokens) }
                }
            }
        }
        form.card #test-form method="post" action="/test" novalidate {
            (render::csrf(session))
            (render::form_error(state))
            div.field {
                label for="test-account_id" { "Account (optional)" }
                select #test-account_id name="account_id"
                    aria-invalid=[state.error("account_id").map(|_| "true")]
                    aria-describedby=[render::described_by(state, "test-account_id", "account_id", false)] {
                    option value="" selected[chosen.is_empty()] { "— none: global settings —" }
                    @for (id, name) in &accounts {
                        option value=(id) selected[chosen == id] { (id) @if name != id { " — " (name) } }
                    }
                }
                (render::field_error(state, "test-account_id", "account_id"))
            }
            div.field {
                label for="test-chat_id" { "Chat JID (optional)" }
                input #test-chat_id name="chat_id" type="text" list="test-chats" value=(state.value("chat_id"))
                    aria-invalid=[state.error("chat_id").map(|_| "true")]
                    aria-describedby=[render::described_by(state, "test-chat_id", "chat_id", true)];
                datalist #test-chats { @for jid in &chats { option value=(jid) {} } }
                p.hint #test-chat_id-hint { "Its settings and last 20 messages shape the prompt." }
                (render::field_error(state, "test-chat_id", "chat_id"))
            }
            (render::textarea_field(state, "test", "message", "Message", 4, None))
            button type="submit" { "Ask the model" }
        }
    };
    render::respond(
        state.status(),
        render::page("AI chat / test", Some(session), Section::Test, body),
    )
}

pub async fn run(State(app): State<SharedApp>, posted: Posted) -> Response {
    let Posted { session, fields } = posted;
    let mut state = FormState::from_fields(&fields);
    let account = fields.nonblank("account_id");
    let chat = fields.nonblank("chat_id");
    let message = fields.get("message").replace("\r\n", "\n");
    if chat.is_some() && account.is_none() {
        state.invalid("account_id", "a chat needs its account");
    }
    if message.trim().is_empty() {
        state.invalid("message", "must not be empty");
    }
    if state.failed() {
        return render_page(&app, &session, &state, None);
    }
    match run_test(&app, account.as_deref(), chat.as_deref(), &message).await {
        Ok(reply) => render_page(&app, &session, &state, Some(&reply)),
        Err(e) => {
            state.api_error(e.into(), &["account_id", "chat_id", "message"]);
            render_page(&app, &session, &state, None)
        }
    }
}
