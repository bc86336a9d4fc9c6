//! NATS connection options shared by both services: several seed URLs, retry on the initial
//! connect (edge boxes boot in any order), unlimited reconnects, a client name, and the
//! credentials and TLS settings of a secured server.
//!
//! Each client pings every 5 s: async-nats drops a connection after two unanswered pings, so a
//! hung or partitioned server is noticed within ~15 s (the default interval is a minute), and
//! readiness follows. Each client's inbox prefix is `_INBOX.<client name>`, so a least-privilege
//! user may subscribe to its own replies only (`nats/secure/permissions.conf`).
//!
//! A server that is merely unreachable is retried in the background, but one that **refuses**
//! the credentials or whose certificate is not trusted stops the start-up with one clear message
//! (within 10 s): retrying a wrong password forever would hide the mistake.
use std::{path::PathBuf, time::Duration};

use async_nats::{Client, ConnectError, ConnectErrorKind, ConnectOptions, jetstream};

/// Why a service could not set up its NATS client; each keeps its cause.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The server refused this client (credentials, authorization, TLS): not retried.
    #[error(
        "NATS at {urls} refused this client (check --nats-user/--nats-password, --nats-token, \
         --nats-creds, --nats-nkey, --nats-tls-*)"
    )]
    Refused {
        urls: String,
        #[source]
        source: ConnectError,
    },
    #[error("invalid NATS options")]
    Options(#[source] ConnectError),
    #[error("cannot read the {what} {}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "--nats-creds and --nats-nkey need a build with the nats-nkeys feature \
         (cargo build --release --features product-svc/nats-nkeys,order-svc/nats-nkeys)"
    )]
    NkeysUnsupported,
}

/// How to authenticate to NATS and whether to use TLS (flags and env of both services).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NatsAuth {
    /// NATS credentials file (JWT + nkey seed).
    #[arg(long, env = "NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// File holding an nkey seed (SU...).
    #[arg(long, env = "NATS_NKEY")]
    pub nats_nkey: Option<PathBuf>,
    /// NATS user (with --nats-password).
    #[arg(long, env = "NATS_USER", requires = "nats_password")]
    pub nats_user: Option<String>,
    #[arg(
        long,
        env = "NATS_PASSWORD",
        requires = "nats_user",
        hide_env_values = true
    )]
    pub nats_password: Option<String>,
    /// NATS token.
    #[arg(long, env = "NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    /// CA certificate (PEM) that signed the server's certificate; turns TLS on.
    #[arg(long, env = "NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (with --nats-tls-key).
    #[arg(long, env = "NATS_TLS_CERT", requires = "nats_tls_key")]
    pub nats_tls_cert: Option<PathBuf>,
    #[arg(long, env = "NATS_TLS_KEY", requires = "nats_tls_cert")]
    pub nats_tls_key: Option<PathBuf>,
}

/// Splits `nats://a:4222,nats://b:4222` into URLs (async-nats does not split lists itself).
pub fn split_urls(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// How often the client pings the server; two unanswered pings drop the connection.
pub const PING_INTERVAL: Duration = Duration::from_secs(5);

/// The inbox prefix of a client named `name`: its replies and pull deliveries arrive below it.
pub fn inbox_prefix(name: &str) -> String {
    format!("_INBOX.{name}")
}

/// How long start-up waits for the first, direct connection attempt.
const FIRST_ATTEMPT: Duration = Duration::from_secs(10);

/// Connects: one direct attempt first (bounded by 10 s), whose error tells a refused client
/// (credentials, authorization, TLS) from an unreachable server; then, if the server was merely
/// unreachable, a client that keeps retrying in the background. Refused is an error.
pub async fn connect(urls: &str, name: &str, auth: &NatsAuth) -> Result<Client, NatsError> {
    let urls = split_urls(urls);
    let first = tokio::time::timeout(
        FIRST_ATTEMPT,
        options(name, auth, false).await?.connect(urls.as_slice()),
    )
    .await;
    match first {
        Ok(Ok(client)) => return Ok(client),
        Ok(Err(error)) => {
            let text = crate::telemetry::error_chain(&error);
            let refused = matches!(
                error.kind(),
                ConnectErrorKind::Authentication
                    | ConnectErrorKind::AuthorizationViolation
                    | ConnectErrorKind::Tls
            ) || ["certificate", "tls", "handshake", "alert"]
                .iter()
                .any(|word| text.to_lowercase().contains(word));
            if refused {
                return Err(NatsError::Refused {
                    urls: urls.join(","),
                    source: error,
                });
            }
            tracing::warn!(client = %name, error = %text, "NATS is unreachable; retrying in the background.");
        }
        Err(_) => {
            tracing::warn!(client = %name, "NATS did not answer within 10 s; retrying in the background.")
        }
    }
    options(name, auth, true)
        .await?
        .connect(urls.as_slice())
        .await
        .map_err(NatsError::Options)
}

/// Client options: name, logging of connection events, unlimited reconnects, credentials and
/// TLS; `retry` makes the initial connect retry in the background too.
async fn options(name: &str, auth: &NatsAuth, retry: bool) -> Result<ConnectOptions, NatsError> {
    let name_owned = name.to_owned();
    let mut options = ConnectOptions::new()
        .name(name)
        .custom_inbox_prefix(inbox_prefix(name))
        .ping_interval(PING_INTERVAL)
        .connection_timeout(Duration::from_secs(2))
        .event_callback(move |event| {
            let name = name_owned.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!(client = %name, "Connected to NATS.")
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(client = %name, "Disconnected from NATS.")
                    }
                    async_nats::Event::ClientError(error) => {
                        tracing::warn!(client = %name, error = %error, "NATS connection attempt failed.")
                    }
                    other => tracing::debug!(client = %name, event = %other, "NATS event."),
                }
            }
        });
    if retry {
        options = options.retry_on_initial_connect();
    }
    options = with_nkeys(options, auth).await?;
    if let (Some(user), Some(password)) = (&auth.nats_user, &auth.nats_password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &auth.nats_token {
        options = options.token(token.clone());
    }
    if let Some(ca) = &auth.nats_tls_ca {
        options = options.require_tls(true).add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&auth.nats_tls_cert, &auth.nats_tls_key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(options)
}

/// Credentials files and nkey seeds (the `nkeys` feature).
#[cfg(feature = "nkeys")]
async fn with_nkeys(
    mut options: ConnectOptions,
    auth: &NatsAuth,
) -> Result<ConnectOptions, NatsError> {
    if let Some(path) = &auth.nats_creds {
        options = options
            .credentials_file(path)
            .await
            .map_err(|source| NatsError::Read {
                what: "NATS credentials",
                path: path.clone(),
                source,
            })?;
    }
    if let Some(path) = &auth.nats_nkey {
        let seed = std::fs::read_to_string(path).map_err(|source| NatsError::Read {
            what: "nkey seed",
            path: path.clone(),
            source,
        })?;
        options = options.nkey(seed.trim().to_owned());
    }
    Ok(options)
}

/// Without the `nkeys` feature, credentials files and nkey seeds are refused with a clear message.
#[cfg(not(feature = "nkeys"))]
async fn with_nkeys(options: ConnectOptions, auth: &NatsAuth) -> Result<ConnectOptions, NatsError> {
    if auth.nats_creds.is_some() || auth.nats_nkey.is_some() {
        return Err(NatsError::NkeysUnsupported);
    }
    Ok(options)
}

/// A JetStream context with a bounded API timeout and a bounded number of pending acks.
pub fn jetstream(client: Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        // A publish whose ack is lost (server killed) fails after 5 s and is retried with the
        // same Nats-Msg-Id; the default would hold the relay for 30 s.
        .ack_timeout(Duration::from_secs(5))
        .max_ack_inflight(2_000)
        .backpressure_on_inflight(true)
        .build(client)
}

pub fn is_connected(client: &Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}
