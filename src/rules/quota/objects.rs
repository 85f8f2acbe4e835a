//! The native ResourceQuotas that enforce the model: the child's allocation and the parent's
//! remainder. Builders only, no I/O; the I/O layer applies them with [`crate::labels::FIELD_MANAGER`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceQuota, ResourceQuotaSpec};
use kube::api::ObjectMeta;

use super::resources::{ResourceList, Resources, ResourcesError};
use crate::rules::hierarchy::keys::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// The quota in a child namespace: `hard` = its allocation.
pub const ALLOCATION_QUOTA: &str = "namespace-provisioner-allocation";

/// The quota in a parent namespace: `hard` = budget − Σ allocations.
pub const REMAINDER_QUOTA: &str = "namespace-provisioner-remainder";

/// Annotation on the remainder quota: the ledger revision its `hard` was computed from
/// (see [`super::ledger::remainder_is_newer`]).
pub const LEDGER_REVISION_ANNOTATION: &str = "controller.observatorium.io/ledger-revision";

/// Annotation on both quotas: the HRQ (`<namespace>/<name>`) whose budget they enforce.
pub const BUDGET_ANNOTATION: &str = "controller.observatorium.io/budget";

/// The child's allocation quota. `selector` is the configured `--selector` label (key, value),
/// so the reaper's listing finds it like every other object we create.
pub fn allocation_quota(
    child: &str,
    budget: &BudgetRef<'_>,
    allocation: &Resources,
    selector: (&str, &str),
) -> ResourceQuota {
    quota(
        ALLOCATION_QUOTA,
        child,
        allocation.to_list(),
        selector,
        [(BUDGET_ANNOTATION.to_owned(), budget.to_string())].into(),
    )
}

/// The parent's remainder quota, stamped with the ledger revision it comes from.
pub fn remainder_quota(
    budget: &BudgetRef<'_>,
    remainder: &Resources,
    ledger_revision: u64,
    selector: (&str, &str),
) -> ResourceQuota {
    quota(
        REMAINDER_QUOTA,
        budget.namespace,
        remainder.to_list(),
        selector,
        [
            (BUDGET_ANNOTATION.to_owned(), budget.to_string()),
            (LEDGER_REVISION_ANNOTATION.to_owned(), ledger_revision.to_string()),
        ]
        .into(),
    )
}

/// The ledger revision a remainder quota was written from; `None` when absent or garbled
/// (then any ledger may overwrite it).
pub fn ledger_revision_of(quota: &ResourceQuota) -> Option<u64> {
    quota
        .metadata
        .annotations
        .as_ref()?
        .get(LEDGER_REVISION_ANNOTATION)?
        .parse()
        .ok()
}

/// `spec.hard` of a quota as it is in the cluster (an allocation, when it is a child's
/// [`ALLOCATION_QUOTA`]); empty when absent.
pub fn hard_of(quota: &ResourceQuota) -> Result<Resources, ResourcesError> {
    quota
        .spec
        .as_ref()
        .and_then(|spec| spec.hard.as_ref())
        .map_or_else(|| Ok(Resources::default()), Resources::parse)
}

/// `status.used` of a quota: what admission has counted in that namespace; empty before the
/// quota controller's first pass.
pub fn used_of(quota: &ResourceQuota) -> Result<Resources, ResourcesError> {
    quota
        .status
        .as_ref()
        .and_then(|status| status.used.as_ref())
        .map_or_else(|| Ok(Resources::default()), Resources::parse)
}

/// Which HRQ a quota enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
}

impl std::fmt::Display for BudgetRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

fn quota(
    name: &str,
    namespace: &str,
    hard: ResourceList,
    (selector_key, selector_value): (&str, &str),
    annotations: BTreeMap<String, String>,
) -> ResourceQuota {
    let labels = [
        (selector_key.to_owned(), selector_value.to_owned()),
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
    ]
    .into();
    ResourceQuota {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..ResourceQuotaSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::quota::resources::{list, res};

    const SELECTOR: (&str, &str) = ("controller.observatorium.io", "namespace-provisioner");
    const BUDGET: BudgetRef<'static> = BudgetRef {
        namespace: "team-a",
        name: "budget",
    };

    #[test]
    fn allocation_quota_carries_the_allocation_and_our_labels() {
        let quota = allocation_quota("np-x1", &BUDGET, &res(&[("cpu", "1.5")]), SELECTOR);
        assert_eq!(quota.metadata.name.as_deref(), Some(ALLOCATION_QUOTA));
        assert_eq!(quota.metadata.namespace.as_deref(), Some("np-x1"));
        let labels = quota.metadata.labels.unwrap_or_default();
        assert_eq!(
            labels.get("controller.observatorium.io").map(String::as_str),
            Some("namespace-provisioner")
        );
        assert_eq!(
            labels.get(MANAGED_BY_LABEL).map(String::as_str),
            Some(MANAGED_BY_VALUE)
        );
        let hard = quota.spec.and_then(|s| s.hard);
        assert_eq!(hard, Some(list(&[("requests.cpu", "1500m")])));
    }

    #[test]
    fn hard_and_used_are_read_back_exactly() {
        let mut quota = allocation_quota("np-x1", &BUDGET, &res(&[("memory", "1Gi")]), SELECTOR);
        assert_eq!(hard_of(&quota), Ok(res(&[("requests.memory", "1073741824")])));
        assert_eq!(used_of(&quota), Ok(Resources::default()));
        quota.status = Some(k8s_openapi::api::core::v1::ResourceQuotaStatus {
            used: Some(list(&[("requests.memory", "512Mi")])),
            ..Default::default()
        });
        assert_eq!(used_of(&quota), Ok(res(&[("requests.memory", "0.5Gi")])));
    }

    #[test]
    fn remainder_quota_records_its_ledger_revision() {
        let quota = remainder_quota(&BUDGET, &res(&[("count/pods", "0")]), 17, SELECTOR);
        assert_eq!(quota.metadata.name.as_deref(), Some(REMAINDER_QUOTA));
        assert_eq!(quota.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(ledger_revision_of(&quota), Some(17));
        let annotations = quota.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations.get(BUDGET_ANNOTATION).map(String::as_str),
            Some("team-a/budget")
        );
        assert_eq!(ledger_revision_of(&ResourceQuota::default()), None);
    }
}
