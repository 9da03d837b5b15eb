//! Storage of callwatch: the `spans` schema, the write-ahead log, hot in-memory batches and
//! Parquet segments behind `object_store`, with compaction and retention.
//!
//! [`Store::append`] acknowledges a batch only once it is in the WAL; from then on it is in
//! every [`Store::snapshot`], first as a hot batch, later in a segment, never in both.

mod builder;
mod error;
mod metrics;
mod records;
pub mod schema;
mod segments;
mod store;
mod wal;

pub use builder::{AttributesBuilder, EventsBuilder, LinksBuilder, SpanRow, SpansBuilder};
pub use error::{Result, StoreError};
pub use metrics::{Counter, Histogram, LATENCY_BUCKETS, StoreGauges, StoreMetrics, write_metric};
pub use records::{Attribute, Event, Link, SpanRecord, span_records};
pub use segments::SegmentMeta;
pub use store::{FlushReport, FsyncPolicy, Snapshot, Store, StoreConfig};
