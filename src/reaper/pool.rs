//! The reaper's half of the warm pool (issue 16): keep every pool at its size with members
//! that are complete (the cold create's set, minus tenant and expiry, plus the ancestors'
//! copies for a child), in `--once` after the sweep and in `--watch` every
//! `--pool-refill-interval` while leading.
//!
//! A refill LISTs every Namespace once with `--parent-pools` (parents carry their pool size in
//! an annotation; the forest gives a child member its tree labels and ancestors), else only the
//! members, decides with
//! [`crate::rules::pool::plan_pools`], then: finishes members a stopped refill left
//! `filling`, creates the missing ones (Namespace labelled `filling` from the first write,
//! set, copies, then `ready` with a resourceVersion precondition; a failure deletes the
//! Namespace, as a cold create rolls back) and makes surplus members due, so the ordinary
//! expiry rule deletes them under its cap, guards and brake. Stale members need nothing here:
//! their expiry label is their max age. Pools under an aggregate budget are refused (see
//! docs/pool.md). Does Kubernetes I/O through [`crate::k8s`] and [`crate::propagate`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::{Client, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tracing::{info, warn};

use super::ReaperError;
use crate::k8s::{self, KubeError};
use crate::propagate::{self, Destination, Propagation};
use crate::rules::desired::SetConfig;
use crate::rules::hierarchy::keys::{ALLOWED_TENANTS_ANNOTATION, PARENT_LABEL, PARENT_UID_ANNOTATION};
use crate::rules::hierarchy::tree::{Forest, ObservedNamespace};
use crate::rules::labels::{self, is_managed};
use crate::rules::params::{Expiry, NamePrefix};
use crate::rules::pool::{
    self, Member, POOL_SIZE_ANNOTATION, PoolKey, PoolPlan, PoolRefusal, PoolWanted, member_expiry,
    member_set, plan_pools,
};

/// What a refill needs besides a client and the resolved propagation.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub set: SetConfig,
    /// Members of the top-level pool (`--pool-size`; 0: none).
    pub top_level_size: u32,
    /// Keep the pools parents ask for (`--parent-pools`).
    pub parent_pools: bool,
    /// A member unclaimed this long is replaced (`--pool-max-age`).
    pub max_age: Duration,
    /// Members are named `<prefix>-<random>` like any managed namespace (`--prefix`).
    pub prefix: NamePrefix,
    pub page_size: u32,
    /// Members made at the same time.
    pub concurrency: usize,
    pub dry_run: bool,
}

/// What one pool's refill did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolEntry {
    pub pool: String,
    pub wanted: u32,
    /// Ready members before the refill.
    pub ready: usize,
    /// Members made ready by this refill (new or finished).
    pub filled: usize,
    /// Surplus members made due (the expiry rule deletes them).
    pub expired: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

/// What a refill did, per pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PoolReport {
    pub pools: Vec<PoolEntry>,
}

impl PoolReport {
    pub fn failed(&self) -> bool {
        self.pools.iter().any(|p| !p.failures.is_empty())
    }

    /// Members made ready by this refill, in all pools.
    pub fn filled(&self) -> usize {
        self.pools.iter().map(|p| p.filled).sum()
    }

    /// One line per pool, for the text report.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for p in &self.pools {
            out.push_str(&format!(
                "pool {}: wanted {}, ready {}, filled {}, expired {}",
                p.pool, p.wanted, p.ready, p.filled, p.expired
            ));
            if let Some(refused) = &p.refused {
                out.push_str(&format!(", refused: {refused}"));
            }
            for failure in &p.failures {
                out.push_str(&format!("\n  failed: {failure}"));
            }
            out.push('\n');
        }
        out
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// The parent namespace, or `(top-level)`.
    pub pool: String,
}

/// Pool sizes and refills (watch mode serves them).
#[derive(Clone)]
pub struct PoolMetrics {
    /// Ready members per pool after the last refill.
    pub ready: Family<PoolLabels, Gauge>,
    /// Size asked for per pool.
    pub wanted: Family<PoolLabels, Gauge>,
    /// Members made ready.
    pub filled: Counter,
    /// Failed member fills.
    pub failures: Counter,
    /// Time to make one member ready (Namespace create to `ready`).
    pub refill_seconds: Histogram,
}

impl Default for PoolMetrics {
    fn default() -> Self {
        Self {
            ready: Family::default(),
            wanted: Family::default(),
            filled: Counter::default(),
            failures: Counter::default(),
            refill_seconds: Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        }
    }
}

impl PoolMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "pool_ready",
            "Ready (unclaimed) members per warm pool after the last refill",
            self.ready.clone(),
        );
        registry.register("pool_wanted", "Size asked for per warm pool", self.wanted.clone());
        registry.register("pool_filled", "Warm-pool members made ready", self.filled.clone());
        registry.register(
            "pool_fill_failures",
            "Warm-pool members whose fill failed (rolled back)",
            self.failures.clone(),
        );
        registry.register(
            "pool_refill_seconds",
            "Time to make one warm-pool member ready, from its Namespace create to its ready mark",
            self.refill_seconds.clone(),
        );
    }

    fn record(&self, report: &PoolReport) {
        for entry in &report.pools {
            let labels = PoolLabels {
                pool: entry.pool.clone(),
            };
            let ready = entry.ready + entry.filled;
            self.ready
                .get_or_create(&labels)
                .set(i64::try_from(ready).unwrap_or(i64::MAX));
            self.wanted.get_or_create(&labels).set(i64::from(entry.wanted));
        }
    }
}

/// Why one member could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum FillError {
    #[error("create pool member")]
    Create(#[source] KubeError),
    #[error("create pool member: the API server returned no name or uid")]
    Unnamed,
    #[error(transparent)]
    Apply(#[from] k8s::ApplyError),
    #[error(transparent)]
    ListForCopies(#[from] propagate::SyncListError),
    #[error("copy {} object(s) into pool member {namespace}: {}", failures.len(), failures.join("; "))]
    Copies {
        namespace: String,
        failures: Vec<String>,
    },
    #[error("mark pool member {namespace} ready")]
    MarkReady {
        namespace: String,
        #[source]
        source: KubeError,
    },
}

/// A parent's pool, as the refill needs it.
struct ParentPool {
    /// Ancestors top-most first, then the parent: where the member's copies come from.
    ancestors: Vec<String>,
    uid: String,
    expiry: Option<Expiry>,
}

/// Everything one refill read.
struct Observed {
    wanted: Vec<PoolWanted>,
    members: Vec<Member>,
    /// Member labels by name (a finish needs them for the copies' exceptions).
    member_labels: BTreeMap<String, BTreeMap<String, String>>,
    forest: Forest,
    parents: BTreeMap<String, ObservedNamespace>,
}

/// Whether `parent` holds an aggregate budget (a missing CRD: none anywhere).
async fn has_budget(client: &Client, parent: &str) -> Result<bool, KubeError> {
    match k8s::list_budgets(client, parent).await {
        Ok(budgets) => Ok(!budgets.is_empty()),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

async fn observe(client: &Client, config: &PoolConfig) -> Result<Observed, ReaperError> {
    // Parents' pools need every Namespace (their annotations, the forest); the top-level pool
    // alone needs only its members.
    let selector = if config.parent_pools {
        String::new()
    } else {
        pool::all_members_selector(&config.set.selector)
    };
    let all = k8s::list_namespaces(client, &selector, config.page_size)
        .await
        .map_err(|source| ReaperError::List {
            kind: "Namespace",
            selector,
            source,
        })?;
    let observed: Vec<ObservedNamespace> = all.iter().map(ObservedNamespace::from).collect();
    let forest = Forest::build(&observed);
    let mut wanted = vec![PoolWanted {
        key: PoolKey::TopLevel,
        size: config.top_level_size,
        refused: None,
    }];
    let mut members = Vec::new();
    let mut member_labels = BTreeMap::new();
    let mut parents = BTreeMap::new();
    for (ns, seen) in all.iter().zip(&observed) {
        let labels = ns.labels();
        if is_managed(&config.set.selector, labels) && pool::is_member(labels) {
            members.push(Member::of(ns));
            member_labels.insert(seen.name.clone(), labels.clone());
            continue;
        }
        if !config.parent_pools || !ns.annotations().contains_key(POOL_SIZE_ANNOTATION) {
            continue;
        }
        let name = seen.name.clone();
        let key = PoolKey::Parent(name.clone());
        let parsed = pool::parent_pool_size(&name, ns.annotations());
        let size = parsed.as_ref().map_or(0, |size| *size);
        let refused = match parsed {
            Err(e) => Some(PoolRefusal::Size(e)),
            Ok(_) if !ns.annotations().contains_key(ALLOWED_TENANTS_ANNOTATION) => {
                Some(PoolRefusal::NotAParent { parent: name.clone() })
            }
            Ok(_) if ns.metadata.deletion_timestamp.is_some() => {
                Some(PoolRefusal::ParentTerminating { parent: name.clone() })
            }
            Ok(0) => None,
            Ok(_) => match has_budget(client, &name).await {
                Ok(true) => Some(PoolRefusal::UnderBudget { parent: name.clone() }),
                Ok(false) => None,
                Err(source) => {
                    return Err(ReaperError::List {
                        kind: "HierarchicalResourceQuota",
                        selector: String::new(),
                        source,
                    });
                }
            },
        };
        wanted.push(PoolWanted { key, size, refused });
        parents.insert(name, seen.clone());
    }
    Ok(Observed {
        wanted,
        members,
        member_labels,
        forest,
        parents,
    })
}

impl Observed {
    fn parent_pool(&self, parent: &str) -> Option<ParentPool> {
        let seen = self.parents.get(parent)?;
        let mut ancestors: Vec<String> = self
            .forest
            .ancestors(parent)
            .into_iter()
            .map(str::to_owned)
            .collect();
        ancestors.push(parent.to_owned());
        Some(ParentPool {
            ancestors,
            uid: seen.uid.clone(),
            expiry: labels::expiry_of(&seen.labels),
        })
    }
}

/// A member to make ready: its name, expiry, labels as stored (for the copies' `select`
/// exceptions), resourceVersion as stored (for the mark's precondition) and ancestors.
struct Fill<'a> {
    name: &'a str,
    expiry: Expiry,
    labels: &'a BTreeMap<String, String>,
    resource_version: &'a str,
    ancestors: &'a [String],
}

/// The set, the copies, then the `ready` mark of one member.
async fn finish(
    client: &Client,
    propagation: &Propagation,
    config: &PoolConfig,
    fill: Fill<'_>,
) -> Result<(), FillError> {
    let Fill {
        name,
        expiry,
        labels,
        resource_version,
        ancestors,
    } = fill;
    let set = member_set(name, expiry, &config.set);
    k8s::apply_contents(client, &set).await?;
    if !ancestors.is_empty() {
        let report = propagate::sync_namespace(
            client,
            propagation,
            Destination { name, labels },
            ancestors,
            config.page_size,
        )
        .await?;
        if !report.failures.is_empty() {
            return Err(FillError::Copies {
                namespace: name.to_owned(),
                failures: report
                    .failures
                    .iter()
                    .map(|f| format!("{} {}: {}", f.kind, f.name, f.detail))
                    .collect(),
            });
        }
    }
    k8s::patch_namespace_if_unchanged(client, name, &pool::ready_patch(resource_version))
        .await
        .map_err(|source| FillError::MarkReady {
            namespace: name.to_owned(),
            source,
        })?;
    Ok(())
}

/// Make one new member of `key`'s pool (`parent`: its parent's pool, for a child); a failure
/// after its Namespace exists deletes it, as a cold create rolls back.
async fn create_member(
    client: &Client,
    propagation: &Propagation,
    config: &PoolConfig,
    observed: &Observed,
    parent: Option<(&str, &ParentPool)>,
    now: i64,
) -> Result<String, FillError> {
    // Named here, not by `generateName`: a child member's own tree label must be in its
    // first write; a collision is an AlreadyExists error, the next refill tries again.
    let name = crate::provision::namespace_name(&config.prefix);
    let expiry = member_expiry(now, config.max_age.as_secs(), parent.and_then(|(_, p)| p.expiry));
    let mut namespace = member_set(&name, expiry, &config.set).namespace;
    if let Some((parent_name, parent)) = parent {
        // The child's own tree label is in its first write, as a cold child's is.
        let labels = namespace.metadata.labels.get_or_insert_default();
        labels.extend(observed.forest.new_child_tree_labels(parent_name, &name));
        labels.insert(PARENT_LABEL.to_owned(), parent_name.to_owned());
        namespace
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(PARENT_UID_ANNOTATION.to_owned(), parent.uid.clone());
    }
    let created = k8s::create_namespace(client, &namespace)
        .await
        .map_err(FillError::Create)?;
    let (Some(uid), Some(rv)) = (created.uid(), created.resource_version()) else {
        return Err(FillError::Unnamed);
    };
    let ancestors = parent.map(|(_, p)| p.ancestors.as_slice()).unwrap_or_default();
    let labels = created.labels().clone();
    let fill = Fill {
        name: &name,
        expiry,
        labels: &labels,
        resource_version: &rv,
        ancestors,
    };
    match finish(client, propagation, config, fill).await {
        Ok(()) => Ok(name),
        Err(err) => {
            if let Err(rollback) = k8s::delete_namespace(client, &name, &uid).await {
                warn!(namespace = %name, error = %rollback, "removing a failed pool member failed; it expires with its max age");
            }
            Err(err)
        }
    }
}

/// One refill of every pool at `now`. Only a failed LIST is an error; failed members are in
/// the report (and the next refill tries again).
pub async fn refill(
    client: &Client,
    propagation: &Propagation,
    config: &PoolConfig,
    now: i64,
    metrics: Option<&PoolMetrics>,
) -> Result<PoolReport, ReaperError> {
    let observed = observe(client, config).await?;
    let plans = plan_pools(&observed.wanted, &observed.members, now);
    let mut report = PoolReport::default();
    for plan in plans {
        if let Some(refused) = &plan.refused {
            warn!(pool = %plan.key.name(), reason = refused.kind(), "pool not kept: {refused}");
        }
        let entry = refill_one(client, propagation, config, &observed, &plan, now, metrics).await;
        report.pools.push(entry);
    }
    if let Some(metrics) = metrics {
        metrics.record(&report);
    }
    Ok(report)
}

/// Surplus made due, then unfinished and missing members filled (at most
/// `config.concurrency` at once).
async fn refill_one(
    client: &Client,
    propagation: &Propagation,
    config: &PoolConfig,
    observed: &Observed,
    plan: &PoolPlan,
    now: i64,
    metrics: Option<&PoolMetrics>,
) -> PoolEntry {
    let mut entry = PoolEntry {
        pool: plan.key.name().to_owned(),
        wanted: plan.wanted,
        ready: plan.ready,
        refused: plan.refused.as_ref().map(ToString::to_string),
        ..PoolEntry::default()
    };
    if config.dry_run {
        return entry;
    }
    // Surplus: due now, only if unchanged (a claim in between wins).
    for name in &plan.surplus {
        let Some(member) = observed.members.iter().find(|m| &m.name == name) else {
            continue;
        };
        let patch = pool::expire_patch(&member.resource_version, now);
        match k8s::patch_namespace_if_unchanged(client, name, &patch).await {
            Ok(_) => entry.expired += 1,
            Err(e) if e.is_gone() => {}
            Err(e) => entry.failures.push(format!(
                "expire surplus member {name}: {}",
                crate::telemetry::chain(&e)
            )),
        }
    }
    let parent = match &plan.key {
        PoolKey::TopLevel => None,
        PoolKey::Parent(name) => match observed.parent_pool(name) {
            Some(pool) => Some((name.as_str(), pool)),
            // Not a listed parent any more: its members go with the cascade.
            None => return entry,
        },
    };
    let parent = parent.as_ref().map(|(name, pool)| (*name, pool));
    let jobs = plan
        .finish
        .iter()
        .map(Some)
        .chain(std::iter::repeat_n(None, plan.create));
    let fills: Vec<_> = jobs
        .map(|job| fill_job(client, propagation, config, observed, parent, job, now, metrics))
        .collect();
    let results: Vec<Result<String, FillError>> = futures::stream::iter(fills)
        .buffer_unordered(config.concurrency.max(1))
        .collect()
        .await;
    for result in results {
        match result {
            Ok(name) => {
                entry.filled += 1;
                if let Some(metrics) = metrics {
                    metrics.filled.inc();
                }
                info!(namespace = %name, pool = %entry.pool, "pool member ready");
            }
            Err(e) => {
                if let Some(metrics) = metrics {
                    metrics.failures.inc();
                }
                entry.failures.push(crate::telemetry::chain(&e));
            }
        }
    }
    entry
}

/// One member made ready: `job` names one to finish, else a new one is made.
#[allow(clippy::too_many_arguments)]
async fn fill_job(
    client: &Client,
    propagation: &Propagation,
    config: &PoolConfig,
    observed: &Observed,
    parent: Option<(&str, &ParentPool)>,
    job: Option<&String>,
    now: i64,
    metrics: Option<&PoolMetrics>,
) -> Result<String, FillError> {
    let started = Instant::now();
    let done = match job {
        Some(name) => finish_member(client, propagation, config, observed, parent, name, now).await,
        None => create_member(client, propagation, config, observed, parent, now).await,
    };
    if let (Ok(_), Some(metrics)) = (&done, metrics) {
        metrics.refill_seconds.observe(started.elapsed().as_secs_f64());
    }
    done
}

/// Finish a member a stopped refill left `filling`.
async fn finish_member(
    client: &Client,
    propagation: &Propagation,
    config: &PoolConfig,
    observed: &Observed,
    parent: Option<(&str, &ParentPool)>,
    name: &str,
    now: i64,
) -> Result<String, FillError> {
    let member = observed.members.iter().find(|m| m.name == name);
    let labels = observed.member_labels.get(name);
    let (Some(member), Some(labels)) = (member, labels) else {
        return Err(FillError::Unnamed);
    };
    let fill = Fill {
        name,
        expiry: member.expiry.unwrap_or_else(|| Expiry::from_unix(now)),
        labels,
        resource_version: &member.resource_version,
        ancestors: parent.map(|(_, p)| p.ancestors.as_slice()).unwrap_or_default(),
    };
    finish(client, propagation, config, fill)
        .await
        .map(|()| name.to_owned())
}

/// Watch mode's pools: refilled every `interval` while leading.
#[derive(Debug, Clone)]
pub struct PoolWatch {
    pub config: PoolConfig,
    pub propagation: std::sync::Arc<Propagation>,
    pub interval: Duration,
}

/// Shortest pause between two refills woken by member events (a claim burst is one refill).
const EVENT_DEBOUNCE: Duration = Duration::from_millis(200);

/// Refill every `watch.interval`, and soon after any change to a member (a claim takes the
/// member out of the pool's selection), until dropped (the caller aborts it when it stops
/// leading).
pub async fn refill_periodically(
    client: Client,
    watch: PoolWatch,
    metrics: std::sync::Arc<super::metrics::Metrics>,
) {
    let selector = pool::all_members_selector(&watch.config.set.selector);
    let mut events = std::pin::pin!(k8s::watch_namespaces_selected(&client, &selector));
    let mut ticks = tokio::time::interval(watch.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            event = events.next() => {
                if let Some(Err(e)) = event {
                    tracing::debug!(error = %crate::telemetry::chain(&e), "pool member watch");
                }
                tokio::time::sleep(EVENT_DEBOUNCE).await;
                // Whatever else arrived meanwhile is covered by this refill.
                while let Some(Some(_)) = futures::FutureExt::now_or_never(events.next()) {}
            }
        }
        let now = crate::clock::system_clock();
        match refill(
            &client,
            &watch.propagation,
            &watch.config,
            now,
            Some(&metrics.pool),
        )
        .await
        {
            Ok(report) => {
                for entry in report.pools.iter().filter(|p| !p.failures.is_empty()) {
                    warn!(pool = %entry.pool, failed = entry.failures.len(), first = entry.failures.first().map(String::as_str), "pool refill failed in part");
                }
            }
            Err(e) => warn!(error = %crate::telemetry::chain(&e), "pool refill failed"),
        }
    }
}
