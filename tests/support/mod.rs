//! Test support: one real control plane (etcd + kube-apiserver +
//! kube-controller-manager, built from `tests/cluster`) per test process, or
//! the one named by `NP_TEST_KUBECONFIG`; admin clients; ServiceAccount
//! kubeconfigs; the real kubectl; unique names.
//!
//! A missing prerequisite (Go, a module download) fails the test with the
//! reason; nothing here skips.
//!
//! The rest lives in one place each: [`wait`] (the one wait-until helper),
//! [`process`] (the one child-process wrapper), [`http`] (the one HTTP
//! client), [`fixture`] (the one per-test guard: selector, sets, dump on
//! failure, cleanup by label).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod bench;
pub mod faults;
pub mod fixture;
pub mod http;
pub mod process;
pub mod wait;

// Each test binary uses a part of these.
#[allow(unused_imports)]
pub use fixture::Fixture;
#[allow(unused_imports)]
pub use http::{Answer, answer, http, metric, request, try_http};
#[allow(unused_imports)]
pub use process::{Process, require, tools_path, wait_http_ok};
#[allow(unused_imports)]
pub use wait::eventually;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use namespace_provisioner::kubeconfig::{self, Credentials};
use namespace_provisioner::params::ServerUrl;
use sha2::{Digest, Sha256};

/// A running control plane.
pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub server: String,
    pub data_dir: PathBuf,
    // Held for the life of the process: when the process exits, the pipe
    // closes and the cluster shuts itself down (even after SIGKILL).
    _process: Option<Mutex<(Child, ChildStdin, ChildStdout)>>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ready {
    kubeconfig: PathBuf,
    server: String,
    data_dir: PathBuf,
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The harness binary, built from `tests/cluster` if its sources changed.
pub fn cluster_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("NP_CLUSTER_BIN") {
            return PathBuf::from(bin);
        }
        let src = repo_root().join("tests/cluster");
        let mut hash = Sha256::new();
        for file in ["go.mod", "go.sum", "main.go"] {
            let data =
                std::fs::read(src.join(file)).unwrap_or_else(|e| panic!("read tests/cluster/{file}: {e}"));
            hash.update(&data);
        }
        let digest = hash.finalize();
        let tag: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let out = repo_root().join(format!("target/cluster/np-cluster-{tag}"));
        if out.exists() {
            return out;
        }
        eprintln!("building the test control plane (tests/cluster); the first build takes several minutes");
        let tmp = out.with_extension(format!("tmp{}", std::process::id()));
        let status = Command::new("go")
            .args(["build", "-trimpath", "-ldflags=-s -w", "-o"])
            .arg(&tmp)
            .arg(".")
            .current_dir(&src)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `go` to build the test control plane ({e}); install Go >= 1.24 (see README)"
                )
            });
        assert!(
            status.success(),
            "`go build` of tests/cluster failed ({status}); see the output above"
        );
        std::fs::rename(&tmp, &out).expect("move the built harness into place");
        // Binaries of older sources are never used again (160 MB each).
        for entry in std::fs::read_dir(out.parent().unwrap())
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = entry.path();
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if name.starts_with("np-cluster-") && path != out && !name.contains(".tmp") {
                let _ = std::fs::remove_file(path);
            }
        }
        out
    })
    .clone()
}

/// The part of a failed harness log a person needs: the lines before a Go
/// panic's goroutine dump (etcd logs the cause, such as "no space left on
/// device", just before it panics), or the last 30 lines.
fn failure_excerpt(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let end = lines
        .iter()
        .position(|line| line.starts_with("goroutine "))
        .unwrap_or(lines.len());
    lines[end.saturating_sub(30)..end].join("\n")
}

impl Cluster {
    /// Start a new control plane owned by this process.
    pub fn start() -> Cluster {
        Cluster::start_with(&[])
    }

    /// Start a new control plane whose kube-apiserver also gets
    /// `apiserver_args` (`--FLAG=VALUE` each).
    pub fn start_with(apiserver_args: &[String]) -> Cluster {
        let bin = cluster_bin();
        let logs = repo_root().join("target/cluster/logs");
        std::fs::create_dir_all(&logs).expect("create target/cluster/logs");
        let log_path = logs.join(format!("{}-{}.log", std::process::id(), unique("run")));
        let log = std::fs::File::create(&log_path).expect("create cluster log");
        let mut child = Command::new(&bin)
            .args(["serve", "--exit-on-stdin-eof"])
            .args(apiserver_args.iter().map(|a| format!("--apiserver-arg={a}")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        // The harness prints one line once ready, or exits on failure.
        let read = stdout.read_line(&mut line).expect("read the harness ready line");
        if read == 0 {
            let status = child.wait().ok();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail = failure_excerpt(&log);
            panic!(
                "test control plane exited before ready ({status:?}); log {}:\n{tail}",
                log_path.display()
            );
        }
        let ready: Ready = serde_json::from_str(&line).expect("parse the harness ready line");
        Cluster {
            kubeconfig: ready.kubeconfig,
            server: ready.server,
            data_dir: ready.data_dir,
            _process: Some(Mutex::new((child, stdin, stdout.into_inner()))),
        }
    }

    /// Stop a cluster this process started and wait for it to exit.
    pub fn stop(self) {
        if let Some(process) = self._process {
            let (mut child, stdin, _out) = process.into_inner().unwrap();
            drop(stdin);
            let status = child.wait().expect("wait for the control plane");
            assert!(status.success(), "control plane exited with {status}");
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self._process.as_ref().map(|p| p.lock().unwrap().0.id())
    }

    pub async fn client(&self) -> Client {
        client_from_file(&self.kubeconfig).await
    }

    pub fn server_url(&self) -> ServerUrl {
        self.server.parse().unwrap()
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.data_dir.join("ca.crt")).expect("read the cluster CA")
    }
}

/// The cluster shared by every test of this process.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| match std::env::var("NP_TEST_KUBECONFIG") {
        Ok(path) => {
            let config = Kubeconfig::read_from(&path).expect("read NP_TEST_KUBECONFIG");
            let server = config.clusters[0]
                .cluster
                .as_ref()
                .unwrap()
                .server
                .clone()
                .unwrap();
            Cluster {
                kubeconfig: PathBuf::from(&path),
                server,
                data_dir: Path::new(&path).parent().unwrap().to_path_buf(),
                _process: None,
            }
        }
        Err(_) => Cluster::start(),
    })
}

pub async fn client_from_file(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("load kubeconfig");
    Client::try_from(config).expect("build client")
}

pub async fn client_from_yaml(yaml: &str) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(yaml).expect("parse kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("load kubeconfig");
    Client::try_from(config).expect("build client")
}

/// An admin client for the shared cluster.
pub async fn admin() -> Client {
    cluster().client().await
}

/// A DNS-label name unique to this run: `<prefix>-<random>`.
pub fn unique(prefix: &str) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    let suffix: String = (0..8)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}-{suffix}")
}

/// A kubeconfig (YAML) acting as ServiceAccount `namespace/name`, from the TokenRequest API.
pub async fn service_account_kubeconfig(client: &Client, namespace: &str, name: &str) -> String {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let issued = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("TokenRequest");
    let c = cluster();
    let ca = c.ca_pem();
    let config = kubeconfig::build(Credentials {
        namespace,
        server: &c.server_url(),
        ca_pem: Some(&ca),
        token: issued.status.unwrap().token.into(),
    });
    kubeconfig::to_yaml(&config).unwrap()
}

/// Write `contents` to a fresh file that lives as long as the returned handle.
pub fn temp_file(contents: &str) -> tempfile::NamedTempFile {
    use std::io::Write;
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(contents.as_bytes()).expect("write temp file");
    f
}

/// Run the real kubectl (from the harness) with `kubeconfig`, from the
/// repository root (so `-k function` and `-f cronjob/...` resolve).
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(cluster_bin())
        .arg("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run kubectl")
}

/// Like [`kubectl`], panicking with its output unless it succeeds.
pub fn kubectl_ok(kubeconfig: &Path, args: &[&str]) -> String {
    let out = kubectl(kubeconfig, args);
    assert!(out.status.success(), "kubectl {args:?} failed:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A finished command's stdout then stderr, as text (for failure messages).
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The one "now" of the tests: Unix seconds by the wall clock (the clock the
/// provisioner and the reaper read, so expiries compare).
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Requests a client sent: method, path and query, and when.
#[derive(Default)]
pub struct RequestLog(Mutex<Vec<(::http::Method, String, std::time::SystemTime)>>);

impl RequestLog {
    pub fn entries(&self) -> Vec<(::http::Method, String, std::time::SystemTime)> {
        self.0.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }

    /// How many requests of `method` whose path (before `?`) satisfies `path`.
    pub fn count(&self, method: &::http::Method, path: impl Fn(&str) -> bool) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p, _)| m == method && path(p.split('?').next().unwrap_or_default()))
            .count()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// An admin client for the shared cluster that records every request it sends
/// (a tower layer on the kube client), to count API calls.
pub async fn counting_client() -> (Client, std::sync::Arc<RequestLog>) {
    counting_client_for(&cluster().kubeconfig).await
}

pub async fn counting_client_for(kubeconfig: &Path) -> (Client, std::sync::Arc<RequestLog>) {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("load kubeconfig");
    let log = std::sync::Arc::new(RequestLog::default());
    let record = log.clone();
    let layer = tower::util::MapRequestLayer::new(move |request: ::http::Request<kube::client::Body>| {
        let path = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        record
            .0
            .lock()
            .unwrap()
            .push((request.method().clone(), path, std::time::SystemTime::now()));
        request
    });
    let client = kube::client::ClientBuilder::try_from(config)
        .expect("client builder")
        .with_layer(&layer)
        .build();
    (client, log)
}

/// Create a Namespace named `name` with `labels`.
pub async fn create_namespace(
    client: &Client,
    name: &str,
    labels: &[(&str, &str)],
) -> k8s_openapi::api::core::v1::Namespace {
    use k8s_openapi::api::core::v1::Namespace;
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    create_named(&Api::<Namespace>::all(client.clone()), name, labels).await
}

/// Create a ClusterRole named `name` with `rules`.
pub async fn create_cluster_role(
    client: &Client,
    name: &str,
    rules: Vec<k8s_openapi::api::rbac::v1::PolicyRule>,
) {
    create_cluster_role_labelled(client, name, rules, &[]).await;
}

/// Create a ClusterRole named `name` with `rules` and `labels` (a fixture's
/// owner label, so it is cleaned up with the test).
pub async fn create_cluster_role_labelled(
    client: &Client,
    name: &str,
    rules: Vec<k8s_openapi::api::rbac::v1::PolicyRule>,
    labels: &[(&str, &str)],
) {
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Api::<ClusterRole>::all(client.clone())
        .create(
            &PostParams::default(),
            &ClusterRole {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.to_owned()),
                    labels: Some(labels),
                    ..Default::default()
                },
                rules: Some(rules),
                ..ClusterRole::default()
            },
        )
        .await
        .unwrap();
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Decode a JWT's claims (no verification: the API server already did that).
pub fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url claims");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// An RBAC rule, for tests that build Roles and ClusterRoles.
pub fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> k8s_openapi::api::rbac::v1::PolicyRule {
    k8s_openapi::api::rbac::v1::PolicyRule {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Create an object of kind `K` with only a name and `labels` (a ConfigMap,
/// a ServiceAccount, a Namespace, ...) through `api`.
pub async fn create_named<K>(
    api: &Api<K>,
    name: &str,
    labels: std::collections::BTreeMap<String, String>,
) -> K
where
    K: kube::Resource + Default + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    let mut object = K::default();
    let meta = object.meta_mut();
    meta.name = Some(name.to_owned());
    meta.labels = Some(labels);
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"))
}
