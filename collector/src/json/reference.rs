//! The mapping as first written, over a tree of JSON values: what the decoder that reads
//! the body as it goes is checked against.

use base64::Engine;
use callwatch_storage::schema::{SPAN_KINDS, STATUS_CODES};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde_json::{Map, Value};

type Result<T> = std::result::Result<T, String>;

/// Decodes an OTLP/JSON request body, as its views show it: as the decoder gives it.
/// (Through the views, an absent resource or scope is an empty one, and an empty `AnyValue`
/// none.)
pub fn decode_request(body: &[u8]) -> Result<ExportTraceServiceRequest> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let root = object(&value, "request")?;
    let request = ExportTraceServiceRequest {
        resource_spans: list(root, "resourceSpans", "resource_spans", resource_spans)?,
    };
    Ok(crate::wire::Request::of(&request).to_request())
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
    super::decode_hex(&text).ok_or_else(|| format!("{camel}: {text:?} is not hex"))
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
