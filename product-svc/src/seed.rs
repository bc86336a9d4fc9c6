//! `--seed N`: a demo catalog, written through the normal path (so every seeded product is in
//! the stream; the original's seeded products never emitted events). Product `i` has a
//! deterministic id and is created only if it does not exist, so restarts and several instances
//! seeding at once make each product once.
use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use crate::{
    cache::CacheState,
    domain::{CatalogFields, NewProduct},
    error::Result,
    store::Store,
};

const CATEGORIES: [&str; 5] = ["Electronics", "Books", "Home", "Garden", "Toys"];
const NOUNS: [&str; 8] = [
    "Lamp",
    "Kettle",
    "Novel",
    "Drone",
    "Chair",
    "Puzzle",
    "Headphones",
    "Planter",
];

/// The namespace of the seed's product ids (UUIDv5 of `seed-<i>`).
const SEED_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6573686f_702d_7365_6564_000000000001);

/// Seeds once the catalog is caught up, retrying while NATS is unreachable; an instance is
/// not ready until it is done.
pub async fn run(store: Store, count: usize, state: Arc<CacheState>) {
    loop {
        if state.catalog_ready.load(Ordering::Relaxed) {
            match seed(&store, count).await {
                Ok(()) => break,
                Err(error) => tracing::warn!(%error, "Seeding the catalog failed; retrying."),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    state.seeding.store(false, Ordering::Relaxed);
}

/// Seeds a catalog that is empty (nothing seeded on top of products of its own).
async fn seed(store: &Store, count: usize) -> Result<()> {
    store.sync().await?;
    if store.product_count() > 0 {
        return Ok(());
    }
    let mut created = 0;
    for i in 0..count {
        let price_cents = 500 + (i as i64 * 7919) % 49_501; // 5.00 ..= 500.00, spread
        let new = NewProduct {
            fields: CatalogFields {
                name: format!("{} {:04}", NOUNS[i % NOUNS.len()], i + 1),
                description: format!("Demo product number {}.", i + 1),
                price: rust_decimal::Decimal::new(price_cents, 2),
                category: CATEGORIES[i % CATEGORIES.len()].into(),
                low_stock_threshold: 10,
            },
            stock_quantity: if i + 1 == count { 0 } else { 100 },
        };
        let id = uuid::Uuid::new_v5(&SEED_NAMESPACE, format!("seed-{i}").as_bytes());
        created += usize::from(store.create_as(id, &new).await?.is_some());
    }
    tracing::info!(count, created, "Seeded the demo catalog.");
    Ok(())
}
