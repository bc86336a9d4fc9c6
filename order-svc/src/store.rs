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
//! - `snapshot`: the ProductSnapshot rows (`p` + id) **and** the projection checkpoint
//!   (`m:checkpoint`), in one tree so one atomic batch moves both.
use std::{collections::HashMap, sync::Arc};

use chrono::Utc;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use shared::{
    correlation,
    durability::GroupCommit,
    events,
    outbox::{self, OutboxHeader, OutboxRecord},
};
use sled::{
    Tree,
    transaction::{
        ConflictableTransactionError, TransactionError, Transactional, TransactionalTree,
    },
};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{
    domain::{self, Order, OrderStatus, Outcome, ProductView},
    error::{Error, Result},
};

const CHECKPOINT_KEY: &[u8] = b"m:checkpoint";

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

#[derive(Clone)]
pub struct Store {
    orders: Tree,
    by_customer: Tree,
    by_created: Tree,
    pending: Tree,
    releases: Tree,
    outbox: Tree,
    idempotency: Tree,
    snapshot: Tree,
    snapshot_writer: Arc<std::sync::Mutex<()>>,
    commit: GroupCommit,
    relay_wake: Arc<Notify>,
    release_wake: Arc<Notify>,
}

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<Error>>;

impl Store {
    pub fn open(path: &std::path::Path, cache_bytes: u64) -> Result<Self> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()?;
        Ok(Self {
            orders: db.open_tree("orders")?,
            by_customer: db.open_tree("by_customer")?,
            by_created: db.open_tree("by_created")?,
            pending: db.open_tree("pending")?,
            releases: db.open_tree("releases")?,
            outbox: db.open_tree("outbox")?,
            idempotency: db.open_tree("idempotency")?,
            snapshot: db.open_tree("snapshot")?,
            snapshot_writer: Arc::default(),
            commit: GroupCommit::start(db),
            relay_wake: Arc::new(Notify::new()),
            release_wake: Arc::new(Notify::new()),
        })
    }

    pub fn outbox_tree(&self) -> Tree {
        self.outbox.clone()
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
        read(&self.orders, id.as_bytes())
    }

    pub fn find_idempotent(&self, key: &str, fingerprint: &str) -> Result<Option<Uuid>> {
        match read::<IdempotencyRecord>(&self.idempotency, key.as_bytes())? {
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
        let created = order.created_at.timestamp_millis().max(0) as u64;
        let inverted = (u64::MAX - created).to_be_bytes();
        let mut customer_key = order.customer_id.as_bytes().to_vec();
        customer_key.extend_from_slice(&inverted);
        customer_key.extend_from_slice(order.id.as_bytes());
        let mut created_key = inverted.to_vec();
        created_key.extend_from_slice(order.id.as_bytes());
        let value = to_json(order)?;
        let result = (
            &self.orders,
            &self.by_customer,
            &self.by_created,
            &self.pending,
            &self.idempotency,
        )
            .transaction(|(orders, by_customer, by_created, pending, idem)| {
                if let Some((key, fingerprint)) = idempotency {
                    if let Some(existing) = idem.get(key.as_bytes())? {
                        let record: IdempotencyRecord =
                            from_json(&existing).map_err(ConflictableTransactionError::Abort)?;
                        if record.fingerprint != fingerprint {
                            return Err(ConflictableTransactionError::Abort(
                                Error::IdempotencyMismatch,
                            ));
                        }
                        return Ok(Inserted::Existing(record.order_id));
                    }
                    let record = IdempotencyRecord {
                        fingerprint: fingerprint.to_owned(),
                        order_id: order.id,
                    };
                    idem.insert(
                        key.as_bytes(),
                        to_json(&record).map_err(ConflictableTransactionError::Abort)?,
                    )?;
                }
                orders.insert(order.id.as_bytes(), value.clone())?;
                by_customer.insert(customer_key.as_slice(), &[])?;
                by_created.insert(created_key.as_slice(), &[])?;
                pending.insert(order.id.as_bytes(), &[])?;
                Ok(Inserted::New)
            });
        let inserted = unwrap_tx(result)?;
        self.flush().await?;
        Ok(inserted)
    }

    /// Moves an order out of Pending (Confirmed/Rejected) or cancels it, writing its event to the
    /// outbox and, for a cancel, the stock release it owes — all in one transaction, then flushed.
    /// Returns the order after the change, or `Err(Transition)` if the order is in a state that
    /// does not allow it.
    pub async fn transition(&self, id: Uuid, outcome: &Outcome) -> Result<Order> {
        let cid = correlation::current_or_new();
        let result = (&self.orders, &self.pending, &self.releases, &self.outbox).transaction(
            |(orders, pending, releases, outbox)| {
                let current: Order = match orders.get(id.as_bytes())? {
                    Some(bytes) => {
                        from_json(&bytes).map_err(ConflictableTransactionError::Abort)?
                    }
                    None => return Err(ConflictableTransactionError::Abort(Error::NotFound(id))),
                };
                let now = Utc::now();
                let next = current
                    .transition(outcome, now)
                    .map_err(|e| ConflictableTransactionError::Abort(e.into()))?;
                orders.insert(
                    id.as_bytes(),
                    to_json(&next).map_err(ConflictableTransactionError::Abort)?,
                )?;
                pending.remove(id.as_bytes())?;
                if matches!(outcome, Outcome::Cancelled { .. }) {
                    releases.insert(id.as_bytes(), cid.as_bytes())?;
                }
                if let Some(event) = next.event(now) {
                    enqueue(outbox, &event, &cid)?;
                }
                Ok(next)
            },
        );
        let order = unwrap_tx(result)?;
        self.flush().await?;
        self.relay_wake.notify_one();
        if order.status == OrderStatus::Cancelled {
            self.release_wake.notify_one();
        }
        Ok(order)
    }

    /// One page of orders, newest first, optionally of one customer; and the total count.
    pub fn list(
        &self,
        customer: Option<Uuid>,
        page: usize,
        page_size: usize,
    ) -> Result<(Vec<Order>, usize)> {
        let skip = (page - 1).saturating_mul(page_size);
        let keys: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = match customer
        {
            Some(c) => Box::new(self.by_customer.scan_prefix(c.as_bytes())),
            None => Box::new(self.by_created.iter()),
        };
        let mut total = 0;
        let mut ids = Vec::new();
        for kv in keys {
            let (key, _) = kv?;
            if total >= skip && ids.len() < page_size {
                let id = Uuid::from_slice(&key[key.len() - 16..])
                    .map_err(|e| Error::Corrupt(e.to_string()))?;
                ids.push(id);
            }
            total += 1;
        }
        let mut orders = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(order) = self.get(id)? {
                orders.push(order);
            }
        }
        Ok((orders, total))
    }

    pub fn pending_ids(&self, limit: usize) -> Result<Vec<Uuid>> {
        ids_of(&self.pending, limit)
    }

    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Releases owed to product-svc: (order id, correlation id of the cancel).
    pub fn releases(&self, limit: usize) -> Result<Vec<(Uuid, String)>> {
        let mut out = Vec::new();
        for kv in self.releases.iter().take(limit) {
            let (k, v) = kv?;
            let id = Uuid::from_slice(&k).map_err(|e| Error::Corrupt(e.to_string()))?;
            out.push((id, String::from_utf8_lossy(&v).into_owned()));
        }
        Ok(out)
    }

    pub fn release_done(&self, id: Uuid) -> Result<()> {
        self.releases.remove(id.as_bytes())?;
        Ok(())
    }

    pub fn releases_count(&self) -> usize {
        self.releases.len()
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
        let mut total = 0;
        let mut items = Vec::new();
        for kv in self.snapshot.scan_prefix(b"p") {
            let (key, value) = kv?;
            if total >= skip && items.len() < page_size {
                let id = Uuid::from_slice(&key[1..]).map_err(|e| Error::Corrupt(e.to_string()))?;
                items.push((id, from_json(&value)?));
            }
            total += 1;
        }
        Ok((items, total))
    }

    pub fn snapshot_len(&self) -> usize {
        self.snapshot
            .len()
            .saturating_sub(usize::from(self.checkpoint().ok().flatten().is_some()))
    }

    /// The stream sequence of the last applied event; `None` on an empty (cold) store.
    pub fn checkpoint(&self) -> Result<Option<u64>> {
        Ok(self.snapshot.get(CHECKPOINT_KEY)?.map(|v| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v[..8]);
            u64::from_be_bytes(b)
        }))
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
        let _writer = self.snapshot_writer.lock().expect("snapshot writer lock");
        let mut staged: HashMap<Uuid, u64> = HashMap::with_capacity(updates.len());
        let mut batch = sled::Batch::default();
        let mut changed = 0;
        for u in updates {
            let current_version = match staged.get(&u.product_id) {
                Some(v) => Some(*v),
                None => self
                    .snapshot
                    .get(snapshot_key(u.product_id))?
                    .map(|b| from_json::<StoredVersion>(&b).map(|v| v.version))
                    .transpose()?,
            };
            if domain::should_apply(current_version, u.view.version) {
                batch.insert(snapshot_key(u.product_id).as_slice(), to_json(&u.view)?);
                staged.insert(u.product_id, u.view.version);
                changed += 1;
            }
        }
        if let Some(seq) = checkpoint
            && self.checkpoint()?.is_none_or(|c| seq > c)
        {
            batch.insert(CHECKPOINT_KEY, &seq.to_be_bytes());
        }
        self.snapshot.apply_batch(batch)?;
        Ok(changed)
    }
}

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
