//! One hop to the gateway that runs an account (ADR 0029). A few requests need that gateway: the
//! codes, connect and logout of a WhatsApp Web account, and a message sent through its connection
//! (an operator send, a test reply sent to the chat). When another gateway of the cluster runs the
//! account, the service answers 409 `other_node` before changing anything, and this layer sends
//! the same request to that gateway (the URL it advertised, `WAGATE_NODE_URL`) and answers with
//! its response. A forwarded request carries `X-Wagate-Forwarded-By` and is never forwarded again:
//! a gateway that no longer runs the account by then answers the 409 itself.

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, NeedsOwner};
use crate::app::SharedApp;
use crate::service::whatsapp_web::require_connection_here;
use crate::store::{leases, Store};

/// Set on a forwarded request: the id of the gateway that forwarded it.
pub const FORWARDED_BY: HeaderName = HeaderName::from_static("x-wagate-forwarded-by");
/// Set on a forwarded request's response: the id of the gateway that answered it.
pub const SERVED_BY: HeaderName = HeaderName::from_static("x-wagate-served-by");

/// API routes whose requests may need the account's gateway: the service says so with
/// `other_node` (their bodies are kept to be sent again).
const API_ROUTES: &[&str] = &[
    "/v1/accounts/{acc}/whatsapp-web/connect",
    "/v1/accounts/{acc}/whatsapp-web/qr",
    "/v1/accounts/{acc}/whatsapp-web/logout",
    "/v1/accounts/{acc}/chats/{jid}/messages",
    "/v1/ai/chat/test",
];

/// Dashboard routes of a WhatsApp Web account that need its gateway (the page with the QR code,
/// connect, logout, an operator's message): forwarded before they run here.
const PAGE_ROUTES: &[&str] = &[
    "/accounts/{acc}",
    "/accounts/{acc}/whatsapp-web/connect",
    "/accounts/{acc}/whatsapp-web/logout",
    "/accounts/{acc}/chats/{jid}/send",
];

/// Headers of one connection, not passed on (RFC 9110 7.6.1), and the length the client sets.
/// `Host` is passed on, so the dashboard's same-origin check sees the host the browser used.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// How long a connection to another gateway may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .unwrap_or_default()
    })
}

/// Runs the request on the gateway that runs its account: here, or (another gateway of the
/// cluster runs it) there, one hop.
pub async fn to_owner(State(app): State<SharedApp>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let (api, page) = (
        API_ROUTES.contains(&route.as_str()),
        PAGE_ROUTES.contains(&route.as_str()),
    );
    if !(api || page) || app.cluster.get().is_none() || req.headers().contains_key(&FORWARDED_BY) {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let body = match to_bytes(body, super::BODY_LIMIT).await {
        Ok(body) => body,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "request body is larger than {} bytes or was not received whole",
                    super::BODY_LIMIT
                ),
            )
            .into_response()
        }
    };
    let sent = Sent {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
    };
    if page {
        let account = RawPathParams::from_request_parts(&mut parts, &app)
            .await
            .ok()
            .and_then(|p| {
                p.iter()
                    .find(|(k, _)| *k == "acc")
                    .map(|(_, v)| v.to_string())
            });
        if let Some(account) = account {
            if require_connection_here(&app, &account).is_err() {
                if let Some(resp) = forward(&app, &account, sent).await {
                    return resp;
                }
            }
        }
        return next.run(Request::from_parts(parts, Body::from(body))).await;
    }
    let resp = next.run(Request::from_parts(parts, Body::from(body))).await;
    match resp.extensions().get::<NeedsOwner>().cloned() {
        Some(NeedsOwner(account)) => forward(&app, &account, sent).await.unwrap_or(resp),
        None => resp,
    }
}

/// A request as it came, to be sent again.
struct Sent {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

/// Sends `sent` to the gateway that runs `account` and answers with its response (502 when it
/// cannot be reached); `None` when no other live gateway runs it or it did not say where it
/// listens.
async fn forward(app: &SharedApp, account: &str, sent: Sent) -> Option<Response> {
    let Store::Postgres(pool) = &app.store else {
        return None;
    };
    let (node, url) = match leases::owner_of(pool, account).await {
        Ok(Some((node, Some(url)))) => (node, url),
        Ok(_) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot look up the gateway that runs an account");
            return None;
        }
    };
    let this = app.cluster.get().map(|c| c.node_id.as_str()).unwrap_or("");
    if node == this {
        // The lease moved here meanwhile: a retry runs here.
        return None;
    }
    let target = format!(
        "{url}{}",
        sent.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut pass = HeaderMap::new();
    for (name, value) in sent.headers.iter() {
        if !HOP_BY_HOP.contains(name) && name != FORWARDED_BY {
            pass.append(name.clone(), value.clone());
        }
    }
    if let Ok(v) = HeaderValue::from_str(this) {
        pass.insert(FORWARDED_BY, v);
    }
    let answer = async {
        let r = client()
            .request(sent.method, &target)
            .headers(pass)
            .timeout(app.config.http.request_timeout)
            .body(sent.body)
            .send()
            .await?;
        let (status, headers) = (r.status(), r.headers().clone());
        Ok::<_, reqwest::Error>((status, headers, r.bytes().await?))
    }
    .await;
    Some(match answer {
        Ok((status, headers, bytes)) => {
            tracing::debug!(owner = %node, status = status.as_u16(), "request forwarded to the gateway that runs the account");
            let mut out = Response::new(Body::from(bytes));
            *out.status_mut() = status;
            for (name, value) in headers.iter() {
                if !HOP_BY_HOP.contains(name) {
                    out.headers_mut().append(name.clone(), value.clone());
                }
            }
            if let Ok(v) = HeaderValue::from_str(&node) {
                out.headers_mut().insert(SERVED_BY, v);
            }
            out
        }
        Err(e) => {
            let cause = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "could not connect"
            } else {
                "failed"
            };
            tracing::warn!(owner = %node, cause, "forwarding a request to the gateway that runs the account failed");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "owner_unreachable",
                format!(
                    "gateway {node} runs this account, and the request forwarded to it {cause}; retry"
                ),
            )
            .into_response()
        }
    })
}
