//! Storage of callwatch: the `spans` and `calls` schemas, the write-ahead log, hot in-memory batches and
//! Parquet segments behind `object_store`, with compaction and retention.
//!
//! [`Store::append`] acknowledges a batch only once it is in the WAL; from then on it is in
//! every [`Store::snapshot`], first as a hot batch, later in a segment, never in both.

mod builder;
mod calls;
mod catalog;
mod derive;
mod error;
mod location;
mod metrics;
mod records;
mod resident;
pub mod schema;
mod segments;
mod store;
mod wal;

pub use builder::{AttributesBuilder, EventsBuilder, LinksBuilder, SpanRow, SpansBuilder};
pub use calls::{
    CallColumns, CallRow, CallType, Interner, NodeKind, call_rows, calls_batch, parse_span_id,
    parse_trace_id, project, write_hex,
};
pub use catalog::{Catalog, ConsumerGroups, Known};
pub use derive::{CallDeriver, PendingState};
pub use error::{Result, StoreError};
pub use location::SegmentLocation;
pub use metrics::{
    Counter, Histogram, LATENCY_BUCKETS, StoreGauges, StoreMetrics, escape_label, write_metric,
};
pub use records::{Attribute, Event, Link, SpanRecord, span_records};
pub use segments::{RowKeep, SegmentMeta, Table};
pub use store::{
    CallsUpdate, FlushReport, FsyncPolicy, MOST_REFRESH_INTERVAL, Origin, PublishedCalls, Snapshot,
    Store, StoreConfig, adopt_node,
};
