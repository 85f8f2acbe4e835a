//! The reaper: finds every set the provisioner made (by the selector label),
//! deletes the expired ones and repairs the incomplete ones.
//!
//! A sweep is observe -> [`plan`] -> [`execute`] -> [`report`]: paginated
//! LISTs of every kind in [`MANAGED_KINDS`], slimmed and grouped by namespace
//! ([`observation`]), a pure decision per namespace ([`plan`], comparing with
//! [`diff`]), the writes, and a summary. [`watch`] runs the same plan per
//! namespace from a kube-runtime controller, under a leader Lease.
//!
//! Rules the code keeps:
//! - nothing without the selector label is planned for (checked again
//!   client-side after the server's label selection);
//! - a Namespace is deleted only with a uid + resourceVersion precondition;
//! - inside a managed namespace, the objects the desired set names are ours
//!   (re-applied even if someone stripped their labels); other
//!   selector-labelled objects there are reported as strays, not deleted;
//! - a managed namespace without a tenant label (e.g. adopted from the
//!   original tool with `--selector controller.observatorium.io=namespace-selector`)
//!   only gets an expiry; no ServiceAccount or RoleBinding is created in it.
//!
//! This module does Kubernetes I/O (listing) through [`crate::k8s`]; the
//! decisions below it are pure; [`execute`] is the only place it writes.

pub mod brake;
pub mod diff;
pub mod execute;
#[cfg(test)]
mod fixtures;
pub mod hierarchy;
mod kind_store;
pub mod metrics;
pub mod notice;
pub mod observation;
pub mod plan;
pub mod pool;
pub mod quota;
pub mod report;
pub mod tree_watch;
pub mod watch;
pub mod webhook;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use thiserror::Error;

use self::execute::{Executor, Outcome};
use self::observation::Observed;
use self::plan::{MassDeletionGuard, PlanConfig, Refusal};
use self::report::{Durations, Report};
use crate::clock::Clock;
use crate::k8s::skew::{self, Skew};
use crate::k8s::{self, Kind, KubeError, MANAGED_KINDS, Object};
use crate::rules::params::Selector;

/// Everything a sweep needs besides a client.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepConfig {
    pub plan: PlanConfig,
    /// Objects per LIST page.
    pub page_size: u32,
    /// Sets written at the same time.
    pub concurrency: usize,
    /// Plan and report only; write nothing.
    pub dry_run: bool,
    /// Names this process in the Events it emits.
    pub instance: String,
}

/// The guards that make a whole sweep delete nothing (repairs still run),
/// besides the cap: the binary's defaults come from its flags.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Safety {
    /// `None`: `--allow-mass-deletion`.
    pub mass_deletion: Option<MassDeletionGuard>,
    /// `--max-clock-skew`; `None`: the clock is not compared.
    pub max_clock_skew: Option<Duration>,
}

#[derive(Debug, Error)]
pub enum ReaperError {
    #[error("list {kind} with selector {selector}")]
    List {
        kind: &'static str,
        selector: String,
        #[source]
        source: KubeError,
    },
}

impl ReaperError {
    /// Stable name for metric labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::List { .. } => "list",
        }
    }
}

/// Every object of `kind` carrying `selector` (cluster-wide, or inside
/// `namespace`), slimmed into `into` as its page arrives: a sweep never holds
/// more than one page of full objects per kind.
async fn observe_kind(
    client: &Client,
    kind: Kind,
    namespace: Option<&str>,
    selector: &Selector,
    page_size: u32,
) -> Result<Observed, ReaperError> {
    let label_selector = selector.to_label_selector();
    let mut into = Observed::default();
    k8s::list_kind(client, kind, namespace, &label_selector, page_size, |o| {
        into.push(o)
    })
    .await
    .map_err(|source| ReaperError::List {
        kind: kind.as_str(),
        selector: label_selector,
        source,
    })?;
    Ok(into)
}

/// LIST every managed kind cluster-wide (concurrently, paginated) and group
/// them by namespace.
pub async fn observe(client: &Client, selector: &Selector, page_size: u32) -> Result<Observed, ReaperError> {
    let parts = futures::future::try_join_all(
        MANAGED_KINDS.map(|kind| observe_kind(client, kind, None, selector, page_size)),
    )
    .await?;
    Ok(Observed::merge(parts).managed(selector))
}

/// The selector-labelled contents of one namespace, with `namespace` as its
/// Namespace (as the watch saw it).
pub async fn observe_namespace(
    client: &Client,
    namespace: Namespace,
    selector: &Selector,
    page_size: u32,
) -> Result<Observed, ReaperError> {
    let name = namespace.metadata.name.clone().unwrap_or_default();
    let kinds = MANAGED_KINDS.into_iter().filter(|k| k.is_namespaced());
    let mut parts = futures::future::try_join_all(
        kinds.map(|kind| observe_kind(client, kind, Some(&name), selector, page_size)),
    )
    .await?;
    let mut own = Observed::default();
    own.push(Object::Namespace(Box::new(namespace)));
    parts.push(own);
    Ok(Observed::merge(parts).managed(selector))
}

/// One sweep at `now` (Unix seconds): list, plan, execute (unless dry run), report.
/// No safety guard besides the plan's cap (see [`run_safely`]).
///
/// Only a failed LIST is an error; failures of single sets are in the report.
pub async fn sweep(client: &Client, config: &SweepConfig, now: i64) -> Result<Report, ReaperError> {
    sweep_guarded(client, config, now, None, None, None).await
}

/// [`sweep`] under the mass-deletion guard, with the deletions refused
/// already (`refusal`) when the clock cannot be trusted.
async fn sweep_guarded(
    client: &Client,
    config: &SweepConfig,
    now: i64,
    guard: Option<&MassDeletionGuard>,
    refusal: Option<Refusal>,
    webhook: Option<&webhook::WebhookSender>,
) -> Result<Report, ReaperError> {
    // The quota rebuild reads budgets, children and quotas and writes only budgets' status and
    // parents' remainder quotas; a child this sweep deletes is Terminating, which the rebuild
    // counts as live either way. So it runs beside the sweep instead of after it: its LIST's
    // wait for a fresh watch cache (up to 100 ms on a kind nobody wrote lately) no longer
    // adds to the run.
    let rebuild = async {
        if config.dry_run {
            quota::Rebuilt::default()
        } else {
            quota::rebuild_budgets(client, &config.plan.set.selector, config.page_size, now).await
        }
    };
    let (swept, rebuilt) = tokio::join!(sweep_sets(client, config, now, guard, refusal, webhook), rebuild);
    let mut report = swept?;
    report.summary.quota_ledgers_rebuilt = rebuilt.written;
    Ok(report)
}

/// Observe, plan, execute and report the sets (everything of a sweep but the quota rebuild).
///
/// The deletions start as soon as the Namespaces are listed, while the other kinds still are:
/// [`plan::plan_deletions`] decides them from the Namespaces alone, as the whole plan does (a
/// property test holds the two equal). The whole plan is made while they run; its repairs
/// follow them, so at most `concurrency` writes are in flight. A LIST that fails stops the
/// sweep, deletions in flight included; those already done are in the audit log and Events,
/// and the next run sees them Terminating.
async fn sweep_sets(
    client: &Client,
    config: &SweepConfig,
    now: i64,
    guard: Option<&MassDeletionGuard>,
    refusal: Option<Refusal>,
    webhook: Option<&webhook::WebhookSender>,
) -> Result<Report, ReaperError> {
    let started = Instant::now();
    let selector = &config.plan.set.selector;
    let (namespaces_in, namespaces_out) = tokio::sync::oneshot::channel();
    let deletions = async {
        let namespaces = observe_kind(client, Kind::Namespace, None, selector, config.page_size)
            .await?
            .managed(selector);
        let mut deletions = plan::plan_deletions(&namespaces.namespaces, now, &config.plan, guard);
        if let Some(refusal) = refusal.clone() {
            plan::refuse_deletions(&mut deletions, refusal);
        }
        // Parents named in the webhook notices of deleted namespaces.
        let parents = match webhook {
            Some(_) => parents_of(&namespaces),
            None => std::collections::BTreeMap::new(),
        };
        let executor = Executor::new(client.clone(), &config.instance)
            .with_webhook(webhook.cloned())
            .with_parents(parents);
        let writing = Instant::now();
        // Dropped only when the whole plan's LISTs failed, which ends the sweep anyway.
        let _ = namespaces_in.send((namespaces, writing));
        let outcomes = match config.dry_run {
            true => None,
            false => Some(executor.execute(&deletions, config.concurrency).await),
        };
        Ok::<_, ReaperError>((deletions, outcomes, executor, writing))
    };
    let whole = async {
        let kinds = MANAGED_KINDS.into_iter().filter(|kind| kind.is_namespaced());
        let parts = futures::future::try_join_all(
            kinds.map(|kind| observe_kind(client, kind, None, selector, config.page_size)),
        )
        .await?;
        let contents_listed = Instant::now();
        let Ok((namespaces, namespaces_listed)) = namespaces_out.await else {
            // The Namespace LIST failed: its error, from the other branch, is the sweep's.
            return std::future::pending().await;
        };
        let listed = std::cmp::max(contents_listed, namespaces_listed);
        let observed = Observed::merge(parts.into_iter().chain([namespaces])).managed(selector);
        let planning = Instant::now();
        let mut plan = plan::plan_guarded(&observed.sets(), now, &config.plan, guard);
        drop(observed);
        if let Some(refusal) = refusal.clone() {
            plan::refuse_deletions(&mut plan, refusal);
        }
        log_refusal(&plan);
        Ok::<_, ReaperError>((plan, listed, planning.elapsed()))
    };
    let ((deletions, deleted, executor, writing), (plan, listed, planning)) =
        futures::try_join!(deletions, whole)?;
    let outcomes = match deleted {
        None => None,
        Some(deleted) => Some(execute_rest(&executor, &plan, &deletions, deleted, config.concurrency).await),
    };
    let durations = Durations {
        list: listed - started,
        plan: planning,
        execute: match config.dry_run {
            true => Duration::ZERO,
            false => writing.elapsed(),
        },
    };
    let mut report = Report::new(
        &plan,
        outcomes.as_deref(),
        durations,
        config.plan.max_deletions,
        peak_rss_kib(),
    );
    report.expiry = Some(report::ExpirySummary::of(&plan, now));
    Ok(report)
}

/// The outcomes of `plan`, in its order: those of the sets `deletions` settled and `deleted`
/// already, and of the others, executed now.
async fn execute_rest(
    executor: &Executor,
    plan: &plan::Plan,
    deletions: &plan::Plan,
    deleted: Vec<Outcome>,
    concurrency: usize,
) -> Vec<Outcome> {
    let mut settled: std::collections::BTreeMap<&str, Outcome> = deletions
        .sets
        .iter()
        .map(|set| set.namespace.as_str())
        .zip(deleted)
        .collect();
    let rest = plan
        .sets
        .iter()
        .filter(|set| !settled.contains_key(set.namespace.as_str()));
    let mut executed = executor.execute_sets(rest, concurrency).await.into_iter();
    plan.sets
        .iter()
        .map(|set| {
            settled
                .remove(set.namespace.as_str())
                .or_else(|| executed.next())
                .unwrap_or(Outcome::Nothing)
        })
        .collect()
}

/// Say once, loudly, that a guard refused this run's deletions.
fn log_refusal(plan: &plan::Plan) {
    if let Some(refusal) = &plan.refused {
        let refused = plan
            .sets
            .iter()
            .filter(|s| matches!(s.action, plan::Action::DeleteRefused { .. }))
            .count();
        tracing::error!(
            refusal = refusal.kind(),
            deletions_refused = refused,
            "deletions refused: {refusal}"
        );
    }
}

/// Managed namespace -> its parent label, for those that have one.
fn parents_of(observed: &Observed) -> std::collections::BTreeMap<String, String> {
    observed
        .sets()
        .iter()
        .filter_map(|set| {
            let ns = set.namespace?;
            let parent = ns.labels.get(crate::rules::hierarchy::keys::PARENT_LABEL)?;
            Some((ns.name.clone(), parent.to_owned()))
        })
        .collect()
}

/// One sweep now.
pub async fn run(client: &Client, config: &SweepConfig) -> Result<Report, ReaperError> {
    sweep(client, config, crate::clock::system_clock()).await
}

/// One sweep at `clock`'s now under the [`Safety`] guards: the clock is
/// compared with the API server's first, and a skew beyond the bound (or
/// no answer to compare with) refuses every deletion of the run.
pub async fn run_safely(
    client: &Client,
    config: &SweepConfig,
    safety: &Safety,
    clock: Clock,
) -> Result<Report, ReaperError> {
    run_safely_notifying(client, config, safety, clock, None).await
}

/// [`run_safely`], telling `webhook` about each deletion (`expired`, `deleted`).
pub async fn run_safely_notifying(
    client: &Client,
    config: &SweepConfig,
    safety: &Safety,
    clock: Clock,
    webhook: Option<&webhook::WebhookSender>,
) -> Result<Report, ReaperError> {
    let refusal = match safety.max_clock_skew {
        Some(bound) => check_clock(client, clock, bound).await.1,
        None => None,
    };
    sweep_guarded(
        client,
        config,
        clock(),
        safety.mass_deletion.as_ref(),
        refusal,
        webhook,
    )
    .await
}

/// Measure `clock` against the API server's: the skew (when it could be
/// measured) and the refusal it calls for (beyond `bound`, or unmeasured).
pub async fn check_clock(client: &Client, clock: Clock, bound: Duration) -> (Option<Skew>, Option<Refusal>) {
    match skew::measure(client, clock).await {
        Ok(skew) if skew.exceeds(bound) => (
            Some(skew),
            Some(Refusal::ClockSkew {
                reason: skew.describe(bound),
            }),
        ),
        Ok(skew) => {
            tracing::debug!(
                skew_secs = skew.ahead_secs,
                "clock compared with the API server's"
            );
            (Some(skew), None)
        }
        Err(e) => (
            None,
            Some(Refusal::ClockSkew {
                reason: format!(
                    "the local clock could not be compared with the API server's ({})",
                    crate::telemetry::chain(&e)
                ),
            }),
        ),
    }
}

/// Peak resident set size of this process (`VmHWM`), on Linux.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_kib().is_some_and(|k| k > 0));
        }
    }
}
