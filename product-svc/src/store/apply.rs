//! The cache following the streams: product events into the catalog (newer versions only),
//! ledger messages into the books (`domain::books` says how).
//!
//! The catalog is in memory (`catalog_cache.rs`). The books are written with one `sled::Batch`
//! per tree, not a transaction: nothing else writes these trees meanwhile (the books are the
//! follower's until the instance writes stock, and it stops following first), and the cache is
//! rebuilt from the streams at every start, so a crash between two trees' batches costs nothing.
use std::collections::HashMap;

use shared::events::{LEDGER_RESERVATION_PREFIX, LEDGER_STOCK_PREFIX, ProductEvent};
use uuid::Uuid;

use super::{
    Store,
    writer::{json, read},
};
use crate::{
    domain::{self, Reservation, StockRow},
    error::Result,
};

/// A message of `PRODUCTS` or `LEDGER`, as the cache applies it.
#[derive(Debug, Clone)]
pub struct StreamMessage {
    pub seq: u64,
    pub subject: String,
    pub payload: bytes::Bytes,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Count {
    on_hand: i64,
}

impl Store {
    /// Applies product events (with their stream sequences); returns how many were undecodable.
    pub fn apply_catalog(&self, messages: &[StreamMessage]) -> Result<u64> {
        let Some(last) = messages.last().map(|m| m.seq) else {
            return Ok(0);
        };
        let mut poison = 0;
        let events: Vec<ProductEvent> = messages
            .iter()
            .filter_map(|m| match ProductEvent::decode(&m.subject, &m.payload) {
                Ok(event) => Some(event),
                Err(error) => {
                    poison += 1;
                    tracing::warn!(seq = m.seq, subject = %m.subject, %error, "Poison product event; skipped.");
                    None
                }
            })
            .collect();
        let mut catalog = self.trees.catalog.write().expect("catalog lock");
        for event in &events {
            if catalog
                .version(event.product_id)
                .is_none_or(|held| held < event.version)
            {
                catalog.put(domain::product_from_event(event));
            }
        }
        drop(catalog);
        self.progress
            .catalog
            .send_if_modified(|at| advance(at, last));
        Ok(poison)
    }

    /// Applies ledger messages (a follower's books); returns how many were undecodable.
    pub fn apply_ledger(&self, messages: &[StreamMessage]) -> Result<u64> {
        let Some(last) = messages.last().map(|m| m.seq) else {
            return Ok(0);
        };
        let mut books = Books {
            store: self,
            stock: HashMap::new(),
            reservations: HashMap::new(),
        };
        let mut poison = 0;
        for m in messages {
            if !books.apply(m)? {
                poison += 1;
            }
        }
        let (mut stock, mut reservations) = (sled::Batch::default(), sled::Batch::default());
        for (id, row) in books.stock {
            stock.insert(id.as_bytes().as_slice(), json(&row)?);
        }
        for (id, r) in books.reservations {
            reservations.insert(id.as_bytes().as_slice(), json(&r)?);
        }
        self.trees.stock.apply_batch(stock)?;
        self.trees.reservations.apply_batch(reservations)?;
        self.progress
            .ledger
            .send_if_modified(|at| advance(at, last));
        Ok(poison)
    }

    /// Empties the books (stock rows and reservations) before they are rebuilt from the ledger;
    /// waits for a write batch in progress to end first.
    pub async fn wipe_books(&self) -> Result<()> {
        let _gate = self.gate.lock().await;
        self.trees.stock.clear()?;
        self.trees.reservations.clear()?;
        self.progress.ledger.send_replace(0);
        Ok(())
    }
}

/// One batch of ledger messages applied in memory (rows read once, written once).
struct Books<'a> {
    store: &'a Store,
    stock: HashMap<Uuid, StockRow>,
    reservations: HashMap<Uuid, Reservation>,
}

impl Books<'_> {
    fn stock_row(&mut self, id: Uuid) -> Result<&mut StockRow> {
        if !self.stock.contains_key(&id) {
            let row = read::<StockRow>(&self.store.trees.stock, id)?.unwrap_or_default();
            self.stock.insert(id, row);
        }
        Ok(self.stock.get_mut(&id).expect("just inserted"))
    }

    /// Applies one ledger message; `false` if it does not decode (skipped).
    fn apply(&mut self, m: &StreamMessage) -> Result<bool> {
        if let Some(id) = m.subject.strip_prefix(LEDGER_STOCK_PREFIX) {
            let (Ok(id), Ok(count)) = (
                Uuid::parse_str(id),
                serde_json::from_slice::<Count>(&m.payload),
            ) else {
                tracing::warn!(seq = m.seq, subject = %m.subject, "Undecodable stock count; skipped.");
                return Ok(false);
            };
            let row = self.stock_row(id)?;
            *row = row.counted(count.on_hand);
        } else if let Some(id) = m.subject.strip_prefix(LEDGER_RESERVATION_PREFIX) {
            let (Ok(id), Ok(new)) = (
                Uuid::parse_str(id),
                serde_json::from_slice::<Reservation>(&m.payload),
            ) else {
                tracing::warn!(seq = m.seq, subject = %m.subject, "Undecodable reservation; skipped.");
                return Ok(false);
            };
            let old = match self.reservations.get(&id) {
                Some(r) => Some(r.clone()),
                None => read::<Reservation>(&self.store.trees.reservations, id)?,
            };
            for e in domain::effect(old.as_ref(), &new) {
                let row = self.stock_row(e.product_id)?;
                row.reserved += e.reserved;
                row.shipped += e.shipped;
            }
            self.reservations.insert(id, new);
        }
        // The lease and the heartbeat move nothing in the books.
        Ok(true)
    }
}

fn advance(at: &mut u64, to: u64) -> bool {
    let moved = to > *at;
    if moved {
        *at = to;
    }
    moved
}
