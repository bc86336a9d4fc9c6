//! The delivery client: hyper's pooled HTTP/1.1 client and rustls with the system's roots,
//! the parts order-svc already carries for gRPC, instead of a general-purpose HTTP client
//! (reqwest was ~300 KB of the binary for the one POST below; BENCHMARKS.md, "Footprint,
//! session 8"). It does only what a delivery needs: no redirects, no proxies, no cookies, the
//! attempt timeout, and, unless private addresses are allowed, the SSRF guard on every address
//! it connects to: an IP literal in the URL is checked before the request, names are resolved
//! through a resolver that drops refused addresses.
use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes};
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{
        Client,
        connect::{HttpConnector, dns::Name},
    },
    rt::TokioExecutor,
};
use rustls::{ClientConfig, RootCertStore};
use url::Url;

use super::guard;

/// Per-attempt timeout of a delivery.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Response bodies are read (for connection reuse) up to this much, then dropped.
const MAX_RESPONSE: usize = 64 << 10;

const USER_AGENT: &str = concat!("eshop-order-svc/", env!("CARGO_PKG_VERSION"));

/// One POST's headers besides the content type and user agent (`webhook-id`, ...).
pub type Headers<'a> = [(&'static str, &'a str)];

#[derive(Clone)]
pub struct DeliveryClient {
    client: Client<HttpsConnector<HttpConnector<Resolver>>, Full<Bytes>>,
    allow_private: bool,
}

impl DeliveryClient {
    /// Loads the system's TLS roots. A machine without any (a minimal image) still delivers
    /// to `http://` hooks; `https://` ones then fail their handshake, and this says why.
    pub fn new(allow_private: bool) -> Self {
        let mut http = HttpConnector::new_with_resolver(Resolver { allow_private });
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(ATTEMPT_TIMEOUT));
        let tls = ClientConfig::builder()
            .with_native_roots()
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "No TLS roots found on this machine: webhooks to https:// URLs will fail their handshake.");
                ClientConfig::builder().with_root_certificates(RootCertStore::empty())
            })
            .with_no_client_auth();
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Self {
            client,
            allow_private,
        }
    }

    /// POSTs a JSON body within the attempt timeout: the receiver's status code, or why there
    /// was none.
    pub async fn post_json(
        &self,
        url: &Url,
        headers: &Headers<'_>,
        body: Bytes,
    ) -> Result<u16, String> {
        if let Some(ip) =
            guard::literal_ip(url).filter(|ip| !self.allow_private && guard::refused(*ip))
        {
            return Err(format!(
                "{ip} is a loopback, private, link-local or reserved address"
            ));
        }
        let mut request = Request::post(url.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, USER_AGENT);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| format!("the request could not be built: {e}"))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| shared::telemetry::error_chain(&e))?;
            let code = response.status().as_u16();
            drain(response.into_body()).await;
            Ok(code)
        };
        tokio::time::timeout(ATTEMPT_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()))?
    }
}

/// Reads what the receiver sent, up to `MAX_RESPONSE` (so the connection can be reused).
async fn drain<B: hyper::body::Body + Unpin>(mut body: B) {
    let mut read = 0;
    while let Some(Ok(frame)) = body.frame().await {
        read += frame.data_ref().map_or(0, |data| data.remaining());
        if read > MAX_RESPONSE {
            break;
        }
    }
}

/// Resolves names; unless private addresses are allowed, keeps only the addresses a hook may
/// reach (a name that resolves only to refused ones fails the attempt).
#[derive(Clone)]
struct Resolver {
    allow_private: bool,
}

type Resolving =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, String>> + Send>>;

impl tower::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = String;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
                .await
                .map_err(|e| format!("{host} could not be resolved: {e}"))?
                .collect();
            if all.is_empty() {
                return Err(format!("{host} resolves to no address"));
            }
            let allowed: Vec<SocketAddr> = all
                .into_iter()
                .filter(|a| allow_private || !guard::refused(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(format!(
                    "{host} resolves only to loopback, private, link-local or reserved addresses"
                ));
            }
            Ok(allowed.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    /// A loopback receiver that answers its first connection with `reply` (after the request's
    /// head if `read_first`) and returns what it read.
    async fn receiver(
        reply: &'static [u8],
        read_first: bool,
    ) -> (Url, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/hook", listener.local_addr().unwrap())).unwrap();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while read_first && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            socket.write_all(reply).await.unwrap();
            String::from_utf8_lossy(&head).to_lowercase()
        });
        (url, task)
    }

    #[tokio::test]
    async fn posts_json_with_the_headers_and_returns_the_status() {
        let (url, request) = receiver(b"HTTP/1.1 204 No Content\r\n\r\n", true).await;
        let client = DeliveryClient::new(true);
        let status = client
            .post_json(&url, &[("webhook-id", "msg_1")], Bytes::from_static(b"{}"))
            .await;
        assert_eq!(status, Ok(204));
        let head = request.await.unwrap();
        assert!(head.starts_with("post /hook http/1.1"), "{head}");
        for line in [
            "content-type: application/json",
            "webhook-id: msg_1",
            "user-agent: eshop-order-svc/",
        ] {
            assert!(head.contains(line), "{line} in {head}");
        }
    }

    #[tokio::test]
    async fn an_https_url_is_never_sent_in_clear_text() {
        // A plain-HTTP receiver behind an https:// URL: the TLS handshake fails, no request
        // is written in clear text and no status is made up.
        let (url, _request) = receiver(b"HTTP/1.1 200 OK\r\n\r\n", false).await;
        let https = Url::parse(&url.as_str().replacen("http://", "https://", 1)).unwrap();
        let sent = DeliveryClient::new(true)
            .post_json(&https, &[], Bytes::from_static(b"{}"))
            .await;
        assert!(sent.is_err(), "{sent:?}");
    }
}
