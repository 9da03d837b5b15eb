//! OTLP/JSON: the protobuf JSON mapping of `ExportTraceServiceRequest`, as the OTLP
//! specification defines it. Ids are hex, 64-bit integers are strings or numbers, enums are
//! names or numbers, keys are lowerCamelCase (the proto field names are accepted too), and
//! unknown fields are ignored.

use base64::Engine;
use callwatch_storage::schema::{SPAN_KINDS, STATUS_CODES};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde_json::{Map, Value};

type Result<T> = std::result::Result<T, String>;

/// Decodes an OTLP/JSON request body.
pub fn decode_request(body: &[u8]) -> Result<ExportTraceServiceRequest> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let root = object(&value, "request")?;
    Ok(ExportTraceServiceRequest {
        resource_spans: list(root, "resourceSpans", "resource_spans", resource_spans)?,
    })
}

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

fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>> {
    value
        .as_object()
        .ok_or_else(|| format!("{what}: expected a JSON object"))
}

/// A field by its JSON name or its proto name; JSON `null` counts as absent.
fn field<'a>(obj: &'a Map<String, Value>, camel: &str, snake: &str) -> Option<&'a Value> {
    obj.get(camel)
        .or_else(|| obj.get(snake))
        .filter(|v| !v.is_null())
}

fn list<T>(
    obj: &Map<String, Value>,
    camel: &str,
    snake: &str,
    item: impl Fn(&Value) -> Result<T>,
) -> Result<Vec<T>> {
    match field(obj, camel, snake) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(item).collect(),
        Some(_) => Err(format!("{camel}: expected an array")),
    }
}

fn string(obj: &Map<String, Value>, camel: &str, snake: &str) -> Result<String> {
    match field(obj, camel, snake) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{camel}: expected a string")),
    }
}

fn parse_number<T: std::str::FromStr>(value: &Value, name: &str) -> Result<T> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return Err(format!("{name}: expected an integer")),
    };
    text.parse::<T>()
        .map_err(|_| format!("{name}: {text:?} is not a valid integer of its type"))
}

fn integer<T: std::str::FromStr + Default>(
    obj: &Map<String, Value>,
    camel: &str,
    snake: &str,
) -> Result<T> {
    field(obj, camel, snake).map_or(Ok(T::default()), |v| parse_number(v, camel))
}

fn double(value: &Value, name: &str) -> Result<f64> {
    match value {
        Value::Number(n) => n.as_f64().ok_or_else(|| format!("{name}: not a double")),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other
                .parse()
                .map_err(|_| format!("{name}: {other:?} is not a double")),
        },
        _ => Err(format!("{name}: expected a number")),
    }
}

/// An enum given as its number, its full name (`SPAN_KIND_SERVER`) or its short name.
fn enumeration(obj: &Map<String, Value>, camel: &str, prefix: &str, names: &[&str]) -> Result<i32> {
    match field(obj, camel, camel) {
        None => Ok(0),
        Some(Value::String(name)) => {
            let short = name.strip_prefix(prefix).unwrap_or(name);
            names
                .iter()
                .position(|candidate| candidate.eq_ignore_ascii_case(short))
                .map(|index| index as i32)
                .ok_or_else(|| format!("{camel}: unknown value {name:?}"))
        }
        Some(value) => parse_number(value, camel),
    }
}

fn hex_id(obj: &Map<String, Value>, camel: &str, snake: &str) -> Result<Vec<u8>> {
    let text = string(obj, camel, snake)?;
    decode_hex(&text).ok_or_else(|| format!("{camel}: {text:?} is not hex"))
}

pub(crate) fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

fn resource_spans(value: &Value) -> Result<ResourceSpans> {
    let obj = object(value, "resourceSpans[]")?;
    let resource = match field(obj, "resource", "resource") {
        None => None,
        Some(value) => {
            let resource = object(value, "resource")?;
            Some(Resource {
                attributes: list(resource, "attributes", "attributes", key_value)?,
                dropped_attributes_count: integer(
                    resource,
                    "droppedAttributesCount",
                    "dropped_attributes_count",
                )?,
                ..Resource::default()
            })
        }
    };
    Ok(ResourceSpans {
        resource,
        scope_spans: list(obj, "scopeSpans", "scope_spans", scope_spans)?,
        schema_url: string(obj, "schemaUrl", "schema_url")?,
    })
}

fn scope_spans(value: &Value) -> Result<ScopeSpans> {
    let obj = object(value, "scopeSpans[]")?;
    let scope = match field(obj, "scope", "scope") {
        None => None,
        Some(value) => {
            let scope = object(value, "scope")?;
            Some(InstrumentationScope {
                name: string(scope, "name", "name")?,
                version: string(scope, "version", "version")?,
                attributes: list(scope, "attributes", "attributes", key_value)?,
                dropped_attributes_count: integer(
                    scope,
                    "droppedAttributesCount",
                    "dropped_attributes_count",
                )?,
            })
        }
    };
    Ok(ScopeSpans {
        scope,
        spans: list(obj, "spans", "spans", span)?,
        schema_url: string(obj, "schemaUrl", "schema_url")?,
    })
}

fn span(value: &Value) -> Result<Span> {
    let obj = object(value, "spans[]")?;
    let status = match field(obj, "status", "status") {
        None => None,
        Some(value) => {
            let status = object(value, "status")?;
            Some(Status {
                message: string(status, "message", "message")?,
                code: enumeration(status, "code", "STATUS_CODE_", &STATUS_CODES)?,
            })
        }
    };
    Ok(Span {
        trace_id: hex_id(obj, "traceId", "trace_id")?,
        span_id: hex_id(obj, "spanId", "span_id")?,
        trace_state: string(obj, "traceState", "trace_state")?,
        parent_span_id: hex_id(obj, "parentSpanId", "parent_span_id")?,
        flags: integer(obj, "flags", "flags")?,
        name: string(obj, "name", "name")?,
        kind: enumeration(obj, "kind", "SPAN_KIND_", &SPAN_KINDS)?,
        start_time_unix_nano: integer(obj, "startTimeUnixNano", "start_time_unix_nano")?,
        end_time_unix_nano: integer(obj, "endTimeUnixNano", "end_time_unix_nano")?,
        attributes: list(obj, "attributes", "attributes", key_value)?,
        dropped_attributes_count: integer(
            obj,
            "droppedAttributesCount",
            "dropped_attributes_count",
        )?,
        events: list(obj, "events", "events", event)?,
        dropped_events_count: integer(obj, "droppedEventsCount", "dropped_events_count")?,
        links: list(obj, "links", "links", link)?,
        dropped_links_count: integer(obj, "droppedLinksCount", "dropped_links_count")?,
        status,
    })
}

fn event(value: &Value) -> Result<Event> {
    let obj = object(value, "events[]")?;
    Ok(Event {
        time_unix_nano: integer(obj, "timeUnixNano", "time_unix_nano")?,
        name: string(obj, "name", "name")?,
        attributes: list(obj, "attributes", "attributes", key_value)?,
        dropped_attributes_count: integer(
            obj,
            "droppedAttributesCount",
            "dropped_attributes_count",
        )?,
    })
}

fn link(value: &Value) -> Result<Link> {
    let obj = object(value, "links[]")?;
    Ok(Link {
        trace_id: hex_id(obj, "traceId", "trace_id")?,
        span_id: hex_id(obj, "spanId", "span_id")?,
        trace_state: string(obj, "traceState", "trace_state")?,
        attributes: list(obj, "attributes", "attributes", key_value)?,
        dropped_attributes_count: integer(
            obj,
            "droppedAttributesCount",
            "dropped_attributes_count",
        )?,
        flags: integer(obj, "flags", "flags")?,
    })
}

fn key_value(value: &Value) -> Result<KeyValue> {
    let obj = object(value, "attributes[]")?;
    let value = field(obj, "value", "value").map(any_value).transpose()?;
    Ok(KeyValue {
        key: string(obj, "key", "key")?,
        value,
        ..KeyValue::default()
    })
}

fn any_value(value: &Value) -> Result<AnyValue> {
    use any_value::Value as V;
    let obj = object(value, "value")?;
    let inner = if let Some(v) = field(obj, "stringValue", "string_value") {
        V::StringValue(
            v.as_str()
                .ok_or("stringValue: expected a string")?
                .to_string(),
        )
    } else if let Some(v) = field(obj, "boolValue", "bool_value") {
        V::BoolValue(v.as_bool().ok_or("boolValue: expected true or false")?)
    } else if let Some(v) = field(obj, "intValue", "int_value") {
        V::IntValue(parse_number(v, "intValue")?)
    } else if let Some(v) = field(obj, "doubleValue", "double_value") {
        V::DoubleValue(double(v, "doubleValue")?)
    } else if let Some(v) = field(obj, "bytesValue", "bytes_value") {
        let text = v.as_str().ok_or("bytesValue: expected a base64 string")?;
        V::BytesValue(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| format!("bytesValue: {e}"))?,
        )
    } else if let Some(v) = field(obj, "arrayValue", "array_value") {
        let array = object(v, "arrayValue")?;
        V::ArrayValue(ArrayValue {
            values: list(array, "values", "values", any_value)?,
        })
    } else if let Some(v) = field(obj, "kvlistValue", "kvlist_value") {
        let kvlist = object(v, "kvlistValue")?;
        V::KvlistValue(KeyValueList {
            values: list(kvlist, "values", "values", key_value)?,
        })
    } else {
        return Ok(AnyValue { value: None });
    };
    Ok(AnyValue { value: Some(inner) })
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

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
        assert_eq!(span.attributes[5].value.as_ref().unwrap().value, None);
        assert_eq!(span.events[0].name, "retry");
        assert_eq!(span.links[0].span_id.len(), 8);
        assert_eq!(span.status.as_ref().unwrap().code, 2);
        assert_eq!(spans[1].kind, 3);
        assert_eq!(spans[1].status.as_ref().unwrap().code, 1);
    }

    #[test]
    fn says_what_is_wrong() {
        let cases: [(&[u8], &str); 5] = [
            (b"{", "invalid JSON"),
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
        let mut decoded = decode_request(encode_request(&request).as_bytes()).unwrap();
        // An attribute without a value decodes as an empty AnyValue, which means the same.
        let e = &mut decoded.resource_spans[0].scope_spans[0].spans[0].attributes[5];
        assert_eq!(e.value, Some(AnyValue { value: None }));
        e.value = None;
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
