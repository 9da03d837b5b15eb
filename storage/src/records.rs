//! Stored spans read back as plain Rust values, one struct per span.

use arrow::array::{
    Array, AsArray, ListArray, MapArray, RecordBatch, StringArray, StructArray,
    TimestampNanosecondArray, UInt32Array,
};
use arrow::datatypes::{Int64Type, TimestampNanosecondType, UInt32Type};

use crate::error::{Result, StoreError};
use crate::schema::{self, AttributeType};

/// One attribute as stored: its OTLP type and its text (`None` for an empty value).
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    pub key: String,
    pub kind: AttributeType,
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time_ns: i64,
    pub name: String,
    pub attributes: Vec<Attribute>,
    pub dropped_attributes_count: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub trace_id: String,
    pub span_id: String,
    pub trace_state: Option<String>,
    pub flags: u32,
    pub attributes: Vec<Attribute>,
    pub dropped_attributes_count: u32,
}

/// A row of the `spans` table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanRecord {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub trace_state: Option<String>,
    pub flags: u32,
    pub service_name: String,
    pub service_instance_id: Option<String>,
    pub service_version: Option<String>,
    pub span_name: String,
    pub span_kind: String,
    pub start_ns: i64,
    pub end_ns: i64,
    pub duration_ns: i64,
    pub status_code: String,
    pub status_message: Option<String>,
    pub attributes: Vec<Attribute>,
    pub dropped_attributes_count: u32,
    pub events: Vec<Event>,
    pub dropped_events_count: u32,
    pub links: Vec<Link>,
    pub dropped_links_count: u32,
    pub resource_attributes: Vec<Attribute>,
    pub resource_dropped_attributes_count: u32,
    pub scope_name: Option<String>,
    pub scope_version: Option<String>,
    pub scope_attributes: Vec<Attribute>,
}

fn missing(name: &str) -> StoreError {
    StoreError::Schema(format!("column {name} is missing or has the wrong type"))
}

fn text<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| missing(name))
}

fn count<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a UInt32Array> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<UInt32Type>())
        .ok_or_else(|| missing(name))
}

fn time<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a TimestampNanosecondArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
        .ok_or_else(|| missing(name))
}

fn opt(array: &StringArray, row: usize) -> Option<String> {
    array.is_valid(row).then(|| array.value(row).to_string())
}

fn attributes(map: &MapArray, types: &StringArray, row: usize) -> Result<Vec<Attribute>> {
    let entries = map.value(row);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_string::<i32>();
    let letters: Vec<char> = types.value(row).chars().collect();
    if letters.len() != keys.len() {
        return Err(StoreError::Corrupt(format!(
            "{} attribute types for {} attributes",
            letters.len(),
            keys.len()
        )));
    }
    (0..keys.len())
        .map(|i| {
            let kind = AttributeType::from_letter(letters[i])
                .ok_or_else(|| StoreError::Corrupt(format!("attribute type {:?}", letters[i])))?;
            Ok(Attribute {
                key: keys.value(i).to_string(),
                kind,
                value: opt(values, i),
            })
        })
        .collect()
}

fn map_column<'a>(array: &'a dyn Array, name: &str) -> Result<&'a MapArray> {
    array.as_map_opt().ok_or_else(|| missing(name))
}

fn struct_field<'a>(items: &'a StructArray, name: &str) -> Result<&'a dyn Array> {
    items
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| missing(name))
}

fn events(list: &ListArray, row: usize) -> Result<Vec<Event>> {
    let items = list.value(row);
    let items = items.as_struct();
    let times = struct_field(items, schema::EVENT_TIME)?.as_primitive::<TimestampNanosecondType>();
    let names = struct_field(items, schema::EVENT_NAME)?.as_string::<i32>();
    let maps = map_column(struct_field(items, schema::ATTRIBUTES)?, schema::ATTRIBUTES)?;
    let types = struct_field(items, schema::ATTRIBUTE_TYPES)?.as_string::<i32>();
    let dropped =
        struct_field(items, schema::DROPPED_ATTRIBUTES_COUNT)?.as_primitive::<UInt32Type>();
    (0..items.len())
        .map(|i| {
            Ok(Event {
                time_ns: times.value(i),
                name: names.value(i).to_string(),
                attributes: attributes(maps, types, i)?,
                dropped_attributes_count: dropped.value(i),
            })
        })
        .collect()
}

fn links(list: &ListArray, row: usize) -> Result<Vec<Link>> {
    let items = list.value(row);
    let items = items.as_struct();
    let trace_ids = struct_field(items, schema::TRACE_ID)?.as_string::<i32>();
    let span_ids = struct_field(items, schema::SPAN_ID)?.as_string::<i32>();
    let states = struct_field(items, schema::TRACE_STATE)?.as_string::<i32>();
    let flags = struct_field(items, schema::FLAGS)?.as_primitive::<UInt32Type>();
    let maps = map_column(struct_field(items, schema::ATTRIBUTES)?, schema::ATTRIBUTES)?;
    let types = struct_field(items, schema::ATTRIBUTE_TYPES)?.as_string::<i32>();
    let dropped =
        struct_field(items, schema::DROPPED_ATTRIBUTES_COUNT)?.as_primitive::<UInt32Type>();
    (0..items.len())
        .map(|i| {
            Ok(Link {
                trace_id: trace_ids.value(i).to_string(),
                span_id: span_ids.value(i).to_string(),
                trace_state: opt(states, i),
                flags: flags.value(i),
                attributes: attributes(maps, types, i)?,
                dropped_attributes_count: dropped.value(i),
            })
        })
        .collect()
}

/// Reads every row of a `spans` batch.
pub fn span_records(batch: &RecordBatch) -> Result<Vec<SpanRecord>> {
    use schema::*;
    let map = |name: &str| -> Result<&MapArray> {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_map_opt())
            .ok_or_else(|| missing(name))
    };
    let list = |name: &str| -> Result<&ListArray> {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_list_opt::<i32>())
            .ok_or_else(|| missing(name))
    };
    let durations = batch
        .column_by_name(DURATION_NS)
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .ok_or_else(|| missing(DURATION_NS))?;
    let (trace_id, span_id, parent, state) = (
        text(batch, TRACE_ID)?,
        text(batch, SPAN_ID)?,
        text(batch, PARENT_SPAN_ID)?,
        text(batch, TRACE_STATE)?,
    );
    let (service, instance, version) = (
        text(batch, SERVICE_NAME)?,
        text(batch, SERVICE_INSTANCE_ID)?,
        text(batch, SERVICE_VERSION)?,
    );
    let (name, kind, code, message) = (
        text(batch, SPAN_NAME)?,
        text(batch, SPAN_KIND)?,
        text(batch, STATUS_CODE)?,
        text(batch, STATUS_MESSAGE)?,
    );
    let (starts, ends, flags) = (
        time(batch, START_TIME)?,
        time(batch, END_TIME)?,
        count(batch, FLAGS)?,
    );
    let (attrs, attr_types) = (map(ATTRIBUTES)?, text(batch, ATTRIBUTE_TYPES)?);
    let (res_attrs, res_types) = (
        map(RESOURCE_ATTRIBUTES)?,
        text(batch, RESOURCE_ATTRIBUTE_TYPES)?,
    );
    let (scope_attrs, scope_types) = (map(SCOPE_ATTRIBUTES)?, text(batch, SCOPE_ATTRIBUTE_TYPES)?);
    let (scope_name, scope_version) = (text(batch, SCOPE_NAME)?, text(batch, SCOPE_VERSION)?);
    let (event_list, link_list) = (list(EVENTS)?, list(LINKS)?);
    let dropped = (
        count(batch, DROPPED_ATTRIBUTES_COUNT)?,
        count(batch, DROPPED_EVENTS_COUNT)?,
        count(batch, DROPPED_LINKS_COUNT)?,
        count(batch, RESOURCE_DROPPED_ATTRIBUTES_COUNT)?,
    );
    (0..batch.num_rows())
        .map(|row| {
            Ok(SpanRecord {
                trace_id: trace_id.value(row).to_string(),
                span_id: span_id.value(row).to_string(),
                parent_span_id: opt(parent, row),
                trace_state: opt(state, row),
                flags: flags.value(row),
                service_name: service.value(row).to_string(),
                service_instance_id: opt(instance, row),
                service_version: opt(version, row),
                span_name: name.value(row).to_string(),
                span_kind: kind.value(row).to_string(),
                start_ns: starts.value(row),
                end_ns: ends.value(row),
                duration_ns: durations.value(row),
                status_code: code.value(row).to_string(),
                status_message: opt(message, row),
                attributes: attributes(attrs, attr_types, row)?,
                dropped_attributes_count: dropped.0.value(row),
                events: events(event_list, row)?,
                dropped_events_count: dropped.1.value(row),
                links: links(link_list, row)?,
                dropped_links_count: dropped.2.value(row),
                resource_attributes: attributes(res_attrs, res_types, row)?,
                resource_dropped_attributes_count: dropped.3.value(row),
                scope_name: opt(scope_name, row),
                scope_version: opt(scope_version, row),
                scope_attributes: attributes(scope_attrs, scope_types, row)?,
            })
        })
        .collect()
}
