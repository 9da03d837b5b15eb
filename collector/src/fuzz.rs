//! Property tests over what arrives from the network: OTLP protobuf and JSON bodies, and
//! gzip. Inputs are valid requests, mutated, and raw bytes. Whatever arrives gets an answer
//! (a converted request or an error) and never a panic, a gzip body never inflates past
//! its limit, and a protobuf body read in place gives what prost decodes. `PROPTEST_CASES` sets how many cases each runs (256 by default);
//! `benches/fuzz.sh` runs each for minutes.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use proptest::prelude::*;
use prost::Message;

use crate::convert::{
    Converted, Limits, convert, convert_views, reported_consumer_groups, reported_namespaces,
};
use crate::wire;

/// Now, for conversions: fixed, so that a failing case replays the same.
const NOW_NS: i64 = 1_795_000_000_000_000_000;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z./_-]{0,12}",
        any::<String>(),
        Just("service.name".to_string()),
        Just("<script>alert(1)</script>".to_string()),
    ]
}

fn any_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        text().prop_map(Value::StringValue),
        any::<bool>().prop_map(Value::BoolValue),
        any::<i64>().prop_map(Value::IntValue),
        any::<f64>().prop_map(Value::DoubleValue),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::BytesValue),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(|values| {
                Value::ArrayValue(ArrayValue {
                    values: values
                        .into_iter()
                        .map(|v| AnyValue { value: Some(v) })
                        .collect(),
                })
            }),
            proptest::collection::vec((text(), inner), 0..4).prop_map(|pairs| {
                Value::KvlistValue(KeyValueList {
                    values: pairs
                        .into_iter()
                        .map(|(key, v)| KeyValue {
                            key,
                            value: Some(AnyValue { value: Some(v) }),
                            ..Default::default()
                        })
                        .collect(),
                })
            }),
        ]
    });
    proptest::option::weighted(0.9, value).prop_map(|value| AnyValue { value })
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    proptest::collection::vec(
        (text(), proptest::option::weighted(0.9, any_value())).prop_map(|(key, value)| KeyValue {
            key,
            value,
            ..Default::default()
        }),
        0..6,
    )
}

/// Ids of the right length mostly, and of any length sometimes.
fn id(length: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => proptest::collection::vec(any::<u8>(), length),
        1 => proptest::collection::vec(any::<u8>(), 0..20),
    ]
}

fn time() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => (NOW_NS as u64 - 3_600_000_000_000)..(NOW_NS as u64),
        1 => any::<u64>(),
    ]
}

fn span() -> impl Strategy<Value = Span> {
    (
        (id(16), id(8), id(8), text(), 0..8i32),
        (time(), time(), attributes(), 0..5i32, text()),
        proptest::collection::vec((time(), text(), attributes()), 0..3),
        proptest::collection::vec((id(16), id(8), attributes()), 0..2),
        (text(), any::<u32>(), 0..3u32, 0..3u32),
    )
        .prop_map(
            |(
                (trace_id, span_id, parent_span_id, name, kind),
                (start, end, attributes, code, message),
                events,
                links,
                (trace_state, flags, dropped, dropped_of_each),
            )| Span {
                trace_state: trace_state.clone(),
                flags,
                dropped_attributes_count: dropped,
                dropped_events_count: dropped_of_each,
                dropped_links_count: dropped,
                trace_id,
                span_id,
                parent_span_id,
                name,
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes,
                events: events
                    .into_iter()
                    .map(|(time_unix_nano, name, attributes)| Event {
                        time_unix_nano,
                        name,
                        attributes,
                        dropped_attributes_count: dropped_of_each,
                    })
                    .collect(),
                links: links
                    .into_iter()
                    .map(|(trace_id, span_id, attributes)| Link {
                        trace_id,
                        span_id,
                        attributes,
                        trace_state: trace_state.clone(),
                        flags,
                        dropped_attributes_count: dropped_of_each,
                    })
                    .collect(),
                status: Some(Status { code, message }),
            },
        )
}

fn request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    proptest::collection::vec(
        (
            attributes(),
            text(),
            proptest::collection::vec(span(), 0..4),
            (text(), attributes()),
        ),
        0..3,
    )
    .prop_map(|resources| ExportTraceServiceRequest {
        resource_spans: resources
            .into_iter()
            .map(
                |(mut attributes, service, spans, (scope_name, scope_attributes))| {
                    attributes.push(KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(Value::StringValue(service)),
                        }),
                        ..Default::default()
                    });
                    ResourceSpans {
                        resource: Some(Resource {
                            attributes,
                            ..Default::default()
                        }),
                        scope_spans: vec![ScopeSpans {
                            scope: Some(InstrumentationScope {
                                version: scope_name.clone(),
                                name: scope_name,
                                attributes: scope_attributes,
                                ..Default::default()
                            }),
                            spans,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }
                },
            )
            .collect(),
    })
}

/// Changes to bytes: overwrite, insert, delete and cut.
fn mutations() -> impl Strategy<Value = Vec<(u8, usize, u8)>> {
    proptest::collection::vec((0..4u8, any::<usize>(), any::<u8>()), 0..8)
}

fn mutate(bytes: &mut Vec<u8>, mutations: &[(u8, usize, u8)]) {
    for (kind, at, byte) in mutations {
        let at = if bytes.is_empty() {
            0
        } else {
            at % bytes.len()
        };
        match kind {
            0 if !bytes.is_empty() => bytes[at] = *byte,
            1 => bytes.insert(at, *byte),
            2 if !bytes.is_empty() => {
                bytes.remove(at);
            }
            3 => bytes.truncate(at),
            _ => {}
        }
    }
}

/// The decoder that reads the body as it goes takes what the mapping over a tree of JSON
/// values takes, as the same request, and refuses what it refuses. (Which error a body with
/// several is refused for may differ: the tree looks at fields in a fixed order, the
/// decoder in the body's; each error's own text is checked in `json`'s tests.)
fn same_as_reference(body: &[u8]) -> Result<(), TestCaseError> {
    let decoded = crate::json::decode_request(body);
    let expected = crate::json::reference::decode_request(body);
    match (decoded, expected) {
        (Ok(decoded), Ok(expected)) => {
            prop_assert_eq!(decoded.encode_to_vec(), expected.encode_to_vec());
        }
        (Err(_), Err(_)) => {}
        (decoded, expected) => prop_assert!(false, "{decoded:?} where the tree gives {expected:?}"),
    }
    Ok(())
}

/// Decodes and converts, as ingest does: it may fail, never panic. Read in place, a body
/// gives what prost decodes, or is left to prost; never one prost refuses.
fn decode_and_convert(body: &[u8]) -> Result<(), TestCaseError> {
    let decoded = ExportTraceServiceRequest::decode(body);
    match (wire::read(body), &decoded) {
        (Some(read), Ok(decoded)) => same_views(&read, &wire::Request::of(decoded))?,
        (Some(_), Err(error)) => prop_assert!(false, "read a body prost refuses: {error}"),
        (None, _) => {}
    }
    if let Ok(request) = decoded {
        let _ = convert(&request, NOW_NS, &Limits::default());
    }
    Ok(())
}

/// Two views of a request store the same spans and report the same namespaces and groups.
fn same_views(read: &wire::Request<'_>, decoded: &wire::Request<'_>) -> Result<(), TestCaseError> {
    let summary = |converted: Result<Converted, _>| {
        converted.map(|c| {
            (
                c.batch,
                c.accepted,
                c.rejected,
                c.reasons,
                c.truncated_values,
            )
        })
    };
    let ours = summary(convert_views(read, NOW_NS, &Limits::default()));
    let theirs = summary(convert_views(decoded, NOW_NS, &Limits::default()));
    match (ours, theirs) {
        (Ok(ours), Ok(theirs)) => prop_assert_eq!(ours, theirs),
        (ours, theirs) => prop_assert_eq!(ours.is_ok(), theirs.is_ok()),
    }
    prop_assert_eq!(
        reported_namespaces(read).collect::<Vec<_>>(),
        reported_namespaces(decoded).collect::<Vec<_>>()
    );
    prop_assert_eq!(
        reported_consumer_groups(read).collect::<Vec<_>>(),
        reported_consumer_groups(decoded).collect::<Vec<_>>()
    );
    Ok(())
}

proptest! {
    #[test]
    fn protobuf_bodies_convert_or_are_refused(request in request(), changes in mutations()) {
        // Unchanged, a request converts, and is read in place.
        prop_assert!(convert(&request, NOW_NS, &Limits::default()).is_ok());
        let mut body = request.encode_to_vec();
        let read = wire::read(&body);
        prop_assert!(read.is_some(), "an exporter's body is left to prost");
        same_views(&read.unwrap(), &wire::Request::of(&request))?;
        mutate(&mut body, &changes);
        decode_and_convert(&body)?;
    }

    #[test]
    fn raw_protobuf_bytes_are_refused_or_converted(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_and_convert(&body)?;
    }

    #[test]
    fn json_bodies_decode_or_are_refused(request in request(), changes in mutations()) {
        let mut body = crate::json::encode_request(&request).into_bytes();
        // Unchanged, a request decodes (and converts).
        let decoded = crate::json::decode_request(&body);
        prop_assert!(decoded.is_ok(), "{:?}", decoded.err());
        mutate(&mut body, &changes);
        if let Ok(request) = crate::json::decode_request(&body) {
            let _ = convert(&request, NOW_NS, &Limits::default());
        }
    }

    #[test]
    fn json_bodies_decode_as_the_mapping_over_json_values_does(
        request in request(),
        changes in mutations(),
    ) {
        let mut body = crate::json::encode_request(&request).into_bytes();
        mutate(&mut body, &changes);
        same_as_reference(&body)?;
    }

    #[test]
    fn raw_json_text_is_refused_or_decoded(body in prop_oneof![
        any::<String>().prop_map(String::into_bytes),
        "[\\[\\]{}\":,0-9a-zA-Z ]{0,64}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..256),
    ]) {
        same_as_reference(&body)?;
        if let Ok(request) = crate::json::decode_request(&body) {
            let _ = convert(&request, NOW_NS, &Limits::default());
        }
    }

    #[test]
    fn gzip_bodies_inflate_within_their_limit_or_are_refused(
        data in proptest::collection::vec(any::<u8>(), 0..4096),
        repeat in 1..64usize,
        changes in mutations(),
        limit in 1..65536usize,
    ) {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for _ in 0..repeat {
            encoder.write_all(&data).unwrap();
        }
        let mut body = encoder.finish().unwrap();
        mutate(&mut body, &changes);
        let budget = crate::inflight::InflightBudget::new(1 << 20);
        let mut charge = budget.charge();
        if let Ok(inflated) = crate::http::gunzip(&body, limit, &mut charge) {
            prop_assert!(inflated.len() <= limit);
        }
    }
}
