//! The two followers that fill this instance's cache from the streams that are the record:
//! `PRODUCTS` into the catalog, `LEDGER` into the stock books.
//!
//! Why they work the way they do:
//! - **From scratch, last per subject.** The cache starts empty (`Store::open`), and each stream
//!   keeps one message per subject, so a cold start reads O(products + reservations kept), in
//!   stream order (which `domain::books` relies on).
//! - **Ordered consumers**, no durable: the position lives in the cache (`Progress`), and a
//!   session that fails restarts from it.
//! - **Batches**: whatever is ready (up to `BATCH`) is applied at once, on a blocking thread,
//!   while the next batch is received (sled's inserts and the consumer each take about half of
//!   a cold start; overlapped, they share the two cores).
//! - **The books and the lease.** A follower's books follow the ledger. When this instance wins
//!   the lease at sequence L, its books first apply everything up to L (nothing after L can be
//!   another instance's, the fence sees to that); then it becomes the writer and stops following
//!   (its own writes go to its books directly). When it stops writing, for whatever reason, its
//!   books are wiped and rebuilt from the ledger: they may hold a write the stream never took.
//! - **Poison** (an undecodable message) is skipped and counted; it never stops the cache.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull::OrderedConfig},
};
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::{
    lease::{Lease, Role},
    store::{Store, StreamMessage},
};

/// Most messages applied at once.
const BATCH: usize = 1000;

/// What the cache has done, for `/health/ready` and `/metrics`.
#[derive(Debug, Default)]
pub struct CacheState {
    /// The catalog has applied everything `PRODUCTS` held when this process started.
    pub catalog_ready: AtomicBool,
    /// The books have applied everything `LEDGER` held when they were last (re)built, or this
    /// instance is the writer.
    pub books_ready: AtomicBool,
    pub poison: AtomicU64,
    pub rebuilds: AtomicU64,
    /// `--seed` has not finished yet.
    pub seeding: AtomicBool,
}

#[derive(Clone)]
pub struct Cache {
    pub store: Store,
    pub js: jetstream::Context,
    pub lease: Lease,
    pub replicas: usize,
    pub state: Arc<CacheState>,
}

/// Why a follow session ended.
enum Ended {
    Cancelled,
    /// This instance became the stock writer.
    Writer,
    Failed(String),
}

impl Cache {
    /// Follows `PRODUCTS` into the catalog until cancelled.
    pub async fn run_catalog(self, cancel: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.follow(shared::streams::PRODUCTS, &cancel).await {
                Ended::Cancelled | Ended::Writer => return,
                Ended::Failed(error) => {
                    tracing::debug!(%error, "The catalog follower stopped; retrying.");
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Keeps the books: follows `LEDGER` while a follower, hands over to the writer when this
    /// instance wins the lease, and rebuilds when it stops writing.
    pub async fn run_books(self, cancel: CancellationToken) {
        let mut role = self.lease.watch();
        loop {
            if let Err(error) = self.store.wipe_books().await {
                tracing::error!(%error, "Emptying the stock books failed; retrying.");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            self.state.books_ready.store(false, Ordering::Relaxed);
            let mut backoff = Duration::from_millis(100);
            loop {
                match self.follow(shared::streams::LEDGER, &cancel).await {
                    Ended::Cancelled => return,
                    Ended::Writer => break,
                    Ended::Failed(error) => {
                        tracing::debug!(%error, "The ledger follower stopped; retrying.");
                    }
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            // The writer's books are its own until it stops writing.
            self.state.books_ready.store(true, Ordering::Relaxed);
            let writing = *role.borrow_and_update();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = role.wait_for(|r| *r != writing) => {}
            }
            self.state.rebuilds.fetch_add(1, Ordering::Relaxed);
            tracing::info!("Rebuilding the stock books from the ledger.");
        }
    }

    /// One session on `name`, from the cache's position on.
    async fn follow(&self, name: &str, cancel: &CancellationToken) -> Ended {
        let books = name == shared::streams::LEDGER;
        let progress = if books {
            &self.store.progress().ledger
        } else {
            &self.store.progress().catalog
        };
        let mut role = self.lease.watch();
        let session = async {
            let (mut stream, ready) = if books {
                let stream = self
                    .store
                    .ledger_stream()
                    .await
                    .map_err(|e| e.to_string())?
                    .clone();
                (stream, &self.state.books_ready)
            } else {
                // STOCK takes the StockLow signals; created here, once, like the others.
                self.js
                    .get_or_create_stream(shared::streams::stock(self.replicas))
                    .await
                    .map_err(|e| e.to_string())?;
                let stream = self
                    .js
                    .get_or_create_stream(shared::streams::products(self.replicas))
                    .await
                    .map_err(|e| e.to_string())?;
                (stream, &self.state.catalog_ready)
            };
            let target = stream
                .info()
                .await
                .map_err(|e| e.to_string())?
                .state
                .last_sequence;
            let at = *progress.borrow();
            let deliver_policy = if at == 0 {
                DeliverPolicy::LastPerSubject
            } else {
                DeliverPolicy::ByStartSequence {
                    start_sequence: at + 1,
                }
            };
            let consumer = stream
                .create_consumer(OrderedConfig {
                    deliver_policy,
                    filter_subject: ">".into(),
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
            let started = std::time::Instant::now();
            let caught_up = |applied: u64| {
                if applied >= target && !ready.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        stream = name,
                        target,
                        millis = started.elapsed().as_millis() as u64,
                        "The cache caught up with the stream."
                    );
                }
            };
            caught_up(*progress.borrow());
            // One batch is applied (on a blocking thread) while the next is received.
            let mut applying: Option<tokio::task::JoinHandle<crate::error::Result<u64>>> = None;
            let finish = |done: Result<crate::error::Result<u64>, tokio::task::JoinError>| {
                let poison = done
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                self.state.poison.fetch_add(poison, Ordering::Relaxed);
                caught_up(*progress.borrow());
                Ok::<_, String>(())
            };
            loop {
                let at = *progress.borrow();
                if books
                    && let Some(lease_seq) = self.catching_up(at)
                    && self.lease.caught_up(lease_seq)
                {
                    if let Some(pending) = applying.take() {
                        finish(pending.await)?;
                    }
                    return Ok(Ended::Writer);
                }
                let first = tokio::select! {
                    m = messages.next() => m,
                    _ = role.changed() => continue,
                    done = async { applying.as_mut().expect("guarded").await }, if applying.is_some() => {
                        applying = None;
                        finish(done)?;
                        continue;
                    }
                };
                let Some(first) = first else {
                    return Err("the consumer's message stream ended".to_owned());
                };
                let mut batch = vec![first.map_err(|e| e.to_string())?];
                while batch.len() < BATCH {
                    match messages.next().now_or_never() {
                        Some(Some(m)) => batch.push(m.map_err(|e| e.to_string())?),
                        _ => break,
                    }
                }
                let mut applied = Vec::with_capacity(batch.len());
                for m in batch {
                    let seq = m.info().map_err(|e| e.to_string())?.stream_sequence;
                    applied.push(StreamMessage {
                        seq,
                        subject: m.subject.to_string(),
                        payload: m.payload.clone(),
                    });
                }
                if let Some(pending) = applying.take() {
                    finish(pending.await)?;
                }
                let store = self.store.clone();
                applying = Some(tokio::task::spawn_blocking(move || {
                    if books {
                        store.apply_ledger(&applied)
                    } else {
                        store.apply_catalog(&applied)
                    }
                }));
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => Ended::Cancelled,
            r = session => r.unwrap_or_else(Ended::Failed),
        }
    }

    /// The lease this instance won, once its books have applied the ledger up to it.
    fn catching_up(&self, applied: u64) -> Option<u64> {
        match self.lease.role() {
            Role::CatchingUp(seq) if applied >= seq => Some(seq),
            _ => None,
        }
    }
}
