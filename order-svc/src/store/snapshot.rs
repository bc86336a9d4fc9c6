//! The snapshot's writer: product events through the version guard into the `snapshot` tree,
//! with the row count and the checkpoint in the same atomic batch; and the snapshot as a
//! [`Projection`] of `PRODUCTS`.
use async_nats::jetstream;
use serde::Deserialize;
use shared::events::ProductEvent;

use super::*;
use crate::{
    domain,
    projector::{Applied, Projection},
};

/// One decoded product event, for [`Store::apply_events`].
pub struct SnapshotUpdate {
    pub product_id: Uuid,
    pub view: ProductView,
}

/// Most jobs applied in one batch by the snapshot's writer.
pub(super) const MAX_JOBS: usize = 64;

/// While the store replays into a snapshot that was empty at open, the version of every row
/// written since: that is every row there is, so the guard needs no sled read (a tenth of a
/// cold replay). Dropped once ready.
pub(super) type KnownVersions = Arc<Mutex<Option<HashMap<Uuid, u64>>>>;

/// Applies events through the version guard and moves the checkpoint to `checkpoint`, in one
/// `apply_batch` (rows, row count and checkpoint together). Only the writer task calls it, so
/// the read-check-write cannot race; the mutex only guards the replay cache, which
/// `end_cold_start` drops from the projector's side.
pub(super) fn apply(
    tree: &Tree,
    known: &KnownVersions,
    updates: &[SnapshotUpdate],
    checkpoint: Option<u64>,
) -> Result<usize> {
    let mut known = known.lock().expect("snapshot replay cache lock");
    let mut staged: HashMap<Uuid, u64> = HashMap::with_capacity(updates.len());
    let mut batch = sled::Batch::default();
    let (mut changed, mut added) = (0, 0);
    for u in updates {
        let current_version = match (staged.get(&u.product_id), known.as_ref()) {
            (Some(v), _) => Some(*v),
            (None, Some(versions)) => versions.get(&u.product_id).copied(),
            (None, None) => tree
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
        let rows = stored_u64(tree, ROWS_KEY)?.unwrap_or_default() + added;
        batch.insert(ROWS_KEY, &rows.to_be_bytes());
    }
    if let Some(seq) = checkpoint
        && stored_u64(tree, CHECKPOINT_KEY)?.is_none_or(|c| seq > c)
    {
        batch.insert(CHECKPOINT_KEY, &seq.to_be_bytes());
    }
    tree.apply_batch(batch)?;
    if let Some(versions) = known.as_mut() {
        versions.extend(staged);
    }
    Ok(changed)
}

/// A u64 stored under `key`, if any.
pub(super) fn stored_u64(tree: &Tree, key: &[u8]) -> Result<Option<u64>> {
    tree.get(key)?.map(|v| decode_u64(&v, key)).transpose()
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
        let changed = self.apply_events(updates, checkpoint).await?;
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

pub(super) fn snapshot_key(id: Uuid) -> [u8; 17] {
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
                .apply_events(vec![update(a, 1), update(a, 2), update(b, 1)], Some(3))
                .await
                .unwrap();
            assert_eq!(changed, 3);
            // An update, a stale event and a duplicate: no new rows.
            let changed = store
                .apply_events(vec![update(b, 2), update(a, 1), update(b, 2)], Some(6))
                .await
                .unwrap();
            assert_eq!(changed, 1);
            assert_eq!(store.snapshot_len().unwrap(), 2);
            // After the cold start the guard reads sled: same answers.
            store.end_cold_start();
            assert_eq!(
                store.apply_events(vec![update(a, 2)], None).await.unwrap(),
                0
            );
            store.close().await;
        });
        runtime().block_on(async {
            // sled's own threads may hold the file lock a moment after the first "process".
            let store = open_when_unlocked(dir.path());
            assert_eq!(store.snapshot_len().unwrap(), 2);
            assert_eq!(store.checkpoint().unwrap(), Some(6));
            assert_eq!(store.product(a).unwrap().unwrap().version, 2);
            // Not cold (rows exist): stale events are refused from what sled holds.
            assert_eq!(
                store.apply_events(vec![update(a, 1)], None).await.unwrap(),
                0
            );
            assert_eq!(
                store.apply_events(vec![update(a, 3)], None).await.unwrap(),
                1
            );
            assert_eq!(store.snapshot_len().unwrap(), 2);
            let (page, total) = store.snapshot_page(1, 1).unwrap();
            assert_eq!((page.len(), total), (1, 2));
        });
    }
}
