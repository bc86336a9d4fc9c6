//! The view's keys and rows, in one place: the meta keys, the row key and layout (sequence ·
//! version · flags · event JSON) and its decoding, finding a row by order id, and the counters.
//! (The checkpoint is `store::replay`'s, shared with the ProductSnapshot.)
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

/// The view's layout; a store written in another one is emptied at open and replayed.
const FORMAT: &[u8] = b"m:format";
const FORMAT_VERSION: u64 = 3;

/// Rows are keyed by creation time, newest first: `o` + inverted created-millis + order id.
pub(super) const ROW_PREFIX: &[u8] = b"o";

/// Inverted millis: key order is newest first.
pub(super) fn inverted(millis: u64) -> u64 {
    u64::MAX - millis
}

pub(super) fn row_key(created_millis: u64, id: Uuid) -> [u8; 25] {
    let mut key = [0u8; 25];
    key[0] = ROW_PREFIX[0];
    key[1..9].copy_from_slice(&inverted(created_millis).to_be_bytes());
    key[9..].copy_from_slice(id.as_bytes());
    key
}

/// `i` + order id → created millis: written only for an order whose id does not tell its
/// creation millisecond (a keyed order's v5 id, or an id from elsewhere).
pub(super) fn pointer_key(id: Uuid) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = b'i';
    key[1..].copy_from_slice(id.as_bytes());
    key
}

/// Whether an order needs a pointer to be found by id.
pub(super) fn needs_pointer(id: Uuid, created_millis: u64) -> bool {
    crate::domain::id_millis(id) != Some(created_millis)
}

/// The row of order `id`: where its id says, else where its pointer says.
pub(super) fn find_row(tree: &Tree, id: Uuid) -> Result<Option<sled::IVec>> {
    if let Some(millis) = crate::domain::id_millis(id)
        && let Some(row) = tree.get(row_key(millis, id))?
    {
        return Ok(Some(row));
    }
    match tree.get(pointer_key(id))? {
        Some(millis) => Ok(tree.get(row_key(decode_u64(&millis, b"pointer")?, id))?),
        None => Ok(None),
    }
}

/// Empties a store written in another layout (the view is a cache: it is replayed), and marks
/// the layout. Returns whether it emptied anything.
pub(super) fn ensure_format(tree: &Tree) -> Result<bool> {
    let current = tree
        .get(FORMAT)?
        .map(|v| decode_u64(&v, FORMAT))
        .transpose()?;
    if current == Some(FORMAT_VERSION) {
        return Ok(false);
    }
    let emptied = !tree.is_empty();
    if emptied {
        tree.clear()?;
    }
    tree.insert(FORMAT, &FORMAT_VERSION.to_be_bytes())?;
    Ok(emptied)
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
