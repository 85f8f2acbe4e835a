//! The OpenAPI document, generated from the handlers' annotations and served
//! at `/openapi.json`; the committed `openapi.json` is checked against it. No I/O.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::handlers;

#[derive(OpenApi)]
#[openapi(
    info(title = "namespace-provisioner", description = "Self-service, short-lived Kubernetes namespaces"),
    paths(
        handlers::compat_create,
        handlers::compat_delete,
        handlers::create,
        handlers::list,
        handlers::get_one,
        handlers::delete_one,
        handlers::extend,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openapi.json` at the repository root is generated, never hand-edited:
    /// `NP_UPDATE_OPENAPI=1 cargo test --lib openapi` rewrites it.
    #[test]
    fn committed_document_matches_the_code() {
        let generated = ApiDoc::openapi().to_pretty_json().unwrap() + "\n";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        if std::env::var_os("NP_UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "openapi.json is out of date; run NP_UPDATE_OPENAPI=1 cargo test --lib openapi"
        );
    }
}
