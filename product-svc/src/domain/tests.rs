//! The product rules, as plain unit tests.
use chrono::Utc;
use rust_decimal::Decimal;
use shared::fields::FieldErrors;
use uuid::Uuid;

use super::*;

/// An order's first state as order-svc hands it over with a reservation made before its
/// first publish.
fn handed_over(order: Uuid, status: &str, version: u64) -> Vec<u8> {
    let now = Utc::now();
    serde_json::json!({
        "eventId": Uuid::now_v7(), "eventType": "OrderRejected", "schemaVersion": 2,
        "occurredAt": now, "orderId": order, "version": version, "status": status,
        "customerId": Uuid::new_v4(), "customerEmail": "ann@example.com", "items": [],
        "totalAmount": "0", "createdAt": now, "updatedAt": now,
    })
    .to_string()
    .into_bytes()
}

#[test]
fn an_unrecorded_order_must_name_its_own_subject_and_hand_over_its_rejected_first_state() {
    let order = Uuid::new_v4();
    let subject = format!("eshop.orders.{order}");
    let ok = Unrecorded::check(order, subject.clone(), &handed_over(order, "Rejected", 1))
        .expect("valid");
    assert_eq!(ok.subject, subject);
    assert!(ok.event_id().is_some(), "its event id is the message id");
    let state = handed_over(order, "Rejected", 1);
    for bad in [
        format!("eshop.orders.{}", Uuid::new_v4()),
        "eshop.orders.*".into(),
        format!("eshop.orders.> {order}"),
        String::new(),
    ] {
        let why = Unrecorded::check(order, bad.clone(), &state).unwrap_err();
        assert!(why.starts_with("unrecorded.subject"), "{bad}: {why}");
    }
    for (state, what) in [
        (b"not json".to_vec(), "not an order event"),
        (handed_over(Uuid::new_v4(), "Rejected", 1), "another order"),
        (handed_over(order, "Confirmed", 1), "not rejected"),
        (handed_over(order, "Rejected", 2), "not the first state"),
    ] {
        let why = Unrecorded::check(order, subject.clone(), &state).unwrap_err();
        assert!(why.starts_with("unrecorded.state"), "{what}: {why}");
    }
}

#[test]
fn committing_moves_held_units_out_of_on_hand_and_is_idempotent() {
    let held = Reservation {
        items: vec![(Uuid::new_v4(), 3)],
        status: ReservationStatus::Active,
        failure: None,
        closed_at: None,
        unrecorded: None,
    };
    assert_eq!(commit_decision(Some(&held)), Ok(true));
    let committed = Reservation {
        status: ReservationStatus::Committed,
        ..held.clone()
    };
    assert_eq!(
        commit_decision(Some(&committed)),
        Ok(false),
        "a repeat changes nothing"
    );
    assert_eq!(commit_decision(None), Err(CommitRefusal::Unknown));
    for status in [ReservationStatus::Released, ReservationStatus::Failed] {
        let r = Reservation {
            status,
            ..held.clone()
        };
        assert_eq!(
            commit_decision(Some(&r)),
            Err(CommitRefusal::NotHeld(status))
        );
    }
    let before = Stock {
        on_hand: 10,
        reserved: 4,
        low: false,
    };
    let after = commit_units(before, 3);
    assert_eq!((after.on_hand, after.reserved), (7, 1));
    assert_eq!(
        after.available(),
        before.available(),
        "available does not move"
    );
}

fn product(threshold: i64) -> Product {
    let now = Utc::now();
    Product {
        id: Uuid::new_v4(),
        name: "n".into(),
        description: String::new(),
        price: Decimal::ONE,
        category: "c".into(),
        low_stock_threshold: threshold,
        version: 1,
        deleted: false,
        created_at: now,
        updated_at: now,
        initial_stock: 0,
    }
}

fn stock(on_hand: i64, reserved: i64) -> Stock {
    Stock {
        on_hand,
        reserved,
        low: false,
    }
}

#[test]
fn adjust_never_drops_on_hand_below_reserved() {
    assert_eq!(adjust(stock(10, 4), -6).unwrap().on_hand, 4);
    assert_eq!(
        adjust(stock(10, 4), -7),
        Err(StockError::BelowReserved {
            requested: 3,
            reserved: 4
        })
    );
    assert_eq!(adjust(stock(10, 0), 5).unwrap().on_hand, 15);
    assert_eq!(
        adjust(stock(10, 0), MAX_QUANTITY),
        Err(StockError::TooLarge)
    );
}

#[test]
fn low_stock_fires_once_per_crossing() {
    let mut s = stock(12, 0);
    assert!(!update_low_flag(&mut s, 10));
    s.reserved = 3; // available 9 < 10
    assert!(update_low_flag(&mut s, 10));
    s.reserved = 5; // still low: no second event
    assert!(!update_low_flag(&mut s, 10));
    s.reserved = 0; // back above
    assert!(!update_low_flag(&mut s, 10));
    s.reserved = 4;
    assert!(update_low_flag(&mut s, 10), "a new crossing fires again");
    let mut zero = stock(0, 0);
    assert!(!update_low_flag(&mut zero, 0), "threshold 0 never warns");
}

#[test]
fn merge_sums_duplicates_and_sorts() {
    let a = Uuid::from_u128(2);
    let b = Uuid::from_u128(1);
    assert_eq!(merge_items([(a, 1), (b, 2), (a, 3)]), vec![(b, 2), (a, 4)]);
}

#[test]
fn reservation_is_all_or_nothing_and_reports_every_failure() {
    let ok = (product(0), stock(10, 0));
    let short = (product(0), stock(3, 1));
    let mut gone = (product(0), stock(10, 0));
    gone.0.deleted = true;
    let unknown = Uuid::new_v4();
    let items = vec![(ok.0.id, 5), (short.0.id, 3), (gone.0.id, 1), (unknown, 1)];
    let state = vec![
        Some(ok.clone()),
        Some(short.clone()),
        Some(gone.clone()),
        None,
    ];
    let failure = plan_reservation(&items, &state).unwrap_err();
    assert_eq!(failure.code, FailureCode::ProductNotFound);
    assert_eq!(failure.failed_product_ids.len(), 3);
    assert!(failure.failed_product_ids.contains(&short.0.id));
    assert!(failure.failed_product_ids.contains(&gone.0.id));
    assert!(failure.failed_product_ids.contains(&unknown));

    let only_short = plan_reservation(&items[1..2], &state[1..2]).unwrap_err();
    assert_eq!(only_short.code, FailureCode::InsufficientStock);

    let planned = plan_reservation(&items[..1], &state[..1]).unwrap();
    assert_eq!(planned[0].reserved, 5);
    assert_eq!(planned[0].available(), 5);
}

#[test]
fn validation_keys_errors_by_json_field() {
    let errors = validate_create(
        CatalogDraft {
            name: Some("  ".into()),
            description: Some("x".repeat(2001)),
            price: Some(PriceDraft::Text("1.234".into())),
            category: None,
            low_stock_threshold: Some(0),
        },
        Some(-1),
    )
    .unwrap_err();
    for field in ["name", "description", "price", "category", "stockQuantity"] {
        assert!(
            errors.contains(field),
            "missing error for {field}: {errors:?}"
        );
    }
    assert!(!errors.contains("lowStockThreshold"));
}

#[test]
fn price_rules() {
    let check = |v: PriceDraft| {
        let mut e = FieldErrors::new();
        validate_price(Some(v), &mut e).map(|p| p.to_string())
    };
    let text = |s: &str| PriceDraft::Text(s.into());
    assert_eq!(check(text("149.99")), Some("149.99".into()));
    assert_eq!(check(text("12.5")), Some("12.50".into()));
    assert_eq!(check(text("7")), Some("7.00".into()));
    assert_eq!(check(text("0.1")), Some("0.10".into()));
    assert_eq!(check(text("0.01")), Some("0.01".into()));
    assert_eq!(check(text("1000000000.00")), Some("1000000000.00".into()));
    for refused in [
        "0",
        "0.00",
        "1000000000.01",
        "01.5",
        "1.500",
        "+1",
        " 1",
        "1_000",
        "1.",
        ".5",
    ] {
        assert_eq!(check(text(refused)), None, "{refused}");
    }
    assert_eq!(
        check(PriceDraft::NotText),
        None,
        "a JSON number is not money"
    );
    assert_eq!(check(text("-1")), None);
    assert_eq!(check(text("1.001")), None);
    assert_eq!(check(text("1e3")), None);
    assert_eq!(check(text("abc")), None);
    assert_eq!(check(PriceDraft::NotText), None);
}

#[test]
fn update_bumps_version_only_when_something_changed() {
    let p = product(10);
    let same = CatalogFields {
        name: p.name.clone(),
        description: p.description.clone(),
        price: p.price,
        category: p.category.clone(),
        low_stock_threshold: 10,
    };
    assert!(apply_update(&p, &same, Utc::now()).is_none());
    let renamed = CatalogFields {
        name: "new".into(),
        ..same
    };
    let next = apply_update(&p, &renamed, Utc::now()).unwrap();
    assert_eq!(next.version, 2);
}

#[test]
fn discontinuing_is_one_new_version_once() {
    let p = product(0);
    let gone = discontinue(&p, Utc::now()).unwrap();
    assert_eq!((gone.deleted, gone.version), (true, p.version + 1));
    assert_eq!(gone.name, p.name, "the full state is kept");
    assert!(
        discontinue(&gone, Utc::now()).is_none(),
        "idempotent: no new version"
    );
}

#[test]
fn a_repeated_reserve_replays_and_a_different_one_is_a_mismatch() {
    let (order, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let held = Reservation::held(&[(a, 2)], None);
    assert_eq!(replay_reserve(held.clone(), order, &[(a, 2)]), held);
    let other = replay_reserve(held, order, &[(b, 1)]);
    assert_eq!(other.status, ReservationStatus::Failed);
    assert_eq!(
        other.failure.unwrap().code,
        FailureCode::RequestMismatch,
        "a different request under a known order id"
    );
    // A release that came first left a tombstone: a late reserve holds nothing.
    let late = replay_reserve(Reservation::tombstone(Utc::now()), order, &[(a, 2)]);
    let failure = late.failure.unwrap();
    assert_eq!(failure.code, FailureCode::RequestMismatch);
    assert!(failure.reason.contains("already released"), "{failure:?}");
}

#[test]
fn releasing_gives_back_held_units_and_never_goes_below_zero() {
    let stock = Stock {
        on_hand: 10,
        reserved: 3,
        low: false,
    };
    let released = release_units(stock, 2);
    assert_eq!((released.on_hand, released.reserved), (10, 1));
    assert_eq!(release_units(stock, 5).reserved, 0);
    let mut r = Reservation::held(&[(Uuid::new_v4(), 2)], None);
    r.close(ReservationStatus::Released, Utc::now());
    assert_eq!(r.status, ReservationStatus::Released);
    assert!(r.closed_at.is_some(), "retention counts from the release");
}

mod books {
    use chrono::Utc;
    use uuid::Uuid;

    use crate::domain::{Effect, Reservation, ReservationStatus, StockRow, effect};

    fn reservation(items: &[(Uuid, i64)], status: ReservationStatus) -> Reservation {
        let mut r = Reservation::held(items, None);
        if status != ReservationStatus::Active {
            r.close(status, Utc::now());
        }
        r
    }

    #[test]
    fn a_live_reservation_holds_then_ships_or_gives_back() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let items = [(a, 2), (b, 3)];
        let held = reservation(&items, ReservationStatus::Active);
        let e = |id, reserved, shipped| Effect {
            product_id: id,
            reserved,
            shipped,
        };
        let mut expected = vec![e(a, 2, 0), e(b, 3, 0)];
        expected.sort_by_key(|x| x.product_id);
        assert_eq!(effect(None, &held), expected);
        let committed = reservation(&items, ReservationStatus::Committed);
        let mut shipped = vec![e(a, -2, 2), e(b, -3, 3)];
        shipped.sort_by_key(|x| x.product_id);
        assert_eq!(effect(Some(&held), &committed), shipped);
        let released = reservation(&items, ReservationStatus::Released);
        let mut back = vec![e(a, -2, 0), e(b, -3, 0)];
        back.sort_by_key(|x| x.product_id);
        assert_eq!(effect(Some(&held), &released), back);
        assert!(
            effect(Some(&committed), &committed).is_empty(),
            "a repeat moves nothing"
        );
    }

    #[test]
    fn a_replay_that_first_sees_a_commit_ships_without_reserving() {
        let a = Uuid::new_v4();
        let committed = reservation(&[(a, 4)], ReservationStatus::Committed);
        assert_eq!(
            effect(None, &committed),
            vec![Effect {
                product_id: a,
                reserved: 0,
                shipped: 4
            }]
        );
        let failed = reservation(&[(a, 4)], ReservationStatus::Failed);
        assert!(effect(None, &failed).is_empty());
    }

    #[test]
    fn a_count_folds_the_commits_before_it() {
        // initial 10; a commit of 4 after it; then a count of 6 (10 - 4) written by the writer.
        let row = StockRow::default();
        let row = StockRow {
            shipped: row.shipped + 4,
            ..row
        };
        assert_eq!(row.stock(10, 0).on_hand, 6);
        let row = row.counted(6);
        assert_eq!(row.stock(10, 0).on_hand, 6);
        let row = StockRow { reserved: 5, ..row };
        let stock = row.stock(10, 2);
        assert_eq!((stock.on_hand, stock.available(), stock.low), (6, 1, true));
    }
}
