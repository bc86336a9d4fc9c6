//! The crate's one error type. HTTP (`http/mod.rs`) and gRPC (`grpc.rs`) each map it exactly once.
use shared::{fields::FieldErrors, storage::StorageError};
use uuid::Uuid;

use crate::domain::StockError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("validation failed")]
    Validation(FieldErrors),
    /// The API key lacks this scope.
    #[error("the API key lacks the scope {0}")]
    Forbidden(String),
    #[error("product {0} was not found")]
    NotFound(Uuid),
    /// A path id that is not a UUID names no product.
    #[error("no product has this id")]
    NoSuchId,
    #[error("product {id} is at version {current}, not the expected {expected}")]
    VersionMismatch {
        id: Uuid,
        expected: u64,
        current: u64,
    },
    #[error("product {0} is discontinued")]
    Discontinued(Uuid),
    #[error(transparent)]
    Stock(#[from] StockError),
    #[error("order {order_id}: {why}")]
    NotCommittable {
        order_id: Uuid,
        why: crate::domain::CommitRefusal,
    },
    /// This instance is not the stock writer (`writer`: the one the lease names, if any).
    #[error("this instance is not the stock writer")]
    NotWriter { writer: Option<String> },
    /// NATS did not take or answer a write or read in time: nothing is known to be stored.
    #[error("the streams are unavailable: {0}")]
    Unavailable(String),
    /// The order stream (NATS) cannot be read (the audit needs it).
    #[error("the order stream is unavailable: {0}")]
    OrdersUnavailable(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl Error {
    /// A stored value that does not decode.
    pub fn corrupt(why: impl Into<String>) -> Self {
        Self::Storage(StorageError::Corrupt(why.into()))
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Self::Storage(e.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
