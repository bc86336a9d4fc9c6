//! The orders view: this instance's sled copy of the order stream, projected like the
//! ProductSnapshot (same projector, checkpoint and cold start) and also fed at once with every
//! state this instance writes or reads, so its own writes are visible to it immediately.
//!
//! It serves what the stream cannot answer cheaply: listings (newest first, per customer) and the
//! work lists of the reconciler (Pending orders) and the releaser (stock work owed: releases of
//! cancelled orders, commits of shipped ones). It is a cache:
//! deleting it loses nothing, and every decision taken from it is re-checked by a CAS publish.
//!
//! One tree, so one atomic batch moves rows, indexes, counts and the checkpoint together:
//! - `o` + order id → stream sequence (8) · version (8) · flags (1) · the event JSON;
//! - `c` + customer id + inverted created-millis + order id, and `t` + inverted millis + order id:
//!   the listing indexes (an order's customer and creation time never change);
//! - `p` + order id: Pending orders; `r` + order id: orders that still owe product-svc a release
//!   (cancelled) or a commit (shipped);
//! - `m:checkpoint`, `m:count`, `m:pending`, `m:owed`.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use async_nats::jetstream;
use shared::events::{OrderEvent, OrderEventType, OrderStatus};
use sled::{Batch, Tree};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    domain::{self, Order},
    error::{Error, Result},
    order_log::Stored,
    projector::{Applied, Projection},
    store::decode_u64,
};

const CHECKPOINT: &[u8] = b"m:checkpoint";
const COUNT: &[u8] = b"m:count";
const PENDING: &[u8] = b"m:pending";
const OWED: &[u8] = b"m:owed";
const HEADER: usize = 17;
/// How far the stored checkpoint may trail the stream over batches that change nothing.
const CHECKPOINT_STRIDE: u64 = 1000;
const FLAG_PENDING: u8 = 1;
const FLAG_OWED: u8 = 2;

/// One order state to apply: from the stream, or written/read by this instance.
pub struct OrderUpdate {
    id: Uuid,
    customer: Uuid,
    created_millis: u64,
    version: u64,
    seq: u64,
    flags: u8,
    payload: Vec<u8>,
}

impl OrderUpdate {
    fn of(event: &OrderEvent, seq: u64, payload: Vec<u8>) -> Self {
        let mut flags = 0;
        if event.status == OrderStatus::Pending {
            flags |= FLAG_PENDING;
        }
        if event.release_owed || event.commit_owed {
            flags |= FLAG_OWED;
        }
        Self {
            id: event.order_id,
            customer: event.customer_id,
            created_millis: event.created_at.timestamp_millis().max(0) as u64,
            version: event.version,
            seq,
            flags,
            payload,
        }
    }
}

/// (version, flags) of a stored row: what the guard and the work lists need.
type RowHead = (u64, u8);
/// The writer lock; during a replay into an empty view it also remembers every row's head
/// (as the snapshot does), so the guard reads no sled. Dropped once ready.
type Writer = Arc<Mutex<Option<HashMap<Uuid, RowHead>>>>;

/// Most records applied in one batch by the record writer.
const MAX_RECORDS: usize = 256;

/// States queued for the view (one this instance wrote or read, or a projector batch with its
/// checkpoint), and who waits for them.
struct Record {
    updates: Vec<OrderUpdate>,
    checkpoint: Option<u64>,
    done: Option<oneshot::Sender<Result<Applied>>>,
}

#[derive(Clone)]
pub struct OrdersView {
    tree: Tree,
    writer: Writer,
    /// To the view's writer: every sled batch costs two log writes (`pin_log`), so the states
    /// this instance writes and the projector's batches are applied together, whatever is
    /// queued during one sled batch forming the next (under load an instance's own writes come
    /// back from the stream while their records are still queued: one batch serves both).
    records: mpsc::Sender<Record>,
    /// Stops the record writer (it holds the database open) and waits for it.
    stop: CancellationToken,
    writer_task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    /// `<prefix>.`: subjects of the orders this instance's site owns. A hub's order stream also
    /// holds edge sites' orders (sourced): they are listed and read here, but settled, released
    /// and committed by their own site, so they never enter the work lists. Unset: all are own.
    own_subjects: Arc<std::sync::OnceLock<String>>,
}

impl OrdersView {
    /// Orders on subjects under `prefix` are this site's own (see `own_subjects`).
    pub fn set_own_prefix(&self, prefix: &str) {
        let _ = self.own_subjects.set(format!("{prefix}."));
    }

    /// Opens the view and starts its record writer (on the current runtime).
    pub fn open(db: &sled::Db) -> Result<Self> {
        let tree = db.open_tree("orders_view")?;
        let cold = tree.get(CHECKPOINT)?.is_none() && tree.scan_prefix(b"o").next().is_none();
        let writer: Writer = Arc::new(Mutex::new(cold.then(HashMap::new)));
        let (records, queue) = mpsc::channel(4 * MAX_RECORDS);
        let stop = CancellationToken::new();
        let task = tokio::spawn(record_writer(
            tree.clone(),
            writer.clone(),
            queue,
            stop.clone(),
        ));
        Ok(Self {
            tree,
            writer,
            records,
            stop,
            writer_task: Arc::new(Mutex::new(Some(task))),
            own_subjects: Arc::default(),
        })
    }

    /// Applies what is queued, then stops the record writer (so the database can close).
    pub async fn close(&self) {
        self.stop.cancel();
        let task = self.writer_task.lock().expect("writer task lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Records a state this instance read from the stream, and waits until it is applied (not
    /// flushed: the stream holds it; the view only caches it).
    pub async fn record(&self, stored: &Stored) -> Result<()> {
        if let Some(row) = self.tree.get(row_key(stored.order.id))?
            && row_head(&row)?.0 >= stored.order.version
        {
            return Ok(()); // already known (the usual case for reads)
        }
        let event = stored.order.to_event(state_event_type(&stored.order));
        let payload = serde_json::to_vec(&event).map_err(|e| Error::Corrupt(e.to_string()))?;
        self.record_written(&event, stored.seq, payload, true).await
    }

    /// Records a state this instance published (`payload` is the message it published); with
    /// `wait`, returns once it is applied, else as soon as it is queued (later records of the
    /// same order are applied after it).
    pub async fn record_written(
        &self,
        event: &OrderEvent,
        seq: u64,
        payload: Vec<u8>,
        wait: bool,
    ) -> Result<()> {
        let update = OrderUpdate::of(event, seq, payload);
        self.submit(vec![update], None, wait).await.map(|_| ())
    }

    /// Queues states for the writer; with `wait`, returns what their batch did.
    async fn submit(
        &self,
        updates: Vec<OrderUpdate>,
        checkpoint: Option<u64>,
        wait: bool,
    ) -> Result<Option<Applied>> {
        let (done, applied) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let record = Record {
            updates,
            checkpoint,
            done,
        };
        let stopped = || Error::Corrupt("the orders view writer has stopped".into());
        self.records.send(record).await.map_err(|_| stopped())?;
        match applied {
            Some(rx) => rx.await.map_err(|_| stopped())?.map(Some),
            None => Ok(None),
        }
    }

    pub fn get(&self, id: Uuid) -> Result<Option<Stored>> {
        self.tree
            .get(row_key(id))?
            .map(|row| decode_row(&row))
            .transpose()
    }

    /// One page of orders, newest first, optionally of one customer; and the total count.
    pub fn list(
        &self,
        customer: Option<Uuid>,
        page: usize,
        page_size: usize,
    ) -> Result<(Vec<Order>, usize)> {
        let skip = (page - 1).saturating_mul(page_size);
        let (prefix, total) = match customer {
            Some(c) => {
                let prefix = [&b"c"[..], c.as_bytes()].concat();
                let total = self.tree.scan_prefix(&prefix).count();
                (prefix, total)
            }
            None => (b"t".to_vec(), self.counter(COUNT)? as usize),
        };
        let mut orders = Vec::with_capacity(page_size.min(100));
        for kv in self.tree.scan_prefix(&prefix).skip(skip).take(page_size) {
            let (key, _) = kv?;
            let id = trailing_id(&key)?;
            if let Some(stored) = self.get(id)? {
                orders.push(stored.order);
            }
        }
        Ok((orders, total))
    }

    /// Up to `limit` Pending orders (the reconciler's work list).
    pub fn pending(&self, limit: usize) -> Result<Vec<Stored>> {
        self.work_list(b"p", limit)
    }

    /// Up to `limit` orders that still owe a release or a commit (the releaser's work list).
    pub fn owed(&self, limit: usize) -> Result<Vec<Stored>> {
        self.work_list(b"r", limit)
    }

    pub fn count(&self) -> Result<u64> {
        self.counter(COUNT)
    }
    pub fn pending_count(&self) -> Result<u64> {
        self.counter(PENDING)
    }
    pub fn owed_count(&self) -> Result<u64> {
        self.counter(OWED)
    }

    fn work_list(&self, prefix: &[u8], limit: usize) -> Result<Vec<Stored>> {
        let mut out = Vec::new();
        for key in self.tree.scan_prefix(prefix).keys().take(limit) {
            if let Some(stored) = self.get(trailing_id(&key?)?)? {
                out.push(stored);
            }
        }
        Ok(out)
    }

    fn counter(&self, key: &[u8]) -> Result<u64> {
        counter(&self.tree, key)
    }
}

impl Projection for OrdersView {
    type Update = OrderUpdate;
    const NAME: &'static str = "orders view";

    fn decode(&self, msg: &jetstream::Message) -> std::result::Result<OrderUpdate, String> {
        let event: OrderEvent =
            serde_json::from_slice(&msg.payload).map_err(|e| format!("undecodable: {e}"))?;
        domain::check_order_event(&event, crate::projector::subject_id(&msg.subject))?;
        let seq = msg.info().map(|i| i.stream_sequence).unwrap_or_default();
        let mut update = OrderUpdate::of(&event, seq, msg.payload.to_vec());
        let own = self
            .own_subjects
            .get()
            .is_none_or(|prefix| msg.subject.starts_with(prefix.as_str()));
        if !own {
            update.flags = 0; // another site's order: its site does the work
        }
        Ok(update)
    }

    async fn apply(&self, updates: Vec<OrderUpdate>, checkpoint: Option<u64>) -> Result<Applied> {
        let applied = self.submit(updates, checkpoint, true).await?;
        Ok(applied.expect("waited"))
    }

    fn checkpoint(&self) -> Result<Option<u64>> {
        read_checkpoint(&self.tree)
    }

    fn end_cold_start(&self) {
        let mut writer = self.writer.lock().expect("orders view writer lock");
        if writer.take().is_some() {
            tracing::debug!("Orders view cold start over; the version guard reads the store.");
        }
    }
}

/// Applies states through the version guard and moves the checkpoint, in one atomic batch.
///
/// A batch that changes no row (under load, mostly this instance's own writes coming back from
/// the stream) moves the stored checkpoint only every [`CHECKPOINT_STRIDE`] sequences, so it
/// usually writes nothing and needs no flush: a restart then redelivers at most that many
/// already-known states, which the version guard skips.
fn apply_updates(
    tree: &Tree,
    writer: &Writer,
    updates: &[OrderUpdate],
    checkpoint: Option<u64>,
) -> Result<Applied> {
    let mut writer = writer.lock().expect("orders view writer lock");
    let mut staged: HashMap<Uuid, RowHead> = HashMap::with_capacity(updates.len());
    let mut batch = Batch::default();
    let (mut changed, mut added, mut pending, mut owed) = (0usize, 0i64, 0i64, 0i64);
    for u in updates {
        let current = match (staged.get(&u.id), writer.as_ref()) {
            (Some(head), _) => Some(*head),
            (None, Some(known)) => known.get(&u.id).copied(),
            (None, None) => tree.get(row_key(u.id))?.map(|r| row_head(&r)).transpose()?,
        };
        if !domain::should_apply(current.map(|(v, _)| v), u.version) {
            continue;
        }
        let mut row = Vec::with_capacity(HEADER + u.payload.len());
        row.extend_from_slice(&u.seq.to_be_bytes());
        row.extend_from_slice(&u.version.to_be_bytes());
        row.push(u.flags);
        row.extend_from_slice(&u.payload);
        batch.insert(&row_key(u.id)[..], row);
        if current.is_none() {
            let inverted = (u64::MAX - u.created_millis).to_be_bytes();
            let by_customer = [&b"c"[..], u.customer.as_bytes(), &inverted, u.id.as_bytes()];
            batch.insert(by_customer.concat(), &[]);
            batch.insert([&b"t"[..], &inverted, u.id.as_bytes()].concat(), &[]);
            added += 1;
        }
        let old = current.map_or(0, |(_, flags)| flags);
        pending += flag_change(&mut batch, b'p', u.id, old, u.flags, FLAG_PENDING);
        owed += flag_change(&mut batch, b'r', u.id, old, u.flags, FLAG_OWED);
        staged.insert(u.id, (u.version, u.flags));
        changed += 1;
    }
    for (key, delta) in [(COUNT, added), (PENDING, pending), (OWED, owed)] {
        if delta != 0 {
            let value = counter(tree, key)?.saturating_add_signed(delta);
            batch.insert(key, &value.to_be_bytes());
        }
    }
    let mut batch_moves_checkpoint = false;
    if let Some(seq) = checkpoint {
        let stored = read_checkpoint(tree)?;
        let due = match stored {
            None => true,
            Some(c) if changed > 0 => seq > c,
            Some(c) => seq >= c.saturating_add(CHECKPOINT_STRIDE),
        };
        if due {
            batch.insert(CHECKPOINT, &seq.to_be_bytes());
            batch_moves_checkpoint = true;
        }
    }
    if changed == 0 && !batch_moves_checkpoint {
        return Ok(Applied {
            changed: 0,
            wrote: false,
        });
    }
    tree.apply_batch(batch)?;
    if let Some(known) = writer.as_mut() {
        known.extend(staged);
    }
    Ok(Applied {
        changed,
        wrote: true,
    })
}

/// The view's writer: applies everything queued in one batch, answers, takes the next.
async fn record_writer(
    tree: Tree,
    writer: Writer,
    mut queue: mpsc::Receiver<Record>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_RECORDS);
    loop {
        let received = tokio::select! {
            n = queue.recv_many(&mut batch, MAX_RECORDS) => n,
            _ = stop.cancelled() => {
                queue.close();
                queue.recv_many(&mut batch, MAX_RECORDS).await
            }
        };
        if received == 0 {
            return;
        }
        let mut updates = Vec::new();
        let mut checkpoint = None;
        let mut waiting = Vec::with_capacity(batch.len());
        for record in batch.drain(..) {
            updates.extend(record.updates);
            checkpoint = checkpoint.max(record.checkpoint);
            waiting.extend(record.done);
        }
        let result = apply_updates(&tree, &writer, &updates, checkpoint);
        if let Err(error) = &result {
            tracing::error!(%error, states = updates.len(), "Writing order states to the view failed.");
        }
        for done in waiting {
            let _ = done.send(match &result {
                Ok(applied) => Ok(*applied),
                Err(Error::Storage(e)) => Err(Error::Storage(e.clone())),
                Err(e) => Err(Error::Corrupt(e.to_string())),
            });
        }
    }
}

fn counter(tree: &Tree, key: &[u8]) -> Result<u64> {
    Ok(tree
        .get(key)?
        .map(|v| decode_u64(&v, key))
        .transpose()?
        .unwrap_or_default())
}

fn read_checkpoint(tree: &Tree) -> Result<Option<u64>> {
    tree.get(CHECKPOINT)?
        .map(|v| decode_u64(&v, CHECKPOINT))
        .transpose()
}

/// The event type that leads to a state (for states recorded without their event).
fn state_event_type(order: &Order) -> OrderEventType {
    match order.status {
        OrderStatus::Pending => OrderEventType::OrderPlaced,
        OrderStatus::Confirmed => OrderEventType::OrderConfirmed,
        OrderStatus::Rejected => OrderEventType::OrderRejected,
        OrderStatus::Cancelled if order.release_owed => OrderEventType::OrderCancelled,
        OrderStatus::Cancelled => OrderEventType::OrderStockReleased,
        OrderStatus::Shipped if order.commit_owed => OrderEventType::OrderShipped,
        OrderStatus::Shipped => OrderEventType::OrderStockCommitted,
    }
}

/// Adds or removes a work-list key when `flag` changes; returns the change in its count.
fn flag_change(batch: &mut Batch, prefix: u8, id: Uuid, old: u8, new: u8, flag: u8) -> i64 {
    let key = [&[prefix][..], id.as_bytes()].concat();
    match (old & flag != 0, new & flag != 0) {
        (false, true) => {
            batch.insert(key, &[]);
            1
        }
        (true, false) => {
            batch.remove(key);
            -1
        }
        _ => 0,
    }
}

fn row_key(id: Uuid) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = b'o';
    key[1..].copy_from_slice(id.as_bytes());
    key
}

fn row_head(row: &[u8]) -> Result<RowHead> {
    if row.len() < HEADER {
        return Err(Error::Corrupt("an orders view row is too short".into()));
    }
    let version = decode_u64(&row[8..16], b"version")?;
    Ok((version, row[16]))
}

fn decode_row(row: &[u8]) -> Result<Stored> {
    row_head(row)?;
    let seq = decode_u64(&row[..8], b"seq")?;
    let event: OrderEvent =
        serde_json::from_slice(&row[HEADER..]).map_err(|e| Error::Corrupt(e.to_string()))?;
    Ok(Stored {
        order: Order::from_event(&event),
        seq,
    })
}

/// The order id that ends an index key.
fn trailing_id(key: &[u8]) -> Result<Uuid> {
    key.len()
        .checked_sub(16)
        .and_then(|start| Uuid::from_slice(&key[start..]).ok())
        .ok_or_else(|| Error::Corrupt("an orders view key is too short".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Change, OrderItem};
    use chrono::Utc;

    fn order(customer: Uuid) -> Order {
        let now = Utc::now();
        Order {
            id: Uuid::now_v7(),
            version: 1,
            customer_id: customer,
            customer_email: "a@b.io".into(),
            status: OrderStatus::Pending,
            total_amount: "2.00".parse().unwrap(),
            reason: None,
            failed_product_ids: Vec::new(),
            items: vec![OrderItem {
                product_id: Uuid::new_v4(),
                product_name: "P".into(),
                quantity: 1,
                unit_price: "2.00".parse().unwrap(),
                line_total: "2.00".parse().unwrap(),
            }],
            created_at: now,
            updated_at: now,
            release_owed: false,
            commit_owed: false,
            request_fingerprint: None,
        }
    }

    /// Rows, indexes, work lists and counts move together, only forward in version, and the
    /// cold-start memory answers like sled.
    #[tokio::test]
    async fn states_apply_forward_only_and_keep_the_work_lists() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let view = OrdersView::open(&db).unwrap();
        let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let placed = order(ann);
        let mut other = order(bob);
        other.created_at = placed.created_at + chrono::Duration::seconds(1);
        let stored = |order: &Order, seq| Stored {
            order: order.clone(),
            seq,
        };
        view.record(&stored(&placed, 1)).await.unwrap();
        view.record(&stored(&other, 2)).await.unwrap();
        assert_eq!(view.pending_count().unwrap(), 2);
        let cancelled = placed
            .apply(&Change::Cancel { reason: "r".into() }, Utc::now())
            .unwrap();
        view.record(&stored(&cancelled, 3)).await.unwrap();
        // A stale state (the Pending one again) changes nothing.
        view.record(&stored(&placed, 1)).await.unwrap();
        view.end_cold_start();
        view.record(&stored(&placed, 1)).await.unwrap();
        let got = view.get(placed.id).unwrap().unwrap();
        assert_eq!((got.order.status, got.seq), (OrderStatus::Cancelled, 3));
        assert_eq!(view.pending_count().unwrap(), 1);
        assert_eq!(view.owed_count().unwrap(), 1);
        assert_eq!(view.owed(10).unwrap()[0].order.id, placed.id);
        let released = cancelled.apply(&Change::RecordRelease, Utc::now()).unwrap();
        view.record(&stored(&released, 4)).await.unwrap();
        assert_eq!(view.owed_count().unwrap(), 0);
        assert!(view.owed(10).unwrap().is_empty());

        assert_eq!(view.count().unwrap(), 2);
        let (anns, total) = view.list(Some(ann), 1, 10).unwrap();
        assert_eq!((anns.len(), total), (1, 1));
        assert_eq!(anns[0].version, 3);
        let (all, total) = view.list(None, 1, 10).unwrap();
        assert_eq!((total, all[0].id), (2, other.id), "newest first");
    }

    /// Batches of already-known states write nothing until the checkpoint trails by a stride;
    /// a batch that changes a row always moves it.
    #[tokio::test]
    async fn the_checkpoint_moves_with_changes_or_every_stride() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let view = OrdersView::open(&db).unwrap();
        let first = view.apply(Vec::new(), Some(5)).await.unwrap();
        assert!(first.wrote, "the first checkpoint is stored");
        let idle = view.apply(Vec::new(), Some(10)).await.unwrap();
        assert_eq!(
            idle,
            Applied {
                changed: 0,
                wrote: false
            }
        );
        assert_eq!(view.checkpoint().unwrap(), Some(5));
        let placed = order(Uuid::new_v4());
        let event = placed.to_event(OrderEventType::OrderPlaced);
        let payload = serde_json::to_vec(&event).unwrap();
        let changed = view
            .apply(vec![OrderUpdate::of(&event, 11, payload)], Some(11))
            .await
            .unwrap();
        assert_eq!(
            changed,
            Applied {
                changed: 1,
                wrote: true
            }
        );
        assert_eq!(view.checkpoint().unwrap(), Some(11));
        assert!(!view.apply(Vec::new(), Some(1010)).await.unwrap().wrote);
        assert!(view.apply(Vec::new(), Some(1011)).await.unwrap().wrote);
        assert_eq!(view.checkpoint().unwrap(), Some(1011));
    }
}
