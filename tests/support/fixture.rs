//! The one per-test guard, like linkerd's policy-test: a random selector
//! value (the reaper lists cluster-wide, so the selector doubles as the
//! test's isolation), the sets the test makes, and on drop a dump of every
//! object it made when the test failed (the thread is panicking), then
//! cleanup by label in any case.
//!
//! What a fixture makes carries its selector (managed namespaces) or its
//! owner label [`OWNER_KEY`] (namespaces that are not managed, cluster-scoped
//! objects); cleanup and the dump find them by those labels alone.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use namespace_provisioner::desired::{DesiredSet, SetConfig, desired_set};
use namespace_provisioner::k8s;
use namespace_provisioner::params::{Expiry, Selector, TenantName};

use super::{admin, cluster, kubectl, unique};

/// Marks what a fixture makes that its selector does not find.
pub const OWNER_KEY: &str = "np-test/owner";
/// The grant ClusterRole name sets refer to unless a test makes its own.
pub const DEFAULT_GRANT: &str = "namespace-provisioner-grant";
/// The tenant of the sets a fixture makes.
pub const TENANT: &str = "ci";

pub struct Fixture {
    /// An admin client.
    pub client: Client,
    /// The random value of the selector and of the owner label.
    pub value: String,
    pub selector: Selector,
    /// What the sets of this test look like (selector, grant, role rules).
    pub set: SetConfig,
}

impl Fixture {
    /// A fixture whose selector is `selector_key=<random>`.
    pub async fn new(selector_key: &str) -> Fixture {
        let value = unique("t");
        let selector: Selector = format!("{selector_key}={value}").parse().unwrap();
        Fixture {
            client: admin().await,
            value,
            set: SetConfig {
                selector: selector.clone(),
                cluster_role: DEFAULT_GRANT.to_owned(),
                role_rules: None,
            },
            selector,
        }
    }

    /// Sets bind `cluster_role` instead of [`DEFAULT_GRANT`].
    pub fn with_grant(mut self, cluster_role: &str) -> Fixture {
        self.set.cluster_role = cluster_role.to_owned();
        self
    }

    /// Sets carry a namespaced Role with `rules` (`--role-rules-file`).
    pub fn with_role_rules(mut self, rules: Option<Vec<PolicyRule>>) -> Fixture {
        self.set.role_rules = rules;
        self
    }

    /// A grant ClusterRole of this test's own (owner-labelled) with `rules`,
    /// bound by its sets from now on.
    pub async fn create_grant(mut self, rules: Vec<PolicyRule>) -> Fixture {
        let name = unique("np-grant");
        self.create_cluster_role(&name, rules).await;
        self.set.cluster_role = name;
        self
    }

    /// The label that marks this test's objects outside its selector.
    pub fn owner(&self) -> (&'static str, &str) {
        (OWNER_KEY, &self.value)
    }

    pub fn owner_selector(&self) -> String {
        format!("{OWNER_KEY}={}", self.value)
    }

    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(self.selector.key().to_owned(), self.selector.value().to_owned())])
    }

    pub fn tenant(&self) -> TenantName {
        TENANT.parse().unwrap()
    }

    /// The set the provisioner would make for `name` expiring at `expiry`.
    pub fn desired(&self, name: &str, expiry: i64) -> DesiredSet {
        desired_set(name, &self.tenant(), Expiry::from_unix(expiry), &self.set)
    }

    /// A complete set, made as the provisioner makes it, named `<prefix>-<random>`,
    /// once Kubernetes has added its own (`default` ServiceAccount).
    pub async fn create_set(&self, prefix: &str, expiry: i64) -> DesiredSet {
        let set = self.desired(&unique(prefix), expiry);
        make_set(&self.client, &set).await;
        settled(&self.client, &set.namespace.name_any()).await;
        set
    }

    /// A namespace that is not managed (no selector), with `labels` and the owner label.
    pub async fn create_unmanaged(&self, prefix: &str, mut labels: BTreeMap<String, String>) -> String {
        let name = unique(prefix);
        labels.insert(OWNER_KEY.to_owned(), self.value.clone());
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

    /// An owner-labelled ClusterRole.
    pub async fn create_cluster_role(&self, name: &str, rules: Vec<PolicyRule>) {
        super::create_cluster_role_labelled(&self.client, name, rules, &[self.owner()]).await;
    }

    /// An owner-labelled ClusterRoleBinding of ClusterRole `role` to `subject`.
    pub async fn create_cluster_role_binding(&self, name: &str, role: &str, subject: Subject) {
        Api::<ClusterRoleBinding>::all(self.client.clone())
            .create(
                &PostParams::default(),
                &ClusterRoleBinding {
                    metadata: ObjectMeta {
                        name: Some(name.to_owned()),
                        labels: Some(BTreeMap::from([(OWNER_KEY.to_owned(), self.value.clone())])),
                        ..ObjectMeta::default()
                    },
                    role_ref: RoleRef {
                        api_group: "rbac.authorization.k8s.io".to_owned(),
                        kind: "ClusterRole".to_owned(),
                        name: role.to_owned(),
                    },
                    subjects: Some(vec![subject]),
                },
            )
            .await
            .unwrap();
    }

    /// The namespaces this test's selector finds (Terminating ones included).
    pub async fn managed(&self) -> Vec<Namespace> {
        Api::<Namespace>::all(self.client.clone())
            .list(&ListParams::default().labels(&self.selector.to_label_selector()))
            .await
            .unwrap()
            .items
    }

    /// Everything this test made, as YAML: its namespaces and their content,
    /// its cluster-scoped objects.
    pub fn dump(&self) -> String {
        let kc = &cluster().kubeconfig;
        let run = |args: &[&str]| {
            let out = kubectl(kc, args);
            format!("$ kubectl {}\n{}", args.join(" "), super::text(&out))
        };
        let mut text = String::new();
        for selector in [self.selector.to_label_selector(), self.owner_selector()] {
            text += &run(&["get", "namespaces", "-l", &selector, "-o", "yaml"]);
            let names = kubectl(kc, &["get", "namespaces", "-l", &selector, "-o", "name"]);
            for ns in String::from_utf8_lossy(&names.stdout).lines() {
                let ns = ns.trim_start_matches("namespace/");
                text += &run(&[
                    "get",
                    "serviceaccounts,roles,rolebindings,configmaps,pods,leases,events",
                    "-n",
                    ns,
                    "-o",
                    "yaml",
                ]);
            }
        }
        text += &run(&[
            "get",
            "clusterroles,clusterrolebindings",
            "-l",
            &self.owner_selector(),
            "-o",
            "yaml",
        ]);
        text
    }

    /// Delete what this test made, by label (namespaces in the background).
    /// A failed delete is reported on stderr, not raised: it runs in `drop`.
    pub fn cleanup(&self) {
        let kc = &cluster().kubeconfig;
        let owner = self.owner_selector();
        for (kinds, selector) in [
            ("namespaces", self.selector.to_label_selector()),
            ("namespaces", owner.clone()),
            ("clusterroles,clusterrolebindings", owner),
        ] {
            let out = kubectl(kc, &["delete", kinds, "-l", &selector, "--wait=false"]);
            if !out.status.success() {
                eprintln!(
                    "cleanup: kubectl delete {kinds} -l {selector} failed:\n{}",
                    super::text(&out)
                );
            }
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- cluster state of the failed test (selector {}, owner {}) ----\n{}---- end of cluster state ----",
                self.selector,
                self.owner_selector(),
                self.dump()
            );
        }
        self.cleanup();
    }
}

/// The one way a test makes a set, as the provisioner does: create the
/// Namespace, then apply its content.
pub async fn make_set(client: &Client, set: &DesiredSet) {
    Api::<Namespace>::all(client.clone())
        .create(&k8s::post_params(), &set.namespace)
        .await
        .unwrap();
    k8s::apply_contents(client, set).await.unwrap();
}

/// Wait for what Kubernetes itself adds to a new namespace (its `default`
/// ServiceAccount), so snapshots of resourceVersions see only the code under test.
pub async fn settled(client: &Client, namespace: &str) {
    let api = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(api, "default", |sa: Option<&ServiceAccount>| sa.is_some()),
    )
    .await
    .unwrap_or_else(|_| panic!("no default ServiceAccount in {namespace} within 30s"))
    .unwrap();
}

/// Wait until the namespace is gone for good (finalized by the namespace controller).
pub async fn await_gone(client: &Client, name: &str, uid: &str) {
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

/// Wait until the namespace is being deleted (or gone); the namespace as last seen.
pub async fn await_terminating(client: Client, name: String, timeout: Duration) -> Option<Namespace> {
    let api = Api::<Namespace>::all(client);
    tokio::time::timeout(
        timeout,
        await_condition(api, &name, |ns: Option<&Namespace>| {
            ns.is_none_or(|ns| ns.metadata.deletion_timestamp.is_some())
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("namespace {name} not deleted within {timeout:?}"))
    .unwrap()
}

/// Whether the namespace is being deleted or gone.
pub async fn is_terminating(client: &Client, name: &str) -> bool {
    Api::<Namespace>::all(client.clone())
        .get_opt(name)
        .await
        .unwrap()
        .is_none_or(|ns| ns.metadata.deletion_timestamp.is_some())
}
