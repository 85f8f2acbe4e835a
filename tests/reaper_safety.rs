//! The sweep's safety guards against the real control plane (issue 15):
//! a sweep that would delete most managed namespaces deletes none of them,
//! repairs the rest, says why and exits 3 (until `--allow-mass-deletion`);
//! a clock running an hour ahead of the API server's deletes nothing that
//! only looks expired to it (nor cascades to the children of a parent that
//! only looks expired), and repairs go on. The clock is injected into
//! the library's sweep ([`reaper::run_safely`]), never through a flag, and
//! the whole binary is run with its clock shifted by libfaketime.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hierarchy_support;
mod reaper_support;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;

use hierarchy_support::{CONFIG, labels_of, propagation, tree_namespace};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use namespace_provisioner::labels::OBJECT_NAME;
use namespace_provisioner::reaper::plan::MassDeletionGuard;
use namespace_provisioner::reaper::tree_watch::TreeWatch;
use namespace_provisioner::reaper::watch::{self, ClockCheck, WatchOptions, watch_with};
use namespace_provisioner::reaper::{self, Safety};
use namespace_provisioner::rules::hierarchy::keys;
use reaper_support::{fixture, lease_holder, run_reaper, stdout_json, sweep_config, watch_config};
use support::fixture::is_terminating;
use support::{Fixture, eventually, metric, now, unique};

const TREE_WAIT: Duration = Duration::from_secs(20);

/// Delete a set's ServiceAccount, for the sweep to repair.
async fn damage(fx: &Fixture, namespace: &str) {
    Api::<ServiceAccount>::namespaced(fx.client.clone(), namespace)
        .delete(OBJECT_NAME, &DeleteParams::default())
        .await
        .unwrap();
}

async fn has_service_account(fx: &Fixture, namespace: &str) -> bool {
    Api::<ServiceAccount>::namespaced(fx.client.clone(), namespace)
        .get_opt(OBJECT_NAME)
        .await
        .unwrap()
        .is_some()
}

/// Which of `names` are being deleted (or gone).
async fn deleting(fx: &Fixture, names: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for name in names {
        if is_terminating(&fx.client, name).await {
            out.push(name.clone());
        }
    }
    out
}

#[tokio::test]
async fn a_sweep_that_would_delete_most_sets_deletes_none_repairs_and_exits_3() {
    let fx = fixture(false).await;
    let mut expired = Vec::new();
    for _ in 0..4 {
        let set = fx.create_set("np-mass", now() - 60).await;
        expired.push(set.namespace.name_any());
    }
    let live = fx
        .create_set("np-mass-live", now() + 3600)
        .await
        .namespace
        .name_any();
    damage(&fx, &live).await;

    // 4 of 5 due: more than half and more than 2.
    let out = run_reaper(&fx, &["--once", "--output", "json", "--mass-deletion-min", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "{stderr}\n{}", fx.dump());
    let report = stdout_json(&out);
    let summary = &report["summary"];
    assert_eq!(summary["refusal"], "mass_deletion", "{summary}");
    assert_eq!(summary["deletionsRefused"], 4, "{summary}");
    assert_eq!(summary["expiredDeleted"], 0, "{summary}");
    assert_eq!(summary["repaired"], 1, "repairs go on: {summary}");
    let reason = summary["refusalReason"].as_str().unwrap();
    assert!(
        reason.contains("4 of 5 managed namespaces") && reason.contains("--allow-mass-deletion"),
        "{reason}"
    );
    assert!(
        stderr.contains("deletions refused: 4 of 5 managed namespaces"),
        "the log says why: {stderr}"
    );
    assert!(has_service_account(&fx, &live).await, "{}", fx.dump());
    assert_eq!(
        deleting(&fx, &expired).await,
        Vec::<String>::new(),
        "{}",
        fx.dump()
    );
    for name in &expired {
        Api::<Namespace>::all(fx.client.clone()).get(name).await.unwrap();
    }

    // Below the guard (the default minimum of 10): a normal sweep.
    let out = run_reaper(&fx, &["--once", "--output", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout_json(&out)["summary"]["expiredDeleted"], 4);
    let mut all = expired.clone();
    all.sort();
    let mut gone = deleting(&fx, &expired).await;
    gone.sort();
    assert_eq!(gone, all, "{}", fx.dump());
}

#[tokio::test]
async fn allow_mass_deletion_lifts_the_guard() {
    let fx = fixture(false).await;
    let mut expired = Vec::new();
    for _ in 0..3 {
        expired.push(fx.create_set("np-mass-ok", now() - 60).await.namespace.name_any());
    }
    let out = run_reaper(
        &fx,
        &[
            "--once",
            "--output",
            "json",
            "--mass-deletion-min",
            "1",
            "--allow-mass-deletion",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = &stdout_json(&out)["summary"];
    assert_eq!(summary["expiredDeleted"], 3, "{summary}");
    assert!(summary.get("refusal").is_none(), "{summary}");
    assert_eq!(deleting(&fx, &expired).await.len(), 3, "{}", fx.dump());
}

/// An hour ahead of the real clock (and of the API server's).
fn an_hour_ahead() -> i64 {
    now() + 3600
}

/// The same, for the whole binary: its clock shifted an hour ahead by libfaketime (TLS,
/// logs, the sweep all read it), nothing injected. It measures the skew against the API
/// server's `Date`, deletes nothing that only looks expired to it, repairs, exits 3.
#[tokio::test]
async fn the_reaper_binary_an_hour_ahead_deletes_nothing_and_says_why() {
    let fx = fixture(false).await;
    let soon = fx
        .create_set("np-skew-bin", now() + 600)
        .await
        .namespace
        .name_any();
    let damaged = fx
        .create_set("np-skew-bin-live", now() + 7200)
        .await
        .namespace
        .name_any();
    damage(&fx, &damaged).await;
    let out = reaper_support::run_reaper_shifted(
        &fx,
        "+1h",
        &["--once", "--output", "json", "--max-clock-skew", "30s"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "{stderr}\n{}", fx.dump());
    let summary = stdout_json(&out)["summary"].clone();
    assert_eq!(summary["refusal"], "clock_skew", "{summary}");
    assert_eq!(
        (
            &summary["deletionsRefused"],
            &summary["expiredDeleted"],
            &summary["repaired"]
        ),
        (&1.into(), &0.into(), &1.into()),
        "{summary}"
    );
    let reason = summary["refusalReason"].as_str().unwrap();
    // 3600 s, give or take the second the readings straddle.
    assert!(
        (3598..=3601)
            .any(|s| reason.contains(&format!("{s}s ahead of the API server's (--max-clock-skew 30s)"))),
        "{reason}"
    );
    assert!(
        stderr.contains("ahead of the API server"),
        "the log says why: {stderr}"
    );
    assert!(!is_terminating(&fx.client, &soon).await, "{}", fx.dump());
    assert!(has_service_account(&fx, &damaged).await, "{}", fx.dump());
}

#[tokio::test]
async fn a_clock_an_hour_ahead_deletes_nothing_and_repairs_go_on() {
    let fx = fixture(false).await;
    // Due in 10 minutes: expired to a clock an hour ahead.
    let soon = fx
        .create_set("np-skew-soon", now() + 600)
        .await
        .namespace
        .name_any();
    let damaged = fx
        .create_set("np-skew-live", now() + 7200)
        .await
        .namespace
        .name_any();
    damage(&fx, &damaged).await;
    let safety = Safety {
        mass_deletion: None,
        max_clock_skew: Some(Duration::from_secs(30)),
    };
    let config = sweep_config(&fx);

    let report = reaper::run_safely(&fx.client, &config, &safety, an_hour_ahead)
        .await
        .unwrap();
    let s = &report.summary;
    assert!(report.refused(), "{s:?}");
    assert_eq!(s.refusal, Some("clock_skew"));
    assert_eq!(
        (s.deletions_refused, s.expired_deleted, s.repaired),
        (1, 0, 1),
        "{s:?}"
    );
    let reason = s.refusal_reason.as_deref().unwrap();
    assert!(
        reason.contains("s ahead of the API server's (--max-clock-skew 30s)"),
        "{reason}"
    );
    assert!(has_service_account(&fx, &damaged).await, "{}", fx.dump());
    assert!(!is_terminating(&fx.client, &soon).await, "{}", fx.dump());

    // The same sweep, mass-deletion guard on, with a true clock: nothing is due, nothing refused.
    let guarded = Safety {
        mass_deletion: Some(MassDeletionGuard {
            fraction: 0.5,
            min: 10,
        }),
        ..safety
    };
    let report = reaper::run_safely(&fx.client, &config, &guarded, now)
        .await
        .unwrap();
    assert!(!report.refused(), "{:?}", report.summary);
    assert_eq!(report.summary.deletions_refused, 0);
    assert_eq!(report.summary.expired_deleted, 0);
    assert!(!is_terminating(&fx.client, &soon).await, "{}", fx.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_mode_refuses_deletions_while_the_clock_is_skewed_and_repairs_go_on() {
    let fx = fixture(false).await;
    let expired = fx
        .create_set("np-skew-watch", now() - 60)
        .await
        .namespace
        .name_any();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = futures::channel::oneshot::channel::<()>();
    let lease = support::unique("np-skew-lease");
    let task = tokio::spawn(watch::watch_guarded(
        fx.client.clone(),
        watch_config(&fx, &lease, "skewed"),
        None,
        Some(ClockCheck {
            max_skew: Duration::from_secs(30),
            clock: an_hour_ahead,
        }),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    eventually(Duration::from_secs(30), "a refused deletion", || async {
        metric(&addr, "namespace_provisioner_reaper_clock_skew_refusals_total")
            .await
            .is_some_and(|n| n >= 1.0)
    })
    .await;
    assert_eq!(
        metric(&addr, "namespace_provisioner_reaper_clock_untrusted").await,
        Some(1.0)
    );
    let skew = metric(&addr, "namespace_provisioner_reaper_clock_skew_seconds")
        .await
        .unwrap();
    assert!((3590.0..=3600.0).contains(&skew), "{skew}");
    // Repairs go on meanwhile.
    let live = fx
        .create_set("np-skew-watch-live", now() + 7200)
        .await
        .namespace
        .name_any();
    damage(&fx, &live).await;
    eventually(Duration::from_secs(30), "the repair", || {
        has_service_account(&fx, &live)
    })
    .await;
    assert!(!is_terminating(&fx.client, &expired).await, "{}", fx.dump());
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("watch stopped within 30s")
        .unwrap()
        .unwrap();
}

/// An hour ahead of the API server's clock until [`HEALED`].
static HEALED: AtomicBool = AtomicBool::new(false);

fn skewed_until_healed() -> i64 {
    now() + if HEALED.load(Ordering::SeqCst) { 0 } else { 3600 }
}

/// A tree watch runs here alone: in a binary with another, both would propagate and cascade
/// every tree of the shared control plane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cascade_while_the_clock_is_untrusted_then_it_happens() {
    let fx = Fixture::new("np-test/safety-cascade").await;
    let client = fx.client.clone();
    let propagation = propagation(&client, CONFIG)
        .await
        .excluding_sets(fx.selector.clone());
    let trees = TreeWatch {
        propagation: Arc::new(propagation),
        selector: fx.selector.clone(),
        page_size: 500,
        concurrency: 4,
        instance: "test".into(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let lease = unique("hwc-lease");
    let (stop, stopped) = futures::channel::oneshot::channel::<()>();
    let options = WatchOptions {
        trees: Some(trees),
        clock: Some(ClockCheck {
            max_skew: Duration::from_secs(30),
            clock: skewed_until_healed,
        }),
        ..WatchOptions::default()
    };
    let task = tokio::spawn(
        watch_with(
            client.clone(),
            watch_config(&fx, &lease, "skewed"),
            options,
            listener,
            stopped.map(drop),
        )
        .map(|done| done.map_err(|e| e.to_string())),
    );
    eventually(TREE_WAIT, "the watcher to lead", || async {
        lease_holder(&client, &lease).await.as_deref() == Some("skewed")
    })
    .await;

    // An expired managed parent (its deletion is refused) with a live managed child: the
    // parent's expiry, judged by an untrusted clock, must not cascade either.
    let parent = fx.create_set("hwc-p", now() - 60).await;
    let parent_name = parent.namespace.metadata.name.clone().unwrap();
    let parent_uid = Api::<Namespace>::all(client.clone())
        .get(&parent_name)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let mut set = fx.desired(&unique("hwc-c"), now() + 3600);
    let meta = &mut set.namespace.metadata;
    meta.labels
        .get_or_insert_default()
        .insert(keys::PARENT_LABEL.into(), parent_name.clone());
    meta.annotations
        .get_or_insert_default()
        .insert(keys::PARENT_UID_ANNOTATION.into(), parent_uid);
    support::fixture::make_set(&client, &set).await;
    let child = set.namespace.metadata.name.clone().unwrap();
    // A tree made after the child: once it is labelled, a pass has planned the child too.
    let root = tree_namespace(&fx, "hwc-r", None, &[]).await;
    let leaf = tree_namespace(&fx, "hwc-l", Some(&root), &[]).await;
    eventually(TREE_WAIT, "a pass after the child was made", || async {
        labels_of(&client, &leaf)
            .await
            .contains_key(&keys::tree_label(&root))
    })
    .await;
    assert!(!is_terminating(&client, &child).await, "{}", fx.dump());
    assert!(!is_terminating(&client, &parent_name).await, "{}", fx.dump());
    let refusals = metric(&addr, "namespace_provisioner_reaper_clock_skew_refusals_total").await;
    assert!(refusals.unwrap_or(0.0) >= 2.0, "parent and cascade: {refusals:?}");

    // Trusted again: the refused cascade is planned again and happens.
    HEALED.store(true, Ordering::SeqCst);
    eventually(
        Duration::from_secs(120),
        "the child cascaded once the clock is trusted",
        || async { is_terminating(&client, &child).await },
    )
    .await;
    eventually(TREE_WAIT, "the expired parent deleted", || async {
        is_terminating(&client, &parent_name).await
    })
    .await;

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("watch stopped within 30s")
        .unwrap()
        .unwrap();
}
