//! Carrying out a plan. Every write goes through [`crate::k8s`]; this is the
//! only place the reaper writes. Does Kubernetes I/O (through `k8s` only).
//!
//! A failure is recorded for its set and the others go on; nothing done is
//! undone.

use futures::StreamExt;
use kube::Client;
use thiserror::Error;
use tracing::{info, warn};

use super::diff::Write;
use super::plan::{Action, SetPlan};
use super::webhook::WebhookSender;
use crate::k8s::{self, EventRecorder, KubeError};
use crate::rules::params::Expiry;
use crate::rules::webhook::{EventKind, NamespaceEvent};
use crate::telemetry::chain;

/// One structured line per state change (issue 15 item 7), with the same
/// field names as the provisioner's: `audit`, `action`, `namespace`,
/// `tenant`, `outcome`, `reason`. Never a token (the reaper holds none).
fn audit(set: &SetPlan, action: &str, outcome: &str, reason: &str) {
    info!(
        audit = true,
        action,
        namespace = %set.namespace,
        tenant = set.tenant.as_deref(),
        outcome,
        reason,
        "audit: {action} {}: {outcome}",
        set.namespace
    );
}

/// Why a set is written, for the audit line: the drift of each write.
fn write_reasons(set: &SetPlan, writes: &[Write]) -> String {
    let drift: Vec<String> = writes
        .iter()
        .map(|w| {
            let reasons: Vec<&str> = w.reasons.iter().map(|r| r.as_str()).collect();
            format!(
                "{}/{} {}",
                w.object.kind().as_str(),
                w.object.name(),
                reasons.join(",")
            )
        })
        .collect();
    match &set.action {
        Action::SetExpiry { previous, .. } => format!(
            "no valid expiry label (was {:?}); {}",
            previous.as_deref().unwrap_or(""),
            drift.join("; ")
        ),
        _ => drift.join("; "),
    }
}

/// `reportingController` of the Events we emit.
pub const REPORTING_CONTROLLER: &str = "namespace-provisioner-reaper";

/// Reason of the Event emitted on a Namespace deleted at expiry.
pub const EXPIRED_REASON: &str = "Expired";

#[derive(Debug, Error)]
pub enum ExecuteError {
    #[error("namespace {namespace} has no uid or resourceVersion; not deleting it without preconditions")]
    NoPrecondition { namespace: String },
    #[error("delete namespace {namespace}")]
    DeleteNamespace {
        namespace: String,
        #[source]
        source: KubeError,
    },
    #[error("apply {kind} {namespace}/{name}")]
    Apply {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: KubeError,
    },
    #[error("delete {kind} {namespace}/{name} to recreate it")]
    DeleteForRecreate {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: KubeError,
    },
}

impl ExecuteError {
    /// Stable name for metric labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoPrecondition { .. } => "no_precondition",
            Self::DeleteNamespace { .. } => "delete_namespace",
            Self::Apply { .. } => "apply",
            Self::DeleteForRecreate { .. } => "delete_for_recreate",
        }
    }
}

/// What happened to one set.
#[derive(Debug)]
pub enum Outcome {
    /// The plan had nothing to write.
    Nothing,
    /// Namespace deleted; `event` is the error if the Event could not be written.
    Deleted { event: Option<KubeError> },
    /// The namespace was gone when we came to delete it.
    Gone,
    /// The namespace changed (or was replaced) since it was observed: not
    /// deleted; the next look decides again.
    Changed,
    /// Every write of a repair or expiry-set succeeded.
    Written { writes: usize },
    /// Some write failed; `writes` did succeed and stay done.
    Failed {
        writes: usize,
        errors: Vec<ExecuteError>,
    },
}

impl Outcome {
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Failed { .. })
    }
}

/// The audit line's `outcome`.
fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Nothing => "nothing",
        Outcome::Deleted { .. } | Outcome::Written { .. } => "done",
        Outcome::Gone => "gone",
        Outcome::Changed => "changed",
        Outcome::Failed { .. } => "failed",
    }
}

/// Carries out plans with one client and one Event recorder.
#[derive(Clone)]
pub struct Executor {
    client: Client,
    recorder: EventRecorder,
    /// `--notify-webhook-config`: `expired` and `deleted` notices.
    webhook: Option<WebhookSender>,
}

impl Executor {
    /// `instance` names this process in the Events it emits (`reportingInstance`).
    pub fn new(client: Client, instance: &str) -> Self {
        let recorder = EventRecorder::new(client.clone(), REPORTING_CONTROLLER, instance);
        Self {
            client,
            recorder,
            webhook: None,
        }
    }

    /// Also tell the tenant's webhook about each deletion.
    pub fn with_webhook(mut self, webhook: Option<WebhookSender>) -> Self {
        self.webhook = webhook;
        self
    }

    /// `expired` then `deleted` to the tenant's webhook, if any (queued, never waited on).
    fn announce_reaped(&self, set: &SetPlan, parent: Option<&str>, uid: &str, expiry: Expiry) {
        let Some(webhook) = &self.webhook else {
            return;
        };
        // An unclaimed warm-pool member (no tenant yet) concerns nobody.
        if set.tenant.is_none() {
            return;
        }
        let now = crate::clock::system_clock();
        for kind in [EventKind::Expired, EventKind::Deleted] {
            let event = NamespaceEvent {
                kind,
                namespace: set.namespace.clone(),
                uid: uid.to_owned(),
                tenant: set.tenant.clone(),
                parent: parent.map(str::to_owned),
                expiry,
            };
            webhook.notify(&event, now);
        }
    }

    /// `sets`, at most `concurrency` at a time; outcomes in their order. Unordered while they
    /// run: a slow write must not hold the window while the sets behind it wait for their
    /// turn. The notices of a deletion among them name no parent (a sweep sends its
    /// deletions, with their parents, to [`Self::execute_set_under`]).
    pub async fn execute_sets<'a>(
        &self,
        sets: impl Iterator<Item = &'a SetPlan>,
        concurrency: usize,
    ) -> Vec<Outcome> {
        let mut outcomes: Vec<(usize, Outcome)> = futures::stream::iter(
            sets.enumerate()
                .map(|(index, set)| async move { (index, self.execute_set_under(set, None).await) }),
        )
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
        outcomes.sort_unstable_by_key(|(index, _)| *index);
        outcomes.into_iter().map(|(_, outcome)| outcome).collect()
    }

    /// One set whose namespace's parent is `parent` (for the notices).
    pub async fn execute_set_under(&self, set: &SetPlan, parent: Option<&str>) -> Outcome {
        let namespace = set.namespace.as_str();
        match &set.action {
            Action::Delete {
                expiry,
                uid,
                resource_version,
            } => {
                let outcome = self.delete(namespace, *expiry, uid, resource_version).await;
                if let Outcome::Deleted { .. } = outcome {
                    self.announce_reaped(set, parent, uid, *expiry);
                }
                let reason = format!("expired at {}", expiry.rfc3339());
                audit(set, "reap", outcome_name(&outcome), &reason);
                outcome
            }
            Action::Repair { writes, .. } | Action::SetExpiry { writes, .. } => {
                let outcome = self.write_all(namespace, writes).await;
                match &outcome {
                    Outcome::Written { writes } => {
                        info!(
                            namespace,
                            action = set.action.name(),
                            writes,
                            "namespace set written"
                        )
                    }
                    Outcome::Failed { errors, .. } => {
                        for error in errors {
                            crate::log_error!(
                                warn,
                                error,
                                set = namespace,
                                action = set.action.name(),
                                "write failed"
                            );
                        }
                    }
                    _ => {}
                }
                if !writes.is_empty() {
                    let action = match set.action {
                        Action::SetExpiry { .. } => "set_expiry",
                        _ => "repair",
                    };
                    audit(set, action, outcome_name(&outcome), &write_reasons(set, writes));
                }
                outcome
            }
            Action::ReportOrphan { objects } => {
                for o in objects {
                    warn!(
                        namespace,
                        kind = o.kind,
                        name = %o.name,
                        "object carries the selector but its namespace is not managed; leaving it alone"
                    );
                }
                Outcome::Nothing
            }
            Action::InSync { .. }
            | Action::DeleteCapped { .. }
            | Action::DeleteRefused { .. }
            | Action::SkipTerminating => Outcome::Nothing,
        }
    }

    async fn delete(&self, namespace: &str, expiry: Expiry, uid: &str, resource_version: &str) -> Outcome {
        if uid.is_empty() || resource_version.is_empty() {
            return Outcome::Failed {
                writes: 0,
                errors: vec![ExecuteError::NoPrecondition {
                    namespace: namespace.to_owned(),
                }],
            };
        }
        match k8s::delete_namespace_unchanged(&self.client, namespace, uid, resource_version).await {
            Ok(()) => {
                info!(namespace, expiry = %expiry.rfc3339(), "expired namespace deleted");
                let event = self.expired_event(namespace, uid, expiry).await.err();
                if let Some(e) = &event {
                    warn!(namespace, error = %chain(e), "could not record the Expired event");
                }
                Outcome::Deleted { event }
            }
            Err(e) if e.is_not_found() => Outcome::Gone,
            Err(e) if e.is_conflict() => {
                info!(
                    namespace,
                    "namespace changed since it was read; not deleted, looking again later"
                );
                Outcome::Changed
            }
            Err(source) => {
                let error = ExecuteError::DeleteNamespace {
                    namespace: namespace.to_owned(),
                    source: source.with_target(Some(namespace), namespace),
                };
                crate::log_error!(warn, &error, set = namespace, "delete failed");
                Outcome::Failed {
                    writes: 0,
                    errors: vec![error],
                }
            }
        }
    }

    /// An Event on the deleted Namespace (written to `default`: the
    /// namespace itself is going away).
    async fn expired_event(&self, namespace: &str, uid: &str, expiry: Expiry) -> Result<(), KubeError> {
        let note = format!(
            "expired at {}; deleted by the namespace-provisioner reaper",
            expiry.rfc3339()
        );
        self.recorder
            .on_namespace(namespace, uid, EXPIRED_REASON, "Delete", note)
            .await
    }

    /// The writes of one set in order (the Namespace first), each tried even
    /// if an earlier one failed.
    async fn write_all(&self, namespace: &str, writes: &[Write]) -> Outcome {
        if writes.is_empty() {
            return Outcome::Nothing;
        }
        let mut done = 0;
        let mut errors = Vec::new();
        for write in writes {
            match self.write(namespace, write).await {
                Ok(()) => done += 1,
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Outcome::Written { writes: done }
        } else {
            Outcome::Failed { writes: done, errors }
        }
    }

    async fn write(&self, namespace: &str, write: &Write) -> Result<(), ExecuteError> {
        let Write {
            object,
            reasons: _,
            recreate_uid,
        } = write;
        let kind = object.kind();
        let name = object.name();
        if let Some(uid) = recreate_uid {
            match k8s::delete_object(&self.client, kind, Some(namespace), &name, uid).await {
                // Gone already (or replaced: then the apply below decides).
                Ok(()) => {}
                Err(e) if e.is_gone() => {}
                Err(source) => {
                    return Err(ExecuteError::DeleteForRecreate {
                        kind: kind.as_str(),
                        namespace: namespace.to_owned(),
                        source: source.with_target(Some(namespace), &name),
                        name,
                    });
                }
            }
        }
        k8s::apply_object(&self.client, namespace, object)
            .await
            .map_err(|source| ExecuteError::Apply {
                kind: kind.as_str(),
                namespace: namespace.to_owned(),
                source: source.with_target(Some(namespace), &name),
                name,
            })
    }
}
