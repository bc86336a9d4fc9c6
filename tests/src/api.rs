//! Typed clients of the two HTTP APIs, so that a test reads as the spec it checks:
//! `orders.cancel(id, "changed my mind")` rather than a reqwest chain, and every answer is an
//! [`Answer`] whose problem bodies are checked the same way everywhere.
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{WAIT, http_client, wait_for};

/// One HTTP answer: its status, its headers and the JSON body (`Null` if none).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    /// Reads a response (for requests the typed clients do not make: raw bodies, other keys).
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or(Value::Null);
        Self {
            status,
            headers,
            body,
        }
    }

    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body's `id`.
    pub fn id(&self) -> String {
        self.body["id"]
            .as_str()
            .unwrap_or_else(|| panic!("an id in {}", self.body))
            .to_owned()
    }

    /// Asserts `status` and returns the body.
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "status; body: {}", self.body);
        self.body
    }

    /// Asserts a problem+json answer with `status` carrying the correlation id; returns it.
    pub fn problem(self, status: u16) -> Value {
        assert_eq!(self.status, status, "status; body: {}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "content type"
        );
        assert_eq!(self.body["status"], status);
        assert!(
            self.body["correlationId"].is_string(),
            "problem carries the correlation id: {}",
            self.body
        );
        self.body
    }
}

/// A create-product body with a description and category the tests do not care about.
pub fn product_body(name: &str, price: &str, stock: i64, threshold: i64) -> Value {
    json!({
        "name": name,
        "description": format!("{name} description"),
        "price": price,
        "category": "Tests",
        "stockQuantity": stock,
        "lowStockThreshold": threshold,
    })
}

/// A create-order body for `customer` with `(product id, quantity)` lines.
pub fn order_body(customer: Uuid, items: &[(&str, i64)]) -> Value {
    json!({
        "customerId": customer,
        "customerEmail": "ann@example.com",
        "items": items.iter().map(|(id, q)| json!({"productId": id, "quantity": q})).collect::<Vec<_>>(),
    })
}

/// A base URL and a client (with its key): the requests under both typed clients, and the raw
/// ones a test needs (bodies that are not JSON, paths the API does not have).
#[derive(Clone)]
pub struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    pub fn new(base: &str, client: reqwest::Client) -> Self {
        Self {
            base: base.to_owned(),
            client,
        }
    }

    /// A request to `path` (which starts with `/`).
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    /// A POST with `body` as it is, and a content type only if given.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Answer {
        let mut request = self.request(Method::POST, path).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        self.send(request).await
    }

    /// `/health/ready`: one shape for both services (`ready`, `checks`, `figures`), 200 or 503.
    pub async fn ready(&self) -> Answer {
        self.get("/health/ready").await
    }

    /// `/health/live`.
    pub async fn live(&self) -> Answer {
        self.get("/health/live").await
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.unwrap_or_else(|e| {
            panic!("{} answers: {e}", self.base);
        });
        Answer::read(response).await
    }
}

/// product-svc's catalog API, with the test key.
#[derive(Clone)]
pub struct ProductApi {
    http: Http,
}

impl ProductApi {
    pub fn new(base: &str) -> Self {
        Self::with_client(base, http_client())
    }

    /// With another client (another key, or none).
    pub fn with_client(base: &str, client: reqwest::Client) -> Self {
        Self {
            http: Http::new(base, client),
        }
    }

    /// The raw requests under this client.
    pub fn http(&self) -> &Http {
        &self.http
    }

    pub async fn create(&self, body: &Value) -> Answer {
        self.http.post_json("/api/products", body).await
    }

    /// Creates a product (asserting 201) and returns its id.
    pub async fn create_product(&self, name: &str, price: &str, stock: i64) -> String {
        self.create(&product_body(name, price, stock, 0))
            .await
            .expect(201)["id"]
            .as_str()
            .expect("an id")
            .to_owned()
    }

    pub async fn get(&self, id: &str) -> Answer {
        self.http.get(&format!("/api/products/{id}")).await
    }

    /// One integer field of a product (`reservedQuantity`, `availableQuantity`, ...).
    pub async fn field(&self, id: &str, field: &str) -> i64 {
        self.get(id).await.expect(200)[field]
            .as_i64()
            .unwrap_or_else(|| panic!("{field} of {id}"))
    }

    pub async fn update(&self, id: &str, body: &Value, if_match: Option<&str>) -> Answer {
        let request = self
            .http
            .request(Method::PUT, &format!("/api/products/{id}"));
        self.http
            .send(with_if_match(request, if_match).json(body))
            .await
    }

    pub async fn discontinue(&self, id: &str, if_match: Option<&str>) -> Answer {
        let path = format!("/api/products/{id}/discontinue");
        let request = self.http.request(Method::POST, &path);
        self.http.send(with_if_match(request, if_match)).await
    }

    pub async fn adjust_stock(&self, id: &str, delta: i64) -> Answer {
        let path = format!("/api/products/{id}/stock");
        self.http.post_json(&path, &json!({ "delta": delta })).await
    }

    /// `GET /api/products?{query}`.
    pub async fn list(&self, query: &str) -> Answer {
        self.http.get(&format!("/api/products?{query}")).await
    }

    pub async fn audit(&self) -> Answer {
        self.http.get("/api/stock/audit").await
    }
}

fn with_if_match(
    request: reqwest::RequestBuilder,
    if_match: Option<&str>,
) -> reqwest::RequestBuilder {
    match if_match {
        Some(v) => request.header("if-match", v),
        None => request,
    }
}

/// order-svc's order and snapshot API, with the test key.
#[derive(Clone)]
pub struct OrderApi {
    http: Http,
}

impl OrderApi {
    pub fn new(base: &str) -> Self {
        Self::with_client(base, http_client())
    }

    /// With another client (another key, or none).
    pub fn with_client(base: &str, client: reqwest::Client) -> Self {
        Self {
            http: Http::new(base, client),
        }
    }

    /// The raw requests under this client.
    pub fn http(&self) -> &Http {
        &self.http
    }

    pub async fn place(&self, body: &Value) -> Answer {
        self.http.post_json("/api/orders", body).await
    }

    /// Places with an `Idempotency-Key`.
    pub async fn place_keyed(&self, body: &Value, key: &str) -> Answer {
        let request = self.http.request(Method::POST, "/api/orders");
        self.http
            .send(request.header("idempotency-key", key).json(body))
            .await
    }

    pub async fn get(&self, id: &str) -> Answer {
        self.http.get(&format!("/api/orders/{id}")).await
    }

    /// An order's status (`Pending`, `Confirmed`, ...), asserting it is found.
    pub async fn status(&self, id: &str) -> String {
        self.get(id).await.expect(200)["status"]
            .as_str()
            .expect("a status")
            .to_owned()
    }

    pub async fn cancel(&self, id: &str, reason: &str) -> Answer {
        let path = format!("/api/orders/{id}/cancel");
        self.http
            .post_json(&path, &json!({ "reason": reason }))
            .await
    }

    pub async fn ship(&self, id: &str) -> Answer {
        let path = format!("/api/orders/{id}/ship");
        self.http.send(self.http.request(Method::POST, &path)).await
    }

    /// `GET /api/orders/{id}/history`.
    pub async fn history(&self, id: &str) -> Answer {
        self.http.get(&format!("/api/orders/{id}/history")).await
    }

    /// Cancel with `If-Match: {tag}`.
    pub async fn cancel_if_match(&self, id: &str, reason: &str, tag: &str) -> Answer {
        let path = format!("/api/orders/{id}/cancel");
        let request = self.http.request(Method::POST, &path);
        let request = request
            .header("if-match", tag)
            .json(&json!({ "reason": reason }));
        self.http.send(request).await
    }

    /// Ship with `If-Match: {tag}`.
    pub async fn ship_if_match(&self, id: &str, tag: &str) -> Answer {
        let path = format!("/api/orders/{id}/ship");
        let request = self
            .http
            .request(Method::POST, &path)
            .header("if-match", tag);
        self.http.send(request).await
    }

    /// `POST /api/webhooks`.
    pub async fn register_hook(&self, body: &Value) -> Answer {
        self.http.post_json("/api/webhooks", body).await
    }

    /// `GET /api/webhooks` (`id` empty) or `GET /api/webhooks/{id}{rest}`.
    pub async fn hooks(&self, id: &str, rest: &str) -> Answer {
        let path = match id {
            "" => "/api/webhooks".to_owned(),
            id => format!("/api/webhooks/{id}{rest}"),
        };
        self.http.get(&path).await
    }

    /// `DELETE /api/webhooks/{id}`.
    pub async fn delete_hook(&self, id: &str) -> Answer {
        let path = format!("/api/webhooks/{id}");
        self.http
            .send(self.http.request(Method::DELETE, &path))
            .await
    }

    /// `GET /api/orders?{query}`.
    pub async fn list(&self, query: &str) -> Answer {
        self.http.get(&format!("/api/orders?{query}")).await
    }

    pub async fn snapshot_product(&self, id: &str) -> Answer {
        self.http.get(&format!("/api/snapshot/products/{id}")).await
    }

    /// Products in the snapshot.
    pub async fn snapshot_count(&self) -> u64 {
        let page = self.http.get("/api/snapshot/products?pageSize=1").await;
        page.body["totalCount"].as_u64().unwrap_or(0)
    }

    /// Waits until the snapshot holds product `id` at `version`.
    pub async fn wait_snapshot_version(&self, id: &str, version: u64) {
        let what = format!("{id} at version {version} in the snapshot");
        wait_for(&what, WAIT, || async {
            let row = self.snapshot_product(id).await;
            (row.status == 200 && row.body["version"].as_u64() == Some(version)).then_some(())
        })
        .await
    }

    /// `/health/ready` (200 or 503; `checks` and `figures` either way).
    pub async fn ready(&self) -> Answer {
        self.http.ready().await
    }
}
