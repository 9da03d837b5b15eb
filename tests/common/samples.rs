//! The recorded demo traffic in `sample-data/`, read back span by span.

use std::path::{Path, PathBuf};

use callwatch_collector::decode_json_request;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;

/// The recordings, `sample-data/*.jsonl`.
pub fn samples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "sample-data holds the recorded scenarios");
    files
}

/// The recording of one scenario, `sample-data/{name}.jsonl`.
pub fn sample(name: &str) -> PathBuf {
    samples()
        .into_iter()
        .find(|f| f.file_stem().is_some_and(|s| s == name))
        .unwrap_or_else(|| panic!("no recording of scenario {name}"))
}

/// Every request of a recording, as it was sent.
pub fn recorded_requests(file: &Path) -> Vec<ExportTraceServiceRequest> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|line| decode_json_request(line.as_bytes()).unwrap())
        .collect()
}

/// Every span of a recording, with its service name.
pub fn recorded_spans(file: &Path) -> Vec<(String, Span)> {
    let mut spans = Vec::new();
    for request in recorded_requests(file) {
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    any_value::Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap();
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
    }
    spans
}

/// A string attribute of a span.
pub fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
}
