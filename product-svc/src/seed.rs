//! `--seed N`: a demo catalog on an empty store, written through the normal path (so every seeded
//! product also reaches the stream; the original's seeded products never emitted events).
use crate::{
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

pub async fn seed(store: &Store, count: usize) -> Result<()> {
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
        store.create(&new).await?;
    }
    tracing::info!(count, "Seeded the demo catalog.");
    Ok(())
}
