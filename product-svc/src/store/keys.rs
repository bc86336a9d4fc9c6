//! Key encodings of the trees, in one place: index keys (`name 0 id`, `category 0 name 0 id`),
//! their parsing, and the product count in `meta`.
use uuid::Uuid;

use crate::{
    domain::Product,
    error::{Error, Result},
};

/// In `meta`: how many products the catalog holds (discontinued ones stay), moved by the
/// transaction that creates one, so readiness and listings read it instead of scanning.
pub(super) const PRODUCT_COUNT_KEY: &[u8] = b"products";

pub(super) fn name_key(p: &Product) -> Vec<u8> {
    let mut key = Vec::with_capacity(p.name.len() + 17);
    key.extend_from_slice(p.name.as_bytes());
    key.push(0);
    key.extend_from_slice(p.id.as_bytes());
    key
}

pub(super) fn category_key(p: &Product) -> Vec<u8> {
    let mut key = Vec::with_capacity(p.category.len() + p.name.len() + 18);
    key.extend_from_slice(p.category.as_bytes());
    key.push(0);
    key.extend_from_slice(&name_key(p));
    key
}

pub(super) fn decode_count(bytes: &[u8]) -> Result<usize> {
    <[u8; 8]>::try_from(bytes)
        .map(|b| u64::from_be_bytes(b) as usize)
        .map_err(|_| Error::corrupt("the product count is not a u64"))
}

pub(super) fn id_from_index_key(key: &[u8]) -> Result<Uuid> {
    key.len()
        .checked_sub(16)
        .and_then(|start| Uuid::from_slice(&key[start..]).ok())
        .ok_or_else(|| Error::corrupt("index key too short"))
}
