//! Support for the deployment tests (tests/deploy_*.rs, tests/lambda.rs):
//! apply the repository's manifests once per test process, credentials for
//! the ServiceAccounts they create, kubectl as the admin. Child processes,
//! HTTP and waiting are `support`'s (`Running` and `wait_ok` are its
//! `Process` and `wait_http_ok_within` under the names these tests know).
//!
//! Everything here works against the real control plane of `support`; a
//! missing prerequisite fails the calling test with the reason.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use crate::support;
#[allow(unused_imports)]
pub use crate::support::process::wait_http_ok_within as wait_ok;
#[allow(unused_imports)]
pub use crate::support::{Process as Running, text};

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
    support::kubectl(&admin_kubeconfig(), args)
}

/// Like [`kubectl`], panicking with its output unless it succeeds.
pub fn kubectl_ok(args: &[&str]) -> String {
    support::kubectl_ok(&admin_kubeconfig(), args)
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

/// The selector key the admission policies know (function/admission-policy.yaml).
pub const SELECTOR_KEY: &str = "controller.observatorium.io";

/// A label selector unique to one test, under the key the admission policies know.
pub fn unique_selector() -> String {
    format!("{SELECTOR_KEY}={}", support::unique("np-deploy"))
}

/// A test's fixture under the key the admission policies know; its sets bind
/// the shipped grant ClusterRole.
pub async fn fixture() -> support::Fixture {
    support::Fixture::new(SELECTOR_KEY).await.with_grant(GRANT)
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
