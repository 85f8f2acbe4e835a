//! The reaper's half of the aggregate quota (issue 12): each sweep rebuilds every budget's
//! ledger from the live children and their allocation quotas, writes the budget's status
//! (allocated, used, children, summary) and the parent's remainder quota. This returns the
//! allocations of children that are gone (not merely Terminating: they are still listed) and
//! drops reservations a crashed create leaked. Decisions are [`crate::rules::quota`]'s; the
//! I/O goes through [`crate::k8s`]. Steps: module docs of `rules::quota`, "The reaper's rebuild".

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceQuota;
use kube::{Client, ResourceExt};
use thiserror::Error;
use tracing::{info, warn};

use crate::k8s::{self, KubeError};
use crate::rules::hierarchy::keys::PARENT_LABEL;
use crate::rules::params::Selector;
use crate::rules::quota::allocation::effective_budget;
use crate::rules::quota::crd::{
    HierarchicalResourceQuota, ObservedUsage, ResourceFigures, figures, ledger_from_status, status_for,
};
use crate::rules::quota::ledger::{self, LiveChild};
use crate::rules::quota::objects::{
    ALLOCATION_QUOTA, BudgetRef, REMAINDER_QUOTA, allocation_quota, hard_of, ledger_revision_of,
    remainder_quota, used_of,
};
use crate::rules::quota::resources::ResourcesError;

/// Age after which a reservation without a namespace is a leak. Longer than the provisioner's
/// own give-up time (120 s, `provision::quota`) plus clock skew, so an in-flight create keeps it.
pub const REBUILD_GRACE_SECONDS: i64 = 300;

#[derive(Debug, Error)]
pub enum RebuildError {
    #[error("list {what}")]
    List {
        what: &'static str,
        #[source]
        source: KubeError,
    },
    #[error("budget {budget} cannot be read")]
    Unreadable {
        budget: String,
        #[source]
        source: ResourcesError,
    },
    #[error("write {what} of budget {budget}")]
    Write {
        what: &'static str,
        budget: String,
        #[source]
        source: KubeError,
    },
}

/// What a rebuild did, for the log, the report and the metrics.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rebuilt {
    pub budgets: usize,
    /// Budgets whose ledger or status changed and was written.
    pub written: usize,
    /// Budgets skipped this run (a failed listing or a concurrent write: next run).
    pub skipped: usize,
    /// Ledger entries dropped: children gone, reservations leaked by crashed creates.
    pub released: usize,
    /// Budget, allocated and used per parent namespace and budget resource, as the status
    /// this rebuild computed says (also when it was already written).
    pub figures: Vec<(String, Vec<ResourceFigures>)>,
}

/// One budget's rebuild.
struct Outcome {
    wrote: bool,
    released: usize,
    figures: Vec<ResourceFigures>,
}

/// Rebuild every budget at `now`. A missing CRD means no budgets. Failures are logged and
/// counted, never fatal to the sweep: a stale ledger only refuses creates, it never over-allocates.
pub async fn rebuild_budgets(client: &Client, selector: &Selector, page_size: u32, now: i64) -> Rebuilt {
    match try_rebuild(client, selector, page_size, now).await {
        Ok(rebuilt) => {
            if rebuilt.budgets > 0 {
                info!(
                    budgets = rebuilt.budgets,
                    written = rebuilt.written,
                    skipped = rebuilt.skipped,
                    released = rebuilt.released,
                    "quota ledgers rebuilt"
                );
            }
            rebuilt
        }
        Err(err) => {
            warn!(error = %crate::telemetry::chain(&err), "quota ledgers not rebuilt this run");
            Rebuilt::default()
        }
    }
}

/// How often watch mode rebuilds the ledgers while leading (a sweep does it once per run).
/// A rebuild is one LIST of budgets and of each quota name, plus one LIST of children per budget.
pub const WATCH_REBUILD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Watch mode: rebuild every [`WATCH_REBUILD_INTERVAL`] and export the figures, until aborted
/// (the caller runs it only while holding the Lease).
pub async fn rebuild_periodically(
    client: Client,
    selector: Selector,
    page_size: u32,
    metrics: std::sync::Arc<super::metrics::Metrics>,
) {
    loop {
        let rebuilt = rebuild_budgets(&client, &selector, page_size, crate::clock::system_clock()).await;
        metrics.quota.record(&rebuilt);
        tokio::time::sleep(WATCH_REBUILD_INTERVAL).await;
    }
}

async fn try_rebuild(
    client: &Client,
    selector: &Selector,
    page_size: u32,
    now: i64,
) -> Result<Rebuilt, RebuildError> {
    let budgets = match k8s::list_all_budgets(client, page_size).await {
        Ok(budgets) => budgets,
        Err(e) if e.is_not_found() => return Ok(Rebuilt::default()),
        Err(source) => {
            return Err(RebuildError::List {
                what: "budgets",
                source,
            });
        }
    };
    let mut rebuilt = Rebuilt {
        budgets: budgets.len(),
        ..Rebuilt::default()
    };
    if budgets.is_empty() {
        return Ok(rebuilt);
    }
    // Only complete listings: rebuild reads absence as "gone" and releases.
    let by_namespace = |quotas: Vec<ResourceQuota>| -> BTreeMap<String, ResourceQuota> {
        quotas
            .into_iter()
            .map(|q| (q.namespace().unwrap_or_default(), q))
            .collect()
    };
    let list_quotas = |name| async move {
        k8s::list_quotas_named(client, name, page_size)
            .await
            .map_err(|source| RebuildError::List {
                what: "quotas",
                source,
            })
    };
    let allocations = by_namespace(list_quotas(ALLOCATION_QUOTA).await?);
    let remainders = by_namespace(list_quotas(REMAINDER_QUOTA).await?);
    let quotas = Quotas {
        allocations: &allocations,
        remainders: &remainders,
    };
    for budget in budgets {
        let parent = budget.namespace().unwrap_or_default();
        let name = format!("{parent}/{}", budget.name_any());
        match rebuild_one(client, selector, page_size, budget, &quotas, now).await {
            Ok(outcome) => {
                rebuilt.written += usize::from(outcome.wrote);
                rebuilt.released += outcome.released;
                rebuilt.figures.push((parent, outcome.figures));
            }
            Err(err) => {
                rebuilt.skipped += 1;
                warn!(budget = %name, error = %crate::telemetry::chain(&err), "quota ledger not rebuilt");
            }
        }
    }
    Ok(rebuilt)
}

struct Quotas<'a> {
    allocations: &'a BTreeMap<String, ResourceQuota>,
    remainders: &'a BTreeMap<String, ResourceQuota>,
}

/// One budget: whether something was written, what was released, the figures.
async fn rebuild_one(
    client: &Client,
    selector: &Selector,
    page_size: u32,
    mut hrq: HierarchicalResourceQuota,
    quotas: &Quotas<'_>,
    now: i64,
) -> Result<Outcome, RebuildError> {
    let parent = hrq.namespace().unwrap_or_default();
    let budget_name = hrq.name_any();
    let unreadable = |source| RebuildError::Unreadable {
        budget: format!("{parent}/{budget_name}"),
        source,
    };
    let write_error = |what, source| RebuildError::Write {
        what,
        budget: format!("{parent}/{budget_name}"),
        source,
    };
    let children = k8s::list_namespaces(client, &format!("{PARENT_LABEL}={parent}"), page_size)
        .await
        .map_err(|source| RebuildError::List {
            what: "children",
            source,
        })?;
    let mut live = Vec::with_capacity(children.len());
    for child in &children {
        let name = child.name_any();
        live.push(LiveChild {
            allocation: quotas
                .allocations
                .get(&name)
                .map(hard_of)
                .transpose()
                .map_err(unreadable)?,
            uid: child.uid().unwrap_or_default(),
            name,
        });
    }
    let ledger = ledger_from_status(hrq.status.as_ref()).map_err(unreadable)?;
    let next = ledger::rebuild(&ledger, &live, now, REBUILD_GRACE_SECONDS);
    let released = ledger
        .entries
        .keys()
        .filter(|name| !next.entries.contains_key(*name))
        .count();
    let inherited = quotas
        .allocations
        .get(&parent)
        .map(hard_of)
        .transpose()
        .map_err(unreadable)?;
    let budget = effective_budget(&hrq.spec.budget().map_err(unreadable)?, inherited.as_ref());
    let budget_ref = BudgetRef {
        namespace: &parent,
        name: &budget_name,
    };
    let selector_pair = (selector.key(), selector.value());

    // A live child the ledger holds but whose quota is missing (a create that died between
    // the namespace and its quota) gets the quota the ledger says, so it is bounded.
    for child in live.iter().filter(|c| c.allocation.is_none()) {
        if let Some(entry) = next.entries.get(&child.name)
            && entry.uid.as_deref().is_none_or(|uid| uid == child.uid)
        {
            let quota = allocation_quota(&child.name, &budget_ref, &entry.allocation, selector_pair);
            if let Err(source) = k8s::create_quota(client, &child.name, &quota).await
                && !source.is_conflict()
            {
                return Err(write_error("allocation quota", source));
            }
        }
    }

    let mut usage = ObservedUsage {
        parent: quotas
            .remainders
            .get(&parent)
            .map(used_of)
            .transpose()
            .map_err(unreadable)?
            .unwrap_or_default(),
        ..ObservedUsage::default()
    };
    for name in next.entries.keys() {
        if let Some(quota) = quotas.allocations.get(name) {
            usage
                .children
                .insert(name.clone(), used_of(quota).map_err(unreadable)?);
        }
    }
    let status = status_for(&budget, &next, &usage).map_err(unreadable)?;
    let figures = figures(&budget, &status).map_err(unreadable)?;
    let mut wrote = false;
    if hrq.status.as_ref() != Some(&status) {
        hrq.status = Some(status);
        match k8s::replace_budget_status(client, &hrq).await {
            Ok(_) => wrote = true,
            // A create wrote the ledger meanwhile: this rebuild is stale; the next run redoes it.
            Err(e) if e.is_conflict() => {
                return Ok(Outcome {
                    wrote: false,
                    released: 0,
                    figures,
                });
            }
            Err(source) => return Err(write_error("status", source)),
        }
    }

    let remainder = next.remainder(&budget).map_err(unreadable)?;
    let live_remainder = quotas.remainders.get(&parent);
    let on_quota = live_remainder.and_then(ledger_revision_of);
    let same_hard = live_remainder
        .map(hard_of)
        .transpose()
        .map_err(unreadable)?
        .is_some_and(|hard| hard == remainder);
    // A newer ledger may always write; the same ledger may when the budget changed (an
    // administrator's edit of spec.hard) and the remainder must follow it.
    let may_write = ledger::remainder_is_newer(on_quota, next.revision) || on_quota == Some(next.revision);
    if may_write && !same_hard {
        let mut desired = remainder_quota(&budget_ref, &remainder, next.revision, selector_pair);
        let written = match live_remainder {
            Some(live) => {
                desired.metadata.resource_version = live.resource_version();
                k8s::replace_quota(client, &parent, &desired).await
            }
            None => k8s::create_quota(client, &parent, &desired).await,
        };
        match written {
            Ok(_) => wrote = true,
            Err(e) if e.is_conflict() => {}
            Err(source) => return Err(write_error("remainder quota", source)),
        }
    }
    Ok(Outcome {
        wrote,
        released,
        figures,
    })
}
