//! One DataFusion session per query, with its own memory pool, time limit and row limit,
//! over the `spans` table of the store.

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use callwatch_storage::Store;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;

use crate::error::QueryError;
use crate::guard;
use crate::table::SpansTable;

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

#[derive(Debug, Clone)]
pub struct QueryEngine {
    store: Store,
    limits: QueryLimits,
}

/// Segments are read through the store's object store, registered under this URL.
const STORE_URL: &str = "callwatch://segments/";

impl QueryEngine {
    pub fn new(store: Store, limits: QueryLimits) -> Self {
        Self { store, limits }
    }

    pub fn limits(&self) -> QueryLimits {
        self.limits
    }

    fn context(&self) -> Result<SessionContext, QueryError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(self.limits.memory_bytes, 1.0)
            .build_arc()?;
        let url = ObjectStoreUrl::parse(STORE_URL)?;
        runtime.register_object_store(url.as_ref(), self.store.object_store());
        let config = SessionConfig::new().with_information_schema(true);
        let context = SessionContext::new_with_config_rt(config, runtime);
        context.register_table("spans", Arc::new(SpansTable::new(self.store.clone(), url)))?;
        Ok(context)
    }

    /// Runs one read-only statement within the limits.
    pub async fn sql(&self, sql: &str) -> Result<QueryOutput, QueryError> {
        guard::check(sql)?;
        let context = self.context()?;
        // A second guard: the planner itself refuses anything that is not a query.
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let max_rows = self.limits.max_rows;
        let run = async {
            let frame = context.sql_with_options(sql, options).await?;
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
        };
        // Dropping the query's stream on timeout cancels its tasks.
        tokio::time::timeout(self.limits.timeout, run)
            .await
            .map_err(|_| QueryError::Timeout(self.limits.timeout))?
    }
}
