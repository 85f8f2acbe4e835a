//! Hierarchy: parents, sub-namespaces and propagation of policy from ancestors (issue 11),
//! HNC's model without its admission webhooks. This module is the PURE core: no client, no
//! clock, no I/O. Everything it reads is labels, annotations and objects as JSON; everything it
//! returns is data (forests, label diffs, plans) that the reaper and provisioner execute.
//!
//! # The model
//!
//! * **Tree** ([`tree`]). A namespace names its one parent with the [`keys::PARENT_LABEL`]
//!   label. [`tree::Forest::build`] turns the observed namespaces into a forest; a parent that
//!   does not exist makes the child a root (reported as [`tree::TreeProblem::MissingParent`]),
//!   a ring of parents halts the ring and everything under it ([`tree::Forest::is_halted`]):
//!   nothing there is changed until an administrator fixes a label. Every namespace in a tree
//!   carries `<ancestor>.tree.controller.observatorium.io/depth=<n>` labels for itself (0) and
//!   each ancestor, so selectors and NetworkPolicies can address a subtree;
//!   [`tree::Forest::tree_label_changes`] says which to set and remove, touching no other label
//!   (and nothing in a halted namespace).
//! * **Parents** are namespaces with [`keys::ALLOWED_TENANTS_ANNOTATION`];
//!   [`tree::parent_policy`] reads it with the optional max-ttl / max-children ceilings.
//!   [`tree::check_child_depth`], [`tree::ParentPolicy::check_children`] and
//!   [`tree::child_expiry`] are the create-time checks;
//!   [`tree::cascade`] decides a child's fate when its parent is gone, terminating or recreated
//!   (managed children are reaped, full namespaces only detached).
//! * **Modes** ([`config`]): one YAML file (`--propagation-config`) gives each kind a
//!   [`config::Mode`] (HNC's `Propagate`, `AllowPropagate`, `Remove`, `Ignore`); Roles and
//!   RoleBindings are always `Propagate`; kinds not listed are `Ignore`. The same file says which
//!   GitOps tracking metadata copies lose ([`config::StripRules`]).
//! * **Exceptions** ([`exceptions`]): HNC's `select`, `treeSelect`, `none`, `all` annotations
//!   under `propagate.controller.observatorium.io/`, evaluated in HNC's order; `select` uses the
//!   Kubernetes selector grammar ([`selector`]) and kube's own matcher.
//! * **Propagation** ([`propagation`]): for one destination, kind and name,
//!   [`propagation::plan_object`] picks the top-most ancestor's source that may propagate there
//!   ([`propagation::decide`] answers for one source),
//!   proves whether an existing object is our copy (source uid or intact content hash), and
//!   returns a [`propagation::CopyPlan`]: create, update, recreate (RoleBinding roleRef,
//!   immutable ConfigMap/Secret, Secret type), delete, in sync, or a conflict / forged copy to
//!   report and never touch. [`propagation::plan_kind`] does it for every name of a kind.
//!
//! # How the binaries use it (the I/O: `crate::propagate`, `crate::reaper::hierarchy`, `crate::provision`)
//!
//! * **Reaper**, each `--once` run or watch event: list namespaces → `Forest::build`; for each
//!   namespace, patch its [`tree::Forest::tree_label_changes`]; resolve the config's
//!   kinds through discovery; for each kind whose mode is not `Ignore`, list its objects in tree
//!   namespaces, then for each namespace call [`propagation::plan_kind`] with its ancestors'
//!   objects (top-most first, from `Forest::ancestors`) and its own, and execute the plans
//!   (one write per needed change; `InSync` writes nothing; `Delete`/`Recreate` with a uid
//!   precondition). Report conflicts, forged copies and skips (deduplicated per source).
//!   Cascade with [`tree::cascade`] under the existing deletion caps and dry-run.
//! * **Provisioner**, create with a parent: get the parent and walk up its parent labels (a
//!   [`tree::Forest`] built from that chain alone is enough); read the parent's
//!   [`tree::parent_policy`] (not a parent → refuse; tenant not allowed → 403), check depth,
//!   children and expiry, create the child with the parent label, parent-uid annotation and
//!   [`tree::Forest::new_child_tree_labels`], then execute `plan_kind` for every propagated kind
//!   before answering, so the copies exist when the kubeconfig is handed out.

pub mod config;
pub mod exceptions;
pub mod keys;
pub mod propagation;
pub mod selector;
pub mod tree;
