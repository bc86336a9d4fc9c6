//! The domain's rules, as plain unit tests.
use std::collections::HashMap;

use chrono::Utc;
use shared::events::OrderEventType;
use uuid::Uuid;

use super::*;
use super::{
    order::can_become,
    request::{is_email, parse_id},
};

fn view(version: u64, price: &str) -> ProductView {
    ProductView {
        name: "Lamp".into(),
        description: String::new(),
        price: price.parse().unwrap(),
        category: "Home".into(),
        version,
        deleted: false,
        updated_at: Utc::now(),
    }
}

#[test]
fn version_guard_new_newer_older_duplicate_deleted() {
    assert!(should_apply(None, 1), "new product");
    assert!(should_apply(Some(3), 4), "newer");
    assert!(!should_apply(Some(3), 2), "older");
    assert!(!should_apply(Some(3), 3), "duplicate");
    // A delete is version 5: an older update (4) cannot resurrect the product.
    assert!(!should_apply(Some(5), 4), "older than the delete");
    assert!(should_apply(Some(5), 6));
}

#[test]
fn state_machine() {
    use OrderStatus::*;
    for (from, to, ok) in [
        (Pending, Confirmed, true),
        (Pending, Rejected, true),
        (Pending, Cancelled, true),
        (Confirmed, Cancelled, true),
        (Confirmed, Rejected, false),
        (Rejected, Confirmed, false),
        (Rejected, Cancelled, false),
        (Cancelled, Cancelled, false),
        (Cancelled, Confirmed, false),
        (Confirmed, Confirmed, false),
        (Confirmed, Shipped, true),
        (Pending, Shipped, false),
        (Rejected, Shipped, false),
        (Cancelled, Shipped, false),
        (Shipped, Shipped, false),
        (Shipped, Cancelled, false),
    ] {
        assert_eq!(can_become(from, to), ok, "{from:?} -> {to:?}");
    }
}

#[test]
fn shipping_owes_a_commit_until_it_is_recorded_and_a_shipped_order_cannot_be_cancelled() {
    let now = Utc::now();
    let a = Uuid::new_v4();
    let catalog = HashMap::from([(a, view(1, "2.50"))]);
    let placed = price_order(Uuid::new_v4(), &request(vec![(a, 1)]), &catalog, now, None).unwrap();
    let order = placed.apply(&Change::Confirm, now).unwrap();
    let shipped = order.apply(&Change::Ship, now).unwrap();
    assert_eq!(shipped.status, OrderStatus::Shipped);
    assert!(shipped.commit_owed && !shipped.release_owed);
    assert_eq!(shipped.version, order.version + 1);
    assert!(
        shipped
            .apply(
                &Change::Cancel {
                    reason: "late".into()
                },
                now
            )
            .is_err(),
        "shipped goods cannot be cancelled"
    );
    assert!(
        shipped.apply(&Change::Ship, now).is_err(),
        "a second ship is no transition"
    );
    let committed = shipped.apply(&Change::RecordCommit, now).unwrap();
    assert!(!committed.commit_owed);
    assert_eq!(committed.status, OrderStatus::Shipped);
    assert!(
        committed.apply(&Change::RecordCommit, now).is_err(),
        "recorded once"
    );
    let event = committed.to_event(Change::RecordCommit.event_type());
    assert_eq!(event.event_type, OrderEventType::OrderStockCommitted);
    assert_eq!(
        Order::from_event(&shipped.to_event(OrderEventType::OrderShipped)),
        shipped
    );
    for status in [
        OrderStatus::Pending,
        OrderStatus::Rejected,
        OrderStatus::Cancelled,
    ] {
        let mut other = placed.clone();
        other.status = status;
        assert_eq!(
            other.apply(&Change::Ship, now).unwrap_err().from,
            status,
            "the refusal names the state"
        );
    }
}

fn request(items: Vec<(Uuid, u32)>) -> OrderRequest {
    OrderRequest {
        customer_id: Uuid::new_v4(),
        customer_email: "a@b.io".into(),
        items,
    }
}

#[test]
fn pricing_is_exact_and_captures_name_and_price() {
    let a = Uuid::new_v4();
    let b = Uuid::new_v4();
    let catalog = HashMap::from([(a, view(1, "0.10")), (b, view(1, "149.99"))]);
    let order = price_order(
        Uuid::new_v4(),
        &request(vec![(a, 3), (b, 2)]),
        &catalog,
        Utc::now(),
        None,
    )
    .unwrap();
    assert_eq!(order.total_amount.to_string(), "300.28");
    assert_eq!(order.version, 1);
    assert_eq!(order.items[0].line_total.to_string(), "0.30");
    assert_eq!(order.items[1].product_name, "Lamp");
    assert_eq!(order.status, OrderStatus::Pending);
}

#[test]
fn pricing_reports_unknown_and_deleted_products() {
    let known = Uuid::new_v4();
    let gone = Uuid::new_v4();
    let missing = Uuid::new_v4();
    let mut deleted = view(2, "1.00");
    deleted.deleted = true;
    let catalog = HashMap::from([(known, view(1, "1.00")), (gone, deleted)]);
    let err = price_order(
        Uuid::new_v4(),
        &request(vec![(known, 1), (gone, 1), (missing, 1)]),
        &catalog,
        Utc::now(),
        None,
    )
    .unwrap_err();
    assert_eq!(err.len(), 2);
    assert!(err.contains(&gone) && err.contains(&missing));
}

#[test]
fn validation_merges_duplicates_and_keys_errors() {
    let p = Uuid::new_v4().to_string();
    let ok = validate_create(OrderDraft {
        customer_id: Some(Uuid::new_v4().to_string()),
        customer_email: Some("x@y.com".into()),
        items: Some(vec![
            LineDraft {
                product_id: Some(p.clone()),
                quantity: Some(2),
            },
            LineDraft {
                product_id: Some(p.clone()),
                quantity: Some(3),
            },
        ]),
    })
    .unwrap();
    assert_eq!(ok.items.len(), 1);
    assert_eq!(ok.items[0].1, 5);

    let Err(Refused::Invalid(errors)) = validate_create(OrderDraft {
        customer_id: Some("not-a-uuid".into()),
        customer_email: Some("invalid@".into()),
        items: Some(vec![
            LineDraft {
                product_id: Some("nope".into()),
                quantity: Some(0),
            },
            LineDraft {
                product_id: None,
                quantity: Some(10_001),
            },
        ]),
    }) else {
        panic!("shape errors are Invalid");
    };
    for field in [
        "customerId",
        "customerEmail",
        "items[0].productId",
        "items[0].quantity",
        "items[1].productId",
        "items[1].quantity",
    ] {
        assert!(errors.contains(field), "no error for {field}: {errors:?}");
    }
    let Err(Refused::Invalid(too_many)) = validate_create(OrderDraft {
        customer_id: Some(Uuid::new_v4().to_string()),
        customer_email: Some("x@y.com".into()),
        items: Some(
            (0..101)
                .map(|_| LineDraft {
                    product_id: Some(Uuid::new_v4().to_string()),
                    quantity: Some(1),
                })
                .collect(),
        ),
    }) else {
        panic!("101 items is Invalid");
    };
    assert!(too_many.contains("items"));
    // Each line within the schema's limit, their sum over it: a business rule (422).
    let Err(Refused::Unprocessable(merged_too_big)) = validate_create(OrderDraft {
        customer_id: Some(Uuid::new_v4().to_string()),
        customer_email: Some("x@y.com".into()),
        items: Some(vec![
            LineDraft {
                product_id: Some(p.clone()),
                quantity: Some(6000),
            },
            LineDraft {
                product_id: Some(p),
                quantity: Some(6000),
            },
        ]),
    }) else {
        panic!("an over-limit merged quantity is Unprocessable");
    };
    assert!(merged_too_big.contains("items"));
}

#[test]
fn the_nil_uuid_is_no_customer_and_no_product() {
    let nil = Uuid::nil().to_string();
    let Err(Refused::Invalid(errors)) = validate_create(OrderDraft {
        customer_id: Some(nil.clone()),
        customer_email: Some("x@y.com".into()),
        items: Some(vec![LineDraft {
            product_id: Some(nil.clone()),
            quantity: Some(1),
        }]),
    }) else {
        panic!("nil ids are Invalid (400), not a business rule");
    };
    assert!(errors.contains("customerId"), "{errors:?}");
    assert!(errors.contains("items[0].productId"), "{errors:?}");
    assert_eq!(parse_id(&nil), None);
    assert_eq!(parse_id(&nil.to_uppercase()), None);
    let id = Uuid::new_v4();
    assert_eq!(parse_id(&id.to_string()), Some(id));
}

#[test]
fn email_rules() {
    for ok in ["a@b.co", "first.last+tag@sub.example.org"] {
        assert!(is_email(ok), "{ok}");
    }
    for bad in [
        "", "a", "@b.co", "a@", "a@b", "a b@c.de", "a@b@c.de", "a@.co", "a@b.co.",
    ] {
        assert!(!is_email(bad), "{bad}");
    }
}

/// A keyed order of two units of `product` at 2.50, priced (Pending, version 1).
fn priced(product: Uuid) -> Order {
    let catalog = HashMap::from([(product, view(1, "2.50"))]);
    price_order(
        Uuid::new_v4(),
        &request(vec![(product, 2)]),
        &catalog,
        Utc::now(),
        Some("fp".into()),
    )
    .unwrap()
}

#[test]
fn transitions_bump_the_version_and_round_trip_as_full_state_events() {
    let a = Uuid::new_v4();
    let order = priced(a);
    let confirmed = order.apply(&Change::Confirm, Utc::now()).unwrap();
    assert_eq!(
        (confirmed.status, confirmed.version),
        (OrderStatus::Confirmed, 2)
    );
    let event = confirmed.to_event(Change::Confirm.event_type());
    assert_eq!(event.event_type, OrderEventType::OrderConfirmed);
    assert_eq!(
        Order::from_event(&event),
        confirmed,
        "the event is the whole state"
    );
    assert!(
        event
            .check(&format!("eshop.orders.{}", confirmed.id))
            .is_ok()
    );
    assert!(
        event
            .check(&format!("eshop.orders.{}", Uuid::new_v4()))
            .is_err()
    );

    let cancel = Change::Cancel {
        reason: "changed mind".into(),
    };
    let cancelled = confirmed.apply(&cancel, Utc::now()).unwrap();
    assert_eq!(cancelled.reason.as_deref(), Some("changed mind"));
    assert!(cancelled.release_owed, "a cancel owes a release");
    assert!(cancelled.apply(&Change::Confirm, Utc::now()).is_err());
    assert!(
        cancelled.apply(&cancel, Utc::now()).is_err(),
        "cancelled once"
    );
    let released = cancelled.apply(&Change::RecordRelease, Utc::now()).unwrap();
    assert_eq!((released.release_owed, released.version), (false, 4));
    assert!(
        released.apply(&Change::RecordRelease, Utc::now()).is_err(),
        "released once"
    );
    assert!(order.apply(&Change::RecordRelease, Utc::now()).is_err());

    let rejected = order
        .apply(
            &Change::Reject {
                reason: "short".into(),
                failed_product_ids: vec![a],
            },
            Utc::now(),
        )
        .unwrap();
    assert_eq!(rejected.failed_product_ids, vec![a]);
    assert_eq!(
        rejected.apply(&cancel, Utc::now()).unwrap_err().from,
        OrderStatus::Rejected
    );
}

#[test]
fn a_reservation_decided_before_any_publish_makes_the_first_state_final_at_version_1() {
    let a = Uuid::new_v4();
    let order = priced(a);
    let confirmed = order.first_state(&Change::Confirm, Utc::now()).unwrap();
    assert_eq!(
        (confirmed.status, confirmed.version),
        (OrderStatus::Confirmed, 1)
    );
    assert_eq!(confirmed.request_fingerprint.as_deref(), Some("fp"));
    let reject = Change::Reject {
        reason: "short".into(),
        failed_product_ids: vec![a],
    };
    let rejected = order.first_state(&reject, Utc::now()).unwrap();
    assert_eq!(
        (rejected.status, rejected.version),
        (OrderStatus::Rejected, 1)
    );
    let event = rejected.to_event(reject.event_type());
    assert_eq!(event.event_type, OrderEventType::OrderRejected);
    assert!(event.check(&format!("eshop.orders.{}", order.id)).is_ok());
    // Only a Pending order has a first state to decide.
    assert!(confirmed.first_state(&Change::Confirm, Utc::now()).is_err());
}

/// A keyed request's fingerprint follows its body. (The ids: `order::tests`.)
#[test]
fn request_fingerprints_follow_the_body() {
    let r = request(vec![(Uuid::new_v4(), 1)]);
    let mut other = r.clone();
    other.items[0].1 = 2;
    assert_eq!(r.fingerprint(), r.clone().fingerprint());
    assert_ne!(r.fingerprint(), other.fingerprint());
}

#[test]
fn reason_rules() {
    assert!(validate_reason(None).is_err());
    assert!(validate_reason(Some(String::new())).is_err());
    assert!(validate_reason(Some("x".repeat(501))).is_err());
    // What the schema allows is accepted as given (minLength 1).
    assert_eq!(validate_reason(Some(" ".into())).unwrap(), " ");
    assert_eq!(validate_reason(Some(" ok ".into())).unwrap(), " ok ");
}
