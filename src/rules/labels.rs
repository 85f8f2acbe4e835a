//! The label and annotation vocabulary every managed object carries: the
//! keys, the names we give objects, and the questions asked of labels
//! (`expiry_of`, `tenant_of`, `is_managed`). The only place these are read or
//! written. Pure.

use std::collections::BTreeMap;

use super::params::{Expiry, Selector, TenantName};

/// Default `--selector`: the label that marks an object as ours.
pub const DEFAULT_SELECTOR: &str = "controller.observatorium.io=namespace-provisioner";

/// Selector the original Go tool wrote (its code default); used to adopt its namespaces.
pub const LEGACY_SELECTOR: &str = "controller.observatorium.io=namespace-selector";

/// Unix seconds of the expiry instant, as the original tool wrote it.
pub const EXPIRY_LABEL: &str = "controller.observatorium.io/expiry";

/// The same instant in RFC 3339, for people reading `kubectl get -o yaml`.
pub const EXPIRES_AT_ANNOTATION: &str = "controller.observatorium.io/expires-at";

/// The tenant that asked for the namespace.
pub const TENANT_LABEL: &str = "controller.observatorium.io/tenant";

/// Kubernetes username of the identity that created the namespace (the
/// tenant label then holds [`crate::rules::auth::user_tenant`] of it).
pub const OWNER_ANNOTATION: &str = "controller.observatorium.io/owner";

/// Kubernetes user bound to the grant ClusterRole inside the namespace
/// (create with `bindCaller`); a subject of the set's RoleBinding.
pub const BOUND_USER_ANNOTATION: &str = "controller.observatorium.io/bound-user";

/// Field manager for every write, so server-side apply ownership is ours alone.
pub const FIELD_MANAGER: &str = "namespace-provisioner";

/// Name of the ServiceAccount, RoleBinding and Role inside a managed namespace.
pub const OBJECT_NAME: &str = "namespace-provisioner";

/// Name of the RoleBinding that binds the optional namespaced Role.
pub const ROLE_BINDING_FOR_ROLE: &str = "namespace-provisioner-role";

/// Anything labels can be read from: the API's maps, or the reaper's packed pairs.
pub trait Labels {
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// Whether `labels` hold exactly `selector`'s key=value: the object is ours.
pub fn is_managed(selector: &Selector, labels: &impl Labels) -> bool {
    labels.label(selector.key()) == Some(selector.value())
}

/// The expiry instant, if the label holds a valid one.
pub fn expiry_of(labels: &impl Labels) -> Option<Expiry> {
    labels.label(EXPIRY_LABEL).and_then(|v| v.parse().ok())
}

/// The tenant, if the label holds a valid tenant name.
pub fn tenant_of(labels: &impl Labels) -> Option<TenantName> {
    labels.label(TENANT_LABEL).and_then(|v| v.parse().ok())
}

/// Whether `labels` belong to `tenant` (compared as written, without parsing).
pub fn belongs_to(labels: &impl Labels, tenant: &TenantName) -> bool {
    labels.label(TENANT_LABEL) == Some(tenant.as_str())
}

/// Label selector for one tenant's objects under `selector`.
pub fn tenant_selector(selector: &Selector, tenant: &TenantName) -> String {
    format!("{},{TENANT_LABEL}={tenant}", selector.to_label_selector())
}

/// Labels every object of a set carries.
pub fn set_labels(selector: &Selector, tenant: &TenantName, expiry: Expiry) -> BTreeMap<String, String> {
    BTreeMap::from([
        (selector.key().to_owned(), selector.value().to_owned()),
        (EXPIRY_LABEL.to_owned(), expiry.to_string()),
        (TENANT_LABEL.to_owned(), tenant.to_string()),
    ])
}

/// The expiry alone, for a namespace whose other labels are not ours (adopted, untenanted).
pub fn expiry_labels(expiry: Expiry) -> BTreeMap<String, String> {
    BTreeMap::from([(EXPIRY_LABEL.to_owned(), expiry.to_string())])
}

/// Annotations every object of a set carries.
pub fn set_annotations(expiry: Expiry) -> BTreeMap<String, String> {
    BTreeMap::from([(EXPIRES_AT_ANNOTATION.to_owned(), expiry.rfc3339())])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn questions_read_only_valid_values() {
        let selector: Selector = DEFAULT_SELECTOR.parse().unwrap();
        let ours = labels(&[
            ("controller.observatorium.io", "namespace-provisioner"),
            (EXPIRY_LABEL, "1800000000"),
            (TENANT_LABEL, "ci"),
        ]);
        assert!(is_managed(&selector, &ours));
        assert_eq!(expiry_of(&ours), Some(Expiry::from_unix(1_800_000_000)));
        assert_eq!(tenant_of(&ours).map(|t| t.to_string()).as_deref(), Some("ci"));
        assert!(belongs_to(&ours, &"ci".parse().unwrap()));
        let theirs = labels(&[
            ("controller.observatorium.io", "namespace-selector"),
            (EXPIRY_LABEL, "soon"),
            (TENANT_LABEL, "Not A Label!"),
        ]);
        assert!(!is_managed(&selector, &theirs));
        assert_eq!(expiry_of(&theirs), None);
        assert_eq!(tenant_of(&theirs), None);
        assert_eq!(
            tenant_selector(&selector, &"ci".parse().unwrap()),
            "controller.observatorium.io=namespace-provisioner,controller.observatorium.io/tenant=ci"
        );
    }
}
