//! The ledger: which child holds which allocation, as pure state transitions. It lives in the
//! parent's HRQ `status.children`; the I/O layer writes the ledger a transition returns with a
//! `resourceVersion` precondition, so of two writers that read the same ledger only one
//! succeeds and the other re-reads and calls the transition again (see the module docs of
//! [`crate::rules::quota`]). No I/O, no clock: `now` is an input.

use std::collections::BTreeMap;

use super::allocation::{Refusal, check_fit, remainder};
use super::resources::{Resources, ResourcesError};

/// One allocation in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The child's uid, known once the namespace exists. `None` between the ledger write and
    /// the create: a *reservation*.
    pub uid: Option<String>,
    pub allocation: Resources,
    /// Unix seconds of the reservation, so a rebuild can tell an in-flight create (young) from
    /// one that crashed (old).
    pub reserved_at: i64,
}

/// Allocations by child name (names are unique among a parent's children: they are
/// namespaces), plus a revision counter bumped by every transition that changes anything. The
/// remainder quota records the revision it was computed from, so a writer holding an older
/// ledger never raises it (see [`remainder_is_newer`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ledger {
    pub entries: BTreeMap<String, Entry>,
    pub revision: u64,
}

/// A live child as the reaper lists it: a namespace under the parent (Terminating included:
/// its objects still count until it is gone) and the `hard` of its allocation quota, `None`
/// when the quota is not there (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveChild {
    pub name: String,
    pub uid: String,
    pub allocation: Option<Resources>,
}

impl Ledger {
    /// Σ of all allocations, reservations included.
    pub fn allocated(&self) -> Result<Resources, ResourcesError> {
        Resources::sum(self.entries.values().map(|entry| &entry.allocation))
    }

    /// The parent's remainder quota `hard` for this ledger.
    pub fn remainder(&self, budget: &Resources) -> Result<Resources, ResourcesError> {
        Ok(remainder(budget, &self.allocated()?))
    }

    fn bumped(mut self) -> Ledger {
        self.revision = self.revision.saturating_add(1);
        self
    }
}

/// Takes `allocation` for a child about to be created. Refused (and the ledger untouched: the
/// caller still owns the one it passed) when it does not fit in
/// `budget − Σ allocations − parent_used`, or when the name already holds an allocation (a
/// second create under a taken name would double-count).
pub fn reserve(
    ledger: &Ledger,
    budget: &Resources,
    parent_used: &Resources,
    child: &str,
    allocation: Resources,
    now: i64,
) -> Result<Ledger, ReserveError> {
    if ledger.entries.contains_key(child) {
        return Err(ReserveError::AlreadyAllocated(child.to_owned()));
    }
    check_fit(budget, &ledger.allocated()?, parent_used, &allocation)?;
    let mut next = ledger.clone();
    next.entries.insert(
        child.to_owned(),
        Entry {
            uid: None,
            allocation,
            reserved_at: now,
        },
    );
    Ok(next.bumped())
}

/// Why [`reserve`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("child {0:?} already holds an allocation")]
    AlreadyAllocated(String),
}

impl From<ResourcesError> for ReserveError {
    fn from(error: ResourcesError) -> ReserveError {
        ReserveError::Refused(Refusal::Arithmetic(error))
    }
}

/// Records the uid of a reserved child once its namespace exists. `None` when nothing changes
/// (unknown name, or already confirmed with that uid).
pub fn confirm(ledger: &Ledger, child: &str, uid: &str) -> Option<Ledger> {
    let entry = ledger.entries.get(child)?;
    if entry.uid.as_deref() == Some(uid) {
        return None;
    }
    let mut next = ledger.clone();
    if let Some(entry) = next.entries.get_mut(child) {
        entry.uid = Some(uid.to_owned());
    }
    Some(next.bumped())
}

/// Returns a child's allocation: the child is gone, or its create failed and was rolled back.
/// With `uid`, only the entry of that uid (or a reservation) is released, so a release for an
/// old namespace cannot free a new one of the same name. `None` when nothing changes.
pub fn release(ledger: &Ledger, child: &str, uid: Option<&str>) -> Option<Ledger> {
    let entry = ledger.entries.get(child)?;
    if let (Some(uid), Some(held)) = (uid, entry.uid.as_deref())
        && uid != held
    {
        return None;
    }
    let mut next = ledger.clone();
    next.entries.remove(child);
    Some(next.bumped())
}

/// The reaper's repair: the ledger that matches the live children. For each entry and child:
///
/// * a live child with an allocation quota holds exactly what that quota says (the quota is
///   what admission enforces; a ledger that disagrees is the stale one), under its uid;
/// * a live child without a quota keeps its ledger entry (the provisioner is between the
///   namespace create and the quota create; a later run or the provisioner writes the quota);
/// * a live child unknown to the ledger and without a quota is not ours to count;
/// * an entry whose child is not live is dropped if it was confirmed (the child is gone:
///   its allocation returns) or if it is a reservation older than `grace_seconds` (a crash
///   between ledger write and create leaked it); a younger reservation is kept, it is a create
///   in flight;
/// * an entry whose uid differs from the live child's is replaced by the live child (the name
///   was reused), or dropped when that child has no quota.
///
/// The revision is bumped only when the entries change, so an idle sweep writes nothing.
pub fn rebuild(ledger: &Ledger, live: &[LiveChild], now: i64, grace_seconds: i64) -> Ledger {
    let live_by_name: BTreeMap<&str, &LiveChild> =
        live.iter().map(|child| (child.name.as_str(), child)).collect();
    let mut entries = BTreeMap::new();
    for (name, entry) in &ledger.entries {
        let kept = match live_by_name.get(name.as_str()) {
            Some(child) => rebuilt_entry(entry, child),
            None => keep_if_in_flight(entry, now, grace_seconds),
        };
        if let Some(kept) = kept {
            entries.insert(name.clone(), kept);
        }
    }
    for child in live {
        if let (false, Some(allocation)) = (entries.contains_key(&child.name), &child.allocation) {
            entries.insert(child.name.clone(), adopted(child, allocation, now));
        }
    }
    if entries == ledger.entries {
        return ledger.clone();
    }
    Ledger {
        entries,
        revision: ledger.revision,
    }
    .bumped()
}

fn rebuilt_entry(entry: &Entry, child: &LiveChild) -> Option<Entry> {
    let same_child = entry.uid.as_deref().is_none_or(|uid| uid == child.uid);
    match (&child.allocation, same_child) {
        (Some(allocation), _) => Some(Entry {
            uid: Some(child.uid.clone()),
            allocation: allocation.clone(),
            reserved_at: entry.reserved_at,
        }),
        (None, true) => Some(entry.clone()),
        (None, false) => None,
    }
}

fn keep_if_in_flight(entry: &Entry, now: i64, grace_seconds: i64) -> Option<Entry> {
    let young = !reservation_expired(entry.reserved_at, now, grace_seconds);
    (entry.uid.is_none() && young).then(|| entry.clone())
}

/// Whether a reservation made at `reserved_at` is past the grace after which a rebuild drops
/// it. The provisioner asks this (with its own, shorter, grace: the rebuild's minus a margin
/// for clock skew) right before creating the namespace and gives up, releasing, when it is: a
/// namespace created after its reservation was dropped would hold an allocation the ledger no
/// longer counts.
pub fn reservation_expired(reserved_at: i64, now: i64, grace_seconds: i64) -> bool {
    now.saturating_sub(reserved_at) >= grace_seconds
}

fn adopted(child: &LiveChild, allocation: &Resources, now: i64) -> Entry {
    Entry {
        uid: Some(child.uid.clone()),
        allocation: allocation.clone(),
        reserved_at: now,
    }
}

/// Whether a remainder quota written from ledger revision `ledger_revision` may replace one
/// written from `on_quota` (absent on a quota we never wrote). Only a newer ledger may write:
/// a writer holding an older ledger (fewer allocations) would otherwise raise the remainder
/// over what the newer ledger already handed to a child.
pub fn remainder_is_newer(on_quota: Option<u64>, ledger_revision: u64) -> bool {
    on_quota.is_none_or(|written| ledger_revision > written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::quota::resources::res;

    const GRACE: i64 = 300;

    fn budget() -> Resources {
        res(&[("requests.cpu", "2"), ("count/pods", "4")])
    }

    fn one_cpu() -> Resources {
        res(&[("requests.cpu", "1"), ("count/pods", "2")])
    }

    fn reserved(ledger: &Ledger, child: &str) -> Ledger {
        reserve(ledger, &budget(), &Resources::default(), child, one_cpu(), 1000)
            .unwrap_or_else(|e| panic!("{child}: {e}"))
    }

    #[test]
    fn the_last_slot_goes_to_one_reservation() {
        let base = reserved(&Ledger::default(), "a");
        // Two writers read `base` and both compute a reservation: both fit on paper, the
        // resourceVersion precondition lets only the first write land; the loser re-reads.
        let winner = reserved(&base, "b");
        assert!(reserve(&base, &budget(), &Resources::default(), "c", one_cpu(), 1000).is_ok());
        let loser = reserve(&winner, &budget(), &Resources::default(), "c", one_cpu(), 1000);
        assert!(matches!(
            loser,
            Err(ReserveError::Refused(Refusal::DoesNotFit(_)))
        ));
        assert_eq!(
            winner.remainder(&budget()),
            Ok(res(&[("requests.cpu", "0"), ("count/pods", "0")]))
        );
        assert_eq!(winner.revision, 2);
    }

    #[test]
    fn the_parents_own_usage_is_not_handed_out() {
        let used = res(&[("requests.cpu", "1500m")]);
        let refused = reserve(&Ledger::default(), &budget(), &used, "a", one_cpu(), 0);
        assert!(refused.is_err());
    }

    #[test]
    fn a_name_holds_one_allocation() {
        let ledger = reserved(&Ledger::default(), "a");
        let again = reserve(
            &ledger,
            &budget(),
            &Resources::default(),
            "a",
            Resources::default(),
            0,
        );
        assert_eq!(again, Err(ReserveError::AlreadyAllocated("a".to_owned())));
    }

    #[test]
    fn confirm_and_release_follow_the_uid() {
        let ledger = reserved(&Ledger::default(), "a");
        let confirmed = confirm(&ledger, "a", "uid-1").unwrap_or_default();
        assert_eq!(
            confirmed.entries.get("a").and_then(|e| e.uid.clone()),
            Some("uid-1".to_owned())
        );
        assert_eq!(confirm(&confirmed, "a", "uid-1"), None);
        assert_eq!(confirm(&confirmed, "zz", "uid-1"), None);
        assert_eq!(release(&confirmed, "a", Some("uid-2")), None);
        let released = release(&confirmed, "a", Some("uid-1")).unwrap_or_default();
        assert!(released.entries.is_empty());
        assert_eq!(release(&released, "a", None), None);
    }

    fn live(name: &str, uid: &str, allocation: Option<Resources>) -> LiveChild {
        LiveChild {
            name: name.to_owned(),
            uid: uid.to_owned(),
            allocation,
        }
    }

    #[test]
    fn rebuild_matches_the_live_children() {
        let mut ledger = reserved(&Ledger::default(), "crashed");
        ledger = reserved(&ledger, "in-flight");
        if let Some(entry) = ledger.entries.get_mut("in-flight") {
            entry.reserved_at = 1200;
        }
        let ledger = Ledger {
            entries: ledger
                .entries
                .into_iter()
                .chain([
                    (
                        "gone".to_owned(),
                        Entry {
                            uid: Some("g".into()),
                            allocation: one_cpu(),
                            reserved_at: 0,
                        },
                    ),
                    (
                        "drifted".to_owned(),
                        Entry {
                            uid: Some("d".into()),
                            allocation: one_cpu(),
                            reserved_at: 0,
                        },
                    ),
                    (
                        "creating".to_owned(),
                        Entry {
                            uid: None,
                            allocation: one_cpu(),
                            reserved_at: 0,
                        },
                    ),
                ])
                .collect(),
            revision: 7,
        };
        let quota = res(&[("requests.cpu", "500m")]);
        let children = [
            live("drifted", "d", Some(quota.clone())),
            live("creating", "c", None),
            live("terminating-but-there", "t", Some(one_cpu())),
            live("not-ours", "x", None),
        ];
        let rebuilt = rebuild(&ledger, &children, 1400, GRACE);
        let summary: Vec<(&str, Option<&str>)> = rebuilt
            .entries
            .iter()
            .map(|(name, entry)| (name.as_str(), entry.uid.as_deref()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("creating", None),
                ("drifted", Some("d")),
                ("in-flight", None),
                ("terminating-but-there", Some("t")),
            ]
        );
        assert_eq!(
            rebuilt.entries.get("drifted").map(|e| &e.allocation),
            Some(&quota)
        );
        assert_eq!(rebuilt.revision, 8);
        assert_eq!(
            rebuild(&rebuilt, &children, 1400, GRACE),
            rebuilt,
            "idle sweep changes nothing"
        );
    }

    #[test]
    fn a_reused_name_is_the_live_child() {
        let ledger = reserved(&Ledger::default(), "a");
        let old = confirm(&ledger, "a", "old").unwrap_or_default();
        let rebuilt = rebuild(&old, &[live("a", "new", Some(budget()))], 5000, GRACE);
        let entry = rebuilt.entries.get("a");
        assert_eq!(entry.and_then(|e| e.uid.as_deref()), Some("new"));
        let rebuilt = rebuild(&old, &[live("a", "new", None)], 5000, GRACE);
        assert!(rebuilt.entries.is_empty());
    }

    #[test]
    fn a_reservation_expires_at_the_grace() {
        assert!(!reservation_expired(1000, 1299, GRACE));
        assert!(reservation_expired(1000, 1300, GRACE));
        assert!(
            !reservation_expired(1000, 900, GRACE),
            "a clock behind is not expiry"
        );
    }

    #[test]
    fn only_a_newer_ledger_writes_the_remainder() {
        assert!(remainder_is_newer(None, 0));
        assert!(remainder_is_newer(Some(3), 4));
        assert!(!remainder_is_newer(Some(4), 4));
        assert!(!remainder_is_newer(Some(5), 4));
    }
}
