//! The single definition of every JetStream stream. Both sides call these, so a publisher and a
//! consumer can never disagree about retention, dedupe window or subjects.
use std::time::Duration;

use async_nats::jetstream::stream::{Config, DiscardPolicy, StorageType};

pub const PRODUCTS: &str = "PRODUCTS";
pub const STOCK: &str = "STOCK";
pub const ORDERS: &str = "ORDERS";

/// Long enough to cover a relay's retries across a short NATS outage.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// `PRODUCTS` is a compacted changelog: one message (the latest full state) per product subject,
/// so replaying it from the first sequence yields the current catalog in O(products).
pub fn products(replicas: usize) -> Config {
    Config {
        name: PRODUCTS.into(),
        subjects: vec!["eshop.products.*".into()],
        max_messages_per_subject: 1,
        discard: DiscardPolicy::Old,
        duplicate_window: DUPLICATE_WINDOW,
        storage: StorageType::File,
        num_replicas: replicas.max(1),
        allow_direct: true,
        ..Default::default()
    }
}

/// `STOCK` carries StockLow signals; a short history per product is plenty.
pub fn stock(replicas: usize) -> Config {
    Config {
        name: STOCK.into(),
        subjects: vec!["eshop.stock.*".into()],
        max_messages_per_subject: 16,
        discard: DiscardPolicy::Old,
        duplicate_window: DUPLICATE_WINDOW,
        storage: StorageType::File,
        num_replicas: replicas.max(1),
        ..Default::default()
    }
}

/// `ORDERS` is the system of record for orders: one subject per order (`<prefix>.<orderId>`),
/// each message the order's full state. It keeps **one message per order**
/// (`max_messages_per_subject = 1`): every state is complete, so the latest is all a reader or a
/// replay needs, a cold start costs O(orders) whatever each order went through, and the CAS on
/// `Nats-Expected-Last-Subject-Sequence` works on the last message. Nothing ages out: orders are
/// kept until an operator decides otherwise.
pub fn orders(name: &str, subject_prefix: &str, replicas: usize) -> Config {
    Config {
        name: name.into(),
        subjects: vec![format!("{subject_prefix}.*")],
        max_messages_per_subject: 1,
        discard: DiscardPolicy::Old,
        duplicate_window: DUPLICATE_WINDOW,
        storage: StorageType::File,
        num_replicas: replicas.max(1),
        allow_direct: true,
        ..Default::default()
    }
}
