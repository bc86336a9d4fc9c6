//! The store against a real sled in a temp dir.
use super::*;
use crate::domain::{self, NewProduct};

fn new_product(stock: i64) -> NewProduct {
    NewProduct {
        fields: domain::CatalogFields {
            name: "Batch".into(),
            description: String::new(),
            price: "1.00".parse().unwrap(),
            category: "Test".into(),
            low_stock_threshold: 0,
        },
        stock_quantity: stock,
    }
}

/// Writes that fail their checks share batches with writes that succeed: the failures change
/// nothing, the others all land exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_leaves_the_rest_of_its_batch_intact() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let id = store.create(&new_product(10)).await.unwrap().product.id;
    let fields = new_product(0).fields;
    let writes = (0..40).map(|i| {
        let (store, fields) = (store.clone(), fields.clone());
        tokio::spawn(async move {
            if i % 2 == 0 {
                store.adjust_stock(id, 1).await.map(|_| ())
            } else {
                store.update(id, &fields, Some(99)).await.map(|_| ())
            }
        })
    });
    let results = futures::future::join_all(writes).await;
    for (i, result) in results.into_iter().enumerate() {
        match (i % 2, result.unwrap()) {
            (0, Ok(())) => {}
            (1, Err(Error::VersionMismatch { expected: 99, .. })) => {}
            (_, other) => panic!("write {i}: unexpected {other:?}"),
        }
    }
    let entry = store.get(id).unwrap().unwrap();
    assert_eq!(entry.stock.on_hand, 30);
    assert_eq!(entry.product.version, 1);
    assert_eq!(
        store.product_count().unwrap(),
        1,
        "the failed updates created nothing"
    );
}
