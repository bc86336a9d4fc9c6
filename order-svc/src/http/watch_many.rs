//! Watching many orders (Server-Sent Events): every new state of a customer's orders, or of all
//! orders for an `orders:admin` key, in stream order. Each event's `id` is the order stream's
//! sequence, a resumable position: `Last-Event-ID` sends exactly what came after it
//! (`crate::tail` says how no message falls between the catch-up read and the live feed).
use std::time::Duration;

use axum::{
    extract::{RawQuery, State},
    http::HeaderMap,
    response::{Response, sse::Event},
};
use shared::auth::Caller;
use tokio::sync::{broadcast, broadcast::error::RecvError, mpsc};
use uuid::Uuid;

use super::{
    AppState, customer_scope,
    list::customer_param,
    need,
    watch::{Open, event_of, event_stream, last_event_id},
};
use crate::{
    domain::Order,
    error::Error,
    tail::{OrderTail, Tailed},
};

/// Watch every new state of a customer's orders (all orders, for an `orders:admin` key that
/// names no customer), in the order the order stream stored them.
#[cfg_attr(test, utoipa::path(get, path = "/api/orders/watch", tag = "orders", operation_id = "watchOrders",
    params(
        ("customerId" = Option<String>, Query, format = Uuid, pattern = r"^(?!0{8}-0{4}-0{4}-0{4}-0{12}$)[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "Whose orders (a key bound to a customer: its own, the default); omitted by an orders:admin key: every order"),
        ("Last-Event-ID" = Option<String>, Header, pattern = "^[0-9]{1,19}$",
            description = "Resume after this position (the id of the last event received)"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: `event: <eventType>`, `id: <position>`, `data: <order JSON>`; keep-alive comments every 15 s; ends after --watch-max-secs (resume with Last-Event-ID)", body = String, content_type = "text/event-stream"),
        (status = 400, description = "A malformed customerId or Last-Event-ID", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks orders:read, acts for another customer, or watches every order without orders:admin", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The order stream (NATS) is unavailable", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
    )))]
pub async fn watch_orders(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Error> {
    need(&caller, "orders:read")?;
    let asked = customer_param(query.as_deref().unwrap_or("")).map_err(Error::Validation)?;
    let customer = customer_scope(&caller, asked)?;
    let after = last_event_id(&headers)?;
    let (feed, last) = state.tail.subscribe().await?;
    let (tx, response) = event_stream();
    let watcher = Watcher {
        customer,
        tail: state.tail.clone(),
        tx,
        sent: after.unwrap_or(last),
    };
    tokio::spawn(watcher.run(last, feed, state.stopping.clone(), state.watch_max));
    Ok(response)
}

/// One open watch: sends the states of the watched orders stored after position `sent`.
struct Watcher {
    customer: Option<Uuid>,
    tail: OrderTail,
    tx: mpsc::Sender<Event>,
    /// The last position passed (sent or not watched).
    sent: u64,
}

impl Watcher {
    async fn run(
        mut self,
        last: u64,
        mut feed: broadcast::Receiver<Tailed>,
        stopping: tokio_util::sync::CancellationToken,
        max: Duration,
    ) {
        if self.catch_up(last).await.is_err() {
            return;
        }
        let mut open = Open::new(stopping, max);
        loop {
            let Some(next) = open.next(&mut feed, &self.tx).await else {
                return;
            };
            let sent = match next {
                Ok(tailed) => self.pass(&tailed).await,
                // Missed some while behind the feed: read them from the stream.
                Err(RecvError::Lagged(_)) => match self.tail.subscribe().await {
                    Ok((_, now)) => self.catch_up(now).await,
                    Err(_) => Err(()),
                },
                Err(RecvError::Closed) => return,
            };
            if sent.is_err() {
                return;
            }
        }
    }

    /// Sends what was stored after `sent` up to `until`, read from the stream.
    async fn catch_up(&mut self, until: u64) -> Result<(), ()> {
        let missed = match self.tail.read(self.sent, until).await {
            Ok(missed) => missed,
            Err(error) => {
                tracing::warn!(error = %shared::telemetry::error_chain(&error), "A watch could not read the order stream; it ends (the client resumes).");
                return Err(());
            }
        };
        for tailed in &missed {
            self.pass(tailed).await?;
        }
        self.sent = self.sent.max(until);
        Ok(())
    }

    /// Sends one message if it is newer than the last position and one of the watched orders.
    async fn pass(&mut self, tailed: &Tailed) -> Result<(), ()> {
        if tailed.seq <= self.sent {
            return Ok(());
        }
        self.sent = tailed.seq;
        let Ok(event) = shared::events::OrderEvent::decode(&tailed.subject, &tailed.payload) else {
            return Ok(()); // poison: the projections count it
        };
        if self.customer.is_some_and(|c| c != event.customer_id) {
            return Ok(());
        }
        let order = Order::from_event(&event);
        let sse = event_of(&order, event.event_type, tailed.seq);
        self.tx.send(sse).await.map_err(|_| ())
    }
}
