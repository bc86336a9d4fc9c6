//! The OpenAPI 3.1 document served at `/openapi.json` (hand-written: five operations do not
//! justify a code-generation dependency on small machines).
use serde_json::{Value, json};

pub fn document() -> Value {
    let problem = json!({"$ref": "#/components/schemas/Problem"});
    let problem_response = |description: &str| json!({"description": description, "content": {"application/problem+json": {"schema": problem}}});
    let order_id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "eshop order-svc", "version": env!("CARGO_PKG_VERSION")},
        "paths": {
            "/api/orders": {
                "post": {
                    "summary": "Place an order",
                    "parameters": [{"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "maxLength": 255}}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CreateOrder"}}}},
                    "responses": {
                        "201": {"description": "Confirmed or Rejected", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Order"}}}},
                        "202": {"description": "Pending: product-svc did not answer in time; the order is settled in the background", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Order"}}}},
                        "400": problem_response("Validation error, or unknown products (unknownProductIds)"),
                        "413": problem_response("Body over 64 KiB"),
                        "415": problem_response("Not JSON"),
                        "401": problem_response("Missing or invalid API key"),
                        "403": problem_response("The key lacks orders:write, or acts for another customer"),
                        "422": problem_response("Idempotency-Key reused with a different body"),
                        "429": problem_response("Rate limit of this API key; Retry-After says when"),
                        "503": problem_response("Catalog or order store (NATS) temporarily unavailable; Retry-After says when to retry")
                    }
                },
                "get": {
                    "summary": "List orders, newest first (from this instance's orders view: eventually consistent)",
                    "parameters": [
                        {"name": "customerId", "in": "query", "schema": {"type": "string", "format": "uuid"}},
                        {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 1}},
                        {"name": "pageSize", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}}
                    ],
                    "responses": {"200": {"description": "A page of orders"}, "400": problem_response("Bad query"), "401": problem_response("Missing or invalid API key"), "403": problem_response("Unfiltered listing without orders:admin, or another customer's listing")}
                }
            },
            "/api/orders/{id}": {
                "get": {"summary": "Get an order", "parameters": [order_id], "responses": {
                    "200": {"description": "The order", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Order"}}}},
                    "401": problem_response("Missing or invalid API key"),
                    "403": problem_response("The key lacks orders:read"),
                    "404": problem_response("Unknown order (or another customer's, for a key bound to a customer)"),
                    "503": problem_response("Order store unreachable and the order not in this instance's view")
                }}
            },
            "/api/orders/{id}/cancel": {
                "post": {"summary": "Cancel a Pending or Confirmed order (its stock is released in the background)", "parameters": [order_id],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["reason"], "properties": {"reason": {"type": "string", "maxLength": 500}}, "additionalProperties": false}}}},
                    "responses": {"200": {"description": "Cancelled"}, "400": problem_response("Validation error"), "404": problem_response("Unknown order"), "401": problem_response("Missing or invalid API key"), "403": problem_response("The key lacks orders:write"), "409": problem_response("Not cancellable in its status"), "503": problem_response("Order store (NATS) temporarily unavailable")}
                }
            },
            "/api/orders/{id}/ship": {
                "post": {"summary": "Ship a Confirmed order (needs orders:admin); its reservation is committed (an on-hand decrement) in the background. Shipping a Shipped order answers it as it is.", "parameters": [order_id],
                    "responses": {"200": {"description": "Shipped"}, "404": problem_response("Unknown order"), "401": problem_response("Missing or invalid API key"), "403": problem_response("The key lacks orders:admin"), "409": problem_response("Not shippable in its status (orderStatus names it)"), "503": problem_response("Order store (NATS) temporarily unavailable")}
                }
            },
            "/health/live": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "Alive"}}}},
            "/health/ready": {"get": {"summary": "Readiness: the product snapshot and the orders view have caught up", "security": [], "responses": {"200": {"description": "Ready"}, "503": problem_response("Catching up")}}}
        },
        "security": [{"bearer": []}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "An API key from the service's key file (scopes orders:read, orders:write, orders:admin; optionally bound to one customer)"}}, "schemas": {
            "CreateOrder": {"type": "object", "required": ["customerId", "customerEmail", "items"], "additionalProperties": false, "properties": {
                "customerId": {"type": "string", "format": "uuid"},
                "customerEmail": {"type": "string", "format": "email", "maxLength": 320},
                "items": {"type": "array", "minItems": 1, "maxItems": 100, "items": {"type": "object", "required": ["productId", "quantity"], "additionalProperties": false, "properties": {
                    "productId": {"type": "string", "format": "uuid"},
                    "quantity": {"type": "integer", "minimum": 1, "maximum": 10000}
                }}}
            }},
            "Order": {"type": "object", "properties": {
                "id": {"type": "string", "format": "uuid"},
                "version": {"type": "integer", "minimum": 1, "description": "1 when placed, +1 per change"},
                "customerId": {"type": "string", "format": "uuid"},
                "customerEmail": {"type": "string"},
                "status": {"type": "string", "enum": ["Pending", "Confirmed", "Rejected", "Cancelled", "Shipped"]},
                "totalAmount": {"type": "string", "examples": ["149.99"]},
                "reason": {"type": ["string", "null"]},
                "failedProductIds": {"type": "array", "items": {"type": "string", "format": "uuid"}},
                "items": {"type": "array", "items": {"type": "object", "properties": {
                    "productId": {"type": "string", "format": "uuid"}, "productName": {"type": "string"},
                    "quantity": {"type": "integer"}, "unitPrice": {"type": "string"}, "lineTotal": {"type": "string"}
                }}},
                "createdAt": {"type": "string", "format": "date-time"},
                "updatedAt": {"type": "string", "format": "date-time"}
            }},
            "Problem": {"type": "object", "properties": {
                "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"},
                "instance": {"type": "string"}, "correlationId": {"type": "string"},
                "errors": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}}
            }}
        }}
    })
}
