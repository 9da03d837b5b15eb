//! OTLP receivers of callwatch: gRPC and HTTP (protobuf and JSON, gzip) transports around one
//! ingest core that validates spans, converts them to Arrow and hands them to storage.

mod client;
mod convert;
mod error;
mod grpc;
mod http;
mod ingest;
mod json;
mod metrics;

pub use client::OtlpClient;
pub use convert::{Converted, Limits, convert, count_spans};
pub use error::{IngestError, RpcStatus};
pub use grpc::{EXPORT_PATH, TraceService};
pub use http::{TRACES_PATH, router as http_router};
pub use ingest::Ingest;
pub use json::{
    decode_request as decode_json_request, encode_request as encode_json_request,
    encode_response as encode_json_response,
};
pub use metrics::IngestMetrics;
