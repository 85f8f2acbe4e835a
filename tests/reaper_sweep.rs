//! The reaper's sweep against the real control plane, through the library
//! and through the `reaper` binary: what it deletes, what it leaves alone,
//! dry run, the deletion cap, paging, orphans, partial failure, flags.
//!
//! Each test owns a [`support::Fixture`]: a random selector value
//! (`np-test/reaper=<unique>`), so tests are isolated although the reaper
//! lists cluster-wide; its state is dumped if the test fails, and it is
//! cleaned up by label.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod reaper_support;
mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding, RoleRef, Subject};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use namespace_provisioner::labels::{EXPIRY_LABEL, OBJECT_NAME, TENANT_LABEL};
use namespace_provisioner::reaper::report::Summary;
use namespace_provisioner::reaper::{self, SweepConfig};
use reaper_support::{
    SELECTOR_KEY, expired_events, fixture, run_reaper, run_reaper_as, stdout_json, summary_counts,
    sweep_config, versions,
};
use support::fixture::{await_gone, is_terminating};
use support::{now, unique};

#[tokio::test]
async fn sweep_deletes_the_expired_set_and_touches_nothing_else() {
    let fx = fixture(false).await;
    let client = fx.client.clone();
    let t = now();
    let expired = fx.create_set("rp-exp", t - 10).await;
    let live = fx.create_set("rp-live", t + 3600).await;
    // Expiry label in the past, but not the selector: not ours.
    let unmanaged = fx
        .create_unmanaged(
            "rp-unmanaged",
            BTreeMap::from([
                (EXPIRY_LABEL.to_owned(), (t - 1000).to_string()),
                (TENANT_LABEL.to_owned(), "ci".to_owned()),
            ]),
        )
        .await;
    // The selector's key with another value: not ours either.
    let other_value = fx
        .create_unmanaged(
            "rp-other",
            BTreeMap::from([
                (SELECTOR_KEY.to_owned(), format!("{}-other", fx.value)),
                (EXPIRY_LABEL.to_owned(), (t - 1000).to_string()),
            ]),
        )
        .await;
    let live_name = live.namespace.name_any();
    let untouched = [
        live_name.as_str(),
        &unmanaged,
        &other_value,
        "kube-system",
        "default",
    ];
    let mut before = BTreeMap::new();
    for ns in untouched {
        before.insert(ns.to_owned(), versions(&client, ns).await);
    }
    let expired_name = expired.namespace.name_any();
    let uid = Api::<Namespace>::all(client.clone())
        .get(&expired_name)
        .await
        .unwrap()
        .uid()
        .unwrap();

    let report = reaper::sweep(&client, &sweep_config(&fx), now()).await.unwrap();
    let s = &report.summary;
    assert_eq!(
        (s.scanned_sets, s.expired_deleted, s.in_sync, s.failed, s.writes),
        (2, 1, 1, 0, 1),
        "{}",
        report.to_text()
    );
    assert_eq!(report.entries.len(), 1);
    assert_eq!(report.entries[0].namespace, expired_name);
    assert_eq!(report.entries[0].outcome, Some("done"));

    await_gone(&client, &expired_name, &uid).await;
    for ns in untouched {
        assert_eq!(versions(&client, ns).await, before[ns], "{ns} was touched");
    }
    let events = expired_events(&client, &expired_name).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0].reporting_controller.as_deref(),
        Some("namespace-provisioner-reaper")
    );
    assert_eq!(
        events[0].regarding.as_ref().unwrap().uid.as_deref(),
        Some(uid.as_str())
    );
}

#[tokio::test]
async fn dry_run_binary_prints_the_plan_and_writes_nothing() {
    let fx = fixture(false).await;
    let client = fx.client.clone();
    let expired = fx.create_set("rp-dry-exp", now() - 5).await.namespace.name_any();
    let drifted = fx
        .create_set("rp-dry-drift", now() + 3600)
        .await
        .namespace
        .name_any();
    Api::<ServiceAccount>::namespaced(client.clone(), &drifted)
        .delete(OBJECT_NAME, &DeleteParams::default())
        .await
        .unwrap();
    let no_expiry = fx
        .create_set("rp-dry-noexp", now() + 3600)
        .await
        .namespace
        .name_any();
    Api::<Namespace>::all(client.clone())
        .patch(
            &no_expiry,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {EXPIRY_LABEL: null}}})),
        )
        .await
        .unwrap();
    let foreign = fx.create_unmanaged("rp-dry-foreign", BTreeMap::new()).await;
    support::create_named(
        &Api::<ServiceAccount>::namespaced(client.clone(), &foreign),
        "labelled",
        fx.selector_labels(),
    )
    .await;
    let all = [&expired, &drifted, &no_expiry, &foreign];
    let mut before = BTreeMap::new();
    for ns in all {
        before.insert(ns.clone(), versions(&client, ns).await);
    }

    let out = run_reaper(&fx, &["--dry-run", "--output", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json = stdout_json(&out);
    let s = &json["summary"];
    assert_eq!(s["dryRun"], true);
    assert_eq!(
        [
            &s["scannedSets"],
            &s["expiredDeleted"],
            &s["repaired"],
            &s["expirySet"],
            &s["orphansReported"]
        ],
        [4, 1, 1, 1, 1],
        "{json:#}"
    );
    let actions: BTreeMap<String, String> = json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["namespace"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(actions[&expired], "delete");
    assert_eq!(actions[&drifted], "repair");
    assert_eq!(actions[&no_expiry], "setExpiry");
    assert_eq!(actions[&foreign], "reportOrphan");

    let text = run_reaper(&fx, &["--dry-run"]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("dry run (nothing written)"), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{drifted} repair")))
        .unwrap();
    assert!(
        line.ends_with("ServiceAccount/namespace-provisioner(missing)"),
        "{text}"
    );

    for ns in all {
        assert_eq!(
            versions(&client, ns).await,
            before[ns.as_str()],
            "{ns} written by a dry run"
        );
    }
    assert!(expired_events(&client, &expired).await.is_empty());
}

#[tokio::test]
async fn max_deletions_binary_deletes_exactly_that_many_oldest_first() {
    let fx = fixture(false).await;
    let client = fx.client.clone();
    let t = now();
    let mut names = Vec::new();
    for age in [50, 40, 30, 20, 10] {
        names.push(fx.create_set("rp-cap", t - age).await.namespace.name_any());
    }
    let out = run_reaper(&fx, &["--max-deletions", "2", "--output", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json = stdout_json(&out);
    assert_eq!(json["summary"]["expiredDeleted"], 2, "{json:#}");
    assert_eq!(json["summary"]["deletionsCapped"], 3);
    assert_eq!(json["summary"]["maxDeletions"], 2);
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            is_terminating(&client, name).await,
            i < 2,
            "{name} (age rank {i})"
        );
    }
    let text = run_reaper(&fx, &["--max-deletions", "unlimited"]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("expired deleted 3"), "{text}");
    for name in &names {
        assert!(is_terminating(&client, name).await, "{name}");
    }
}

#[tokio::test]
async fn page_size_two_gives_the_same_result_as_one_page() {
    let fx = fixture(false).await;
    let (client, log) = support::counting_client().await;
    let t = now();
    for expiry in [t - 20, t - 10] {
        fx.create_set("rp-page-exp", expiry).await;
    }
    for _ in 0..2 {
        let ns = fx
            .create_set("rp-page-drift", t + 3600)
            .await
            .namespace
            .name_any();
        Api::<RoleBinding>::namespaced(client.clone(), &ns)
            .delete(OBJECT_NAME, &DeleteParams::default())
            .await
            .unwrap();
    }
    // Not creation + max TTL, so the fallback expiry rewrites the whole set.
    let ns = fx
        .create_set("rp-page-noexp", t + 1800)
        .await
        .namespace
        .name_any();
    Api::<Namespace>::all(client.clone())
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {EXPIRY_LABEL: "x"}}})),
        )
        .await
        .unwrap();
    for _ in 0..2 {
        fx.create_set("rp-page-live", t + 3600).await;
    }
    let dry = |page_size| SweepConfig {
        page_size,
        dry_run: true,
        ..sweep_config(&fx)
    };
    log.clear();
    let paged = reaper::sweep(&client, &dry(2), t).await.unwrap();
    let namespace_pages = log.count(&http::Method::GET, |p| p == "/api/v1/namespaces");
    let total_lists = log.len();
    let one_page = reaper::sweep(&client, &dry(500), t).await.unwrap();
    assert_eq!(paged.entries, one_page.entries);
    assert_eq!(summary_counts(&paged.summary), summary_counts(&one_page.summary));
    let s = &paged.summary;
    assert_eq!(
        (
            s.scanned_sets,
            s.expired_deleted,
            s.repaired,
            s.expiry_set,
            s.in_sync
        ),
        (7, 2, 2, 1, 2),
        "{}",
        paged.to_text()
    );
    // 7 namespaces, 2 per page: 4 pages; 7 SAs: 4; 5 RoleBindings: 3; no Roles: 1.
    assert_eq!(namespace_pages, 4);
    assert_eq!(total_lists, 4 + 4 + 3 + 1);

    // And doing it page by page does the same.
    log.clear();
    let done = reaper::sweep(
        &client,
        &SweepConfig {
            page_size: 2,
            ..sweep_config(&fx)
        },
        t,
    )
    .await
    .unwrap();
    assert_eq!(
        summary_counts(&done.summary),
        Summary {
            dry_run: false,
            writes: 2 + 2 + 3,
            ..summary_counts(&one_page.summary)
        },
        "{}",
        done.to_text()
    );
    // API requests: the LIST pages plus one write per object written, plus an Event per deletion,
    // plus the LIST of quota budgets (issue 12's ledger rebuild; none here, so nothing more).
    assert_eq!(log.len(), total_lists + 7 + 2 + 1, "{:#?}", log.entries());
}

#[tokio::test]
async fn orphan_is_reported_and_its_namespace_survives() {
    let fx = fixture(false).await;
    let client = fx.client.clone();
    // Expiry in the past on the namespace, selector only on its content.
    let foreign = fx
        .create_unmanaged(
            "rp-orphan",
            BTreeMap::from([(EXPIRY_LABEL.to_owned(), (now() - 100).to_string())]),
        )
        .await;
    support::create_named(
        &Api::<ServiceAccount>::namespaced(client.clone(), &foreign),
        OBJECT_NAME,
        fx.selector_labels(),
    )
    .await;
    let before = versions(&client, &foreign).await;
    let out = run_reaper(&fx, &["--output", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json = stdout_json(&out);
    assert_eq!(json["summary"]["orphansReported"], 1, "{json:#}");
    assert_eq!(json["summary"]["writes"], 0);
    let entry = &json["entries"][0];
    assert_eq!(entry["namespace"], foreign.as_str());
    assert_eq!(entry["action"], "reportOrphan");
    assert_eq!(entry["objects"][0]["kind"], "ServiceAccount");
    assert_eq!(entry["objects"][0]["name"], OBJECT_NAME);
    assert!(String::from_utf8_lossy(&out.stderr).contains("its namespace is not managed"));
    assert_eq!(versions(&client, &foreign).await, before);
}

/// A client allowed to list everything and to write only in `writable`, so
/// one set's repair fails and the others still succeed.
#[tokio::test]
async fn a_failing_set_does_not_stop_the_others_and_the_exit_status_says_so() {
    let fx = fixture(false).await;
    let client = fx.client.clone();
    let t = now();
    let writable = fx.create_set("rp-fail-ok", t + 3600).await.namespace.name_any();
    let forbidden = fx.create_set("rp-fail-no", t + 3600).await.namespace.name_any();
    let expired = fx.create_set("rp-fail-exp", t - 5).await.namespace.name_any();
    for ns in [&writable, &forbidden] {
        Api::<ServiceAccount>::namespaced(client.clone(), ns)
            .delete(OBJECT_NAME, &DeleteParams::default())
            .await
            .unwrap();
    }
    // The reaper's own identity, with just enough rights.
    let home = fx.create_unmanaged("rp-fail-home", BTreeMap::new()).await;
    support::create_named(
        &Api::<ServiceAccount>::namespaced(client.clone(), &home),
        "reaper",
        BTreeMap::new(),
    )
    .await;
    let rule = support::rule;
    let subject = Subject {
        kind: "ServiceAccount".to_owned(),
        name: "reaper".to_owned(),
        namespace: Some(home.clone()),
        api_group: None,
    };
    let cluster_name = unique("rp-fail-reader");
    fx.create_cluster_role(
        &cluster_name,
        vec![
            rule(&[""], &["namespaces", "serviceaccounts"], &["list", "get"]),
            rule(
                &["rbac.authorization.k8s.io"],
                &["roles", "rolebindings"],
                &["list", "get"],
            ),
            rule(&[""], &["namespaces"], &["delete"]),
            rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
        ],
    )
    .await;
    fx.create_cluster_role_binding(&cluster_name, &cluster_name, subject.clone())
        .await;
    Api::<Role>::namespaced(client.clone(), &writable)
        .create(
            &PostParams::default(),
            &Role {
                metadata: ObjectMeta {
                    name: Some("reaper-write".to_owned()),
                    ..ObjectMeta::default()
                },
                rules: Some(vec![rule(&[""], &["serviceaccounts"], &["create", "patch"])]),
            },
        )
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), &writable)
        .create(
            &PostParams::default(),
            &RoleBinding {
                metadata: ObjectMeta {
                    name: Some("reaper-write".to_owned()),
                    ..ObjectMeta::default()
                },
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".to_owned(),
                    kind: "Role".to_owned(),
                    name: "reaper-write".to_owned(),
                },
                subjects: Some(vec![subject]),
            },
        )
        .await
        .unwrap();
    let kubeconfig = support::temp_file(&support::service_account_kubeconfig(&client, &home, "reaper").await);
    // RBAC reaches the authorizer through an informer.
    support::eventually(Duration::from_secs(10), "the reaper's rights", || async {
        support::kubectl(
            kubeconfig.path(),
            &["auth", "can-i", "patch", "serviceaccounts", "-n", &writable],
        )
        .status
        .success()
    })
    .await;

    // Rights in a few namespaces only, on purpose: the start-up preflight
    // (cluster-wide permissions) would refuse to run at all.
    let out = run_reaper_as(&fx, kubeconfig.path(), &["--output", "json", "--skip-preflight"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = stdout_json(&out);
    let s = &json["summary"];
    assert_eq!(
        [&s["failed"], &s["repaired"], &s["expiredDeleted"]],
        [1, 1, 1],
        "{json:#}"
    );
    let failed = json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["outcome"] == "failed")
        .unwrap();
    assert_eq!(failed["namespace"], forbidden.as_str());
    assert!(
        failed["errors"][0].as_str().unwrap().contains("forbidden"),
        "{failed:#}"
    );
    // What could be done was done.
    assert!(
        Api::<ServiceAccount>::namespaced(client.clone(), &writable)
            .get_opt(OBJECT_NAME)
            .await
            .unwrap()
            .is_some()
    );
    assert!(is_terminating(&client, &expired).await);
}

#[test]
fn binary_refuses_conflicting_modes() {
    let out = Command::new(env!("CARGO_BIN_EXE_reaper"))
        .args(["--once", "--watch"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--watch"));
    let help = Command::new(env!("CARGO_BIN_EXE_reaper"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--selector",
        "--max-ttl",
        "--kubeconfig",
        "--page-size",
        "--dry-run",
        "--max-deletions",
        "--lease-duration",
        "[env: NP_MAX_DELETIONS=]",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}
