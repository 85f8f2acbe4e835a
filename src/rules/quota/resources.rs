//! Resource lists with exact arithmetic: the budgets, allocations and usages of issue 12.
//! No I/O.
//!
//! A [`Resources`] is parsed once from a Kubernetes `ResourceList`
//! (`BTreeMap<String, Quantity>`) and written back with canonical quantities. Resource names
//! are normalized on the way in: quota admission counts `cpu` and `requests.cpu` as the same
//! thing (likewise `memory`, `ephemeral-storage`), so a budget of `cpu: 4` and an allocation of
//! `requests.cpu: 1` must meet under one name. A list naming both spellings is refused rather
//! than guessed at.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::quantity::{Amount, QuantityError};

/// The Kubernetes shape: resource name → quantity string.
pub type ResourceList = BTreeMap<String, Quantity>;

/// Why a resource list could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourcesError {
    #[error("resource {resource:?}: {source}")]
    Quantity { resource: String, source: QuantityError },
    #[error("resource {resource:?} is negative ({quantity})")]
    Negative { resource: String, quantity: String },
    #[error("resources {first:?} and {second:?} are the same quota resource; name it once")]
    Duplicate { first: String, second: String },
    #[error("resource name is empty")]
    EmptyName,
    #[error("sum of {resource:?} overflows")]
    Overflow { resource: String },
    #[error("{pair:?} is not name=quantity; write e.g. requests.cpu=1500m,count/pods=4")]
    Pair { pair: String },
    #[error("resource {resource:?} is given twice")]
    Repeated { resource: String },
}

/// Quota resource names that are aliases of a `requests.` name.
const REQUEST_ALIASES: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

/// The one name quota admission tracks `name` under (`cpu` → `requests.cpu`).
pub fn canonical_name(name: &str) -> String {
    if REQUEST_ALIASES.contains(&name) {
        format!("requests.{name}")
    } else {
        name.to_owned()
    }
}

/// Exact, non-negative amounts per canonical resource name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resources(BTreeMap<String, Amount>);

impl Resources {
    /// Reads a `ResourceList`, refusing negative amounts, malformed quantities and names given
    /// twice under two spellings.
    pub fn parse(list: &ResourceList) -> Result<Resources, ResourcesError> {
        let mut parsed = BTreeMap::new();
        let mut spelled = BTreeMap::<String, &str>::new();
        for (name, quantity) in list {
            if name.is_empty() {
                return Err(ResourcesError::EmptyName);
            }
            let amount = parse_amount(name, quantity)?;
            let canonical = canonical_name(name);
            if let Some(first) = spelled.insert(canonical.clone(), name) {
                return Err(ResourcesError::Duplicate {
                    first: first.to_owned(),
                    second: name.clone(),
                });
            }
            parsed.insert(canonical, amount);
        }
        Ok(Resources(parsed))
    }

    /// Reads the query-parameter form `name=quantity,name=quantity` (`kubectl create quota
    /// --hard` style: `requests.cpu=1.5,count/pods=4`), with the checks of [`Resources::parse`].
    /// Empty items (a trailing comma) are skipped; an item without `=`, an empty name or a name
    /// given twice is refused.
    pub fn parse_pairs(text: &str) -> Result<Resources, ResourcesError> {
        let mut list = ResourceList::new();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, quantity)) = pair.split_once('=') else {
                return Err(ResourcesError::Pair {
                    pair: pair.to_owned(),
                });
            };
            let (name, quantity) = (name.trim(), quantity.trim());
            if name.is_empty() || quantity.is_empty() {
                return Err(ResourcesError::Pair {
                    pair: pair.to_owned(),
                });
            }
            if list
                .insert(name.to_owned(), Quantity(quantity.to_owned()))
                .is_some()
            {
                return Err(ResourcesError::Repeated {
                    resource: name.to_owned(),
                });
            }
        }
        Resources::parse(&list)
    }

    /// Builds from already-exact amounts (tests, sums); names are normalized.
    pub fn from_amounts<I, S>(amounts: I) -> Resources
    where
        I: IntoIterator<Item = (S, Amount)>,
        S: AsRef<str>,
    {
        Resources(
            amounts
                .into_iter()
                .map(|(name, amount)| (canonical_name(name.as_ref()), amount))
                .collect(),
        )
    }

    /// The `ResourceList` with canonical quantities, for writing `hard` or a status.
    pub fn to_list(&self) -> ResourceList {
        self.0
            .iter()
            .map(|(name, amount)| (name.clone(), Quantity(amount.to_string())))
            .collect()
    }

    /// The amount of `name`, zero when absent (an absent usage is no usage).
    pub fn get(&self, name: &str) -> Amount {
        self.0.get(&canonical_name(name)).copied().unwrap_or(Amount::ZERO)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(&canonical_name(name))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, Amount)> {
        self.0.iter().map(|(name, amount)| (name.as_str(), *amount))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `self + other` per resource; a name in either is in the sum.
    pub fn checked_add(&self, other: &Resources) -> Result<Resources, ResourcesError> {
        let mut sum = self.0.clone();
        for (name, amount) in other.iter() {
            let entry = sum.entry(name.to_owned()).or_insert(Amount::ZERO);
            *entry = entry
                .checked_add(amount)
                .ok_or_else(|| ResourcesError::Overflow {
                    resource: name.to_owned(),
                })?;
        }
        Ok(Resources(sum))
    }

    /// Σ of many lists.
    pub fn sum<'a, I>(lists: I) -> Result<Resources, ResourcesError>
    where
        I: IntoIterator<Item = &'a Resources>,
    {
        lists
            .into_iter()
            .try_fold(Resources::default(), |sum, list| sum.checked_add(list))
    }

    /// For every resource of `self`: `self − other`, never below zero. Resources only in
    /// `other` are left out: what is left of a budget is keyed by the budget.
    pub fn remaining_after(&self, other: &Resources) -> Resources {
        Resources(
            self.0
                .iter()
                .map(|(name, amount)| {
                    let left = amount.saturating_sub_to_zero(other.get(name));
                    (name.clone(), left)
                })
                .collect(),
        )
    }

    /// The same list restricted to the names in `keys`.
    pub fn restricted_to(&self, keys: &Resources) -> Resources {
        Resources(
            self.0
                .iter()
                .filter(|(name, _)| keys.contains(name))
                .map(|(name, amount)| (name.clone(), *amount))
                .collect(),
        )
    }
}

fn parse_amount(name: &str, quantity: &Quantity) -> Result<Amount, ResourcesError> {
    let amount: Amount = quantity.0.parse().map_err(|source| ResourcesError::Quantity {
        resource: name.to_owned(),
        source,
    })?;
    if amount.is_negative() {
        return Err(ResourcesError::Negative {
            resource: name.to_owned(),
            quantity: quantity.0.clone(),
        });
    }
    Ok(amount)
}

/// Test helper: a `ResourceList` from pairs.
#[cfg(test)]
pub(crate) fn list(pairs: &[(&str, &str)]) -> ResourceList {
    pairs
        .iter()
        .map(|(name, quantity)| ((*name).to_owned(), Quantity((*quantity).to_owned())))
        .collect()
}

/// Test helper: parsed `Resources` from pairs.
#[cfg(test)]
pub(crate) fn res(pairs: &[(&str, &str)]) -> Resources {
    Resources::parse(&list(pairs)).unwrap_or_else(|e| panic!("{pairs:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_form_reads_name_equals_quantity_pairs() {
        assert_eq!(
            Resources::parse_pairs("cpu=1.5, count/pods=4,limits.memory=1Gi,"),
            Ok(res(&[
                ("requests.cpu", "1500m"),
                ("count/pods", "4"),
                ("limits.memory", "1073741824")
            ]))
        );
        assert_eq!(Resources::parse_pairs(""), Ok(Resources::default()));
        for (bad, says) in [
            ("cpu", "is not name=quantity"),
            ("=1", "is not name=quantity"),
            ("cpu=", "is not name=quantity"),
            ("cpu=1,cpu=2", "given twice"),
            ("cpu=1,requests.cpu=2", "name it once"),
            ("cpu=lots", "\"cpu\""),
            ("count/pods=-1", "negative"),
        ] {
            let err = Resources::parse_pairs(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn aliases_meet_under_one_name() {
        assert_eq!(res(&[("cpu", "1.5")]), res(&[("requests.cpu", "1500m")]));
        assert_eq!(
            res(&[("memory", "1Gi")]).to_list(),
            list(&[("requests.memory", "1Gi")])
        );
        assert!(res(&[("limits.cpu", "1")]).contains("limits.cpu"));
        assert!(!res(&[("limits.cpu", "1")]).contains("cpu"));
    }

    #[test]
    fn bad_lists_are_refused_naming_the_resource() {
        let cases = [
            (list(&[("cpu", "-1")]), "negative"),
            (
                list(&[("cpu", "1"), ("requests.cpu", "2")]),
                "same quota resource",
            ),
            (list(&[("count/pods", "ten")]), "count/pods"),
            (list(&[("", "1")]), "empty"),
        ];
        for (input, needle) in cases {
            let error = Resources::parse(&input).err().map(|e| e.to_string());
            assert!(
                error.as_deref().is_some_and(|e| e.contains(needle)),
                "{input:?}: {error:?}"
            );
        }
    }

    #[test]
    fn sums_and_remainders_are_exact() {
        let a = res(&[("requests.cpu", "0.1"), ("count/pods", "3")]);
        let b = res(&[("requests.cpu", "0.2"), ("requests.nvidia.com/gpu", "1")]);
        let sum = Resources::sum([&a, &b]).ok();
        let expected = res(&[
            ("requests.cpu", "300m"),
            ("count/pods", "3"),
            ("requests.nvidia.com/gpu", "1"),
        ]);
        assert_eq!(sum, Some(expected));
        let budget = res(&[("requests.cpu", "250m"), ("limits.memory", "1Gi")]);
        assert_eq!(
            budget.remaining_after(&a),
            res(&[("requests.cpu", "150m"), ("limits.memory", "1Gi")])
        );
        assert_eq!(
            budget.remaining_after(&res(&[("requests.cpu", "1")])).get("cpu"),
            Amount::ZERO
        );
    }

    #[test]
    fn to_list_writes_canonical_quantities() {
        let written = res(&[("requests.memory", "1073741824"), ("cpu", "1.5")]).to_list();
        assert_eq!(
            written,
            list(&[("requests.memory", "1Gi"), ("requests.cpu", "1500m")])
        );
    }
}
