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

mod arrival;
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

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt as _;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use thiserror::Error;
use tokio::sync::Notify;

use self::arrival::Arriving;
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
    let mut into = Observed::default();
    list_each(client, kind, namespace, selector, page_size, |o| into.push(o)).await?;
    Ok(into)
}

/// Hand every object of `kind` carrying `selector` (cluster-wide, or inside `namespace`) to
/// `each` as its page arrives.
async fn list_each(
    client: &Client,
    kind: Kind,
    namespace: Option<&str>,
    selector: &Selector,
    page_size: u32,
    each: impl FnMut(Object),
) -> Result<(), ReaperError> {
    let label_selector = selector.to_label_selector();
    k8s::list_kind(client, kind, namespace, &label_selector, page_size, each)
        .await
        .map_err(|source| ReaperError::List {
            kind: kind.as_str(),
            selector: label_selector,
            source,
        })?;
    Ok(())
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
/// Every kind is listed at once into one [`Arriving`] observation. Each namespace is decided
/// as soon as every kind's list has passed it ([`arrival`]), so no plan is left to make after
/// the last page. One writer keeps at most `concurrency` sets in flight:
/// - the deletions start as soon as the Namespaces are listed: [`plan::plan_deletions`]
///   decides them from the Namespaces alone, as the whole plan does (a property test holds
///   the two equal);
/// - the repairs follow the last page ([`decide_early`] says why not sooner).
///
/// When everything is listed, the run-wide rules (cap, guard, refusal) settle those decisions
/// into the report's plan ([`plan::settle`]); should a LIST have come out of key order, the
/// plan is made again from everything listed instead. Its sets that were neither settled by
/// the deletions nor written early under the very same decision are executed then. A LIST
/// that fails stops the sweep, writes in flight included; those already done are in the audit
/// log and Events, and the next run sees them.
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
    let arriving = Mutex::new(Arriving::default());
    let progress = Notify::new();
    let executor = Executor::new(client.clone(), &config.instance).with_webhook(webhook.cloned());
    let writer = Writer::new(&executor, config.concurrency);
    let listing = {
        let (arriving, progress, writes, refusal) = (&arriving, &progress, writer.sender(), refusal.clone());
        async move {
            let namespaces = async move {
                list_arriving(
                    client,
                    Kind::Namespace,
                    selector,
                    config.page_size,
                    arriving,
                    progress,
                )
                .await?;
                let (deletions, parents) = {
                    let arrived = lock(arriving);
                    let mut deletions = plan::plan_deletions(arrived.namespaces(), now, &config.plan, guard);
                    if let Some(refusal) = refusal {
                        plan::refuse_deletions(&mut deletions, refusal);
                    }
                    // Parents named in the webhook notices of deleted namespaces.
                    let parents = webhook
                        .map(|_| parents_of(arrived.namespaces()))
                        .unwrap_or_default();
                    (deletions, parents)
                };
                if !config.dry_run {
                    for set in &deletions.sets {
                        writes.send(set.clone(), parents.get(&set.namespace).cloned());
                    }
                }
                // The writer runs until its last sender is gone.
                drop(writes);
                Ok::<_, ReaperError>(deletions)
            };
            let kinds = MANAGED_KINDS.into_iter().filter(|kind| kind.is_namespaced());
            let contents = futures::future::try_join_all(
                kinds.map(|kind| list_arriving(client, kind, selector, config.page_size, arriving, progress)),
            );
            let (deletions, _) = futures::try_join!(namespaces, contents)?;
            Ok::<_, ReaperError>((deletions, Instant::now()))
        }
    };
    let early = decide_early(&arriving, &progress, now, config, writer.sender());
    let ((deletions, listed), early, written) =
        futures::try_join!(listing, early, async { Ok(writer.run().await) })?;
    let arrived = lock_owned(arriving);
    let planning = Instant::now();
    let mut plan = match arrived.in_order() {
        true => plan::settle(early.sets, &config.plan, guard),
        false => {
            tracing::warn!("a LIST came back out of key order; planning again from everything listed");
            plan::plan_guarded(&arrived.into_observed(selector).sets(), now, &config.plan, guard)
        }
    };
    if let Some(refusal) = refusal {
        plan::refuse_deletions(&mut plan, refusal);
    }
    log_refusal(&plan);
    let planning = planning.elapsed();
    let outcomes = match config.dry_run {
        true => None,
        false => Some(
            execute_rest(
                &executor,
                &plan,
                &deletions,
                &early.written,
                written.outcomes,
                config.concurrency,
            )
            .await,
        ),
    };
    let durations = Durations {
        list: listed - started,
        plan: planning,
        execute: written.first.map(|first| first.elapsed()).unwrap_or_default(),
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

/// Lock `arriving`; a panic elsewhere while it was held leaves nothing half-done in it worth
/// refusing to read (each push is one step).
fn lock(arriving: &Mutex<Arriving>) -> std::sync::MutexGuard<'_, Arriving> {
    arriving.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock_owned(arriving: Mutex<Arriving>) -> Arriving {
    arriving
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// LIST every object of `kind` carrying `selector`, cluster-wide, into `arriving`, telling
/// `progress` each time the list reaches another namespace, and when it is done.
async fn list_arriving(
    client: &Client,
    kind: Kind,
    selector: &Selector,
    page_size: u32,
    arriving: &Mutex<Arriving>,
    progress: &Notify,
) -> Result<(), ReaperError> {
    list_each(client, kind, None, selector, page_size, |object| {
        if lock(arriving).push(selector, object) {
            progress.notify_one();
        }
    })
    .await?;
    lock(arriving).finish(kind);
    progress.notify_one();
    Ok(())
}

/// Every set's decision, made as soon as its namespace is complete, in name order.
struct Decided {
    sets: Vec<plan::SetPlan>,
    /// Those sent to the writer (repairs, expiries to set), by namespace.
    written: BTreeMap<String, plan::SetPlan>,
}

/// Decide each namespace as soon as it is complete, and once everything is listed, send the
/// repairs (and expiries to set) to the writer, unless this is a dry run.
///
/// The repairs wait for the last page because writes sent while the LISTs are still paging
/// slowed the LISTs down more than they saved: on the 2-core bench machine, sending each
/// repair as soon as its namespace was complete made the LIST phase 1.4-1.5x the bare LIST
/// (NOTES-issue-16-stream.md). Deciding while listing costs nothing the LISTs wait for.
async fn decide_early(
    arriving: &Mutex<Arriving>,
    progress: &Notify,
    now: i64,
    config: &SweepConfig,
    writes: WriteSender,
) -> Result<Decided, ReaperError> {
    let mut decided = Decided {
        sets: Vec::new(),
        written: BTreeMap::new(),
    };
    let mut repairs = Vec::new();
    loop {
        progress.notified().await;
        let (sets, done) = {
            let mut arrived = lock(arriving);
            let sets: Vec<plan::SetPlan> = arrived
                .complete()
                .iter()
                .map(|set| plan::plan_set(set, now, &config.plan))
                .collect();
            (sets, arrived.is_done())
        };
        for set in sets {
            if !config.dry_run && !set.action.writes().is_empty() {
                repairs.push(set.clone());
            }
            decided.sets.push(set);
        }
        if done {
            for set in repairs {
                writes.send(set.clone(), None);
                decided.written.insert(set.namespace.clone(), set);
            }
            return Ok(decided);
        }
    }
}

/// What the writer did: each set's outcome by namespace, and when its first write began.
struct Written {
    outcomes: BTreeMap<String, Outcome>,
    first: Option<Instant>,
}

/// One sender of sets to a [`Writer`], with the parent named in a deletion's notices.
#[derive(Clone)]
struct WriteSender(futures::channel::mpsc::UnboundedSender<(plan::SetPlan, Option<String>)>);

impl WriteSender {
    fn send(&self, set: plan::SetPlan, parent: Option<String>) {
        // Fails only when the writer is gone, which happens only when the sweep is ending on
        // an error anyway.
        let _ = self.0.unbounded_send((set, parent));
    }
}

/// Executes the sets sent to it, at most `concurrency` at a time, until every sender is gone.
struct Writer<'a> {
    executor: &'a Executor,
    concurrency: usize,
    sender: WriteSender,
    receiver: futures::channel::mpsc::UnboundedReceiver<(plan::SetPlan, Option<String>)>,
}

impl<'a> Writer<'a> {
    fn new(executor: &'a Executor, concurrency: usize) -> Self {
        let (sender, receiver) = futures::channel::mpsc::unbounded();
        Self {
            executor,
            concurrency,
            sender: WriteSender(sender),
            receiver,
        }
    }

    fn sender(&self) -> WriteSender {
        self.sender.clone()
    }

    /// Run until every sender but its own is dropped.
    async fn run(self) -> Written {
        let Self {
            executor,
            concurrency,
            sender,
            receiver,
        } = self;
        drop(sender);
        let mut first = None;
        let outcomes = receiver
            .map(|(set, parent)| {
                first.get_or_insert_with(Instant::now);
                async move {
                    let outcome = executor.execute_set_under(&set, parent.as_deref()).await;
                    (set.namespace, outcome)
                }
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        Written { outcomes, first }
    }
}

/// The outcomes of `plan`, in its order: those of the sets `deletions` settled, and of those
/// written `early` under the very decision the plan makes, from `written`; the others are
/// executed now.
async fn execute_rest(
    executor: &Executor,
    plan: &plan::Plan,
    deletions: &plan::Plan,
    early: &BTreeMap<String, plan::SetPlan>,
    mut written: BTreeMap<String, Outcome>,
    concurrency: usize,
) -> Vec<Outcome> {
    let settled_by_deletions: std::collections::BTreeSet<&str> =
        deletions.sets.iter().map(|set| set.namespace.as_str()).collect();
    let settled = |set: &plan::SetPlan| {
        settled_by_deletions.contains(set.namespace.as_str()) || early.get(&set.namespace) == Some(set)
    };
    let rest = plan.sets.iter().filter(|set| !settled(set));
    let mut executed = executor.execute_sets(rest, concurrency).await.into_iter();
    plan.sets
        .iter()
        .map(|set| match settled(set) {
            true => written.remove(&set.namespace).unwrap_or(Outcome::Nothing),
            false => executed.next().unwrap_or(Outcome::Nothing),
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
fn parents_of(namespaces: &[observation::ObservedNamespace]) -> BTreeMap<String, String> {
    namespaces
        .iter()
        .filter_map(|ns| {
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
