//! The view's keys and rows, in one place: the meta keys, the row layout (sequence · version ·
//! flags · event JSON) and its decoding, and the counters. (The checkpoint is
//! `store::replay`'s, shared with the ProductSnapshot.)
use shared::events::OrderEvent;
use sled::Tree;
use uuid::Uuid;

use crate::{
    domain::Order,
    error::{Error, Result},
    order_log::Stored,
    store::decode_u64,
};

pub(super) const COUNT: &[u8] = b"m:count";
pub(super) const PENDING: &[u8] = b"m:pending";
pub(super) const OWED: &[u8] = b"m:owed";
pub(super) const HEADER: usize = 17;
pub(super) const FLAG_PENDING: u8 = 1;
pub(super) const FLAG_OWED: u8 = 2;

/// (version, flags) of a stored row: what the guard and the work lists need.
pub(super) type RowHead = (u64, u8);

pub(super) fn counter(tree: &Tree, key: &[u8]) -> Result<u64> {
    Ok(tree
        .get(key)?
        .map(|v| decode_u64(&v, key))
        .transpose()?
        .unwrap_or_default())
}

pub(super) fn row_key(id: Uuid) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = b'o';
    key[1..].copy_from_slice(id.as_bytes());
    key
}

pub(super) fn row_head(row: &[u8]) -> Result<RowHead> {
    if row.len() < HEADER {
        return Err(Error::corrupt("an orders view row is too short"));
    }
    let version = decode_u64(&row[8..16], b"version")?;
    Ok((version, row[16]))
}

pub(super) fn decode_row(row: &[u8]) -> Result<Stored> {
    row_head(row)?;
    let seq = decode_u64(&row[..8], b"seq")?;
    let event: OrderEvent =
        serde_json::from_slice(&row[HEADER..]).map_err(|e| Error::corrupt(e.to_string()))?;
    Ok(Stored {
        order: Order::from_event(&event),
        seq,
    })
}

/// The order id that ends an index key.
pub(super) fn trailing_id(key: &[u8]) -> Result<Uuid> {
    key.len()
        .checked_sub(16)
        .and_then(|start| Uuid::from_slice(&key[start..]).ok())
        .ok_or_else(|| Error::corrupt("an orders view key is too short"))
}
