//! The orders view: this instance's sled copy of the order stream, projected like the
//! ProductSnapshot (same projector, checkpoint and cold start) and also fed at once with every
//! state this instance writes or reads, so its own writes are visible to it immediately.
//!
//! It serves what the stream cannot answer cheaply: listings (newest first, per customer) and the
//! work lists of the reconciler (Pending orders) and the releaser (stock work owed: releases of
//! cancelled orders, commits of shipped ones). It is a cache:
//! deleting it loses nothing, and every decision taken from it is re-checked by a CAS publish.
//!
//! One tree, so one batch of writes (`store::replay::Writes`, checkpoint last) moves rows,
//! indexes, counts and the checkpoint:
//! - `o` + inverted created-millis + order id → stream sequence (8) · version (8) · flags (1) ·
//!   the event JSON: rows in creation order, newest first, so the listing of every order is the
//!   rows themselves (an order's creation time never changes);
//! - `c` + customer id + inverted created-millis + order id: the per-customer listing index;
//! - `i` + order id → created millis, only for an order whose id does not tell its
//!   creation millisecond (`rows::find_row`): an unkeyed order's id is a UUIDv7 of it
//!   (`domain::order_id`), so most orders cost two keys, a keyed one three (each sled key is
//!   most of a cold start's and a second instance's cost);
//! - `p` + order id: Pending orders; `r` + order id: orders that still owe product-svc a release
//!   (cancelled) or a commit (shipped);
//! - `m:checkpoint` (`store::replay`), `m:count`, `m:pending`, `m:owed`, `m:format` (a store in
//!   an older layout is emptied at open and replayed).
mod apply;
mod listing;
mod rows;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use async_nats::jetstream;
use shared::events::{OrderEvent, OrderStatus};
use sled::Tree;
use uuid::Uuid;

use crate::{
    domain,
    error::{Error, Result},
    order_log::Stored,
    projector::{Applied, Projection},
    store::{
        BatchWriter, Store,
        replay::{self, ReplayCache},
    },
};

use apply::{apply_updates, state_event_type};
use listing::IndexRange;
pub use listing::{CURSOR_LEN, Listed, Listing, Paging};
use rows::{
    COUNT, FLAG_OWED, FLAG_PENDING, OWED, PENDING, ROW_PREFIX, RowHead, counter, decode_row,
    ensure_format, find_row, row_head, row_key, trailing_id,
};

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
            created_millis: domain::created_millis(event.created_at),
            version: event.version,
            seq,
            flags,
            payload,
        }
    }
}

/// Most jobs applied in one batch by the view's writer.
const MAX_RECORDS: usize = 256;

/// Changes the feed holds for slow watchers before they miss some (they then re-read).
const FEED_CAPACITY: usize = 4096;

/// The watchers' feed, once the first watcher asked for it.
type Feed = Arc<std::sync::OnceLock<tokio::sync::broadcast::Sender<Change>>>;

/// A state this instance's view just took in (from the stream or its own write): what the
/// watchers of this instance are fed, once per state.
#[derive(Debug, Clone)]
pub struct Change {
    pub id: Uuid,
    pub version: u64,
    /// The order event's JSON as stored.
    pub payload: Arc<[u8]>,
}

#[derive(Clone)]
pub struct OrdersView {
    tree: Tree,
    replay: ReplayCache<RowHead>,
    /// The view's writer task: the states this instance writes and the projector's batches are
    /// applied together, whatever is queued during one batch forming the next (under load an instance's own writes come
    /// back from the stream while their records are still queued: one batch serves both).
    records: BatchWriter<OrderUpdate, Applied>,
    /// `<prefix>.`: subjects of the orders this instance's site owns. A hub's order stream also
    /// holds edge sites' orders (sourced): they are listed and read here, but settled, released
    /// and committed by their own site, so they never enter the work lists. Unset: all are own.
    own_subjects: Arc<std::sync::OnceLock<String>>,
    /// Every state the view takes in, in apply order: one fan-out per instance for all watchers.
    /// Made by the first watcher: its slots are allocated and written at once (~256 KiB).
    feed: Feed,
}

impl OrdersView {
    /// Orders on subjects under `prefix` are this site's own (see `own_subjects`).
    pub fn set_own_prefix(&self, prefix: &str) {
        let _ = self.own_subjects.set(format!("{prefix}."));
    }

    /// Opens the view and starts its writer (on the current runtime).
    pub fn open(store: &Store) -> Result<Self> {
        let tree = store.tree("orders_view")?;
        if ensure_format(&tree)? {
            tracing::info!("The orders view was in an older layout; emptied, it is replayed.");
        }
        let replay = ReplayCache::open(&tree, ROW_PREFIX)?;
        let feed = Feed::default();
        let records = {
            let (tree, replay, feed) = (tree.clone(), replay.clone(), feed.clone());
            BatchWriter::spawn(
                "the orders view writer",
                MAX_RECORDS,
                move |updates, checkpoint| {
                    apply_updates(&tree, &replay, updates, checkpoint, &feed)
                },
            )
        };
        Ok(Self {
            tree,
            replay,
            records,
            own_subjects: Arc::default(),
            feed,
        })
    }

    /// The feed of states this view takes in from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.feed
            .get_or_init(|| tokio::sync::broadcast::channel(FEED_CAPACITY).0)
            .subscribe()
    }

    /// Applies what is queued, then stops the writer (so the database can close).
    pub async fn close(&self) {
        self.records.close().await;
    }

    /// Records a state this instance read from the stream, and waits until it is applied (not
    /// flushed: the stream holds it; the view only caches it).
    pub async fn record(&self, stored: &Stored) -> Result<()> {
        let created = domain::created_millis(stored.order.created_at);
        if let Some(row) = self.tree.get(row_key(created, stored.order.id))?
            && row_head(&row)?.0 >= stored.order.version
        {
            return Ok(()); // already known (the usual case for reads)
        }
        let event = stored.order.to_event(state_event_type(&stored.order));
        let payload = serde_json::to_vec(&event).map_err(|e| Error::corrupt(e.to_string()))?;
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
        self.records
            .submit(vec![update], None, wait)
            .await
            .map(|_| ())
    }

    /// Returns once every record queued before this call is applied: a listing after this
    /// instance answered a write sees it (the create path does not wait for its final record).
    /// An empty job through the writer's queue, which applies in order; nothing is written.
    pub async fn caught_up(&self) -> Result<()> {
        self.records
            .submit(Vec::new(), None, true)
            .await
            .map(|_| ())
    }

    pub fn get(&self, id: Uuid) -> Result<Option<Stored>> {
        find_row(&self.tree, id)?
            .map(|row| decode_row(&row))
            .transpose()
    }

    /// One page of the orders a listing selects, newest first; their total; and the cursor of
    /// the next page (`None` on the last). One scan of the selection's key range: what comes
    /// before the page (or its cursor) is only counted.
    pub fn list(&self, listing: &Listing) -> Result<Listed> {
        let (mut range, kept_total) = match listing.customer {
            Some(c) => (IndexRange::of([&b"c"[..], c.as_bytes()].concat()), None),
            // Every order, unfiltered: the count is kept, so the scan may stop after the page.
            None if listing.is_everything() => (
                IndexRange::of(ROW_PREFIX.to_vec()),
                Some(self.counter(COUNT)? as usize),
            ),
            None => (IndexRange::of(ROW_PREFIX.to_vec()), None),
        };
        range.created(listing.created_after, listing.created_before);
        let (skip, cursor) = match &listing.page {
            Paging::Number { page, size } => ((page - 1).saturating_mul(*size), None),
            Paging::After { cursor, .. } => (0, cursor.as_deref()),
        };
        let size = listing.page.size();
        let (mut matched, mut orders, mut next_cursor, mut last_key) = (0, Vec::new(), None, None);
        for kv in self
            .tree
            .range(range.bounds(cursor.filter(|_| kept_total.is_some())))
        {
            let (key, value) = kv?;
            let suffix = &key[range.prefix.len()..];
            // The rows are their own listing; an index entry's suffix is its row's key.
            let row = if range.prefix == ROW_PREFIX {
                Some(value)
            } else {
                self.tree.get([ROW_PREFIX, suffix].concat())?
            };
            let Some(stored) = row.map(|row| decode_row(&row)).transpose()? else {
                continue;
            };
            if !listing.statuses.is_empty() && !listing.statuses.contains(&stored.order.status) {
                continue;
            }
            matched += 1;
            let before_page = matched <= skip || cursor.is_some_and(|c| suffix <= c);
            if before_page {
                continue;
            }
            if orders.len() < size {
                orders.push(stored.order);
                last_key = Some(suffix.to_vec());
            } else if next_cursor.is_none() {
                next_cursor = last_key.take();
                if kept_total.is_some() {
                    break; // the rest need not be counted
                }
            }
        }
        Ok(Listed {
            orders,
            total: kept_total.unwrap_or(matched),
            next_cursor,
        })
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
        let event = shared::events::OrderEvent::decode(&msg.subject, &msg.payload)?;
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
        let applied = self.records.submit(updates, checkpoint, true).await?;
        Ok(applied.expect("waited"))
    }

    fn checkpoint(&self) -> Result<Option<u64>> {
        replay::read_checkpoint(&self.tree)
    }

    fn rewind_checkpoint(&self, to: u64) -> Result<()> {
        replay::rewind_checkpoint(&self.tree, to)
    }

    fn end_cold_start(&self) {
        self.replay.end(Self::NAME);
    }
}
