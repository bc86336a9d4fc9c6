//! All persistence of order-svc, behind one API (sled today; keep it swappable).
//!
//! Trees:
//! - `orders` (order id → order JSON) with the list indexes `by_customer`
//!   (customer · inverted created-millis · order id) and `by_created` (inverted millis · order id),
//!   so listings are newest-first prefix scans, never full scans;
//! - `pending` (orders awaiting a reservation outcome; the reconciler's work list);
//! - `releases` (stock releases owed to product-svc; written in the same transaction as the
//!   cancel, so a cancel can never lose its release);
//! - `outbox` (order events for the relay); `idempotency` (Idempotency-Key → fingerprint, order);
//! - `meta`: the number of orders (`orders`), moved in the transaction that inserts one, so a
//!   listing of all orders reads its total instead of scanning an index;
//! - `snapshot`: the ProductSnapshot rows (`p` + id) **and** the projection checkpoint
//!   (`m:checkpoint`) and row count (`m:rows`), in one tree so one atomic batch moves them all.
//!
//! Order writes go through one writer task that applies every write waiting in its queue in
//! **one** sled transaction, then flushes once. Why: sled seals and writes its log buffer twice
//! for every transaction or batch (`pin_log`), so a transaction per request cost ~4 log writes,
//! `sync_file_range` calls and thread hand-offs per order; batching them is what lets order-svc
//! keep up under concurrency. Each write is still all-or-nothing and checked against the state
//! left by the writes before it (the transaction reads its own writes); a write that fails its
//! check changes nothing and does not affect the others in the batch.
use std::{collections::HashMap, sync::Arc};

use chrono::Utc;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use shared::{
    correlation,
    durability::{FlusherStopped, GroupCommit},
    events,
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
    domain::{self, Order, OrderStatus, Outcome, ProductView},
    error::{Error, Result},
};

const CHECKPOINT_KEY: &[u8] = b"m:checkpoint";
/// In `meta`: how many orders there are.
const ORDER_COUNT_KEY: &[u8] = b"orders";
/// How many product rows the snapshot holds, kept in the batches that add rows (readiness reports
/// it, and `Tree::len` is a full scan).
const ROWS_KEY: &[u8] = b"m:rows";
/// Most writes applied in one transaction (bounds the time the writer holds sled's write lock).
const MAX_BATCH: usize = 256;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdempotencyRecord {
    fingerprint: String,
    order_id: Uuid,
}

/// What inserting a new order found.
pub enum Inserted {
    New,
    /// The Idempotency-Key was already used for this same request.
    Existing(Uuid),
}

/// One decoded product event, for [`Store::apply_events`].
pub struct SnapshotUpdate {
    pub product_id: Uuid,
    pub view: ProductView,
}

/// The trees order writes touch, in the order the writer's transaction takes them.
#[derive(Clone)]
struct OrderTrees {
    orders: Tree,
    by_customer: Tree,
    by_created: Tree,
    pending: Tree,
    releases: Tree,
    outbox: Tree,
    idempotency: Tree,
    meta: Tree,
}

#[derive(Clone)]
pub struct Store {
    /// Shared with the writer task, which is the only one to write them.
    trees: OrderTrees,
    snapshot: Tree,
    /// The snapshot's writer lock. While the store replays into a snapshot that was empty at
    /// open, it also holds the version of every row written since: that is every row there is,
    /// so the version guard needs no sled read (a tenth of a cold replay). Dropped once ready.
    snapshot_writer: Arc<std::sync::Mutex<Option<HashMap<Uuid, u64>>>>,
    commit: GroupCommit,
    writes: mpsc::Sender<Write>,
    relay_wake: Arc<Notify>,
    release_wake: Arc<Notify>,
}

/// One order write queued for the writer task, with where to send its result.
enum Write {
    Insert {
        order: Box<Order>,
        idempotency: Option<(String, String)>,
        reply: oneshot::Sender<Result<Inserted>>,
    },
    Transition {
        id: Uuid,
        outcome: Outcome,
        correlation_id: String,
        reply: oneshot::Sender<Result<Order>>,
    },
}

/// What one write did, before it is flushed and answered.
enum Done {
    Inserted(Result<Inserted>),
    Transitioned(Result<Order>),
}

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<Error>>;

impl Store {
    pub fn open(path: &std::path::Path, cache_bytes: u64) -> Result<Self> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()?;
        let trees = OrderTrees {
            orders: db.open_tree("orders")?,
            by_customer: db.open_tree("by_customer")?,
            by_created: db.open_tree("by_created")?,
            pending: db.open_tree("pending")?,
            releases: db.open_tree("releases")?,
            outbox: db.open_tree("outbox")?,
            idempotency: db.open_tree("idempotency")?,
            meta: db.open_tree("meta")?,
        };
        if trees.meta.get(ORDER_COUNT_KEY)?.is_none() {
            // A store from before the count was kept: count once (before the writer starts).
            let count = trees.by_created.len() as u64;
            trees.meta.insert(ORDER_COUNT_KEY, &count.to_be_bytes())?;
        }
        let commit = GroupCommit::start(db.clone());
        let (writes, queue) = mpsc::channel(4 * MAX_BATCH);
        let relay_wake = Arc::new(Notify::new());
        let release_wake = Arc::new(Notify::new());
        tokio::spawn(writer(
            trees.clone(),
            queue,
            commit.clone(),
            relay_wake.clone(),
            release_wake.clone(),
        ));
        let snapshot = db.open_tree("snapshot")?;
        let cold =
            snapshot.get(CHECKPOINT_KEY)?.is_none() && snapshot.scan_prefix(b"p").next().is_none();
        if snapshot.get(ROWS_KEY)?.is_none() {
            // A store from before the row count was kept: count once.
            let rows = snapshot.scan_prefix(b"p").count() as u64;
            snapshot.insert(ROWS_KEY, &rows.to_be_bytes())?;
        }
        Ok(Self {
            trees,
            snapshot,
            snapshot_writer: Arc::new(std::sync::Mutex::new(cold.then(HashMap::new))),
            commit,
            writes,
            relay_wake,
            release_wake,
        })
    }

    pub fn outbox_tree(&self) -> Tree {
        self.trees.outbox.clone()
    }
    pub fn relay_wake(&self) -> Arc<Notify> {
        self.relay_wake.clone()
    }
    pub fn release_wake(&self) -> Arc<Notify> {
        self.release_wake.clone()
    }

    pub async fn flush(&self) -> Result<()> {
        Ok(self.commit.flush().await?)
    }

    pub async fn close(&self) {
        self.commit.close().await;
    }

    // -----------------------------------------------------------------------------------------
    // Orders

    pub fn get(&self, id: Uuid) -> Result<Option<Order>> {
        read(&self.trees.orders, id.as_bytes())
    }

    pub fn find_idempotent(&self, key: &str, fingerprint: &str) -> Result<Option<Uuid>> {
        match read::<IdempotencyRecord>(&self.trees.idempotency, key.as_bytes())? {
            None => Ok(None),
            Some(r) if r.fingerprint == fingerprint => Ok(Some(r.order_id)),
            Some(_) => Err(Error::IdempotencyMismatch),
        }
    }

    /// Persists a new Pending order (flushed), with its indexes and Idempotency-Key.
    pub async fn insert_pending(
        &self,
        order: &Order,
        idempotency: Option<(&str, &str)>,
    ) -> Result<Inserted> {
        let (reply, answer) = oneshot::channel();
        self.submit(Write::Insert {
            order: Box::new(order.clone()),
            idempotency: idempotency.map(|(k, f)| (k.to_owned(), f.to_owned())),
            reply,
        })
        .await?;
        answer.await.map_err(|_| Error::Flush(FlusherStopped))?
    }

    /// Moves an order out of Pending (Confirmed/Rejected) or cancels it, writing its event to the
    /// outbox and, for a cancel, the stock release it owes — all in one transaction, then flushed.
    /// Returns the order after the change, or `Err(Transition)` if the order is in a state that
    /// does not allow it.
    pub async fn transition(&self, id: Uuid, outcome: &Outcome) -> Result<Order> {
        let (reply, answer) = oneshot::channel();
        self.submit(Write::Transition {
            id,
            outcome: outcome.clone(),
            correlation_id: correlation::current_or_new(),
            reply,
        })
        .await?;
        answer.await.map_err(|_| Error::Flush(FlusherStopped))?
    }

    async fn submit(&self, write: Write) -> Result<()> {
        self.writes
            .send(write)
            .await
            .map_err(|_| Error::Flush(FlusherStopped))
    }

    /// One page of orders, newest first, optionally of one customer; and the total count.
    pub fn list(
        &self,
        customer: Option<Uuid>,
        page: usize,
        page_size: usize,
    ) -> Result<(Vec<Order>, usize)> {
        let skip = (page - 1).saturating_mul(page_size);
        // All orders: the kept count; one customer's: counted on the index prefix.
        let (keys, total): (Keys, usize) = match customer {
            Some(c) => (
                Box::new(self.trees.by_customer.scan_prefix(c.as_bytes())),
                self.trees.by_customer.scan_prefix(c.as_bytes()).count(),
            ),
            None => (
                Box::new(self.trees.by_created.iter()),
                self.order_count()? as usize,
            ),
        };
        let mut orders = Vec::with_capacity(page_size.min(100));
        for kv in keys.skip(skip).take(page_size) {
            let (key, _) = kv?;
            let id = Uuid::from_slice(&key[key.len() - 16..])
                .map_err(|e| Error::Corrupt(e.to_string()))?;
            if let Some(order) = self.get(id)? {
                orders.push(order);
            }
        }
        Ok((orders, total))
    }

    /// How many orders there are.
    pub fn order_count(&self) -> Result<u64> {
        let count = self.trees.meta.get(ORDER_COUNT_KEY)?;
        Ok(count
            .map(|v| decode_u64(&v, ORDER_COUNT_KEY))
            .transpose()?
            .unwrap_or_default())
    }

    pub fn pending_ids(&self, limit: usize) -> Result<Vec<Uuid>> {
        ids_of(&self.trees.pending, limit)
    }

    pub fn pending_count(&self) -> usize {
        self.trees.pending.len()
    }

    /// Releases owed to product-svc: (order id, correlation id of the cancel).
    pub fn releases(&self, limit: usize) -> Result<Vec<(Uuid, String)>> {
        let mut out = Vec::new();
        for kv in self.trees.releases.iter().take(limit) {
            let (k, v) = kv?;
            let id = Uuid::from_slice(&k).map_err(|e| Error::Corrupt(e.to_string()))?;
            out.push((id, String::from_utf8_lossy(&v).into_owned()));
        }
        Ok(out)
    }

    pub fn release_done(&self, id: Uuid) -> Result<()> {
        self.trees.releases.remove(id.as_bytes())?;
        Ok(())
    }

    pub fn releases_count(&self) -> usize {
        self.trees.releases.len()
    }

    // -----------------------------------------------------------------------------------------
    // Product snapshot

    pub fn product(&self, id: Uuid) -> Result<Option<ProductView>> {
        read(&self.snapshot, &snapshot_key(id))
    }

    pub fn products(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, ProductView>> {
        let mut out = HashMap::with_capacity(ids.len());
        for id in ids {
            if let Some(view) = self.product(*id)? {
                out.insert(*id, view);
            }
        }
        Ok(out)
    }

    /// One page of snapshot rows in id order (an operator's view of the read model).
    pub fn snapshot_page(
        &self,
        page: usize,
        page_size: usize,
    ) -> Result<(Vec<(Uuid, ProductView)>, usize)> {
        let skip = (page - 1).saturating_mul(page_size);
        let mut items = Vec::with_capacity(page_size.min(1000));
        for kv in self.snapshot.scan_prefix(b"p").skip(skip).take(page_size) {
            let (key, value) = kv?;
            let id = Uuid::from_slice(&key[1..]).map_err(|e| Error::Corrupt(e.to_string()))?;
            items.push((id, from_json(&value)?));
        }
        Ok((items, self.snapshot_len()? as usize))
    }

    /// How many products the snapshot holds.
    pub fn snapshot_len(&self) -> Result<u64> {
        self.snapshot_u64(ROWS_KEY).map(Option::unwrap_or_default)
    }

    /// The stream sequence of the last applied event; `None` on an empty (cold) store.
    pub fn checkpoint(&self) -> Result<Option<u64>> {
        self.snapshot_u64(CHECKPOINT_KEY)
    }

    fn snapshot_u64(&self, key: &[u8]) -> Result<Option<u64>> {
        self.snapshot
            .get(key)?
            .map(|v| decode_u64(&v, key))
            .transpose()
    }

    /// Applies a batch of events through the version guard and moves the checkpoint to
    /// `checkpoint`, atomically (one transaction on one tree). Not flushed: the caller flushes
    /// once per batch before acking. Returns how many rows changed.
    pub fn apply_events(
        &self,
        updates: &[SnapshotUpdate],
        checkpoint: Option<u64>,
    ) -> Result<usize> {
        // The projector and read-through are the only writers of this tree; a lock makes the
        // read-check-write atomic, and one `apply_batch` makes the rows and checkpoint atomic.
        // (Cheaper than a sled transaction: replay speed is bounded by this loop.)
        let mut writer = self.snapshot_writer.lock().expect("snapshot writer lock");
        let mut staged: HashMap<Uuid, u64> = HashMap::with_capacity(updates.len());
        let mut batch = sled::Batch::default();
        let (mut changed, mut added) = (0, 0);
        for u in updates {
            let current_version = match (staged.get(&u.product_id), writer.as_ref()) {
                (Some(v), _) => Some(*v),
                (None, Some(known)) => known.get(&u.product_id).copied(),
                (None, None) => self
                    .snapshot
                    .get(snapshot_key(u.product_id))?
                    .map(|b| from_json::<StoredVersion>(&b).map(|v| v.version))
                    .transpose()?,
            };
            if domain::should_apply(current_version, u.view.version) {
                batch.insert(snapshot_key(u.product_id).as_slice(), to_json(&u.view)?);
                staged.insert(u.product_id, u.view.version);
                changed += 1;
                added += u64::from(current_version.is_none());
            }
        }
        if added > 0 {
            let rows = self.snapshot_len()? + added;
            batch.insert(ROWS_KEY, &rows.to_be_bytes());
        }
        if let Some(seq) = checkpoint
            && self.checkpoint()?.is_none_or(|c| seq > c)
        {
            batch.insert(CHECKPOINT_KEY, &seq.to_be_bytes());
        }
        self.snapshot.apply_batch(batch)?;
        if let Some(known) = writer.as_mut() {
            known.extend(staged);
        }
        Ok(changed)
    }

    /// The replay into an empty snapshot is over: the version guard reads sled from now on.
    pub fn end_cold_start(&self) {
        let mut writer = self.snapshot_writer.lock().expect("snapshot writer lock");
        if writer.take().is_some() {
            tracing::debug!("Cold start over; the version guard reads the store.");
        }
    }
}

/// The writer task: applies everything queued in one transaction, flushes, answers, and only
/// then takes the next batch: the writes that arrive during a flush form the next batch, so under
/// load a batch grows instead of the number of transactions (each costs sled two log writes).
async fn writer(
    trees: OrderTrees,
    mut queue: mpsc::Receiver<Write>,
    commit: GroupCommit,
    relay_wake: Arc<Notify>,
    release_wake: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let done = apply_writes(&trees, &batch);
        let flushed = commit.flush().await;
        let (mut events, mut releases) = (false, false);
        for (write, done) in batch.drain(..).zip(done) {
            match (write, done) {
                (Write::Insert { reply, .. }, Done::Inserted(result)) => {
                    let _ = reply.send(flushed.map_err(Error::from).and(result));
                }
                (Write::Transition { reply, .. }, Done::Transitioned(result)) => {
                    if let Ok(order) = &result {
                        events = true;
                        releases |= order.status == OrderStatus::Cancelled;
                    }
                    let _ = reply.send(flushed.map_err(Error::from).and(result));
                }
                _ => unreachable!("results are in the order of the writes"),
            }
        }
        if events {
            relay_wake.notify_one();
        }
        if releases {
            release_wake.notify_one();
        }
    }
}

/// Applies `writes` in one transaction; one result per write, in order. A storage failure fails
/// every write of the batch (none of them is applied).
fn apply_writes(trees: &OrderTrees, writes: &[Write]) -> Vec<Done> {
    let t = trees;
    let result = (
        &t.orders,
        &t.by_customer,
        &t.by_created,
        &t.pending,
        &t.releases,
        &t.outbox,
        &t.idempotency,
        &t.meta,
    )
        .transaction(
            |(orders, by_customer, by_created, pending, releases, outbox, idem, meta)| {
                let mut done = Vec::with_capacity(writes.len());
                for write in writes {
                    done.push(match write {
                        Write::Insert {
                            order, idempotency, ..
                        } => Done::Inserted(insert_order(
                            order,
                            idempotency.as_ref(),
                            (orders, by_customer, by_created, pending, idem, meta),
                        )?),
                        Write::Transition {
                            id,
                            outcome,
                            correlation_id,
                            ..
                        } => Done::Transitioned(transition_order(
                            *id,
                            outcome,
                            correlation_id,
                            (orders, pending, releases, outbox),
                        )?),
                    });
                }
                Ok::<_, ConflictableTransactionError<Error>>(done)
            },
        );
    match unwrap_tx(result) {
        Ok(done) => done,
        Err(error) => {
            tracing::error!(%error, writes = writes.len(), "Writing a batch of orders failed.");
            writes
                .iter()
                .map(|w| {
                    let e = || match &error {
                        Error::Storage(e) => Error::Storage(e.clone()),
                        other => Error::Corrupt(other.to_string()),
                    };
                    match w {
                        Write::Insert { .. } => Done::Inserted(Err(e())),
                        Write::Transition { .. } => Done::Transitioned(Err(e())),
                    }
                })
                .collect()
        }
    }
}

/// A new Pending order with its indexes and Idempotency-Key; `Ok(Err(..))` when it must not be
/// written (the outer error is storage, which fails the whole batch).
fn insert_order(
    order: &Order,
    idempotency: Option<&(String, String)>,
    (orders, by_customer, by_created, pending, idem, meta): (
        &TransactionalTree,
        &TransactionalTree,
        &TransactionalTree,
        &TransactionalTree,
        &TransactionalTree,
        &TransactionalTree,
    ),
) -> TxResult<Result<Inserted>> {
    if let Some((key, fingerprint)) = idempotency {
        if let Some(existing) = idem.get(key.as_bytes())? {
            return Ok(
                from_json::<IdempotencyRecord>(&existing).and_then(|record| {
                    if &record.fingerprint == fingerprint {
                        Ok(Inserted::Existing(record.order_id))
                    } else {
                        Err(Error::IdempotencyMismatch)
                    }
                }),
            );
        }
        let record = IdempotencyRecord {
            fingerprint: fingerprint.clone(),
            order_id: order.id,
        };
        match to_json(&record) {
            Ok(bytes) => idem.insert(key.as_bytes(), bytes)?,
            Err(e) => return Ok(Err(e)),
        };
    }
    let value = match to_json(order) {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    let created = order.created_at.timestamp_millis().max(0) as u64;
    let inverted = (u64::MAX - created).to_be_bytes();
    let mut customer_key = order.customer_id.as_bytes().to_vec();
    customer_key.extend_from_slice(&inverted);
    customer_key.extend_from_slice(order.id.as_bytes());
    let mut created_key = inverted.to_vec();
    created_key.extend_from_slice(order.id.as_bytes());
    orders.insert(order.id.as_bytes(), value)?;
    by_customer.insert(customer_key, &[])?;
    by_created.insert(created_key, &[])?;
    pending.insert(order.id.as_bytes(), &[])?;
    let count = match meta
        .get(ORDER_COUNT_KEY)?
        .map(|v| decode_u64(&v, ORDER_COUNT_KEY))
    {
        Some(Ok(count)) => count,
        Some(Err(e)) => return Ok(Err(e)),
        None => 0,
    };
    meta.insert(ORDER_COUNT_KEY, &(count + 1).to_be_bytes())?;
    Ok(Ok(Inserted::New))
}

/// One order's state change with its outbox event and, for a cancel, the release it owes.
fn transition_order(
    id: Uuid,
    outcome: &Outcome,
    cid: &str,
    (orders, pending, releases, outbox): (
        &TransactionalTree,
        &TransactionalTree,
        &TransactionalTree,
        &TransactionalTree,
    ),
) -> TxResult<Result<Order>> {
    let current: Order = match orders.get(id.as_bytes())? {
        Some(bytes) => match from_json(&bytes) {
            Ok(order) => order,
            Err(e) => return Ok(Err(e)),
        },
        None => return Ok(Err(Error::NotFound(id))),
    };
    let now = Utc::now();
    let next = match current.transition(outcome, now) {
        Ok(next) => next,
        Err(e) => return Ok(Err(e.into())),
    };
    let value = match to_json(&next) {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    orders.insert(id.as_bytes(), value)?;
    pending.remove(id.as_bytes())?;
    if matches!(outcome, Outcome::Cancelled { .. }) {
        releases.insert(id.as_bytes(), cid.as_bytes())?;
    }
    if let Some(event) = next.event(now) {
        enqueue(outbox, &event, cid)?;
    }
    Ok(Ok(next))
}

/// An index scan, boxed so a listing can take either index.
type Keys = Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>>;

/// Just the version of a stored snapshot row (the guard needs nothing else).
#[derive(Deserialize)]
struct StoredVersion {
    version: u64,
}

fn enqueue(outbox: &TransactionalTree, event: &events::OrderEvent, cid: &str) -> TxResult<()> {
    let id = outbox.generate_id()?;
    let record = OutboxRecord {
        header: OutboxHeader {
            subject: events::order_subject(event.order_id),
            msg_id: event.event_id.to_string(),
            event_type: event.event_type.as_str().into(),
            correlation_id: cid.into(),
        },
        payload: serde_json::to_vec(event).expect("event serializes"),
    };
    outbox.insert(outbox::key(id).as_slice(), record.encode())?;
    Ok(())
}

/// A counter or sequence stored as 8 big-endian bytes under `key`.
fn decode_u64(bytes: &[u8], key: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| Error::Corrupt(format!("{} is not a u64", String::from_utf8_lossy(key))))
}

fn snapshot_key(id: Uuid) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = b'p';
    key[1..].copy_from_slice(id.as_bytes());
    key
}

fn ids_of(tree: &Tree, limit: usize) -> Result<Vec<Uuid>> {
    tree.iter()
        .keys()
        .take(limit)
        .map(|k| {
            let k = k?;
            Uuid::from_slice(&k).map_err(|e| Error::Corrupt(e.to_string()))
        })
        .collect()
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Corrupt(e.to_string()))
}

fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt(e.to_string()))
}

fn read<T: DeserializeOwned>(tree: &Tree, key: &[u8]) -> Result<Option<T>> {
    tree.get(key)?.map(|b| from_json(&b)).transpose()
}

fn unwrap_tx<T>(result: std::result::Result<T, TransactionError<Error>>) -> Result<T> {
    match result {
        Ok(v) => Ok(v),
        Err(TransactionError::Abort(e)) => Err(e),
        Err(TransactionError::Storage(e)) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(id: Uuid, version: u64) -> SnapshotUpdate {
        SnapshotUpdate {
            product_id: id,
            view: ProductView {
                name: format!("v{version}"),
                description: String::new(),
                price: "1.00".parse().unwrap(),
                category: "C".into(),
                version,
                deleted: false,
                updated_at: Utc::now(),
            },
        }
    }

    fn open_when_unlocked(path: &std::path::Path) -> Store {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Store::open(path, 1 << 20) {
                Ok(store) => return store,
                Err(e) if std::time::Instant::now() >= deadline => {
                    panic!("store never opened: {e:?}")
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    }

    /// The row count follows new products only (not updates, not stale events) and survives a
    /// restart with the checkpoint; the version guard answers the same from its cold-start
    /// memory and from sled.
    #[test]
    fn snapshot_row_count_and_checkpoint_move_with_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        // One runtime per "process": dropping it stops the tasks that hold the database.
        let runtime = || tokio::runtime::Runtime::new().unwrap();
        runtime().block_on(async {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(store.snapshot_len().unwrap(), 0);
            assert_eq!(store.checkpoint().unwrap(), None);
            let changed = store
                .apply_events(&[update(a, 1), update(a, 2), update(b, 1)], Some(3))
                .unwrap();
            assert_eq!(changed, 3);
            // An update, a stale event and a duplicate: no new rows.
            let changed = store
                .apply_events(&[update(b, 2), update(a, 1), update(b, 2)], Some(6))
                .unwrap();
            assert_eq!(changed, 1);
            assert_eq!(store.snapshot_len().unwrap(), 2);
            // After the cold start the guard reads sled: same answers.
            store.end_cold_start();
            assert_eq!(store.apply_events(&[update(a, 2)], None).unwrap(), 0);
            store.close().await;
        });
        runtime().block_on(async {
            // sled's own threads may hold the file lock a moment after the first "process".
            let store = open_when_unlocked(dir.path());
            assert_eq!(store.snapshot_len().unwrap(), 2);
            assert_eq!(store.checkpoint().unwrap(), Some(6));
            assert_eq!(store.product(a).unwrap().unwrap().version, 2);
            // Not cold (rows exist): stale events are refused from what sled holds.
            assert_eq!(store.apply_events(&[update(a, 1)], None).unwrap(), 0);
            assert_eq!(store.apply_events(&[update(a, 3)], None).unwrap(), 1);
            assert_eq!(store.snapshot_len().unwrap(), 2);
            let (page, total) = store.snapshot_page(1, 1).unwrap();
            assert_eq!((page.len(), total), (1, 2));
        });
    }
}
