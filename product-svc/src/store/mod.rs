//! product-svc's cache of the catalog and the stock books, in sled, and every write to the
//! streams that are their record (`PRODUCTS` for the catalog, `LEDGER` for stock).
//!
//! The catalog is cached in memory (`catalog_cache.rs` says why); the stock books in sled trees:
//! `stock` (id → `StockRow`), `reservations` (order id → request + outcome). The cache is
//! rebuilt from the streams at every start (`open` wipes it): the streams are purged by
//! retention, and a purge leaves no trace an old cache could notice, so an old copy of the data
//! dir must never win over the stream.
//!
//! Who writes what:
//! - **Catalog writes** (create, update, discontinue) may run on any instance: each is a
//!   compare-and-set publish on the product's subject (`catalog.rs`); the cache follows
//!   `PRODUCTS` (`apply.rs`), and the write answers once this instance's cache shows it.
//! - **Stock writes** (adjust, reserve, release, commit) run on the stock writer only
//!   (`lease.rs`): queued to one writer task that decides a batch in one round of its books,
//!   publishes each write's ledger message fenced on the lease, pipelined, and answers after
//!   the acks (`writer.rs`). A write that fails its checks is taken out and the rest re-run. A
//!   publish whose outcome is unknown leaves the cache ahead of the stream: the instance steps
//!   down and rebuilds the books from the stream.
//! - **Followers** apply the ledger to their books (`apply.rs`, driven by `cache.rs`).
mod apply;
mod catalog;
mod catalog_cache;
mod orders;
mod reservations;
mod writer;

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, stream::Stream};
use shared::{storage::StorageError, writer::Writer};
use tokio::sync::{Mutex, OnceCell, oneshot, watch};

use crate::{
    domain::{Product, Stock, StockRow},
    error::{Error, Result},
    lease::Lease,
};

use writer::{Erased, Job, MAX_BATCH, Queued, Trees, Tx, write_batch};

pub use apply::StreamMessage;
pub use orders::Orders;

/// A product with its stock, as the APIs show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub product: Product,
    pub stock: Stock,
}

/// How far this instance's cache has applied each stream (stream sequences).
#[derive(Clone)]
pub struct Progress {
    pub catalog: watch::Sender<u64>,
    pub ledger: watch::Sender<u64>,
}

#[derive(Clone)]
pub struct Store {
    trees: Trees,
    writes: Writer<Queued>,
    nats: async_nats::Client,
    js: jetstream::Context,
    lease: Lease,
    progress: Progress,
    /// Held by a write batch from its decision to its answers, and by a rebuild of the books:
    /// a rebuild never starts under a write, nor a write under a rebuild.
    gate: Arc<Mutex<()>>,
    /// How long a write or a read barrier waits on NATS.
    timeout: Duration,
    streams: Arc<Streams>,
    /// The order stream, for reserves of orders old enough to have been compacted (`None`:
    /// nothing is compacted).
    orders: Option<Orders>,
    /// Replicas of the streams this store creates when they do not exist.
    replicas: usize,
    /// Held reservations whose order was not on the order stream when they were held, and
    /// since when this instance has known of them (`unrecorded.rs` watches them).
    unrecorded: Arc<std::sync::Mutex<std::collections::HashMap<uuid::Uuid, std::time::Instant>>>,
    db: sled::Db,
}

/// The record's streams, found (or created) on first use.
#[derive(Default)]
struct Streams {
    catalog: OnceCell<Stream>,
    ledger: OnceCell<Stream>,
}

impl Store {
    /// Opens the cache at `path`, emptied (see the module doc).
    pub fn open(
        path: &std::path::Path,
        cache_bytes: u64,
        nats: async_nats::Client,
        lease: Lease,
        timeout: Duration,
        replicas: usize,
        orders: Option<Orders>,
    ) -> Result<Self> {
        match std::fs::remove_dir_all(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::corrupt(format!("cannot empty the cache: {e}"))),
        }
        // A cache: nothing here needs to reach the disk, so sled's periodic flush is off.
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .flush_every_ms(None)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let trees = Trees {
            catalog: Default::default(),
            stock: db.open_tree("stock")?,
            reservations: db.open_tree("reservations")?,
        };
        let js = shared::nats::jetstream(nats.clone());
        let gate = Arc::new(Mutex::new(()));
        let writes = {
            let (trees, nats, lease, gate) =
                (trees.clone(), nats.clone(), lease.clone(), gate.clone());
            Writer::spawn(MAX_BATCH, move |jobs| {
                write_batch(
                    trees.clone(),
                    jobs,
                    writer::Publisher {
                        nats: nats.clone(),
                        clustered: replicas > 1,
                        lease: lease.clone(),
                        gate: gate.clone(),
                        timeout,
                    },
                )
            })
        };
        Ok(Self {
            trees,
            writes,
            nats,
            js,
            lease,
            progress: Progress {
                catalog: watch::Sender::new(0),
                ledger: watch::Sender::new(0),
            },
            gate,
            timeout,
            streams: Default::default(),
            orders,
            replicas,
            unrecorded: Default::default(),
            db,
        })
    }

    /// sled's files on disk, in bytes (0 if it cannot tell).
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or_default()
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    pub fn product_count(&self) -> usize {
        self.trees.catalog().count()
    }

    /// The product count, once sled has answered a read (readiness).
    pub fn check(&self) -> Result<usize> {
        self.trees.stock.first()?;
        Ok(self.product_count())
    }

    /// Applies the queued writes, stops the writer (on shutdown).
    pub async fn close(&self) {
        self.writes.close().await;
        let _ = self.db.flush_async().await;
    }

    /// Waits until this instance's cache shows every write acknowledged before the call: the
    /// catalog's, and (on a follower) the ledger's. Read-your-writes on any instance.
    pub async fn sync(&self) -> Result<()> {
        self.sync_catalog().await?;
        if self.lease.fence().is_some() {
            return Ok(());
        }
        let ledger = self.ledger_stream().await?.clone();
        self.barrier(ledger, &self.progress.ledger).await
    }

    /// Waits until `progress` reaches the last sequence `stream` holds now.
    async fn barrier(&self, mut stream: Stream, progress: &watch::Sender<u64>) -> Result<()> {
        let name = stream.cached_info().config.name.clone();
        let last = tokio::time::timeout(self.timeout, stream.info())
            .await
            .map_err(|_| Error::Unavailable(format!("reading {name} timed out")))?
            .map_err(|e| Error::Unavailable(e.to_string()))?
            .state
            .last_sequence;
        tokio::time::timeout(self.timeout, wait_for(progress, last))
            .await
            .map_err(|_| Error::Unavailable(format!("the cache is catching up with {name}")))
    }

    pub async fn ledger_stream(&self) -> Result<&Stream> {
        self.streams
            .ledger
            .get_or_try_init(|| async {
                let config = shared::streams::ledger(self.replicas);
                tokio::time::timeout(self.timeout, self.js.get_or_create_stream(config))
                    .await
                    .map_err(|_| Error::Unavailable("reaching LEDGER timed out".into()))?
                    .map_err(|e| Error::Unavailable(e.to_string()))
            })
            .await
    }

    /// Runs `f` in the writer's next batch; its ledger messages are acknowledged by JetStream
    /// when this returns `Ok`.
    async fn transact<T: Send + 'static>(
        &self,
        f: impl Fn(&Tx<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        if self.lease.fence().is_none() {
            return Err(self.not_writer());
        }
        self.connected()?;
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

    /// Fails at once while NATS is not connected: a publish made now would wait in the
    /// client's buffer and could be stored after its caller was told 503.
    fn connected(&self) -> Result<()> {
        if shared::nats::is_connected(&self.nats) {
            Ok(())
        } else {
            Err(Error::Unavailable("NATS is not connected".into()))
        }
    }

    fn not_writer(&self) -> Error {
        Error::NotWriter {
            writer: self.lease.holder(),
        }
    }

    /// A product's stock row as the cache holds it (default: nothing recorded yet).
    fn stock_row(&self, id: uuid::Uuid) -> Result<StockRow> {
        Ok(writer::read::<StockRow>(&self.trees.stock, id)?.unwrap_or_default())
    }
}

/// Waits until `progress` reaches `seq`.
pub async fn wait_for(progress: &watch::Sender<u64>, seq: u64) {
    let mut seen = progress.subscribe();
    let _ = seen.wait_for(|applied| *applied >= seq).await;
}
