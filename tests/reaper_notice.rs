//! Notice before expiry (issue 14) against the real control plane: the
//! `ExpiringSoon` Event is written once per expiry when a namespace enters
//! the lead window (`--once` and `--watch`), never for a namespace outside it
//! or whose whole life is shorter than the lead, not again by a second run,
//! and again after an extend; watch mode exports live namespaces per tenant
//! and their time left on /metrics.
//!
//! Each test owns a [`support::Fixture`] (random selector value, dump on
//! failure, cleanup by label).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod reaper_support;
mod support;

use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use namespace_provisioner::k8s;
use namespace_provisioner::reaper::notice::{NoticeMetrics, NoticeReport, Notifier};
use namespace_provisioner::reaper::observation::ObservedNamespace;
use namespace_provisioner::rules::notice::{NOTIFIED_EXPIRY_ANNOTATION, NoticeLead};
use namespace_provisioner::rules::params::Expiry;
use reaper_support::{fixture, lease_holder, run_reaper, watch_config};
use support::fixture::TENANT;
use support::{Fixture, eventually, now, unique};

/// The ExpiringSoon Events written in namespace `name`.
async fn notices(client: &Client, name: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), name)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ExpiringSoon"))
        .collect()
}

async fn notified(client: &Client, name: &str) -> Option<String> {
    Api::<Namespace>::all(client.clone())
        .get(name)
        .await
        .unwrap()
        .annotations()
        .get(NOTIFIED_EXPIRY_ANNOTATION)
        .cloned()
}

/// A notifier as a fresh `--once` run builds it (its own Event recorder).
fn notifier(fx: &Fixture, lead_secs: u64) -> Notifier {
    Notifier::new(
        fx.client.clone(),
        "test",
        NoticeLead::new(Duration::from_secs(lead_secs)).unwrap(),
        NoticeMetrics::default(),
    )
}

async fn pass(fx: &Fixture, lead_secs: u64, at: i64) -> NoticeReport {
    notifier(fx, lead_secs)
        .sweep(&fx.selector, 500, at, false)
        .await
        .unwrap()
}

fn sent(n: usize) -> NoticeReport {
    NoticeReport {
        sent: n,
        ..NoticeReport::default()
    }
}

/// The `--once` pass with the time as an input: 10-minute lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_notices_inside_the_window_once_and_again_after_an_extend() {
    let fx = fixture(false).await;
    let client = fx.client.clone();
    let t0 = now();
    let inside = fx.create_set("rn-in", t0 + 1_200).await.namespace.name_any();
    let outside = fx.create_set("rn-out", t0 + 3_600).await.namespace.name_any();
    // A whole life of 500 s, shorter than the 600 s lead.
    let short = fx.create_set("rn-short", t0 + 500).await.namespace.name_any();

    // Nobody is in the window yet; the short one would be, but never gets one.
    assert_eq!(pass(&fx, 600, t0 + 100).await, sent(0), "{}", fx.dump());
    // 500 s before `inside` expires.
    let started = std::time::Instant::now();
    assert_eq!(pass(&fx, 600, t0 + 700).await, sent(1), "{}", fx.dump());
    eprintln!(
        "measured: a --once notice pass (LIST + claim + Event) took {:?}",
        started.elapsed()
    );
    let events = notices(&client, &inside).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event.type_.as_deref(), Some("Normal"));
    assert_eq!(
        event.reporting_controller.as_deref(),
        Some("namespace-provisioner-reaper")
    );
    let regarding = event.regarding.as_ref().unwrap();
    assert_eq!(
        (regarding.kind.as_deref(), regarding.name.as_deref()),
        (Some("Namespace"), Some(inside.as_str()))
    );
    let note = event.note.as_deref().unwrap();
    assert!(note.contains(&Expiry::from_unix(t0 + 1_200).rfc3339()), "{note}");
    assert!(note.contains("in 8m 20s"), "{note}");
    assert_eq!(notified(&client, &inside).await, Some((t0 + 1_200).to_string()));
    assert!(notices(&client, &outside).await.is_empty());
    assert!(notices(&client, &short).await.is_empty());
    assert_eq!(notified(&client, &short).await, None);

    // The next run (a fresh recorder, as a new CronJob pod) sends nothing.
    assert_eq!(pass(&fx, 600, t0 + 710).await, sent(0));
    assert_eq!(notices(&client, &inside).await.len(), 1);

    // Extend as the provisioner does (server-side apply of the Namespace with
    // the new expiry): out of the window again, then owed once more.
    k8s::apply_namespace(&client, &fx.desired(&inside, t0 + 2_400).namespace)
        .await
        .unwrap();
    assert_eq!(pass(&fx, 600, t0 + 710).await, sent(0));
    assert_eq!(notices(&client, &inside).await.len(), 1);
    assert_eq!(pass(&fx, 600, t0 + 1_900).await, sent(1), "{}", fx.dump());
    assert_eq!(pass(&fx, 600, t0 + 1_905).await, sent(0));
    let events = notices(&client, &inside).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().any(|e| {
        e.note
            .as_deref()
            .unwrap()
            .contains(&Expiry::from_unix(t0 + 2_400).rfc3339())
    }));
    assert_eq!(notified(&client, &inside).await, Some((t0 + 2_400).to_string()));

    // A dry run counts, writes nothing.
    let dry = notifier(&fx, 3_000)
        .sweep(&fx.selector, 500, t0 + 1_000, true)
        .await
        .unwrap();
    assert_eq!(dry.deferred, 1, "{dry:?}");
    assert!(notices(&client, &outside).await.is_empty());
    fx.cleanup();
}

/// The real binary, twice, on the wall clock: 30 s lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_binary_notices_once_and_a_second_run_is_silent() {
    let fx = fixture(false).await;
    let client = fx.client.clone();
    let t0 = now();
    let inside = fx.create_set("rb-in", t0 + 45).await.namespace.name_any();
    let outside = fx.create_set("rb-out", t0 + 3_600).await.namespace.name_any();
    let short = fx.create_set("rb-short", t0 + 25).await.namespace.name_any();
    // `inside` enters its window 15 s after t0 (30 s before it expires).
    eventually(Duration::from_secs(30), "the window to open", || async {
        now() > t0 + 15
    })
    .await;

    for run in 0..2 {
        let out = run_reaper(&fx, &["--once", "--notify-before", "30s"]);
        assert!(
            out.status.success(),
            "run {run}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            fx.dump()
        );
        assert_eq!(notices(&client, &inside).await.len(), 1, "run {run}");
    }
    assert_eq!(notified(&client, &inside).await, Some((t0 + 45).to_string()));
    assert!(notices(&client, &outside).await.is_empty());
    assert!(notices(&client, &short).await.is_empty());

    // Bad leads are refused with a message naming the flag.
    for bad in ["0s", "1500ms", "31days"] {
        let out = run_reaper(&fx, &["--once", "--notify-before", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--notify-before"), "{bad}: {stderr}");
    }
    fx.cleanup();
}

/// Watch mode: the Event when the window opens (a timer, no change to the
/// namespace), and the expiry metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_notices_when_the_window_opens_and_exports_expiries() {
    let fx = fixture(false).await;
    let client = fx.client.clone();
    let lease = unique("rn-lease");
    let t0 = now();
    let inside = fx.create_set("rw-in", t0 + 40).await.namespace.name_any();
    let outside = fx.create_set("rw-out", t0 + 3_600).await.namespace.name_any();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = futures::channel::oneshot::channel::<()>();
    let task = tokio::spawn(namespace_provisioner::reaper::watch::watch_notifying(
        client.clone(),
        watch_config(&fx, &lease, "notifier"),
        None,
        Some(NoticeLead::new(Duration::from_secs(20)).unwrap()),
        listener,
        stopped.map(drop),
    ));
    eventually(Duration::from_secs(20), "the watcher to lead", || async {
        lease_holder(&client, &lease).await.as_deref() == Some("notifier")
    })
    .await;

    // Both live namespaces counted for the tenant, with their time left.
    let metrics = || async {
        support::http::http(&addr, "GET", "/metrics", None, None)
            .await
            .body
    };
    eventually(Duration::from_secs(20), "expiry metrics", || async {
        let text = metrics().await;
        text.contains(&format!(
            "namespace_provisioner_reaper_live_namespaces{{tenant=\"{TENANT}\"}} 2"
        )) && text.contains("namespace_provisioner_reaper_time_left_seconds_count 2")
            && text.contains("namespace_provisioner_reaper_time_left_seconds_bucket{le=\"60.0\"} 1")
    })
    .await;

    // The window opens 20 s after t0; the namespace expires 20 s later.
    let event = eventually(Duration::from_secs(35), "the ExpiringSoon Event", || async {
        notices(&client, &inside).await.into_iter().next()
    })
    .await;
    let emitted = event.event_time.as_ref().unwrap().0.as_second();
    eprintln!(
        "measured: ExpiringSoon written {} ms after the window opened",
        event.event_time.as_ref().unwrap().0.as_millisecond() - (t0 + 20) * 1000
    );
    assert!(
        emitted >= t0 + 20,
        "sent before the window: {emitted} < {}",
        t0 + 20
    );
    assert_eq!(notified(&client, &inside).await, Some((t0 + 40).to_string()));
    assert!(notices(&client, &outside).await.is_empty());
    let text = metrics().await;
    assert!(
        text.contains("namespace_provisioner_reaper_notices_sent_total 1"),
        "{text}"
    );
    // Once it has expired and gone, only the other one is live.
    eventually(
        Duration::from_secs(60),
        "the expired one to leave the gauge",
        || async {
            metrics().await.contains(&format!(
                "namespace_provisioner_reaper_live_namespaces{{tenant=\"{TENANT}\"}} 1"
            ))
        },
    )
    .await;
    assert_eq!(notices(&client, &outside).await.len(), 0);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("watch stopped within 30s")
        .unwrap()
        .unwrap();
    fx.cleanup();
}

/// Two replicas (or two overlapping runs) that read the same version of a
/// namespace: the resourceVersion-guarded claim lets exactly one of them send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_notifiers_send_exactly_one_notice() {
    let fx = fixture(false).await;
    let client = fx.client.clone();
    let t0 = now();
    let name = fx.create_set("rr-race", t0 + 1_200).await.namespace.name_any();
    let seen = ObservedNamespace::from(Api::<Namespace>::all(client.clone()).get(&name).await.unwrap());
    let (a, b) = (notifier(&fx, 600), notifier(&fx, 600));
    let (ra, rb) = tokio::join!(a.consider(&seen, t0 + 700), b.consider(&seen, t0 + 700));
    let sent = [ra.unwrap(), rb.unwrap()].iter().filter(|c| c.sent).count();
    assert_eq!(sent, 1, "{}", fx.dump());
    assert_eq!(notices(&client, &name).await.len(), 1);
    fx.cleanup();
}
