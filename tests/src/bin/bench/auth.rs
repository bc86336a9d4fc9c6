//! Scenario 6: the cost of API keys on CreateOrder (two instances, keyed and anonymous legs interleaved).
use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use tests::{NatsServer, ServiceProcess, wait_for};

use crate::*;

/// CreateOrder with API keys checked against the same run with authentication off
/// (`--allow-anonymous`), 1 and 64 clients, legs interleaved keyed, anonymous, anonymous, keyed.
/// Both instances send the gRPC token, so this measures the HTTP key check (SHA-256 of the key,
/// constant-time compare over the key file, the `Caller` extension, the rate-limit bucket).
pub(crate) async fn auth_overhead(
    report: &mut Report,
    dir: &Path,
    orders_1: usize,
    orders_64: usize,
) {
    let nats = NatsServer::start();
    let (product, grpc) = ServiceProcess::product_with(
        &nats.url(),
        &dir.join("product-auth"),
        dir,
        &[("RUST_LOG", "warn")],
    );
    let instance = |name: &str, extra: &[(&str, &str)]| {
        let stream = format!("ORDERS_{}", name.to_uppercase());
        let prefix = format!("eshop.{name}orders");
        let mut env = vec![
            ("RUST_LOG", "warn"),
            ("ORDER_INSTANCE_ID", name),
            ("ORDER_STREAM", stream.as_str()),
            ("ORDER_SUBJECT_PREFIX", prefix.as_str()),
        ];
        env.extend_from_slice(extra);
        ServiceProcess::order(
            &nats.url(),
            &grpc,
            &dir.join(format!("order-{name}")),
            dir,
            &env,
        )
    };
    // Rate limiting stays on for the keyed instance (the default rate, never reached here), as
    // in production; the anonymous one has neither keys nor a limit.
    let keyed = instance("keyed", &[("ORDER_RATE_LIMIT", "1000000")]);
    let anonymous = instance("anon", &[("ORDER_API_KEYS", ""), ("ALLOW_ANONYMOUS", "1")]);
    let client = bench_client(128);
    let ids = Arc::new(seed_catalog(&client, &product.http, 100).await);
    for o in [&keyed, &anonymous] {
        http_ready(&o.http, Duration::from_secs(60)).await;
        let last = ids.last().unwrap().clone();
        wait_for(
            "catalog in the snapshot",
            Duration::from_secs(60),
            || async {
                let url = format!("{}/api/snapshot/products/{last}", o.http);
                (client.get(url).send().await.ok()?.status() == 200).then_some(())
            },
        )
        .await;
    }
    let unauthenticated = reqwest::get(format!("{}/api/orders", keyed.http))
        .await
        .unwrap();
    assert_eq!(
        unauthenticated.status(),
        401,
        "the keyed instance checks keys"
    );
    for (clients, total) in [(1, orders_1), (64, orders_64)] {
        let mut secs: HashMap<&str, (f64, usize)> = HashMap::new();
        for mode in ["keys", "anonymous", "anonymous", "keys"] {
            let http = if mode == "keys" {
                &keyed.http
            } else {
                &anonymous.http
            };
            let leg = total / 2;
            let (rate, _) =
                create_orders(&client, std::slice::from_ref(http), &ids, clients, leg).await;
            let e = secs.entry(mode).or_default();
            e.0 += leg as f64 / rate;
            e.1 += leg;
        }
        let rate = |m: &str| secs[m].1 as f64 / secs[m].0;
        report.add(
            "6 auth",
            &format!("create order with API keys, {clients} clients"),
            rate("keys"),
            "orders/s",
            Some(("authentication off, same run", rate("anonymous"))),
            "within 10 % (≥ 0.9×)",
        );
    }
}
