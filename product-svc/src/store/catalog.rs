//! The catalog: create, update, discontinue (compare-and-set publishes on the product's subject
//! of `PRODUCTS`, from any instance), stock adjustments (the stock writer), and the reads.
//!
//! Why each write works the way it does:
//! - **CAS per product.** A write reads the product's last message from the stream leader (not
//!   the cache, which may lag another instance's write), decides, and publishes with
//!   `Nats-Expected-Last-Subject-Sequence` = that message's sequence (0 for a new product). Of
//!   two instances writing one product, one wins; the other re-reads and decides again, so no
//!   update is lost and `version` / `If-Match` keep their meaning.
//! - **The dedup-before-CAS trap** (as in order-svc's `order_log.rs`): a publish stored whose
//!   answer was lost comes back "wrong last sequence" when retried; the last message then
//!   carries our message id, and the write is ours.
//! - **Answered from the cache**: a write answers once this instance's cache has applied it,
//!   so the next read here shows it.
use async_nats::jetstream::{
    message::PublishMessage,
    stream::{LastRawMessageErrorKind, Stream},
};
use chrono::Utc;
use shared::{
    correlation,
    events::{self, ProductEvent, ProductEventType},
};
use uuid::Uuid;

use super::{
    Entry, Store, wait_for,
    writer::{Outgoing, publish_signals},
};
use crate::{
    domain::{self, NewProduct, Product, Stock},
    error::{Error, Result},
    lease,
};

/// How often a catalog write re-reads and decides again when other writes win the race.
const CAS_ROUNDS: usize = 16;

/// What a compare-and-set publish found.
enum Cas {
    Stored(u64),
    /// The product moved on meanwhile (or exists already, for a create).
    Lost,
}

impl Store {
    pub async fn create(&self, input: &NewProduct) -> Result<Entry> {
        let id = Uuid::new_v4();
        self.create_as(id, input)
            .await?
            .ok_or_else(|| Error::Unavailable(format!("product id {id} was taken meanwhile")))
    }

    /// Creates product `id` unless it exists (then `None`): the seed's deterministic ids make
    /// two instances seeding at once write each product once.
    pub async fn create_as(&self, id: Uuid, input: &NewProduct) -> Result<Option<Entry>> {
        let (product, stock) = domain::new_product(id, input, Utc::now());
        let Cas::Stored(seq) = self
            .publish_product(&product, ProductEventType::ProductCreated, 0)
            .await?
        else {
            return Ok(None);
        };
        wait_for(&self.progress.catalog, seq).await;
        if stock.low {
            self.signal_low(&product, &stock).await;
        }
        tracing::info!(product_id = %id, version = 1, "Product created.");
        self.get(id)
    }

    pub fn get(&self, id: Uuid) -> Result<Option<Entry>> {
        let Some(product) = self.trees.catalog().get(id).map(|p| Product::clone(p)) else {
            return Ok(None);
        };
        let stock = self
            .stock_row(id)?
            .stock(product.initial_stock, product.low_stock_threshold);
        Ok(Some(Entry { product, stock }))
    }

    pub fn get_many(&self, ids: &[Uuid]) -> Result<Vec<Option<Entry>>> {
        ids.iter().map(|id| self.get(*id)).collect()
    }

    /// One page of products sorted by name (optionally of one category), and the total count.
    pub fn list(
        &self,
        category: Option<&str>,
        page: usize,
        page_size: usize,
    ) -> Result<(Vec<Entry>, usize)> {
        let skip = (page - 1).saturating_mul(page_size);
        let (ids, total) = self.trees.catalog().page(category, skip, page_size);
        let mut items = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(entry) = self.get(id)? {
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
        self.change(id, if_match, ProductEventType::ProductUpdated, |current| {
            if current.deleted {
                return Err(Error::Discontinued(current.id));
            }
            Ok(domain::apply_update(current, fields, Utc::now()))
        })
        .await
    }

    /// Discontinues a product: kept, marked deleted, no longer orderable. Idempotent.
    pub async fn discontinue(&self, id: Uuid, if_match: Option<u64>) -> Result<Entry> {
        self.change(id, if_match, ProductEventType::ProductDeleted, |current| {
            Ok(domain::discontinue(current, Utc::now()))
        })
        .await
    }

    /// Reads, decides (`decide` answers `None` when nothing changes) and publishes by CAS,
    /// again while other writes win.
    async fn change(
        &self,
        id: Uuid,
        if_match: Option<u64>,
        kind: ProductEventType,
        decide: impl Fn(&Product) -> Result<Option<Product>>,
    ) -> Result<Entry> {
        for _ in 0..CAS_ROUNDS {
            let (current, seq) = self.read_product(id).await?.ok_or(Error::NotFound(id))?;
            check_version(&current, if_match)?;
            let before = self.get(id)?.map(|e| e.stock);
            let Some(next) = decide(&current)? else {
                wait_for(&self.progress.catalog, seq).await;
                return self.get(id)?.ok_or(Error::NotFound(id));
            };
            let Cas::Stored(stored) = self.publish_product(&next, kind, seq).await? else {
                continue;
            };
            wait_for(&self.progress.catalog, stored).await;
            let entry = self.get(id)?.ok_or(Error::NotFound(id))?;
            if entry.stock.low && before.is_some_and(|s| !s.low) {
                self.signal_low(&entry.product, &entry.stock).await;
            }
            tracing::info!(product_id = %id, version = entry.product.version, event = kind.as_str(), "Product changed.");
            return Ok(entry);
        }
        Err(Error::Unavailable(format!(
            "product {id} kept changing under this write; try again"
        )))
    }

    /// Restock (+) or write-off (−) of on-hand stock, by the stock writer.
    pub async fn adjust_stock(&self, id: Uuid, delta: i64) -> Result<Entry> {
        let cid = correlation::current_or_new();
        self.known(std::iter::once(id)).await?;
        let entry = self
            .transact(move |t| {
                let product = t.product(id)?;
                let stock = t.stock_of(&product)?;
                let mut next = domain::adjust(stock, delta).map_err(Error::from)?;
                if domain::update_low_flag(&mut next, product.low_stock_threshold) {
                    t.stock_low(&product, &next, &cid)?;
                }
                t.count(id, &next, &cid)?;
                Ok(Entry {
                    product,
                    stock: next,
                })
            })
            .await?;
        tracing::info!(product_id = %id, delta, on_hand = entry.stock.on_hand, "Stock adjusted.");
        Ok(entry)
    }

    /// The product as its last message in `PRODUCTS` says (read from the stream leader), with
    /// that message's sequence.
    async fn read_product(&self, id: Uuid) -> Result<Option<(Product, u64)>> {
        Ok(self
            .read_raw(id)
            .await?
            .map(|(event, seq, _)| (domain::product_from_event(&event), seq)))
    }

    async fn read_raw(&self, id: Uuid) -> Result<Option<(ProductEvent, u64, Option<String>)>> {
        self.connected()?;
        let stream = self.catalog_stream().await?;
        let got = tokio::time::timeout(
            self.timeout,
            stream.get_last_raw_message_by_subject(&events::product_subject(id)),
        )
        .await
        .map_err(|_| Error::Unavailable("reading the product timed out".into()))?;
        let msg = match got {
            Ok(msg) => msg,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(e) => return Err(Error::Unavailable(e.to_string())),
        };
        let event: ProductEvent =
            serde_json::from_slice(&msg.payload).map_err(|e| Error::corrupt(e.to_string()))?;
        let msg_id = msg
            .headers
            .get(events::HEADER_MSG_ID)
            .map(|v| v.as_str().to_owned());
        Ok(Some((event, msg.sequence, msg_id)))
    }

    /// Publishes `product`'s full state if its subject's last message is still at `expected`.
    async fn publish_product(
        &self,
        product: &Product,
        kind: ProductEventType,
        expected: u64,
    ) -> Result<Cas> {
        let event = domain::event_for(product, kind, product.updated_at);
        let msg_id = event.event_id.to_string();
        let payload = serde_json::to_vec(&event).expect("serializes");
        let message = PublishMessage::build()
            .payload(payload.into())
            .message_id(&msg_id)
            .expected_last_subject_sequence(expected)
            .header(events::HEADER_EVENT_TYPE, kind.as_str())
            .header(
                events::HEADER_CORRELATION_ID,
                correlation::current_or_new().as_str(),
            );
        self.connected()?;
        self.catalog_stream().await?;
        let sent = tokio::time::timeout(self.timeout, async {
            self.js
                .send_publish(events::product_subject(product.id), message)
                .await?
                .await
        })
        .await;
        let why = match sent {
            Ok(Ok(ack)) => return Ok(Cas::Stored(ack.sequence)),
            Ok(Err(e)) if lease::is_wrong_sequence(&e) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("the publish ack timed out".to_owned()),
        };
        // Lost the race, or no answer: the stream says whether the message is ours.
        match self.read_raw(product.id).await {
            Ok(Some((_, seq, Some(id)))) if id == msg_id => Ok(Cas::Stored(seq)),
            Ok(_) if why.is_none() => Ok(Cas::Lost),
            Ok(_) => Err(Error::Unavailable(why.unwrap_or_default())),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn catalog_stream(&self) -> Result<&Stream> {
        self.streams
            .catalog
            .get_or_try_init(|| async {
                let config = shared::streams::products(self.replicas);
                tokio::time::timeout(self.timeout, self.js.get_or_create_stream(config))
                    .await
                    .map_err(|_| Error::Unavailable("reaching PRODUCTS timed out".into()))?
                    .map_err(|e| Error::Unavailable(e.to_string()))
            })
            .await
    }

    /// A catalog barrier: the cache has applied everything `PRODUCTS` holds now.
    pub(super) async fn sync_catalog(&self) -> Result<()> {
        let catalog = self.catalog_stream().await?.clone();
        self.barrier(catalog, &self.progress.catalog).await
    }

    /// A StockLow signal from a catalog write (a product created low, or a threshold raised
    /// above what is available); best effort, deduplicated by id.
    async fn signal_low(&self, product: &Product, stock: &Stock) {
        let cid = correlation::current_or_new();
        let signal = Outgoing::stock_low(product, stock, &cid);
        publish_signals(self.js.clone(), vec![signal]).await;
    }
}

fn check_version(current: &Product, if_match: Option<u64>) -> Result<()> {
    match if_match {
        Some(expected) if expected != current.version => Err(Error::VersionMismatch {
            id: current.id,
            expected,
            current: current.version,
        }),
        _ => Ok(()),
    }
}
