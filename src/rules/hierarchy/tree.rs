//! The namespace forest as the labels describe it: who is whose parent, depth, ancestors,
//! descendants, the tree labels each namespace should carry, and the per-parent policy
//! annotations. Built from what was observed; never fails on a bad tree, it reports. No I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::keys;

/// One observed namespace, as much of it as the hierarchy needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedNamespace {
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl From<&k8s_openapi::api::core::v1::Namespace> for ObservedNamespace {
    fn from(namespace: &k8s_openapi::api::core::v1::Namespace) -> Self {
        let meta = &namespace.metadata;
        Self {
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            annotations: meta.annotations.clone().unwrap_or_default(),
        }
    }
}

impl ObservedNamespace {
    /// The parent named by [`keys::PARENT_LABEL`], if any (an empty value is no parent).
    pub fn parent_label(&self) -> Option<&str> {
        self.labels
            .get(keys::PARENT_LABEL)
            .map(String::as_str)
            .filter(|parent| !parent.is_empty())
    }
}

/// Something wrong with the tree. Reported; the namespaces involved are treated as described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeProblem {
    /// `namespace` names a parent that does not exist: it is treated as a root.
    MissingParent { namespace: String, parent: String },
    /// These namespaces name each other as parents in a ring (a self-parent is a ring of one):
    /// they and everything below them are halted, nothing there is changed.
    Cycle { members: Vec<String> },
}

#[derive(Debug, Clone, Default)]
struct Node {
    parent: Option<String>,
    children: BTreeSet<String>,
    halted: bool,
}

/// The forest of all observed namespaces.
#[derive(Debug, Clone, Default)]
pub struct Forest {
    nodes: BTreeMap<String, Node>,
    problems: Vec<TreeProblem>,
}

impl Forest {
    /// Builds the forest. Parents that do not exist and cycles are reported in [`problems`](Self::problems).
    pub fn build<'a>(namespaces: impl IntoIterator<Item = &'a ObservedNamespace>) -> Self {
        let mut declared: BTreeMap<String, Option<String>> = BTreeMap::new();
        for ns in namespaces {
            declared.insert(ns.name.clone(), ns.parent_label().map(str::to_string));
        }
        let mut forest = Forest::default();
        for (name, parent) in &declared {
            let parent = match parent {
                Some(parent) if !declared.contains_key(parent) => {
                    forest.problems.push(TreeProblem::MissingParent {
                        namespace: name.clone(),
                        parent: parent.clone(),
                    });
                    None
                }
                other => other.clone(),
            };
            forest.nodes.entry(name.clone()).or_default().parent = parent.clone();
            if let Some(parent) = parent {
                forest
                    .nodes
                    .entry(parent)
                    .or_default()
                    .children
                    .insert(name.clone());
            }
        }
        forest.mark_cycles();
        forest
    }

    /// Finds rings by walking up from every node; halts the rings and their subtrees.
    fn mark_cycles(&mut self) {
        let mut seen_rings: BTreeSet<Vec<String>> = BTreeSet::new();
        for start in self.nodes.keys().cloned().collect::<Vec<_>>() {
            let mut path: Vec<String> = Vec::new();
            let mut current = Some(start);
            while let Some(name) = current {
                if let Some(at) = path.iter().position(|seen| *seen == name) {
                    let mut ring = path[at..].to_vec();
                    ring.sort();
                    seen_rings.insert(ring);
                    break;
                }
                current = self.nodes.get(&name).and_then(|node| node.parent.clone());
                path.push(name);
            }
        }
        for ring in seen_rings {
            for member in &ring {
                self.halt_subtree(member);
            }
            self.problems.push(TreeProblem::Cycle { members: ring });
        }
    }

    fn halt_subtree(&mut self, name: &str) {
        let mut stack = vec![name.to_string()];
        while let Some(name) = stack.pop() {
            if let Some(node) = self.nodes.get_mut(&name) {
                if node.halted {
                    continue;
                }
                node.halted = true;
                stack.extend(node.children.iter().cloned());
            }
        }
    }

    /// What is wrong with the tree.
    pub fn problems(&self) -> &[TreeProblem] {
        &self.problems
    }

    /// Whether a namespace is in or under a cycle: nothing in it may be changed until fixed.
    pub fn is_halted(&self, name: &str) -> bool {
        self.nodes.get(name).is_some_and(|node| node.halted)
    }

    /// Whether the namespace was observed.
    pub fn contains(&self, name: &str) -> bool {
        self.nodes.contains_key(name)
    }

    /// The (existing) parent.
    pub fn parent(&self, name: &str) -> Option<&str> {
        self.nodes.get(name)?.parent.as_deref()
    }

    /// Direct children, sorted.
    pub fn children(&self, name: &str) -> impl Iterator<Item = &str> {
        self.nodes
            .get(name)
            .into_iter()
            .flat_map(|node| node.children.iter().map(String::as_str))
    }

    /// Ancestors, the top-most first, the parent last. Empty for roots and halted namespaces
    /// (a ring has no top).
    pub fn ancestors(&self, name: &str) -> Vec<&str> {
        if self.is_halted(name) {
            return Vec::new();
        }
        let mut chain = Vec::new();
        let mut current = self.parent(name);
        while let Some(parent) = current {
            chain.push(parent);
            current = self.parent(parent);
        }
        chain.reverse();
        chain
    }

    /// Number of ancestors: 0 for a root.
    pub fn depth(&self, name: &str) -> usize {
        self.ancestors(name).len()
    }

    /// Every namespace below, breadth first (children before grandchildren), names sorted per
    /// level. In a ring each member is listed once (the walk stops where it started).
    pub fn descendants(&self, name: &str) -> Vec<&str> {
        let mut seen: BTreeSet<&str> = BTreeSet::from([name]);
        let mut out: Vec<&str> = Vec::new();
        let mut level: Vec<&str> = self.children(name).filter(|c| seen.insert(c)).collect();
        while !level.is_empty() {
            out.extend(&level);
            let mut next: Vec<&str> = level
                .iter()
                .flat_map(|child| self.children(child))
                .filter(|c| seen.insert(c))
                .collect();
            next.sort_unstable();
            level = next;
        }
        out
    }

    /// Whether a namespace is in a tree at all: it has a parent or children.
    pub fn in_tree(&self, name: &str) -> bool {
        self.parent(name).is_some() || self.children(name).next().is_some()
    }

    /// The tree labels a namespace should carry: itself at 0 and each ancestor at its distance;
    /// none for a namespace in no tree (so a detached one loses them) or a halted one (left alone,
    /// see [`tree_label_diff`]).
    pub fn desired_tree_labels(&self, name: &str) -> BTreeMap<String, String> {
        if !self.in_tree(name) || self.is_halted(name) {
            return BTreeMap::new();
        }
        let ancestors = self.ancestors(name);
        let mut labels = BTreeMap::new();
        labels.insert(keys::tree_label(name), "0".to_string());
        for (distance, ancestor) in ancestors.iter().rev().enumerate() {
            labels.insert(keys::tree_label(ancestor), (distance + 1).to_string());
        }
        labels
    }

    /// The tree-label change an observed namespace needs; `None` while it is halted (a ring has
    /// no right answer, so its labels stay as they are until an administrator fixes the parents).
    pub fn tree_label_changes(&self, namespace: &ObservedNamespace) -> Option<TreeLabelDiff> {
        if self.is_halted(&namespace.name) {
            return None;
        }
        let desired = self.desired_tree_labels(&namespace.name);
        Some(tree_label_diff(&desired, &namespace.labels))
    }

    /// The tree labels a new child of `parent` is created with: itself at 0, the parent at 1 and
    /// each of the parent's ancestors at its distance. (The parent gets its own `0` label from
    /// the reaper once it has a child.)
    pub fn new_child_tree_labels(&self, parent: &str, child: &str) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        labels.insert(keys::tree_label(child), "0".to_string());
        let mut chain = self.ancestors(parent);
        chain.push(parent);
        for (distance, ancestor) in chain.iter().rev().enumerate() {
            labels.insert(keys::tree_label(ancestor), (distance + 1).to_string());
        }
        labels
    }
}

/// What to change in a namespace's tree labels. Only keys with the tree suffix are ever ours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeLabelDiff {
    /// Tree labels to set (missing or with the wrong depth).
    pub set: BTreeMap<String, String>,
    /// Tree labels to remove.
    pub remove: BTreeSet<String>,
}

impl TreeLabelDiff {
    /// Whether nothing needs writing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

/// The change that takes `current` labels to the `desired` tree labels, touching no other key.
pub fn tree_label_diff(
    desired: &BTreeMap<String, String>,
    current: &BTreeMap<String, String>,
) -> TreeLabelDiff {
    let set = desired
        .iter()
        .filter(|(key, value)| current.get(*key) != Some(value))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let remove = current
        .keys()
        .filter(|key| keys::tree_label_ancestor(key).is_some() && !desired.contains_key(*key))
        .cloned()
        .collect();
    TreeLabelDiff { set, remove }
}

/// Refusal of a child where the tree does not allow one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DepthError {
    #[error("a child of {parent:?} would be at depth {depth}, deeper than the maximum {max_depth}")]
    TooDeep {
        parent: String,
        depth: usize,
        max_depth: usize,
    },
    #[error(
        "{parent:?} is in a cycle of parent labels (or below one); fix the {label} labels first",
        label = keys::PARENT_LABEL
    )]
    ParentInCycle { parent: String },
}

/// The depth a new child of `parent` would have (a root's child is at 1), refused above
/// `max_depth`.
pub fn check_child_depth(forest: &Forest, parent: &str, max_depth: usize) -> Result<usize, DepthError> {
    if forest.is_halted(parent) {
        return Err(DepthError::ParentInCycle {
            parent: parent.into(),
        });
    }
    let depth = forest.depth(parent) + 1;
    if depth > max_depth {
        return Err(DepthError::TooDeep {
            parent: parent.into(),
            depth,
            max_depth,
        });
    }
    Ok(depth)
}

/// Refusal of a child that would outlive its parent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the requested expiry {requested} is after the parent's expiry {parent_expiry} (unix seconds); \
     ask for a TTL that ends by then"
)]
pub struct ExpiryBeyondParent {
    pub requested: i64,
    pub parent_expiry: i64,
}

/// A child's expiry (unix seconds) given its parent's (if the parent expires at all): never later.
pub fn child_expiry(requested: i64, parent_expiry: Option<i64>) -> Result<i64, ExpiryBeyondParent> {
    match parent_expiry {
        Some(parent_expiry) if requested > parent_expiry => Err(ExpiryBeyondParent {
            requested,
            parent_expiry,
        }),
        _ => Ok(requested),
    }
}

/// What happens to a child whose parent is gone, recreated, or still there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cascade {
    /// The parent is there with the recorded uid (or the child is a full namespace whose parent is there).
    Keep,
    /// A managed child whose parent is gone or was recreated with another uid: reap it.
    Reap(CascadeReason),
    /// A full namespace whose parent is gone: remove its tree labels and copies, never delete it.
    Detach,
}

/// Why a child is reaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CascadeReason {
    ParentGone,
    ParentTerminating,
    ParentRecreated,
}

/// The parent as the reaper sees it.
#[derive(Debug, Clone, Copy)]
pub struct ParentState<'a> {
    pub uid: &'a str,
    pub terminating: bool,
}

/// Decides a child's fate from its parent's state. `managed` = the child carries our selector.
pub fn cascade(child: &ObservedNamespace, managed: bool, parent: Option<ParentState<'_>>) -> Cascade {
    let recorded = child.annotations.get(keys::PARENT_UID_ANNOTATION);
    match (managed, parent) {
        (false, None) => Cascade::Detach,
        (false, Some(_)) => Cascade::Keep,
        (true, None) => Cascade::Reap(CascadeReason::ParentGone),
        (true, Some(parent)) if parent.terminating => Cascade::Reap(CascadeReason::ParentTerminating),
        (true, Some(parent)) if recorded.is_some_and(|uid| uid != parent.uid) => {
            Cascade::Reap(CascadeReason::ParentRecreated)
        }
        (true, Some(_)) => Cascade::Keep,
    }
}

/// Which static-token tenants may create children under a parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedTenants {
    Any,
    Only(BTreeSet<String>),
}

impl AllowedTenants {
    /// Whether `tenant` may create children here.
    pub fn allows(&self, tenant: &str) -> bool {
        match self {
            AllowedTenants::Any => true,
            AllowedTenants::Only(tenants) => tenants.contains(tenant),
        }
    }
}

/// The policy an administrator wrote on a parent namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentPolicy {
    pub allowed_tenants: AllowedTenants,
    pub max_ttl: Option<Duration>,
    pub max_children: Option<u32>,
}

impl ParentPolicy {
    /// The longest TTL a child may get: the parent's ceiling, never above the provisioner's.
    pub fn effective_max_ttl(&self, provisioner_max: Duration) -> Duration {
        self.max_ttl
            .map_or(provisioner_max, |max| max.min(provisioner_max))
    }
}

/// Refusal of a child beyond a parent's `max-children`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parent {parent:?} already has {live} live children, its maximum ({max}, annotation {key})", key = keys::MAX_CHILDREN_ANNOTATION)]
pub struct TooManyChildren {
    pub parent: String,
    pub live: usize,
    pub max: u32,
}

impl ParentPolicy {
    /// Whether a parent with `live` children may get another.
    pub fn check_children(&self, parent: &str, live: usize) -> Result<(), TooManyChildren> {
        match self.max_children {
            Some(max) if live >= max as usize => Err(TooManyChildren {
                parent: parent.into(),
                live,
                max,
            }),
            _ => Ok(()),
        }
    }
}

/// A parent annotation an administrator must fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("namespace annotation {key}={value:?} is invalid: {problem}")]
pub struct ParentAnnotationError {
    pub key: &'static str,
    pub value: String,
    pub problem: String,
}

/// Reads a parent's policy. `Ok(None)`: not a parent (no allowed-tenants annotation).
pub fn parent_policy(
    annotations: &BTreeMap<String, String>,
) -> Result<Option<ParentPolicy>, ParentAnnotationError> {
    let Some(tenants) = annotations.get(keys::ALLOWED_TENANTS_ANNOTATION) else {
        return Ok(None);
    };
    let allowed_tenants = parse_allowed_tenants(tenants)?;
    let max_ttl = annotations
        .get(keys::MAX_TTL_ANNOTATION)
        .map(|value| parse_max_ttl(value))
        .transpose()?;
    let max_children = annotations
        .get(keys::MAX_CHILDREN_ANNOTATION)
        .map(|value| parse_max_children(value))
        .transpose()?;
    Ok(Some(ParentPolicy {
        allowed_tenants,
        max_ttl,
        max_children,
    }))
}

fn annotation_error(key: &'static str, value: &str, problem: impl Into<String>) -> ParentAnnotationError {
    ParentAnnotationError {
        key,
        value: value.into(),
        problem: problem.into(),
    }
}

fn parse_allowed_tenants(value: &str) -> Result<AllowedTenants, ParentAnnotationError> {
    let key = keys::ALLOWED_TENANTS_ANNOTATION;
    if value.trim() == "*" {
        return Ok(AllowedTenants::Any);
    }
    let mut tenants = BTreeSet::new();
    for tenant in value.split(',').map(str::trim) {
        if tenant.is_empty() {
            return Err(annotation_error(
                key,
                value,
                "empty tenant name; write `a,b` or `*`",
            ));
        }
        if tenant == "*" {
            return Err(annotation_error(
                key,
                value,
                "`*` must stand alone; it already allows every tenant",
            ));
        }
        if tenant.chars().any(char::is_whitespace) {
            return Err(annotation_error(
                key,
                value,
                format!("tenant {tenant:?} contains whitespace; separate tenants with ','"),
            ));
        }
        tenants.insert(tenant.to_string());
    }
    Ok(AllowedTenants::Only(tenants))
}

fn parse_max_ttl(value: &str) -> Result<Duration, ParentAnnotationError> {
    let key = keys::MAX_TTL_ANNOTATION;
    match humantime::parse_duration(value.trim()) {
        Ok(duration) if duration.is_zero() => Err(annotation_error(
            key,
            value,
            "must be more than 0 (e.g. `30m`, `2h`)",
        )),
        Ok(duration) => Ok(duration),
        Err(e) => Err(annotation_error(
            key,
            value,
            format!("{e}; write a duration such as `30m`, `2h`, `1h30m`"),
        )),
    }
}

fn parse_max_children(value: &str) -> Result<u32, ParentAnnotationError> {
    value.trim().parse::<u32>().map_err(|e| {
        annotation_error(
            keys::MAX_CHILDREN_ANNOTATION,
            value,
            format!("{e}; write a whole number, 0 or more"),
        )
    })
}

#[cfg(test)]
mod tests;
