//! OTLP/JSON: the protobuf JSON mapping of `ExportTraceServiceRequest`, as the OTLP
//! specification defines it. Ids are hex, 64-bit integers are strings or numbers, enums are
//! names or numbers, keys are lowerCamelCase (the proto field names are accepted too), and
//! unknown fields are ignored.

use base64::Engine;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use serde_json::{Map, Value};

mod decode;
#[cfg(test)]
pub(crate) mod reference;

#[cfg(test)]
pub use decode::decode_views;
pub use decode::{decode_request, decode_views_within};

/// Encodes a response the way OTLP/JSON clients read it.
pub fn encode_response(response: &ExportTraceServiceResponse) -> Vec<u8> {
    let body = match &response.partial_success {
        Some(ExportTracePartialSuccess {
            rejected_spans,
            error_message,
        }) => serde_json::json!({
            "partialSuccess": {
                "rejectedSpans": rejected_spans.to_string(),
                "errorMessage": error_message,
            }
        }),
        None => serde_json::json!({}),
    };
    body.to_string().into_bytes()
}

/// Encodes a request in the OTLP JSON mapping, leaving out fields at their defaults (as the
/// protobuf JSON mapping allows), so recordings stay small and byte-stable.
pub fn encode_request(request: &ExportTraceServiceRequest) -> String {
    serde_json::json!({ "resourceSpans": encode_resource_spans(&request.resource_spans) })
        .to_string()
}

/// Resource spans in the OTLP JSON mapping, as a JSON array.
pub fn encode_resource_spans(resource_spans: &[ResourceSpans]) -> Value {
    resource_spans
        .iter()
        .map(|rs| {
            let mut out = Map::new();
            if let Some(resource) = &rs.resource {
                let mut r = Map::new();
                put_attributes(
                    &mut r,
                    &resource.attributes,
                    resource.dropped_attributes_count,
                );
                out.insert("resource".into(), Value::Object(r));
            }
            let scopes: Vec<Value> = rs.scope_spans.iter().map(encode_scope_spans).collect();
            out.insert("scopeSpans".into(), Value::Array(scopes));
            put_text(&mut out, "schemaUrl", &rs.schema_url);
            Value::Object(out)
        })
        .collect()
}

fn encode_scope_spans(scope_spans: &ScopeSpans) -> Value {
    let mut out = Map::new();
    if let Some(scope) = &scope_spans.scope {
        let mut s = Map::new();
        put_text(&mut s, "name", &scope.name);
        put_text(&mut s, "version", &scope.version);
        put_attributes(&mut s, &scope.attributes, scope.dropped_attributes_count);
        out.insert("scope".into(), Value::Object(s));
    }
    let spans: Vec<Value> = scope_spans.spans.iter().map(encode_span).collect();
    out.insert("spans".into(), Value::Array(spans));
    put_text(&mut out, "schemaUrl", &scope_spans.schema_url);
    Value::Object(out)
}

fn encode_span(span: &Span) -> Value {
    let mut out = Map::new();
    out.insert("traceId".into(), Value::String(encode_hex(&span.trace_id)));
    out.insert("spanId".into(), Value::String(encode_hex(&span.span_id)));
    if !span.parent_span_id.is_empty() {
        out.insert(
            "parentSpanId".into(),
            Value::String(encode_hex(&span.parent_span_id)),
        );
    }
    put_text(&mut out, "traceState", &span.trace_state);
    if span.flags != 0 {
        out.insert("flags".into(), span.flags.into());
    }
    put_text(&mut out, "name", &span.name);
    out.insert("kind".into(), span.kind.into());
    out.insert(
        "startTimeUnixNano".into(),
        span.start_time_unix_nano.to_string().into(),
    );
    out.insert(
        "endTimeUnixNano".into(),
        span.end_time_unix_nano.to_string().into(),
    );
    put_attributes(&mut out, &span.attributes, span.dropped_attributes_count);
    if !span.events.is_empty() {
        let events = span.events.iter().map(|event| {
            let mut e = Map::new();
            e.insert(
                "timeUnixNano".into(),
                event.time_unix_nano.to_string().into(),
            );
            put_text(&mut e, "name", &event.name);
            put_attributes(&mut e, &event.attributes, event.dropped_attributes_count);
            Value::Object(e)
        });
        out.insert("events".into(), Value::Array(events.collect()));
    }
    put_count(&mut out, "droppedEventsCount", span.dropped_events_count);
    if !span.links.is_empty() {
        let links = span.links.iter().map(|link| {
            let mut l = Map::new();
            l.insert("traceId".into(), Value::String(encode_hex(&link.trace_id)));
            l.insert("spanId".into(), Value::String(encode_hex(&link.span_id)));
            put_text(&mut l, "traceState", &link.trace_state);
            if link.flags != 0 {
                l.insert("flags".into(), link.flags.into());
            }
            put_attributes(&mut l, &link.attributes, link.dropped_attributes_count);
            Value::Object(l)
        });
        out.insert("links".into(), Value::Array(links.collect()));
    }
    put_count(&mut out, "droppedLinksCount", span.dropped_links_count);
    if let Some(status) = &span.status {
        let mut s = Map::new();
        put_text(&mut s, "message", &status.message);
        if status.code != 0 {
            s.insert("code".into(), status.code.into());
        }
        out.insert("status".into(), Value::Object(s));
    }
    Value::Object(out)
}

fn put_text(out: &mut Map<String, Value>, key: &str, text: &str) {
    if !text.is_empty() {
        out.insert(key.into(), Value::String(text.into()));
    }
}

fn put_count(out: &mut Map<String, Value>, key: &str, count: u32) {
    if count != 0 {
        out.insert(key.into(), count.into());
    }
}

fn put_attributes(out: &mut Map<String, Value>, attributes: &[KeyValue], dropped: u32) {
    if !attributes.is_empty() {
        let list = attributes.iter().map(encode_key_value).collect();
        out.insert("attributes".into(), Value::Array(list));
    }
    put_count(out, "droppedAttributesCount", dropped);
}

fn encode_key_value(kv: &KeyValue) -> Value {
    let value = kv
        .value
        .as_ref()
        .map_or(Value::Object(Map::new()), encode_any_value);
    serde_json::json!({ "key": kv.key, "value": value })
}

pub(crate) fn encode_any_value(value: &AnyValue) -> Value {
    use any_value::Value as V;
    let (key, inner) = match &value.value {
        Some(V::StringValue(s)) => ("stringValue", Value::String(s.clone())),
        Some(V::BoolValue(b)) => ("boolValue", Value::Bool(*b)),
        Some(V::IntValue(i)) => ("intValue", Value::String(i.to_string())),
        Some(V::DoubleValue(d)) => (
            "doubleValue",
            serde_json::Number::from_f64(*d).map_or_else(
                || {
                    let text = if d.is_nan() {
                        "NaN"
                    } else if *d > 0.0 {
                        "Infinity"
                    } else {
                        "-Infinity"
                    };
                    Value::String(text.into())
                },
                Value::Number,
            ),
        ),
        Some(V::BytesValue(b)) => (
            "bytesValue",
            Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        ),
        Some(V::ArrayValue(a)) => (
            "arrayValue",
            serde_json::json!({ "values": a.values.iter().map(encode_any_value).collect::<Vec<_>>() }),
        ),
        Some(V::KvlistValue(kv)) => (
            "kvlistValue",
            serde_json::json!({ "values": kv.values.iter().map(encode_key_value).collect::<Vec<_>>() }),
        ),
        Some(V::StringValueStrindex(_)) | None => return Value::Object(Map::new()),
    };
    let mut out = Map::new();
    out.insert(key.into(), inner);
    Value::Object(out)
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let mut bytes = vec![0; text.len() / 2];
    decode_hex_into(text, &mut bytes)?;
    Some(bytes)
}

/// Decodes `text`, twice as long as `bytes`, into `bytes`.
pub(crate) fn decode_hex_into(text: &str, bytes: &mut [u8]) -> Option<()> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope, KeyValueList};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::Status;
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};

    use super::*;

    #[test]
    fn decodes_the_specification_example_with_names_numbers_and_strings() {
        let body = br#"{"resourceSpans":[{"resource":{"attributes":[
            {"key":"service.name","value":{"stringValue":"order-service"}}]},
          "scopeSpans":[{"scope":{"name":"manual","version":"1.0"},"spans":[
            {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
             "parentSpanId":"eee19b7ec3c1b173","name":"POST /v1/orders","kind":"SPAN_KIND_SERVER",
             "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,
             "attributes":[{"key":"n","value":{"intValue":"42"}},{"key":"d","value":{"doubleValue":"NaN"}},
               {"key":"b","value":{"bytesValue":"AQID"}},
               {"key":"a","value":{"arrayValue":{"values":[{"boolValue":true}]}}},
               {"key":"m","value":{"kvlistValue":{"values":[{"key":"k","value":{"intValue":7}}]}}},
               {"key":"e","value":{}}],
             "events":[{"timeUnixNano":"1544712660500000000","name":"retry"}],
             "links":[{"trace_id":"5b8efff798038103d269b633813fc60d","span_id":"eee19b7ec3c1b175"}],
             "status":{"code":2,"message":"boom"},
             "unknownField":{"ignored":true}},
            {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b175","kind":3,
             "status":{"code":"STATUS_CODE_OK"}}]}]}]}"#;
        let request = decode_request(body).unwrap();
        let spans = &request.resource_spans[0].scope_spans[0].spans;
        let span = &spans[0];
        assert_eq!(span.trace_id.len(), 16);
        assert_eq!(
            span.span_id,
            vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74]
        );
        assert_eq!(span.kind, 2);
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
        assert_eq!(span.attributes.len(), 6);
        assert_eq!(
            span.attributes[0].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(42))
        );
        assert!(matches!(
            span.attributes[1].value.as_ref().unwrap().value,
            Some(any_value::Value::DoubleValue(d)) if d.is_nan()
        ));
        assert_eq!(
            span.attributes[2].value.as_ref().unwrap().value,
            Some(any_value::Value::BytesValue(vec![1, 2, 3]))
        );
        assert_eq!(span.attributes[5].value, None);
        assert_eq!(span.events[0].name, "retry");
        assert_eq!(span.links[0].span_id.len(), 8);
        assert_eq!(span.status.as_ref().unwrap().code, 2);
        assert_eq!(spans[1].kind, 3);
        assert_eq!(spans[1].status.as_ref().unwrap().code, 1);
    }

    #[test]
    fn says_what_is_wrong() {
        let cases: [(&[u8], &str); 6] = [
            (b"{", "invalid JSON"),
            (
                b"{\"resourceSpans\":[{\"schemaUrl\":\"\xff\"}]}",
                "invalid JSON: invalid unicode code point at line 1 column 33",
            ),
            (
                br#"{"resourceSpans":{}}"#,
                "resourceSpans: expected an array",
            ),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz"}]}]}]}"#,
                "traceId",
            ),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SPAN_KIND_NOPE"}]}]}]}"#,
                "unknown value",
            ),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"-1"}]}]}]}"#,
                "startTimeUnixNano",
            ),
        ];
        for (body, expected) in cases {
            let error = decode_request(body).unwrap_err();
            assert!(
                error.contains(expected),
                "{error:?} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn every_error_of_the_mapping_is_the_one_it_always_was() {
        let span = |fields: &str| {
            format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{{fields}}}]}}]}}]}}"#)
        };
        let value = |value: &str| span(&format!(r#""attributes":[{{"key":"k","value":{value}}}]"#));
        let bodies = [
            "".to_string(),
            "[]".into(),
            "null".into(),
            r#"{"resourceSpans":[1]}"#.into(),
            r#"{"resourceSpans":[null]}"#.into(),
            r#"{"resourceSpans":[{"resource":[]}]}"#.into(),
            r#"{"resourceSpans":[{"resource":{"attributes":{}}}]}"#.into(),
            r#"{"resourceSpans":[{"resource":{"droppedAttributesCount":-1}}]}"#.into(),
            r#"{"resourceSpans":[{"schemaUrl":7}]}"#.into(),
            r#"{"resourceSpans":[{"scopeSpans":[{"scope":{"name":true}}]}]}"#.into(),
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":{}}]}]}"#.into(),
            span(r#""traceId":12"#),
            span(r#""spanId":"abc""#),
            span(r#""parentSpanId":"zz""#),
            span(r#""flags":"x""#),
            span(r#""flags":1.5"#),
            span(r#""flags":4294967296"#),
            span(r#""kind":true"#),
            span(r#""kind":"SPAN_KIND_NOPE""#),
            span(r#""kind":"server""#),
            span(r#""startTimeUnixNano":-5"#),
            span(r#""startTimeUnixNano":1e30"#),
            span(r#""endTimeUnixNano":{}"#),
            span(r#""name":[]"#),
            span(r#""status":{"code":"STATUS_CODE_NOPE"}"#),
            span(r#""status":{"message":1}"#),
            span(r#""status":5"#),
            span(r#""events":[{"timeUnixNano":"soon"}]"#),
            span(r#""events":[null]"#),
            span(r#""links":[{"traceId":"xyz"}]"#),
            span(r#""links":[{"flags":-1}]"#),
            span(r#""attributes":[{"key":3}]"#),
            span(r#""attributes":[{"key":"k","value":[]}]"#),
            span(r#""trace_id":"0102","traceId":"xyz""#),
            span(r#""traceId":"0102","trace_id":"xyz""#),
            span(r#""traceId":null,"trace_id":"0102""#),
            value(r#"{"stringValue":1}"#),
            value(r#"{"boolValue":"yes"}"#),
            value(r#"{"intValue":"9223372036854775808"}"#),
            value(r#"{"intValue":[]}"#),
            value(r#"{"doubleValue":"many"}"#),
            value(r#"{"doubleValue":true}"#),
            value(r#"{"bytesValue":"!!"}"#),
            value(r#"{"bytesValue":5}"#),
            value(r#"{"arrayValue":{"values":[1]}}"#),
            value(r#"{"arrayValue":{"values":{}}}"#),
            value(r#"{"kvlistValue":{"values":[{"key":"a","value":{"intValue":"x"}}]}}"#),
            value(r#"{"kvlistValue":[]}"#),
            value(r#"{"stringValue":null,"intValue":"5"}"#),
            value(r#"{"int_value":"5","double_value":"NaN"}"#),
            format!("{} trailing", span("")),
        ];
        for body in bodies {
            let decoded = decode_request(body.as_bytes());
            let expected = reference::decode_request(body.as_bytes());
            match (&decoded, &expected) {
                (Ok(decoded), Ok(expected)) => assert_eq!(
                    prost::Message::encode_to_vec(decoded),
                    prost::Message::encode_to_vec(expected),
                    "{body}"
                ),
                _ => assert_eq!(decoded, expected, "{body}"),
            }
        }
    }

    #[test]
    fn a_list_given_twice_is_the_second_and_only_its_spans_count() {
        let span = |id: &str| format!(r#"{{"traceId":"{}","spanId":"{id}"}}"#, "ab".repeat(16));
        let body = format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{},{}]}}]}}],
                "resourceSpans":[{{"scopeSpans":[{{"spans":[{}],"spans":[{},{}],
                  "scope":{{"name":"a\"b\u00e9"}}}}]}}]}}"#,
            span("0000000000000001"),
            span("0000000000000002"),
            span("0000000000000003"),
            span("0000000000000004"),
            span("0000000000000005"),
        );
        let arena = bumpalo::Bump::new();
        let views = decode_views(body.as_bytes(), &arena).unwrap();
        assert_eq!(views.span_count(), 2);
        let request = views.to_request();
        let scope_spans = &request.resource_spans[0].scope_spans[0];
        assert_eq!(scope_spans.scope.as_ref().unwrap().name, "a\"b\u{e9}");
        let ids: Vec<u8> = scope_spans.spans.iter().map(|s| s.span_id[7]).collect();
        assert_eq!(ids, [4, 5]);
        assert_eq!(Ok(request), reference::decode_request(body.as_bytes()));
    }

    #[test]
    fn encoding_then_decoding_gives_the_same_request() {
        use any_value::Value as V;
        let kv = |key: &str, value: V| KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..KeyValue::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", V::StringValue("svc".into()))],
                    dropped_attributes_count: 1,
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "scope".into(),
                        version: "1".into(),
                        ..InstrumentationScope::default()
                    }),
                    spans: vec![Span {
                        trace_id: vec![7; 16],
                        span_id: vec![8; 8],
                        parent_span_id: vec![9; 8],
                        flags: 257,
                        name: "op".into(),
                        kind: 3,
                        start_time_unix_nano: 1_795_000_000_000_000_001,
                        end_time_unix_nano: 1_795_000_000_000_000_002,
                        attributes: vec![
                            kv("i", V::IntValue(-5)),
                            kv("d", V::DoubleValue(f64::INFINITY)),
                            kv("y", V::BytesValue(vec![0, 255])),
                            kv(
                                "a",
                                V::ArrayValue(ArrayValue {
                                    values: vec![AnyValue {
                                        value: Some(V::BoolValue(true)),
                                    }],
                                }),
                            ),
                            kv(
                                "m",
                                V::KvlistValue(KeyValueList {
                                    values: vec![kv("k", V::DoubleValue(0.5))],
                                }),
                            ),
                            KeyValue {
                                key: "e".into(),
                                value: None,
                                ..KeyValue::default()
                            },
                        ],
                        events: vec![Event {
                            time_unix_nano: 5,
                            name: "ev".into(),
                            ..Event::default()
                        }],
                        links: vec![Link {
                            trace_id: vec![1; 16],
                            span_id: vec![2; 8],
                            ..Link::default()
                        }],
                        dropped_links_count: 2,
                        status: Some(Status {
                            message: "m".into(),
                            code: 2,
                        }),
                        ..Span::default()
                    }],
                    schema_url: String::new(),
                }],
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            }],
        };
        let decoded = decode_request(encode_request(&request).as_bytes()).unwrap();
        assert_eq!(decoded, request);
    }

    #[test]
    fn response_carries_partial_success() {
        let response = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 2,
                error_message: "bad ids".into(),
            }),
        };
        let json: Value = serde_json::from_slice(&encode_response(&response)).unwrap();
        assert_eq!(json["partialSuccess"]["rejectedSpans"], "2");
        assert_eq!(json["partialSuccess"]["errorMessage"], "bad ids");
    }
}
