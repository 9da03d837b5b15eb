//! Distributed SQL on an Apache DataFusion Ballista cluster (`--ballista df://HOST:PORT`).
//!
//! A statement passes the read-only guard and is planned here, against the store's tables.
//! Then each table is bound to what the cluster can read: `spans` and `calls` to Parquet
//! listings of exactly the segment files of the current manifests (those the query's time
//! filters leave), and `breaker_transitions` to the transitions this node holds, sent with
//! the plan. The scheduler plans the stages; the executors read the segments from the
//! bucket. Spans and calls not yet flushed into segments are not on the cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use ballista_core::config::BALLISTA_CLIENT_PULL;
use ballista_core::execution_plans::DistributedQueryExec;
use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use ballista_core::serde::protobuf::CancelJobParams;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use callwatch_storage::{Snapshot, Table};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::Transformed;
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder, TableScan, TableSource, cast};
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{SessionConfig, SessionContext, col, lit};
use datafusion_proto::protobuf::LogicalPlanNode;
use futures::StreamExt;

use crate::breakers::BREAKER_TRANSITIONS_TABLE;
use crate::engine::{QueryEngine, QueryOutput};
use crate::error::QueryError;
use crate::table::TimeWindow;

/// The scheduler's port when the URL gives none (Ballista's own default).
const DEFAULT_SCHEDULER_PORT: u16 = 50050;

/// A Ballista scheduler that SQL and long graph windows run on.
#[derive(Debug)]
pub struct Cluster {
    /// The URL as given, for messages.
    url: String,
    /// The scheduler's gRPC endpoint, `http://host:port`.
    scheduler: String,
    /// Graph windows at least this long are aggregated on the cluster.
    over: Duration,
    /// Partitions each stage of a plan is cut into: tasks that executors run in parallel.
    partitions: usize,
    jobs: JobCounts,
}

#[derive(Debug, Default)]
struct JobCounts {
    submitted: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
}

impl Cluster {
    /// The scheduler at `url` (`df://HOST:PORT`).
    pub fn new(url: &str, over: Duration, partitions: usize) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("--ballista {url:?}: {e}"))?;
        if parsed.scheme() != "df" {
            return Err(format!(
                "--ballista {url:?}: give the scheduler as df://HOST:PORT"
            ));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("--ballista {url:?}: the URL has no host"))?;
        let port = parsed.port().unwrap_or(DEFAULT_SCHEDULER_PORT);
        Ok(Self {
            url: url.to_string(),
            scheduler: format!("http://{host}:{port}"),
            over,
            partitions: partitions.max(1),
            jobs: JobCounts::default(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether a graph window of this many nanoseconds is aggregated on the cluster.
    pub fn takes_window(&self, nanos: i64) -> bool {
        u128::try_from(nanos).unwrap_or(0) >= self.over.as_nanos()
    }

    /// Runs a read-only plan made against the store's tables on the cluster, within the
    /// engine's time limit (the job is cancelled on the scheduler when it is reached) and,
    /// if `max_rows` is given, that row limit (the plan is cut just past it, so executors
    /// stop early). The tables are bound to `snapshot`'s segments.
    pub(crate) async fn run(
        &self,
        engine: &QueryEngine,
        snapshot: &Snapshot,
        plan: LogicalPlan,
        max_rows: Option<usize>,
    ) -> Result<QueryOutput, QueryError> {
        let limits = engine.limits();
        if let LogicalPlan::DescribeTable(_) = plan {
            // The answer is in the plan (the table's schema): nothing to run anywhere.
            let frame = SessionContext::new().execute_logical_plan(plan).await?;
            let schema = Arc::new(frame.schema().as_arrow().clone());
            return Ok(QueryOutput {
                schema,
                batches: frame.collect().await?,
            });
        }
        let context = self.context(engine)?;
        // Optimized first, so that the time filters are on the scans and prune the files.
        let plan = context.state().optimize(&plan)?;
        let tables = ClusterTables::new(engine, snapshot)?;
        let plan = tables.bind(plan)?;
        let plan = match max_rows {
            Some(rows) if is_query(&plan) => LogicalPlanBuilder::from(plan)
                .limit(0, Some(rows.saturating_add(1)))?
                .build()?,
            _ => plan,
        };
        let physical = context.state().create_physical_plan(&plan).await?;
        let job = Job::new(self, physical.clone());
        let schema = physical.schema();
        let run = collect(physical, context.task_ctx(), schema, max_rows);
        match tokio::time::timeout(limits.timeout, run).await {
            Ok(Ok(output)) => {
                job.ended();
                Ok(output)
            }
            // Past the row limit the job may still run: dropping it cancels it.
            Ok(Err(error @ QueryError::TooManyRows(_))) => Err(error),
            Ok(Err(error)) => {
                job.ended();
                self.jobs.failed.fetch_add(1, Ordering::Relaxed);
                Err(error)
            }
            Err(_) => {
                let job_id = job.cancel().await;
                Err(QueryError::StoppedOnCluster {
                    limit: limits.timeout,
                    job: job_id.unwrap_or_else(|| "(not yet accepted)".into()),
                })
            }
        }
    }

    /// A session whose plans run on the scheduler.
    fn context(&self, engine: &QueryEngine) -> Result<SessionContext, QueryError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(engine.limits().memory_bytes, 1.0)
            .build_arc()?;
        let mut config = SessionConfig::new_with_ballista()
            .with_ballista_job_name("callwatch")
            .with_target_partitions(self.partitions)
            // The job's id is known as soon as the scheduler takes it, so that a query over
            // its time limit can be cancelled there.
            .set_bool(BALLISTA_CLIENT_PULL, true);
        // File statistics are not gathered when planning: that would read every footer on
        // the scheduler for each query. Executors still prune by row-group statistics.
        config.options_mut().execution.collect_statistics = false;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .build()
            .upgrade_for_ballista(self.scheduler.clone())?;
        Ok(SessionContext::new_with_state(state))
    }

    /// Jobs sent to the cluster, by how they ended, for `/metrics`.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let submitted = self.jobs.submitted.load(Ordering::Relaxed);
        let failed = self.jobs.failed.load(Ordering::Relaxed);
        let cancelled = self.jobs.cancelled.load(Ordering::Relaxed);
        let _ = write!(
            out,
            "# HELP callwatch_ballista_jobs_total Queries sent to the Ballista cluster, and how many of them failed or were cancelled there.\n\
             # TYPE callwatch_ballista_jobs_total counter\n\
             callwatch_ballista_jobs_total{{outcome=\"submitted\"}} {submitted}\n\
             callwatch_ballista_jobs_total{{outcome=\"failed\"}} {failed}\n\
             callwatch_ballista_jobs_total{{outcome=\"cancelled\"}} {cancelled}\n"
        );
    }
}

/// Asks the scheduler to cancel a job: it stops the job's tasks on the executors.
async fn cancel_job(scheduler: String, job_id: String) {
    let cancelled = async {
        let mut client = SchedulerGrpcClient::connect(scheduler).await?;
        client
            .cancel_job(CancelJobParams {
                job_id: job_id.clone(),
            })
            .await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    };
    if let Err(error) = cancelled.await {
        tracing::warn!(job = %job_id, %error, "cancelling a Ballista job");
    }
}

/// Statements whose answer is rows of the tables: those the row limit cuts.
fn is_query(plan: &LogicalPlan) -> bool {
    !matches!(
        plan,
        LogicalPlan::Explain(_)
            | LogicalPlan::Analyze(_)
            | LogicalPlan::DescribeTable(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Copy(_)
    )
}

async fn collect(
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<datafusion::execution::TaskContext>,
    schema: SchemaRef,
    max_rows: Option<usize>,
) -> Result<QueryOutput, QueryError> {
    let mut stream = execute_stream(plan, task)?;
    let mut batches = Vec::new();
    let mut rows = 0usize;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows();
        if let Some(limit) = max_rows
            && rows > limit
        {
            return Err(QueryError::TooManyRows(limit));
        }
        batches.push(batch);
    }
    Ok(QueryOutput { schema, batches })
}

/// A job on the scheduler: cancelled there unless it ended, also when the request that
/// runs it goes away.
struct Job<'a> {
    cluster: &'a Cluster,
    plan: Arc<dyn ExecutionPlan>,
    settled: AtomicBool,
}

impl<'a> Job<'a> {
    fn new(cluster: &'a Cluster, plan: Arc<dyn ExecutionPlan>) -> Self {
        cluster.jobs.submitted.fetch_add(1, Ordering::Relaxed);
        Self {
            cluster,
            plan,
            settled: AtomicBool::new(false),
        }
    }

    /// The scheduler's id of the job, once it accepted it.
    fn id(&self) -> Option<String> {
        self.plan
            .downcast_ref::<DistributedQueryExec<LogicalPlanNode>>()
            .and_then(|exec| exec.job_id())
            .map(|id| id.to_string())
    }

    fn ended(&self) {
        self.settled.store(true, Ordering::Relaxed);
    }

    async fn cancel(&self) -> Option<String> {
        self.settled.store(true, Ordering::Relaxed);
        let id = self.id()?;
        self.cluster.jobs.cancelled.fetch_add(1, Ordering::Relaxed);
        cancel_job(self.cluster.scheduler.clone(), id.clone()).await;
        Some(id)
    }
}

impl Drop for Job<'_> {
    fn drop(&mut self) {
        if self.settled.load(Ordering::Relaxed) {
            return;
        }
        let Some(id) = self.id() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.cluster.jobs.cancelled.fetch_add(1, Ordering::Relaxed);
        runtime.spawn(cancel_job(self.cluster.scheduler.clone(), id));
    }
}

/// What the cluster reads for each table of one snapshot.
struct ClusterTables<'a> {
    snapshot: &'a Snapshot,
    /// The URL that segment paths are relative to.
    base: String,
    transitions: RecordBatch,
}

impl<'a> ClusterTables<'a> {
    fn new(engine: &QueryEngine, snapshot: &'a Snapshot) -> Result<Self, QueryError> {
        let base = engine
            .store()
            .segments_url()
            .map_err(|e| QueryError::Execution(e.to_string()))?;
        Ok(Self {
            snapshot,
            base,
            transitions: engine.breakers().transitions_batch(),
        })
    }

    /// `plan` with every scan of the store's tables reading what the cluster can read.
    fn bind(&self, plan: LogicalPlan) -> Result<LogicalPlan, QueryError> {
        let bound = plan.transform_up_with_subqueries(|node| {
            let LogicalPlan::TableScan(mut scan) = node else {
                return Ok(Transformed::no(node));
            };
            match self.source_for(&scan)? {
                Some(source) => {
                    scan.source = source;
                    Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
                }
                None => Ok(Transformed::no(LogicalPlan::TableScan(scan))),
            }
        })?;
        Ok(bound.data)
    }

    fn source_for(
        &self,
        scan: &TableScan,
    ) -> datafusion::error::Result<Option<Arc<dyn TableSource>>> {
        let name = &scan.table_name;
        let ours = name.catalog().is_none_or(|c| c == "datafusion")
            && name.schema().is_none_or(|s| s == "public");
        if !ours {
            return Ok(None);
        }
        if name.table() == BREAKER_TRANSITIONS_TABLE {
            return literal_table(&self.transitions).map(Some);
        }
        let Some(table) = Table::ALL.into_iter().find(|t| t.name() == name.table()) else {
            return Ok(None);
        };
        let window = TimeWindow::from_filters(&scan.filters);
        let urls = self
            .snapshot
            .segments_of(table)
            .iter()
            .filter(|segment| window.overlaps(segment.min_start_ns, segment.max_start_ns))
            .map(|segment| ListingTableUrl::parse(format!("{}/{}", self.base, segment.path)))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        if urls.is_empty() {
            return Ok(Some(provider_as_source(Arc::new(EmptyTable::new(
                table.schema(),
            )))));
        }
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(table.schema());
        Ok(Some(provider_as_source(Arc::new(ListingTable::try_new(
            config,
        )?))))
    }
}

/// A small table sent with the plan: its rows as a VALUES list.
fn literal_table(batch: &RecordBatch) -> datafusion::error::Result<Arc<dyn TableSource>> {
    let schema = batch.schema();
    if batch.num_rows() == 0 {
        return Ok(provider_as_source(Arc::new(EmptyTable::new(schema))));
    }
    let rows = (0..batch.num_rows())
        .map(|row| {
            batch
                .columns()
                .iter()
                .map(|column| ScalarValue::try_from_array(column, row).map(lit))
                .collect::<datafusion::error::Result<Vec<_>>>()
        })
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let columns = schema.fields().iter().enumerate().map(|(i, field)| {
        cast(col(format!("column{}", i + 1)), field.data_type().clone()).alias(field.name())
    });
    let plan = LogicalPlanBuilder::values(rows)?
        .project(columns)?
        .build()?;
    Ok(provider_as_source(Arc::new(ViewTable::new(plan, None))))
}
