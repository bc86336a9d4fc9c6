//! The one start → serve → drain → close sequence both services run, so the drain order (an
//! invariant: nothing acknowledged is lost on a clean stop) is written once:
//!
//! 1. serve until the shutdown future resolves or a server stops on its own (a failure);
//! 2. stop accepting: servers finish their in-flight requests within the grace period (then are
//!    aborted, with a warning), so no request is answered after its work stopped;
//! 3. stop the workers and wait for them: projectors ack what they applied, the stock-work loops
//!    finish their round, the stock writer releases its lease;
//! 4. the caller closes what the workers wrote to (the final sled flush, the NATS flush).
use std::{
    future::{Future, IntoFuture},
    time::Duration,
};

use futures::future::{self, FutureExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ServerTask = JoinHandle<Result<(), BoxError>>;

/// The service's runtime: `threads` async workers, by default half the machine's cores (at
/// least one). A service is not alone on its box (nats-server and the other service run
/// there too): on 2 cores, one worker per service measured fewer cross-thread wake-ups,
/// ~10 % less CPU per order and a lower latency at one client than one worker per core.
pub fn runtime(
    threads: Option<std::num::NonZeroUsize>,
) -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = threads.map_or((cores / 2).max(1), |n| n.get());
    tracing::info!(threads, cores, "Starting the runtime.");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
}

/// A server stopped on its own (not asked to): why, with its cause.
#[derive(Debug, thiserror::Error)]
#[error("the {server} server stopped on its own")]
pub struct ServerStopped {
    pub server: &'static str,
    #[source]
    pub source: Option<BoxError>,
}

/// The tasks of a running service, by role.
#[derive(Default)]
pub struct Tasks {
    servers: Vec<(&'static str, ServerTask)>,
    workers: Vec<JoinHandle<()>>,
    /// Servers stop accepting when this is cancelled (step 2).
    pub servers_stop: CancellationToken,
    /// Workers stop when this is cancelled (step 3).
    pub workers_stop: CancellationToken,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// A server (HTTP, gRPC) that stops accepting once `servers_stop` is cancelled.
    pub fn server<E: Into<BoxError>>(
        &mut self,
        name: &'static str,
        serve: impl Future<Output = Result<(), E>> + Send + 'static,
    ) {
        let task = tokio::spawn(serve.map(|r| r.map_err(Into::into)));
        self.servers.push((name, task));
    }

    /// The HTTP server on `listener`: client addresses reach the handlers (the rate limit keys
    /// anonymous callers by them), and it stops accepting once `servers_stop` is cancelled.
    pub fn http(&mut self, listener: tokio::net::TcpListener, router: axum::Router) {
        let stop = self.servers_stop.clone();
        let app = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let serve = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
        self.server("HTTP", serve.into_future());
    }

    /// A background task that returns once `workers_stop` is cancelled.
    pub fn worker(&mut self, work: impl Future<Output = ()> + Send + 'static) {
        self.workers.push(tokio::spawn(work));
    }

    /// Steps 1 to 3. Returns why a server stopped on its own, if one did; the caller then does
    /// step 4 whatever the answer.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
        grace: Duration,
    ) -> Result<(), ServerStopped> {
        let Tasks {
            servers,
            workers,
            servers_stop,
            workers_stop,
        } = self;
        let (names, handles): (Vec<_>, Vec<_>) = servers.into_iter().unzip();
        let mut failure = None;
        let mut handles = if handles.is_empty() {
            shutdown.await;
            handles
        } else {
            // A finished handle must not be polled again: `select_all` hands back the others.
            let mut running = future::select_all(handles);
            let stopped = tokio::select! {
                _ = shutdown => None,
                stopped = &mut running => Some(stopped),
            };
            match stopped {
                None => running.into_inner(),
                Some((result, index, rest)) => {
                    let source = match result {
                        Ok(Ok(())) => None,
                        Ok(Err(error)) => Some(error),
                        Err(join) => Some(join.into()),
                    };
                    failure = Some(ServerStopped {
                        server: names[index],
                        source,
                    });
                    rest
                }
            }
        };
        servers_stop.cancel();
        let drained = tokio::time::timeout(grace, future::join_all(handles.iter_mut())).await;
        if drained.is_err() {
            tracing::warn!("In-flight requests did not finish within the grace period.");
            handles.iter().for_each(JoinHandle::abort);
        }
        workers_stop.cancel();
        future::join_all(workers).await;
        match failure {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }
}
