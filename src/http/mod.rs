//! The HTTP API (axum): routers per area, nested into one app with request ids, structured
//! request logs (route templates only: paths carry phone numbers), a body limit, JSON errors for
//! unknown routes and methods, and the OpenAPI document generated from the handlers.

pub mod accounts;
pub mod ai;
pub mod ai_reply;
pub mod cloud_api;
pub mod error;
pub mod events;
pub mod extract;
pub mod health;
pub mod login;
pub mod messages;
pub mod metrics;
pub mod webhooks;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::app::SharedApp;
use error::ApiError;

/// Largest request body accepted (413 above).
pub const BODY_LIMIT: usize = 256 * 1024;

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
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .merge(login::router())
        .merge(accounts::router())
        .merge(ai::router())
        .merge(events::router())
        .merge(messages::router())
        .merge(ai_reply::router())
        .merge(webhooks::router())
        .merge(metrics::router())
        .merge(cloud_api::router())
        .split_for_parts()
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
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
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
        .with_state(app)
}
