//! Error lines as a person reads them, from the real control plane: a 403,
//! a missing grant ClusterRole (404), a 409 and an unreachable API server.
//! Each is one line naming the action, the API server's message once, the
//! HTTP status and reason, and a hint; never a `Debug` dump (`Status {`).
//! JSON logs carry the refusal as fields.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod rbac_support;
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams};
use namespace_provisioner::k8s;
use namespace_provisioner::rules::permissions::{Identity, Permission, PermissionContext, required};
use namespace_provisioner::telemetry;
use rbac_support::{await_rbac, identity};
use serde_json::Value;
use support::Fixture;
use support::process::Process;

const SELECTOR_KEY: &str = "np-test/errors";

/// What every readable line satisfies: one line, no `Debug` dump, no
/// repeated message.
fn assert_readable(line: &str, message: &str) {
    assert!(!line.contains('\n'), "more than one line: {line}");
    assert!(
        !line.contains("Status {") && !line.contains("ApiError"),
        "a Debug dump: {line}"
    );
    assert_eq!(
        line.matches(message).count(),
        1,
        "`{message}` not exactly once in: {line}"
    );
}

fn run_reaper(kubeconfig: &Path, fx: &Fixture, extra: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reaper"))
        .args(["--kubeconfig", &kubeconfig.display().to_string()])
        .args(["--selector", &fx.selector.to_string()])
        .args(extra)
        .env_remove("NP_SELECTOR")
        .env("NP_LOG", "info")
        .env("NP_LOG_FORMAT", "json")
        .output()
        .expect("run the reaper");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The binary's last words: `reaper: ...` on stderr.
fn last_words<'a>(stderr: &'a str, binary: &str) -> &'a str {
    let prefix = format!("{binary}: ");
    stderr
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{stderr}"))
}

/// JSON log lines whose message is `message`.
fn json_lines(log: &str, message: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == message)
        .collect()
}

#[tokio::test]
async fn a_403_names_the_action_the_message_once_and_the_status() {
    let fx = Fixture::new(SELECTOR_KEY).await;
    let home = fx.create_unmanaged("np-errors", BTreeMap::new()).await;
    let reaper = required(
        Identity::Reaper { watch: false },
        &PermissionContext {
            grant_cluster_role: "namespace-provisioner-grant",
            lease_namespace: None,
            propagated: &[],
        },
    );
    let grants: Vec<&Permission> = reaper
        .iter()
        .filter(|p| !(p.verb == "list" && p.resource == "serviceaccounts"))
        .collect();
    let kubeconfig = identity(&fx, &home, "no-list-sa", &grants).await;
    await_rbac(kubeconfig.path(), grants[0]).await;

    // Past the preflight on purpose, to meet the refusal itself.
    let (code, _, stderr) = run_reaper(kubeconfig.path(), &fx, &["--once", "--skip-preflight"]);
    assert_eq!(code, Some(2), "{stderr}");
    let line = last_words(&stderr, "reaper");
    assert_readable(line, "is forbidden");
    assert!(line.contains("list ServiceAccount"), "the action: {line}");
    assert!(
        line.contains("(403 Forbidden; RBAC does not grant"),
        "status, reason, hint: {line}"
    );
    let logged = json_lines(&stderr, "reaper could not run");
    assert_eq!(logged.len(), 1, "{stderr}");
    assert_eq!(logged[0]["status"], 403, "{}", logged[0]);
    assert_eq!(logged[0]["reason"], "Forbidden");
    assert_eq!(logged[0]["kind"], "serviceaccounts");

    // Without --skip-preflight it names the permission and the manifest instead.
    let (code, _, stderr) = run_reaper(kubeconfig.path(), &fx, &["--once"]);
    assert_eq!(code, Some(2), "{stderr}");
    let line = last_words(&stderr, "reaper");
    assert_readable(line, "cannot list serviceaccounts at cluster scope");
    assert!(line.ends_with("— apply cronjob/base/clusterrole.yaml"), "{line}");
}

#[tokio::test]
async fn a_missing_grant_cluster_role_says_how_to_create_it() {
    let fx = Fixture::new(SELECTOR_KEY).await;
    let home = fx.create_unmanaged("np-errors", BTreeMap::new()).await;
    // The provisioner's rights without `bind` on ClusterRoles (the shipped
    // RBAC binds any ClusterRole, for copies; an identity that holds `bind`
    // makes the API server skip looking the role up). Without it the API
    // server's escalation check looks the missing role up and answers 404.
    let rights = required(
        Identity::Provisioner,
        &PermissionContext {
            grant_cluster_role: "namespace-provisioner-grant",
            lease_namespace: None,
            propagated: &[],
        },
    );
    let grants: Vec<&Permission> = rights
        .iter()
        .filter(|p| !(p.verb == "bind" && p.resource == "clusterroles"))
        .collect();
    let kubeconfig = identity(&fx, &home, "provisioner", &grants).await;
    await_rbac(kubeconfig.path(), grants[0]).await;
    let missing = support::unique("np-missing-grant");
    let internal = format!("127.0.0.1:{}", support::free_port());
    let addr = format!("127.0.0.1:{}", support::free_port());
    let mut process = Process::spawn(
        "errors-provisioner",
        env!("CARGO_BIN_EXE_provisioner"),
        &[],
        &[
            ("NP_LISTEN", addr.clone()),
            ("NP_INTERNAL_LISTEN", internal.clone()),
            ("NP_KUBECONFIG", kubeconfig.path().display().to_string()),
            ("NP_INSECURE_ALLOW_UNAUTHENTICATED", "true".into()),
            ("NP_SELECTOR", fx.selector.to_string()),
            ("NP_CLUSTER_ROLE", missing.clone()),
            ("NP_SKIP_PREFLIGHT", "true".into()),
            ("NP_LOG_FORMAT", "json".into()),
        ],
    );
    support::wait_http_ok(&internal, "/readyz", &mut process).await;
    let answer = support::http(&addr, "POST", "/api/v1/namespace?ttl=10m", None, None).await;
    assert_eq!(answer.status, 500, "{answer:?}\n{}", process.log());
    let log = process.log();
    let line = log
        .lines()
        .find(|l| l.contains("request failed"))
        .unwrap_or_else(|| panic!("no failed request logged:\n{log}"));
    let message = format!("\\\"{missing}\\\" not found");
    let plain = format!("\"{missing}\" not found");
    let shown = if line.contains(&message) { message } else { plain };
    assert_readable(line, &shown);
    assert!(line.contains("(404 NotFound"), "{line}");
    assert!(
        line.contains("create it: function/grant-clusterrole.yaml"),
        "{line}"
    );
    // The refusal as fields beside the line (the HTTP answer keeps `status`).
    let logged: Value = serde_json::from_str(line).unwrap();
    assert_eq!(logged["status"], 500, "{logged}");
    assert_eq!(logged["api_status"], 404, "{logged}");
    assert_eq!(logged["api_reason"], "NotFound", "{logged}");
}

#[tokio::test]
async fn a_refused_repair_logs_the_refusal_as_fields_and_an_audit_line() {
    let fx = Fixture::new(SELECTOR_KEY).await;
    let home = fx.create_unmanaged("np-errors", BTreeMap::new()).await;
    let set = fx.create_set("np-errors", support::now() + 3600).await;
    let namespace = set.namespace.metadata.name.clone().unwrap();
    Api::<ServiceAccount>::namespaced(fx.client.clone(), &namespace)
        .delete("namespace-provisioner", &DeleteParams::default())
        .await
        .unwrap();
    // Every right of a sweep but writing ServiceAccounts (server-side apply is a PATCH).
    let reaper = required(
        Identity::Reaper { watch: false },
        &PermissionContext {
            grant_cluster_role: "namespace-provisioner-grant",
            lease_namespace: None,
            propagated: &[],
        },
    );
    let grants: Vec<&Permission> = reaper
        .iter()
        .filter(|p| !(p.verb == "patch" && p.resource == "serviceaccounts"))
        .collect();
    let kubeconfig = identity(&fx, &home, "no-patch-sa", &grants).await;
    await_rbac(kubeconfig.path(), grants[0]).await;

    let (code, _, stderr) = run_reaper(kubeconfig.path(), &fx, &["--once", "--skip-preflight"]);
    assert_eq!(code, Some(1), "a set failed:\n{stderr}");
    let failed = json_lines(&stderr, "write failed");
    assert_eq!(failed.len(), 1, "{stderr}");
    let line = &failed[0];
    assert_eq!(line["status"], 403, "{line}");
    assert_eq!(line["reason"], "Forbidden", "{line}");
    assert_eq!(
        line["namespace"],
        namespace.as_str(),
        "the request's target: {line}"
    );
    assert_eq!(line["name"], "namespace-provisioner", "{line}");
    assert_eq!(line["set"], namespace.as_str(), "{line}");
    assert_readable(line["error"].as_str().unwrap(), "is forbidden");

    let audit: Vec<Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["audit"] == true && v["namespace"] == namespace.as_str())
        .collect();
    assert_eq!(audit.len(), 1, "{stderr}");
    assert_eq!(audit[0]["action"], "repair", "{}", audit[0]);
    assert_eq!(audit[0]["outcome"], "failed", "{}", audit[0]);
    assert_eq!(audit[0]["tenant"], fx.tenant().as_str(), "{}", audit[0]);
    assert!(
        audit[0]["reason"]
            .as_str()
            .unwrap()
            .contains("ServiceAccount/namespace-provisioner"),
        "{}",
        audit[0]
    );
}

#[tokio::test]
async fn a_409_reads_once_with_its_status() {
    let fx = Fixture::new(SELECTOR_KEY).await;
    let name = fx.create_unmanaged("np-errors", BTreeMap::new()).await;
    let error = k8s::delete_namespace(&fx.client, &name, "00000000-0000-0000-0000-000000000000")
        .await
        .expect_err("a uid precondition that cannot hold");
    assert!(error.is_conflict(), "{error}");
    let line = telemetry::chain(&error);
    assert_readable(&line, "Precondition failed");
    assert!(
        line.contains("(409 Conflict; the object changed or was replaced meanwhile"),
        "{line}"
    );
    let failure = telemetry::api_failure(&error).unwrap();
    assert_eq!((failure.status, failure.reason.as_str()), (409, "Conflict"));
    assert_eq!(failure.namespace.as_deref(), Some(name.as_str()));
    // Untouched.
    Api::<Namespace>::all(fx.client.clone()).get(&name).await.unwrap();
}

#[tokio::test]
async fn an_unreachable_api_server_says_so_once() {
    let fx = Fixture::new(SELECTOR_KEY).await;
    let kubeconfig = std::fs::read_to_string(&support::cluster().kubeconfig).unwrap();
    let server = support::cluster().server.clone();
    let server = server.trim_end_matches('/');
    assert!(kubeconfig.contains(server), "{server} not in the kubeconfig");
    let nowhere = kubeconfig.replace(server, &format!("https://127.0.0.1:{}", support::free_port()));
    let nowhere = support::temp_file(&nowhere);
    for extra in [&["--once"][..], &["--once", "--skip-preflight"][..]] {
        let (code, _, stderr) = run_reaper(nowhere.path(), &fx, extra);
        assert_eq!(code, Some(2), "{stderr}");
        let line = last_words(&stderr, "reaper");
        assert_readable(line, "cannot reach the API server");
        assert_readable(line, "Connection refused");
        assert!(line.contains("check the server URL"), "{line}");
    }
}

/// With the shipped rights (`bind` on any ClusterRole, for copies) the API
/// server accepts a binding to a missing grant ClusterRole, so the
/// provisioner looks it up itself: not ready, with the hint, until it exists.
#[tokio::test]
async fn a_missing_grant_cluster_role_keeps_the_provisioner_unready_until_it_exists() {
    let fx = Fixture::new(SELECTOR_KEY).await;
    let home = fx.create_unmanaged("np-errors", BTreeMap::new()).await;
    let missing = support::unique("np-later-grant");
    let rights = required(
        Identity::Provisioner,
        &PermissionContext {
            grant_cluster_role: &missing,
            lease_namespace: None,
            propagated: &[],
        },
    );
    let grants: Vec<&Permission> = rights.iter().collect();
    let kubeconfig = identity(&fx, &home, "provisioner-gate", &grants).await;
    await_rbac(kubeconfig.path(), grants[0]).await;
    let internal = format!("127.0.0.1:{}", support::free_port());
    let mut process = Process::spawn(
        "errors-provisioner-gate",
        env!("CARGO_BIN_EXE_provisioner"),
        &[],
        &[
            ("NP_LISTEN", format!("127.0.0.1:{}", support::free_port())),
            ("NP_INTERNAL_LISTEN", internal.clone()),
            ("NP_KUBECONFIG", kubeconfig.path().display().to_string()),
            ("NP_INSECURE_ALLOW_UNAUTHENTICATED", "true".into()),
            ("NP_SELECTOR", fx.selector.to_string()),
            ("NP_CLUSTER_ROLE", missing.clone()),
            ("NP_PREFLIGHT_INTERVAL", "1s".into()),
        ],
    );
    let hint =
        format!("the grant ClusterRole {missing} does not exist: create it: function/grant-clusterrole.yaml");
    support::eventually(
        std::time::Duration::from_secs(60),
        "/readyz to refuse, naming the missing grant ClusterRole",
        || {
            process.assert_running();
            let (internal, hint) = (internal.clone(), hint.clone());
            async move {
                match support::try_http(&internal, "GET", "/readyz", None, None).await {
                    Some(answer) if answer.status == 503 && answer.body.contains(&hint) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
    assert_eq!(
        process.log().matches(&hint).count(),
        1,
        "logged once, not on every check:\n{}",
        process.log()
    );
    fx.create_cluster_role(&missing, Vec::new()).await;
    support::wait_http_ok(&internal, "/readyz", &mut process).await;
}
