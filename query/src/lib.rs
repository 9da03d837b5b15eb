//! Read side of callwatch: a DataFusion session whose `spans` and `calls` tables are the
//! store's hot batches and Parquet segments, read-only and bounded per query, over HTTP (see
//! `ui`) and the Postgres wire; and the dependency graph with its statistics and health. Read
//! requests run on a runtime of their own, admitted and bounded (see [`Reads`]).

pub mod breaker;
pub mod breakers;
mod cluster;
mod cluster_graph;
mod engine;
mod error;
pub mod graph;
mod guard;
pub mod pieces;
mod postgres;
mod reads;
pub mod rollup;
pub mod stats;
mod table;
mod watchdog;

use arrow::record_batch::RecordBatch;
use callwatch_storage::{Result, SpanRecord, Store, span_records};

pub use cluster::Cluster;
pub use engine::{QueryEngine, QueryLimits, QueryOutput};
pub use error::QueryError;
pub use guard::reads_table;
pub use postgres::{PasswordOf, PgAuth, serve_postgres};
pub use reads::{Priority, ReadSettings, Reads};

/// All span batches of the store: hot batches and segments of the same snapshot, so no span
/// is missed or counted twice while a flush runs.
pub async fn all_span_batches(store: &Store) -> Result<Vec<RecordBatch>> {
    let snapshot = store.snapshot();
    let mut batches = snapshot.hot;
    for segment in &snapshot.segments {
        batches.extend(store.read_segment(segment).await?);
    }
    Ok(batches)
}

/// All stored spans as records.
pub async fn all_spans(store: &Store) -> Result<Vec<SpanRecord>> {
    let mut spans = Vec::new();
    for batch in all_span_batches(store).await? {
        spans.extend(span_records(&batch)?);
    }
    Ok(spans)
}
