//! The reaper repairs drift against the real control plane: every kind of
//! damage to a set is written back to exactly the desired set (and then left
//! alone); a missing or unreadable expiry is set from creation + max TTL and
//! reaped later.
//!
//! Each test owns a [`support::Fixture`] (random selector value, dump on
//! failure, cleanup by label).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod reaper_support;
mod support;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding, RoleRef};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use namespace_provisioner::labels::{EXPIRES_AT_ANNOTATION, EXPIRY_LABEL, OBJECT_NAME, TENANT_LABEL};
use namespace_provisioner::params::Expiry;
use namespace_provisioner::reaper;
use reaper_support::{SELECTOR_KEY, assert_matches_desired, fixture, sweep_config, versions};
use serde_json::Value;
use support::fixture::{is_terminating, settled};
use support::{now, unique};

#[tokio::test]
async fn every_drift_is_repaired_to_exactly_the_desired_set() {
    let fx = fixture(true).await;
    let client = fx.client.clone();
    let expiry = now() + 3600;
    let merge = |v: Value| Patch::Merge(v);
    let pp = PatchParams::default();
    let mut sets = Vec::new();
    for case in [
        "sa-deleted",
        "rb-deleted",
        "subjects",
        "roleref",
        "label-removed",
        "selector-removed",
        "ns-annotation",
        "role-deleted",
        "rules",
        "role-rb-subjects",
        "complete",
    ] {
        let set = fx.create_set("rp-drift", expiry).await;
        let ns = set.namespace.name_any();
        let sas = Api::<ServiceAccount>::namespaced(client.clone(), &ns);
        let rbs = Api::<RoleBinding>::namespaced(client.clone(), &ns);
        let roles = Api::<Role>::namespaced(client.clone(), &ns);
        let intruder = serde_json::json!({"subjects": [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}]});
        match case {
            "sa-deleted" => drop(sas.delete(OBJECT_NAME, &DeleteParams::default()).await.unwrap()),
            "rb-deleted" => drop(rbs.delete(OBJECT_NAME, &DeleteParams::default()).await.unwrap()),
            "subjects" => drop(rbs.patch(OBJECT_NAME, &pp, &merge(intruder)).await.unwrap()),
            "roleref" => {
                // roleRef is immutable: replace the binding with one to another role.
                rbs.delete(OBJECT_NAME, &DeleteParams::default()).await.unwrap();
                let mut other = set.role_binding.clone();
                other.role_ref = RoleRef {
                    api_group: "rbac.authorization.k8s.io".to_owned(),
                    kind: "ClusterRole".to_owned(),
                    name: "view".to_owned(),
                };
                rbs.create(&PostParams::default(), &other).await.unwrap();
            }
            "label-removed" => drop(
                sas.patch(
                    OBJECT_NAME,
                    &pp,
                    &merge(serde_json::json!({"metadata": {"labels": {TENANT_LABEL: null}}})),
                )
                .await
                .unwrap(),
            ),
            "selector-removed" => drop(
                rbs.patch(
                    OBJECT_NAME,
                    &pp,
                    &merge(serde_json::json!({"metadata": {"labels": {SELECTOR_KEY: null}}})),
                )
                .await
                .unwrap(),
            ),
            "ns-annotation" => drop(
                Api::<Namespace>::all(client.clone())
                    .patch(
                        &ns,
                        &pp,
                        &merge(serde_json::json!({"metadata": {"annotations": {EXPIRES_AT_ANNOTATION: null}}})),
                    )
                    .await
                    .unwrap(),
            ),
            "role-deleted" => drop(roles.delete(OBJECT_NAME, &DeleteParams::default()).await.unwrap()),
            "rules" => drop(
                roles
                    .patch(
                        OBJECT_NAME,
                        &pp,
                        &merge(serde_json::json!({"rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]})),
                    )
                    .await
                    .unwrap(),
            ),
            "role-rb-subjects" => drop(
                rbs.patch("namespace-provisioner-role", &pp, &merge(intruder))
                    .await
                    .unwrap(),
            ),
            _ => {}
        }
        sets.push((case, set));
    }
    let complete = sets.last().unwrap().1.namespace.name_any();
    let complete_before = versions(&client, &complete).await;
    let roleref_ns = sets[3].1.namespace.name_any();
    let old_binding_uid = Api::<RoleBinding>::namespaced(client.clone(), &roleref_ns)
        .get(OBJECT_NAME)
        .await
        .unwrap()
        .uid();

    let report = reaper::sweep(&client, &sweep_config(&fx), now()).await.unwrap();
    let s = &report.summary;
    assert_eq!(
        (s.scanned_sets, s.repaired, s.in_sync, s.failed),
        (11, 10, 1, 0),
        "{}",
        report.to_text()
    );
    let reasons: BTreeMap<String, Vec<String>> = report
        .entries
        .iter()
        .map(|e| {
            let r = e
                .writes
                .iter()
                .map(|w| format!("{}/{}:{}", w.kind, w.name, w.reasons.join("+")))
                .collect();
            (e.namespace.clone(), r)
        })
        .collect();
    for (case, set) in &sets {
        assert_matches_desired(&client, set).await;
        let ns = set.namespace.name_any();
        let want: &[&str] = match *case {
            "sa-deleted" => &["ServiceAccount/namespace-provisioner:missing"],
            "rb-deleted" | "selector-removed" => &["RoleBinding/namespace-provisioner:missing"],
            "subjects" => &["RoleBinding/namespace-provisioner:subjects"],
            "roleref" => &["RoleBinding/namespace-provisioner:roleRef"],
            "label-removed" => &["ServiceAccount/namespace-provisioner:labels"],
            "ns-annotation" => &["Namespace/{ns}:annotations"],
            "role-deleted" => &["Role/namespace-provisioner:missing"],
            "rules" => &["Role/namespace-provisioner:rules"],
            "role-rb-subjects" => &["RoleBinding/namespace-provisioner-role:subjects"],
            _ => &[],
        };
        let want: Vec<String> = want.iter().map(|w| w.replace("{ns}", &ns)).collect();
        assert_eq!(reasons.get(&ns).cloned().unwrap_or_default(), want, "{case}");
    }
    let new_binding_uid = Api::<RoleBinding>::namespaced(client.clone(), &roleref_ns)
        .get(OBJECT_NAME)
        .await
        .unwrap()
        .uid();
    assert_ne!(
        old_binding_uid, new_binding_uid,
        "roleRef drift must recreate the binding"
    );
    assert_eq!(versions(&client, &complete).await, complete_before);

    // Repaired means in sync: the next sweep writes nothing.
    let mut all_before = BTreeMap::new();
    for (_, set) in &sets {
        let ns = set.namespace.name_any();
        all_before.insert(ns.clone(), versions(&client, &ns).await);
    }
    let again = reaper::sweep(&client, &sweep_config(&fx), now()).await.unwrap();
    assert_eq!(
        (again.summary.in_sync, again.summary.writes),
        (11, 0),
        "{}",
        again.to_text()
    );
    for (ns, v) in all_before {
        assert_eq!(versions(&client, &ns).await, v, "{ns} written by an idle sweep");
    }
}

#[tokio::test]
async fn missing_or_garbage_expiry_is_set_from_creation_plus_max_ttl_and_reaped_later() {
    let fx = fixture(false).await;
    let client = fx.client.clone();
    let namespaces = Api::<Namespace>::all(client.clone());
    let pp = PatchParams::default();
    let missing = fx.create_set("rp-noexp", now() + 3600).await.namespace.name_any();
    namespaces
        .patch(
            &missing,
            &pp,
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {EXPIRY_LABEL: null}}})),
        )
        .await
        .unwrap();
    let garbage = fx
        .create_set("rp-garbage", now() + 3600)
        .await
        .namespace
        .name_any();
    namespaces
        .patch(
            &garbage,
            &pp,
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {EXPIRY_LABEL: "tomorrow"}}})),
        )
        .await
        .unwrap();
    // Adopted from the original tool: the selector only, no tenant, no expiry.
    let legacy = unique("rp-legacy");
    support::create_named(&namespaces, &legacy, fx.selector_labels()).await;
    settled(&client, &legacy).await;

    // Seen long after creation + max TTL: the expiry is set, nothing deleted.
    let much_later = now() + 10 * 3600;
    let report = reaper::sweep(&client, &sweep_config(&fx), much_later)
        .await
        .unwrap();
    let s = &report.summary;
    assert_eq!(
        (s.scanned_sets, s.expiry_set, s.expired_deleted, s.failed),
        (3, 3, 0, 0),
        "{}",
        report.to_text()
    );
    let previous: BTreeMap<_, _> = report
        .entries
        .iter()
        .map(|e| (e.namespace.clone(), e.previous_expiry.clone()))
        .collect();
    assert_eq!(previous[&garbage].as_deref(), Some("tomorrow"));
    assert_eq!(previous[&missing], None);
    for name in [&missing, &garbage, &legacy] {
        let ns = namespaces.get(name).await.unwrap();
        assert!(
            ns.metadata.deletion_timestamp.is_none(),
            "{name} deleted on the spot"
        );
        let created = ns.creation_timestamp().unwrap().0.as_second();
        let want = Expiry::from_unix(created + 3600);
        assert_eq!(ns.labels()[EXPIRY_LABEL], want.to_string(), "{name}");
        assert_eq!(ns.annotations()[EXPIRES_AT_ANNOTATION], want.rfc3339(), "{name}");
        if *name != legacy {
            // The rest of the set carries the new expiry too.
            assert_matches_desired(&client, &fx.desired(name, want.unix())).await;
        }
    }
    let legacy_ns = namespaces.get(&legacy).await.unwrap();
    assert!(!legacy_ns.labels().contains_key(TENANT_LABEL));
    assert!(
        Api::<ServiceAccount>::namespaced(client.clone(), &legacy)
            .get_opt(OBJECT_NAME)
            .await
            .unwrap()
            .is_none(),
        "no ServiceAccount is created in an untenanted namespace"
    );
    assert!(
        Api::<RoleBinding>::namespaced(client.clone(), &legacy)
            .get_opt(OBJECT_NAME)
            .await
            .unwrap()
            .is_none()
    );

    // A later run finds them expired.
    let later = reaper::sweep(&client, &sweep_config(&fx), much_later)
        .await
        .unwrap();
    assert_eq!(later.summary.expired_deleted, 3, "{}", later.to_text());
    for name in [&missing, &garbage, &legacy] {
        assert!(is_terminating(&client, name).await, "{name}");
    }
}
