//! A cluster-wide observation while it is being listed, and which of its namespaces are
//! complete. Pure: the sweep's LISTs feed it.
//!
//! A sweep lists every kind at once, page by page. The API server returns a LIST in key order
//! (a Namespace by name; a namespaced object by namespace, then name), so once a kind's list
//! has reached namespace `b`, none of its objects in a namespace before `b` is still to come.
//! A namespace every kind's list has passed is complete: its set can be planned, and repaired,
//! while the rest is still being listed (issue 16). The hierarchy's streamed `--once` relies on
//! the same order.
//!
//! Should a list ever come back out of that order, no more sets are handed out: what was
//! handed out before is planned again from the whole observation at the end of the sweep,
//! which then decides alone.

use super::observation::{
    Observed, ObservedMeta, ObservedNamespace, ObservedSet, carries, is_managed_content, sets_of,
};
use crate::rules::kinds::{Kind, Object};
use crate::rules::params::Selector;

/// How far one kind's list has come.
#[derive(Debug, Clone, Default, PartialEq)]
enum Reach {
    /// Nothing of it yet.
    #[default]
    Nothing,
    /// Objects up to this namespace have come: the namespaces before it are complete.
    At(String),
    /// All of it has come.
    Done,
}

/// The observation being listed, with what of it was handed out already.
#[derive(Debug, Default)]
pub struct Arriving {
    observed: Observed,
    /// Per kind, in the order of [`slot`].
    reach: [Reach; 4],
    /// Per kind, how many of its objects are in sets handed out already.
    handed: [usize; 4],
    /// A list came back out of key order: nothing more is handed out.
    out_of_order: bool,
}

/// A kind's place in [`Arriving`]'s arrays.
fn slot(kind: Kind) -> usize {
    match kind {
        Kind::Namespace => 0,
        Kind::ServiceAccount => 1,
        Kind::Role => 2,
        Kind::RoleBinding => 3,
    }
}

/// The namespace a namespaced object is listed under.
fn namespace_of(meta: &ObservedMeta) -> &str {
    meta.namespace.as_deref().unwrap_or_default()
}

impl Arriving {
    /// Add one listed object (kept only if it carries `selector`, as [`Observed::managed`]
    /// keeps). True when its kind's list has reached a new namespace, so more may be complete.
    pub fn push(&mut self, selector: &Selector, object: Object) -> bool {
        let slot = slot(object.kind());
        self.observed.push(object);
        let (o, Some(reach)) = (&mut self.observed, self.reach.get_mut(slot)) else {
            return false;
        };
        let moved = match slot {
            0 => last_kept(
                &mut o.namespaces,
                reach,
                |ns| ns.name.as_str(),
                |ns| carries(selector, &ns.labels),
            ),
            1 => last_kept(
                &mut o.service_accounts,
                reach,
                |x| namespace_of(&x.meta),
                |x| is_managed_content(selector, &x.meta),
            ),
            2 => last_kept(
                &mut o.roles,
                reach,
                |x| namespace_of(&x.meta),
                |x| is_managed_content(selector, &x.meta),
            ),
            _ => last_kept(
                &mut o.role_bindings,
                reach,
                |x| namespace_of(&x.meta),
                |x| is_managed_content(selector, &x.meta),
            ),
        };
        match moved {
            Some(moved) => moved,
            None => {
                self.out_of_order = true;
                false
            }
        }
    }

    /// The whole list of `kind` has come.
    pub fn finish(&mut self, kind: Kind) {
        if let Some(reach) = self.reach.get_mut(slot(kind)) {
            *reach = Reach::Done;
        }
    }

    /// Every kind's list has come.
    pub fn is_done(&self) -> bool {
        self.reach.iter().all(|r| *r == Reach::Done)
    }

    /// Every list came in key order, so each set was handed out once, whole.
    pub fn in_order(&self) -> bool {
        !self.out_of_order
    }

    /// The managed Namespaces that have come so far, in the order they came.
    pub fn namespaces(&self) -> &[ObservedNamespace] {
        &self.observed.namespaces
    }

    /// The sets complete since the last call, sorted by namespace: each is handed out once.
    pub fn complete(&mut self) -> Vec<ObservedSet<'_>> {
        if self.out_of_order {
            return Vec::new();
        }
        // The first namespace not known complete; `None`: every kind is done.
        let mut low: Option<&str> = None;
        for reach in &self.reach {
            match reach {
                Reach::Nothing => return Vec::new(),
                Reach::At(at) => low = Some(low.map_or(at.as_str(), |low| low.min(at.as_str()))),
                Reach::Done => {}
            }
        }
        let before = |key: &str| low.is_none_or(|low| key < low);
        let o = &self.observed;
        let [n, s, r, b] = self.handed;
        let ends = [
            n + count_while(o.namespaces.get(n..), |x| before(&x.name)),
            s + count_while(o.service_accounts.get(s..), |x| before(namespace_of(&x.meta))),
            r + count_while(o.roles.get(r..), |x| before(namespace_of(&x.meta))),
            b + count_while(o.role_bindings.get(b..), |x| before(namespace_of(&x.meta))),
        ];
        let starts = std::mem::replace(&mut self.handed, ends);
        let o = &self.observed;
        let [n, s, r, b] = starts;
        let [n_end, s_end, r_end, b_end] = ends;
        sets_of(
            o.namespaces.get(n..n_end).unwrap_or_default(),
            o.service_accounts.get(s..s_end).unwrap_or_default(),
            o.roles.get(r..r_end).unwrap_or_default(),
            o.role_bindings.get(b..b_end).unwrap_or_default(),
        )
    }

    /// Everything that came, as [`Observed::managed`] gives it (sorted by namespace).
    pub fn into_observed(self, selector: &Selector) -> Observed {
        self.observed.managed(selector)
    }
}

/// Move `reach` to the key of the item just pushed onto `items`, which is dropped again unless
/// `kept`: whether the list reached a new namespace, `None` if it went back (out of key order).
fn last_kept<T>(
    items: &mut Vec<T>,
    reach: &mut Reach,
    key: impl Fn(&T) -> &str,
    kept: impl Fn(&T) -> bool,
) -> Option<bool> {
    let last = items.last()?;
    let moved = match reach {
        Reach::At(at) if key(last) == at.as_str() => Some(false),
        Reach::At(at) if key(last) < at.as_str() => None,
        Reach::Done => None,
        _ => {
            // The key is copied only when the list reaches a new namespace, not per object.
            *reach = Reach::At(key(last).to_owned());
            Some(true)
        }
    };
    if !kept(last) {
        items.pop();
    }
    moved
}

/// How many of the leading `items` satisfy `pred`.
fn count_while<T>(items: Option<&[T]>, pred: impl Fn(&T) -> bool) -> usize {
    items.unwrap_or_default().iter().take_while(|x| pred(x)).count()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding, RoleRef};
    use kube::api::ObjectMeta;

    use super::*;

    const SELECTOR: &str = "np/managed=true";

    fn selector() -> Selector {
        SELECTOR.parse().unwrap()
    }

    fn meta(name: &str, namespace: Option<&str>, managed: bool) -> ObjectMeta {
        let labels = managed.then(|| [("np/managed".to_owned(), "true".to_owned())].into());
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: namespace.map(str::to_owned),
            labels,
            ..ObjectMeta::default()
        }
    }

    fn ns(name: &str) -> Object {
        Object::Namespace(Box::new(Namespace {
            metadata: meta(name, None, true),
            ..Namespace::default()
        }))
    }

    fn sa(namespace: &str) -> Object {
        Object::ServiceAccount(Box::new(ServiceAccount {
            metadata: meta("sa", Some(namespace), true),
            ..ServiceAccount::default()
        }))
    }

    fn role(namespace: &str, managed: bool) -> Object {
        Object::Role(Box::new(Role {
            metadata: meta("role", Some(namespace), managed),
            ..Role::default()
        }))
    }

    fn binding(namespace: &str) -> Object {
        Object::RoleBinding(Box::new(RoleBinding {
            metadata: meta("binding", Some(namespace), true),
            role_ref: RoleRef::default(),
            subjects: None,
        }))
    }

    fn names(sets: &[ObservedSet<'_>]) -> Vec<String> {
        sets.iter().map(|s| s.name.to_owned()).collect()
    }

    #[test]
    fn nothing_is_complete_before_every_kind_has_begun() {
        let mut a = Arriving::default();
        assert!(a.push(&selector(), ns("a")));
        assert!(a.push(&selector(), ns("b")));
        assert!(a.push(&selector(), sa("b")));
        assert!(a.push(&selector(), role("b", true)));
        assert!(a.complete().is_empty(), "the RoleBindings have not begun");
    }

    #[test]
    fn a_namespace_is_complete_once_every_kind_has_passed_it() {
        let sel = selector();
        let mut a = Arriving::default();
        for object in [
            ns("a"),
            ns("b"),
            ns("c"),
            sa("a"),
            sa("b"),
            role("a", true),
            binding("b"),
        ] {
            a.push(&sel, object);
        }
        // Namespaces at c, ServiceAccounts at b, Roles at a, RoleBindings at b: "a" has not
        // been passed by the Roles yet.
        assert!(a.complete().is_empty());
        a.push(&sel, role("c", true));
        // The ServiceAccounts and RoleBindings may still hold more of "b".
        assert_eq!(names(&a.complete()), ["a"]);
        a.push(&sel, sa("c"));
        a.push(&sel, binding("c"));
        let sets = a.complete();
        assert_eq!(names(&sets), ["b"]);
        let b = &sets[0];
        assert_eq!(b.namespace.map(|n| n.name.as_str()), Some("b"));
        assert_eq!(
            (b.service_accounts.len(), b.roles.len(), b.role_bindings.len()),
            (1, 0, 1)
        );
        assert!(a.complete().is_empty(), "each set is handed out once");
        for kind in crate::rules::kinds::MANAGED_KINDS {
            a.finish(kind);
        }
        assert!(a.is_done());
        let sets = a.complete();
        assert_eq!(names(&sets), ["c"]);
        assert_eq!(sets[0].roles.len(), 1);
    }

    #[test]
    fn what_lacks_the_selector_is_dropped_but_still_moves_its_list_on() {
        let sel = selector();
        let mut a = Arriving::default();
        for object in [
            ns("a"),
            ns("b"),
            sa("b"),
            binding("b"),
            role("a", false),
            role("b", false),
        ] {
            a.push(&sel, object);
        }
        let sets = a.complete();
        assert_eq!(names(&sets), ["a"]);
        assert!(sets[0].roles.is_empty());
        for kind in crate::rules::kinds::MANAGED_KINDS {
            a.finish(kind);
        }
        assert_eq!(a.complete().len(), 1);
        assert!(a.into_observed(&sel).roles.is_empty());
    }

    #[test]
    fn a_list_out_of_key_order_stops_the_handing_out() {
        let sel = selector();
        let mut a = Arriving::default();
        for object in [ns("a"), ns("c"), sa("c"), role("c", true), binding("c")] {
            a.push(&sel, object);
        }
        assert_eq!(names(&a.complete()), ["a"]);
        assert!(!a.push(&sel, sa("b")), "b comes after c");
        for kind in crate::rules::kinds::MANAGED_KINDS {
            a.finish(kind);
        }
        assert!(a.complete().is_empty());
        let whole = a.into_observed(&sel);
        assert_eq!(
            whole.service_accounts.len(),
            2,
            "the whole observation keeps everything"
        );
        assert_eq!(whole.sets().len(), 3);
    }

    /// Objects of every kind for the namespaces a kind holds (of `n0`..`n7`), each list in key
    /// order; `order` says which list the next object comes from.
    fn arrive(held: [u8; 4], unmanaged_roles: u8, order: &[usize]) -> (Vec<String>, Vec<String>) {
        let sel = selector();
        let names = |bits: u8| {
            (0..8)
                .filter(move |i| bits & (1 << i) != 0)
                .map(|i| format!("n{i}"))
        };
        let lists: [Vec<Object>; 4] = [
            names(held[0]).map(|n| ns(&n)).collect(),
            names(held[1]).map(|n| sa(&n)).collect(),
            names(held[2])
                .map(|n| role(&n, unmanaged_roles & (1 << n[1..].parse::<u8>().unwrap()) == 0))
                .collect(),
            names(held[3]).map(|n| binding(&n)).collect(),
        ];
        let mut lists = lists.map(|l| l.into_iter());
        let mut a = Arriving::default();
        let mut handed = Vec::new();
        for &next in order {
            if let Some(object) = lists[next % 4].next() {
                a.push(&sel, object);
            }
            handed.extend(a.complete().iter().map(|s| format!("{s:?}")));
        }
        for (kind, list) in crate::rules::kinds::MANAGED_KINDS.into_iter().zip(&mut lists) {
            for object in list {
                a.push(&sel, object);
                handed.extend(a.complete().iter().map(|s| format!("{s:?}")));
            }
            a.finish(kind);
            handed.extend(a.complete().iter().map(|s| format!("{s:?}")));
        }
        let whole = a.into_observed(&sel);
        (handed, whole.sets().iter().map(|s| format!("{s:?}")).collect())
    }

    proptest::proptest! {
        /// Whatever each kind holds and however their pages interleave, the sets handed out
        /// while listing are exactly the whole observation's, each once and in name order.
        #[test]
        fn any_interleaving_hands_out_the_whole_observations_sets(
            held in proptest::array::uniform4(proptest::prelude::any::<u8>()),
            unmanaged_roles in proptest::prelude::any::<u8>(),
            order in proptest::collection::vec(0usize..4, 0..40),
        ) {
            let (handed, whole) = arrive(held, unmanaged_roles, &order);
            proptest::prop_assert_eq!(handed, whole);
        }
    }

    #[test]
    fn the_sets_handed_out_are_the_whole_observations_sets() {
        let sel = selector();
        let mut a = Arriving::default();
        let mut handed = Vec::new();
        // Four kinds arriving interleaved, each in key order, with gaps.
        let lists: [Vec<Object>; 4] = [
            ["a", "b", "d", "e"].map(ns).into(),
            ["a", "c", "d"].map(sa).into(),
            ["b", "e"].map(|n| role(n, true)).into(),
            ["a", "b", "c", "e"].map(binding).into(),
        ];
        let mut lists = lists.map(|l| l.into_iter());
        loop {
            let mut any = false;
            for list in &mut lists {
                if let Some(object) = list.next() {
                    any = true;
                    a.push(&sel, object);
                    handed.extend(a.complete().iter().map(|s| format!("{s:?}")));
                }
            }
            if !any {
                break;
            }
        }
        for kind in crate::rules::kinds::MANAGED_KINDS {
            a.finish(kind);
        }
        handed.extend(a.complete().iter().map(|s| format!("{s:?}")));
        let whole = a.into_observed(&sel);
        let expected: Vec<String> = whole.sets().iter().map(|s| format!("{s:?}")).collect();
        assert_eq!(handed, expected);
    }
}
