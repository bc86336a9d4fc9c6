//! A real `nats-server` per test: random loopback port, private store dir, JetStream on.
use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use tempfile::TempDir;

use crate::{accepts_connections, wait_for_blocking, workspace_root};

pub struct NatsServer {
    child: Option<Child>,
    dir: TempDir,
    port: u16,
}

impl NatsServer {
    /// Starts a server on a random port (`-p -1`) and waits until it accepts connections.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("eshop-nats-")
            .tempdir()
            .expect("tempdir");
        let mut server = Self {
            child: None,
            dir,
            port: 0,
        };
        server.spawn(None);
        let ports_dir = server.dir.path().to_path_buf();
        let port = wait_for_blocking(
            "nats-server to write its ports file",
            Duration::from_secs(20),
            || read_port(&ports_dir),
        );
        server.port = port;
        server.wait_accepting();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("js")
    }

    /// Graceful stop (SIGTERM) and wait.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            wait_for_blocking("nats-server to exit", Duration::from_secs(20), || {
                child.try_wait().ok().flatten()
            });
        }
    }

    /// SIGKILL and wait: nothing is flushed by the server.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port with the same store (stops it first if running).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn(Some(self.port));
        self.wait_accepting();
    }

    /// Starts again after `kill`/`stop` without stopping anything.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "server still running");
        self.spawn(Some(self.port));
        self.wait_accepting();
    }

    fn spawn(&mut self, port: Option<u16>) {
        let config = workspace_root().join("nats/test.conf");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats.log"))
            .expect("log");
        let port = port.map(|p| p.to_string()).unwrap_or_else(|| "-1".into());
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&config)
            .args(["-a", "127.0.0.1", "-p", &port, "-js"])
            .arg("-sd")
            .arg(self.store_dir())
            .arg("--ports_file_dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("`nats-server` must be on PATH (run `just setup`)");
        self.child = Some(child);
    }

    fn wait_accepting(&mut self) {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().expect("addr");
        let child = self.child.as_mut().expect("spawned");
        wait_for_blocking(
            "nats-server to accept connections",
            Duration::from_secs(20),
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("nats-server exited with {status}");
                }
                accepts_connections(addr).then_some(())
            },
        );
    }
}

fn read_port(dir: &std::path::Path) -> Option<u16> {
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        if path.extension().is_some_and(|e| e == "ports") {
            let text = std::fs::read_to_string(&path).ok()?;
            let json: serde_json::Value = serde_json::from_str(&text).ok()?;
            let url = json["nats"][0].as_str()?;
            return url.rsplit(':').next()?.parse().ok();
        }
    }
    None
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
