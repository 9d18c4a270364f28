//! The HTTP API (axum): routers per area, nested into one app with request ids (a client's only
//! when short and printable), structured request logs (route templates only: paths carry phone
//! numbers), a body limit and a body read deadline, `nosniff` on every response, JSON errors for
//! unknown routes and methods, and the OpenAPI document generated from the handlers.

pub mod accounts;
pub mod ai;
pub mod ai_reply;
pub mod cloud_api;
pub mod error;
pub mod events;
pub mod extract;
pub mod forward;
pub mod health;
pub mod login;
pub mod messages;
pub mod metrics;
pub mod nodes;
pub mod openapi;
pub mod stats;
pub mod webhooks;
pub mod whatsapp_web;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde::Serialize;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::{DeadlineBody, TimeoutError};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::app::SharedApp;
use error::ApiError;

/// Largest request body accepted (413 above).
pub const BODY_LIMIT: usize = 256 * 1024;

/// Longest client `x-request-id` kept; a longer one (or one with other than visible ASCII) is
/// replaced by a generated id, since the id is stored in every event the request causes.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether a client's `x-request-id` may be kept: 1..=128 visible ASCII characters.
pub fn acceptable_request_id(value: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&value.len())
        && value.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// Drops a client `x-request-id` that is not acceptable, so that one is generated instead.
async fn drop_unacceptable_request_id(mut req: Request) -> Request {
    let headers = req.headers_mut();
    let ok = {
        let mut values = headers.get_all("x-request-id").iter();
        match (values.next(), values.next()) {
            (None, _) => true,
            (Some(v), None) => acceptable_request_id(v.as_bytes()),
            (Some(_), Some(_)) => false,
        }
    };
    if !ok {
        headers.remove("x-request-id");
    }
    req
}

/// Bounds the time to receive a request body, from the end of its head: a body still arriving
/// after `limit` fails to read, and the request is answered 408 `request_timeout` (the
/// connection is then closed, the body being unread). Bodiless requests are not wrapped.
async fn body_read_deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let expired = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&expired);
    let req = req.map(|body| {
        Body::new(DeadlineBody::new(limit, body).map_err(move |e| {
            if e.is::<TimeoutError>() {
                seen.store(true, Ordering::Relaxed);
            }
            e
        }))
    });
    let resp = next.run(req).await;
    if !expired.load(Ordering::Relaxed) {
        return resp;
    }
    tracing::info!(
        limit_ms = limit.as_millis() as u64,
        "request body not received in time"
    );
    let mut resp = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!(
            "the request body was not received within {}",
            humantime::format_duration(limit)
        ),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Bounds the time to answer a request, from the end of its head to its response's head
/// (`WAGATE_REQUEST_TIMEOUT`): a handler still running then is dropped and the request answered
/// 503 `timeout` with `Retry-After`. A command the handler was committing is committed whole or
/// not at all (one transaction); a message it had handed to the transport is sent and recorded by
/// a task of its own. The caller can read the outcome back.
async fn request_deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::warn!(
                limit_ms = limit.as_millis() as u64,
                "request not answered in time"
            );
            let mut resp = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "the request was not answered within {}; retry later",
                    humantime::format_duration(limit)
                ),
            )
            .into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
    }
}

/// A page of a list: `next_cursor` is null on the last page.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListResponse<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> ListResponse<T> {
    /// A page of at most `limit` items: a full page's last item gives the cursor of the next.
    pub fn page(items: Vec<T>, limit: usize, cursor: impl FnOnce(&T) -> String) -> Self {
        let next_cursor = (items.len() == limit)
            .then(|| items.last().map(cursor))
            .flatten();
        Self { items, next_cursor }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "wagate", description = "WhatsApp gateway with AI auto-reply. See docs/API.md."),
    modifiers(&SecuritySchemes),
    tags((name = "auth"), (name = "accounts"), (name = "ai"), (name = "messages"), (name = "transports"), (name = "webhooks"), (name = "audit"), (name = "operations"))
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_jwt",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "account_token",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("wgt_…")
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document and the router it describes.
pub fn api() -> (Router<SharedApp>, utoipa::openapi::OpenApi) {
    let (routes, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .merge(login::router())
        .merge(accounts::router())
        .merge(ai::router())
        .merge(events::router())
        .merge(messages::router())
        .merge(ai_reply::router())
        .merge(webhooks::router())
        .merge(metrics::router())
        .merge(nodes::router())
        .merge(stats::router())
        .merge(cloud_api::router())
        .merge(whatsapp_web::router())
        .split_for_parts();
    openapi::complete(&mut doc);
    (routes, doc)
}

/// The whole HTTP app over `app`; `pages` are served beside the API, outside the OpenAPI
/// document (the dashboard's HTML pages, handed in by `startup` so the API does not depend on
/// the dashboard).
pub fn router(app: SharedApp, pages: Router<SharedApp>) -> Router {
    let (routes, openapi) = api();
    let request_metrics = Arc::new(metrics::HttpMetrics::default());
    let openapi = Arc::new(openapi);
    routes
        .route(
            "/openapi.json",
            get(move || {
                let doc = openapi.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .merge(pages)
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(middleware::from_fn_with_state(
            app.clone(),
            forward::to_owner,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            app.config.http.request_timeout,
            request_deadline,
        ))
        .layer(middleware::from_fn_with_state(
            app.config.http.body_read_timeout,
            body_read_deadline,
        ))
        .layer(axum::middleware::from_fn_with_state(
            request_metrics.clone(),
            metrics::track,
        ))
        .layer(axum::Extension(request_metrics))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or("unmatched", MatchedPath::as_str)
                        .to_string();
                    let request_id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    tracing::info_span!("http", method = %req.method(), route, request_id)
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(middleware::map_request(drop_unacceptable_request_id))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .with_state(app)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_short_visible_ascii() {
        assert!(acceptable_request_id(b"!"));
        assert!(acceptable_request_id(b"~"));
        assert!(acceptable_request_id(b"0b5d9e2c-req_42.A"));
        assert!(acceptable_request_id(&[b'a'; MAX_REQUEST_ID_LEN]));
        assert!(!acceptable_request_id(&[b'a'; MAX_REQUEST_ID_LEN + 1]));
        assert!(!acceptable_request_id(b""));
        for bad in [b' ', b'\t', 0x7f, 0x80, 0xff, 0x00, b'\n'] {
            assert!(!acceptable_request_id(&[b'a', bad, b'b']), "{bad:#x}");
        }
    }
}
