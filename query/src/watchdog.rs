//! Stops a query at its deadline, or as soon as whoever asked for it has gone, even while
//! its operators never wait for anything.
//!
//! A timer around the query's future cannot do that: an operator whose input is always ready
//! (a cross join of two `generate_series`) runs inside one poll of its task for as long as it
//! likes, and an aborted task stops only when it next yields. So every operator of the plan
//! gets a [`WatchExec`] above it, whose stream checks the [`Watch`] before each batch it
//! passes on and also spends tokio's cooperative budget: a query stops within a batch of its
//! limit, and queries sharing the read runtime's threads take turns.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{Stream, StreamExt};

/// Why a watched query stopped.
#[derive(Debug, Clone, Copy, thiserror::Error)]
pub enum Stopped {
    #[error("the query ran longer than its time limit of {0:?}")]
    Timeout(Duration),
    #[error("the query was cancelled: its client went away")]
    Cancelled,
}

/// Set when the request that runs a query is dropped (its client went away, or it was
/// refused part-way): every query it started stops at its next batch.
#[derive(Debug, Default)]
pub struct CancelFlag(AtomicBool);

impl CancelFlag {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// One query's deadline and its request's cancel flag.
#[derive(Debug)]
pub struct Watch {
    deadline: Instant,
    limit: Duration,
    cancel: Option<Arc<CancelFlag>>,
}

impl Watch {
    pub fn new(limit: Duration, cancel: Option<Arc<CancelFlag>>) -> Self {
        Self {
            deadline: Instant::now() + limit,
            limit,
            cancel,
        }
    }

    pub fn check(&self) -> std::result::Result<(), Stopped> {
        if self.cancel.as_ref().is_some_and(|flag| flag.is_cancelled()) {
            return Err(Stopped::Cancelled);
        }
        if Instant::now() >= self.deadline {
            return Err(Stopped::Timeout(self.limit));
        }
        Ok(())
    }
}

/// The planner's last rule: a [`WatchExec`] above every operator.
#[derive(Debug)]
pub struct WatchRule(pub Arc<Watch>);

impl PhysicalOptimizerRule for WatchRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let watched: Arc<dyn ExecutionPlan> = Arc::new(WatchExec::new(node, self.0.clone()));
            Ok(Transformed::yes(watched))
        })
        .map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        "watch"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Passes its input's batches on unchanged while the query's [`Watch`] allows.
#[derive(Debug)]
pub struct WatchExec {
    input: Arc<dyn ExecutionPlan>,
    watch: Arc<Watch>,
    properties: Arc<PlanProperties>,
}

impl WatchExec {
    fn new(input: Arc<dyn ExecutionPlan>, watch: Arc<Watch>) -> Self {
        let properties = input.properties().clone();
        Self {
            input,
            watch,
            properties,
        }
    }
}

impl DisplayAs for WatchExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "WatchExec: limit={:?}", self.watch.limit)
    }
}

impl ExecutionPlan for WatchExec {
    fn name(&self) -> &str {
        "WatchExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(format!(
                "WatchExec has one input, not {}",
                children.len()
            )));
        }
        Ok(Arc::new(Self::new(children.remove(0), self.watch.clone())))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.watch.check().map_err(stopped)?;
        Ok(Box::pin(WatchStream {
            input: self.input.execute(partition, context)?,
            watch: self.watch.clone(),
            done: false,
        }))
    }
}

struct WatchStream {
    input: SendableRecordBatchStream,
    watch: Arc<Watch>,
    done: bool,
}

impl Stream for WatchStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Err(why) = self.watch.check() {
            self.done = true;
            return Poll::Ready(Some(Err(stopped(why))));
        }
        // Yields to the runtime once the task has used its budget, as tokio's own resources do.
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        let next = self.input.poll_next_unpin(cx);
        if next.is_ready() {
            coop.made_progress();
        }
        next
    }
}

impl RecordBatchStream for WatchStream {
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }
}

fn stopped(why: Stopped) -> DataFusionError {
    DataFusionError::External(Box::new(why))
}

/// The [`Stopped`] behind a DataFusion error, however deep it was wrapped.
pub fn stopped_by(error: &DataFusionError) -> Option<Stopped> {
    match error.find_root() {
        DataFusionError::External(inner) => inner.downcast_ref::<Stopped>().copied(),
        _ => None,
    }
}
