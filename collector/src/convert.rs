//! OTLP → Arrow: a pure function from an export request to a `spans` batch.
//!
//! It walks resource → scope → span, reads `service.name` and the resource attributes once
//! per resource, checks every span (invalid ones are counted and described, not stored) and
//! caps attribute, event and link counts and value sizes so no request can blow up memory.

use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use base64::Engine;
use callwatch_storage::schema::{self, AttributeType};
use callwatch_storage::{AttributesBuilder, SpanRow, SpansBuilder};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};

use crate::wire::{Attribute, Request, Span, Value};

/// Caps on what one span may carry. What goes over is dropped and added to the OTLP
/// `dropped_*_count` of the span, as an SDK does; long strings are cut at a char boundary.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_attributes: usize,
    pub max_events: usize,
    pub max_links: usize,
    pub max_value_bytes: usize,
    /// Spans may start at most this far after the receiving clock's now.
    pub max_future_ns: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_attributes: 256,
            max_events: 256,
            max_links: 128,
            max_value_bytes: 64 * 1024,
            max_future_ns: 24 * 3_600_000_000_000,
        }
    }
}

/// Spans starting before 2000-01-01 are taken for a broken clock.
const MIN_START_NS: u64 = 946_684_800_000_000_000;
/// How many rejection reasons one reply spells out.
const MAX_REASONS: usize = 5;

/// The result of converting one request.
#[derive(Debug)]
pub struct Converted {
    /// The accepted spans; `None` when there were none.
    pub batch: Option<RecordBatch>,
    pub accepted: usize,
    pub rejected: usize,
    /// Why spans were rejected (the first few), for the OTLP `partial_success` message.
    pub reasons: Vec<String>,
    /// String values cut to the length limit.
    pub truncated_values: usize,
}

/// The namespace (`service.namespace`) each resource of `request` reports, with its
/// service's name.
pub fn reported_namespaces<'a>(
    request: &'a Request<'a>,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    request.resources.iter().filter_map(|resource| {
        let attributes = request.attributes(&resource.attributes);
        let namespace = string_attribute(attributes, "service.namespace")?;
        let service =
            string_attribute(attributes, "service.name").unwrap_or(schema::UNKNOWN_SERVICE);
        Some((service, namespace))
    })
}

/// The consumer group each consumer span of `request` reads its topic or queue as:
/// `(topic, service, group)`.
pub fn reported_consumer_groups<'a>(
    request: &'a Request<'a>,
) -> impl Iterator<Item = (&'a str, &'a str, &'a str)> {
    const CONSUMER: i32 = 5;
    request.resources.iter().flat_map(move |resource| {
        let attributes = request.attributes(&resource.attributes);
        let service =
            string_attribute(attributes, "service.name").unwrap_or(schema::UNKNOWN_SERVICE);
        request
            .scopes(resource)
            .iter()
            .flat_map(move |scope| request.spans(scope))
            .filter(|span| span.kind == CONSUMER)
            .filter_map(move |span| {
                let attributes = request.attributes(&span.attributes);
                let group = string_attribute(attributes, "messaging.consumer.group.name")
                    .or_else(|| string_attribute(attributes, "messaging.kafka.consumer.group"))?;
                let topic = string_attribute(attributes, "messaging.destination.name")?;
                Some((topic, service, group))
            })
    })
}

pub fn count_spans(request: &ExportTraceServiceRequest) -> usize {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

/// Converts a decoded `request` to a `spans` batch (see [`convert_views`]).
pub fn convert(
    request: &ExportTraceServiceRequest,
    now_ns: i64,
    limits: &Limits,
) -> Result<Converted, ArrowError> {
    convert_views(&Request::of(request), now_ns, limits)
}

/// Converts `request` to a `spans` batch. `now_ns` bounds how far in the future a span may be.
pub fn convert_views(
    request: &Request<'_>,
    now_ns: i64,
    limits: &Limits,
) -> Result<Converted, ArrowError> {
    let total = request.span_count();
    let mut builder = SpansBuilder::with_capacity(total);
    let mut out = Converted {
        batch: None,
        accepted: 0,
        rejected: 0,
        reasons: Vec::new(),
        truncated_values: 0,
    };
    let mut values = ValueWriter {
        limits,
        truncated: 0,
    };
    let mut index = 0;
    for resource in &request.resources {
        let resource_attrs = request.attributes(&resource.attributes);
        let service_name =
            string_attribute(resource_attrs, "service.name").unwrap_or(schema::UNKNOWN_SERVICE);
        let service_instance_id = string_attribute(resource_attrs, "service.instance.id");
        let service_version = string_attribute(resource_attrs, "service.version");
        let resource_dropped = resource.dropped_attributes_count;

        for scope in request.scopes(resource) {
            let scope_attrs = request.attributes(&scope.attributes);
            let scope_name = non_empty(scope.name);
            let scope_version = non_empty(scope.version);

            for span in request.spans(scope) {
                index += 1;
                let times = match check(span, now_ns, limits) {
                    Ok(times) => times,
                    Err(reason) => {
                        out.rejected += 1;
                        if out.reasons.len() < MAX_REASONS {
                            out.reasons.push(format!("span {index}: {reason}"));
                        }
                        continue;
                    }
                };
                let dropped_attributes =
                    values.attributes(builder.attributes(), request.attributes(&span.attributes));
                let mut dropped_events = span.dropped_events_count;
                for (n, event) in request.events(span).iter().enumerate() {
                    if n >= limits.max_events {
                        dropped_events = dropped_events.saturating_add(1);
                        continue;
                    }
                    let events = builder.events();
                    let dropped = values
                        .attributes(events.attributes(), request.attributes(&event.attributes));
                    let time = i64::try_from(event.time_unix_nano).unwrap_or(i64::MAX);
                    events.append(
                        time,
                        &values.clip(event.name),
                        event.dropped_attributes_count.saturating_add(dropped),
                    )?;
                }
                let mut dropped_links = span.dropped_links_count;
                for (n, link) in request.links(span).iter().enumerate() {
                    let (Some(trace_id), Some(span_id)) =
                        (Hex::id(link.trace_id, 16), Hex::id(link.span_id, 8))
                    else {
                        // A link to an invalid context points nowhere: drop it, count it.
                        dropped_links = dropped_links.saturating_add(1);
                        continue;
                    };
                    if n >= limits.max_links {
                        dropped_links = dropped_links.saturating_add(1);
                        continue;
                    }
                    let links = builder.links();
                    let dropped =
                        values.attributes(links.attributes(), request.attributes(&link.attributes));
                    links.append(
                        trace_id.as_str(),
                        span_id.as_str(),
                        non_empty(link.trace_state),
                        link.flags,
                        link.dropped_attributes_count.saturating_add(dropped),
                    )?;
                }
                let resource_dropped = resource_dropped.saturating_add(
                    values.attributes(builder.resource_attributes(), resource_attrs),
                );
                let _ = values.attributes(builder.scope_attributes(), scope_attrs);

                let trace_id = Hex::encode(span.trace_id);
                let span_id = Hex::encode(span.span_id);
                let parent = Hex::id(span.parent_span_id, 8);
                let status = span.status.as_ref();
                let kind = usize::try_from(span.kind)
                    .ok()
                    .and_then(|k| schema::SPAN_KINDS.get(k))
                    .unwrap_or(&schema::SPAN_KINDS[0]);
                let code = status
                    .and_then(|s| usize::try_from(s.code).ok())
                    .and_then(|c| schema::STATUS_CODES.get(c))
                    .unwrap_or(&schema::STATUS_CODES[0]);
                let name = values.clip(span.name);
                let status_message = status.map(|s| values.clip(s.message));
                builder.append(&SpanRow {
                    trace_id: trace_id.as_str(),
                    span_id: span_id.as_str(),
                    parent_span_id: parent.as_ref().map(Hex::as_str),
                    trace_state: non_empty(span.trace_state),
                    flags: span.flags,
                    service_name,
                    service_instance_id,
                    service_version,
                    span_name: &name,
                    span_kind: kind,
                    start_ns: times.0,
                    end_ns: times.1,
                    status_code: code,
                    status_message: status_message.as_deref().filter(|m| !m.is_empty()),
                    dropped_attributes_count: span
                        .dropped_attributes_count
                        .saturating_add(dropped_attributes),
                    dropped_events_count: dropped_events,
                    dropped_links_count: dropped_links,
                    resource_dropped_attributes_count: resource_dropped,
                    scope_name,
                    scope_version,
                })?;
                out.accepted += 1;
            }
        }
    }
    out.truncated_values = values.truncated;
    if !builder.is_empty() {
        out.batch = Some(builder.finish()?);
    }
    Ok(out)
}

/// Checks a span; returns its start and end in nanoseconds.
fn check(span: &Span<'_>, now_ns: i64, limits: &Limits) -> Result<(i64, i64), String> {
    check_id(span.trace_id, 16, "trace_id")?;
    check_id(span.span_id, 8, "span_id")?;
    if !span.parent_span_id.is_empty() && span.parent_span_id.len() != 8 {
        return Err(format!(
            "parent_span_id must be empty or 8 bytes, got {}",
            span.parent_span_id.len()
        ));
    }
    let (start, end) = (span.start_time_unix_nano, span.end_time_unix_nano);
    let latest = now_ns.saturating_add(limits.max_future_ns).max(0) as u64;
    if start < MIN_START_NS || start > latest {
        return Err(format!(
            "start_time_unix_nano {start} is not a plausible time (before 2000 or more than {}h ahead)",
            limits.max_future_ns / 3_600_000_000_000
        ));
    }
    if end < start {
        return Err(format!(
            "end_time_unix_nano {end} is before start_time_unix_nano {start}"
        ));
    }
    let end = i64::try_from(end).map_err(|_| format!("end_time_unix_nano {end} is too large"))?;
    Ok((start as i64, end))
}

fn check_id(id: &[u8], len: usize, name: &str) -> Result<(), String> {
    if id.len() != len {
        return Err(format!("{name} must be {len} bytes, got {}", id.len()));
    }
    if id.iter().all(|b| *b == 0) {
        return Err(format!("{name} is all zeroes"));
    }
    Ok(())
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

fn string_attribute<'a>(attributes: &[Attribute<'a>], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value {
            Value::Str(s) => Some(s),
            _ => None,
        })
}

/// Lowercase hex of an id, on the stack.
struct Hex {
    buf: [u8; 32],
    len: usize,
}

impl Hex {
    fn encode(bytes: &[u8]) -> Self {
        let mut buf = [0u8; 32];
        let bytes = &bytes[..bytes.len().min(16)];
        callwatch_storage::write_hex(bytes, &mut buf);
        Self {
            buf,
            len: bytes.len() * 2,
        }
    }

    /// The hex of a valid id of `len` bytes; `None` for empty, wrong-length or all-zero ids.
    fn id(bytes: &[u8], len: usize) -> Option<Self> {
        (bytes.len() == len && bytes.iter().any(|b| *b != 0)).then(|| Self::encode(bytes))
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).expect("hex digits are ASCII")
    }
}

/// Writes attribute values as text (see `AttributeType`), applying the limits.
struct ValueWriter<'a> {
    limits: &'a Limits,
    truncated: usize,
}

impl ValueWriter<'_> {
    /// Pushes `attributes` into `out`; returns how many were dropped over the count limit.
    fn attributes(&mut self, out: &mut AttributesBuilder, attributes: &[Attribute<'_>]) -> u32 {
        let mut dropped = 0u32;
        for kv in attributes {
            if out.row_len() >= self.limits.max_attributes {
                dropped = dropped.saturating_add(1);
                continue;
            }
            let key = self.clip(kv.key);
            match &kv.value {
                // A string-table reference only means something in the profiles signal:
                // the specification says to treat it as absent elsewhere.
                Value::Absent => out.push_empty(&key),
                Value::Str(s) => out.push(&key, &self.clip(s), AttributeType::String),
                Value::Bool(b) => {
                    out.push(&key, if *b { "true" } else { "false" }, AttributeType::Bool)
                }
                Value::Int(i) => out.push_with(&key, AttributeType::Int, |w| write!(w, "{i}")),
                Value::Double(d) => {
                    out.push_with(&key, AttributeType::Double, |w| write!(w, "{d}"))
                }
                Value::Bytes(b) => {
                    let b = &b[..b.len().min(self.limits.max_value_bytes)];
                    let text = base64::engine::general_purpose::STANDARD.encode(b);
                    out.push(&key, &text, AttributeType::Bytes);
                }
                Value::Nested(value) => {
                    let kind = if matches!(**value, any_value::Value::ArrayValue(_)) {
                        AttributeType::Array
                    } else {
                        AttributeType::KeyValueList
                    };
                    let json = json_value(value).to_string();
                    out.push(&key, &json, kind);
                }
            }
        }
        dropped
    }

    /// `text` cut to the value limit at a char boundary.
    fn clip<'t>(&mut self, text: &'t str) -> std::borrow::Cow<'t, str> {
        let max = self.limits.max_value_bytes;
        if text.len() <= max {
            return text.into();
        }
        self.truncated += 1;
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].into()
    }
}

/// Arrays and kvlists as plain JSON: strings, numbers, booleans, bytes as base64 strings.
/// Non-finite doubles inside become the strings "NaN", "inf", "-inf".
fn json_value(value: &any_value::Value) -> serde_json::Value {
    use any_value::Value as V;
    use serde_json::Value as J;
    let any = |v: &AnyValue| v.value.as_ref().map_or(J::Null, json_value);
    match value {
        V::StringValue(s) => J::String(s.clone()),
        V::BoolValue(b) => J::Bool(*b),
        V::IntValue(i) => J::from(*i),
        V::DoubleValue(d) => {
            serde_json::Number::from_f64(*d).map_or_else(|| J::String(d.to_string()), J::Number)
        }
        V::BytesValue(b) => J::String(base64::engine::general_purpose::STANDARD.encode(b)),
        V::ArrayValue(a) => J::Array(a.values.iter().map(any).collect()),
        V::StringValueStrindex(_) => J::Null,
        V::KvlistValue(kv) => J::Object(
            kv.values
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(J::Null, any)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests;
