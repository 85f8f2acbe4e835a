//! What the reaper reads of the cluster: slim copies of the listed objects
//! (only the fields a decision reads), filtered to the selector and grouped
//! by namespace. Pure: the listing itself is in [`super::observe`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::ObjectMeta;

use crate::rules::kinds::{Kind, Object};
use crate::rules::labels::{self, Labels};
use crate::rules::params::Selector;

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
    pub fn contains_all(&self, want: Option<&BTreeMap<String, String>>) -> bool {
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

impl Labels for Pairs {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key)
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
    labels::is_managed(selector, labels)
}

/// Whether a listed namespaced object is one a plan may consider: it carries the selector and
/// names its namespace.
pub(super) fn is_managed_content(selector: &Selector, meta: &ObservedMeta) -> bool {
    carries(selector, &meta.labels) && meta.namespace.is_some()
}

impl Observed {
    /// Add one listed object, slimmed, to its kind's list.
    pub fn push(&mut self, object: Object) {
        match object {
            Object::Namespace(o) => self.namespaces.push((*o).into()),
            Object::ServiceAccount(o) => self.service_accounts.push((*o).into()),
            Object::Role(o) => self.roles.push((*o).into()),
            Object::RoleBinding(o) => self.role_bindings.push((*o).into()),
        }
    }

    /// Put partial observations (e.g. one per kind, listed concurrently)
    /// together, moving rather than copying where a list is empty.
    pub fn merge(parts: impl IntoIterator<Item = Self>) -> Self {
        fn take<T>(into: &mut Vec<T>, mut from: Vec<T>) {
            if into.is_empty() {
                *into = from;
            } else {
                into.append(&mut from);
            }
        }
        let mut all = Self::default();
        for part in parts {
            let Self {
                namespaces,
                service_accounts,
                roles,
                role_bindings,
            } = part;
            take(&mut all.namespaces, namespaces);
            take(&mut all.service_accounts, service_accounts);
            take(&mut all.roles, roles);
            take(&mut all.role_bindings, role_bindings);
        }
        all
    }

    /// Keep only what carries the selector, sorted by namespace (see [`Self::new`]).
    pub fn managed(self, selector: &Selector) -> Self {
        let Self {
            namespaces,
            service_accounts,
            roles,
            role_bindings,
        } = self;
        Self::new(selector, namespaces, service_accounts, roles, role_bindings)
    }

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
        o.namespaces.retain(|ns| carries(selector, &ns.labels));
        o.service_accounts
            .retain(|x| is_managed_content(selector, &x.meta));
        o.roles.retain(|x| is_managed_content(selector, &x.meta));
        o.role_bindings.retain(|x| is_managed_content(selector, &x.meta));
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
        sets_of(
            &self.namespaces,
            &self.service_accounts,
            &self.roles,
            &self.role_bindings,
        )
    }
}

/// The sets of lists each sorted by namespace, sorted by namespace name.
pub(super) fn sets_of<'a>(
    namespaces: &'a [ObservedNamespace],
    service_accounts: &'a [ObservedServiceAccount],
    roles: &'a [ObservedRole],
    role_bindings: &'a [ObservedRoleBinding],
) -> Vec<ObservedSet<'a>> {
    /// The run of `items` from `*at` that belong to namespace `name`.
    fn run<'a, T>(items: &'a [T], at: &mut usize, name: &str, ns: impl Fn(&T) -> Option<&str>) -> &'a [T] {
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
            namespaces.get(n).map(|x| x.name.as_str()),
            service_accounts.get(s).and_then(|x| x.meta.namespace.as_deref()),
            roles.get(r).and_then(|x| x.meta.namespace.as_deref()),
            role_bindings.get(b).and_then(|x| x.meta.namespace.as_deref()),
        ];
        let Some(name) = heads.into_iter().flatten().min() else {
            return sets;
        };
        let namespace = namespaces.get(n).filter(|x| x.name == name);
        n += usize::from(namespace.is_some());
        sets.push(ObservedSet {
            name,
            namespace,
            service_accounts: run(service_accounts, &mut s, name, |x| x.meta.namespace.as_deref()),
            roles: run(roles, &mut r, name, |x| x.meta.namespace.as_deref()),
            role_bindings: run(role_bindings, &mut b, name, |x| x.meta.namespace.as_deref()),
        });
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
    pub fn of(kind: Kind, meta: &ObservedMeta) -> Self {
        Self {
            kind: kind.as_str(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
        }
    }
}

/// Every object found in one namespace, for reporting (orphans, strays of an untenanted namespace).
pub fn contents(observed: &ObservedSet<'_>) -> Vec<ObjectId> {
    let mut ids: Vec<ObjectId> = observed
        .service_accounts
        .iter()
        .map(|o| ObjectId::of(Kind::ServiceAccount, &o.meta))
        .chain(observed.roles.iter().map(|o| ObjectId::of(Kind::Role, &o.meta)))
        .chain(
            observed
                .role_bindings
                .iter()
                .map(|o| ObjectId::of(Kind::RoleBinding, &o.meta)),
        )
        .collect();
    ids.sort();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reaper::fixtures::*;
    use crate::reaper::plan::plan;
    use crate::rules::desired::desired_set;
    use crate::rules::labels::{EXPIRY_LABEL, TENANT_LABEL};
    use crate::rules::params::Expiry;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

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
    fn partial_observations_merge_into_one() {
        let a = live();
        let b = observed("np-b", NOW + HOUR, true);
        let mut objects = Observed::default();
        objects.push(Object::Namespace(Box::default()));
        assert_eq!(objects.namespaces.len(), 1);
        let all = Observed::merge([a.clone(), b.clone(), Observed::default()]).managed(&selector());
        assert_eq!(all.sets().len(), 2);
        assert_eq!(
            all.role_bindings.len(),
            a.role_bindings.len() + b.role_bindings.len()
        );
    }
}
