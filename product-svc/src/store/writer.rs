//! The writer task's batch (the model is `shared::writer`): every queued write runs in one sled
//! transaction, an aborting write is taken out and the rest re-run, and each write is answered
//! after the flush.
//! `Tx` carries the helpers every write uses (events into the outbox, the indexes, the count).
use std::any::Any;

use chrono::Utc;
use serde::{Serialize, de::DeserializeOwned};
use shared::{
    durability::GroupCommit,
    events::{self, ProductEventType, SCHEMA_VERSION, STOCK_LOW, StockLowEvent},
    outbox::{self, OutboxHeader, OutboxRecord},
};
use sled::{
    Tree,
    transaction::{
        ConflictableTransactionError, TransactionError, Transactional, TransactionalTree,
    },
};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::keys::{PRODUCT_COUNT_KEY, category_key, decode_count, name_key};
use crate::{
    domain::{self, Product, Stock},
    error::{Error, Result},
};

pub(super) type TxResult<T> = std::result::Result<T, ConflictableTransactionError<Error>>;

/// Most writes run in one transaction (bounds how long the writer holds sled's write lock).
pub(super) const MAX_BATCH: usize = 256;

/// A write for the writer task: re-runnable (a batch may run more than once), with its result
/// type erased so writes of every kind share one queue.
pub(super) type Job = Box<dyn Fn(&Tx<'_>) -> TxResult<Erased> + Send>;
pub(super) type Erased = Box<dyn Any + Send>;

pub(super) struct Queued {
    pub(super) job: Job,
    pub(super) reply: oneshot::Sender<Result<Erased>>,
}

pub(super) type Keys = Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>>;

/// The trees a write may touch.
#[derive(Clone)]
pub(super) struct Trees {
    pub(super) products: Tree,
    pub(super) stock: Tree,
    pub(super) reservations: Tree,
    pub(super) outbox: Tree,
    pub(super) by_name: Tree,
    pub(super) by_category: Tree,
    pub(super) meta: Tree,
}

/// One batch of the writer task (`shared::writer`): runs the jobs in one transaction, flushes,
/// answers each; a job that aborts is taken out and the rest run again without it.
pub(super) async fn write_batch(
    trees: Trees,
    mut jobs: Vec<Queued>,
    commit: GroupCommit,
    outbox_flushed: outbox::Flushed,
) {
    // Each round either commits every remaining job, or takes out the one that aborted.
    while !jobs.is_empty() {
        match run_batch(&trees, &jobs) {
            Ok(results) => {
                let flushed = commit.flush().await;
                if flushed.is_ok() {
                    // This task is the only writer: nothing was committed since the flush began
                    // that is not on disk now, so every outbox record present is.
                    if let Err(error) = outbox_flushed.flushed(&trees.outbox) {
                        tracing::error!(%error, "Reading the outbox after a flush failed.");
                    }
                }
                for (job, result) in jobs.drain(..).zip(results) {
                    let _ = job
                        .reply
                        .send(flushed.map(|()| result).map_err(Error::from));
                }
            }
            Err(TransactionError::Abort((index, error))) => {
                let _ = jobs.remove(index).reply.send(Err(error));
            }
            Err(TransactionError::Storage(error)) => {
                tracing::error!(%error, writes = jobs.len(), "Writing a batch failed.");
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(Error::from(error.clone())));
                }
            }
        }
    }
}

/// One transaction over every tree, running `jobs` in order; an `Abort` names the job.
pub(super) fn run_batch(
    trees: &Trees,
    jobs: &[Queued],
) -> std::result::Result<Vec<Erased>, TransactionError<(usize, Error)>> {
    (
        &trees.products,
        &trees.stock,
        &trees.reservations,
        &trees.outbox,
        &trees.by_name,
        &trees.by_category,
        &trees.meta,
    )
        .transaction(
            |(products, stock, reservations, outbox, by_name, by_category, meta)| {
                let tx = Tx {
                    products,
                    stock,
                    reservations,
                    outbox,
                    by_name,
                    by_category,
                    meta,
                };
                let mut results = Vec::with_capacity(jobs.len());
                for (index, queued) in jobs.iter().enumerate() {
                    match (queued.job)(&tx) {
                        Ok(result) => results.push(result),
                        Err(ConflictableTransactionError::Abort(e)) => {
                            return Err(ConflictableTransactionError::Abort((index, e)));
                        }
                        Err(ConflictableTransactionError::Conflict) => {
                            return Err(ConflictableTransactionError::Conflict);
                        }
                        Err(ConflictableTransactionError::Storage(e)) => {
                            return Err(ConflictableTransactionError::Storage(e));
                        }
                    }
                }
                Ok(results)
            },
        )
}

/// The trees of one transaction, with the helpers every write uses.
pub(super) struct Tx<'a> {
    pub(super) products: &'a TransactionalTree,
    pub(super) stock: &'a TransactionalTree,
    pub(super) reservations: &'a TransactionalTree,
    pub(super) outbox: &'a TransactionalTree,
    pub(super) by_name: &'a TransactionalTree,
    pub(super) by_category: &'a TransactionalTree,
    pub(super) meta: &'a TransactionalTree,
}

impl Tx<'_> {
    /// One more product in the catalog's count.
    pub(super) fn count_product(&self) -> TxResult<()> {
        let count = match self.meta.get(PRODUCT_COUNT_KEY)? {
            Some(v) => decode_count(&v).map_err(ConflictableTransactionError::Abort)?,
            None => 0,
        };
        self.meta
            .insert(PRODUCT_COUNT_KEY, &(count as u64 + 1).to_be_bytes())?;
        Ok(())
    }

    pub(super) fn put<T: Serialize>(
        &self,
        tree: &TransactionalTree,
        id: Uuid,
        value: &T,
    ) -> TxResult<()> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| ConflictableTransactionError::Abort(Error::corrupt(e.to_string())))?;
        tree.insert(id.as_bytes().as_slice(), bytes)?;
        Ok(())
    }

    pub(super) fn product(&self, id: Uuid) -> TxResult<Product> {
        get_json(self.products, id)?.ok_or(ConflictableTransactionError::Abort(Error::NotFound(id)))
    }

    pub(super) fn stock_of(&self, id: Uuid) -> TxResult<Stock> {
        get_json(self.stock, id)?.ok_or_else(|| {
            ConflictableTransactionError::Abort(Error::corrupt(format!(
                "stock row missing for {id}"
            )))
        })
    }

    pub(super) fn index(&self, p: &Product) -> TxResult<()> {
        self.by_name.insert(name_key(p), &[])?;
        self.by_category.insert(category_key(p), &[])?;
        Ok(())
    }

    pub(super) fn unindex(&self, p: &Product) -> TxResult<()> {
        self.by_name.remove(name_key(p))?;
        self.by_category.remove(category_key(p))?;
        Ok(())
    }

    pub(super) fn enqueue(&self, header: OutboxHeader, payload: Vec<u8>) -> TxResult<()> {
        let id = self.outbox.generate_id()?;
        self.outbox.insert(
            outbox::key(id).as_slice(),
            OutboxRecord { header, payload }.encode(),
        )?;
        Ok(())
    }

    pub(super) fn product_event(
        &self,
        product: &Product,
        kind: ProductEventType,
        cid: &str,
    ) -> TxResult<()> {
        let event = domain::event_for(product, kind, Utc::now());
        let payload = serde_json::to_vec(&event).expect("event serializes");
        self.enqueue(
            OutboxHeader {
                subject: events::product_subject(product.id),
                msg_id: event.event_id.to_string(),
                event_type: kind.as_str().into(),
                correlation_id: cid.into(),
            },
            payload,
        )
    }

    pub(super) fn stock_low(&self, product: &Product, stock: &Stock, cid: &str) -> TxResult<()> {
        let event = StockLowEvent {
            event_id: Uuid::now_v7(),
            event_type: STOCK_LOW.into(),
            schema_version: SCHEMA_VERSION,
            occurred_at: Utc::now(),
            product_id: product.id,
            available_quantity: stock.available(),
            low_stock_threshold: product.low_stock_threshold,
        };
        let payload = serde_json::to_vec(&event).expect("event serializes");
        self.enqueue(
            OutboxHeader {
                subject: events::stock_subject(product.id),
                msg_id: event.event_id.to_string(),
                event_type: STOCK_LOW.into(),
                correlation_id: cid.into(),
            },
            payload,
        )
    }
}

pub(super) fn abort<T>(e: Error) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

pub(super) fn check_version(current: &Product, if_match: Option<u64>) -> TxResult<()> {
    match if_match {
        Some(expected) if expected != current.version => abort(Error::VersionMismatch {
            id: current.id,
            expected,
            current: current.version,
        }),
        _ => Ok(()),
    }
}

pub(super) fn get_json<T: DeserializeOwned>(
    tree: &TransactionalTree,
    id: Uuid,
) -> TxResult<Option<T>> {
    match tree.get(id.as_bytes())? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ConflictableTransactionError::Abort(Error::corrupt(e.to_string()))),
    }
}

pub(super) fn read<T: DeserializeOwned>(tree: &Tree, id: Uuid) -> Result<Option<T>> {
    match tree.get(id.as_bytes())? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::corrupt(e.to_string())),
    }
}
