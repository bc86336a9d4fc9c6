//! The catalog writes and reads: create, update, discontinue, adjust stock, get, list.
use chrono::Utc;
use shared::{correlation, events::ProductEventType};
use sled::transaction::ConflictableTransactionError;
use uuid::Uuid;

use super::{
    Entry, Store,
    keys::id_from_index_key,
    writer::{Keys, abort, check_version, read},
};
use crate::{
    domain::{self, NewProduct, Product, Stock},
    error::{Error, Result},
};

impl Store {
    pub async fn create(&self, input: &NewProduct) -> Result<Entry> {
        let id = Uuid::new_v4();
        let cid = correlation::current_or_new();
        let input = input.clone();
        let entry = self
            .transact(move |t| {
                let now = Utc::now();
                let (product, mut stock) = domain::new_product(id, &input, now);
                let crossed = domain::update_low_flag(&mut stock, product.low_stock_threshold);
                t.put(t.products, id, &product)?;
                t.put(t.stock, id, &stock)?;
                t.index(&product)?;
                t.count_product()?;
                t.product_event(&product, ProductEventType::ProductCreated, &cid)?;
                if crossed {
                    t.stock_low(&product, &stock, &cid)?;
                }
                Ok(Entry { product, stock })
            })
            .await?;
        self.wake_relay(true);
        tracing::info!(product_id = %id, version = 1, "Product created.");
        Ok(entry)
    }

    pub fn get(&self, id: Uuid) -> Result<Option<Entry>> {
        let Some(product) = read::<Product>(&self.trees.products, id)? else {
            return Ok(None);
        };
        let stock = read::<Stock>(&self.trees.stock, id)?
            .ok_or_else(|| Error::corrupt(format!("stock row missing for {id}")))?;
        Ok(Some(Entry { product, stock }))
    }

    pub fn get_many(&self, ids: &[Uuid]) -> Result<Vec<Option<Entry>>> {
        ids.iter().map(|id| self.get(*id)).collect()
    }

    /// One page of products sorted by name (optionally of one category), and the total count.
    /// The whole catalog's count is kept; a category's is counted on its index prefix.
    pub fn list(
        &self,
        category: Option<&str>,
        page: usize,
        page_size: usize,
    ) -> Result<(Vec<Entry>, usize)> {
        let skip = (page - 1).saturating_mul(page_size);
        let (keys, total): (Keys, usize) = match category {
            Some(c) => {
                let mut prefix = c.as_bytes().to_vec();
                prefix.push(0);
                let total = self.trees.by_category.scan_prefix(&prefix).count();
                (Box::new(self.trees.by_category.scan_prefix(prefix)), total)
            }
            None => (Box::new(self.trees.by_name.iter()), self.product_count()?),
        };
        let mut items = Vec::with_capacity(page_size.min(100));
        for kv in keys.skip(skip).take(page_size) {
            let (key, _) = kv?;
            if let Some(entry) = self.get(id_from_index_key(&key)?)? {
                items.push(entry);
            }
        }
        Ok((items, total))
    }

    pub async fn update(
        &self,
        id: Uuid,
        fields: &domain::CatalogFields,
        if_match: Option<u64>,
    ) -> Result<Entry> {
        let cid = correlation::current_or_new();
        let fields = fields.clone();
        let (entry, changed) = self
            .transact(move |t| {
                let current = t.product(id)?;
                check_version(&current, if_match)?;
                if current.deleted {
                    return abort(Error::Discontinued(id));
                }
                let mut stock = t.stock_of(id)?;
                let Some(next) = domain::apply_update(&current, &fields, Utc::now()) else {
                    return Ok((
                        Entry {
                            product: current,
                            stock,
                        },
                        false,
                    ));
                };
                t.unindex(&current)?;
                t.index(&next)?;
                t.put(t.products, id, &next)?;
                if domain::update_low_flag(&mut stock, next.low_stock_threshold) {
                    t.stock_low(&next, &stock, &cid)?;
                }
                t.put(t.stock, id, &stock)?;
                t.product_event(&next, ProductEventType::ProductUpdated, &cid)?;
                Ok((
                    Entry {
                        product: next,
                        stock,
                    },
                    true,
                ))
            })
            .await?;
        if changed {
            self.wake_relay(true);
            tracing::info!(product_id = %id, version = entry.product.version, "Product updated.");
        }
        Ok(entry)
    }

    /// Discontinues a product: kept, marked deleted, no longer orderable. Idempotent.
    pub async fn discontinue(&self, id: Uuid, if_match: Option<u64>) -> Result<Entry> {
        let cid = correlation::current_or_new();
        let (entry, changed) = self
            .transact(move |t| {
                let current = t.product(id)?;
                check_version(&current, if_match)?;
                let stock = t.stock_of(id)?;
                let Some(next) = domain::discontinue(&current, Utc::now()) else {
                    return Ok((
                        Entry {
                            product: current,
                            stock,
                        },
                        false,
                    ));
                };
                t.put(t.products, id, &next)?;
                t.product_event(&next, ProductEventType::ProductDeleted, &cid)?;
                Ok((
                    Entry {
                        product: next,
                        stock,
                    },
                    true,
                ))
            })
            .await?;
        if changed {
            self.wake_relay(true);
            tracing::info!(product_id = %id, version = entry.product.version, "Product discontinued.");
        }
        Ok(entry)
    }

    /// Restock (+) or write-off (−) of on-hand stock.
    pub async fn adjust_stock(&self, id: Uuid, delta: i64) -> Result<Entry> {
        let cid = correlation::current_or_new();
        let (entry, crossed) = self
            .transact(move |t| {
                let product = t.product(id)?;
                let stock = t.stock_of(id)?;
                let mut next = domain::adjust(stock, delta)
                    .map_err(|e| ConflictableTransactionError::Abort(e.into()))?;
                let crossed = domain::update_low_flag(&mut next, product.low_stock_threshold);
                if crossed {
                    t.stock_low(&product, &next, &cid)?;
                }
                t.put(t.stock, id, &next)?;
                Ok((
                    Entry {
                        product,
                        stock: next,
                    },
                    crossed,
                ))
            })
            .await?;
        self.wake_relay(crossed);
        tracing::info!(product_id = %id, delta, on_hand = entry.stock.on_hand, "Stock adjusted.");
        Ok(entry)
    }
}
