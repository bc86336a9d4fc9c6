//! The catalog's cache, in memory: every product by id, by name, and by category then name.
//!
//! Why in memory and not in sled like the stock books: the cache is emptied at every start and
//! refilled from `PRODUCTS`, so a copy on disk saves nothing at the next start, while sled's
//! inserts (~8 µs each on this box, one per product and one per index entry) made that refill
//! the bulk of a cold start: 100k products took 3.5–3.9 s in three trees, 1.7–1.9 s in one, and
//! take ~0.8 s here. It costs ~300 bytes per product (a 100k catalog: ~30 MB, less than the
//! sled cache it replaces held), and a category's total is a set's length instead of a scan.
//! The stock books stay in sled: reservations are kept until retention compacts them (a week by
//! default), and sled's page cache bounds what they hold in memory.
//!
//! The cache follower is the only writer (`apply.rs`); the stock writer reads products here
//! while it decides (a stock write never changes a product).
use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use uuid::Uuid;

use crate::domain::Product;

#[derive(Debug, Default)]
pub(super) struct CatalogCache {
    listed: HashMap<Uuid, Listed>,
    by_name: BTreeSet<(Arc<str>, Uuid)>,
    by_category: HashMap<Arc<str>, BTreeSet<(Arc<str>, Uuid)>>,
}

#[derive(Debug)]
struct Listed {
    product: Arc<Product>,
    name: Arc<str>,
    category: Arc<str>,
}

impl CatalogCache {
    pub(super) fn get(&self, id: Uuid) -> Option<&Arc<Product>> {
        self.listed.get(&id).map(|l| &l.product)
    }

    /// The version of `id` the cache holds, if any.
    pub(super) fn version(&self, id: Uuid) -> Option<u64> {
        self.get(id).map(|p| p.version)
    }

    /// How many products the catalog holds (discontinued ones stay).
    pub(super) fn count(&self) -> usize {
        self.listed.len()
    }

    /// Stores `product`, replacing the version it supersedes.
    pub(super) fn put(&mut self, product: Product) {
        let id = product.id;
        if let Some(old) = self.listed.remove(&id) {
            self.by_name.remove(&(old.name.clone(), id));
            if let Some(set) = self.by_category.get_mut(&old.category) {
                set.remove(&(old.name, id));
                if set.is_empty() {
                    self.by_category.remove(&old.category);
                }
            }
        }
        let name: Arc<str> = product.name.as_str().into();
        let category = match self.by_category.get_key_value(product.category.as_str()) {
            Some((shared, _)) => shared.clone(),
            None => product.category.as_str().into(),
        };
        self.by_name.insert((name.clone(), id));
        self.by_category
            .entry(category.clone())
            .or_default()
            .insert((name.clone(), id));
        self.listed.insert(
            id,
            Listed {
                product: Arc::new(product),
                name,
                category,
            },
        );
    }

    /// The ids of one page sorted by name (of one category, if given), and the total.
    pub(super) fn page(
        &self,
        category: Option<&str>,
        skip: usize,
        take: usize,
    ) -> (Vec<Uuid>, usize) {
        let set = match category {
            Some(c) => match self.by_category.get(c) {
                Some(set) => set,
                None => return (Vec::new(), 0),
            },
            None => &self.by_name,
        };
        let ids = set
            .iter()
            .skip(skip)
            .take(take)
            .map(|(_, id)| *id)
            .collect();
        (ids, set.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(id: Uuid, version: u64, name: &str, category: &str) -> Product {
        let now = chrono::Utc::now();
        Product {
            id,
            name: name.into(),
            description: String::new(),
            price: rust_decimal::Decimal::ONE,
            category: category.into(),
            low_stock_threshold: 0,
            version,
            deleted: false,
            created_at: now,
            updated_at: now,
            initial_stock: 0,
        }
    }

    #[test]
    fn pages_are_sorted_by_name_and_a_rename_moves_the_product() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut index = CatalogCache::default();
        index.put(product(a, 1, "Lamp", "Home"));
        index.put(product(b, 1, "Chair", "Home"));
        index.put(product(c, 1, "Pen", "Office"));
        assert_eq!(index.page(None, 0, 10), (vec![b, a, c], 3));
        assert_eq!(index.page(Some("Home"), 1, 10), (vec![a], 2));
        assert_eq!(index.page(Some("Garden"), 0, 10), (vec![], 0));

        index.put(product(a, 2, "Armchair", "Office"));
        assert_eq!(index.version(a), Some(2));
        assert_eq!(index.count(), 3);
        assert_eq!(index.page(None, 0, 10), (vec![a, b, c], 3));
        assert_eq!(index.page(Some("Home"), 0, 10), (vec![b], 1));
        assert_eq!(index.page(Some("Office"), 0, 10), (vec![a, c], 2));

        index.put(product(b, 2, "Chair", "Office"));
        assert_eq!(
            index.page(Some("Home"), 0, 10),
            (vec![], 0),
            "an emptied category is gone"
        );
    }
}
