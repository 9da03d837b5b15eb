//! OTLP receivers of callwatch: gRPC and HTTP (protobuf and JSON) transports around one
//! ingest core that validates, converts OTLP to Arrow and hands batches to storage.

mod convert;
mod json;
pub use convert::{Converted, Limits, convert, count_spans};
pub use json::{decode_request as decode_json_request, encode_response as encode_json_response};
