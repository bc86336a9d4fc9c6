//! `GET /api/stock/audit`: every reservation against its order's latest state in the order
//! stream, and every order against its reservation. The books of the two services agree when
//! it reports nothing; the fault suite ends every scenario on that.
//!
//! Both sides are read from their streams, not from any instance's cache: each order's latest
//! state in the order stream and each reservation in `LEDGER`, last per subject (ordered
//! consumers, up to what was pending at the start): O(orders + reservations kept). The audit is
//! a snapshot: work in flight (a release a cancel owes, a commit a shipment owes) shows until it
//! is done.
use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use async_nats::jetstream::{
    self, ErrorCode,
    consumer::{DeliverPolicy, pull::OrderedConfig},
    context::GetStreamErrorKind,
    stream::Stream,
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use shared::events::{LEDGER_RESERVATION_PREFIX, OrderStatus};
use uuid::Uuid;

use crate::{
    domain::Reservation,
    error::Error,
    ledger::{self, Mismatch},
};

/// How many order ids each mismatch kind lists.
const SAMPLE: usize = 10;

/// What `GET /api/stock/audit` answers.
#[derive(Debug, Default, Serialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AuditReport {
    pub reservations_checked: u64,
    pub orders_checked: u64,
    /// Mismatches in all.
    pub mismatches: u64,
    /// Per kind (heldForCancelled, heldForShipped, missingForConfirmed, missingForShipped,
    /// committedNotShipped, heldWithoutOrder): how many, and the first order ids.
    #[cfg_attr(test, schema(value_type = BTreeMap<String, Kind>))]
    pub kinds: BTreeMap<Mismatch, Kind>,
}

#[derive(Debug, Default, Serialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, schema(as = MismatchKind))]
pub struct Kind {
    pub count: u64,
    pub order_ids: Vec<Uuid>,
}

impl AuditReport {
    fn add(&mut self, kind: Mismatch, order_id: Uuid) {
        self.mismatches += 1;
        let entry = self.kinds.entry(kind).or_default();
        entry.count += 1;
        if entry.order_ids.len() < SAMPLE {
            entry.order_ids.push(order_id);
        }
    }
}

/// Compares the ledger with the order stream `stream`. Closed reservations older than
/// `retention` may have been compacted (zero: nothing is compacted).
pub async fn audit(
    js: &jetstream::Context,
    stream: &str,
    ledger_stream: &Stream,
    retention: Duration,
) -> Result<AuditReport, Error> {
    let horizon = (!retention.is_zero())
        .then(|| Utc::now() - chrono::Duration::from_std(retention).unwrap_or_default());
    let mut orders = latest_states(js, stream).await?;
    let mut report = AuditReport {
        orders_checked: orders.len() as u64,
        ..Default::default()
    };
    let mut reservations = Vec::new();
    last_per_subject(
        ledger_stream,
        &format!("{LEDGER_RESERVATION_PREFIX}>"),
        |m| {
            let id = m.subject.strip_prefix(LEDGER_RESERVATION_PREFIX);
            let id = id.and_then(|id| Uuid::parse_str(id).ok());
            // Undecodable messages are the cache's poison; the audit skips them too.
            if let (Some(id), Ok(r)) = (id, serde_json::from_slice::<Reservation>(&m.payload)) {
                reservations.push((id, r.status));
            }
        },
    )
    .await?;
    reservations.sort_unstable_by_key(|(id, _)| *id);
    for (order_id, status) in reservations {
        report.reservations_checked += 1;
        let kind = match orders.remove(&order_id) {
            Some((order, _)) => ledger::mismatch(order, Some(status)),
            None => ledger::orphan(status),
        };
        if let Some(kind) = kind {
            report.add(kind, order_id);
        }
    }
    // Orders with no reservation at all.
    let mut rest: Vec<_> = orders.into_iter().collect();
    rest.sort_unstable_by_key(|(id, _)| *id);
    for (order_id, (status, updated_at)) in rest {
        // A shipped order's committed reservation is compacted once past retention.
        let compacted = status == OrderStatus::Shipped && horizon.is_some_and(|h| updated_at < h);
        if compacted {
            continue;
        }
        if let Some(kind) = ledger::mismatch(status, None) {
            report.add(kind, order_id);
        }
    }
    Ok(report)
}

/// Every order's latest status and its time.
async fn latest_states(
    js: &jetstream::Context,
    stream: &str,
) -> Result<HashMap<Uuid, (OrderStatus, DateTime<Utc>)>, Error> {
    let stream = match js.get_stream(stream).await {
        Ok(stream) => stream,
        // No order stream yet (order-svc never started): no orders.
        Err(e)
            if matches!(e.kind(), GetStreamErrorKind::JetStream(ref j)
                if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
        {
            return Ok(HashMap::new());
        }
        Err(e) => return Err(Error::OrdersUnavailable(e.to_string())),
    };
    let mut states = HashMap::new();
    // Each order's latest state (ORDERS keeps history): O(orders).
    last_per_subject(&stream, ">", |m| {
        // A message that is not an order's state is every reader's poison; the audit skips it too.
        if let Ok(event) = shared::events::OrderEvent::decode(&m.subject, &m.payload) {
            states.insert(event.order_id, (event.status, event.updated_at));
        }
    })
    .await?;
    Ok(states)
}

/// Calls `each` with the last message of every subject matching `filter`, in stream order, up to
/// what was there when it started.
async fn last_per_subject(
    stream: &Stream,
    filter: &str,
    mut each: impl FnMut(&jetstream::Message),
) -> Result<(), Error> {
    let unavailable = |e: &dyn std::fmt::Display| Error::OrdersUnavailable(e.to_string());
    let mut consumer = stream
        .create_consumer(OrderedConfig {
            name: Some(format!("product-svc-audit-{}", Uuid::new_v4().simple())),
            deliver_policy: DeliverPolicy::LastPerSubject,
            filter_subject: filter.into(),
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(&e))?;
    if consumer
        .info()
        .await
        .map_err(|e| unavailable(&e))?
        .num_pending
        == 0
    {
        return Ok(());
    }
    let mut messages = consumer.messages().await.map_err(|e| unavailable(&e))?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| unavailable(&e))?;
        let pending = message.info().map_err(|e| unavailable(&e))?.pending;
        each(&message);
        if pending == 0 {
            break;
        }
    }
    Ok(())
}
