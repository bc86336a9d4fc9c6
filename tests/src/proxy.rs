//! A TCP proxy between order-svc and product-svc that can lose or delay replies, to prove that
//! retried reservations never reserve twice.
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
    pub connections: AtomicUsize,
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
