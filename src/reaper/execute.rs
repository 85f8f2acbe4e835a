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
use super::plan::{Action, Plan, SetPlan};
use crate::k8s::{self, EventRecorder, KubeError};
use crate::rules::params::Expiry;
use crate::telemetry::chain;

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

/// Carries out plans with one client and one Event recorder.
#[derive(Clone)]
pub struct Executor {
    client: Client,
    recorder: EventRecorder,
}

impl Executor {
    /// `instance` names this process in the Events it emits (`reportingInstance`).
    pub fn new(client: Client, instance: &str) -> Self {
        let recorder = EventRecorder::new(client.clone(), REPORTING_CONTROLLER, instance);
        Self { client, recorder }
    }

    /// Every set of `plan`, at most `concurrency` at a time; outcomes in plan order.
    pub async fn execute(&self, plan: &Plan, concurrency: usize) -> Vec<Outcome> {
        futures::stream::iter(plan.sets.iter().map(|set| self.execute_set(set)))
            .buffered(concurrency.max(1))
            .collect()
            .await
    }

    /// One set.
    pub async fn execute_set(&self, set: &SetPlan) -> Outcome {
        let namespace = set.namespace.as_str();
        match &set.action {
            Action::Delete {
                expiry,
                uid,
                resource_version,
            } => self.delete(namespace, *expiry, uid, resource_version).await,
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
                            warn!(namespace, action = set.action.name(), error = %chain(error), "write failed");
                        }
                    }
                    _ => {}
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
            Action::InSync { .. } | Action::DeleteCapped { .. } | Action::SkipTerminating => Outcome::Nothing,
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
                    source,
                };
                warn!(namespace, error = %chain(&error), "delete failed");
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
                        name,
                        source,
                    });
                }
            }
        }
        k8s::apply_object(&self.client, namespace, object)
            .await
            .map_err(|source| ExecuteError::Apply {
                kind: kind.as_str(),
                namespace: namespace.to_owned(),
                name,
                source,
            })
    }
}
