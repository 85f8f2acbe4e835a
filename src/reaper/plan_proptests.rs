//! The plan's invariants over generated observations (issue 15 item 5):
//! managed and unmanaged namespaces, live, expired, terminating, without a
//! (valid) expiry or tenant, complete or missing parts, a drifted roleRef, a
//! deletion cap. Whatever is observed, the plan
//!
//! - never deletes a namespace that is unmanaged, live, terminating or
//!   without a valid expiry, and deletes only with the observed uid;
//! - loses no expired namespace (deleted, or capped for the next run);
//! - never deletes more than the cap, and keeps the oldest expiries under it;
//! - refuses all or nothing under the mass-deletion guard;
//! - decides its deletions (cap and guard included) from the Namespaces alone, as the sweep
//!   that starts them before the other kinds are listed relies on;
//! - is done after one execution: a second plan over the state the first
//!   plan's execution leaves (modelled purely below, as server-side apply
//!   and a namespace deletion would leave it) has nothing to write, and
//!   deletes only what the first one capped or has just given an expiry
//!   already past.
//!
//! Tree cascades (parents, children) are planned in `reaper::hierarchy`, not here.

use proptest::prelude::*;

use super::*;
use crate::reaper::fixtures::{HOUR, NOW, config, observed, selector};
use crate::reaper::observation::{Observed, ObservedMeta, ObservedRoleBinding};
use crate::rules::labels::TENANT_LABEL;

/// The expiry label of a generated namespace.
#[derive(Debug, Clone, Copy)]
enum ExpiryCase {
    /// `NOW + offset` seconds.
    At(i64),
    Missing,
    Garbage,
}

/// One generated namespace.
#[derive(Debug, Clone)]
struct Case {
    /// The Namespace carries the selector (else only its contents may).
    managed: bool,
    expiry: ExpiryCase,
    tenanted: bool,
    terminating: bool,
    service_account: bool,
    role_binding: bool,
    role_ref_drift: bool,
    /// Seconds between its creation and now.
    age: i64,
}

impl Case {
    fn expired(&self) -> bool {
        matches!(self.expiry, ExpiryCase::At(offset) if offset <= 0)
    }

    /// What the plan may delete now.
    fn due(&self) -> bool {
        self.managed && !self.terminating && self.expired()
    }
}

fn expiry_case() -> impl Strategy<Value = ExpiryCase> {
    prop_oneof![
        6 => (-4 * HOUR..4 * HOUR).prop_map(ExpiryCase::At),
        1 => Just(ExpiryCase::Missing),
        1 => Just(ExpiryCase::Garbage),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::bool::weighted(0.8),
        expiry_case(),
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.1),
        0..5 * HOUR,
    )
        .prop_map(
            |(managed, expiry, tenanted, terminating, service_account, role_binding, role_ref_drift, age)| {
                Case {
                    managed,
                    expiry,
                    tenanted,
                    terminating,
                    service_account,
                    role_binding,
                    role_ref_drift,
                    age,
                }
            },
        )
}

fn name(i: usize) -> String {
    format!("np-{i:03}")
}

fn index(name: &str) -> usize {
    name.trim_start_matches("np-").parse().unwrap_or(usize::MAX)
}

/// What the API server would list for `cases` (everything carrying the selector).
fn observe(cases: &[Case], role: bool) -> Observed {
    let key = selector().key().to_owned();
    let parts = cases.iter().enumerate().map(|(i, c)| {
        let expiry = match c.expiry {
            ExpiryCase::At(offset) => NOW + offset,
            ExpiryCase::Missing | ExpiryCase::Garbage => NOW + HOUR,
        };
        let mut o = observed(&name(i), expiry, role);
        let ns = &mut o.namespaces[0];
        match c.expiry {
            ExpiryCase::At(_) => {}
            ExpiryCase::Missing => ns.labels.remove(EXPIRY_LABEL),
            ExpiryCase::Garbage => ns.labels.insert(EXPIRY_LABEL, "soon"),
        }
        if !c.tenanted {
            ns.labels.remove(TENANT_LABEL);
        }
        if !c.managed {
            ns.labels.remove(&key);
        }
        ns.deleting = c.terminating;
        ns.created = Some(NOW - c.age);
        if !c.service_account {
            o.service_accounts.clear();
        }
        if !c.role_binding {
            o.role_bindings.remove(0);
        } else if c.role_ref_drift {
            o.role_bindings[0].role_ref.name = "cluster-admin".to_owned();
        }
        o
    });
    Observed::merge(parts).managed(&selector())
}

fn deletes(plan: &Plan) -> Vec<(Expiry, &str)> {
    plan.sets
        .iter()
        .filter_map(|s| match s.action {
            Action::Delete { expiry, .. } => Some((expiry, s.namespace.as_str())),
            _ => None,
        })
        .collect()
}

fn capped(plan: &Plan) -> Vec<(Expiry, &str)> {
    plan.sets
        .iter()
        .filter_map(|s| match s.action {
            Action::DeleteCapped { expiry } => Some((expiry, s.namespace.as_str())),
            _ => None,
        })
        .collect()
}

/// Server-side apply of `object` as the API server would leave it: labels
/// and annotations merged (ours win), the spec fields we own replaced; a
/// RoleBinding whose roleRef drifted deleted first.
fn apply(state: &mut Observed, write: &Write) {
    let mut written = Observed::default();
    written.push(write.object.clone());
    let merge = |into: &mut ObservedMeta, from: &ObservedMeta| {
        for (k, v) in from.labels.iter() {
            into.labels.insert(k, v);
        }
        for (k, v) in from.annotations.iter() {
            into.annotations.insert(k, v);
        }
    };
    let same = |a: &ObservedMeta, b: &ObservedMeta| a.name == b.name && a.namespace == b.namespace;
    if let Some(ns) = written.namespaces.pop()
        && let Some(have) = state.namespaces.iter_mut().find(|n| n.name == ns.name)
    {
        merge(have, &ns);
    }
    if let Some(sa) = written.service_accounts.pop() {
        match state
            .service_accounts
            .iter_mut()
            .find(|o| same(&o.meta, &sa.meta))
        {
            Some(have) => merge(&mut have.meta, &sa.meta),
            None => state.service_accounts.push(sa),
        }
    }
    if let Some(role) = written.roles.pop() {
        match state.roles.iter_mut().find(|o| same(&o.meta, &role.meta)) {
            Some(have) => {
                merge(&mut have.meta, &role.meta);
                have.rules = role.rules;
            }
            None => state.roles.push(role),
        }
    }
    if let Some(mut rb) = written.role_bindings.pop() {
        if let Some(uid) = &write.recreate_uid {
            // That object only (the fixtures reuse uids across namespaces).
            state.role_bindings.retain(|o: &ObservedRoleBinding| {
                !(same(&o.meta, &rb.meta) && o.meta.uid.as_ref() == Some(uid))
            });
        }
        match state.role_bindings.iter_mut().find(|o| same(&o.meta, &rb.meta)) {
            Some(have) => {
                merge(&mut have.meta, &rb.meta);
                have.role_ref = rb.role_ref;
                have.subjects = rb.subjects;
            }
            None => {
                rb.meta.uid = Some(format!("uid-new-{}", rb.meta.name));
                state.role_bindings.push(rb);
            }
        }
    }
}

/// The state after `plan` was carried out (a deleted namespace is Terminating).
fn execute(observed: &Observed, plan: &Plan) -> Observed {
    let mut state = observed.clone();
    for set in &plan.sets {
        match &set.action {
            Action::Delete { .. } => {
                if let Some(ns) = state.namespaces.iter_mut().find(|n| n.name == set.namespace) {
                    ns.deleting = true;
                }
            }
            Action::Repair { writes, .. } | Action::SetExpiry { writes, .. } => {
                for write in writes {
                    apply(&mut state, write);
                }
            }
            _ => {}
        }
    }
    state.managed(&selector())
}

fn cases() -> impl Strategy<Value = (Vec<Case>, bool, Option<u32>)> {
    (
        prop::collection::vec(case(), 0..24),
        any::<bool>(),
        prop_oneof![Just(None), (0u32..6).prop_map(Some)],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn deletes_only_what_is_managed_expired_and_not_terminating((cases, role, cap) in cases()) {
        let observed = observe(&cases, role);
        let config = PlanConfig { max_deletions: cap, ..config(role) };
        let planned = plan(&observed.sets(), NOW, &config);
        for set in &planned.sets {
            let case = &cases[index(&set.namespace)];
            match &set.action {
                Action::Delete { uid, .. } => {
                    prop_assert!(case.due(), "{} deleted: {case:?}", set.namespace);
                    prop_assert_eq!(uid, &format!("uid-{}", set.namespace));
                }
                Action::DeleteCapped { .. } | Action::DeleteRefused { .. } => {
                    prop_assert!(case.due(), "{} due: {case:?}", set.namespace);
                }
                Action::ReportOrphan { .. } => prop_assert!(!case.managed),
                _ => prop_assert!(case.managed, "{} unmanaged, planned {:?}", set.namespace, set.action),
            }
            // An unmanaged namespace is only ever reported.
            if !case.managed {
                prop_assert!(matches!(set.action, Action::ReportOrphan { .. }), "{:?}", set.action);
            }
        }
        // No expired namespace is lost: deleted now or capped for the next run.
        let planned_due: usize = deletes(&planned).len() + capped(&planned).len();
        prop_assert_eq!(planned_due, cases.iter().filter(|c| c.due()).count());
    }

    #[test]
    fn the_cap_keeps_the_oldest_expiries((cases, role, cap) in cases()) {
        let observed = observe(&cases, role);
        let config = PlanConfig { max_deletions: cap, ..config(role) };
        let planned = plan(&observed.sets(), NOW, &config);
        let (deleted, left) = (deletes(&planned), capped(&planned));
        let due = deleted.len() + left.len();
        match cap {
            None => prop_assert!(left.is_empty()),
            Some(cap) => prop_assert_eq!(deleted.len(), due.min(cap as usize)),
        }
        if let (Some(newest_deleted), Some(oldest_left)) = (deleted.iter().max(), left.iter().min()) {
            prop_assert!(newest_deleted < oldest_left, "{newest_deleted:?} deleted before {oldest_left:?}");
        }
    }

    #[test]
    fn the_mass_deletion_guard_refuses_all_or_nothing(
        (cases, role, cap) in cases(),
        fraction in 0.05f64..=1.0,
        min in 0u32..8,
    ) {
        let observed = observe(&cases, role);
        let config = PlanConfig { max_deletions: cap, ..config(role) };
        let sets = observed.sets();
        let free = plan(&sets, NOW, &config);
        let guard = MassDeletionGuard { fraction, min };
        let guarded = plan_guarded(&sets, NOW, &config, Some(&guard));
        match &guarded.refused {
            None => prop_assert_eq!(&guarded, &free),
            Some(_) => {
                prop_assert!(deletes(&guarded).is_empty() && capped(&guarded).is_empty());
                for (a, b) in guarded.sets.iter().zip(&free.sets) {
                    match (&a.action, &b.action) {
                        (Action::DeleteRefused { expiry }, Action::Delete { expiry: e, .. } | Action::DeleteCapped { expiry: e }) => {
                            prop_assert_eq!(expiry, e);
                        }
                        (got, was) => prop_assert_eq!(got, was),
                    }
                }
            }
        }
    }

    #[test]
    fn a_second_plan_after_executing_the_first_has_nothing_left((cases, role, cap) in cases()) {
        let observed = observe(&cases, role);
        let config = PlanConfig { max_deletions: cap, ..config(role) };
        let first = plan(&observed.sets(), NOW, &config);
        let after = execute(&observed, &first);
        let second = plan(&after.sets(), NOW, &PlanConfig { max_deletions: None, ..config });
        prop_assert_eq!(second.sets.len(), first.sets.len());
        for (one, two) in first.sets.iter().zip(&second.sets) {
            prop_assert_eq!(&one.namespace, &two.namespace);
            match (&one.action, &two.action) {
                // Deleted: terminating now.
                (Action::Delete { .. } | Action::SkipTerminating, got) => {
                    prop_assert_eq!(got, &Action::SkipTerminating)
                }
                // Left by the cap: this run's.
                (Action::DeleteCapped { expiry }, Action::Delete { expiry: e, .. }) => prop_assert_eq!(expiry, e),
                // Given an expiry already past (created longer than max TTL ago): due now.
                (Action::SetExpiry { expiry, .. }, Action::Delete { expiry: e, .. }) => {
                    prop_assert!(expiry.is_due(NOW));
                    prop_assert_eq!(expiry, e);
                }
                (Action::SetExpiry { expiry, .. } | Action::Repair { expiry, .. } | Action::InSync { expiry },
                 Action::InSync { expiry: e }) => prop_assert_eq!(expiry, e),
                (Action::ReportOrphan { objects }, Action::ReportOrphan { objects: o }) => prop_assert_eq!(objects, o),
                (was, got) => prop_assert!(false, "{}: {was:?} then {got:?}", one.namespace),
            }
        }
    }

    #[test]
    fn the_deletions_from_the_namespaces_alone_are_the_whole_plans(
        (cases, role, cap) in cases(),
        guard in prop::option::of((0.05f64..=1.0, 0u32..8)),
    ) {
        let observed = observe(&cases, role);
        let config = PlanConfig { max_deletions: cap, ..config(role) };
        let guard = guard.map(|(fraction, min)| MassDeletionGuard { fraction, min });
        let whole = plan_guarded(&observed.sets(), NOW, &config, guard.as_ref());
        let early = plan_deletions(&observed.namespaces, NOW, &config, guard.as_ref());
        let settled: Vec<&SetPlan> = whole
            .sets
            .iter()
            .filter(|s| matches!(
                s.action,
                Action::Delete { .. } | Action::DeleteCapped { .. } | Action::DeleteRefused { .. } | Action::SkipTerminating
            ))
            .collect();
        prop_assert_eq!(early.sets.iter().collect::<Vec<_>>(), settled);
        prop_assert_eq!(early.refused, whole.refused);
    }
}
