//! OTLP/HTTP: `POST /v1/traces` with protobuf or JSON bodies, optionally gzip-compressed.

use std::io::Read;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, StatusCode, header};
use prost::Message;

use crate::auth::{AuthListener, Denied, Scope, Tokens, presented_token};
use crate::cors::CorsOrigins;
use crate::error::IngestError;
use crate::inflight::Charge;
use crate::ingest::Ingest;
use crate::json;

pub const TRACES_PATH: &str = "/v1/traces";

#[derive(Clone)]
struct HttpState {
    ingest: Arc<Ingest>,
    max_message_size: usize,
    tokens: Arc<Tokens>,
}

/// The OTLP/HTTP routes. Bodies over `max_message_size` (compressed or not) get 413; bodies
/// that do not fit the in-flight byte budget get 429. Browsers of `cors` origins may send.
/// Once `tokens` has any, a request needs one with the `ingest` scope.
pub fn router(
    ingest: Arc<Ingest>,
    max_message_size: usize,
    cors: CorsOrigins,
    tokens: Arc<Tokens>,
) -> Router {
    Router::new()
        .route(TRACES_PATH, post(export_traces))
        .with_state(HttpState {
            ingest,
            max_message_size,
            tokens,
        })
        // Around the routes, so that a preflight (OPTIONS) reaches it.
        .layer(axum::middleware::from_fn_with_state(
            cors,
            crate::cors::cors,
        ))
}

/// 401 with the scheme to use, or 403.
fn refused(denied: Denied) -> Response {
    match denied {
        Denied::Unauthenticated => {
            let mut response = reply_error(&IngestError::Unauthenticated, Format::Json);
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer realm=\"callwatch\""),
            );
            response
        }
        Denied::Forbidden => reply_error(&IngestError::Forbidden, Format::Json),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Protobuf,
    Json,
}

async fn export_traces(State(state): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    // Before the body is read: a stranger's bytes cost nothing.
    let token = presented_token(&headers);
    if let Err(denied) = state
        .tokens
        .check(token.as_deref(), Scope::Ingest, AuthListener::OtlpHttp)
    {
        return refused(denied);
    }
    let metrics = state.ingest.metrics();
    metrics.http_requests.add(1);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = match media_type(content_type).as_str() {
        "application/x-protobuf" | "application/protobuf" => Format::Protobuf,
        "application/json" => Format::Json,
        _ => {
            metrics.requests_invalid.add(1);
            let error = IngestError::UnsupportedContentType(content_type.to_string());
            return reply_error(&error, Format::Json);
        }
    };
    // Held until the spans are stored: the body and what it decodes to live that long.
    let mut charge = state.ingest.inflight().charge();
    let body = match read_body(&state, &headers, body, &mut charge).await {
        Ok(body) => inflate(&state, &headers, body, &mut charge),
        Err(error) => Err(error),
    };
    let exported = match (body, format) {
        (Ok(body), Format::Protobuf) => {
            let invalid =
                |error| format!("body is not a protobuf ExportTraceServiceRequest: {error}");
            state.ingest.export_protobuf(body, invalid).await
        }
        (Ok(body), Format::Json) => state.ingest.export_json(body).await,
        (Err(error), _) => {
            if error.is_client_fault() {
                metrics.requests_invalid.add(1);
            }
            return reply_error(&error, format);
        }
    };
    match exported {
        Ok(response) => {
            let (content_type, body) = match format {
                Format::Protobuf => ("application/x-protobuf", response.encode_to_vec()),
                Format::Json => ("application/json", json::encode_response(&response)),
            };
            (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Err(error) => reply_error(&error, format),
    }
}

/// Reads the body, charging its bytes as they arrive; at most `max_message_size`.
async fn read_body(
    state: &HttpState,
    headers: &HeaderMap,
    body: Body,
    charge: &mut Charge,
) -> Result<Bytes, IngestError> {
    let limit = state.max_message_size;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(IngestError::TooLarge { limit });
    }
    let expected = declared.unwrap_or(0);
    charge.grow(expected)?;
    let mut buffer = Vec::with_capacity(expected);
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|error| {
            IngestError::InvalidRequest(format!("reading the request body failed: {error}"))
        })?;
        let length = buffer.len() + chunk.len();
        if length > limit {
            return Err(IngestError::TooLarge { limit });
        }
        if length > buffer.capacity() {
            let capacity = (2 * buffer.capacity()).clamp(length, limit);
            charge.grow(capacity - buffer.capacity())?;
            buffer.reserve_exact(capacity - buffer.len());
        }
        buffer.extend_from_slice(&chunk);
    }
    state
        .ingest
        .metrics()
        .bytes_received
        .add(buffer.len() as u64);
    Ok(Bytes::from(buffer))
}

/// The body as sent, decompressed when `Content-Encoding` says gzip.
fn inflate(
    state: &HttpState,
    headers: &HeaderMap,
    body: Bytes,
    charge: &mut Charge,
) -> Result<Bytes, IngestError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "identity" | "" => Ok(body),
        "gzip" => gunzip(&body, state.max_message_size, charge),
        other => Err(IngestError::UnsupportedEncoding(other.to_string())),
    }
}

/// Decompresses at most `limit` bytes, charging them before they are allocated: a small
/// body cannot expand into a huge one, nor many of them together.
pub(crate) fn gunzip(body: &[u8], limit: usize, charge: &mut Charge) -> Result<Bytes, IngestError> {
    let mut decoder = flate2::read::GzDecoder::new(body);
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let read = decoder.read(&mut chunk).map_err(|error| {
            IngestError::InvalidRequest(format!("body is not valid gzip: {error}"))
        })?;
        if read == 0 {
            return Ok(Bytes::from(out));
        }
        let length = out.len() + read;
        if length > limit {
            return Err(IngestError::TooLarge { limit });
        }
        if length > out.capacity() {
            let capacity = (2 * out.capacity())
                .max(4 * body.len())
                .clamp(length, limit);
            charge.grow(capacity - out.capacity())?;
            out.reserve_exact(capacity - out.len());
        }
        out.extend_from_slice(&chunk[..read]);
    }
}

/// `application/json; charset=utf-8` → `application/json`.
fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn reply_error(error: &IngestError, format: Format) -> Response {
    if error.is_client_fault() {
        tracing::warn!(%error, "refused an OTLP/HTTP request");
    }
    let (parts, body) = error.http_response(format == Format::Json).into_parts();
    Response::from_parts(parts, axum::body::Body::from(body))
}
