//! The `spans` and `calls` tables: every column name, and the Arrow schemas built from them.
//!
//! Writers (OTLP conversion) and readers (segments, queries) both use these constants, so a
//! column is renamed in one place. `SCHEMA_VERSION` is written into every segment.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Bumped whenever a column is added, removed or changes type.
pub const SCHEMA_VERSION: u32 = 1;

pub const TRACE_ID: &str = "trace_id";
pub const SPAN_ID: &str = "span_id";
pub const PARENT_SPAN_ID: &str = "parent_span_id";
pub const TRACE_STATE: &str = "trace_state";
pub const FLAGS: &str = "flags";
pub const SERVICE_NAME: &str = "service_name";
pub const SERVICE_INSTANCE_ID: &str = "service_instance_id";
pub const SERVICE_VERSION: &str = "service_version";
pub const SPAN_NAME: &str = "span_name";
pub const SPAN_KIND: &str = "span_kind";
pub const START_TIME: &str = "start_time";
pub const END_TIME: &str = "end_time";
pub const DURATION_NS: &str = "duration_ns";
pub const STATUS_CODE: &str = "status_code";
pub const STATUS_MESSAGE: &str = "status_message";
pub const ATTRIBUTES: &str = "attributes";
pub const ATTRIBUTE_TYPES: &str = "attribute_types";
pub const DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
pub const EVENTS: &str = "events";
pub const DROPPED_EVENTS_COUNT: &str = "dropped_events_count";
pub const LINKS: &str = "links";
pub const DROPPED_LINKS_COUNT: &str = "dropped_links_count";
pub const RESOURCE_ATTRIBUTES: &str = "resource_attributes";
pub const RESOURCE_ATTRIBUTE_TYPES: &str = "resource_attribute_types";
pub const RESOURCE_DROPPED_ATTRIBUTES_COUNT: &str = "resource_dropped_attributes_count";
pub const SCOPE_NAME: &str = "scope_name";
pub const SCOPE_VERSION: &str = "scope_version";
pub const SCOPE_ATTRIBUTES: &str = "scope_attributes";
pub const SCOPE_ATTRIBUTE_TYPES: &str = "scope_attribute_types";

/// Fields of one element of `events`.
pub const EVENT_TIME: &str = "time";
pub const EVENT_NAME: &str = "name";

/// `service.name` of spans whose resource has none, as the OpenTelemetry SDKs default it.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

pub const SPAN_KINDS: [&str; 6] = [
    "UNSPECIFIED",
    "INTERNAL",
    "SERVER",
    "CLIENT",
    "PRODUCER",
    "CONSUMER",
];
pub const STATUS_CODES: [&str; 3] = ["UNSET", "OK", "ERROR"];

/// Attribute values are stored as text so that `attributes['http.route']` reads naturally in
/// SQL. The OTLP type of each entry is kept beside the map as one letter per entry, in order,
/// so nothing is lost: see [`AttributeType`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeType {
    /// `s`: the string itself.
    String,
    /// `b`: `true` or `false`.
    Bool,
    /// `i`: decimal integer.
    Int,
    /// `d`: shortest text that parses back to the same double (`NaN`, `inf`, `-inf` included).
    Double,
    /// `y`: standard base64.
    Bytes,
    /// `a`: JSON array.
    Array,
    /// `m`: JSON object (OTLP kvlist).
    KeyValueList,
    /// `n`: an AnyValue with no value set; the map value is NULL.
    Empty,
}

impl AttributeType {
    pub fn letter(self) -> char {
        match self {
            Self::String => 's',
            Self::Bool => 'b',
            Self::Int => 'i',
            Self::Double => 'd',
            Self::Bytes => 'y',
            Self::Array => 'a',
            Self::KeyValueList => 'm',
            Self::Empty => 'n',
        }
    }

    pub fn from_letter(letter: char) -> Option<Self> {
        Some(match letter {
            's' => Self::String,
            'b' => Self::Bool,
            'i' => Self::Int,
            'd' => Self::Double,
            'y' => Self::Bytes,
            'a' => Self::Array,
            'm' => Self::KeyValueList,
            'n' => Self::Empty,
            _ => return None,
        })
    }
}

/// `Map<Utf8, Utf8>` with the field names arrow's `MapBuilder` uses.
pub fn attributes_type() -> DataType {
    let entries = Fields::from(vec![
        Field::new("keys", DataType::Utf8, false),
        Field::new("values", DataType::Utf8, true),
    ]);
    DataType::Map(
        Arc::new(Field::new("entries", DataType::Struct(entries), false)),
        false,
    )
}

pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

pub fn event_fields() -> Fields {
    Fields::from(vec![
        Field::new(EVENT_TIME, timestamp_type(), false),
        Field::new(EVENT_NAME, DataType::Utf8, false),
        Field::new(ATTRIBUTES, attributes_type(), false),
        Field::new(ATTRIBUTE_TYPES, DataType::Utf8, false),
        Field::new(DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
    ])
}

pub fn link_fields() -> Fields {
    Fields::from(vec![
        Field::new(TRACE_ID, DataType::Utf8, false),
        Field::new(SPAN_ID, DataType::Utf8, false),
        Field::new(TRACE_STATE, DataType::Utf8, true),
        Field::new(FLAGS, DataType::UInt32, false),
        Field::new(ATTRIBUTES, attributes_type(), false),
        Field::new(ATTRIBUTE_TYPES, DataType::Utf8, false),
        Field::new(DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
    ])
}

/// The item field of the `events` and `links` lists.
pub fn list_item(fields: Fields) -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Struct(fields), false))
}

static SPANS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let count = |name: &str| Field::new(name, DataType::UInt32, false);
    let map = |name: &str| Field::new(name, attributes_type(), false);
    Arc::new(Schema::new(vec![
        text(TRACE_ID, false),
        text(SPAN_ID, false),
        text(PARENT_SPAN_ID, true),
        text(TRACE_STATE, true),
        count(FLAGS),
        text(SERVICE_NAME, false),
        text(SERVICE_INSTANCE_ID, true),
        text(SERVICE_VERSION, true),
        text(SPAN_NAME, false),
        text(SPAN_KIND, false),
        Field::new(START_TIME, timestamp_type(), false),
        Field::new(END_TIME, timestamp_type(), false),
        Field::new(DURATION_NS, DataType::Int64, false),
        text(STATUS_CODE, false),
        text(STATUS_MESSAGE, true),
        map(ATTRIBUTES),
        text(ATTRIBUTE_TYPES, false),
        count(DROPPED_ATTRIBUTES_COUNT),
        Field::new(EVENTS, DataType::List(list_item(event_fields())), false),
        count(DROPPED_EVENTS_COUNT),
        Field::new(LINKS, DataType::List(list_item(link_fields())), false),
        count(DROPPED_LINKS_COUNT),
        map(RESOURCE_ATTRIBUTES),
        text(RESOURCE_ATTRIBUTE_TYPES, false),
        count(RESOURCE_DROPPED_ATTRIBUTES_COUNT),
        text(SCOPE_NAME, true),
        text(SCOPE_VERSION, true),
        map(SCOPE_ATTRIBUTES),
        text(SCOPE_ATTRIBUTE_TYPES, false),
    ]))
});

/// The Arrow schema of the `spans` table.
pub fn spans_schema() -> SchemaRef {
    SPANS_SCHEMA.clone()
}

pub const SPANS_TABLE: &str = "spans";
pub const CALLS_TABLE: &str = "calls";

/// Columns of the `calls` table that `spans` does not already name.
pub const CLIENT: &str = "client";
pub const SERVER: &str = "server";
pub const CALL_TYPE: &str = "call_type";
pub const SERVER_KIND: &str = "server_kind";
pub const OPERATION: &str = "operation";
pub const DESTINATION: &str = "destination";
pub const CLIENT_INSTANCE: &str = "client_instance";
pub const SERVER_INSTANCE: &str = "server_instance";
pub const API_VERSION: &str = "api_version";
pub const CLIENT_DURATION_NS: &str = "client_duration_ns";
pub const SERVER_DURATION_NS: &str = "server_duration_ns";
pub const QUEUE_NS: &str = "queue_ns";
pub const FAILED: &str = "failed";
pub const STATUS: &str = "status";
pub const RETRY: &str = "retry";
pub const TIMEOUT: &str = "timeout";
pub const BREAKER_STATE: &str = "breaker_state";
pub const CLIENT_SPAN_ID: &str = "client_span_id";
pub const SERVER_SPAN_ID: &str = "server_span_id";
pub const BREAKER_NAME: &str = "breaker_name";

/// `call_type`: a request and its answer, or a message through a broker.
pub const CALL_TYPES: [&str; 2] = ["sync", "async"];
/// `server_kind`, and the kinds of graph nodes.
pub const NODE_KINDS: [&str; 5] = ["service", "database", "messaging", "external", "user"];
/// The client of calls that nobody instrumented made: a root SERVER or CONSUMER span.
pub const USER_NODE: &str = "user";

static CALLS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let nanos = |name: &str| Field::new(name, DataType::Int64, true);
    let flag = |name: &str| Field::new(name, DataType::Boolean, false);
    Arc::new(Schema::new(vec![
        Field::new(START_TIME, timestamp_type(), false),
        text(TRACE_ID, false),
        text(CLIENT, false),
        text(SERVER, false),
        text(CALL_TYPE, false),
        text(SERVER_KIND, false),
        text(OPERATION, true),
        text(DESTINATION, true),
        text(CLIENT_INSTANCE, true),
        text(SERVER_INSTANCE, true),
        text(API_VERSION, true),
        nanos(CLIENT_DURATION_NS),
        nanos(SERVER_DURATION_NS),
        nanos(QUEUE_NS),
        flag(FAILED),
        text(STATUS, true),
        flag(RETRY),
        flag(TIMEOUT),
        text(BREAKER_STATE, true),
        text(CLIENT_SPAN_ID, true),
        text(SERVER_SPAN_ID, true),
        // Last, as it came last: segments written before it read it as NULL.
        text(BREAKER_NAME, true),
    ]))
});

/// The Arrow schema of the `calls` table: one row per call between two nodes. The client
/// side is NULL for calls from `user`, the server side for calls to nodes that send no spans.
pub fn calls_schema() -> SchemaRef {
    CALLS_SCHEMA.clone()
}
