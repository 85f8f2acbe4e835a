//! The audit trail of the HTTP API: a request id for every request (the
//! caller's `x-request-id` when it is a sane token, else a fresh one, echoed in
//! the response), and one structured log line per state change (create,
//! extend, delete) with `audit=true`, `action`, `namespace`, `tenant`,
//! `caller`, `request_id`, `outcome` and, on failure, `reason` (the error's
//! stable kind). The reaper logs its changes with the same fields. Never a
//! token. No Kubernetes I/O.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::info;

use crate::provision::ProvisionError;
use crate::rules::auth::Identity;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest `x-request-id` taken from a caller.
const MAX_REQUEST_ID: usize = 128;

/// The request's id (an extension set by [`assign_request_id`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// A caller's id is kept when it could not forge a log line or a header:
/// 1-128 of letters, digits and `-_.:`.
fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// 128 random bits, hex.
fn fresh_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Give every request an id: the caller's `x-request-id` if acceptable, else a
/// fresh one; the same id goes back in the response's `x-request-id`.
pub async fn assign_request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map_or_else(fresh_id, str::to_owned);
    // Acceptable ids and hex are valid header values.
    let value = HeaderValue::from_str(&id).ok();
    if let Some(value) = &value {
        request.headers_mut().insert(X_REQUEST_ID, value.clone());
    }
    request.extensions_mut().insert(RequestId(id));
    let mut response = next.run(request).await;
    if let Some(value) = value {
        response.headers_mut().insert(X_REQUEST_ID, value);
    }
    response
}

/// The span of one request: method, path (never the query) and request id.
pub fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let id = request
        .extensions()
        .get::<RequestId>()
        .map_or("", |id| id.0.as_str());
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = request.uri().path(),
        request_id = id
    )
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId(fresh_id())))
    }
}

/// A state change the audit trail records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Extend,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Extend => "extend",
            Self::Delete => "delete",
        }
    }
}

/// Log the audit line of one state change: `namespace` is the one acted on
/// (on a failed create: none yet, logged empty), `failure` the error if it failed.
pub fn record(
    action: Action,
    who: &Identity,
    namespace: Option<&str>,
    request_id: &RequestId,
    failure: Option<&ProvisionError>,
) {
    record_pooled(action, who, namespace, request_id, failure, None);
}

/// [`record`], saying whether a create was served from the warm pool (`pool=hit|miss`; none
/// when no pool was tried).
pub fn record_pooled(
    action: Action,
    who: &Identity,
    namespace: Option<&str>,
    request_id: &RequestId,
    failure: Option<&ProvisionError>,
    pool: Option<&str>,
) {
    let caller = match who {
        Identity::Tenant(tenant) => tenant.as_str(),
        Identity::User { user, .. } => user.username.as_str(),
    };
    let (action, tenant, namespace, request_id) = (
        action.as_str(),
        who.tenant().as_str(),
        namespace.unwrap_or_default(),
        request_id.0.as_str(),
    );
    match failure {
        None => info!(
            audit = true,
            action,
            namespace,
            tenant,
            caller,
            request_id,
            outcome = "success",
            pool,
            "audit"
        ),
        Some(error) => info!(
            audit = true,
            action,
            namespace,
            tenant,
            caller,
            request_id,
            outcome = "failure",
            reason = error.kind(),
            "audit"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_request_ids_are_kept() {
        assert!(acceptable("0f8c-4a1e_b.c:1"));
        assert!(!acceptable(""));
        assert!(!acceptable("a b"));
        assert!(!acceptable("x\ny"));
        assert!(!acceptable("\"quoted\""));
        assert!(!acceptable(&"a".repeat(MAX_REQUEST_ID + 1)));
        let id = fresh_id();
        assert_eq!(id.len(), 32);
        assert!(acceptable(&id));
        assert_ne!(id, fresh_id());
    }
}
