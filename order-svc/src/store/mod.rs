//! order-svc's sled database: a cache of the streams, never a source of truth. Deleting it
//! loses nothing: the instance rebuilds both read models by replaying their streams.
//!
//! Trees:
//! - `snapshot`: the ProductSnapshot rows (`p` + id) **and** the projection checkpoint
//!   (`m:checkpoint`) and row count (`m:rows`), in one tree so one atomic batch moves them all;
//! - `orders_view`: this instance's copy of the order stream (see `view/`).
//!
//! Each tree has one writer task (`shared::writer`); `snapshot.rs` is the snapshot's.
//!
//! Both projections flush through one group commit before they ack, so an ack never runs ahead
//! of what a restart finds.
mod batches;
mod snapshot;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use serde::{Serialize, de::DeserializeOwned};
use shared::durability::GroupCommit;
use sled::Tree;
use uuid::Uuid;

use crate::{
    domain::ProductView,
    error::{Error, Result},
    view::OrdersView,
};

pub(crate) use batches::BatchWriter;
pub use snapshot::SnapshotUpdate;
use snapshot::*;

const CHECKPOINT_KEY: &[u8] = b"m:checkpoint";
/// How many product rows the snapshot holds, kept in the batches that add rows (readiness reports
/// it, and `Tree::len` is a full scan).
const ROWS_KEY: &[u8] = b"m:rows";

#[derive(Clone)]
pub struct Store {
    snapshot: Tree,
    known: KnownVersions,
    /// The snapshot's writer task (`shared::writer`): the projector's batches and the
    /// read-through's rows, applied in queue order through the version guard.
    snapshot_writes: BatchWriter<SnapshotUpdate, usize>,
    orders_view: OrdersView,
    commit: GroupCommit,
    db: sled::Db,
}

impl Store {
    pub fn open(path: &std::path::Path, cache_bytes: u64) -> Result<Self> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()?;
        let snapshot = db.open_tree("snapshot")?;
        let cold =
            snapshot.get(CHECKPOINT_KEY)?.is_none() && snapshot.scan_prefix(b"p").next().is_none();
        if snapshot.get(ROWS_KEY)?.is_none() {
            // A store from before the row count was kept: count once.
            let rows = snapshot.scan_prefix(b"p").count() as u64;
            snapshot.insert(ROWS_KEY, &rows.to_be_bytes())?;
        }
        if db
            .tree_names()
            .iter()
            .any(|name| name.as_ref() == b"orders")
        {
            tracing::warn!(
                "This data dir holds order tables of the design before the order stream; they are \
                 not read or migrated (orders live in the order stream now)."
            );
        }
        let orders_view = OrdersView::open(&db)?;
        let known: KnownVersions = Arc::new(Mutex::new(cold.then(HashMap::new)));
        let snapshot_writes = {
            let (tree, known) = (snapshot.clone(), known.clone());
            BatchWriter::spawn(
                "the snapshot writer",
                MAX_JOBS,
                move |updates, checkpoint| snapshot::apply(&tree, &known, updates, checkpoint),
            )
        };
        Ok(Self {
            snapshot,
            known,
            snapshot_writes,
            orders_view,
            commit: GroupCommit::start(db.clone()),
            db,
        })
    }

    /// sled's files on disk, in bytes (0 if it cannot tell).
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or_default()
    }

    pub fn orders_view(&self) -> OrdersView {
        self.orders_view.clone()
    }

    /// Waits until every write made so far is on disk (shared by both projections).
    pub fn commit(&self) -> GroupCommit {
        self.commit.clone()
    }

    pub async fn close(&self) {
        self.snapshot_writes.close().await;
        self.orders_view.close().await;
        self.commit.close().await;
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
            let id = Uuid::from_slice(&key[1..]).map_err(|e| Error::corrupt(e.to_string()))?;
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
        stored_u64(&self.snapshot, key)
    }

    /// Applies product events through the version guard and moves the checkpoint, in the
    /// snapshot writer's next batch (one atomic sled batch). Not flushed: the projector flushes
    /// once per batch before it acks. Returns how many rows that batch changed.
    pub async fn apply_events(
        &self,
        updates: Vec<SnapshotUpdate>,
        checkpoint: Option<u64>,
    ) -> Result<usize> {
        let changed = self
            .snapshot_writes
            .submit(updates, checkpoint, true)
            .await?;
        Ok(changed.expect("waited"))
    }

    /// The replay into an empty snapshot is over: the version guard reads sled from now on.
    pub fn end_cold_start(&self) {
        let mut known = self.known.lock().expect("snapshot replay cache lock");
        if known.take().is_some() {
            tracing::debug!("Cold start over; the version guard reads the store.");
        }
    }
}

/// A counter or sequence stored as 8 big-endian bytes under `key`.
pub(crate) fn decode_u64(bytes: &[u8], key: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| Error::corrupt(format!("{} is not a u64", String::from_utf8_lossy(key))))
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::corrupt(e.to_string()))
}

pub(crate) fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::corrupt(e.to_string()))
}

fn read<T: DeserializeOwned>(tree: &Tree, key: &[u8]) -> Result<Option<T>> {
    tree.get(key)?.map(|b| from_json(&b)).transpose()
}
