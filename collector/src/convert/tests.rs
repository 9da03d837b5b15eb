use callwatch_storage::schema::AttributeType as T;
use callwatch_storage::{Attribute, SpanRecord, span_records};
use opentelemetry_proto::tonic::common::v1::{
    ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::*;

const NOW: i64 = 1_795_000_000_000_000_000;

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn string(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

fn span(trace: u8, id: u8, parent: Option<u8>, kind: i32) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: "GET /v1/users/{id}".into(),
        kind,
        start_time_unix_nano: NOW as u64,
        end_time_unix_nano: NOW as u64 + 1_500_000,
        ..Span::default()
    }
}

fn request(resource: Vec<KeyValue>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "io.opentelemetry.http".into(),
                    version: "1.2.3".into(),
                    attributes: vec![string("scope.kind", "http")],
                    dropped_attributes_count: 0,
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn records(request: &ExportTraceServiceRequest, limits: &Limits) -> (Converted, Vec<SpanRecord>) {
    let converted = convert(request, NOW, limits).unwrap();
    let records = converted
        .batch
        .as_ref()
        .map(|b| span_records(b).unwrap())
        .unwrap_or_default();
    (converted, records)
}

fn attr(key: &str, kind: T, value: &str) -> Attribute {
    Attribute {
        key: key.into(),
        kind,
        value: Some(value.into()),
    }
}

#[test]
fn every_field_and_attribute_type_is_kept() {
    use any_value::Value as V;
    let mut server = span(0xab, 0x02, Some(0x01), 2);
    server.trace_state = "vendor=1".into();
    server.flags = 0x301;
    server.attributes = vec![
        string("http.route", "/v1/users/{id}"),
        kv("http.response.status_code", V::IntValue(503)),
        kv("retry", V::BoolValue(true)),
        kv("ratio", V::DoubleValue(0.25)),
        kv("whole", V::DoubleValue(2.0)),
        kv("blob", V::BytesValue(vec![1, 2, 3])),
        kv(
            "tags",
            V::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(V::StringValue("a".into())),
                    },
                    AnyValue {
                        value: Some(V::IntValue(7)),
                    },
                    AnyValue {
                        value: Some(V::DoubleValue(1.5)),
                    },
                ],
            }),
        ),
        kv(
            "nested",
            V::KvlistValue(KeyValueList {
                values: vec![kv("k", V::BoolValue(false))],
            }),
        ),
        KeyValue {
            key: "empty".into(),
            value: None,
            ..KeyValue::default()
        },
    ];
    server.dropped_attributes_count = 2;
    server.events = vec![Event {
        time_unix_nano: NOW as u64 + 10,
        name: "exception".into(),
        attributes: vec![string("exception.type", "TimeoutError")],
        dropped_attributes_count: 1,
    }];
    server.dropped_events_count = 3;
    server.links = vec![Link {
        trace_id: vec![0xcd; 16],
        span_id: vec![0x09; 8],
        trace_state: "k=v".into(),
        attributes: vec![string("messaging.operation", "process")],
        dropped_attributes_count: 0,
        flags: 1,
    }];
    server.dropped_links_count = 4;
    server.status = Some(Status {
        message: "upstream unavailable".into(),
        code: 2,
    });
    let request = request(
        vec![
            string("service.name", "user-service"),
            string("service.instance.id", "user-1"),
            string("service.version", "2.4.0"),
            kv("host.cpus", V::IntValue(8)),
        ],
        vec![server],
    );
    let (converted, records) = records(&request, &Limits::default());
    assert_eq!((converted.accepted, converted.rejected), (1, 0));
    let got = &records[0];
    assert_eq!(got.trace_id, "abababababababababababababababab");
    assert_eq!(got.span_id, "0202020202020202");
    assert_eq!(got.parent_span_id.as_deref(), Some("0101010101010101"));
    assert_eq!(got.trace_state.as_deref(), Some("vendor=1"));
    assert_eq!(got.flags, 0x301);
    assert_eq!(got.service_name, "user-service");
    assert_eq!(got.service_instance_id.as_deref(), Some("user-1"));
    assert_eq!(got.service_version.as_deref(), Some("2.4.0"));
    assert_eq!(got.span_name, "GET /v1/users/{id}");
    assert_eq!(got.span_kind, "SERVER");
    assert_eq!(
        (got.start_ns, got.end_ns, got.duration_ns),
        (NOW, NOW + 1_500_000, 1_500_000)
    );
    assert_eq!(got.status_code, "ERROR");
    assert_eq!(got.status_message.as_deref(), Some("upstream unavailable"));
    assert_eq!(
        got.attributes,
        vec![
            attr("http.route", T::String, "/v1/users/{id}"),
            attr("http.response.status_code", T::Int, "503"),
            attr("retry", T::Bool, "true"),
            attr("ratio", T::Double, "0.25"),
            attr("whole", T::Double, "2"),
            attr("blob", T::Bytes, "AQID"),
            attr("tags", T::Array, r#"["a",7,1.5]"#),
            attr("nested", T::KeyValueList, r#"{"k":false}"#),
            Attribute {
                key: "empty".into(),
                kind: T::Empty,
                value: None
            },
        ]
    );
    assert_eq!(got.dropped_attributes_count, 2);
    assert_eq!(got.events.len(), 1);
    assert_eq!(got.events[0].time_ns, NOW + 10);
    assert_eq!(got.events[0].name, "exception");
    assert_eq!(
        got.events[0].attributes,
        vec![attr("exception.type", T::String, "TimeoutError")]
    );
    assert_eq!(got.events[0].dropped_attributes_count, 1);
    assert_eq!(got.dropped_events_count, 3);
    assert_eq!(got.links[0].trace_id, "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd");
    assert_eq!(got.links[0].span_id, "0909090909090909");
    assert_eq!(got.links[0].trace_state.as_deref(), Some("k=v"));
    assert_eq!(got.links[0].flags, 1);
    assert_eq!(
        got.links[0].attributes,
        vec![attr("messaging.operation", T::String, "process")]
    );
    assert_eq!(got.dropped_links_count, 4);
    assert_eq!(got.resource_attributes.len(), 4);
    assert_eq!(got.resource_attributes[3], attr("host.cpus", T::Int, "8"));
    assert_eq!(got.scope_name.as_deref(), Some("io.opentelemetry.http"));
    assert_eq!(got.scope_version.as_deref(), Some("1.2.3"));
    assert_eq!(
        got.scope_attributes,
        vec![attr("scope.kind", T::String, "http")]
    );
}

#[test]
fn spans_without_service_name_are_unknown_service() {
    let (_, records) = records(
        &request(vec![], vec![span(1, 1, None, 1)]),
        &Limits::default(),
    );
    assert_eq!(records[0].service_name, "unknown_service");
    assert_eq!(records[0].parent_span_id, None);
    assert_eq!(records[0].status_code, "UNSET");
    assert_eq!(records[0].span_kind, "INTERNAL");
}

#[test]
fn invalid_spans_are_rejected_with_reasons_and_the_rest_kept() {
    let mut bad = Vec::new();
    let mut empty_trace = span(1, 1, None, 2);
    empty_trace.trace_id.clear();
    bad.push(empty_trace);
    bad.push(span(0, 1, None, 2)); // all-zero trace id
    let mut short_span = span(1, 1, None, 2);
    short_span.span_id = vec![1; 4];
    bad.push(short_span);
    let mut backwards = span(1, 2, None, 2);
    backwards.end_time_unix_nano = backwards.start_time_unix_nano - 1;
    bad.push(backwards);
    let mut epoch = span(1, 3, None, 2);
    epoch.start_time_unix_nano = 0;
    bad.push(epoch);
    let mut future = span(1, 4, None, 2);
    future.start_time_unix_nano = (NOW + 48 * 3_600_000_000_000) as u64;
    future.end_time_unix_nano = future.start_time_unix_nano + 1;
    bad.push(future);
    let mut bad_parent = span(1, 5, None, 2);
    bad_parent.parent_span_id = vec![1; 3];
    bad.push(bad_parent);
    let good = span(2, 9, None, 2);
    bad.insert(3, good);

    let (converted, records) = records(&request(vec![], bad), &Limits::default());
    assert_eq!((converted.accepted, converted.rejected), (1, 7));
    assert_eq!(records[0].span_id, "0909090909090909");
    assert_eq!(
        converted.reasons.len(),
        5,
        "only the first few are spelled out"
    );
    assert!(converted.reasons[0].contains("trace_id must be 16 bytes, got 0"));
    assert!(converted.reasons[1].contains("trace_id is all zeroes"));
    assert!(converted.reasons[2].contains("span_id must be 8 bytes, got 4"));
    assert!(converted.reasons[3].contains("span 5: end_time_unix_nano"));
    assert!(converted.reasons[4].contains("not a plausible time"));
}

#[test]
fn limits_drop_and_count_what_is_over_and_cut_long_strings() {
    let limits = Limits {
        max_attributes: 2,
        max_events: 1,
        max_links: 1,
        max_value_bytes: 5,
        ..Limits::default()
    };
    let mut s = span(1, 1, None, 3);
    s.attributes = vec![
        string("a", "héllo wörld"),
        string("b", "x"),
        string("c", "y"),
    ];
    s.dropped_attributes_count = 1;
    s.events = vec![Event::default(), Event::default()];
    let link = Link {
        trace_id: vec![3; 16],
        span_id: vec![3; 8],
        ..Link::default()
    };
    let invalid_link = Link {
        trace_id: vec![0; 16],
        span_id: vec![3; 8],
        ..Link::default()
    };
    s.links = vec![link.clone(), invalid_link, link];
    let (converted, records) = records(&request(vec![], vec![s]), &limits);
    let got = &records[0];
    assert_eq!(got.attributes.len(), 2);
    assert_eq!(
        got.attributes[0].value.as_deref(),
        Some("héll"),
        "cut at a char boundary"
    );
    assert_eq!(got.dropped_attributes_count, 2);
    assert_eq!((got.events.len(), got.dropped_events_count), (1, 1));
    assert_eq!((got.links.len(), got.dropped_links_count), (1, 2));
    assert_eq!(got.span_name, "GET /");
    // The value "héllo wörld", the span name and the scope attribute key "scope.kind".
    assert_eq!(converted.truncated_values, 3);
}

#[test]
fn an_empty_request_gives_no_batch() {
    let converted = convert(
        &ExportTraceServiceRequest::default(),
        NOW,
        &Limits::default(),
    )
    .unwrap();
    assert!(converted.batch.is_none());
    assert_eq!(converted.accepted + converted.rejected, 0);
}
