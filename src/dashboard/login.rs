//! `/login` and `/logout`. The login form checks the admin credentials exactly like
//! `POST /v1/auth/login` (same argon2 check, same login guard), then sets the session cookie and
//! goes back to the page that asked for a login (local paths only). The logout revokes the
//! session's JWT in the store, like `POST /v1/auth/logout`, and deletes the cookie.

use std::net::SocketAddr;

use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::render::{self, FormState, Section};
use super::session::{self, Posted, Session, LOGIN_COOKIE, SESSION_COOKIE};
use crate::app::SharedApp;
use crate::auth;
use crate::http::error::ApiError;
use crate::service::auth::{authenticate, revoke_session, LOGIN_TOKEN_TTL};

#[derive(Debug, Deserialize)]
pub struct Next {
    pub next: Option<String>,
}

/// `/`: the AI settings when logged in, else the login page.
pub async fn home(State(app): State<SharedApp>, parts: Parts) -> Response {
    let to = if Session::of(&parts, &app).await.is_some() {
        "/overview"
    } else {
        "/login"
    };
    (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
}

pub async fn page(State(app): State<SharedApp>, parts: Parts, Query(q): Query<Next>) -> Response {
    let next = session::safe_next(q.next.as_deref().unwrap_or("/")).to_string();
    if Session::of(&parts, &app).await.is_some() {
        return render::see_other(&next);
    }
    login_form(&parts.headers, &next, &FormState::default())
}

/// The login page with a fresh double-submit CSRF cookie.
fn login_form(headers: &HeaderMap, next: &str, state: &FormState) -> Response {
    let token = session::random_token();
    let body = html! {
        form.card.narrow method="post" action="/login" novalidate {
            input type="hidden" name="csrf" value=(token);
            input type="hidden" name="next" value=(next);
            (render::form_error(state))
            (render::text_field(state, "login", "username", "Username", "text", None))
            div.field {
                label for="login-password" { "Password" }
                input #login-password name="password" type="password" autocomplete="current-password";
            }
            button type="submit" { "Log in" }
        }
        p.muted { "The admin username and password come from WAGATE_ADMIN_USERNAME and WAGATE_ADMIN_PASSWORD "
            "(on a first start with SQLite, a generated password is printed once)." }
    };
    let mut resp = render::respond(
        state.status(),
        render::page("Log in", None, Section::None, body),
    );
    resp.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(LOGIN_COOKIE, &token, session::is_https(headers), 3600),
    );
    resp
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub next: String,
    #[serde(default)]
    pub csrf: String,
}

pub async fn submit(
    State(app): State<SharedApp>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let f = match form {
        Ok(Form(f)) => f,
        Err(rej) => return render::form_rejection(&rej),
    };
    let cookie = session::cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if cookie.is_empty()
        || !auth::constant_time_eq(cookie.as_bytes(), f.csrf.as_bytes())
        || !session::same_origin(&headers)
    {
        tracing::warn!("dashboard login refused: missing or wrong CSRF token");
        // A fresh form (and cookie) to try again with; nothing was checked.
        let mut state = FormState::with([("username", f.username)]);
        state.errors.insert(
            String::new(),
            "The login form expired or was not sent from this page. Please log in again.".into(),
        );
        state.status = Some(StatusCode::FORBIDDEN);
        return login_form(&headers, session::safe_next(&f.next), &state);
    }
    let next = session::safe_next(&f.next).to_string();
    let mut state = FormState::with([("username", f.username.clone())]);
    match authenticate(&app, peer.ip(), f.username, f.password).await {
        Ok((token, _)) => {
            let secure = session::is_https(&headers);
            let mut resp = render::see_other(&next);
            let h = resp.headers_mut();
            h.append(
                header::SET_COOKIE,
                session::set_cookie(SESSION_COOKIE, &token, secure, LOGIN_TOKEN_TTL.as_secs()),
            );
            h.append(
                header::SET_COOKIE,
                session::set_cookie(LOGIN_COOKIE, "", secure, 0),
            );
            resp
        }
        Err(e) => {
            let e = ApiError::from(e);
            let retry_after = e.retry_after;
            state.api_error(e, &[]);
            let mut resp = login_form(&headers, &next, &state);
            if let Some(secs) = retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
            }
            resp
        }
    }
}

pub async fn logout(State(app): State<SharedApp>, headers: HeaderMap, posted: Posted) -> Response {
    let session = &posted.session;
    if revoke_session(&app, session.jti, session.expires_at)
        .await
        .is_err()
    {
        // The cookie stays: deleting it would look like a logout while the token still works.
        return render::error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "The logout could not be recorded (the store is unavailable). Try again in a moment.",
        );
    }
    let mut resp = render::see_other("/login");
    resp.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(SESSION_COOKIE, "", session::is_https(&headers), 0),
    );
    resp
}
