//! The one room that talks to Kubernetes. Every API call of the crate goes
//! through here: building the client, paginated LIST by selector, server-side
//! apply under one field manager, Namespace create/get/delete with uid
//! preconditions, TokenRequest, TokenReview and SubjectAccessReview, Events, the leader Lease, the readiness probe
//! and the watch streams. Does Kubernetes I/O; knows no product rule beyond
//! what [`crate::rules`] hands it.
//!
//! Callers never read `kube::Error`: they get a [`KubeError`] and ask it
//! domain questions (`is_unavailable()`, `is_conflict()`, `is_gone()`).
//!
//! The managed kinds are one list of data, [`MANAGED_KINDS`] (defined with
//! the rules, re-exported here), and every
//! per-kind operation ([`list_kind`], [`apply_object`], [`delete_object`],
//! [`managed_controller`]) is driven by it.

mod client;
mod dynamic;
mod events;
mod list;
mod pool;
pub mod preflight;
mod quota;
mod render;
mod review;
pub mod skew;
mod token;
mod watch;
mod write;

pub use crate::rules::kinds::{Kind, MANAGED_KINDS, Object};
pub use client::{ClientError, LiveBearer, client_config, counted_client, counted_client_with, ping};
pub use dynamic::{
    ResolveKindsError, ResolvedKind, apply_dynamic, create_dynamic, delete_dynamic, list_dynamic,
    list_dynamic_page, patch_namespace_labels, planner_value, replace_dynamic, resolve_kinds, watch_dynamic,
    watch_namespaces,
};
pub use events::{EventRecorder, annotate_namespace};
pub use list::{list_all, list_all_map, list_kind, list_namespaces, list_namespaces_page};
pub use pool::{patch_namespace_if_unchanged, watch_namespaces_selected};
pub use quota::{
    create_quota, get_budget, get_quota, list_all_budgets, list_budgets, list_quotas_named,
    replace_budget_status, replace_quota, replace_quota_status,
};
pub use render::ApiFailure;
pub use review::{review_access, review_token};
pub use token::{
    IssuedToken, MIN_TOKEN_SECONDS, TokenRequestError, request_token, token_seconds, trusted_ca_pem,
};
pub use watch::{Released, build_lease_manager, free_lease_unchanged, managed_controller, release_lease};
pub use write::{
    ApplyError, apply, apply_contents, apply_namespace, apply_object, create_namespace, delete_namespace,
    delete_namespace_unchanged, delete_object, get_namespace, post_params,
};

/// A failed Kubernetes API call, asked domain questions instead of being
/// matched on. Displays as one readable line (the API server's message once,
/// status, reason and a hint; see `render`) and ends the error chain there,
/// so `kube::Error`'s `Debug` dump of the `Status` never reaches a log.
#[derive(Debug)]
pub struct KubeError {
    error: kube::Error,
    /// The object the request was about, when the caller knows it: fills
    /// the JSON fields the API server's answer leaves out (a 403 names no
    /// object; most Status details carry no namespace).
    /// Boxed: a `KubeError` sits in many error enums; keep it small.
    target: Option<Box<Target>>,
}

/// The object a failed request was about.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    namespace: Option<String>,
    name: String,
}

impl From<kube::Error> for KubeError {
    fn from(error: kube::Error) -> Self {
        Self { error, target: None }
    }
}

impl std::fmt::Display for KubeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&render::line(&self.error))
    }
}

// No `source()`: the line already says everything its sources would repeat.
impl std::error::Error for KubeError {}

/// One line for a `kube::Error` met outside this room (e.g. inside a
/// kube-runtime or Lease-manager error), the same way [`KubeError`] reads.
pub fn render_kube_error(error: &kube::Error) -> String {
    render::line(error)
}

impl KubeError {
    /// Name the object the failed request was about (`namespace` is `None`
    /// for cluster-scoped objects), for the JSON fields of the log line.
    pub fn with_target(mut self, namespace: Option<&str>, name: &str) -> Self {
        self.target = Some(Box::new(Target {
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        }));
        self
    }

    /// The API server is not answering (503 territory) rather than refusing.
    pub fn is_unavailable(&self) -> bool {
        match &self.error {
            kube::Error::Api(status) => matches!(status.code, 429 | 500 | 502 | 503 | 504),
            kube::Error::HyperError(_) | kube::Error::Service(_) => true,
            _ => false,
        }
    }

    /// A precondition or concurrent write conflicted (HTTP 409).
    pub fn is_conflict(&self) -> bool {
        self.status_code() == Some(409)
    }

    /// RBAC refused the request (HTTP 403).
    pub fn is_forbidden(&self) -> bool {
        self.status_code() == Some(403)
    }

    /// The object is not there (HTTP 404).
    pub fn is_not_found(&self) -> bool {
        self.status_code() == Some(404)
    }

    /// Gone, or replaced by another object of the same name: either way not
    /// the object we meant (404 or a failed uid precondition, 409).
    pub fn is_gone(&self) -> bool {
        self.is_not_found() || self.is_conflict()
    }

    /// The refusal as fields (status, reason, kind, name, namespace) for
    /// JSON logs; the request's target fills what the answer leaves out.
    pub fn failure(&self) -> Option<ApiFailure> {
        let kube::Error::Api(status) = &self.error else {
            return None;
        };
        let mut failure = ApiFailure::from_status(status);
        if let Some(target) = &self.target {
            failure.name = failure.name.or_else(|| Some(target.name.clone()));
            failure.namespace = failure.namespace.or_else(|| target.namespace.clone());
        }
        Some(failure)
    }

    /// The HTTP status of an API refusal, if it was one.
    pub fn status_code(&self) -> Option<u16> {
        match &self.error {
            kube::Error::Api(status) => Some(status.code),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> KubeError {
        KubeError::from(kube::Error::Api(Box::new(kube::core::Status {
            code,
            ..kube::core::Status::default()
        })))
    }

    #[test]
    fn the_target_fills_what_the_answer_leaves_out() {
        let failure = status(403)
            .with_target(Some("np-abc"), "namespace-provisioner")
            .failure()
            .unwrap();
        assert_eq!(failure.status, 403);
        assert_eq!(failure.namespace.as_deref(), Some("np-abc"));
        assert_eq!(failure.name.as_deref(), Some("namespace-provisioner"));
        assert_eq!(status(403).failure().unwrap().namespace, None);
    }

    #[test]
    fn domain_questions_read_the_status() {
        assert!(status(503).is_unavailable());
        assert!(status(429).is_unavailable());
        assert!(!status(403).is_unavailable());
        assert!(status(409).is_conflict() && status(409).is_gone());
        assert!(status(404).is_not_found() && status(404).is_gone());
        assert!(!status(500).is_gone());
        assert_eq!(status(422).status_code(), Some(422));
    }
}
