//! Dashboard sessions and CSRF protection.
//!
//! A session is an admin JWT from the same [`JwtSigner`](crate::auth::JwtSigner) as the API's
//! login, kept in an `HttpOnly; SameSite=Strict; Path=/` cookie (`Secure` when the request came
//! over https). Every POST carries a CSRF token in a hidden field: an HMAC-SHA256 keyed by the
//! session token itself, so it is bound to that session, cannot be computed without the
//! (HttpOnly, unreadable to scripts) cookie, and needs no server-side state. The login form, which
//! has no session yet, uses a double-submit token: a random value in a `SameSite=Strict` cookie
//! that the hidden field must repeat. POSTs whose `Origin` names another host are refused too.
//! A logout revokes the session's JWT (its `jti`) in the store, so the same cookie no longer opens
//! a page on any gateway sharing the store (docs/adr/0017-token-revocation.md).

use axum::extract::{Form, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use super::render;
use crate::app::{SharedApp, Who};
use crate::auth;
use crate::http::error::ApiError;
use crate::http::extract::request_id;
use crate::service::auth::verify_admin_token;
use crate::service::Error;

/// The session cookie (an admin JWT).
pub const SESSION_COOKIE: &str = "wagate_session";
/// The login form's double-submit CSRF cookie.
pub const LOGIN_COOKIE: &str = "wagate_login";
pub use super::render::CSRF_FIELD;

/// A logged-in admin.
#[derive(Debug, Clone)]
pub struct Session {
    /// The admin username (the JWT's `sub`).
    pub sub: String,
    /// The session id (the JWT's `jti`), revoked by the logout.
    pub jti: uuid::Uuid,
    /// The JWT's `exp` (Unix seconds).
    pub expires_at: i64,
    /// The CSRF token of this session, for the hidden field of every form.
    pub csrf: String,
    pub request_id: Option<String>,
}

impl render::Viewer for Session {
    fn name(&self) -> &str {
        &self.sub
    }

    fn csrf_token(&self) -> &str {
        &self.csrf
    }
}

impl Session {
    /// Who acts in the service functions: `admin:<username>`, with the request id.
    pub fn who(&self) -> Who {
        Who {
            actor: format!("admin:{}", self.sub),
            request_id: self.request_id.clone(),
        }
    }

    /// The session of a request, if its cookie holds a valid, unexpired admin JWT that no logout
    /// revoked; `Err` (503) when the revocations cannot be read.
    pub async fn load(parts: &Parts, app: &SharedApp) -> Result<Option<Session>, ApiError> {
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Ok(None);
        };
        let claims = match verify_admin_token(app, token).await {
            Ok(claims) => claims,
            Err(Error::Unauthorized(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(csrf_for(token).map(|csrf| Session {
            sub: claims.sub,
            jti: claims.jti,
            expires_at: claims.exp,
            csrf,
            request_id: request_id(parts),
        }))
    }

    /// The session of a request, `None` also when it cannot be checked.
    pub async fn of(parts: &Parts, app: &SharedApp) -> Option<Session> {
        Self::load(parts, app).await.ok().flatten()
    }
}

impl FromRequestParts<SharedApp> for Session {
    /// A missing or expired session sends the browser to the login page, which comes back here.
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &SharedApp) -> Result<Self, Response> {
        match Session::load(parts, app).await {
            Ok(Some(session)) => Ok(session),
            Ok(None) => Err(login_redirect(parts)),
            Err(_) => Err(render::error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "The session cannot be checked right now (the store is unavailable). Try again in a moment.",
            )),
        }
    }
}

/// The value of cookie `name`, from any `Cookie` header of the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Whether the browser reached us over https (directly or through a TLS-terminating proxy that
/// says so): then cookies get `Secure`.
pub fn is_https(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split([';', ','])
                .any(|p| p.trim().eq_ignore_ascii_case("proto=https"))
        });
    forwarded_proto || forwarded
}

/// A `Set-Cookie` value: `HttpOnly; SameSite=Strict; Path=/`, plus `Secure` over https.
/// `max_age` 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, secure: bool, max_age: u64) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let v = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    // Names and values are ASCII (JWTs and hex), so the header value is always valid.
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The CSRF token bound to a session token (`None` only if HMAC refused the key, which it
/// does not for any length; no session is better than a guessable token).
pub fn csrf_for(session_token: &str) -> Option<String> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(session_token.as_bytes()).ok()?;
    mac.update(b"wagate-dashboard-csrf-v1");
    Some(hex::encode(mac.finalize().into_bytes()))
}

/// A fresh random token for the login form's double-submit cookie.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// `next` if it is a path on this site (`/…`, not `//…`, no backslash; printable ASCII only, as
/// a browser sends a path), else `/`: the login page never redirects off-site.
pub fn safe_next(next: &str) -> &str {
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && next.bytes().all(|b| b.is_ascii_graphic());
    if local {
        next
    } else {
        "/"
    }
}

/// 302 to the login page with `next` pointing back to this page (for a GET; a POST goes back to
/// the home page, since its form data is gone).
pub fn login_redirect(parts: &Parts) -> Response {
    let next = if parts.method == Method::GET {
        parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string()
    } else {
        "/".to_string()
    };
    let location = format!("/login?next={}", render::enc(&next));
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, "no-store".into()),
        ],
    )
        .into_response()
}

/// Whether a state-changing request's `Origin` (when the browser sent one) is this very host.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        // Browsers send Origin on every cross-site POST; its absence means same-site or no
        // browser at all. The CSRF token is the real check.
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, h)| h);
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// The fields of a posted form, in order.
#[derive(Debug, Clone, Default)]
pub struct Fields(pub Vec<(String, String)>);

impl AsRef<[(String, String)]> for Fields {
    fn as_ref(&self) -> &[(String, String)] {
        &self.0
    }
}

impl Fields {
    /// A field's value (the last one when repeated), `None` when absent.
    pub fn opt(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A field's value, empty when absent.
    pub fn get(&self, name: &str) -> &str {
        self.opt(name).unwrap_or("")
    }

    /// The field, trimmed; `None` when absent or blank.
    pub fn nonblank(&self, name: &str) -> Option<String> {
        self.opt(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }
}

/// A POSTed dashboard form from a logged-in admin with a valid CSRF token and no foreign
/// `Origin`. Anything else is refused before the handler runs: no session → login, bad token
/// or origin → 403 page.
pub struct Posted {
    pub session: Session,
    pub fields: Fields,
}

impl FromRequest<SharedApp> for Posted {
    type Rejection = Response;

    async fn from_request(req: Request, app: &SharedApp) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, app).await?;
        if !same_origin(&parts.headers) {
            tracing::warn!("dashboard POST refused: foreign Origin");
            return Err(csrf_refused());
        }
        let req = Request::from_parts(parts, body);
        let Form(pairs) = Form::<Vec<(String, String)>>::from_request(req, app)
            .await
            .map_err(|rej| render::form_rejection(&rej))?;
        let fields = Fields(pairs);
        let sent = fields.get(CSRF_FIELD);
        if !auth::constant_time_eq(sent.as_bytes(), session.csrf.as_bytes()) {
            tracing::warn!("dashboard POST refused: missing or wrong CSRF token");
            return Err(csrf_refused());
        }
        Ok(Posted { session, fields })
    }
}

/// The 403 page of a form without a valid CSRF token.
pub fn csrf_refused() -> Response {
    render::error_page(
        StatusCode::FORBIDDEN,
        "This form was not sent from a current dashboard page (missing or stale security token). \
         Go back, reload the page and try again.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next("/accounts/a?x=1"), "/accounts/a?x=1");
        assert_eq!(safe_next("//evil.example/"), "/");
        assert_eq!(safe_next("https://evil.example/"), "/");
        assert_eq!(safe_next("/\\evil.example"), "/");
        assert_eq!(safe_next(""), "/");
        assert_eq!(safe_next("/a\r\nSet-Cookie: x"), "/");
        assert_eq!(safe_next("/ä"), "/");
    }

    #[test]
    fn csrf_is_bound_to_the_session() {
        assert_eq!(csrf_for("a.b.c"), csrf_for("a.b.c"));
        assert_ne!(csrf_for("a.b.c"), csrf_for("a.b.d"));
        assert_eq!(csrf_for("x").map(|t| t.len()), Some(64));
    }

    #[test]
    fn cookies_are_parsed_from_any_header() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; wagate_session=tok"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("tok"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn foreign_origins_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
    }
}
