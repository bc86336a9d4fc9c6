//! Reservations: reserve all-or-nothing, release, commit (each one ledger message), compaction,
//! and their reads.
use async_nats::jetstream::stream::Stream;
use std::time::Instant;

use chrono::Utc;
use shared::{
    correlation,
    events::{self, OrderStatus},
};
use uuid::Uuid;

use super::Store;
use crate::{
    domain::{self, Product, Reservation, ReservationStatus, Unrecorded},
    error::{Error, Result},
};

impl Store {
    /// Reserves every item or none. `items` must be merged (`domain::merge_items`). Returns the
    /// stored outcome; a different request under a known order id is a `RequestMismatch` failure.
    /// `unrecorded`: the order is not on the order stream yet (kept with the held stock, and
    /// watched until it is: `unrecorded.rs`).
    pub async fn reserve(
        &self,
        order_id: Uuid,
        items: &[(Uuid, i64)],
        unrecorded: Option<Unrecorded>,
    ) -> Result<Reservation> {
        let cid = correlation::current_or_new();
        self.known(items.iter().map(|(id, _)| *id)).await?;
        if let Some(refused) = self.settled_elsewhere(order_id, items).await? {
            return Ok(refused);
        }
        let items = items.to_vec();
        let reservation = self
            .transact(move |t| {
                let items = items.as_slice();
                if let Some(existing) = t.reservation_of(order_id)? {
                    return Ok(domain::replay_reserve(existing, order_id, items));
                }
                let mut state = Vec::with_capacity(items.len());
                for (id, _) in items {
                    let entry = match t.catalog.get(*id) {
                        Some(product) => {
                            let product = Product::clone(product);
                            let stock = t.stock_of(&product)?;
                            Some((product, stock))
                        }
                        None => None,
                    };
                    state.push(entry);
                }
                let reservation = match domain::plan_reservation(items, &state) {
                    Ok(planned) => {
                        for (((id, _), next), before) in items.iter().zip(&planned).zip(&state) {
                            let (product, before) = before.as_ref().expect("planned items exist");
                            if next.low && !before.low {
                                t.stock_low(product, next, &cid)?;
                            }
                            t.put_stock(*id, next)?;
                        }
                        Reservation::held(items, unrecorded.clone())
                    }
                    Err(failure) => Reservation::failed(items, failure, Utc::now()),
                };
                t.reservation(order_id, &reservation, &cid)?;
                Ok(reservation)
            })
            .await?;
        if reservation.status == ReservationStatus::Active && reservation.unrecorded.is_some() {
            self.unrecorded
                .lock()
                .expect("lock")
                .entry(order_id)
                .or_insert_with(Instant::now);
        }
        Ok(reservation)
    }

    /// Stops watching an order for being unrecorded: the order stream has it.
    pub fn recorded(&self, order_id: Uuid) {
        self.unrecorded.lock().expect("lock").remove(&order_id);
    }

    /// Watches every held reservation of the books whose order was unrecorded when it was held
    /// (a new stock writer: the last one's watch list went with it), from now. Returns how many.
    pub fn watch_unrecorded_in_books(&self) -> Result<usize> {
        let mut found = Vec::new();
        for entry in self.all_reservations() {
            let (id, reservation) = entry?;
            if reservation.status == ReservationStatus::Active && reservation.unrecorded.is_some() {
                found.push(id);
            }
        }
        let now = Instant::now();
        let mut watched = self.unrecorded.lock().expect("lock");
        for id in &found {
            watched.entry(*id).or_insert(now);
        }
        Ok(found.len())
    }

    /// The watched orders known for at least `grace`.
    pub fn due_unrecorded(&self, grace: std::time::Duration) -> Vec<Uuid> {
        let watched = self.unrecorded.lock().expect("lock");
        watched
            .iter()
            .filter(|(_, since)| since.elapsed() >= grace)
            .map(|(id, _)| *id)
            .collect()
    }

    /// A reserve for an order whose reservation may have been compacted (closed longer ago than
    /// retention: an edge site back after a week) must not hold stock again. Such an order
    /// is settled in the order stream: anything but Pending is refused (not stored). Only ids
    /// that can be that old are checked: a UUIDv7 order id carries its creation time, and a
    /// reservation closes after its order was created, so a younger one cannot have been
    /// compacted; other ids (keyed orders' UUIDv5) are always checked.
    async fn settled_elsewhere(
        &self,
        order_id: Uuid,
        items: &[(Uuid, i64)],
    ) -> Result<Option<Reservation>> {
        let Some(orders) = &self.orders else {
            return Ok(None);
        };
        if self.reservation(order_id)?.is_some() || !orders.may_be_compacted(order_id) {
            return Ok(None);
        }
        let status = orders.status(&self.js, order_id, self.timeout).await?;
        Ok(status
            .filter(|s| *s != OrderStatus::Pending)
            .map(|status| domain::refuse_settled(order_id, items, status)))
    }

    /// Makes sure the cache knows every product of `ids` that the catalog has: a product created
    /// on another instance a moment ago may not be applied here yet, and "not found" is final
    /// for a reservation.
    pub async fn known(&self, ids: impl Iterator<Item = Uuid>) -> Result<()> {
        for id in ids {
            if self.trees.catalog().get(id).is_none() {
                return self.sync_catalog().await;
            }
        }
        Ok(())
    }

    /// Gives an order's stock back. Idempotent; an unknown order leaves a tombstone so a late
    /// (retried) reserve for it cannot hold stock that nobody will release.
    pub async fn release(&self, order_id: Uuid) -> Result<bool> {
        let cid = correlation::current_or_new();
        self.transact(move |t| {
            let Some(mut reservation) = t.reservation_of(order_id)? else {
                t.reservation(order_id, &Reservation::tombstone(Utc::now()), &cid)?;
                return Ok(false);
            };
            if reservation.status != ReservationStatus::Active {
                return Ok(false);
            }
            for (id, qty) in &reservation.items {
                let product = t.product(*id)?;
                let mut stock = domain::release_units(t.stock_of(&product)?, *qty);
                if domain::update_low_flag(&mut stock, product.low_stock_threshold) {
                    t.stock_low(&product, &stock, &cid)?;
                }
                t.put_stock(*id, &stock)?;
            }
            reservation.close(ReservationStatus::Released, Utc::now());
            t.reservation(order_id, &reservation, &cid)?;
            Ok(true)
        })
        .await
    }

    /// Removes reservations that hold nothing and closed before `horizon` (`domain::expired`)
    /// from the ledger (a subject purge) and the cache. A committed one's units are first
    /// folded into a fresh count of each of its products, since a replay no longer sees it.
    /// Runs on the stock writer. Returns how many went.
    pub async fn compact(&self, horizon: chrono::DateTime<Utc>, ledger: &Stream) -> Result<usize> {
        let mut expired = Vec::new();
        let mut recount = std::collections::BTreeSet::new();
        for entry in self.all_reservations() {
            let (id, reservation) = entry?;
            if domain::expired(&reservation, horizon) {
                if reservation.status == ReservationStatus::Committed {
                    recount.extend(reservation.items.iter().map(|(p, _)| *p));
                }
                expired.push(id);
            }
        }
        if expired.is_empty() {
            return Ok(0);
        }
        let cid = correlation::current_or_new();
        let products: Vec<Uuid> = recount.into_iter().collect();
        for chunk in products.chunks(256) {
            let (chunk, cid) = (chunk.to_vec(), cid.clone());
            self.transact(move |t| {
                for id in &chunk {
                    if let Some(product) = t.catalog.get(*id) {
                        t.count(*id, &t.stock_of(product)?, &cid)?;
                    }
                }
                Ok(())
            })
            .await?;
        }
        let mut removed = 0;
        for id in expired {
            ledger
                .purge()
                .filter(events::ledger_reservation_subject(id))
                .await
                .map_err(|e| Error::Unavailable(e.to_string()))?;
            self.trees.reservations.remove(id.as_bytes())?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Every reservation in the books, by order id (keys that are not one are skipped).
    fn all_reservations(&self) -> impl Iterator<Item = Result<(Uuid, Reservation)>> + '_ {
        self.trees.reservations.iter().filter_map(|entry| {
            let decoded = entry.map_err(Error::from).and_then(|(key, value)| {
                let reservation: Reservation =
                    serde_json::from_slice(&value).map_err(|e| Error::corrupt(e.to_string()))?;
                Ok(Uuid::from_slice(&key).ok().map(|id| (id, reservation)))
            });
            decoded.transpose()
        })
    }

    /// The reservation recorded for an order, if any.
    pub fn reservation(&self, order_id: Uuid) -> Result<Option<Reservation>> {
        self.trees
            .reservations
            .get(order_id.as_bytes())?
            .map(|v| serde_json::from_slice(&v).map_err(|e| Error::corrupt(e.to_string())))
            .transpose()
    }

    /// Turns a shipped order's reservation into an on-hand decrement, in one ledger message.
    /// `Ok(false)` if it was already committed; refused for an unknown or released one.
    pub async fn commit(&self, order_id: Uuid) -> Result<bool> {
        let cid = correlation::current_or_new();
        self.transact(move |t| {
            let reservation = t.reservation_of(order_id)?;
            let apply = domain::commit_decision(reservation.as_ref())
                .map_err(|why| Error::NotCommittable { order_id, why })?;
            let Some(mut reservation) = reservation.filter(|_| apply) else {
                return Ok(false);
            };
            for (id, qty) in &reservation.items {
                let product = t.product(*id)?;
                let stock = t.stock_of(&product)?;
                t.put_stock(*id, &domain::commit_units(stock, *qty))?;
            }
            reservation.close(ReservationStatus::Committed, Utc::now());
            t.reservation(order_id, &reservation, &cid)?;
            Ok(true)
        })
        .await
    }
}
