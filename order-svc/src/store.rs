//! order-svc's sled database: a cache of the streams, never a source of truth. Deleting it
//! loses nothing: the instance rebuilds both read models by replaying their streams.
//!
//! Trees:
//! - `snapshot`: the ProductSnapshot rows (`p` + id) **and** the projection checkpoint
//!   (`m:checkpoint`) and row count (`m:rows`), in one tree so one atomic batch moves them all;
//! - `orders_view`: this instance's copy of the order stream (see `view/`).
//!
//! Both projections flush through one group commit before they ack, so an ack never runs ahead
//! of what a restart finds.
use std::{collections::HashMap, sync::Arc};

use async_nats::jetstream;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use shared::{durability::GroupCommit, events::ProductEvent};
use sled::Tree;
use uuid::Uuid;

use crate::{
    domain::{self, ProductView},
    error::{Error, Result},
    projector::{Applied, Projection},
    view::OrdersView,
};

const CHECKPOINT_KEY: &[u8] = b"m:checkpoint";
/// How many product rows the snapshot holds, kept in the batches that add rows (readiness reports
/// it, and `Tree::len` is a full scan).
const ROWS_KEY: &[u8] = b"m:rows";

/// One decoded product event, for [`Store::apply_events`].
pub struct SnapshotUpdate {
    pub product_id: Uuid,
    pub view: ProductView,
}

#[derive(Clone)]
pub struct Store {
    snapshot: Tree,
    /// The snapshot's writer lock. While the store replays into a snapshot that was empty at
    /// open, it also holds the version of every row written since: that is every row there is,
    /// so the version guard needs no sled read (a tenth of a cold replay). Dropped once ready.
    snapshot_writer: Arc<std::sync::Mutex<Option<HashMap<Uuid, u64>>>>,
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
        Ok(Self {
            snapshot,
            snapshot_writer: Arc::new(std::sync::Mutex::new(cold.then(HashMap::new))),
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

/// The ProductSnapshot as a projection of `PRODUCTS`.
impl Projection for Store {
    type Update = SnapshotUpdate;
    const NAME: &'static str = "ProductSnapshot";

    fn decode(&self, msg: &jetstream::Message) -> std::result::Result<SnapshotUpdate, String> {
        let event: ProductEvent =
            serde_json::from_slice(&msg.payload).map_err(|e| format!("undecodable: {e}"))?;
        if event.schema_version != shared::events::SCHEMA_VERSION {
            return Err(format!(
                "unsupported schemaVersion {}",
                event.schema_version
            ));
        }
        if crate::projector::subject_id(&msg.subject) != Some(event.product_id) {
            return Err("productId does not match the subject".into());
        }
        if event.version == 0 {
            return Err("version must be at least 1".into());
        }
        Ok(SnapshotUpdate {
            product_id: event.product_id,
            view: ProductView::from(&event),
        })
    }

    async fn apply(
        &self,
        updates: Vec<SnapshotUpdate>,
        checkpoint: Option<u64>,
    ) -> Result<Applied> {
        let changed = self.apply_events(&updates, checkpoint)?;
        Ok(Applied {
            changed,
            wrote: true,
        })
    }

    fn checkpoint(&self) -> Result<Option<u64>> {
        Store::checkpoint(self)
    }

    fn end_cold_start(&self) {
        Store::end_cold_start(self)
    }
}

/// Just the version of a stored snapshot row (the guard needs nothing else).
#[derive(Deserialize)]
struct StoredVersion {
    version: u64,
}

/// A counter or sequence stored as 8 big-endian bytes under `key`.
pub(crate) fn decode_u64(bytes: &[u8], key: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| Error::corrupt(format!("{} is not a u64", String::from_utf8_lossy(key))))
}

fn snapshot_key(id: Uuid) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = b'p';
    key[1..].copy_from_slice(id.as_bytes());
    key
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

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
