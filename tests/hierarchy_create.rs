//! Creating a child under a parent through the API, against the real control plane (issue 11):
//! every refusal with its status and detail and nothing written; the child's first write
//! carries the parent label, parent-uid and tree labels; the create answers only once the
//! copies of the ancestors' objects exist; a child never outlives its parent (create and extend).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod create_support;
mod support;

use std::collections::BTreeMap;

use create_support::{ALICE, ALLOWED, EXPIRY, PARENT, Service, assert_problem, created_name};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{kubectl, now, rule, temp_file};

fn tree(ns: &str) -> String {
    format!("{ns}.tree.controller.observatorium.io/depth")
}

#[tokio::test]
async fn refused_children_write_nothing_and_say_why() {
    let svc = Service::new().await;
    let client = svc.fx.client.clone();

    let missing = svc.create(json!({"parent": "no-such-parent-x7"})).await;
    assert_problem(&missing, 404, "parent namespace no-such-parent-x7 does not exist");

    let bad_name = svc.create(json!({"parent": "Not_A_Name"})).await;
    assert_problem(&bad_name, 400, "is not a namespace name");

    let quota_alone = svc.create(json!({"quota": {"count/pods": "1"}})).await;
    assert_problem(&quota_alone, 400, "name the parent too");

    let plain = svc.namespace("plain", &[], &[]).await;
    let not_parent = svc.create(json!({"parent": plain})).await;
    assert_problem(&not_parent, 403, ALLOWED);

    let bobs = svc.namespace("bobs", &[], &[(ALLOWED, "bob")]).await;
    let not_allowed = svc.create(json!({"parent": bobs})).await;
    assert_problem(&not_allowed, 403, "tenant alice may not create children under");

    let broken = svc.namespace("broken", &[], &[(ALLOWED, "a,,b")]).await;
    assert_problem(
        &svc.create(json!({"parent": broken})).await,
        409,
        "ask an administrator to fix it",
    );

    // root <- a <- b <- c: a child of c would be at depth 4, deeper than --max-depth 3.
    let root = svc.parent(&[]).await;
    let a = svc.namespace("a", &[(PARENT, &root)], &[(ALLOWED, "*")]).await;
    let b = svc.namespace("b", &[(PARENT, &a)], &[(ALLOWED, "*")]).await;
    let c = svc.namespace("c", &[(PARENT, &b)], &[(ALLOWED, "*")]).await;
    assert_problem(
        &svc.create(json!({"parent": c})).await,
        400,
        "deeper than the maximum 3",
    );

    let full = svc
        .parent(&[("controller.observatorium.io/max-children", "1")])
        .await;
    svc.namespace("sibling", &[(PARENT, &full)], &[]).await;
    assert_problem(
        &svc.create(json!({"parent": full})).await,
        409,
        "already has 1 live children",
    );

    let short = svc
        .parent(&[("controller.observatorium.io/max-ttl", "10m")])
        .await;
    let long = svc.create(json!({"parent": short, "ttl": "30m"})).await;
    assert_problem(
        &long,
        400,
        &format!("ttl 30m is above the maximum 10m of parent {short}"),
    );

    let expiring_at = now() + 600;
    let expiring = svc
        .namespace(
            "expiring",
            &[(EXPIRY, &expiring_at.to_string())],
            &[(ALLOWED, "*")],
        )
        .await;
    let outlive = svc.create(json!({"parent": expiring, "ttl": "30m"})).await;
    let parent_expiry = jiff::Timestamp::from_second(expiring_at).unwrap().to_string();
    assert_problem(
        &outlive,
        400,
        &format!("parent {expiring} expires at {parent_expiry}"),
    );

    // Terminating: a finalizer on an object inside keeps the parent in that phase.
    let dying = svc.parent(&[]).await;
    let held = ConfigMap {
        metadata: ObjectMeta {
            name: Some("held".into()),
            finalizers: Some(vec!["np-test.example.com/hold".into()]),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    let held_api = Api::<ConfigMap>::namespaced(client.clone(), &dying);
    held_api.create(&PostParams::default(), &held).await.unwrap();
    Api::<Namespace>::all(client.clone())
        .delete(&dying, &DeleteParams::default())
        .await
        .unwrap();
    assert_problem(
        &svc.create(json!({"parent": dying})).await,
        409,
        "is being deleted",
    );
    held_api
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();

    // The compat call refuses the same way.
    let compat = svc
        .call(
            "POST",
            &format!("/api/v1/namespace?parent={plain}"),
            Some(ALICE),
            None,
        )
        .await;
    assert_problem(&compat, 403, ALLOWED);

    assert!(
        svc.fx.managed().await.is_empty(),
        "a refused create wrote a namespace"
    );
}

#[tokio::test]
async fn a_child_answers_with_its_copies_already_there() {
    let svc = Service::new().await;
    let client = svc.fx.client.clone();
    // root <- team, team binds every ServiceAccount to listing ConfigMaps: a right the
    // child's own grant (empty) does not give, only the propagated copy does.
    let root = svc.parent(&[]).await;
    let team = svc
        .namespace("team", &[(PARENT, &root)], &[(ALLOWED, "alice")])
        .await;
    let reader = support::unique("np-test-reader");
    let (owner_key, owner_value) = svc.fx.owner();
    support::create_cluster_role_labelled(
        &client,
        &reader,
        vec![rule(&[""], &["configmaps"], &["get", "list"])],
        &[(owner_key, owner_value)],
    )
    .await;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("team-readers".into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: reader.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "Group".into(),
            name: "system:serviceaccounts".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            namespace: None,
        }]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), &team)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    let answer = svc.create(json!({"parent": team, "ttl": "20m"})).await;
    let child = created_name(&answer);
    let file = temp_file(answer.json()["kubeconfig"].as_str().unwrap());
    // At once, no waiting: the copy exists before the answer.
    let listed = kubectl(file.path(), &["get", "configmaps", "-o", "name"]);
    assert!(listed.status.success(), "{}", support::text(&listed));

    let copy = Api::<RoleBinding>::namespaced(client.clone(), &child)
        .get("team-readers")
        .await
        .unwrap();
    assert_eq!(copy.labels()["controller.observatorium.io/inherited-from"], team);
    assert_eq!(copy.role_ref.name, reader);

    let ns = Api::<Namespace>::all(client.clone()).get(&child).await.unwrap();
    let team_uid = Api::<Namespace>::all(client.clone())
        .get(&team)
        .await
        .unwrap()
        .uid()
        .unwrap();
    let labels = ns.labels();
    assert_eq!(labels[PARENT], team);
    assert_eq!(labels[&tree(&child)], "0");
    assert_eq!(labels[&tree(&team)], "1");
    assert_eq!(labels[&tree(&root)], "2");
    assert_eq!(
        ns.annotations()["controller.observatorium.io/parent-uid"],
        team_uid
    );
    assert_eq!(labels["controller.observatorium.io/tenant"], "alice");

    // The compat call takes ?parent= too.
    let compat = svc
        .call(
            "POST",
            &format!("/api/v1/namespace?parent={team}&ttl=5m"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(compat.status, 201, "{}", compat.body);
    assert_eq!(svc.children(&team).await.len(), 2);

    // The tree as the caller sees it: parent, children, copies and a conflict (the child's own
    // RoleBinding named like a source of its parent's: reported, not overwritten).
    let own = RoleBinding {
        metadata: ObjectMeta {
            name: Some("mine".into()),
            ..ObjectMeta::default()
        },
        ..binding.clone()
    };
    Api::<RoleBinding>::namespaced(client.clone(), &child)
        .create(&PostParams::default(), &own)
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), &team)
        .create(&PostParams::default(), &own)
        .await
        .unwrap();
    let view = svc
        .call("GET", &format!("/api/v1/namespaces/{child}"), Some(ALICE), None)
        .await;
    assert_eq!(view.status, 200, "{}", view.body);
    let view = view.json();
    assert_eq!(view["parent"], team.as_str());
    assert_eq!(view["children"], json!([]));
    assert_eq!(view["copyCount"], 1);
    assert_eq!(
        view["copies"][0],
        json!({"kind": "rbac.authorization.k8s.io/RoleBinding", "name": "team-readers", "source": team})
    );
    assert_eq!(
        view["conflicts"],
        json!([{"kind": "rbac.authorization.k8s.io/RoleBinding", "name": "mine", "source": team}])
    );
    assert_eq!(view["phase"], "Active");

    // The subtree: both children are below team and below root; team itself is not alice's.
    for ancestor in [&team, &root] {
        let listed = svc
            .call(
                "GET",
                &format!("/api/v1/namespaces?parent={ancestor}"),
                Some(ALICE),
                None,
            )
            .await;
        assert_eq!(listed.status, 200, "{}", listed.body);
        assert_eq!(
            listed.json()["items"].as_array().unwrap().len(),
            2,
            "{}",
            listed.body
        );
    }
    let elsewhere = svc
        .call(
            "GET",
            &format!("/api/v1/namespaces?parent={child}"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(elsewhere.json()["items"], json!([]));
    let not_mine = svc
        .call("GET", &format!("/api/v1/namespaces/{team}"), Some(ALICE), None)
        .await;
    assert_problem(&not_mine, 404, "no namespace");
}

#[tokio::test]
async fn a_child_never_outlives_its_parent() {
    let svc = Service::new().await;
    let parent_expiry = now() + 3600;
    let parent = svc
        .namespace(
            "mortal",
            &[(EXPIRY, &parent_expiry.to_string())],
            &[(ALLOWED, "*")],
        )
        .await;
    let answer = svc.create(json!({"parent": parent, "ttl": "30m"})).await;
    let child = created_name(&answer);
    let expiry: i64 = Api::<Namespace>::all(svc.fx.client.clone())
        .get(&child)
        .await
        .unwrap()
        .labels()[EXPIRY]
        .parse()
        .unwrap();
    assert!(
        expiry <= parent_expiry,
        "child {expiry} after parent {parent_expiry}"
    );

    // No ttl asked: the default (30m) ends with a parent that expires sooner, not refused.
    let soon = now() + 600;
    let short_lived = svc
        .namespace("short-lived", &[(EXPIRY, &soon.to_string())], &[(ALLOWED, "*")])
        .await;
    let defaulted = created_name(&svc.create(json!({"parent": short_lived})).await);
    let capped = Api::<Namespace>::all(svc.fx.client.clone())
        .get(&defaulted)
        .await
        .unwrap()
        .labels()[EXPIRY]
        .clone();
    assert_eq!(capped, soon.to_string());

    // Extending past the parent's expiry is refused, naming it; the child keeps its expiry.
    let extend = svc
        .call(
            "PATCH",
            &format!("/api/v1/namespaces/{child}"),
            Some(ALICE),
            Some(&json!({"ttl": "1h30m"}).to_string()),
        )
        .await;
    let shown = jiff::Timestamp::from_second(parent_expiry).unwrap().to_string();
    assert_problem(&extend, 400, &format!("expires at {shown}"));
    let after: BTreeMap<String, String> = Api::<Namespace>::all(svc.fx.client.clone())
        .get(&child)
        .await
        .unwrap()
        .labels()
        .clone();
    assert_eq!(after[EXPIRY], expiry.to_string());
    let within = svc
        .call(
            "PATCH",
            &format!("/api/v1/namespaces/{child}"),
            Some(ALICE),
            Some(&json!({"ttl": "40m"}).to_string()),
        )
        .await;
    assert_eq!(within.status, 200, "{}", within.body);
}
