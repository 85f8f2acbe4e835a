//! The reaper's decisions: from what was observed in each namespace, the time
//! and the configuration, what to do with it. Pure: no client, no clock.
//!
//! What a complete set is comes from [`desired_set`] only; this module
//! compares against it and never restates its rules.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::ResourceExt;
use kube::api::ObjectMeta;

use crate::desired::{DesiredSet, NamespacedRole, SetConfig, desired_set, set_annotations};
use crate::labels::{EXPIRY_LABEL, TENANT_LABEL};
use crate::params::{Expiry, Selector, TenantName};

/// What the plan needs besides the observations and the time.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanConfig {
    pub set: SetConfig,
    /// A managed namespace without a valid expiry gets `creationTimestamp + max_ttl`.
    pub max_ttl: Duration,
    /// At most this many namespaces are deleted by one plan (oldest expiry
    /// first); the rest wait for the next run. `None`: no limit.
    pub max_deletions: Option<u32>,
}

/// Labels or annotations, sorted by key, packed into one string with the
/// offsets beside it: two allocations however many pairs. A sweep holds tens
/// of thousands of these; a `BTreeMap` of `String`s costs about a kilobyte.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pairs {
    /// Every key then its value, back to back.
    text: String,
    /// For each pair, where its key ends and where its value ends in `text`.
    ends: Vec<(u32, u32)>,
}

impl Pairs {
    fn pair(&self, i: usize) -> Option<(&str, &str)> {
        let start = match i.checked_sub(1) {
            None => 0,
            Some(before) => self.ends.get(before)?.1,
        };
        let (key_end, value_end) = *self.ends.get(i)?;
        let at = |a: u32, b: u32| self.text.get(usize::try_from(a).ok()?..usize::try_from(b).ok()?);
        Some((at(start, key_end)?, at(key_end, value_end)?))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        (0..self.ends.len()).filter_map(|i| self.pair(i))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        let mut low = 0;
        let mut high = self.ends.len();
        while low < high {
            let mid = low + (high - low) / 2;
            let (k, v) = self.pair(mid)?;
            match k.cmp(key) {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => return Some(v),
            }
        }
        None
    }

    pub fn insert(&mut self, key: &str, value: &str) {
        let mut all: BTreeMap<String, String> =
            self.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        all.insert(key.to_owned(), value.to_owned());
        *self = Some(all).into();
    }

    pub fn remove(&mut self, key: &str) {
        let mut all: BTreeMap<String, String> =
            self.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        all.remove(key);
        *self = Some(all).into();
    }

    /// Whether every entry of `want` is here with the same value.
    fn contains_all(&self, want: Option<&BTreeMap<String, String>>) -> bool {
        want.into_iter()
            .flatten()
            .all(|(k, v)| self.get(k) == Some(v.as_str()))
    }
}

impl From<Option<BTreeMap<String, String>>> for Pairs {
    fn from(map: Option<BTreeMap<String, String>>) -> Self {
        // A BTreeMap iterates in key order: already sorted.
        let map = map.unwrap_or_default();
        let mut text = String::with_capacity(map.iter().map(|(k, v)| k.len() + v.len()).sum());
        let mut ends = Vec::with_capacity(map.len());
        let offset = |text: &String| u32::try_from(text.len()).unwrap_or(u32::MAX);
        for (k, v) in &map {
            text.push_str(k);
            let key_end = offset(&text);
            text.push_str(v);
            ends.push((key_end, offset(&text)));
        }
        Self { text, ends }
    }
}

/// What the plan reads of an object's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedMeta {
    pub name: String,
    pub namespace: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub labels: Pairs,
    pub annotations: Pairs,
    /// creationTimestamp, Unix seconds.
    pub created: Option<i64>,
    /// deletionTimestamp is set.
    pub deleting: bool,
}

impl From<ObjectMeta> for ObservedMeta {
    fn from(meta: ObjectMeta) -> Self {
        let ObjectMeta {
            name,
            namespace,
            uid,
            resource_version,
            labels,
            annotations,
            creation_timestamp,
            deletion_timestamp,
            ..
        } = meta;
        Self {
            name: name.unwrap_or_default(),
            namespace,
            uid,
            resource_version,
            labels: labels.into(),
            annotations: annotations.into(),
            created: creation_timestamp.map(|t| t.0.as_second()),
            deleting: deletion_timestamp.is_some(),
        }
    }
}

/// A Namespace as the plan sees it.
pub type ObservedNamespace = ObservedMeta;

impl From<Namespace> for ObservedMeta {
    fn from(ns: Namespace) -> Self {
        ns.metadata.into()
    }
}

/// A ServiceAccount as the plan sees it (its uid is never needed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedServiceAccount {
    pub meta: ObservedMeta,
}

impl From<ServiceAccount> for ObservedServiceAccount {
    fn from(sa: ServiceAccount) -> Self {
        let mut meta = ObservedMeta::from(sa.metadata);
        meta.uid = None;
        meta.resource_version = None;
        Self { meta }
    }
}

/// A Role as the plan sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObservedRole {
    pub meta: ObservedMeta,
    pub rules: Option<Vec<PolicyRule>>,
}

impl From<Role> for ObservedRole {
    fn from(role: Role) -> Self {
        let mut meta = ObservedMeta::from(role.metadata);
        meta.uid = None;
        meta.resource_version = None;
        Self {
            meta,
            rules: role.rules,
        }
    }
}

/// A RoleBinding as the plan sees it (uid kept: a drifted roleRef means
/// deleting exactly this one).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObservedRoleBinding {
    pub meta: ObservedMeta,
    pub role_ref: RoleRef,
    pub subjects: Option<Vec<Subject>>,
}

impl From<RoleBinding> for ObservedRoleBinding {
    fn from(rb: RoleBinding) -> Self {
        let mut meta = ObservedMeta::from(rb.metadata);
        meta.resource_version = None;
        Self {
            meta,
            role_ref: rb.role_ref,
            subjects: rb.subjects,
        }
    }
}

/// Everything observed: each kind filtered to the selector and sorted by
/// namespace, so that the sets are views into it rather than copies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub namespaces: Vec<ObservedNamespace>,
    pub service_accounts: Vec<ObservedServiceAccount>,
    pub roles: Vec<ObservedRole>,
    pub role_bindings: Vec<ObservedRoleBinding>,
}

/// One namespace's share of [`Observed`]: everything carrying the selector
/// found under one namespace name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObservedSet<'a> {
    pub name: &'a str,
    /// The Namespace itself, if it carries the selector (is managed).
    pub namespace: Option<&'a ObservedNamespace>,
    pub service_accounts: &'a [ObservedServiceAccount],
    pub roles: &'a [ObservedRole],
    pub role_bindings: &'a [ObservedRoleBinding],
}

/// Whether `labels` hold exactly `selector`'s key=value.
pub fn carries(selector: &Selector, labels: &Pairs) -> bool {
    labels.get(selector.key()) == Some(selector.value())
}

impl Observed {
    /// Objects that do not carry the selector are dropped here, whatever the
    /// server returned: nothing without it is ever planned for. In place: no copies.
    pub fn new(
        selector: &Selector,
        namespaces: Vec<ObservedNamespace>,
        service_accounts: Vec<ObservedServiceAccount>,
        roles: Vec<ObservedRole>,
        role_bindings: Vec<ObservedRoleBinding>,
    ) -> Self {
        let mut o = Self {
            namespaces,
            service_accounts,
            roles,
            role_bindings,
        };
        let keep = |meta: &ObservedMeta| carries(selector, &meta.labels) && meta.namespace.is_some();
        o.namespaces.retain(|ns| carries(selector, &ns.labels));
        o.service_accounts.retain(|x| keep(&x.meta));
        o.roles.retain(|x| keep(&x.meta));
        o.role_bindings.retain(|x| keep(&x.meta));
        o.namespaces.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        o.service_accounts
            .sort_unstable_by(|a, b| a.meta.namespace.cmp(&b.meta.namespace));
        o.roles
            .sort_unstable_by(|a, b| a.meta.namespace.cmp(&b.meta.namespace));
        o.role_bindings
            .sort_unstable_by(|a, b| a.meta.namespace.cmp(&b.meta.namespace));
        o
    }

    /// The sets, sorted by namespace name.
    pub fn sets(&self) -> Vec<ObservedSet<'_>> {
        /// The run of `items` from `*at` that belong to namespace `name`.
        fn run<'a, T>(
            items: &'a [T],
            at: &mut usize,
            name: &str,
            ns: impl Fn(&T) -> Option<&str>,
        ) -> &'a [T] {
            let start = *at;
            let len = items
                .get(start..)
                .unwrap_or_default()
                .iter()
                .take_while(|x| ns(x) == Some(name))
                .count();
            *at = start + len;
            items.get(start..start + len).unwrap_or_default()
        }
        let mut sets = Vec::new();
        let (mut n, mut s, mut r, mut b) = (0, 0, 0, 0);
        loop {
            let heads = [
                self.namespaces.get(n).map(|x| x.name.as_str()),
                self.service_accounts
                    .get(s)
                    .and_then(|x| x.meta.namespace.as_deref()),
                self.roles.get(r).and_then(|x| x.meta.namespace.as_deref()),
                self.role_bindings
                    .get(b)
                    .and_then(|x| x.meta.namespace.as_deref()),
            ];
            let Some(name) = heads.into_iter().flatten().min() else {
                return sets;
            };
            let namespace = self.namespaces.get(n).filter(|x| x.name == name);
            n += usize::from(namespace.is_some());
            sets.push(ObservedSet {
                name,
                namespace,
                service_accounts: run(&self.service_accounts, &mut s, name, |x| {
                    x.meta.namespace.as_deref()
                }),
                roles: run(&self.roles, &mut r, name, |x| x.meta.namespace.as_deref()),
                role_bindings: run(&self.role_bindings, &mut b, name, |x| x.meta.namespace.as_deref()),
            });
        }
    }
}

/// A kind and name, for reporting objects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectId {
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectId {
    fn of(kind: &'static str, meta: &ObservedMeta) -> Self {
        Self {
            kind,
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
        }
    }
}

/// Why an object is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Drift {
    /// Not found (or found without the selector label).
    Missing,
    /// A desired label is absent or has another value.
    Labels,
    /// A desired annotation is absent or has another value.
    Annotations,
    /// RoleBinding subjects differ.
    Subjects,
    /// RoleBinding roleRef differs (immutable: the binding is recreated).
    RoleRef,
    /// Role rules differ.
    Rules,
}

impl Drift {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Labels => "labels",
            Self::Annotations => "annotations",
            Self::Subjects => "subjects",
            Self::RoleRef => "roleRef",
            Self::Rules => "rules",
        }
    }
}

/// An object to server-side apply, as the desired set has it.
#[derive(Debug, Clone, PartialEq)]
pub enum Desired {
    Namespace(Box<Namespace>),
    ServiceAccount(Box<ServiceAccount>),
    Role(Box<Role>),
    RoleBinding(Box<RoleBinding>),
}

impl Desired {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Namespace(_) => "Namespace",
            Self::ServiceAccount(_) => "ServiceAccount",
            Self::Role(_) => "Role",
            Self::RoleBinding(_) => "RoleBinding",
        }
    }

    pub fn name(&self) -> String {
        match self {
            Self::Namespace(o) => o.name_any(),
            Self::ServiceAccount(o) => o.name_any(),
            Self::Role(o) => o.name_any(),
            Self::RoleBinding(o) => o.name_any(),
        }
    }
}

/// One write of a repair.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub object: Desired,
    pub reasons: Vec<Drift>,
    /// Delete the existing object with this uid first (a RoleBinding whose
    /// immutable roleRef drifted), then apply.
    pub recreate_uid: Option<String>,
}

/// What to do with one namespace.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Matches its desired set (or, without a tenant, has a valid expiry).
    InSync { expiry: Expiry },
    /// Expired: delete the Namespace, only if still this uid and resourceVersion.
    Delete {
        expiry: Expiry,
        uid: String,
        resource_version: String,
    },
    /// Expired, but the run's `max_deletions` was reached: left for the next run.
    DeleteCapped { expiry: Expiry },
    /// Already being deleted.
    SkipTerminating,
    /// Live, but incomplete or drifted: apply these.
    Repair { expiry: Expiry, writes: Vec<Write> },
    /// No valid expiry label (`previous` is what it held): set one, and bring
    /// the rest of the set (which carries the expiry too) along.
    SetExpiry {
        expiry: Expiry,
        previous: Option<String>,
        writes: Vec<Write>,
    },
    /// Objects carrying the selector in a namespace that is not managed:
    /// reported, never touched.
    ReportOrphan { objects: Vec<ObjectId> },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Self::InSync { .. } => "inSync",
            Self::Delete { .. } => "delete",
            Self::DeleteCapped { .. } => "deleteCapped",
            Self::SkipTerminating => "skipTerminating",
            Self::Repair { .. } => "repair",
            Self::SetExpiry { .. } => "setExpiry",
            Self::ReportOrphan { .. } => "reportOrphan",
        }
    }

    pub fn expiry(&self) -> Option<Expiry> {
        match self {
            Self::InSync { expiry }
            | Self::Delete { expiry, .. }
            | Self::DeleteCapped { expiry }
            | Self::Repair { expiry, .. }
            | Self::SetExpiry { expiry, .. } => Some(*expiry),
            Self::SkipTerminating | Self::ReportOrphan { .. } => None,
        }
    }

    /// The writes, for the actions that have some.
    pub fn writes(&self) -> &[Write] {
        match self {
            Self::Repair { writes, .. } | Self::SetExpiry { writes, .. } => writes,
            _ => &[],
        }
    }

    /// When this namespace must be looked at again without any change to it:
    /// at its expiry, unless it is on its way out already.
    pub fn next_look(&self) -> Option<Expiry> {
        match self {
            Self::InSync { expiry } | Self::Repair { expiry, .. } | Self::SetExpiry { expiry, .. } => {
                Some(*expiry)
            }
            Self::DeleteCapped { expiry } => Some(*expiry),
            Self::Delete { .. } | Self::SkipTerminating | Self::ReportOrphan { .. } => None,
        }
    }
}

/// The decision for one namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct SetPlan {
    pub namespace: String,
    pub action: Action,
    /// Objects carrying the selector in a managed namespace that the desired
    /// set does not name (e.g. a Role left from an earlier `--role-rules-file`):
    /// reported, not deleted; they go with the namespace.
    pub strays: Vec<ObjectId>,
    /// The namespace is managed but has no valid tenant label (e.g. adopted
    /// from the original tool): only its expiry is ours to keep.
    pub untenanted: bool,
}

/// The decisions for every observed namespace, sorted by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub sets: Vec<SetPlan>,
}

/// Decide for every set; apply the deletion cap (oldest expiry first, then name).
pub fn plan(sets: &[ObservedSet<'_>], now: i64, config: &PlanConfig) -> Plan {
    let mut sets: Vec<SetPlan> = sets.iter().map(|s| plan_set(s, now, config)).collect();
    if let Some(cap) = config.max_deletions {
        let mut due: Vec<(Expiry, String, usize)> = sets
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s.action {
                Action::Delete { expiry, .. } => Some((expiry, s.namespace.clone(), i)),
                _ => None,
            })
            .collect();
        due.sort();
        let keep = usize::try_from(cap).unwrap_or(usize::MAX);
        for (expiry, _, i) in due.into_iter().skip(keep) {
            if let Some(set) = sets.get_mut(i) {
                set.action = Action::DeleteCapped { expiry };
            }
        }
    }
    Plan { sets }
}

/// Decide for one set (no deletion cap: that is a property of a whole run).
pub fn plan_set(observed: &ObservedSet<'_>, now: i64, config: &PlanConfig) -> SetPlan {
    let name = observed.name.to_owned();
    let Some(ns) = observed.namespace else {
        return SetPlan {
            namespace: name,
            action: Action::ReportOrphan {
                objects: contents(observed),
            },
            strays: Vec::new(),
            untenanted: false,
        };
    };
    let tenant = ns
        .labels
        .get(TENANT_LABEL)
        .and_then(|t| t.parse::<TenantName>().ok());
    let untenanted = tenant.is_none();
    let done = |action, strays| SetPlan {
        namespace: name.clone(),
        action,
        strays,
        untenanted,
    };
    if ns.deleting {
        return done(Action::SkipTerminating, Vec::new());
    }
    let label = ns.labels.get(EXPIRY_LABEL);
    match label.and_then(|v| v.parse::<Expiry>().ok()) {
        Some(expiry) if expiry.is_due(now) => done(
            Action::Delete {
                expiry,
                uid: ns.uid.clone().unwrap_or_default(),
                resource_version: ns.resource_version.clone().unwrap_or_default(),
            },
            Vec::new(),
        ),
        Some(expiry) => match &tenant {
            Some(tenant) => {
                let desired = desired_set(&name, tenant, expiry, &config.set);
                let writes = diff(&desired, ns, observed);
                let strays = strays(&desired, observed);
                if writes.is_empty() {
                    done(Action::InSync { expiry }, strays)
                } else {
                    done(Action::Repair { expiry, writes }, strays)
                }
            }
            None => done(Action::InSync { expiry }, contents(observed)),
        },
        None => {
            // Fail safe: never immortal, never deleted on the spot. If this is
            // already past, the next look deletes it.
            let created = ns.created.unwrap_or(now);
            let expiry = Expiry::after(created, config.max_ttl.as_secs());
            let previous = label.map(str::to_owned);
            match &tenant {
                Some(tenant) => {
                    let desired = desired_set(&name, tenant, expiry, &config.set);
                    let writes = diff(&desired, ns, observed);
                    let strays = strays(&desired, observed);
                    done(
                        Action::SetExpiry {
                            expiry,
                            previous,
                            writes,
                        },
                        strays,
                    )
                }
                None => done(
                    Action::SetExpiry {
                        expiry,
                        previous,
                        writes: vec![expiry_only(&name, expiry)],
                    },
                    contents(observed),
                ),
            }
        }
    }
}

/// For a namespace without a tenant: only the expiry label and annotation,
/// applied by us; its other labels and contents stay someone else's.
fn expiry_only(name: &str, expiry: Expiry) -> Write {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(EXPIRY_LABEL.to_owned(), expiry.to_string())])),
            annotations: Some(set_annotations(expiry)),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Write {
        object: Desired::Namespace(Box::new(namespace)),
        reasons: vec![Drift::Labels],
        recreate_uid: None,
    }
}

fn contents(observed: &ObservedSet<'_>) -> Vec<ObjectId> {
    let mut ids: Vec<ObjectId> = observed
        .service_accounts
        .iter()
        .map(|o| ObjectId::of("ServiceAccount", &o.meta))
        .chain(observed.roles.iter().map(|o| ObjectId::of("Role", &o.meta)))
        .chain(
            observed
                .role_bindings
                .iter()
                .map(|o| ObjectId::of("RoleBinding", &o.meta)),
        )
        .collect();
    ids.sort();
    ids
}

/// Observed objects the desired set does not name.
fn strays(desired: &DesiredSet, observed: &ObservedSet<'_>) -> Vec<ObjectId> {
    let DesiredSet {
        namespace: _,
        service_account,
        role_binding,
        role,
    } = desired;
    let sa_names = [service_account.name_any()];
    let mut rb_names = vec![role_binding.name_any()];
    let mut role_names = Vec::new();
    if let Some(NamespacedRole { role, binding }) = role {
        rb_names.push(binding.name_any());
        role_names.push(role.name_any());
    }
    let mut ids: Vec<ObjectId> = observed
        .service_accounts
        .iter()
        .filter(|o| !sa_names.contains(&o.meta.name))
        .map(|o| ObjectId::of("ServiceAccount", &o.meta))
        .chain(
            observed
                .roles
                .iter()
                .filter(|o| !role_names.contains(&o.meta.name))
                .map(|o| ObjectId::of("Role", &o.meta)),
        )
        .chain(
            observed
                .role_bindings
                .iter()
                .filter(|o| !rb_names.contains(&o.meta.name))
                .map(|o| ObjectId::of("RoleBinding", &o.meta)),
        )
        .collect();
    ids.sort();
    ids
}

/// The writes that bring `observed` to `desired`, Namespace first. The
/// desired set is destructured without `..` so a new part cannot be missed.
fn diff(desired: &DesiredSet, ns: &ObservedNamespace, observed: &ObservedSet<'_>) -> Vec<Write> {
    let DesiredSet {
        namespace,
        service_account,
        role_binding,
        role,
    } = desired;
    let mut writes = Vec::new();
    let reasons = meta_drift(&namespace.metadata, ns);
    if !reasons.is_empty() {
        writes.push(Write {
            object: Desired::Namespace(Box::new(namespace.clone())),
            reasons,
            recreate_uid: None,
        });
    }
    let found = observed
        .service_accounts
        .iter()
        .find(|o| o.meta.name == service_account.name_any());
    let reasons = match found {
        None => vec![Drift::Missing],
        Some(sa) => meta_drift(&service_account.metadata, &sa.meta),
    };
    if !reasons.is_empty() {
        writes.push(Write {
            object: Desired::ServiceAccount(Box::new(service_account.clone())),
            reasons,
            recreate_uid: None,
        });
    }
    writes.extend(binding_write(role_binding, observed.role_bindings));
    if let Some(NamespacedRole { role, binding }) = role {
        let reasons = match observed.roles.iter().find(|o| o.meta.name == role.name_any()) {
            None => vec![Drift::Missing],
            Some(found) => {
                let mut reasons = meta_drift(&role.metadata, &found.meta);
                if !same_rules(role.rules.as_deref(), found.rules.as_deref()) {
                    reasons.push(Drift::Rules);
                }
                reasons
            }
        };
        if !reasons.is_empty() {
            writes.push(Write {
                object: Desired::Role(Box::new(role.clone())),
                reasons,
                recreate_uid: None,
            });
        }
        writes.extend(binding_write(binding, observed.role_bindings));
    }
    writes
}

fn binding_write(desired: &RoleBinding, observed: &[ObservedRoleBinding]) -> Option<Write> {
    let found = observed.iter().find(|o| o.meta.name == desired.name_any());
    let (reasons, recreate_uid) = match found {
        None => (vec![Drift::Missing], None),
        Some(found) => {
            let mut reasons = meta_drift(&desired.metadata, &found.meta);
            if !same_subjects(desired.subjects.as_deref(), found.subjects.as_deref()) {
                reasons.push(Drift::Subjects);
            }
            if same_role_ref(&desired.role_ref, &found.role_ref) {
                (reasons, None)
            } else {
                reasons.push(Drift::RoleRef);
                (reasons, Some(found.meta.uid.clone().unwrap_or_default()))
            }
        }
    };
    (!reasons.is_empty()).then(|| Write {
        object: Desired::RoleBinding(Box::new(desired.clone())),
        reasons,
        recreate_uid,
    })
}

/// Desired labels and annotations must be present with their values; others
/// (added by people or Kubernetes) are fine.
fn meta_drift(desired: &ObjectMeta, observed: &ObservedMeta) -> Vec<Drift> {
    let mut reasons = Vec::new();
    if !observed.labels.contains_all(desired.labels.as_ref()) {
        reasons.push(Drift::Labels);
    }
    if !observed.annotations.contains_all(desired.annotations.as_ref()) {
        reasons.push(Drift::Annotations);
    }
    reasons
}

fn same_role_ref(a: &RoleRef, b: &RoleRef) -> bool {
    a.api_group == b.api_group && a.kind == b.kind && a.name == b.name
}

/// Subjects compared the way the API server stores them (absent and empty
/// strings are the same; the order of the atomic list matters).
fn same_subjects(a: Option<&[Subject]>, b: Option<&[Subject]>) -> bool {
    let norm = |s: Option<&[Subject]>| -> Vec<(String, String, String, String)> {
        s.unwrap_or_default()
            .iter()
            .map(|s| {
                (
                    s.kind.clone(),
                    s.name.clone(),
                    s.namespace.clone().unwrap_or_default(),
                    s.api_group.clone().unwrap_or_default(),
                )
            })
            .collect()
    };
    norm(a) == norm(b)
}

/// Rules compared with absent and empty lists the same (the server drops empty ones).
fn same_rules(a: Option<&[PolicyRule]>, b: Option<&[PolicyRule]>) -> bool {
    type Norm = [Vec<String>; 5];
    let norm = |rules: Option<&[PolicyRule]>| -> Vec<Norm> {
        rules
            .unwrap_or_default()
            .iter()
            .map(|r| {
                let list = |v: &Option<Vec<String>>| v.clone().unwrap_or_default();
                [
                    list(&r.api_groups),
                    list(&r.resources),
                    list(&r.resource_names),
                    list(&r.non_resource_urls),
                    r.verbs.clone(),
                ]
            })
            .collect()
    };
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const NOW: i64 = 1_800_000_000;
    const HOUR: i64 = 3600;

    fn selector() -> Selector {
        "np-test/reaper=unit".parse().unwrap()
    }

    fn rules(verb: &str) -> Vec<PolicyRule> {
        vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".to_owned()]),
            verbs: vec![verb.to_owned()],
            ..PolicyRule::default()
        }]
    }

    fn config(role: bool) -> PlanConfig {
        PlanConfig {
            set: SetConfig {
                selector: selector(),
                cluster_role: "grant".to_owned(),
                role_rules: role.then(|| rules("get")),
            },
            max_ttl: Duration::from_secs(3 * HOUR as u64),
            max_deletions: None,
        }
    }

    fn tenant() -> TenantName {
        "ci".parse().unwrap()
    }

    /// The set as the provisioner made it, as the API server returns it.
    fn observed(name: &str, expiry: i64, role: bool) -> Observed {
        let DesiredSet {
            mut namespace,
            mut service_account,
            mut role_binding,
            role: nsrole,
        } = desired_set(name, &tenant(), Expiry::from_unix(expiry), &config(role).set);
        namespace.metadata.uid = Some(format!("uid-{name}"));
        namespace.metadata.resource_version = Some("7".to_owned());
        namespace.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(NOW - HOUR).unwrap()));
        namespace
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("kubernetes.io/metadata.name".to_owned(), name.to_owned());
        service_account.metadata.uid = Some("uid-sa".to_owned());
        role_binding.metadata.uid = Some("uid-rb".to_owned());
        let (roles, mut bindings) = match nsrole {
            Some(NamespacedRole { role, binding }) => (vec![role.into()], vec![binding.into()]),
            None => (vec![], vec![]),
        };
        bindings.insert(0, role_binding.into());
        Observed {
            namespaces: vec![namespace.into()],
            service_accounts: vec![service_account.into()],
            roles,
            role_bindings: bindings,
        }
    }

    fn live() -> Observed {
        observed("np-live", NOW + HOUR, false)
    }

    fn ns_labels(set: &mut Observed) -> &mut Pairs {
        &mut set.namespaces[0].labels
    }

    /// The plan for the one set of `o`.
    fn plan_one(o: &Observed, now: i64, config: &PlanConfig) -> SetPlan {
        let sets = o.sets();
        assert_eq!(sets.len(), 1, "{sets:?}");
        plan_set(&sets[0], now, config)
    }

    /// (kind, name, reasons, recreate) of each write, for compact expectations.
    fn writes(action: &Action) -> Vec<(&'static str, String, Vec<Drift>, bool)> {
        action
            .writes()
            .iter()
            .map(|w| {
                (
                    w.object.kind(),
                    w.object.name(),
                    w.reasons.clone(),
                    w.recreate_uid.is_some(),
                )
            })
            .collect()
    }

    #[test]
    fn table_of_cases() {
        use Drift::*;
        type Case = (
            &'static str,
            Observed,
            bool,
            &'static str,
            Vec<(&'static str, &'static str, Vec<Drift>, bool)>,
        );
        let mut cases: Vec<Case> = Vec::new();

        cases.push(("complete and live", live(), false, "inSync", vec![]));
        cases.push((
            "expired",
            observed("np-old", NOW - 1, false),
            false,
            "delete",
            vec![],
        ));
        cases.push((
            "expiry exactly now",
            observed("np-now", NOW, false),
            false,
            "delete",
            vec![],
        ));
        let mut drifted_and_expired = observed("np-old2", NOW - 5, false);
        drifted_and_expired.service_accounts.clear();
        cases.push((
            "expired beats drifted",
            drifted_and_expired,
            false,
            "delete",
            vec![],
        ));

        let mut terminating = observed("np-term", NOW - 1, false);
        terminating.namespaces[0].deleting = true;
        cases.push(("terminating", terminating, false, "skipTerminating", vec![]));
        let mut terminating_live = live();
        terminating_live.service_accounts.clear();
        terminating_live.namespaces[0].deleting = true;
        cases.push((
            "terminating, not expired, incomplete",
            terminating_live,
            false,
            "skipTerminating",
            vec![],
        ));

        let mut s = live();
        s.service_accounts.clear();
        cases.push((
            "service account missing",
            s,
            false,
            "repair",
            vec![("ServiceAccount", "namespace-provisioner", vec![Missing], false)],
        ));

        let mut s = live();
        s.role_bindings.clear();
        cases.push((
            "role binding missing",
            s,
            false,
            "repair",
            vec![("RoleBinding", "namespace-provisioner", vec![Missing], false)],
        ));

        let mut s = live();
        s.role_bindings[0].subjects.as_mut().unwrap().push(Subject {
            kind: "User".to_owned(),
            name: "mallory".to_owned(),
            ..Subject::default()
        });
        cases.push((
            "extra subject",
            s,
            false,
            "repair",
            vec![("RoleBinding", "namespace-provisioner", vec![Subjects], false)],
        ));

        let mut s = live();
        s.role_bindings[0].subjects = None;
        cases.push((
            "no subjects",
            s,
            false,
            "repair",
            vec![("RoleBinding", "namespace-provisioner", vec![Subjects], false)],
        ));

        let mut s = live();
        s.role_bindings[0].role_ref.name = "cluster-admin".to_owned();
        cases.push((
            "roleRef changed: recreate",
            s,
            false,
            "repair",
            vec![("RoleBinding", "namespace-provisioner", vec![RoleRef], true)],
        ));

        let mut s = live();
        s.role_bindings[0].subjects.as_mut().unwrap()[0].api_group = Some(String::new());
        cases.push(("empty apiGroup is no drift", s, false, "inSync", vec![]));

        let mut s = live();
        s.service_accounts[0].meta.labels.remove(TENANT_LABEL);
        cases.push((
            "label removed from service account",
            s,
            false,
            "repair",
            vec![("ServiceAccount", "namespace-provisioner", vec![Labels], false)],
        ));

        let mut s = live();
        s.role_bindings[0].meta.labels.insert(EXPIRY_LABEL, "1");
        s.role_bindings[0].meta.annotations = Pairs::default();
        cases.push((
            "binding label changed, annotation gone",
            s,
            false,
            "repair",
            vec![(
                "RoleBinding",
                "namespace-provisioner",
                vec![Labels, Annotations],
                false,
            )],
        ));

        let mut s = live();
        s.namespaces[0].annotations = Pairs::default();
        cases.push((
            "namespace annotation missing",
            s,
            false,
            "repair",
            vec![("Namespace", "np-live", vec![Annotations], false)],
        ));

        let mut s = live();
        s.service_accounts[0].meta.labels.insert("team", "x");
        cases.push(("extra labels are fine", s, false, "inSync", vec![]));

        cases.push((
            "with role: complete",
            observed("np-r", NOW + HOUR, true),
            true,
            "inSync",
            vec![],
        ));
        let mut s = observed("np-r", NOW + HOUR, true);
        s.roles.clear();
        s.role_bindings.truncate(1);
        cases.push((
            "with role: role and its binding missing",
            s,
            true,
            "repair",
            vec![
                ("Role", "namespace-provisioner", vec![Missing], false),
                ("RoleBinding", "namespace-provisioner-role", vec![Missing], false),
            ],
        ));
        let mut s = observed("np-r", NOW + HOUR, true);
        s.roles[0].rules = Some(rules("delete"));
        cases.push((
            "with role: rules changed",
            s,
            true,
            "repair",
            vec![("Role", "namespace-provisioner", vec![Rules], false)],
        ));
        let mut s = observed("np-r", NOW + HOUR, true);
        s.roles[0].rules.as_mut().unwrap()[0].resource_names = Some(vec![]);
        cases.push(("with role: empty list is no drift", s, true, "inSync", vec![]));

        let mut s = live();
        ns_labels(&mut s).remove(EXPIRY_LABEL);
        cases.push((
            "expiry missing: set, and the set follows",
            s,
            false,
            "setExpiry",
            vec![
                ("Namespace", "np-live", vec![Labels, Annotations], false),
                (
                    "ServiceAccount",
                    "namespace-provisioner",
                    vec![Labels, Annotations],
                    false,
                ),
                (
                    "RoleBinding",
                    "namespace-provisioner",
                    vec![Labels, Annotations],
                    false,
                ),
            ],
        ));

        let mut s = live();
        ns_labels(&mut s).remove(TENANT_LABEL);
        ns_labels(&mut s).remove(EXPIRY_LABEL);
        s.service_accounts.clear();
        s.role_bindings.clear();
        cases.push((
            "no tenant, no expiry: only the expiry",
            s,
            false,
            "setExpiry",
            vec![("Namespace", "np-live", vec![Labels], false)],
        ));

        let mut s = live();
        ns_labels(&mut s).remove(TENANT_LABEL);
        s.service_accounts.clear();
        s.role_bindings.clear();
        cases.push((
            "no tenant, valid expiry: nothing to do",
            s,
            false,
            "inSync",
            vec![],
        ));

        let mut s = observed("np-old3", NOW - 1, false);
        ns_labels(&mut s).remove(TENANT_LABEL);
        cases.push(("no tenant, expired", s, false, "delete", vec![]));

        let mut s = live();
        ns_labels(&mut s).insert(TENANT_LABEL, "Not A Label!");
        cases.push(("invalid tenant is no tenant", s, false, "inSync", vec![]));

        let mut s = live();
        s.namespaces.clear();
        cases.push(("orphan", s, false, "reportOrphan", vec![]));

        for (what, set, role, want_action, want_writes) in cases {
            let got = plan_one(&set, NOW, &config(role));
            assert_eq!(got.action.name(), want_action, "{what}: {got:#?}");
            let want: Vec<_> = want_writes
                .into_iter()
                .map(|(k, n, r, re)| (k, n.to_owned(), r, re))
                .collect();
            assert_eq!(writes(&got.action), want, "{what}");
        }
    }

    #[test]
    fn delete_carries_uid_and_resource_version() {
        let got = plan_one(&observed("np-old", NOW - 1, false), NOW, &config(false));
        assert_eq!(
            got.action,
            Action::Delete {
                expiry: Expiry::from_unix(NOW - 1),
                uid: "uid-np-old".to_owned(),
                resource_version: "7".to_owned()
            }
        );
    }

    #[test]
    fn repairs_apply_exactly_the_desired_objects() {
        let mut s = live();
        s.role_bindings[0].role_ref.name = "cluster-admin".to_owned();
        s.service_accounts.clear();
        let got = plan_one(&s, NOW, &config(false));
        let desired = desired_set(
            "np-live",
            &tenant(),
            Expiry::from_unix(NOW + HOUR),
            &config(false).set,
        );
        let Action::Repair { writes, .. } = got.action else {
            panic!("{got:?}")
        };
        assert_eq!(
            writes[0].object,
            Desired::ServiceAccount(Box::new(desired.service_account))
        );
        assert_eq!(
            writes[1].object,
            Desired::RoleBinding(Box::new(desired.role_binding))
        );
        assert_eq!(writes[1].recreate_uid.as_deref(), Some("uid-rb"));
    }

    #[test]
    fn missing_or_garbage_expiry_becomes_creation_plus_max_ttl() {
        for previous in [None, Some("garbage"), Some("-5"), Some("")] {
            let mut s = live();
            match previous {
                None => ns_labels(&mut s).remove(EXPIRY_LABEL),
                Some(v) => ns_labels(&mut s).insert(EXPIRY_LABEL, v),
            };
            let got = plan_one(&s, NOW, &config(false));
            let Action::SetExpiry {
                expiry,
                previous: got_previous,
                writes,
            } = &got.action
            else {
                panic!("{got:?}")
            };
            // Created an hour ago, max TTL three hours.
            assert_eq!(expiry.unix(), NOW + 2 * HOUR);
            assert_eq!(got_previous.as_deref(), previous);
            let Desired::Namespace(ns) = &writes[0].object else {
                panic!()
            };
            assert_eq!(ns.labels()[EXPIRY_LABEL], (NOW + 2 * HOUR).to_string());
        }
    }

    #[test]
    fn a_fallback_expiry_already_past_is_set_not_deleted() {
        let mut s = live();
        ns_labels(&mut s).remove(EXPIRY_LABEL);
        let much_later = NOW + 10 * HOUR;
        let got = plan_one(&s, much_later, &config(false));
        assert_eq!(got.action.name(), "setExpiry");
        assert_eq!(got.action.expiry(), Some(Expiry::from_unix(NOW + 2 * HOUR)));
        // Once set, the next look deletes it.
        ns_labels(&mut s).insert(EXPIRY_LABEL, &(NOW + 2 * HOUR).to_string());
        assert_eq!(plan_one(&s, much_later, &config(false)).action.name(), "delete");
    }

    #[test]
    fn untenanted_namespaces_get_only_an_expiry() {
        let mut s = live();
        ns_labels(&mut s).remove(TENANT_LABEL);
        ns_labels(&mut s).remove(EXPIRY_LABEL);
        let got = plan_one(&s, NOW, &config(false));
        assert!(got.untenanted);
        let [write] = got.action.writes() else {
            panic!("{got:?}")
        };
        let Desired::Namespace(ns) = &write.object else {
            panic!()
        };
        // Only what we set: not the selector, not a tenant.
        assert_eq!(ns.labels().keys().collect::<Vec<_>>(), vec![EXPIRY_LABEL]);
        assert!(
            ns.annotations()
                .contains_key(crate::labels::EXPIRES_AT_ANNOTATION)
        );
        // Its selector-labelled contents are reported, not adopted.
        assert_eq!(got.strays.len(), 2);
    }

    #[test]
    fn orphans_list_what_was_found() {
        let mut s = live();
        s.namespaces.clear();
        let got = plan_one(&s, NOW, &config(false));
        let Action::ReportOrphan { objects } = got.action else {
            panic!()
        };
        assert_eq!(
            objects.iter().map(|o| o.kind).collect::<Vec<_>>(),
            vec!["RoleBinding", "ServiceAccount"]
        );
        assert!(objects.iter().all(|o| o.namespace.as_deref() == Some("np-live")));
    }

    #[test]
    fn strays_are_reported_beside_the_action() {
        // A Role left over from an earlier --role-rules-file.
        let mut s = observed("np-r", NOW + HOUR, true);
        let got = plan_one(&s, NOW, &config(false));
        assert_eq!(got.action.name(), "inSync");
        assert_eq!(
            got.strays
                .iter()
                .map(|o| (o.kind, o.name.as_str()))
                .collect::<Vec<_>>(),
            vec![
                ("Role", "namespace-provisioner"),
                ("RoleBinding", "namespace-provisioner-role")
            ]
        );
        s.service_accounts.push(ObservedServiceAccount {
            meta: ObservedMeta {
                name: "other".to_owned(),
                namespace: Some("np-r".to_owned()),
                ..ObservedMeta::default()
            },
        });
        assert_eq!(plan_one(&s, NOW, &config(true)).strays.len(), 1);
    }

    /// Several single-set observations as one, in arbitrary order.
    fn merged(parts: Vec<Observed>) -> Observed {
        let mut all = Observed::default();
        for p in parts.into_iter().rev() {
            all.namespaces.extend(p.namespaces);
            all.service_accounts.extend(p.service_accounts);
            all.roles.extend(p.roles);
            all.role_bindings.extend(p.role_bindings);
        }
        Observed::new(
            &selector(),
            all.namespaces,
            all.service_accounts,
            all.roles,
            all.role_bindings,
        )
    }

    #[test]
    fn deletion_cap_keeps_the_oldest_and_defers_the_rest() {
        let all = merged(
            [("np-a", 30), ("np-b", 10), ("np-c", 20), ("np-d", -HOUR)]
                .iter()
                .map(|(n, ago)| observed(n, NOW - ago, false))
                .collect(),
        );
        let mut cfg = config(false);
        let actions = |cfg: &PlanConfig| -> Vec<&'static str> {
            plan(&all.sets(), NOW, cfg)
                .sets
                .iter()
                .map(|s| s.action.name())
                .collect()
        };
        assert_eq!(actions(&cfg), vec!["delete", "delete", "delete", "inSync"]);
        cfg.max_deletions = Some(2);
        assert_eq!(actions(&cfg), vec!["delete", "deleteCapped", "delete", "inSync"]);
        cfg.max_deletions = Some(0);
        assert_eq!(
            actions(&cfg),
            vec!["deleteCapped", "deleteCapped", "deleteCapped", "inSync"]
        );
    }

    #[test]
    fn grouping_keeps_only_the_exact_selector_and_slices_by_namespace() {
        let a = live();
        let mut foreign_sa = a.service_accounts[0].clone();
        foreign_sa.meta.name = "foreign".to_owned();
        foreign_sa.meta.labels.insert("np-test/reaper", "other-value");
        let mut unlabelled_ns = a.namespaces[0].clone();
        unlabelled_ns.name = "np-unlabelled".to_owned();
        unlabelled_ns.labels = Some(BTreeMap::from([(EXPIRY_LABEL.to_owned(), "1".to_owned())])).into();
        let mut elsewhere = a.role_bindings[0].clone();
        elsewhere.meta.namespace = Some("kube-system".to_owned());
        let mut no_namespace = a.role_bindings[0].clone();
        no_namespace.meta.namespace = None;
        let b = observed("np-b", NOW + HOUR, true);
        let all = Observed::new(
            &selector(),
            vec![b.namespaces[0].clone(), a.namespaces[0].clone(), unlabelled_ns],
            vec![
                a.service_accounts[0].clone(),
                foreign_sa,
                b.service_accounts[0].clone(),
            ],
            b.roles.clone(),
            vec![
                a.role_bindings[0].clone(),
                elsewhere,
                b.role_bindings[1].clone(),
                no_namespace,
                b.role_bindings[0].clone(),
            ],
        );
        let sets = all.sets();
        assert_eq!(
            sets.iter().map(|s| s.name).collect::<Vec<_>>(),
            vec!["kube-system", "np-b", "np-live"]
        );
        assert!(sets[0].namespace.is_none());
        assert_eq!(sets[0].role_bindings.len(), 1);
        assert_eq!(sets[1].namespace.map(|n| n.name.as_str()), Some("np-b"));
        assert_eq!(
            (
                sets[1].service_accounts.len(),
                sets[1].roles.len(),
                sets[1].role_bindings.len()
            ),
            (1, 1, 2)
        );
        assert_eq!(
            (
                sets[2].service_accounts.len(),
                sets[2].roles.len(),
                sets[2].role_bindings.len()
            ),
            (1, 0, 1)
        );
        let planned = plan(&sets, NOW, &config(false));
        assert_eq!(planned.sets[0].action.name(), "reportOrphan");
        assert_eq!(planned.sets[2].action.name(), "inSync");
        assert!(Observed::default().sets().is_empty());
    }

    #[test]
    fn pairs_stay_sorted_and_behave_like_a_map() {
        let mut p: Pairs = Some(BTreeMap::from([
            ("b".to_owned(), "2".to_owned()),
            ("a".to_owned(), "1".to_owned()),
        ]))
        .into();
        assert_eq!((p.get("a"), p.get("b"), p.get("c")), (Some("1"), Some("2"), None));
        p.insert("c", "3");
        p.insert("0", "0");
        p.insert("a", "one");
        assert_eq!(p.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["0", "a", "b", "c"]);
        assert_eq!(Pairs::default().get("a"), None);
        assert_eq!(p.get("a"), Some("one"));
        p.remove("b");
        assert_eq!(p.get("b"), None);
        assert!(p.contains_all(Some(&BTreeMap::from([("c".to_owned(), "3".to_owned())]))));
        assert!(!p.contains_all(Some(&BTreeMap::from([("c".to_owned(), "4".to_owned())]))));
        assert!(p.contains_all(None));
    }

    #[test]
    fn observations_keep_what_the_plan_reads_and_nothing_else() {
        let set = desired_set("np-x", &tenant(), Expiry::from_unix(NOW), &config(true).set);
        let mut ns = set.namespace.clone();
        ns.metadata.uid = Some("u".to_owned());
        ns.metadata.resource_version = Some("9".to_owned());
        ns.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(NOW).unwrap()));
        ns.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::from_second(NOW).unwrap()));
        ns.metadata.finalizers = Some(vec!["x".to_owned()]);
        let seen = ObservedNamespace::from(ns);
        assert_eq!(seen.name, "np-x");
        assert_eq!(
            (seen.uid.as_deref(), seen.resource_version.as_deref()),
            (Some("u"), Some("9"))
        );
        assert_eq!((seen.created, seen.deleting), (Some(NOW), true));
        assert_eq!(seen.labels.get(TENANT_LABEL), Some("ci"));
        assert!(carries(&selector(), &seen.labels));
        let mut rb = set.role_binding.clone();
        rb.metadata.uid = Some("rb".to_owned());
        let seen = ObservedRoleBinding::from(rb);
        assert_eq!(seen.meta.uid.as_deref(), Some("rb"));
        assert_eq!(seen.role_ref, set.role_binding.role_ref);
        let mut sa = set.service_account.clone();
        sa.metadata.uid = Some("sa".to_owned());
        assert_eq!(ObservedServiceAccount::from(sa).meta.uid, None);
        let role = set.role.unwrap().role;
        assert_eq!(ObservedRole::from(role.clone()).rules, role.rules);
    }

    #[test]
    fn next_look_is_the_expiry_unless_on_the_way_out() {
        assert_eq!(
            plan_one(&live(), NOW, &config(false)).action.next_look(),
            Some(Expiry::from_unix(NOW + HOUR))
        );
        let old = observed("np-old", NOW - 1, false);
        assert_eq!(plan_one(&old, NOW, &config(false)).action.next_look(), None);
    }
}
