use std::time::Duration;

use crate::watchdog::{Stopped, stopped_by};

/// Why a query did not answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Not a query: writes, DDL, files by path. The HTTP API answers 403.
    #[error("{0}")]
    Refused(String),
    /// The SQL does not parse or plan.
    #[error("{0}")]
    Invalid(String),
    #[error("the query ran longer than its time limit of {0:?}")]
    Timeout(Duration),
    /// Over the time limit on a Ballista cluster; the job was cancelled there.
    #[error(
        "the query ran longer than its time limit of {limit:?}: Ballista job {job} was cancelled"
    )]
    StoppedOnCluster { limit: Duration, job: String },
    #[error("the query returns more than the limit of {0} rows: add a LIMIT or aggregate")]
    TooManyRows(usize),
    #[error("the query needs more memory than its limit: {0}")]
    OutOfMemory(String),
    #[error("query failed: {0}")]
    Execution(String),
    /// Every read slot and the queue are taken: HTTP answers 429, Postgres 53300.
    #[error("too many queries are running (at most {running}); try again in {retry_after:?}")]
    Busy {
        running: usize,
        retry_after: Duration,
    },
    /// The client went away before the answer was ready.
    #[error("the query was cancelled: its client went away")]
    Cancelled,
}

impl From<datafusion::error::DataFusionError> for QueryError {
    fn from(error: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as E;
        match stopped_by(&error) {
            Some(Stopped::Timeout(limit)) => return Self::Timeout(limit),
            Some(Stopped::Cancelled) => return Self::Cancelled,
            None => {}
        }
        match error.find_root() {
            E::ResourcesExhausted(message) => Self::OutOfMemory(message.clone()),
            E::SQL(..) | E::Plan(_) | E::SchemaError(..) | E::NotImplemented(_) => {
                Self::Invalid(error.strip_backtrace())
            }
            _ => Self::Execution(error.strip_backtrace()),
        }
    }
}
