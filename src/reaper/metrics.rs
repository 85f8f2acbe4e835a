//! Prometheus metrics of the watch-mode reaper and its internal HTTP
//! listener (`/healthz`, `/metrics`). No Kubernetes I/O.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::brake::BrakeMetrics;
use super::execute::Outcome;
use super::plan::{Action, SetPlan};
use crate::telemetry::{self, ErrorLabels, ReloadLabels};

pub struct Metrics {
    registry: Registry,
    pub deletions: Counter,
    pub repairs: Counter,
    pub expiry_set: Counter,
    pub reconciles: Counter,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub in_flight: Gauge,
    pub leader: Gauge,
    pub delete_delay: Histogram,
    /// Raised by the watch-mode deletion brake.
    pub brake: BrakeMetrics,
    /// The clock compared with the API server's (issue 15).
    pub clock: ClockMetrics,
    /// Namespace trees (issue 11).
    pub copy_writes: Counter,
    pub conflicts: Counter,
    pub forged: Counter,
    pub skips: Counter,
    pub tree_label_patches: Counter,
    pub cascades: Counter,
    pub tree_pass_errors: Counter,
    pub propagation_lag: Histogram,
    /// ExpiringSoon notices and live namespaces' expiries (issue 14).
    pub notices: super::notice::NoticeMetrics,
    /// Aggregate quota (issue 12).
    pub quota: QuotaMetrics,
    /// Notice webhooks (issue 14).
    pub webhook: super::webhook::WebhookMetrics,
    /// Warm pools (issue 16).
    pub pool: super::pool::PoolMetrics,
    /// Loads of `--role-rules-file` in watch mode, by outcome (issue 15).
    pub reloads: Family<ReloadLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("namespace_provisioner_reaper");
        let deletions = Counter::default();
        registry.register("deletions", "Expired namespaces deleted", deletions.clone());
        let repairs = Counter::default();
        registry.register(
            "repairs",
            "Namespace sets repaired (missing or drifted objects applied)",
            repairs.clone(),
        );
        let expiry_set = Counter::default();
        registry.register(
            "expiry_set",
            "Managed namespaces given an expiry because theirs was missing or invalid",
            expiry_set.clone(),
        );
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles by error kind",
            reconcile_errors.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "reconciles_in_flight",
            "Reconciles running now",
            in_flight.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the Lease and acts, else 0",
            leader.clone(),
        );
        // Expiry labels have whole seconds; 10 ms .. 30 s.
        let delete_delay = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0]);
        registry.register(
            "delete_delay_seconds",
            "Time from a namespace's expiry instant to its deletion",
            delete_delay.clone(),
        );
        let brake = BrakeMetrics::default();
        brake.register(&mut registry);
        let clock = ClockMetrics::default();
        clock.register(&mut registry);
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let copy_writes = counter(
            &mut registry,
            "copy_writes",
            "Propagated copies created, updated, recreated or deleted",
        );
        let conflicts = counter(
            &mut registry,
            "copy_conflicts",
            "Times a namespace's own object was found with a propagated source's name (never overwritten)",
        );
        let forged = counter(
            &mut registry,
            "copies_forged",
            "Times an object claiming to be a copy without proof was found (never touched)",
        );
        let skips = counter(
            &mut registry,
            "propagation_skips",
            "Sources passed over (never propagated, invalid exceptions), per destination",
        );
        let tree_label_patches = counter(
            &mut registry,
            "tree_label_patches",
            "Namespaces whose tree labels were patched",
        );
        let cascades = counter(
            &mut registry,
            "cascades",
            "Managed children deleted because their parent is gone, expiring or recreated",
        );
        let tree_pass_errors = counter(
            &mut registry,
            "tree_pass_errors",
            "Failed tree passes and propagations",
        );
        // From the first event of a batch to the end of the pass that handled it.
        let propagation_lag = Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]);
        registry.register(
            "propagation_lag_seconds",
            "Time from a tree or propagated-kind event to the end of the pass that handled it",
            propagation_lag.clone(),
        );
        let notices = super::notice::NoticeMetrics::default();
        notices.register(&mut registry);
        let quota = QuotaMetrics::register(&mut registry);
        let webhook = super::webhook::WebhookMetrics::default();
        webhook.register(&mut registry);
        let pool = super::pool::PoolMetrics::default();
        pool.register(&mut registry);
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reload",
            "Loads of --role-rules-file in watch mode by outcome; an error keeps the last good rules",
            reloads.clone(),
        );
        Self {
            reloads,
            webhook,
            pool,
            notices,
            quota,
            copy_writes,
            conflicts,
            forged,
            skips,
            tree_label_patches,
            cascades,
            tree_pass_errors,
            propagation_lag,
            registry,
            deletions,
            repairs,
            expiry_set,
            reconciles,
            reconcile_errors,
            in_flight,
            leader,
            delete_delay,
            brake,
            clock,
        }
    }
}

/// Clock skew against the API server, and the deletions it refused.
#[derive(Debug, Clone, Default)]
pub struct ClockMetrics {
    /// Local minus server, whole seconds (positive: the local clock runs ahead).
    pub skew_seconds: Gauge,
    /// 1 while deletions are refused because the clock cannot be trusted.
    pub untrusted: Gauge,
    /// Deletions refused because the clock could not be trusted.
    pub refusals: Counter,
}

impl ClockMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "clock_skew_seconds",
            "Local clock minus the API server's (its Date header), in whole seconds",
            self.skew_seconds.clone(),
        );
        registry.register(
            "clock_untrusted",
            "1 while deletions are refused because the clock differs from the API server's by more than --max-clock-skew (or cannot be compared)",
            self.untrusted.clone(),
        );
        registry.register(
            "clock_skew_refusals",
            "Deletions refused because the clock could not be trusted",
            self.refusals.clone(),
        );
    }
}

impl Metrics {
    /// Count what one reconcile did; `now` in (fractional) Unix seconds.
    pub fn record(&self, set: &SetPlan, outcome: &Outcome, now: f64) {
        let ok = matches!(outcome, Outcome::Written { .. } | Outcome::Deleted { .. });
        match (&set.action, ok) {
            (Action::Delete { expiry, .. }, true) => {
                self.deletions.inc();
                #[allow(clippy::cast_precision_loss)]
                self.delete_delay.observe((now - expiry.unix() as f64).max(0.0));
            }
            (Action::Repair { .. }, true) => {
                self.repairs.inc();
            }
            (Action::SetExpiry { .. }, true) => {
                self.expiry_set.inc();
            }
            _ => {}
        }
    }

    /// Count what one propagation into a namespace did.
    pub fn record_sync(&self, report: &crate::propagate::SyncReport) {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        self.copy_writes.inc_by(count(report.changes()));
        self.conflicts.inc_by(count(report.conflicts.len()));
        self.forged.inc_by(count(report.forged.len()));
        self.skips.inc_by(count(report.skips.len()));
        self.tree_pass_errors.inc_by(count(report.failures.len()));
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

// ---- Aggregate quota (issue 12) -------------------------------------------------------------

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    /// The parent namespace holding the budget.
    pub namespace: String,
    /// Canonical resource name (`requests.cpu`, `count/pods`).
    pub resource: String,
}

/// Budget, allocated and used per parent and resource, as the last rebuild computed them,
/// and what rebuilds did.
#[derive(Clone, Default)]
pub struct QuotaMetrics {
    pub budget: Family<QuotaLabels, Gauge<f64, AtomicU64>>,
    pub allocated: Family<QuotaLabels, Gauge<f64, AtomicU64>>,
    pub used: Family<QuotaLabels, Gauge<f64, AtomicU64>>,
    pub ledgers_rebuilt: Counter,
    pub allocations_released: Counter,
}

impl QuotaMetrics {
    fn register(registry: &mut Registry) -> Self {
        let quota = Self::default();
        registry.register(
            "quota_budget",
            "Aggregate quota budget (spec.hard, clamped by the parent's own allocation), in units",
            quota.budget.clone(),
        );
        registry.register(
            "quota_allocated",
            "Sum of the children's allocations from the budget, in units",
            quota.allocated.clone(),
        );
        registry.register(
            "quota_used",
            "Usage of the parent and all its children (native quotas' status.used), in units",
            quota.used.clone(),
        );
        registry.register(
            "quota_ledgers_rebuilt",
            "Quota ledgers (budget statuses and remainders) a rebuild changed and wrote",
            quota.ledgers_rebuilt.clone(),
        );
        registry.register(
            "quota_allocations_released",
            "Allocations returned by rebuilds: children gone, reservations of crashed creates",
            quota.allocations_released.clone(),
        );
        quota
    }

    /// Replace the gauges with what one rebuild computed (a budget gone disappears) and count.
    pub fn record(&self, rebuilt: &super::quota::Rebuilt) {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        self.ledgers_rebuilt.inc_by(count(rebuilt.written));
        self.allocations_released.inc_by(count(rebuilt.released));
        for family in [&self.budget, &self.allocated, &self.used] {
            family.clear();
        }
        for (namespace, figures) in &rebuilt.figures {
            for figure in figures {
                let labels = QuotaLabels {
                    namespace: namespace.clone(),
                    resource: figure.resource.clone(),
                };
                self.budget.get_or_create(&labels).set(figure.budget);
                self.allocated.get_or_create(&labels).set(figure.allocated);
                self.used.get_or_create(&labels).set(figure.used);
            }
        }
    }
}

// ---- end of aggregate quota ------------------------------------------------------------------

/// Decrements the in-flight gauge when dropped (also when a reconcile is aborted).
pub struct InFlight(Gauge);

impl InFlight {
    pub fn start(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `/healthz` (the process is up) and `/metrics` (Prometheus text).
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(serve_metrics))
        .with_state(metrics)
}

async fn serve_metrics(State(metrics): State<Arc<Metrics>>) -> Response {
    telemetry::openmetrics(metrics.registry())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{StatusCode, header};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn healthz_and_metrics_answer() {
        let metrics = Arc::new(Metrics::default());
        metrics.leader.set(1);
        metrics.deletions.inc();
        let app = router(metrics);
        let ok = app
            .clone()
            .oneshot(axum::http::Request::get("/healthz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        let response = app
            .oneshot(axum::http::Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        for want in [
            "namespace_provisioner_reaper_leader 1",
            "namespace_provisioner_reaper_deletions_total 1",
            "namespace_provisioner_reaper_reconciles_in_flight 0",
            "namespace_provisioner_reaper_delete_delay_seconds_count 0",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
    }

    #[tokio::test]
    async fn quota_figures_and_rebuild_counts_are_exported() {
        use crate::rules::quota::crd::ResourceFigures;
        let metrics = Arc::new(Metrics::default());
        let figure = |resource: &str, budget, allocated, used| ResourceFigures {
            resource: resource.into(),
            budget,
            allocated,
            used,
        };
        let rebuilt = super::super::quota::Rebuilt {
            budgets: 2,
            written: 1,
            released: 3,
            figures: vec![
                ("team-a".into(), vec![figure("requests.cpu", 4.0, 1.5, 0.25)]),
                ("team-b".into(), vec![figure("count/pods", 10.0, 3.0, 1.0)]),
            ],
            ..Default::default()
        };
        metrics.quota.record(&rebuilt);
        // A second rebuild without team-b's budget drops its gauges.
        let later = super::super::quota::Rebuilt {
            figures: rebuilt.figures[..1].to_vec(),
            ..Default::default()
        };
        metrics.quota.record(&later);
        let response = router(metrics)
            .oneshot(axum::http::Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        for want in [
            r#"namespace_provisioner_reaper_quota_budget{namespace="team-a",resource="requests.cpu"} 4.0"#,
            r#"namespace_provisioner_reaper_quota_allocated{namespace="team-a",resource="requests.cpu"} 1.5"#,
            r#"namespace_provisioner_reaper_quota_used{namespace="team-a",resource="requests.cpu"} 0.25"#,
            "namespace_provisioner_reaper_quota_ledgers_rebuilt_total 1",
            "namespace_provisioner_reaper_quota_allocations_released_total 3",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
        assert!(!text.contains("team-b"), "{text}");
    }

    #[test]
    fn in_flight_gauge_follows_guards() {
        let metrics = Metrics::default();
        let a = InFlight::start(&metrics.in_flight);
        let b = InFlight::start(&metrics.in_flight);
        assert_eq!(metrics.in_flight.get(), 2);
        drop(a);
        drop(b);
        assert_eq!(metrics.in_flight.get(), 0);
    }
}
