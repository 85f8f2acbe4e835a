//! Notice before expiry and expiry observability (issue 14, items 1 and 4).
//!
//! [`Notifier`] gives a managed namespace its `ExpiringSoon` Event when it
//! enters the lead window (`--notify-before`), once per expiry value: the
//! decision is [`rules::notice::decide`]; the notice is first *claimed* by
//! writing the expiry into [`NOTIFIED_EXPIRY_ANNOTATION`] with a
//! resourceVersion precondition (of two replicas or two CronJob runs that read
//! the same version, one wins; the other gets 409 and writes nothing), then
//! the Event is written. If the Event cannot be written the claim is taken
//! back so the next look tries again. An extend writes a new expiry, which no
//! longer matches the annotation: the notice is owed again.
//!
//! `--once` runs [`Notifier::sweep`] after the sweep (one paginated LIST of
//! managed Namespaces); `--watch` asks [`Notifier::consider`] on every
//! reconcile and requeues at the window's opening.
//!
//! [`ExpiryBook`] keeps, in watch mode, the live managed namespaces the
//! controller has seen (tenant, expiry) and exports at scrape time a gauge of
//! live namespaces per tenant and a histogram of their time left.
//!
//! Does Kubernetes I/O through [`crate::k8s`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use thiserror::Error;
use tracing::{debug, info};

use super::execute::REPORTING_CONTROLLER;
use super::observation::{ObservedNamespace, carries};
use super::plan::Action;
use super::webhook::WebhookSender;
use crate::k8s::{self, KubeError};
use crate::rules::hierarchy::keys::PARENT_LABEL;
use crate::rules::labels::{self, TENANT_LABEL};
use crate::rules::notice::{
    self, EXPIRING_SOON_REASON, NOTIFIED_EXPIRY_ANNOTATION, Notice, NoticeInput, NoticeLead,
};
use crate::rules::params::{Expiry, Selector};
use crate::rules::webhook::{EventKind, NamespaceEvent};

/// Buckets of the time-left histogram, in seconds: 1 minute to 7 days.
pub const TIME_LEFT_BUCKETS: [f64; 11] = [
    60.0, 300.0, 600.0, 1_800.0, 3_600.0, 7_200.0, 21_600.0, 43_200.0, 86_400.0, 259_200.0, 604_800.0,
];

#[derive(Debug, Error)]
pub enum NoticeError {
    #[error("list namespaces with selector {selector} for notices")]
    List {
        selector: String,
        #[source]
        source: KubeError,
    },
    #[error("record the notice of expiry {expiry} on namespace {namespace}")]
    Claim {
        namespace: String,
        expiry: Expiry,
        #[source]
        source: KubeError,
    },
    #[error("write the ExpiringSoon Event in namespace {namespace}")]
    Event {
        namespace: String,
        #[source]
        source: KubeError,
    },
}

/// What one look at one namespace came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Considered {
    pub notice: Notice,
    /// The Event was written by this look.
    pub sent: bool,
}

impl Considered {
    /// When the window opens, if that is still ahead.
    pub fn next_look(&self) -> Option<Expiry> {
        match self.notice {
            Notice::Later { at } => Some(Expiry::from_unix(at)),
            _ => None,
        }
    }
}

/// Counts of a `--once` notice pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct NoticeReport {
    pub sent: usize,
    pub failed: usize,
    /// Owed now but not sent by a dry run, or lost to a concurrent change (next run).
    pub deferred: usize,
}

/// Gives namespaces their `ExpiringSoon` notice.
#[derive(Clone)]
pub struct Notifier {
    client: Client,
    recorder: k8s::EventRecorder,
    lead: NoticeLead,
    metrics: NoticeMetrics,
    /// `--notify-webhook-config`: an `expiring` notice after each Event.
    webhook: Option<WebhookSender>,
}

impl Notifier {
    /// `instance` names this process in the Events (`reportingInstance`).
    pub fn new(client: Client, instance: &str, lead: NoticeLead, metrics: NoticeMetrics) -> Self {
        Self {
            recorder: k8s::EventRecorder::new(client.clone(), REPORTING_CONTROLLER, instance),
            client,
            lead,
            metrics,
            webhook: None,
        }
    }

    /// Also send each notice to the tenant's webhook (the claim already makes it once per expiry).
    pub fn with_webhook(mut self, webhook: Option<WebhookSender>) -> Self {
        self.webhook = webhook;
        self
    }

    pub fn lead(&self) -> NoticeLead {
        self.lead
    }

    /// Decide for `ns` at `now` and, when the notice is owed, claim and send it.
    pub async fn consider(&self, ns: &ObservedNamespace, now: i64) -> Result<Considered, NoticeError> {
        let notice = self.decide(ns, now);
        let Notice::Now { expiry, left_secs } = notice else {
            return Ok(Considered { notice, sent: false });
        };
        let (Some(uid), Some(version)) = (ns.uid.as_deref(), ns.resource_version.as_deref()) else {
            return Ok(Considered { notice, sent: false });
        };
        let value = expiry.to_string();
        let claimed = k8s::annotate_namespace(
            &self.client,
            &ns.name,
            Some(version),
            NOTIFIED_EXPIRY_ANNOTATION,
            Some(&value),
        )
        .await;
        match claimed {
            Ok(()) => {}
            // Changed since read (another replica claimed it, or anything
            // else): the next look, at the new version, decides again.
            Err(e) if e.is_gone() => {
                debug!(namespace = %ns.name, "namespace changed or gone since read; notice left to the next look");
                return Ok(Considered { notice, sent: false });
            }
            Err(source) => {
                self.metrics.failed.inc();
                return Err(NoticeError::Claim {
                    namespace: ns.name.clone(),
                    expiry,
                    source,
                });
            }
        }
        let note = notice::message(&ns.name, expiry, left_secs);
        if let Err(source) = self
            .recorder
            .in_namespace(&ns.name, uid, EXPIRING_SOON_REASON, "Notify", note)
            .await
        {
            self.metrics.failed.inc();
            // Take the claim back so the next look tries again.
            if let Err(e) =
                k8s::annotate_namespace(&self.client, &ns.name, None, NOTIFIED_EXPIRY_ANNOTATION, None).await
            {
                crate::log_error!(warn, &e, namespace = %ns.name, "could not take back the notice claim; this expiry gets no notice");
            }
            return Err(NoticeError::Event {
                namespace: ns.name.clone(),
                source,
            });
        }
        self.metrics.sent.inc();
        if let Some(webhook) = &self.webhook {
            webhook.notify(
                &NamespaceEvent {
                    kind: EventKind::Expiring,
                    namespace: ns.name.clone(),
                    uid: uid.to_owned(),
                    tenant: ns.labels.get(TENANT_LABEL).map(str::to_owned),
                    parent: ns.labels.get(PARENT_LABEL).map(str::to_owned),
                    expiry,
                },
                now,
            );
        }
        info!(namespace = %ns.name, expiry = %expiry.rfc3339(), left_secs, "ExpiringSoon notice sent");
        Ok(Considered { notice, sent: true })
    }

    fn decide(&self, ns: &ObservedNamespace, now: i64) -> Notice {
        if crate::rules::pool::is_member(&ns.labels) {
            return Notice::PoolMember;
        }
        // No valid expiry yet: the reaper gives it one first; the next look decides.
        let Some(expiry) = labels::expiry_of(&ns.labels) else {
            return Notice::Moot;
        };
        notice::decide(
            self.lead,
            NoticeInput {
                expiry,
                created: ns.created,
                notified: ns.annotations.get(NOTIFIED_EXPIRY_ANNOTATION),
                terminating: ns.deleting,
            },
            now,
        )
    }

    /// `--once`: list the managed Namespaces and give notice to those owed it
    /// at `now`. A dry run only counts them. Only a failed LIST is an error.
    pub async fn sweep(
        &self,
        selector: &Selector,
        page_size: u32,
        now: i64,
        dry_run: bool,
    ) -> Result<NoticeReport, NoticeError> {
        let label_selector = selector.to_label_selector();
        let api = kube::Api::<Namespace>::all(self.client.clone());
        let namespaces = k8s::list_all_map(&api, &label_selector, page_size, |ns: Namespace| {
            ObservedNamespace::from(ns)
        })
        .await
        .map_err(|source| NoticeError::List {
            selector: label_selector,
            source,
        })?;
        let mut report = NoticeReport::default();
        for ns in namespaces.iter().filter(|ns| carries(selector, &ns.labels)) {
            if dry_run {
                if matches!(self.decide(ns, now), Notice::Now { .. }) {
                    info!(namespace = %ns.name, "dry run: would send an ExpiringSoon notice");
                    report.deferred += 1;
                }
                continue;
            }
            match self.consider(ns, now).await {
                Ok(Considered { sent: true, .. }) => report.sent += 1,
                Ok(Considered {
                    notice: Notice::Now { .. },
                    ..
                }) => report.deferred += 1,
                Ok(_) => {}
                Err(e) => {
                    crate::log_error!(warn, &e, namespace = %ns.name, "ExpiringSoon notice failed");
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }
}

/// Metrics of the notices and of the live namespaces' expiries.
#[derive(Debug, Clone, Default)]
pub struct NoticeMetrics {
    pub sent: Counter,
    pub failed: Counter,
    pub expiries: Arc<ExpiryBook>,
}

impl NoticeMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "notices_sent",
            "ExpiringSoon notices sent (one per namespace and expiry value)",
            self.sent.clone(),
        );
        registry.register(
            "notices_failed",
            "ExpiringSoon notices that could not be recorded or written (retried at the next look)",
            self.failed.clone(),
        );
        registry.register_collector(Box::new(self.expiries.clone()));
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

/// The live managed namespaces the watch has seen: name -> (tenant, expiry).
/// Exported at scrape time, so the time left is as of the scrape.
#[derive(Debug, Default)]
pub struct ExpiryBook {
    live: Mutex<BTreeMap<String, (String, i64)>>,
}

impl ExpiryBook {
    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, (String, i64)>) -> T) -> T {
        f(&mut self.live.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Record what one reconcile decided for `name`: live with an expiry, or on its way out.
    pub fn track(&self, name: &str, namespace: Option<&ObservedNamespace>, action: &Action) {
        let live = match (namespace, action) {
            (_, Action::Delete { .. } | Action::DeleteCapped { .. } | Action::SkipTerminating) => None,
            (Some(ns), action) => action.expiry().map(|e| {
                (
                    ns.labels.get(TENANT_LABEL).unwrap_or_default().to_owned(),
                    e.unix(),
                )
            }),
            (None, _) => None,
        };
        self.with(|book| match live {
            Some(entry) => {
                book.insert(name.to_owned(), entry);
            }
            None => {
                book.remove(name);
            }
        });
    }

    /// `name` is gone.
    pub fn forget(&self, name: &str) {
        self.with(|book| book.remove(name));
    }

    pub fn clear(&self) {
        self.with(BTreeMap::clear);
    }

    /// Live namespaces per tenant and the histogram of time left at `now`
    /// (namespaces already due are not live).
    pub fn snapshot(&self, now: i64) -> (BTreeMap<String, i64>, Histogram) {
        let histogram = Histogram::new(TIME_LEFT_BUCKETS);
        let mut tenants = BTreeMap::new();
        self.with(|book| {
            for (tenant, expiry) in book.values().filter(|(_, e)| *e > now) {
                *tenants.entry(tenant.clone()).or_insert(0) += 1;
                #[allow(clippy::cast_precision_loss)]
                histogram.observe((expiry - now) as f64);
            }
        });
        (tenants, histogram)
    }

    /// Clears the book when dropped: a replica that stops leading (also when
    /// aborted) exports nothing stale.
    pub fn clear_on_drop(self: &Arc<Self>) -> ClearOnDrop {
        ClearOnDrop(self.clone())
    }
}

pub struct ClearOnDrop(Arc<ExpiryBook>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.clear();
    }
}

impl prometheus_client::collector::Collector for ExpiryBook {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (tenants, time_left) = self.snapshot(crate::clock::system_clock());
        {
            let mut family = encoder.encode_descriptor(
                "live_namespaces",
                "Live managed namespaces per tenant, as the leading watch-mode reaper sees them",
                None,
                MetricType::Gauge,
            )?;
            for (tenant, count) in tenants {
                let labels = TenantLabels { tenant };
                ConstGauge::new(count).encode(family.encode_family(&labels)?)?;
            }
        }
        let metric = encoder.encode_descriptor(
            "time_left_seconds",
            "Time left before expiry of each live managed namespace, at scrape time",
            None,
            MetricType::Histogram,
        )?;
        time_left.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::labels::EXPIRY_LABEL;

    fn ns(name: &str, tenant: &str) -> ObservedNamespace {
        ObservedNamespace {
            name: name.to_owned(),
            labels: Some(BTreeMap::from([
                (TENANT_LABEL.to_owned(), tenant.to_owned()),
                (EXPIRY_LABEL.to_owned(), "1000".to_owned()),
            ]))
            .into(),
            ..ObservedNamespace::default()
        }
    }

    fn live(expiry: i64) -> Action {
        Action::InSync {
            expiry: Expiry::from_unix(expiry),
        }
    }

    #[test]
    fn book_counts_live_namespaces_per_tenant_and_time_left() {
        let book = ExpiryBook::default();
        book.track("a1", Some(&ns("a1", "alpha")), &live(1_060));
        book.track("a2", Some(&ns("a2", "alpha")), &live(100_000));
        book.track("b1", Some(&ns("b1", "beta")), &live(1_500));
        book.track("b2", Some(&ns("b2", "beta")), &live(900));
        let (tenants, histogram) = book.snapshot(1_000);
        // b2 is already due: not live.
        assert_eq!(
            tenants,
            BTreeMap::from([("alpha".to_owned(), 2), ("beta".to_owned(), 1)])
        );
        let mut registry = Registry::default();
        registry.register("left", "", histogram);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        // 60 s falls in le 60, 500 s in le 600, 99 000 s in le 259 200.
        for want in [
            "left_count 3",
            "left_sum 99560.0",
            "left_bucket{le=\"60.0\"} 1",
            "left_bucket{le=\"300.0\"} 1",
            "left_bucket{le=\"600.0\"} 2",
            "left_bucket{le=\"86400.0\"} 2",
            "left_bucket{le=\"259200.0\"} 3",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
    }

    #[test]
    fn book_drops_namespaces_on_their_way_out() {
        let book = ExpiryBook::default();
        book.track("a1", Some(&ns("a1", "alpha")), &live(5_000));
        book.track("a2", Some(&ns("a2", "alpha")), &live(5_000));
        book.track("a3", Some(&ns("a3", "alpha")), &live(5_000));
        book.track("a1", Some(&ns("a1", "alpha")), &Action::SkipTerminating);
        book.forget("a2");
        assert_eq!(book.snapshot(1_000).0.get("alpha"), Some(&1));
        let book = Arc::new(book);
        drop(book.clear_on_drop());
        assert!(book.snapshot(1_000).0.is_empty());
    }

    #[test]
    fn scrape_shows_both_families() {
        let metrics = NoticeMetrics::default();
        let mut registry = Registry::with_prefix("np");
        metrics.register(&mut registry);
        metrics.expiries.track(
            "a1",
            Some(&ns("a1", "alpha")),
            &live(crate::clock::system_clock() + 3_000),
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for want in [
            "np_live_namespaces{tenant=\"alpha\"} 1",
            "np_time_left_seconds_count 1",
            "np_time_left_seconds_bucket{le=\"3600.0\"} 1",
            "np_time_left_seconds_bucket{le=\"1800.0\"} 0",
            "np_notices_sent_total 0",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
    }
}
