//! Intact copies, kept small: the watch holds every object of the propagated kinds, and at
//! 100,000 copies whole objects cost half a GiB (issue 11). A copy whose content still hashes
//! to its mark holds nothing the planner reads beyond its identity, our marks and the fields
//! that decide between an update and a recreate: the rest is its source's, as the hash proves.
//! [`CompactCopy::expand`] gives the planner that much and tells the sweep's [`HashMemo`] the
//! hash, so the planner decides exactly as it would from the whole object.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{
    HashMemo, ROLE_REF, SECRET_TYPE, StripRules, annotations, content_hash, identity, is_immutable,
    is_our_label, keys, labels, metadata,
};

/// What the planner reads of an intact copy.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactCopy {
    uid: Box<str>,
    resource_version: Box<str>,
    /// Our labels and annotations (the marks, managed-by): the others are the source's, or
    /// stripped ones the planner never reads.
    labels: Box<[Entry]>,
    annotations: Box<[Entry]>,
    /// The top-level fields `recreate_reason` compares, those the copy has.
    compared: Box<[(&'static str, Value)]>,
}

impl CompactCopy {
    /// `None` unless `object` is an intact copy (the inherited-from label, and a content hash
    /// equal to its mark) with a uid and resourceVersion. A copy being deleted or immutable is
    /// kept whole: the planner reads its deletion timestamp, or its whole body.
    pub fn of(object: &Value, strip: &StripRules, shared: &mut Interner) -> Option<Self> {
        let all_labels = labels(object);
        let all_annotations = annotations(object);
        let mark = all_annotations.get(keys::SOURCE_HASH_ANNOTATION)?;
        let deleting = metadata(object)?
            .get("deletionTimestamp")
            .is_some_and(|t| !t.is_null());
        if !all_labels.contains_key(keys::INHERITED_FROM_LABEL) || deleting || is_immutable(object) {
            return None;
        }
        let (uid, resource_version) = identity(object)?;
        if *mark != content_hash(object, strip) {
            return None;
        }
        Some(Self {
            uid: uid.into_boxed_str(),
            resource_version: resource_version.into_boxed_str(),
            labels: ours(all_labels, is_our_label, shared),
            annotations: ours(all_annotations, keys::is_ours, shared),
            compared: [ROLE_REF, SECRET_TYPE]
                .into_iter()
                .filter_map(|field| Some((field, object.get(field)?.clone())))
                .collect(),
        })
    }

    /// The copy as the planner reads it, its content hash told to `memo`.
    pub fn expand(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        memo: &HashMemo,
    ) -> Value {
        let strings = |pairs: &[Entry]| -> Map<String, Value> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .collect()
        };
        let mut meta = Map::new();
        meta.insert("name".into(), name.into());
        meta.insert("namespace".into(), namespace.into());
        meta.insert("uid".into(), Value::String(self.uid.to_string()));
        meta.insert(
            "resourceVersion".into(),
            Value::String(self.resource_version.to_string()),
        );
        meta.insert("labels".into(), Value::Object(strings(&self.labels)));
        meta.insert("annotations".into(), Value::Object(strings(&self.annotations)));
        let mut object = Map::new();
        object.insert("apiVersion".into(), api_version.into());
        object.insert("kind".into(), kind.into());
        object.insert("metadata".into(), Value::Object(meta));
        for (field, value) in &self.compared {
            object.insert((*field).to_string(), value.clone());
        }
        if let Some((_, mark)) = self
            .annotations
            .iter()
            .find(|(k, _)| &**k == keys::SOURCE_HASH_ANNOTATION)
        {
            memo.remember(
                (self.uid.to_string(), self.resource_version.to_string()),
                mark.to_string(),
            );
        }
        Value::Object(object)
    }
}

/// A label or annotation. Most keys are the few we set on every copy, and the values are
/// shared by every copy of a source (its namespace, uid and hash): neither is allocated per
/// copy (a watch holds 100,000).
type Entry = (Cow<'static, str>, Arc<str>);

const MARKS: [&str; 4] = [
    keys::INHERITED_FROM_LABEL,
    keys::MANAGED_BY_LABEL,
    keys::SOURCE_UID_ANNOTATION,
    keys::SOURCE_HASH_ANNOTATION,
];

/// The entries of `map` whose keys `keep` says are ours.
fn ours(map: BTreeMap<String, String>, keep: impl Fn(&str) -> bool, shared: &mut Interner) -> Box<[Entry]> {
    map.into_iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| {
            let key = match MARKS.iter().find(|mark| **mark == k) {
                Some(mark) => Cow::Borrowed(*mark),
                None => Cow::Owned(k),
            };
            (key, shared.intern(v))
        })
        .collect()
}

/// Values shared between compact copies.
#[derive(Debug, Default)]
pub struct Interner {
    values: HashSet<Arc<str>>,
    /// How many values were held after the last pruning.
    pruned_to: usize,
}

/// Below this many values, none are pruned.
const PRUNE_FROM: usize = 1024;

impl Interner {
    fn intern(&mut self, value: String) -> Arc<str> {
        if let Some(shared) = self.values.get(value.as_str()) {
            return shared.clone();
        }
        self.prune_when_doubled();
        let shared: Arc<str> = value.into();
        self.values.insert(shared.clone());
        shared
    }

    /// Drops the values no copy holds any more (a source's hash before its edit), once the set
    /// has doubled since the last pruning: amortized, memory stays within twice what is held.
    fn prune_when_doubled(&mut self) {
        if self.values.len() >= 2 * self.pruned_to.max(PRUNE_FROM) {
            self.values.retain(|value| Arc::strong_count(value) > 1);
            self.pruned_to = self.values.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_are_shared_and_values_no_copy_holds_are_pruned() {
        let mut shared = Interner::default();
        let first = shared.intern("hash-1".into());
        assert!(Arc::ptr_eq(&first, &shared.intern("hash-1".into())));
        drop(first);
        // "hash-1" is held by nothing now; it stays until the set has doubled.
        let held: Vec<Arc<str>> = (1..2 * PRUNE_FROM)
            .map(|i| shared.intern(format!("v{i}")))
            .collect();
        assert!(shared.values.contains("hash-1"));
        let last = shared.intern("one more".into());
        assert!(!shared.values.contains("hash-1"));
        assert_eq!(shared.values.len(), held.len() + 1);
        assert!(held.iter().chain([&last]).all(|v| shared.values.contains(&**v)));
    }
}
