//! order-svc's sled database: a cache of the streams, never a source of truth. Deleting it
//! loses nothing: the instance rebuilds both read models by replaying their streams.
//!
//! [`Store`] owns the `sled::Db`; the read models (the ProductSnapshot in
//! `snapshot.rs`, the orders view in `view/`) each open a tree of it, and share what is written
//! once here: the writer task of a read model ([`BatchWriter`]), the replay cache and the
//! checkpoint ([`replay`]), and the JSON and counter codecs.
//!
//! Nothing here waits for the disk: sled flushes every half second on its own, and a restart
//! after a crash resumes each model from the checkpoint sled recovered (`projector` says how).
mod batches;
pub(crate) mod replay;

use serde::{Serialize, de::DeserializeOwned};
use sled::Tree;

use crate::error::{Error, Result};

pub(crate) use batches::BatchWriter;

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
}

impl Store {
    pub fn open(path: &std::path::Path, cache_bytes: u64) -> Result<Self> {
        let db = sled_config(path, cache_bytes).open()?;
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
        Ok(Self { db })
    }

    /// A read model's tree.
    pub(crate) fn tree(&self, name: &str) -> Result<Tree> {
        Ok(self.db.open_tree(name)?)
    }

    /// sled's files on disk, in bytes (0 if it cannot tell).
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or_default()
    }

    /// Has sled write its recovery snapshot, after every handle of the database is dropped (at
    /// shutdown): sled writes one only when it opens, and otherwise reads back, at the next
    /// start, its whole log since the last one (every write of a long replay: ~170 ms for
    /// 100k orders + 100k products). Opening it here moves that read to the graceful stop, as a
    /// database's shutdown checkpoint does; a crash leaves it to the next start, as before.
    /// Fails at once (sled's file lock) if a handle is still alive somewhere.
    pub fn checkpoint(path: &std::path::Path, cache_bytes: u64) -> Result<()> {
        drop(sled_config(path, cache_bytes).open()?);
        Ok(())
    }

    /// Flushes what the read models wrote (a restart then resumes where they stopped); close
    /// their writers first.
    pub async fn close(&self) {
        if let Err(error) = self.db.flush_async().await {
            tracing::warn!(%error, "Flushing the read models at shutdown failed; a restart replays from their last checkpoints.");
        }
    }
}

fn sled_config(path: &std::path::Path, cache_bytes: u64) -> sled::Config {
    sled::Config::new().path(path).cache_capacity(cache_bytes)
}

/// A counter or sequence stored as 8 big-endian bytes under `key`.
pub(crate) fn decode_u64(bytes: &[u8], key: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| Error::corrupt(format!("{} is not a u64", String::from_utf8_lossy(key))))
}

/// A u64 stored under `key`, if any.
pub(crate) fn stored_u64(tree: &Tree, key: &[u8]) -> Result<Option<u64>> {
    tree.get(key)?.map(|v| decode_u64(&v, key)).transpose()
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::corrupt(e.to_string()))
}

pub(crate) fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::corrupt(e.to_string()))
}
