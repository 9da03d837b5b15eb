//! Decoding OTLP/JSON as the parser reads the body, straight into the views the converter
//! reads (`wire::Request`): strings and keys are borrowed from the body where they lie,
//! and only what the body does not hold as it stands (a string with escapes, an id in
//! bytes, decoded base64) is copied, into an arena that lives as long as the views. No
//! tree of JSON values and no owned request is built. A field is read by its JSON name or
//! its proto name (the JSON name wins when both are there); `null` is as if the field were
//! absent; unknown fields are skipped; a field given twice is the second. A value that is
//! not of its field's type is an error naming the field.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::ops::Range;
use std::str::FromStr;

use base64::Engine;
use bumpalo::Bump;
use callwatch_storage::schema::{SPAN_KINDS, STATUS_CODES};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value,
};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::IngestError;
use crate::inflight::Room;
use crate::wire::{Attribute, Event, Link, Request, Resource, Scope, Span, Status, Value};

/// Decodes an OTLP/JSON request body into views of it; what they do not borrow from `body`
/// is allocated in `arena`.
pub fn decode_views<'a>(body: &'a [u8], arena: &'a Bump) -> Result<Request<'a>, String> {
    decode_views_within(body, arena, Room::default()).map_err(|error| match error {
        IngestError::InvalidRequest(message) => message,
        other => other.to_string(),
    })
}

/// [`decode_views`], with the views charged to `room`: `InvalidRequest` for a body that
/// does not decode, the budget's refusal when it has no room for the views.
pub fn decode_views_within<'a>(
    body: &'a [u8],
    arena: &'a Bump,
    room: Room,
) -> Result<Request<'a>, IngestError> {
    let mut out = Out {
        request: Request {
            room,
            ..Request::default()
        },
        arena,
    };
    // A body checked as UTF-8 once is parsed without checking each string again. One that
    // is not is parsed as bytes, which gives the error and the place it always gave.
    let found = match std::str::from_utf8(body) {
        Ok(text) => read_top(serde_json::Deserializer::from_str(text), &mut out),
        Err(_) => read_top(serde_json::Deserializer::from_slice(body), &mut out),
    };
    if let Some(refused) = out.request.room.refused() {
        return Err(refused);
    }
    match found.map_err(|error| IngestError::InvalidRequest(describe(error)))? {
        Some(Top) => Ok(out.request),
        None => Err(IngestError::InvalidRequest(
            "request: expected a JSON object".to_string(),
        )),
    }
}

/// Reads the whole body as the request's object, or `None` for `null`.
fn read_top<'a, R: serde_json::de::Read<'a>>(
    mut deserializer: serde_json::Deserializer<R>,
    out: &mut Out<'a>,
) -> Result<Option<Top>, serde_json::Error> {
    let found = Object::<Top>::new("request", out).deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(found)
}

/// Decodes an OTLP/JSON request body into an owned request.
pub fn decode_request(body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
    let arena = Bump::new();
    decode_views(body, &arena).map(|request| request.to_request())
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

/// What decoding builds: the views, and the arena for what they do not borrow.
struct Out<'a> {
    request: Request<'a>,
    arena: &'a Bump,
}

/// A protobuf message read from a JSON object, one field at a time.
trait Message<'a>: Default {
    /// Each field's (JSON name, proto name); a field is its index here.
    const FIELDS: &'static [(&'static str, &'static str)];
    /// Reads field `field` from the value `map` is at; views it holds go into `out`.
    fn read<A: MapAccess<'a>>(
        &mut self,
        field: usize,
        map: &mut A,
        out: &mut Out<'a>,
    ) -> Result<(), A::Error>;
}

/// A message, or `None` for `null`; `what` names it in errors.
struct Object<'o, 'a, T> {
    what: &'static str,
    out: &'o mut Out<'a>,
    message: PhantomData<T>,
}

impl<'o, 'a, T> Object<'o, 'a, T> {
    fn new(what: &'static str, out: &'o mut Out<'a>) -> Self {
        Self {
            what,
            out,
            message: PhantomData,
        }
    }
}

impl<'a, T: Message<'a>> DeserializeSeed<'a> for Object<'_, 'a, T> {
    type Value = Option<T>;

    fn deserialize<D: Deserializer<'a>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'a, T: Message<'a>> Visitor<'a> for Object<'_, 'a, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}: expected a JSON object", self.what)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<Self::Value, A::Error> {
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
                    message.read(index, &mut map, self.out)?;
                }
                Some((index, false)) if by_json_name & (1 << index) == 0 => {
                    message.read(index, &mut map, self.out)?;
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

/// A repeated message field: `null` is empty, an item must be an object. Each item is
/// handed to `each` as it is read.
struct List<'o, 'a, T, F> {
    name: &'static str,
    item: &'static str,
    out: &'o mut Out<'a>,
    each: F,
    message: PhantomData<T>,
}

impl<'a, T: Message<'a>, F: FnMut(&mut Out<'a>, T) -> bool> DeserializeSeed<'a>
    for List<'_, 'a, T, F>
{
    type Value = ();

    fn deserialize<D: Deserializer<'a>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'a, T: Message<'a>, F: FnMut(&mut Out<'a>, T) -> bool> Visitor<'a> for List<'_, 'a, T, F> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}: expected an array", self.name)
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'a>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element_seed(Object::<T>::new(self.item, self.out))? {
            let item = item.ok_or_else(|| {
                de::Error::custom(format!("{}: expected a JSON object", self.item))
            })?;
            if !(self.each)(self.out, item) {
                // The in-flight budget's refusal, which the decoder's caller gives.
                return Err(de::Error::custom("the views are over the in-flight budget"));
            }
        }
        Ok(())
    }
}

/// Reads a repeated message field, handing each item to `each`.
fn list<'a, T: Message<'a>, A: MapAccess<'a>>(
    map: &mut A,
    out: &mut Out<'a>,
    name: &'static str,
    item: &'static str,
    each: impl FnMut(&mut Out<'a>, T) -> bool,
) -> Result<(), A::Error> {
    map.next_value_seed(List {
        name,
        item,
        out,
        each,
        message: PhantomData,
    })
}

/// Reads a repeated message field into the views `views` picks; the range they take there.
fn views<'a, T: Message<'a>, A: MapAccess<'a>>(
    map: &mut A,
    out: &mut Out<'a>,
    name: &'static str,
    item: &'static str,
    views: for<'r> fn(&'r mut Request<'a>) -> (&'r mut Vec<T>, &'r mut Room),
) -> Result<Range<usize>, A::Error> {
    let first = views(&mut out.request).0.len();
    list(map, out, name, item, |out, view| {
        let (views, room) = views(&mut out.request);
        room.push(views, view)
    })?;
    Ok(first..views(&mut out.request).0.len())
}

fn attributes<'a, A: MapAccess<'a>>(
    map: &mut A,
    out: &mut Out<'a>,
) -> Result<Range<usize>, A::Error> {
    views(map, out, "attributes", "attributes[]", |r| {
        (&mut r.attributes, &mut r.room)
    })
}

/// A string, or `None` for `null`: borrowed from the body unless it has escapes. `what`
/// says what else the field is, in errors ("a string").
struct Text<'a> {
    name: &'static str,
    what: &'static str,
    arena: &'a Bump,
}

/// A string field: `null` is empty.
fn text<'a, A: MapAccess<'a>>(
    map: &mut A,
    out: &Out<'a>,
    name: &'static str,
) -> Result<&'a str, A::Error> {
    let text = map.next_value_seed(Text {
        name,
        what: "a string",
        arena: out.arena,
    })?;
    Ok(text.unwrap_or(""))
}

impl<'a> DeserializeSeed<'a> for Text<'a> {
    type Value = Option<&'a str>;

    fn deserialize<D: Deserializer<'a>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'a> Visitor<'a> for Text<'a> {
    type Value = Option<&'a str>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}: expected {}", self.name, self.what)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_borrowed_str<E>(self, text: &'a str) -> Result<Self::Value, E> {
        Ok(Some(text))
    }

    fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Some(self.arena.alloc_str(text)))
    }
}

/// A trace or span id in hex: `null` is empty.
struct HexId<'a> {
    name: &'static str,
    arena: &'a Bump,
}

fn hex_id<'a, A: MapAccess<'a>>(
    map: &mut A,
    out: &Out<'a>,
    name: &'static str,
) -> Result<&'a [u8], A::Error> {
    map.next_value_seed(HexId {
        name,
        arena: out.arena,
    })
}

impl<'a> DeserializeSeed<'a> for HexId<'a> {
    type Value = &'a [u8];

    fn deserialize<D: Deserializer<'a>>(self, deserializer: D) -> Result<&'a [u8], D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'a> Visitor<'a> for HexId<'a> {
    type Value = &'a [u8];

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}: expected a string", self.name)
    }

    fn visit_unit<E>(self) -> Result<&'a [u8], E> {
        Ok(&[])
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<&'a [u8], E> {
        let not_hex = || E::custom(format!("{}: {text:?} is not hex", self.name));
        if !text.len().is_multiple_of(2) {
            return Err(not_hex());
        }
        let bytes = self.arena.alloc_slice_fill_copy(text.len() / 2, 0_u8);
        super::decode_hex_into(text, bytes).ok_or_else(not_hex)?;
        Ok(bytes)
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

/// The request's top: its resource spans.
#[derive(Default)]
struct Top;

impl<'a> Message<'a> for Top {
    const FIELDS: &'static [(&'static str, &'static str)] = &[("resourceSpans", "resource_spans")];

    fn read<A: MapAccess<'a>>(
        &mut self,
        _: usize,
        map: &mut A,
        out: &mut Out<'a>,
    ) -> Result<(), A::Error> {
        // Given twice, the second list is the request's.
        out.request.resources.clear();
        list(
            map,
            out,
            "resourceSpans",
            "resourceSpans[]",
            |out, resource| {
                let request = &mut out.request;
                request.room.push(&mut request.resources, resource)
            },
        )
    }
}

/// `ResourceSpans`, as the view of its resource.
impl<'a> Message<'a> for Resource<'a> {
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("resource", "resource"),
        ("scopeSpans", "scope_spans"),
        ("schemaUrl", "schema_url"),
    ];

    fn read<A: MapAccess<'a>>(
        &mut self,
        field: usize,
        map: &mut A,
        out: &mut Out<'a>,
    ) -> Result<(), A::Error> {
        match field {
            0 => {
                let resource =
                    map.next_value_seed(Object::<ResourceFields>::new("resource", out))?;
                let resource = resource.unwrap_or_default();
                self.attributes = resource.attributes;
                self.dropped_attributes_count = resource.dropped_attributes_count;
            }
            1 => {
                self.scopes = views(map, out, "scopeSpans", "scopeSpans[]", |r| {
                    (&mut r.scopes, &mut r.room)
                })?
            }
            _ => self.schema_url = text(map, out, "schemaUrl")?,
        }
        Ok(())
    }
}

/// `Resource`.
#[derive(Default)]
struct ResourceFields {
    attributes: Range<usize>,
    dropped_attributes_count: u32,
}

impl<'a> Message<'a> for ResourceFields {
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("attributes", "attributes"),
        ("droppedAttributesCount", "dropped_attributes_count"),
    ];

    fn read<A: MapAccess<'a>>(
        &mut self,
        field: usize,
        map: &mut A,
        out: &mut Out<'a>,
    ) -> Result<(), A::Error> {
        match field {
            0 => self.attributes = attributes(map, out)?,
            _ => {
                self.dropped_attributes_count =
                    map.next_value_seed(integer("droppedAttributesCount"))?
            }
        }
        Ok(())
    }
}

/// `ScopeSpans`, as the view of its scope.
impl<'a> Message<'a> for Scope<'a> {
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("scope", "scope"),
        ("spans", "spans"),
        ("schemaUrl", "schema_url"),
    ];

    fn read<A: MapAccess<'a>>(
        &mut self,
        field: usize,
        map: &mut A,
        out: &mut Out<'a>,
    ) -> Result<(), A::Error> {
        match field {
            0 => {
                let scope = map.next_value_seed(Object::<ScopeFields>::new("scope", out))?;
                let scope = scope.unwrap_or_default();
                self.name = scope.name;
                self.version = scope.version;
                self.attributes = scope.attributes;
                self.dropped_attributes_count = scope.dropped_attributes_count;
            }
            1 => {
                self.spans = views(map, out, "spans", "spans[]", |r| {
                    (&mut r.spans, &mut r.room)
                })?
            }
            _ => self.schema_url = text(map, out, "schemaUrl")?,
        }
        Ok(())
    }
}

/// `InstrumentationScope`.
#[derive(Default)]
struct ScopeFields<'a> {
    name: &'a str,
    version: &'a str,
    attributes: Range<usize>,
    dropped_attributes_count: u32,
}

impl<'a> Message<'a> for ScopeFields<'a> {
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("name", "name"),
        ("version", "version"),
        ("attributes", "attributes"),
        ("droppedAttributesCount", "dropped_attributes_count"),
    ];

    fn read<A: MapAccess<'a>>(
        &mut self,
        field: usize,
        map: &mut A,
        out: &mut Out<'a>,
    ) -> Result<(), A::Error> {
        match field {
            0 => self.name = text(map, out, "name")?,
            1 => self.version = text(map, out, "version")?,
            2 => self.attributes = attributes(map, out)?,
            _ => {
                self.dropped_attributes_count =
                    map.next_value_seed(integer("droppedAttributesCount"))?
            }
        }
        Ok(())
    }
}

impl<'a> Message<'a> for Span<'a> {
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

    fn read<A: MapAccess<'a>>(
        &mut self,
        field: usize,
        map: &mut A,
        out: &mut Out<'a>,
    ) -> Result<(), A::Error> {
        match field {
            0 => self.trace_id = hex_id(map, out, "traceId")?,
            1 => self.span_id = hex_id(map, out, "spanId")?,
            2 => self.trace_state = text(map, out, "traceState")?,
            3 => self.parent_span_id = hex_id(map, out, "parentSpanId")?,
            4 => self.flags = map.next_value_seed(integer("flags"))?,
            5 => self.name = text(map, out, "name")?,
            6 => {
                self.kind = map.next_value_seed(Enumeration {
                    name: "kind",
                    prefix: "SPAN_KIND_",
                    names: &SPAN_KINDS,
                })?
            }
            7 => self.start_time_unix_nano = map.next_value_seed(integer("startTimeUnixNano"))?,
            8 => self.end_time_unix_nano = map.next_value_seed(integer("endTimeUnixNano"))?,
            9 => self.attributes = attributes(map, out)?,
            10 => {
                self.dropped_attributes_count =
                    map.next_value_seed(integer("droppedAttributesCount"))?
            }
            11 => {
                self.events = views(map, out, "events", "events[]", |r| {
                    (&mut r.events, &mut r.room)
                })?
            }
            12 => self.dropped_events_count = map.next_value_seed(integer("droppedEventsCount"))?,
            13 => {
                self.links = views(map, out, "links", "links[]", |r| {
                    (&mut r.links, &mut r.room)
                })?
            }
            14 => self.dropped_links_count = map.next_value_seed(integer("droppedLinksCount"))?,
            _ => self.status = map.next_value_seed(Object::<Status>::new("status", out))?,
        }
        Ok(())
    }
}

impl<'a> Message<'a> for Status<'a> {
    const FIELDS: &'static [(&'static str, &'static str)] =
        &[("message", "message"), ("code", "code")];

    fn read<A: MapAccess<'a>>(
        &mut self,
        field: usize,
        map: &mut A,
        out: &mut Out<'a>,
    ) -> Result<(), A::Error> {
        match field {
            0 => self.message = text(map, out, "message")?,
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

impl<'a> Message<'a> for Event<'a> {
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("timeUnixNano", "time_unix_nano"),
        ("name", "name"),
        ("attributes", "attributes"),
        ("droppedAttributesCount", "dropped_attributes_count"),
    ];

    fn read<A: MapAccess<'a>>(
        &mut self,
        field: usize,
        map: &mut A,
        out: &mut Out<'a>,
    ) -> Result<(), A::Error> {
        match field {
            0 => self.time_unix_nano = map.next_value_seed(integer("timeUnixNano"))?,
            1 => self.name = text(map, out, "name")?,
            2 => self.attributes = attributes(map, out)?,
            _ => {
                self.dropped_attributes_count =
                    map.next_value_seed(integer("droppedAttributesCount"))?
            }
        }
        Ok(())
    }
}

impl<'a> Message<'a> for Link<'a> {
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("traceId", "trace_id"),
        ("spanId", "span_id"),
        ("traceState", "trace_state"),
        ("attributes", "attributes"),
        ("droppedAttributesCount", "dropped_attributes_count"),
        ("flags", "flags"),
    ];

    fn read<A: MapAccess<'a>>(
        &mut self,
        field: usize,
        map: &mut A,
        out: &mut Out<'a>,
    ) -> Result<(), A::Error> {
        match field {
            0 => self.trace_id = hex_id(map, out, "traceId")?,
            1 => self.span_id = hex_id(map, out, "spanId")?,
            2 => self.trace_state = text(map, out, "traceState")?,
            3 => self.attributes = attributes(map, out)?,
            4 => {
                self.dropped_attributes_count =
                    map.next_value_seed(integer("droppedAttributesCount"))?
            }
            _ => self.flags = map.next_value_seed(integer("flags"))?,
        }
        Ok(())
    }
}

/// `KeyValue`, as the view of an attribute.
impl<'a> Message<'a> for Attribute<'a> {
    const FIELDS: &'static [(&'static str, &'static str)] = &[("key", "key"), ("value", "value")];

    fn read<A: MapAccess<'a>>(
        &mut self,
        field: usize,
        map: &mut A,
        out: &mut Out<'a>,
    ) -> Result<(), A::Error> {
        match field {
            0 => self.key = text(map, out, "key")?,
            _ => {
                let value = map.next_value_seed(Object::<Candidates>::new("value", out))?;
                self.value = value.map_or(Value::Absent, |value| value.into_view(out.arena));
            }
        }
        Ok(())
    }
}

/// A `KeyValue` in a nested list, owned as the whole nested value is.
impl<'a> Message<'a> for KeyValue {
    const FIELDS: &'static [(&'static str, &'static str)] = &[("key", "key"), ("value", "value")];

    fn read<A: MapAccess<'a>>(
        &mut self,
        field: usize,
        map: &mut A,
        out: &mut Out<'a>,
    ) -> Result<(), A::Error> {
        match field {
            0 => self.key = text(map, out, "key")?.to_string(),
            _ => {
                let value = map.next_value_seed(Object::<Candidates>::new("value", out))?;
                self.value = value.map(|value| value.into_any_value(out.arena));
            }
        }
        Ok(())
    }
}

/// The values an `AnyValue` object gives (`null` ones as absent); the first of them in
/// this order is its value.
#[derive(Default)]
struct Candidates<'a> {
    string: Option<&'a str>,
    bool: Option<bool>,
    int: Option<i64>,
    double: Option<f64>,
    bytes: Option<Vec<u8>>,
    array: Option<ArrayValue>,
    kvlist: Option<KeyValueList>,
}

impl<'a> Message<'a> for Candidates<'a> {
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("stringValue", "string_value"),
        ("boolValue", "bool_value"),
        ("intValue", "int_value"),
        ("doubleValue", "double_value"),
        ("bytesValue", "bytes_value"),
        ("arrayValue", "array_value"),
        ("kvlistValue", "kvlist_value"),
    ];

    fn read<A: MapAccess<'a>>(
        &mut self,
        field: usize,
        map: &mut A,
        out: &mut Out<'a>,
    ) -> Result<(), A::Error> {
        let text = |name, what| Text {
            name,
            what,
            arena: out.arena,
        };
        match field {
            0 => self.string = map.next_value_seed(text("stringValue", "a string"))?,
            1 => self.bool = map.next_value_seed(Bool)?,
            2 => self.int = map.next_value_seed(Nullable(integer::<i64>("intValue")))?,
            3 => self.double = map.next_value_seed(Double)?,
            4 => {
                let text = map.next_value_seed(text("bytesValue", "a base64 string"))?;
                self.bytes = text
                    .map(|text| {
                        base64::engine::general_purpose::STANDARD
                            .decode(text)
                            .map_err(|e| de::Error::custom(format!("bytesValue: {e}")))
                    })
                    .transpose()?;
            }
            5 => self.array = map.next_value_seed(Object::<ArrayValue>::new("arrayValue", out))?,
            _ => {
                self.kvlist =
                    map.next_value_seed(Object::<KeyValueList>::new("kvlistValue", out))?
            }
        }
        Ok(())
    }
}

impl<'a> Candidates<'a> {
    fn into_view(self, arena: &'a Bump) -> Value<'a> {
        use any_value::Value as V;
        if let Some(text) = self.string {
            Value::Str(text)
        } else if let Some(value) = self.bool {
            Value::Bool(value)
        } else if let Some(value) = self.int {
            Value::Int(value)
        } else if let Some(value) = self.double {
            Value::Double(value)
        } else if let Some(bytes) = self.bytes {
            Value::Bytes(arena.alloc_slice_copy(&bytes))
        } else if let Some(array) = self.array {
            Value::Nested(Cow::Owned(V::ArrayValue(array)))
        } else if let Some(list) = self.kvlist {
            Value::Nested(Cow::Owned(V::KvlistValue(list)))
        } else {
            Value::Absent
        }
    }

    /// The value of a nested array or list, owned as the whole nested value is.
    fn into_any_value(self, arena: &'a Bump) -> AnyValue {
        let value = self.into_view(arena).to_any_value();
        AnyValue {
            value: value.and_then(|value| value.value),
        }
    }
}

impl<'a> Message<'a> for ArrayValue {
    const FIELDS: &'static [(&'static str, &'static str)] = &[("values", "values")];

    fn read<A: MapAccess<'a>>(
        &mut self,
        _: usize,
        map: &mut A,
        out: &mut Out<'a>,
    ) -> Result<(), A::Error> {
        let mut values = Vec::new();
        list(map, out, "values", "value", |out, value: Candidates| {
            let value = value.into_any_value(out.arena);
            out.request.room.push(&mut values, value)
        })?;
        self.values = values;
        Ok(())
    }
}

impl<'a> Message<'a> for KeyValueList {
    const FIELDS: &'static [(&'static str, &'static str)] = &[("values", "values")];

    fn read<A: MapAccess<'a>>(
        &mut self,
        _: usize,
        map: &mut A,
        out: &mut Out<'a>,
    ) -> Result<(), A::Error> {
        let mut values = Vec::new();
        list(
            map,
            out,
            "values",
            "attributes[]",
            |out, value: KeyValue| out.request.room.push(&mut values, value),
        )?;
        self.values = values;
        Ok(())
    }
}
