//! The label and annotation vocabulary of the hierarchy (DESIGN.md § Hierarchy).
//! Constants only, plus the two helpers that build and read tree-label keys. No I/O.
//!
//! Everything lives under [`PREFIX`] so that one rule ("a key whose prefix ends in
//! `controller.observatorium.io` is ours") tells our metadata from a user's; copies are
//! compared and hashed with those keys left out, as HNC does with `hnc.x-k8s.io`.

/// The domain every hierarchy key lives under.
pub const PREFIX: &str = "controller.observatorium.io";

/// Label on a child namespace (managed or full): the name of its one parent.
pub const PARENT_LABEL: &str = "controller.observatorium.io/parent";

/// Annotation on a managed child: the uid of the parent it was created under, so a parent that
/// is deleted and recreated under the same name does not silently adopt the old children.
pub const PARENT_UID_ANNOTATION: &str = "controller.observatorium.io/parent-uid";

/// Annotation on a parent namespace: the static-token tenants that may create children there,
/// `a,b` or `*`. Its presence is what makes a namespace a parent.
pub const ALLOWED_TENANTS_ANNOTATION: &str = "controller.observatorium.io/allowed-tenants";

/// Annotation on a parent: the longest TTL a child may ask for (humantime), never above the
/// provisioner's own `--max-ttl`.
pub const MAX_TTL_ANNOTATION: &str = "controller.observatorium.io/max-ttl";

/// Annotation on a parent: how many live children it may have at once.
pub const MAX_CHILDREN_ANNOTATION: &str = "controller.observatorium.io/max-children";

/// Suffix of tree labels: `<ancestor>.tree.controller.observatorium.io/depth=<n>`. Only label
/// keys ending in this suffix are ours to add or remove on a namespace.
pub const TREE_LABEL_SUFFIX: &str = ".tree.controller.observatorium.io/depth";

/// Label on a propagated copy: the namespace of its source.
pub const INHERITED_FROM_LABEL: &str = "controller.observatorium.io/inherited-from";

/// Annotation on a copy: the uid of its source. A copy is only ever updated or deleted when
/// this proves it is ours (see `propagation::ownership`).
pub const SOURCE_UID_ANNOTATION: &str = "controller.observatorium.io/source-uid";

/// Annotation on a copy: the canonical content hash of the source it was written from.
pub const SOURCE_HASH_ANNOTATION: &str = "controller.observatorium.io/source-hash";

/// The well-known managed-by label, set on every copy (replacing the source's value, which is
/// often `Helm` and would make Helm think it owns the copy).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// Value of [`MANAGED_BY_LABEL`] on copies.
pub const MANAGED_BY_VALUE: &str = "namespace-provisioner";

/// Domain of the per-object exception annotations, HNC's `propagate.hnc.x-k8s.io` renamed.
pub const PROPAGATE_PREFIX: &str = "propagate.controller.observatorium.io";

/// Exception: a label selector over the destination namespace's labels (tree labels included).
pub const SELECT_ANNOTATION: &str = "propagate.controller.observatorium.io/select";

/// Exception: `x` (only the subtree of x) and `!x` (not the subtree of x), comma-ANDed.
pub const TREE_SELECT_ANNOTATION: &str = "propagate.controller.observatorium.io/treeSelect";

/// Exception: a Go `strconv.ParseBool` value; true means "propagate nowhere".
pub const NONE_ANNOTATION: &str = "propagate.controller.observatorium.io/none";

/// Exception: a Go `strconv.ParseBool` value; true opts in under `AllowPropagate`.
pub const ALL_ANNOTATION: &str = "propagate.controller.observatorium.io/all";

/// The tree label key naming `ancestor`.
pub fn tree_label(ancestor: &str) -> String {
    format!("{ancestor}{TREE_LABEL_SUFFIX}")
}

/// The ancestor a tree label key names, or `None` when the key is not a tree label.
pub fn tree_label_ancestor(key: &str) -> Option<&str> {
    key.strip_suffix(TREE_LABEL_SUFFIX)
        .filter(|ancestor| !ancestor.is_empty())
}

/// Whether a label or annotation key belongs to us: its prefix (before `/`) is [`PREFIX`] or a
/// subdomain of it (tree labels, exceptions). Such keys never travel from a source to a copy.
pub fn is_ours(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, _)) => prefix == PREFIX || prefix.ends_with(&format!(".{PREFIX}")),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_label_round_trips() {
        let key = tree_label("team-a");
        assert_eq!(key, "team-a.tree.controller.observatorium.io/depth");
        assert_eq!(tree_label_ancestor(&key), Some("team-a"));
        assert_eq!(tree_label_ancestor(TREE_LABEL_SUFFIX), None);
        assert_eq!(tree_label_ancestor("team-a/depth"), None);
    }

    #[test]
    fn ours_is_decided_by_the_prefix_domain() {
        for key in [
            PARENT_LABEL,
            INHERITED_FROM_LABEL,
            SELECT_ANNOTATION,
            "a.tree.controller.observatorium.io/depth",
        ] {
            assert!(is_ours(key), "{key}");
        }
        for key in [
            MANAGED_BY_LABEL,
            "app",
            "xcontroller.observatorium.io/x",
            "example.com/controller.observatorium.io",
        ] {
            assert!(!is_ours(key), "{key}");
        }
    }
}
