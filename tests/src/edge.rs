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

    /// Waits until the site reaches the hub's JetStream across the leaf link.
    pub async fn wait_linked(&self, timeout: Duration) {
        let client = async_nats::connect(self.site.url())
            .await
            .expect("site NATS");
        let hub = async_nats::jetstream::with_domain(client, "hub");
        wait_for("the leaf link to the hub", timeout, || async {
            hub.query_account().await.ok().map(|_| ())
        })
        .await;
    }
}
