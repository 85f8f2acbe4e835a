//! Support for the reaper tests (tests/reaper_*.rs): the reaper's configs for
//! a [`Fixture`], the real binary, and what the tests compare: resourceVersion
//! snapshots, the desired set, Events, Leases.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding};
use kube::api::{Api, ListParams, ObjectMeta};
use kube::{Client, ResourceExt};
use namespace_provisioner::desired::{DesiredSet, NamespacedRole};
use namespace_provisioner::labels::OBJECT_NAME;
use namespace_provisioner::reaper::SweepConfig;
use namespace_provisioner::reaper::brake::BrakeConfig;
use namespace_provisioner::reaper::plan::PlanConfig;
use namespace_provisioner::reaper::report::Summary;
use namespace_provisioner::reaper::watch::{LeaseConfig, WatchConfig};
use serde_json::Value;

use crate::support::{self, Fixture, Process};

pub const MAX_TTL: Duration = Duration::from_secs(3600);
pub const SELECTOR_KEY: &str = "np-test/reaper";

/// A fixture under the reaper tests' selector key; `with_role`: sets carry a
/// namespaced Role too.
pub async fn fixture(with_role: bool) -> Fixture {
    Fixture::new(SELECTOR_KEY)
        .await
        .with_role_rules(with_role.then(role_rules))
}

pub fn role_rules() -> Vec<PolicyRule> {
    vec![support::rule(&[""], &["configmaps"], &["get", "list"])]
}

pub fn plan(fx: &Fixture, max_deletions: Option<u32>) -> PlanConfig {
    PlanConfig {
        set: fx.set.clone(),
        max_ttl: MAX_TTL,
        max_deletions,
    }
}

pub fn sweep_config(fx: &Fixture) -> SweepConfig {
    SweepConfig {
        plan: plan(fx, None),
        page_size: 500,
        concurrency: 8,
        dry_run: false,
        instance: "test".to_owned(),
    }
}

pub fn watch_config(fx: &Fixture, lease: &str, identity: &str) -> WatchConfig {
    WatchConfig {
        plan: plan(fx, None),
        page_size: 500,
        concurrency: 8,
        lease: LeaseConfig::new(
            lease.to_owned(),
            "default".to_owned(),
            identity.to_owned(),
            Duration::from_secs(3),
        )
        .unwrap(),
        // The binary's defaults: far above what these tests expire.
        brake: BrakeConfig {
            max_deletions: 500,
            window: Duration::from_secs(300),
            allow_mass_deletion: false,
        },
    }
}

/// The real binary's arguments against the shared cluster with this selector.
fn reaper_args(fx: &Fixture, kubeconfig: &std::path::Path) -> Vec<String> {
    vec![
        "--kubeconfig".to_owned(),
        kubeconfig.display().to_string(),
        "--selector".to_owned(),
        fx.selector.to_string(),
        "--max-ttl".to_owned(),
        "1h".to_owned(),
    ]
}

/// Run the real binary once (as the cluster admin) and collect its output.
pub fn run_reaper(fx: &Fixture, args: &[&str]) -> Output {
    run_reaper_as(fx, &support::cluster().kubeconfig, args)
}

/// Run the real binary once as `kubeconfig` and collect its output.
pub fn run_reaper_as(fx: &Fixture, kubeconfig: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reaper"))
        .args(reaper_args(fx, kubeconfig))
        .args(args)
        .env_remove("NP_SELECTOR")
        .env("NP_LOG", "info")
        .output()
        .expect("run the reaper binary")
}

/// The real binary once, as the cluster admin, with its whole clock shifted by `offset`
/// (libfaketime's `faketime -f`, e.g. `+1h`): every read of the time in the process moves,
/// not one injected into the library. Monotonic time is left alone (timers).
pub fn run_reaper_shifted(fx: &Fixture, offset: &str, args: &[&str]) -> Output {
    support::require("faketime", &["-f", "+0", "true"], "apt-get install faketime");
    Command::new("faketime")
        .args(["-f", offset, env!("CARGO_BIN_EXE_reaper")])
        .args(reaper_args(fx, &support::cluster().kubeconfig))
        .args(args)
        .env("PATH", support::tools_path())
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env_remove("NP_SELECTOR")
        .env("NP_LOG", "info")
        .output()
        .expect("run the reaper binary under faketime")
}

/// The real binary as a long-running child (`--watch` replicas).
pub fn spawn_reaper(fx: &Fixture, name: &str, args: &[&str]) -> Process {
    let mut all = reaper_args(fx, &support::cluster().kubeconfig);
    all.extend(args.iter().map(|a| a.to_string()));
    Process::spawn(
        name,
        env!("CARGO_BIN_EXE_reaper"),
        &all,
        &[("NP_LOG", "info".to_owned())],
    )
}

pub fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "reaper output is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// resourceVersion of the Namespace and of every SA, Role and RoleBinding in it
/// (labelled or not), by kind/name.
pub async fn versions(client: &Client, namespace: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let ns = Api::<Namespace>::all(client.clone())
        .get(namespace)
        .await
        .unwrap();
    out.insert(format!("Namespace/{namespace}"), ns.resource_version().unwrap());
    let lp = ListParams::default();
    for o in Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await
        .unwrap()
    {
        out.insert(
            format!("ServiceAccount/{}", o.name_any()),
            o.resource_version().unwrap(),
        );
    }
    for o in Api::<Role>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await
        .unwrap()
    {
        out.insert(format!("Role/{}", o.name_any()), o.resource_version().unwrap());
    }
    for o in Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await
        .unwrap()
    {
        out.insert(
            format!("RoleBinding/{}", o.name_any()),
            o.resource_version().unwrap(),
        );
    }
    out
}

fn contains_all(
    have: Option<&BTreeMap<String, String>>,
    want: Option<&BTreeMap<String, String>>,
    what: &str,
) {
    for (k, v) in want.into_iter().flatten() {
        assert_eq!(
            have.and_then(|h| h.get(k)),
            Some(v),
            "{what}: {k} should be {v:?}; has {have:?}"
        );
    }
}

fn same_meta(have: &ObjectMeta, want: &ObjectMeta, what: &str) {
    contains_all(have.labels.as_ref(), want.labels.as_ref(), what);
    contains_all(have.annotations.as_ref(), want.annotations.as_ref(), what);
}

/// The cluster holds exactly what `desired` says (labels and annotations as a
/// superset, roleRef, subjects and rules equal).
pub async fn assert_matches_desired(client: &Client, desired: &DesiredSet) {
    let DesiredSet {
        namespace,
        service_account,
        role_binding,
        role,
    } = desired;
    let name = namespace.name_any();
    let what = |kind: &str| format!("{kind} in {name}");
    let ns = Api::<Namespace>::all(client.clone()).get(&name).await.unwrap();
    same_meta(&ns.metadata, &namespace.metadata, &what("Namespace"));
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &name)
        .get(OBJECT_NAME)
        .await
        .unwrap();
    same_meta(&sa.metadata, &service_account.metadata, &what("ServiceAccount"));
    let bindings = Api::<RoleBinding>::namespaced(client.clone(), &name);
    let check_binding = |have: RoleBinding, want: &RoleBinding| {
        same_meta(&have.metadata, &want.metadata, &what("RoleBinding"));
        assert_eq!(have.role_ref, want.role_ref, "{}", what("roleRef"));
        assert_eq!(have.subjects, want.subjects, "{}", what("subjects"));
    };
    check_binding(
        bindings.get(&role_binding.name_any()).await.unwrap(),
        role_binding,
    );
    if let Some(NamespacedRole { role, binding }) = role {
        let have = Api::<Role>::namespaced(client.clone(), &name)
            .get(&role.name_any())
            .await
            .unwrap();
        same_meta(&have.metadata, &role.metadata, &what("Role"));
        assert_eq!(have.rules, role.rules, "{}", what("rules"));
        check_binding(bindings.get(&binding.name_any()).await.unwrap(), binding);
    }
}

/// Events recorded for the Namespace `name` (they live in `default`).
pub async fn expired_events(client: &Client, name: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.reason.as_deref() == Some("Expired")
        })
        .collect()
}

/// A summary without its timings, to compare counts.
pub fn summary_counts(s: &Summary) -> Summary {
    Summary {
        list_ms: 0,
        plan_ms: 0,
        execute_ms: 0,
        peak_rss_kib: None,
        ..s.clone()
    }
}

pub async fn lease_holder(client: &Client, name: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), "default")
        .get_opt(name)
        .await
        .unwrap()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}
