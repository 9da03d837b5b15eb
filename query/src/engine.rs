//! One DataFusion session per query, with its own memory pool, time limit and row limit,
//! over the `spans` table of the store. Each session's plans are watched (see
//! [`crate::watchdog`]), so the time limit holds even for a query that never yields.

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use callwatch_storage::{Store, Table};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::cache::cache_manager::{CacheManagerConfig, FileMetadataCache};
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;

use crate::breakers::{BREAKER_TRANSITIONS_TABLE, BreakerTracker};
use crate::cluster::Cluster;
use crate::error::QueryError;
use crate::guard;
use crate::pieces::{DetailCaches, RollupCache};
use crate::reads::{ReadSettings, Reads};
use crate::table::{StoreTable, TransitionsTable};
use crate::watchdog::{Watch, WatchRule};

/// What one query may use.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    pub memory_bytes: usize,
    pub timeout: Duration,
    pub max_rows: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 1 << 30,
            timeout: Duration::from_secs(30),
            max_rows: 100_000,
        }
    }
}

/// A query's answer.
#[derive(Debug)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

#[derive(Clone)]
pub struct QueryEngine {
    store: Store,
    limits: QueryLimits,
    /// Parquet metadata of segments, shared by all queries (each has its own runtime).
    metadata_cache: Arc<FileMetadataCache>,
    /// The graph's statistics in pieces, shared by all queries.
    rollups: Arc<RollupCache>,
    details: Arc<DetailCaches>,
    /// Every edge's circuit breaker.
    breakers: Arc<BreakerTracker>,
    /// The runtime that read requests run on, and its admission.
    reads: Reads,
    /// The Ballista cluster that SQL runs on, if any.
    cluster: Option<Arc<Cluster>>,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine")
            .field("store", &self.store)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Room for the footers, page indexes and bloom filters of a few thousand segments.
const METADATA_CACHE_BYTES: usize = 256 << 20;

/// Segments are read through the store's object store, registered under this URL.
const STORE_URL: &str = "callwatch://segments/";

impl QueryEngine {
    /// An engine whose read runtime has one thread.
    pub fn new(store: Store, limits: QueryLimits) -> Self {
        let reads = Reads::new(ReadSettings::with_threads(1)).expect("starting the read runtime");
        Self::with_reads(store, limits, reads)
    }

    /// An engine whose read requests run on `reads`.
    pub fn with_reads(store: Store, limits: QueryLimits, reads: Reads) -> Self {
        let metadata_cache = Arc::new(
            DefaultCache::new(METADATA_CACHE_BYTES).with_name("callwatch segment metadata"),
        );
        Self {
            store,
            limits,
            metadata_cache,
            rollups: Arc::new(RollupCache::default()),
            details: Arc::new(DetailCaches::default()),
            breakers: Arc::new(BreakerTracker::default()),
            reads,
            cluster: None,
        }
    }

    /// The engine with SQL (and long graph windows) run on this Ballista cluster.
    pub fn with_cluster(mut self, cluster: Cluster) -> Self {
        self.cluster = Some(Arc::new(cluster));
        self
    }

    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_deref()
    }

    /// The engine with this breaker tracker (its settings and webhook) instead of one with
    /// resilience4j's defaults.
    pub fn with_breakers(mut self, breakers: BreakerTracker) -> Self {
        self.breakers = Arc::new(breakers);
        self
    }

    pub fn breakers(&self) -> &BreakerTracker {
        &self.breakers
    }

    pub fn limits(&self) -> QueryLimits {
        self.limits
    }

    /// The read runtime that pages, APIs and Postgres queries run on.
    pub fn reads(&self) -> &Reads {
        &self.reads
    }

    /// The store the engine reads.
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn rollups(&self) -> &RollupCache {
        &self.rollups
    }

    /// Breakdown pieces of every edge, and of the services and edges looked at last.
    pub fn details(&self) -> &DetailCaches {
        &self.details
    }

    /// Gauges of the statistics kept in pieces: memory, and hours covered.
    pub fn render_pieces(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(
            out,
            "# HELP callwatch_pieces_bytes Memory held by statistics kept in pieces of time, by what they serve.\n\
             # TYPE callwatch_pieces_bytes gauge\n\
             callwatch_pieces_bytes{{cache=\"graph\"}} {}\n\
             callwatch_pieces_bytes{{cache=\"breakdowns\"}} {}\n\
             # HELP callwatch_pieces_hours Clock hours with statistics kept in pieces (every edge's), by what they serve.\n\
             # TYPE callwatch_pieces_hours gauge\n\
             callwatch_pieces_hours{{cache=\"graph\"}} {}\n\
             callwatch_pieces_hours{{cache=\"breakdowns\"}} {}\n\
             # HELP callwatch_pieces_hours_remade_total Hours with pieces made again from all their calls (a new segment not made only of batches they held, or a width dropped for room that a window needs), by what they serve.\n\
             # TYPE callwatch_pieces_hours_remade_total counter\n\
             callwatch_pieces_hours_remade_total{{cache=\"graph\"}} {}\n\
             callwatch_pieces_hours_remade_total{{cache=\"breakdowns\"}} {}\n",
            self.rollups.bytes(),
            self.details.bytes(),
            self.rollups.hours(),
            self.details.hours(),
            self.rollups.remade(),
            self.details.remade(),
        );
    }

    /// A fresh session for one query, with this engine's memory limit: its plans stop at the
    /// time limit, counted from now, or when the request running it is cancelled. Frames
    /// built on it are run with [`QueryEngine::collect`], which adds the row limit.
    pub fn context(&self) -> Result<SessionContext, QueryError> {
        let watch = Watch::new(self.limits.timeout, crate::reads::current_request());
        self.session(Some(Arc::new(watch)))
    }

    /// A long-lived session that only plans (prepared statements) and answers session
    /// statements; what it plans runs in a [`QueryEngine::context`] of its own.
    pub fn planning_context(&self) -> Result<SessionContext, QueryError> {
        self.session(None)
    }

    fn session(&self, watch: Option<Arc<Watch>>) -> Result<SessionContext, QueryError> {
        let caches = CacheManagerConfig::default()
            .with_file_metadata_cache(Some(self.metadata_cache.clone()))
            .with_metadata_cache_limit(METADATA_CACHE_BYTES);
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(self.limits.memory_bytes, 1.0)
            .with_cache_manager(caches)
            .build_arc()?;
        let url = ObjectStoreUrl::parse(STORE_URL)?;
        runtime.register_object_store(url.as_ref(), self.store.object_store());
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(self.reads.settings().threads);
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features();
        if let Some(watch) = watch {
            state = state.with_physical_optimizer_rule(Arc::new(WatchRule(watch)));
        }
        let context = SessionContext::new_with_state(state.build());
        for table in Table::ALL {
            let provider = StoreTable::new(self.store.clone(), url.clone(), table);
            context.register_table(table.name(), Arc::new(provider))?;
        }
        context.register_table(
            BREAKER_TRANSITIONS_TABLE,
            Arc::new(TransitionsTable::new(self.breakers.clone())),
        )?;
        Ok(context)
    }

    /// Runs one read-only statement within the limits: on the cluster if there is one.
    pub async fn sql(&self, sql: &str) -> Result<QueryOutput, QueryError> {
        guard::check(sql)?;
        if let Some(cluster) = &self.cluster {
            let frame = self
                .planning_context()?
                .sql_with_options(sql, read_only())
                .await?;
            let snapshot = self.store.snapshot();
            return cluster
                .run(
                    self,
                    &snapshot,
                    frame.into_unoptimized_plan(),
                    Some(self.limits.max_rows),
                )
                .await;
        }
        let context = self.context()?;
        let limits = self.limits;
        bounded(limits, async {
            let frame = context.sql_with_options(sql, read_only()).await?;
            collect_rows(frame, limits.max_rows).await
        })
        .await
    }

    /// Runs a plan made elsewhere (a prepared statement of the Postgres wire) within the
    /// limits, in a session of its own.
    pub async fn run_plan(&self, plan: LogicalPlan) -> Result<QueryOutput, QueryError> {
        read_only().verify_plan(&plan)?;
        if let Some(cluster) = &self.cluster {
            let snapshot = self.store.snapshot();
            return cluster
                .run(self, &snapshot, plan, Some(self.limits.max_rows))
                .await;
        }
        let context = self.context()?;
        let limits = self.limits;
        bounded(limits, async {
            let frame = context.execute_logical_plan(plan).await?;
            collect_rows(frame, limits.max_rows).await
        })
        .await
    }

    /// Streams a frame's batches into `fold` within the time limit but not the row limit:
    /// for aggregations whose state, not whose input, must fit in memory.
    pub async fn fold_batches(
        &self,
        frame: DataFrame,
        mut fold: impl FnMut(&RecordBatch) -> Result<(), QueryError>,
    ) -> Result<(), QueryError> {
        let limits = self.limits;
        let run = async {
            let mut stream = frame.execute_stream().await?;
            while let Some(batch) = stream.next().await {
                fold(&batch?)?;
            }
            Ok(())
        };
        tokio::time::timeout(limits.timeout, run)
            .await
            .map_err(|_| QueryError::Timeout(limits.timeout))?
    }

    /// Runs a frame built on [`QueryEngine::context`] within the time and row limits.
    pub async fn collect(&self, frame: DataFrame) -> Result<QueryOutput, QueryError> {
        let limits = self.limits;
        bounded(limits, collect_rows(frame, limits.max_rows)).await
    }
}

/// The planner's own guard, behind the parser's: nothing but queries.
fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Stops `run` at the time limit; dropping the query's stream cancels its tasks.
async fn bounded(
    limits: QueryLimits,
    run: impl Future<Output = Result<QueryOutput, QueryError>>,
) -> Result<QueryOutput, QueryError> {
    tokio::time::timeout(limits.timeout, run)
        .await
        .map_err(|_| QueryError::Timeout(limits.timeout))?
}

async fn collect_rows(frame: DataFrame, max_rows: usize) -> Result<QueryOutput, QueryError> {
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let mut stream = frame.execute_stream().await?;
    let mut batches = Vec::new();
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows();
        if rows > max_rows {
            return Err(QueryError::TooManyRows(max_rows));
        }
        batches.push(batch);
    }
    Ok(QueryOutput { schema, batches })
}
