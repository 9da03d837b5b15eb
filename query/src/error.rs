use std::time::Duration;

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
    #[error("the query returns more than the limit of {0} rows: add a LIMIT or aggregate")]
    TooManyRows(usize),
    #[error("the query needs more memory than its limit: {0}")]
    OutOfMemory(String),
    #[error("query failed: {0}")]
    Execution(String),
}

impl From<datafusion::error::DataFusionError> for QueryError {
    fn from(error: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as E;
        match error.find_root() {
            E::ResourcesExhausted(message) => Self::OutOfMemory(message.clone()),
            E::SQL(..) | E::Plan(_) | E::SchemaError(..) | E::NotImplemented(_) => {
                Self::Invalid(error.strip_backtrace())
            }
            _ => Self::Execution(error.strip_backtrace()),
        }
    }
}
