//! Least privilege of the shipped RBAC (cronjob/, function/) against the real
//! control plane: the real binaries, running as the ServiceAccounts the
//! manifests create, can do their whole job (create/list/get/extend/delete;
//! reap and repair once and in watch mode; optional role rules) and nothing
//! more (admission policies, escalation, secrets, tokens, leases).
//!
//! Each test owns a [`support::Fixture`] under the selector key the
//! admission policies know: dumped if the test fails, cleaned up by label.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod deploy_support;
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use deploy_support::{
    GRANT, NS, PROVISIONER_SA, REAPER_SA, Running, can_i, deployed, forbidden_lines, kubectl, kubectl_as,
    sa_kubeconfig, text, wait_ok,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use namespace_provisioner::labels::{EXPIRY_LABEL, OBJECT_NAME, TENANT_LABEL};
use support::fixture::{TENANT, await_terminating};
use support::process::start_provisioner;
use support::{Fixture, eventually, now};

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
    let fx = deploy_support::fixture().await;
    let selector = fx.selector.to_string();
    let tokens = write_tokens("ci-a token-a-0123456789abcdef\nci-b token-b-0123456789abcdef\n");
    let served = start_provisioner(
        "provisioner",
        &[],
        &[
            ("NP_KUBECONFIG", identity.path().display().to_string()),
            ("NP_TOKEN_FILE", tokens.path().display().to_string()),
            ("NP_SELECTOR", selector.clone()),
            ("NP_TTL", "15m".into()),
            ("NP_MAX_TTL", "1h".into()),
        ],
        "/readyz",
    )
    .await;
    let (addr, provisioner) = (served.addr, served.process);
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

    stop_unrefused(provisioner).await;
    eprintln!(
        "provisioner as its ServiceAccount: create/list/get/extend/delete in {:?}",
        started.elapsed()
    );
}

/// Stop a binary that ran as its ServiceAccount: it was refused nothing, and
/// it exits cleanly on SIGTERM.
async fn stop_unrefused(process: Running) {
    let log = process.log();
    assert!(
        forbidden_lines(&log).is_empty(),
        "{} was refused something:\n{log}",
        process.name
    );
    let name = process.name.clone();
    let (status, _) = process.terminate().await;
    assert!(status.success(), "{name} exited with {status}");
}

/// A complete set, made by the admin the way the provisioner makes it.
async fn make_set(fx: &Fixture, expiry: i64) -> String {
    fx.create_set("np-deploy", expiry).await.namespace.name_any()
}

/// The damage the reaper must repair, case by case.
struct Damaged {
    expired: String,
    no_service_account: String,
    wrong_subjects: String,
    wrong_role_ref: String,
    no_expiry: String,
}

async fn damaged_sets(fx: &Fixture) -> Damaged {
    let client = &fx.client;
    let t = now();
    // Made live, then expired by a label patch: a watching reaper would otherwise delete the
    // Namespace between its creation and the apply of its contents (make_set would fail).
    let expired = make_set(fx, t + 3600).await;
    Api::<Namespace>::all(client.clone())
        .patch(
            &expired,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {EXPIRY_LABEL: (t - 60).to_string()}}})),
        )
        .await
        .unwrap();
    let no_service_account = make_set(fx, t + 3600).await;
    Api::<ServiceAccount>::namespaced(client.clone(), &no_service_account)
        .delete(OBJECT_NAME, &DeleteParams::default())
        .await
        .unwrap();
    let wrong_subjects = make_set(fx, t + 3600).await;
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
    let wrong_role_ref = make_set(fx, t + 3600).await;
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
    let mut labels = fx.selector_labels();
    labels.insert(TENANT_LABEL.to_owned(), TENANT.to_owned());
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(no_expiry.clone()),
                    labels: Some(labels),
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
    let fx = deploy_support::fixture().await;
    let selector = fx.selector.to_string();
    let damaged = damaged_sets(&fx).await;
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
    let fx = deploy_support::fixture().await;
    let selector = fx.selector.to_string();
    let lease_name = support::unique("reaper-lease");
    let metrics = format!("127.0.0.1:{}", support::free_port());
    // Damaged before the reaper starts: an expired set made while it runs
    // is deleted between its Namespace and its content (a race of the test).
    let damaged = damaged_sets(&fx).await;
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
    eventually(Duration::from_secs(30), "the reaper's Lease has a holder", || {
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

    let soon = make_set(&fx, now() + 3).await;
    let log = reaper.log_path();
    let (admin_ref, damaged_ref) = (&admin, &damaged);
    eventually(Duration::from_secs(60), "watch mode to reap and repair", || {
        reaper.assert_running();
        let log = log.clone();
        async move {
            repaired(admin_ref, damaged_ref).await.map_err(|e| {
                format!(
                    "{e}\nreaper log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            })
        }
    })
    .await;
    await_terminating(admin.clone(), soon.clone(), Duration::from_secs(30)).await;

    stop_unrefused(reaper).await;
    eprintln!(
        "reaper --watch as its ServiceAccount: lease, reap, repairs in {:?}",
        started.elapsed()
    );
}

/// `--role-rules-file` used to need function/role-rules/ (`escalate`/`bind` on the set's Role);
/// the rights for propagated copies (issue 11) include them, so the shipped RBAC suffices and
/// the optional kustomization, still shipped for deployments without trees, stays valid.
#[tokio::test]
async fn role_rules_work_with_the_shipped_rbac() {
    let identity = sa_kubeconfig(PROVISIONER_SA).await;
    let reaper_identity = sa_kubeconfig(REAPER_SA).await;
    let admin = support::admin().await;
    let fx = deploy_support::fixture().await;
    let selector = fx.selector.to_string();
    let rules =
        support::temp_file("- apiGroups: [\"\"]\n  resources: [configmaps]\n  verbs: [get, list, create]\n");
    // Ready: the preflight finds `escalate` and `bind` on the Role.
    let served = start_provisioner(
        "provisioner --role-rules-file",
        &[],
        &[
            ("NP_KUBECONFIG", identity.path().display().to_string()),
            ("NP_TOKEN", "token-r-0123456789abcdef".into()),
            ("NP_SELECTOR", selector.clone()),
            ("NP_ROLE_RULES_FILE", rules.path().display().to_string()),
        ],
        "/readyz",
    )
    .await;
    let (addr, provisioner) = (served.addr, served.process);
    let token = Some("token-r-0123456789abcdef");

    let dry = kubectl(&[
        "apply",
        "--dry-run=server",
        "-k",
        deploy_support::ROLE_RULES_KUSTOMIZATION,
    ]);
    assert!(dry.status.success(), "{}", text(&dry));

    let created = support::http(&addr, "POST", "/api/v1/namespace?ttl=10m", token, None).await;
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
    let (status, _) = provisioner.terminate().await;
    assert!(status.success());

    // The reaper, with the same rules and its shipped RBAC, restores a lost Role.
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
    let fx = deploy_support::fixture().await;
    let selector = fx.selector.to_string();
    // Not managed: no selector (only the fixture's owner label, for cleanup).
    let unmanaged = fx.create_unmanaged("np-unmanaged", BTreeMap::new()).await;
    let managed = make_set(&fx, now() + 3600).await;
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
            // Both propagate RoleBindings (the provisioner into a new child before it
            // answers, the reaper afterwards), so RBAC lets them bind any role (as HNC's
            // manager); the admission policy refuses whatever is not a copy or not in a
            // tree (tests/hierarchy_rbac.rs).
            assert!(
                can_i(kc, &["bind", &format!("clusterrole/{other}")]),
                "{who} bind {other}"
            );
            // In a managed namespace: RBAC lets it through, the admission policy refuses
            // a RoleBinding that is not a copy.
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
                DENIED_BY_POLICY,
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
            vec!["impersonate", "serviceaccounts"],
            vec!["update", "clusterroles"],
            vec!["create", "deployments.apps", "-n", NS],
        ] {
            assert!(!can_i(kc, &args), "{who} can {args:?}");
        }
        // Writing Roles it propagates needs `escalate` (see cronjob/base/clusterrole.yaml
        // and function/clusterrole.yaml).
        assert!(can_i(kc, &["escalate", "roles"]), "{who} escalate roles");
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
