//! Order rules, free of I/O: request validation, pricing from the snapshot, the order state
//! machine, and the version guard of the product snapshot.
mod order;
mod request;
mod snapshot;
#[cfg(test)]
mod tests;
mod webhook;

// What the rest of the crate uses, by name (the modules' other items are theirs).
pub use order::{Change, InvalidTransition, Order, OrderItem, created_millis, id_millis, order_id};
pub use request::{
    LineDraft, OrderDraft, OrderRequest, Refused, optional_id, price_order, validate_create,
    validate_reason,
};
pub use shared::events::OrderStatus;
pub use snapshot::{ProductView, should_apply};
pub use webhook::{
    HookDraft, HookRefused, HookScope, MAX_URL_LEN, Registrar, retry_delay, validate_hook,
};
