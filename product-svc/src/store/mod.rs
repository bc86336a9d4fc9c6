//! All persistence of product-svc, behind one small API so sled (weakly maintained) can be swapped.
//!
//! Trees: `products` (id → catalog JSON), `stock` (id → stock JSON), `reservations`
//! (order id → request + outcome), `outbox` (sled id → event), the list indexes `by_name`
//! (name 0 id) and `by_category` (category 0 name 0 id), and `meta` (the product count). Every
//! change and the events it causes are written in **one** sled transaction; a write returns
//! only after its flush, so "2xx" means "on disk", and the relay can never miss or invent an
//! event.
//!
//! Writes are queued to one writer task that runs every waiting write in **one** sled
//! transaction. Why: sled seals and writes its log buffer twice per transaction (`pin_log`), so a
//! transaction per request costs two log writes, `sync_file_range` calls and thread hand-offs
//! each; under load that, not our code, was most of product-svc's CPU. A write that fails its
//! checks (`Abort`) is taken out of the batch and the rest re-run without it, so each write is
//! still all-or-nothing and sees exactly the writes committed before it.
mod catalog;
mod keys;
mod reservations;
#[cfg(test)]
mod tests;
mod writer;

use std::sync::Arc;

use shared::{durability::GroupCommit, outbox, storage::StorageError, writer::Writer};
use sled::Tree;
use tokio::sync::{Notify, oneshot};

use crate::{
    domain::{Product, Stock},
    error::{Error, Result},
};

use keys::{PRODUCT_COUNT_KEY, decode_count};
use writer::{Erased, Job, MAX_BATCH, Queued, Trees, Tx, TxResult, write_batch};

/// A product with its stock, as the APIs show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub product: Product,
    pub stock: Stock,
}

#[derive(Clone)]
pub struct Store {
    /// Shared with the writer task, which is the only one to write them.
    trees: Trees,
    commit: GroupCommit,
    writes: Writer<Queued>,
    relay_wake: Arc<Notify>,
    /// How far the outbox is flushed (the relay publishes no further).
    flushed: outbox::Flushed,
    db: sled::Db,
}

impl Store {
    pub fn open(path: &std::path::Path, cache_bytes: u64) -> Result<Self> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()?;
        let trees = Trees {
            products: db.open_tree("products")?,
            stock: db.open_tree("stock")?,
            reservations: db.open_tree("reservations")?,
            outbox: db.open_tree("outbox")?,
            by_name: db.open_tree("by_name")?,
            by_category: db.open_tree("by_category")?,
            meta: db.open_tree("meta")?,
        };
        if trees.meta.get(PRODUCT_COUNT_KEY)?.is_none() {
            // A store from before the count was kept: count once (before the writer starts).
            let count = trees.products.len() as u64;
            trees.meta.insert(PRODUCT_COUNT_KEY, &count.to_be_bytes())?;
        }
        let commit = GroupCommit::start(db.clone());
        let flushed = outbox::Flushed::open(&trees.outbox)?;
        let writes = {
            let (trees, commit, flushed) = (trees.clone(), commit.clone(), flushed.clone());
            Writer::spawn(MAX_BATCH, move |jobs| {
                write_batch(trees.clone(), jobs, commit.clone(), flushed.clone())
            })
        };
        Ok(Self {
            trees,
            commit,
            writes,
            relay_wake: Arc::new(Notify::new()),
            flushed,
            db,
        })
    }

    /// sled's files on disk, in bytes (0 if it cannot tell).
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or_default()
    }

    pub fn outbox_tree(&self) -> Tree {
        self.trees.outbox.clone()
    }

    /// How far the outbox is flushed: the relay's bound.
    pub fn outbox_flushed(&self) -> outbox::Flushed {
        self.flushed.clone()
    }

    pub fn relay_wake(&self) -> Arc<Notify> {
        self.relay_wake.clone()
    }

    pub fn is_empty(&self) -> bool {
        self.trees.products.is_empty()
    }

    pub fn product_count(&self) -> Result<usize> {
        let count = self.trees.meta.get(PRODUCT_COUNT_KEY)?;
        count.map_or(Ok(0), |v| decode_count(&v))
    }

    /// Applies the queued writes, stops the writer, final flush (on shutdown).
    pub async fn close(&self) {
        self.writes.close().await;
        self.commit.close().await;
    }

    /// Wakes the relay for anything a write queued (the writer flushed before answering).
    fn wake_relay(&self, wrote_events: bool) {
        if wrote_events {
            self.relay_wake.notify_one();
        }
    }

    /// Runs `f` in the writer's next batch; its writes are committed and flushed when this
    /// returns `Ok`.
    async fn transact<T: Send + 'static>(
        &self,
        f: impl Fn(&Tx<'_>) -> TxResult<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |t| f(t).map(|v| Box::new(v) as Erased));
        self.writes
            .send(Queued { job, reply })
            .await
            .map_err(|_| Error::Storage(StorageError::Stopped("the store's writer")))?;
        let done = answer
            .await
            .map_err(|_| Error::Storage(StorageError::Stopped("the store's writer")))??;
        Ok(*done
            .downcast::<T>()
            .expect("a job answers with its own type"))
    }
}
