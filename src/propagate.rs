//! The propagation pipeline (issue 11): bring the copies of the ancestors' objects in one
//! destination namespace up to date, for every configured kind whose mode is not `Ignore`.
//! Shared by the provisioner (a new child, before it answers) and the reaper (every namespace
//! in a tree, each sweep or watch event). Does Kubernetes I/O through [`crate::k8s`]; the
//! decisions are [`crate::rules::hierarchy::propagation::plan_kind`]'s.
//!
//! One write per needed change: `InSync` writes nothing, `Create` is a POST, `Update` a PUT
//! carrying the copy's resourceVersion, `Delete` a DELETE with the copy's uid as
//! precondition, `Recreate` that DELETE then a POST. Conflicts, forged copies and skips are
//! never written, only reported.

use std::collections::BTreeMap;

use kube::Client;
use serde::Serialize;
use serde_json::Value;

use crate::k8s::{self, KubeError, ResolveKindsError, ResolvedKind};
use crate::rules::hierarchy::config::{Mode, PropagationConfig};
use crate::rules::hierarchy::propagation::{self, CopyPlan, HashMemo, KindInDestination, Skip};
use crate::rules::labels::is_managed;
use crate::rules::params::Selector;

/// The propagation configuration with its kinds resolved against the API server.
#[derive(Debug, Clone)]
pub struct Propagation {
    pub config: PropagationConfig,
    pub kinds: Vec<ResolvedKind>,
    /// Objects carrying this label (the provisioner's own set in each managed namespace:
    /// ServiceAccount, RoleBinding, Role) are never sources: every child has its own.
    pub set_selector: Option<Selector>,
}

impl Propagation {
    /// Resolves the configuration's kinds (Roles and RoleBindings always) through discovery.
    pub async fn discover(client: &Client, config: PropagationConfig) -> Result<Self, ResolveKindsError> {
        let kinds = k8s::resolve_kinds(client, &config).await?;
        Ok(Self {
            config,
            kinds,
            set_selector: None,
        })
    }

    /// Never propagate objects carrying `selector` (pass `--selector`; both binaries should).
    pub fn excluding_sets(mut self, selector: Selector) -> Self {
        self.set_selector = Some(selector);
        self
    }

    fn is_source(&self, object: &Value) -> bool {
        self.set_selector
            .as_ref()
            .is_none_or(|selector| !is_managed(selector, &propagation::labels(object)))
    }

    /// The kinds something is done for (mode other than `Ignore`).
    pub fn active_kinds(&self) -> impl Iterator<Item = &ResolvedKind> {
        self.kinds.iter().filter(|kind| kind.mode != Mode::Ignore)
    }
}

/// The namespace copies are synchronized into.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    pub name: &'a str,
    /// Its labels, tree labels included: `select`/`treeSelect` exceptions read them.
    pub labels: &'a BTreeMap<String, String>,
}

/// One object the sync could not or would not write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The source namespace (conflict), claimed source (forged), or the skip/failure reason.
    pub detail: String,
}

/// What a sync did (or, in a dry run, would have done).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    pub created: usize,
    pub updated: usize,
    pub recreated: usize,
    pub deleted: usize,
    pub in_sync: usize,
    /// A destination's own object has a source's name: never overwritten.
    pub conflicts: Vec<Finding>,
    /// Objects with the inherited-from label that are not provably ours: never touched.
    pub forged: Vec<Finding>,
    /// Sources passed over (never-propagated, invalid exceptions), one per source and reason.
    pub skips: Vec<Finding>,
    /// Writes that failed (the error chain in `detail`); the next sweep retries.
    pub failures: Vec<Finding>,
    /// Write requests sent.
    pub writes: usize,
    /// Failed writes that lost a race (409: created, changed or deleted by another writer
    /// since the list); a fresh list and plan resolves them.
    #[serde(skip)]
    pub raced: usize,
}

impl SyncReport {
    /// Adds another report's counts and findings to this one.
    pub fn merge(&mut self, other: SyncReport) {
        self.created += other.created;
        self.updated += other.updated;
        self.recreated += other.recreated;
        self.deleted += other.deleted;
        self.in_sync += other.in_sync;
        self.writes += other.writes;
        self.raced += other.raced;
        self.conflicts.extend(other.conflicts);
        self.forged.extend(other.forged);
        self.skips.extend(other.skips);
        self.failures.extend(other.failures);
    }

    /// Keeps what an attempt that lost a race wrote (its changes and requests), dropping its
    /// findings and in-sync count: the next attempt re-plans the same objects.
    fn merge_writes(&mut self, other: SyncReport) {
        self.created += other.created;
        self.updated += other.updated;
        self.recreated += other.recreated;
        self.deleted += other.deleted;
        self.writes += other.writes;
    }

    /// Copies written (created, updated, recreated) or deleted.
    pub fn changes(&self) -> usize {
        self.created + self.updated + self.recreated + self.deleted
    }
}

/// Why a destination could not be synchronized at all.
#[derive(Debug, thiserror::Error)]
#[error("list {kind} in namespace {namespace} for propagation")]
pub struct SyncListError {
    pub kind: String,
    pub namespace: String,
    #[source]
    pub source: KubeError,
}

/// Attempts of one kind in [`sync_namespace`] while writes lose races (another writer, such
/// as the reaper's watch, copying into the same new child at the same time).
const RACE_ATTEMPTS: usize = 3;

/// Synchronizes every active kind into `destination` from `ancestors` (top-most first),
/// listing each ancestor's and the destination's objects. The provisioner calls this for a new
/// child before it answers. A kind whose writes lost a race to another writer (409) is listed
/// and planned again, up to [`RACE_ATTEMPTS`] times: what the other wrote is then in sync.
pub async fn sync_namespace(
    client: &Client,
    propagation: &Propagation,
    destination: Destination<'_>,
    ancestors: &[String],
    page_size: u32,
) -> Result<SyncReport, SyncListError> {
    let mut report = SyncReport::default();
    for kind in propagation.active_kinds() {
        let first = sync_kind_listed(client, propagation, kind, destination, ancestors, page_size).await?;
        let again = Relist {
            client,
            propagation,
            kind,
            destination,
            ancestors,
            page_size,
        };
        report.merge(again.after_races(first).await?);
    }
    Ok(report)
}

/// How to list and plan one kind into one destination again, when the writes of an
/// attempt lost races to another writer.
pub struct Relist<'a> {
    pub client: &'a Client,
    pub propagation: &'a Propagation,
    pub kind: &'a ResolvedKind,
    pub destination: Destination<'a>,
    pub ancestors: &'a [String],
    pub page_size: u32,
}

impl Relist<'_> {
    /// `first` as it is when none of its writes raced; otherwise its writes, plus the
    /// report of a fresh list and plan (up to [`RACE_ATTEMPTS`] attempts in all, the
    /// last one's findings kept): what the other writer made is then in sync.
    pub async fn after_races(&self, first: SyncReport) -> Result<SyncReport, SyncListError> {
        let mut report = SyncReport::default();
        let mut attempt = first;
        for _ in 1..RACE_ATTEMPTS {
            if attempt.raced == 0 {
                break;
            }
            report.merge_writes(attempt);
            attempt = sync_kind_listed(
                self.client,
                self.propagation,
                self.kind,
                self.destination,
                self.ancestors,
                self.page_size,
            )
            .await?;
        }
        report.merge(attempt);
        Ok(report)
    }
}

/// Lists one kind in `ancestors` and `destination`, then [`sync_kind`].
async fn sync_kind_listed(
    client: &Client,
    propagation: &Propagation,
    kind: &ResolvedKind,
    destination: Destination<'_>,
    ancestors: &[String],
    page_size: u32,
) -> Result<SyncReport, SyncListError> {
    let list = |namespace: String| async move {
        k8s::list_dynamic(client, &kind.resource, Some(&namespace), "", page_size)
            .await
            .map_err(|source| SyncListError {
                kind: kind.label(),
                namespace,
                source,
            })
    };
    let lists = futures::future::try_join_all(
        ancestors
            .iter()
            .cloned()
            .chain(std::iter::once(destination.name.to_string()))
            .map(list),
    )
    .await?;
    let (existing, sources) = lists
        .split_last()
        .map_or((&[][..], &[][..]), |(last, rest)| (last.as_slice(), rest));
    let by_ancestor: Vec<(&str, &[Value])> = ancestors
        .iter()
        .map(String::as_str)
        .zip(sources.iter().map(Vec::as_slice))
        .collect();
    Ok(sync_kind(
        client,
        propagation,
        kind,
        destination,
        &by_ancestor,
        existing,
        SyncOptions::default(),
    )
    .await)
}

/// How a sync runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncOptions<'a> {
    /// Plan only: no write.
    pub dry_run: bool,
    /// The sweep's memo of source hashes, when it syncs many destinations.
    pub hashes: Option<&'a HashMemo>,
}

/// Plans one kind in one destination from already-listed objects and executes the plan
/// (unless `options.dry_run`). The reaper lists each kind once cluster-wide and calls this
/// per namespace.
pub async fn sync_kind(
    client: &Client,
    propagation: &Propagation,
    kind: &ResolvedKind,
    destination: Destination<'_>,
    ancestors: &[(&str, &[Value])],
    existing: &[Value],
    options: SyncOptions<'_>,
) -> SyncReport {
    // The provisioner's own set objects are filtered out of the sources (rarely any: cheap).
    let filtered: Vec<(&str, Vec<Value>)>;
    let sources: Vec<(&str, &[Value])>;
    let ancestors = if propagation.set_selector.is_some()
        && ancestors
            .iter()
            .any(|(_, objects)| objects.iter().any(|o| !propagation.is_source(o)))
    {
        filtered = ancestors
            .iter()
            .map(|(ns, objects)| {
                let kept = objects
                    .iter()
                    .filter(|o| propagation.is_source(o))
                    .cloned()
                    .collect();
                (*ns, kept)
            })
            .collect();
        sources = filtered
            .iter()
            .map(|(ns, objects)| (*ns, objects.as_slice()))
            .collect();
        sources.as_slice()
    } else {
        ancestors
    };
    let plans = propagation::plan_kind(&KindInDestination {
        destination: propagation::Destination {
            mode: kind.mode,
            strip: propagation.config.strip(),
            name: destination.name,
            labels: destination.labels,
            hashes: options.hashes,
        },
        ancestors,
        existing,
    });
    let mut report = SyncReport::default();
    let label = kind.label();
    let finding = |name: &str, detail: String| Finding {
        kind: label.clone(),
        namespace: destination.name.to_string(),
        name: name.to_string(),
        detail,
    };
    for (name, plan) in plans {
        for skip in &plan.skipped {
            let (source_namespace, reason) = match skip {
                Skip::Never { source_namespace, .. } | Skip::Exception { source_namespace, .. } => {
                    (source_namespace, skip.kind())
                }
            };
            let detail = format!("{source_namespace}: {reason}");
            // The same source is seen from every descendant; report it once per sweep.
            if !report.skips.iter().any(|f| f.name == name && f.detail == detail) {
                report.skips.push(finding(&name, detail));
            }
        }
        match plan.plan {
            CopyPlan::Nothing => {}
            CopyPlan::InSync => report.in_sync += 1,
            CopyPlan::Conflict { source_namespace } => {
                report.conflicts.push(finding(&name, source_namespace));
            }
            CopyPlan::Forged { claimed_source } => report.forged.push(finding(&name, claimed_source)),
            write => {
                let outcome = if options.dry_run {
                    Ok(0)
                } else {
                    execute(client, &kind.resource, destination.name, &name, &write).await
                };
                match outcome {
                    Ok(writes) => {
                        report.writes += writes;
                        match write {
                            CopyPlan::Create { .. } => report.created += 1,
                            CopyPlan::Update { .. } => report.updated += 1,
                            CopyPlan::Recreate { .. } => report.recreated += 1,
                            CopyPlan::Delete { .. } => report.deleted += 1,
                            _ => {}
                        }
                    }
                    Err((writes, error)) if is_terminating_namespace(&error) => {
                        // The destination started going away after it was listed: so do its
                        // copies. Not a failure (a sweep would otherwise exit non-zero).
                        report.writes += writes;
                        report.skips.push(finding(
                            &name,
                            format!("{}: namespace-terminating", destination.name),
                        ));
                    }
                    Err((writes, error)) => {
                        report.writes += writes;
                        if error.status_code() == Some(409) {
                            report.raced += 1;
                        }
                        let chain = crate::telemetry::chain(&error);
                        report
                            .failures
                            .push(finding(&name, format!("{}: {chain}", write.kind())));
                    }
                }
            }
        }
    }
    report
}

/// The API server's NamespaceLifecycle admission refuses new objects in a namespace being
/// deleted with a 403 that says so; no other field of the Status tells this case apart.
fn is_terminating_namespace(error: &KubeError) -> bool {
    error.status_code() == Some(403) && error.to_string().contains("because it is being terminated")
}

/// Carries out one writing plan; returns the number of write requests sent.
async fn execute(
    client: &Client,
    resource: &kube::discovery::ApiResource,
    namespace: &str,
    name: &str,
    plan: &CopyPlan,
) -> Result<usize, (usize, KubeError)> {
    match plan {
        CopyPlan::Create { copy } => k8s::create_dynamic(client, resource, namespace, copy)
            .await
            .map(|()| 1)
            .map_err(|e| (1, e)),
        CopyPlan::Update { copy } => k8s::replace_dynamic(client, resource, namespace, name, copy)
            .await
            .map(|()| 1)
            .map_err(|e| (1, e)),
        CopyPlan::Delete { uid, .. } => {
            match k8s::delete_dynamic(client, resource, namespace, name, uid).await {
                // Already gone is what we wanted.
                Err(e) if e.is_not_found() => Ok(1),
                other => other.map(|()| 1).map_err(|e| (1, e)),
            }
        }
        CopyPlan::Recreate { uid, copy, .. } => {
            match k8s::delete_dynamic(client, resource, namespace, name, uid).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err((1, e)),
            }
            k8s::create_dynamic(client, resource, namespace, copy)
                .await
                .map(|()| 2)
                .map_err(|e| (2, e))
        }
        CopyPlan::Nothing | CopyPlan::InSync | CopyPlan::Conflict { .. } | CopyPlan::Forged { .. } => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_counts_and_findings() {
        let mut a = SyncReport {
            created: 1,
            writes: 1,
            ..SyncReport::default()
        };
        let b = SyncReport {
            deleted: 2,
            writes: 2,
            conflicts: vec![Finding {
                kind: "ConfigMap".into(),
                namespace: "c".into(),
                name: "x".into(),
                detail: "p".into(),
            }],
            ..SyncReport::default()
        };
        a.merge(b);
        assert_eq!((a.created, a.deleted, a.writes, a.changes()), (1, 2, 3, 3));
        assert_eq!(a.conflicts.len(), 1);
    }

    #[test]
    fn a_raced_attempt_keeps_its_writes_not_its_findings() {
        let finding = Finding {
            kind: "ConfigMap".into(),
            namespace: "c".into(),
            name: "x".into(),
            detail: "create: 409".into(),
        };
        let mut total = SyncReport::default();
        total.merge_writes(SyncReport {
            created: 1,
            in_sync: 2,
            writes: 2,
            raced: 1,
            failures: vec![finding],
            ..SyncReport::default()
        });
        total.merge(SyncReport {
            in_sync: 3,
            ..SyncReport::default()
        });
        assert_eq!(
            (total.created, total.in_sync, total.writes, total.raced),
            (1, 3, 2, 0)
        );
        assert!(total.failures.is_empty());
    }
}
