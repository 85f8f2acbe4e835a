//! What a run did (or, with `--dry-run`, would do), as text or JSON for
//! CronJob logs. No I/O: the caller prints it.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::execute::Outcome;
use super::observation::ObjectId;
use super::plan::{Action, Plan, SetPlan};
use crate::telemetry::chain;

/// How long each phase took. A sweep's phases overlap (its deletions start once the
/// Namespaces are listed, each namespace is decided once every kind's list has passed it), so
/// they may add up to more than the run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Durations {
    /// Until every kind is listed (each set decided as it completed).
    pub list: Duration,
    /// After the listing: the run-wide rules (cap, guard) over those decisions.
    pub plan: Duration,
    /// From the first write to the last.
    pub execute: Duration,
}

/// Counts of one run. In a dry run, what would have been done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub dry_run: bool,
    /// Namespaces with at least one object carrying the selector.
    pub scanned_sets: usize,
    pub in_sync: usize,
    pub expired_deleted: usize,
    pub repaired: usize,
    pub expiry_set: usize,
    pub skipped_terminating: usize,
    pub orphans_reported: usize,
    /// Selector-labelled objects in managed namespaces that the desired set does not name.
    pub strays_reported: usize,
    /// Expired, but not deleted in this run because `--max-deletions` was reached.
    pub deletions_capped: usize,
    /// `None`: unlimited.
    pub max_deletions: Option<u32>,
    /// Expired, but every deletion of this run was refused by a safety guard
    /// (`refusal` says which and why).
    pub deletions_refused: usize,
    /// `mass_deletion` or `clock_skew`, when a guard refused this run's deletions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<&'static str>,
    /// The refusal as a person reads it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal_reason: Option<String>,
    /// Expired, but gone or changed by the time we deleted: looked at again next run.
    pub changed_before_delete: usize,
    pub failed: usize,
    /// Successful writes (deletes, applies).
    pub writes: usize,
    /// Deletions whose Event could not be recorded (the deletion stands).
    pub event_errors: usize,
    pub list_ms: u64,
    pub plan_ms: u64,
    pub execute_ms: u64,
    /// Peak resident memory of this process, where the OS tells (Linux).
    pub peak_rss_kib: Option<u64>,
    /// Aggregate quota ledgers (budget statuses, remainders) this run rebuilt and wrote.
    pub quota_ledgers_rebuilt: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteEntry {
    pub kind: &'static str,
    pub name: String,
    pub reasons: Vec<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub recreate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectEntry {
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
}

impl From<&ObjectId> for ObjectEntry {
    fn from(o: &ObjectId) -> Self {
        Self {
            kind: o.kind,
            namespace: o.namespace.clone(),
            name: o.name.clone(),
        }
    }
}

/// One namespace that needed (or would need) something, or had something to report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub namespace: String,
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The expiry label's value when it was not valid (`setExpiry`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_expiry: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub writes: Vec<WriteEntry>,
    /// Orphans (`reportOrphan`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<ObjectEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub strays: Vec<ObjectEntry>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub untenanted: bool,
    /// `done`, `gone`, `changed`, `failed`; absent in a dry run or when there was nothing to write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub summary: Summary,
    /// Every set except those in sync with nothing to report.
    pub entries: Vec<Entry>,
    /// Namespace trees: tree labels, cascades, propagation (`reaper` binary sweeps).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trees: Option<super::hierarchy::TreeReport>,
    /// Live namespaces and their time left after this run (issue 14): what
    /// watch mode exports on /metrics, for CronJob logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry: Option<ExpirySummary>,
    /// ExpiringSoon Events and webhook notices of this run (issue 14).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notices: Option<Notices>,
    /// Warm pools (issue 16), when the sweep refilled them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<super::pool::PoolReport>,
}

/// Live managed namespaces per tenant and a cumulative histogram of their
/// time left, as of the run's `now`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpirySummary {
    /// Tenant label -> live namespaces (`""`: no tenant label).
    pub live_namespaces: std::collections::BTreeMap<String, usize>,
    /// Cumulative: live namespaces with at most `le` seconds left.
    pub time_left_seconds: Vec<Bucket>,
    /// The soonest expiry's time left, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soonest_secs: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bucket {
    pub le: u64,
    pub count: usize,
}

impl ExpirySummary {
    /// From the plan at `now`: namespaces not on their way out, expiring after `now`.
    pub fn of(plan: &Plan, now: i64) -> Self {
        let mut summary = Self::default();
        let mut left = Vec::new();
        for set in &plan.sets {
            if matches!(
                set.action,
                Action::Delete { .. } | Action::DeleteCapped { .. } | Action::SkipTerminating
            ) {
                continue;
            }
            let Some(expiry) = set.action.expiry().filter(|e| e.unix() > now) else {
                continue;
            };
            *summary
                .live_namespaces
                .entry(set.tenant.clone().unwrap_or_default())
                .or_insert(0) += 1;
            left.push(expiry.unix() - now);
        }
        summary.soonest_secs = left.iter().min().copied();
        summary.time_left_seconds = super::notice::TIME_LEFT_BUCKETS
            .iter()
            .map(|le| {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let le = *le as u64;
                Bucket {
                    le,
                    count: left
                        .iter()
                        .filter(|l| u64::try_from(**l).is_ok_and(|l| l <= le))
                        .count(),
                }
            })
            .collect();
        summary
    }
}

/// What the notice passes of a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notices {
    /// `--notify-before`: the ExpiringSoon pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiring_soon: Option<super::notice::NoticeReport>,
    /// `--notify-webhook-config`: every webhook notice of the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<super::webhook::WebhookTally>,
}

impl Report {
    /// `outcomes` are in plan order; `None` for a dry run.
    pub fn new(
        plan: &Plan,
        outcomes: Option<&[Outcome]>,
        durations: Durations,
        max_deletions: Option<u32>,
        peak_rss_kib: Option<u64>,
    ) -> Self {
        let mut s = Summary {
            dry_run: outcomes.is_none(),
            scanned_sets: plan.sets.len(),
            max_deletions,
            list_ms: millis(durations.list),
            plan_ms: millis(durations.plan),
            execute_ms: millis(durations.execute),
            peak_rss_kib,
            refusal: plan.refused.as_ref().map(|r| r.kind()),
            refusal_reason: plan.refused.as_ref().map(ToString::to_string),
            ..Summary::default()
        };
        let mut entries = Vec::new();
        for (i, set) in plan.sets.iter().enumerate() {
            let outcome = outcomes.and_then(|o| o.get(i));
            count(&mut s, set, outcome);
            if !matches!(set.action, Action::InSync { .. }) || !set.strays.is_empty() {
                entries.push(entry(set, outcome));
            }
        }
        Self {
            summary: s,
            entries,
            trees: None,
            expiry: None,
            notices: None,
            pool: None,
        }
    }

    /// Whether a safety guard refused this run's deletions (the process
    /// exits non-zero, with its own status).
    pub fn refused(&self) -> bool {
        self.summary.refusal.is_some()
    }

    /// Whether anything failed (the process exits non-zero).
    pub fn failed(&self) -> bool {
        self.summary.failed > 0
            || self.trees.as_ref().is_some_and(|t| t.failed())
            || self.pool.as_ref().is_some_and(|p| p.failed())
    }

    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// One line per entry, then the summary.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for e in &self.entries {
            let _ = write!(out, "{} {}", e.namespace, e.action);
            if let Some(at) = &e.expires_at {
                let _ = write!(out, " expiry={at}");
            }
            if let Some(p) = &e.previous_expiry {
                let _ = write!(out, " previous={p:?}");
            }
            for w in &e.writes {
                let _ = write!(
                    out,
                    " {}/{}({}{})",
                    w.kind,
                    w.name,
                    w.reasons.join(","),
                    if w.recreate { ",recreate" } else { "" }
                );
            }
            for o in &e.objects {
                let _ = write!(out, " orphan={}/{}", o.kind, o.name);
            }
            for o in &e.strays {
                let _ = write!(out, " stray={}/{}", o.kind, o.name);
            }
            if e.untenanted {
                out.push_str(" untenanted");
            }
            if let Some(outcome) = e.outcome {
                let _ = write!(out, " -> {outcome}");
            }
            for err in &e.errors {
                let _ = write!(out, " error={err:?}");
            }
            if let Some(err) = &e.event_error {
                let _ = write!(out, " event_error={err:?}");
            }
            out.push('\n');
        }
        let s = &self.summary;
        let verb = if s.dry_run {
            "dry run (nothing written): would have"
        } else {
            "done:"
        };
        let cap = s
            .max_deletions
            .map_or_else(|| "unlimited".to_owned(), |m| m.to_string());
        let _ = writeln!(
            out,
            "{verb} scanned {} sets; in sync {}; expired deleted {}; repaired {}; expiry set {}; \
             skipped terminating {}; orphans reported {}; strays reported {}; deletions capped {} \
             (max {cap}); changed before delete {}; failed {}; writes {}; event errors {}; \
             list {}ms, plan {}ms, execute {}ms{}",
            s.scanned_sets,
            s.in_sync,
            s.expired_deleted,
            s.repaired,
            s.expiry_set,
            s.skipped_terminating,
            s.orphans_reported,
            s.strays_reported,
            s.deletions_capped,
            s.changed_before_delete,
            s.failed,
            s.writes,
            s.event_errors,
            s.list_ms,
            s.plan_ms,
            s.execute_ms,
            s.peak_rss_kib
                .map_or_else(String::new, |k| format!(", peak RSS {k} KiB")),
        );
        if s.deletions_capped > 0 {
            let _ = writeln!(
                out,
                "deletion cap reached: {} expired namespaces left for the next run (--max-deletions {cap})",
                s.deletions_capped
            );
        }
        if let Some(reason) = &s.refusal_reason {
            let _ = writeln!(
                out,
                "deletions refused: {} expired namespaces not deleted: {reason}",
                s.deletions_refused
            );
        }
        if s.quota_ledgers_rebuilt > 0 {
            let _ = writeln!(out, "quota ledgers rebuilt {}", s.quota_ledgers_rebuilt);
        }
        if let Some(trees) = &self.trees {
            out.push_str(&trees.to_text());
        }
        if let Some(expiry) = &self.expiry {
            let live: Vec<String> = expiry
                .live_namespaces
                .iter()
                .map(|(tenant, n)| {
                    let tenant = if tenant.is_empty() { "(none)" } else { tenant };
                    format!("{tenant}={n}")
                })
                .collect();
            let _ = writeln!(
                out,
                "live namespaces per tenant: {}{}",
                if live.is_empty() {
                    "none".to_owned()
                } else {
                    live.join(" ")
                },
                expiry
                    .soonest_secs
                    .map_or_else(String::new, |s| format!("; soonest expiry in {s}s")),
            );
        }
        if let Some(n) = &self.notices {
            if let Some(e) = &n.expiring_soon {
                let _ = writeln!(
                    out,
                    "ExpiringSoon notices: sent {}, failed {}, deferred {}",
                    e.sent, e.failed, e.deferred
                );
            }
            if let Some(w) = &n.webhook {
                let _ = writeln!(
                    out,
                    "webhook notices: sent {}, failed {}, dropped {}, still pending {}",
                    w.sent, w.failed, w.dropped, w.pending
                );
            }
        }
        if let Some(pool) = &self.pool {
            out.push_str(&pool.to_text());
        }
        out
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn count(s: &mut Summary, set: &SetPlan, outcome: Option<&Outcome>) {
    s.strays_reported += set.strays.len();
    // In a dry run the plan counts as done.
    let done = outcome.is_none_or(|o| matches!(o, Outcome::Deleted { .. } | Outcome::Written { .. }));
    match outcome {
        Some(Outcome::Failed { writes, .. }) => {
            s.failed += 1;
            s.writes += writes;
        }
        Some(Outcome::Written { writes }) => s.writes += writes,
        Some(Outcome::Deleted { event }) => {
            s.writes += 1;
            s.event_errors += usize::from(event.is_some());
        }
        Some(Outcome::Gone | Outcome::Changed) => s.changed_before_delete += 1,
        Some(Outcome::Nothing) | None => {}
    }
    match &set.action {
        Action::InSync { .. } => s.in_sync += 1,
        Action::Delete { .. } => s.expired_deleted += usize::from(done),
        Action::DeleteCapped { .. } => s.deletions_capped += 1,
        Action::DeleteRefused { .. } => s.deletions_refused += 1,
        Action::SkipTerminating => s.skipped_terminating += 1,
        Action::Repair { .. } => s.repaired += usize::from(done),
        Action::SetExpiry { .. } => s.expiry_set += usize::from(done),
        Action::ReportOrphan { .. } => s.orphans_reported += 1,
    }
}

fn entry(set: &SetPlan, outcome: Option<&Outcome>) -> Entry {
    let expiry = set.action.expiry();
    let (outcome, errors, event_error) = match outcome {
        None | Some(Outcome::Nothing) => (None, Vec::new(), None),
        Some(Outcome::Deleted { event }) => (Some("done"), Vec::new(), event.as_ref().map(|e| chain(e))),
        Some(Outcome::Written { .. }) => (Some("done"), Vec::new(), None),
        Some(Outcome::Gone) => (Some("gone"), Vec::new(), None),
        Some(Outcome::Changed) => (Some("changed"), Vec::new(), None),
        Some(Outcome::Failed { errors, .. }) => {
            (Some("failed"), errors.iter().map(|e| chain(e)).collect(), None)
        }
    };
    Entry {
        namespace: set.namespace.clone(),
        action: set.action.name(),
        expiry: expiry.map(|e| e.unix()),
        expires_at: expiry.map(|e| e.rfc3339()),
        previous_expiry: match &set.action {
            Action::SetExpiry { previous, .. } => previous.clone(),
            _ => None,
        },
        writes: set
            .action
            .writes()
            .iter()
            .map(|w| WriteEntry {
                kind: w.object.kind().as_str(),
                name: w.object.name(),
                reasons: w.reasons.iter().map(|r| r.as_str()).collect(),
                recreate: w.recreate_uid.is_some(),
            })
            .collect(),
        objects: match &set.action {
            Action::ReportOrphan { objects } => objects.iter().map(ObjectEntry::from).collect(),
            _ => Vec::new(),
        },
        strays: set.strays.iter().map(ObjectEntry::from).collect(),
        untenanted: set.untenanted,
        outcome,
        errors,
        event_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reaper::diff::{Drift, Write};
    use crate::reaper::execute::ExecuteError;
    use crate::rules::kinds::Object;
    use crate::rules::params::Expiry;
    use k8s_openapi::api::core::v1::ServiceAccount;

    fn set(namespace: &str, action: Action) -> SetPlan {
        SetPlan {
            namespace: namespace.to_owned(),
            action,
            strays: Vec::new(),
            untenanted: false,
            pool_member: false,
            tenant: None,
        }
    }

    fn sample() -> Plan {
        let write = Write {
            object: Object::ServiceAccount(Box::new(ServiceAccount {
                metadata: kube::api::ObjectMeta {
                    name: Some("namespace-provisioner".to_owned()),
                    ..Default::default()
                },
                ..Default::default()
            })),
            reasons: vec![Drift::Missing],
            recreate_uid: None,
        };
        Plan {
            sets: vec![
                set(
                    "a",
                    Action::InSync {
                        expiry: Expiry::from_unix(100),
                    },
                ),
                set(
                    "b",
                    Action::Delete {
                        expiry: Expiry::from_unix(1),
                        uid: "u".into(),
                        resource_version: "1".into(),
                    },
                ),
                set(
                    "c",
                    Action::DeleteCapped {
                        expiry: Expiry::from_unix(2),
                    },
                ),
                set(
                    "d",
                    Action::Repair {
                        expiry: Expiry::from_unix(100),
                        writes: vec![write.clone()],
                    },
                ),
                set(
                    "e",
                    Action::SetExpiry {
                        expiry: Expiry::from_unix(100),
                        previous: Some("x".into()),
                        writes: vec![write],
                    },
                ),
                set("f", Action::SkipTerminating),
                set("g", Action::ReportOrphan { objects: vec![] }),
            ],
            refused: None,
        }
    }

    #[test]
    fn a_refusal_is_counted_and_said() {
        let plan = Plan {
            sets: vec![set(
                "b",
                Action::DeleteRefused {
                    expiry: Expiry::from_unix(1),
                },
            )],
            refused: Some(crate::reaper::plan::Refusal::ClockSkew {
                reason: "the local clock is 3600s behind the API server's".into(),
            }),
        };
        let r = Report::new(&plan, Some(&[Outcome::Nothing]), Durations::default(), None, None);
        assert!(r.refused() && !r.failed());
        assert_eq!(r.summary.deletions_refused, 1);
        assert_eq!(r.summary.refusal, Some("clock_skew"));
        let text = r.to_text();
        assert!(
            text.contains(
                "deletions refused: 1 expired namespaces not deleted: the local clock is 3600s behind"
            ),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
        assert_eq!(json["summary"]["refusal"], "clock_skew");
        assert_eq!(json["entries"][0]["action"], "deleteRefused");
    }

    #[test]
    fn dry_run_counts_the_plan() {
        let r = Report::new(&sample(), None, Durations::default(), Some(1), None);
        let s = &r.summary;
        assert!(s.dry_run);
        assert_eq!(
            (
                s.scanned_sets,
                s.in_sync,
                s.expired_deleted,
                s.deletions_capped,
                s.repaired
            ),
            (7, 1, 1, 1, 1)
        );
        assert_eq!(
            (s.expiry_set, s.skipped_terminating, s.orphans_reported, s.failed),
            (1, 1, 1, 0)
        );
        // In-sync sets are not listed.
        assert_eq!(r.entries.len(), 6);
        assert!(r.entries.iter().all(|e| e.outcome.is_none()));
        let text = r.to_text();
        assert!(text.contains("dry run (nothing written)"), "{text}");
        assert!(text.contains("deletion cap reached: 1 expired"), "{text}");
        assert!(text.contains("d repair"), "{text}");
    }

    #[test]
    fn outcomes_decide_counts_and_failure() {
        let outcomes = vec![
            Outcome::Nothing,
            Outcome::Deleted { event: None },
            Outcome::Nothing,
            Outcome::Failed {
                writes: 0,
                errors: vec![ExecuteError::NoPrecondition {
                    namespace: "d".into(),
                }],
            },
            Outcome::Written { writes: 1 },
            Outcome::Nothing,
            Outcome::Nothing,
        ];
        let r = Report::new(
            &sample(),
            Some(&outcomes),
            Durations::default(),
            Some(1),
            Some(1234),
        );
        let s = &r.summary;
        assert!(!s.dry_run);
        assert_eq!(
            (s.expired_deleted, s.repaired, s.expiry_set, s.failed, s.writes),
            (1, 0, 1, 1, 2)
        );
        assert!(r.failed());
        let json: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
        assert_eq!(json["summary"]["failed"], 1);
        assert_eq!(json["summary"]["peakRssKib"], 1234);
        assert_eq!(json["entries"][2]["outcome"], "failed");
        assert_eq!(json["entries"][2]["writes"][0]["reasons"][0], "missing");
        assert_eq!(json["entries"][3]["previousExpiry"], "x");
    }

    #[test]
    fn expiry_summary_counts_live_namespaces_and_the_notices_are_said() {
        let mut plan = sample();
        for (set, tenant) in plan
            .sets
            .iter_mut()
            .zip(["alpha", "alpha", "beta", "beta", "alpha"])
        {
            set.tenant = Some(tenant.to_owned());
        }
        plan.sets.push(set(
            "h",
            Action::InSync {
                expiry: Expiry::from_unix(5_000),
            },
        ));
        // At 40: a (alpha), d (beta), e (alpha) with 60 s left and h (no tenant) are live;
        // b and c are due, f is terminating, g has no expiry.
        let summary = ExpirySummary::of(&plan, 40);
        assert_eq!(
            summary.live_namespaces,
            std::collections::BTreeMap::from([
                (String::new(), 1),
                ("alpha".to_owned(), 2),
                ("beta".to_owned(), 1)
            ])
        );
        assert_eq!(summary.soonest_secs, Some(60));
        assert_eq!(summary.time_left_seconds[0], Bucket { le: 60, count: 3 });
        assert_eq!(summary.time_left_seconds[4], Bucket { le: 3_600, count: 3 });
        assert_eq!(summary.time_left_seconds[5], Bucket { le: 7_200, count: 4 });
        // Nothing live at all.
        assert_eq!(ExpirySummary::of(&plan, 10_000).soonest_secs, None);

        let mut r = Report::new(&plan, None, Durations::default(), None, None);
        r.expiry = Some(summary);
        r.notices = Some(Notices {
            expiring_soon: Some(crate::reaper::notice::NoticeReport {
                sent: 2,
                failed: 0,
                deferred: 1,
            }),
            webhook: Some(crate::reaper::webhook::WebhookTally {
                sent: 5,
                failed: 1,
                dropped: 0,
                pending: 0,
            }),
        });
        let text = r.to_text();
        for want in [
            "live namespaces per tenant: (none)=1 alpha=2 beta=1; soonest expiry in 60s",
            "ExpiringSoon notices: sent 2, failed 0, deferred 1",
            "webhook notices: sent 5, failed 1, dropped 0, still pending 0",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        let json: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
        assert_eq!(json["expiry"]["liveNamespaces"]["alpha"], 2);
        assert_eq!(json["expiry"]["timeLeftSeconds"][0]["le"], 60);
        assert_eq!(json["notices"]["expiringSoon"]["deferred"], 1);
        assert_eq!(json["notices"]["webhook"]["failed"], 1);
    }
}
