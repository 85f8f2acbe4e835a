//! Faults between the binaries and the API server (issue 15 item 4), through
//! the fault-injecting TCP proxy of [`support::faults`]: each binary's
//! kubeconfig points at its own proxy, the test's admin client does not.
//!
//! - the proxy itself, against a plain TCP echo (no cluster);
//! - provisioner: 500 ms of latency each way; refusing partitions, API
//!   server restarts in the middle of creates, blackholes shorter and longer
//!   than `--request-timeout`: every answer is 201, or 503 with Retry-After
//!   (504 past the deadline), none later than the deadline, and no half-made
//!   set remains once healed;
//! - reaper `--watch`: a [`PARTITION`] during which namespaces expire (one
//!   created while it lasts): deleted once healed; two replicas, the
//!   leader's proxy blackholed: the other takes over and reaps, the old one
//!   stops acting, nothing is deleted twice;
//! - reaper `--once`: a LIST cut halfway (reset + refused after half its
//!   bytes) deletes nothing and exits non-zero; an expired continue token
//!   (410) fails the sweep and changes nothing.
//!
//! Each test prints one `FAULTS |` line: fault, requests, failures, lost (the
//! table of docs/notes/NOTES-issue-15-faults.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod reaper_support;
mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, join_all};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt;
use kube::api::Api;
use namespace_provisioner::labels::OBJECT_NAME;
use reaper_support::{expired_events, fixture, lease_holder, versions};
use support::faults::{FaultProxy, Partition};
use support::fixture::{await_terminating, is_terminating};
use support::process::{Provisioner, start_provisioner};
use support::{Fixture, Process, eventually, metric, now, temp_file, unique};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The partition of the reaper's watch (issue 15: 30 s).
const PARTITION: Duration = Duration::from_secs(30);
/// The leader's partition in the hand-over test: several Lease durations.
const LEADER_PARTITION: Duration = Duration::from_secs(15);
/// The provisioner's `--request-timeout` in these tests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);
/// Latency added each way in the latency test (issue 15: 500 ms).
const LATENCY: Duration = Duration::from_millis(500);

const ALICE: &str = "alice-token-0123456789abcdef";
const PROVISIONER_KEY: &str = "np-test.example.com/faults";

// ---------------------------------------------------------------- the proxy

/// A TCP echo server on a free loopback port.
async fn echo() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Send `data` and read as many bytes back within `within`.
async fn round_trip(stream: &mut TcpStream, data: &[u8], within: Duration) -> std::io::Result<Vec<u8>> {
    stream.write_all(data).await?;
    let mut got = vec![0u8; data.len()];
    match tokio::time::timeout(within, stream.read_exact(&mut got)).await {
        Ok(read) => read.map(|_| got),
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Whether the connection was closed on us (a reset, or EOF) within 5 s.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    let _ = stream.write_all(b"x").await;
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Whether a new connection is refused: reset at connect or just after.
async fn refused(addr: std::net::SocketAddr) -> bool {
    match TcpStream::connect(addr).await {
        Err(_) => true,
        Ok(mut stream) => closed(&mut stream).await,
    }
}

#[tokio::test]
async fn proxy_forwards_and_delays_each_direction() {
    let proxy = FaultProxy::start(echo().await);
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(
        round_trip(&mut stream, b"hello", Duration::from_secs(5))
            .await
            .unwrap(),
        b"hello"
    );
    proxy.set_latency(Duration::from_millis(200), Duration::from_millis(100));
    let started = Instant::now();
    assert_eq!(
        round_trip(&mut stream, b"again", Duration::from_secs(5))
            .await
            .unwrap(),
        b"again"
    );
    // Never shorter (a lower bound holds on any machine).
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    // Chunks overlap: ten sent at once take one latency, not ten.
    let started = Instant::now();
    for _ in 0..10 {
        stream.write_all(b"0123456789").await.unwrap();
    }
    let mut got = vec![0u8; 100];
    stream.read_exact(&mut got).await.unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    eprintln!("proxy: 10 chunks through 300 ms of latency in {elapsed:?}");
    let stats = proxy.stats();
    assert_eq!(stats.connections, 1);
    assert_eq!((stats.bytes_up, stats.bytes_down), (110, 110));
}

#[tokio::test]
async fn proxy_resets_open_connections_and_accepts_new_ones() {
    let proxy = FaultProxy::start(echo().await);
    let mut first = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut first, b"one", Duration::from_secs(5))
        .await
        .unwrap();
    proxy.reset_all();
    assert!(closed(&mut first).await, "an open connection survived the reset");
    let mut second = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(
        round_trip(&mut second, b"two", Duration::from_secs(5))
            .await
            .unwrap(),
        b"two"
    );
    assert_eq!(proxy.stats().reset, 1);
}

#[tokio::test]
async fn proxy_refusing_partition_cuts_and_refuses_until_healed() {
    let proxy = FaultProxy::start(echo().await);
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut open, b"up", Duration::from_secs(5))
        .await
        .unwrap();
    proxy.partition(Partition::Refuse);
    assert!(
        closed(&mut open).await,
        "an open connection survived the partition"
    );
    assert!(refused(proxy.addr()).await, "a new connection was forwarded");
    assert!(proxy.stats().refused >= 1);
    proxy.heal();
    let mut healed = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(
        round_trip(&mut healed, b"back", Duration::from_secs(5))
            .await
            .unwrap(),
        b"back"
    );
    // A restart: the same, healed by the proxy after the given time.
    proxy.restart(Duration::from_millis(300));
    assert!(closed(&mut healed).await);
    eventually(
        Duration::from_secs(10),
        "the restarted proxy to forward",
        || async {
            let mut s = TcpStream::connect(proxy.addr()).await.ok()?;
            round_trip(&mut s, b"ok", Duration::from_secs(1)).await.ok()
        },
    )
    .await;
}

#[tokio::test]
async fn proxy_blackhole_holds_bytes_until_healed() {
    let proxy = FaultProxy::start(echo().await);
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut open, b"before", Duration::from_secs(5))
        .await
        .unwrap();
    proxy.partition(Partition::Blackhole);
    // Nothing comes back while it lasts, on an open or a new connection.
    open.write_all(b"during").await.unwrap();
    let mut held = TcpStream::connect(proxy.addr()).await.unwrap();
    held.write_all(b"held").await.unwrap();
    let mut buf = [0u8; 6];
    assert!(
        tokio::time::timeout(Duration::from_millis(700), open.read_exact(&mut buf))
            .await
            .is_err(),
        "bytes crossed a blackhole"
    );
    proxy.heal();
    // Then everything held arrives, in order.
    tokio::time::timeout(Duration::from_secs(5), open.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"during");
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), held.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"held");
}

#[tokio::test]
async fn proxy_restarts_after_so_many_bytes_towards_the_client() {
    let proxy = FaultProxy::start(echo().await);
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut stream, b"12345", Duration::from_secs(5))
        .await
        .unwrap();
    proxy.restart_after_bytes_down(8);
    // 5 more bytes: under the trigger.
    round_trip(&mut stream, b"abcde", Duration::from_secs(5))
        .await
        .unwrap();
    // 3 more reach it: cut, and new connections refused.
    let _ = round_trip(&mut stream, b"fgh", Duration::from_secs(5)).await;
    assert!(closed(&mut stream).await);
    assert!(refused(proxy.addr()).await);
    proxy.heal();
    let mut healed = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut healed, b"ok", Duration::from_secs(5))
        .await
        .unwrap();
}

// ---------------------------------------------------------- the provisioner

/// The provisioner binary whose API server is behind `proxy`.
struct Served {
    fx: Fixture,
    proxy: FaultProxy,
    provisioner: Provisioner,
    _files: [tempfile::NamedTempFile; 2],
}

async fn provisioner_through_proxy() -> Served {
    let fx = Fixture::new(PROVISIONER_KEY).await.create_grant(vec![]).await;
    let proxy = FaultProxy::for_cluster();
    let kubeconfig = proxy.kubeconfig();
    let tokens = temp_file(&format!("alice {ALICE}\n"));
    let provisioner = start_provisioner(
        "provisioner-faults",
        &[],
        &[
            ("NP_TOKEN_FILE", tokens.path().display().to_string()),
            ("NP_KUBECONFIG", kubeconfig.path().display().to_string()),
            ("NP_SELECTOR", fx.selector.to_string()),
            ("NP_CLUSTER_ROLE", fx.set.cluster_role.clone()),
            (
                "NP_REQUEST_TIMEOUT",
                humantime::format_duration(REQUEST_TIMEOUT).to_string(),
            ),
            ("NP_LOG", "info".to_owned()),
            ("NP_LOG_FORMAT", "json".to_owned()),
        ],
        "/readyz",
    )
    .await;
    Served {
        fx,
        proxy,
        provisioner,
        _files: [kubeconfig, tokens],
    }
}

/// What a create answered, and how long it took.
#[derive(Debug)]
struct Created {
    status: u16,
    retry_after: Option<String>,
    name: Option<String>,
    took: Duration,
}

/// POST /api/v1/namespaces as alice. Panics if no answer comes well after
/// the deadline (a hung request).
async fn create(addr: String) -> Created {
    let started = Instant::now();
    let answer = tokio::time::timeout(
        REQUEST_TIMEOUT + Duration::from_secs(20),
        support::http(
            &addr,
            "POST",
            "/api/v1/namespaces",
            Some(ALICE),
            Some(r#"{"ttl":"10m"}"#),
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("a create hung for {:?}", started.elapsed()));
    let name = (answer.status == 201).then(|| answer.json()["name"].as_str().unwrap().to_owned());
    Created {
        status: answer.status,
        retry_after: answer
            .headers
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned()),
        name,
        took: started.elapsed(),
    }
}

/// Live managed namespaces of the fixture: (complete, incomplete) names.
/// Complete: its ServiceAccount and RoleBinding exist.
async fn live_sets(fx: &Fixture) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut complete, mut incomplete) = (BTreeSet::new(), BTreeSet::new());
    for ns in fx.managed().await {
        if ns.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = ns.name_any();
        let sa = Api::<ServiceAccount>::namespaced(fx.client.clone(), &name)
            .get_opt(OBJECT_NAME)
            .await
            .unwrap();
        let rb = Api::<RoleBinding>::namespaced(fx.client.clone(), &name)
            .get_opt(OBJECT_NAME)
            .await
            .unwrap();
        if sa.is_some() && rb.is_some() {
            complete.insert(name);
        } else {
            incomplete.insert(name);
        }
    }
    (complete, incomplete)
}

/// Every answer in time; 201, or 503 with Retry-After, or (`late_ok`) 504.
fn assert_answers(what: &str, answers: &[Created], late_ok: bool) {
    for a in answers {
        assert!(
            a.took <= REQUEST_TIMEOUT + Duration::from_secs(3),
            "{what}: answered after {:?} (--request-timeout {REQUEST_TIMEOUT:?}): {a:?}",
            a.took
        );
        match a.status {
            201 => {}
            503 => assert!(a.retry_after.is_some(), "{what}: 503 without Retry-After: {a:?}"),
            504 if late_ok => {}
            _ => panic!("{what}: unexpected answer {a:?}"),
        }
    }
}

fn count(answers: &[Created], status: u16) -> usize {
    answers.iter().filter(|a| a.status == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioner_with_500ms_latency_each_way_creates_complete_sets() {
    let served = provisioner_through_proxy().await;
    served.proxy.set_latency(LATENCY, LATENCY);
    let addr = served.provisioner.addr.clone();
    let answers = join_all((0..4).map(|_| create(addr.clone()))).await;
    assert_answers("latency", &answers, false);
    assert_eq!(count(&answers, 201), 4, "{answers:?}");
    let (complete, incomplete) = live_sets(&served.fx).await;
    assert!(incomplete.is_empty(), "{incomplete:?}");
    let names: BTreeSet<String> = answers.iter().filter_map(|a| a.name.clone()).collect();
    assert_eq!(complete, names);
    let took: Vec<_> = answers.iter().map(|a| a.took.as_millis()).collect();
    eprintln!("FAULTS | latency 500 ms each way | 4 creates | 0 failed | 0 lost | took {took:?} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioner_partitions_and_restarts_leave_no_half_made_set() {
    let served = provisioner_through_proxy().await;
    let proxy = &served.proxy;
    let addr = served.provisioner.addr.clone();
    let mut answers = Vec::new();

    // A refusing partition: 503 + Retry-After at once.
    proxy.partition(Partition::Refuse);
    let refused = create(addr.clone()).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    answers.push(refused);
    proxy.heal();

    // The API server restarting at points through creates (each takes a few
    // round trips of 2 x 150 ms).
    proxy.set_latency(Duration::from_millis(150), Duration::from_millis(150));
    for offset_ms in [0u64, 150, 300, 450, 600, 750, 900, 1100, 1300, 1600] {
        let pending = tokio::spawn(create(addr.clone()));
        tokio::time::sleep(Duration::from_millis(offset_ms)).await;
        proxy.restart(Duration::from_secs(2));
        answers.push(pending.await.unwrap());
        tokio::time::sleep(Duration::from_millis(2200)).await;
    }
    let restarts = answers.len() - 1;

    // A blackhole shorter than the deadline: held, then completed.
    proxy.partition(Partition::Blackhole);
    let held = join_all((0..2).map(|_| tokio::spawn(create(addr.clone()))));
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.heal();
    let held: Vec<Created> = held.await.into_iter().map(Result::unwrap).collect();
    assert_eq!(count(&held, 201), 2, "{held:?}");
    answers.extend(held);

    // A blackhole longer than the deadline: answered at the deadline.
    proxy.partition(Partition::Blackhole);
    let late = create(addr.clone()).await;
    proxy.heal();
    assert_eq!(late.status, 504, "{late:?}");
    assert!(late.retry_after.is_some(), "504 without Retry-After: {late:?}");
    answers.push(late);

    assert_answers("partitions", &answers, true);
    // Once healed: no half-made set; every 201 a complete set, every failed
    // create rolled back -- also the 504's, which finishes after its caller
    // went away and is then deleted.
    let created: BTreeSet<String> = answers.iter().filter_map(|a| a.name.clone()).collect();
    let fx = &served.fx;
    let complete = eventually(
        Duration::from_secs(60),
        "exactly the answered sets, complete",
        || async {
            let (complete, incomplete) = live_sets(fx).await;
            let extra: Vec<_> = complete.difference(&created).collect();
            if incomplete.is_empty() && extra.is_empty() {
                Ok(complete)
            } else {
                Err(format!(
                    "incomplete: {incomplete:?}; made for failed creates: {extra:?}"
                ))
            }
        },
    )
    .await;
    assert!(
        created.is_subset(&complete),
        "lost: {:?}",
        created.difference(&complete)
    );
    // Each create rolled back after its caller went away leaves its audit line (once its
    // rollback is through: it retries until the API server answers).
    let rolled_back = eventually(Duration::from_secs(60), "an audit line per rollback", || async {
        let log = served.provisioner.process.log();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["audit"] == true && v["outcome"] == "rolled_back")
            .collect();
        (lines.len() == log.matches("finished after its caller went away").count()).then_some(lines)
    })
    .await;
    let log = served.provisioner.process.log();
    for line in &rolled_back {
        assert_eq!(line["action"], "create", "{line}");
        assert!(!created.contains(line["namespace"].as_str().unwrap()), "{line}");
        assert!(line["tenant"].as_str().is_some_and(|t| !t.is_empty()), "{line}");
        // Logged in the request's span: its request id.
        assert!(
            line["span"]["request_id"].as_str().is_some_and(|t| !t.is_empty()),
            "{line}"
        );
    }
    eprintln!(
        "FAULTS | refusing partition, {restarts} API server restarts mid-create, blackholes 3 s and > deadline | {} creates | {} x 503 (all with Retry-After), {} x 504 | 0 lost, 0 half-made, 0 left by a 504 ({} rolled back after their caller went away) | rollbacks retried: {}",
        answers.len(),
        count(&answers, 503),
        count(&answers, 504),
        log.matches("finished after its caller went away").count(),
        log.matches("rollback").count()
    );
}

// ---------------------------------------------------------- reaper --watch

/// The reaper binary's arguments against `kubeconfig` with this fixture's selector.
fn reaper_args(fx: &Fixture, kubeconfig: &std::path::Path, args: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = vec![
        "--kubeconfig".to_owned(),
        kubeconfig.display().to_string(),
        "--selector".to_owned(),
        fx.selector.to_string(),
        "--max-ttl".to_owned(),
        "1h".to_owned(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    all
}

/// One `reaper --watch` replica behind a proxy of its own.
struct Replica {
    identity: String,
    proxy: FaultProxy,
    process: Process,
    metrics: String,
    _kubeconfig: tempfile::NamedTempFile,
}

impl Replica {
    fn spawn(fx: &Fixture, lease: &str, identity: &str) -> Replica {
        let proxy = FaultProxy::for_cluster();
        let kubeconfig = proxy.kubeconfig();
        let metrics = format!("127.0.0.1:{}", support::free_port());
        let args = reaper_args(
            fx,
            kubeconfig.path(),
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
        let process = Process::spawn(
            identity,
            env!("CARGO_BIN_EXE_reaper"),
            &args,
            &[("NP_LOG", "info".to_owned())],
        );
        Replica {
            identity: identity.to_owned(),
            proxy,
            process,
            metrics,
            _kubeconfig: kubeconfig,
        }
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        metric(&self.metrics, name).await
    }

    async fn wait_leading(&self, client: &kube::Client, lease: &str) {
        eventually(Duration::from_secs(30), "the replica to lead", || async {
            lease_holder(client, lease).await.as_deref() == Some(self.identity.as_str())
                && self.metric("namespace_provisioner_reaper_leader").await == Some(1.0)
        })
        .await;
    }
}

/// Wait (bounded) until `name` is terminating; how long after `since`.
async fn terminating_after(client: &kube::Client, name: &str, since: Instant, bound: Duration) -> Duration {
    await_terminating(client.clone(), name.to_owned(), bound).await;
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaper_watch_deletes_what_expired_during_a_partition_once_healed() {
    let fx = fixture(false).await;
    let client = fx.client.clone();
    let lease = unique("fl-lease");
    let mut replica = Replica::spawn(&fx, &lease, "solo");
    replica.wait_leading(&client, &lease).await;
    let live = fx.create_set("fl-live", now() + 3600).await.namespace.name_any();
    let seen = fx.create_set("fl-seen", now() + 6).await.namespace.name_any();
    // Let the watch see it before the partition.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let started = Instant::now();
    replica.proxy.partition(Partition::Refuse);
    // Made while the reaper cannot see anything.
    let unseen = fx.create_set("fl-unseen", now() + 10).await.namespace.name_any();
    tokio::time::sleep(PARTITION.saturating_sub(started.elapsed())).await;
    assert!(
        !is_terminating(&client, &seen).await,
        "deleted through a partition?"
    );
    replica.proxy.heal();
    let healed = Instant::now();
    let bound = Duration::from_secs(60);
    let (seen_after, unseen_after) = tokio::join!(
        terminating_after(&client, &seen, healed, bound),
        terminating_after(&client, &unseen, healed, bound),
    );
    replica.process.assert_running();
    assert!(!is_terminating(&client, &live).await);
    eventually(Duration::from_secs(10), "both deletions counted", || async {
        replica
            .metric("namespace_provisioner_reaper_deletions_total")
            .await
            == Some(2.0)
    })
    .await;
    for name in [&seen, &unseen] {
        let events = expired_events(&client, name).await;
        assert_eq!(events.len(), 1, "{name}: {events:#?}");
    }
    let stats = replica.proxy.stats();
    // Backing off, not re-connecting in a tight loop while cut off.
    assert!(stats.refused < 1000, "{stats:?}");
    eprintln!(
        "FAULTS | reaper --watch, refusing partition {PARTITION:?} | {} connections, {} refused, {} reset | deleted {seen_after:?} (seen before) and {unseen_after:?} (made during it) after healing | 0 lost, 0 deleted twice",
        stats.connections, stats.refused, stats.reset
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaper_watch_leader_partitioned_hands_over_and_stops_acting() {
    let fx = fixture(false).await;
    let client = fx.client.clone();
    let lease = unique("fl-lease");
    // The first replica leads before the second starts.
    let first = Replica::spawn(&fx, &lease, "replica-a");
    first.wait_leading(&client, &lease).await;
    let second = Replica::spawn(&fx, &lease, "replica-b");
    eventually(Duration::from_secs(30), "the follower to be ready", || async {
        second.metric("namespace_provisioner_reaper_leader").await == Some(0.0)
    })
    .await;

    let started = Instant::now();
    first.proxy.partition(Partition::Blackhole);
    // Expires while the old leader is cut off (what it saw before is not at stake).
    let doomed = fx.create_set("fl-handover", now() + 4).await.namespace.name_any();
    eventually(
        Duration::from_secs(30),
        "the follower to take the Lease",
        || async { lease_holder(&client, &lease).await.as_deref() == Some("replica-b") },
    )
    .await;
    let took_over = started.elapsed();
    await_terminating(client.clone(), doomed.clone(), Duration::from_secs(30)).await;
    tokio::time::sleep(LEADER_PARTITION.saturating_sub(started.elapsed())).await;
    // Healed: what the old leader had in flight arrives now, its Lease renewal
    // too. That renewal must not take the Lease back (it did before renewals
    // were guarded by their holder, `k8s::watch::GuardRenewals`): the new
    // leader keeps it, the old one steps down, exactly one acts.
    first.proxy.heal();
    let leader = eventually(Duration::from_secs(30), "exactly one leader", || async {
        let holder = lease_holder(&client, &lease).await?;
        let a = first.metric("namespace_provisioner_reaper_leader").await?;
        let b = second.metric("namespace_provisioner_reaper_leader").await?;
        let leading = if a == 1.0 { "replica-a" } else { "replica-b" };
        (a + b == 1.0 && holder == leading).then_some(holder)
    })
    .await;
    assert_eq!(leader, "replica-b", "the old leader took the Lease back");
    // Past anything it held: still one deletion, by the new leader.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = expired_events(&client, &doomed).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].reporting_instance.as_deref(), Some("replica-b"));
    assert_eq!(
        first.metric("namespace_provisioner_reaper_deletions_total").await,
        Some(0.0)
    );

    assert_eq!(lease_holder(&client, &lease).await.as_deref(), Some("replica-b"));
    assert_eq!(
        first.metric("namespace_provisioner_reaper_leader").await,
        Some(0.0)
    );

    // The old leader acts no more: the next expiry is the new leader's alone.
    let next = fx.create_set("fl-after", now() + 2).await.namespace.name_any();
    await_terminating(client.clone(), next.clone(), Duration::from_secs(30)).await;
    eventually(Duration::from_secs(10), "its Event", || async {
        !expired_events(&client, &next).await.is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = expired_events(&client, &next).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let holder = lease_holder(&client, &lease).await;
    assert_eq!(events[0].reporting_instance, holder);
    let stats = first.proxy.stats();
    eprintln!(
        "FAULTS | reaper --watch leader blackholed {LEADER_PARTITION:?} (2 replicas, Lease 3 s) | {} connections of the old leader | takeover after {took_over:?}, reaped once by the new leader, which kept the Lease after healing ({leader}); the old one stepped down | 0 lost, 0 deleted twice",
        stats.connections
    );
}

// ----------------------------------------------------------- reaper --once

/// Run the reaper binary to the end (off the runtime's threads).
async fn run_reaper(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_reaper"))
            .args(args)
            .env_remove("NP_SELECTOR")
            .env("NP_LOG", "info")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaper_once_with_its_list_cut_halfway_deletes_nothing() {
    const SETS: usize = 16;
    /// Bytes towards the reaper from the start of its LIST to the cut: the
    /// TLS handshakes of its three new connections (~5 KiB), then a few of
    /// its ~48 pages (page size 1, 16 sets, 3 kinds of ~1.5 KiB each).
    const CUT_AFTER: u64 = 16 * 1024;
    let fx = fixture(false).await;
    let names: Vec<String> = join_all((0..SETS).map(|_| fx.create_set("fl-cut", now() - 60)))
        .await
        .into_iter()
        .map(|s| s.namespace.name_any())
        .collect();
    let proxy = FaultProxy::for_cluster();
    let kubeconfig = proxy.kubeconfig();
    let flags = [
        "--once",
        "--page-size",
        "1",
        "--skip-preflight",
        "--allow-mass-deletion",
        "--output",
        "json",
    ];
    // Whole, a dry run sees all of them.
    let mut dry = flags.to_vec();
    dry.push("--dry-run");
    let out = run_reaper(reaper_args(&fx, kubeconfig.path(), &dry)).await;
    assert!(out.status.success(), "{}", support::text(&out));
    assert_eq!(
        reaper_support::stdout_json(&out)["summary"]["expiredDeleted"],
        SETS
    );

    // The run starts on one connection (client, clock check, discovery) and
    // lists the four kinds at once on four: the fourth connection is the
    // LIST starting. A little latency keeps its pages apart.
    proxy.set_latency(Duration::from_millis(20), Duration::from_millis(20));
    let base = proxy.stats();
    let started = Instant::now();
    let run = tokio::spawn(run_reaper(reaper_args(&fx, kubeconfig.path(), &flags)));
    while proxy.stats().connections < base.connections + 4 {
        assert!(!run.is_finished(), "the run ended before its LIST");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let list_started = proxy.stats().bytes_down - base.bytes_down;
    proxy.restart_after_bytes_down(CUT_AFTER);
    let out = run.await.unwrap();
    let took = started.elapsed();
    proxy.heal();
    proxy.set_latency(Duration::ZERO, Duration::ZERO);
    let text = support::text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("list"), "{text}");
    assert!(!text.contains("expired namespace deleted"), "{text}");
    for name in &names {
        assert!(!is_terminating(&fx.client, name).await, "{name} deleted:\n{text}");
    }
    // Whole again, the next run deletes them all.
    let out = run_reaper(reaper_args(&fx, kubeconfig.path(), &flags)).await;
    assert!(out.status.success(), "{}", support::text(&out));
    assert_eq!(
        reaper_support::stdout_json(&out)["summary"]["expiredDeleted"],
        SETS
    );
    eprintln!(
        "FAULTS | reaper --once, LIST (page size 1, {SETS} expired sets) cut {CUT_AFTER} bytes into it (after {list_started} bytes of start-up) | 1 run | exit 2 after {took:?}, 0 deleted | 0 lost; the next run deleted {SETS}"
    );
}

/// A client layer answering every paginated LIST's continuation (a request
/// with `continue=`) as the API server answers an expired token: 410 Expired.
#[derive(Clone, Default)]
struct ExpireContinue(Arc<AtomicUsize>);

struct Expiring<S> {
    inner: S,
    served: Arc<AtomicUsize>,
}

impl<S> tower::Layer<S> for ExpireContinue {
    type Service = Expiring<S>;
    fn layer(&self, inner: S) -> Expiring<S> {
        Expiring {
            inner,
            served: self.0.clone(),
        }
    }
}

type Reply = http::Response<Box<kube::client::DynBody>>;

impl<S> tower::Service<http::Request<kube::client::Body>> for Expiring<S>
where
    S: tower::Service<http::Request<kube::client::Body>, Response = Reply, Error = tower::BoxError>,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = tower::BoxError;
    type Future = BoxFuture<'static, Result<Reply, tower::BoxError>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<kube::client::Body>) -> Self::Future {
        use http_body_util::BodyExt;
        if !request.uri().query().is_some_and(|q| q.contains("continue=")) {
            return Box::pin(self.inner.call(request));
        }
        self.served.fetch_add(1, Ordering::SeqCst);
        let status = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            "reason": "Expired", "code": 410
        });
        let body = http_body_util::Full::new(bytes::Bytes::from(status.to_string()))
            .map_err(|never: std::convert::Infallible| -> tower::BoxError { match never {} });
        let reply = http::Response::builder()
            .status(410)
            .header("content-type", "application/json")
            .body(Box::new(body) as Box<kube::client::DynBody>)
            .unwrap();
        Box::pin(async move { Ok(reply) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaper_once_with_an_expired_continue_token_changes_nothing() {
    let fx = fixture(false).await;
    let mut sets = join_all((0..3).map(|_| fx.create_set("fl-410-live", now() + 3600))).await;
    sets.extend(join_all((0..3).map(|_| fx.create_set("fl-410-old", now() - 60))).await);
    let names: Vec<String> = sets.iter().map(|s| s.namespace.name_any()).collect();
    let mut before = Vec::new();
    for name in &names {
        before.push(versions(&fx.client, name).await);
    }
    let expiring = ExpireContinue::default();
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&support::cluster().kubeconfig).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = kube::client::ClientBuilder::try_from(config)
        .unwrap()
        .with_layer(&expiring)
        .build();
    let mut config = reaper_support::sweep_config(&fx);
    config.page_size = 2;

    let failed = namespace_provisioner::reaper::sweep(&client, &config, now())
        .await
        .unwrap_err();
    assert_eq!(failed.kind(), "list", "{failed}");
    let expired = expiring.0.load(Ordering::SeqCst);
    assert!(expired >= 1);
    // Nothing written: every object as it was, nothing deleted.
    for (name, was) in names.iter().zip(&before) {
        assert_eq!(&versions(&fx.client, name).await, was, "{name} changed");
        assert!(!is_terminating(&fx.client, name).await);
    }
    // The same sweep whole deletes the three expired sets and nothing else.
    let report = namespace_provisioner::reaper::sweep(&fx.client, &config, now())
        .await
        .unwrap();
    assert_eq!(report.summary.expired_deleted, 3);
    assert_eq!(report.summary.repaired, 0);
    let namespaces = Api::<Namespace>::all(fx.client.clone());
    for name in &names[..3] {
        assert!(namespaces.get_opt(name).await.unwrap().is_some());
        assert!(!is_terminating(&fx.client, name).await);
    }
    eprintln!(
        "FAULTS | reaper sweep, continue token expired (410) on {expired} page(s), page size 2 | 1 sweep | failed (list), 0 written | 0 lost; the next sweep deleted 3, repaired 0"
    );
}
