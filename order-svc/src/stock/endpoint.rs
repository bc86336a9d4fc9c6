//! One product-svc instance as the client sees it: its URL, its lazily connected channel and its
//! own circuit breaker, so a dead instance's failures never open the breaker of a healthy one
//! (tonic's balanced channel would keep a dead endpoint in rotation and share one view).
use std::time::Duration;

use proto::product_service_client::ProductServiceClient;
use tonic::transport::Channel;

use super::breaker::Breaker;

pub(super) struct Endpoint {
    pub(super) url: String,
    pub(super) client: ProductServiceClient<Channel>,
    pub(super) breaker: Breaker,
}

impl Endpoint {
    /// Never fails on an unreachable product-svc: the channel connects lazily. Fails on a URL or
    /// CA that cannot work.
    pub(super) fn connect(
        url: &str,
        tls_ca: Option<&[u8]>,
        attempt_timeout: Duration,
        breaker: Breaker,
    ) -> anyhow::Result<Self> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())?;
        if let Some(ca) = tls_ca {
            anyhow::ensure!(
                String::from_utf8_lossy(ca).contains("-----BEGIN CERTIFICATE-----"),
                "the gRPC TLS CA file holds no PEM certificate"
            );
            endpoint = endpoint.tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
            )?;
        }
        let channel = endpoint
            .connect_timeout(attempt_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        Ok(Self {
            url: url.to_owned(),
            client: ProductServiceClient::new(channel),
            breaker,
        })
    }
}
