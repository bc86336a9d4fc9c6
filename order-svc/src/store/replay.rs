//! What both read models (the ProductSnapshot and the orders view) share, written once: the
//! version guard's replay cache for a cold start, and the checkpoint kept in the model's own
//! tree, so one atomic batch moves rows and checkpoint together.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use sled::{Batch, Tree};
use uuid::Uuid;

use super::decode_u64;
use crate::error::Result;

/// Where a read model keeps the stream sequence of the last message it applied.
pub(crate) const CHECKPOINT: &[u8] = b"m:checkpoint";

/// How far the stored checkpoint may trail the stream over batches that change nothing: such a
/// batch then usually writes nothing and needs no flush, and a restart redelivers at most this
/// many already-known messages, which the version guard skips.
pub(crate) const CHECKPOINT_STRIDE: u64 = 1000;

/// The checkpoint stored in `tree`; `None` on a cold (never applied) model.
pub(crate) fn read_checkpoint(tree: &Tree) -> Result<Option<u64>> {
    tree.get(CHECKPOINT)?
        .map(|v| decode_u64(&v, CHECKPOINT))
        .transpose()
}

/// Adds the checkpoint `seq` to `batch` when it is due: always on a cold model, past the stored
/// one when the batch changed rows, else every [`CHECKPOINT_STRIDE`]. Returns whether it did.
pub(crate) fn stage_checkpoint(
    tree: &Tree,
    batch: &mut Batch,
    seq: Option<u64>,
    changed: usize,
) -> Result<bool> {
    let Some(seq) = seq else {
        return Ok(false);
    };
    let due = match read_checkpoint(tree)? {
        None => true,
        Some(stored) if changed > 0 => seq > stored,
        Some(stored) => seq >= stored.saturating_add(CHECKPOINT_STRIDE),
    };
    if due {
        batch.insert(CHECKPOINT, &seq.to_be_bytes());
    }
    Ok(due)
}

/// While a read model replays into a tree that was empty at open, the head (version, and what
/// else the guard needs) of every row written since: that is every row there is, so the guard
/// reads no sled (a tenth of a cold replay). Dropped when the model is ready.
#[derive(Clone)]
pub(crate) struct ReplayCache<H>(Arc<Mutex<Option<HashMap<Uuid, H>>>>);

impl<H: Copy> ReplayCache<H> {
    /// Cold (caching) when `tree` holds no checkpoint and no row under `row_prefix`.
    pub(crate) fn open(tree: &Tree, row_prefix: &[u8]) -> Result<Self> {
        let cold = tree.get(CHECKPOINT)?.is_none() && tree.scan_prefix(row_prefix).next().is_none();
        Ok(Self(Arc::new(Mutex::new(cold.then(HashMap::new)))))
    }

    /// The guard of one batch (only the model's writer task takes it).
    pub(crate) fn batch(&self) -> BatchGuard<'_, H> {
        BatchGuard {
            cache: self.0.lock().expect("replay cache lock"),
            staged: HashMap::new(),
        }
    }

    /// The replay is over: the guard reads sled from now on.
    pub(crate) fn end(&self, model: &str) {
        if self.0.lock().expect("replay cache lock").take().is_some() {
            tracing::debug!(model, "Cold start over; the version guard reads the store.");
        }
    }
}

/// One batch's view of row heads: what it staged itself, else the replay cache, else sled.
pub(crate) struct BatchGuard<'a, H> {
    cache: MutexGuard<'a, Option<HashMap<Uuid, H>>>,
    staged: HashMap<Uuid, H>,
}

impl<H: Copy> BatchGuard<'_, H> {
    /// The current head of row `id`; `read` reads it from sled when no cache knows it.
    pub(crate) fn current(
        &self,
        id: Uuid,
        read: impl FnOnce() -> Result<Option<H>>,
    ) -> Result<Option<H>> {
        match (self.staged.get(&id), self.cache.as_ref()) {
            (Some(head), _) => Ok(Some(*head)),
            (None, Some(heads)) => Ok(heads.get(&id).copied()),
            (None, None) => read(),
        }
    }

    /// Row `id` now has `head` in this batch.
    pub(crate) fn stage(&mut self, id: Uuid, head: H) {
        self.staged.insert(id, head);
    }

    /// The batch was applied: a cold model's cache learns what it staged.
    pub(crate) fn applied(mut self) {
        if let Some(heads) = self.cache.as_mut() {
            heads.extend(self.staged.drain());
        }
    }
}
