//! Prometheus metrics of the HTTP API: requests by route and status, create
//! latency, Kubernetes API requests and failures by action, and (opt-in,
//! `--count-live-namespaces`) live namespaces per tenant, counted at scrape
//! time since the provisioner is stateless. No Kubernetes I/O.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing::{error, warn};

use super::AppState;
use super::error::Failure;
use crate::reload::Outcome;
use crate::rules::quota::allocation::Refusal;
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

pub use crate::telemetry::ReloadLabels;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FileLabels {
    pub file: String,
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
    reloads: Family<ReloadLabels, Counter>,
    reloaded_at: Family<FileLabels, Gauge>,
    auth_throttled: Counter,
    quota: QuotaMetrics,
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
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reload",
            "Loads of a configuration file (token-file, certificate-authority, role-rules-file, tls-cert-file) by outcome; an error keeps the last good content",
            reloads.clone(),
        );
        let reloaded_at = Family::<FileLabels, Gauge>::default();
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful load of each configuration file",
            reloaded_at.clone(),
        );
        let auth_throttled = Counter::default();
        registry.register(
            "auth_throttled",
            "Requests answered 429 because their client address failed authentication too often",
            auth_throttled.clone(),
        );
        let quota = QuotaMetrics::register(&mut registry);
        Self {
            quota,
            registry,
            requests,
            create_seconds,
            live,
            failures,
            kube_requests,
            reloads,
            reloaded_at,
            auth_throttled,
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

    /// Count one load of a configuration file; a success also stamps `now` (Unix seconds).
    pub fn observe_reload(&self, file: &str, outcome: Outcome, now: i64) {
        self.reloads
            .get_or_create(&ReloadLabels {
                file: file.to_owned(),
                outcome: outcome.as_str().to_owned(),
            })
            .inc();
        if outcome == Outcome::Success {
            self.reloaded_at
                .get_or_create(&FileLabels {
                    file: file.to_owned(),
                })
                .set(now);
        }
    }

    /// Count one request refused for too many failed authentications.
    pub fn count_throttled(&self) {
        self.auth_throttled.inc();
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
        state.metrics.quota.count_refusal(failure.kind);
        match &failure.internal {
            Some(cause) => {
                let (api_status, api_reason) = failure
                    .api
                    .as_ref()
                    .map(|(status, reason)| (*status, reason.as_str()))
                    .unzip();
                error!(%method, %route, status, kind = failure.kind, api_status, api_reason, error = %cause, "request failed")
            }
            None => warn!(%method, %route, status, kind = failure.kind, "request refused"),
        }
    }
    response
}

// ---- Aggregate quota (issue 12) -------------------------------------------------------------

/// Quota refusals by kind, and the conflicts the ledger writes retried.
struct QuotaMetrics {
    refusals: Family<ErrorLabels, Counter>,
}

/// The refusal kind of a create whose ledger stayed contended through every retry.
const LEDGER_CONTENDED: &str = "ledger_contended";

impl QuotaMetrics {
    fn register(registry: &mut Registry) -> Self {
        let refusals = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "quota_refusals",
            "Creates refused by the aggregate quota, by kind (does_not_fit, budget_over_allocated, \
             parent_grew, arithmetic, ledger_contended)",
            refusals.clone(),
        );
        registry.register_collector(Box::new(ConflictsRetried));
        registry.register_collector(Box::new(PoolClaims));
        Self { refusals }
    }

    fn count_refusal(&self, kind: &'static str) {
        if Refusal::KINDS.contains(&kind) || kind == LEDGER_CONTENDED {
            self.refusals.get_or_create(&ErrorLabels::new(kind)).inc();
        }
    }
}

/// `quota_conflicts_retried`, read from the provisioner's process-wide count at scrape time.
#[derive(Debug)]
struct ConflictsRetried;

impl Collector for ConflictsRetried {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new(crate::provision::quota_conflicts_retried());
        let metric = encoder.encode_descriptor(
            "quota_conflicts_retried",
            "Quota ledger and remainder writes that met a Conflict and were tried again",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}

/// Warm-pool claims and misses (issue 16) by pool (its parent, or `(top-level)`), read from
/// the provisioner's process-wide counts.
#[derive(Debug)]
struct PoolClaims;

impl Collector for PoolClaims {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = crate::provision::pool_counts();
        type Count = fn(&crate::provision::PoolCounts) -> u64;
        let families: [(&str, &str, Count); 2] = [
            (
                "pool_claims",
                "Creates answered with a claimed warm-pool member, by pool",
                |c| c.claims,
            ),
            (
                "pool_misses",
                "Creates that tried a warm pool, found no member to claim and created cold, by pool",
                |c| c.misses,
            ),
        ];
        for (name, help, value) in families {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (pool, count) in &counts {
                let counter = ConstCounter::new(value(count));
                counter.encode(family.encode_family(&[("pool", pool.as_str())])?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod quota_tests {
    use super::*;

    #[test]
    fn quota_refusals_by_kind_and_conflicts_are_encoded() {
        let metrics = Metrics::default();
        metrics.quota.count_refusal("does_not_fit");
        metrics.quota.count_refusal("does_not_fit");
        metrics.quota.count_refusal(LEDGER_CONTENDED);
        // Other failures are not quota refusals.
        metrics.quota.count_refusal("not_found");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, metrics.registry()).unwrap();
        for want in [
            r#"namespace_provisioner_quota_refusals_total{kind="does_not_fit"} 2"#,
            r#"namespace_provisioner_quota_refusals_total{kind="ledger_contended"} 1"#,
            "# TYPE namespace_provisioner_quota_conflicts_retried counter",
            "namespace_provisioner_quota_conflicts_retried_total ",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
        assert!(!text.contains("not_found"), "{text}");
    }

    #[test]
    fn pool_claims_and_misses_are_encoded_by_pool() {
        let metrics = Metrics::default();
        crate::provision::count_pool("np-metrics-test-team", |c| c.claims += 2);
        crate::provision::count_pool("np-metrics-test-team", |c| c.misses += 1);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, metrics.registry()).unwrap();
        for want in [
            "# TYPE namespace_provisioner_pool_claims counter",
            r#"namespace_provisioner_pool_claims_total{pool="np-metrics-test-team"} 2"#,
            r#"namespace_provisioner_pool_misses_total{pool="np-metrics-test-team"} 1"#,
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
    }
}
