//! The Helm chart (charts/namespace-provisioner) against the kustomize
//! manifests and the real control plane: with default values it renders the
//! objects `kubectl kustomize function/ cronjob/` renders (and
//! `cronjob/watch/` with reaper.mode=watch), field for field apart from Helm's
//! labels; it passes `helm lint --strict` and a server-side dry run; `helm
//! install` installs it as the chart's README says; the ReplicaSet controller
//! admits its provisioner pod under Pod Security "restricted"; and the real
//! binaries, configured as the chart configures them and acting as the
//! ServiceAccounts it created, create a namespace (whose kubeconfig works) and
//! reap an expired one.
//!
//! Helm is built from the Go module proxy into target/tools/bin by tests/run;
//! without it these tests fail and say how to build it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_yaml_ng::Value;

const CHART: &str = "charts/namespace-provisioner";
const RELEASE: &str = "namespace-provisioner";
const NS: &str = "namespace-provisioner";
/// The test control plane's version (tests/cluster); `helm template` has no
/// cluster to ask.
const KUBE_VERSION: &str = "1.34.0";

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The helm binary tests/run builds, with state directories of its own.
fn helm(args: &[&str]) -> Output {
    let repo = support::repo_root();
    let bin = repo.join("target/tools/bin/helm");
    assert!(
        bin.exists(),
        "no {}: run tests/run once, or build it: GOBIN=$PWD/target/tools/bin go install helm.sh/helm/v3/cmd/helm@v3.22.0",
        bin.display()
    );
    let home = repo.join("target/tools/helm-home");
    Command::new(bin)
        .args(args)
        .current_dir(&repo)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .output()
        .expect("run helm")
}

fn helm_ok(args: &[&str]) -> String {
    let out = helm(args);
    assert!(out.status.success(), "helm {args:?} failed:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| <Value as serde::Deserialize>::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template` of the chart with `set` values.
fn render(set: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "template",
        RELEASE,
        CHART,
        "--namespace",
        NS,
        "--kube-version",
        KUBE_VERSION,
        // What `helm install` applies: the chart's crds/ too.
        "--include-crds",
    ];
    for s in set {
        args.extend(["--set", s]);
    }
    documents(&helm_ok(&args))
}

/// `kubectl kustomize DIR` (what `kubectl apply -k` sends).
fn kustomize(dir: &str) -> Vec<Value> {
    let out = Command::new(support::cluster_bin())
        .args(["kubectl", "kustomize", dir])
        .current_dir(support::repo_root())
        .output()
        .expect("run kubectl kustomize");
    assert!(out.status.success(), "kubectl kustomize {dir}:\n{}", text(&out));
    documents(&String::from_utf8_lossy(&out.stdout))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut v = v;
    for key in path {
        v = &v[*key];
    }
    v.as_str().unwrap_or_default()
}

const CLUSTER_SCOPED: [&str; 5] = [
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

/// kind/namespace/name -> the object without metadata labels and annotations
/// (where Helm adds its own), checking the manifests' two labels are kept.
fn by_key(objects: Vec<Value>, what: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for mut object in objects {
        let kind = str_at(&object, &["kind"]).to_owned();
        if kind == "Namespace" {
            continue;
        }
        if CLUSTER_SCOPED.contains(&kind.as_str()) {
            // kubectl's kustomize does not know ValidatingAdmissionPolicy* are
            // cluster-scoped and stamps `namespace:` on them (the API server
            // ignores it); compare without.
            object["metadata"].as_mapping_mut().unwrap().remove("namespace");
        }
        let key = format!(
            "{kind}/{}/{}",
            str_at(&object, &["metadata", "namespace"]),
            str_at(&object, &["metadata", "name"])
        );
        let meta = object["metadata"].as_mapping_mut().unwrap();
        let labels = meta.remove("labels").unwrap_or(Value::Null);
        meta.remove("annotations");
        for label in ["app.kubernetes.io/name", "app.kubernetes.io/component"] {
            assert!(
                labels.get(label).and_then(Value::as_str).is_some(),
                "{what}: {key} lacks label {label}"
            );
        }
        // function/ and cronjob/ each ship the propagation ConfigMap, so that
        // either applies alone; applied together they must be one object.
        if let Some(earlier) = out.insert(key.clone(), object.clone()) {
            assert!(
                earlier == object,
                "{what}: {key} twice, and the two differ:\n{}\n{}",
                serde_yaml_ng::to_string(&earlier).unwrap(),
                serde_yaml_ng::to_string(&object).unwrap()
            );
        }
    }
    out
}

fn assert_same(chart: Vec<Value>, dirs: &[&str]) {
    let chart = by_key(chart, "chart");
    let kustomized = by_key(dirs.iter().flat_map(|d| kustomize(d)).collect(), "kustomize");
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        kustomized.keys().collect::<Vec<_>>(),
        "the chart and kustomize {dirs:?} render different objects"
    );
    for (key, want) in &kustomized {
        let got = &chart[key];
        assert!(
            got == want,
            "{key} differs between the chart and kustomize {dirs:?}:\nchart:\n{}\nkustomize:\n{}",
            serde_yaml_ng::to_string(got).unwrap(),
            serde_yaml_ng::to_string(want).unwrap()
        );
    }
}

#[test]
fn chart_passes_helm_lint() {
    helm_ok(&[
        "lint",
        "--strict",
        CHART,
        "--namespace",
        NS,
        "--kube-version",
        KUBE_VERSION,
    ]);
    helm_ok(&[
        "lint",
        "--strict",
        CHART,
        "--namespace",
        NS,
        "--kube-version",
        KUBE_VERSION,
        "--set",
        "reaper.mode=watch",
    ]);
}

#[test]
fn chart_renders_what_kustomize_renders() {
    // RBAC rules, admission policy CEL, container args/env/probes/security,
    // CronJob and Service specs: whole objects, not samples.
    assert_same(render(&[]), &["function", "cronjob"]);
    assert_same(render(&["reaper.mode=watch"]), &["function", "cronjob/watch"]);
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| str_at(o, &["kind"]) == kind && str_at(o, &["metadata", "name"]) == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn env_of(container: &Value) -> BTreeMap<String, String> {
    container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| (str_at(e, &["name"]).to_owned(), str_at(e, &["value"]).to_owned()))
        .collect()
}

#[test]
fn chart_values_change_what_they_say() {
    let objects = render(&[
        "selector=example.com/owner=ci",
        "grant.name=ci-grant",
        "grant.rules[0].apiGroups[0]=",
        "grant.rules[0].resources[0]=configmaps",
        "grant.rules[0].verbs[0]=get",
        "provisioner.server=https://api.example.com:6443",
        "reaper.mode=none",
        "ttl=30m",
        "maxTtl=2h",
    ]);
    let deployment = find(&objects, "Deployment", "namespace-provisioner");
    let env = env_of(&deployment["spec"]["template"]["spec"]["containers"][0]);
    assert_eq!(env["NP_SELECTOR"], "example.com/owner=ci");
    assert_eq!(env["NP_CLUSTER_ROLE"], "ci-grant");
    assert_eq!(env["NP_SERVER"], "https://api.example.com:6443");
    assert_eq!(
        (env["NP_TTL"].as_str(), env["NP_MAX_TTL"].as_str()),
        ("30m", "2h")
    );
    let grant = find(&objects, "ClusterRole", "ci-grant");
    assert_eq!(grant["rules"][0]["resources"][0].as_str(), Some("configmaps"));
    // The reaper binds any ClusterRole a propagated RoleBinding names (its
    // admission policy confines that to copies); the provisioner only the grant.
    let rules = find(&objects, "ClusterRole", "namespace-provisioner")["rules"]
        .as_sequence()
        .unwrap();
    let bind = rules
        .iter()
        .find(|r| r["verbs"][0].as_str() == Some("bind"))
        .unwrap();
    assert_eq!(bind["resourceNames"][0].as_str(), Some("ci-grant"));
    for policy in [
        "namespace-provisioner-managed-only",
        "namespace-provisioner-reaper-managed-only",
    ] {
        let vars = find(&objects, "ValidatingAdmissionPolicy", policy)["spec"]["variables"]
            .as_sequence()
            .unwrap();
        let expr = |name: &str| {
            vars.iter()
                .find(|v| v["name"].as_str() == Some(name))
                .and_then(|v| v["expression"].as_str())
                .unwrap()
                .to_owned()
        };
        assert_eq!(expr("managedKey"), "'example.com/owner'", "{policy}");
        assert_eq!(expr("grant"), "'ci-grant'", "{policy}");
    }
    let workloads: Vec<&str> = objects
        .iter()
        .filter(|o| matches!(str_at(o, &["kind"]), "CronJob" | "Deployment"))
        .map(|o| str_at(o, &["metadata", "name"]))
        .collect();
    assert_eq!(
        workloads,
        ["namespace-provisioner"],
        "reaper.mode=none: no reaper workload"
    );
    // The reaper's RBAC stays (run it elsewhere, e.g. `reaper --once` from CI).
    find(&objects, "ClusterRole", "namespace-provisioner-reaper");
}

// ---------------------------------------------------------------------------
// Installed into the control plane.

fn admin() -> PathBuf {
    support::cluster().kubeconfig.clone()
}

fn kubectl(args: &[&str]) -> Output {
    support::kubectl(&admin(), args)
}

fn kubectl_ok(args: &[&str]) -> String {
    support::kubectl_ok(&admin(), args)
}

/// `kubectl apply -f -` of `yaml` with extra arguments.
fn apply_stdin(yaml: &str, extra: &[&str]) -> Output {
    use std::io::Write;
    let mut child = Command::new(support::cluster_bin())
        .arg("kubectl")
        .arg("--kubeconfig")
        .arg(admin())
        .args(["apply", "-f", "-"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// The chart, installed once per test process as the chart's README says.
fn installed() -> &'static Vec<Value> {
    static INSTALLED: OnceLock<Vec<Value>> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // 1. The namespace with Pod Security "restricted", 2. the token Secret.
        kubectl_ok(&["create", "namespace", NS]);
        kubectl_ok(&[
            "label",
            "namespace",
            NS,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/enforce-version=latest",
            "pod-security.kubernetes.io/warn=restricted",
            "pod-security.kubernetes.io/audit=restricted",
        ]);
        let tokens = support::temp_file("helm-test helm-test-token-0123456789abcdef\n");
        kubectl_ok(&[
            "-n",
            NS,
            "create",
            "secret",
            "generic",
            "namespace-provisioner-tokens",
            &format!("--from-file=tokens={}", tokens.path().display()),
        ]);
        // Look first: a server-side dry run of what the chart renders.
        let rendered = helm_ok(&[
            "template",
            RELEASE,
            CHART,
            "--namespace",
            NS,
            "--kube-version",
            KUBE_VERSION,
        ]);
        let dry = apply_stdin(&rendered, &["--dry-run=server"]);
        assert!(dry.status.success(), "server dry run:\n{}", text(&dry));
        assert!(
            text(&dry).contains("(server dry run)") && !text(&dry).contains("Warning"),
            "server dry run:\n{}",
            text(&dry)
        );
        // 3. helm install.
        let admin = admin();
        let out = helm_ok(&[
            "install",
            RELEASE,
            CHART,
            "--namespace",
            NS,
            "--kubeconfig",
            admin.to_str().unwrap(),
        ]);
        assert!(out.contains("STATUS: deployed"), "{out}");
        assert!(
            !out.to_ascii_lowercase().contains("warning"),
            "helm install warned:\n{out}"
        );
        documents(&rendered)
    })
}

#[tokio::test]
async fn chart_installs_and_its_objects_are_live() {
    let rendered = installed();
    let status = helm_ok(&[
        "status",
        RELEASE,
        "--namespace",
        NS,
        "--kubeconfig",
        admin().to_str().unwrap(),
    ]);
    assert!(status.contains("STATUS: deployed"), "{status}");
    // Every rendered object exists, as rendered (a sample of key fields).
    for object in rendered {
        let kind = str_at(object, &["kind"]);
        let name = str_at(object, &["metadata", "name"]);
        let mut args = vec!["get", kind, name, "-o", "json"];
        let ns = str_at(object, &["metadata", "namespace"]);
        if !ns.is_empty() {
            args.extend(["-n", ns]);
        }
        let live: serde_json::Value = serde_json::from_str(&kubectl_ok(&args)).unwrap();
        assert_eq!(
            live["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm",
            "{kind}/{name}"
        );
        if kind == "ClusterRole" {
            let want: serde_json::Value = serde_json::to_value(&object["rules"]).unwrap();
            let got = live.get("rules").cloned().unwrap_or(serde_json::Value::Null);
            assert_eq!(got, want, "{kind}/{name} rules");
        }
    }
    // The grant starts empty.
    let grant: serde_json::Value = serde_json::from_str(&kubectl_ok(&[
        "get",
        "clusterrole",
        "namespace-provisioner-grant",
        "-o",
        "json",
    ]))
    .unwrap();
    let rules = grant.get("rules").and_then(|r| r.as_array()).map_or(0, Vec::len);
    assert_eq!(rules, 0, "the grant must start empty: {grant}");
    // The ReplicaSet controller creates the provisioner's pod: it passes Pod
    // Security "restricted" in the namespace (there is no kubelet to run it).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pods = kubectl_ok(&[
            "get",
            "pods",
            "-n",
            NS,
            "-l",
            "app.kubernetes.io/component=provisioner",
            "-o",
            "name",
        ]);
        if !pods.trim().is_empty() {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "no provisioner pod within 60 s; events:\n{}",
                text(&kubectl(&["get", "events", "-n", NS]))
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A child process; killed when dropped.
struct Running {
    what: &'static str,
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Running {
    fn spawn(what: &'static str, program: &str, args: &[String], env: &BTreeMap<String, String>) -> Running {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap());
        for (key, _) in std::env::vars() {
            if key.starts_with("NP_") || key.starts_with("AWS_") || key == "KUBECONFIG" {
                command.env_remove(key);
            }
        }
        command.envs(env);
        Running {
            what,
            child: command.spawn().unwrap_or_else(|e| panic!("start {what}: {e}")),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    async fn wait(mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not finish within {timeout:?}:\n{}",
                self.what,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl` an HTTP request; (status, body).
fn curl(method: &str, url: &str, token: Option<&str>) -> (u16, String) {
    let mut command = Command::new("curl");
    command.args(["-sS", "-X", method, "-w", "\n%{http_code}", url]);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let out = command.output().expect("run curl (apt-get install curl)");
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = all.rsplit_once('\n').unwrap_or(("", "000"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// The container of `kind`/`name` in the rendered chart: (args, literal env).
fn configured(kind: &str, name: &str) -> (Vec<String>, BTreeMap<String, String>) {
    let object = find(installed(), kind, name);
    let spec = if kind == "CronJob" {
        &object["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    } else {
        &object["spec"]["template"]["spec"]
    };
    let container = &spec["containers"][0];
    let args = container["args"]
        .as_sequence()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    let env = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|e| e.get("value").is_some())
        .map(|e| (str_at(e, &["name"]).to_owned(), str_at(e, &["value"]).to_owned()))
        .collect();
    (args, env)
}

/// A kubeconfig file for ServiceAccount NS/`sa` (TokenRequest).
async fn identity(sa: &str) -> tempfile::NamedTempFile {
    installed();
    let admin = support::admin().await;
    support::temp_file(&support::service_account_kubeconfig(&admin, NS, sa).await)
}

#[tokio::test]
async fn binaries_configured_by_the_chart_work_as_its_service_accounts() {
    // The provisioner with the chart's environment (listen addresses and the
    // token file path adapted to this machine), as the chart's ServiceAccount.
    let (args, mut env) = configured("Deployment", "namespace-provisioner");
    assert!(args.is_empty(), "the provisioner takes no arguments: {args:?}");
    let identity_file = identity("namespace-provisioner").await;
    let token = "helm-run-token-0123456789abcdef";
    let tokens = support::temp_file(&format!("helm-run {token}\n"));
    let (port, internal) = (support::free_port(), support::free_port());
    env.insert("NP_KUBECONFIG".into(), identity_file.path().display().to_string());
    env.insert("NP_TOKEN_FILE".into(), tokens.path().display().to_string());
    env.insert("NP_LISTEN".into(), format!("127.0.0.1:{port}"));
    env.insert("NP_INTERNAL_LISTEN".into(), format!("127.0.0.1:{internal}"));
    // Both binaries read the chart's propagation ConfigMap; here a file holds
    // the same content.
    let propagation = find(installed(), "ConfigMap", "namespace-provisioner-propagation");
    let propagation = support::temp_file(str_at(propagation, &["data", "propagation.yaml"]));
    let mounted = env.insert(
        "NP_PROPAGATION_CONFIG".into(),
        propagation.path().display().to_string(),
    );
    assert!(
        mounted.is_some(),
        "the chart's provisioner lacks NP_PROPAGATION_CONFIG: {env:?}"
    );
    let mut provisioner = Running::spawn("provisioner", env!("CARGO_BIN_EXE_provisioner"), &args, &env);
    let deadline = Instant::now() + Duration::from_secs(60);
    while curl("GET", &format!("http://127.0.0.1:{internal}/readyz"), None).0 != 200 {
        if let Some(status) = provisioner.child.try_wait().unwrap() {
            panic!("provisioner exited ({status}):\n{}", provisioner.log());
        }
        assert!(
            Instant::now() < deadline,
            "not ready in 60 s:\n{}",
            provisioner.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, kubeconfig) = curl(
        "POST",
        &format!("http://127.0.0.1:{port}/api/v1/namespace?ttl=10m"),
        Some(token),
    );
    assert_eq!(status, 201, "{kubeconfig}\n{}", provisioner.log());
    let file = support::temp_file(&kubeconfig);
    let ns = support::kubectl_ok(
        file.path(),
        &[
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.contexts[0].context.namespace}",
        ],
    );
    let who = support::kubectl_ok(
        file.path(),
        &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
    );
    assert_eq!(who, format!("system:serviceaccount:{ns}:namespace-provisioner"));
    assert!(
        !provisioner.log().to_ascii_lowercase().contains("forbidden"),
        "{}",
        provisioner.log()
    );
    drop(provisioner);

    // The reaper with the CronJob's arguments and environment, as the chart's
    // reaper ServiceAccount, deletes it once expired.
    let past = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60;
    kubectl_ok(&[
        "label",
        "--overwrite",
        "namespace",
        &ns,
        &format!("controller.observatorium.io/expiry={past}"),
    ]);
    let (args, mut env) = configured("CronJob", "namespace-provisioner-reaper");
    assert_eq!(args, ["--once", "--output", "json"]);
    let reaper_identity = identity("namespace-provisioner-reaper").await;
    env.insert(
        "NP_KUBECONFIG".into(),
        reaper_identity.path().display().to_string(),
    );
    env.insert("POD_NAME".into(), "helm-test".into());
    assert!(env.contains_key("NP_PROPAGATION_CONFIG"), "{env:?}");
    env.insert(
        "NP_PROPAGATION_CONFIG".into(),
        propagation.path().display().to_string(),
    );
    let reaper = Running::spawn("reaper --once", env!("CARGO_BIN_EXE_reaper"), &args, &env);
    let (status, log) = reaper.wait(Duration::from_secs(120)).await;
    assert!(status.success(), "reaper ({status}):\n{log}");
    assert!(log.contains("\"expiredDeleted\": 1"), "{log}");
    assert!(!log.to_ascii_lowercase().contains("forbidden"), "{log}");
    let phase = kubectl(&["get", "namespace", &ns, "-o", "jsonpath={.status.phase}"]);
    let phase = String::from_utf8_lossy(&phase.stdout).into_owned();
    assert!(phase.is_empty() || phase == "Terminating", "{ns}: {phase}");
}
