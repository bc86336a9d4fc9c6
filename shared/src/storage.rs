//! The storage failures both services share: sled itself, a stored value that does not decode,
//! a writer that has stopped. Each crate's error wraps it once (`Error::Storage`), and
//! both edges answer it the same way: a neutral 500 (or INTERNAL), the cause in the log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// A stored value (a sled row, or a message on a stream used as a store) does not decode.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A task that owns writes (a store's writer) is gone: the process is shutting down.
    #[error("{0} has stopped")]
    Stopped(&'static str),
}
