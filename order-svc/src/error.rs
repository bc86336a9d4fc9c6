//! The crate's one error type, mapped once to problem+json in `http/mod.rs`.
use shared::{fields::FieldErrors, storage::StorageError};
use uuid::Uuid;

use crate::domain::{InvalidTransition, OrderStatus};

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("validation failed")]
    Validation(FieldErrors),
    /// The API key may not do this (the message says why).
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("order {0} was not found")]
    NotFound(Uuid),
    /// A path id that is not a UUID names no order.
    #[error("no order has this id")]
    NoSuchId,
    /// Well-formed, but against a rule the schema cannot state (422).
    #[error("the request breaks a business rule")]
    Unprocessable(FieldErrors),
    #[error("unknown or discontinued products")]
    UnknownProducts(Vec<Uuid>),
    #[error("the Idempotency-Key was already used with a different request")]
    IdempotencyMismatch,
    #[error("order {id} is {status:?} and cannot be cancelled")]
    NotCancellable { id: Uuid, status: OrderStatus },
    #[error("order {id} is {status:?} and cannot be shipped")]
    NotShippable { id: Uuid, status: OrderStatus },
    /// `If-Match` named another version than the order's current one (412).
    #[error("order {id} is at version {current}, not {expected}")]
    VersionMismatch {
        id: Uuid,
        current: u64,
        expected: u64,
    },
    #[error(transparent)]
    Transition(#[from] InvalidTransition),
    /// A read-through to product-svc failed (shared, so the error stays `Clone`).
    #[error("the catalog is unavailable")]
    CatalogUnavailable(#[source] std::sync::Arc<crate::stock::StockError>),
    /// The order stream (NATS) cannot be reached or did not answer in time.
    #[error("the order store is unavailable")]
    OrderStoreUnavailable(#[source] std::sync::Arc<dyn std::error::Error + Send + Sync>),
    /// The order changed under us more often than a request is willing to retry.
    #[error("order {0} is changing too often; retry")]
    Contended(Uuid),
    /// A path id that names no webhook (or another customer's, for a key bound to a customer).
    #[error("no webhook has this id")]
    NoSuchWebhook,
    /// The webhook streams (NATS) cannot be reached or did not answer in time.
    #[error("the webhook store is unavailable")]
    WebhookStoreUnavailable(#[source] std::sync::Arc<dyn std::error::Error + Send + Sync>),
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

/// Why a NATS call failed, as the error of the store it served (`Error::OrderStoreUnavailable`,
/// `Error::WebhookStoreUnavailable`).
pub type Unavailable = fn(Box<dyn std::error::Error + Send + Sync>) -> Error;

/// A NATS call bounded by `timeout`: its failure, or its silence, is `unavailable`.
pub async fn bounded<T, E>(
    timeout: std::time::Duration,
    unavailable: Unavailable,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(unavailable(Box::new(e))),
        Err(_) => Err(unavailable("NATS did not answer in time".into())),
    }
}
