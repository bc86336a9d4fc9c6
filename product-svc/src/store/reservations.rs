//! Reservations: reserve all-or-nothing, release, commit, compact, and their reads.
use chrono::Utc;
use shared::correlation;
use sled::transaction::ConflictableTransactionError;
use uuid::Uuid;

use super::{Store, writer::get_json};
use crate::{
    domain::{self, Product, Reservation, ReservationStatus},
    error::{Error, Result},
};

impl Store {
    /// Reserves every item or none. `items` must be merged (`domain::merge_items`). Returns the
    /// stored outcome; a different request under a known order id is a `RequestMismatch` failure.
    pub async fn reserve(&self, order_id: Uuid, items: &[(Uuid, i64)]) -> Result<Reservation> {
        let cid = correlation::current_or_new();
        let items = items.to_vec();
        let outcome = self
            .transact(move |t| {
                let items = items.as_slice();
                if let Some(existing) = get_json::<Reservation>(t.reservations, order_id)? {
                    return Ok(domain::replay_reserve(existing, order_id, items));
                }
                let mut state = Vec::with_capacity(items.len());
                for (id, _) in items {
                    let product = get_json::<Product>(t.products, *id)?;
                    let entry = match product {
                        Some(product) => Some((product, t.stock_of(*id)?)),
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
                            t.put(t.stock, *id, next)?;
                        }
                        Reservation::held(items)
                    }
                    Err(failure) => Reservation::failed(items, failure, Utc::now()),
                };
                t.put(t.reservations, order_id, &reservation)?;
                Ok(reservation)
            })
            .await?;
        self.wake_relay(true);
        Ok(outcome)
    }

    /// Gives an order's stock back. Idempotent; an unknown order leaves a tombstone so a late
    /// (retried) reserve for it cannot hold stock that nobody will release.
    pub async fn release(&self, order_id: Uuid) -> Result<bool> {
        let cid = correlation::current_or_new();
        let released = self
            .transact(move |t| {
                let Some(mut reservation) = get_json::<Reservation>(t.reservations, order_id)?
                else {
                    t.put(
                        t.reservations,
                        order_id,
                        &Reservation::tombstone(Utc::now()),
                    )?;
                    return Ok(false);
                };
                if reservation.status != ReservationStatus::Active {
                    return Ok(false);
                }
                for (id, qty) in &reservation.items {
                    let product = t.product(*id)?;
                    let mut stock = domain::release_units(t.stock_of(*id)?, *qty);
                    if domain::update_low_flag(&mut stock, product.low_stock_threshold) {
                        t.stock_low(&product, &stock, &cid)?;
                    }
                    t.put(t.stock, *id, &stock)?;
                }
                reservation.close(ReservationStatus::Released, Utc::now());
                t.put(t.reservations, order_id, &reservation)?;
                Ok(true)
            })
            .await?;
        Ok(released)
    }

    /// Removes reservations that hold nothing and closed before `horizon` (see `domain::expired`),
    /// and stamps closed ones from before retention existed so they expire in turn. Deletes go
    /// through the writer in chunks, re-checked inside the transaction. Returns how many went.
    pub async fn compact(&self, horizon: chrono::DateTime<Utc>) -> Result<usize> {
        let mut expired = Vec::new();
        let mut unstamped = Vec::new();
        for entry in self.trees.reservations.iter() {
            let (key, value) = entry?;
            let Ok(id) = Uuid::from_slice(&key) else {
                continue;
            };
            let reservation: Reservation =
                serde_json::from_slice(&value).map_err(|e| Error::corrupt(e.to_string()))?;
            if domain::expired(&reservation, horizon) {
                expired.push(id);
            } else if reservation.status != ReservationStatus::Active
                && reservation.closed_at.is_none()
            {
                unstamped.push(id);
            }
        }
        let mut removed = 0;
        for chunk in expired.chunks(256) {
            let chunk = chunk.to_vec();
            removed += self
                .transact(move |t| {
                    let mut n = 0;
                    for id in &chunk {
                        let still = get_json::<Reservation>(t.reservations, *id)?
                            .is_some_and(|r| domain::expired(&r, horizon));
                        if still {
                            t.reservations.remove(id.as_bytes().as_slice())?;
                            n += 1;
                        }
                    }
                    Ok(n)
                })
                .await?;
        }
        for chunk in unstamped.chunks(256) {
            let chunk = chunk.to_vec();
            self.transact(move |t| {
                for id in &chunk {
                    if let Some(mut r) = get_json::<Reservation>(t.reservations, *id)?
                        && r.status != ReservationStatus::Active
                        && r.closed_at.is_none()
                    {
                        r.closed_at = Some(Utc::now());
                        t.put(t.reservations, *id, &r)?;
                    }
                }
                Ok(())
            })
            .await?;
        }
        Ok(removed)
    }

    /// The reservation recorded for an order, if any.
    pub fn reservation(&self, order_id: Uuid) -> Result<Option<Reservation>> {
        self.trees
            .reservations
            .get(order_id.as_bytes())?
            .map(|v| serde_json::from_slice(&v).map_err(|e| Error::corrupt(e.to_string())))
            .transpose()
    }

    /// Every reservation's order id and status (for the audit), in key order.
    pub fn reservation_statuses(
        &self,
    ) -> impl Iterator<Item = Result<(Uuid, ReservationStatus)>> + use<> {
        self.trees.reservations.iter().map(|entry| {
            let (key, value) = entry?;
            let id = Uuid::from_slice(&key).map_err(|e| Error::corrupt(e.to_string()))?;
            let reservation: Reservation =
                serde_json::from_slice(&value).map_err(|e| Error::corrupt(e.to_string()))?;
            Ok((id, reservation.status))
        })
    }

    /// Turns a shipped order's reservation into an on-hand decrement, in one transaction.
    /// `Ok(false)` if it was already committed; refused for an unknown or released one.
    pub async fn commit(&self, order_id: Uuid) -> Result<bool> {
        self.transact(move |t| {
            let reservation = get_json::<Reservation>(t.reservations, order_id)?;
            let apply = domain::commit_decision(reservation.as_ref()).map_err(|why| {
                ConflictableTransactionError::Abort(Error::NotCommittable { order_id, why })
            })?;
            let Some(mut reservation) = reservation.filter(|_| apply) else {
                return Ok(false);
            };
            for (id, qty) in &reservation.items {
                let stock = t.stock_of(*id)?;
                t.put(t.stock, *id, &domain::commit_units(stock, *qty))?;
            }
            reservation.close(ReservationStatus::Committed, Utc::now());
            t.put(t.reservations, order_id, &reservation)?;
            Ok(true)
        })
        .await
    }
}
