//! Stored spans back into OTLP messages, for the APIs that answer in OTLP (Tempo's trace
//! by id). Spans of one resource and scope are grouped under it again, in order of first
//! appearance. What storage keeps as text goes back to its OTLP type; bytes inside arrays
//! and kvlists, stored as base64 text, come back as strings.

use base64::Engine;
use callwatch_storage::schema::{AttributeType, SPAN_KINDS, STATUS_CODES};
use callwatch_storage::{Attribute, SpanRecord};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, TracesData};

use crate::json::{decode_hex, encode_any_value};

/// The spans as OTLP `TracesData`, grouped by resource and scope.
pub fn traces_data(spans: &[SpanRecord]) -> TracesData {
    // (the stored span whose resource it is, the resource's spans)
    let mut resources: Vec<(&SpanRecord, ResourceSpans)> = Vec::new();
    for record in spans {
        let position = resources
            .iter()
            .position(|(first, _)| same_resource(first, record))
            .unwrap_or_else(|| {
                resources.push((record, resource_spans(record)));
                resources.len() - 1
            });
        let scopes = &mut resources[position].1.scope_spans;
        let scope = scope_of(record);
        let index = scopes
            .iter()
            .position(|s| s.scope.as_ref() == Some(&scope))
            .unwrap_or_else(|| {
                scopes.push(ScopeSpans {
                    scope: Some(scope),
                    ..ScopeSpans::default()
                });
                scopes.len() - 1
            });
        scopes[index].spans.push(span(record));
    }
    TracesData {
        resource_spans: resources.into_iter().map(|(_, rs)| rs).collect(),
    }
}

fn same_resource(a: &SpanRecord, b: &SpanRecord) -> bool {
    a.resource_attributes == b.resource_attributes
        && a.resource_dropped_attributes_count == b.resource_dropped_attributes_count
}

fn resource_spans(record: &SpanRecord) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: key_values(&record.resource_attributes),
            dropped_attributes_count: record.resource_dropped_attributes_count,
            ..Resource::default()
        }),
        ..ResourceSpans::default()
    }
}

fn scope_of(record: &SpanRecord) -> InstrumentationScope {
    InstrumentationScope {
        name: record.scope_name.clone().unwrap_or_default(),
        version: record.scope_version.clone().unwrap_or_default(),
        attributes: key_values(&record.scope_attributes),
        dropped_attributes_count: 0,
    }
}

fn span(record: &SpanRecord) -> Span {
    let status_code = STATUS_CODES
        .iter()
        .position(|&code| code == record.status_code)
        .unwrap_or(0) as i32;
    let message = record.status_message.clone().unwrap_or_default();
    let status = (status_code != 0 || !message.is_empty()).then_some(Status {
        message,
        code: status_code,
    });
    Span {
        trace_id: id_bytes(&record.trace_id),
        span_id: id_bytes(&record.span_id),
        trace_state: record.trace_state.clone().unwrap_or_default(),
        parent_span_id: record
            .parent_span_id
            .as_deref()
            .map(id_bytes)
            .unwrap_or_default(),
        flags: record.flags,
        name: record.span_name.clone(),
        kind: SPAN_KINDS
            .iter()
            .position(|&kind| kind == record.span_kind)
            .unwrap_or(0) as i32,
        start_time_unix_nano: u64::try_from(record.start_ns).unwrap_or(0),
        end_time_unix_nano: u64::try_from(record.end_ns).unwrap_or(0),
        attributes: key_values(&record.attributes),
        dropped_attributes_count: record.dropped_attributes_count,
        events: record
            .events
            .iter()
            .map(|event| Event {
                time_unix_nano: u64::try_from(event.time_ns).unwrap_or(0),
                name: event.name.clone(),
                attributes: key_values(&event.attributes),
                dropped_attributes_count: event.dropped_attributes_count,
            })
            .collect(),
        dropped_events_count: record.dropped_events_count,
        links: record
            .links
            .iter()
            .map(|link| Link {
                trace_id: id_bytes(&link.trace_id),
                span_id: id_bytes(&link.span_id),
                trace_state: link.trace_state.clone().unwrap_or_default(),
                attributes: key_values(&link.attributes),
                dropped_attributes_count: link.dropped_attributes_count,
                flags: link.flags,
            })
            .collect(),
        dropped_links_count: record.dropped_links_count,
        status,
    }
}

/// Ids are stored as lowercase hex, written by the converter.
fn id_bytes(hex: &str) -> Vec<u8> {
    decode_hex(hex).unwrap_or_default()
}

fn key_values(attributes: &[Attribute]) -> Vec<KeyValue> {
    attributes
        .iter()
        .map(|attribute| KeyValue {
            key: attribute.key.clone(),
            value: Some(any_value(attribute)),
            ..KeyValue::default()
        })
        .collect()
}

/// A stored attribute's value in the OTLP JSON mapping (`{"intValue": "42"}`).
pub fn attribute_json(attribute: &Attribute) -> serde_json::Value {
    encode_any_value(&any_value(attribute))
}

/// The attribute's value with its OTLP type; text that is not what its type says stays a
/// string rather than being lost.
fn any_value(attribute: &Attribute) -> AnyValue {
    use any_value::Value as V;
    let Some(text) = &attribute.value else {
        return AnyValue { value: None };
    };
    let typed = match attribute.kind {
        AttributeType::String | AttributeType::Empty => None,
        AttributeType::Bool => text.parse().ok().map(V::BoolValue),
        AttributeType::Int => text.parse().ok().map(V::IntValue),
        AttributeType::Double => text.parse().ok().map(V::DoubleValue),
        AttributeType::Bytes => base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()
            .map(V::BytesValue),
        AttributeType::Array | AttributeType::KeyValueList => {
            serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|json| from_json(&json))
        }
    };
    AnyValue {
        value: Some(typed.unwrap_or_else(|| V::StringValue(text.clone()))),
    }
}

/// Plain JSON (as storage writes arrays and kvlists) as an OTLP value.
fn from_json(json: &serde_json::Value) -> Option<any_value::Value> {
    use any_value::Value as V;
    use serde_json::Value as J;
    let any = |json: &J| AnyValue {
        value: from_json(json),
    };
    Some(match json {
        J::Null => return None,
        J::Bool(b) => V::BoolValue(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => V::IntValue(i),
            None => V::DoubleValue(n.as_f64()?),
        },
        J::String(s) => V::StringValue(s.clone()),
        J::Array(items) => V::ArrayValue(ArrayValue {
            values: items.iter().map(any).collect(),
        }),
        J::Object(entries) => V::KvlistValue(KeyValueList {
            values: entries
                .iter()
                .map(|(key, value)| KeyValue {
                    key: key.clone(),
                    value: Some(any(value)),
                    ..KeyValue::default()
                })
                .collect(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use callwatch_storage::span_records;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    use super::*;
    use crate::client::attribute as kv;
    use crate::{Limits, convert, text_attribute as text};

    const NOW: u64 = 1_795_000_000_000_000_000;

    fn resource(service: &str, spans: Vec<Vec<Span>>) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource {
                attributes: vec![text("service.name", service), text("host.name", "h1")],
                dropped_attributes_count: 2,
                ..Resource::default()
            }),
            scope_spans: spans
                .into_iter()
                .enumerate()
                .map(|(n, spans)| ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: format!("scope-{n}"),
                        version: "1.0".into(),
                        attributes: vec![text("scope.kind", "http")],
                        dropped_attributes_count: 0,
                    }),
                    spans,
                    schema_url: String::new(),
                })
                .collect(),
            schema_url: String::new(),
        }
    }

    fn span(id: u8, parent: Option<u8>, kind: i32) -> Span {
        Span {
            trace_id: vec![7; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            flags: 257,
            name: format!("op-{id}"),
            kind,
            start_time_unix_nano: NOW + u64::from(id) * 1000,
            end_time_unix_nano: NOW + u64::from(id) * 1000 + 500,
            ..Span::default()
        }
    }

    #[test]
    fn stored_spans_come_back_as_they_were_sent() {
        use any_value::Value as V;
        let mut root = span(1, None, 2);
        root.trace_state = "vendor=1".into();
        root.attributes = vec![
            text("http.route", "/orders/{id}"),
            kv("ok", V::BoolValue(true)),
            kv("count", V::IntValue(-42)),
            kv("ratio", V::DoubleValue(0.25)),
            kv("whole", V::DoubleValue(3.0)),
            kv("raw", V::BytesValue(vec![0, 1, 254])),
            kv(
                "list",
                V::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(V::IntValue(1)),
                        },
                        AnyValue {
                            value: Some(V::StringValue("two".into())),
                        },
                    ],
                }),
            ),
            kv(
                "map",
                V::KvlistValue(KeyValueList {
                    values: vec![kv("inner", V::DoubleValue(1.5))],
                }),
            ),
            KeyValue {
                key: "empty".into(),
                value: Some(AnyValue { value: None }),
                ..KeyValue::default()
            },
        ];
        root.dropped_attributes_count = 3;
        root.status = Some(Status {
            message: "boom".into(),
            code: 2,
        });
        root.events = vec![Event {
            time_unix_nano: NOW + 1200,
            name: "retry".into(),
            attributes: vec![kv("attempt", V::IntValue(2))],
            dropped_attributes_count: 1,
        }];
        root.dropped_events_count = 4;
        let mut child = span(2, Some(1), 3);
        child.links = vec![Link {
            trace_id: vec![9; 16],
            span_id: vec![8; 8],
            trace_state: "k=v".into(),
            attributes: vec![text("link.kind", "batch")],
            dropped_attributes_count: 0,
            flags: 1,
        }];
        child.dropped_links_count = 5;
        child.status = Some(Status {
            message: String::new(),
            code: 1,
        });
        let sent = ExportTraceServiceRequest {
            resource_spans: vec![
                resource("orders", vec![vec![root], vec![child]]),
                resource("payments", vec![vec![span(3, Some(2), 5)]]),
            ],
        };
        let converted = convert(&sent, NOW as i64, &Limits::default()).unwrap();
        let records = span_records(&converted.batch.unwrap()).unwrap();
        assert_eq!(traces_data(&records).resource_spans, sent.resource_spans);
    }
}
