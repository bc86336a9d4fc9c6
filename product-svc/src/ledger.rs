//! The rules that keep the reservation ledger in step with the orders' latest states (no I/O).
//!
//! order-svc's gRPC calls are the fast path: it reserves, releases what a cancel owes and
//! commits what a shipment owes. The order stream is the truth both services agree on, so
//! product-svc follows it as a safety net: a reservation still held for an order that no longer
//! needs it (its release was lost with an order-svc disk, or never sent) is released, one still
//! held for a shipped order is committed. Repairs wait a grace period after the order's last
//! change, so the fast path normally wins and the net only catches what fell through.
use std::time::Duration;

use serde::Serialize;
use shared::events::OrderStatus;

use crate::domain::{Reservation, ReservationStatus};

/// What the follower does about one order state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerAction {
    /// The ledger agrees (or the order is still in flight).
    Nothing,
    /// Give the held stock back (or leave a tombstone for a cancelled order never reserved, so a
    /// late reserve cannot hold stock).
    Release,
    /// Turn the held stock into an on-hand decrement.
    Commit,
    /// A repair is due once the grace period has passed: look again after this long.
    Wait(Duration),
    /// The ledger disagrees in a way no repair can fix (logged and counted; the audit lists it).
    Unrepairable(Mismatch),
}

/// A disagreement between an order's latest state and its reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Mismatch {
    /// Stock still held for a cancelled or rejected order.
    HeldForCancelled,
    /// Stock still held for a shipped order (its commit is owed).
    HeldForShipped,
    /// A confirmed order whose stock is not held.
    MissingForConfirmed,
    /// A shipped order whose stock was neither held nor committed.
    MissingForShipped,
    /// Stock committed for an order that is not shipped.
    CommittedNotShipped,
    /// Stock held for an order the order stream does not know.
    HeldWithoutOrder,
}

fn status(reservation: Option<&Reservation>) -> Option<ReservationStatus> {
    reservation.map(|r| r.status)
}

/// What the ledger should do for an order in `order` state whose last change is `age` old.
pub fn follow(
    order: OrderStatus,
    age: Duration,
    reservation: Option<&Reservation>,
    grace: Duration,
) -> LedgerAction {
    let due = |action| {
        if age >= grace {
            action
        } else {
            LedgerAction::Wait(grace - age)
        }
    };
    match (order, status(reservation)) {
        (OrderStatus::Cancelled, Some(ReservationStatus::Active) | None) => {
            due(LedgerAction::Release)
        }
        (OrderStatus::Rejected, Some(ReservationStatus::Active)) => due(LedgerAction::Release),
        (OrderStatus::Shipped, Some(ReservationStatus::Active)) => due(LedgerAction::Commit),
        (OrderStatus::Pending, _) => LedgerAction::Nothing,
        (order, reservation) => match mismatch(order, reservation) {
            Some(kind) => LedgerAction::Unrepairable(kind),
            None => LedgerAction::Nothing,
        },
    }
}

/// How an order's latest state and its reservation (`None`: none recorded) disagree, if they
/// do. Pending orders are in flight and never a mismatch.
pub fn mismatch(order: OrderStatus, reservation: Option<ReservationStatus>) -> Option<Mismatch> {
    use ReservationStatus::*;
    match (order, reservation) {
        (OrderStatus::Pending, _) => None,
        (OrderStatus::Cancelled | OrderStatus::Rejected, Some(Active)) => {
            Some(Mismatch::HeldForCancelled)
        }
        (OrderStatus::Cancelled | OrderStatus::Rejected, Some(Committed)) => {
            Some(Mismatch::CommittedNotShipped)
        }
        (OrderStatus::Cancelled | OrderStatus::Rejected, _) => None,
        (OrderStatus::Confirmed, Some(Active)) => None,
        (OrderStatus::Confirmed, Some(Committed)) => Some(Mismatch::CommittedNotShipped),
        (OrderStatus::Confirmed, _) => Some(Mismatch::MissingForConfirmed),
        (OrderStatus::Shipped, Some(Committed)) => None,
        (OrderStatus::Shipped, Some(Active)) => Some(Mismatch::HeldForShipped),
        (OrderStatus::Shipped, _) => Some(Mismatch::MissingForShipped),
    }
}

/// A reservation whose order the stream does not have: only held stock is a mismatch.
pub fn orphan(reservation: ReservationStatus) -> Option<Mismatch> {
    (reservation == ReservationStatus::Active).then_some(Mismatch::HeldWithoutOrder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn reservation(status: ReservationStatus) -> Reservation {
        Reservation {
            items: vec![(Uuid::new_v4(), 1)],
            status,
            failure: None,
            closed_at: None,
            unrecorded: None,
        }
    }

    #[test]
    fn repairs_wait_for_the_grace_period_then_release_or_commit() {
        let grace = Duration::from_secs(30);
        let held = reservation(ReservationStatus::Active);
        assert_eq!(
            follow(
                OrderStatus::Cancelled,
                Duration::from_secs(10),
                Some(&held),
                grace
            ),
            LedgerAction::Wait(Duration::from_secs(20))
        );
        assert_eq!(
            follow(OrderStatus::Cancelled, grace, Some(&held), grace),
            LedgerAction::Release
        );
        assert_eq!(
            follow(OrderStatus::Cancelled, grace, None, grace),
            LedgerAction::Release,
            "a tombstone blocks a late reserve"
        );
        assert_eq!(
            follow(OrderStatus::Shipped, grace, Some(&held), grace),
            LedgerAction::Commit
        );
        assert_eq!(
            follow(OrderStatus::Rejected, grace, None, grace),
            LedgerAction::Nothing
        );
        assert_eq!(
            follow(OrderStatus::Pending, grace, Some(&held), grace),
            LedgerAction::Nothing
        );
        assert_eq!(
            follow(OrderStatus::Confirmed, grace, Some(&held), grace),
            LedgerAction::Nothing
        );
        let released = reservation(ReservationStatus::Released);
        assert_eq!(
            follow(OrderStatus::Confirmed, grace, Some(&released), grace),
            LedgerAction::Unrepairable(Mismatch::MissingForConfirmed)
        );
        assert_eq!(
            follow(OrderStatus::Shipped, grace, Some(&released), grace),
            LedgerAction::Unrepairable(Mismatch::MissingForShipped)
        );
        let committed = reservation(ReservationStatus::Committed);
        assert_eq!(
            follow(OrderStatus::Shipped, grace, Some(&committed), grace),
            LedgerAction::Nothing
        );
    }

    #[test]
    fn mismatches_by_kind() {
        use ReservationStatus::*;
        assert_eq!(mismatch(OrderStatus::Pending, None), None);
        assert_eq!(
            mismatch(OrderStatus::Cancelled, Some(Active)),
            Some(Mismatch::HeldForCancelled)
        );
        assert_eq!(mismatch(OrderStatus::Cancelled, Some(Released)), None);
        assert_eq!(mismatch(OrderStatus::Rejected, Some(Failed)), None);
        assert_eq!(
            mismatch(OrderStatus::Confirmed, None),
            Some(Mismatch::MissingForConfirmed)
        );
        assert_eq!(
            mismatch(OrderStatus::Shipped, Some(Active)),
            Some(Mismatch::HeldForShipped)
        );
        assert_eq!(
            mismatch(OrderStatus::Confirmed, Some(Committed)),
            Some(Mismatch::CommittedNotShipped)
        );
        assert_eq!(orphan(Active), Some(Mismatch::HeldWithoutOrder));
        assert_eq!(orphan(Released), None);
    }
}
