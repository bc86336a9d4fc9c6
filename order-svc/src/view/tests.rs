//! The view against a real sled in a temp dir.
use chrono::Utc;
use shared::events::{OrderEventType, OrderStatus};
use uuid::Uuid;

use super::{Listing, OrderUpdate, OrdersView, Paging};
use crate::{
    domain::{Change, Order, OrderItem},
    order_log::Stored,
    projector::{Applied, Projection},
    store::Store,
};

/// An empty view in a temp dir (kept while the view is used).
fn fresh_view() -> (tempfile::TempDir, OrdersView) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let view = OrdersView::open(&store).unwrap();
    (dir, view)
}

fn order(customer: Uuid) -> Order {
    let now = Utc::now();
    Order {
        id: Uuid::now_v7(),
        version: 1,
        customer_id: customer,
        customer_email: "a@b.io".into(),
        status: OrderStatus::Pending,
        total_amount: "2.00".parse().unwrap(),
        reason: None,
        failed_product_ids: Vec::new(),
        items: vec![OrderItem {
            product_id: Uuid::new_v4(),
            product_name: "P".into(),
            quantity: 1,
            unit_price: "2.00".parse().unwrap(),
            line_total: "2.00".parse().unwrap(),
        }],
        created_at: now,
        updated_at: now,
        release_owed: false,
        commit_owed: false,
        request_fingerprint: None,
    }
}

/// Rows, indexes, work lists and counts move together, only forward in version, and the
/// cold-start memory answers like sled.
#[tokio::test]
async fn states_apply_forward_only_and_keep_the_work_lists() {
    let (_dir, view) = fresh_view();
    let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let placed = order(ann);
    let mut other = order(bob);
    other.created_at = placed.created_at + chrono::Duration::seconds(1);
    let stored = |order: &Order, seq| Stored {
        order: order.clone(),
        seq,
    };
    view.record(&stored(&placed, 1)).await.unwrap();
    view.record(&stored(&other, 2)).await.unwrap();
    assert_eq!(view.pending_count().unwrap(), 2);
    let cancelled = placed
        .apply(&Change::Cancel { reason: "r".into() }, Utc::now())
        .unwrap();
    view.record(&stored(&cancelled, 3)).await.unwrap();
    // A stale state (the Pending one again) changes nothing.
    view.record(&stored(&placed, 1)).await.unwrap();
    view.end_cold_start();
    view.record(&stored(&placed, 1)).await.unwrap();
    let got = view.get(placed.id).unwrap().unwrap();
    assert_eq!((got.order.status, got.seq), (OrderStatus::Cancelled, 3));
    assert_eq!(view.pending_count().unwrap(), 1);
    assert_eq!(view.owed_count().unwrap(), 1);
    assert_eq!(view.owed(10).unwrap()[0].order.id, placed.id);
    let released = cancelled.apply(&Change::RecordRelease, Utc::now()).unwrap();
    view.record(&stored(&released, 4)).await.unwrap();
    assert_eq!(view.owed_count().unwrap(), 0);
    assert!(view.owed(10).unwrap().is_empty());

    assert_eq!(view.count().unwrap(), 2);
    let anns = view
        .list(&listing(Some(ann), Paging::Number { page: 1, size: 10 }))
        .unwrap();
    assert_eq!((anns.orders.len(), anns.total), (1, 1));
    assert_eq!(anns.orders[0].version, 3);
    let all = view
        .list(&listing(None, Paging::Number { page: 1, size: 10 }))
        .unwrap();
    assert_eq!((all.total, all.orders[0].id), (2, other.id), "newest first");
}

fn listing(customer: Option<Uuid>, page: Paging) -> Listing {
    Listing {
        customer,
        statuses: Vec::new(),
        created_after: None,
        created_before: None,
        page,
    }
}

/// Status and creation-window filters select exactly their orders, newest first; a cursor
/// walks the selection page by page, the last page without a next cursor.
#[tokio::test]
async fn listings_filter_by_status_and_creation_and_page_by_cursor() {
    let (_dir, view) = fresh_view();
    let ann = Uuid::new_v4();
    let start = Utc::now() - chrono::Duration::hours(1);
    let mut placed = Vec::new();
    for i in 0..7 {
        let mut o = order(ann);
        o.created_at = start + chrono::Duration::minutes(i);
        if i % 2 == 1 {
            o = o
                .apply(&Change::Cancel { reason: "r".into() }, Utc::now())
                .unwrap();
        }
        view.record(&Stored {
            order: o.clone(),
            seq: i as u64 + 1,
        })
        .await
        .unwrap();
        placed.push(o);
    }
    let ids = |orders: &[Order]| orders.iter().map(|o| o.id).collect::<Vec<_>>();
    let newest_first = |pick: &dyn Fn(usize) -> bool| -> Vec<Uuid> {
        (0..7)
            .rev()
            .filter(|i| pick(*i))
            .map(|i| placed[i].id)
            .collect()
    };

    let mut cancelled = listing(Some(ann), Paging::Number { page: 1, size: 10 });
    cancelled.statuses = vec![OrderStatus::Cancelled];
    let got = view.list(&cancelled).unwrap();
    assert_eq!(ids(&got.orders), newest_first(&|i| i % 2 == 1));
    assert_eq!(got.total, 3);

    // Created after minute 1 and before minute 5: minutes 2, 3, 4.
    let mut window = listing(None, Paging::Number { page: 1, size: 10 });
    window.created_after = Some(start + chrono::Duration::minutes(1));
    window.created_before = Some(start + chrono::Duration::minutes(5));
    let got = view.list(&window).unwrap();
    assert_eq!(ids(&got.orders), newest_first(&|i| (2..=4).contains(&i)));
    assert_eq!(got.total, 3);

    // Pages of two by cursor: 2, 2, 2, 1, and the total each time.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = listing(Some(ann), Paging::After { cursor, size: 2 });
        let got = view.list(&page).unwrap();
        assert_eq!(got.total, 7);
        seen.extend(ids(&got.orders));
        match got.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, newest_first(&|_| true));
}

/// Batches of already-known states write nothing until the checkpoint trails by a stride;
/// a batch that changes a row always moves it; a rewind only moves it back.
#[tokio::test]
async fn the_checkpoint_moves_with_changes_or_every_stride() {
    let (_dir, view) = fresh_view();
    let first = view.apply(Vec::new(), Some(5)).await.unwrap();
    assert!(first.wrote, "the first checkpoint is stored");
    let idle = view.apply(Vec::new(), Some(10)).await.unwrap();
    assert_eq!(
        idle,
        Applied {
            changed: 0,
            wrote: false
        }
    );
    assert_eq!(view.checkpoint().unwrap(), Some(5));
    let placed = order(Uuid::new_v4());
    let event = placed.to_event(OrderEventType::OrderPlaced);
    let payload = serde_json::to_vec(&event).unwrap();
    let changed = view
        .apply(vec![OrderUpdate::of(&event, 11, payload)], Some(11))
        .await
        .unwrap();
    assert_eq!(
        changed,
        Applied {
            changed: 1,
            wrote: true
        }
    );
    assert_eq!(view.checkpoint().unwrap(), Some(11));
    assert!(!view.apply(Vec::new(), Some(1010)).await.unwrap().wrote);
    assert!(view.apply(Vec::new(), Some(1011)).await.unwrap().wrote);
    assert_eq!(view.checkpoint().unwrap(), Some(1011));
    // After a failed batch the projector moves the checkpoint back before it, never forward.
    view.rewind_checkpoint(500).unwrap();
    assert_eq!(view.checkpoint().unwrap(), Some(500));
    view.rewind_checkpoint(900).unwrap();
    assert_eq!(view.checkpoint().unwrap(), Some(500));
}

/// An unkeyed order's id tells its row (no id pointer is written); a keyed order's, or one
/// whose id's time is not its creation time, is found through its pointer; all are listed.
#[tokio::test]
async fn orders_are_found_by_id_with_a_pointer_only_where_the_id_does_not_tell_the_row() {
    let (_dir, view) = fresh_view();
    let ann = Uuid::new_v4();
    let now = Utc::now();
    let mut unkeyed = order(ann);
    unkeyed.id = crate::domain::order_id(ann, None, now);
    unkeyed.created_at = now;
    let mut keyed = order(ann);
    keyed.id = crate::domain::order_id(ann, Some("key-1"), now);
    let mut elsewhere = order(ann); // a v7 id minted at another time than the creation
    elsewhere.created_at = now - chrono::Duration::seconds(5);
    for (seq, o) in [&unkeyed, &keyed, &elsewhere].into_iter().enumerate() {
        view.record(&Stored {
            order: o.clone(),
            seq: seq as u64 + 1,
        })
        .await
        .unwrap();
    }
    for o in [&unkeyed, &keyed, &elsewhere] {
        assert_eq!(view.get(o.id).unwrap().unwrap().order.id, o.id);
    }
    let has_pointer = |id: Uuid| {
        view.tree
            .get(super::rows::pointer_key(id))
            .unwrap()
            .is_some()
    };
    assert!(!has_pointer(unkeyed.id));
    assert!(has_pointer(keyed.id) && has_pointer(elsewhere.id));
    assert!(view.get(Uuid::now_v7()).unwrap().is_none());
    let all = view
        .list(&listing(None, Paging::Number { page: 1, size: 10 }))
        .unwrap();
    assert_eq!(all.total, 3);
    assert_eq!(all.orders.last().unwrap().id, elsewhere.id, "oldest last");
}

/// A store written in the layout before this one is emptied at open, so that the view is
/// replayed from its stream instead of misreading old keys.
#[tokio::test]
async fn a_view_in_an_older_layout_is_emptied_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let old = store.tree("orders_view").unwrap();
        old.insert(
            [&b"o"[..], Uuid::now_v7().as_bytes()].concat(),
            &b"old row"[..],
        )
        .unwrap();
        old.insert(crate::store::replay::CHECKPOINT, &42u64.to_be_bytes())
            .unwrap();
        let view = OrdersView::open(&store).unwrap();
        assert_eq!(
            view.checkpoint().unwrap(),
            None,
            "cold: replayed from the start"
        );
        assert_eq!(view.count().unwrap(), 0);
        view.apply(Vec::new(), Some(7)).await.unwrap();
        view.close().await;
    }
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let view = OrdersView::open(&store).unwrap();
    assert_eq!(
        view.checkpoint().unwrap(),
        Some(7),
        "the current layout is kept"
    );
}
