//! An edge deployment on loopback, as `nats/edge/` configures it for `just edge`: a hub
//! nats-server (JetStream domain `hub`, a leaf listener), a [`FaultyProxy`] as the uplink, and a
//! site nats-server (domain = the site name, its leaf remote through the proxy). The configs are
//! written per test (ports are random); they carry the same settings as `nats/edge/*.conf`, and
//! the hub does not advertise its leaf URL (`no_advertise`): a leaf adds advertised URLs to its
//! remote's pool and would reconnect around the proxy.
use std::time::Duration;

use tempfile::TempDir;

use crate::{NatsServer, free_port, proxy::FaultyProxy, wait_for};

pub struct EdgeNats {
    pub hub: NatsServer,
    pub site: NatsServer,
    /// The leaf link (site → hub): `set_down(true)` cuts the uplink.
    pub link: FaultyProxy,
    _configs: TempDir,
}

impl EdgeNats {
    pub async fn start(site: &str) -> Self {
        let configs = tempfile::Builder::new()
            .prefix("eshop-edge-conf-")
            .tempdir()
            .expect("tempdir");
        let leaf_port = free_port();
        let limits = "max_memory_store: 64MB\n  max_file_store: 2GB";
        let hub_conf = configs.path().join("hub.conf");
        std::fs::write(
            &hub_conf,
            format!(
                "jetstream {{\n  domain: hub\n  {limits}\n}}\nleafnodes {{\n  listen: \"127.0.0.1:{leaf_port}\"\n  no_advertise: true\n}}\n"
            ),
        )
        .expect("hub config");
        let hub = NatsServer::start_config(hub_conf);
        let link =
            FaultyProxy::start(format!("127.0.0.1:{leaf_port}").parse().expect("addr")).await;
        let site_conf = configs.path().join(format!("{site}.conf"));
        std::fs::write(
            &site_conf,
            format!(
                "jetstream {{\n  domain: {site}\n  {limits}\n}}\nleafnodes {{\n  reconnect: 1\n  remotes: [ {{ url: \"nats-leaf://{}\" }} ]\n}}\n",
                link.addr
            ),
        )
        .expect("site config");
        let site = NatsServer::start_config(site_conf);
        let edge = Self {
            hub,
            site,
            link,
            _configs: configs,
        };
        edge.wait_linked(Duration::from_secs(30)).await;
        edge
    }

    /// The secured deployment of `just edge --secure`: the committed
    /// `nats/edge/{hub,edge1}-secure.conf`, with test ports and stores, the test certificates
    /// (`tests/fixtures/tls`) and the test passwords (`test-<user>-password`), so a test runs
    /// the very users, permissions and TLS settings the recipe runs.
    pub async fn start_secure() -> Self {
        let configs = tempfile::Builder::new()
            .prefix("eshop-edge-secure-")
            .tempdir()
            .expect("tempdir");
        let leaf_port = free_port();
        let root = crate::workspace_root();
        // The layout of nats/ (includes are relative to the including file).
        for folder in ["edge", "secure"] {
            std::fs::create_dir_all(configs.path().join(folder)).expect("config dir");
        }
        for file in ["permissions.conf", "edge1-permissions.conf"] {
            std::fs::copy(
                root.join("nats/secure").join(file),
                configs.path().join("secure").join(file),
            )
            .expect("a permissions file");
        }
        let template = |name: &str, leaf_url: &str| {
            let text = std::fs::read_to_string(root.join("nats/edge").join(name))
                .expect("a committed edge config");
            let text = text
                .lines()
                // Ports and the store come from the harness (`-p`, `-sd`).
                .filter(|l| {
                    let l = l.trim_start();
                    !l.starts_with("http:") && !l.starts_with("store_dir:")
                })
                .collect::<Vec<_>>()
                .join("\n")
                .replace("127.0.0.1:7422", &format!("127.0.0.1:{leaf_port}"))
                .replace("./data/tls/", "tests/fixtures/tls/")
                .replace("$LEAF_URL", &format!("\"{leaf_url}\""));
            let text = ["PRODUCT", "ORDER", "ADMIN", "LEAF"]
                .iter()
                .fold(text, |t, user| {
                    let password = format!("\"test-{}-password\"", user.to_lowercase());
                    t.replace(&format!("${user}_NATS_PASSWORD"), &password)
                });
            let path = configs.path().join("edge").join(name);
            std::fs::write(&path, text).expect("config");
            path
        };
        let hub = NatsServer::start_config(template("hub-secure.conf", ""));
        let link =
            FaultyProxy::start(format!("127.0.0.1:{leaf_port}").parse().expect("addr")).await;
        let leaf_url = format!("nats-leaf://leaf:test-leaf-password@{}", link.addr);
        let site = NatsServer::start_config(template("edge1-secure.conf", &leaf_url));
        let edge = Self {
            hub,
            site,
            link,
            _configs: configs,
        };
        let admin = async_nats::ConnectOptions::with_user_and_password(
            "admin".into(),
            "test-admin-password".into(),
        )
        .add_root_certificates(crate::tls_fixture("ca.pem"))
        .require_tls(true)
        .connect(edge.site.url())
        .await
        .expect("the site's admin user over TLS");
        until_linked(admin, Duration::from_secs(30)).await;
        edge
    }

    /// Waits until the site reaches the hub's JetStream across the leaf link.
    pub async fn wait_linked(&self, timeout: Duration) {
        let client = async_nats::connect(self.site.url())
            .await
            .expect("site NATS");
        until_linked(client, timeout).await;
    }
}

/// Waits until `client` (on a site) reaches the hub's JetStream across the leaf link.
async fn until_linked(client: async_nats::Client, timeout: Duration) {
    let hub = async_nats::jetstream::with_domain(client, "hub");
    wait_for("the leaf link to the hub", timeout, || async {
        hub.query_account().await.ok().map(|_| ())
    })
    .await;
}
