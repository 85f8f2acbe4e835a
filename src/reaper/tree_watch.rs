//! Watch mode for namespace trees (issue 11): watches every Namespace and every object of the
//! propagated kinds, maps each event to the namespaces it can change, and re-plans just those:
//! a source's change reaches its namespace's descendants, an edited or deleted copy is restored
//! in its own namespace, and a namespace change re-plans tree labels and cascades. Runs beside
//! the expiry controller, only while the Lease is held. Does Kubernetes I/O through
//! [`crate::k8s`]; the decisions are [`super::hierarchy::plan_namespaces`] and the
//! propagation planner's.
//!
//! Events are batched: the first wakes the worker, everything queued by then joins the batch,
//! so a burst (a new tree, a relist) costs one plan. The reaper's own writes come back as
//! events and find everything in sync: one LIST each, no write.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use kube::Client;
use kube::ResourceExt;
use kube::runtime::watcher::Event;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::execute::REPORTING_CONTROLLER;
use super::hierarchy::{
    TreeNamespace, TreePlan, TreeSweepConfig, observe_objects, plan_namespaces, sync_all,
};
use super::metrics::Metrics;
use crate::clock::system_clock;
use crate::k8s;
use crate::k8s::EventRecorder;
use crate::propagate::{Destination, Finding, Propagation, SyncReport, sync_namespace};
use crate::rules::hierarchy::tree::Forest;
use crate::rules::params::Selector;
use crate::telemetry::chain;

/// Above this many destinations in one pass, each kind is listed once cluster-wide instead of
/// per destination (ancestors + itself).
const PER_NAMESPACE_LISTS: usize = 4;

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

/// What an event can change.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Trigger {
    /// A (re)list finished: everything may have changed.
    All,
    /// A Namespace changed: tree labels, cascades, and what its subtree receives.
    Namespace(String),
    /// An object of a propagated kind changed in this namespace: a source (its descendants)
    /// or a copy (the namespace itself).
    Object(String),
}

/// Runs until the task is aborted or every stream ends.
pub async fn run(client: Client, trees: TreeWatch, metrics: Arc<Metrics>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Trigger, Instant)>();
    let mut streams = Vec::new();
    {
        let tx = tx.clone();
        let events = k8s::watch_namespaces(&client);
        streams.push(tokio::spawn(async move {
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
        }));
    }
    for kind in trees.propagation.active_kinds() {
        let tx = tx.clone();
        let events = k8s::watch_dynamic(&client, &kind.resource);
        streams.push(tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                let trigger = match event {
                    Ok(Event::Apply(o) | Event::Delete(o)) => match o.namespace() {
                        Some(ns) => Trigger::Object(ns),
                        None => continue,
                    },
                    Ok(Event::InitDone) => Trigger::All,
                    Ok(Event::Init | Event::InitApply(_)) => continue,
                    Err(error) => {
                        debug!(error = %chain(&error), "object watch; it re-lists");
                        continue;
                    }
                };
                if tx.send((trigger, Instant::now())).is_err() {
                    return;
                }
            }
        }));
    }
    drop(tx);
    let recorder = EventRecorder::new(client.clone(), REPORTING_CONTROLLER, &trees.instance);
    let mut reported: BTreeSet<(String, String, String)> = BTreeSet::new();
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let oldest = batch.iter().map(|(_, at)| *at).min();
        let triggers: Vec<Trigger> = batch.into_iter().map(|(t, _)| t).collect();
        let found = match pass(&client, &trees, &metrics, &triggers).await {
            Ok(found) => found,
            Err(error) => {
                warn!(error = %chain(&error), "tree pass failed; the next event retries");
                metrics.tree_pass_errors.inc();
                continue;
            }
        };
        report_new_conflicts(&recorder, &mut reported, found).await;
        if let Some(oldest) = oldest {
            metrics.propagation_lag.observe(oldest.elapsed().as_secs_f64());
        }
    }
    for stream in streams {
        stream.abort();
    }
}

/// Which planned namespaces the triggers reach.
fn affected(plan: &TreePlan, forest: &Forest, triggers: &[Trigger]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for trigger in triggers {
        match trigger {
            Trigger::All => return plan.sync.keys().cloned().collect(),
            Trigger::Namespace(name) | Trigger::Object(name) => {
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

async fn pass(
    client: &Client,
    trees: &TreeWatch,
    metrics: &Metrics,
    triggers: &[Trigger],
) -> Result<Found, k8s::KubeError> {
    let namespaces: Vec<TreeNamespace> = k8s::list_namespaces(client, "", trees.page_size)
        .await?
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
    };
    for (name, patch) in &plan.label_patches {
        match k8s::patch_namespace_labels(client, name, patch).await {
            Ok(()) => {
                metrics.tree_label_patches.inc();
            }
            Err(error) => warn!(namespace = %name, error = %chain(&error), "patch tree labels"),
        }
    }
    // Watch mode has no run to cap (as for expiry): each reap is its own decision.
    for (name, uid, resource_version, reason) in &plan.reap {
        match k8s::delete_namespace_unchanged(client, name, uid, resource_version).await {
            Ok(()) => {
                metrics.cascades.inc();
                debug!(namespace = %name, ?reason, "cascade");
            }
            Err(error) if error.is_gone() => {}
            Err(error) => warn!(namespace = %name, error = %chain(&error), "cascade"),
        }
    }
    let targets = affected(&plan, &forest, triggers);
    if targets.len() > PER_NAMESPACE_LISTS {
        // Many destinations (a source edit high in a tree, a relist): one LIST per kind
        // cluster-wide beats two or more per destination.
        let plan = TreePlan {
            sync: plan
                .sync
                .into_iter()
                .filter(|(name, _)| targets.contains(name))
                .collect(),
            ..TreePlan::default()
        };
        let wanted: BTreeSet<String> = plan
            .sync
            .iter()
            .flat_map(|(name, (ancestors, _))| std::iter::once(name).chain(ancestors))
            .cloned()
            .collect();
        let config = TreeSweepConfig {
            selector: trees.selector.clone(),
            page_size: trees.page_size,
            concurrency: trees.concurrency,
            dry_run: false,
            deletions_left: None,
        };
        match observe_objects(client, &trees.propagation, &wanted, trees.page_size).await {
            Ok(objects) => {
                let report = sync_all(client, &trees.propagation, &plan, &objects, &config).await;
                metrics.record_sync(&report);
                found.conflicts.extend(report.conflicts);
            }
            Err(error) => {
                metrics.tree_pass_errors.inc();
                warn!(error = %chain(&error), "propagation");
            }
        }
        return Ok(found);
    }
    // Collected first: a lazy iterator of borrowing closures is not provably Send in a task.
    let mut syncs = Vec::with_capacity(targets.len());
    for name in &targets {
        let (ancestors, labels) = &plan.sync[name];
        syncs.push(sync_namespace(
            client,
            &trees.propagation,
            Destination { name, labels },
            ancestors,
            trees.page_size,
        ));
    }
    let reports: Vec<Result<SyncReport, _>> = futures::stream::iter(syncs)
        .buffer_unordered(trees.concurrency.max(1))
        .collect()
        .await;
    for report in reports {
        match report {
            Ok(report) => {
                metrics.record_sync(&report);
                found.conflicts.extend(report.conflicts);
            }
            Err(error) => {
                metrics.tree_pass_errors.inc();
                warn!(error = %chain(&error), "propagation");
            }
        }
    }
    Ok(found)
}

/// What a pass found that is reported as Events.
struct Found {
    /// Namespace uids, for the Events' references.
    uids: BTreeMap<String, String>,
    conflicts: Vec<Finding>,
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
        assert_eq!(
            names(affected(&plan, &forest, &[Trigger::Object("a".into())])),
            ["a", "a1"]
        );
        assert_eq!(
            names(affected(&plan, &forest, &[Trigger::Object("a1".into())])),
            ["a1"]
        );
        assert_eq!(
            names(affected(&plan, &forest, &[Trigger::Namespace("x".into())])),
            Vec::<String>::new()
        );
        assert_eq!(
            names(affected(&plan, &forest, &[Trigger::All])),
            ["a", "a1", "b", "p"]
        );
        plan.label_patches.insert("b".into(), BTreeMap::new());
        assert_eq!(
            names(affected(&plan, &forest, &[Trigger::Object("a1".into())])),
            ["a1", "b"]
        );
    }
}
