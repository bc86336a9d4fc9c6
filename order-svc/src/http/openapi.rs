//! The OpenAPI document of the order API, generated from the handlers' `#[utoipa::path]`
//! attributes and the body types; `shared::openapi` adds the answers of the common layers. The
//! test below keeps `order-svc/openapi.json` equal to it, and the service serves that file
//! compacted (`shared::compact_json!`: the pretty file is for people and diffs).

// Only the test builds the document; the binary serves the file it wrote.
#[cfg(test)]
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "eshop order-svc", description = "Orders of the eshop: placed against the local product snapshot, stock reserved on product-svc."),
    paths(
        super::orders::create, super::list::list, super::orders::fetch, super::orders::history, super::watch::watch, super::watch_many::watch_orders, super::orders::cancel,
        super::orders::ship, super::webhooks::create, super::webhooks::list, super::webhooks::fetch,
        super::webhooks::delete, super::webhooks::deliveries, super::snapshot::list, super::snapshot::get_one, super::live,
        super::ready, shared::openapi::metrics, shared::openapi::document,
    ),
    modifiers(&CONVENTIONS)
)]
struct ApiDoc;

#[cfg(test)]
const CONVENTIONS: shared::openapi::Conventions = shared::openapi::Conventions {
    keys: "An API key from order-svc's key file: scopes orders:read, orders:write, orders:admin; optionally bound to one customer",
};

/// The committed document, served without the whitespace between its tokens.
pub static DOCUMENT: &str = shared::compact_json!(COMMITTED);
const COMMITTED: &str = include_str!("../../openapi.json");

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    use super::*;

    #[test]
    fn the_served_document_is_the_committed_one_compacted() {
        shared::openapi::assert_served_compact(DOCUMENT, COMMITTED);
    }

    #[test]
    fn the_served_document_is_the_one_the_handlers_generate() {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
        shared::openapi::assert_current(&ApiDoc::openapi(), &file);
    }
}
