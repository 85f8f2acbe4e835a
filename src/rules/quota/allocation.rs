//! The arithmetic of the allocation model (issue 12 "The model"): what a child may ask for,
//! whether it fits, what the parent keeps, and how usage adds up. Pure: budgets, allocations and
//! usages in, data out.

use serde::Serialize;

use super::quantity::Amount;
use super::resources::{Resources, ResourcesError};

/// Why an asked allocation is not a valid allocation under a budget (a `400`: the ask is wrong
/// whatever the tree holds).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    #[error("resources {resources:?} are not in the parent's budget ({budget:?})")]
    NotInBudget {
        resources: Vec<String>,
        budget: Vec<String>,
    },
    #[error(transparent)]
    Resources(#[from] ResourcesError),
}

/// What a child gets, for an ask (`quota` of the create body, if any) under a budget and the
/// parent's default allocation.
///
/// Decision (issue 12 asks to choose): a budget resource missing from the ask is **defaulted**,
/// from `defaultAllocation` when it names it, else to **zero**. It is never left out: a native
/// ResourceQuota only bounds the resources its `hard` lists, so a child quota without
/// `count/pods` would let that child overrun the parent's `count/pods` budget. Zero is the
/// strict default (the child may not use that resource at all) and is visible in the child's
/// quota. A resource in the ask or the default that the budget does not name is refused: the
/// budget does not bound it, so there is nothing to allocate it from.
pub fn resolve_allocation(
    budget: &Resources,
    default_allocation: &Resources,
    ask: Option<&Resources>,
) -> Result<Resources, AllocationError> {
    let ask = ask.unwrap_or(default_allocation);
    let unknown: Vec<String> = ask
        .names()
        .chain(default_allocation.names())
        .filter(|name| !budget.contains(name))
        .map(str::to_owned)
        .collect();
    if !unknown.is_empty() {
        let mut resources = unknown;
        resources.sort();
        resources.dedup();
        return Err(AllocationError::NotInBudget {
            resources,
            budget: budget.names().map(str::to_owned).collect(),
        });
    }
    Ok(Resources::from_amounts(budget.names().map(|name| {
        let amount = if ask.contains(name) {
            ask.get(name)
        } else {
            default_allocation.get(name)
        };
        (name.to_owned(), amount)
    })))
}

/// One resource that does not fit: what was asked and what is left. Serialized into the 409's
/// problem+json as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shortfall {
    pub resource: String,
    /// Canonical quantity asked.
    pub asked: String,
    /// Canonical quantity left: budget − Σ allocations − the parent's own usage, at least 0.
    pub left: String,
}

/// A budget resource whose allocations already exceed it (the budget was lowered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OverAllocation {
    pub resource: String,
    pub budget: String,
    pub allocated: String,
}

/// Why a create is refused before anything is written: the `409` of issue 12.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the allocation does not fit in what is left of the budget: {}", describe_shortfalls(.0))]
    DoesNotFit(Vec<Shortfall>),
    #[error("the budget was lowered below what is allocated ({}); no new child until children are deleted or the budget is raised", describe_over(.0))]
    BudgetOverAllocated(Vec<OverAllocation>),
    #[error("the parent's own usage grew past its lowered remainder ({}); the reservation is rolled back", describe_overruns(.0))]
    ParentGrew(Vec<Overrun>),
    #[error(transparent)]
    Arithmetic(#[from] ResourcesError),
}

impl Refusal {
    /// Stable label for metrics and logs.
    /// Every [`Refusal::kind`], for metrics that count refusals apart from other failures.
    pub const KINDS: [&'static str; 4] = [
        "does_not_fit",
        "budget_over_allocated",
        "parent_grew",
        "arithmetic",
    ];

    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::DoesNotFit(_) => "does_not_fit",
            Refusal::BudgetOverAllocated(_) => "budget_over_allocated",
            Refusal::ParentGrew(_) => "parent_grew",
            Refusal::Arithmetic(_) => "arithmetic",
        }
    }
}

/// A resource the parent uses more of than its remainder quota now allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Overrun {
    pub resource: String,
    pub hard: String,
    pub used: String,
}

fn describe_overruns(overruns: &[Overrun]) -> String {
    overruns
        .iter()
        .map(|o| format!("{} hard {}, used {}", o.resource, o.hard, o.used))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Step 6 of the create (module docs of [`crate::rules::quota`]): after the remainder quota was
/// lowered, its re-read `status.used` must be within the new `hard`. Usage admitted before the
/// lowering may have outgrown it (the fit check read an older usage); then the reservation must
/// be released, or parent + children could exceed the budget.
pub fn check_parent_within(remainder: &Resources, parent_used: &Resources) -> Result<(), Refusal> {
    let overruns: Vec<Overrun> = remainder
        .iter()
        .filter(|(name, hard)| parent_used.get(name) > *hard)
        .map(|(name, hard)| Overrun {
            resource: name.to_owned(),
            hard: hard.to_string(),
            used: parent_used.get(name).to_string(),
        })
        .collect();
    if overruns.is_empty() {
        Ok(())
    } else {
        Err(Refusal::ParentGrew(overruns))
    }
}

fn describe_shortfalls(shortfalls: &[Shortfall]) -> String {
    shortfalls
        .iter()
        .map(|s| format!("{} asked {}, left {}", s.resource, s.asked, s.left))
        .collect::<Vec<_>>()
        .join("; ")
}

fn describe_over(over: &[OverAllocation]) -> String {
    over.iter()
        .map(|o| format!("{} budget {}, allocated {}", o.resource, o.budget, o.allocated))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The fit check: for every budget resource, `budget − allocated − parent_used ≥ ask`.
/// `allocated` is Σ of the live allocations, `parent_used` the parent's own usage (the
/// remainder quota's `status.used`). Every resource that does not fit is named.
pub fn check_fit(
    budget: &Resources,
    allocated: &Resources,
    parent_used: &Resources,
    ask: &Resources,
) -> Result<(), Refusal> {
    let over = over_allocations(budget, allocated);
    if !over.is_empty() {
        return Err(Refusal::BudgetOverAllocated(over));
    }
    let taken = allocated.checked_add(&parent_used.restricted_to(budget))?;
    let left = budget.remaining_after(&taken);
    let shortfalls: Vec<Shortfall> = ask
        .iter()
        .filter(|(name, asked)| *asked > left.get(name))
        .map(|(name, asked)| Shortfall {
            resource: name.to_owned(),
            asked: asked.to_string(),
            left: left.get(name).to_string(),
        })
        .collect();
    if shortfalls.is_empty() {
        Ok(())
    } else {
        Err(Refusal::DoesNotFit(shortfalls))
    }
}

/// Budget resources whose allocations exceed them.
pub fn over_allocations(budget: &Resources, allocated: &Resources) -> Vec<OverAllocation> {
    budget
        .iter()
        .filter(|(name, amount)| allocated.get(name) > *amount)
        .map(|(name, amount)| OverAllocation {
            resource: name.to_owned(),
            budget: amount.to_string(),
            allocated: allocated.get(name).to_string(),
        })
        .collect()
}

/// `hard` of the parent's remainder quota: budget − Σ allocations per budget resource, never
/// negative. A budget lowered below what is allocated gives 0 (the parent may start nothing
/// more) and leaves the children's quotas alone.
pub fn remainder(budget: &Resources, allocated: &Resources) -> Resources {
    budget.remaining_after(allocated)
}

/// The budget a namespace hands out to its own children. A namespace that is itself a child in
/// a quota tree has an `inherited` allocation; its HRQ may not give more than that (HNC accepts
/// a child HRQ larger than its parent's, HNC#247): every inherited resource is budgeted at
/// most the inherited amount, and stays budgeted even when the HRQ forgets it, so grandchildren
/// are bounded in everything the grandparent bounds.
pub fn effective_budget(hard: &Resources, inherited: Option<&Resources>) -> Resources {
    let Some(inherited) = inherited else {
        return hard.clone();
    };
    let clamped = inherited.iter().map(|(name, ceiling)| {
        let amount = if hard.contains(name) {
            hard.get(name).min(ceiling)
        } else {
            ceiling
        };
        (name.to_owned(), amount)
    });
    let own = hard
        .iter()
        .filter(|(name, _)| !inherited.contains(name))
        .map(|(name, amount)| (name.to_owned(), amount))
        .collect::<Vec<(String, Amount)>>();
    Resources::from_amounts(clamped.chain(own))
}

/// `used` of a budget: the parent's own usage plus Σ of its children's usage (each from its
/// native quota's `status.used`), restricted to the budget's resources.
pub fn aggregate_used<'a, I>(
    budget: &Resources,
    parent_used: &Resources,
    children_used: I,
) -> Result<Resources, ResourcesError>
where
    I: IntoIterator<Item = &'a Resources>,
{
    let children = Resources::sum(children_used)?;
    Ok(parent_used.checked_add(&children)?.restricted_to(budget))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::quota::resources::res;

    fn budget() -> Resources {
        res(&[
            ("requests.cpu", "4"),
            ("limits.memory", "8Gi"),
            ("count/pods", "10"),
        ])
    }

    #[test]
    fn missing_resources_come_from_the_default_then_zero() {
        let default = res(&[("count/pods", "2")]);
        let cases = [
            (
                Some(res(&[("cpu", "1.5")])),
                res(&[
                    ("requests.cpu", "1500m"),
                    ("limits.memory", "0"),
                    ("count/pods", "2"),
                ]),
            ),
            (
                None,
                res(&[("requests.cpu", "0"), ("limits.memory", "0"), ("count/pods", "2")]),
            ),
            (
                Some(res(&[("count/pods", "0"), ("limits.memory", "1Gi")])),
                res(&[
                    ("requests.cpu", "0"),
                    ("limits.memory", "1Gi"),
                    ("count/pods", "0"),
                ]),
            ),
        ];
        for (ask, expected) in cases {
            assert_eq!(
                resolve_allocation(&budget(), &default, ask.as_ref()),
                Ok(expected),
                "{ask:?}"
            );
        }
    }

    #[test]
    fn resources_outside_the_budget_are_refused() {
        let ask = res(&[("requests.nvidia.com/gpu", "1"), ("count/pods", "1")]);
        let refused = resolve_allocation(&budget(), &Resources::default(), Some(&ask));
        assert!(matches!(
            refused,
            Err(AllocationError::NotInBudget { ref resources, .. }) if resources == &["requests.nvidia.com/gpu"]
        ));
        let bad_default = res(&[("limits.cpu", "1")]);
        assert!(resolve_allocation(&budget(), &bad_default, None).is_err());
    }

    #[test]
    fn fit_names_every_resource_that_does_not_fit() {
        let allocated = res(&[("requests.cpu", "3"), ("count/pods", "8")]);
        let parent_used = res(&[("requests.cpu", "500m"), ("count/configmaps", "100")]);
        let table = [
            (res(&[("requests.cpu", "500m"), ("count/pods", "2")]), vec![]),
            (
                res(&[
                    ("requests.cpu", "501m"),
                    ("count/pods", "3"),
                    ("limits.memory", "8Gi"),
                ]),
                vec![("count/pods", "3", "2"), ("requests.cpu", "501m", "500m")],
            ),
        ];
        for (ask, expected) in table {
            let result = check_fit(&budget(), &allocated, &parent_used, &ask);
            let got: Vec<(String, String, String)> = match result {
                Ok(()) => vec![],
                Err(Refusal::DoesNotFit(shortfalls)) => shortfalls
                    .into_iter()
                    .map(|s| (s.resource, s.asked, s.left))
                    .collect(),
                Err(other) => panic!("{other}"),
            };
            let expected: Vec<(String, String, String)> = expected
                .into_iter()
                .map(|(r, a, l)| (r.to_owned(), a.to_owned(), l.to_owned()))
                .collect();
            assert_eq!(got, expected, "{ask:?}");
        }
    }

    #[test]
    fn a_lowered_budget_refuses_even_an_empty_ask_and_keeps_children() {
        let allocated = res(&[("requests.cpu", "5"), ("count/pods", "1")]);
        let refused = check_fit(
            &budget(),
            &allocated,
            &Resources::default(),
            &Resources::default(),
        );
        assert!(matches!(refused, Err(Refusal::BudgetOverAllocated(ref over)) if over.len() == 1));
        assert_eq!(
            remainder(&budget(), &allocated),
            res(&[
                ("requests.cpu", "0"),
                ("limits.memory", "8Gi"),
                ("count/pods", "9")
            ])
        );
    }

    #[test]
    fn refusal_message_says_what_was_asked_and_what_is_left() {
        let refused = check_fit(
            &res(&[("requests.memory", "1Gi")]),
            &res(&[("requests.memory", "512Mi")]),
            &Resources::default(),
            &res(&[("requests.memory", "1Gi")]),
        );
        let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("requests.memory asked 1Gi, left 512Mi"),
            "{message}"
        );
    }

    #[test]
    fn a_parent_that_grew_past_its_lowered_remainder_is_caught() {
        let lowered = res(&[("requests.cpu", "1"), ("count/pods", "2")]);
        assert_eq!(
            check_parent_within(&lowered, &res(&[("requests.cpu", "1")])),
            Ok(())
        );
        let grew = check_parent_within(&lowered, &res(&[("requests.cpu", "1001m")]));
        assert!(matches!(grew, Err(Refusal::ParentGrew(ref o)) if o.len() == 1 && o[0].used == "1001m"));
        assert_eq!(grew.map_err(|r| r.kind()), Err("parent_grew"));
    }

    #[test]
    fn a_child_budget_never_exceeds_its_allocation() {
        let inherited = res(&[("requests.cpu", "2"), ("count/pods", "5")]);
        let hard = res(&[("requests.cpu", "8"), ("count/secrets", "3")]);
        assert_eq!(
            effective_budget(&hard, Some(&inherited)),
            res(&[("requests.cpu", "2"), ("count/pods", "5"), ("count/secrets", "3")])
        );
        let smaller = res(&[("requests.cpu", "1")]);
        assert_eq!(
            effective_budget(&smaller, Some(&inherited)).get("requests.cpu"),
            Amount::from_units(1)
        );
        assert_eq!(effective_budget(&hard, None), hard);
    }

    #[test]
    fn used_is_the_parent_plus_every_child_within_the_budget() {
        let parent = res(&[("requests.cpu", "100m"), ("count/secrets", "4")]);
        let children = [
            res(&[("requests.cpu", "1.5")]),
            res(&[("requests.cpu", "400m"), ("count/pods", "3")]),
        ];
        assert_eq!(
            aggregate_used(&budget(), &parent, &children),
            Ok(res(&[("requests.cpu", "2"), ("count/pods", "3")]))
        );
    }
}
