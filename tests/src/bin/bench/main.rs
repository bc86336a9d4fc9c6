//! `just bench`: measures the system on this machine next to baselines run in the same process
//! on the same nats-server (the machine is shared and noisy: only ratios compare across runs).
//! Prints a table and writes `target/bench/report.{md,json}`. Sizes: `--quick`, or `BENCH_*`.
//!
//! Scenarios: 1 projection rate vs a raw fetch→sled→flush→ack loop; 2 cold start to ready (with
//! and without 100k orders); 3 catalog writes (CAS per product) vs raw pipelined publish; 4 CreateOrder (snapshot vs
//! grpc catalog, one and two instances, `sync_interval: always`) vs a raw tonic round-trip, and
//! the cross-instance listing lag; 5 footprint (binary size, RSS, sled on disk); 6 the cost of
//! API keys; 7 an edge site across a simulated WAN (`edge.rs`); 8 SSE watchers (`watch.rs`); 9
//! webhooks (`hooks.rs`); 10 stock on JetStream (`stock.rs`). CreateOrder is also read against its floor (`floor.rs`): the same I/O
//! with no business logic, run on the same nats-server.
#![allow(clippy::print_stdout)]

mod auth;
mod create;
mod edge;
mod floor;
mod hooks;
mod load;
mod orders;
mod probe;
mod raw;
mod replay;
mod report;
mod stock;
mod watch;

use std::path::Path;

use tests::scratch;

use auth::*;
use create::*;
use edge::*;
use floor::*;
use hooks::*;
use load::*;
use orders::*;
use probe::*;
use raw::*;
use replay::*;
use report::*;
use stock::*;
use watch::*;

/// CreateOrder at 64 clients in the design before orders moved to JetStream (sled orders and an
/// outbox): the final figure of BENCHMARKS.md at 8f82fbc. That design is gone, so it cannot run
/// in the same process; this is the reference it is compared to.
const PREVIOUS_DESIGN_64: f64 = 5_331.0;

/// Sizes of every scenario (`--quick` or `BENCH_*`).
#[derive(Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) quick: bool,
    pub(crate) products: usize,
    pub(crate) small: usize,
    pub(crate) churn: usize,
    pub(crate) updates: usize,
    pub(crate) orders_1: usize,
    pub(crate) orders_64: usize,
    pub(crate) lag_orders: usize,
}

impl Sizes {
    fn from_env(quick: bool) -> Self {
        Self {
            quick,
            products: env_or("BENCH_PRODUCTS", quick, 100_000, 10_000),
            small: env_or("BENCH_SMALL_PRODUCTS", quick, 10_000, 2_000),
            churn: env_or("BENCH_CHURN_UPDATES", quick, 1_000_000, 100_000),
            updates: env_or("BENCH_RELAY_UPDATES", quick, 20_000, 3_000),
            orders_1: env_or("BENCH_ORDERS_1", quick, 2_000, 300),
            orders_64: env_or("BENCH_ORDERS_64", quick, 20_000, 3_000),
            lag_orders: env_or("BENCH_LAG_ORDERS", quick, 1_000, 200),
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if child_mode().await {
        return;
    }
    let s = Sizes::from_env(std::env::args().any(|a| a == "--quick"));
    // `--only projection|coldstart|relay|orders|durable|cluster|auth|edge|watch|webhooks|stock|stock-1|stock-failover|stock-cold|stock-r3`
    // runs one group.
    let only = std::env::args().skip_while(|a| a != "--only").nth(1);
    let run = |group: &str| only.as_deref().is_none_or(|o| o == group);
    let mut report = Report::default();
    let dir = scratch();
    let dir = dir.path();
    println!(
        "| Scenario | Metric | Value | Baseline (same run) | Ratio | Target |\n|---|---|---:|---|---:|---|"
    );
    if run("projection") {
        projection(&mut report, dir, s).await;
    }
    if run("coldstart") {
        coldstart(&mut report, dir, s).await;
    }
    // CreateOrder with the default sync interval, for the sync-always comparison: (64, 1 client).
    let mut default_sync = None;
    if run("relay") || run("orders") {
        default_sync = relay_and_orders(&mut report, dir, s, run("relay"), run("orders")).await;
    }
    if run("edge") {
        edge_site(&mut report, dir, s).await;
    }
    if run("auth") {
        auth_overhead(&mut report, dir, s.orders_1, s.orders_64).await;
    }
    if run("durable") {
        durable(&mut report, dir, s, default_sync).await;
    }
    if run("cluster") {
        cluster(&mut report, dir, s).await;
    }
    if run("watch") {
        let count = if s.quick { 200 } else { 1_000 };
        watchers(&mut report, dir, count, 100).await;
    }
    if run("webhooks") {
        webhooks(&mut report, dir, s.orders_64 / 2).await;
    }
    if run("stock") {
        stock(&mut report, dir, s).await;
    }
    if run("stock-1") {
        stock_one(&mut report, dir, s).await;
    }
    if run("stock-failover") {
        failover_through_orders(&mut report, dir).await;
    }
    if run("stock-cold") {
        stock_cold_start(&mut report, dir, s).await;
    }
    if run("stock-r3") {
        stock_on_cluster(&mut report, dir, s).await;
    }
    write_report(&report, s);
}
