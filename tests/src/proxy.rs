//! A TCP proxy that can lose or delay replies (to prove that retried reservations never reserve
//! twice), go down like a cut uplink (every connection closed, new ones refused until it is back
//! up), and add WAN latency in both directions.
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

#[derive(Default)]
struct Faults {
    /// Bumped by `cut_all`: every open connection closes.
    generation: AtomicU64,
    /// The next N connections lose every reply: bytes from upstream are discarded for a while
    /// (the request is processed upstream), then the connection is cut.
    drop_connections: AtomicUsize,
    /// Replies on the next N connections are delayed by `delay_ms`.
    delay_connections: AtomicUsize,
    delay_ms: AtomicU64,
    /// While set, open connections are cut and new ones closed at once.
    down: std::sync::atomic::AtomicBool,
    /// One-way latency added to every byte in both directions (0: none).
    latency_us: AtomicU64,
    pub connections: AtomicUsize,
    /// Every connection a client opened, including those refused while down.
    attempts: AtomicUsize,
    open: AtomicUsize,
    dropped: AtomicUsize,
    delayed: AtomicUsize,
}

pub struct FaultyProxy {
    pub addr: SocketAddr,
    faults: Arc<Faults>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultyProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let faults = Arc::new(Faults::default());
        let f = faults.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                f.attempts.fetch_add(1, Ordering::SeqCst);
                if f.down.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let f = f.clone();
                tokio::spawn(async move {
                    f.open.fetch_add(1, Ordering::SeqCst);
                    let _ = pipe(client, upstream, f.clone()).await;
                    f.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self { addr, faults, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn drop_replies_on_next_connections(&self, n: usize) {
        self.faults.drop_connections.store(n, Ordering::SeqCst);
    }

    pub fn delay_replies_on_next_connections(&self, n: usize, delay: Duration) {
        self.faults
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
        self.faults.delay_connections.store(n, Ordering::SeqCst);
    }

    /// Takes the link down (every connection cut, new ones refused) or brings it back up.
    pub fn set_down(&self, down: bool) {
        self.faults.down.store(down, Ordering::SeqCst);
        if down {
            self.cut_all();
        }
    }

    /// Takes the link down and returns once no connection through it is open any more.
    pub async fn go_down(&self) {
        self.set_down(true);
        crate::wait_for(
            "the proxy's connections to close",
            Duration::from_secs(10),
            || async { (self.open_connections() == 0).then_some(()) },
        )
        .await;
    }

    /// Adds `latency` to each direction of every connection opened from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.faults
            .latency_us
            .store(latency.as_micros() as u64, Ordering::SeqCst);
    }

    /// Closes every open connection, so the client's next call opens a new one.
    pub fn cut_all(&self) {
        self.faults.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Connections whose replies were lost, and connections whose replies came late.
    pub fn injected(&self) -> (usize, usize) {
        (
            self.faults.dropped.load(Ordering::SeqCst),
            self.faults.delayed.load(Ordering::SeqCst),
        )
    }

    /// Connections currently open through the proxy.
    pub fn open_connections(&self) -> usize {
        self.faults.open.load(Ordering::SeqCst)
    }

    /// Connections clients opened to the proxy, refused ones included: how often a client tried.
    pub fn attempts(&self) -> usize {
        self.faults.attempts.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.faults.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

async fn pipe(client: TcpStream, upstream: SocketAddr, faults: Arc<Faults>) -> std::io::Result<()> {
    faults.connections.fetch_add(1, Ordering::SeqCst);
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let drop_replies = take_one(&faults.drop_connections);
    if drop_replies {
        faults.dropped.fetch_add(1, Ordering::SeqCst);
    }
    let delay = take_one(&faults.delay_connections).then(|| {
        faults.delayed.fetch_add(1, Ordering::SeqCst);
        Duration::from_millis(faults.delay_ms.load(Ordering::SeqCst))
    });
    let latency = Duration::from_micros(faults.latency_us.load(Ordering::SeqCst));
    if !latency.is_zero() {
        return delayed_pipe(client, server, latency, faults).await;
    }
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream_task = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    });
    let mut buf = vec![0u8; 16 * 1024];
    let started = std::time::Instant::now();
    let generation = faults.generation.load(Ordering::SeqCst);
    let cut = {
        let faults = faults.clone();
        async move {
            while faults.generation.load(Ordering::SeqCst) == generation {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    tokio::pin!(cut);
    if drop_replies {
        // Swallow replies long enough for the request to be handled upstream, then cut.
        let _ = tokio::time::timeout(Duration::from_millis(400), async {
            while server_read.read(&mut buf).await.unwrap_or(0) > 0 {}
        })
        .await;
        upstream_task.abort();
        let _ = upstream_task.await; // drops the client read half: the socket really closes
        return Ok(());
    }
    loop {
        let n = tokio::select! {
            n = server_read.read(&mut buf) => n?,
            _ = &mut cut => 0,
        };
        if n == 0 {
            break;
        }
        // Late replies during the connection's first seconds; then it heals.
        if let Some(d) = delay.filter(|_| started.elapsed() < Duration::from_secs(2)) {
            tokio::time::sleep(d).await;
        }
        client_write.write_all(&buf[..n]).await?;
    }
    let _ = client_write.shutdown().await;
    upstream_task.abort();
    let _ = upstream_task.await;
    Ok(())
}

/// Both directions through a timed queue: each chunk is written `latency` after it was read, so
/// the added delay is per direction and does not limit throughput (a WAN, not a slow link).
async fn delayed_pipe(
    client: TcpStream,
    server: TcpStream,
    latency: Duration,
    faults: Arc<Faults>,
) -> std::io::Result<()> {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let generation = faults.generation.load(Ordering::SeqCst);
    let up = tokio::spawn(delayed_copy(client_read, server_write, latency));
    let down = tokio::spawn(delayed_copy(server_read, client_write, latency));
    while faults.generation.load(Ordering::SeqCst) == generation
        && !up.is_finished()
        && !down.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    up.abort();
    down.abort();
    Ok(())
}

async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    latency: Duration,
) {
    // Reader and writer in one task, so aborting it closes both halves.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let due = tokio::time::Instant::now() + latency;
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    };
    tokio::join!(reader, writer);
}
