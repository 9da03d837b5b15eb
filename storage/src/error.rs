use std::time::Duration;

/// Everything that can go wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// More batches are waiting for the WAL than the ingest queue holds.
    #[error("ingest queue is full ({depth} requests waiting)")]
    QueueFull { depth: usize, retry_after: Duration },
    /// Data not yet in segments, with what pairing and the breakers hold, has reached the
    /// memory budget.
    #[error(
        "memory budget of {limit_bytes} bytes (unflushed spans and calls, halves waiting to be paired, breakers) is used up"
    )]
    MemoryFull {
        limit_bytes: usize,
        retry_after: Duration,
    },
    /// The process's resident memory has reached the memory limit while spans wait to be
    /// flushed: the allocator's and the uncounted parts' memory counts too.
    #[error(
        "resident memory of {resident_bytes} bytes has reached the memory limit of {limit_bytes} bytes; spans are being flushed to free it"
    )]
    ResidentFull {
        resident_bytes: usize,
        limit_bytes: usize,
        retry_after: Duration,
    },
    #[error("storage is shutting down")]
    ShuttingDown,
    #[error("batch does not match the spans schema: {0}")]
    Schema(String),
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// Storage settings that cannot work (a bad URL, an unknown scheme).
    #[error("{0}")]
    Config(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("Arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("Parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("object store error: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("manifest error: {0}")]
    Manifest(#[from] serde_json::Error),
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl StoreError {
    /// How long a client should wait before trying again, when trying again can help.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::QueueFull { retry_after, .. }
            | Self::MemoryFull { retry_after, .. }
            | Self::ResidentFull { retry_after, .. } => Some(*retry_after),
            Self::ShuttingDown => Some(Duration::from_secs(5)),
            _ => None,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
