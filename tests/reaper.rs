//! The reaper against the real control plane: sweeps through the library and
//! through the `reaper` binary, watch mode, leader election.
//!
//! Each test owns a random selector value (`np-test/reaper=<unique>`), so
//! tests are isolated although the reaper lists cluster-wide, and cleans up
//! by label.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use namespace_provisioner::clock::system_clock;
use namespace_provisioner::desired::{DesiredSet, NamespacedRole, SetConfig, desired_set};
use namespace_provisioner::k8s;
use namespace_provisioner::labels::{EXPIRES_AT_ANNOTATION, EXPIRY_LABEL, OBJECT_NAME, TENANT_LABEL};
use namespace_provisioner::params::{Expiry, Selector, TenantName};
use namespace_provisioner::reaper::plan::PlanConfig;
use namespace_provisioner::reaper::report::Summary;
use namespace_provisioner::reaper::watch::{LeaseConfig, WatchConfig};
use namespace_provisioner::reaper::{self, SweepConfig};
use serde_json::Value;
use support::{admin, cluster, unique};

const MAX_TTL: Duration = Duration::from_secs(3600);
const SELECTOR_KEY: &str = "np-test/reaper";
/// Marks namespaces a test makes that are NOT managed, for cleanup.
const UNMANAGED_KEY: &str = "np-test/reaper-unmanaged";

/// One test's world: its selector, its config, its namespaces.
struct Fixture {
    client: Client,
    value: String,
    selector: Selector,
    set: SetConfig,
}

fn role_rules() -> Vec<PolicyRule> {
    vec![PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["configmaps".to_owned()]),
        verbs: vec!["get".to_owned(), "list".to_owned()],
        ..PolicyRule::default()
    }]
}

fn tenant() -> TenantName {
    "ci".parse().unwrap()
}

impl Fixture {
    async fn new(with_role: bool) -> Self {
        let client = admin().await;
        let value = unique("t");
        let selector: Selector = format!("{SELECTOR_KEY}={value}").parse().unwrap();
        let set = SetConfig {
            selector: selector.clone(),
            cluster_role: "namespace-provisioner-grant".to_owned(),
            role_rules: with_role.then(role_rules),
        };
        Self {
            client,
            value,
            selector,
            set,
        }
    }

    fn plan(&self, max_deletions: Option<u32>) -> PlanConfig {
        PlanConfig {
            set: self.set.clone(),
            max_ttl: MAX_TTL,
            max_deletions,
        }
    }

    fn sweep_config(&self) -> SweepConfig {
        SweepConfig {
            plan: self.plan(None),
            page_size: 500,
            concurrency: 8,
            dry_run: false,
            instance: "test".to_owned(),
        }
    }

    fn desired(&self, name: &str, expiry: i64) -> DesiredSet {
        desired_set(name, &tenant(), Expiry::from_unix(expiry), &self.set)
    }

    /// A complete set as the provisioner makes it.
    async fn create_set(&self, prefix: &str, expiry: i64) -> DesiredSet {
        let name = unique(prefix);
        let set = self.desired(&name, expiry);
        Api::<Namespace>::all(self.client.clone())
            .create(&k8s::post_params(), &set.namespace)
            .await
            .unwrap();
        k8s::apply_contents(&self.client, &set).await.unwrap();
        settled(&self.client, &name).await;
        set
    }

    /// A namespace that is not managed (no selector), with `labels`.
    async fn create_unmanaged(&self, prefix: &str, mut labels: BTreeMap<String, String>) -> String {
        let name = unique(prefix);
        labels.insert(UNMANAGED_KEY.to_owned(), self.value.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        settled(&self.client, &name).await;
        name
    }

    fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(SELECTOR_KEY.to_owned(), self.value.clone())])
    }

    /// Run the real binary against the shared cluster with this selector.
    fn reaper(&self, args: &[&str]) -> Output {
        reaper_command(&self.selector)
            .args(args)
            .output()
            .expect("run the reaper binary")
    }

    /// Delete every namespace this test made (by label).
    async fn cleanup(&self) {
        let api = Api::<Namespace>::all(self.client.clone());
        for selector in [
            self.selector.to_label_selector(),
            format!("{UNMANAGED_KEY}={}", self.value),
        ] {
            for ns in api.list(&ListParams::default().labels(&selector)).await.unwrap() {
                let _ = api.delete(&ns.name_any(), &DeleteParams::background()).await;
            }
        }
    }
}

/// Wait for what Kubernetes itself adds to a new namespace (its `default`
/// ServiceAccount), so snapshots of resourceVersions see only the reaper.
async fn settled(client: &Client, namespace: &str) {
    let api = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(api, "default", |sa: Option<&ServiceAccount>| sa.is_some()),
    )
    .await
    .unwrap_or_else(|_| panic!("no default ServiceAccount in {namespace} within 30s"))
    .unwrap();
}

fn reaper_command(selector: &Selector) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_reaper"));
    command
        .arg("--kubeconfig")
        .arg(&cluster().kubeconfig)
        .args(["--selector", &selector.to_string(), "--max-ttl", "1h"])
        .env_remove("NP_SELECTOR")
        .env("NP_LOG", "info");
    command
}

fn now() -> i64 {
    system_clock()
}

fn stdout_json(out: &Output) -> Value {
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
async fn versions(client: &Client, namespace: &str) -> BTreeMap<String, String> {
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
async fn assert_matches_desired(client: &Client, desired: &DesiredSet) {
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

/// Wait until the namespace is gone for good (finalized by the namespace controller).
async fn await_gone(client: &Client, name: &str, uid: &str) {
    let api = Api::<Namespace>::all(client.clone());
    tokio::time::timeout(
        Duration::from_secs(90),
        await_condition(api.clone(), name, conditions::is_deleted(uid)),
    )
    .await
    .unwrap_or_else(|_| panic!("namespace {name} not finalized within 90s"))
    .unwrap();
    assert!(api.get_opt(name).await.unwrap().is_none(), "{name} still exists");
}

/// Wait until the namespace is being deleted (or gone); returns when that was seen.
async fn await_terminating(client: &Client, name: &str, timeout: Duration) -> SystemTime {
    let api = Api::<Namespace>::all(client.clone());
    tokio::time::timeout(
        timeout,
        await_condition(api, name, |ns: Option<&Namespace>| {
            ns.is_none_or(|ns| ns.metadata.deletion_timestamp.is_some())
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("namespace {name} not deleted within {timeout:?}"))
    .unwrap();
    SystemTime::now()
}

async fn is_terminating(client: &Client, name: &str) -> bool {
    Api::<Namespace>::all(client.clone())
        .get_opt(name)
        .await
        .unwrap()
        .is_none_or(|ns| ns.metadata.deletion_timestamp.is_some())
}

/// Events recorded for the Namespace `name` (they live in `default`).
async fn expired_events(client: &Client, name: &str) -> Vec<Event> {
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

fn summary_counts(s: &Summary) -> Summary {
    Summary {
        list_ms: 0,
        plan_ms: 0,
        execute_ms: 0,
        peak_rss_kib: None,
        ..s.clone()
    }
}

#[tokio::test]
async fn sweep_deletes_the_expired_set_and_touches_nothing_else() {
    let fx = Fixture::new(false).await;
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

    let report = reaper::sweep(&client, &fx.sweep_config(), now()).await.unwrap();
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
    fx.cleanup().await;
}

#[tokio::test]
async fn every_drift_is_repaired_to_exactly_the_desired_set() {
    let fx = Fixture::new(true).await;
    let client = fx.client.clone();
    let expiry = now() + 3600;
    let merge = |v: Value| Patch::Merge(v);
    let pp = PatchParams::default();
    let mut sets = Vec::new();
    for case in [
        "sa-deleted",
        "rb-deleted",
        "subjects",
        "roleref",
        "label-removed",
        "selector-removed",
        "ns-annotation",
        "role-deleted",
        "rules",
        "role-rb-subjects",
        "complete",
    ] {
        let set = fx.create_set("rp-drift", expiry).await;
        let ns = set.namespace.name_any();
        let sas = Api::<ServiceAccount>::namespaced(client.clone(), &ns);
        let rbs = Api::<RoleBinding>::namespaced(client.clone(), &ns);
        let roles = Api::<Role>::namespaced(client.clone(), &ns);
        let intruder = serde_json::json!({"subjects": [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}]});
        match case {
            "sa-deleted" => drop(sas.delete(OBJECT_NAME, &DeleteParams::default()).await.unwrap()),
            "rb-deleted" => drop(rbs.delete(OBJECT_NAME, &DeleteParams::default()).await.unwrap()),
            "subjects" => drop(rbs.patch(OBJECT_NAME, &pp, &merge(intruder)).await.unwrap()),
            "roleref" => {
                // roleRef is immutable: replace the binding with one to another role.
                rbs.delete(OBJECT_NAME, &DeleteParams::default()).await.unwrap();
                let mut other = set.role_binding.clone();
                other.role_ref = RoleRef {
                    api_group: "rbac.authorization.k8s.io".to_owned(),
                    kind: "ClusterRole".to_owned(),
                    name: "view".to_owned(),
                };
                rbs.create(&PostParams::default(), &other).await.unwrap();
            }
            "label-removed" => drop(
                sas.patch(
                    OBJECT_NAME,
                    &pp,
                    &merge(serde_json::json!({"metadata": {"labels": {TENANT_LABEL: null}}})),
                )
                .await
                .unwrap(),
            ),
            "selector-removed" => drop(
                rbs.patch(
                    OBJECT_NAME,
                    &pp,
                    &merge(serde_json::json!({"metadata": {"labels": {SELECTOR_KEY: null}}})),
                )
                .await
                .unwrap(),
            ),
            "ns-annotation" => drop(
                Api::<Namespace>::all(client.clone())
                    .patch(
                        &ns,
                        &pp,
                        &merge(serde_json::json!({"metadata": {"annotations": {EXPIRES_AT_ANNOTATION: null}}})),
                    )
                    .await
                    .unwrap(),
            ),
            "role-deleted" => drop(roles.delete(OBJECT_NAME, &DeleteParams::default()).await.unwrap()),
            "rules" => drop(
                roles
                    .patch(
                        OBJECT_NAME,
                        &pp,
                        &merge(serde_json::json!({"rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]})),
                    )
                    .await
                    .unwrap(),
            ),
            "role-rb-subjects" => drop(
                rbs.patch("namespace-provisioner-role", &pp, &merge(intruder))
                    .await
                    .unwrap(),
            ),
            _ => {}
        }
        sets.push((case, set));
    }
    let complete = sets.last().unwrap().1.namespace.name_any();
    let complete_before = versions(&client, &complete).await;
    let roleref_ns = sets[3].1.namespace.name_any();
    let old_binding_uid = Api::<RoleBinding>::namespaced(client.clone(), &roleref_ns)
        .get(OBJECT_NAME)
        .await
        .unwrap()
        .uid();

    let report = reaper::sweep(&client, &fx.sweep_config(), now()).await.unwrap();
    let s = &report.summary;
    assert_eq!(
        (s.scanned_sets, s.repaired, s.in_sync, s.failed),
        (11, 10, 1, 0),
        "{}",
        report.to_text()
    );
    let reasons: BTreeMap<String, Vec<String>> = report
        .entries
        .iter()
        .map(|e| {
            let r = e
                .writes
                .iter()
                .map(|w| format!("{}/{}:{}", w.kind, w.name, w.reasons.join("+")))
                .collect();
            (e.namespace.clone(), r)
        })
        .collect();
    for (case, set) in &sets {
        assert_matches_desired(&client, set).await;
        let ns = set.namespace.name_any();
        let want: &[&str] = match *case {
            "sa-deleted" => &["ServiceAccount/namespace-provisioner:missing"],
            "rb-deleted" | "selector-removed" => &["RoleBinding/namespace-provisioner:missing"],
            "subjects" => &["RoleBinding/namespace-provisioner:subjects"],
            "roleref" => &["RoleBinding/namespace-provisioner:roleRef"],
            "label-removed" => &["ServiceAccount/namespace-provisioner:labels"],
            "ns-annotation" => &["Namespace/{ns}:annotations"],
            "role-deleted" => &["Role/namespace-provisioner:missing"],
            "rules" => &["Role/namespace-provisioner:rules"],
            "role-rb-subjects" => &["RoleBinding/namespace-provisioner-role:subjects"],
            _ => &[],
        };
        let want: Vec<String> = want.iter().map(|w| w.replace("{ns}", &ns)).collect();
        assert_eq!(reasons.get(&ns).cloned().unwrap_or_default(), want, "{case}");
    }
    let new_binding_uid = Api::<RoleBinding>::namespaced(client.clone(), &roleref_ns)
        .get(OBJECT_NAME)
        .await
        .unwrap()
        .uid();
    assert_ne!(
        old_binding_uid, new_binding_uid,
        "roleRef drift must recreate the binding"
    );
    assert_eq!(versions(&client, &complete).await, complete_before);

    // Repaired means in sync: the next sweep writes nothing.
    let mut all_before = BTreeMap::new();
    for (_, set) in &sets {
        let ns = set.namespace.name_any();
        all_before.insert(ns.clone(), versions(&client, &ns).await);
    }
    let again = reaper::sweep(&client, &fx.sweep_config(), now()).await.unwrap();
    assert_eq!(
        (again.summary.in_sync, again.summary.writes),
        (11, 0),
        "{}",
        again.to_text()
    );
    for (ns, v) in all_before {
        assert_eq!(versions(&client, &ns).await, v, "{ns} written by an idle sweep");
    }
    fx.cleanup().await;
}

#[tokio::test]
async fn missing_or_garbage_expiry_is_set_from_creation_plus_max_ttl_and_reaped_later() {
    let fx = Fixture::new(false).await;
    let client = fx.client.clone();
    let namespaces = Api::<Namespace>::all(client.clone());
    let pp = PatchParams::default();
    let missing = fx.create_set("rp-noexp", now() + 3600).await.namespace.name_any();
    namespaces
        .patch(
            &missing,
            &pp,
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {EXPIRY_LABEL: null}}})),
        )
        .await
        .unwrap();
    let garbage = fx
        .create_set("rp-garbage", now() + 3600)
        .await
        .namespace
        .name_any();
    namespaces
        .patch(
            &garbage,
            &pp,
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {EXPIRY_LABEL: "tomorrow"}}})),
        )
        .await
        .unwrap();
    // Adopted from the original tool: the selector only, no tenant, no expiry.
    let legacy = unique("rp-legacy");
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(legacy.clone()),
                    labels: Some(fx.selector_labels()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .unwrap();
    settled(&client, &legacy).await;

    // Seen long after creation + max TTL: the expiry is set, nothing deleted.
    let much_later = now() + 10 * 3600;
    let report = reaper::sweep(&client, &fx.sweep_config(), much_later)
        .await
        .unwrap();
    let s = &report.summary;
    assert_eq!(
        (s.scanned_sets, s.expiry_set, s.expired_deleted, s.failed),
        (3, 3, 0, 0),
        "{}",
        report.to_text()
    );
    let previous: BTreeMap<_, _> = report
        .entries
        .iter()
        .map(|e| (e.namespace.clone(), e.previous_expiry.clone()))
        .collect();
    assert_eq!(previous[&garbage].as_deref(), Some("tomorrow"));
    assert_eq!(previous[&missing], None);
    for name in [&missing, &garbage, &legacy] {
        let ns = namespaces.get(name).await.unwrap();
        assert!(
            ns.metadata.deletion_timestamp.is_none(),
            "{name} deleted on the spot"
        );
        let created = ns.creation_timestamp().unwrap().0.as_second();
        let want = Expiry::from_unix(created + 3600);
        assert_eq!(ns.labels()[EXPIRY_LABEL], want.to_string(), "{name}");
        assert_eq!(ns.annotations()[EXPIRES_AT_ANNOTATION], want.rfc3339(), "{name}");
        if *name != legacy {
            // The rest of the set carries the new expiry too.
            assert_matches_desired(&client, &fx.desired(name, want.unix())).await;
        }
    }
    let legacy_ns = namespaces.get(&legacy).await.unwrap();
    assert!(!legacy_ns.labels().contains_key(TENANT_LABEL));
    assert!(
        Api::<ServiceAccount>::namespaced(client.clone(), &legacy)
            .get_opt(OBJECT_NAME)
            .await
            .unwrap()
            .is_none(),
        "no ServiceAccount is created in an untenanted namespace"
    );
    assert!(
        Api::<RoleBinding>::namespaced(client.clone(), &legacy)
            .get_opt(OBJECT_NAME)
            .await
            .unwrap()
            .is_none()
    );

    // A later run finds them expired.
    let later = reaper::sweep(&client, &fx.sweep_config(), much_later)
        .await
        .unwrap();
    assert_eq!(later.summary.expired_deleted, 3, "{}", later.to_text());
    for name in [&missing, &garbage, &legacy] {
        assert!(is_terminating(&client, name).await, "{name}");
    }
    fx.cleanup().await;
}

#[tokio::test]
async fn dry_run_binary_prints_the_plan_and_writes_nothing() {
    let fx = Fixture::new(false).await;
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
    Api::<ServiceAccount>::namespaced(client.clone(), &foreign)
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some("labelled".to_owned()),
                    labels: Some(fx.selector_labels()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            },
        )
        .await
        .unwrap();
    let all = [&expired, &drifted, &no_expiry, &foreign];
    let mut before = BTreeMap::new();
    for ns in all {
        before.insert(ns.clone(), versions(&client, ns).await);
    }

    let out = fx.reaper(&["--dry-run", "--output", "json"]);
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

    let text = fx.reaper(&["--dry-run"]);
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
    fx.cleanup().await;
}

#[tokio::test]
async fn max_deletions_binary_deletes_exactly_that_many_oldest_first() {
    let fx = Fixture::new(false).await;
    let client = fx.client.clone();
    let t = now();
    let mut names = Vec::new();
    for age in [50, 40, 30, 20, 10] {
        names.push(fx.create_set("rp-cap", t - age).await.namespace.name_any());
    }
    let out = fx.reaper(&["--max-deletions", "2", "--output", "json"]);
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
    let text = fx.reaper(&["--max-deletions", "unlimited"]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("expired deleted 3"), "{text}");
    for name in &names {
        assert!(is_terminating(&client, name).await, "{name}");
    }
    fx.cleanup().await;
}

#[tokio::test]
async fn page_size_two_gives_the_same_result_as_one_page() {
    let fx = Fixture::new(false).await;
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
        ..fx.sweep_config()
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
            ..fx.sweep_config()
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
    // API requests: the LIST pages plus one write per object written, plus an Event per deletion.
    assert_eq!(log.len(), total_lists + 7 + 2, "{:#?}", log.entries());
    fx.cleanup().await;
}

#[tokio::test]
async fn orphan_is_reported_and_its_namespace_survives() {
    let fx = Fixture::new(false).await;
    let client = fx.client.clone();
    // Expiry in the past on the namespace, selector only on its content.
    let foreign = fx
        .create_unmanaged(
            "rp-orphan",
            BTreeMap::from([(EXPIRY_LABEL.to_owned(), (now() - 100).to_string())]),
        )
        .await;
    Api::<ServiceAccount>::namespaced(client.clone(), &foreign)
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(OBJECT_NAME.to_owned()),
                    labels: Some(fx.selector_labels()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            },
        )
        .await
        .unwrap();
    let before = versions(&client, &foreign).await;
    let out = fx.reaper(&["--output", "json"]);
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
    fx.cleanup().await;
}

/// A client allowed to list everything and to write only in `writable`, so
/// one set's repair fails and the others still succeed.
#[tokio::test]
async fn a_failing_set_does_not_stop_the_others_and_the_exit_status_says_so() {
    let fx = Fixture::new(false).await;
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
    Api::<ServiceAccount>::namespaced(client.clone(), &home)
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some("reaper".to_owned()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            },
        )
        .await
        .unwrap();
    let rule = support::rule;
    let subject = Subject {
        kind: "ServiceAccount".to_owned(),
        name: "reaper".to_owned(),
        namespace: Some(home.clone()),
        api_group: None,
    };
    let cluster_name = unique("rp-fail-reader");
    Api::<ClusterRole>::all(client.clone())
        .create(
            &PostParams::default(),
            &ClusterRole {
                metadata: ObjectMeta {
                    name: Some(cluster_name.clone()),
                    ..ObjectMeta::default()
                },
                rules: Some(vec![
                    rule(&[""], &["namespaces", "serviceaccounts"], &["list", "get"]),
                    rule(
                        &["rbac.authorization.k8s.io"],
                        &["roles", "rolebindings"],
                        &["list", "get"],
                    ),
                    rule(&[""], &["namespaces"], &["delete"]),
                    rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
                ]),
                ..ClusterRole::default()
            },
        )
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(
            &PostParams::default(),
            &ClusterRoleBinding {
                metadata: ObjectMeta {
                    name: Some(cluster_name.clone()),
                    ..ObjectMeta::default()
                },
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".to_owned(),
                    kind: "ClusterRole".to_owned(),
                    name: cluster_name.clone(),
                },
                subjects: Some(vec![subject.clone()]),
            },
        )
        .await
        .unwrap();
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

    let out = Command::new(env!("CARGO_BIN_EXE_reaper"))
        .arg("--kubeconfig")
        .arg(kubeconfig.path())
        .args(["--selector", &fx.selector.to_string(), "--output", "json"])
        .output()
        .unwrap();
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

    Api::<ClusterRoleBinding>::all(client.clone())
        .delete(&cluster_name, &DeleteParams::default())
        .await
        .unwrap();
    Api::<ClusterRole>::all(client.clone())
        .delete(&cluster_name, &DeleteParams::default())
        .await
        .unwrap();
    fx.cleanup().await;
}

async fn lease_holder(client: &Client, name: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), "default")
        .get_opt(name)
        .await
        .unwrap()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

fn watch_config(fx: &Fixture, lease: &str, identity: &str) -> WatchConfig {
    WatchConfig {
        plan: fx.plan(None),
        page_size: 500,
        concurrency: 8,
        lease: LeaseConfig::new(
            lease.to_owned(),
            "default".to_owned(),
            identity.to_owned(),
            Duration::from_secs(3),
        )
        .unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_deletes_at_expiry_within_a_second_and_repairs_on_change() {
    let fx = Fixture::new(false).await;
    let client = fx.client.clone();
    let lease = unique("rp-lease");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = futures::channel::oneshot::channel::<()>();
    let watcher = tokio::spawn(namespace_provisioner::reaper::watch::watch(
        client.clone(),
        watch_config(&fx, &lease, "solo"),
        listener,
        stopped.map(drop),
    ));
    support::eventually(Duration::from_secs(20), "the watcher to lead", || async {
        lease_holder(&client, &lease).await.as_deref() == Some("solo")
    })
    .await;

    // A 3 s TTL, as the provisioner writes it (whole seconds from now).
    let expiry = now() + 3;
    let short = fx.create_set("rp-watch-ttl", expiry).await.namespace.name_any();
    let live = fx.create_set("rp-watch-live", now() + 3600).await;
    let live_name = live.namespace.name_any();

    // Repair on change: delete the live set's ServiceAccount.
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), &live_name);
    support::eventually(Duration::from_secs(10), "the live set to be seen", || async {
        sas.get_opt(OBJECT_NAME).await.unwrap().is_some()
    })
    .await;
    let old_uid = sas.get(OBJECT_NAME).await.unwrap().uid();
    sas.delete(OBJECT_NAME, &DeleteParams::default()).await.unwrap();
    support::eventually(
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

    let seen = await_terminating(&client, &short, Duration::from_secs(15)).await;
    let delay = seen.duration_since(UNIX_EPOCH).unwrap().as_secs_f64() - expiry as f64;
    eprintln!("watch mode: deletion seen {delay:.3}s after the expiry instant");
    assert!(delay >= 0.0, "deleted {delay}s before its expiry");
    assert!(delay <= 1.0, "deleted {delay}s after its expiry");
    assert!(!is_terminating(&client, &live_name).await);

    // Counted once the Event is written, just after the deletion.
    support::eventually(Duration::from_secs(5), "the deletion to be counted", || async {
        let (_, text) = support::http_get(&addr, "/metrics").await.unwrap();
        text.contains("namespace_provisioner_reaper_deletions_total 1")
    })
    .await;
    let (status, metrics) = support::http_get(&addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    let metric = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    assert_eq!(metric("namespace_provisioner_reaper_leader"), 1.0);
    assert_eq!(metric("namespace_provisioner_reaper_deletions_total"), 1.0);
    // At least the ServiceAccount; the controller may also have completed
    // the live set while the test was still creating it (same apply, no harm).
    assert!(metric("namespace_provisioner_reaper_repairs_total") >= 1.0);
    assert_eq!(support::http_get(&addr, "/healthz").await.unwrap().0, 200);

    // Graceful shutdown releases the Lease.
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), watcher)
        .await
        .expect("watch stopped within 30s")
        .unwrap()
        .unwrap();
    assert_eq!(lease_holder(&client, &lease).await, None);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_stops_acting_when_its_lease_is_taken() {
    let fx = Fixture::new(false).await;
    let client = fx.client.clone();
    let lease = unique("rp-lease");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = futures::channel::oneshot::channel::<()>();
    let watcher = tokio::spawn(namespace_provisioner::reaper::watch::watch(
        client.clone(),
        watch_config(&fx, &lease, "deposed"),
        listener,
        stopped.map(drop),
    ));
    let leader_gauge = || async {
        let (_, text) = support::http_get(&addr, "/metrics").await?;
        text.lines().find_map(|l| {
            l.strip_prefix("namespace_provisioner_reaper_leader ")?
                .parse::<f64>()
                .ok()
        })
    };
    support::eventually(Duration::from_secs(20), "the watcher to lead", || async {
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
    support::eventually(Duration::from_secs(10), "the watcher to step down", || async {
        leader_gauge().await == Some(0.0)
    })
    .await;
    assert_eq!(lease_holder(&client, &lease).await.as_deref(), Some("usurper"));
    let expired = fx.create_set("rp-deposed", now() - 1).await.namespace.name_any();
    // Longer than a Lease duration: it does not take a live Lease back.
    let acted = tokio::time::timeout(
        Duration::from_secs(6),
        await_terminating(&client, &expired, Duration::from_secs(60)),
    )
    .await;
    assert!(acted.is_err(), "a replica without the Lease deleted {expired}");
    assert!(!is_terminating(&client, &expired).await);
    assert_eq!(leader_gauge().await, Some(0.0));

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), watcher)
        .await
        .expect("watch stopped within 30s")
        .unwrap()
        .unwrap();
    // Not ours, so not released.
    assert_eq!(lease_holder(&client, &lease).await.as_deref(), Some("usurper"));
    usurping.store(false, Ordering::SeqCst);
    usurper.await.unwrap();
    fx.cleanup().await;
}

struct Replica {
    identity: String,
    child: Child,
    metrics: String,
    log: tempfile::NamedTempFile,
}

impl Replica {
    fn spawn(fx: &Fixture, lease: &str, identity: &str) -> Self {
        let log = tempfile::NamedTempFile::new().unwrap();
        let metrics = format!("127.0.0.1:{}", support::free_port());
        let child = reaper_command(&fx.selector)
            .args([
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
            ])
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        Self {
            identity: identity.to_owned(),
            child,
            metrics,
            log,
        }
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = support::http_get(&self.metrics, "/metrics").await?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_watch_replicas_only_the_leader_acts_and_the_other_takes_over() {
    let fx = Fixture::new(false).await;
    let client = fx.client.clone();
    let lease = unique("rp-lease");
    let mut replicas = vec![
        Replica::spawn(&fx, &lease, "replica-a"),
        Replica::spawn(&fx, &lease, "replica-b"),
    ];
    support::eventually(
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

    // Expiring in 2 s, so the set is complete before a replica may act on it.
    let first = fx.create_set("rp-ha-1", now() + 2).await.namespace.name_any();
    await_terminating(&client, &first, Duration::from_secs(20)).await;
    support::eventually(Duration::from_secs(10), "the Expired event", || async {
        !expired_events(&client, &first).await.is_empty()
    })
    .await;
    let events = expired_events(&client, &first).await;
    assert!(
        events
            .iter()
            .all(|e| e.reporting_instance.as_deref() == Some(holder.as_str())),
        "only the leader {holder} may act: {events:#?}"
    );
    let l = &replicas[leader];
    let f = &replicas[follower];
    assert_eq!(l.metric("namespace_provisioner_reaper_leader").await, Some(1.0));
    support::eventually(
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
    replicas[leader].child.kill().unwrap();
    replicas[leader].child.wait().unwrap();
    let new_holder = replicas[follower].identity.clone();
    support::eventually(
        Duration::from_secs(20),
        "the follower to take the Lease",
        || async { lease_holder(&client, &lease).await.as_deref() == Some(new_holder.as_str()) },
    )
    .await;
    eprintln!("takeover after {:?}", killed.elapsed());
    let second = fx.create_set("rp-ha-2", now() + 2).await.namespace.name_any();
    await_terminating(&client, &second, Duration::from_secs(20)).await;
    support::eventually(Duration::from_secs(10), "the second Expired event", || async {
        !expired_events(&client, &second).await.is_empty()
    })
    .await;
    let events = expired_events(&client, &second).await;
    assert!(
        events
            .iter()
            .all(|e| e.reporting_instance.as_deref() == Some(new_holder.as_str())),
        "{events:#?}"
    );

    // SIGTERM: graceful stop, the Lease is released.
    let survivor = &mut replicas[follower];
    let term = Command::new("kill")
        .args(["-TERM", &survivor.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = survivor.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no exit after SIGTERM:\n{}",
            survivor.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status}:\n{}", survivor.log());
    assert_eq!(lease_holder(&client, &lease).await, None, "{}", survivor.log());
    assert!(survivor.log().contains("released the Lease"));
    fx.cleanup().await;
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
