//! Order rules, free of I/O: request validation, pricing from the snapshot, the order state
//! machine, and the version guard of the product snapshot.
mod order;
mod request;
mod snapshot;
#[cfg(test)]
mod tests;

pub use order::*;
pub use request::*;
pub use snapshot::*;
