//! The product rules, free of I/O: catalog validation, stock arithmetic, the low-stock edge, and
//! the all-or-nothing reservation check. `store/` loads state, calls these, and writes results.
mod books;
mod catalog;
mod input;
mod reservation;
mod stock;
#[cfg(test)]
mod tests;

pub use books::*;
pub use catalog::*;
pub use input::*;
pub use reservation::*;
pub use stock::*;

pub const MAX_NAME: usize = 200;
pub const MAX_DESCRIPTION: usize = 2000;
pub const MAX_CATEGORY: usize = 100;
/// Quantities travel as int32 on gRPC; one billion leaves head-room for sums.
pub const MAX_QUANTITY: i64 = 1_000_000_000;
