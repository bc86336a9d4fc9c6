//! NATS connection options shared by both services: several seed URLs, retry on the initial
//! connect (edge boxes boot in any order), unlimited reconnects, and a client name.
use std::time::Duration;

use async_nats::{Client, ConnectOptions, jetstream};

/// Splits `nats://a:4222,nats://b:4222` into URLs (async-nats does not split lists itself).
pub fn split_urls(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Connects in the background: returns at once even when no server is reachable yet.
pub async fn connect(urls: &str, name: &str) -> Result<Client, async_nats::ConnectError> {
    let urls = split_urls(urls);
    let name_owned = name.to_owned();
    ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
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
                    other => tracing::debug!(client = %name, event = %other, "NATS event."),
                }
            }
        })
        .connect(urls.as_slice())
        .await
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
