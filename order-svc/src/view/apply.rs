//! Applying states to the view: the version guard, the customer index (and the id pointer an
//! order may need), the work-list flags and their counts, and the checkpoint, in one batch of
//! writes (`store::replay::Writes`).
use shared::events::{OrderEventType, OrderStatus};
use sled::Tree;
use uuid::Uuid;

use super::{
    Change, Feed, OrderUpdate,
    rows::{
        COUNT, FLAG_OWED, FLAG_PENDING, HEADER, OWED, PENDING, RowHead, counter, inverted,
        needs_pointer, pointer_key, row_head, row_key,
    },
};
use crate::{
    domain::{self, Order},
    error::Result,
    projector::Applied,
    store::replay::{self, ReplayCache, Writes},
};

/// Applies states through the version guard and moves the checkpoint, in one batch of writes.
///
/// A batch that changes no row (under load, mostly this instance's own writes coming back from
/// the stream) moves the stored checkpoint only when it is due (`store::replay`), so it
/// usually writes nothing and needs no flush.
pub(super) fn apply_updates(
    tree: &Tree,
    replay: &ReplayCache<RowHead>,
    updates: &[OrderUpdate],
    checkpoint: Option<u64>,
    feed: &Feed,
) -> Result<Applied> {
    let mut guard = replay.batch();
    // What the watchers of this instance are fed; nothing when none watch (a cold replay
    // applies every order here).
    let feed = feed.get().filter(|f| f.receiver_count() > 0);
    let watched = feed.is_some();
    let mut taken = Vec::new();
    let mut batch = Writes::default();
    let (mut changed, mut added, mut pending, mut owed) = (0usize, 0i64, 0i64, 0i64);
    for u in updates {
        // An order's creation time never changes, so its row key is known from any state.
        let key = row_key(u.created_millis, u.id);
        let current = guard.current(u.id, || tree.get(key)?.map(|r| row_head(&r)).transpose())?;
        if !domain::should_apply(current.map(|(v, _)| v), u.version) {
            continue;
        }
        let mut row = Vec::with_capacity(HEADER + u.payload.len());
        row.extend_from_slice(&u.seq.to_be_bytes());
        row.extend_from_slice(&u.version.to_be_bytes());
        row.push(u.flags);
        row.extend_from_slice(&u.payload);
        batch.insert(key, row);
        if current.is_none() {
            let inverted = inverted(u.created_millis).to_be_bytes();
            let by_customer = [&b"c"[..], u.customer.as_bytes(), &inverted, u.id.as_bytes()];
            batch.insert(by_customer.concat(), []);
            if needs_pointer(u.id, u.created_millis) {
                batch.insert(pointer_key(u.id), u.created_millis.to_be_bytes());
            }
            added += 1;
        }
        let old = current.map_or(0, |(_, flags)| flags);
        pending += flag_change(&mut batch, b'p', u.id, old, u.flags, FLAG_PENDING);
        owed += flag_change(&mut batch, b'r', u.id, old, u.flags, FLAG_OWED);
        guard.stage(u.id, (u.version, u.flags));
        if watched {
            taken.push(u);
        }
        changed += 1;
    }
    for (key, delta) in [(COUNT, added), (PENDING, pending), (OWED, owed)] {
        if delta != 0 {
            let value = counter(tree, key)?.saturating_add_signed(delta);
            batch.insert(key, value.to_be_bytes());
        }
    }
    let moved = replay::stage_checkpoint(tree, &mut batch, checkpoint, changed)?;
    if changed == 0 && !moved {
        return Ok(Applied {
            changed: 0,
            wrote: false,
        });
    }
    batch.apply(tree)?;
    guard.applied();
    if let Some(feed) = feed {
        for u in taken {
            // A watcher gone meanwhile is no error.
            let _ = feed.send(Change {
                id: u.id,
                version: u.version,
                payload: u.payload.as_slice().into(),
            });
        }
    }
    Ok(Applied {
        changed,
        wrote: true,
    })
}

/// The event type that leads to a state (for states recorded without their event).
pub(super) fn state_event_type(order: &Order) -> OrderEventType {
    match order.status {
        OrderStatus::Pending => OrderEventType::OrderPlaced,
        OrderStatus::Confirmed => OrderEventType::OrderConfirmed,
        OrderStatus::Rejected => OrderEventType::OrderRejected,
        OrderStatus::Cancelled if order.release_owed => OrderEventType::OrderCancelled,
        OrderStatus::Cancelled => OrderEventType::OrderStockReleased,
        OrderStatus::Shipped if order.commit_owed => OrderEventType::OrderShipped,
        OrderStatus::Shipped => OrderEventType::OrderStockCommitted,
    }
}

/// Adds or removes a work-list key when `flag` changes; returns the change in its count.
pub(super) fn flag_change(
    batch: &mut Writes,
    prefix: u8,
    id: Uuid,
    old: u8,
    new: u8,
    flag: u8,
) -> i64 {
    let key = [&[prefix][..], id.as_bytes()].concat();
    match (old & flag != 0, new & flag != 0) {
        (false, true) => {
            batch.insert(key, []);
            1
        }
        (true, false) => {
            batch.remove(key);
            -1
        }
        _ => 0,
    }
}
