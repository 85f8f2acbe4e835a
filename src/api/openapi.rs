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
    modifiers(&BearerAuth, &AuthThrottled)
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

/// Every authenticated operation may answer 429 when the client's address
/// failed authentication too often (`--auth-failure-limit`), with Retry-After;
/// every response carries the request's `x-request-id`.
struct AuthThrottled;

impl Modify for AuthThrottled {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::content::ContentBuilder;
        use utoipa::openapi::header::HeaderBuilder;
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{Ref, RefOr, ResponseBuilder};
        const THROTTLED: &str =
            "Too many failed authentications from this client address; retry after Retry-After seconds";
        let problem = || {
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build()
        };
        let request_id = HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(Type::String))
            .description(Some("The request's id: the caller's `x-request-id` when it is 1-128 of letters, digits and `-_.:`, else a fresh one; logged with the request"))
            .build();
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                for response in operation.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        response
                            .headers
                            .insert("x-request-id".to_owned(), request_id.clone());
                    }
                }
                if operation.security.is_none() {
                    continue;
                }
                // Every authenticated operation answers 401 to a missing or wrong token (found
                // undocumented on some by Schemathesis, tests/schemathesis.rs).
                operation
                    .responses
                    .responses
                    .entry("401".to_owned())
                    .or_insert_with(|| {
                        RefOr::T(
                            ResponseBuilder::new()
                                .description("Missing or wrong token")
                                .header("x-request-id", request_id.clone())
                                .content("application/problem+json", problem())
                                .build(),
                        )
                    });
                let throttled = match operation.responses.responses.remove("429") {
                    Some(RefOr::T(limit)) => format!("{}; or: {THROTTLED}", limit.description),
                    _ => THROTTLED.to_owned(),
                };
                let retry_after = HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(Type::Integer))
                    .description(Some("Seconds to wait (only when the address is throttled)"))
                    .build();
                let response = ResponseBuilder::new()
                    .description(throttled)
                    .header("Retry-After", retry_after)
                    .header("x-request-id", request_id.clone())
                    .content("application/problem+json", problem())
                    .build();
                operation
                    .responses
                    .responses
                    .insert("429".to_owned(), RefOr::T(response));
            }
        }
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
