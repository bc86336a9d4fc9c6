//! The OpenAPI document of the catalog API, generated from the handlers' `#[utoipa::path]`
//! attributes and the body types; `shared::openapi` adds the answers of the common layers. The
//! test below keeps `product-svc/openapi.json` equal to it, and the service serves that file (compacted).

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
pub static DOCUMENT: &str = match std::str::from_utf8(&MINIFIED) {
    Ok(text) => text,
    Err(_) => panic!("openapi.json is UTF-8"),
};
const COMMITTED: &str = include_str!("../../openapi.json");
static MINIFIED: [u8; shared::http::minified_json_len(COMMITTED)] =
    shared::http::minify_json(COMMITTED);

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    use super::*;

    #[test]
    fn the_served_document_is_the_committed_one_compacted() {
        let committed: serde_json::Value = serde_json::from_str(COMMITTED).unwrap();
        let served: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap();
        assert_eq!(served, committed);
        assert!(!DOCUMENT.contains('\n') && DOCUMENT.len() < COMMITTED.len());
    }

    #[test]
    fn the_served_document_is_the_one_the_handlers_generate() {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
        shared::openapi::assert_current(&ApiDoc::openapi(), &file);
    }
}
