//! The dashboard: server-rendered HTML pages (maud) served by `wagate serve` itself, for the
//! seed's pages: global AI settings at `/ai`, accounts and their overrides at `/accounts/:id`,
//! the chat page with its gear (per-chat mode, prompt, blocked), the AI chat / test page, the
//! AI log and the audit history. The pages call the same service functions as the JSON API
//! (`crate::service`, and `http::ai` for the AI settings), so the rules and the events are the
//! same; events they cause are recorded as `admin:<username>`. No front-end build: one stylesheet and one tiny script are compiled in.
//! See docs/DASHBOARD.md.

pub mod accounts;
pub mod ai;
pub mod chat;
pub mod live;
pub mod login;
pub mod logs;
pub mod overview;
pub mod render;
pub mod session;
pub mod test_page;
pub mod webhooks;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

use crate::app::SharedApp;

const CSS: &str = include_str!("assets/dashboard.css");
const JS: &str = include_str!("assets/dashboard.js");

/// The dashboard's routes (not part of the OpenAPI document).
pub fn router() -> Router<SharedApp> {
    Router::new()
        .route("/", get(login::home))
        .route("/login", get(login::page).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/overview", get(overview::page))
        .route("/ai", get(ai::page).post(ai::save))
        .route("/ai/clear-key", post(ai::clear_key))
        .route(
            "/accounts",
            get(accounts::list).post(accounts::create_account),
        )
        .route("/accounts/{acc}", get(accounts::show))
        .route("/accounts/{acc}/live", get(accounts::live))
        .route("/accounts/{acc}/ai", post(accounts::save_ai))
        .route("/accounts/{acc}/ai/clear-key", post(accounts::clear_key))
        .route("/accounts/{acc}/tokens", post(accounts::create_token))
        .route(
            "/accounts/{acc}/tokens/{id}/revoke",
            post(accounts::revoke_token),
        )
        .route("/accounts/{acc}/inbound", post(accounts::inbound))
        .route("/accounts/{acc}/delete", post(accounts::delete_account))
        .route(
            "/accounts/{acc}/whatsapp-web/connect",
            post(accounts::web_connect),
        )
        .route(
            "/accounts/{acc}/whatsapp-web/logout",
            post(accounts::web_logout),
        )
        .route("/accounts/{acc}/chats/{jid}", get(chat::show))
        .route("/accounts/{acc}/chats/{jid}/send", post(chat::send))
        .route("/accounts/{acc}/chats/{jid}/live", get(chat::live))
        .route(
            "/accounts/{acc}/chats/{jid}/settings",
            post(chat::save_settings),
        )
        .route("/accounts/{acc}/chats/{jid}/inbound", post(chat::inbound))
        .route("/accounts/{acc}/chats/{jid}/resume", post(chat::resume))
        .route("/test", get(test_page::page).post(test_page::run))
        .route("/logs", get(logs::logs))
        .route("/logs/live", get(logs::live))
        .route("/audit", get(logs::audit))
        .route("/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/webhooks/{id}", get(webhooks::show))
        .route("/webhooks/{id}/delete", post(webhooks::delete))
        .route(
            "/webhooks/{id}/deliveries/{delivery}/redeliver",
            post(webhooks::redeliver),
        )
        .route("/assets/dashboard.css", get(css))
        .route("/assets/dashboard.js", get(js))
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        CSS,
    )
}

async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        JS,
    )
}
