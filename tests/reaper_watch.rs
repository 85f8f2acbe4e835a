//! The reaper in watch mode against the real control plane: deletion at the
//! expiry instant, repair on change, leader election (a deposed leader stops
//! acting; of two replicas only the leader acts and the other takes over),
//! graceful shutdown releasing the Lease.
//!
//! Each test owns a [`support::Fixture`] (random selector value, dump on
//! failure, cleanup by label) and a Lease of its own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod reaper_support;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::Role;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use namespace_provisioner::labels::OBJECT_NAME;
use namespace_provisioner::reaper::watch::{WatchOptions, watch_with};
use reaper_support::{
    assert_matches_desired, expired_events, fixture, lease_holder, spawn_reaper, watch_config,
};
use support::fixture::{await_terminating, is_terminating};
use support::http::sample;
use support::{Fixture, Process, eventually, metric, now, unique};

/// Watch mode through the library, in this process, with its metrics on a
/// port of its own.
struct Watcher {
    addr: String,
    stop: futures::channel::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Watcher {
    async fn start(fx: &Fixture, lease: &str, identity: &str) -> Watcher {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = futures::channel::oneshot::channel::<()>();
        let task = tokio::spawn(
            namespace_provisioner::reaper::watch::watch(
                fx.client.clone(),
                watch_config(fx, lease, identity),
                listener,
                stopped.map(drop),
            )
            .map(|done| done.map_err(|e| e.to_string())),
        );
        Watcher { addr, stop, task }
    }

    /// Graceful shutdown; it must end without error within 30 s.
    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("watch stopped within 30s")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_deletes_at_expiry_within_a_second_and_repairs_on_change() {
    let fx = fixture(false).await;
    let client = fx.client.clone();
    let lease = unique("rp-lease");
    let watcher = Watcher::start(&fx, &lease, "solo").await;
    let addr = watcher.addr.clone();
    eventually(Duration::from_secs(20), "the watcher to lead", || async {
        lease_holder(&client, &lease).await.as_deref() == Some("solo")
    })
    .await;

    // A 3 s TTL, as the provisioner writes it (whole seconds from now).
    let expiry = now() + 3;
    let short = fx.create_set("rp-watch-ttl", expiry).await.namespace.name_any();
    // Watched from now on, so its deletionTimestamp is seen before it is gone.
    let terminating = tokio::spawn(await_terminating(
        client.clone(),
        short.clone(),
        Duration::from_secs(15),
    ));
    let live = fx.create_set("rp-watch-live", now() + 3600).await;
    let live_name = live.namespace.name_any();

    // Repair on change: delete the live set's ServiceAccount.
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), &live_name);
    eventually(Duration::from_secs(10), "the live set to be seen", || async {
        sas.get_opt(OBJECT_NAME).await.unwrap().is_some()
    })
    .await;
    let old_uid = sas.get(OBJECT_NAME).await.unwrap().uid();
    sas.delete(OBJECT_NAME, &DeleteParams::default()).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the ServiceAccount to be recreated",
        || async {
            sas.get_opt(OBJECT_NAME)
                .await
                .unwrap()
                .is_some_and(|sa| sa.uid() != old_uid)
        },
    )
    .await;
    assert_matches_desired(&client, &live).await;

    // Not before its expiry: the API server's deletionTimestamp (whole
    // seconds, rounded down) is not earlier than the expiry second.
    let deleted = terminating
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{short} was gone before its deletion was seen"));
    let deleted_at = deleted
        .metadata
        .deletion_timestamp
        .as_ref()
        .unwrap()
        .0
        .as_second();
    assert!(
        deleted_at >= expiry,
        "deleted at {deleted_at}, before its expiry {expiry}"
    );
    assert!(!is_terminating(&client, &live_name).await);

    // Counted once the Event is written, just after the deletion.
    eventually(Duration::from_secs(5), "the deletion to be counted", || async {
        metric(&addr, "namespace_provisioner_reaper_deletions_total").await == Some(1.0)
    })
    .await;
    let metrics = support::http(&addr, "GET", "/metrics", None, None).await;
    assert_eq!(metrics.status, 200);
    let metric = |name: &str| -> f64 {
        sample(&metrics.body, name).unwrap_or_else(|| panic!("{name} missing:\n{}", metrics.body))
    };
    assert_eq!(metric("namespace_provisioner_reaper_leader"), 1.0);
    assert_eq!(metric("namespace_provisioner_reaper_deletions_total"), 1.0);
    // Within a second of its expiry, by the reaper's own clock: its
    // expiry-to-deletion histogram (not the test's wall clock, which a loaded
    // machine delays).
    let delay = metric("namespace_provisioner_reaper_delete_delay_seconds_sum");
    eprintln!("watch mode: deleted {delay:.3}s after the expiry instant");
    assert_eq!(
        metric("namespace_provisioner_reaper_delete_delay_seconds_count"),
        1.0
    );
    assert_eq!(
        metric(r#"namespace_provisioner_reaper_delete_delay_seconds_bucket{le="1.0"}"#),
        1.0,
        "deleted {delay}s after its expiry"
    );
    // At least the ServiceAccount; the controller may also have completed
    // the live set while the test was still creating it (same apply, no harm).
    assert!(metric("namespace_provisioner_reaper_repairs_total") >= 1.0);
    assert_eq!(
        support::http(&addr, "GET", "/healthz", None, None).await.status,
        200
    );

    // Graceful shutdown releases the Lease.
    watcher.stop().await;
    assert_eq!(lease_holder(&client, &lease).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_stops_acting_when_its_lease_is_taken() {
    let fx = fixture(false).await;
    let client = fx.client.clone();
    let lease = unique("rp-lease");
    let watcher = Watcher::start(&fx, &lease, "deposed").await;
    let addr = watcher.addr.clone();
    let leader_gauge = || metric(&addr, "namespace_provisioner_reaper_leader");
    eventually(Duration::from_secs(20), "the watcher to lead", || async {
        leader_gauge().await == Some(1.0)
    })
    .await;

    // Another live replica takes the Lease and keeps renewing it (the same
    // 3 s duration, every second).
    let usurping = Arc::new(AtomicBool::new(true));
    let usurper = {
        let leases = Api::<Lease>::namespaced(client.clone(), "default");
        let (lease, usurping) = (lease.clone(), usurping.clone());
        tokio::spawn(async move {
            while usurping.load(Ordering::SeqCst) {
                let at = MicroTime(jiff::Timestamp::now());
                let spec = serde_json::json!({"spec": {
                    "holderIdentity": "usurper",
                    "leaseDurationSeconds": 3,
                    "acquireTime": at,
                    "renewTime": at,
                }});
                leases
                    .patch(&lease, &PatchParams::default(), &Patch::Merge(spec))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    // It notices at its next renewal (the Lease lasts 3 s) and stops acting.
    eventually(Duration::from_secs(10), "the watcher to step down", || async {
        leader_gauge().await == Some(0.0)
    })
    .await;
    assert_eq!(lease_holder(&client, &lease).await.as_deref(), Some("usurper"));
    let expired = fx.create_set("rp-deposed", now() - 1).await.namespace.name_any();
    // Longer than a Lease duration: it does not take a live Lease back.
    let acted = tokio::time::timeout(
        Duration::from_secs(6),
        await_terminating(client.clone(), expired.clone(), Duration::from_secs(60)),
    )
    .await;
    assert!(acted.is_err(), "a replica without the Lease deleted {expired}");
    assert!(!is_terminating(&client, &expired).await);
    assert_eq!(leader_gauge().await, Some(0.0));

    watcher.stop().await;
    // Not ours, so not released.
    assert_eq!(lease_holder(&client, &lease).await.as_deref(), Some("usurper"));
    usurping.store(false, Ordering::SeqCst);
    usurper.await.unwrap();
}

/// One `reaper --watch` replica (the real binary) with its metrics address.
struct Replica {
    identity: String,
    process: Process,
    metrics: String,
}

impl Replica {
    fn spawn(fx: &Fixture, lease: &str, identity: &str) -> Self {
        let metrics = format!("127.0.0.1:{}", support::free_port());
        let process = spawn_reaper(
            fx,
            identity,
            &[
                "--watch",
                "--lease-name",
                lease,
                "--lease-namespace",
                "default",
                "--lease-identity",
                identity,
                "--lease-duration",
                "3s",
                "--metrics-addr",
                &metrics,
            ],
        );
        Self {
            identity: identity.to_owned(),
            process,
            metrics,
        }
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        metric(&self.metrics, name).await
    }
}

/// A set expiring in 2 s (so it is complete before a replica may act on
/// it) is deleted, and every Expired Event about it comes from `identity`:
/// only the leader acts.
async fn reaped_by_only(fx: &Fixture, prefix: &str, identity: &str) {
    let client = &fx.client;
    let name = fx.create_set(prefix, now() + 2).await.namespace.name_any();
    await_terminating(client.clone(), name.clone(), Duration::from_secs(20)).await;
    eventually(Duration::from_secs(10), "the Expired event", || async {
        !expired_events(client, &name).await.is_empty()
    })
    .await;
    let events = expired_events(client, &name).await;
    assert!(
        events
            .iter()
            .all(|e| e.reporting_instance.as_deref() == Some(identity)),
        "only the leader {identity} may act: {events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_watch_replicas_only_the_leader_acts_and_the_other_takes_over() {
    let fx = fixture(false).await;
    let client = fx.client.clone();
    let lease = unique("rp-lease");
    let mut replicas = vec![
        Replica::spawn(&fx, &lease, "replica-a"),
        Replica::spawn(&fx, &lease, "replica-b"),
    ];
    eventually(
        Duration::from_secs(30),
        "a leader and a ready follower",
        || async {
            let holder = lease_holder(&client, &lease).await;
            let mut ready = true;
            for r in &replicas {
                ready &= r.metric("namespace_provisioner_reaper_leader").await.is_some();
            }
            holder.is_some() && ready
        },
    )
    .await;
    let holder = lease_holder(&client, &lease).await.unwrap();
    let leader = replicas.iter().position(|r| r.identity == holder).unwrap();
    let follower = 1 - leader;

    reaped_by_only(&fx, "rp-ha-1", &holder).await;
    let l = &replicas[leader];
    let f = &replicas[follower];
    assert_eq!(l.metric("namespace_provisioner_reaper_leader").await, Some(1.0));
    eventually(
        Duration::from_secs(5),
        "the leader to count its deletion",
        || async { l.metric("namespace_provisioner_reaper_deletions_total").await == Some(1.0) },
    )
    .await;
    assert_eq!(f.metric("namespace_provisioner_reaper_leader").await, Some(0.0));
    assert_eq!(
        f.metric("namespace_provisioner_reaper_deletions_total").await,
        Some(0.0)
    );
    assert_eq!(
        f.metric("namespace_provisioner_reaper_reconciles_total").await,
        Some(0.0)
    );

    // The leader dies without releasing the Lease: the other takes over
    // once the Lease (3 s) runs out.
    let killed = Instant::now();
    replicas[leader].process.kill();
    let new_holder = replicas[follower].identity.clone();
    eventually(
        Duration::from_secs(20),
        "the follower to take the Lease",
        || async { lease_holder(&client, &lease).await.as_deref() == Some(new_holder.as_str()) },
    )
    .await;
    eprintln!("takeover after {:?}", killed.elapsed());
    reaped_by_only(&fx, "rp-ha-2", &new_holder).await;

    // SIGTERM: graceful stop, the Lease is released.
    let survivor = replicas.remove(follower).process;
    let (status, log) = survivor.terminate().await;
    assert!(status.success(), "{status}:\n{log}");
    assert_eq!(lease_holder(&client, &lease).await, None, "{log}");
    assert!(log.contains("released the Lease"));
}

/// Issue 15: watch mode follows `--role-rules-file`. A long-running watch that
/// kept the rules it started with would repair every Role back to them after
/// an administrator replaced the file (and the provisioner, which reloads it,
/// made new sets with the new rules): here a drifted Role is repaired to the
/// file's new rules, not its old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_repairs_roles_to_the_role_rules_file_as_it_is_now() {
    let fx = fixture(true).await;
    let client = fx.client.clone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.yaml");
    let write_rules = |rules: &[k8s_openapi::api::rbac::v1::PolicyRule]| {
        // As the kubelet updates a mounted ConfigMap: a new file renamed into place.
        let next = dir.path().join("rules.yaml.next");
        std::fs::write(&next, serde_json::to_string(rules).unwrap()).unwrap();
        std::fs::rename(&next, &path).unwrap();
    };
    write_rules(&reaper_support::role_rules());
    let set = fx.create_set("rp-rules", now() + 3600).await;
    let name = set.namespace.name_any();

    let lease = unique("rp-rules-lease");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = futures::channel::oneshot::channel::<()>();
    let options = WatchOptions {
        role_rules: Some(namespace_provisioner::cli::role_rules_watched(&path)),
        ..WatchOptions::default()
    };
    let task = tokio::spawn(watch_with(
        client.clone(),
        watch_config(&fx, &lease, "rules"),
        options,
        listener,
        stopped.map(drop),
    ));
    eventually(Duration::from_secs(20), "the watcher to lead", || async {
        lease_holder(&client, &lease).await.as_deref() == Some("rules")
    })
    .await;

    let replaced = vec![support::rule(&[""], &["secrets"], &["get"])];
    write_rules(&replaced);
    let loaded =
        "namespace_provisioner_reaper_config_reload_total{file=\"role-rules-file\",outcome=\"success\"}";
    eventually(Duration::from_secs(60), "the new rules loaded", || async {
        metric(&addr, loaded).await.unwrap_or(0.0) >= 2.0
    })
    .await;

    // Drift: someone widens the Role. The repair writes the file's rules as they are now.
    let roles = Api::<Role>::namespaced(client.clone(), &name);
    let drifted =
        serde_json::json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]});
    roles
        .patch(OBJECT_NAME, &PatchParams::default(), &Patch::Merge(&drifted))
        .await
        .unwrap();
    let rules_now = || async {
        let rules = roles.get(OBJECT_NAME).await.unwrap().rules.unwrap_or_default();
        (rules == replaced).then_some(()).ok_or(format!("{rules:?}"))
    };
    eventually(
        Duration::from_secs(30),
        "the Role repaired to the new rules",
        rules_now,
    )
    .await;

    // A file that is not a list of rules: the last good rules stay, and it is counted.
    std::fs::write(dir.path().join("rules.yaml.next"), "not: [rules").unwrap();
    std::fs::rename(dir.path().join("rules.yaml.next"), &path).unwrap();
    let failed =
        "namespace_provisioner_reaper_config_reload_total{file=\"role-rules-file\",outcome=\"error\"}";
    eventually(Duration::from_secs(60), "the bad file refused", || async {
        metric(&addr, failed).await.unwrap_or(0.0) >= 1.0
    })
    .await;
    roles
        .patch(OBJECT_NAME, &PatchParams::default(), &Patch::Merge(&drifted))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the Role repaired to the last good rules",
        rules_now,
    )
    .await;

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

/// Issue 15: the release at shutdown frees only a Lease this replica still holds,
/// as it read it. A release that meets a Lease changed since its read (a successor
/// took it over) leaves it alone, where kube-lease-manager's unconditional PATCH
/// would have cleared the successor's hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_frees_only_a_lease_still_held_as_it_was_read() {
    let fx = fixture(false).await;
    let client = fx.client.clone();
    let leases = Api::<Lease>::namespaced(client.clone(), "default");
    let name = unique("rp-release");
    let hold = |holder: &str| {
        let at = MicroTime(jiff::Timestamp::now());
        serde_json::json!({"metadata": {"name": name}, "spec": {
            "holderIdentity": holder, "leaseDurationSeconds": 15, "acquireTime": at, "renewTime": at,
        }})
    };
    let created = leases
        .create(&Default::default(), &serde_json::from_value(hold("me")).unwrap())
        .await
        .unwrap();
    let seen = created.resource_version().unwrap();
    // A successor takes it over between this replica's read and its write.
    leases
        .patch(&name, &PatchParams::default(), &Patch::Merge(hold("successor")))
        .await
        .unwrap();
    let freed = namespace_provisioner::k8s::free_lease_unchanged(&client, &name, "default", &seen)
        .await
        .unwrap();
    assert!(!freed, "a stale release went through");
    assert_eq!(lease_holder(&client, &name).await.as_deref(), Some("successor"));
    let release = || namespace_provisioner::k8s::release_lease(&client, &name, "default", "me");
    assert_eq!(
        release().await.unwrap(),
        namespace_provisioner::k8s::Released::NotHeld(Some("successor".into()))
    );
    assert_eq!(lease_holder(&client, &name).await.as_deref(), Some("successor"));

    leases
        .patch(&name, &PatchParams::default(), &Patch::Merge(hold("me")))
        .await
        .unwrap();
    assert_eq!(
        release().await.unwrap(),
        namespace_provisioner::k8s::Released::Freed
    );
    assert_eq!(lease_holder(&client, &name).await, None);
    leases.delete(&name, &DeleteParams::default()).await.unwrap();
}
