//! The start-up permission preflight against the real control plane, table
//! driven over the permission list itself ([`permissions::required`]): for
//! each permission either binary uses, one ServiceAccount holding every
//! other one; each binary run as it names exactly that one (reaper: exit 2
//! before listing; provisioner: `/readyz` 503 with the reason). A
//! ServiceAccount holding all of them passes, and a provisioner whose RBAC
//! gets fixed becomes ready without a restart.
//!
//! One cluster, one ServiceAccount per permission, created once and reused
//! by every row that needs it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod rbac_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::rbac::v1::{ClusterRole, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use namespace_provisioner::rules::permissions::{
    Identity, Permission, PermissionContext, PropagatedKind, Scope, required,
};
use rbac_support::{await_rbac, identity, rule};
use support::process::Process;
use support::{Fixture, eventually};

const SELECTOR_KEY: &str = "np-test/preflight";
const GRANT: &str = "namespace-provisioner-grant";
const LEASE_NAMESPACE: &str = "default";
/// Binaries run at the same time (2 shared cores).
const PARALLEL: usize = 4;

const IDENTITIES: [Identity; 3] = [
    Identity::Provisioner,
    Identity::Reaper { watch: false },
    Identity::Reaper { watch: true },
];

/// A propagation configuration naming one kind besides Roles and
/// RoleBindings: its rows are computed at start-up from the configuration.
const PROPAGATION: &str = "resources:\n- kind: ConfigMap\n  mode: Propagate\n";

fn propagation_file() -> &'static Path {
    static FILE: std::sync::LazyLock<tempfile::NamedTempFile> =
        std::sync::LazyLock::new(|| support::temp_file(PROPAGATION));
    FILE.path()
}

fn context() -> PermissionContext<'static> {
    let kinds = vec![PropagatedKind {
        group: String::new(),
        plural: "configmaps".to_owned(),
    }];
    PermissionContext {
        grant_cluster_role: GRANT,
        lease_namespace: Some(LEASE_NAMESPACE),
        propagated: kinds.leak(),
    }
}

/// Whether holding `wider` also grants `p` (RBAC: every name covers one
/// name, cluster scope covers a namespace), so an identity lacking `p`
/// must lack `wider` too.
fn covers(wider: &Permission, p: &Permission) -> bool {
    wider.verb == p.verb
        && wider.group == p.group
        && wider.resource == p.resource
        && wider.subresource == p.subresource
        && (wider.name.is_none() || wider.name == p.name)
        && (wider.scope == Scope::Cluster || wider.scope == p.scope)
}

fn reaper_args(fx: &Fixture, kubeconfig: &Path, watch: bool) -> Vec<String> {
    let mut args = vec![
        "--kubeconfig".to_owned(),
        kubeconfig.display().to_string(),
        "--selector".to_owned(),
        fx.selector.to_string(),
        "--max-ttl".to_owned(),
        "1h".to_owned(),
        "--propagation-config".to_owned(),
        propagation_file().display().to_string(),
    ];
    if watch {
        args.extend(
            [
                "--watch",
                "--lease-namespace",
                LEASE_NAMESPACE,
                "--lease-name",
                &support::unique("np-preflight"),
                "--metrics-addr",
                "127.0.0.1:0",
            ]
            .map(str::to_owned),
        );
    }
    args
}

/// Run the reaper as `kubeconfig`: its exit status and stderr. In watch mode
/// a passing preflight keeps it running; it is stopped once it says so.
async fn run_reaper(fx: &Fixture, kubeconfig: &Path, watch: bool) -> (Option<i32>, String) {
    let args = reaper_args(fx, kubeconfig, watch);
    if watch {
        let mut process = Process::spawn(
            "preflight-reaper",
            env!("CARGO_BIN_EXE_reaper"),
            &args,
            &[("NP_LOG", "info".to_owned())],
        );
        eventually(Duration::from_secs(30), "the reaper's preflight", || {
            let log = process.log();
            async move { log.contains("preflight") }
        })
        .await;
        if process
            .log()
            .contains("every permission this mode uses is granted")
        {
            process.kill();
            return (None, process.log());
        }
        let (status, log) = process.wait(Duration::from_secs(30)).await;
        return (status.code(), log);
    }
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_reaper"))
            .args(&args)
            .env_remove("NP_SELECTOR")
            .env("NP_LOG", "info")
            .output()
            .expect("run the reaper")
    })
    .await
    .unwrap();
    (out.status.code(), support::text(&out))
}

/// Start the provisioner as `kubeconfig` and return its `/readyz` answer
/// once the preflight has run (status, body), the process and its internal listener.
/// The grant ClusterRole the provisioner looks up (shared by the tests of this binary:
/// created once, kept).
async fn ensure_grant_cluster_role(fx: &Fixture) {
    let created = Api::<ClusterRole>::all(fx.client.clone())
        .create(
            &PostParams::default(),
            &ClusterRole {
                metadata: ObjectMeta {
                    name: Some(GRANT.into()),
                    ..ObjectMeta::default()
                },
                ..ClusterRole::default()
            },
        )
        .await;
    if let Err(e) = created {
        assert!(matches!(&e, kube::Error::Api(s) if s.code == 409), "{e}");
    }
}

async fn provisioner_readiness(
    fx: &Fixture,
    kubeconfig: &Path,
    interval: &str,
) -> (u16, String, Process, String) {
    ensure_grant_cluster_role(fx).await;
    let internal = format!("127.0.0.1:{}", support::free_port());
    let process = Process::spawn(
        "preflight-provisioner",
        env!("CARGO_BIN_EXE_provisioner"),
        &[],
        &[
            ("NP_LISTEN", format!("127.0.0.1:{}", support::free_port())),
            ("NP_INTERNAL_LISTEN", internal.clone()),
            ("NP_KUBECONFIG", kubeconfig.display().to_string()),
            ("NP_INSECURE_ALLOW_UNAUTHENTICATED", "true".into()),
            ("NP_SELECTOR", fx.selector.to_string()),
            ("NP_PREFLIGHT_INTERVAL", interval.into()),
            ("NP_PROPAGATION_CONFIG", propagation_file().display().to_string()),
        ],
    );
    let (status, body) = eventually(Duration::from_secs(30), "the provisioner's preflight", || {
        let internal = internal.clone();
        async move {
            let answer = support::try_http(&internal, "GET", "/readyz", None, None).await?;
            // Before the first check the reason is "has not finished yet".
            (answer.status == 200 || answer.body.contains("lacks")).then_some((answer.status, answer.body))
        }
    })
    .await;
    (status, body, process, internal)
}

/// The lines of `output` that name a missing permission.
fn named(output: &str) -> BTreeSet<String> {
    output
        .split(['\n', ';', '"'])
        .filter_map(|part| {
            let at = part.find("cannot ")?;
            let rest = &part[at..];
            let end = rest.find(" — apply ").map(|i| i + " — apply ".len())?;
            let manifest: String = rest[end..]
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '\\' && *c != ',')
                .collect();
            Some(format!("{}{manifest}", &rest[..end]))
        })
        .collect()
}

/// A permission without the manifest that grants it: the two binaries share
/// most of them, each granted by its own manifest.
type Key = (
    &'static str,
    String,
    String,
    Option<&'static str>,
    Option<String>,
    Scope,
);

fn key(p: &Permission) -> Key {
    (
        p.verb,
        p.group.clone(),
        p.resource.clone(),
        p.subresource,
        p.name.clone(),
        p.scope.clone(),
    )
}

/// Every permission either binary uses, once.
fn union(context: &PermissionContext<'_>) -> BTreeMap<Key, Permission> {
    IDENTITIES
        .iter()
        .flat_map(|identity| required(*identity, context))
        .map(|p| (key(&p), p))
        .collect()
}

fn expected(p: &Permission) -> String {
    format!("cannot {p} — apply {}", p.manifest)
}

#[tokio::test]
async fn each_missing_permission_is_named_exactly() {
    let fx = Fixture::new(SELECTOR_KEY).await;
    let home = fx.create_unmanaged("np-preflight", BTreeMap::new()).await;
    let context = context();
    let union = union(&context);
    let all: Vec<&Permission> = union.values().collect();

    // One ServiceAccount per permission, lacking only it (and what would cover it).
    let lacking: BTreeMap<Key, tempfile::NamedTempFile> = futures::stream::iter(all.iter().enumerate())
        .map(|(i, missing)| {
            let grants: Vec<&Permission> = all.iter().copied().filter(|p| !covers(p, missing)).collect();
            let (fx, home) = (&fx, home.as_str());
            async move {
                (
                    key(missing),
                    identity(fx, home, &format!("lacks-{i}"), &grants).await,
                )
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    for (missing, kubeconfig) in &lacking {
        let other = all.iter().find(|p| !covers(p, &union[missing])).unwrap();
        await_rbac(kubeconfig.path(), other).await;
    }

    // Every (identity, permission it uses): the binary names exactly it,
    // with the manifest that grants it to that binary.
    let rows: Vec<(Identity, Permission, &Path)> = IDENTITIES
        .iter()
        .flat_map(|identity| {
            required(*identity, &context)
                .into_iter()
                .map(|p| (*identity, lacking[&key(&p)].path(), p))
                .map(|(identity, path, p)| (identity, p, path))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(rows.len() > 60, "the table shrank: {} rows", rows.len());
    let failures: Vec<String> = futures::stream::iter(rows)
        .map(|(identity, missing, kubeconfig)| {
            let fx = &fx;
            async move {
                let missing = &missing;
                let want = BTreeSet::from([expected(missing)]);
                match identity {
                    Identity::Reaper { watch } => {
                        let (code, log) = run_reaper(fx, kubeconfig, watch).await;
                        let got = named(&log);
                        let ok = code == Some(2)
                            && got == want
                            && log.contains("reaper: preflight: this identity lacks 1 permission(s)");
                        (!ok).then(|| format!("{identity:?} lacking `{missing}`: exit {code:?}, named {got:?}\n{log}"))
                    }
                    Identity::Provisioner => {
                        let (status, body, mut process, _) = provisioner_readiness(fx, kubeconfig, "30s").await;
                        process.kill();
                        let got = named(&body);
                        let ok = status == 503 && got == want && named(&process.log()) == want;
                        (!ok).then(|| {
                            format!(
                                "{identity:?} lacking `{missing}`: /readyz {status} {body}, named {got:?}\n{}",
                                process.log()
                            )
                        })
                    }
                }
            }
        })
        .buffer_unordered(PARALLEL)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "{} row(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[tokio::test]
async fn all_permissions_pass_and_fixed_rbac_recovers_without_a_restart() {
    let fx = Fixture::new(SELECTOR_KEY).await;
    let home = fx.create_unmanaged("np-preflight", BTreeMap::new()).await;
    let context = context();
    let all = union(&context);
    let all: Vec<&Permission> = all.values().collect();
    let everything = identity(&fx, &home, "everything", &all).await;
    await_rbac(everything.path(), all[0]).await;

    // The reaper runs: a sweep that finds nothing, a watch that starts.
    let (code, log) = run_reaper(&fx, everything.path(), false).await;
    assert_eq!(code, Some(0), "{log}");
    assert!(named(&log).is_empty(), "{log}");
    let (code, log) = run_reaper(&fx, everything.path(), true).await;
    assert_eq!(code, None, "the watch should have kept running:\n{log}");
    let (status, body, mut process, _) = provisioner_readiness(&fx, everything.path(), "30s").await;
    process.kill();
    assert_eq!((status, body.as_str()), (200, "ok"), "{}", process.log());

    // Lacking `create namespaces`: not ready; granted later: ready, same process. (The
    // reaper needs it too, for warm-pool members: the provisioner's row names its manifest.)
    let provisioner_rows = required(Identity::Provisioner, &context);
    let create = provisioner_rows
        .iter()
        .find(|p| p.verb == "create" && p.resource == "namespaces")
        .unwrap();
    let others: Vec<&Permission> = all.iter().copied().filter(|p| key(p) != key(create)).collect();
    let lacking = identity(&fx, &home, "fixed-later", &others).await;
    await_rbac(lacking.path(), others[0]).await;
    let (status, body, mut process, internal) = provisioner_readiness(&fx, lacking.path(), "1s").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(named(&body), BTreeSet::from([expected(create)]), "{body}");
    let fix = support::unique("np-preflight-fix");
    fx.create_cluster_role(&fix, vec![rule(create)]).await;
    fx.create_cluster_role_binding(
        &fix,
        &fix,
        Subject {
            kind: "ServiceAccount".into(),
            name: "fixed-later".into(),
            namespace: Some(home.clone()),
            api_group: None,
        },
    )
    .await;
    eventually(Duration::from_secs(30), "readiness after the RBAC fix", || {
        let internal = internal.clone();
        async move {
            let answer = support::try_http(&internal, "GET", "/readyz", None, None).await?;
            (answer.status == 200).then_some(())
        }
    })
    .await;
    process.assert_running();
    process.kill();
    assert!(process.log().contains("ready"), "{}", process.log());
}

/// The whole provisioner binary with its clock an hour ahead (libfaketime): it would stamp
/// expiries an hour late, so it is not ready, and `/readyz` names the skew.
#[tokio::test]
async fn the_provisioner_binary_an_hour_ahead_is_not_ready() {
    support::require("faketime", &["-f", "+0", "true"], "apt-get install faketime");
    let fx = Fixture::new(SELECTOR_KEY).await;
    ensure_grant_cluster_role(&fx).await;
    let internal = format!("127.0.0.1:{}", support::free_port());
    let mut process = Process::spawn(
        "skewed-provisioner",
        "faketime",
        &[
            "-f".into(),
            "+1h".into(),
            env!("CARGO_BIN_EXE_provisioner").into(),
        ],
        &[
            ("PATH", support::tools_path()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
            ("NP_LISTEN", format!("127.0.0.1:{}", support::free_port())),
            ("NP_INTERNAL_LISTEN", internal.clone()),
            (
                "NP_KUBECONFIG",
                support::cluster().kubeconfig.display().to_string(),
            ),
            ("NP_INSECURE_ALLOW_UNAUTHENTICATED", "true".into()),
            ("NP_SELECTOR", fx.selector.to_string()),
            ("NP_MAX_CLOCK_SKEW", "30s".into()),
        ],
    );
    let body = eventually(Duration::from_secs(30), "not ready for the clock", || {
        let internal = internal.clone();
        async move {
            let answer = support::try_http(&internal, "GET", "/readyz", None, None).await?;
            (answer.status == 503 && answer.body.contains("clock")).then_some(answer.body)
        }
    })
    .await;
    process.assert_running();
    process.kill();
    // 3600 s, give or take the second the readings straddle.
    assert!(
        (3598..=3601)
            .any(|s| body.contains(&format!("{s}s ahead of the API server's (--max-clock-skew 30s)"))),
        "{body}\n{}",
        process.log()
    );
}

/// An hour ahead of the real clock (and of the API server's).
fn an_hour_ahead() -> i64 {
    support::now() + 3600
}

#[tokio::test]
async fn a_skewed_clock_keeps_the_provisioner_unready_until_it_is_right() {
    use namespace_provisioner::api::Readiness;
    use namespace_provisioner::cli::provisioner::clock_gate;
    let client = support::admin().await;
    let readiness = Readiness::default();
    let skewed = tokio::spawn(clock_gate(
        client.clone(),
        Duration::from_secs(30),
        readiness.clone(),
        Duration::from_secs(1),
        an_hour_ahead,
    ));
    let reason = eventually(Duration::from_secs(30), "not ready for the clock", || {
        let readiness = readiness.clone();
        async move { readiness.refused() }
    })
    .await;
    assert!(
        reason.starts_with("clock: the local clock is ")
            && reason.contains("s ahead of the API server's (--max-clock-skew 30s)"),
        "{reason}"
    );
    skewed.abort();
    // The right clock: ready again, same gate.
    let right = tokio::spawn(clock_gate(
        client,
        Duration::from_secs(30),
        readiness.clone(),
        Duration::from_secs(1),
        support::now,
    ));
    eventually(Duration::from_secs(30), "ready with the right clock", || {
        let readiness = readiness.clone();
        async move { readiness.refused().is_none() }
    })
    .await;
    right.abort();
}
