//! What both read models (the ProductSnapshot and the orders view) share, written once: the
//! version guard's replay cache for a cold start, the checkpoint kept in the model's own tree,
//! and the batch of writes that moves rows and checkpoint together ([`Writes`]).
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use sled::{IVec, Tree};
use uuid::Uuid;

use super::decode_u64;
use crate::error::Result;

/// Where a read model keeps the stream sequence of the last message it applied.
pub(crate) const CHECKPOINT: &[u8] = b"m:checkpoint";

/// How far the stored checkpoint may trail the stream over batches that change nothing: such a
/// batch then usually writes nothing, and a restart redelivers at most this
/// many already-known messages, which the version guard skips.
pub(crate) const CHECKPOINT_STRIDE: u64 = 1000;

/// The checkpoint stored in `tree`; `None` on a cold (never applied) model.
pub(crate) fn read_checkpoint(tree: &Tree) -> Result<Option<u64>> {
    tree.get(CHECKPOINT)?
        .map(|v| decode_u64(&v, CHECKPOINT))
        .transpose()
}

/// One batch of a read model's writes, applied key by key (in key order), the checkpoint last.
/// Not a `sled::Batch`: each `apply_batch` seals one of sled's log buffers and has a background
/// thread write it out, which under load made the orders view's writes a third of order-svc's
/// CPU. Atomicity is not needed for what the batch kept true: only the model's writer task
/// writes its tree (but for `rewind_checkpoint`), and sled recovers a prefix of its log after a
/// crash (writes in log order, up to the first one missing), so a checkpoint is never found
/// without the rows staged before it. A reader may see a batch half applied: a listing skips an
/// index entry whose row is not there yet, and a count may trail its rows for that moment.
#[derive(Default)]
pub(crate) struct Writes {
    ops: Vec<(IVec, Option<IVec>)>,
    checkpoint: Option<u64>,
}

impl Writes {
    pub(crate) fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.ops
            .push((key.as_ref().into(), Some(value.as_ref().into())));
    }

    pub(crate) fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.ops.push((key.as_ref().into(), None));
    }

    /// Writes everything staged, in key order, then the checkpoint. Key order walks sled's tree
    /// from leaf to neighbouring leaf (a replay's batches of 1,000 got ~5 % faster); the sort is
    /// stable, so the writes of one key keep their order.
    pub(crate) fn apply(mut self, tree: &Tree) -> Result<()> {
        self.ops.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, value) in self.ops {
            match value {
                Some(value) => tree.insert(key, value)?,
                None => tree.remove(key)?,
            };
        }
        if let Some(seq) = self.checkpoint {
            tree.insert(CHECKPOINT, &seq.to_be_bytes())?;
        }
        Ok(())
    }
}

/// Moves the stored checkpoint back to `to` if it is past it. Outside the writer task, by the
/// projector once every batch it queued is written (nothing else moves the checkpoint).
pub(crate) fn rewind_checkpoint(tree: &Tree, to: u64) -> Result<()> {
    if read_checkpoint(tree)?.is_some_and(|stored| stored > to) {
        tree.insert(CHECKPOINT, &to.to_be_bytes())?;
    }
    Ok(())
}

/// Stages the checkpoint `seq` when it is due: always on a cold model, past the stored one when
/// the batch changed rows, else every [`CHECKPOINT_STRIDE`]. Returns whether it did.
pub(crate) fn stage_checkpoint(
    tree: &Tree,
    batch: &mut Writes,
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
        batch.checkpoint = Some(seq);
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
