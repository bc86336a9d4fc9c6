//! Watching one order (Server-Sent Events), so a client never polls blindly: the current state at
//! once, then every new state as this instance's view takes it in. Every watcher of an instance
//! is fed by the view's one change feed (no consumer per watcher); a watcher that falls behind
//! the feed, or sees a version skipped, reads the missing states from the order's history, so
//! it gets every state once and in order. Each event is `event: <eventType>`, `id: <version>`,
//! `data: <the order as GET returns it>`; `Last-Event-ID` resumes after that version. A watch
//! ends after `--watch-max-secs` (the client resumes) and at once when the server stops.
use std::{convert::Infallible, time::Duration};

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use shared::{auth::Caller, events::OrderEventType, fields::FieldErrors};
use tokio::sync::{broadcast::error::RecvError, mpsc};
use uuid::Uuid;

use super::{AppState, body::OrderBody, need, parse_id};
use crate::{domain::Order, error::Error, orders::Orders, view::Change};

/// Keep-alive comments at least this often (proxies close quiet connections).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Watch one order: its current state, then every new state (Server-Sent Events).
#[cfg_attr(test, utoipa::path(get, path = "/api/orders/{id}/watch", tag = "orders", operation_id = "watchOrder",
    params(
        ("id" = String, Path, description = "The order id (a UUID; anything else is unknown)"),
        ("Last-Event-ID" = Option<String>, Header, pattern = "^[0-9]{1,19}$",
            description = "Resume after this version: only later states are sent"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: `event: <eventType>`, `id: <version>`, `data: <order JSON>`; keep-alive comments every 15 s; ends after --watch-max-secs (resume with Last-Event-ID)", body = String, content_type = "text/event-stream"),
        (status = 400, description = "A malformed Last-Event-ID", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks orders:read", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "Unknown order (or another customer's, for a key bound to a customer)", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
    )))]
pub async fn watch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    need(&caller, "orders:read")?;
    let id = parse_id(&id)?;
    let after = last_event_id(&headers)?;
    // Subscribe before reading, so no state falls between the read and the feed.
    let changes = state.orders.changes();
    let states = state.orders.history(id, caller.customer).await?;
    let first: Vec<_> = match after {
        Some(after) => states
            .into_iter()
            .filter(|(o, _)| o.version > after)
            .collect(),
        None => states.into_iter().last().into_iter().collect(),
    };
    let sent = first.last().map(|(o, _)| o.version).or(after).unwrap_or(0);
    let (tx, response) = event_stream();
    let watcher = Watcher {
        id,
        orders: state.orders.clone(),
        tx,
        sent,
    };
    tokio::spawn(watcher.run(first, changes, state.stopping.clone(), state.watch_max));
    Ok(response)
}

/// An SSE response with keep-alives, and where its watcher sends the events.
pub(super) fn event_stream() -> (mpsc::Sender<Event>, Response) {
    let (tx, rx) = mpsc::channel(64);
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), rx))
    });
    let response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    (tx, response)
}

/// `Last-Event-ID`: a version or a position (digits); anything else is a 400 naming the header.
pub(super) fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, Error> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("");
    let version = text
        .parse::<u64>()
        .ok()
        .filter(|_| (1..=19).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit()));
    version.map(Some).ok_or_else(|| {
        let mut errors = FieldErrors::new();
        errors.add(
            "Last-Event-ID",
            "Last-Event-ID must be digits: the id of the last event this watch sent.",
        );
        Error::Validation(errors)
    })
}

/// One open watch: sends states of `id` newer than `sent`, in version order, until the client
/// goes, the server stops or the watch's time is up.
struct Watcher {
    id: Uuid,
    orders: Orders,
    tx: mpsc::Sender<Event>,
    /// The last version sent (or the client's Last-Event-ID).
    sent: u64,
}

impl Watcher {
    async fn run(
        mut self,
        first: Vec<(Order, OrderEventType)>,
        mut changes: tokio::sync::broadcast::Receiver<Change>,
        stopping: tokio_util::sync::CancellationToken,
        max: Duration,
    ) {
        for (order, event) in &first {
            if self
                .tx
                .send(event_of(order, *event, order.version))
                .await
                .is_err()
            {
                return;
            }
        }
        let mut open = Open::new(stopping, max);
        loop {
            let Some(change) = open.next(&mut changes, &self.tx).await else {
                return;
            };
            let caught_up = match change {
                Ok(c) if c.id != self.id || c.version <= self.sent => Ok(()),
                Ok(c) if c.version == self.sent + 1 => self.send_change(&c).await,
                // A skipped version, or states missed while behind the feed: read them.
                Ok(_) | Err(RecvError::Lagged(_)) => self.catch_up().await,
                Err(RecvError::Closed) => return,
            };
            if caught_up.is_err() {
                return;
            }
        }
    }

    async fn send_change(&mut self, change: &Change) -> Result<(), ()> {
        let event: shared::events::OrderEvent =
            serde_json::from_slice(&change.payload).map_err(|_| ())?;
        let order = Order::from_event(&event);
        self.send(&order, event.event_type).await
    }

    /// Sends every state newer than the last one sent, from the order's history.
    async fn catch_up(&mut self) -> Result<(), ()> {
        let states = match self.orders.history(self.id, None).await {
            Ok(states) => states,
            Err(error) => {
                tracing::warn!(order_id = %self.id, error = %shared::telemetry::error_chain(&error), "A watch could not read the order's history; it ends (the client resumes).");
                return Err(());
            }
        };
        let sent = self.sent;
        for (order, event) in states.iter().filter(|(o, _)| o.version > sent) {
            self.send(order, *event).await?;
        }
        Ok(())
    }

    async fn send(&mut self, order: &Order, event: OrderEventType) -> Result<(), ()> {
        self.tx
            .send(event_of(order, event, order.version))
            .await
            .map_err(|_| ())?;
        self.sent = order.version;
        Ok(())
    }
}

/// How long a watch stays open: until the client goes, the server stops or its time is up.
pub(super) struct Open {
    stopping: tokio_util::sync::CancellationToken,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Open {
    pub(super) fn new(stopping: tokio_util::sync::CancellationToken, max: Duration) -> Self {
        Self {
            stopping,
            deadline: Box::pin(tokio::time::sleep(max)),
        }
    }

    /// The feed's next item, or `None` once the watch is over.
    pub(super) async fn next<T: Clone>(
        &mut self,
        feed: &mut tokio::sync::broadcast::Receiver<T>,
        client: &mpsc::Sender<Event>,
    ) -> Option<Result<T, RecvError>> {
        tokio::select! {
            _ = self.stopping.cancelled() => None,
            _ = &mut self.deadline => None,
            _ = client.closed() => None,
            next = feed.recv() => Some(next),
        }
    }
}

/// One SSE event: the order's state, named by its event type, with the given id.
pub(super) fn event_of(order: &Order, event: OrderEventType, id: u64) -> Event {
    Event::default()
        .event(event.as_str())
        .id(id.to_string())
        .json_data(OrderBody::from(order))
        .unwrap_or_else(|_| Event::default().comment("unencodable order"))
}
