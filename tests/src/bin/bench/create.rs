//! Scenario 4, CreateOrder: the snapshot catalog against the grpc catalog (the original design)
//! at 1 and 64 clients, next to a raw tonic round trip; then two instances and the listing lag
//! between them; then the footprint after the load.
use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use hdrhistogram::Histogram;
use tests::{NatsServer, ServiceProcess};

use crate::*;

/// What the CreateOrder legs run against.
struct Sut<'a> {
    nats: &'a NatsServer,
    product: &'a ServiceProcess,
    client: &'a reqwest::Client,
    ids: &'a Arc<Vec<String>>,
}

/// One mode's figures at one client count: rate, p50 and p99 (µs), CPU µs per order of
/// (nats-server, product-svc, order-svc, load generator).
struct ModeRate {
    mode: &'static str,
    clients: usize,
    rate: f64,
    p50: u64,
    p99: u64,
    cpu_us: Vec<f64>,
}

/// Scenario 4. Returns the snapshot mode's (64-client, 1-client) rates.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn create_order(
    report: &mut Report,
    dir: &Path,
    s: Sizes,
    nats: &NatsServer,
    grpc: &str,
    product: &ServiceProcess,
    client: &reqwest::Client,
    ids: &Arc<Vec<String>>,
) -> (f64, f64) {
    let sut = Sut {
        nats,
        product,
        client,
        ids,
    };
    let snapshot = ServiceProcess::order(
        &nats.url(),
        grpc,
        &dir.join("order-snap"),
        dir,
        &[("RUST_LOG", "warn"), ("ORDER_INSTANCE_ID", "snap")],
    );
    let grpc_mode = ServiceProcess::order(
        &nats.url(),
        grpc,
        &dir.join("order-grpc"),
        dir,
        // Its own order stream: every instance projects every order of its stream, so
        // sharing one would make each mode pay for the other's orders.
        &[
            ("RUST_LOG", "warn"),
            ("ORDER_INSTANCE_ID", "grpc"),
            ("ORDER_CATALOG", "grpc"),
            ("ORDER_STREAM", "ORDERS_GRPC"),
            ("ORDER_SUBJECT_PREFIX", "eshop.grpcorders"),
        ],
    );
    http_ready(&snapshot.http, Duration::from_secs(60)).await;
    http_ready(&grpc_mode.http, Duration::from_secs(60)).await;
    report.add(
        "5 footprint",
        "order-svc RSS idle (1,000-product snapshot)",
        rss_mib(snapshot.pid()),
        "MiB",
        None,
        "≤ 8 MiB",
    );
    let rates = compare_modes(report, &sut, &snapshot, &grpc_mode, s).await;
    let find = |mode: &str, clients: usize| {
        rates
            .iter()
            .find(|r| r.mode == mode && r.clients == clients)
            .expect("every mode ran at every client count")
    };
    let (s64, g64) = (find("snapshot", 64), find("grpc", 64));
    headline_rows(report, s64, g64);
    against_the_floor(report, &sut, find("snapshot", 1), s64, s).await;
    let one_cpu_us: f64 = s64.cpu_us[..3].iter().sum();
    two_instances(
        report,
        &sut,
        dir,
        grpc,
        &snapshot,
        (s64.rate, one_cpu_us),
        s,
    )
    .await;
    footprint_after_load(report, &sut, &snapshot, dir, s.orders_1 + s.orders_64);
    (s64.rate, find("snapshot", 1).rate)
}

/// The snapshot catalog against the grpc catalog and the previous design, at 64 clients.
fn headline_rows(report: &mut Report, s64: &ModeRate, g64: &ModeRate) {
    report.add(
        "4 create order",
        "snapshot / grpc throughput, 64 clients",
        s64.rate / g64.rate,
        "×",
        None,
        "≥ 1.5×",
    );
    report.add(
        "4 create order",
        "snapshot / grpc p99, 64 clients",
        s64.p99 as f64 / g64.p99 as f64,
        "×",
        None,
        "< 1.0",
    );
    report.add(
        "4 create order",
        "one instance, 64 clients, next to the previous design",
        s64.rate,
        "orders/s",
        Some((
            "sled orders + outbox (BENCHMARKS.md at 8f82fbc)",
            PREVIOUS_DESIGN_64,
        )),
        "≥ 5,000/s",
    );
}

/// The floor (`floor.rs`) at 1 and 64 clients on the same nats-server, and CreateOrder (snapshot
/// mode, one instance) as ratios to it: the hot-path issue's targets.
async fn against_the_floor(
    report: &mut Report,
    sut: &Sut<'_>,
    s1: &ModeRate,
    s64: &ModeRate,
    s: Sizes,
) {
    let floor = Floor::start(&sut.nats.url());
    let one = run_floor(&floor, sut.nats, sut.client, sut.ids, 1, s.orders_1).await;
    let many = run_floor(&floor, sut.nats, sut.client, sut.ids, 64, s.orders_64).await;
    drop(floor);
    floor_rows(report, "", &one, &many);
    let scenario = "4 create order";
    report.add(
        scenario,
        "one instance, 64 clients, next to the floor",
        s64.rate,
        "orders/s",
        Some(("floor, 64 clients", many.rate)),
        "≥ 5,000/s; ≥ 0.33× the floor",
    );
    for (label, q, value, target) in [
        ("p50", 0.5, s1.p50, "≤ 0.8 ms; ≤ 1.5× the floor"),
        ("p99", 0.99, s1.p99, "≤ 2 ms"),
    ] {
        report.add(
            scenario,
            &format!("one instance, 1 client, {label}, next to the floor"),
            value as f64,
            "µs",
            Some(("floor, 1 client", one.hist.value_at_quantile(q) as f64)),
            target,
        );
    }
    let services: f64 = s64.cpu_us[..3].iter().sum();
    report.add(
        scenario,
        "CPU per order, nats-server + product-svc + order-svc, 64 clients",
        services,
        "µs",
        Some(("floor: nats-server + both sides", many.service_cpu_us())),
        "≤ 300 µs; ≤ 3× the floor",
    );
    report.add(
        scenario,
        "CPU per order, order-svc, 64 clients",
        s64.cpu_us[2],
        "µs",
        Some(("floor's HTTP side", many.cpu_us[2])),
        "≤ 120 µs",
    );
}

/// Both catalog modes at 1 and 64 clients, each next to a raw tonic round trip at the same
/// concurrency. Legs run in the order snapshot, grpc, grpc, snapshot (half the orders each), so
/// a drift of the machine or of product-svc's growing store favours neither mode.
async fn compare_modes(
    report: &mut Report,
    sut: &Sut<'_>,
    snapshot: &ServiceProcess,
    grpc_mode: &ServiceProcess,
    s: Sizes,
) -> Vec<ModeRate> {
    let (raw1, raw1_hist) = raw_tonic(1, s.orders_1 * 2).await;
    let (raw64, raw64_hist) = raw_tonic(64, s.orders_64 * 2).await;
    for (label, rate) in [("1 in flight", raw1), ("64 in flight", raw64)] {
        let name = format!("raw tonic unary, {label}");
        report.add("4 baseline", &name, rate, "calls/s", None, "");
    }
    let mut rates = Vec::new();
    for (clients, total, base, base_hist) in [
        (1, s.orders_1, raw1, &raw1_hist),
        (64, s.orders_64, raw64, &raw64_hist),
    ] {
        let mut acc: HashMap<&str, Legs> = HashMap::new();
        for mode in ["snapshot", "grpc", "grpc", "snapshot"] {
            let order = if mode == "snapshot" {
                snapshot
            } else {
                grpc_mode
            };
            let leg = run_leg(sut, order, clients, total / 2).await;
            let a = acc
                .entry(mode)
                .or_insert_with(|| (0.0, 0, Histogram::new(3).unwrap(), vec![0.0; leg.3.len()]));
            a.0 += leg.0;
            a.1 += leg.1;
            a.2.add(&leg.2).unwrap();
            a.3.iter_mut()
                .zip(&leg.3)
                .for_each(|(sum, cpu)| *sum += cpu);
        }
        for mode in ["snapshot", "grpc"] {
            let (secs, orders, hist, cpu) = &acc[mode];
            let rate = *orders as f64 / secs;
            if clients == 64 {
                cpu_rows(report, mode, cpu, *orders);
            }
            let target = match (mode, clients) {
                ("snapshot", 64) => "≥ 3,000/s; ≥ 1.5× grpc mode",
                _ => "",
            };
            let name = format!("{mode} catalog, {clients} clients");
            report.add(
                "4 create order",
                &name,
                rate,
                "orders/s",
                Some(("raw tonic", base)),
                target,
            );
            let name = format!("{mode}, {clients} clients");
            latency_rows(report, "4 create order", &name, hist, Some(base_hist));
            rates.push(ModeRate {
                mode,
                clients,
                rate,
                p50: hist.value_at_quantile(0.5),
                p99: hist.value_at_quantile(0.99),
                cpu_us: cpu.iter().map(|c| c * 1e6 / *orders as f64).collect(),
            });
        }
    }
    rates
}

/// One leg: `orders` orders from `clients` clients against one order-svc; its seconds, orders,
/// latencies and the CPU seconds of nats-server, product-svc, order-svc and this process.
async fn run_leg(sut: &Sut<'_>, order: &ServiceProcess, clients: usize, orders: usize) -> Legs {
    let pids = [
        sut.nats.pid().unwrap_or(0),
        sut.product.pid(),
        order.pid(),
        std::process::id(),
    ];
    let cpu_before: Vec<f64> = pids.iter().map(|p| cpu_secs(*p)).collect();
    let http = [order.http.clone()];
    let (rate, hist) = create_orders(sut.client, &http, sut.ids, clients, orders).await;
    let cpu = pids
        .iter()
        .zip(&cpu_before)
        .map(|(pid, before)| cpu_secs(*pid) - before)
        .collect();
    (orders as f64 / rate, orders, hist, cpu)
}

/// CPU per 1,000 orders of each process, for one mode at 64 clients.
fn cpu_rows(report: &mut Report, mode: &str, cpu: &[f64], orders: usize) {
    let order_name = if mode == "snapshot" {
        "order-svc"
    } else {
        "order-svc (grpc)"
    };
    let names = ["nats-server", "product-svc", order_name, "load generator"];
    for (name, cpu) in names.iter().zip(cpu) {
        report.add(
            "4 create order",
            &format!("{mode}, 64 clients: CPU of {name} per 1,000 orders"),
            cpu * 1000.0 / (orders as f64 / 1000.0),
            "ms",
            None,
            "",
        );
    }
}

/// Two instances on the same box, round-robin, and the listing lag between them.
async fn two_instances(
    report: &mut Report,
    sut: &Sut<'_>,
    dir: &Path,
    grpc: &str,
    first: &ServiceProcess,
    (one_instance, one_instance_cpu_us): (f64, f64),
    s: Sizes,
) {
    let second = ServiceProcess::order(
        &sut.nats.url(),
        grpc,
        &dir.join("order-snap-b"),
        dir,
        &[("RUST_LOG", "warn"), ("ORDER_INSTANCE_ID", "snap-b")],
    );
    http_ready(&second.http, Duration::from_secs(60)).await;
    let both = [first.http.clone(), second.http.clone()];
    let (orders, lag_orders) = (s.orders_64 / 2, s.lag_orders);
    let pids = [
        sut.nats.pid().unwrap_or(0),
        sut.product.pid(),
        first.pid(),
        second.pid(),
    ];
    let cpu_before: Vec<f64> = pids.iter().map(|p| cpu_secs(*p)).collect();
    let (rate, hist) = create_orders(sut.client, &both, sut.ids, 64, orders).await;
    let cpu_us: f64 = pids
        .iter()
        .zip(&cpu_before)
        .map(|(pid, before)| (cpu_secs(*pid) - before) * 1e6 / orders as f64)
        .sum();
    report.add(
        "4 create order",
        "two instances (round-robin), 64 clients",
        rate,
        "orders/s",
        Some(("one instance, same run", one_instance)),
        "",
    );
    report.add(
        "4 create order",
        "two instances, 64 clients: CPU per order, nats-server + product-svc + both order-svc",
        cpu_us,
        "µs",
        Some(("one instance, same run", one_instance_cpu_us)),
        "≤ 1.15×",
    );
    latency_rows(
        report,
        "4 create order",
        "two instances, 64 clients",
        &hist,
        None,
    );
    let lag = listing_lag(sut.client, &first.http, &second.http, sut.ids, lag_orders).await;
    for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
        report.add(
            "4 create order",
            &format!("201 on A → in B's customer listing, {label} ({lag_orders} orders)"),
            lag.value_at_quantile(q) as f64 / 1000.0,
            "ms",
            None,
            if label == "p99" { "≤ 50 ms" } else { "" },
        );
    }
}

/// 5. Footprint after the load: RSS, product-svc's store on disk, the stripped binaries.
fn footprint_after_load(
    report: &mut Report,
    sut: &Sut<'_>,
    order: &ServiceProcess,
    dir: &Path,
    orders: usize,
) {
    let rss = [
        ("product-svc RSS after load", sut.product.pid()),
        ("order-svc RSS after load (snapshot mode)", order.pid()),
    ];
    for (name, pid) in rss {
        report.add("5 footprint", name, rss_mib(pid), "MiB", None, "");
    }
    report.add(
        "5 footprint",
        &format!(
            "product-svc sled on disk ({} products, {orders} orders' reservations)",
            sut.ids.len()
        ),
        dir_mib(&dir.join("product")),
        "MiB",
        None,
        "",
    );
    for name in ["product-svc", "order-svc"] {
        let size = std::fs::metadata(tests::service_binary(name))
            .map(|m| m.len())
            .unwrap_or(0) as f64
            / 1e6;
        let row = format!("{name} stripped binary");
        report.add("5 footprint", &row, size, "MB", None, "≤ 5 MB");
    }
}
