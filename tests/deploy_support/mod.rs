//! Support for the deployment tests (tests/deploy.rs, tests/lambda.rs): apply
//! the repository's manifests once per test process, credentials for the
//! ServiceAccounts they create, the real binaries as child processes on
//! loopback ports (HTTP through `support::http`).
//!
//! Everything here works against the real control plane of `support`; a
//! missing prerequisite fails the calling test with the reason.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::support;

/// Namespace the manifests run in (cronjob/base/namespace.yaml, function/namespace.yaml).
pub const NS: &str = "namespace-provisioner";
/// The provisioner's ServiceAccount (function/serviceaccount.yaml).
pub const PROVISIONER_SA: &str = "namespace-provisioner";
/// The reaper's ServiceAccount (cronjob/base/serviceaccount.yaml).
pub const REAPER_SA: &str = "namespace-provisioner-reaper";
/// The grant ClusterRole (function/grant-clusterrole.yaml).
pub const GRANT: &str = "namespace-provisioner-grant";
/// The kustomizations, in the order an operator applies them.
pub const KUSTOMIZATIONS: [&str; 3] = ["function", "cronjob", "cronjob/watch"];
/// Optional RBAC for --role-rules-file, applied by the test that needs it.
pub const ROLE_RULES_KUSTOMIZATION: &str = "function/role-rules";

pub fn repo() -> PathBuf {
    support::repo_root()
}

fn admin_kubeconfig() -> PathBuf {
    support::cluster().kubeconfig.clone()
}

/// kubectl as the cluster admin, run from the repository root.
pub fn kubectl(args: &[&str]) -> Output {
    Command::new(support::cluster_bin())
        .arg("kubectl")
        .arg("--kubeconfig")
        .arg(admin_kubeconfig())
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run kubectl")
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Like [`kubectl`], panicking with its output unless it succeeds.
pub fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(out.status.success(), "kubectl {args:?} failed:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What applying the manifests printed, for the test that checks it.
pub struct Deployed {
    /// (what, `kubectl apply --dry-run=server` output, `kubectl apply` output)
    pub steps: Vec<(String, String, String)>,
}

/// Apply every manifest of the repository once per test process: each step
/// first with `--dry-run=server`, then for real. Namespaced objects can only
/// be dry-run once their namespace exists, so the namespace goes first.
pub fn deployed() -> &'static Deployed {
    static DEPLOYED: OnceLock<Deployed> = OnceLock::new();
    DEPLOYED.get_or_init(|| {
        let mut steps = Vec::new();
        let mut step = |what: &str, args: &[&str]| {
            let mut dry = vec!["apply", "--dry-run=server"];
            dry.extend_from_slice(args);
            let dry_out = kubectl(&dry);
            assert!(
                dry_out.status.success(),
                "kubectl {dry:?} failed:\n{}",
                text(&dry_out)
            );
            let mut real = vec!["apply"];
            real.extend_from_slice(args);
            let real_out = kubectl(&real);
            assert!(
                real_out.status.success(),
                "kubectl {real:?} failed:\n{}",
                text(&real_out)
            );
            steps.push((what.to_owned(), text(&dry_out), text(&real_out)));
        };
        step(
            "cronjob/base/namespace.yaml",
            &["-f", "cronjob/base/namespace.yaml"],
        );
        step("function/namespace.yaml", &["-f", "function/namespace.yaml"]);
        for k in KUSTOMIZATIONS {
            step(k, &["-k", k]);
        }
        Deployed { steps }
    })
}

/// A kubeconfig file acting as ServiceAccount `NS/name` (TokenRequest).
pub async fn sa_kubeconfig(name: &str) -> tempfile::NamedTempFile {
    deployed();
    let admin = support::admin().await;
    support::temp_file(&support::service_account_kubeconfig(&admin, NS, name).await)
}

/// kubectl as whoever `kubeconfig` says.
pub fn kubectl_as(kubeconfig: &Path, args: &[&str]) -> Output {
    support::kubectl(kubeconfig, args)
}

/// `kubectl auth can-i` as `kubeconfig`: true for "yes", false for "no".
pub fn can_i(kubeconfig: &Path, args: &[&str]) -> bool {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    let out = kubectl_as(kubeconfig, &all);
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match answer.as_str() {
        "yes" => true,
        "no" => false,
        _ => panic!("kubectl {all:?} answered neither yes nor no:\n{}", text(&out)),
    }
}

/// A label selector unique to one test, under the key the admission policies know.
pub fn unique_selector() -> String {
    format!("controller.observatorium.io={}", support::unique("np-deploy"))
}

/// A child process of a test, its stdout+stderr in a log file; killed when dropped.
pub struct Running {
    pub name: String,
    child: Option<Child>,
    log: tempfile::NamedTempFile,
}

impl Running {
    pub fn spawn(name: &str, program: &Path, args: &[String], envs: &[(&str, String)]) -> Running {
        let log = tempfile::NamedTempFile::new().unwrap();
        let out = log.reopen().unwrap();
        let err = log.reopen().unwrap();
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .current_dir(repo());
        // Nothing from the test's own environment decides how they run.
        for (key, _) in std::env::vars() {
            if key.starts_with("NP_") || key.starts_with("AWS_") || key == "KUBECONFIG" {
                cmd.env_remove(key);
            }
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({}): {e}", program.display()));
        Running {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Panic with the log if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("{} exited early ({status}):\n{}", self.name, self.log());
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {}", child.id());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "{} did not stop within 30s of SIGTERM:\n{}",
                    self.name,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait (bounded) for the process to exit by itself.
    pub async fn wait(mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, self.log());
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{} did not finish within {timeout:?}:\n{}", self.name, self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Lines of a log that say the API refused something for lack of permission.
pub fn forbidden_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("forbidden") || (l.contains("cannot ") && l.contains("system:serviceaccount"))
        })
        .collect()
}

/// Poll `GET http://addr/path` until it answers 200, or fail with `proc`'s log.
pub async fn wait_ok(addr: &str, path: &str, proc: &mut Running, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        proc.assert_running();
        if tokio::net::TcpStream::connect(addr).await.is_ok()
            && support::http(addr, "GET", path, None, None).await.status == 200
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "http://{addr}{path} did not answer 200 within {timeout:?}; {} log:\n{}",
            proc.name,
            proc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
