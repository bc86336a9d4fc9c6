//! The crate's one error type. HTTP (`http/mod.rs`) and gRPC (`grpc.rs`) each map it exactly once.
use shared::fields::FieldErrors;
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
    /// The order stream (NATS) cannot be read (the audit needs it).
    #[error("the order stream is unavailable: {0}")]
    OrdersUnavailable(String),
    #[error("storage error")]
    Storage(#[from] sled::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("storage flush failed")]
    Flush(#[from] shared::durability::FlusherStopped),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
