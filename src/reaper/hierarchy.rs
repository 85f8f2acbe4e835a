//! The reaper's part of namespace trees (issue 11), run after the expiry sweep: observe every
//! Namespace and build the [`Forest`]; keep tree labels correct (patching only keys with the
//! tree suffix); cascade (a managed child whose parent is gone, expiring/terminating or
//! recreated with another uid is reaped under the same deletion cap and dry run; a full
//! namespace is only detached); and propagation into every namespace in a tree
//! ([`crate::propagate::sync_kind`], each configured kind listed once cluster-wide).
//!
//! Observing and writing is Kubernetes I/O through [`crate::k8s`]; [`plan_namespaces`] (what
//! to patch, reap and sync) is pure.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use serde::Serialize;
use serde_json::Value;

use super::ReaperError;
use super::webhook::WebhookSender;
use crate::k8s::{self, KubeError, ResolvedKind};
use crate::propagate::{Destination, Finding, Propagation, Relist, SyncOptions, SyncReport, sync_kind};
use crate::rules::hierarchy::keys;
use crate::rules::hierarchy::propagation::HashMemo;
use crate::rules::hierarchy::tree::{
    Cascade, CascadeReason, Forest, ObservedNamespace, ParentState, TreeProblem, cascade,
};
use crate::rules::labels::{self, expiry_of, is_managed};
use crate::rules::params::{Expiry, Selector};
use crate::rules::webhook::{EventKind, NamespaceEvent};

/// What the tree part of a sweep needs besides a client and the resolved propagation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeSweepConfig {
    pub selector: Selector,
    pub page_size: u32,
    /// Namespaces synchronized at the same time.
    pub concurrency: usize,
    pub dry_run: bool,
    /// Namespaces this sweep may still delete (the expiry sweep's cap minus what it deleted).
    pub deletions_left: Option<usize>,
}

/// A Namespace as the tree part reads it.
#[derive(Debug, Clone)]
pub struct TreeNamespace {
    pub observed: ObservedNamespace,
    pub managed: bool,
    /// Being deleted (deletionTimestamp set).
    pub terminating: bool,
    pub resource_version: String,
    /// Expiry label (Unix seconds), managed namespaces only.
    pub expiry: Option<i64>,
    /// creationTimestamp (Unix seconds): cascades go oldest first.
    pub created: i64,
}

impl TreeNamespace {
    pub fn from_namespace(namespace: &Namespace, selector: &Selector) -> Self {
        let observed = ObservedNamespace::from(namespace);
        let managed = is_managed(selector, &observed.labels);
        let expiry = if managed {
            expiry_of(&observed.labels).map(|e| e.unix())
        } else {
            None
        };
        Self {
            managed,
            expiry,
            terminating: namespace.metadata.deletion_timestamp.is_some(),
            resource_version: namespace.metadata.resource_version.clone().unwrap_or_default(),
            created: namespace
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_second()),
            observed,
        }
    }

    fn name(&self) -> &str {
        &self.observed.name
    }
}

/// A managed child a cascade deletes, and what its `deleted` notice says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CascadeTarget {
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    pub reason: CascadeReason,
    pub tenant: Option<String>,
    pub parent: Option<String>,
    /// Expiry label (Unix seconds).
    pub expiry: Option<i64>,
}

impl CascadeTarget {
    /// `deleted` to the tenant's webhook, if any (queued, never waited on): a child its
    /// parent took along is as gone as an expired one.
    pub fn announce(&self, webhook: Option<&WebhookSender>) {
        let (Some(webhook), Some(expiry)) = (webhook, self.expiry) else {
            return;
        };
        let event = NamespaceEvent {
            kind: EventKind::Deleted,
            namespace: self.name.clone(),
            uid: self.uid.clone(),
            tenant: self.tenant.clone(),
            parent: self.parent.clone(),
            expiry: Expiry::from_unix(expiry),
        };
        webhook.notify(&event, crate::clock::system_clock());
    }
}

/// A managed child to reap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CascadeEntry {
    pub namespace: String,
    pub reason: &'static str,
    /// `deleted`, `capped`, `planned` (dry run), `gone` (already gone or changed), `failed`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the tree part of a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TreeReport {
    pub dry_run: bool,
    /// Namespaces in a tree (with a parent or children).
    pub namespaces_in_trees: usize,
    /// Namespaces whose tree labels were (or would be) patched.
    pub tree_label_patches: usize,
    pub cascades: Vec<CascadeEntry>,
    /// Full namespaces whose parent is gone: tree labels and copies removed, never deleted.
    pub detached: Vec<String>,
    /// Missing parents and cycles.
    pub problems: Vec<String>,
    /// Propagation summed over every namespace; skips once per source and reason.
    pub propagation: SyncReport,
    /// Writes that failed outside propagation (tree-label patches), with the error chain.
    pub failures: Vec<String>,
    pub list_ms: u64,
    pub execute_ms: u64,
}

impl TreeReport {
    /// Whether something failed (the reaper exits non-zero).
    pub fn failed(&self) -> bool {
        !self.failures.is_empty()
            || !self.propagation.failures.is_empty()
            || self.cascades.iter().any(|c| c.outcome == "failed")
    }

    /// Write requests sent by the tree part.
    pub fn writes(&self) -> usize {
        let cascades = self
            .cascades
            .iter()
            .filter(|c| matches!(c.outcome, "deleted" | "gone" | "failed"))
            .count();
        self.propagation.writes + cascades + if self.dry_run { 0 } else { self.tree_label_patches }
    }

    /// One summary line (and one per finding) for the text report.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for c in &self.cascades {
            let _ = writeln!(
                out,
                "{} cascade reason={} -> {}",
                c.namespace, c.reason, c.outcome
            );
        }
        for d in &self.detached {
            let _ = writeln!(out, "{d} detached");
        }
        let p = &self.propagation;
        for (what, findings) in [
            ("conflict", &p.conflicts),
            ("forged", &p.forged),
            ("skip", &p.skips),
            ("failed", &p.failures),
        ] {
            for f in findings {
                let _ = writeln!(out, "{} {what} {}/{} ({})", f.namespace, f.kind, f.name, f.detail);
            }
        }
        for problem in &self.problems {
            let _ = writeln!(out, "tree problem: {problem}");
        }
        for failure in &self.failures {
            let _ = writeln!(out, "failed: {failure}");
        }
        let _ = writeln!(
            out,
            "trees: {} namespaces in trees; tree-label patches {}; cascades {}; detached {}; \
             copies created {}, updated {}, recreated {}, deleted {}, in sync {}; conflicts {}; \
             forged {}; skips {}; failed {}; writes {}; list {}ms, execute {}ms",
            self.namespaces_in_trees,
            self.tree_label_patches,
            self.cascades.len(),
            self.detached.len(),
            p.created,
            p.updated,
            p.recreated,
            p.deleted,
            p.in_sync,
            p.conflicts.len(),
            p.forged.len(),
            p.skips.len(),
            p.failures.len() + self.failures.len(),
            self.writes(),
            self.list_ms,
            self.execute_ms,
        );
        out
    }
}

/// The pure decisions of the tree part for the observed namespaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreePlan {
    /// Label patches: namespace -> key -> value to set (`Some`) or remove (`None`).
    pub label_patches: BTreeMap<String, BTreeMap<String, Option<String>>>,
    /// Managed children to reap, oldest first.
    pub reap: Vec<CascadeTarget>,
    pub detach: Vec<String>,
    /// Namespaces to synchronize: name -> (ancestors top-most first, labels after the patch).
    pub sync: BTreeMap<String, (Vec<String>, BTreeMap<String, String>)>,
    pub in_trees: usize,
    pub problems: Vec<String>,
}

/// Stable name of a cascade reason for reports.
pub fn reason_name(reason: CascadeReason) -> &'static str {
    match reason {
        CascadeReason::ParentGone => "parentGone",
        CascadeReason::ParentTerminating => "parentTerminating",
        CascadeReason::ParentRecreated => "parentRecreated",
    }
}

fn problem_text(problem: &TreeProblem) -> String {
    match problem {
        TreeProblem::MissingParent { namespace, parent } => {
            format!("{namespace}: parent {parent} does not exist")
        }
        TreeProblem::Cycle { members } => format!("cycle of parents, halted: {}", members.join(", ")),
    }
}

/// Decides tree labels, cascades and which namespaces to synchronize. `now` decides whether a
/// managed parent has expired (its children go with it, in the same sweep).
pub fn plan_namespaces(namespaces: &[TreeNamespace], now: i64) -> TreePlan {
    let forest = Forest::build(namespaces.iter().map(|n| &n.observed));
    let by_name: BTreeMap<&str, &TreeNamespace> = namespaces.iter().map(|n| (n.name(), n)).collect();
    let mut plan = TreePlan {
        problems: forest.problems().iter().map(problem_text).collect(),
        ..TreePlan::default()
    };
    let mut reap = Vec::new();
    for ns in namespaces {
        let name = ns.name();
        if forest.in_tree(name) {
            plan.in_trees += 1;
        }
        if ns.terminating {
            continue;
        }
        // Cascade first: a child about to be reaped needs neither labels nor copies.
        if let Some(parent_name) = ns.observed.parent_label() {
            let parent = by_name.get(parent_name).map(|p| ParentState {
                uid: &p.observed.uid,
                terminating: p.terminating || p.expiry.is_some_and(|e| e <= now),
            });
            match cascade(&ns.observed, ns.managed, parent) {
                Cascade::Reap(reason) => {
                    reap.push((ns, reason));
                    continue;
                }
                Cascade::Detach => plan.detach.push(name.to_string()),
                Cascade::Keep => {}
            }
        }
        let Some(diff) = forest.tree_label_changes(&ns.observed) else {
            continue; // halted: nothing in a ring is changed
        };
        let mut labels = ns.observed.labels.clone();
        if !diff.is_empty() {
            let mut patch: BTreeMap<String, Option<String>> = BTreeMap::new();
            for key in &diff.remove {
                labels.remove(key);
                patch.insert(key.clone(), None);
            }
            for (key, value) in &diff.set {
                labels.insert(key.clone(), value.clone());
                patch.insert(key.clone(), Some(value.clone()));
            }
            plan.label_patches.insert(name.to_string(), patch);
        }
        // In a tree, or carrying the marks of one (a detached namespace loses its copies).
        let marked = ns.observed.parent_label().is_some()
            || ns
                .observed
                .labels
                .keys()
                .any(|k| keys::tree_label_ancestor(k).is_some());
        if forest.in_tree(name) || marked {
            let ancestors = forest.ancestors(name).into_iter().map(str::to_string).collect();
            plan.sync.insert(name.to_string(), (ancestors, labels));
        }
    }
    reap.sort_by_key(|(ns, _)| (ns.expiry.unwrap_or(i64::MAX), ns.created, ns.name().to_string()));
    plan.reap = reap
        .into_iter()
        .map(|(ns, reason)| CascadeTarget {
            name: ns.name().to_string(),
            uid: ns.observed.uid.clone(),
            resource_version: ns.resource_version.clone(),
            reason,
            tenant: labels::tenant_of(&ns.observed.labels).map(|t| t.to_string()),
            parent: ns.observed.parent_label().map(str::to_owned),
            expiry: ns.expiry,
        })
        .collect();
    plan
}

fn list_error(kind: &'static str, source: KubeError) -> ReaperError {
    ReaperError::List {
        kind,
        selector: String::new(),
        source,
    }
}

/// The tree part of a sweep at `now`.
pub async fn sweep(
    client: &Client,
    propagation: &Propagation,
    config: &TreeSweepConfig,
    now: i64,
) -> Result<TreeReport, ReaperError> {
    sweep_notifying(client, propagation, config, now, None).await
}

/// [`sweep`], telling `webhook` of each child a cascade deleted.
pub async fn sweep_notifying(
    client: &Client,
    propagation: &Propagation,
    config: &TreeSweepConfig,
    now: i64,
    webhook: Option<&WebhookSender>,
) -> Result<TreeReport, ReaperError> {
    let started = Instant::now();
    let namespaces: Vec<TreeNamespace> = k8s::list_namespaces(client, "", config.page_size)
        .await
        .map_err(|source| list_error("Namespace", source))?
        .iter()
        .map(|n| TreeNamespace::from_namespace(n, &config.selector))
        .collect();
    let plan = plan_namespaces(&namespaces, now);
    drop(namespaces);
    let listed = Instant::now();
    let mut report = TreeReport {
        dry_run: config.dry_run,
        namespaces_in_trees: plan.in_trees,
        tree_label_patches: plan.label_patches.len(),
        detached: plan.detach.clone(),
        problems: plan.problems.clone(),
        list_ms: millis(listed - started),
        ..TreeReport::default()
    };
    if !config.dry_run {
        for (name, patch) in &plan.label_patches {
            if let Err(error) = k8s::patch_namespace_labels(client, name, patch).await {
                report.failures.push(format!(
                    "patch tree labels of {name}: {}",
                    crate::telemetry::chain(&error)
                ));
            }
        }
    }
    report.cascades = reap(client, &plan, config, webhook).await;
    report.propagation = sync_streaming(client, propagation, &plan, config).await?;
    report.execute_ms = millis(listed.elapsed());
    Ok(report)
}

/// The propagation part of a sweep, kind by kind, holding little: the objects of the
/// namespaces that are someone's ancestor (the sources) are listed first and kept; the rest
/// arrive in one cluster-wide LIST, page by page, and each namespace is planned and synced
/// once its objects have all arrived, then dropped. The API server returns a list in storage
/// order (by namespace, then name), so a namespace is complete when a page ends past it. If
/// a namespace ever came back later in the list, it is planned again from what came then:
/// its copies that did not come again look missing, and their creates fail as conflicts
/// (a create never overwrites) and are settled from a fresh list; nothing is deleted for it.
async fn sync_streaming(
    client: &Client,
    propagation: &Propagation,
    plan: &TreePlan,
    config: &TreeSweepConfig,
) -> Result<SyncReport, ReaperError> {
    let sources: BTreeSet<&str> = plan
        .sync
        .values()
        .flat_map(|(ancestors, _)| ancestors.iter().map(String::as_str))
        .collect();
    let hashes = HashMemo::default();
    let mut total = SyncReport::default();
    for kind in propagation.active_kinds() {
        let kept = list_sources(client, kind, &sources, config).await?;
        let mut pending: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let mut planned: BTreeSet<String> = BTreeSet::new();
        let mut next: Option<String> = None;
        loop {
            let (page, token) =
                k8s::list_dynamic_page(client, &kind.resource, config.page_size, next.as_deref())
                    .await
                    .map_err(|source| list_error("propagated kind", source))?;
            let last = page.last().map(|o| namespace_of(o).to_string());
            for object in page {
                let namespace = namespace_of(&object);
                if plan.sync.contains_key(namespace) && !sources.contains(namespace) {
                    pending.entry(namespace.to_string()).or_default().push(object);
                }
            }
            let complete: BTreeMap<String, Vec<Value>> = match (&token, &last) {
                (Some(_), Some(last)) => {
                    let rest = pending.split_off(last);
                    std::mem::replace(&mut pending, rest)
                }
                _ => std::mem::take(&mut pending),
            };
            let batch: BTreeSet<String> = complete.keys().cloned().collect();
            let listed = Listed {
                kept: &kept,
                batch: &complete,
            };
            total.merge(sync_batch(client, propagation, plan, (kind, listed), &batch, config, &hashes).await);
            planned.extend(batch);
            match token {
                Some(token) => next = Some(token),
                None => break,
            }
        }
        // Sources, and namespaces that hold no object of this kind yet.
        let rest: BTreeSet<String> = plan
            .sync
            .keys()
            .filter(|n| !planned.contains(*n))
            .cloned()
            .collect();
        let empty = BTreeMap::new();
        let listed = Listed {
            kept: &kept,
            batch: &empty,
        };
        total.merge(sync_batch(client, propagation, plan, (kind, listed), &rest, config, &hashes).await);
    }
    sort_findings(&mut total);
    dedup_skips(&mut total);
    Ok(total)
}

fn namespace_of(object: &Value) -> &str {
    object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The objects of `kind` in each namespace of `sources`, listed namespace by namespace.
async fn list_sources(
    client: &Client,
    kind: &ResolvedKind,
    sources: &BTreeSet<&str>,
    config: &TreeSweepConfig,
) -> Result<BTreeMap<String, Vec<Value>>, ReaperError> {
    use futures::StreamExt as _;
    let lists: Vec<Result<(String, Vec<Value>), KubeError>> =
        futures::stream::iter(sources.iter().map(|namespace| async move {
            k8s::list_dynamic(client, &kind.resource, Some(namespace), "", config.page_size)
                .await
                .map(|objects| (namespace.to_string(), objects))
        }))
        .buffer_unordered(config.concurrency.max(1))
        .collect()
        .await;
    lists
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|source| list_error("propagated kind", source))
}

/// [`sync_all`] restricted to the namespaces in `batch`.
async fn sync_batch(
    client: &Client,
    propagation: &Propagation,
    plan: &TreePlan,
    kind: (&ResolvedKind, Listed<'_>),
    batch: &BTreeSet<String>,
    config: &TreeSweepConfig,
    hashes: &HashMemo,
) -> SyncReport {
    if batch.is_empty() {
        return SyncReport::default();
    }
    let sub = TreePlan {
        sync: plan
            .sync
            .iter()
            .filter(|(name, _)| batch.contains(*name))
            .map(|(name, entry)| (name.clone(), entry.clone()))
            .collect(),
        ..TreePlan::default()
    };
    sync_all(client, propagation, &sub, &[kind], config, hashes).await
}

/// Listed objects of one kind, by namespace: those kept for the whole sweep (the sources)
/// and the batch being planned now.
#[derive(Debug, Clone, Copy)]
pub(super) struct Listed<'a> {
    pub kept: &'a BTreeMap<String, Vec<Value>>,
    pub batch: &'a BTreeMap<String, Vec<Value>>,
}

impl<'a> Listed<'a> {
    fn get(&self, namespace: &str) -> &'a [Value] {
        self.batch
            .get(namespace)
            .or_else(|| self.kept.get(namespace))
            .map_or(&[][..], Vec::as_slice)
    }
}

async fn reap(
    client: &Client,
    plan: &TreePlan,
    config: &TreeSweepConfig,
    webhook: Option<&WebhookSender>,
) -> Vec<CascadeEntry> {
    let mut left = config.deletions_left;
    let mut entries = Vec::new();
    for target in &plan.reap {
        let CascadeTarget {
            name,
            uid,
            resource_version,
            reason,
            ..
        } = target;
        let mut entry = CascadeEntry {
            namespace: name.clone(),
            reason: reason_name(*reason),
            outcome: "planned",
            error: None,
        };
        if left == Some(0) {
            entry.outcome = "capped";
        } else if !config.dry_run {
            entry.outcome = match k8s::delete_namespace_unchanged(client, name, uid, resource_version).await {
                Ok(()) => {
                    target.announce(webhook);
                    "deleted"
                }
                Err(error) if error.is_gone() => "gone",
                Err(error) => {
                    entry.error = Some(crate::telemetry::chain(&error));
                    "failed"
                }
            };
        }
        if entry.outcome != "capped" {
            left = left.map(|n| n.saturating_sub(1));
        }
        entries.push(entry);
    }
    entries
}

/// Plans and syncs every namespace of `plan.sync`, for each of `kinds` from its listed
/// objects, with bounded concurrency.
pub(super) async fn sync_all(
    client: &Client,
    propagation: &Propagation,
    plan: &TreePlan,
    kinds: &[(&ResolvedKind, Listed<'_>)],
    config: &TreeSweepConfig,
    hashes: &HashMemo,
) -> SyncReport {
    use futures::StreamExt as _;
    // Collected first: a lazy iterator of borrowing closures is not provably Send in a task
    // (the watch runs this in one).
    let mut tasks = Vec::with_capacity(plan.sync.len());
    for (name, (ancestors, labels)) in &plan.sync {
        tasks.push(async move {
            let mut report = SyncReport::default();
            for (kind, listed) in kinds {
                let sources: Vec<(&str, &[Value])> =
                    ancestors.iter().map(|a| (a.as_str(), listed.get(a))).collect();
                let existing = listed.get(name);
                let destination = Destination { name, labels };
                let first = sync_kind(
                    client,
                    propagation,
                    kind,
                    destination,
                    &sources,
                    existing,
                    SyncOptions {
                        dry_run: config.dry_run,
                        hashes: Some(hashes),
                    },
                )
                .await;
                // Another writer (the provisioner's create, a watching replica) copied
                // into this namespace since the LIST: plan it again from a fresh one.
                let again = Relist {
                    client,
                    propagation,
                    kind,
                    destination,
                    ancestors,
                    page_size: config.page_size,
                };
                report.merge(match again.after_races(first).await {
                    Ok(settled) => settled,
                    Err(e) => SyncReport {
                        failures: vec![Finding {
                            kind: kind.label(),
                            namespace: name.clone(),
                            name: String::new(),
                            detail: crate::telemetry::chain(&e),
                        }],
                        ..SyncReport::default()
                    },
                });
            }
            report
        });
    }
    let reports: Vec<SyncReport> = futures::stream::iter(tasks)
        .buffer_unordered(config.concurrency.max(1))
        .collect()
        .await;
    let mut total = SyncReport::default();
    for report in reports {
        total.merge(report);
    }
    dedup_skips(&mut total);
    sort_findings(&mut total);
    total
}

/// A source is seen from every descendant: one skip per (kind, name, source, reason).
pub(super) fn dedup_skips(report: &mut SyncReport) {
    let mut seen = BTreeSet::new();
    report
        .skips
        .retain(|s| seen.insert((s.kind.clone(), s.name.clone(), s.detail.clone())));
}

fn sort_findings(report: &mut SyncReport) {
    for findings in [
        &mut report.conflicts,
        &mut report.forged,
        &mut report.skips,
        &mut report.failures,
    ] {
        findings.sort_by(|a, b| (&a.namespace, &a.kind, &a.name).cmp(&(&b.namespace, &b.kind, &b.name)));
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str, parent: Option<&str>, managed: bool) -> TreeNamespace {
        let mut labels = BTreeMap::new();
        if let Some(parent) = parent {
            labels.insert(keys::PARENT_LABEL.to_string(), parent.to_string());
        }
        TreeNamespace {
            observed: ObservedNamespace {
                name: name.into(),
                uid: format!("uid-{name}"),
                labels,
                annotations: BTreeMap::new(),
            },
            managed,
            terminating: false,
            resource_version: "1".into(),
            expiry: None,
            created: 0,
        }
    }

    #[test]
    fn labels_are_planned_for_a_tree_and_nothing_else() {
        let plan = plan_namespaces(
            &[
                ns("a", None, false),
                ns("b", Some("a"), true),
                ns("lonely", None, false),
            ],
            0,
        );
        assert_eq!(plan.in_trees, 2);
        let b = &plan.label_patches["b"];
        assert_eq!(b[&keys::tree_label("a")], Some("1".into()));
        assert_eq!(b[&keys::tree_label("b")], Some("0".into()));
        assert!(!plan.label_patches.contains_key("lonely"));
        assert_eq!(plan.sync["b"].0, vec!["a".to_string()]);
        assert!(plan.reap.is_empty());
    }

    #[test]
    fn managed_children_of_gone_expired_or_recreated_parents_are_reaped_full_ones_detached() {
        let mut recreated = ns("r", Some("p"), true);
        recreated
            .observed
            .annotations
            .insert(keys::PARENT_UID_ANNOTATION.into(), "old-uid".into());
        let mut expired = ns("old", None, true);
        expired.expiry = Some(10);
        let mut full = ns("full", Some("gone"), false);
        full.observed.labels.insert(keys::tree_label("gone"), "1".into());
        let plan = plan_namespaces(
            &[
                ns("p", None, false),
                recreated,
                ns("orphan", Some("gone"), true),
                expired,
                ns("child-of-old", Some("old"), true),
                full,
            ],
            100,
        );
        let reaped: BTreeMap<&str, CascadeReason> =
            plan.reap.iter().map(|r| (r.name.as_str(), r.reason)).collect();
        assert_eq!(reaped["r"], CascadeReason::ParentRecreated);
        assert_eq!(reaped["orphan"], CascadeReason::ParentGone);
        assert_eq!(reaped["child-of-old"], CascadeReason::ParentTerminating);
        assert_eq!(plan.detach, vec!["full".to_string()]);
        // Detached: its tree label goes and its copies are planned with no ancestors.
        assert_eq!(plan.label_patches["full"][&keys::tree_label("gone")], None);
        assert_eq!(plan.sync["full"].0, Vec::<String>::new());
    }
}
