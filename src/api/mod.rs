//! The HTTP edge: one axum [`Router`] served by `axum::serve` in a container or
//! by `lambda_http::run` behind a function runtime ([`serve`]). Turns requests
//! into calls of the provisioning pipeline and its errors into problem+json;
//! no Kubernetes calls of its own.

mod audit;
mod error;
mod extract;
mod handlers;
mod metrics;
mod openapi;
mod readiness;
pub mod serve;
pub mod tls;
mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use tower_http::trace::TraceLayer;

pub use audit::{RequestId, X_REQUEST_ID};
pub use error::{ApiError, Problem};
pub use metrics::Metrics;
pub use openapi::ApiDoc;
pub use readiness::Readiness;

use crate::access::{Authenticator, TokenReviewer};
use crate::provision::Provisioner;
use crate::reload::Live;
use crate::rules::auth::{DEFAULT_TENANT, Tokens};
use crate::rules::params::TenantName;

/// Bodies are a ttl and a URL; anything bigger is a mistake or an attack.
const BODY_LIMIT: usize = 16 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub provisioner: Provisioner,
    /// Static tokens and/or TokenReview (`--auth`); neither only with
    /// `--insecure-allow-unauthenticated`.
    pub auth: Authenticator,
    /// Tenant of unauthenticated callers when tokens are off.
    pub anonymous_tenant: TenantName,
    pub metrics: Arc<Metrics>,
    /// Count live namespaces per tenant on each `/metrics` scrape (one LIST).
    pub count_live_namespaces: bool,
    /// Closed by the permission preflight while it fails (`/readyz` 503).
    pub readiness: Readiness,
    /// Serve the web page at `/ui/` (`--no-ui` turns it off).
    pub ui: bool,
    /// Header naming the client's address, set by a trusted proxy
    /// (`--client-ip-header`); else the connection's peer address.
    pub client_ip_header: Option<axum::http::HeaderName>,
}

impl AppState {
    pub fn new(
        provisioner: Provisioner,
        tokens: Option<Tokens>,
    ) -> Result<Self, crate::rules::params::TenantNameError> {
        Self::with_metrics(provisioner, tokens, Arc::new(Metrics::default()))
    }

    /// With metrics made beforehand, e.g. shared with a counted client.
    pub fn with_metrics(
        provisioner: Provisioner,
        tokens: Option<Tokens>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, crate::rules::params::TenantNameError> {
        Ok(Self {
            provisioner,
            auth: Authenticator {
                tokens: tokens.map(Live::fixed),
                reviewer: None,
                throttle: None,
            },
            anonymous_tenant: DEFAULT_TENANT.parse()?,
            metrics,
            count_live_namespaces: false,
            readiness: Readiness::default(),
            ui: true,
            client_ip_header: None,
        })
    }

    /// Static tokens that follow `--token-file` as it changes.
    pub fn with_live_tokens(mut self, tokens: Live<Tokens>) -> Self {
        self.auth.tokens = Some(tokens);
        self
    }

    /// Also accept Kubernetes bearer tokens, checked by `reviewer` (`--auth kubernetes|both`).
    pub fn with_token_review(mut self, reviewer: TokenReviewer) -> Self {
        self.auth.reviewer = Some(reviewer);
        self
    }
}

/// The public API (and `/openapi.json`).
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    Router::new()
        .route("/api/v1/namespace", post(handlers::compat_create))
        .route("/api/v1/namespace/{name}", delete(handlers::compat_delete))
        .route("/api/v1/namespaces", post(handlers::create).get(handlers::list))
        .route(
            "/api/v1/namespaces/{name}",
            get(handlers::get_one)
                .delete(handlers::delete_one)
                .patch(handlers::extend),
        )
        .route("/openapi.json", get(openapi::serve))
        .merge(ui::routes(state.ui))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        // Innermost first: a 504 from the deadline is still counted and logged.
        .layer(axum::middleware::from_fn(move |request, next| {
            deadline(request_timeout, request, next)
        }))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // Every line logged while a request is handled (the failure line included) carries
        // its request id in the span, so the audit line and the failure line correlate.
        .layer(TraceLayer::new_for_http().make_span_with(audit::request_span))
        .layer(axum::middleware::from_fn(audit::assign_request_id))
        .with_state(state)
}

/// Answer 504 (as problem+json) when a request takes longer than `limit`. A
/// create in progress is not cut short: it runs in its own task.
async fn deadline(
    limit: Duration,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::timed_out(limit).into_response(),
    }
}

/// Liveness, readiness and metrics, for the internal listener.
pub fn internal_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .with_state(state)
}

/// Function mode has one listener: the public API plus health checks
/// (metrics stay off a public URL).
pub fn function_router(state: AppState, request_timeout: Duration) -> Router {
    let health = Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .with_state(state.clone());
    router(state, request_timeout).merge(health)
}

#[cfg(test)]
mod tests;
