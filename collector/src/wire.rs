//! An export request as views of its spans, attributes, events and links that borrow their
//! strings and ids: from a protobuf body read in place, so that nothing is copied or
//! allocated per attribute before the Arrow builders, from an OTLP/JSON body as it is
//! decoded (`json::decode_views`), or from a decoded request.
//!
//! Reading in place takes the bodies OTLP exporters send. A body it does not take as it
//! stands (malformed, a message field given twice, which protobuf merges, a value nested
//! too deep) is left to prost, which decodes it or gives the error it always gave: the two
//! always agree on what a body holds.

use std::borrow::Cow;
use std::ops::Range;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value,
};
use prost::Message;

use crate::error::IngestError;
use crate::inflight::Room;

/// The views of one request. Each level holds ranges into the flat lists below it.
#[derive(Debug, Default)]
pub struct Request<'a> {
    pub resources: Vec<Resource<'a>>,
    pub(crate) scopes: Vec<Scope<'a>>,
    pub(crate) spans: Vec<Span<'a>>,
    pub(crate) events: Vec<Event<'a>>,
    pub(crate) links: Vec<Link<'a>>,
    pub(crate) attributes: Vec<Attribute<'a>>,
    /// What the lists above take, in the in-flight budget while the views live.
    pub(crate) room: Room,
}

#[derive(Debug, Default)]
pub struct Resource<'a> {
    pub attributes: Range<usize>,
    pub dropped_attributes_count: u32,
    pub scopes: Range<usize>,
    pub schema_url: &'a str,
}

#[derive(Debug, Default)]
pub struct Scope<'a> {
    /// Empty when the scope is absent.
    pub name: &'a str,
    pub version: &'a str,
    pub attributes: Range<usize>,
    pub dropped_attributes_count: u32,
    pub spans: Range<usize>,
    pub schema_url: &'a str,
}

#[derive(Debug, Default)]
pub struct Span<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub trace_state: &'a str,
    pub parent_span_id: &'a [u8],
    pub flags: u32,
    pub name: &'a str,
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub attributes: Range<usize>,
    pub dropped_attributes_count: u32,
    pub events: Range<usize>,
    pub dropped_events_count: u32,
    pub links: Range<usize>,
    pub dropped_links_count: u32,
    pub status: Option<Status<'a>>,
}

#[derive(Debug, Default)]
pub struct Status<'a> {
    pub message: &'a str,
    pub code: i32,
}

#[derive(Debug, Default)]
pub struct Event<'a> {
    pub time_unix_nano: u64,
    pub name: &'a str,
    pub attributes: Range<usize>,
    pub dropped_attributes_count: u32,
}

#[derive(Debug, Default)]
pub struct Link<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub trace_state: &'a str,
    pub attributes: Range<usize>,
    pub dropped_attributes_count: u32,
    pub flags: u32,
}

#[derive(Debug, Default)]
pub struct Attribute<'a> {
    pub key: &'a str,
    pub value: Value<'a>,
}

/// An attribute's value.
#[derive(Debug, Default)]
pub enum Value<'a> {
    /// No value, or a string-table reference (which only the profiles signal gives a
    /// meaning).
    #[default]
    Absent,
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    /// An array or a key-value list: rare, decoded whole.
    Nested(Cow<'a, any_value::Value>),
}

impl<'a> Request<'a> {
    pub fn scopes(&self, resource: &Resource<'a>) -> &[Scope<'a>] {
        &self.scopes[resource.scopes.clone()]
    }

    pub fn spans(&self, scope: &Scope<'a>) -> &[Span<'a>] {
        &self.spans[scope.spans.clone()]
    }

    pub fn events(&self, span: &Span<'a>) -> &[Event<'a>] {
        &self.events[span.events.clone()]
    }

    pub fn links(&self, span: &Span<'a>) -> &[Link<'a>] {
        &self.links[span.links.clone()]
    }

    pub fn attributes(&self, range: &Range<usize>) -> &[Attribute<'a>] {
        &self.attributes[range.clone()]
    }

    /// How many spans the request holds, valid or not. (A JSON body that gives a list
    /// twice leaves the first one's views unnamed: they are not counted.)
    pub fn span_count(&self) -> usize {
        self.resources
            .iter()
            .flat_map(|resource| self.scopes(resource))
            .map(|scope| scope.spans.len())
            .sum()
    }

    /// Views of a decoded request.
    pub fn of(request: &'a ExportTraceServiceRequest) -> Self {
        let mut out = Self::default();
        for resource_spans in &request.resource_spans {
            let resource = resource_spans.resource.as_ref();
            let attributes = out.add_attributes(resource.map_or(&[][..], |r| &r.attributes));
            let first_scope = out.scopes.len();
            for scope_spans in &resource_spans.scope_spans {
                let scope = scope_spans.scope.as_ref();
                let attributes = out.add_attributes(scope.map_or(&[][..], |s| &s.attributes));
                let first_span = out.spans.len();
                for span in &scope_spans.spans {
                    let attributes = out.add_attributes(&span.attributes);
                    let first_event = out.events.len();
                    for event in &span.events {
                        let attributes = out.add_attributes(&event.attributes);
                        out.events.push(Event {
                            time_unix_nano: event.time_unix_nano,
                            name: &event.name,
                            attributes,
                            dropped_attributes_count: event.dropped_attributes_count,
                        });
                    }
                    let events = first_event..out.events.len();
                    let first_link = out.links.len();
                    for link in &span.links {
                        let attributes = out.add_attributes(&link.attributes);
                        out.links.push(Link {
                            trace_id: &link.trace_id,
                            span_id: &link.span_id,
                            trace_state: &link.trace_state,
                            attributes,
                            dropped_attributes_count: link.dropped_attributes_count,
                            flags: link.flags,
                        });
                    }
                    let links = first_link..out.links.len();
                    out.spans.push(Span {
                        trace_id: &span.trace_id,
                        span_id: &span.span_id,
                        trace_state: &span.trace_state,
                        parent_span_id: &span.parent_span_id,
                        flags: span.flags,
                        name: &span.name,
                        kind: span.kind,
                        start_time_unix_nano: span.start_time_unix_nano,
                        end_time_unix_nano: span.end_time_unix_nano,
                        attributes,
                        dropped_attributes_count: span.dropped_attributes_count,
                        events,
                        dropped_events_count: span.dropped_events_count,
                        links,
                        dropped_links_count: span.dropped_links_count,
                        status: span.status.as_ref().map(|s| Status {
                            message: &s.message,
                            code: s.code,
                        }),
                    });
                }
                out.scopes.push(Scope {
                    name: scope.map_or("", |s| &s.name),
                    version: scope.map_or("", |s| &s.version),
                    attributes,
                    dropped_attributes_count: scope.map_or(0, |s| s.dropped_attributes_count),
                    spans: first_span..out.spans.len(),
                    schema_url: &scope_spans.schema_url,
                });
            }
            out.resources.push(Resource {
                attributes,
                dropped_attributes_count: resource.map_or(0, |r| r.dropped_attributes_count),
                scopes: first_scope..out.scopes.len(),
                schema_url: &resource_spans.schema_url,
            });
        }
        out
    }

    /// The request the views show, owned. An attribute with no value has none (`Absent`
    /// does not say whether an empty `AnyValue` was given, which means the same).
    pub fn to_request(&self) -> ExportTraceServiceRequest {
        use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
        use opentelemetry_proto::tonic::resource::v1;
        use opentelemetry_proto::tonic::trace::v1 as trace;
        let attributes = |range: &Range<usize>| -> Vec<KeyValue> {
            self.attributes(range)
                .iter()
                .map(|attribute| KeyValue {
                    key: attribute.key.to_string(),
                    value: attribute.value.to_any_value(),
                    ..KeyValue::default()
                })
                .collect()
        };
        let span = |span: &Span<'a>| trace::Span {
            trace_id: span.trace_id.to_vec(),
            span_id: span.span_id.to_vec(),
            trace_state: span.trace_state.to_string(),
            parent_span_id: span.parent_span_id.to_vec(),
            flags: span.flags,
            name: span.name.to_string(),
            kind: span.kind,
            start_time_unix_nano: span.start_time_unix_nano,
            end_time_unix_nano: span.end_time_unix_nano,
            attributes: attributes(&span.attributes),
            dropped_attributes_count: span.dropped_attributes_count,
            events: (self.events(span).iter())
                .map(|event| trace::span::Event {
                    time_unix_nano: event.time_unix_nano,
                    name: event.name.to_string(),
                    attributes: attributes(&event.attributes),
                    dropped_attributes_count: event.dropped_attributes_count,
                })
                .collect(),
            dropped_events_count: span.dropped_events_count,
            links: (self.links(span).iter())
                .map(|link| trace::span::Link {
                    trace_id: link.trace_id.to_vec(),
                    span_id: link.span_id.to_vec(),
                    trace_state: link.trace_state.to_string(),
                    attributes: attributes(&link.attributes),
                    dropped_attributes_count: link.dropped_attributes_count,
                    flags: link.flags,
                })
                .collect(),
            dropped_links_count: span.dropped_links_count,
            status: span.status.as_ref().map(|status| trace::Status {
                message: status.message.to_string(),
                code: status.code,
            }),
        };
        let resource_spans = (self.resources.iter())
            .map(|resource| trace::ResourceSpans {
                resource: Some(v1::Resource {
                    attributes: attributes(&resource.attributes),
                    dropped_attributes_count: resource.dropped_attributes_count,
                    ..v1::Resource::default()
                }),
                scope_spans: (self.scopes(resource).iter())
                    .map(|scope| trace::ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: scope.name.to_string(),
                            version: scope.version.to_string(),
                            attributes: attributes(&scope.attributes),
                            dropped_attributes_count: scope.dropped_attributes_count,
                        }),
                        spans: self.spans(scope).iter().map(span).collect(),
                        schema_url: scope.schema_url.to_string(),
                    })
                    .collect(),
                schema_url: resource.schema_url.to_string(),
            })
            .collect();
        ExportTraceServiceRequest { resource_spans }
    }

    fn add_attributes(&mut self, attributes: &'a [KeyValue]) -> Range<usize> {
        let first = self.attributes.len();
        self.attributes.extend(attributes.iter().map(|kv| {
            use any_value::Value as V;
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                None | Some(V::StringValueStrindex(_)) => Value::Absent,
                Some(V::StringValue(s)) => Value::Str(s),
                Some(V::BoolValue(b)) => Value::Bool(*b),
                Some(V::IntValue(i)) => Value::Int(*i),
                Some(V::DoubleValue(d)) => Value::Double(*d),
                Some(V::BytesValue(b)) => Value::Bytes(b),
                Some(nested @ (V::ArrayValue(_) | V::KvlistValue(_))) => {
                    Value::Nested(Cow::Borrowed(nested))
                }
            };
            Attribute {
                key: &kv.key,
                value,
            }
        }));
        first..self.attributes.len()
    }
}

impl Value<'_> {
    /// The value as OTLP's `AnyValue`; `None` when absent.
    pub fn to_any_value(&self) -> Option<AnyValue> {
        use any_value::Value as V;
        let value = match self {
            Value::Absent => return None,
            Value::Str(text) => V::StringValue(text.to_string()),
            Value::Bool(value) => V::BoolValue(*value),
            Value::Int(value) => V::IntValue(*value),
            Value::Double(value) => V::DoubleValue(*value),
            Value::Bytes(bytes) => V::BytesValue(bytes.to_vec()),
            Value::Nested(value) => value.clone().into_owned(),
        };
        Some(AnyValue { value: Some(value) })
    }
}

/// Reads a protobuf `ExportTraceServiceRequest` in place; `None` for a body to leave to
/// prost (see the module's comment).
#[cfg(test)]
pub fn read(body: &[u8]) -> Option<Request<'_>> {
    read_within(body, Room::default()).ok().flatten()
}

/// [`read`], with the views charged to `room`: the budget's refusal when it has no room
/// for them.
pub fn read_within(body: &[u8], room: Room) -> Result<Option<Request<'_>>, IngestError> {
    let mut request = Request {
        room,
        ..Request::default()
    };
    let read = request.read_request(body);
    match request.room.refused() {
        Some(refused) => Err(refused),
        None => Ok(read.map(|()| request)),
    }
}

/// What prost allocates to decode `body`, an `ExportTraceServiceRequest`, and to view it,
/// at most: its messages counted as they are nested, each at its size, twice for the
/// growth of the lists that hold them, and a `KeyValue` per two bytes of an attribute's
/// nested array or list. Charged before a body the in-place reader left is decoded.
pub fn decoded_bound(body: &[u8]) -> usize {
    use opentelemetry_proto::tonic::trace::v1::Span as DecodedSpan;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, span};
    // A message and its view, each with room to grow.
    let size = |decoded: usize, view: usize| 2 * (decoded + view);
    let key_value = size(size_of::<KeyValue>(), size_of::<Attribute>());
    // Each length-delimited field of a message, with its number; a malformed rest is left
    // to prost, which stops there too.
    fn walk(body: &[u8], each: &mut impl FnMut(u32, &[u8])) {
        let mut fields = Fields::new(body);
        while let Some(Some((tag, field))) = fields.next() {
            if let Field::Len(bytes) = field {
                each(tag, bytes);
            }
        }
    }
    // One `KeyValue`, with its value's array or list (`AnyValue` fields 5 and 6).
    let attribute = |body: &[u8]| {
        let mut total = key_value;
        walk(body, &mut |field, value| {
            if field == 2 {
                walk(value, &mut |field, nested| {
                    if field == 5 || field == 6 {
                        total += nested.len() / 2 * key_value;
                    }
                });
            }
        });
        total
    };
    // The attributes of a message, given as field `tag`.
    let attributes = |body: &[u8], tag: u32, total: &mut usize| {
        walk(body, &mut |field, bytes| {
            if field == tag {
                *total += attribute(bytes);
            }
        })
    };
    let mut total = 0;
    walk(body, &mut |_, resource_spans| {
        total += size(size_of::<ResourceSpans>(), size_of::<Resource>());
        walk(resource_spans, &mut |field, bytes| match field {
            1 => attributes(bytes, 1, &mut total),
            2 => {
                total += size(size_of::<ScopeSpans>(), size_of::<Scope>());
                walk(bytes, &mut |field, bytes| match field {
                    1 => attributes(bytes, 3, &mut total),
                    2 => {
                        total += size(size_of::<DecodedSpan>(), size_of::<Span>());
                        walk(bytes, &mut |field, bytes| match field {
                            9 => total += attribute(bytes),
                            11 => {
                                total += size(size_of::<span::Event>(), size_of::<Event>());
                                attributes(bytes, 3, &mut total);
                            }
                            13 => {
                                total += size(size_of::<span::Link>(), size_of::<Link>());
                                attributes(bytes, 4, &mut total);
                            }
                            _ => {}
                        });
                    }
                    _ => {}
                });
            }
            _ => {}
        });
    });
    total
}

/// Nested arrays and lists deeper than this are left to prost, which counts its recursion
/// limit from the request's top.
const MOST_NESTED: usize = 32;

impl<'a> Request<'a> {
    fn read_request(&mut self, body: &'a [u8]) -> Option<()> {
        let mut fields = Fields::new(body);
        while let Some((tag, field)) = fields.next()? {
            match (tag, field) {
                (1, Field::Len(bytes)) => self.read_resource_spans(bytes)?,
                (1, _) => return None,
                _ => {}
            }
        }
        Some(())
    }

    fn read_resource_spans(&mut self, body: &'a [u8]) -> Option<()> {
        let mut resource = Resource {
            scopes: self.scopes.len()..self.scopes.len(),
            ..Resource::default()
        };
        let mut seen_resource = false;
        let mut fields = Fields::new(body);
        while let Some((tag, field)) = fields.next()? {
            match (tag, field) {
                (1, Field::Len(bytes)) if !seen_resource => {
                    seen_resource = true;
                    let mut fields = Fields::new(bytes);
                    while let Some((tag, field)) = fields.next()? {
                        match (tag, field) {
                            (1, Field::Len(kv)) => {
                                self.read_attribute(&mut resource.attributes, kv)?
                            }
                            (2, Field::Varint(n)) => resource.dropped_attributes_count = n as u32,
                            // Entity references are not stored: prost checks them.
                            (1..=3, _) => return None,
                            _ => {}
                        }
                    }
                }
                (2, Field::Len(bytes)) => self.read_scope_spans(bytes)?,
                (3, Field::Len(bytes)) => resource.schema_url = text(bytes)?,
                (1..=3, _) => return None,
                _ => {}
            }
        }
        resource.scopes.end = self.scopes.len();
        self.room.push(&mut self.resources, resource).then_some(())
    }

    fn read_scope_spans(&mut self, body: &'a [u8]) -> Option<()> {
        let mut scope = Scope {
            spans: self.spans.len()..self.spans.len(),
            ..Scope::default()
        };
        let mut seen_scope = false;
        let mut fields = Fields::new(body);
        while let Some((tag, field)) = fields.next()? {
            match (tag, field) {
                (1, Field::Len(bytes)) if !seen_scope => {
                    seen_scope = true;
                    let mut fields = Fields::new(bytes);
                    while let Some((tag, field)) = fields.next()? {
                        match (tag, field) {
                            (1, Field::Len(name)) => scope.name = text(name)?,
                            (2, Field::Len(version)) => scope.version = text(version)?,
                            (3, Field::Len(kv)) => {
                                self.read_attribute(&mut scope.attributes, kv)?
                            }
                            (4, Field::Varint(n)) => scope.dropped_attributes_count = n as u32,
                            (1..=4, _) => return None,
                            _ => {}
                        }
                    }
                }
                (2, Field::Len(bytes)) => self.read_span(bytes)?,
                (3, Field::Len(bytes)) => scope.schema_url = text(bytes)?,
                (1..=3, _) => return None,
                _ => {}
            }
        }
        scope.spans.end = self.spans.len();
        self.room.push(&mut self.scopes, scope).then_some(())
    }

    fn read_span(&mut self, body: &'a [u8]) -> Option<()> {
        let mut span = Span {
            events: self.events.len()..self.events.len(),
            links: self.links.len()..self.links.len(),
            ..Span::default()
        };
        let mut fields = Fields::new(body);
        while let Some((tag, field)) = fields.next()? {
            match (tag, field) {
                (1, Field::Len(id)) => span.trace_id = id,
                (2, Field::Len(id)) => span.span_id = id,
                (3, Field::Len(state)) => span.trace_state = text(state)?,
                (4, Field::Len(id)) => span.parent_span_id = id,
                (5, Field::Len(name)) => span.name = text(name)?,
                (6, Field::Varint(kind)) => span.kind = kind as i32,
                (7, Field::Fixed64(ns)) => span.start_time_unix_nano = ns,
                (8, Field::Fixed64(ns)) => span.end_time_unix_nano = ns,
                (9, Field::Len(kv)) => self.read_attribute(&mut span.attributes, kv)?,
                (10, Field::Varint(n)) => span.dropped_attributes_count = n as u32,
                (11, Field::Len(event)) => self.read_event(event)?,
                (12, Field::Varint(n)) => span.dropped_events_count = n as u32,
                (13, Field::Len(link)) => self.read_link(link)?,
                (14, Field::Varint(n)) => span.dropped_links_count = n as u32,
                (15, Field::Len(status)) if span.status.is_none() => {
                    let mut read = Status::default();
                    let mut fields = Fields::new(status);
                    while let Some((tag, field)) = fields.next()? {
                        match (tag, field) {
                            (2, Field::Len(message)) => read.message = text(message)?,
                            (3, Field::Varint(code)) => read.code = code as i32,
                            (2..=3, _) => return None,
                            _ => {}
                        }
                    }
                    span.status = Some(read);
                }
                (16, Field::Fixed32(flags)) => span.flags = flags,
                (1..=16, _) => return None,
                _ => {}
            }
        }
        span.events.end = self.events.len();
        span.links.end = self.links.len();
        self.room.push(&mut self.spans, span).then_some(())
    }

    fn read_event(&mut self, body: &'a [u8]) -> Option<()> {
        let mut event = Event::default();
        let mut fields = Fields::new(body);
        while let Some((tag, field)) = fields.next()? {
            match (tag, field) {
                (1, Field::Fixed64(ns)) => event.time_unix_nano = ns,
                (2, Field::Len(name)) => event.name = text(name)?,
                (3, Field::Len(kv)) => self.read_attribute(&mut event.attributes, kv)?,
                (4, Field::Varint(n)) => event.dropped_attributes_count = n as u32,
                (1..=4, _) => return None,
                _ => {}
            }
        }
        self.room.push(&mut self.events, event).then_some(())
    }

    fn read_link(&mut self, body: &'a [u8]) -> Option<()> {
        let mut link = Link::default();
        let mut fields = Fields::new(body);
        while let Some((tag, field)) = fields.next()? {
            match (tag, field) {
                (1, Field::Len(id)) => link.trace_id = id,
                (2, Field::Len(id)) => link.span_id = id,
                (3, Field::Len(state)) => link.trace_state = text(state)?,
                (4, Field::Len(kv)) => self.read_attribute(&mut link.attributes, kv)?,
                (5, Field::Varint(n)) => link.dropped_attributes_count = n as u32,
                (6, Field::Fixed32(flags)) => link.flags = flags,
                (1..=6, _) => return None,
                _ => {}
            }
        }
        self.room.push(&mut self.links, link).then_some(())
    }

    /// Adds a `KeyValue` to the attributes of `range`. A message's attributes stay one
    /// run: those of a span given on both sides of an event's are left to prost.
    fn read_attribute(&mut self, range: &mut Range<usize>, body: &'a [u8]) -> Option<()> {
        if range.start == range.end {
            *range = self.attributes.len()..self.attributes.len();
        } else if range.end != self.attributes.len() {
            return None;
        }
        let mut key = "";
        let mut value = None;
        let mut fields = Fields::new(body);
        while let Some((tag, field)) = fields.next()? {
            match (tag, field) {
                (1, Field::Len(bytes)) => key = text(bytes)?,
                (2, Field::Len(bytes)) if value.is_none() => {
                    // An array or a list is decoded whole: a `KeyValue` per two bytes, at
                    // most.
                    if matches!(bytes.first(), Some(0x2a | 0x32)) {
                        let bound = bytes.len() / 2 * size_of::<KeyValue>();
                        self.room.take(bound).then_some(())?;
                    }
                    value = Some(any_value(bytes)?)
                }
                (3, Field::Varint(_)) => {}
                (1..=3, _) => return None,
                _ => {}
            }
        }
        let attribute = Attribute {
            key,
            value: value.unwrap_or(Value::Absent),
        };
        self.room
            .push(&mut self.attributes, attribute)
            .then_some(())?;
        range.end = self.attributes.len();
        Some(())
    }
}

/// An `AnyValue` given as one field at most.
fn any_value(body: &[u8]) -> Option<Value<'_>> {
    let mut value = Value::Absent;
    let mut fields = Fields::new(body);
    let mut seen = false;
    while let Some((tag, field)) = fields.next()? {
        if (1..=8).contains(&tag) {
            if seen {
                return None;
            }
            seen = true;
        }
        value = match (tag, field) {
            (1, Field::Len(s)) => Value::Str(text(s)?),
            (2, Field::Varint(b)) => Value::Bool(b != 0),
            (3, Field::Varint(i)) => Value::Int(i as i64),
            (4, Field::Fixed64(bits)) => Value::Double(f64::from_bits(bits)),
            (5, Field::Len(array)) => nested(any_value::Value::ArrayValue(
                ArrayValue::decode(array).ok()?,
            ))?,
            (6, Field::Len(list)) => nested(any_value::Value::KvlistValue(
                KeyValueList::decode(list).ok()?,
            ))?,
            (7, Field::Len(bytes)) => Value::Bytes(bytes),
            (8, Field::Varint(_)) => Value::Absent,
            (1..=8, _) => return None,
            _ => continue,
        };
    }
    Some(value)
}

fn nested<'a>(value: any_value::Value) -> Option<Value<'a>> {
    (depth(&value) <= MOST_NESTED).then_some(Value::Nested(Cow::Owned(value)))
}

/// How deep arrays and lists nest in `value`.
fn depth(value: &any_value::Value) -> usize {
    use any_value::Value as V;
    let of = |v: Option<&AnyValue>| v.and_then(|v| v.value.as_ref()).map_or(0, depth);
    match value {
        V::ArrayValue(array) => 1 + array.values.iter().map(|v| of(Some(v))).max().unwrap_or(0),
        V::KvlistValue(list) => {
            1 + list
                .values
                .iter()
                .map(|kv| of(kv.value.as_ref()))
                .max()
                .unwrap_or(0)
        }
        _ => 0,
    }
}

fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

/// One field of a message, by wire type.
#[derive(Debug, Clone, Copy)]
enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32(u32),
}

/// The fields of a message, in order.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(body: &'a [u8]) -> Self {
        Self { rest: body }
    }

    /// The next field with its tag: `Some(None)` at the end, `None` where the body is
    /// malformed or uses groups.
    fn next(&mut self) -> Option<Option<(u32, Field<'a>)>> {
        if self.rest.is_empty() {
            return Some(None);
        }
        let key = u32::try_from(self.varint()?).ok()?;
        let tag = Some(key >> 3).filter(|tag| *tag > 0)?;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().ok()?)),
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                Field::Len(self.take(len)?)
            }
            5 => Field::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().ok()?)),
            _ => return None,
        };
        Some(Some((tag, field)))
    }

    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if len > self.rest.len() {
            return None;
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(taken)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for (i, byte) in self.rest.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                // The tenth byte may only carry the top bit.
                if i == 9 && *byte > 1 {
                    return None;
                }
                self.rest = &self.rest[i + 1..];
                return Some(value);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
