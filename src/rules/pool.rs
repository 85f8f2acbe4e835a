//! The warm pool (issue 16): managed namespaces made before anyone asks, so a create only has
//! to claim one and request its token. What marks a member, what a member is made of, how big
//! each pool should be, which members are stale or surplus, in which order a claim tries them,
//! and the one conditional write that claims one. Pure: no client, no clock, no randomness
//! (the random start of a claim's order is an input).
//!
//! A member is a managed Namespace with the selector, an expiry label and the pool label
//! ([`POOL_LABEL`]) but no tenant label: no tenant's list (selected by tenant) shows it and no
//! tenant's `--max-namespaces-per-tenant` count includes it. Its expiry is its creation plus
//! `--pool-max-age` (never past its parent's): the reaper's ordinary expiry rule is the
//! member's max-age rule, so stale members go under the same cap, mass-deletion guard, clock
//! check and watch brake as any deletion, with an `Expired` Event. A member of a parent's pool
//! is a child like any other (parent label, parent-uid annotation, tree labels): propagation
//! keeps its copies in step and a cascade reaps it with its parent.

use std::collections::BTreeMap;

use kube::api::ObjectMeta;
use serde_json::{Value, json};
use thiserror::Error;

use super::desired::{DesiredSet, NamespacedRole, Owner, SetConfig, desired_set_for};
use super::hierarchy::keys::PARENT_LABEL;
use super::labels::{Labels, TENANT_LABEL};
use super::params::{Expiry, Selector, TenantName};

/// Label on a pool member's Namespace: [`FILLING`] while the reaper makes it, [`READY`] once
/// everything a claim needs is in place. A claim removes it.
pub const POOL_LABEL: &str = "controller.observatorium.io/pool";

/// [`POOL_LABEL`] value of a member still being made: never claimed.
pub const FILLING: &str = "filling";

/// [`POOL_LABEL`] value of a member ready to be claimed.
pub const READY: &str = "ready";

/// Annotation on a parent namespace (the administrator's, like `max-children`): how many
/// unclaimed children the reaper keeps ready under it. Tenants hold rights inside their own
/// namespaces, never on a parent's metadata, so they cannot raise it.
pub const POOL_SIZE_ANNOTATION: &str = "controller.observatorium.io/pool-size";

/// Largest pool (per parent, and `--pool-size`): every member is a live namespace.
pub const MAX_POOL_SIZE: u32 = 100;

/// The top-level pool's name in metrics and logs (a parent's pool is named after the parent;
/// no namespace can be called this, parentheses are not allowed in names).
pub const TOP_LEVEL: &str = "(top-level)";

/// Placeholder tenant the member set is computed with before its tenant label is removed.
const PLACEHOLDER_TENANT: &str = "pool";

/// Which pool: top-level namespaces, or the children of one parent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PoolKey {
    TopLevel,
    Parent(String),
}

impl PoolKey {
    /// The pool of a namespace with these labels: its parent's, or the top-level one.
    pub fn of(labels: &impl Labels) -> Self {
        match labels.label(PARENT_LABEL).filter(|p| !p.is_empty()) {
            Some(parent) => Self::Parent(parent.to_owned()),
            None => Self::TopLevel,
        }
    }

    /// For metric labels and logs: the parent's name, or [`TOP_LEVEL`].
    pub fn name(&self) -> &str {
        match self {
            Self::TopLevel => TOP_LEVEL,
            Self::Parent(parent) => parent,
        }
    }

    pub fn parent(&self) -> Option<&str> {
        match self {
            Self::TopLevel => None,
            Self::Parent(parent) => Some(parent),
        }
    }
}

/// Whether these labels mark a pool member (filling or ready).
pub fn is_member(labels: &impl Labels) -> bool {
    labels.label(POOL_LABEL).is_some()
}

/// Whether these labels mark a member ready to be claimed.
pub fn is_ready(labels: &impl Labels) -> bool {
    labels.label(POOL_LABEL) == Some(READY)
}

/// Label selector of `key`'s members in `state` ([`READY`] or [`FILLING`]), or of all of its
/// members (`None`).
pub fn member_selector(selector: &Selector, key: &PoolKey, state: Option<&str>) -> String {
    let pool = match state {
        Some(state) => format!("{POOL_LABEL}={state}"),
        None => POOL_LABEL.to_owned(),
    };
    let place = match key {
        PoolKey::TopLevel => format!("!{PARENT_LABEL}"),
        PoolKey::Parent(parent) => format!("{PARENT_LABEL}={parent}"),
    };
    format!("{},{pool},{place}", selector.to_label_selector())
}

/// Label selector of every member of every pool.
pub fn all_members_selector(selector: &Selector) -> String {
    format!("{},{POOL_LABEL}", selector.to_label_selector())
}

/// A pool size that cannot be used, with what to write instead.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error(
    "{source_name} is {value:?}: it must be a whole number from 0 to {MAX_POOL_SIZE} (how many unclaimed namespaces to keep ready; 0 or absent: no pool)"
)]
pub struct PoolSizeError {
    /// Where the value came from (`--pool-size`, or the annotation on a parent).
    pub source_name: String,
    pub value: String,
}

/// Parse a pool size from `source_name` (a flag or an annotation, for the message).
pub fn parse_pool_size(source_name: &str, value: &str) -> Result<u32, PoolSizeError> {
    match value.trim().parse::<u32>() {
        Ok(size) if size <= MAX_POOL_SIZE => Ok(size),
        _ => Err(PoolSizeError {
            source_name: source_name.to_owned(),
            value: value.to_owned(),
        }),
    }
}

/// The pool size a parent's annotations ask for: `Ok(0)` without the annotation.
pub fn parent_pool_size(parent: &str, annotations: &impl Labels) -> Result<u32, PoolSizeError> {
    match annotations.label(POOL_SIZE_ANNOTATION) {
        None => Ok(0),
        Some(value) => parse_pool_size(
            &format!("annotation {POOL_SIZE_ANNOTATION} on parent namespace {parent}"),
            value,
        ),
    }
}

/// A member's expiry: `now + max_age`, never past its parent's expiry.
pub fn member_expiry(now: i64, max_age_secs: u64, parent_expiry: Option<Expiry>) -> Expiry {
    let own = Expiry::after(now, max_age_secs);
    match parent_expiry {
        Some(parent) if parent < own => parent,
        _ => own,
    }
}

fn strip_tenant(meta: &mut ObjectMeta) {
    if let Some(labels) = meta.labels.as_mut() {
        labels.remove(TENANT_LABEL);
    }
}

/// A member's set: exactly the set a cold create makes ([`desired_set_for`]), minus the tenant,
/// with the pool label ([`FILLING`]) on its Namespace. The ServiceAccount and RoleBindings are
/// the cold create's, so a claim only changes the Namespace; the reaper brings their tenant
/// label along afterwards like any drift. Destructured without `..`: a new part of a set
/// cannot be forgotten.
pub fn member_set(name: &str, expiry: Expiry, config: &SetConfig) -> DesiredSet {
    let owner = Owner::tenant(TenantName::from_trusted(PLACEHOLDER_TENANT.to_owned()));
    let DesiredSet {
        mut namespace,
        mut service_account,
        mut role_binding,
        mut role,
    } = desired_set_for(name, &owner, expiry, config);
    strip_tenant(&mut namespace.metadata);
    namespace
        .metadata
        .labels
        .get_or_insert_default()
        .insert(POOL_LABEL.to_owned(), FILLING.to_owned());
    strip_tenant(&mut service_account.metadata);
    strip_tenant(&mut role_binding.metadata);
    if let Some(NamespacedRole { role, binding }) = role.as_mut() {
        strip_tenant(&mut role.metadata);
        strip_tenant(&mut binding.metadata);
    }
    DesiredSet {
        namespace,
        service_account,
        role_binding,
        role,
    }
}

/// The merge patch that marks a filled member ready (only if it is still the one filled).
pub fn ready_patch(resource_version: &str) -> Value {
    json!({ "metadata": { "resourceVersion": resource_version, "labels": { POOL_LABEL: READY } } })
}

/// The merge patch that makes a surplus member due now (only if unchanged since it was read):
/// the reaper's expiry rule then deletes it under its cap and guards, with an Event.
pub fn expire_patch(resource_version: &str, now: i64) -> Value {
    let expiry = Expiry::from_unix(now);
    json!({
        "metadata": {
            "resourceVersion": resource_version,
            "labels": { super::labels::EXPIRY_LABEL: expiry.to_string() },
            "annotations": { super::labels::EXPIRES_AT_ANNOTATION: expiry.rfc3339() },
        }
    })
}

/// The one conditional write of a claim: a JSON merge patch carrying the member's
/// `resourceVersion` (the API server refuses it with 409 when anyone changed the member since
/// it was listed, so two claimers can never both win), stamping the owner's labels and
/// annotations exactly as a cold create writes them and removing the pool label.
pub fn claim_patch(
    name: &str,
    resource_version: &str,
    owner: &Owner,
    expiry: Expiry,
    config: &SetConfig,
) -> Value {
    let desired = desired_set_for(name, owner, expiry, config).namespace.metadata;
    let mut labels: BTreeMap<String, Value> = desired
        .labels
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    labels.insert(POOL_LABEL.to_owned(), Value::Null);
    json!({
        "metadata": {
            "resourceVersion": resource_version,
            "labels": labels,
            "annotations": desired.annotations.unwrap_or_default(),
        }
    })
}

/// A member as the pool rules read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub resource_version: String,
    pub pool: PoolKey,
    /// [`POOL_LABEL`] is [`READY`].
    pub ready: bool,
    pub expiry: Option<Expiry>,
    pub terminating: bool,
    /// creationTimestamp, Unix seconds.
    pub created: i64,
}

impl Member {
    /// Read from a Namespace as listed.
    pub fn of(ns: &k8s_openapi::api::core::v1::Namespace) -> Self {
        let empty = BTreeMap::new();
        let labels = ns.metadata.labels.as_ref().unwrap_or(&empty);
        Self {
            name: ns.metadata.name.clone().unwrap_or_default(),
            resource_version: ns.metadata.resource_version.clone().unwrap_or_default(),
            pool: PoolKey::of(labels),
            ready: is_ready(labels),
            expiry: super::labels::expiry_of(labels),
            terminating: ns.metadata.deletion_timestamp.is_some(),
            created: ns
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_second()),
        }
    }

    /// Counts towards its pool: not being deleted and not due (a due member awaits the
    /// reaper's expiry rule, and its replacement is made now).
    pub fn is_live(&self, now: i64) -> bool {
        !self.terminating && self.expiry.is_some_and(|e| !e.is_due(now))
    }
}

/// The members worth a claim's conditional write: ready, and live for at least
/// `min_life_secs` more (a member about to be reaped is a wasted write), by name. The claimer
/// shuffles them, so concurrent claimers in different replicas spread over the pool.
pub fn claimable(members: &[Member], now: i64, min_life_secs: i64) -> Vec<&Member> {
    let mut usable: Vec<&Member> = members
        .iter()
        .filter(|m| m.ready && !m.terminating)
        .filter(|m| m.expiry.is_some_and(|e| e.unix() - now > min_life_secs))
        .collect();
    usable.sort_by(|a, b| a.name.cmp(&b.name));
    usable
}

/// Why a pool is not kept.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PoolRefusal {
    /// The parent's pool-size annotation is unusable.
    #[error(transparent)]
    Size(#[from] PoolSizeError),
    /// The parent has an aggregate budget: a member would either hold an allocation no tenant
    /// could use, or need one at claim time (the most expensive part of a cold create).
    #[error(
        "parent namespace {parent} has a HierarchicalResourceQuota: pools are not kept under an aggregate budget (a member would hold budget no tenant can use); remove the {POOL_SIZE_ANNOTATION} annotation or the budget"
    )]
    UnderBudget { parent: String },
    /// The parent is being deleted.
    #[error("parent namespace {parent} is being deleted")]
    ParentTerminating { parent: String },
    /// The namespace has a pool size but is not a parent: nobody could claim a member.
    #[error(
        "namespace {parent} has a {POOL_SIZE_ANNOTATION} annotation but is not a parent (no {annotation} annotation); add one or remove the pool size",
        annotation = super::hierarchy::keys::ALLOWED_TENANTS_ANNOTATION
    )]
    NotAParent { parent: String },
}

impl PoolRefusal {
    /// Stable name for reports and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Size(_) => "pool_size",
            Self::UnderBudget { .. } => "under_budget",
            Self::ParentTerminating { .. } => "parent_terminating",
            Self::NotAParent { .. } => "not_a_parent",
        }
    }
}

/// How many members a pool should have, or why it is not kept (then it wants none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolWanted {
    pub key: PoolKey,
    pub size: u32,
    pub refused: Option<PoolRefusal>,
}

/// What to do for one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolPlan {
    pub key: PoolKey,
    /// The size asked for (0 when refused).
    pub wanted: u32,
    /// Ready, live members.
    pub ready: usize,
    /// Live members still filling: finish them (a fill that stopped half-way).
    pub finish: Vec<String>,
    /// New members to make.
    pub create: usize,
    /// Live members beyond the size (newest first are kept: the oldest go): expired at once
    /// so the reaper's expiry rule deletes them under its cap and guards.
    pub surplus: Vec<String>,
    pub refused: Option<PoolRefusal>,
}

/// Compare every pool's wanted size with its live members. Pools with members but no wanted
/// entry (the annotation removed, the parent no longer a parent) want none: their members are
/// surplus.
pub fn plan_pools(wanted: &[PoolWanted], members: &[Member], now: i64) -> Vec<PoolPlan> {
    let mut pools: BTreeMap<&PoolKey, (u32, Option<&PoolRefusal>)> = BTreeMap::new();
    for w in wanted {
        let size = if w.refused.is_some() { 0 } else { w.size };
        pools.insert(&w.key, (size, w.refused.as_ref()));
    }
    for m in members {
        pools.entry(&m.pool).or_insert((0, None));
    }
    pools
        .into_iter()
        .map(|(key, (size, refused))| {
            let mut live: Vec<&Member> = members
                .iter()
                .filter(|m| &m.pool == key && m.is_live(now))
                .collect();
            // Oldest first: those are the surplus, and the first to go stale anyway.
            live.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
            let want = usize::try_from(size).unwrap_or(usize::MAX);
            let surplus_count = live.len().saturating_sub(want);
            let (surplus, kept) = live.split_at(surplus_count);
            PoolPlan {
                key: key.clone(),
                wanted: size,
                ready: kept.iter().filter(|m| m.ready).count(),
                finish: kept.iter().filter(|m| !m.ready).map(|m| m.name.clone()).collect(),
                create: want.saturating_sub(kept.len()),
                surplus: surplus.iter().map(|m| m.name.clone()).collect(),
                refused: refused.cloned(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::labels::{EXPIRY_LABEL, OWNER_ANNOTATION};

    fn config() -> SetConfig {
        SetConfig {
            selector: "controller.observatorium.io=namespace-provisioner"
                .parse()
                .unwrap(),
            cluster_role: "namespace-provisioner-grant".to_owned(),
            role_rules: None,
        }
    }

    fn member(name: &str, pool: PoolKey, ready: bool, expiry: i64, created: i64) -> Member {
        Member {
            name: name.to_owned(),
            resource_version: "1".to_owned(),
            pool,
            ready,
            expiry: Some(Expiry::from_unix(expiry)),
            terminating: false,
            created,
        }
    }

    #[test]
    fn a_member_set_is_the_cold_set_without_a_tenant() {
        let set = member_set("np-x", Expiry::from_unix(2_000), &config());
        let ns = set.namespace.metadata.labels.clone().unwrap();
        assert_eq!(ns[POOL_LABEL], FILLING);
        assert_eq!(ns[EXPIRY_LABEL], "2000");
        assert_eq!(ns["controller.observatorium.io"], "namespace-provisioner");
        assert!(!ns.contains_key(TENANT_LABEL));
        assert!(is_member(&ns) && !is_ready(&ns));
        for meta in [&set.service_account.metadata, &set.role_binding.metadata] {
            assert!(!meta.labels.as_ref().unwrap().contains_key(TENANT_LABEL));
        }
        // Everything else is the cold create's.
        let cold = desired_set_for(
            "np-x",
            &Owner::tenant("ci".parse().unwrap()),
            Expiry::from_unix(2_000),
            &config(),
        );
        assert_eq!(set.role_binding.subjects, cold.role_binding.subjects);
        assert_eq!(set.role_binding.role_ref, cold.role_binding.role_ref);
        assert_eq!(
            set.service_account.metadata.name,
            cold.service_account.metadata.name
        );
    }

    #[test]
    fn selectors_name_one_pool_and_one_state() {
        let sel: Selector = "controller.observatorium.io=namespace-provisioner"
            .parse()
            .unwrap();
        assert_eq!(
            member_selector(&sel, &PoolKey::TopLevel, Some(READY)),
            "controller.observatorium.io=namespace-provisioner,controller.observatorium.io/pool=ready,!controller.observatorium.io/parent"
        );
        assert_eq!(
            member_selector(&sel, &PoolKey::Parent("team-a".into()), None),
            "controller.observatorium.io=namespace-provisioner,controller.observatorium.io/pool,controller.observatorium.io/parent=team-a"
        );
        assert_eq!(
            all_members_selector(&sel),
            "controller.observatorium.io=namespace-provisioner,controller.observatorium.io/pool"
        );
        let child: BTreeMap<String, String> = [(PARENT_LABEL.to_owned(), "team-a".to_owned())].into();
        assert_eq!(PoolKey::of(&child), PoolKey::Parent("team-a".into()));
        assert_eq!(PoolKey::of(&BTreeMap::new()), PoolKey::TopLevel);
    }

    #[test]
    fn pool_sizes_are_whole_numbers_up_to_the_maximum() {
        assert_eq!(parse_pool_size("--pool-size", "0"), Ok(0));
        assert_eq!(parse_pool_size("--pool-size", " 7 "), Ok(7));
        assert_eq!(parse_pool_size("--pool-size", "100"), Ok(100));
        for bad in ["101", "-1", "three", "", "1.5"] {
            let err = parse_pool_size("--pool-size", bad).unwrap_err();
            assert!(err.to_string().contains("whole number from 0 to 100"), "{err}");
        }
        let none: BTreeMap<String, String> = BTreeMap::new();
        assert_eq!(parent_pool_size("team-a", &none), Ok(0));
        let bad: BTreeMap<String, String> = [(POOL_SIZE_ANNOTATION.to_owned(), "lots".to_owned())].into();
        let err = parent_pool_size("team-a", &bad).unwrap_err().to_string();
        assert!(
            err.contains("annotation controller.observatorium.io/pool-size on parent namespace team-a"),
            "{err}"
        );
    }

    #[test]
    fn a_member_never_outlives_its_parent() {
        assert_eq!(member_expiry(100, 50, None), Expiry::from_unix(150));
        assert_eq!(
            member_expiry(100, 50, Some(Expiry::from_unix(120))),
            Expiry::from_unix(120)
        );
        assert_eq!(
            member_expiry(100, 50, Some(Expiry::from_unix(900))),
            Expiry::from_unix(150)
        );
    }

    #[test]
    fn the_claim_stamps_the_cold_labels_and_drops_the_pool_label_under_a_precondition() {
        let owner = Owner {
            tenant: "ci".parse().unwrap(),
            user: Some("alice".into()),
            bound_user: None,
        };
        let patch = claim_patch("np-x", "42", &owner, Expiry::from_unix(1_800_000_000), &config());
        let meta = &patch["metadata"];
        assert_eq!(meta["resourceVersion"], "42");
        assert_eq!(meta["labels"][TENANT_LABEL], "ci");
        assert_eq!(meta["labels"][EXPIRY_LABEL], "1800000000");
        assert_eq!(meta["labels"][POOL_LABEL], Value::Null);
        assert_eq!(meta["annotations"][OWNER_ANNOTATION], "alice");
        assert_eq!(
            meta["annotations"]["controller.observatorium.io/expires-at"],
            "2027-01-15T08:00:00Z"
        );
        assert_eq!(ready_patch("7")["metadata"]["labels"][POOL_LABEL], READY);
    }

    #[test]
    fn claims_try_only_ready_members_that_live_a_while_longer() {
        let now = 1_000;
        let mut filling = member("np-f", PoolKey::TopLevel, false, 5_000, 1);
        filling.ready = false;
        let mut going = member("np-t", PoolKey::TopLevel, true, 5_000, 1);
        going.terminating = true;
        let members = vec![
            member("np-c", PoolKey::TopLevel, true, 5_000, 1),
            member("np-a", PoolKey::TopLevel, true, 5_000, 1),
            member("np-b", PoolKey::TopLevel, true, 5_000, 1),
            member("np-soon", PoolKey::TopLevel, true, now + 10, 1),
            filling,
            going,
        ];
        let names: Vec<&str> = claimable(&members, now, 60)
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(names, ["np-a", "np-b", "np-c"]);
        assert!(claimable(&[], now, 60).is_empty());
    }

    #[test]
    fn pools_are_filled_to_size_finished_and_trimmed() {
        let now = 1_000;
        let a = PoolKey::Parent("team-a".into());
        let wanted = vec![
            PoolWanted {
                key: PoolKey::TopLevel,
                size: 3,
                refused: None,
            },
            PoolWanted {
                key: a.clone(),
                size: 1,
                refused: None,
            },
            PoolWanted {
                key: PoolKey::Parent("budgeted".into()),
                size: 5,
                refused: Some(PoolRefusal::UnderBudget {
                    parent: "budgeted".into(),
                }),
            },
        ];
        let members = vec![
            member("np-1", PoolKey::TopLevel, true, 5_000, 10),
            member("np-2", PoolKey::TopLevel, false, 5_000, 20),
            // Due: the reaper deletes it; it no longer counts.
            member("np-3", PoolKey::TopLevel, true, now, 5),
            member("np-a1", a.clone(), true, 5_000, 1),
            member("np-a2", a.clone(), true, 5_000, 2),
            member("np-b1", PoolKey::Parent("budgeted".into()), true, 5_000, 2),
            member("np-g1", PoolKey::Parent("gone".into()), true, 5_000, 2),
        ];
        let plans = plan_pools(&wanted, &members, now);
        let by = |key: &PoolKey| plans.iter().find(|p| &p.key == key).unwrap().clone();
        let top = by(&PoolKey::TopLevel);
        assert_eq!((top.wanted, top.ready, top.create), (3, 1, 1));
        assert_eq!(top.finish, ["np-2"]);
        assert!(top.surplus.is_empty());
        let team = by(&a);
        assert_eq!((team.ready, team.create), (1, 0));
        assert_eq!(team.surplus, ["np-a1"], "the oldest goes");
        let budgeted = by(&PoolKey::Parent("budgeted".into()));
        assert_eq!((budgeted.wanted, budgeted.create), (0, 0));
        assert_eq!(budgeted.surplus, ["np-b1"]);
        assert_eq!(
            budgeted.refused.as_ref().map(PoolRefusal::kind),
            Some("under_budget")
        );
        let gone = by(&PoolKey::Parent("gone".into()));
        assert_eq!(gone.surplus, ["np-g1"]);
    }
}
