//! Prometheus metrics of the HTTP API: requests by route and status, create
//! latency, Kubernetes API requests and failures by action, and (opt-in,
//! `--count-live-namespaces`) live namespaces per tenant, counted at scrape
//! time since the provisioner is stateless. No Kubernetes I/O.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing::{error, warn};

use super::AppState;
use super::error::Failure;
use crate::telemetry::ErrorLabels;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    create_seconds: Histogram,
    live: Family<TenantLabels, Gauge>,
    failures: Family<ErrorLabels, Counter>,
    kube_requests: Family<MethodLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("namespace_provisioner");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        // 50 ms .. ~25 s: a create is three API round trips.
        let create_seconds = Histogram::new([0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 25.0]);
        registry.register(
            "create_duration_seconds",
            "Time to create a namespace set and its kubeconfig",
            create_seconds.clone(),
        );
        let live = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "live_namespaces",
            "Managed namespaces per tenant, counted at scrape (only with --count-live-namespaces)",
            live.clone(),
        );
        let failures = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "failures",
            "Failed requests by error kind (Kubernetes API failures are named for the action)",
            failures.clone(),
        );
        let kube_requests = Family::<MethodLabels, Counter>::default();
        registry.register(
            "kubernetes_requests",
            "Requests sent to the Kubernetes API, by HTTP method",
            kube_requests.clone(),
        );
        Self {
            registry,
            requests,
            create_seconds,
            live,
            failures,
            kube_requests,
        }
    }
}

impl Metrics {
    /// Count one request to the Kubernetes API (see [`crate::k8s::counted_client`]).
    pub fn count_kube_request(&self, method: &http::Method) {
        self.kube_requests
            .get_or_create(&MethodLabels {
                method: method.to_string(),
            })
            .inc();
    }

    pub fn observe_create(&self, started: Instant) {
        self.create_seconds.observe(started.elapsed().as_secs_f64());
    }

    /// Replace the per-tenant gauge with a fresh count.
    pub fn set_live<'a>(&self, tenants: impl IntoIterator<Item = &'a str>) {
        self.live.clear();
        for tenant in tenants {
            self.live
                .get_or_create(&TenantLabels {
                    tenant: tenant.to_owned(),
                })
                .inc();
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// Count every request, and log and count failures (the handlers do neither).
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route: route.clone(),
            method: method.clone(),
            status,
        })
        .inc();
    if let Some(failure) = response.extensions().get::<Failure>() {
        state
            .metrics
            .failures
            .get_or_create(&ErrorLabels::new(failure.kind))
            .inc();
        match &failure.internal {
            Some(cause) => {
                error!(%method, %route, status, kind = failure.kind, error = %cause, "request failed")
            }
            None => warn!(%method, %route, status, kind = failure.kind, "request refused"),
        }
    }
    response
}
