//! The deletion brake of `reaper --watch` against the real control plane: a
//! bulk relabel that expires more namespaces than the window allows deletes
//! exactly the bound, then holds the rest (metric, Warning Event, log line)
//! while repairs go on; a replica started with `--allow-mass-deletion`
//! deletes the rest. No wall-clock assertions: the window is an hour, and
//! every wait is on an observable state.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod reaper_support;
mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use namespace_provisioner::labels::{EXPIRY_LABEL, OBJECT_NAME};
use namespace_provisioner::params::Expiry;
use namespace_provisioner::reaper::watch::DELETIONS_HELD_REASON;
use reaper_support::{fixture, spawn_reaper};
use support::fixture::is_terminating;
use support::{Fixture, Process, eventually, metric, now, unique};

const BOUND: usize = 2;
const EXPIRING: usize = 5;

fn replica(fx: &Fixture, lease: &str, metrics: &str, extra: &[&str]) -> Process {
    let mut args = vec![
        "--watch",
        "--lease-name",
        lease,
        "--lease-namespace",
        "default",
        "--lease-duration",
        "3s",
        "--metrics-addr",
        metrics,
        "--watch-max-deletions",
        "2",
        "--watch-deletion-window",
        "1h",
    ];
    args.extend_from_slice(extra);
    spawn_reaper(fx, "reaper-brake", &args)
}

async fn await_leader(metrics: &str, process: &mut Process) {
    eventually(Duration::from_secs(30), "the replica to lead", || {
        process.assert_running();
        async { metric(metrics, "namespace_provisioner_reaper_leader").await == Some(1.0) }
    })
    .await;
}

/// Which of `names` are being deleted (or gone).
async fn deleting(client: &kube::Client, names: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for name in names {
        let api = Api::<Namespace>::all(client.clone());
        let gone = api.get_opt(name).await.unwrap().is_none();
        if gone || is_terminating(client, name).await {
            out.push(name.clone());
        }
    }
    out
}

async fn held_events(client: &kube::Client, names: &[String]) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(DELETIONS_HELD_REASON)
                && e.regarding
                    .as_ref()
                    .and_then(|r| r.name.as_ref())
                    .is_some_and(|n| names.contains(n))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_expiry_stops_at_the_bound_and_allow_mass_deletion_releases_it() {
    let fx = fixture(false).await;
    let client = fx.client.clone();
    let far = now() + 3600;
    let mut doomed = Vec::new();
    for _ in 0..EXPIRING {
        doomed.push(fx.create_set("rb", far).await.namespace.name_any());
    }
    let live = fx.create_set("rb-live", far).await.namespace.name_any();
    let lease = unique("rb-lease");
    let metrics = format!("127.0.0.1:{}", support::free_port());
    let mut first = replica(&fx, &lease, &metrics, &[]);
    await_leader(&metrics, &mut first).await;

    // The bad bulk edit: every one of them expired a second ago.
    let expired = Expiry::from_unix(now() - 1).to_string();
    let patch = serde_json::json!({"metadata": {"labels": {EXPIRY_LABEL: expired}}});
    let namespaces = Api::<Namespace>::all(client.clone());
    for name in &doomed {
        namespaces
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    // Every one of them was looked at: the bound's worth deleted, the rest held.
    eventually(Duration::from_secs(60), "the rest to be held", || {
        first.assert_running();
        let metrics = metrics.clone();
        async move {
            metric(&metrics, "namespace_provisioner_reaper_deletions_held_total")
                .await
                .is_some_and(|held| held >= (EXPIRING - BOUND) as f64)
        }
    })
    .await;
    assert_eq!(
        metric(&metrics, "namespace_provisioner_reaper_deletion_brake_engaged").await,
        Some(1.0)
    );
    let deleted = deleting(&client, &doomed).await;
    assert_eq!(
        deleted.len(),
        BOUND,
        "deleted {deleted:?} of {doomed:?}\n{}",
        first.log()
    );
    assert!(first.log().contains("deletion brake engaged"), "{}", first.log());
    let events = held_events(&client, &doomed).await;
    assert_eq!(events.len(), 1, "one Event per engagement: {events:#?}");
    assert_eq!(events[0].type_.as_deref(), Some("Warning"));
    assert!(
        events[0]
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("--allow-mass-deletion"),
        "{:?}",
        events[0].note
    );

    // Repairs go on while deletions are held.
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), &live);
    let old_uid = sas.get(OBJECT_NAME).await.unwrap().uid();
    sas.delete(OBJECT_NAME, &DeleteParams::default()).await.unwrap();
    eventually(
        Duration::from_secs(30),
        "the ServiceAccount to be recreated",
        || async {
            sas.get_opt(OBJECT_NAME)
                .await
                .unwrap()
                .is_some_and(|sa| sa.uid() != old_uid)
        },
    )
    .await;
    // ...and still nothing more deleted.
    assert_eq!(deleting(&client, &doomed).await, deleted);
    assert!(!is_terminating(&client, &live).await);

    // An operator allows it: a replica with --allow-mass-deletion takes over.
    let (status, log) = first.terminate().await;
    assert!(status.success(), "{log}");
    let metrics = format!("127.0.0.1:{}", support::free_port());
    let mut second = replica(&fx, &lease, &metrics, &["--allow-mass-deletion"]);
    await_leader(&metrics, &mut second).await;
    eventually(Duration::from_secs(60), "every expired namespace to go", || {
        second.assert_running();
        let (client, doomed) = (client.clone(), doomed.clone());
        async move { deleting(&client, &doomed).await.len() == EXPIRING }
    })
    .await;
    assert_eq!(
        metric(&metrics, "namespace_provisioner_reaper_deletions_held_total").await,
        Some(0.0)
    );
    assert!(!is_terminating(&client, &live).await);
}
