//! The real `opentelemetry-otlp` exporter sends spans over gRPC, HTTP/protobuf and HTTP/JSON;
//! what storage holds afterwards equals what the SDK recorded, field by field.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use callwatch_storage::schema::AttributeType;
use callwatch_storage::{Attribute, SpanRecord};
use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState, Tracer,
    TracerProvider,
};
use opentelemetry::{Array, KeyValue, Value};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};

use crate::common::Server;

fn every_type() -> Vec<KeyValue> {
    vec![
        KeyValue::new("http.route", "/v1/orders"),
        KeyValue::new("http.response.status_code", 503_i64),
        KeyValue::new("retry", true),
        KeyValue::new("ratio", 0.125),
        KeyValue::new("whole", 3.0),
        KeyValue::new("ids", Value::Array(Array::I64(vec![1, -2, 3]))),
        KeyValue::new("flags", Value::Array(Array::Bool(vec![true, false]))),
        KeyValue::new("weights", Value::Array(Array::F64(vec![0.5, 1.25]))),
        KeyValue::new(
            "tags",
            Value::Array(Array::String(vec!["a".into(), "b \"quoted\"".into()])),
        ),
        KeyValue::new("unicode", "zoë ✓ <script>"),
    ]
}

/// The stored form of an SDK attribute: OTLP type letter and text.
fn expected(kv: &KeyValue) -> Attribute {
    let (kind, value) = match &kv.value {
        Value::Bool(b) => (AttributeType::Bool, b.to_string()),
        Value::I64(i) => (AttributeType::Int, i.to_string()),
        Value::F64(f) => (AttributeType::Double, f.to_string()),
        Value::String(s) => (AttributeType::String, s.to_string()),
        Value::Array(array) => {
            let json = match array {
                Array::Bool(v) => serde_json::json!(v),
                Array::I64(v) => serde_json::json!(v),
                Array::F64(v) => serde_json::json!(v),
                Array::String(v) => {
                    serde_json::json!(v.iter().map(|s| s.as_str()).collect::<Vec<_>>())
                }
                other => panic!("unexpected array {other:?}"),
            };
            (AttributeType::Array, json.to_string())
        }
        other => panic!("unexpected value {other:?}"),
    };
    Attribute {
        key: kv.key.to_string(),
        kind,
        value: Some(value),
    }
}

fn ns(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
}

/// Records three spans through `provider`'s tracer: a server root with every attribute
/// type, an event and an error status; a client child with a link and explicit times; a
/// producer with status OK.
pub(crate) fn record_spans(provider: &SdkTracerProvider, name: &str) {
    let tracer = provider.tracer(name.to_string());
    let start = SystemTime::now() - Duration::from_millis(250);
    let root = tracer
        .span_builder("POST /v1/orders")
        .with_kind(SpanKind::Server)
        .with_attributes(every_type())
        .start(&tracer);
    use opentelemetry::trace::Span as _;
    let mut root = root;
    root.add_event(
        "exception",
        vec![
            KeyValue::new("exception.type", "TimeoutError"),
            KeyValue::new("attempt", 2_i64),
        ],
    );
    root.set_status(Status::error("payment failed"));
    let parent = opentelemetry::Context::current_with_span(root);
    let linked = SpanContext::new(
        TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
        SpanId::from_hex("b7ad6b7169203331").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::from_key_value([("vendor", "x")]).unwrap(),
    );
    let mut child = tracer
        .span_builder("payments.v1.PaymentService/Charge")
        .with_kind(SpanKind::Client)
        .with_start_time(start)
        .with_links(vec![Link::with_context(linked)])
        .with_attributes(vec![KeyValue::new("rpc.system", "grpc")])
        .start_with_context(&tracer, &parent);
    child.end_with_timestamp(start + Duration::from_millis(120));
    let mut producer = tracer
        .span_builder("order-events publish")
        .with_kind(SpanKind::Producer)
        .start_with_context(&tracer, &parent);
    producer.set_status(Status::Ok);
    producer.end();
    use opentelemetry::trace::TraceContextExt as _;
    parent.span().end();
}

pub(crate) fn provider(
    exporter: opentelemetry_otlp::SpanExporter,
    memory: &InMemorySpanExporter,
    service: &str,
) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .with_attributes([
                    KeyValue::new("service.instance.id", format!("{service}-1")),
                    KeyValue::new("service.version", "1.2.3"),
                ])
                .build(),
        )
        .with_simple_exporter(exporter)
        .with_simple_exporter(memory.clone())
        .build()
}

fn check(sent: &SpanData, stored: &SpanRecord, service: &str) {
    let context = &sent.span_context;
    assert_eq!(stored.trace_id, context.trace_id().to_string());
    let parent = (sent.parent_span_id != SpanId::INVALID).then(|| sent.parent_span_id.to_string());
    assert_eq!(stored.parent_span_id, parent);
    assert_eq!(stored.span_name, sent.name);
    let kind = match sent.span_kind {
        SpanKind::Server => "SERVER",
        SpanKind::Client => "CLIENT",
        SpanKind::Producer => "PRODUCER",
        SpanKind::Consumer => "CONSUMER",
        SpanKind::Internal => "INTERNAL",
    };
    assert_eq!(stored.span_kind, kind);
    assert_eq!(stored.start_ns, ns(sent.start_time));
    assert_eq!(stored.end_ns, ns(sent.end_time));
    assert_eq!(stored.duration_ns, ns(sent.end_time) - ns(sent.start_time));
    let (code, message) = match &sent.status {
        Status::Unset => ("UNSET", None),
        Status::Ok => ("OK", None),
        Status::Error { description } => ("ERROR", Some(description.to_string())),
    };
    assert_eq!(stored.status_code, code);
    assert_eq!(stored.status_message, message);
    assert_eq!(
        stored.attributes,
        sent.attributes.iter().map(expected).collect::<Vec<_>>()
    );
    assert_eq!(stored.events.len(), sent.events.len());
    for (stored, sent) in stored.events.iter().zip(sent.events.iter()) {
        assert_eq!(stored.name, sent.name);
        assert_eq!(stored.time_ns, ns(sent.timestamp));
        assert_eq!(
            stored.attributes,
            sent.attributes.iter().map(expected).collect::<Vec<_>>()
        );
    }
    assert_eq!(stored.links.len(), sent.links.len());
    for (stored, sent) in stored.links.iter().zip(sent.links.iter()) {
        assert_eq!(stored.trace_id, sent.span_context.trace_id().to_string());
        assert_eq!(stored.span_id, sent.span_context.span_id().to_string());
        assert_eq!(stored.trace_state.as_deref(), Some("vendor=x"));
    }
    assert_eq!(stored.service_name, service);
    assert_eq!(
        stored.service_instance_id.as_deref(),
        Some(format!("{service}-1").as_str())
    );
    assert_eq!(stored.service_version.as_deref(), Some("1.2.3"));
    assert!(
        stored
            .resource_attributes
            .iter()
            .any(|a| a.key == "telemetry.sdk.name" && a.value.as_deref() == Some("opentelemetry"))
    );
    assert_eq!(
        stored.scope_name.as_deref(),
        Some(sent.instrumentation_scope.name())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_from_the_otlp_exporter_are_stored_exactly_as_sent() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let memory = InMemorySpanExporter::default();
    let mut sent = Vec::new();

    let exporters = [
        (
            "checkout-grpc",
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(server.grpc_url())
                .build()
                .unwrap(),
        ),
        (
            "checkout-http-protobuf",
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(server.traces_url())
                .build()
                .unwrap(),
        ),
        (
            "checkout-http-json",
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpJson)
                .with_endpoint(server.traces_url())
                .build()
                .unwrap(),
        ),
    ];
    for (service, exporter) in exporters {
        let provider = provider(exporter, &memory, service);
        // The simple processor blocks on each export: keep it off the runtime's workers.
        let provider = tokio::task::spawn_blocking(move || {
            record_spans(&provider, service);
            provider.force_flush().unwrap();
            provider
        })
        .await
        .unwrap();
        let spans = memory.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 3);
        sent.extend(spans.into_iter().map(|span| (service, span)));
        memory.reset();
        tokio::task::spawn_blocking(move || provider.shutdown().unwrap())
            .await
            .unwrap();
    }

    let metric = |sample| crate::common::metric(&server, sample);
    assert_eq!(metric("callwatch_spans_accepted_total").await, 9.0);
    assert_eq!(
        metric("callwatch_ingest_requests_total{transport=\"grpc\"}").await,
        3.0
    );
    assert_eq!(
        metric("callwatch_ingest_requests_total{transport=\"http\"}").await,
        6.0
    );

    server.stop();
    let (stored, still_in_wal) = crate::common::stored_spans(&data).await;
    assert_eq!(
        still_in_wal, 0,
        "a graceful stop flushes everything to Parquet"
    );
    assert_eq!(stored.len(), sent.len());
    for (service, span) in &sent {
        let id = span.span_context.span_id().to_string();
        let matches: Vec<&SpanRecord> = stored.iter().filter(|s| s.span_id == id).collect();
        assert_eq!(matches.len(), 1, "span {id} stored once");
        check(span, matches[0], service);
    }
}

/// A stored span as it would be sent again: its times kept only as its duration, which
/// moves with the clock of the run.
fn shape(span: &SpanRecord) -> String {
    let mut span = span.clone();
    for event in &mut span.events {
        event.time_ns -= span.start_ns;
    }
    span.start_ns = 0;
    span.end_ns = 0;
    format!("{span:?}")
}

/// `callwatch load` sends the same requests over gRPC, OTLP/HTTP protobuf and OTLP/HTTP
/// JSON (the n-th request of a run carries the same ids whichever way it goes): every
/// field of every span is stored the same.
#[tokio::test]
async fn the_same_spans_are_stored_the_same_from_json_protobuf_and_grpc() {
    let mut runs = Vec::new();
    for protocol in ["grpc", "http/protobuf", "http/json"] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let server = Server::start(&data, &[]);
        let to = match protocol {
            "grpc" => server.grpc_url(),
            _ => format!("http://{}", server.otlp_http),
        };
        let output = crate::common::callwatch(&[
            "load",
            "--send-to",
            &to,
            "--protocol",
            protocol,
            "--services",
            "20",
            "--batch",
            "100",
            "--connections",
            "1",
            "--duration",
            "1s",
        ]);
        server.stop();
        assert!(output.contains("\"errors\":0"), "{protocol}: {output}");
        let (spans, _) = crate::common::stored_spans(&data).await;
        let by_id: std::collections::BTreeMap<String, String> = spans
            .iter()
            .map(|span| (span.span_id.clone(), shape(span)))
            .collect();
        assert_eq!(by_id.len(), spans.len(), "{protocol}: span ids are unique");
        runs.push((protocol, by_id));
    }
    // The requests every run got to send.
    let (_, first) = &runs[0];
    let common: Vec<&String> = first
        .keys()
        .filter(|id| runs.iter().all(|(_, run)| run.contains_key(*id)))
        .collect();
    assert!(
        common.len() >= 1000,
        "only {} spans in common",
        common.len()
    );
    for (protocol, run) in &runs[1..] {
        for id in &common {
            assert_eq!(run[*id], first[*id], "{protocol}: span {id}");
        }
    }
}
