//! The single definition of every JetStream stream. Both sides call these, so a publisher and a
//! consumer can never disagree about retention, dedupe window or subjects.
use std::time::Duration;

use async_nats::jetstream::stream::{Config, DiscardPolicy, External, Source, StorageType};

pub const PRODUCTS: &str = "PRODUCTS";
pub const STOCK: &str = "STOCK";
pub const ORDERS: &str = "ORDERS";
pub const LEDGER: &str = "LEDGER";

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

/// `LEDGER` is the system of record for stock: one message per subject (the stock writer's lease
/// and heartbeat, each product's on-hand count, each order's reservation), so a replay is
/// O(products + reservations kept). Closed reservations are purged by product-svc's retention.
pub fn ledger(replicas: usize) -> Config {
    Config {
        name: LEDGER.into(),
        subjects: vec!["eshop.ledger.>".into()],
        max_messages_per_subject: 1,
        discard: DiscardPolicy::Old,
        duplicate_window: DUPLICATE_WINDOW,
        storage: StorageType::File,
        num_replicas: replicas.max(1),
        ..Default::default()
    }
}

/// How many states of one order `ORDERS` keeps. An order has at most four (placed, confirmed
/// or rejected, cancelled or shipped, its stock work recorded); eight leaves room.
pub const ORDER_HISTORY: i64 = 8;

/// `ORDERS` is the system of record for orders: one subject per order (`<prefix>.<orderId>`),
/// each message the order's full state. It keeps **every state of an order**
/// (`max_messages_per_subject = ORDER_HISTORY`), so `GET /api/orders/{id}/history` answers from
/// the stream; readers that need only the latest state (the views' cold start, product-svc's
/// follower and audit) read last-per-subject, so a replay still costs O(orders). The CAS on
/// `Nats-Expected-Last-Subject-Sequence` works on the last message. Nothing ages out: orders
/// are kept until an operator decides otherwise.
pub fn orders(name: &str, subject_prefix: &str, replicas: usize) -> Config {
    Config {
        name: name.into(),
        subjects: vec![format!("{subject_prefix}.*")],
        max_messages_per_subject: ORDER_HISTORY,
        discard: DiscardPolicy::Old,
        duplicate_window: DUPLICATE_WINDOW,
        storage: StorageType::File,
        num_replicas: replicas.max(1),
        allow_direct: true,
        ..Default::default()
    }
}

/// An edge site's copy of the hub's `PRODUCTS`: a mirror in the site's own JetStream domain,
/// kept up to date across the leaf link by the site's nats-server and readable with the link
/// down. Same name and sequences as the origin, no subjects of its own (a mirror takes none).
pub fn products_mirror(origin_domain: &str, replicas: usize) -> Config {
    Config {
        name: PRODUCTS.into(),
        mirror: Some(Source {
            name: PRODUCTS.into(),
            external: Some(domain_api(origin_domain)),
            ..Default::default()
        }),
        max_messages_per_subject: 1,
        discard: DiscardPolicy::Old,
        storage: StorageType::File,
        num_replicas: replicas.max(1),
        allow_direct: true,
        ..Default::default()
    }
}

/// The order stream of edge site `site` (`ORDERS_EDGE1` for `edge1`): unique per site, since
/// flow-control subjects are not domain-prefixed.
pub fn site_orders_stream(site: &str) -> String {
    format!("{ORDERS}_{}", site.to_uppercase().replace('-', "_"))
}

/// Subject prefix of site `site`'s orders (`eshop.edge1.orders`): distinct from the hub's, so a
/// connected leaf never stores an order in two streams.
pub fn site_orders_prefix(site: &str) -> String {
    format!("eshop.{site}.orders")
}

/// The hub's order stream, also **sourcing** every edge site's order stream from the site's
/// domain: the hub sees every order exactly once (sourced messages keep their subjects, and the
/// stream keeps one message per subject), and a site's orders flow in when its link is up.
pub fn orders_with_sites(
    name: &str,
    subject_prefix: &str,
    replicas: usize,
    sites: &[String],
) -> Config {
    let mut config = orders(name, subject_prefix, replicas);
    if !sites.is_empty() {
        config.sources = Some(
            sites
                .iter()
                .map(|site| Source {
                    name: site_orders_stream(site),
                    external: Some(domain_api(site)),
                    ..Default::default()
                })
                .collect(),
        );
    }
    config
}

/// Another domain's JetStream API, as a mirror or source reaches it across a leaf link (the
/// server takes `external.api`; async-nats' `Source::domain` is not sent in a form it accepts).
fn domain_api(domain: &str) -> External {
    External {
        api_prefix: format!("$JS.{domain}.API"),
        delivery_prefix: None,
    }
}

/// A JetStream domain or site name: a NATS subject token (`[A-Za-z0-9_-]`, 1-32 characters).
pub fn is_site_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
