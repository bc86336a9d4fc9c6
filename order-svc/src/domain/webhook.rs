//! The rules of webhook registrations and deliveries, free of I/O: which events a hook may name,
//! which customer it may be bound to by which caller, which order states it takes, and the retry
//! schedule. The plumbing (the registration stream, signing, HTTP) is in `crate::webhooks`.
use std::time::Duration;

use shared::events::OrderEventType;
use shared::fields::FieldErrors;
use uuid::Uuid;

/// Every event a hook may name: the order event types, as the schema enumerates them.
pub const EVENT_TYPES: [OrderEventType; 7] = [
    OrderEventType::OrderPlaced,
    OrderEventType::OrderConfirmed,
    OrderEventType::OrderRejected,
    OrderEventType::OrderCancelled,
    OrderEventType::OrderShipped,
    OrderEventType::OrderStockReleased,
    OrderEventType::OrderStockCommitted,
];

/// The longest wait between two attempts of one delivery.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Longest URL a hook may have.
pub const MAX_URL_LEN: usize = 2048;

/// A registration as asked for (every field optional, so each missing one is named).
#[derive(Debug, Default, Clone)]
pub struct HookDraft {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub customer_id: Option<String>,
}

/// Who registers: the parts of the API key that decide whose orders it may hook.
#[derive(Debug, Clone, Copy)]
pub struct Registrar {
    /// `orders:admin`: any customer, or every order.
    pub admin: bool,
    /// A key bound to a customer registers for that customer only.
    pub bound_to: Option<Uuid>,
}

/// What a registration takes: its events (in the order given, without repeats) and its customer
/// (`None`: every customer's orders). The URL is checked by the caller (it needs a URL parser and
/// the address rules).
#[derive(Debug, Clone, PartialEq)]
pub struct HookScope {
    pub events: Vec<OrderEventType>,
    pub customer: Option<Uuid>,
}

/// Why a registration is refused.
#[derive(Debug, PartialEq)]
pub enum HookRefused {
    Invalid(FieldErrors),
    /// The key may not register for this customer (or for all); the message says why.
    Forbidden(String),
}

pub fn parse_event(name: &str) -> Option<OrderEventType> {
    EVENT_TYPES.into_iter().find(|e| e.as_str() == name)
}

/// Checks the events and the customer of a registration against the caller's key. A key bound
/// to a customer that names none registers for its own customer.
pub fn validate_hook(draft: &HookDraft, by: Registrar) -> Result<HookScope, HookRefused> {
    let mut errors = FieldErrors::new();
    let mut events = Vec::new();
    match &draft.events {
        None => errors.add("events", "events is required."),
        Some(names) if names.is_empty() => errors.add("events", "Name at least one event."),
        Some(names) => {
            for (i, name) in names.iter().enumerate() {
                match parse_event(name) {
                    Some(e) if !events.contains(&e) => events.push(e),
                    Some(_) => {}
                    None => errors.add(
                        format!("events[{i}]"),
                        format!(
                            "{name:?} is not an order event; one of {}.",
                            EVENT_TYPES.map(|e| e.as_str()).join(", ")
                        ),
                    ),
                }
            }
        }
    }
    let customer =
        crate::domain::optional_id("customerId", draft.customer_id.as_deref(), &mut errors);
    if draft.url.is_none() {
        errors.add("url", "url is required.");
    }
    if !errors.is_empty() {
        return Err(HookRefused::Invalid(errors));
    }
    let customer = match (by.bound_to, customer) {
        (Some(bound), None) => Some(bound),
        (Some(bound), Some(asked)) if asked != bound => {
            return Err(HookRefused::Forbidden(format!(
                "This API key acts for customer {bound} only."
            )));
        }
        (_, None) if !by.admin => {
            return Err(HookRefused::Forbidden(
                "A hook for every customer's orders needs orders:admin; name a customerId.".into(),
            ));
        }
        (_, customer) => customer,
    };
    Ok(HookScope { events, customer })
}

impl HookScope {
    /// Whether an order state of `customer` produced by `event` is delivered to this hook.
    pub fn takes(&self, event: OrderEventType, customer: Uuid) -> bool {
        self.events.contains(&event) && self.customer.is_none_or(|c| c == customer)
    }
}

/// How long to wait after failed attempt number `attempt` (1-based): `initial` doubling, capped
/// at `MAX_BACKOFF`.
pub fn retry_delay(attempt: u32, initial: Duration) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(20);
    initial.saturating_mul(factor).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(events: &[&str], customer: Option<Uuid>) -> HookDraft {
        HookDraft {
            url: Some("https://example.test/hook".into()),
            events: Some(events.iter().map(|e| e.to_string()).collect()),
            customer_id: customer.map(|c| c.to_string()),
        }
    }
    const ADMIN: Registrar = Registrar {
        admin: true,
        bound_to: None,
    };

    #[test]
    fn events_are_the_order_event_types_once_each_in_the_order_given() {
        let scope = validate_hook(
            &draft(&["OrderShipped", "OrderPlaced", "OrderShipped"], None),
            ADMIN,
        )
        .unwrap();
        assert_eq!(
            scope.events,
            vec![OrderEventType::OrderShipped, OrderEventType::OrderPlaced]
        );
        let Err(HookRefused::Invalid(errors)) =
            validate_hook(&draft(&["OrderPlaced", "OrderLost"], None), ADMIN)
        else {
            panic!("an unknown event is refused");
        };
        assert!(errors.0.contains_key("events[1]"), "{errors:?}");
        assert!(matches!(
            validate_hook(&draft(&[], None), ADMIN),
            Err(HookRefused::Invalid(_))
        ));
        for e in EVENT_TYPES {
            assert_eq!(parse_event(e.as_str()), Some(e));
        }
    }

    #[test]
    fn missing_fields_and_a_nil_customer_are_named() {
        let Err(HookRefused::Invalid(errors)) = validate_hook(&HookDraft::default(), ADMIN) else {
            panic!("refused");
        };
        assert!(errors.0.contains_key("url") && errors.0.contains_key("events"));
        let Err(HookRefused::Invalid(errors)) =
            validate_hook(&draft(&["OrderPlaced"], Some(Uuid::nil())), ADMIN)
        else {
            panic!("refused");
        };
        assert!(errors.0.contains_key("customerId"));
    }

    #[test]
    fn only_admin_hooks_every_customer_and_a_bound_key_only_its_own() {
        let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let writer = Registrar {
            admin: false,
            bound_to: None,
        };
        let anns_key = Registrar {
            admin: false,
            bound_to: Some(ann),
        };
        assert_eq!(
            validate_hook(&draft(&["OrderPlaced"], None), ADMIN)
                .unwrap()
                .customer,
            None
        );
        assert!(matches!(
            validate_hook(&draft(&["OrderPlaced"], None), writer),
            Err(HookRefused::Forbidden(_))
        ));
        assert_eq!(
            validate_hook(&draft(&["OrderPlaced"], Some(bob)), writer)
                .unwrap()
                .customer,
            Some(bob)
        );
        assert_eq!(
            validate_hook(&draft(&["OrderPlaced"], None), anns_key)
                .unwrap()
                .customer,
            Some(ann)
        );
        assert!(matches!(
            validate_hook(&draft(&["OrderPlaced"], Some(bob)), anns_key),
            Err(HookRefused::Forbidden(_))
        ));
    }

    #[test]
    fn a_hook_takes_its_events_of_its_customer() {
        let ann = Uuid::new_v4();
        let scope = HookScope {
            events: vec![OrderEventType::OrderConfirmed],
            customer: Some(ann),
        };
        assert!(scope.takes(OrderEventType::OrderConfirmed, ann));
        assert!(!scope.takes(OrderEventType::OrderPlaced, ann));
        assert!(!scope.takes(OrderEventType::OrderConfirmed, Uuid::new_v4()));
        let everyone = HookScope {
            customer: None,
            ..scope
        };
        assert!(everyone.takes(OrderEventType::OrderConfirmed, Uuid::new_v4()));
    }

    #[test]
    fn retries_back_off_exponentially_capped_at_a_minute() {
        let s = Duration::from_secs(1);
        let waits: Vec<u64> = (1..=9).map(|a| retry_delay(a, s).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry_delay(1000, s), MAX_BACKOFF);
    }
}
