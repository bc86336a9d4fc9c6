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

/// `ORDERS` keeps every order event (confirmations, rejections, cancellations) for a week.
pub fn orders(replicas: usize) -> Config {
    Config {
        name: ORDERS.into(),
        subjects: vec!["eshop.orders.*".into()],
        discard: DiscardPolicy::Old,
        duplicate_window: DUPLICATE_WINDOW,
        max_age: Duration::from_secs(7 * 24 * 3600),
        storage: StorageType::File,
        num_replicas: replicas.max(1),
        ..Default::default()
    }
}
