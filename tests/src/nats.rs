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
    /// The config file (absolute).
    config: PathBuf,
}

impl NatsServer {
    /// Starts a server on a random port (`-p -1`) and waits until it accepts connections.
    pub fn start() -> Self {
        Self::start_with("test.conf")
    }

    /// `start` with another config under `nats/` (e.g. `test-sync-always.conf`).
    pub fn start_with(config: &'static str) -> Self {
        Self::start_config(workspace_root().join("nats").join(config))
    }

    /// `start` with a config file anywhere (tests that generate one, e.g. with a leaf remote).
    pub fn start_config(config: PathBuf) -> Self {
        let mut dir = tempfile::Builder::new()
            .prefix("eshop-nats-")
            .tempdir()
            .expect("tempdir");
        if std::env::var_os("ESHOP_KEEP_TEST_DIRS").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping nats dir {}", dir.path().display());
        }
        let mut server = Self {
            child: None,
            dir,
            port: 0,
            config,
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
        let config = self.config.clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats.log"))
            .expect("log");
        let port = port.map(|p| p.to_string()).unwrap_or_else(|| "-1".into());
        let child = Command::new("nats-server")
            // Paths inside configs (TLS fixtures) are relative to the repository root.
            .current_dir(workspace_root())
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

/// Three `nats-server`s in one JetStream cluster on loopback: private store dirs, client and
/// route ports picked free at start. What `just cluster` runs, with test ports.
pub struct NatsCluster {
    dir: TempDir,
    nodes: Vec<ClusterNode>,
    /// The config every node starts from (under `nats/`).
    config: &'static str,
}

struct ClusterNode {
    name: String,
    port: u16,
    route_port: u16,
    child: Option<Child>,
}

impl NatsCluster {
    pub fn start() -> Self {
        Self::start_with("test.conf")
    }

    /// `start` with another config under `nats/` for every node (e.g. `test-sync-always.conf`).
    pub fn start_with(config: &'static str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("eshop-nats-cluster-")
            .tempdir()
            .expect("tempdir");
        let nodes = (1..=3)
            .map(|n| ClusterNode {
                name: format!("n{n}"),
                port: crate::free_port(),
                route_port: crate::free_port(),
                child: None,
            })
            .collect();
        let mut cluster = Self { dir, nodes, config };
        for i in 0..3 {
            cluster.spawn(i);
        }
        for i in 0..3 {
            cluster.wait_accepting(i);
        }
        cluster
    }

    /// Every node's URL, comma-separated (what `NATS_URL` takes).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILL the node with this server name (as JetStream reports it, e.g. a stream leader).
    pub fn kill(&mut self, name: &str) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node named {name}"));
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed node again with its store.
    pub fn start_again(&mut self, name: &str) {
        let i = self
            .nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node named {name}"));
        assert!(self.nodes[i].child.is_none(), "{name} still running");
        self.spawn(i);
        self.wait_accepting(i);
    }

    fn spawn(&mut self, i: usize) {
        let routes = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| format!("nats://127.0.0.1:{}", n.route_port))
            .collect::<Vec<_>>()
            .join(",");
        let node = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", node.name)))
            .expect("log");
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(workspace_root().join("nats").join(self.config))
            .args(["-a", "127.0.0.1", "-p", &node.port.to_string(), "-js"])
            .args(["-n", &node.name, "--cluster_name", "eshop-test"])
            .arg("--cluster")
            .arg(format!("nats://127.0.0.1:{}", node.route_port))
            .arg("--routes")
            .arg(routes)
            .arg("-sd")
            .arg(self.dir.path().join(&node.name))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("`nats-server` must be on PATH (run `just setup`)");
        self.nodes[i].child = Some(child);
    }

    fn wait_accepting(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let addr: SocketAddr = format!("127.0.0.1:{}", node.port).parse().expect("addr");
        let child = node.child.as_mut().expect("spawned");
        wait_for_blocking(
            "a cluster node to accept connections",
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

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
