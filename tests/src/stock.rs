//! A typed client of product-svc's stock API (gRPC), so a test reads as the spec it checks:
//! `stock.reserve(order, &[(&a, 2)])` rather than a request struct and an
//! `.await.unwrap().into_inner()` chain. Ids are taken as text, so bad input reads the same way.
use proto::{
    CommitStockRequest, CommitStockResponse, GetProductsRequest, GetProductsResponse, OrderItem,
    ReleaseStockRequest, ReleaseStockResponse, ReserveStockRequest, ReserveStockResponse,
};
use tonic::Status;

use crate::GrpcClient;

/// The stock API with the test token.
#[derive(Clone)]
pub struct StockApi {
    client: GrpcClient,
}

impl StockApi {
    pub async fn connect(url: &str) -> Self {
        Self {
            client: crate::grpc_client(url).await,
        }
    }

    /// ReserveStock for `order` with `(product id, quantity)` lines.
    pub async fn reserve(
        &self,
        order: impl ToString,
        items: &[(&str, i32)],
    ) -> Result<ReserveStockResponse, Status> {
        self.send_reserve(reserve_request(order, items)).await
    }

    /// ReserveStock with a request as it is (more lines than `reserve` builds, say).
    pub async fn send_reserve(
        &self,
        request: ReserveStockRequest,
    ) -> Result<ReserveStockResponse, Status> {
        let answer = self.client.clone().reserve_stock(request).await?;
        Ok(answer.into_inner())
    }

    pub async fn release(&self, order: impl ToString) -> Result<ReleaseStockResponse, Status> {
        let request = ReleaseStockRequest {
            order_id: order.to_string(),
        };
        Ok(self
            .client
            .clone()
            .release_stock(request)
            .await?
            .into_inner())
    }

    pub async fn commit(&self, order: impl ToString) -> Result<CommitStockResponse, Status> {
        let request = CommitStockRequest {
            order_id: order.to_string(),
        };
        Ok(self
            .client
            .clone()
            .commit_stock(request)
            .await?
            .into_inner())
    }

    pub async fn get_products(&self, ids: &[&str]) -> Result<GetProductsResponse, Status> {
        let request = GetProductsRequest {
            product_ids: ids.iter().map(|id| id.to_string()).collect(),
        };
        Ok(self
            .client
            .clone()
            .get_products(request)
            .await?
            .into_inner())
    }
}

/// A ReserveStock request for `order` with `(product id, quantity)` lines.
pub fn reserve_request(order: impl ToString, items: &[(&str, i32)]) -> ReserveStockRequest {
    ReserveStockRequest {
        order_id: order.to_string(),
        items: items
            .iter()
            .map(|(id, quantity)| OrderItem {
                product_id: id.to_string(),
                quantity: *quantity,
            })
            .collect(),
        unrecorded: None,
    }
}
