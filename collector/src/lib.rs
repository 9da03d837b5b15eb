//! OTLP receivers of callwatch: gRPC and HTTP (protobuf and JSON, gzip) transports around one
//! ingest core that validates spans, converts them to Arrow and hands them to storage; and the
//! call pairer that storage runs over every acknowledged span.

mod auth;
mod client;
mod convert;
mod cors;
mod error;
#[cfg(test)]
mod fuzz;
mod graph_metrics;
mod grpc;
mod halves;
mod http;
mod inflight;
mod ingest;
mod json;
mod metrics;
mod pairer;
mod pending;
mod to_otlp;
mod wire;

pub use auth::{AuthListener, Denied, Scope, TokenSpec, Tokens, presented_token};
pub use client::{OtlpClient, int_attribute, text_attribute};
pub use convert::{Converted, Limits, convert, count_spans};
pub use cors::CorsOrigins;
pub use error::{IngestError, RpcStatus};
pub use graph_metrics::GraphMetrics;
pub use grpc::{EXPORT_PATH, TraceService};
pub use http::{TRACES_PATH, router as http_router};
pub use inflight::InflightBudget;
pub use ingest::Ingest;
pub use json::{
    decode_request as decode_json_request, encode_request as encode_json_request,
    encode_resource_spans as encode_json_resource_spans, encode_response as encode_json_response,
};
pub use metrics::IngestMetrics;
pub use pairer::{Pairer, PairingConfig};
pub use to_otlp::{attribute_json as otlp_json_attribute, traces_data};
