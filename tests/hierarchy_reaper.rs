//! The reaper's tree part against the real control plane, mostly through the `reaper` binary:
//! tree labels, propagation from every ancestor (top-most wins), a second `--once` that writes
//! nothing (counted on the wire), cascade on parent deletion and uid change under `--dry-run`
//! and `--max-deletions`, full namespaces detached and never deleted, HNC's exceptions end to
//! end with a namespace label change, and mode changes Propagate → (kind removed from the file)
//! → Ignore → Propagate → Remove.
//!
//! The tree part sweeps every tree of the cluster, so the tests of this file take turns
//! ([`TURN`]); each owns a [`Fixture`] (dump on failure, cleanup by label).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hierarchy_support;
mod reaper_support;
mod support;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use namespace_provisioner::reaper::hierarchy::{self, TreeSweepConfig};
use namespace_provisioner::reaper::{self, SweepConfig};
use namespace_provisioner::rules::hierarchy::keys;
use serde_json::Value;
use tokio::sync::Mutex;

use hierarchy_support::*;
use reaper_support::{run_reaper, stdout_json};
use support::fixture::{await_gone, is_terminating, make_set, settled};
use support::{Fixture, now, temp_file, unique};

/// One test at a time: the reaper's tree part acts on every tree it sees.
static TURN: Mutex<()> = Mutex::const_new(());

const SELECTOR_KEY: &str = "np-test/hierarchy-reaper";

/// A managed child of `parent` (as the provisioner makes one), expiring in an hour; `parent_uid`
/// is what its parent-uid annotation records.
async fn managed_child(fx: &Fixture, parent: &str, parent_uid: &str) -> String {
    let mut set = fx.desired(&unique("hr-m"), now() + 3600);
    let meta = &mut set.namespace.metadata;
    meta.labels
        .get_or_insert_default()
        .insert(keys::PARENT_LABEL.into(), parent.into());
    meta.annotations
        .get_or_insert_default()
        .insert(keys::PARENT_UID_ANNOTATION.into(), parent_uid.into());
    make_set(&fx.client, &set).await;
    let name = set.namespace.name_any();
    settled(&fx.client, &name).await;
    name
}

async fn uid_of(client: &Client, namespace: &str) -> String {
    Api::<Namespace>::all(client.clone())
        .get(namespace)
        .await
        .unwrap()
        .uid()
        .unwrap()
}

/// `reaper --once --output json` with `extra` flags; the JSON report.
fn once(fx: &Fixture, config: &std::path::Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "--once",
        "--output",
        "json",
        "--propagation-config",
        config.to_str().unwrap(),
    ];
    args.extend(extra);
    let out = run_reaper(fx, &args);
    let json = stdout_json(&out);
    assert!(
        out.status.success(),
        "reaper failed: {json:#}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json
}

fn names(findings: &Value) -> Vec<(String, String)> {
    findings
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["namespace"].as_str().unwrap().to_string(),
                f["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn tree_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(k, _)| keys::tree_label_ancestor(k).is_some())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[tokio::test]
async fn once_labels_a_three_level_tree_copies_from_both_ancestors_and_a_second_once_writes_nothing() {
    let _turn = TURN.lock().await;
    let fx = Fixture::new(SELECTOR_KEY).await;
    let client = fx.client.clone();
    let top = tree_namespace(&fx, "hr-top", None, &[]).await;
    let mid = tree_namespace(&fx, "hr-mid", Some(&top), &[]).await;
    let leaf = managed_child(&fx, &mid, &uid_of(&client, &mid).await).await;
    config_map(&client, &top, "shared", "from-top", &[], &[]).await;
    // mid's own object with a name top propagates: a conflict in mid, but leaf gets top's.
    config_map(&client, &mid, "shared", "from-mid", &[], &[]).await;
    config_map(&client, &mid, "mid-only", "mid", &[], &[]).await;
    role(&client, &top, "reader", &["get"]).await;
    role_binding(&client, &top, "readers", "reader", "alice").await;
    let config = temp_file(CONFIG);

    let json = once(&fx, config.path(), &[]);
    let trees = &json["trees"];
    assert_eq!(trees["treeLabelPatches"], 3, "{trees:#}");
    let p = &trees["propagation"];
    // mid: reader, readers; leaf: shared, mid-only, reader, readers.
    assert_eq!(p["created"], 6, "{trees:#}");
    assert_eq!(names(&p["conflicts"]), vec![(mid.clone(), "shared".to_string())]);
    assert!(trees["cascades"].as_array().unwrap().is_empty());

    assert_eq!(
        tree_labels(&labels_of(&client, &leaf).await),
        BTreeMap::from([
            (keys::tree_label(&top), "2".to_string()),
            (keys::tree_label(&mid), "1".to_string()),
            (keys::tree_label(&leaf), "0".to_string()),
        ])
    );
    assert_eq!(
        tree_labels(&labels_of(&client, &top).await),
        BTreeMap::from([(keys::tree_label(&top), "0".to_string())])
    );
    let shared = get_config_map(&client, &leaf, "shared").await.unwrap();
    assert_eq!(data_of(&shared), "from-top");
    assert_eq!(inherited_from(&shared).as_deref(), Some(top.as_str()));
    assert_eq!(
        inherited_from(&get_config_map(&client, &leaf, "mid-only").await.unwrap()).as_deref(),
        Some(mid.as_str())
    );
    assert_eq!(
        data_of(&get_config_map(&client, &mid, "shared").await.unwrap()),
        "from-mid"
    );
    // The provisioner's own set in leaf is not a conflict, and the mid's (none) not a source.
    assert!(
        Api::<RoleBinding>::namespaced(client.clone(), &leaf)
            .get("namespace-provisioner")
            .await
            .is_ok()
    );

    // A second sweep, counted on the wire: the expiry part and the tree part write nothing.
    let (counting, log) = support::counting_client().await;
    let main = reaper::sweep(
        &counting,
        &SweepConfig {
            plan: reaper::plan::PlanConfig {
                set: fx.set.clone(),
                max_ttl: reaper_support::MAX_TTL,
                max_deletions: None,
            },
            page_size: 500,
            concurrency: 4,
            dry_run: false,
            instance: "test".into(),
        },
        now(),
    )
    .await
    .unwrap();
    assert_eq!(main.summary.writes, 0, "{main:#?}");
    let propagation = propagation(&counting, CONFIG)
        .await
        .excluding_sets(fx.selector.clone());
    // Pages of 2: leaf's objects arrive across pages of the streamed LIST, and it is
    // planned only once they all have (a namespace planned from part of its objects would
    // find copies missing and try to create them).
    let again = hierarchy::sweep(
        &counting,
        &propagation,
        &TreeSweepConfig {
            selector: fx.selector.clone(),
            page_size: 2,
            concurrency: 4,
            dry_run: false,
            deletions_left: None,
        },
        now(),
    )
    .await
    .unwrap();
    assert_eq!(again.writes(), 0, "{again:#?}");
    assert_eq!(again.propagation.in_sync, 6);
    let writes: Vec<_> = log
        .entries()
        .into_iter()
        .filter(|(method, _, _)| method != http::Method::GET)
        .collect();
    assert!(writes.is_empty(), "write requests: {writes:#?}");
}

#[tokio::test]
async fn cascade_reaps_managed_children_under_dry_run_and_cap_and_detaches_full_namespaces() {
    let _turn = TURN.lock().await;
    let fx = Fixture::new(SELECTOR_KEY).await;
    let client = fx.client.clone();
    let parent = tree_namespace(&fx, "hr-p", None, &[]).await;
    let parent_uid = uid_of(&client, &parent).await;
    let kept = managed_child(&fx, &parent, &parent_uid).await;
    // Recorded a parent uid that is not the parent's: the parent was recreated under its name.
    let stale = managed_child(&fx, &parent, "uid-of-an-older-parent").await;
    let full = tree_namespace(&fx, "hr-full", Some(&parent), &[]).await;
    config_map(&client, &parent, "cfg", "v", &[], &[]).await;
    let config = temp_file(CONFIG);

    // Dry run: planned, nothing deleted, nothing copied.
    let json = once(&fx, config.path(), &["--dry-run"]);
    let cascades = json["trees"]["cascades"].as_array().unwrap().clone();
    assert_eq!(cascades.len(), 1, "{json:#}");
    assert_eq!(cascades[0]["namespace"], stale.as_str());
    assert_eq!(cascades[0]["reason"], "parentRecreated");
    assert_eq!(cascades[0]["outcome"], "planned");
    assert!(!is_terminating(&client, &stale).await);
    assert!(get_config_map(&client, &full, "cfg").await.is_none());

    // Cap 0: capped, nothing deleted.
    let json = once(&fx, config.path(), &["--max-deletions", "0"]);
    assert_eq!(json["trees"]["cascades"][0]["outcome"], "capped", "{json:#}");
    assert!(!is_terminating(&client, &stale).await);

    let json = once(&fx, config.path(), &[]);
    assert_eq!(json["trees"]["cascades"][0]["outcome"], "deleted", "{json:#}");
    assert!(is_terminating(&client, &stale).await);
    assert!(!is_terminating(&client, &kept).await);
    assert!(get_config_map(&client, &full, "cfg").await.is_some());
    assert!(get_config_map(&client, &kept, "cfg").await.is_some());

    // The parent goes: its managed child is reaped, the full namespace only detached.
    Api::<Namespace>::all(client.clone())
        .delete(&parent, &DeleteParams::default())
        .await
        .unwrap();
    await_gone(&client, &parent, &parent_uid).await;
    let json = once(&fx, config.path(), &[]);
    let trees = &json["trees"];
    let reaped: Vec<(&str, &str)> = trees["cascades"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["namespace"].as_str().unwrap(), c["reason"].as_str().unwrap()))
        .collect();
    assert!(reaped.contains(&(kept.as_str(), "parentGone")), "{trees:#}");
    assert_eq!(trees["detached"], serde_json::json!([full.clone()]), "{trees:#}");
    assert!(is_terminating(&client, &kept).await);
    assert!(
        !is_terminating(&client, &full).await,
        "a full namespace is never deleted"
    );
    assert!(tree_labels(&labels_of(&client, &full).await).is_empty());
    assert!(
        get_config_map(&client, &full, "cfg").await.is_none(),
        "its copies go"
    );
}

#[tokio::test]
async fn exceptions_select_tree_select_none_all_and_a_label_change_moving_a_namespace() {
    let _turn = TURN.lock().await;
    let fx = Fixture::new(SELECTOR_KEY).await;
    let client = fx.client.clone();
    let parent = tree_namespace(&fx, "hr-p", None, &[]).await;
    let a = tree_namespace(&fx, "hr-a", Some(&parent), &[("env", "prod")]).await;
    let b = tree_namespace(&fx, "hr-b", Some(&parent), &[("env", "dev")]).await;
    let a1 = tree_namespace(&fx, "hr-a1", Some(&a), &[]).await;
    let select = keys::SELECT_ANNOTATION;
    let tree_select = keys::TREE_SELECT_ANNOTATION;
    config_map(&client, &parent, "only-prod", "v", &[], &[(select, "env=prod")]).await;
    let not_a = format!("!{a}");
    config_map(
        &client,
        &parent,
        "not-under-a",
        "v",
        &[],
        &[(tree_select, &not_a)],
    )
    .await;
    let two = format!("{a},{b}");
    config_map(
        &client,
        &parent,
        "two-positives",
        "v",
        &[],
        &[(tree_select, &two)],
    )
    .await;
    config_map(
        &client,
        &parent,
        "nowhere",
        "v",
        &[],
        &[(keys::NONE_ANNOTATION, "true")],
    )
    .await;
    // Secrets are AllowPropagate: only objects opting in with `all` (ParseBool truthy) travel.
    let secrets = Api::<Secret>::namespaced(client.clone(), &parent);
    for (name, all) in [
        ("everywhere", Some("T")),
        ("stays", None),
        ("also-everywhere", Some("1")),
    ] {
        let mut secret = Secret::default();
        secret.metadata.name = Some(name.into());
        if let Some(all) = all {
            secret.metadata.annotations = Some(BTreeMap::from([(keys::ALL_ANNOTATION.into(), all.into())]));
        }
        secrets.create(&PostParams::default(), &secret).await.unwrap();
    }
    let config = temp_file(&format!("{CONFIG}- kind: Secret\n  mode: AllowPropagate\n"));

    let json = once(&fx, config.path(), &[]);
    let cms = |ns: &str| {
        let client = client.clone();
        let ns = ns.to_string();
        async move {
            let mut names: Vec<String> = Api::<ConfigMap>::namespaced(client, &ns)
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|cm| inherited_from(cm).is_some())
                .map(|cm| cm.name_any())
                .collect();
            names.sort();
            names
        }
    };
    let secrets_in = |ns: &str| {
        let client = client.clone();
        let ns = ns.to_string();
        async move {
            let mut names: Vec<String> = Api::<Secret>::namespaced(client, &ns)
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|s| inherited_from(s).is_some())
                .map(|s| s.name_any())
                .collect();
            names.sort();
            names
        }
    };
    assert_eq!(cms(&a).await, ["only-prod"], "{json:#}");
    assert_eq!(cms(&b).await, ["not-under-a"]);
    assert!(cms(&a1).await.is_empty(), "a1 has no env label and is under a");
    for ns in [&a, &b, &a1] {
        assert_eq!(secrets_in(ns).await, ["also-everywhere", "everywhere"], "{ns}");
    }
    let skips: Vec<String> = json["trees"]["propagation"]["skips"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == "two-positives")
        .map(|s| s["detail"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        skips.len(),
        1,
        "one skip per source, not per destination: {json:#}"
    );

    // b moves into the selection, a out of it.
    let namespaces = Api::<Namespace>::all(client.clone());
    for (ns, env) in [(&b, "prod"), (&a, "dev")] {
        namespaces
            .patch(
                ns,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"labels": {"env": env}}})),
            )
            .await
            .unwrap();
    }
    let json = once(&fx, config.path(), &[]);
    assert_eq!(cms(&a).await, Vec::<String>::new(), "{json:#}");
    assert_eq!(cms(&b).await, ["not-under-a", "only-prod"]);
}

#[tokio::test]
async fn mode_changes_propagate_ignore_propagate_remove() {
    let _turn = TURN.lock().await;
    let fx = Fixture::new(SELECTOR_KEY).await;
    let client = fx.client.clone();
    let parent = tree_namespace(&fx, "hr-p", None, &[]).await;
    let child = tree_namespace(&fx, "hr-c", Some(&parent), &[]).await;
    config_map(&client, &parent, "cfg", "v1", &[], &[]).await;
    let mode = |m: &str| temp_file(&format!("resources:\n- kind: ConfigMap\n  mode: {m}\n"));
    let edit_source = |data: &'static str| {
        let client = client.clone();
        let parent = parent.clone();
        async move {
            Api::<ConfigMap>::namespaced(client, &parent)
                .patch(
                    "cfg",
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"data": {"k": data}})),
                )
                .await
                .unwrap();
        }
    };

    once(&fx, mode("Propagate").path(), &[]);
    let copy = get_config_map(&client, &child, "cfg").await.unwrap();
    assert_eq!(data_of(&copy), "v1");

    // A kind removed from the file is Ignore: its copies stay as they were.
    edit_source("v2").await;
    let removed = temp_file("resources: []\n");
    let json = once(&fx, removed.path(), &[]);
    assert_eq!(json["trees"]["propagation"]["updated"], 0, "{json:#}");
    assert_eq!(json["trees"]["propagation"]["deleted"], 0, "{json:#}");
    assert_eq!(
        data_of(&get_config_map(&client, &child, "cfg").await.unwrap()),
        "v1"
    );

    // Ignore: nothing of the kind is touched, the copy stays as it was.
    let json = once(&fx, mode("Ignore").path(), &[]);
    assert_eq!(json["trees"]["propagation"]["updated"], 0, "{json:#}");
    assert_eq!(
        data_of(&get_config_map(&client, &child, "cfg").await.unwrap()),
        "v1"
    );

    // Back to Propagate: the existing copy is adopted and updated in place (same uid).
    let json = once(&fx, mode("Propagate").path(), &[]);
    assert_eq!(json["trees"]["propagation"]["updated"], 1, "{json:#}");
    let adopted = get_config_map(&client, &child, "cfg").await.unwrap();
    assert_eq!(data_of(&adopted), "v2");
    assert_eq!(adopted.uid(), copy.uid());

    // Remove: copies go, the source stays.
    let json = once(&fx, mode("Remove").path(), &[]);
    assert_eq!(json["trees"]["propagation"]["deleted"], 1, "{json:#}");
    assert!(get_config_map(&client, &child, "cfg").await.is_none());
    assert!(get_config_map(&client, &parent, "cfg").await.is_some());
}
