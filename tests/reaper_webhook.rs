//! Notice webhooks (issue 14) against the real control plane and the real
//! reaper binary: a receiver in the test (axum) checks every request's
//! HMAC-SHA256 signature with its own code, counts the CloudEvents, and
//! answers as scripted: `expiring` once at the lead time, `expired` and
//! `deleted` when a namespace is reaped, retried on 500 until delivered,
//! given up at the bound of attempts on a receiver that always fails (the
//! deletion having happened before the first attempt), and a bad
//! configuration file stopping the reaper with exit status 2.
//!
//! Each test owns a [`support::Fixture`] (random selector value, dump on
//! failure, cleanup by label).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod reaper_support;
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use kube::{Client, ResourceExt};
use namespace_provisioner::rules::hierarchy::keys::{PARENT_LABEL, PARENT_UID_ANNOTATION};
use reaper_support::{fixture, lease_holder, run_reaper, stdout_json, watch_config};
use serde_json::Value;
use sha2::Sha256;
use support::fixture::{TENANT, is_terminating};
use support::{Fixture, eventually, now};

const SECRET: &str = "webhook-secret-4f1c9a";

/// How the receiver answers.
#[derive(Clone, Copy)]
enum Script {
    /// 500 to the first `n` attempts of each event id, then 200.
    FailFirst(usize),
    /// Always this status.
    Always(u16),
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    event: Value,
    signature_ok: bool,
    content_type: String,
    /// Whether the event's namespace was terminating (or gone) when it arrived.
    namespace_terminating: bool,
    /// Arrival, Unix milliseconds.
    at_ms: i64,
}

#[derive(Clone)]
struct Receiver {
    script: Script,
    client: Client,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Attempts per event id.
    fn attempts(&self) -> BTreeMap<String, usize> {
        let mut attempts = BTreeMap::new();
        for r in self.all() {
            *attempts
                .entry(r.event["id"].as_str().unwrap().to_owned())
                .or_insert(0) += 1;
        }
        attempts
    }

    /// The events answered 200, in order.
    fn delivered(&self) -> Vec<Value> {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut out = Vec::new();
        for r in self.all() {
            let id = r.event["id"].as_str().unwrap().to_owned();
            let n = seen.entry(id).or_insert(0);
            *n += 1;
            if status_for(self.script, *n) == 200 {
                out.push(r.event);
            }
        }
        out
    }

    fn of_type(&self, kind: &str, namespace: &str) -> Vec<Value> {
        self.delivered()
            .into_iter()
            .filter(|e| {
                e["type"] == format!("io.observatorium.namespace.{kind}") && e["subject"] == namespace
            })
            .collect()
    }
}

fn status_for(script: Script, attempt: usize) -> u16 {
    match script {
        Script::FailFirst(n) if attempt <= n => 500,
        Script::FailFirst(_) => 200,
        Script::Always(status) => status,
    }
}

/// What a receiver does, written without the crate's code: HMAC-SHA256 of
/// `<timestamp>.<body>` with the shared secret, compared in constant time
/// (`verify_slice`), and a timestamp within 5 minutes.
fn signature_ok(headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let timestamp = header("x-namespace-provisioner-timestamp");
    let Ok(sent) = timestamp.parse::<i64>() else {
        return false;
    };
    if (now() - sent).abs() > 300 {
        return false;
    }
    let Some(hex) = header("x-namespace-provisioner-signature").strip_prefix("sha256=") else {
        return false;
    };
    let Ok(given) = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

async fn hook(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at_ms = jiff::Timestamp::now().as_millisecond();
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let namespace = event["subject"].as_str().unwrap_or_default().to_owned();
    let namespace_terminating = is_terminating(&receiver.client, &namespace).await;
    let received = Received {
        signature_ok: signature_ok(&headers, &body),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        namespace_terminating,
        at_ms,
        event,
    };
    let id = received.event["id"].as_str().unwrap_or_default().to_owned();
    let attempt = {
        let mut got = receiver.got.lock().unwrap();
        got.push(received);
        got.iter().filter(|r| r.event["id"] == id.as_str()).count()
    };
    StatusCode::from_u16(status_for(receiver.script, attempt)).unwrap()
}

/// A receiver on a free loopback port: it and its URL.
async fn receiver(script: Script, client: &Client) -> (Receiver, String) {
    let receiver = Receiver {
        script,
        client: client.clone(),
        got: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, app).into_future());
    (receiver, url)
}

/// The administrator's file for tenant [`TENANT`] -> `url`, fast retries, 3 attempts.
fn config(dir: &Path, url: &str) -> PathBuf {
    std::fs::write(dir.join("secret"), format!("{SECRET}\n")).unwrap();
    let path = dir.join("webhooks.yaml");
    std::fs::write(
        &path,
        format!(
            "allowInsecureHttp: true\n\
             tenants:\n  {TENANT}:\n    url: {url}\n    secretFile: secret\n\
             delivery:\n  attempts: 3\n  initialBackoff: 200ms\n  maxBackoff: 1s\n  timeout: 10s\n  drainTimeout: 60s\n"
        ),
    )
    .unwrap();
    path
}

/// The binary once, off the runtime's workers (the receiver runs on them).
fn reap(fx: &Fixture, args: &[&str]) -> std::process::Output {
    tokio::task::block_in_place(|| run_reaper(fx, args))
}

fn assert_ran(out: &std::process::Output, fx: &Fixture) {
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        fx.dump()
    );
}

/// `expiring` once at the lead time, `expired` and `deleted` on reap, all
/// signed CloudEvents; a second run sends nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_sends_signed_expiring_expired_and_deleted_once() {
    let fx = fixture(false).await;
    let client = fx.client.clone();
    let (receiver, url) = receiver(Script::Always(200), &client).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &url);
    let config = config.to_str().unwrap();
    let t0 = now();
    let inside = fx.create_set("wh-in", t0 + 45).await.namespace.name_any();
    let outside = fx.create_set("wh-out", t0 + 3_600).await.namespace.name_any();
    let expired = fx.create_set("wh-exp", t0 - 5).await.namespace.name_any();
    // A child (the parent label is all the notices read): its notices name the parent.
    kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .patch(
            &expired,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({
                "metadata": {"labels": {"controller.observatorium.io/parent": "wh-team"}}
            })),
        )
        .await
        .unwrap();
    // `inside` enters its 30 s window 15 s after t0.
    eventually(Duration::from_secs(30), "the window to open", || async {
        now() > t0 + 15
    })
    .await;

    let args = [
        "--once",
        "--notify-before",
        "30s",
        "--notify-webhook-config",
        config,
        "--output",
        "json",
    ];
    let out = reap(&fx, &args);
    assert_ran(&out, &fx);
    let report = stdout_json(&out);
    // Delivered before the run ended (the drain), each once.
    let expiring = receiver.of_type("expiring", &inside);
    let gone = receiver.of_type("expired", &expired);
    let deleted = receiver.of_type("deleted", &expired);
    assert_eq!(
        (expiring.len(), gone.len(), deleted.len()),
        (1, 1, 1),
        "{:#?}\n{report:#}",
        receiver.all()
    );
    assert_eq!(receiver.all().len(), 3, "{:#?}", receiver.all());
    assert!(receiver.of_type("expiring", &outside).is_empty());
    for r in receiver.all() {
        assert!(r.signature_ok, "bad signature: {r:?}");
        assert_eq!(r.content_type, "application/cloudevents+json");
    }
    let event = &expiring[0];
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["source"], "/namespace-provisioner/reaper");
    assert_eq!(event["data"]["namespace"], inside.as_str());
    assert_eq!(event["data"]["tenant"], TENANT);
    assert_eq!(
        event["data"]["expiry"],
        namespace_provisioner::params::Expiry::from_unix(t0 + 45).rfc3339()
    );
    assert_eq!(event["data"]["parent"], Value::Null);
    assert_ne!(gone[0]["id"], deleted[0]["id"]);
    assert_eq!(gone[0]["data"]["parent"], "wh-team", "{:#?}", gone[0]);
    assert_eq!(deleted[0]["data"]["parent"], "wh-team");
    assert!(is_terminating(&client, &expired).await);
    // The report says the same, and shows the live namespaces.
    assert_eq!(report["notices"]["webhook"]["sent"], 3, "{report:#}");
    assert_eq!(report["notices"]["webhook"]["failed"], 0, "{report:#}");
    assert_eq!(report["notices"]["expiringSoon"]["sent"], 1, "{report:#}");
    assert_eq!(report["expiry"]["liveNamespaces"][TENANT], 2, "{report:#}");
    assert_eq!(report["expiry"]["timeLeftSeconds"][0]["le"], 60, "{report:#}");
    assert_eq!(report["expiry"]["timeLeftSeconds"][0]["count"], 1, "{report:#}");

    // The next run (a new CronJob pod): the notice is claimed, the expired one is terminating.
    let out = reap(&fx, &args);
    assert_ran(&out, &fx);
    assert_eq!(receiver.all().len(), 3, "{:#?}", receiver.all());
    fx.cleanup();
}

/// A child its parent's expiry took along (a cascade) gets its own `deleted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cascaded_child_gets_deleted_too() {
    let fx = fixture(false).await;
    let client = fx.client.clone();
    let (receiver, url) = receiver(Script::Always(200), &client).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &url);
    let parent = fx.create_set("wh-p", now() - 5).await.namespace.name_any();
    let parent_uid = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .get(&parent)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let mut child = fx.desired(&support::unique("wh-c"), now() + 3_600);
    let meta = &mut child.namespace.metadata;
    meta.labels
        .get_or_insert_default()
        .insert(PARENT_LABEL.into(), parent.clone());
    meta.annotations
        .get_or_insert_default()
        .insert(PARENT_UID_ANNOTATION.into(), parent_uid);
    support::fixture::make_set(&client, &child).await;
    let child = child.namespace.name_any();

    let out = reap(
        &fx,
        &["--once", "--notify-webhook-config", config.to_str().unwrap()],
    );
    assert_ran(&out, &fx);
    assert!(is_terminating(&client, &child).await, "{}", fx.dump());
    let deleted = receiver.of_type("deleted", &child);
    assert_eq!(deleted.len(), 1, "{:#?}", receiver.all());
    assert!(
        receiver.of_type("expired", &child).is_empty(),
        "not expired itself"
    );
    assert_eq!(deleted[0]["data"]["parent"], parent.as_str());
    assert_eq!(deleted[0]["data"]["tenant"], TENANT);
    assert!(deleted[0]["data"]["expiry"].is_string());
    assert_eq!(receiver.of_type("deleted", &parent).len(), 1);
    fx.cleanup();
}

/// 500 twice then 200: delivered at the third attempt. Always 500: exactly
/// the bound of attempts, the namespace deleted before the first one, and
/// the run still succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_until_delivered_and_gives_up_at_the_bound() {
    let fx = fixture(false).await;
    let client = fx.client.clone();
    let dir = tempfile::tempdir().unwrap();

    let (flaky, url) = receiver(Script::FailFirst(2), &client).await;
    let config_path = config(dir.path(), &url);
    let first = fx.create_set("wh-flaky", now() - 5).await.namespace.name_any();
    let out = reap(
        &fx,
        &[
            "--once",
            "--notify-webhook-config",
            config_path.to_str().unwrap(),
            "--output",
            "json",
        ],
    );
    assert_ran(&out, &fx);
    assert_eq!(flaky.of_type("expired", &first).len(), 1, "{:#?}", flaky.all());
    assert_eq!(flaky.of_type("deleted", &first).len(), 1, "{:#?}", flaky.all());
    assert!(
        flaky.attempts().values().all(|n| *n == 3),
        "{:?}",
        flaky.attempts()
    );
    assert_eq!(stdout_json(&out)["notices"]["webhook"]["sent"], 2);

    let (down, url) = receiver(Script::Always(500), &client).await;
    let config_path = config(dir.path(), &url);
    let second = fx.create_set("wh-down", now() - 5).await.namespace.name_any();
    let started = std::time::Instant::now();
    let out = reap(
        &fx,
        &[
            "--once",
            "--notify-webhook-config",
            config_path.to_str().unwrap(),
            "--output",
            "json",
        ],
    );
    eprintln!(
        "measured: --once with a receiver always answering 500 (3 attempts, 200ms+400ms backoff) took {:?}",
        started.elapsed()
    );
    assert_ran(&out, &fx);
    let report = stdout_json(&out);
    assert_eq!(report["summary"]["expiredDeleted"], 1, "{report:#}");
    assert_eq!(report["notices"]["webhook"]["failed"], 2, "{report:#}");
    assert_eq!(report["notices"]["webhook"]["sent"], 0, "{report:#}");
    let attempts = down.attempts();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(attempts.values().all(|n| *n == 3), "{attempts:?}");
    // The deletion did not wait for the receiver: done before its first request.
    assert!(
        down.all()
            .iter()
            .all(|r| r.namespace_terminating && r.signature_ok),
        "{:#?}",
        down.all()
    );
    assert!(is_terminating(&client, &second).await);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("webhook notice given up"), "{log}");
    assert!(!log.contains(SECRET), "the secret was logged");

    // A 4xx is the receiver's refusal: one attempt, no retry.
    let (refusing, url) = receiver(Script::Always(400), &client).await;
    let config_path = config(dir.path(), &url);
    fx.create_set("wh-refused", now() - 5).await;
    let out = reap(
        &fx,
        &["--once", "--notify-webhook-config", config_path.to_str().unwrap()],
    );
    assert_ran(&out, &fx);
    let attempts = refusing.attempts();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(attempts.values().all(|n| *n == 1), "{attempts:?}");
    fx.cleanup();
}

/// A bad file stops the reaper before it touches anything: exit 2 and a
/// message naming what to fix (and never the secret or a password).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_webhook_configs_stop_the_reaper_with_exit_2() {
    let fx = fixture(false).await;
    let expired = fx.create_set("wh-bad", now() - 5).await.namespace.name_any();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), format!("{SECRET}\n")).unwrap();
    std::fs::write(dir.path().join("empty"), "\n").unwrap();
    let endpoint = |url: &str, secret: &str| {
        format!("tenants:\n  {TENANT}:\n    url: {url}\n    secretFile: {secret}\n")
    };
    for (i, (text, words)) in [
        (
            endpoint("http://hooks.example.com/np", "secret"),
            "allowInsecureHttp: true",
        ),
        (
            endpoint("https://ops:hunter2@hooks.example.com/np", "secret"),
            "holds credentials",
        ),
        (endpoint("https://hooks.example.com/np", "empty"), "is empty"),
        (
            endpoint("https://hooks.example.com/np", "missing"),
            "read secretFile",
        ),
        ("tenants: {}\n".to_owned(), "names no tenant and no default"),
        ("tenant: x\n".to_owned(), "unknown field `tenant`"),
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("bad-{i}.yaml"));
        std::fs::write(&path, &text).unwrap();
        let out = reap(
            &fx,
            &["--once", "--notify-webhook-config", path.to_str().unwrap()],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains("--notify-webhook-config"), "{text}: {stderr}");
        assert!(stderr.contains(words), "{text}: wanted {words:?} in {stderr}");
        assert!(
            !stderr.contains("hunter2") && !stderr.contains(SECRET),
            "{stderr}"
        );
    }
    let out = reap(
        &fx,
        &["--once", "--notify-webhook-config", "/nonexistent/webhooks.yaml"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/webhooks.yaml"));
    // Nothing was reaped by the refused runs.
    assert!(!is_terminating(&fx.client, &expired).await, "{}", fx.dump());
    fx.cleanup();
}

/// Watch mode: `expiring` when the window opens (a timer), then `expired`
/// and `deleted` at expiry, each once, and the per-event counters on /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sends_expiring_then_expired_and_deleted() {
    use futures::FutureExt;
    use namespace_provisioner::reaper::watch::{WatchOptions, watch_with};
    use namespace_provisioner::reaper::webhook::Webhooks;
    use namespace_provisioner::rules::notice::NoticeLead;

    let fx = fixture(false).await;
    let client = fx.client.clone();
    let (receiver, url) = receiver(Script::Always(200), &client).await;
    let dir = tempfile::tempdir().unwrap();
    let webhooks = Webhooks::load(&config(dir.path(), &url)).unwrap();
    let lease = support::unique("wh-lease");
    let t0 = now();
    let name = fx.create_set("wh-watch", t0 + 40).await.namespace.name_any();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = futures::channel::oneshot::channel::<()>();
    let options = WatchOptions {
        notify_before: Some(NoticeLead::new(Duration::from_secs(20)).unwrap()),
        webhook: Some(Arc::new(webhooks)),
        ..WatchOptions::default()
    };
    let task = tokio::spawn(watch_with(
        client.clone(),
        watch_config(&fx, &lease, "webhook-watch"),
        options,
        listener,
        stopped.map(drop),
    ));
    eventually(Duration::from_secs(20), "the watcher to lead", || async {
        lease_holder(&client, &lease).await.as_deref() == Some("webhook-watch")
    })
    .await;
    // The window opens 20 s after t0, the expiry 20 s later.
    eventually(
        Duration::from_secs(90),
        "expiring, expired and deleted",
        || async { receiver.of_type("deleted", &name).len() == 1 },
    )
    .await;
    let kinds: Vec<String> = receiver
        .delivered()
        .iter()
        .map(|e| e["type"].as_str().unwrap().rsplit('.').next().unwrap().to_owned())
        .collect();
    // `expiring` 20 s before the others; those two are delivered concurrently, in either order.
    let mut last_two = kinds.get(1..).unwrap_or_default().to_vec();
    last_two.sort();
    assert_eq!(
        (kinds.first().map(String::as_str), last_two),
        (Some("expiring"), vec!["deleted".to_owned(), "expired".to_owned()]),
        "{:#?}",
        receiver.all()
    );
    assert!(receiver.all().iter().all(|r| r.signature_ok));
    let expiring_at = receiver.of_type("expiring", &name)[0]["time"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_second();
    assert!(
        expiring_at >= t0 + 20,
        "sent before the window: {expiring_at} < {}",
        t0 + 20
    );
    let arrival = |kind: &str| {
        receiver
            .all()
            .iter()
            .find(|r| r.event["type"] == format!("io.observatorium.namespace.{kind}"))
            .unwrap()
            .at_ms
    };
    eprintln!(
        "measured: watch mode delivered `expiring` {} ms after the window opened, `deleted` {} ms after expiry",
        arrival("expiring") - (t0 + 20) * 1000,
        arrival("deleted") - (t0 + 40) * 1000
    );
    let text = support::http::http(&addr, "GET", "/metrics", None, None)
        .await
        .body;
    for event in ["expiring", "expired", "deleted"] {
        let line = format!("namespace_provisioner_reaper_webhook_notices_sent_total{{event=\"{event}\"}} 1");
        assert!(text.contains(&line), "{line} missing:\n{text}");
    }
    assert!(
        text.contains("namespace_provisioner_reaper_webhook_notices_dropped_total{event=\"deleted\"} 0"),
        "{text}"
    );

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("watch stopped within 60s")
        .unwrap()
        .unwrap();
    fx.cleanup();
}
