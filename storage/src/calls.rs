//! Rows of the `calls` table as plain Rust values, and the conversions to and from Arrow.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBuilder, Int64Array, Int64Builder, RecordBatch,
    StringArray, StringBuilder, TimestampNanosecondArray, TimestampNanosecondBuilder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{Int64Type, TimestampNanosecondType};

use crate::error::{Result, StoreError};
use crate::schema::{self, calls_schema};

/// `call_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CallType {
    Sync,
    Async,
}

impl CallType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Async => "async",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "sync" => Some(Self::Sync),
            "async" => Some(Self::Async),
            _ => None,
        }
    }
}

/// What a graph node is; `server_kind` of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeKind {
    Service,
    Database,
    Messaging,
    External,
    User,
}

impl NodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Database => "database",
            Self::Messaging => "messaging",
            Self::External => "external",
            Self::User => "user",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        schema::NODE_KINDS
            .iter()
            .position(|k| *k == text)
            .map(|index| {
                [
                    Self::Service,
                    Self::Database,
                    Self::Messaging,
                    Self::External,
                    Self::User,
                ][index]
            })
    }
}

/// One row of `calls`. Names repeat from call to call, so they are shared, not copied.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRow {
    pub start_ns: i64,
    pub trace_id: u128,
    pub client: Arc<str>,
    pub server: Arc<str>,
    pub call_type: CallType,
    pub server_kind: NodeKind,
    pub operation: Option<Arc<str>>,
    pub destination: Option<Arc<str>>,
    pub client_instance: Option<Arc<str>>,
    pub server_instance: Option<Arc<str>>,
    pub api_version: Option<Arc<str>>,
    pub client_duration_ns: Option<i64>,
    pub server_duration_ns: Option<i64>,
    pub queue_ns: Option<i64>,
    pub failed: bool,
    pub status: Option<Arc<str>>,
    pub retry: bool,
    pub timeout: bool,
    pub breaker_state: Option<Arc<str>>,
    /// The client's name for the breaker (`circuit_breaker.name`).
    pub breaker_name: Option<Arc<str>>,
    pub client_span_id: Option<u64>,
    pub server_span_id: Option<u64>,
}

impl CallRow {
    /// A sync call from `client` to the service `server` at `start_ns`, nothing else known:
    /// the start of a row whose other fields a caller sets.
    pub fn between(start_ns: i64, client: &str, server: &str) -> Self {
        Self {
            start_ns,
            trace_id: 0,
            client: client.into(),
            server: server.into(),
            call_type: CallType::Sync,
            server_kind: NodeKind::Service,
            operation: None,
            destination: None,
            client_instance: None,
            server_instance: None,
            api_version: None,
            client_duration_ns: None,
            server_duration_ns: None,
            queue_ns: None,
            failed: false,
            status: None,
            retry: false,
            timeout: false,
            breaker_state: None,
            breaker_name: None,
            client_span_id: None,
            server_span_id: None,
        }
    }
}

/// The text columns of a row, in the order [`calls_batch`] places them.
fn texts(row: &CallRow) -> [Option<&str>; 12] {
    fn text(value: &Option<Arc<str>>) -> Option<&str> {
        value.as_deref()
    }
    [
        Some(&row.client),
        Some(&row.server),
        Some(row.call_type.as_str()),
        Some(row.server_kind.as_str()),
        text(&row.operation),
        text(&row.destination),
        text(&row.client_instance),
        text(&row.server_instance),
        text(&row.api_version),
        text(&row.status),
        text(&row.breaker_state),
        text(&row.breaker_name),
    ]
}

/// Builds a `calls` batch: in two passes over the rows, one to size the text columns and
/// one to fill every column, as a pass per column would read each row thirty times.
pub fn calls_batch(rows: &[CallRow]) -> RecordBatch {
    let n = rows.len();
    // Sized exactly: a buffer that grows is copied, and its new pages are touched twice.
    let mut bytes = [0usize; 12];
    for row in rows {
        for (total, text) in bytes.iter_mut().zip(texts(row)) {
            *total += text.map_or(0, str::len);
        }
    }
    let mut text = bytes.map(|bytes| StringBuilder::with_capacity(n, bytes));
    let mut nanos: [Int64Builder; 3] = std::array::from_fn(|_| Int64Builder::with_capacity(n));
    let mut flags: [BooleanBuilder; 3] = std::array::from_fn(|_| BooleanBuilder::with_capacity(n));
    let mut starts = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut trace_ids = HexIds::with_capacity(n, 32);
    let mut client_ids = HexIds::with_capacity(n, 16);
    let mut server_ids = HexIds::with_capacity(n, 16);
    for row in rows {
        starts.append_value(row.start_ns);
        for (builder, value) in text.iter_mut().zip(texts(row)) {
            builder.append_option(value);
        }
        for (builder, value) in
            nanos
                .iter_mut()
                .zip([row.client_duration_ns, row.server_duration_ns, row.queue_ns])
        {
            builder.append_option(value);
        }
        for (builder, value) in flags.iter_mut().zip([row.failed, row.retry, row.timeout]) {
            builder.append_value(value);
        }
        trace_ids.append(Some(row.trace_id));
        client_ids.append(row.client_span_id.map(u128::from));
        server_ids.append(row.server_span_id.map(u128::from));
    }
    let [
        client,
        server,
        call_type,
        server_kind,
        operation,
        destination,
        client_instance,
        server_instance,
        api_version,
        status,
        breaker_state,
        breaker_name,
    ] = text.map(|mut builder| Arc::new(builder.finish()) as ArrayRef);
    let [client_duration, server_duration, queue] =
        nanos.map(|mut builder| Arc::new(builder.finish()) as ArrayRef);
    let [failed, retry, timeout] = flags.map(|mut builder| Arc::new(builder.finish()) as ArrayRef);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(starts.finish()),
        Arc::new(trace_ids.finish()),
        client,
        server,
        call_type,
        server_kind,
        operation,
        destination,
        client_instance,
        server_instance,
        api_version,
        client_duration,
        server_duration,
        queue,
        failed,
        status,
        retry,
        timeout,
        breaker_state,
        Arc::new(client_ids.finish()),
        Arc::new(server_ids.finish()),
        breaker_name,
    ];
    RecordBatch::try_new(calls_schema(), columns).expect("columns follow the calls schema")
}

/// A column of fixed-width lowercase hex ids, written into one buffer that is checked as
/// UTF-8 once when finished rather than once per id.
struct HexIds {
    /// Digits per id: the last `width` of an id's 32.
    width: usize,
    digits: Vec<u8>,
    offsets: Vec<i32>,
    valid: Vec<bool>,
}

impl HexIds {
    fn with_capacity(rows: usize, width: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Self {
            width,
            digits: Vec::with_capacity(rows * width),
            offsets,
            valid: Vec::with_capacity(rows),
        }
    }

    fn append(&mut self, id: Option<u128>) {
        if let Some(id) = id {
            self.digits
                .extend_from_slice(&hex_digits(id)[32 - self.width..]);
        }
        self.offsets.push(self.digits.len() as i32);
        self.valid.push(id.is_some());
    }

    fn finish(self) -> StringArray {
        let nulls = NullBuffer::from(self.valid);
        let nulls = (nulls.null_count() > 0).then_some(nulls);
        StringArray::try_new(
            OffsetBuffer::new(self.offsets.into()),
            self.digits.into(),
            nulls,
        )
        .expect("hex digits are ASCII and the offsets grow")
    }
}

/// `value` as 32 lowercase hex digits.
fn hex_digits(value: u128) -> [u8; 32] {
    let mut digits = [0u8; 32];
    write_hex(&value.to_be_bytes(), &mut digits);
    digits
}

/// Writes `bytes` as lowercase hex at the start of `out`, a byte (two digits) at a time: how
/// every id becomes text, the spans' at ingest and the calls'. Stops where `out` ends.
pub fn write_hex(bytes: &[u8], out: &mut [u8]) {
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*byte)]);
    }
}

/// Each byte as two lowercase hex digits.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut table = [[0_u8; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = [DIGITS[byte >> 4], DIGITS[byte & 0xf]];
        byte += 1;
    }
    table
};

/// A trace id in hex, as the spans and calls tables hold it (what `hex_digits` writes).
pub fn parse_trace_id(hex: &str) -> Option<u128> {
    let hex = hex.as_bytes();
    match hex.len().checked_sub(16) {
        None | Some(0) => hex_number(hex).map(u128::from),
        Some(split) => {
            let (high, low) = hex.split_at(split);
            Some(u128::from(hex_number(high)?) << 64 | u128::from(hex_number(low)?))
        }
    }
}

/// A span id in hex, as the tables hold it.
pub fn parse_span_id(hex: &str) -> Option<u64> {
    hex_number(hex.as_bytes())
}

/// Up to 16 hex digits. Each digit is looked up in a table and any that is not one is
/// found once at the end, so the loop has no branch per digit (ids are parsed for every
/// span pairing reads).
fn hex_number(hex: &[u8]) -> Option<u64> {
    if hex.is_empty() || hex.len() > 16 {
        return None;
    }
    let mut value = 0_u64;
    let mut not_digit = 0_u8;
    for &byte in hex {
        let digit = HEX_DIGITS[usize::from(byte)];
        not_digit |= digit;
        value = value << 4 | u64::from(digit & 0x0f);
    }
    (not_digit & 0xf0 == 0).then_some(value)
}

/// Each byte's value as a hex digit, or 0xff when it is none.
const HEX_DIGITS: [u8; 256] = {
    let mut table = [0xff_u8; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = match byte as u8 {
            b @ b'0'..=b'9' => b - b'0',
            b @ b'a'..=b'f' => b - b'a' + 10,
            b @ b'A'..=b'F' => b - b'A' + 10,
            _ => 0xff,
        };
        byte += 1;
    }
    table
};

fn column<'a, T: 'static>(
    batch: &'a RecordBatch,
    name: &str,
    cast: impl Fn(&'a dyn Array) -> Option<&'a T>,
) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| cast(c.as_ref()))
        .ok_or_else(|| {
            StoreError::Schema(format!("column {name} is missing or has the wrong type"))
        })
}

/// Reads `calls` rows back from a batch with any subset of the columns in the order of the
/// schema; absent columns read as empty. Names are shared through `names`.
pub fn call_rows(batch: &RecordBatch, names: &mut Interner) -> Result<Vec<CallRow>> {
    let columns = CallColumns::new(batch)?;
    Ok((0..columns.len())
        .map(|row| columns.row(row, names))
        .collect())
}

/// The columns of a `calls` batch, read a row at a time: readers that fold calls into
/// statistics need no vector of every row.
pub struct CallColumns<'a> {
    rows: usize,
    starts: Option<&'a TimestampNanosecondArray>,
    trace_ids: Option<&'a StringArray>,
    client: Option<&'a StringArray>,
    server: Option<&'a StringArray>,
    call_type: Option<&'a StringArray>,
    server_kind: Option<&'a StringArray>,
    operation: Option<&'a StringArray>,
    destination: Option<&'a StringArray>,
    client_instance: Option<&'a StringArray>,
    server_instance: Option<&'a StringArray>,
    api_version: Option<&'a StringArray>,
    client_duration: Option<&'a Int64Array>,
    server_duration: Option<&'a Int64Array>,
    queue: Option<&'a Int64Array>,
    failed: Option<&'a BooleanArray>,
    status: Option<&'a StringArray>,
    retry: Option<&'a BooleanArray>,
    timeout: Option<&'a BooleanArray>,
    breaker_state: Option<&'a StringArray>,
    breaker_name: Option<&'a StringArray>,
    client_span: Option<&'a StringArray>,
    server_span: Option<&'a StringArray>,
}

impl<'a> CallColumns<'a> {
    /// The columns `batch` has; one of the wrong type is an error.
    pub fn new(batch: &'a RecordBatch) -> Result<Self> {
        fn optional<'a, T: 'static>(
            batch: &'a RecordBatch,
            name: &str,
            cast: impl Fn(&'a dyn Array) -> Option<&'a T>,
        ) -> Result<Option<&'a T>> {
            match batch.column_by_name(name) {
                None => Ok(None),
                Some(_) => column(batch, name, cast).map(Some),
            }
        }
        let strings = |name: &str| optional(batch, name, |a| a.as_string_opt::<i32>());
        let ints = |name: &str| optional(batch, name, |a| a.as_primitive_opt::<Int64Type>());
        let flags = |name: &str| optional(batch, name, |a| a.as_boolean_opt());
        Ok(Self {
            rows: batch.num_rows(),
            starts: optional(batch, schema::START_TIME, |a| {
                a.as_primitive_opt::<TimestampNanosecondType>()
            })?,
            trace_ids: strings(schema::TRACE_ID)?,
            client: strings(schema::CLIENT)?,
            server: strings(schema::SERVER)?,
            call_type: strings(schema::CALL_TYPE)?,
            server_kind: strings(schema::SERVER_KIND)?,
            operation: strings(schema::OPERATION)?,
            destination: strings(schema::DESTINATION)?,
            client_instance: strings(schema::CLIENT_INSTANCE)?,
            server_instance: strings(schema::SERVER_INSTANCE)?,
            api_version: strings(schema::API_VERSION)?,
            client_duration: ints(schema::CLIENT_DURATION_NS)?,
            server_duration: ints(schema::SERVER_DURATION_NS)?,
            queue: ints(schema::QUEUE_NS)?,
            failed: flags(schema::FAILED)?,
            status: strings(schema::STATUS)?,
            retry: flags(schema::RETRY)?,
            timeout: flags(schema::TIMEOUT)?,
            breaker_state: strings(schema::BREAKER_STATE)?,
            breaker_name: strings(schema::BREAKER_NAME)?,
            client_span: strings(schema::CLIENT_SPAN_ID)?,
            server_span: strings(schema::SERVER_SPAN_ID)?,
        })
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Row `row` (below [`CallColumns::len`]) as a call.
    pub fn row(&self, row: usize, names: &mut Interner) -> CallRow {
        let mut name = |array: Option<&StringArray>| -> Option<Arc<str>> {
            let array = array?;
            array.is_valid(row).then(|| names.get(array.value(row)))
        };
        let int = |array: Option<&Int64Array>| -> Option<i64> {
            array.and_then(|a| a.is_valid(row).then(|| a.value(row)))
        };
        let flag = |array: Option<&BooleanArray>| array.is_some_and(|a| a.value(row));
        let client = name(self.client);
        let server = name(self.server);
        let operation = name(self.operation);
        let destination = name(self.destination);
        let client_instance = name(self.client_instance);
        let server_instance = name(self.server_instance);
        let api_version = name(self.api_version);
        let status = name(self.status);
        let breaker_state = name(self.breaker_state);
        let breaker_name = name(self.breaker_name);
        CallRow {
            start_ns: self.starts.map_or(0, |s| s.value(row)),
            trace_id: hex(self.trace_ids, row)
                .and_then(parse_trace_id)
                .unwrap_or(0),
            client: client.unwrap_or_else(|| names.get("")),
            server: server.unwrap_or_else(|| names.get("")),
            call_type: self
                .call_type
                .and_then(|a| CallType::parse(a.value(row)))
                .unwrap_or(CallType::Sync),
            server_kind: self
                .server_kind
                .and_then(|a| NodeKind::parse(a.value(row)))
                .unwrap_or(NodeKind::Service),
            operation,
            destination,
            client_instance,
            server_instance,
            api_version,
            client_duration_ns: int(self.client_duration),
            server_duration_ns: int(self.server_duration),
            queue_ns: int(self.queue),
            failed: flag(self.failed),
            status,
            retry: flag(self.retry),
            timeout: flag(self.timeout),
            breaker_state,
            breaker_name,
            client_span_id: hex(self.client_span, row).and_then(parse_span_id),
            server_span_id: hex(self.server_span, row).and_then(parse_span_id),
        }
    }
}

/// The named columns of `batch` that it has, in the order named: readers that need a few
/// columns decode only those with [`call_rows`].
pub fn project(batch: &RecordBatch, columns: &[&str]) -> Result<RecordBatch> {
    let schema = batch.schema();
    let indices: Vec<usize> = columns
        .iter()
        .filter_map(|name| schema.index_of(name).ok())
        .collect();
    Ok(batch.project(&indices)?)
}

fn hex(array: Option<&StringArray>, row: usize) -> Option<&str> {
    array.and_then(|a| a.is_valid(row).then(|| a.value(row)))
}

/// Hands out one shared copy of each distinct name.
#[derive(Debug, Default)]
pub struct Interner {
    names: foldhash::HashSet<Arc<str>>,
    /// Where names made of parts are put together before they are looked up.
    scratch: String,
}

impl Interner {
    /// The name `parts` make when joined, built without allocating when it is known.
    pub fn get_joined(&mut self, parts: &[&str]) -> Arc<str> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend(parts.iter().copied());
        let shared = self.get(&scratch);
        self.scratch = scratch;
        shared
    }

    pub fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.names.get(name) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(name);
        self.names.insert(shared.clone());
        shared
    }

    pub fn get_opt(&mut self, name: Option<&str>) -> Option<Arc<str>> {
        name.map(|name| self.get(name))
    }

    /// Where a shared name lives: names from one interner with the same text have the same
    /// address, so a map keyed by it finds a name without hashing its text. The map must
    /// hold a clone of each name it keys, so that no address is freed and reused by another
    /// text while it is in use.
    pub fn address(name: &Arc<str>) -> usize {
        Arc::as_ptr(name) as *const u8 as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_from_hex() {
        let id = "0af7651916cd43dd8448eb211c80319c";
        let trace = parse_trace_id;
        let span = parse_span_id;
        assert_eq!(trace(id), u128::from_str_radix(id, 16).ok());
        assert_eq!(trace("00000000000000000000000000000001"), Some(1));
        assert_eq!(trace(&"F".repeat(32)), Some(u128::MAX));
        assert_eq!(span("b7ad6b7169203331"), Some(0xb7ad_6b71_6920_3331));
        // Short ids are numbers too; what is not hex, or too long, is no id.
        assert_eq!(span("1f"), Some(0x1f));
        assert_eq!(trace("1"), Some(1));
        for bad in ["", "0x12", "12g4", "+1", &"1".repeat(17)] {
            assert_eq!(span(bad), None, "{bad:?}");
        }
        for bad in [
            "",
            &"0".repeat(33),
            "0af7651916cd43dd8448eb211c80319z",
            "é0af7651916cd43dd",
        ] {
            assert_eq!(trace(bad), None, "{bad:?}");
        }
        // Every byte: a digit where it is one in base 16, in either case, and no id otherwise.
        for byte in 0..=u8::MAX {
            let expected = (byte as char).to_digit(16).map(|d| 0x10 | u64::from(d));
            assert_eq!(hex_number(&[b'1', byte]), expected, "{byte:#x}");
        }
    }

    #[test]
    fn ids_are_written_as_lowercase_hex_of_fixed_width() {
        let ids = [
            (0, Some(0), None),
            (u128::MAX, None, Some(u64::MAX)),
            (
                0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c,
                Some(0xb7ad_6b71_6920_3331),
                Some(1),
            ),
        ];
        let rows: Vec<CallRow> = ids
            .iter()
            .map(|&(trace_id, client_span_id, server_span_id)| CallRow {
                trace_id,
                client_span_id,
                server_span_id,
                ..CallRow::between(0, "a", "b")
            })
            .collect();
        let batch = calls_batch(&rows);
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_string::<i32>()
                .clone()
        };
        let (traces, clients, servers) = (
            column(schema::TRACE_ID),
            column(schema::CLIENT_SPAN_ID),
            column(schema::SERVER_SPAN_ID),
        );
        let span = |id: Option<u64>| id.map(|id| format!("{id:016x}"));
        for (row, &(trace_id, client_span_id, server_span_id)) in ids.iter().enumerate() {
            assert_eq!(traces.value(row), format!("{trace_id:032x}"));
            assert_eq!(
                clients
                    .is_valid(row)
                    .then(|| clients.value(row).to_string()),
                span(client_span_id)
            );
            assert_eq!(
                servers
                    .is_valid(row)
                    .then(|| servers.value(row).to_string()),
                span(server_span_id)
            );
        }
        assert_eq!(traces.null_count(), 0);
    }

    #[test]
    fn rows_survive_a_batch() {
        let mut names = Interner::default();
        let row = CallRow {
            start_ns: 1_700_000_000_000_000_000,
            trace_id: 0xabc,
            client: names.get("order-service"),
            server: names.get("payment-service"),
            call_type: CallType::Sync,
            server_kind: NodeKind::Service,
            operation: Some(names.get("payments.v1.PaymentService/Charge")),
            destination: None,
            client_instance: Some(names.get("order-service-1")),
            server_instance: None,
            api_version: Some(names.get("v1")),
            client_duration_ns: Some(40_000),
            server_duration_ns: None,
            queue_ns: None,
            failed: true,
            status: Some(names.get("CallNotPermittedException")),
            retry: false,
            timeout: false,
            breaker_state: Some(names.get("open")),
            breaker_name: Some(names.get("payments")),
            client_span_id: Some(7),
            server_span_id: None,
        };
        // Every field set, each to its own value: no two columns can be swapped unseen.
        let full = CallRow {
            destination: Some(names.get("payments-queue")),
            server_instance: Some(names.get("payment-service-2")),
            server_duration_ns: Some(30_000),
            queue_ns: Some(5_000),
            retry: true,
            server_span_id: Some(8),
            ..row.clone()
        };
        let rows = vec![row, full];
        let batch = calls_batch(&rows);
        assert_eq!(batch.schema(), calls_schema());
        assert_eq!(call_rows(&batch, &mut names).unwrap(), rows);
    }
}
