//! Watch mode for namespace trees (issue 11): watches every Namespace and every object of the
//! propagated kinds, maps each event to the namespaces it can change, and re-plans just those:
//! a source's change reaches its namespace's descendants, an edited or deleted copy is restored
//! in its own namespace, and a namespace change re-plans tree labels and cascades. Runs beside
//! the expiry controller, only while the Lease is held. Does Kubernetes I/O through
//! [`crate::k8s`]; the decisions are [`super::hierarchy::plan_namespaces`] and the
//! propagation planner's.
//!
//! Events are batched: the first wakes the worker, everything queued by then joins the batch,
//! so a burst (a new tree, a relist, one source edit reaching many copies) costs one plan.
//! Every watch feeds a store (a reflector's for Namespaces, a [`KindStore`] per propagated
//! kind, which keeps intact copies compact), and a pass plans from those stores: no LIST per
//! pass, only the writes the plan needs. The reaper's own writes come back as events of intact
//! copies (their content still hashes to their mark), which are dropped before they wake
//! the worker; an edited copy does wake it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::ResourceExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::Event;
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::execute::REPORTING_CONTROLLER;
use super::hierarchy::{
    Listed, TreeNamespace, TreePlan, TreeSweepConfig, dedup_skips, plan_namespaces, sync_all,
};
use super::kind_store::{Change, KindStore};
use super::metrics::Metrics;
use super::watch::ClockRefusal;
use super::webhook::WebhookSender;
use crate::clock::system_clock;
use crate::k8s;
use crate::k8s::EventRecorder;
use crate::propagate::{Finding, Propagation, SyncReport};
use crate::rules::hierarchy::propagation::HashMemo;
use crate::rules::hierarchy::tree::Forest;
use crate::rules::params::Selector;
use crate::telemetry::chain;

/// What the tree watch needs besides a client.
#[derive(Debug, Clone)]
pub struct TreeWatch {
    pub propagation: Arc<Propagation>,
    pub selector: Selector,
    pub page_size: u32,
    pub concurrency: usize,
    /// Names this replica in the Events it emits.
    pub instance: String,
}

/// Namespaces planned together in one pass: their stored objects are converted to JSON
/// together (a pass over 1,000 namespaces of 100 copies each would hold 100,000 at once; a
/// slice of 25 holds 2,500, some 7 MiB).
const PASS_SLICE: usize = 25;

/// What an event can change.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Trigger {
    /// A (re)list finished: everything may have changed.
    All,
    /// A Namespace changed: tree labels, cascades, and what its subtree receives.
    Namespace(String),
    /// An object of a propagated kind changed in this namespace: a source (its descendants)
    /// or a copy (the namespace itself).
    Object(ObjectKey),
}

/// A watched object: its namespace, its kind (index in [`Stores::kinds`]) and its name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ObjectKey {
    namespace: String,
    kind: usize,
    name: String,
}

/// The (kind, name) pairs a pass plans; `None`: every name.
type Names = Option<BTreeSet<(usize, String)>>;

/// The watched state a pass plans from.
struct Stores {
    namespaces: Store<Namespace>,
    /// One per active kind, in [`Propagation::active_kinds`] order.
    kinds: Vec<Arc<KindStore>>,
}

/// Why deletions are refused now (the clock check of watch mode), shared with the expiry
/// controller: a cascade is a deletion too.
pub(super) type DeletionRefusal = Arc<RwLock<Option<ClockRefusal>>>;

/// Runs until the task is aborted or every stream ends.
/// `webhook`: told of each child a cascade deleted.
pub(super) async fn run(
    client: Client,
    trees: TreeWatch,
    metrics: Arc<Metrics>,
    refusal: DeletionRefusal,
    webhook: Option<WebhookSender>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Trigger, Instant)>();
    // A JoinSet: the streams stop with this task, also when it is aborted (leadership lost).
    let mut streams = tokio::task::JoinSet::new();
    let (namespaces, writer) = reflector::store::<Namespace>();
    {
        let tx = tx.clone();
        let events = reflector::reflector(writer, k8s::watch_namespaces(&client).modify(slim));
        streams.spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                let trigger = match event {
                    Ok(Event::Apply(ns) | Event::Delete(ns)) => Trigger::Namespace(ns.name_any()),
                    Ok(Event::InitDone) => Trigger::All,
                    Ok(Event::Init | Event::InitApply(_)) => continue,
                    Err(error) => {
                        debug!(error = %chain(&error), "namespace watch; it re-lists");
                        continue;
                    }
                };
                if tx.send((trigger, Instant::now())).is_err() {
                    return;
                }
            }
        });
    }
    let mut kinds = Vec::new();
    for (index, kind) in trees.propagation.active_kinds().enumerate() {
        let tx = tx.clone();
        let store = Arc::new(KindStore::new(
            kind.resource.clone(),
            trees.propagation.config.strip().clone(),
        ));
        kinds.push(store.clone());
        let events = k8s::watch_dynamic(&client, &kind.resource);
        streams.spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                let trigger = match event.map(|event| store.apply(event)) {
                    Ok(Change::Nothing) => continue,
                    Ok(Change::Object { namespace, name }) => Trigger::Object(ObjectKey {
                        namespace,
                        kind: index,
                        name,
                    }),
                    Ok(Change::Relisted) => Trigger::All,
                    Err(error) => {
                        debug!(error = %chain(&error), "object watch; it re-lists");
                        continue;
                    }
                };
                if tx.send((trigger, Instant::now())).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let stores = Stores { namespaces, kinds };
    // A pass plans from the stores: before every one holds its first list, a missing source
    // would read as deleted.
    let mut ready = stores.namespaces.wait_until_ready().await.is_ok();
    for store in &stores.kinds {
        ready &= store.wait_until_ready().await;
    }
    if !ready {
        warn!("a tree watch stream ended before its first list");
        return;
    }
    let recorder = EventRecorder::new(client.clone(), REPORTING_CONTROLLER, &trees.instance);
    let mut reported: BTreeSet<(String, String, String)> = BTreeSet::new();
    // Cascades refused for the clock are planned again when the clock is next checked.
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let first = match retry_at {
            Some(at) => tokio::select! {
                received = rx.recv() => received,
                () = tokio::time::sleep_until(at) => Some((Trigger::All, Instant::now())),
            },
            None => rx.recv().await,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let oldest = batch.iter().map(|(_, at)| *at).min();
        let triggers: Vec<Trigger> = batch.into_iter().map(|(t, _)| t).collect();
        let refused = refusal.read().unwrap_or_else(PoisonError::into_inner).clone();
        let reason = refused.as_ref().map(|r| r.reason.as_str());
        let found = pass(
            &client,
            &trees,
            &metrics,
            &stores,
            &triggers,
            reason,
            webhook.as_ref(),
        )
        .await;
        retry_at = refused
            .filter(|_| found.cascades_refused)
            .map(|r| tokio::time::Instant::now() + r.recheck);
        report_new_conflicts(&recorder, &mut reported, found).await;
        if let Some(oldest) = oldest {
            metrics.propagation_lag.observe(oldest.elapsed().as_secs_f64());
        }
    }
    streams.abort_all();
}

/// What the Namespace store keeps: everything but managedFields, which the planner never reads
/// and which are often most of an object's size.
fn slim(object: &mut Namespace) {
    object.metadata.managed_fields = None;
}

/// Which planned namespaces the triggers reach.
fn affected(plan: &TreePlan, forest: &Forest, triggers: &[Trigger]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for trigger in triggers {
        match trigger {
            Trigger::All => return plan.sync.keys().cloned().collect(),
            Trigger::Namespace(name) | Trigger::Object(ObjectKey { namespace: name, .. }) => {
                out.insert(name.clone());
                out.extend(forest.descendants(name).into_iter().map(str::to_string));
            }
        }
    }
    // Namespaces whose tree labels change: exceptions select on them.
    out.extend(plan.label_patches.keys().cloned());
    out.retain(|name| plan.sync.contains_key(name));
    out
}

/// Which names a pass must plan. Names are planned independently of each other (a copy is
/// decided by the same-named sources, the destination's labels and itself), so when only
/// objects changed, only their names are: one source edit re-plans one name in each
/// descendant, not every stored object. A namespace change (labels select exceptions), a
/// relist or a tree-label fix re-plans every name.
fn names_to_plan(plan: &TreePlan, triggers: &[Trigger]) -> Names {
    if !plan.label_patches.is_empty() {
        return None;
    }
    triggers
        .iter()
        .map(|trigger| match trigger {
            Trigger::Object(key) => Some((key.kind, key.name.clone())),
            Trigger::All | Trigger::Namespace(_) => None,
        })
        .collect()
}

/// The stored objects of each active kind in the `wanted` namespaces (of the `names`, if
/// given), by namespace; `memo` learns the hashes of the compact copies.
fn stored_objects(
    stores: &Stores,
    wanted: &BTreeSet<String>,
    names: &Names,
    memo: &HashMemo,
) -> Vec<BTreeMap<String, Vec<Value>>> {
    stores
        .kinds
        .iter()
        .enumerate()
        .map(|(index, store)| {
            let of_kind: Option<BTreeSet<&str>> = names.as_ref().map(|names| {
                names
                    .iter()
                    .filter(|(kind, _)| *kind == index)
                    .map(|(_, name)| name.as_str())
                    .collect()
            });
            store.objects(wanted, of_kind.as_ref(), memo)
        })
        .collect()
}

async fn pass(
    client: &Client,
    trees: &TreeWatch,
    metrics: &Metrics,
    stores: &Stores,
    triggers: &[Trigger],
    refusal: Option<&str>,
    webhook: Option<&WebhookSender>,
) -> Found {
    let namespaces: Vec<TreeNamespace> = stores
        .namespaces
        .state()
        .iter()
        .map(|n| TreeNamespace::from_namespace(n, &trees.selector))
        .collect();
    let forest = Forest::build(namespaces.iter().map(|n| &n.observed));
    let plan = plan_namespaces(&namespaces, system_clock());
    let uids: BTreeMap<String, String> = namespaces
        .iter()
        .map(|n| (n.observed.name.clone(), n.observed.uid.clone()))
        .collect();
    drop(namespaces);
    let mut found = Found {
        uids,
        conflicts: Vec::new(),
        cascades_refused: false,
    };
    for (name, patch) in &plan.label_patches {
        match k8s::patch_namespace_labels(client, name, patch).await {
            Ok(()) => {
                metrics.tree_label_patches.inc();
            }
            Err(error) => warn!(namespace = %name, error = %chain(&error), "patch tree labels"),
        }
    }
    // A parent's expiry is judged by this clock: while it is not trusted, no cascade either.
    if let (Some(reason), false) = (refusal, plan.reap.is_empty()) {
        found.cascades_refused = true;
        metrics.clock.refusals.inc_by(plan.reap.len() as u64);
        warn!(
            cascades = plan.reap.len(),
            "cascades refused until the clock is trusted: {reason}"
        );
    }
    let cascades = if refusal.is_some() {
        &[][..]
    } else {
        &plan.reap[..]
    };
    // Watch mode has no run to cap (as for expiry): each reap is its own decision.
    for target in cascades {
        let name = &target.name;
        match k8s::delete_namespace_unchanged(client, name, &target.uid, &target.resource_version).await {
            Ok(()) => {
                metrics.cascades.inc();
                debug!(namespace = %name, reason = ?target.reason, "cascade");
                target.announce(webhook);
            }
            Err(error) if error.is_gone() => {}
            Err(error) => warn!(namespace = %name, error = %chain(&error), "cascade"),
        }
    }
    let targets = affected(&plan, &forest, triggers);
    if targets.is_empty() {
        return found;
    }
    let names = names_to_plan(&plan, triggers);
    let config = TreeSweepConfig {
        selector: trees.selector.clone(),
        page_size: trees.page_size,
        concurrency: trees.concurrency,
        dry_run: false,
        deletions_left: None,
    };
    let mut report = SyncReport::default();
    let sync: Vec<_> = plan
        .sync
        .into_iter()
        .filter(|(name, _)| targets.contains(name))
        .collect();
    // A pass over every name (the first, a relist) converts the stored objects to JSON a
    // slice of namespaces at a time, not all at once; a pass over a few names needs no
    // slices, whose boundaries would each wait for the slowest write.
    let slice_len = if names.is_some() { usize::MAX } else { PASS_SLICE };
    for chunk in sync.chunks(slice_len) {
        let slice = TreePlan {
            sync: chunk.iter().cloned().collect(),
            ..TreePlan::default()
        };
        let wanted: BTreeSet<String> = slice
            .sync
            .iter()
            .flat_map(|(name, (ancestors, _))| std::iter::once(name).chain(ancestors))
            .cloned()
            .collect();
        // A memo per slice: it holds the hashes of the slice's compact copies.
        let hashes = HashMemo::default();
        let objects = stored_objects(stores, &wanted, &names, &hashes);
        let none = BTreeMap::new();
        let kinds: Vec<_> = trees
            .propagation
            .active_kinds()
            .zip(&objects)
            .map(|(kind, kept)| (kind, Listed { kept, batch: &none }))
            .collect();
        report.merge(sync_all(client, &trees.propagation, &slice, &kinds, &config, &hashes).await);
    }
    dedup_skips(&mut report);
    metrics.record_sync(&report);
    found.conflicts.extend(report.conflicts);
    found
}

/// What a pass found that is reported as Events.
struct Found {
    /// Namespace uids, for the Events' references.
    uids: BTreeMap<String, String>,
    conflicts: Vec<Finding>,
    /// Cascades were due but refused for the clock: plan again later.
    cascades_refused: bool,
}

/// One Event per conflict the first time this replica sees it (on the destination Namespace),
/// not on every pass: Events are for people, the metric counts every sighting.
async fn report_new_conflicts(
    recorder: &EventRecorder,
    reported: &mut BTreeSet<(String, String, String)>,
    found: Found,
) {
    for conflict in found.conflicts {
        let key = (
            conflict.namespace.clone(),
            conflict.kind.clone(),
            conflict.name.clone(),
        );
        if reported.contains(&key) {
            continue;
        }
        let uid = found.uids.get(&conflict.namespace).map_or("", String::as_str);
        let note = format!(
            "{} {} in {} has the name of an object propagated from {}: left as it is, not propagated here",
            conflict.kind, conflict.name, conflict.namespace, conflict.detail
        );
        match recorder
            .on_namespace(&conflict.namespace, uid, "PropagationConflict", "Propagate", note)
            .await
        {
            Ok(()) => {
                reported.insert(key);
            }
            Err(error) => debug!(error = %chain(&error), "conflict Event"),
        }
    }
}
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::rules::hierarchy::keys;
    use crate::rules::hierarchy::tree::ObservedNamespace;

    fn ns(name: &str, parent: Option<&str>) -> ObservedNamespace {
        ObservedNamespace {
            name: name.into(),
            labels: parent
                .map(|p| BTreeMap::from([(keys::PARENT_LABEL.to_string(), p.to_string())]))
                .unwrap_or_default(),
            ..ObservedNamespace::default()
        }
    }

    fn object(namespace: &str) -> Trigger {
        Trigger::Object(ObjectKey {
            namespace: namespace.into(),
            kind: 0,
            name: "o".into(),
        })
    }

    #[test]
    fn only_the_changed_names_are_planned_while_only_objects_changed() {
        let mut plan = TreePlan::default();
        let key = |kind, name: &str| (kind, name.to_string());
        let edit = |kind, name: &str| {
            Trigger::Object(ObjectKey {
                namespace: "p".into(),
                kind,
                name: name.into(),
            })
        };
        assert_eq!(
            names_to_plan(&plan, &[edit(0, "a"), edit(1, "a"), edit(0, "b"), edit(0, "a")]),
            Some(BTreeSet::from([key(0, "a"), key(0, "b"), key(1, "a")]))
        );
        assert_eq!(
            names_to_plan(&plan, &[edit(0, "a"), Trigger::Namespace("p".into())]),
            None
        );
        assert_eq!(names_to_plan(&plan, &[Trigger::All, edit(0, "a")]), None);
        plan.label_patches.insert("c".into(), BTreeMap::new());
        assert_eq!(names_to_plan(&plan, &[edit(0, "a")]), None);
    }

    #[test]
    fn a_source_reaches_its_descendants_and_a_copy_its_own_namespace() {
        let all = [
            ns("p", None),
            ns("a", Some("p")),
            ns("a1", Some("a")),
            ns("b", Some("p")),
            ns("x", None),
        ];
        let forest = Forest::build(all.iter());
        let mut plan = TreePlan::default();
        for name in ["p", "a", "a1", "b"] {
            plan.sync.insert(name.into(), (Vec::new(), BTreeMap::new()));
        }
        let names = |set: BTreeSet<String>| set.into_iter().collect::<Vec<_>>();
        assert_eq!(names(affected(&plan, &forest, &[object("a")])), ["a", "a1"]);
        assert_eq!(names(affected(&plan, &forest, &[object("a1")])), ["a1"]);
        assert_eq!(
            names(affected(&plan, &forest, &[Trigger::Namespace("x".into())])),
            Vec::<String>::new()
        );
        assert_eq!(
            names(affected(&plan, &forest, &[Trigger::All])),
            ["a", "a1", "b", "p"]
        );
        plan.label_patches.insert("b".into(), BTreeMap::new());
        assert_eq!(names(affected(&plan, &forest, &[object("a1")])), ["a1", "b"]);
    }
}
