//! The cache following the streams: product events into the catalog trees (newer versions
//! only), ledger messages into the books (`domain::books` says how), each batch in one sled
//! transaction with the position it reached.
use shared::events::{LEDGER_RESERVATION_PREFIX, LEDGER_STOCK_PREFIX, ProductEvent};
use sled::{
    Transactional,
    transaction::{ConflictableTransactionError, TransactionalTree},
};
use uuid::Uuid;

use super::{
    Store,
    keys::{PRODUCT_COUNT_KEY, category_key, decode_count, name_key},
    writer::{TxResult, get_json, put},
};
use crate::{
    domain::{self, Product, Reservation, StockRow},
    error::{Error, Result},
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
        let t = &self.trees;
        (&t.products, &t.by_name, &t.by_category, &t.meta)
            .transaction(|(products, by_name, by_category, meta)| {
                let mut added = 0u64;
                for event in &events {
                    let product = domain::product_from_event(event);
                    let existing = get_json::<Product>(products, product.id)?;
                    match &existing {
                        Some(old) if old.version >= product.version => continue,
                        Some(old) => {
                            by_name.remove(name_key(old))?;
                            by_category.remove(category_key(old))?;
                        }
                        None => added += 1,
                    }
                    put(products, product.id, &product)?;
                    by_name.insert(name_key(&product), &[])?;
                    by_category.insert(category_key(&product), &[])?;
                }
                if added > 0 {
                    count_products(meta, added)?;
                }
                Ok(())
            })
            .map_err(tx_error)?;
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
        let t = &self.trees;
        let poison = (&t.stock, &t.reservations)
            .transaction(|(stock, reservations)| {
                let mut poison = 0;
                for m in messages {
                    if !apply_one(stock, reservations, m)? {
                        poison += 1;
                    }
                }
                Ok(poison)
            })
            .map_err(tx_error)?;
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

/// Applies one ledger message; `false` if it does not decode (skipped).
fn apply_one(
    stock: &TransactionalTree,
    reservations: &TransactionalTree,
    m: &StreamMessage,
) -> TxResult<bool> {
    if let Some(id) = m.subject.strip_prefix(LEDGER_STOCK_PREFIX) {
        let (Ok(id), Ok(count)) = (
            Uuid::parse_str(id),
            serde_json::from_slice::<Count>(&m.payload),
        ) else {
            tracing::warn!(seq = m.seq, subject = %m.subject, "Undecodable stock count; skipped.");
            return Ok(false);
        };
        let row = get_json::<StockRow>(stock, id)?.unwrap_or_default();
        put(stock, id, &row.counted(count.on_hand))?;
    } else if let Some(id) = m.subject.strip_prefix(LEDGER_RESERVATION_PREFIX) {
        let (Ok(id), Ok(new)) = (
            Uuid::parse_str(id),
            serde_json::from_slice::<Reservation>(&m.payload),
        ) else {
            tracing::warn!(seq = m.seq, subject = %m.subject, "Undecodable reservation; skipped.");
            return Ok(false);
        };
        let old = get_json::<Reservation>(reservations, id)?;
        for e in domain::effect(old.as_ref(), &new) {
            let row = get_json::<StockRow>(stock, e.product_id)?.unwrap_or_default();
            let row = StockRow {
                reserved: row.reserved + e.reserved,
                shipped: row.shipped + e.shipped,
                ..row
            };
            put(stock, e.product_id, &row)?;
        }
        put(reservations, id, &new)?;
    }
    // The lease and the heartbeat move nothing in the books.
    Ok(true)
}

fn count_products(meta: &TransactionalTree, added: u64) -> TxResult<()> {
    let count = match meta.get(PRODUCT_COUNT_KEY)? {
        Some(v) => decode_count(&v).map_err(ConflictableTransactionError::Abort)? as u64,
        None => 0,
    };
    meta.insert(PRODUCT_COUNT_KEY, &(count + added).to_be_bytes())?;
    Ok(())
}

fn advance(at: &mut u64, to: u64) -> bool {
    let moved = to > *at;
    if moved {
        *at = to;
    }
    moved
}

fn tx_error(e: sled::transaction::TransactionError<Error>) -> Error {
    match e {
        sled::transaction::TransactionError::Abort(e) => e,
        sled::transaction::TransactionError::Storage(e) => e.into(),
    }
}
