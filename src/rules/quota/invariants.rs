//! Invariant tests over many sequences of ledger transitions: Σ allocations + remainder ≤
//! budget for every resource after every step, and a refused reserve changes nothing. The
//! sequences come from a fixed-seed xorshift generator, so a failure replays exactly (no
//! proptest: one less dependency to build on a shared machine, and the seed is printed).

use super::allocation::Refusal;
use super::ledger::{Ledger, LiveChild, ReserveError, confirm, rebuild, release, reserve};
use super::quantity::Amount;
use super::resources::{Resources, res};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn budget() -> Resources {
    res(&[
        ("requests.cpu", "2500m"),
        ("limits.memory", "3Gi"),
        ("count/pods", "7"),
    ])
}

fn random_allocation(rng: &mut Rng) -> Resources {
    Resources::from_amounts([
        ("requests.cpu", Amount::from_milli(250 * rng.below(6) as i64)),
        ("limits.memory", Amount::from_units((rng.below(4) as i64) << 29)),
        ("count/pods", Amount::from_units(rng.below(4) as i64)),
    ])
}

fn random_parent_used(rng: &mut Rng) -> Resources {
    Resources::from_amounts([
        ("requests.cpu", Amount::from_milli(100 * rng.below(4) as i64)),
        ("count/pods", Amount::from_units(rng.below(2) as i64)),
    ])
}

fn assert_invariant(ledger: &Ledger, budget: &Resources, context: &str) {
    let allocated = ledger.allocated().unwrap_or_else(|e| panic!("{context}: {e}"));
    let remainder = ledger
        .remainder(budget)
        .unwrap_or_else(|e| panic!("{context}: {e}"));
    for (name, limit) in budget.iter() {
        let total = allocated.get(name).checked_add(remainder.get(name));
        assert!(
            total.is_some_and(|total| total <= limit),
            "{context}: {name}: allocated {} + remainder {} > budget {limit}",
            allocated.get(name),
            remainder.get(name)
        );
    }
    for (name, _) in allocated.iter() {
        assert!(
            budget.contains(name),
            "{context}: {name} allocated outside the budget"
        );
    }
}

/// Live children as a sweep could see them: a random subset of the ledger's names, each with
/// its quota present or not yet written.
fn random_live(rng: &mut Rng, ledger: &Ledger) -> Vec<LiveChild> {
    let mut live = Vec::new();
    for (name, entry) in &ledger.entries {
        if rng.below(3) == 0 {
            continue;
        }
        live.push(LiveChild {
            name: name.clone(),
            uid: entry.uid.clone().unwrap_or_else(|| format!("uid-{name}")),
            allocation: (rng.below(2) == 0).then(|| entry.allocation.clone()),
        });
    }
    live
}

fn step(rng: &mut Rng, ledger: Ledger, now: i64, context: &str) -> Ledger {
    let budget = budget();
    let child = format!("c{}", rng.below(12));
    match rng.below(5) {
        0 | 1 => {
            let used = random_parent_used(rng);
            match reserve(&ledger, &budget, &used, &child, random_allocation(rng), now) {
                Ok(next) => next,
                // The caller keeps the ledger it passed: nothing to undo, nothing written.
                Err(ReserveError::Refused(Refusal::DoesNotFit(_)) | ReserveError::AlreadyAllocated(_)) => {
                    ledger
                }
                Err(other) => panic!("{context}: unexpected {other}"),
            }
        }
        2 => release(&ledger, &child, None).unwrap_or(ledger),
        3 => confirm(&ledger, &child, &format!("uid-{child}")).unwrap_or(ledger),
        _ => {
            let live = random_live(rng, &ledger);
            rebuild(&ledger, &live, now, 30)
        }
    }
}

#[test]
fn no_sequence_of_transitions_allocates_past_the_budget() {
    for seed in 1..=400_u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut ledger = Ledger::default();
        for index in 0..40_i64 {
            let now = index * 10;
            let context = format!("seed {seed}, step {index}");
            let before = ledger.revision;
            ledger = step(&mut rng, ledger, now, &context);
            assert!(ledger.revision >= before, "{context}: revision went back");
            assert_invariant(&ledger, &budget(), &context);
        }
    }
}

#[test]
fn a_refused_reserve_changes_nothing() {
    let mut rng = Rng(0xDEAD_BEEF);
    let mut refusals = 0;
    for attempt in 0..2000 {
        let ledger = {
            let mut ledger = Ledger::default();
            for i in 0..rng.below(6) {
                ledger = step(&mut rng, ledger, i as i64, "setup");
            }
            ledger
        };
        let snapshot = ledger.clone();
        let used = random_parent_used(&mut rng);
        let ask = random_allocation(&mut rng);
        if reserve(&ledger, &budget(), &used, "new", ask, 0).is_err() {
            refusals += 1;
        }
        assert_eq!(ledger, snapshot, "attempt {attempt}");
    }
    assert!(
        refusals > 100,
        "the generator should exercise refusals, got {refusals}"
    );
}

#[test]
fn every_ask_that_fits_exactly_is_granted_and_the_next_is_refused() {
    // Exhaustive over small allocations: fill a budget of 7 pods with 1..=3 pod asks.
    let budget = res(&[("count/pods", "7")]);
    for size in 1..=3_i64 {
        let ask = Resources::from_amounts([("count/pods", Amount::from_units(size))]);
        let mut ledger = Ledger::default();
        let mut granted = 0;
        for i in 0..10 {
            match reserve(
                &ledger,
                &budget,
                &Resources::default(),
                &format!("c{i}"),
                ask.clone(),
                0,
            ) {
                Ok(next) => {
                    ledger = next;
                    granted += 1;
                }
                Err(_) => break,
            }
        }
        assert_eq!(granted, 7 / size, "asks of {size}");
        assert_eq!(
            ledger.remainder(&budget).map(|r| r.get("count/pods")),
            Ok(Amount::from_units(7 % size))
        );
    }
}

#[test]
fn three_levels_each_fit_inside_the_level_above() {
    use super::allocation::effective_budget;
    let root_budget = budget();
    let mut rng = Rng(0x5EED);
    for round in 0..200 {
        // Level 1: the root hands a child some allocation.
        let child_allocation = random_allocation(&mut rng);
        let root = match reserve(
            &Ledger::default(),
            &root_budget,
            &Resources::default(),
            "child",
            child_allocation.clone(),
            0,
        ) {
            Ok(root) => root,
            Err(_) => continue,
        };
        assert_invariant(&root, &root_budget, &format!("round {round}, root"));
        // Level 2: the child's own HRQ asks for more than it was given and forgets a resource;
        // its effective budget is clamped to the allocation and keeps every allocated resource.
        let greedy_hard = res(&[("requests.cpu", "100"), ("limits.memory", "100Gi")]);
        let child_budget = effective_budget(&greedy_hard, Some(&child_allocation));
        for (name, amount) in child_budget.iter() {
            assert!(
                amount <= child_allocation.get(name),
                "round {round}: {name} over its allocation"
            );
        }
        assert!(
            child_budget.contains("count/pods"),
            "round {round}: a forgotten resource became unbounded"
        );
        let mut child = Ledger::default();
        for now in 0..12_i64 {
            child = step_with_budget(&mut rng, child, &child_budget, now);
            assert_invariant(
                &child,
                &child_budget,
                &format!("round {round}, grandchild step {now}"),
            );
            // What the grandchildren hold plus the child's own remainder never leaves the
            // child's allocation, so the root's invariant holds one level down too.
            assert_invariant(
                &child,
                &child_allocation,
                &format!("round {round}, vs allocation {now}"),
            );
        }
    }
}

fn step_with_budget(rng: &mut Rng, ledger: Ledger, budget: &Resources, now: i64) -> Ledger {
    let name = format!("g{}", rng.below(6));
    if rng.below(3) == 0 {
        return release(&ledger, &name, None).unwrap_or(ledger);
    }
    let ask = random_allocation(rng).restricted_to(budget);
    reserve(&ledger, budget, &Resources::default(), &name, ask, now).unwrap_or(ledger)
}
