//! Wire types of the stock contract (`eshop.product.v1`), generated at build time.
//!
//! Only the gRPC edges of the services (`product-svc`'s server, `order-svc`'s stock client) should
//! name these types; the domains speak their own types.
#![allow(unreachable_pub, clippy::all)]

pub mod product {
    pub mod v1 {
        tonic::include_proto!("eshop.product.v1");
    }
}

pub use product::v1::*;

/// The encoded descriptor set, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/product_descriptor.bin"));
