//! `kubectl-np` against the real provisioner binary and the real control
//! plane: every subcommand, `--wait` that really waits, kubeconfigs the real
//! kubectl can use, problem+json shown on one line, and the documented exit
//! codes (0 ok, 1 API error, 2 usage, 3 not found).
//!
//! Each test starts its own provisioner with its own selector value and grant
//! ClusterRole, so tests run in parallel on one cluster without seeing each
//! other's namespaces. The plugin runs with a cleared environment and an empty
//! HOME, so nothing from the developer's shell or config leaks in.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use support::{Process, admin, cluster, temp_file, unique};

const TOKEN: &str = "plugin-token-0123456789abcdef";
const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-np");

/// A provisioner binary serving tenant `alice` (token [`TOKEN`]) on its own selector.
struct Server {
    url: String,
    selector: String,
    grant: String,
    admin: Client,
    process: Option<Process>,
    _token_file: tempfile::NamedTempFile,
}

impl Server {
    async fn start() -> Server {
        Server::start_with(&[]).await
    }

    /// With more environment for the provisioner (e.g. `NP_AUTH`).
    async fn start_with(extra: &[(&str, String)]) -> Server {
        let admin = admin().await;
        let grant = unique("np-grant");
        support::create_cluster_role(
            &admin,
            &grant,
            vec![support::rule(&[""], &["configmaps"], &["create", "get", "list"])],
        )
        .await;
        let selector = format!("np-test.example.com/provisioner={}", unique("t"));
        let token_file = temp_file(&format!("alice {TOKEN}\n"));
        let mut env = vec![
            ("NP_TOKEN_FILE", token_file.path().display().to_string()),
            ("NP_KUBECONFIG", cluster().kubeconfig.display().to_string()),
            ("NP_SELECTOR", selector.clone()),
            ("NP_CLUSTER_ROLE", grant.clone()),
        ];
        env.extend(extra.iter().cloned());
        let provisioner =
            support::process::start_provisioner("plugin-provisioner", &[], &env, "/readyz").await;
        Server {
            url: format!("http://{}", provisioner.addr),
            selector,
            grant,
            admin,
            process: Some(provisioner.process),
            _token_file: token_file,
        }
    }

    async fn namespace(&self, name: &str) -> Option<Namespace> {
        Api::<Namespace>::all(self.admin.clone())
            .get_opt(name)
            .await
            .unwrap()
    }

    async fn cleanup(mut self) {
        let api = Api::<Namespace>::all(self.admin.clone());
        for ns in api
            .list(&ListParams::default().labels(&self.selector))
            .await
            .unwrap()
        {
            let _ = api.delete(&ns.name_any(), &DeleteParams::default()).await;
        }
        let _ = Api::<ClusterRole>::all(self.admin.clone())
            .delete(&self.grant, &DeleteParams::default())
            .await;
        if let Some(process) = self.process.take() {
            let (status, log) = process.terminate().await;
            assert!(status.success(), "{status}\n{log}");
            assert!(!log.contains(TOKEN), "token in the provisioner log");
        }
    }
}

/// What one run of the plugin did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "{self:?}");
        self
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// Run the plugin with only `env` (plus PATH and an empty HOME) set.
fn np(env: &[(&str, &str)], args: &[&str]) -> Run {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(PLUGIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !run.stdout.contains(TOKEN) && !run.stderr.contains(TOKEN),
        "the provisioner token was printed: {run:?}"
    );
    run
}

/// The plugin as alice of `server`, URL and token from the environment.
fn alice(server: &Server, args: &[&str]) -> Run {
    np(&[("NP_URL", &server.url), ("NP_TOKEN", TOKEN)], args)
}

fn timestamp(value: &serde_json::Value) -> jiff::Timestamp {
    value.as_str().unwrap().parse().unwrap()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn every_subcommand_against_the_real_provisioner() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();

    // create -o kubeconfig --write-kubeconfig: the kubeconfig on stdout and in
    // a private file, and the real kubectl works inside the namespace with it.
    let kc = dir.path().join("kc");
    let created = alice(
        &server,
        &[
            "create",
            "--ttl",
            "10m",
            "-o",
            "kubeconfig",
            "--write-kubeconfig",
            kc.to_str().unwrap(),
            "--wait",
        ],
    )
    .ok();
    assert_eq!(std::fs::read_to_string(&kc).unwrap(), created.stdout);
    assert_eq!(mode(&kc), 0o600);
    let first = support::kubectl_ok(
        &kc,
        &[
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.contexts[0].context.namespace}",
        ],
    );
    assert!(first.starts_with("np-"), "{first}");
    support::kubectl_ok(&kc, &["create", "configmap", "from-plugin"]);
    support::kubectl_ok(&kc, &["get", "configmap", "from-plugin"]);
    assert!(server.namespace(&first).await.is_some());

    // create -o json: the API's answer.
    let second = alice(&server, &["create", "--ttl", "10m", "-o", "json"])
        .ok()
        .json();
    let second_name = second["name"].as_str().unwrap().to_owned();
    assert!(second["kubeconfig"].as_str().unwrap().contains(&second_name));
    // Default output with --write-kubeconfig: one summary line.
    let kc3 = dir.path().join("kc3");
    let third = alice(&server, &["create", "--write-kubeconfig", kc3.to_str().unwrap()]).ok();
    assert!(
        third.stdout.starts_with("namespace/np-") && third.stdout.contains("created, expires in"),
        "{third:?}"
    );
    assert!(
        third
            .stdout
            .trim_end()
            .ends_with(&format!("kubeconfig written to {}", kc3.display()))
    );
    let third_name = third.stdout["namespace/".len()..]
        .split(' ')
        .next()
        .unwrap()
        .to_owned();

    // list: a kubectl-like table of alice's three namespaces; -o json the same.
    let list = alice(&server, &["list"]).ok();
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{list:?}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["NAME", "TENANT", "PARENT", "AGE", "EXPIRES-IN", "PHASE"]);
    let expires_column = lines[0].find("EXPIRES-IN").unwrap();
    for name in [&first, &second_name, &third_name] {
        let row = lines
            .iter()
            .find(|l| l.starts_with(name.as_str()))
            .expect("row per namespace");
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[1], "alice");
        assert_eq!(cells[2], "<none>");
        assert_eq!(cells[5], "Active");
        // Aligned: every row's EXPIRES-IN starts under the header's.
        assert_eq!(
            row[expires_column..].split_whitespace().next(),
            Some(cells[4]),
            "{list:?}"
        );
    }
    let listed = alice(&server, &["list", "-o", "json"]).ok().json();
    assert_eq!(listed["items"].as_array().unwrap().len(), 3);
    assert_eq!(
        alice(&server, &["list", "-o", "name"])
            .ok()
            .stdout
            .lines()
            .count(),
        3
    );

    // get: table, yaml.
    let got = alice(&server, &["get", &first]).ok();
    assert_eq!(got.stdout.lines().count(), 2, "{got:?}");
    assert!(got.stdout.contains("Active"));
    let yaml = alice(&server, &["get", &first, "-o", "yaml"]).ok();
    assert!(yaml.stdout.contains(&format!("name: {first}")), "{yaml:?}");
    let before = timestamp(&alice(&server, &["get", &first, "-o", "json"]).ok().json()["expiresAt"]);

    // extend: a later expiry and a fresh, working kubeconfig.
    let extended = alice(&server, &["extend", &first, "--ttl", "20m", "-o", "json"])
        .ok()
        .json();
    let after_extend = timestamp(&extended["expiresAt"]);
    assert!(
        after_extend.as_second() - before.as_second() >= 9 * 60,
        "{before} -> {after_extend}"
    );

    // kubeconfig without --ttl: a usage error that explains, and no change.
    let refused = alice(&server, &["kubeconfig", &first]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(refused.stderr.contains("--ttl remaining"), "{refused:?}");
    assert_eq!(refused.stderr.lines().count(), 1, "{refused:?}");
    let unchanged = timestamp(&alice(&server, &["get", &first, "-o", "json"]).ok().json()["expiresAt"]);
    assert_eq!(unchanged, after_extend);
    // kubeconfig --ttl remaining: a kubeconfig kubectl can use, the expiry kept.
    let kc2 = dir.path().join("kc2");
    let issued = alice(
        &server,
        &[
            "kubeconfig",
            &first,
            "--ttl",
            "remaining",
            "--write-kubeconfig",
            kc2.to_str().unwrap(),
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    let kept = timestamp(&issued["expiresAt"]);
    assert!(
        (kept.as_second() - after_extend.as_second()).abs() <= 2,
        "{after_extend} -> {kept}"
    );
    support::kubectl_ok(&kc2, &["get", "configmap", "from-plugin"]);

    // Names that are not alice's: exit 3, one readable line.
    for args in [
        vec!["get", "kube-system"],
        vec!["extend", "np-doesnotexist"],
        vec!["delete", "np-doesnotexist"],
        vec!["kubeconfig", "np-doesnotexist", "--ttl", "5m"],
    ] {
        let missing = alice(&server, &args);
        assert_eq!(missing.code, 3, "{args:?}: {missing:?}");
        assert!(
            missing.stderr.starts_with("error: Not Found (404): "),
            "{missing:?}"
        );
        assert_eq!(missing.stderr.lines().count(), 1, "{missing:?}");
    }
    assert!(
        Api::<Namespace>::all(server.admin.clone())
            .get_opt("kube-system")
            .await
            .unwrap()
            .is_some()
    );

    // --parent/--quota reach the server (issue 11/12): a namespace that is not a parent is a
    // 403 naming the annotation; shown on one line.
    let hierarchy = alice(&server, &["create", "--parent", &first, "--quota", "pods=3"]);
    assert_eq!(hierarchy.code, 1, "{hierarchy:?}");
    assert_eq!(hierarchy.stderr.lines().count(), 1, "{hierarchy:?}");
    assert!(
        hierarchy.stderr.starts_with("error: Forbidden (403): ")
            && hierarchy.stderr.contains("is not a parent"),
        "{hierarchy:?}"
    );
    assert!(hierarchy.stderr.contains("parent"), "{hierarchy:?}");
    assert_eq!(
        alice(&server, &["list", "-o", "name"])
            .ok()
            .stdout
            .lines()
            .count(),
        3
    );

    // delete --wait: Terminating, then gone, and really gone per the admin client.
    let deleted = alice(&server, &["delete", &first, "--wait", "--timeout", "90s"]).ok();
    assert_eq!(deleted.stdout, format!("namespace \"{first}\" deleted\n"));
    let progress: Vec<&str> = deleted.stderr.lines().collect();
    assert!(
        progress[0].starts_with(&format!("namespace/{first}: Terminating")),
        "{deleted:?}"
    );
    assert!(
        progress
            .last()
            .unwrap()
            .starts_with(&format!("namespace/{first}: gone")),
        "{deleted:?}"
    );
    assert!(
        server.namespace(&first).await.is_none(),
        "still there after delete --wait"
    );
    assert_eq!(alice(&server, &["get", &first]).code, 3);

    // delete without --wait answers at once with the namespace Terminating.
    let started = alice(&server, &["delete", &second_name, "-o", "json"])
        .ok()
        .json();
    assert_eq!(started["phase"], "Terminating");

    server.cleanup().await;
}

/// URL and token from the config file; a wrong token; an unreachable server.
/// `create --parent P --quota ...` end to end: a child of an administrator's parent with
/// an allocation from its budget (a ResourceQuota the API server enforces), `get` shows
/// the parent; an allocation that does not fit is a 409 on one line, exit 1.
#[tokio::test]
async fn create_under_a_parent_with_a_quota() {
    let server = Server::start().await;
    support::kubectl_ok(
        &cluster().kubeconfig,
        &["apply", "-f", "cronjob/base/crd-hierarchicalresourcequota.yaml"],
    );
    let parent = unique("np-parent");
    let parent_ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": parent,
            "annotations": {"controller.observatorium.io/allowed-tenants": "alice"},
        },
    }))
    .unwrap();
    let namespaces = Api::<Namespace>::all(server.admin.clone());
    namespaces
        .create(&PostParams::default(), &parent_ns)
        .await
        .unwrap();
    let hrq = kube::api::DynamicObject::new("budget", &hrq_resource())
        .within(&parent)
        .data(serde_json::json!({"spec": {"hard": {"count/pods": "4"}}}));
    let hrqs =
        Api::<kube::api::DynamicObject>::namespaced_with(server.admin.clone(), &parent, &hrq_resource());
    // The CRD may take a moment to be served after the apply.
    support::eventually(Duration::from_secs(30), "the HRQ budget to be created", || {
        let (hrqs, hrq) = (hrqs.clone(), hrq.clone());
        async move {
            hrqs.create(&PostParams::default(), &hrq)
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;

    let created = alice(
        &server,
        &[
            "create",
            "--parent",
            &parent,
            "--quota",
            "count/pods=3",
            "--ttl",
            "10m",
            "-o",
            "json",
            "--wait",
        ],
    )
    .ok();
    let child = created.json()["name"].as_str().unwrap().to_owned();
    let got = alice(&server, &["get", &child, "-o", "json"]).ok().json();
    assert_eq!(got["parent"], parent.as_str(), "{got}");
    let quotas = Api::<ResourceQuota>::namespaced(server.admin.clone(), &child)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        quotas.items.iter().any(|q| q
            .spec
            .as_ref()
            .and_then(|s| s.hard.as_ref())
            .and_then(|h| h.get("count/pods"))
            .is_some_and(|v| v.0 == "3")),
        "no count/pods=3 allocation in {child}: {quotas:?}"
    );

    // 3 of 4 allocated: 2 more does not fit.
    let refused = alice(
        &server,
        &["create", "--parent", &parent, "--quota", "count/pods=2"],
    );
    assert_eq!(refused.code, 1, "{refused:?}");
    assert_eq!(refused.stderr.lines().count(), 1, "{refused:?}");
    assert!(
        refused.stderr.starts_with("error: Conflict (409): "),
        "{refused:?}"
    );
    assert!(
        refused.stderr.contains("does not fit") && refused.stderr.contains("count/pods asked 2, left 1"),
        "{refused:?}"
    );
    assert!(!refused.stderr.contains("hierarchy support"), "{refused:?}");

    alice(&server, &["delete", &child, "--wait", "--timeout", "90s"]).ok();
    let _ = namespaces.delete(&parent, &DeleteParams::default()).await;
    server.cleanup().await;
}

fn hrq_resource() -> kube::api::ApiResource {
    kube::api::ApiResource {
        group: "controller.observatorium.io".into(),
        version: "v1alpha1".into(),
        api_version: "controller.observatorium.io/v1alpha1".into(),
        kind: "HierarchicalResourceQuota".into(),
        plural: "hierarchicalresourcequotas".into(),
    }
}

#[tokio::test]
async fn config_file_auth_errors_and_unreachable_servers() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("server-url: {}\ntoken-file: token\n", server.url),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let listed = np(&[], &["list", "--config", config]).ok();
    assert_eq!(listed.stdout, "No namespaces found.\n");
    // The default path under $XDG_CONFIG_HOME is read too.
    let xdg = dir.path().join("xdg");
    std::fs::create_dir_all(xdg.join("kubectl-np")).unwrap();
    std::fs::copy(config, xdg.join("kubectl-np/config.yaml")).unwrap();
    std::fs::copy(dir.path().join("token"), xdg.join("kubectl-np/token")).unwrap();
    np(&[("XDG_CONFIG_HOME", xdg.to_str().unwrap())], &["list"]).ok();
    // A token file from the environment, as for the provisioner.
    let token_file = dir.path().join("token");
    np(
        &[
            ("NP_URL", &server.url),
            ("NP_TOKEN_FILE", token_file.to_str().unwrap()),
        ],
        &["list"],
    )
    .ok();

    // Through kubectl's plugin mechanism: `kubectl np` finds kubectl-np on PATH;
    // output and exit codes come through unchanged.
    let bin_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(PLUGIN, bin_dir.path().join("kubectl-np")).unwrap();
    let via_kubectl = |args: &[&str]| {
        Command::new(support::cluster_bin())
            .arg("kubectl")
            .args(args)
            .env_clear()
            .env("PATH", bin_dir.path())
            .env("HOME", dir.path())
            .env("NP_URL", &server.url)
            .env("NP_TOKEN", TOKEN)
            .output()
            .unwrap()
    };
    let listed = via_kubectl(&["np", "list"]);
    assert!(listed.status.success(), "{listed:?}");
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "No namespaces found.\n");
    assert_eq!(
        via_kubectl(&["np", "get", "np-doesnotexist"]).status.code(),
        Some(3)
    );

    let wrong = np(
        &[("NP_URL", &server.url), ("NP_TOKEN", "wrong-token-0123456789")],
        &["list"],
    );
    assert_eq!(wrong.code, 1, "{wrong:?}");
    assert!(
        wrong.stderr.starts_with("error: Unauthorized (401): "),
        "{wrong:?}"
    );
    assert!(!wrong.stderr.contains("wrong-token"), "{wrong:?}");
    let anonymous = np(&[("NP_URL", &server.url)], &["list"]);
    assert_eq!(anonymous.code, 1, "{anonymous:?}");
    assert!(anonymous.stderr.contains("no token configured"), "{anonymous:?}");

    // https with --ca-file: the test API server (not a provisioner) is reached
    // through TLS trusting its CA, and refuses the token; without the CA the
    // handshake fails. Either way one line, exit 1.
    let ca = temp_file(&String::from_utf8(cluster().ca_pem()).unwrap());
    let https = [("NP_URL", cluster().server.as_str()), ("NP_TOKEN", TOKEN)];
    let trusted = np(&https, &["list", "--ca-file", ca.path().to_str().unwrap()]);
    assert_eq!(trusted.code, 1, "{trusted:?}");
    assert!(
        trusted.stderr.starts_with("error: Unauthorized (401)"),
        "{trusted:?}"
    );
    let untrusted = np(&https, &["list"]);
    assert_eq!(untrusted.code, 1, "{untrusted:?}");
    assert!(
        untrusted.stderr.contains("cannot reach the provisioner"),
        "{untrusted:?}"
    );
    assert!(
        untrusted.stderr.to_lowercase().contains("certificate"),
        "{untrusted:?}"
    );

    let closed = format!("http://127.0.0.1:{}", support::free_port());
    let unreachable = np(
        &[("NP_URL", &closed), ("NP_TOKEN", TOKEN)],
        &["list", "--timeout", "5s"],
    );
    assert_eq!(unreachable.code, 1, "{unreachable:?}");
    assert!(
        unreachable.stderr.contains("cannot reach the provisioner"),
        "{unreachable:?}"
    );
    server.cleanup().await;
}

/// Usage errors exit 2 before anything is sent (no server is running here).
#[test]
fn usage_errors_exit_2() {
    let env = [("NP_URL", "http://127.0.0.1:9"), ("NP_TOKEN", TOKEN)];
    let dir = tempfile::tempdir().unwrap();
    let bad_config = dir.path().join("config.yaml");
    std::fs::write(&bad_config, "server_url: http://x\n").unwrap();
    let token_config = dir.path().join("token.yaml");
    std::fs::write(&token_config, format!("server-url: http://x\ntoken: {TOKEN}\n")).unwrap();
    for (env, args, says) in [
        (&env[..], vec!["list", "--bogus"], "--bogus"),
        (&env[..], vec!["frobnicate"], "frobnicate"),
        (&env[..], vec!["create", "--ttl", "soon"], "--ttl"),
        (&env[..], vec!["create", "--quota", "pods"], "--quota"),
        (&env[..], vec!["get"], "<NAME>"),
        (&env[..], vec!["list", "--token", TOKEN], "--token"),
        (&env[..], vec!["list", "-o", "kubeconfig"], "-o kubeconfig"),
        (&env[..], vec!["list", "--server-url", "ftp://x"], "http or https"),
        (&[][..], vec!["list"], "NP_URL"),
        (
            &[][..],
            vec!["list", "--config", bad_config.to_str().unwrap()],
            "unknown key `server_url`",
        ),
        (
            &[][..],
            vec!["list", "--config", token_config.to_str().unwrap()],
            "token-file",
        ),
        (
            &[][..],
            vec!["list", "--config", "/nonexistent/config.yaml"],
            "/nonexistent/config.yaml",
        ),
    ] {
        let run = np(env, &args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stderr.contains(says), "{args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "{args:?}: {run:?}");
    }
    let help = np(&[], &["--help"]).ok();
    assert!(help.stdout.contains("Exit status:") && help.stdout.contains("kubectl np create"));
    for shell in ["bash", "zsh", "fish"] {
        let script = np(&[], &["completion", shell]).ok();
        assert!(script.stdout.contains("kubectl-np"), "{shell}");
        assert!(script.stdout.contains("kubeconfig"), "{shell}");
    }
}

/// Kubernetes-identity auth: with no provisioner token, `kubectl np` sends
/// the credentials of the current kubeconfig context, here an exec plugin (a
/// script printing an ExecCredential with a ServiceAccount token) run by
/// kube-rs; the provisioner reviews the token (TokenReview) and authorizes
/// the ServiceAccount by RBAC. A context with only a client certificate is
/// refused before anything is sent.
#[tokio::test]
async fn kubeconfig_exec_plugin_credentials_create_and_list() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};

    let server = Server::start_with(&[("NP_AUTH", "both".to_owned())]).await;
    let admin = admin().await;
    // A ServiceAccount allowed to create and manage namespaces through the provisioner.
    let callers = unique("np-callers");
    support::create_named(
        &Api::<Namespace>::all(admin.clone()),
        &callers,
        Default::default(),
    )
    .await;
    support::create_named(
        &Api::<ServiceAccount>::namespaced(admin.clone(), &callers),
        "runner",
        Default::default(),
    )
    .await;
    let role = unique("np-plugin-caller");
    support::create_cluster_role(
        &admin,
        &role,
        vec![support::rule(
            &["controller.observatorium.io"],
            &["namespaces"],
            &["create", "list", "get", "patch", "delete"],
        )],
    )
    .await;
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(
            &PostParams::default(),
            &ClusterRoleBinding {
                metadata: kube::api::ObjectMeta {
                    name: Some(role.clone()),
                    ..Default::default()
                },
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".to_owned(),
                    kind: "ClusterRole".to_owned(),
                    name: role.clone(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".to_owned(),
                    name: "runner".to_owned(),
                    namespace: Some(callers.clone()),
                    api_group: None,
                }]),
            },
        )
        .await
        .unwrap();
    let sa_kubeconfig = support::service_account_kubeconfig(&admin, &callers, "runner").await;
    let value: serde_json::Value = serde_yaml_ng::from_str(&sa_kubeconfig).unwrap();
    let sa_token = value["users"][0]["user"]["token"].as_str().unwrap().to_owned();

    // The exec plugin: prints the token as an ExecCredential, and leaves a mark.
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("exec-ran");
    let script = dir.path().join("np-credential");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho ran >> '{}'\nprintf '%s' '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\
             \"kind\":\"ExecCredential\",\"status\":{{\"token\":\"{sa_token}\"}}}}'\n",
            mark.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: exec\n\
             clusters:\n- name: c\n  cluster:\n    server: {server}\n\
             contexts:\n- name: exec\n  context:\n    cluster: c\n    user: exec-user\n\
             - name: cert\n  context:\n    cluster: c\n    user: cert-user\n\
             users:\n- name: exec-user\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n\
             \x20     command: {script}\n      interactiveMode: Never\n\
             - name: cert-user\n  user:\n    client-certificate-data: AAAA\n    client-key-data: BBBB\n",
            server = cluster().server,
            script = script.display(),
        ),
    )
    .unwrap();
    let kc = kubeconfig.to_str().unwrap();
    let as_runner = |args: &[&str]| {
        let run = np(&[("NP_URL", &server.url), ("KUBECONFIG", kc)], args);
        assert!(
            !run.stdout.contains(&sa_token) && !run.stderr.contains(&sa_token),
            "the ServiceAccount token was printed: {run:?}"
        );
        run
    };

    let created = as_runner(&["create", "--ttl", "10m", "-o", "json"]).ok();
    let name = created.json()["name"].as_str().unwrap().to_owned();
    assert!(mark.exists(), "the exec plugin did not run");
    let ns = server.namespace(&name).await.expect("created");
    assert!(
        ns.labels().contains_key("controller.observatorium.io/tenant"),
        "{ns:?}"
    );
    let listed = as_runner(&["list", "-o", "json"]).ok();
    let names: Vec<String> = listed.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 1, "{listed:?}");
    assert_eq!(names[0], name, "{listed:?}");
    // The static tenant does not see it (it is the ServiceAccount's).
    assert_eq!(alice(&server, &["list", "-o", "name"]).ok().stdout, "");
    // --context picks the context explicitly, as kubectl does.
    as_runner(&["get", &name, "--context", "exec"]).ok();

    // A client-certificate context is refused before anything is sent: exit 2.
    let cert = as_runner(&["list", "--context", "cert"]);
    assert_eq!(cert.code, 2, "{cert:?}");
    assert!(
        cert.stderr
            .contains("context \"cert\" (user \"cert-user\") authenticates with a client certificate only"),
        "{cert:?}"
    );
    // The same as the *current* context under `auto`: nothing to send, so
    // nothing is sent, and the 401 says why (a cluster with certificate users
    // and a provisioner without auth keep working).
    let cert_current = dir.path().join("cert-current");
    std::fs::write(
        &cert_current,
        std::fs::read_to_string(&kubeconfig)
            .unwrap()
            .replace("current-context: exec", "current-context: cert"),
    )
    .unwrap();
    let skipped = np(
        &[
            ("NP_URL", &server.url),
            ("KUBECONFIG", cert_current.to_str().unwrap()),
        ],
        &["list"],
    );
    assert_eq!(skipped.code, 1, "{skipped:?}");
    assert!(
        skipped.stderr.contains("Unauthorized (401)")
            && skipped.stderr.contains(
                "not sent: kubeconfig context \"cert\" authenticates with a client certificate only"
            ),
        "{skipped:?}"
    );
    // Both a provisioner token and kubeconfig credentials: ambiguous, refused.
    let both = np(
        &[("NP_URL", &server.url), ("KUBECONFIG", kc), ("NP_TOKEN", TOKEN)],
        &["list", "--context", "exec"],
    );
    assert_eq!(both.code, 2, "{both:?}");
    // --kube-auth never: no credentials, the server's 401 with the hint.
    let never = as_runner(&["list", "--kube-auth", "never"]);
    assert_eq!(never.code, 1, "{never:?}");
    assert!(never.stderr.contains("no token configured"), "{never:?}");

    as_runner(&["delete", &name, "--wait"]).ok();
    let _ = Api::<ClusterRoleBinding>::all(admin.clone())
        .delete(&role, &DeleteParams::default())
        .await;
    let _ = Api::<ClusterRole>::all(admin.clone())
        .delete(&role, &DeleteParams::default())
        .await;
    let _ = Api::<Namespace>::all(admin.clone())
        .delete(&callers, &DeleteParams::default())
        .await;
    server.cleanup().await;
}
