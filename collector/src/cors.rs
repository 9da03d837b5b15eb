//! CORS for OTLP/HTTP, so that the OpenTelemetry JS web SDK can send from a browser page of
//! an allowed origin: its preflight is answered, and its export gets the header that lets
//! the page read the answer. Off unless origins are given; a request from another origin is
//! refused, preflight or not.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};

/// The headers a browser may send with an export.
const ALLOWED_HEADERS: &str = "authorization, content-type, content-encoding";

/// How long a browser may keep a preflight's answer, in seconds.
const MAX_AGE_S: &str = "86400";

/// Which browser origins may send spans.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No CORS: browsers keep pages of other origins from sending.
    #[default]
    None,
    /// Any origin (`*`).
    Any,
    /// These origins, e.g. `https://shop.example.com`, compared exactly.
    List(Vec<String>),
}

impl CorsOrigins {
    /// From the flag's values: `*`, or origins (`scheme://host[:port]`).
    pub fn parse(values: &[String]) -> Result<Self, String> {
        if values.is_empty() {
            return Ok(Self::None);
        }
        if values.iter().any(|v| v == "*") {
            return Ok(Self::Any);
        }
        let mut origins = Vec::new();
        for value in values {
            let origin = value.trim().trim_end_matches('/');
            let well_formed = origin.split_once("://").is_some_and(|(scheme, host)| {
                !scheme.is_empty() && !host.is_empty() && !host.contains('/')
            });
            if !well_formed {
                return Err(format!(
                    "{value:?} is not an origin: give scheme://host[:port], or *"
                ));
            }
            origins.push(origin.to_string());
        }
        Ok(Self::List(origins))
    }

    fn allows(&self, origin: &str) -> bool {
        match self {
            Self::None => false,
            Self::Any => true,
            Self::List(origins) => origins.iter().any(|o| o == origin),
        }
    }
}

/// Answers preflights and marks exports of allowed origins; refuses other origins.
pub async fn cors(State(origins): State<CorsOrigins>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let (CorsOrigins::Any | CorsOrigins::List(_), Some(origin)) = (&origins, origin) else {
        return next.run(request).await;
    };
    if !origin.to_str().is_ok_and(|o| origins.allows(o)) {
        return (StatusCode::FORBIDDEN, "origin not allowed to send spans\n").into_response();
    }
    let mut response = if request.method() == Method::OPTIONS {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOWED_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE_S),
        );
        response
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("retry-after"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_parsed_and_checked_exactly() {
        assert_eq!(CorsOrigins::parse(&[]), Ok(CorsOrigins::None));
        let any = CorsOrigins::parse(&["https://a.test".into(), "*".into()]).unwrap();
        assert_eq!(any, CorsOrigins::Any);
        assert!(any.allows("http://anything:8000"));
        let list =
            CorsOrigins::parse(&["https://shop.test/".into(), "http://localhost:3000".into()])
                .unwrap();
        assert!(list.allows("https://shop.test"));
        assert!(list.allows("http://localhost:3000"));
        assert!(!list.allows("https://shop.test.evil"));
        assert!(!list.allows("http://shop.test"));
        assert!(CorsOrigins::parse(&["shop.test".into()]).is_err());
        assert!(CorsOrigins::parse(&["https://shop.test/path".into()]).is_err());
        assert!(!CorsOrigins::None.allows("https://shop.test"));
    }
}
