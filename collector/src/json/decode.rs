//! Decoding OTLP/JSON as the parser reads the body: each field goes straight into the
//! request's types, keys are looked at where they lie in the body, and no tree of JSON
//! values is built. A field is read by its JSON name or its proto name (the JSON name
//! wins when both are there); `null` is as if the field were absent; unknown fields are
//! skipped. A value that is not of its field's type is an error naming the field.

use std::marker::PhantomData;
use std::str::FromStr;

use base64::Engine;
use callwatch_storage::schema::{SPAN_KINDS, STATUS_CODES};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Decodes an OTLP/JSON request body.
pub fn decode_request(body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let request = Object::<ExportTraceServiceRequest>::new("request")
        .deserialize(&mut deserializer)
        .and_then(|request| deserializer.end().map(|()| request))
        .map_err(describe)?;
    request.ok_or_else(|| "request: expected a JSON object".to_string())
}

/// The message of a field's error; "invalid JSON: …" when the body is not JSON.
///
/// Each visitor's `expecting` is the whole message for a value of the wrong type: serde
/// puts the type it met before it ("invalid type: map, expected …"), and serde_json the
/// place after it, both left out here.
fn describe(error: serde_json::Error) -> String {
    if error.classify() != serde_json::error::Category::Data {
        return format!("invalid JSON: {error}");
    }
    let text = error.to_string();
    let place = format!(" at line {} column {}", error.line(), error.column());
    let text = text.strip_suffix(&place).unwrap_or(&text);
    match text.strip_prefix("invalid type: ") {
        Some(rest) => rest
            .rsplit_once(", expected ")
            .map_or(rest, |(_, expected)| expected)
            .to_string(),
        None => text.to_string(),
    }
}

/// A protobuf message read from a JSON object, one field at a time.
trait Message: Default {
    /// Each field's (JSON name, proto name); a field is its index here.
    const FIELDS: &'static [(&'static str, &'static str)];
    /// Reads field `field` from the value `map` is at.
    fn read<'de, A: MapAccess<'de>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error>;
}

/// A message, or `None` for `null`; `what` names it in errors.
struct Object<T> {
    what: &'static str,
    message: PhantomData<T>,
}

impl<T> Object<T> {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            message: PhantomData,
        }
    }
}

impl<'de, T: Message> DeserializeSeed<'de> for Object<T> {
    type Value = Option<T>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, T: Message> Visitor<'de> for Object<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}: expected a JSON object", self.what)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut message = T::default();
        // Fields read by their JSON name: their proto name is skipped after.
        let mut by_json_name = 0_u32;
        while let Some(key) = map.next_key_seed(Key)? {
            let found = T::FIELDS
                .iter()
                .enumerate()
                .find_map(|(index, (json, proto))| match key.as_ref() {
                    k if k == *json => Some((index, true)),
                    k if k == *proto => Some((index, false)),
                    _ => None,
                });
            match found {
                Some((index, true)) => {
                    by_json_name |= 1 << index;
                    message.read(index, &mut map)?;
                }
                Some((index, false)) if by_json_name & (1 << index) == 0 => {
                    message.read(index, &mut map)?;
                }
                _ => map.next_value_seed(Skip)?,
            }
        }
        Ok(Some(message))
    }
}

/// An unknown field's value, read through to check that it is JSON (serde's `IgnoredAny`
/// lets an escape that is no character pass).
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(Skip)?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }
}

/// An object key, borrowed from the body unless it has escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = std::borrow::Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = std::borrow::Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(key.into())
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(key.to_string().into())
    }
}

/// A repeated message field: `null` is empty, an item must be an object.
struct List<T> {
    name: &'static str,
    item: &'static str,
    message: PhantomData<T>,
}

impl<'de, T: Message> DeserializeSeed<'de> for List<T> {
    type Value = Vec<T>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, T: Message> Visitor<'de> for List<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}: expected an array", self.name)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(Object::<T>::new(self.item))? {
            let item = item.ok_or_else(|| {
                de::Error::custom(format!("{}: expected a JSON object", self.item))
            })?;
            items.push(item);
        }
        Ok(items)
    }
}

/// A string field: `null` is empty.
struct Text(&'static str);

impl<'de> DeserializeSeed<'de> for Text {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Text {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}: expected a string", self.0)
    }

    fn visit_unit<E>(self) -> Result<String, E> {
        Ok(String::new())
    }

    fn visit_str<E>(self, text: &str) -> Result<String, E> {
        Ok(text.to_string())
    }

    fn visit_string<E>(self, text: String) -> Result<String, E> {
        Ok(text)
    }
}

/// A trace or span id in hex: `null` is empty.
struct HexId(&'static str);

impl<'de> DeserializeSeed<'de> for HexId {
    type Value = Vec<u8>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for HexId {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}: expected a string", self.0)
    }

    fn visit_unit<E>(self) -> Result<Vec<u8>, E> {
        Ok(Vec::new())
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Vec<u8>, E> {
        super::decode_hex(text).ok_or_else(|| E::custom(format!("{}: {text:?} is not hex", self.0)))
    }
}

/// An integer field, a JSON number or a string of one (64-bit integers are strings in the
/// mapping): `null` is 0.
struct Integer<T> {
    name: &'static str,
    kind: PhantomData<T>,
}

fn integer<T>(name: &'static str) -> Integer<T> {
    Integer {
        name,
        kind: PhantomData,
    }
}

impl<T: FromStr + TryFrom<u64> + TryFrom<i64> + Default> Integer<T> {
    fn out_of_range<E: de::Error>(&self, text: impl std::fmt::Display) -> E {
        let text = text.to_string();
        E::custom(format!(
            "{}: {text:?} is not a valid integer of its type",
            self.name
        ))
    }
}

impl<'de, T: FromStr + TryFrom<u64> + TryFrom<i64> + Default> DeserializeSeed<'de> for Integer<T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, T: FromStr + TryFrom<u64> + TryFrom<i64> + Default> Visitor<'de> for Integer<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}: expected an integer", self.name)
    }

    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
        T::try_from(n).map_err(|_| self.out_of_range(n))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
        T::try_from(n).map_err(|_| self.out_of_range(n))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<T, E> {
        // As serde_json writes the number, which is never an integer here.
        let text = serde_json::Number::from_f64(n).map_or_else(|| n.to_string(), |n| n.to_string());
        Err(self.out_of_range(text))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        text.parse().map_err(|_| self.out_of_range(text))
    }
}

/// An enum field: its number, its full name (`SPAN_KIND_SERVER`) or its short name.
struct Enumeration {
    name: &'static str,
    prefix: &'static str,
    names: &'static [&'static str],
}

impl<'de> DeserializeSeed<'de> for Enumeration {
    type Value = i32;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<i32, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Enumeration {
    type Value = i32;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}: expected an integer", self.name)
    }

    fn visit_unit<E>(self) -> Result<i32, E> {
        Ok(0)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<i32, E> {
        integer::<i32>(self.name).visit_u64(n)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<i32, E> {
        integer::<i32>(self.name).visit_i64(n)
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<i32, E> {
        integer::<i32>(self.name).visit_f64(n)
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<i32, E> {
        let short = name.strip_prefix(self.prefix).unwrap_or(name);
        self.names
            .iter()
            .position(|candidate| candidate.eq_ignore_ascii_case(short))
            .map(|index| index as i32)
            .ok_or_else(|| E::custom(format!("{}: unknown value {name:?}", self.name)))
    }
}

/// A value of `S`, or `None` for `null`.
struct Nullable<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Nullable<S> {
    type Value = Option<S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for Nullable<S> {
    type Value = Option<S::Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a value or null")
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(deserializer).map(Some)
    }
}

/// `doubleValue`: a JSON number, or a string of one (`NaN` and the infinities are strings).
struct Double;

impl<'de> DeserializeSeed<'de> for Double {
    type Value = Option<f64>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Double {
    type Value = Option<f64>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("doubleValue: expected a number")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Some(n as f64))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(Some(n as f64))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Self::Value, E> {
        Ok(Some(n))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        match text {
            "NaN" => Ok(Some(f64::NAN)),
            "Infinity" => Ok(Some(f64::INFINITY)),
            "-Infinity" => Ok(Some(f64::NEG_INFINITY)),
            other => other
                .parse()
                .map(Some)
                .map_err(|_| E::custom(format!("doubleValue: {other:?} is not a double"))),
        }
    }
}

/// `boolValue`.
struct Bool;

impl<'de> DeserializeSeed<'de> for Bool {
    type Value = Option<bool>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bool {
    type Value = Option<bool>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("boolValue: expected true or false")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E>(self, value: bool) -> Result<Self::Value, E> {
        Ok(Some(value))
    }
}

/// `stringValue` (`None` for `null`).
struct OptionalText(&'static str);

impl<'de> DeserializeSeed<'de> for OptionalText {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for OptionalText {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.0)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Some(text.to_string()))
    }

    fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
        Ok(Some(text))
    }
}

fn list<'de, T: Message, A: MapAccess<'de>>(
    map: &mut A,
    name: &'static str,
    item: &'static str,
) -> Result<Vec<T>, A::Error> {
    map.next_value_seed(List::<T> {
        name,
        item,
        message: PhantomData,
    })
}

fn attributes<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Vec<KeyValue>, A::Error> {
    list::<KeyValue, A>(map, "attributes", "attributes[]")
}

impl Message for ExportTraceServiceRequest {
    const FIELDS: &'static [(&'static str, &'static str)] = &[("resourceSpans", "resource_spans")];

    fn read<'de, A: MapAccess<'de>>(&mut self, _: usize, map: &mut A) -> Result<(), A::Error> {
        self.resource_spans = list::<ResourceSpans, A>(map, "resourceSpans", "resourceSpans[]")?;
        Ok(())
    }
}

impl Message for ResourceSpans {
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("resource", "resource"),
        ("scopeSpans", "scope_spans"),
        ("schemaUrl", "schema_url"),
    ];

    fn read<'de, A: MapAccess<'de>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error> {
        match field {
            0 => self.resource = map.next_value_seed(Object::<Resource>::new("resource"))?,
            1 => self.scope_spans = list::<ScopeSpans, A>(map, "scopeSpans", "scopeSpans[]")?,
            _ => self.schema_url = map.next_value_seed(Text("schemaUrl"))?,
        }
        Ok(())
    }
}

impl Message for Resource {
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("attributes", "attributes"),
        ("droppedAttributesCount", "dropped_attributes_count"),
    ];

    fn read<'de, A: MapAccess<'de>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error> {
        match field {
            0 => self.attributes = attributes(map)?,
            _ => {
                self.dropped_attributes_count =
                    map.next_value_seed(integer("droppedAttributesCount"))?
            }
        }
        Ok(())
    }
}

impl Message for ScopeSpans {
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("scope", "scope"),
        ("spans", "spans"),
        ("schemaUrl", "schema_url"),
    ];

    fn read<'de, A: MapAccess<'de>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error> {
        match field {
            0 => self.scope = map.next_value_seed(Object::<InstrumentationScope>::new("scope"))?,
            1 => self.spans = list::<Span, A>(map, "spans", "spans[]")?,
            _ => self.schema_url = map.next_value_seed(Text("schemaUrl"))?,
        }
        Ok(())
    }
}

impl Message for InstrumentationScope {
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("name", "name"),
        ("version", "version"),
        ("attributes", "attributes"),
        ("droppedAttributesCount", "dropped_attributes_count"),
    ];

    fn read<'de, A: MapAccess<'de>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error> {
        match field {
            0 => self.name = map.next_value_seed(Text("name"))?,
            1 => self.version = map.next_value_seed(Text("version"))?,
            2 => self.attributes = attributes(map)?,
            _ => {
                self.dropped_attributes_count =
                    map.next_value_seed(integer("droppedAttributesCount"))?
            }
        }
        Ok(())
    }
}

impl Message for Span {
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("traceId", "trace_id"),
        ("spanId", "span_id"),
        ("traceState", "trace_state"),
        ("parentSpanId", "parent_span_id"),
        ("flags", "flags"),
        ("name", "name"),
        ("kind", "kind"),
        ("startTimeUnixNano", "start_time_unix_nano"),
        ("endTimeUnixNano", "end_time_unix_nano"),
        ("attributes", "attributes"),
        ("droppedAttributesCount", "dropped_attributes_count"),
        ("events", "events"),
        ("droppedEventsCount", "dropped_events_count"),
        ("links", "links"),
        ("droppedLinksCount", "dropped_links_count"),
        ("status", "status"),
    ];

    fn read<'de, A: MapAccess<'de>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error> {
        match field {
            0 => self.trace_id = map.next_value_seed(HexId("traceId"))?,
            1 => self.span_id = map.next_value_seed(HexId("spanId"))?,
            2 => self.trace_state = map.next_value_seed(Text("traceState"))?,
            3 => self.parent_span_id = map.next_value_seed(HexId("parentSpanId"))?,
            4 => self.flags = map.next_value_seed(integer("flags"))?,
            5 => self.name = map.next_value_seed(Text("name"))?,
            6 => {
                self.kind = map.next_value_seed(Enumeration {
                    name: "kind",
                    prefix: "SPAN_KIND_",
                    names: &SPAN_KINDS,
                })?
            }
            7 => self.start_time_unix_nano = map.next_value_seed(integer("startTimeUnixNano"))?,
            8 => self.end_time_unix_nano = map.next_value_seed(integer("endTimeUnixNano"))?,
            9 => self.attributes = attributes(map)?,
            10 => {
                self.dropped_attributes_count =
                    map.next_value_seed(integer("droppedAttributesCount"))?
            }
            11 => self.events = list::<Event, A>(map, "events", "events[]")?,
            12 => self.dropped_events_count = map.next_value_seed(integer("droppedEventsCount"))?,
            13 => self.links = list::<Link, A>(map, "links", "links[]")?,
            14 => self.dropped_links_count = map.next_value_seed(integer("droppedLinksCount"))?,
            _ => self.status = map.next_value_seed(Object::<Status>::new("status"))?,
        }
        Ok(())
    }
}

impl Message for Status {
    const FIELDS: &'static [(&'static str, &'static str)] =
        &[("message", "message"), ("code", "code")];

    fn read<'de, A: MapAccess<'de>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error> {
        match field {
            0 => self.message = map.next_value_seed(Text("message"))?,
            _ => {
                self.code = map.next_value_seed(Enumeration {
                    name: "code",
                    prefix: "STATUS_CODE_",
                    names: &STATUS_CODES,
                })?
            }
        }
        Ok(())
    }
}

impl Message for Event {
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("timeUnixNano", "time_unix_nano"),
        ("name", "name"),
        ("attributes", "attributes"),
        ("droppedAttributesCount", "dropped_attributes_count"),
    ];

    fn read<'de, A: MapAccess<'de>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error> {
        match field {
            0 => self.time_unix_nano = map.next_value_seed(integer("timeUnixNano"))?,
            1 => self.name = map.next_value_seed(Text("name"))?,
            2 => self.attributes = attributes(map)?,
            _ => {
                self.dropped_attributes_count =
                    map.next_value_seed(integer("droppedAttributesCount"))?
            }
        }
        Ok(())
    }
}

impl Message for Link {
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("traceId", "trace_id"),
        ("spanId", "span_id"),
        ("traceState", "trace_state"),
        ("attributes", "attributes"),
        ("droppedAttributesCount", "dropped_attributes_count"),
        ("flags", "flags"),
    ];

    fn read<'de, A: MapAccess<'de>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error> {
        match field {
            0 => self.trace_id = map.next_value_seed(HexId("traceId"))?,
            1 => self.span_id = map.next_value_seed(HexId("spanId"))?,
            2 => self.trace_state = map.next_value_seed(Text("traceState"))?,
            3 => self.attributes = attributes(map)?,
            4 => {
                self.dropped_attributes_count =
                    map.next_value_seed(integer("droppedAttributesCount"))?
            }
            _ => self.flags = map.next_value_seed(integer("flags"))?,
        }
        Ok(())
    }
}

impl Message for KeyValue {
    const FIELDS: &'static [(&'static str, &'static str)] = &[("key", "key"), ("value", "value")];

    fn read<'de, A: MapAccess<'de>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error> {
        match field {
            0 => self.key = map.next_value_seed(Text("key"))?,
            _ => {
                let value = map.next_value_seed(Object::<Candidates>::new("value"))?;
                self.value = value.map(Candidates::into_value);
            }
        }
        Ok(())
    }
}

/// The values an `AnyValue` object gives (`null` ones as absent); the first of them in
/// this order is its value.
#[derive(Default)]
struct Candidates {
    string: Option<String>,
    bool: Option<bool>,
    int: Option<i64>,
    double: Option<f64>,
    bytes: Option<Vec<u8>>,
    array: Option<ArrayValue>,
    kvlist: Option<KeyValueList>,
}

impl Message for Candidates {
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("stringValue", "string_value"),
        ("boolValue", "bool_value"),
        ("intValue", "int_value"),
        ("doubleValue", "double_value"),
        ("bytesValue", "bytes_value"),
        ("arrayValue", "array_value"),
        ("kvlistValue", "kvlist_value"),
    ];

    fn read<'de, A: MapAccess<'de>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error> {
        match field {
            0 => {
                self.string = map.next_value_seed(OptionalText("stringValue: expected a string"))?
            }
            1 => self.bool = map.next_value_seed(Bool)?,
            2 => self.int = map.next_value_seed(Nullable(integer::<i64>("intValue")))?,
            3 => self.double = map.next_value_seed(Double)?,
            4 => {
                let text =
                    map.next_value_seed(OptionalText("bytesValue: expected a base64 string"))?;
                self.bytes = text
                    .map(|text| {
                        base64::engine::general_purpose::STANDARD
                            .decode(text)
                            .map_err(|e| de::Error::custom(format!("bytesValue: {e}")))
                    })
                    .transpose()?;
            }
            5 => self.array = map.next_value_seed(Object::<ArrayValue>::new("arrayValue"))?,
            _ => self.kvlist = map.next_value_seed(Object::<KeyValueList>::new("kvlistValue"))?,
        }
        Ok(())
    }
}

impl Candidates {
    fn into_value(self) -> AnyValue {
        use any_value::Value as V;
        let value = if let Some(text) = self.string {
            Some(V::StringValue(text))
        } else if let Some(value) = self.bool {
            Some(V::BoolValue(value))
        } else if let Some(value) = self.int {
            Some(V::IntValue(value))
        } else if let Some(value) = self.double {
            Some(V::DoubleValue(value))
        } else if let Some(bytes) = self.bytes {
            Some(V::BytesValue(bytes))
        } else if let Some(array) = self.array {
            Some(V::ArrayValue(array))
        } else {
            self.kvlist.map(V::KvlistValue)
        };
        AnyValue { value }
    }
}

impl Message for ArrayValue {
    const FIELDS: &'static [(&'static str, &'static str)] = &[("values", "values")];

    fn read<'de, A: MapAccess<'de>>(&mut self, _: usize, map: &mut A) -> Result<(), A::Error> {
        let values = list::<Candidates, A>(map, "values", "value")?;
        self.values = values.into_iter().map(Candidates::into_value).collect();
        Ok(())
    }
}

impl Message for KeyValueList {
    const FIELDS: &'static [(&'static str, &'static str)] = &[("values", "values")];

    fn read<'de, A: MapAccess<'de>>(&mut self, _: usize, map: &mut A) -> Result<(), A::Error> {
        self.values = list::<KeyValue, A>(map, "values", "attributes[]")?;
        Ok(())
    }
}
