//! The stock writer's batch (the model is `shared::writer`): every queued write is decided in one
//! round against the books (`Tx`: the round's writes over sled's trees), a failing write is
//! taken out and the rest re-run, the round's outcome is written to sled, then each write's
//! ledger message is published fenced on the lease, all in flight at once, and every write is
//! answered after the acks. `Tx` carries the helpers every write uses.
use std::{
    any::Any,
    cell::RefCell,
    collections::HashMap,
    sync::{Arc, RwLock, RwLockReadGuard},
    time::Duration,
};

use async_nats::jetstream::{self, message::PublishMessage};
use chrono::Utc;
use serde::{Serialize, de::DeserializeOwned};
use shared::events::{self, STOCK_LOW};
use sled::Tree;
use tokio::sync::{Mutex, oneshot};
use uuid::Uuid;

use super::catalog_cache::CatalogCache;
use crate::{
    domain::{Product, Reservation, Stock, StockRow},
    error::{Error, Result},
    lease::{self, Lease},
};

/// Most writes decided in one round and published together.
pub(super) const MAX_BATCH: usize = 256;

/// A write for the writer task: re-runnable (a batch may run more than once), with its result
/// type erased so writes of every kind share one queue.
pub(super) type Job = Box<dyn Fn(&Tx<'_>) -> Result<Erased> + Send>;
pub(super) type Erased = Box<dyn Any + Send>;

pub(super) struct Queued {
    pub(super) job: Job,
    pub(super) reply: oneshot::Sender<Result<Erased>>,
}

/// The cache: the catalog in memory, the books in sled trees.
#[derive(Clone)]
pub(super) struct Trees {
    pub(super) catalog: Arc<RwLock<CatalogCache>>,
    pub(super) stock: Tree,
    pub(super) reservations: Tree,
}

/// What a batch needs to publish its messages.
pub(super) struct Publisher {
    pub(super) nats: async_nats::Client,
    /// The ledger is replicated: one fenced write in flight at a time (see `publish`).
    pub(super) clustered: bool,
    pub(super) lease: Lease,
    pub(super) gate: Arc<Mutex<()>>,
    pub(super) timeout: Duration,
}

/// A message a write publishes: to the ledger (fenced: the write's record) or a StockLow signal.
pub(super) struct Outgoing {
    subject: String,
    payload: Vec<u8>,
    correlation_id: String,
    msg_id: Option<String>,
}

/// One batch of the writer task: decides the jobs in one round, publishes their ledger
/// messages, answers each; a job that aborts is taken out and the rest run again without it.
pub(super) async fn write_batch(trees: Trees, mut jobs: Vec<Queued>, publisher: Publisher) {
    let _gate = publisher.gate.lock().await;
    let Some(fence) = publisher.lease.fence() else {
        let writer = publisher.lease.holder();
        for job in jobs {
            let _ = job.reply.send(Err(Error::NotWriter {
                writer: writer.clone(),
            }));
        }
        return;
    };
    // Each round either commits every remaining job, or takes out the one that aborted.
    while !jobs.is_empty() {
        match run_batch(&trees, &jobs) {
            Ok(results) => {
                let (results, messages): (Vec<_>, Vec<_>) = results.into_iter().unzip();
                let (ledger, signals): (Vec<_>, Vec<_>) = messages
                    .into_iter()
                    .flatten()
                    .partition(|m: &Outgoing| m.msg_id.is_none());
                let published = if shared::nats::is_connected(&publisher.nats) {
                    publisher.publish(ledger, fence).await
                } else {
                    Err("NATS is not connected".to_owned())
                };
                if let Err(error) = &published {
                    tracing::warn!(%error, writes = jobs.len(), "A ledger write failed; its outcome is unknown.");
                    publisher
                        .lease
                        .step_down("a ledger write failed; the books are rebuilt from the stream");
                }
                if published.is_ok() {
                    publisher.lease.wrote();
                }
                for (job, result) in jobs.drain(..).zip(results) {
                    let answer = match &published {
                        Ok(()) => Ok(result),
                        Err(e) => Err(Error::Unavailable(e.clone())),
                    };
                    let _ = job.reply.send(answer);
                }
                if published.is_ok() && !signals.is_empty() {
                    let js = shared::nats::jetstream(publisher.nats.clone());
                    tokio::spawn(publish_signals(js, signals));
                }
            }
            Err(RoundFailed::Job(index, error)) => {
                let _ = jobs.remove(index).reply.send(Err(error));
            }
            Err(RoundFailed::Storage(error)) => {
                // Part of the round may be in sled and none of it in the ledger: the books are
                // rebuilt from the stream.
                tracing::error!(%error, writes = jobs.len(), "Writing a batch to the cache failed.");
                publisher
                    .lease
                    .step_down("writing the books failed; they are rebuilt from the stream");
                let error = error.to_string();
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(Error::corrupt(error.clone())));
                }
            }
        }
    }
}

impl Publisher {
    /// Publishes `messages` in order, fenced on lease `fence`; `Ok` when every one is
    /// acknowledged. On a single replica all are in flight at once. A replicated stream refuses
    /// a write that checks a subject's sequence while another write checking the same subject
    /// is in flight (error 10164), and every fenced write checks the lease subject: there they
    /// go one at a time, and one that met the heartbeat in flight is sent again.
    async fn publish(&self, messages: Vec<Outgoing>, fence: u64) -> Result<(), String> {
        if self.clustered {
            return self.publish_one_by_one(messages, fence).await;
        }
        let sent = tokio::time::timeout(self.timeout, async {
            let mut acks = Vec::with_capacity(messages.len());
            for m in messages {
                let message = PublishMessage::build()
                    .payload(m.payload.into())
                    .header(events::HEADER_CORRELATION_ID, m.correlation_id.as_str());
                let ack = shared::nats::jetstream(self.nats.clone())
                    .send_publish(m.subject, lease::fenced(message, fence))
                    .await
                    .map_err(|e| e.to_string())?;
                acks.push(ack);
            }
            for ack in futures::future::join_all(acks.into_iter().map(|a| a.into_future())).await {
                ack.map_err(refused)?;
            }
            Ok(())
        })
        .await;
        sent.unwrap_or_else(|_| Err("the ledger did not acknowledge in time".into()))
    }
}

impl Publisher {
    async fn publish_one_by_one(&self, messages: Vec<Outgoing>, fence: u64) -> Result<(), String> {
        let js = shared::nats::jetstream(self.nats.clone());
        let sent = tokio::time::timeout(self.timeout, async {
            for m in messages {
                // The other write checking the lease is the heartbeat; under load its commit can
                // take tens of milliseconds, so this waits up to half a second for it.
                let patience = std::time::Instant::now() + std::time::Duration::from_millis(500);
                let mut pause = std::time::Duration::from_millis(1);
                loop {
                    let message = PublishMessage::build()
                        .payload(m.payload.clone().into())
                        .header(events::HEADER_CORRELATION_ID, m.correlation_id.as_str());
                    let ack = async {
                        js.send_publish(m.subject.clone(), lease::fenced(message, fence))
                            .await?
                            .await
                    };
                    match ack.await {
                        Ok(_) => break,
                        Err(e)
                            if lease::is_in_flight_conflict(&e)
                                && std::time::Instant::now() < patience =>
                        {
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(std::time::Duration::from_millis(20));
                        }
                        Err(e) => return Err(refused(e)),
                    }
                }
            }
            Ok(())
        })
        .await;
        sent.unwrap_or_else(|_| Err("the ledger did not acknowledge in time".into()))
    }
}

/// Why a ledger write was refused, for the caller's log and answer.
fn refused(e: jetstream::context::PublishError) -> String {
    if lease::is_wrong_sequence(&e) {
        "another instance took the stock writer lease".to_owned()
    } else {
        e.to_string()
    }
}

impl Outgoing {
    /// A StockLow signal (deduplicated by its event id).
    pub(super) fn stock_low(product: &Product, stock: &Stock, cid: &str) -> Self {
        let event = crate::domain::stock_low_event(product, stock, Utc::now());
        Self {
            subject: events::stock_subject(product.id),
            payload: serde_json::to_vec(&event).expect("serializes"),
            correlation_id: cid.to_owned(),
            msg_id: Some(event.event_id.to_string()),
        }
    }
}

/// StockLow signals, after the writes that caused them were acknowledged (best effort: a
/// failure is logged); deduplicated by id. The one publisher of StockLow, for the writer's
/// batches and the catalog's writes alike.
pub(super) async fn publish_signals(js: jetstream::Context, signals: Vec<Outgoing>) {
    for m in signals {
        let message = PublishMessage::build()
            .payload(m.payload.into())
            .message_id(m.msg_id.as_deref().unwrap_or_default())
            .header(events::HEADER_EVENT_TYPE, STOCK_LOW)
            .header(events::HEADER_CORRELATION_ID, m.correlation_id.as_str());
        let sent = async { js.send_publish(m.subject.clone(), message).await?.await };
        if let Err(error) = sent.await {
            tracing::warn!(subject = %m.subject, %error, "A StockLow signal was not published.");
        }
    }
}

/// Why a round of a batch failed.
pub(super) enum RoundFailed {
    /// The job at this index failed its checks (or could not read the books): it is answered
    /// with the error, and the round runs again without it.
    Job(usize, Error),
    /// Writing the round's outcome to sled failed: every job fails.
    Storage(Error),
}

/// One round: runs `jobs` in order against the books as this round left them (`Tx`), then
/// writes what they decided to sled, unless a job fails.
///
/// Not a sled transaction: the writer task is the only writer of the books while it holds the
/// gate, so nothing can conflict, and the books are rebuilt from the ledger at every start and
/// after any failed publish, so what sled keeps across a crash does not matter. A sled
/// transaction (or batch) seals one of sled's log buffers per commit and writes it out on a
/// background thread: ~70 µs per reservation at one in flight, where plain inserts take a few.
fn run_batch(trees: &Trees, jobs: &[Queued]) -> Result<Vec<(Erased, Vec<Outgoing>)>, RoundFailed> {
    let catalog = trees.catalog();
    let tx = Tx {
        catalog: &catalog,
        trees,
        stock: RefCell::default(),
        reservations: RefCell::default(),
        outgoing: RefCell::default(),
    };
    let mut results = Vec::with_capacity(jobs.len());
    for (index, queued) in jobs.iter().enumerate() {
        match (queued.job)(&tx) {
            Ok(result) => results.push((result, tx.outgoing.take())),
            Err(error) => return Err(RoundFailed::Job(index, error)),
        }
    }
    tx.write().map_err(RoundFailed::Storage)?;
    Ok(results)
}

/// The books as one round sees them: what its jobs wrote so far, over sled's trees.
pub(super) struct Tx<'a> {
    pub(super) catalog: &'a CatalogCache,
    trees: &'a Trees,
    stock: RefCell<HashMap<Uuid, StockRow>>,
    reservations: RefCell<HashMap<Uuid, Reservation>>,
    outgoing: RefCell<Vec<Outgoing>>,
}

impl Trees {
    /// The catalog, read-locked (a reader never waits long: the follower's writes are short).
    pub(super) fn catalog(&self) -> RwLockReadGuard<'_, CatalogCache> {
        self.catalog.read().expect("catalog lock")
    }
}

impl Tx<'_> {
    /// Writes the round's outcome to sled, key by key.
    fn write(&self) -> Result<()> {
        for (id, row) in self.stock.borrow().iter() {
            self.trees.stock.insert(id.as_bytes(), json(row)?)?;
        }
        for (id, r) in self.reservations.borrow().iter() {
            self.trees.reservations.insert(id.as_bytes(), json(r)?)?;
        }
        Ok(())
    }

    pub(super) fn product(&self, id: Uuid) -> Result<Product> {
        self.catalog
            .get(id)
            .map(|p| Product::clone(p))
            .ok_or(Error::NotFound(id))
    }

    /// The product's stock as the books say now.
    pub(super) fn stock_of(&self, product: &Product) -> Result<Stock> {
        let row = match self.stock.borrow().get(&product.id) {
            Some(row) => *row,
            None => read::<StockRow>(&self.trees.stock, product.id)?.unwrap_or_default(),
        };
        Ok(row.stock(product.initial_stock, product.low_stock_threshold))
    }

    /// An order's reservation as the books say now.
    pub(super) fn reservation_of(&self, order_id: Uuid) -> Result<Option<Reservation>> {
        match self.reservations.borrow().get(&order_id) {
            Some(r) => Ok(Some(r.clone())),
            None => read::<Reservation>(&self.trees.reservations, order_id),
        }
    }

    /// Records the stock the writer decided (held units; on hand folds every commit so far).
    pub(super) fn put_stock(&self, id: Uuid, stock: &Stock) -> Result<()> {
        self.stock.borrow_mut().insert(id, StockRow::of(stock));
        Ok(())
    }

    /// Records an adjusted on-hand count and publishes it to the ledger.
    pub(super) fn count(&self, id: Uuid, stock: &Stock, cid: &str) -> Result<()> {
        self.put_stock(id, stock)?;
        let body = serde_json::json!({ "onHand": stock.on_hand });
        self.publish(events::ledger_stock_subject(id), &body, cid, None)
    }

    /// Records an order's reservation and publishes it to the ledger.
    pub(super) fn reservation(&self, order_id: Uuid, r: &Reservation, cid: &str) -> Result<()> {
        self.reservations.borrow_mut().insert(order_id, r.clone());
        self.publish(events::ledger_reservation_subject(order_id), r, cid, None)
    }

    pub(super) fn stock_low(&self, product: &Product, stock: &Stock, cid: &str) -> Result<()> {
        self.outgoing
            .borrow_mut()
            .push(Outgoing::stock_low(product, stock, cid));
        Ok(())
    }

    fn publish<T: Serialize>(
        &self,
        subject: String,
        body: &T,
        cid: &str,
        msg_id: Option<String>,
    ) -> Result<()> {
        let payload = serde_json::to_vec(body).expect("serializes");
        self.outgoing.borrow_mut().push(Outgoing {
            subject,
            payload,
            correlation_id: cid.to_owned(),
            msg_id,
        });
        Ok(())
    }
}

pub(super) fn json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::corrupt(e.to_string()))
}

pub(super) fn read<T: DeserializeOwned>(tree: &Tree, id: Uuid) -> Result<Option<T>> {
    match tree.get(id.as_bytes())? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::corrupt(e.to_string())),
    }
}
