//! The OpenAPI document of the catalog API, generated from the handlers' `#[utoipa::path]`
//! attributes and the body types; `shared::openapi` adds the answers of the common layers. The
//! test below keeps `product-svc/openapi.json` equal to it, and the service serves that file
//! compacted (`shared::compact_json!`: the pretty file is for people and diffs).

// Only the test builds the document; the binary serves the file it wrote.
#[cfg(test)]
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "eshop product-svc", description = "The catalog and stock of the eshop; every change is published to the PRODUCTS stream."),
    paths(
        super::products::create, super::products::list, super::products::fetch,
        super::products::update, super::products::discontinue, super::products::adjust_stock,
        super::audit, super::live, super::ready, shared::openapi::metrics,
        shared::openapi::document,
    ),
    modifiers(&CONVENTIONS)
)]
struct ApiDoc;

#[cfg(test)]
const CONVENTIONS: shared::openapi::Conventions = shared::openapi::Conventions {
    keys: "An API key from product-svc's key file: scopes catalog:read, catalog:write",
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
