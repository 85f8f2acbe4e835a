//! The reaper's decisions: from what was observed in each namespace, the
//! time and the configuration, what to do with it (delete, skip, repair, set
//! an expiry, report), and the per-run deletion cap. Pure: no client, no clock.
//!
//! The observation is [`super::observation`]; what to write is [`super::diff`].

use std::time::Duration;

use super::diff::{Drift, Write, diff, strays};
use super::observation::{ObjectId, ObservedNamespace, ObservedSet, contents};
use crate::rules::desired::{Owner, SetConfig, desired_set_for, expiry_only_namespace};
use crate::rules::kinds::Object;
use crate::rules::labels::{self, EXPIRY_LABEL};
use crate::rules::params::Expiry;
use crate::rules::pool;

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
    /// Expired, but a safety guard refused every deletion of this run (see
    /// [`Refusal`]): left for a run that passes it.
    DeleteRefused { expiry: Expiry },
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
            Self::DeleteRefused { .. } => "deleteRefused",
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
            | Self::DeleteRefused { expiry }
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
            Self::DeleteCapped { expiry } | Self::DeleteRefused { expiry } => Some(*expiry),
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
    /// The tenant label, when valid (for the audit line).
    pub tenant: Option<String>,
    /// A warm-pool member (issue 16): no tenant yet, its expiry is its max age.
    pub pool_member: bool,
}

/// The decisions for every observed namespace, sorted by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub sets: Vec<SetPlan>,
    /// Why this run deletes nothing, when a safety guard refused.
    pub refused: Option<Refusal>,
}

/// The relative guard of a sweep (issue 15): a run that would delete more
/// than `fraction` of all managed namespaces *and* more than `min` of them
/// deletes none. A label or clock bug looks like that; a normal cluster does not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MassDeletionGuard {
    /// In `(0, 1]`.
    pub fraction: f64,
    pub min: u32,
}

/// Why a run's deletions were all refused (repairs still run).
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// `due` expired namespaces out of `managed` trip the [`MassDeletionGuard`].
    MassDeletion {
        due: usize,
        managed: usize,
        guard: MassDeletionGuard,
    },
    /// The local clock differs from the API server's by more than the bound
    /// (or could not be compared): "expired" cannot be trusted.
    ClockSkew { reason: String },
}

impl Refusal {
    /// Stable name for reports, metric labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MassDeletion { .. } => "mass_deletion",
            Self::ClockSkew { .. } => "clock_skew",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MassDeletion { due, managed, guard } => write!(
                f,
                "{due} of {managed} managed namespaces are due for deletion, more than \
                 --mass-deletion-fraction {} of them and more than --mass-deletion-min {}: \
                 deleting none (repairs go on); if this is intended, run with --allow-mass-deletion",
                guard.fraction, guard.min
            ),
            Self::ClockSkew { reason } => write!(f, "{reason}: deleting none (repairs go on)"),
        }
    }
}

/// Whether `due` deletions out of `managed` namespaces trip `guard`.
pub fn is_mass_deletion(due: usize, managed: usize, guard: &MassDeletionGuard) -> bool {
    let min = usize::try_from(guard.min).unwrap_or(usize::MAX);
    // Exact in f64 for any realistic count (below 2^53).
    due > min && (due as f64) > guard.fraction * (managed as f64)
}

/// Turn every deletion of `plan` into [`Action::DeleteRefused`], saying why.
pub fn refuse_deletions(plan: &mut Plan, refusal: Refusal) {
    for set in &mut plan.sets {
        if let Action::Delete { expiry, .. } | Action::DeleteCapped { expiry } = set.action {
            set.action = Action::DeleteRefused { expiry };
        }
    }
    plan.refused = Some(refusal);
}

/// [`plan`], then the mass-deletion guard (`None`: allowed) over the
/// expired namespaces before the cap: the cap bounds a run, the guard
/// catches a run that should not happen at all.
pub fn plan_guarded(
    sets: &[ObservedSet<'_>],
    now: i64,
    config: &PlanConfig,
    guard: Option<&MassDeletionGuard>,
) -> Plan {
    settle(
        sets.iter().map(|s| plan_set(s, now, config)).collect(),
        config,
        guard,
    )
}

/// The rules of a whole run over the decisions of each set (in name order, as [`plan_set`]
/// made them): the deletion cap, then the mass-deletion guard (`None`: allowed). A sweep that
/// decided each set while listing settles them here.
pub fn settle(sets: Vec<SetPlan>, config: &PlanConfig, guard: Option<&MassDeletionGuard>) -> Plan {
    let mut planned = Plan { sets, refused: None };
    cap_deletions(&mut planned.sets, config.max_deletions);
    // An orphan has no Namespace: the guard weighs deletions against managed namespaces.
    let managed = planned
        .sets
        .iter()
        .filter(|s| !s.pool_member)
        .filter(|s| !matches!(s.action, Action::ReportOrphan { .. }))
        .count();
    guard_deletions(&mut planned, managed, guard);
    planned
}

/// The deletions [`plan_guarded`] decides, from the managed Namespaces alone: a deletion, the
/// cap and the guard read nothing else (expiry, deletion state, uid, resourceVersion, owner,
/// pool membership). So a sweep starts them while it is still listing the other kinds. The
/// plan holds only the sets whose Namespace settles their action (being deleted, or expired), in name order.
pub fn plan_deletions(
    namespaces: &[ObservedNamespace],
    now: i64,
    config: &PlanConfig,
    guard: Option<&MassDeletionGuard>,
) -> Plan {
    let mut sets = Vec::new();
    // One pass: each Namespace's owner is read once, for its set and for the guard's count.
    let mut managed = 0;
    for ns in namespaces {
        let owned = Owned::of(ns);
        if !owned.pool_member {
            managed += 1;
        }
        if let Some(action) = decided_by_namespace(ns, now) {
            sets.push(owned.plan(&ns.name, action, Vec::new()));
        }
    }
    sets.sort_unstable_by(|a, b| a.namespace.cmp(&b.namespace));
    cap_deletions(&mut sets, config.max_deletions);
    let mut planned = Plan { sets, refused: None };
    guard_deletions(&mut planned, managed, guard);
    planned
}

/// Refuse every deletion of `planned` if its count out of `managed` trips `guard`. Pool members
/// (issue 16) hold nothing of a tenant's and a pool filled at once goes stale at once: they are
/// not what this guard protects, so they count on neither side.
fn guard_deletions(planned: &mut Plan, managed: usize, guard: Option<&MassDeletionGuard>) {
    let Some(guard) = guard else {
        return;
    };
    let due = planned
        .sets
        .iter()
        .filter(|s| !s.pool_member)
        .filter(|s| matches!(s.action, Action::Delete { .. } | Action::DeleteCapped { .. }))
        .count();
    if is_mass_deletion(due, managed, guard) {
        refuse_deletions(
            planned,
            Refusal::MassDeletion {
                due,
                managed,
                guard: *guard,
            },
        );
    }
}

/// Decide for every set; apply the deletion cap (oldest expiry first, then name).
pub fn plan(sets: &[ObservedSet<'_>], now: i64, config: &PlanConfig) -> Plan {
    let mut sets: Vec<SetPlan> = sets.iter().map(|s| plan_set(s, now, config)).collect();
    cap_deletions(&mut sets, config.max_deletions);
    Plan { sets, refused: None }
}

/// At most `cap` deletions stay [`Action::Delete`], the oldest expiries first (then by name);
/// the others become [`Action::DeleteCapped`].
fn cap_deletions(sets: &mut [SetPlan], cap: Option<u32>) {
    let Some(cap) = cap else {
        return;
    };
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

/// Who a managed namespace belongs to, as its own metadata says.
struct Owned {
    tenant: Option<Owner>,
    /// A pool member has no tenant by design: only its expiry (its max age) is kept;
    /// its contents are the member set, not strays.
    pool_member: bool,
}

impl Owned {
    fn of(ns: &ObservedNamespace) -> Self {
        // The owner (tenant, and a Kubernetes creator's bound user) is read from
        // the Namespace, so the desired set is rebuilt from its metadata alone.
        let tenant = Owner::of(&ns.labels, &ns.annotations);
        let pool_member = tenant.is_none() && pool::is_member(&ns.labels);
        Self { tenant, pool_member }
    }

    fn plan(&self, name: &str, action: Action, strays: Vec<ObjectId>) -> SetPlan {
        SetPlan {
            namespace: name.to_owned(),
            action,
            strays: if self.pool_member { Vec::new() } else { strays },
            untenanted: self.tenant.is_none() && !self.pool_member,
            tenant: self.tenant.as_ref().map(|t| t.tenant.as_str().to_owned()),
            pool_member: self.pool_member,
        }
    }
}

/// The decisions the Namespace alone settles: already being deleted, or expired.
fn decided_by_namespace(ns: &ObservedNamespace, now: i64) -> Option<Action> {
    if ns.deleting {
        return Some(Action::SkipTerminating);
    }
    let expiry = labels::expiry_of(&ns.labels).filter(|expiry| expiry.is_due(now))?;
    Some(Action::Delete {
        expiry,
        uid: ns.uid.clone().unwrap_or_default(),
        resource_version: ns.resource_version.clone().unwrap_or_default(),
    })
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
            tenant: None,
            pool_member: false,
        };
    };
    let owned = Owned::of(ns);
    let done = |action, strays| owned.plan(&name, action, strays);
    if let Some(action) = decided_by_namespace(ns, now) {
        return done(action, Vec::new());
    }
    let tenant = &owned.tenant;
    let label = ns.labels.get(EXPIRY_LABEL);
    match labels::expiry_of(&ns.labels) {
        Some(expiry) => match tenant {
            Some(tenant) => {
                let desired = desired_set_for(&name, tenant, expiry, &config.set);
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
            match tenant {
                Some(tenant) => {
                    let desired = desired_set_for(&name, tenant, expiry, &config.set);
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
    Write {
        object: Object::Namespace(Box::new(expiry_only_namespace(name, expiry))),
        reasons: vec![Drift::Labels],
        recreate_uid: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reaper::fixtures::*;
    use crate::reaper::observation::{Observed, Pairs};
    use crate::rules::labels::TENANT_LABEL;
    use k8s_openapi::api::rbac::v1::Subject;
    use kube::ResourceExt;

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
            let Object::Namespace(ns) = &writes[0].object else {
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
        let Object::Namespace(ns) = &write.object else {
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

    /// A pool member (issue 16): no tenant, its contents are its set (not strays), kept only
    /// until its expiry (its max age), and never part of the mass-deletion guard's count.
    #[test]
    fn pool_members_expire_under_the_cap_but_not_into_the_mass_deletion_guard() {
        let member = |name: &str, expiry: i64| {
            let mut s = observed(name, expiry, false);
            ns_labels(&mut s).remove(TENANT_LABEL);
            ns_labels(&mut s).insert(pool::POOL_LABEL, pool::READY);
            s
        };
        let live_member = plan_one(&member("np-m", NOW + HOUR), NOW, &config(false));
        assert_eq!(live_member.action.name(), "inSync");
        assert!(live_member.pool_member && !live_member.untenanted);
        assert!(live_member.strays.is_empty());
        // Twelve stale members and two tenant sets: the guard sees none of the members.
        let mut sets: Vec<Observed> = (0..12).map(|i| member(&format!("np-m{i:02}"), NOW - 1)).collect();
        sets.push(observed("np-a", NOW + HOUR, false));
        sets.push(observed("np-b", NOW + HOUR, false));
        let all = merged(sets);
        let guard = MassDeletionGuard {
            fraction: 0.5,
            min: 10,
        };
        let mut cfg = config(false);
        cfg.max_deletions = Some(5);
        let planned = plan_guarded(&all.sets(), NOW, &cfg, Some(&guard));
        assert_eq!(planned.refused, None);
        let count = |name: &str| planned.sets.iter().filter(|s| s.action.name() == name).count();
        // The cap still bounds them.
        assert_eq!((count("delete"), count("deleteCapped")), (5, 7));
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
    fn the_mass_deletion_guard_needs_both_the_fraction_and_the_minimum() {
        let guard = MassDeletionGuard {
            fraction: 0.5,
            min: 10,
        };
        // (due, managed) -> refused
        for (due, managed, refused) in [
            (0, 0, false),
            (10, 10, false), // all of them, but not more than the minimum
            (11, 22, false), // more than the minimum, exactly half
            (11, 21, true),  // more than the minimum and more than half
            (400, 1000, false),
            (501, 1000, true),
            (1000, 1000, true),
        ] {
            assert_eq!(
                is_mass_deletion(due, managed, &guard),
                refused,
                "{due} of {managed}"
            );
        }
        let all = MassDeletionGuard {
            fraction: 1.0,
            min: 0,
        };
        assert!(!is_mass_deletion(5, 5, &all), "fraction 1: never more than all");
    }

    #[test]
    fn a_refused_plan_deletes_nothing_and_still_repairs() {
        let mut sets: Vec<Observed> = (0..12)
            .map(|i| observed(&format!("np-{i:02}"), NOW - 10, false))
            .collect();
        let mut damaged = observed("np-live", NOW + HOUR, false);
        damaged.service_accounts.clear();
        sets.push(damaged);
        sets.push(observed("np-later", NOW + HOUR, false));
        let all = merged(sets);
        let guard = MassDeletionGuard {
            fraction: 0.5,
            min: 10,
        };
        let mut cfg = config(false);
        cfg.max_deletions = Some(5);
        let refused = plan_guarded(&all.sets(), NOW, &cfg, Some(&guard));
        let count = |plan: &Plan, name: &str| plan.sets.iter().filter(|s| s.action.name() == name).count();
        assert_eq!(
            count(&refused, "deleteRefused"),
            12,
            "capped ones are refused too"
        );
        assert_eq!(count(&refused, "delete") + count(&refused, "deleteCapped"), 0);
        assert_eq!(count(&refused, "repair"), 1);
        assert_eq!(
            refused.refused,
            Some(Refusal::MassDeletion {
                due: 12,
                managed: 14,
                guard
            })
        );
        let text = refused.refused.as_ref().unwrap().to_string();
        assert!(
            text.contains("12 of 14") && text.contains("--allow-mass-deletion"),
            "{text}"
        );
        // Allowed (no guard): the cap alone applies.
        let allowed = plan_guarded(&all.sets(), NOW, &cfg, None);
        assert_eq!(
            (count(&allowed, "delete"), count(&allowed, "deleteCapped")),
            (5, 7)
        );
        assert_eq!(allowed.refused, None);
        // Below the fraction: untouched.
        let loose = MassDeletionGuard {
            fraction: 0.9,
            min: 10,
        };
        assert_eq!(plan_guarded(&all.sets(), NOW, &cfg, Some(&loose)).refused, None);
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

#[cfg(test)]
#[path = "plan_proptests.rs"]
mod proptests;
