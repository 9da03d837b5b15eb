//! Who may read on the `--http` port, once tokens exist: API clients send a token (Bearer,
//! or Basic with the token as password, as Grafana and Prometheus do); browsers log in once
//! with a token on `/login` and then carry a session cookie.
//!
//! The cookie is `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page
//! can make the browser send it) and `Secure` under TLS. Requests that change state and are
//! made with the cookie must also come from this origin, by their `Origin` and
//! `Sec-Fetch-Site` headers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{Form, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use callwatch_collector::{AuthListener, Denied, Scope, Tokens, presented_token};
use serde::Deserialize;

use crate::AppState;
use crate::dashboard::html;

const COOKIE: &str = "callwatch_session";
/// Sessions kept at once; the oldest goes when a login would pass it.
const MAX_SESSIONS: usize = 10_000;

/// The tokens and the dashboard's sessions.
#[derive(Debug)]
pub struct WebAuth {
    tokens: Arc<Tokens>,
    lifetime: Duration,
    /// `Secure` cookies: the listener serves TLS.
    secure: bool,
    /// Session id → when it ends, in memory: a restart logs everyone out.
    sessions: Mutex<HashMap<String, Instant>>,
}

impl WebAuth {
    pub fn new(tokens: Arc<Tokens>, lifetime: Duration, secure: bool) -> Self {
        Self {
            tokens,
            lifetime,
            secure,
            sessions: Mutex::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.tokens.enabled()
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    fn start_session(&self) -> String {
        let id: String = rand::random::<[u8; 32]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let now = Instant::now();
        let mut sessions = self.sessions.lock().expect("not poisoned");
        sessions.retain(|_, ends| *ends > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, ends)| **ends)
                .map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id.clone(), now + self.lifetime);
        id
    }

    fn session_is_live(&self, id: &str) -> bool {
        let sessions = self.sessions.lock().expect("not poisoned");
        sessions.get(id).is_some_and(|ends| *ends > Instant::now())
    }

    fn end_session(&self, id: &str) {
        self.sessions.lock().expect("not poisoned").remove(id);
    }

    fn cookie(&self, value: &str, max_age: Duration) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let cookie = format!(
            "{COOKIE}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
            max_age.as_secs()
        );
        HeaderValue::from_str(&cookie).expect("hex and fixed text")
    }
}

/// Lets a request on to a route that reads when it carries a token with the `read` scope or
/// a live session; otherwise 401 (for a browser, with the login form) or 403, with no data.
pub async fn require_read(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let auth = &state.auth;
    if !auth.enabled() {
        return next.run(request).await;
    }
    let headers = request.headers();
    if let Some(token) = presented_token(headers) {
        return match auth
            .tokens
            .check(Some(&token), Scope::Read, AuthListener::Http)
        {
            Ok(_) => next.run(request).await,
            Err(denied) => refused(auth, denied, headers, request.uri()),
        };
    }
    if let Some(session) = session_cookie(headers)
        && auth.session_is_live(session)
    {
        if request.method() != Method::GET
            && request.method() != Method::HEAD
            && !same_origin(headers)
        {
            auth.tokens
                .count_failure(AuthListener::Http, Denied::Forbidden);
            return message(StatusCode::FORBIDDEN, "a request from another site");
        }
        return next.run(request).await;
    }
    let denied = auth
        .tokens
        .check(None, Scope::Read, AuthListener::Http)
        .expect_err("auth is on and no token was given");
    refused(auth, denied, headers, request.uri())
}

fn refused(auth: &WebAuth, denied: Denied, headers: &HeaderMap, uri: &axum::http::Uri) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    let (status, text) = match denied {
        Denied::Unauthenticated => (
            StatusCode::UNAUTHORIZED,
            "a token with the read scope is needed: Authorization: Bearer <token>, or Basic \
             with the token as password",
        ),
        Denied::Forbidden => (
            StatusCode::FORBIDDEN,
            "this token may not read (it lacks the read scope)",
        ),
    };
    let mut response = if wants_html {
        let next = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let text = if denied == Denied::Unauthenticated {
            ""
        } else {
            text
        };
        login_page(auth, status, text, &next)
    } else {
        message(status, text)
    };
    if denied == Denied::Unauthenticated {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"callwatch\""),
        );
    }
    response
}

/// A JSON error, as the APIs give them.
fn message(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": text }))).into_response()
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// Whether a browser says the request comes from a page of this origin. Clients that are
/// not browsers send neither header.
fn same_origin(headers: &HeaderMap) -> bool {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(site) = header(header::HeaderName::from_static("sec-fetch-site"))
        && site != "same-origin"
        && site != "none"
    {
        return false;
    }
    match (header(header::ORIGIN), header(header::HOST)) {
        (None, _) => true,
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority == host),
        (Some(_), None) => false,
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    message: &'a str,
    next: &'a str,
    lifetime: String,
}

fn login_page(auth: &WebAuth, status: StatusCode, message: &str, next: &str) -> Response {
    let mut response = html(&LoginPage {
        message,
        next: local_path(next),
        lifetime: humantime::format_duration(auth.lifetime).to_string(),
    });
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Where to go after logging in: a path on this server, never another site.
fn local_path(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/"
    }
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

pub async fn login_form(
    State(state): State<AppState>,
    Query(query): Query<LoginQuery>,
) -> Response {
    let next = query.next.as_deref().unwrap_or("/");
    if !state.auth.enabled() {
        return redirect(local_path(next), None);
    }
    login_page(&state.auth, StatusCode::OK, "", next)
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let auth = &state.auth;
    let next = form.next.as_deref().unwrap_or("/");
    if !auth.enabled() {
        return redirect(local_path(next), None);
    }
    if !same_origin(&headers) {
        return message(StatusCode::FORBIDDEN, "a login from another site");
    }
    match auth
        .tokens
        .check(Some(&form.token), Scope::Read, AuthListener::Http)
    {
        Ok(_) => {
            let session = auth.start_session();
            redirect(local_path(next), Some(auth.cookie(&session, auth.lifetime)))
        }
        Err(Denied::Unauthenticated) => login_page(
            auth,
            StatusCode::UNAUTHORIZED,
            "That token is not known.",
            next,
        ),
        Err(Denied::Forbidden) => login_page(
            auth,
            StatusCode::FORBIDDEN,
            "That token may not read: it needs the read or admin scope.",
            next,
        ),
    }
}

pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return message(StatusCode::FORBIDDEN, "a logout from another site");
    }
    if let Some(session) = session_cookie(&headers) {
        state.auth.end_session(session);
    }
    let expired = state.auth.cookie("", Duration::ZERO);
    redirect("/login", Some(expired))
}

/// 303 See Other: after a form, the browser GETs `to`.
fn redirect(to: &str, cookie: Option<HeaderValue>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/")),
    );
    if let Some(cookie) = cookie {
        headers.insert(header::SET_COOKIE, cookie);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(local_path("/services/a?range=1h"), "/services/a?range=1h");
        assert_eq!(local_path("//evil.test/x"), "/");
        assert_eq!(local_path("https://evil.test"), "/");
        assert_eq!(local_path("/\\evil.test"), "/");
    }

    #[test]
    fn another_site_is_told_apart() {
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, value.parse().unwrap());
            }
            map
        };
        assert!(same_origin(&headers(&[("host", "cw:8080")])));
        assert!(same_origin(&headers(&[
            ("host", "cw:8080"),
            ("origin", "https://cw:8080"),
            ("sec-fetch-site", "same-origin"),
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "cw:8080"),
            ("origin", "https://evil.test"),
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "cw:8080"),
            ("sec-fetch-site", "cross-site"),
        ])));
    }

    #[test]
    fn sessions_end_and_cookies_are_strict() {
        let auth = WebAuth::new(Arc::default(), Duration::from_secs(60), true);
        let id = auth.start_session();
        assert!(auth.session_is_live(&id));
        auth.end_session(&id);
        assert!(!auth.session_is_live(&id));
        let short = WebAuth::new(Arc::default(), Duration::ZERO, false);
        let id = short.start_session();
        assert!(!short.session_is_live(&id));
        let cookie = auth.cookie("abc", Duration::from_secs(60));
        let cookie = cookie.to_str().unwrap();
        for part in ["HttpOnly", "SameSite=Strict", "Secure", "Max-Age=60"] {
            assert!(cookie.contains(part), "{cookie}");
        }
        assert!(
            !short
                .cookie("abc", Duration::ZERO)
                .to_str()
                .unwrap()
                .contains("Secure")
        );
    }
}
