//! Row-by-row construction of `spans` batches that always match [`spans_schema`].

use std::fmt::Write;
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, Int64Builder, ListArray, MapBuilder, RecordBatch, StringBuilder,
    StructArray, TimestampNanosecondBuilder, UInt32Builder,
};
use arrow::buffer::OffsetBuffer;
use arrow::error::ArrowError;

use crate::schema::{self, AttributeType, spans_schema};

/// One attribute map column and its type letters (see [`AttributeType`]).
#[derive(Debug)]
pub struct AttributesBuilder {
    map: MapBuilder<StringBuilder, StringBuilder>,
    types: StringBuilder,
    row_types: String,
}

impl AttributesBuilder {
    fn with_capacity(rows: usize) -> Self {
        Self {
            map: MapBuilder::with_capacity(None, StringBuilder::new(), StringBuilder::new(), rows),
            types: StringBuilder::with_capacity(rows, rows * 4),
            row_types: String::new(),
        }
    }

    /// Adds an entry whose value is already text.
    pub fn push(&mut self, key: &str, value: &str, kind: AttributeType) {
        self.map.keys().append_value(key);
        self.map.values().append_value(value);
        self.row_types.push(kind.letter());
    }

    /// Adds an entry whose text is written by `write` (no intermediate `String`).
    pub fn push_with(
        &mut self,
        key: &str,
        kind: AttributeType,
        write: impl FnOnce(&mut dyn Write) -> std::fmt::Result,
    ) {
        self.map.keys().append_value(key);
        let values = self.map.values();
        // Writing into a StringBuilder cannot fail; the value ends with append_value("").
        let _ = write(values);
        values.append_value("");
        self.row_types.push(kind.letter());
    }

    /// Adds an entry with no value (an empty OTLP AnyValue).
    pub fn push_empty(&mut self, key: &str) {
        self.map.keys().append_value(key);
        self.map.values().append_null();
        self.row_types.push(AttributeType::Empty.letter());
    }

    /// Entries pushed for the current row so far.
    pub fn row_len(&self) -> usize {
        self.row_types.len()
    }

    fn finish_row(&mut self) -> Result<(), ArrowError> {
        self.map.append(true)?;
        self.types.append_value(&self.row_types);
        self.row_types.clear();
        Ok(())
    }

    fn finish(mut self) -> (ArrayRef, ArrayRef) {
        (Arc::new(self.map.finish()), Arc::new(self.types.finish()))
    }
}

/// The `events` list: push each event's attributes, then [`EventsBuilder::append`] it.
#[derive(Debug)]
pub struct EventsBuilder {
    time: TimestampNanosecondBuilder,
    name: StringBuilder,
    attributes: AttributesBuilder,
    dropped: UInt32Builder,
    offsets: Vec<i32>,
}

impl EventsBuilder {
    fn with_capacity(spans: usize) -> Self {
        let mut offsets = Vec::with_capacity(spans + 1);
        offsets.push(0);
        Self {
            time: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            name: StringBuilder::new(),
            attributes: AttributesBuilder::with_capacity(0),
            dropped: UInt32Builder::new(),
            offsets,
        }
    }

    /// Attributes of the event being built.
    pub fn attributes(&mut self) -> &mut AttributesBuilder {
        &mut self.attributes
    }

    pub fn append(
        &mut self,
        time_ns: i64,
        name: &str,
        dropped_attributes: u32,
    ) -> Result<(), ArrowError> {
        self.time.append_value(time_ns);
        self.name.append_value(name);
        self.dropped.append_value(dropped_attributes);
        self.attributes.finish_row()
    }

    fn finish_span(&mut self) {
        self.offsets.push(self.name.len() as i32);
    }

    fn finish(mut self) -> Result<ArrayRef, ArrowError> {
        let (attributes, types) = self.attributes.finish();
        let items = StructArray::try_new(
            schema::event_fields(),
            vec![
                Arc::new(self.time.finish()),
                Arc::new(self.name.finish()),
                attributes,
                types,
                Arc::new(self.dropped.finish()),
            ],
            None,
        )?;
        Ok(Arc::new(ListArray::try_new(
            schema::list_item(schema::event_fields()),
            OffsetBuffer::new(self.offsets.into()),
            Arc::new(items),
            None,
        )?))
    }
}

/// The `links` list: push each link's attributes, then [`LinksBuilder::append`] it.
#[derive(Debug)]
pub struct LinksBuilder {
    trace_id: StringBuilder,
    span_id: StringBuilder,
    trace_state: StringBuilder,
    flags: UInt32Builder,
    attributes: AttributesBuilder,
    dropped: UInt32Builder,
    offsets: Vec<i32>,
}

impl LinksBuilder {
    fn with_capacity(spans: usize) -> Self {
        let mut offsets = Vec::with_capacity(spans + 1);
        offsets.push(0);
        Self {
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            trace_state: StringBuilder::new(),
            flags: UInt32Builder::new(),
            attributes: AttributesBuilder::with_capacity(0),
            dropped: UInt32Builder::new(),
            offsets,
        }
    }

    /// Attributes of the link being built.
    pub fn attributes(&mut self) -> &mut AttributesBuilder {
        &mut self.attributes
    }

    pub fn append(
        &mut self,
        trace_id: &str,
        span_id: &str,
        trace_state: Option<&str>,
        flags: u32,
        dropped_attributes: u32,
    ) -> Result<(), ArrowError> {
        self.trace_id.append_value(trace_id);
        self.span_id.append_value(span_id);
        self.trace_state.append_option(trace_state);
        self.flags.append_value(flags);
        self.dropped.append_value(dropped_attributes);
        self.attributes.finish_row()
    }

    fn finish_span(&mut self) {
        self.offsets.push(self.trace_id.len() as i32);
    }

    fn finish(mut self) -> Result<ArrayRef, ArrowError> {
        let (attributes, types) = self.attributes.finish();
        let items = StructArray::try_new(
            schema::link_fields(),
            vec![
                Arc::new(self.trace_id.finish()),
                Arc::new(self.span_id.finish()),
                Arc::new(self.trace_state.finish()),
                Arc::new(self.flags.finish()),
                attributes,
                types,
                Arc::new(self.dropped.finish()),
            ],
            None,
        )?;
        Ok(Arc::new(ListArray::try_new(
            schema::list_item(schema::link_fields()),
            OffsetBuffer::new(self.offsets.into()),
            Arc::new(items),
            None,
        )?))
    }
}

/// The scalar columns of one span. Times are nanoseconds since the epoch, ids lowercase hex.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpanRow<'a> {
    pub trace_id: &'a str,
    pub span_id: &'a str,
    pub parent_span_id: Option<&'a str>,
    pub trace_state: Option<&'a str>,
    pub flags: u32,
    pub service_name: &'a str,
    pub service_instance_id: Option<&'a str>,
    pub service_version: Option<&'a str>,
    pub span_name: &'a str,
    pub span_kind: &'a str,
    pub start_ns: i64,
    pub end_ns: i64,
    pub status_code: &'a str,
    pub status_message: Option<&'a str>,
    pub dropped_attributes_count: u32,
    pub dropped_events_count: u32,
    pub dropped_links_count: u32,
    pub resource_dropped_attributes_count: u32,
    pub scope_name: Option<&'a str>,
    pub scope_version: Option<&'a str>,
}

/// Builds a `spans` batch one span at a time: fill the nested parts of a span (attributes,
/// events, links, resource and scope attributes), then [`SpansBuilder::append`] its row.
#[derive(Debug)]
pub struct SpansBuilder {
    trace_id: StringBuilder,
    span_id: StringBuilder,
    parent_span_id: StringBuilder,
    trace_state: StringBuilder,
    flags: UInt32Builder,
    service_name: StringBuilder,
    service_instance_id: StringBuilder,
    service_version: StringBuilder,
    span_name: StringBuilder,
    span_kind: StringBuilder,
    start_time: TimestampNanosecondBuilder,
    end_time: TimestampNanosecondBuilder,
    duration_ns: Int64Builder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    attributes: AttributesBuilder,
    dropped_attributes_count: UInt32Builder,
    events: EventsBuilder,
    dropped_events_count: UInt32Builder,
    links: LinksBuilder,
    dropped_links_count: UInt32Builder,
    resource_attributes: AttributesBuilder,
    resource_dropped_attributes_count: UInt32Builder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    scope_attributes: AttributesBuilder,
    rows: usize,
}

impl SpansBuilder {
    pub fn with_capacity(spans: usize) -> Self {
        let text =
            |bytes_per_row: usize| StringBuilder::with_capacity(spans, spans * bytes_per_row);
        let count = || UInt32Builder::with_capacity(spans);
        let time = || TimestampNanosecondBuilder::with_capacity(spans).with_timezone("UTC");
        Self {
            trace_id: text(32),
            span_id: text(16),
            parent_span_id: text(16),
            trace_state: text(0),
            flags: count(),
            service_name: text(16),
            service_instance_id: text(16),
            service_version: text(8),
            span_name: text(24),
            span_kind: text(6),
            start_time: time(),
            end_time: time(),
            duration_ns: Int64Builder::with_capacity(spans),
            status_code: text(5),
            status_message: text(0),
            attributes: AttributesBuilder::with_capacity(spans),
            dropped_attributes_count: count(),
            events: EventsBuilder::with_capacity(spans),
            dropped_events_count: count(),
            links: LinksBuilder::with_capacity(spans),
            dropped_links_count: count(),
            resource_attributes: AttributesBuilder::with_capacity(spans),
            resource_dropped_attributes_count: count(),
            scope_name: text(16),
            scope_version: text(4),
            scope_attributes: AttributesBuilder::with_capacity(spans),
            rows: 0,
        }
    }

    pub fn attributes(&mut self) -> &mut AttributesBuilder {
        &mut self.attributes
    }

    pub fn resource_attributes(&mut self) -> &mut AttributesBuilder {
        &mut self.resource_attributes
    }

    pub fn scope_attributes(&mut self) -> &mut AttributesBuilder {
        &mut self.scope_attributes
    }

    pub fn events(&mut self) -> &mut EventsBuilder {
        &mut self.events
    }

    pub fn links(&mut self) -> &mut LinksBuilder {
        &mut self.links
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Ends the current span: its scalar columns from `row`, its nested parts as pushed.
    pub fn append(&mut self, row: &SpanRow<'_>) -> Result<(), ArrowError> {
        self.trace_id.append_value(row.trace_id);
        self.span_id.append_value(row.span_id);
        self.parent_span_id.append_option(row.parent_span_id);
        self.trace_state.append_option(row.trace_state);
        self.flags.append_value(row.flags);
        self.service_name.append_value(row.service_name);
        self.service_instance_id
            .append_option(row.service_instance_id);
        self.service_version.append_option(row.service_version);
        self.span_name.append_value(row.span_name);
        self.span_kind.append_value(row.span_kind);
        self.start_time.append_value(row.start_ns);
        self.end_time.append_value(row.end_ns);
        self.duration_ns
            .append_value(row.end_ns.saturating_sub(row.start_ns));
        self.status_code.append_value(row.status_code);
        self.status_message.append_option(row.status_message);
        self.attributes.finish_row()?;
        self.dropped_attributes_count
            .append_value(row.dropped_attributes_count);
        self.events.finish_span();
        self.dropped_events_count
            .append_value(row.dropped_events_count);
        self.links.finish_span();
        self.dropped_links_count
            .append_value(row.dropped_links_count);
        self.resource_attributes.finish_row()?;
        self.resource_dropped_attributes_count
            .append_value(row.resource_dropped_attributes_count);
        self.scope_name.append_option(row.scope_name);
        self.scope_version.append_option(row.scope_version);
        self.scope_attributes.finish_row()?;
        self.rows += 1;
        Ok(())
    }

    pub fn finish(mut self) -> Result<RecordBatch, ArrowError> {
        let (attributes, attribute_types) = self.attributes.finish();
        let (resource_attributes, resource_types) = self.resource_attributes.finish();
        let (scope_attributes, scope_types) = self.scope_attributes.finish();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.flags.finish()),
            Arc::new(self.service_name.finish()),
            Arc::new(self.service_instance_id.finish()),
            Arc::new(self.service_version.finish()),
            Arc::new(self.span_name.finish()),
            Arc::new(self.span_kind.finish()),
            Arc::new(self.start_time.finish()),
            Arc::new(self.end_time.finish()),
            Arc::new(self.duration_ns.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
            attributes,
            attribute_types,
            Arc::new(self.dropped_attributes_count.finish()),
            self.events.finish()?,
            Arc::new(self.dropped_events_count.finish()),
            self.links.finish()?,
            Arc::new(self.dropped_links_count.finish()),
            resource_attributes,
            resource_types,
            Arc::new(self.resource_dropped_attributes_count.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            scope_attributes,
            scope_types,
        ];
        RecordBatch::try_new(spans_schema(), columns)
    }
}
