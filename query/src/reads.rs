//! Where read work runs: a tokio runtime of its own, apart from the one that receives spans,
//! with admission in front of it.
//!
//! Every page, API request and Postgres query runs on this runtime's few threads, so however
//! much CPU readers want, the OTLP listeners, the WAL, the pairer, flushes, `/healthz` and
//! `/metrics` keep theirs. At most `concurrency` requests run at once; a few more wait a
//! moment in a short queue, and the rest are told to come back later. One slot is kept for
//! the dashboard's overview, with a thread of its own, so an operator can still see the
//! platform while queries pile up, even when a page's work holds every read thread.
//! A request whose caller goes away (a closed connection) is aborted and its queries stop at
//! their next batch (see [`crate::watchdog`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::QueryError;
use crate::watchdog::CancelFlag;

/// How long a request may wait in the queue for a slot before it is refused.
const QUEUE_WAIT: Duration = Duration::from_secs(2);

/// What a refused request is told to wait before it tries again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Slots kept for [`Priority::Overview`] beyond `concurrency`.
const OVERVIEW_RESERVE: usize = 1;

tokio::task_local! {
    /// The cancel flag of the request running on this task, read by the queries it starts.
    static REQUEST: Arc<CancelFlag>;
}

/// The cancel flag of the request this task runs, if it runs one.
pub fn current_request() -> Option<Arc<CancelFlag>> {
    REQUEST.try_with(Arc::clone).ok()
}

/// How much of the machine readers get.
#[derive(Debug, Clone, Copy)]
pub struct ReadSettings {
    /// Worker threads of the read runtime.
    pub threads: usize,
    /// Requests running at once.
    pub concurrency: usize,
    /// Requests that may wait for a slot; more are refused at once.
    pub queue: usize,
}

impl ReadSettings {
    /// One thread less than the machine has (at least one), two requests per thread, and a
    /// queue as long as the slots.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_threads(cores.saturating_sub(1).max(1))
    }

    pub fn with_threads(threads: usize) -> Self {
        let threads = threads.max(1);
        Self {
            threads,
            concurrency: 2 * threads,
            queue: 2 * threads,
        }
    }
}

/// Which slots a request may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Normal,
    /// The dashboard's overview: may also take the reserved slot.
    Overview,
}

/// The read runtime and its admission. Cheap to clone.
#[derive(Clone)]
pub struct Reads(Arc<Inner>);

struct Inner {
    runtime: Option<tokio::runtime::Runtime>,
    /// Where requests admitted to the reserved slot run.
    reserve_runtime: Option<tokio::runtime::Runtime>,
    settings: ReadSettings,
    slots: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
    waiting: AtomicUsize,
    refused: AtomicU64,
    cancelled: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping a runtime waits for its threads, which async code may not do.
        for runtime in [self.runtime.take(), self.reserve_runtime.take()]
            .into_iter()
            .flatten()
        {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Reads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reads")
            .field("settings", &self.0.settings)
            .finish_non_exhaustive()
    }
}

impl Reads {
    pub fn new(settings: ReadSettings) -> std::io::Result<Self> {
        let runtime = |threads: usize, name: &str| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                // Blocking work of readers (file reads, graph pieces) is bounded too.
                .max_blocking_threads(2 * threads + 2)
                .thread_name(name)
                .enable_all()
                .build()
        };
        Ok(Self(Arc::new(Inner {
            runtime: Some(runtime(settings.threads.max(1), "callwatch-read")?),
            reserve_runtime: Some(runtime(OVERVIEW_RESERVE, "callwatch-read-reserve")?),
            settings,
            slots: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            reserve: Arc::new(Semaphore::new(OVERVIEW_RESERVE)),
            waiting: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
        })))
    }

    pub fn settings(&self) -> ReadSettings {
        self.0.settings
    }

    /// Runs `work` on the read runtime once admitted. Dropping the returned future (the
    /// caller went away) aborts `work` and stops the queries it started.
    pub async fn run<T: Send + 'static>(
        &self,
        priority: Priority,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, QueryError> {
        let (permit, reserved) = self.admit(priority).await?;
        let cancel = Arc::new(CancelFlag::default());
        let runtime = if reserved {
            &self.0.reserve_runtime
        } else {
            &self.0.runtime
        };
        let runtime = runtime.as_ref().expect("present until dropped");
        let task = runtime.spawn(REQUEST.scope(cancel.clone(), async move {
            let _permit = permit;
            work.await
        }));
        let mut guard = AbortOnDrop {
            task: Some(task.abort_handle()),
            cancel,
            reads: self.0.clone(),
        };
        let result = task.await;
        guard.task = None;
        result.map_err(|error| {
            if error.is_panic() {
                tracing::error!(%error, "a read request panicked");
                QueryError::Execution("internal error; see the callwatch log".into())
            } else {
                QueryError::Cancelled
            }
        })
    }

    /// A slot, at once, after a short wait in the queue, or [`QueryError::Busy`]; and
    /// whether it is the reserved one.
    async fn admit(&self, priority: Priority) -> Result<(OwnedSemaphorePermit, bool), QueryError> {
        let inner = &self.0;
        if let Ok(permit) = inner.slots.clone().try_acquire_owned() {
            return Ok((permit, false));
        }
        if priority == Priority::Overview
            && let Ok(permit) = inner.reserve.clone().try_acquire_owned()
        {
            return Ok((permit, true));
        }
        let busy = || {
            inner.refused.fetch_add(1, Ordering::Relaxed);
            QueryError::Busy {
                running: inner.settings.concurrency,
                retry_after: RETRY_AFTER,
            }
        };
        if inner.waiting.fetch_add(1, Ordering::Relaxed) >= inner.settings.queue {
            inner.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(busy());
        }
        let waited = tokio::time::timeout(QUEUE_WAIT, inner.slots.clone().acquire_owned()).await;
        inner.waiting.fetch_sub(1, Ordering::Relaxed);
        match waited {
            Ok(Ok(permit)) => Ok((permit, false)),
            _ => Err(busy()),
        }
    }

    /// Prometheus series of read admission.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let inner = &self.0;
        let taken = |slots: &Semaphore, total: usize| total - slots.available_permits().min(total);
        let running = taken(&inner.slots, inner.settings.concurrency)
            + taken(&inner.reserve, OVERVIEW_RESERVE);
        let _ = write!(
            out,
            "# HELP callwatch_read_requests_running Pages, API requests and Postgres queries running on the read runtime.\n\
             # TYPE callwatch_read_requests_running gauge\n\
             callwatch_read_requests_running {running}\n\
             # HELP callwatch_read_requests_waiting Read requests waiting for a slot.\n\
             # TYPE callwatch_read_requests_waiting gauge\n\
             callwatch_read_requests_waiting {}\n\
             # HELP callwatch_read_requests_refused_total Read requests refused because every slot and the queue were taken.\n\
             # TYPE callwatch_read_requests_refused_total counter\n\
             callwatch_read_requests_refused_total {}\n\
             # HELP callwatch_read_requests_cancelled_total Read requests stopped because their client went away.\n\
             # TYPE callwatch_read_requests_cancelled_total counter\n\
             callwatch_read_requests_cancelled_total {}\n",
            inner.waiting.load(Ordering::Relaxed),
            inner.refused.load(Ordering::Relaxed),
            inner.cancelled.load(Ordering::Relaxed),
        );
    }
}

/// Aborts a request's task and cancels its queries when its caller stops waiting for it.
struct AbortOnDrop {
    task: Option<tokio::task::AbortHandle>,
    cancel: Arc<CancelFlag>,
    reads: Arc<Inner>,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            self.cancel.cancel();
            task.abort();
            self.reads.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_the_read_runtime() {
        let reads = Reads::new(ReadSettings::with_threads(1)).unwrap();
        let name = reads
            .run(Priority::Normal, async {
                std::thread::current().name().map(str::to_owned)
            })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("callwatch-read"));
    }

    #[tokio::test]
    async fn past_the_slots_and_the_queue_requests_are_refused_and_the_overview_still_runs() {
        let settings = ReadSettings {
            threads: 1,
            concurrency: 2,
            queue: 1,
        };
        let reads = Reads::new(settings).unwrap();
        let (release, released) = tokio::sync::watch::channel(false);
        let hold = |reads: &Reads| {
            let (reads, mut released) = (reads.clone(), released.clone());
            tokio::spawn(async move {
                reads
                    .run(Priority::Normal, async move {
                        let _ = released.wait_for(|r| *r).await;
                    })
                    .await
            })
        };
        let running = [hold(&reads), hold(&reads)];
        tokio::time::sleep(Duration::from_millis(100)).await;
        let queued = hold(&reads);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let refused = reads.run(Priority::Normal, async {}).await;
        assert!(
            matches!(refused, Err(QueryError::Busy { .. })),
            "{refused:?}"
        );
        let overview = reads.run(Priority::Overview, async { 7 }).await;
        assert_eq!(overview.unwrap(), 7);
        release.send(true).unwrap();
        for task in running {
            task.await.unwrap().unwrap();
        }
        queued.await.unwrap().unwrap();
        let mut metrics = String::new();
        reads.render(&mut metrics);
        assert!(
            metrics.contains("callwatch_read_requests_refused_total 1\n"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn the_overview_runs_while_work_that_never_yields_holds_the_read_thread() {
        let reads = Reads::new(ReadSettings::with_threads(1)).unwrap();
        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let blockers: Vec<_> = (0..2)
            .map(|_| {
                let (reads, released) = (reads.clone(), released.clone());
                tokio::spawn(async move {
                    reads
                        .run(Priority::Normal, async move {
                            // Holds its thread without yielding, as a long layout does.
                            while !released.load(Ordering::Relaxed) {
                                std::thread::sleep(Duration::from_millis(10));
                            }
                        })
                        .await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let overview = tokio::time::timeout(
            Duration::from_secs(5),
            reads.run(Priority::Overview, async { "overview" }),
        )
        .await
        .expect("the overview did not wait for the held thread");
        assert_eq!(overview.unwrap(), "overview");
        released.store(true, Ordering::Relaxed);
        for blocker in blockers {
            blocker.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn a_dropped_request_cancels_its_queries() {
        let reads = Reads::new(ReadSettings::with_threads(1)).unwrap();
        let (flag_tx, flag_rx) = tokio::sync::oneshot::channel();
        let request = reads.run(Priority::Normal, async move {
            let _ = flag_tx.send(current_request().unwrap());
            std::future::pending::<()>().await
        });
        let flag = tokio::select! {
            _ = request => unreachable!("never answers"),
            flag = flag_rx => flag.unwrap(),
        };
        // The select dropped the request.
        assert!(flag.is_cancelled());
    }
}
