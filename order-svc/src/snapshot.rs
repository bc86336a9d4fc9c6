//! The ProductSnapshot: this instance's sled copy of `PRODUCTS` (catalog data for pricing, the
//! Phase-15 read model), a [`Projection`] like the orders view. One tree, so one batch of writes
//! (`store::replay::Writes`, checkpoint last) moves the rows, the row count and the checkpoint:
//! - `p` + product id → the row (`ProductView` JSON);
//! - `m:checkpoint` (`store::replay`), `m:rows` (the row count: readiness reports it, and
//!   `Tree::len` is a full scan).
//!
//! One writer task applies the projector's batches and the read-through's rows, in queue order,
//! through the version guard: a row's version never goes down.
use std::collections::HashMap;

use async_nats::jetstream;
use serde::Deserialize;
use shared::events::ProductEvent;
use sled::Tree;
use uuid::Uuid;

use crate::{
    domain::{self, ProductView},
    error::{Error, Result},
    projector::{Applied, Projection},
    store::{
        BatchWriter, Store, from_json,
        replay::{self, ReplayCache},
        stored_u64, to_json,
    },
};

const ROWS_KEY: &[u8] = b"m:rows";

/// Most jobs applied in one batch by the snapshot's writer.
const MAX_JOBS: usize = 64;

/// One decoded product event (or a row read through from product-svc) to apply.
pub struct SnapshotUpdate {
    pub product_id: Uuid,
    pub view: ProductView,
}

#[derive(Clone)]
pub struct ProductSnapshot {
    tree: Tree,
    replay: ReplayCache<u64>,
    /// The writer task: the projector's batches and the read-through's rows.
    writes: BatchWriter<SnapshotUpdate, Applied>,
}

impl ProductSnapshot {
    /// Opens the snapshot's tree and starts its writer (on the current runtime).
    pub fn open(store: &Store) -> Result<Self> {
        let tree = store.tree("snapshot")?;
        if tree.get(ROWS_KEY)?.is_none() {
            // A store from before the row count was kept: count once.
            let rows = tree.scan_prefix(b"p").count() as u64;
            tree.insert(ROWS_KEY, &rows.to_be_bytes())?;
        }
        let replay = ReplayCache::open(&tree, b"p")?;
        let writes = {
            let (tree, replay) = (tree.clone(), replay.clone());
            BatchWriter::spawn(
                "the snapshot writer",
                MAX_JOBS,
                move |updates, checkpoint| apply(&tree, &replay, updates, checkpoint),
            )
        };
        Ok(Self {
            tree,
            replay,
            writes,
        })
    }

    /// Applies what is queued, then stops the writer (so the database can close).
    pub async fn close(&self) {
        self.writes.close().await;
    }

    pub fn product(&self, id: Uuid) -> Result<Option<ProductView>> {
        self.tree.get(key(id))?.map(|b| from_json(&b)).transpose()
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

    /// One page of rows in id order (an operator's view of the read model), and the total.
    pub fn page(&self, page: usize, page_size: usize) -> Result<(Vec<(Uuid, ProductView)>, usize)> {
        let skip = (page - 1).saturating_mul(page_size);
        let mut items = Vec::with_capacity(page_size.min(1000));
        for kv in self.tree.scan_prefix(b"p").skip(skip).take(page_size) {
            let (key, value) = kv?;
            let id = Uuid::from_slice(&key[1..]).map_err(|e| Error::corrupt(e.to_string()))?;
            items.push((id, from_json(&value)?));
        }
        Ok((items, self.len()? as usize))
    }

    /// How many products the snapshot holds.
    pub fn len(&self) -> Result<u64> {
        stored_u64(&self.tree, ROWS_KEY).map(Option::unwrap_or_default)
    }

    /// Applies rows through the version guard (and moves the checkpoint when it is due), in
    /// the writer's next batch. Not flushed: the snapshot is a cache (`projector` says why).
    pub async fn apply_events(
        &self,
        updates: Vec<SnapshotUpdate>,
        checkpoint: Option<u64>,
    ) -> Result<Applied> {
        let applied = self.writes.submit(updates, checkpoint, true).await?;
        Ok(applied.expect("waited"))
    }
}

/// Applies rows through the version guard, with the row count and the checkpoint, in one batch
/// of writes (`replay::Writes`). Only the writer task calls it, so the read-check-write cannot
/// race.
fn apply(
    tree: &Tree,
    replay: &ReplayCache<u64>,
    updates: &[SnapshotUpdate],
    checkpoint: Option<u64>,
) -> Result<Applied> {
    let mut guard = replay.batch();
    let mut batch = replay::Writes::default();
    let (mut changed, mut added) = (0, 0);
    for u in updates {
        let current = guard.current(u.product_id, || {
            tree.get(key(u.product_id))?
                .map(|b| from_json::<StoredVersion>(&b).map(|v| v.version))
                .transpose()
        })?;
        if domain::should_apply(current, u.view.version) {
            batch.insert(key(u.product_id), to_json(&u.view)?);
            guard.stage(u.product_id, u.view.version);
            changed += 1;
            added += u64::from(current.is_none());
        }
    }
    if added > 0 {
        let rows = stored_u64(tree, ROWS_KEY)?.unwrap_or_default() + added;
        batch.insert(ROWS_KEY, rows.to_be_bytes());
    }
    let moved = replay::stage_checkpoint(tree, &mut batch, checkpoint, changed)?;
    if changed == 0 && !moved {
        return Ok(Applied {
            changed,
            wrote: false,
        });
    }
    batch.apply(tree)?;
    guard.applied();
    Ok(Applied {
        changed,
        wrote: true,
    })
}

/// The ProductSnapshot as a projection of `PRODUCTS`.
impl Projection for ProductSnapshot {
    type Update = SnapshotUpdate;
    const NAME: &'static str = "ProductSnapshot";

    fn decode(&self, msg: &jetstream::Message) -> std::result::Result<SnapshotUpdate, String> {
        let event = ProductEvent::decode(&msg.subject, &msg.payload)?;
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
        self.apply_events(updates, checkpoint).await
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

/// Just the version of a stored row (the guard needs nothing else).
#[derive(Deserialize)]
struct StoredVersion {
    version: u64,
}

fn key(id: Uuid) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = b'p';
    key[1..].copy_from_slice(id.as_bytes());
    key
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

    /// A "process": the database and the snapshot on it.
    fn open_when_unlocked(path: &std::path::Path) -> (Store, ProductSnapshot) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Store::open(path, 1 << 20) {
                Ok(store) => {
                    let snapshot = ProductSnapshot::open(&store).unwrap();
                    return (store, snapshot);
                }
                Err(e) if std::time::Instant::now() >= deadline => {
                    panic!("store never opened: {e:?}")
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    }

    async fn changed(
        snapshot: &ProductSnapshot,
        updates: Vec<SnapshotUpdate>,
        seq: Option<u64>,
    ) -> usize {
        snapshot.apply_events(updates, seq).await.unwrap().changed
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
            let (store, snapshot) = open_when_unlocked(dir.path());
            assert_eq!(snapshot.len().unwrap(), 0);
            assert_eq!(snapshot.checkpoint().unwrap(), None);
            let batch = vec![update(a, 1), update(a, 2), update(b, 1)];
            assert_eq!(changed(&snapshot, batch, Some(3)).await, 3);
            // An update, a stale event and a duplicate: no new rows.
            let batch = vec![update(b, 2), update(a, 1), update(b, 2)];
            assert_eq!(changed(&snapshot, batch, Some(6)).await, 1);
            assert_eq!(snapshot.len().unwrap(), 2);
            // After the cold start the guard reads sled: same answers.
            snapshot.end_cold_start();
            assert_eq!(changed(&snapshot, vec![update(a, 2)], None).await, 0);
            // Nothing changed and the checkpoint is not due: nothing is written.
            let quiet = snapshot
                .apply_events(vec![update(a, 2)], Some(7))
                .await
                .unwrap();
            assert!(!quiet.wrote);
            snapshot.close().await;
            store.close().await;
        });
        runtime().block_on(async {
            // sled's own threads may hold the file lock a moment after the first "process".
            let (_store, snapshot) = open_when_unlocked(dir.path());
            assert_eq!(snapshot.len().unwrap(), 2);
            assert_eq!(snapshot.checkpoint().unwrap(), Some(6));
            assert_eq!(snapshot.product(a).unwrap().unwrap().version, 2);
            // Not cold (rows exist): stale events are refused from what sled holds.
            assert_eq!(changed(&snapshot, vec![update(a, 1)], None).await, 0);
            assert_eq!(changed(&snapshot, vec![update(a, 3)], None).await, 1);
            assert_eq!(snapshot.len().unwrap(), 2);
            let (page, total) = snapshot.page(1, 1).unwrap();
            assert_eq!((page.len(), total), (1, 2));
        });
    }
}
