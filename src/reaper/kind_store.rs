//! The tree watch's view of one propagated kind: every object of the kind, by namespace, fed by
//! its watch events as a reflector store is (a relist replaces everything once it is done).
//! Intact copies, most of what a tree holds, are kept as [`CompactCopy`] records instead of
//! whole objects: at 100,000 copies whole objects took 544 MiB (issue 11).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{PoisonError, RwLock};

use kube::ResourceExt;
use kube::api::DynamicObject;
use kube::discovery::ApiResource;
use kube::runtime::watcher::Event;
use serde_json::Value;
use tokio::sync::watch;

use crate::k8s::planner_value;
use crate::rules::hierarchy::config::StripRules;
use crate::rules::hierarchy::propagation::{CompactCopy, HashMemo, Interner};

/// One stored object.
#[derive(Debug)]
enum Stored {
    /// Anything but an intact copy (a source, a namespace's own object, an edited copy), as
    /// watched, without managedFields.
    Whole(Box<DynamicObject>),
    Copy(CompactCopy),
}

/// Objects by namespace, then name.
type Objects = HashMap<String, HashMap<Box<str>, Stored>>;

#[derive(Debug, Default)]
struct State {
    live: Objects,
    /// A (re)list in progress: it replaces `live` when done.
    listing: Option<Objects>,
    shared: Interner,
}

/// What a watch event changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Change {
    /// Nothing a pass must plan: a list page, or an intact copy (our own write coming back;
    /// a change of its source arrives as the source's own event).
    Nothing,
    /// A (re)list is done: anything may have changed.
    Relisted,
    /// This object (namespace, name) changed or went.
    Object { namespace: String, name: String },
}

#[derive(Debug)]
pub(super) struct KindStore {
    resource: ApiResource,
    strip: StripRules,
    state: RwLock<State>,
    ready: watch::Sender<bool>,
}

impl KindStore {
    pub(super) fn new(resource: ApiResource, strip: StripRules) -> Self {
        Self {
            resource,
            strip,
            state: RwLock::default(),
            ready: watch::Sender::new(false),
        }
    }

    /// Applies one watch event.
    pub(super) fn apply(&self, event: Event<DynamicObject>) -> Change {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        match event {
            Event::Init => {
                state.listing = Some(Objects::new());
                Change::Nothing
            }
            Event::InitApply(object) => {
                let (namespace, name, stored) = self.keep(object, &mut state.shared);
                let listing = state.listing.get_or_insert_with(Objects::new);
                listing.entry(namespace).or_default().insert(name.into(), stored);
                Change::Nothing
            }
            Event::InitDone => {
                if let Some(listed) = state.listing.take() {
                    state.live = listed;
                }
                self.ready.send_replace(true);
                Change::Relisted
            }
            Event::Apply(object) => {
                let (namespace, name, stored) = self.keep(object, &mut state.shared);
                let change = match stored {
                    Stored::Copy(_) => Change::Nothing,
                    Stored::Whole(_) => Change::Object {
                        namespace: namespace.clone(),
                        name: name.clone(),
                    },
                };
                state
                    .live
                    .entry(namespace)
                    .or_default()
                    .insert(name.into(), stored);
                change
            }
            Event::Delete(object) => {
                let (namespace, name) = (object.namespace().unwrap_or_default(), object.name_any());
                if let Some(objects) = state.live.get_mut(&namespace) {
                    objects.remove(name.as_str());
                    if objects.is_empty() {
                        state.live.remove(&namespace);
                    }
                }
                Change::Object { namespace, name }
            }
        }
    }

    /// Waits for the first list to be done: before, a missing source would read as deleted.
    /// `false` if the store was dropped first.
    pub(super) async fn wait_until_ready(&self) -> bool {
        self.ready.subscribe().wait_for(|ready| *ready).await.is_ok()
    }

    /// The objects in the `wanted` namespaces (of `names` only, if given) as the planner reads
    /// them, by namespace; `memo` learns the content hashes of the compact copies.
    pub(super) fn objects(
        &self,
        wanted: &BTreeSet<String>,
        names: Option<&BTreeSet<&str>>,
        memo: &HashMemo,
    ) -> BTreeMap<String, Vec<Value>> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let mut out = BTreeMap::new();
        for namespace in wanted {
            let Some(objects) = state.live.get(namespace) else {
                continue;
            };
            let values: Vec<Value> = objects
                .iter()
                .filter(|(name, _)| names.is_none_or(|names| names.contains(&**name as &str)))
                .filter_map(|(name, stored)| match stored {
                    Stored::Whole(object) => planner_value(&self.resource, object).ok(),
                    Stored::Copy(copy) => Some(copy.expand(
                        &self.resource.api_version,
                        &self.resource.kind,
                        namespace,
                        name,
                        memo,
                    )),
                })
                .collect();
            if !values.is_empty() {
                out.insert(namespace.clone(), values);
            }
        }
        out
    }

    /// An event's object as stored: managedFields dropped, an intact copy compacted.
    fn keep(&self, mut object: DynamicObject, shared: &mut Interner) -> (String, String, Stored) {
        object.metadata.managed_fields = None;
        let (namespace, name) = (object.namespace().unwrap_or_default(), object.name_any());
        let compact = planner_value(&self.resource, &object)
            .ok()
            .and_then(|value| CompactCopy::of(&value, &self.strip, shared));
        let stored = match compact {
            Some(copy) => Stored::Copy(copy),
            None => Stored::Whole(Box::new(object)),
        };
        (namespace, name, stored)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rules::hierarchy::propagation::{Source, build_copy};

    fn config_map(namespace: &str, name: &str, uid: &str, value: &str) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "uid": uid, "resourceVersion": "1",
                "managedFields": [{"manager": "kubectl", "operation": "Update"}]},
            "data": {"k": value},
        })
    }

    fn object(value: &Value) -> DynamicObject {
        serde_json::from_value(value.clone()).unwrap()
    }

    fn store() -> KindStore {
        KindStore::new(
            ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
            StripRules::default(),
        )
    }

    fn names(store: &KindStore, namespace: &str) -> Vec<String> {
        let wanted = BTreeSet::from([namespace.to_string()]);
        let mut names: Vec<String> = store
            .objects(&wanted, None, &HashMemo::default())
            .remove(namespace)
            .unwrap_or_default()
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn intact_copies_are_kept_compact_and_wake_nothing_edits_and_sources_do() {
        let strip = StripRules::default();
        let source = config_map("parent", "cm", "src-uid", "one");
        let mut copy = build_copy(
            Source {
                namespace: "parent",
                object: &source,
            },
            "child",
            &strip,
        );
        copy["metadata"]["uid"] = json!("copy-uid");
        copy["metadata"]["resourceVersion"] = json!("2");
        let store = store();
        assert_eq!(store.apply(Event::Init), Change::Nothing);
        assert_eq!(store.apply(Event::InitApply(object(&source))), Change::Nothing);
        assert_eq!(store.apply(Event::InitApply(object(&copy))), Change::Nothing);
        assert_eq!(store.apply(Event::InitDone), Change::Relisted);
        {
            let state = store.state.read().unwrap();
            assert!(matches!(state.live["child"]["cm"], Stored::Copy(_)));
            assert!(matches!(state.live["parent"]["cm"], Stored::Whole(_)));
        }
        // The planner reads the copy without its content, the memo knows its hash; the source
        // whole, without managedFields.
        let memo = HashMemo::default();
        let wanted = BTreeSet::from(["child".to_string(), "parent".to_string()]);
        let objects = store.objects(&wanted, None, &memo);
        let stored_copy = &objects["child"][0];
        assert_eq!(stored_copy.get("data"), None);
        assert_eq!(
            memo.known_or_hash(stored_copy, &strip),
            crate::rules::hierarchy::propagation::content_hash(&copy, &strip)
        );
        assert_eq!(objects["parent"][0]["data"]["k"], "one");
        assert_eq!(objects["parent"][0]["metadata"].get("managedFields"), None);
        let only_other = BTreeSet::from(["other"]);
        assert!(store.objects(&wanted, Some(&only_other), &memo).is_empty());

        // Our write coming back wakes nothing; a user's edit of the copy and any source change do.
        assert_eq!(store.apply(Event::Apply(object(&copy))), Change::Nothing);
        let mut edited = copy.clone();
        edited["data"]["k"] = json!("edited");
        let changed = |namespace: &str| Change::Object {
            namespace: namespace.into(),
            name: "cm".into(),
        };
        assert_eq!(store.apply(Event::Apply(object(&edited))), changed("child"));
        assert_eq!(
            store.objects(&wanted, None, &memo)["child"][0]["data"]["k"],
            "edited"
        );
        assert_eq!(store.apply(Event::Apply(object(&source))), changed("parent"));
        assert_eq!(store.apply(Event::Delete(object(&edited))), changed("child"));
        assert_eq!(names(&store, "child"), Vec::<String>::new());

        // A relist replaces everything once it is done, not before.
        assert_eq!(store.apply(Event::Init), Change::Nothing);
        assert_eq!(store.apply(Event::InitApply(object(&copy))), Change::Nothing);
        assert_eq!(names(&store, "parent"), ["cm"]);
        assert_eq!(store.apply(Event::InitDone), Change::Relisted);
        assert_eq!(names(&store, "parent"), Vec::<String>::new());
        assert_eq!(names(&store, "child"), ["cm"]);
    }
}
