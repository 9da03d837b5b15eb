//! The `spans` and `calls` tables for DataFusion: the hot batches and committed segments of
//! one store snapshot, so a query sees every acknowledged span (and every call derived from
//! them) exactly once. Segments outside the queried `start_time` range are not opened; inside
//! them, the filters prune row groups and pages (trace ids through their bloom filter and
//! page statistics).

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use callwatch_storage::schema;

use crate::breakers::{BreakerTracker, transitions_schema};
use callwatch_storage::{SegmentMeta, Store, Table};
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;

#[derive(Debug)]
pub struct StoreTable {
    store: Store,
    store_url: ObjectStoreUrl,
    table: Table,
}

impl StoreTable {
    pub fn new(store: Store, store_url: ObjectStoreUrl, table: Table) -> Self {
        Self {
            store,
            store_url,
            table,
        }
    }
}

#[async_trait]
impl TableProvider for StoreTable {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Used to prune, re-checked by DataFusion above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.table.schema();
        let snapshot = self.store.snapshot();
        let window = TimeWindow::from_filters(filters);
        let segments: Vec<&SegmentMeta> = snapshot
            .segments_of(self.table)
            .iter()
            .filter(|s| window.overlaps(s.min_start_ns, s.max_start_ns))
            .collect();

        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        let hot = snapshot.hot_of(self.table);
        if !hot.is_empty() {
            inputs.push(MemorySourceConfig::try_new_exec(
                &[hot.to_vec()],
                schema.clone(),
                projection.cloned(),
            )?);
        }
        if !segments.is_empty() {
            // Footers, page indexes and bloom filters are read once per segment file and
            // then come from the engine's cache: segment files never change.
            let runtime = state.runtime_env();
            let readers = CachedParquetFileReaderFactory::new(
                runtime.object_store(&self.store_url)?,
                runtime.cache_manager.get_file_metadata_cache(),
            );
            let mut source = ParquetSource::new(schema.clone())
                .with_parquet_file_reader_factory(Arc::new(readers))
                .with_enable_page_index(true)
                .with_bloom_filter_on_read(true)
                // Decode the filter columns first and the rest only for matching rows: a
                // trace look-up then decodes a few spans, not whole pages of nested columns.
                .with_pushdown_filters(true)
                .with_reorder_filters(true);
            if let Some(predicate) = conjunction(filters.iter().cloned()) {
                let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
                source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
            }
            // One file group per core so segments are read in parallel.
            let groups = state.config().target_partitions().clamp(1, segments.len());
            let mut files: Vec<Vec<PartitionedFile>> = vec![Vec::new(); groups];
            for (index, segment) in segments.iter().enumerate() {
                files[index % groups]
                    .push(PartitionedFile::new(segment.path.clone(), segment.bytes));
            }
            let config = FileScanConfigBuilder::new(self.store_url.clone(), Arc::new(source))
                .with_file_groups(files.into_iter().map(FileGroup::new).collect())
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
            inputs.push(DataSourceExec::from_data_source(config));
        }
        if inputs.is_empty() {
            let projected = match projection {
                Some(indices) => Arc::new(schema.project(indices)?),
                None => schema,
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        UnionExec::try_new(inputs)
    }
}

/// Bounds on `start_time` that the filters imply, in nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TimeWindow {
    from: i64,
    to: i64,
}

impl TimeWindow {
    pub(crate) fn from_filters(filters: &[Expr]) -> Self {
        let mut window = Self {
            from: i64::MIN,
            to: i64::MAX,
        };
        for filter in filters {
            window.narrow(filter);
        }
        window
    }

    fn narrow(&mut self, filter: &Expr) {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = filter else {
            return;
        };
        if *op == Operator::And {
            self.narrow(left);
            self.narrow(right);
            return;
        }
        let (op, value) = match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), Expr::Literal(v, _)) if c.name == schema::START_TIME => (*op, v),
            (Expr::Literal(v, _), Expr::Column(c)) if c.name == schema::START_TIME => {
                match op.swap() {
                    Some(op) => (op, v),
                    None => return,
                }
            }
            _ => return,
        };
        let Some(ns) = timestamp_ns(value) else {
            return;
        };
        match op {
            Operator::Gt | Operator::GtEq => self.from = self.from.max(ns),
            Operator::Lt | Operator::LtEq => self.to = self.to.min(ns),
            Operator::Eq => {
                self.from = self.from.max(ns);
                self.to = self.to.min(ns);
            }
            _ => {}
        }
    }

    pub(crate) fn overlaps(&self, min_ns: i64, max_ns: i64) -> bool {
        min_ns <= self.to && max_ns >= self.from
    }
}

fn timestamp_ns(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000),
        _ => None,
    }
}

/// `breaker_transitions`: every breaker transition the tracker holds, read when queried.
#[derive(Debug)]
pub struct TransitionsTable {
    tracker: Arc<BreakerTracker>,
}

impl TransitionsTable {
    pub fn new(tracker: Arc<BreakerTracker>) -> Self {
        Self { tracker }
    }
}

#[async_trait]
impl TableProvider for TransitionsTable {
    fn schema(&self) -> SchemaRef {
        transitions_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        MemorySourceConfig::try_new_exec(
            &[vec![self.tracker.transitions_batch()]],
            transitions_schema(),
            projection.cloned(),
        )
        .map(|exec| exec as Arc<dyn ExecutionPlan>)
    }
}
