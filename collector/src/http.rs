//! OTLP/HTTP: `POST /v1/traces` with protobuf or JSON bodies, optionally gzip-compressed.

use std::io::Read;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::error::IngestError;
use crate::ingest::Ingest;
use crate::json;

pub const TRACES_PATH: &str = "/v1/traces";

#[derive(Clone)]
struct HttpState {
    ingest: Arc<Ingest>,
    max_message_size: usize,
}

/// The OTLP/HTTP routes. Bodies over `max_message_size` (compressed or not) get 413.
pub fn router(ingest: Arc<Ingest>, max_message_size: usize) -> Router {
    Router::new()
        .route(TRACES_PATH, post(export_traces))
        .layer(DefaultBodyLimit::max(max_message_size))
        .with_state(HttpState {
            ingest,
            max_message_size,
        })
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Protobuf,
    Json,
}

async fn export_traces(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
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
    match decode(&state, &headers, body, format) {
        Ok(request) => match state.ingest.export(request).await {
            Ok(response) => {
                let (content_type, body) = match format {
                    Format::Protobuf => ("application/x-protobuf", response.encode_to_vec()),
                    Format::Json => ("application/json", json::encode_response(&response)),
                };
                (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
            }
            Err(error) => reply_error(&error, format),
        },
        Err(error) => {
            metrics.requests_invalid.add(1);
            reply_error(&error, format)
        }
    }
}

fn decode(
    state: &HttpState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    format: Format,
) -> Result<ExportTraceServiceRequest, IngestError> {
    let limit = state.max_message_size;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            IngestError::TooLarge { limit }
        } else {
            IngestError::InvalidRequest(rejection.body_text())
        }
    })?;
    state.ingest.metrics().bytes_received.add(body.len() as u64);
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    let body = match encoding.as_str() {
        "identity" | "" => body,
        "gzip" => gunzip(&body, limit)?,
        other => return Err(IngestError::UnsupportedEncoding(other.to_string())),
    };
    match format {
        Format::Protobuf => ExportTraceServiceRequest::decode(body).map_err(|error| {
            IngestError::InvalidRequest(format!(
                "body is not a protobuf ExportTraceServiceRequest: {error}"
            ))
        }),
        Format::Json => json::decode_request(&body).map_err(IngestError::InvalidRequest),
    }
}

/// Decompresses at most `limit` bytes: a small body cannot expand into a huge one.
fn gunzip(body: &[u8], limit: usize) -> Result<Bytes, IngestError> {
    let mut out = Vec::with_capacity((body.len() * 4).min(limit));
    flate2::read::GzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|error| IngestError::InvalidRequest(format!("body is not valid gzip: {error}")))?;
    if out.len() > limit {
        return Err(IngestError::TooLarge { limit });
    }
    Ok(Bytes::from(out))
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
