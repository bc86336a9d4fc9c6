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
use std::{any::Any, sync::Arc};

use chrono::Utc;
use serde::{Serialize, de::DeserializeOwned};
use shared::{
    correlation,
    durability::{FlusherStopped, GroupCommit},
    events::{self, ProductEventType, SCHEMA_VERSION, STOCK_LOW, StockLowEvent},
    outbox::{self, OutboxHeader, OutboxRecord},
};
use sled::{
    Tree,
    transaction::{
        ConflictableTransactionError, TransactionError, Transactional, TransactionalTree,
    },
};
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

use crate::{
    domain::{
        self, Failure, FailureCode, NewProduct, Product, Reservation, ReservationStatus, Stock,
    },
    error::{Error, Result},
};

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
    writes: mpsc::Sender<Queued>,
    relay_wake: Arc<Notify>,
    db: sled::Db,
}

/// In `meta`: how many products the catalog holds (discontinued ones stay), moved by the
/// transaction that creates one, so readiness and listings read it instead of scanning.
const PRODUCT_COUNT_KEY: &[u8] = b"products";

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<Error>>;

/// Most writes run in one transaction (bounds how long the writer holds sled's write lock).
const MAX_BATCH: usize = 256;

/// A write for the writer task: re-runnable (a batch may run more than once), with its result
/// type erased so writes of every kind share one queue.
type Job = Box<dyn Fn(&Tx<'_>) -> TxResult<Erased> + Send>;
type Erased = Box<dyn Any + Send>;

struct Queued {
    job: Job,
    reply: oneshot::Sender<Result<Erased>>,
}

impl Store {
    pub fn open(path: &std::path::Path, cache_bytes: u64) -> Result<Self> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()?;
        let (writes, queue) = mpsc::channel(4 * MAX_BATCH);
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
        tokio::spawn(writer(trees.clone(), queue, commit.clone()));
        Ok(Self {
            trees,
            commit,
            writes,
            relay_wake: Arc::new(Notify::new()),
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

    /// Final flush on shutdown.
    pub async fn close(&self) {
        self.commit.close().await;
    }

    /// Wakes the relay for anything a write queued (the writer flushed before answering).
    fn wake_relay(&self, wrote_events: bool) {
        if wrote_events {
            self.relay_wake.notify_one();
        }
    }

    // -----------------------------------------------------------------------------------------
    // Catalog

    pub async fn create(&self, input: &NewProduct) -> Result<Entry> {
        let id = Uuid::new_v4();
        let cid = correlation::current_or_new();
        let input = input.clone();
        let entry = self
            .transact(move |t| {
                let now = Utc::now();
                let (product, mut stock) = domain::new_product(id, &input, now);
                let crossed = domain::update_low_flag(&mut stock, product.low_stock_threshold);
                t.put(t.products, id, &product)?;
                t.put(t.stock, id, &stock)?;
                t.index(&product)?;
                t.count_product()?;
                t.product_event(&product, ProductEventType::ProductCreated, &cid)?;
                if crossed {
                    t.stock_low(&product, &stock, &cid)?;
                }
                Ok(Entry { product, stock })
            })
            .await?;
        self.wake_relay(true);
        tracing::info!(product_id = %id, version = 1, "Product created.");
        Ok(entry)
    }

    pub fn get(&self, id: Uuid) -> Result<Option<Entry>> {
        let Some(product) = read::<Product>(&self.trees.products, id)? else {
            return Ok(None);
        };
        let stock = read::<Stock>(&self.trees.stock, id)?
            .ok_or_else(|| Error::Corrupt(format!("stock row missing for {id}")))?;
        Ok(Some(Entry { product, stock }))
    }

    pub fn get_many(&self, ids: &[Uuid]) -> Result<Vec<Option<Entry>>> {
        ids.iter().map(|id| self.get(*id)).collect()
    }

    /// One page of products sorted by name (optionally of one category), and the total count.
    /// The whole catalog's count is kept; a category's is counted on its index prefix.
    pub fn list(
        &self,
        category: Option<&str>,
        page: usize,
        page_size: usize,
    ) -> Result<(Vec<Entry>, usize)> {
        let skip = (page - 1).saturating_mul(page_size);
        let (keys, total): (Keys, usize) = match category {
            Some(c) => {
                let mut prefix = c.as_bytes().to_vec();
                prefix.push(0);
                let total = self.trees.by_category.scan_prefix(&prefix).count();
                (Box::new(self.trees.by_category.scan_prefix(prefix)), total)
            }
            None => (Box::new(self.trees.by_name.iter()), self.product_count()?),
        };
        let mut items = Vec::with_capacity(page_size.min(100));
        for kv in keys.skip(skip).take(page_size) {
            let (key, _) = kv?;
            if let Some(entry) = self.get(id_from_index_key(&key)?)? {
                items.push(entry);
            }
        }
        Ok((items, total))
    }

    pub async fn update(
        &self,
        id: Uuid,
        fields: &domain::CatalogFields,
        if_match: Option<u64>,
    ) -> Result<Entry> {
        let cid = correlation::current_or_new();
        let fields = fields.clone();
        let (entry, changed) = self
            .transact(move |t| {
                let current = t.product(id)?;
                check_version(&current, if_match)?;
                if current.deleted {
                    return abort(Error::Discontinued(id));
                }
                let mut stock = t.stock_of(id)?;
                let Some(next) = domain::apply_update(&current, &fields, Utc::now()) else {
                    return Ok((
                        Entry {
                            product: current,
                            stock,
                        },
                        false,
                    ));
                };
                t.unindex(&current)?;
                t.index(&next)?;
                t.put(t.products, id, &next)?;
                if domain::update_low_flag(&mut stock, next.low_stock_threshold) {
                    t.stock_low(&next, &stock, &cid)?;
                }
                t.put(t.stock, id, &stock)?;
                t.product_event(&next, ProductEventType::ProductUpdated, &cid)?;
                Ok((
                    Entry {
                        product: next,
                        stock,
                    },
                    true,
                ))
            })
            .await?;
        if changed {
            self.wake_relay(true);
            tracing::info!(product_id = %id, version = entry.product.version, "Product updated.");
        }
        Ok(entry)
    }

    /// Discontinues a product: kept, marked deleted, no longer orderable. Idempotent.
    pub async fn discontinue(&self, id: Uuid, if_match: Option<u64>) -> Result<Entry> {
        let cid = correlation::current_or_new();
        let (entry, changed) = self
            .transact(move |t| {
                let current = t.product(id)?;
                check_version(&current, if_match)?;
                let stock = t.stock_of(id)?;
                if current.deleted {
                    return Ok((
                        Entry {
                            product: current,
                            stock,
                        },
                        false,
                    ));
                }
                let next = Product {
                    deleted: true,
                    version: current.version + 1,
                    updated_at: Utc::now(),
                    ..current
                };
                t.put(t.products, id, &next)?;
                t.product_event(&next, ProductEventType::ProductDeleted, &cid)?;
                Ok((
                    Entry {
                        product: next,
                        stock,
                    },
                    true,
                ))
            })
            .await?;
        if changed {
            self.wake_relay(true);
            tracing::info!(product_id = %id, version = entry.product.version, "Product discontinued.");
        }
        Ok(entry)
    }

    /// Restock (+) or write-off (−) of on-hand stock.
    pub async fn adjust_stock(&self, id: Uuid, delta: i64) -> Result<Entry> {
        let cid = correlation::current_or_new();
        let (entry, crossed) = self
            .transact(move |t| {
                let product = t.product(id)?;
                let stock = t.stock_of(id)?;
                let mut next = domain::adjust(stock, delta)
                    .map_err(|e| ConflictableTransactionError::Abort(e.into()))?;
                let crossed = domain::update_low_flag(&mut next, product.low_stock_threshold);
                if crossed {
                    t.stock_low(&product, &next, &cid)?;
                }
                t.put(t.stock, id, &next)?;
                Ok((
                    Entry {
                        product,
                        stock: next,
                    },
                    crossed,
                ))
            })
            .await?;
        self.wake_relay(crossed);
        tracing::info!(product_id = %id, delta, on_hand = entry.stock.on_hand, "Stock adjusted.");
        Ok(entry)
    }

    // -----------------------------------------------------------------------------------------
    // Reservations

    /// Reserves every item or none. `items` must be merged (`domain::merge_items`). Returns the
    /// stored outcome; a different request under a known order id is a `RequestMismatch` failure.
    pub async fn reserve(&self, order_id: Uuid, items: &[(Uuid, i64)]) -> Result<Reservation> {
        let cid = correlation::current_or_new();
        let items = items.to_vec();
        let outcome = self
            .transact(move |t| {
                let items = items.as_slice();
                if let Some(existing) = get_json::<Reservation>(t.reservations, order_id)? {
                    if existing.items == items {
                        return Ok(existing);
                    }
                    let reason = if existing.status == ReservationStatus::Released
                        && existing.items.is_empty()
                    {
                        format!("order {order_id} was already released; it cannot reserve stock")
                    } else {
                        format!("order {order_id} already reserved a different set of items")
                    };
                    return Ok(Reservation {
                        items: items.to_vec(),
                        status: ReservationStatus::Failed,
                        failure: Some(Failure {
                            code: FailureCode::RequestMismatch,
                            reason,
                            failed_product_ids: Vec::new(),
                        }),
                        closed_at: None,
                    });
                }
                let mut state = Vec::with_capacity(items.len());
                for (id, _) in items {
                    let product = get_json::<Product>(t.products, *id)?;
                    let entry = match product {
                        Some(product) => Some((product, t.stock_of(*id)?)),
                        None => None,
                    };
                    state.push(entry);
                }
                let reservation = match domain::plan_reservation(items, &state) {
                    Ok(planned) => {
                        for (((id, _), next), before) in items.iter().zip(&planned).zip(&state) {
                            let (product, before) = before.as_ref().expect("planned items exist");
                            if next.low && !before.low {
                                t.stock_low(product, next, &cid)?;
                            }
                            t.put(t.stock, *id, next)?;
                        }
                        Reservation {
                            items: items.to_vec(),
                            status: ReservationStatus::Active,
                            failure: None,
                            closed_at: None,
                        }
                    }
                    Err(failure) => Reservation {
                        items: items.to_vec(),
                        status: ReservationStatus::Failed,
                        failure: Some(failure),
                        closed_at: Some(Utc::now()),
                    },
                };
                t.put(t.reservations, order_id, &reservation)?;
                Ok(reservation)
            })
            .await?;
        self.wake_relay(true);
        Ok(outcome)
    }

    /// Gives an order's stock back. Idempotent; an unknown order leaves a tombstone so a late
    /// (retried) reserve for it cannot hold stock that nobody will release.
    pub async fn release(&self, order_id: Uuid) -> Result<bool> {
        let cid = correlation::current_or_new();
        let released = self
            .transact(move |t| {
                let Some(mut reservation) = get_json::<Reservation>(t.reservations, order_id)?
                else {
                    t.put(
                        t.reservations,
                        order_id,
                        &Reservation {
                            items: Vec::new(),
                            status: ReservationStatus::Released,
                            failure: None,
                            closed_at: Some(Utc::now()),
                        },
                    )?;
                    return Ok(false);
                };
                if reservation.status != ReservationStatus::Active {
                    return Ok(false);
                }
                for (id, qty) in &reservation.items {
                    let product = t.product(*id)?;
                    let mut stock = t.stock_of(*id)?;
                    stock.reserved = (stock.reserved - qty).max(0);
                    if domain::update_low_flag(&mut stock, product.low_stock_threshold) {
                        t.stock_low(&product, &stock, &cid)?;
                    }
                    t.put(t.stock, *id, &stock)?;
                }
                reservation.status = ReservationStatus::Released;
                reservation.closed_at = Some(Utc::now());
                t.put(t.reservations, order_id, &reservation)?;
                Ok(true)
            })
            .await?;
        Ok(released)
    }

    /// Removes reservations that hold nothing and closed before `horizon` (see `domain::expired`),
    /// and stamps closed ones from before retention existed so they expire in turn. Deletes go
    /// through the writer in chunks, re-checked inside the transaction. Returns how many went.
    pub async fn compact(&self, horizon: chrono::DateTime<Utc>) -> Result<usize> {
        let mut expired = Vec::new();
        let mut unstamped = Vec::new();
        for entry in self.trees.reservations.iter() {
            let (key, value) = entry?;
            let Ok(id) = Uuid::from_slice(&key) else {
                continue;
            };
            let reservation: Reservation =
                serde_json::from_slice(&value).map_err(|e| Error::Corrupt(e.to_string()))?;
            if domain::expired(&reservation, horizon) {
                expired.push(id);
            } else if reservation.status != ReservationStatus::Active
                && reservation.closed_at.is_none()
            {
                unstamped.push(id);
            }
        }
        let mut removed = 0;
        for chunk in expired.chunks(256) {
            let chunk = chunk.to_vec();
            removed += self
                .transact(move |t| {
                    let mut n = 0;
                    for id in &chunk {
                        let still = get_json::<Reservation>(t.reservations, *id)?
                            .is_some_and(|r| domain::expired(&r, horizon));
                        if still {
                            t.reservations.remove(id.as_bytes().as_slice())?;
                            n += 1;
                        }
                    }
                    Ok(n)
                })
                .await?;
        }
        for chunk in unstamped.chunks(256) {
            let chunk = chunk.to_vec();
            self.transact(move |t| {
                for id in &chunk {
                    if let Some(mut r) = get_json::<Reservation>(t.reservations, *id)?
                        && r.status != ReservationStatus::Active
                        && r.closed_at.is_none()
                    {
                        r.closed_at = Some(Utc::now());
                        t.put(t.reservations, *id, &r)?;
                    }
                }
                Ok(())
            })
            .await?;
        }
        Ok(removed)
    }

    /// The reservation recorded for an order, if any.
    pub fn reservation(&self, order_id: Uuid) -> Result<Option<Reservation>> {
        self.trees
            .reservations
            .get(order_id.as_bytes())?
            .map(|v| serde_json::from_slice(&v).map_err(|e| Error::Corrupt(e.to_string())))
            .transpose()
    }

    /// Every reservation's order id and status (for the audit), in key order.
    pub fn reservation_statuses(
        &self,
    ) -> impl Iterator<Item = Result<(Uuid, ReservationStatus)>> + use<> {
        self.trees.reservations.iter().map(|entry| {
            let (key, value) = entry?;
            let id = Uuid::from_slice(&key).map_err(|e| Error::Corrupt(e.to_string()))?;
            let reservation: Reservation =
                serde_json::from_slice(&value).map_err(|e| Error::Corrupt(e.to_string()))?;
            Ok((id, reservation.status))
        })
    }

    /// Turns a shipped order's reservation into an on-hand decrement, in one transaction.
    /// `Ok(false)` if it was already committed; refused for an unknown or released one.
    pub async fn commit(&self, order_id: Uuid) -> Result<bool> {
        self.transact(move |t| {
            let reservation = get_json::<Reservation>(t.reservations, order_id)?;
            let apply = domain::commit_decision(reservation.as_ref()).map_err(|why| {
                ConflictableTransactionError::Abort(Error::NotCommittable { order_id, why })
            })?;
            let Some(mut reservation) = reservation.filter(|_| apply) else {
                return Ok(false);
            };
            for (id, qty) in &reservation.items {
                let stock = t.stock_of(*id)?;
                t.put(t.stock, *id, &domain::commit_units(stock, *qty))?;
            }
            reservation.status = ReservationStatus::Committed;
            reservation.closed_at = Some(Utc::now());
            t.put(t.reservations, order_id, &reservation)?;
            Ok(true)
        })
        .await
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
            .map_err(|_| Error::Flush(FlusherStopped))?;
        let done = answer.await.map_err(|_| Error::Flush(FlusherStopped))??;
        Ok(*done
            .downcast::<T>()
            .expect("a job answers with its own type"))
    }
}

/// An index scan, boxed so a listing can take either index.
type Keys = Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>>;

/// The trees a write may touch.
#[derive(Clone)]
struct Trees {
    products: Tree,
    stock: Tree,
    reservations: Tree,
    outbox: Tree,
    by_name: Tree,
    by_category: Tree,
    meta: Tree,
}

/// The writer task: runs everything queued in one transaction, flushes, answers each write, and
/// only then takes the next batch, so under load batches grow rather than their number.
async fn writer(trees: Trees, mut queue: mpsc::Receiver<Queued>, commit: GroupCommit) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut jobs = std::mem::take(&mut batch);
        // Each round either commits every remaining job, or takes out the one that aborted.
        while !jobs.is_empty() {
            match run_batch(&trees, &jobs) {
                Ok(results) => {
                    let flushed = commit.flush().await;
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
                        let _ = job.reply.send(Err(Error::Storage(error.clone())));
                    }
                }
            }
        }
    }
}

/// One transaction over every tree, running `jobs` in order; an `Abort` names the job.
fn run_batch(
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
struct Tx<'a> {
    products: &'a TransactionalTree,
    stock: &'a TransactionalTree,
    reservations: &'a TransactionalTree,
    outbox: &'a TransactionalTree,
    by_name: &'a TransactionalTree,
    by_category: &'a TransactionalTree,
    meta: &'a TransactionalTree,
}

impl Tx<'_> {
    /// One more product in the catalog's count.
    fn count_product(&self) -> TxResult<()> {
        let count = match self.meta.get(PRODUCT_COUNT_KEY)? {
            Some(v) => decode_count(&v).map_err(ConflictableTransactionError::Abort)?,
            None => 0,
        };
        self.meta
            .insert(PRODUCT_COUNT_KEY, &(count as u64 + 1).to_be_bytes())?;
        Ok(())
    }

    fn put<T: Serialize>(&self, tree: &TransactionalTree, id: Uuid, value: &T) -> TxResult<()> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| ConflictableTransactionError::Abort(Error::Corrupt(e.to_string())))?;
        tree.insert(id.as_bytes().as_slice(), bytes)?;
        Ok(())
    }

    fn product(&self, id: Uuid) -> TxResult<Product> {
        get_json(self.products, id)?.ok_or(ConflictableTransactionError::Abort(Error::NotFound(id)))
    }

    fn stock_of(&self, id: Uuid) -> TxResult<Stock> {
        get_json(self.stock, id)?.ok_or_else(|| {
            ConflictableTransactionError::Abort(Error::Corrupt(format!(
                "stock row missing for {id}"
            )))
        })
    }

    fn index(&self, p: &Product) -> TxResult<()> {
        self.by_name.insert(name_key(p), &[])?;
        self.by_category.insert(category_key(p), &[])?;
        Ok(())
    }

    fn unindex(&self, p: &Product) -> TxResult<()> {
        self.by_name.remove(name_key(p))?;
        self.by_category.remove(category_key(p))?;
        Ok(())
    }

    fn enqueue(&self, header: OutboxHeader, payload: Vec<u8>) -> TxResult<()> {
        let id = self.outbox.generate_id()?;
        self.outbox.insert(
            outbox::key(id).as_slice(),
            OutboxRecord { header, payload }.encode(),
        )?;
        Ok(())
    }

    fn product_event(&self, product: &Product, kind: ProductEventType, cid: &str) -> TxResult<()> {
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

    fn stock_low(&self, product: &Product, stock: &Stock, cid: &str) -> TxResult<()> {
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

fn abort<T>(e: Error) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

fn check_version(current: &Product, if_match: Option<u64>) -> TxResult<()> {
    match if_match {
        Some(expected) if expected != current.version => abort(Error::VersionMismatch {
            id: current.id,
            expected,
            current: current.version,
        }),
        _ => Ok(()),
    }
}

fn get_json<T: DeserializeOwned>(tree: &TransactionalTree, id: Uuid) -> TxResult<Option<T>> {
    match tree.get(id.as_bytes())? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ConflictableTransactionError::Abort(Error::Corrupt(e.to_string()))),
    }
}

fn read<T: DeserializeOwned>(tree: &Tree, id: Uuid) -> Result<Option<T>> {
    match tree.get(id.as_bytes())? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Corrupt(e.to_string())),
    }
}

fn name_key(p: &Product) -> Vec<u8> {
    let mut key = Vec::with_capacity(p.name.len() + 17);
    key.extend_from_slice(p.name.as_bytes());
    key.push(0);
    key.extend_from_slice(p.id.as_bytes());
    key
}

fn category_key(p: &Product) -> Vec<u8> {
    let mut key = Vec::with_capacity(p.category.len() + p.name.len() + 18);
    key.extend_from_slice(p.category.as_bytes());
    key.push(0);
    key.extend_from_slice(&name_key(p));
    key
}

fn decode_count(bytes: &[u8]) -> Result<usize> {
    <[u8; 8]>::try_from(bytes)
        .map(|b| u64::from_be_bytes(b) as usize)
        .map_err(|_| Error::Corrupt("the product count is not a u64".into()))
}

fn id_from_index_key(key: &[u8]) -> Result<Uuid> {
    key.len()
        .checked_sub(16)
        .and_then(|start| Uuid::from_slice(&key[start..]).ok())
        .ok_or_else(|| Error::Corrupt("index key too short".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_product(stock: i64) -> NewProduct {
        NewProduct {
            fields: domain::CatalogFields {
                name: "Batch".into(),
                description: String::new(),
                price: "1.00".parse().unwrap(),
                category: "Test".into(),
                low_stock_threshold: 0,
            },
            stock_quantity: stock,
        }
    }

    /// Writes that fail their checks share batches with writes that succeed: the failures change
    /// nothing, the others all land exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_leaves_the_rest_of_its_batch_intact() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let id = store.create(&new_product(10)).await.unwrap().product.id;
        let fields = new_product(0).fields;
        let writes = (0..40).map(|i| {
            let (store, fields) = (store.clone(), fields.clone());
            tokio::spawn(async move {
                if i % 2 == 0 {
                    store.adjust_stock(id, 1).await.map(|_| ())
                } else {
                    store.update(id, &fields, Some(99)).await.map(|_| ())
                }
            })
        });
        let results = futures::future::join_all(writes).await;
        for (i, result) in results.into_iter().enumerate() {
            match (i % 2, result.unwrap()) {
                (0, Ok(())) => {}
                (1, Err(Error::VersionMismatch { expected: 99, .. })) => {}
                (_, other) => panic!("write {i}: unexpected {other:?}"),
            }
        }
        let entry = store.get(id).unwrap().unwrap();
        assert_eq!(entry.stock.on_hand, 30);
        assert_eq!(entry.product.version, 1);
        assert_eq!(
            store.product_count().unwrap(),
            1,
            "the failed updates created nothing"
        );
    }
}
