//! Export requests built by hand, with ids that say who sent them.

use std::time::{SystemTime, UNIX_EPOCH};

use callwatch_collector::text_attribute;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A span whose ids encode (`sender`, `request`, `index`), so each is unique and traceable.
pub fn numbered_span(sender: u32, request: u32, index: u32) -> Span {
    let mut trace_id = [0u8; 16];
    trace_id[0] = 0xca;
    trace_id[4..8].copy_from_slice(&sender.to_be_bytes());
    trace_id[8..12].copy_from_slice(&request.to_be_bytes());
    let mut span_id = [0u8; 8];
    span_id[0] = (sender as u8) | 0x80;
    span_id[1..4].copy_from_slice(&request.to_be_bytes()[1..]);
    span_id[4..8].copy_from_slice(&index.to_be_bytes());
    let start = now_ns();
    Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        name: "GET /v1/users/{id}".into(),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 2_000_000,
        attributes: vec![text_attribute("http.route", "/v1/users/{id}")],
        ..Span::default()
    }
}

pub fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![text_attribute("service.name", service)],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            schema_url: String::new(),
        }],
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `text` percent-encoded as one URL path segment or query value.
pub fn url_component(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
