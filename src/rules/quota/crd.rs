//! The `HierarchicalResourceQuota` custom resource (DESIGN.md § Aggregate quota) and the
//! conversions between its status and the pure [`Ledger`]. No I/O. `spec` belongs to the
//! administrator (or GitOps); `status` is written by us only.
//!
//! `kubectl get hrq` cannot print a map, so the status carries a `summary` of one-line strings
//! (`requests.cpu=4,count/pods=10`) that the printer columns point at.

use kube::CustomResource;
use kube::core::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ledger::{Entry, Ledger};
use super::resources::{ResourceList, Resources, ResourcesError};

/// Where the generated CRD manifest is committed, relative to the repository root.
pub const CRD_MANIFEST: &str = "cronjob/base/crd-hierarchicalresourcequota.yaml";

/// A budget for a parent namespace and all its descendants.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[kube(
    group = "controller.observatorium.io",
    version = "v1alpha1",
    kind = "HierarchicalResourceQuota",
    plural = "hierarchicalresourcequotas",
    shortname = "hrq",
    namespaced,
    status = "HierarchicalResourceQuotaStatus",
    derive = "PartialEq",
    doc = "A strict budget for a parent namespace and its descendants: children get allocations from it, enforced by native ResourceQuotas (namespace-provisioner issue 12).",
    // Raw JSON columns: the structured `printcolumn(...)` form repeats `type_ = "string"`,
    // which clippy's duplicated_attributes lint reads as a duplicated attribute.
    printcolumn = r#"{"name":"Budget","type":"string","jsonPath":".status.summary.budget","description":"spec.hard, canonical"}"#,
    printcolumn = r#"{"name":"Allocated","type":"string","jsonPath":".status.summary.allocated","description":"sum of the children's allocations"}"#,
    printcolumn = r#"{"name":"Used","type":"string","jsonPath":".status.summary.used","description":"usage of the parent and all children"}"#,
    printcolumn = r#"{"name":"Children","type":"integer","jsonPath":".status.summary.children"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct HierarchicalResourceQuotaSpec {
    /// The budget: any quota resource name (requests.cpu, limits.memory, count/pods,
    /// requests.nvidia.com/gpu, ...) and its total for the parent and all its children.
    /// Kubernetes writes kube-root-ca.crt and the default ServiceAccount into every child,
    /// possibly before its quota exists: allocate count/configmaps (1 + propagated) and
    /// count/serviceaccounts (2) per child beyond what tenants need; each may run one over
    /// until the quota controller's next resync (docs/quota.md).
    #[schemars(schema_with = "budget_schema")]
    pub hard: ResourceList,
    /// What a child gets for each resource its create does not name; resources named by
    /// neither are allocated 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "budget_schema")]
    pub default_allocation: Option<ResourceList>,
}

impl HierarchicalResourceQuotaSpec {
    /// `spec.hard`, exact.
    pub fn budget(&self) -> Result<Resources, ResourcesError> {
        Resources::parse(&self.hard)
    }

    /// `spec.defaultAllocation`, exact; empty when absent.
    pub fn default_allocation(&self) -> Result<Resources, ResourcesError> {
        self.default_allocation
            .as_ref()
            .map_or_else(|| Ok(Resources::default()), Resources::parse)
    }
}

/// A Kubernetes quantity without a sign or with `+`: the API server refuses a negative or
/// malformed budget at admission, before we ever read it. (k8s-openapi's own Quantity schema
/// carries a page of description on every map value and no pattern.)
const NON_NEGATIVE_QUANTITY: &str =
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]+))?$";

/// Schema of a budget-like ResourceList: resource name → non-negative quantity. `pattern`
/// constrains only strings and `minimum` only integers, so both sit beside the int-or-string
/// marker (as controller-gen writes quantities); inside an `anyOf` each branch would pass the
/// other type vacuously and nothing would be refused.
fn budget_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "additionalProperties": {
            "x-kubernetes-int-or-string": true,
            "minimum": 0,
            "pattern": NON_NEGATIVE_QUANTITY
        }
    })
}

/// Written by the provisioner and the reaper only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HierarchicalResourceQuotaStatus {
    /// Sum of the children's allocations, per budget resource.
    #[serde(default)]
    pub allocated: ResourceList,
    /// Usage of the parent plus every child, per budget resource.
    #[serde(default)]
    pub used: ResourceList,
    /// The ledger: one entry per child holding an allocation.
    #[serde(default)]
    pub children: Vec<ChildAllocation>,
    /// Bumped by every ledger change; the remainder quota records the revision it was
    /// computed from, so an older ledger never overwrites a newer remainder.
    #[serde(default)]
    pub revision: u64,
    /// One-line strings for `kubectl get hrq`.
    #[serde(default)]
    pub summary: Summary,
}

/// One ledger entry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChildAllocation {
    /// Name of the child namespace.
    pub name: String,
    /// Its uid; absent while the create is in flight (a reservation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    pub allocation: ResourceList,
    /// The child's usage, from its allocation quota's status.
    #[serde(default)]
    pub used: ResourceList,
    /// Unix seconds when the allocation was reserved.
    pub reserved_at: i64,
}

/// The printer-column strings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    #[serde(default)]
    pub budget: String,
    #[serde(default)]
    pub allocated: String,
    #[serde(default)]
    pub used: String,
    #[serde(default)]
    pub children: u32,
}

/// `name=quantity,...` with canonical quantities, in name order.
pub fn summarize(resources: &Resources) -> String {
    resources
        .iter()
        .map(|(name, amount)| format!("{name}={amount}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The ledger stored in a status (an absent status is an empty ledger).
pub fn ledger_from_status(
    status: Option<&HierarchicalResourceQuotaStatus>,
) -> Result<Ledger, ResourcesError> {
    let Some(status) = status else {
        return Ok(Ledger::default());
    };
    let entries = status
        .children
        .iter()
        .map(|child| {
            let entry = Entry {
                uid: child.uid.clone(),
                allocation: Resources::parse(&child.allocation)?,
                reserved_at: child.reserved_at,
            };
            Ok((child.name.clone(), entry))
        })
        .collect::<Result<_, ResourcesError>>()?;
    Ok(Ledger {
        entries,
        revision: status.revision,
    })
}

/// Usage to show, as the I/O layer reads it from the native quotas' `status.used`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedUsage {
    /// The parent's own usage (its remainder quota).
    pub parent: Resources,
    /// Each child's usage by name (its allocation quota).
    pub children: std::collections::BTreeMap<String, Resources>,
}

/// The status to write for `ledger` under `budget`, with the usage last observed.
pub fn status_for(
    budget: &Resources,
    ledger: &Ledger,
    usage: &ObservedUsage,
) -> Result<HierarchicalResourceQuotaStatus, ResourcesError> {
    let allocated = ledger.allocated()?.restricted_to(budget);
    let used = super::allocation::aggregate_used(budget, &usage.parent, usage.children.values())?;
    let children = ledger
        .entries
        .iter()
        .map(|(name, entry)| ChildAllocation {
            name: name.clone(),
            uid: entry.uid.clone(),
            allocation: entry.allocation.to_list(),
            used: usage
                .children
                .get(name)
                .map(Resources::to_list)
                .unwrap_or_default(),
            reserved_at: entry.reserved_at,
        })
        .collect::<Vec<_>>();
    let summary = Summary {
        budget: summarize(budget),
        allocated: summarize(&allocated),
        used: summarize(&used),
        children: u32::try_from(children.len()).unwrap_or(u32::MAX),
    };
    Ok(HierarchicalResourceQuotaStatus {
        allocated: allocated.to_list(),
        used: used.to_list(),
        children,
        revision: ledger.revision,
        summary,
    })
}

/// One budget resource as metrics show it: budget, allocated, used in whole units.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceFigures {
    pub resource: String,
    pub budget: f64,
    pub allocated: f64,
    pub used: f64,
}

/// Budget, allocated and used per budget resource, from a status [`status_for`] computed.
pub fn figures(
    budget: &Resources,
    status: &HierarchicalResourceQuotaStatus,
) -> Result<Vec<ResourceFigures>, ResourcesError> {
    let allocated = Resources::parse(&status.allocated)?;
    let used = Resources::parse(&status.used)?;
    Ok(budget
        .iter()
        .map(|(resource, amount)| ResourceFigures {
            resource: resource.to_owned(),
            budget: amount.as_f64(),
            allocated: allocated.get(resource).as_f64(),
            used: used.get(resource).as_f64(),
        })
        .collect())
}

/// The CRD manifest as committed (YAML, with a header saying how to regenerate it).
pub fn crd_manifest() -> Result<String, serde_yaml_ng::Error> {
    let mut crd = HierarchicalResourceQuota::crd();
    // The labels every shipped object carries (the Helm chart's comparison and selectors rely on them).
    crd.metadata.labels = Some(
        [
            ("app.kubernetes.io/name", "namespace-provisioner"),
            ("app.kubernetes.io/component", "quota"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    );
    // schemars writes `minimum` as a float (`0.0`); the API server and kustomize give it
    // back as `0`: write it the way it is stored, so the shipped file equals what is applied.
    let yaml = serde_yaml_ng::to_string(&crd)?.replace("minimum: 0.0\n", "minimum: 0\n");
    Ok(format!(
        "# Generated from src/rules/quota/crd.rs; do not edit. Regenerate: NP_UPDATE_DOCS=1 cargo test --lib quota::crd\n{yaml}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::quota::ledger::reserve;
    use crate::rules::quota::resources::{list, res};

    /// The committed manifest is generated: `NP_UPDATE_DOCS=1 cargo test --lib quota::crd`.
    #[test]
    fn committed_crd_manifest_is_current() {
        let generated = crd_manifest().unwrap_or_else(|e| panic!("{e}"));
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(CRD_MANIFEST);
        if std::env::var_os("NP_UPDATE_DOCS").is_some() {
            std::fs::write(&path, &generated).unwrap_or_else(|e| panic!("{e}"));
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{CRD_MANIFEST} is stale: NP_UPDATE_DOCS=1 cargo test --lib quota::crd"
        );
    }

    #[test]
    fn the_schema_pattern_agrees_with_the_parser() {
        let pattern = regex::Regex::new(NON_NEGATIVE_QUANTITY).unwrap_or_else(|e| panic!("{e}"));
        for good in [
            "1", "1.5", "+2", ".5", "5.", "100M", "1Gi", "2e3", "1E-3", "250u", "0",
        ] {
            assert!(pattern.is_match(good), "{good}");
            assert!(
                good.parse::<crate::rules::quota::quantity::Amount>().is_ok(),
                "{good}"
            );
        }
        for bad in ["-1", "1x", "", "1 Gi", "1e1.5", "Gi", ".", "1ki", "1e"] {
            assert!(!pattern.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn crd_names_and_columns() {
        let crd = HierarchicalResourceQuota::crd();
        assert_eq!(crd.spec.group, "controller.observatorium.io");
        assert_eq!(crd.spec.names.short_names, Some(vec!["hrq".to_owned()]));
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = crd.spec.versions.first();
        assert!(version.is_some_and(|v| v.subresources.as_ref().is_some_and(|s| s.status.is_some())));
        let columns: Vec<String> = version
            .and_then(|v| v.additional_printer_columns.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(columns, ["Budget", "Allocated", "Used", "Children", "Age"]);
    }

    #[test]
    fn spec_reads_the_yaml_an_administrator_writes() {
        let yaml = r#"
apiVersion: controller.observatorium.io/v1alpha1
kind: HierarchicalResourceQuota
metadata: {name: budget, namespace: team-a}
spec:
  hard: {requests.cpu: "4", count/pods: 10, limits.memory: 8Gi}
  defaultAllocation: {requests.cpu: 500m}
"#;
        let hrq: HierarchicalResourceQuota = serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            hrq.spec.default_allocation(),
            Ok(res(&[("requests.cpu", "500m")]))
        );
        assert_eq!(
            hrq.spec.budget(),
            Ok(res(&[
                ("requests.cpu", "4"),
                ("count/pods", "10"),
                ("limits.memory", "8Gi")
            ]))
        );
        assert_eq!(
            hrq.spec.default_allocation,
            Some(list(&[("requests.cpu", "500m")]))
        );
    }

    #[test]
    fn status_round_trips_the_ledger_and_summarizes() {
        let budget = res(&[("requests.cpu", "4"), ("count/pods", "10")]);
        let allocation = res(&[("requests.cpu", "1.5"), ("count/pods", "3")]);
        let ledger = reserve(
            &Ledger::default(),
            &budget,
            &Resources::default(),
            "c1",
            allocation,
            42,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let usage = ObservedUsage {
            parent: res(&[("count/pods", "1")]),
            children: [("c1".to_owned(), res(&[("requests.cpu", "250m")]))].into(),
        };
        let status = status_for(&budget, &ledger, &usage).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status.summary.budget, "count/pods=10,requests.cpu=4");
        assert_eq!(status.summary.allocated, "count/pods=3,requests.cpu=1500m");
        assert_eq!(status.summary.used, "count/pods=1,requests.cpu=250m");
        assert_eq!(status.summary.children, 1);
        assert_eq!(ledger_from_status(Some(&status)), Ok(ledger));
        assert_eq!(ledger_from_status(None), Ok(Ledger::default()));
        let figures = figures(&budget, &status).unwrap_or_else(|e| panic!("{e}"));
        let cpu = ResourceFigures {
            resource: "requests.cpu".into(),
            budget: 4.0,
            allocated: 1.5,
            used: 0.25,
        };
        let pods = ResourceFigures {
            resource: "count/pods".into(),
            budget: 10.0,
            allocated: 3.0,
            used: 1.0,
        };
        assert_eq!(figures, vec![pods, cpu]);
    }
}
