//! The services as child processes (the release or debug binaries), so kill -9 and SIGTERM are
//! real: the fault suite and the benchmark use these.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::Duration,
};

use crate::*;

static BUILD: Mutex<bool> = Mutex::new(false);

/// Path of a service binary next to the test binary. `just test` builds the binaries first;
/// if one is missing (a bare `cargo nextest run`), it is built here once.
pub fn service_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // A test binary lives in target/<profile>/deps, the bench binary in target/<profile>.
    let here = exe.parent().expect("exe dir");
    let dir = if here.join(name).exists() {
        here.to_path_buf()
    } else {
        here.parent().expect("target/<profile>").to_path_buf()
    };
    let path = dir.join(name);
    let mut built = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if !*built && !path.exists() {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(workspace_root())
            .args([
                "build",
                "--quiet",
                "-p",
                "product-svc",
                "-p",
                "order-svc",
                "--bins",
            ])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the service binaries failed");
        *built = true;
    }
    assert!(path.exists(), "{} is missing", path.display());
    path
}

/// A service running as a child process.
pub struct ServiceProcess {
    pub name: &'static str,
    pub http: String,
    pub http_addr: SocketAddr,
    args: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
}

impl ServiceProcess {
    /// Starts `product-svc` with fixed free ports (so a restart keeps its addresses).
    pub fn product(nats_url: &str, data_dir: &Path, log_dir: &Path) -> (Self, String) {
        Self::product_with(nats_url, data_dir, log_dir, &[])
    }

    /// `product` with extra environment (flags' env equivalents, `RUST_LOG`).
    pub fn product_with(
        nats_url: &str,
        data_dir: &Path,
        log_dir: &Path,
        extra: &[(&str, &str)],
    ) -> (Self, String) {
        let http = free_port();
        let grpc = free_port();
        let keys = write_test_keys(&log_dir.join("keys"));
        let args = vec![
            (
                "PRODUCT_API_KEYS".into(),
                keys.product.display().to_string(),
            ),
            (
                "PRODUCT_GRPC_TOKEN_FILE".into(),
                keys.grpc_token.display().to_string(),
            ),
            ("PRODUCT_HTTP_ADDR".into(), format!("127.0.0.1:{http}")),
            ("PRODUCT_GRPC_ADDR".into(), format!("127.0.0.1:{grpc}")),
            ("PRODUCT_DATA_DIR".into(), data_dir.display().to_string()),
            ("NATS_URL".into(), nats_url.into()),
            ("PRODUCT_SHUTDOWN_GRACE_SECS".into(), "5".into()),
            // Load tests come from one key; the limit has its own test.
            ("PRODUCT_RATE_LIMIT".into(), "0".into()),
        ];
        let mut args = args;
        args.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut p = Self::new("product-svc", http, args, log_dir);
        p.start();
        (p, format!("http://127.0.0.1:{grpc}"))
    }

    pub fn order(
        nats_url: &str,
        product_grpc: &str,
        data_dir: &Path,
        log_dir: &Path,
        extra: &[(&str, &str)],
    ) -> Self {
        let http = free_port();
        let keys = write_test_keys(&log_dir.join("keys"));
        let mut args = vec![
            ("ORDER_API_KEYS".into(), keys.order.display().to_string()),
            (
                "ORDER_GRPC_TOKEN_FILE".into(),
                keys.grpc_token.display().to_string(),
            ),
            ("ORDER_HTTP_ADDR".into(), format!("127.0.0.1:{http}")),
            ("ORDER_DATA_DIR".into(), data_dir.display().to_string()),
            ("NATS_URL".into(), nats_url.into()),
            ("PRODUCT_GRPC_URL".into(), product_grpc.into()),
            ("ORDER_WORKER_INTERVAL_MS".into(), "200".into()),
            ("ORDER_BREAKER_COOLDOWN_MS".into(), "500".into()),
            ("ORDER_SHUTDOWN_GRACE_SECS".into(), "5".into()),
            ("ORDER_RATE_LIMIT".into(), "0".into()),
        ];
        args.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut p = Self::new("order-svc", http, args, log_dir);
        p.start();
        p
    }

    fn new(
        name: &'static str,
        http_port: u16,
        args: Vec<(String, String)>,
        log_dir: &Path,
    ) -> Self {
        let http_addr: SocketAddr = format!("127.0.0.1:{http_port}").parse().expect("addr");
        Self {
            name,
            http: format!("http://{http_addr}"),
            http_addr,
            args,
            child: None,
            log: log_dir.join(format!("{name}.log")),
        }
    }

    /// Starts (or restarts) the process and waits until its HTTP port accepts connections.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut cmd = Command::new(service_binary(self.name));
        cmd.env(
            "RUST_LOG",
            std::env::var("SERVICE_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
        // Later pairs override earlier ones; an empty value removes the variable (clap takes an
        // empty value as a missing one: `PRODUCT_API_KEYS=` would be an error, not "no keys").
        for (k, v) in &self.args {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let child = cmd.spawn().expect("service starts");
        self.child = Some(child);
        let addr = self.http_addr;
        let name = self.name;
        wait_for_blocking(
            &format!("{name} to listen on {addr}"),
            Duration::from_secs(60),
            || {
                if let Some(child) = self.child.as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    panic!(
                        "{name} exited during start-up with {status}; log: {}",
                        self.log.display()
                    );
                }
                accepts_connections(addr).then_some(())
            },
        );
        if name == "product-svc" {
            // Stock calls need a writer: the instance, or another, must hold the lease.
            wait_for_blocking(
                &format!("{name} on {addr} ready with a stock writer"),
                Duration::from_secs(60),
                || stock_ready(addr).then_some(()),
            );
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the exit; returns the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let name = self.name;
        wait_for_blocking(&format!("{name} to exit after SIGTERM"), timeout, || {
            child.try_wait().ok().flatten()
        })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Whether product-svc at `addr` answers `/health/ready` 200 naming a stock writer.
fn stock_ready(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request =
        format!("GET /health/ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let Some(body) = answer
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(body).ok())
    else {
        return false;
    };
    let stock = &body["figures"]["stock"];
    // This instance writes, or the lease names another one (not this one's past life).
    let other = stock["writerInstance"].is_string() && stock["writerInstance"] != stock["instance"];
    answer.starts_with("HTTP/1.1 200") && (stock["writer"] == true || other)
}
