//! Callers with their own Kubernetes identity, against the real control
//! plane with real ServiceAccount tokens: TokenReview authentication (and
//! its bounded, short-lived cache), SubjectAccessReview authorization with
//! the shipped ClusterRoles, ownership, static tokens side by side, and
//! bind-the-caller checked with the real kubectl.
//!
//! Each test owns a [`support::Fixture`] (its selector, grant ClusterRole,
//! callers' namespace and bindings), dumped on failure, cleaned up by label.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, RoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use namespace_provisioner::access::{ReviewConfig, TokenReviewer};
use namespace_provisioner::api::{self, AppState};
use namespace_provisioner::auth::{Identity, Tokens, Verb, user_tenant};
use namespace_provisioner::labels::{BOUND_USER_ANNOTATION, OBJECT_NAME, OWNER_ANNOTATION, TENANT_LABEL};
use namespace_provisioner::params::TtlPolicy;
use namespace_provisioner::provision::{ProvisionError, Provisioner, ProvisionerConfig};
use namespace_provisioner::reaper::{self, SweepConfig, plan::PlanConfig};
use support::{Answer, Fixture, admin, cluster, eventually, kubectl, temp_file, unique};
use tower::ServiceExt;

const SELECTOR_KEY: &str = "np-test.example.com/identity";
const STATIC_TOKEN: &str = "static-token-0123456789abcdef";
const CREATOR: &str = "namespace-provisioner:creator";
const MANAGER: &str = "namespace-provisioner:manager";
/// Cache lifetime of the provisioners under test.
const CACHE_TTL: Duration = Duration::from_secs(2);
/// kube-apiserver caches successful token authentications itself (10 s by
/// default, also for TokenReview): part of the revocation window.
const API_SERVER_TOKEN_CACHE: Duration = Duration::from_secs(10);

/// The shipped ClusterRoles (the same file `kubectl apply -k function/` applies),
/// applied once per test process: two tests applying it at the same time race
/// to create it and one gets AlreadyExists.
fn apply_access_roles() {
    static APPLIED: std::sync::Once = std::sync::Once::new();
    APPLIED.call_once(|| {
        let out = kubectl(
            &cluster().kubeconfig,
            &["apply", "-f", "function/access-clusterroles.yaml"],
        );
        assert!(out.status.success(), "{}", support::text(&out));
    });
}

/// A test's fixture, its callers' namespace, and a provisioner accepting
/// static tokens and Kubernetes identities (`--auth both`).
struct Service {
    fx: Fixture,
    app: Router,
    provisioner: Provisioner,
    reviewer: TokenReviewer,
    /// Where the callers' ServiceAccounts live.
    callers: String,
}

impl Service {
    async fn new(grant_rules: Vec<PolicyRule>) -> Service {
        apply_access_roles();
        let fx = Fixture::new(SELECTOR_KEY).await.create_grant(grant_rules).await;
        let callers = fx.create_unmanaged("id-callers", BTreeMap::new()).await;
        let config = ProvisionerConfig {
            set: fx.set.clone(),
            ttl: TtlPolicy::new(Duration::from_secs(3600), Some(Duration::from_secs(7200))).unwrap(),
            prefix: "np".parse().unwrap(),
            server: cluster().server_url(),
            ca_pem: Some(cluster().ca_pem()),
            max_namespaces_per_tenant: None,
            page_size: 500,
            max_depth: 3,
            propagation: Default::default(),
        };
        let client = admin().await;
        let provisioner = Provisioner::new(client.clone(), config);
        let reviewer = TokenReviewer::new(
            client,
            ReviewConfig {
                audiences: Vec::new(),
                cache_ttl: CACHE_TTL,
                cache_capacity: 64,
            },
        );
        let tokens = Tokens::parse(&format!("ci {STATIC_TOKEN}\n")).unwrap();
        let state = AppState::new(provisioner.clone(), Some(tokens))
            .unwrap()
            .with_token_review(reviewer.clone());
        let app = api::router(state, Duration::from_secs(60));
        Service {
            fx,
            app,
            provisioner,
            reviewer,
            callers,
        }
    }

    async fn call(&self, method: &str, uri: &str, token: &str, body: Option<&str>) -> Answer {
        let request = support::request(method, uri, Some(token), body).map(Body::from);
        support::answer(self.app.clone().oneshot(request).await.unwrap()).await
    }

    /// A ServiceAccount in the callers' namespace: (username, its kubeconfig YAML, token).
    async fn account(&self, name: &str) -> Caller {
        Api::<ServiceAccount>::namespaced(self.fx.client.clone(), &self.callers)
            .create(
                &PostParams::default(),
                &ServiceAccount {
                    metadata: ObjectMeta {
                        name: Some(name.to_owned()),
                        ..ObjectMeta::default()
                    },
                    ..ServiceAccount::default()
                },
            )
            .await
            .unwrap();
        let kubeconfig = support::service_account_kubeconfig(&self.fx.client, &self.callers, name).await;
        Caller {
            username: format!("system:serviceaccount:{}:{name}", self.callers),
            token: token_of(&kubeconfig),
            kubeconfig,
            name: name.to_owned(),
        }
    }

    /// Bind `role` cluster-wide to `caller`.
    async fn grant(&self, caller: &Caller, role: &str) {
        self.fx
            .create_cluster_role_binding(&unique("np-id"), role, self.subject(caller))
            .await;
    }

    /// A function-runtime (Lambda, API Gateway v2) event from
    /// tests/fixtures, with `token` in place of `${TOKEN}`, through the same
    /// router the function runtime serves.
    async fn lambda(&self, fixture: &str, token: &str) -> Answer {
        let path = support::repo_root().join("tests/fixtures").join(fixture);
        let event = std::fs::read_to_string(path).unwrap().replace("${TOKEN}", token);
        let request = lambda_http::request::from_str(&event).unwrap();
        support::answer(self.app.clone().oneshot(request).await.unwrap()).await
    }

    fn subject(&self, caller: &Caller) -> Subject {
        Subject {
            kind: "ServiceAccount".to_owned(),
            name: caller.name.clone(),
            namespace: Some(self.callers.clone()),
            api_group: None,
        }
    }

    async fn create(&self, caller: &Caller, body: &str) -> String {
        let answer = self
            .call("POST", "/api/v1/namespaces", &caller.token, Some(body))
            .await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        answer.json()["name"].as_str().unwrap().to_owned()
    }

    async fn names(&self, token: &str) -> Vec<String> {
        let answer = self.call("GET", "/api/v1/namespaces", token, None).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

struct Caller {
    name: String,
    username: String,
    kubeconfig: String,
    token: String,
}

fn token_of(kubeconfig: &str) -> String {
    let value: serde_json::Value = serde_yaml_ng::from_str(kubeconfig).unwrap();
    value["users"][0]["user"]["token"].as_str().unwrap().to_owned()
}

fn assert_problem(answer: &Answer, status: u16, contains: &[&str], secrets: &[&str]) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.headers["content-type"], "application/problem+json");
    let detail = answer.json()["detail"].as_str().unwrap().to_owned();
    for part in contains {
        assert!(detail.contains(part), "{detail:?} lacks {part:?}");
    }
    for secret in secrets {
        assert!(!answer.body.contains(secret), "token echoed");
    }
}

/// Wait until the API server's own TokenReview refuses `token`.
async fn refused_by_the_api_server(client: &Client, token: &str) {
    use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
    let api = Api::<TokenReview>::all(client.clone());
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            ..TokenReviewSpec::default()
        },
        ..TokenReview::default()
    };
    eventually(
        Duration::from_secs(30),
        "the API server to refuse the token",
        || {
            let (api, review) = (api.clone(), review.clone());
            async move {
                let status = api.create(&PostParams::default(), &review).await.unwrap().status;
                let authenticated = status.and_then(|s| s.authenticated).unwrap_or(false);
                (!authenticated)
                    .then_some(())
                    .ok_or("still authenticated".to_owned())
            }
        },
    )
    .await;
}

/// Wait until the aggregation controller has folded the shipped rules into `role`.
async fn aggregated(client: &Client, role: &str) {
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let api = Api::<ClusterRole>::all(client.clone());
    eventually(
        Duration::from_secs(30),
        &format!("{role} aggregates our rules"),
        || {
            let api = api.clone();
            async move {
                api.get(role).await.ok().is_some_and(|r| {
                    r.rules.unwrap_or_default().iter().any(|rule| {
                        rule.api_groups
                            .as_deref()
                            .is_some_and(|g| g.iter().any(|g| g == "controller.observatorium.io"))
                    })
                })
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_service_account_creates_when_rbac_allows_and_gets_403_naming_the_right_when_not() {
    let svc = Service::new(vec![]).await;
    let allowed = svc.account("allowed").await;
    let denied = svc.account("denied").await;
    svc.grant(&allowed, CREATOR).await;

    let refused = svc
        .call("POST", "/api/v1/namespaces", &denied.token, Some("{}"))
        .await;
    assert_problem(
        &refused,
        403,
        &[
            &denied.username,
            "verb create",
            "resource namespaces",
            "group controller.observatorium.io",
            "at cluster scope",
            CREATOR,
        ],
        &[&denied.token],
    );
    // The compat call is authorized the same way.
    let refused = svc.call("POST", "/api/v1/namespace", &denied.token, None).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        svc.fx.managed().await.is_empty(),
        "a refused create made something"
    );

    let name = svc.create(&allowed, r#"{"ttl":"10m"}"#).await;
    let ns = Api::<Namespace>::all(svc.fx.client.clone())
        .get(&name)
        .await
        .unwrap();
    assert_eq!(ns.annotations()[OWNER_ANNOTATION], allowed.username);
    assert_eq!(ns.labels()[TENANT_LABEL], user_tenant(&allowed.username).as_str());
    assert!(!ns.annotations().contains_key(BOUND_USER_ANNOTATION));
    let info = svc
        .call("GET", &format!("/api/v1/namespaces/{name}"), &allowed.token, None)
        .await;
    assert_eq!(info.status, 200, "{}", info.body);
    assert_eq!(info.json()["owner"], allowed.username.as_str());
}

#[tokio::test]
async fn bogus_and_deleted_tokens_are_401_and_revocation_shows_within_the_cache_lifetime() {
    let svc = Service::new(vec![]).await;
    for bogus in ["not-a-token-at-all-0123456789", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"] {
        let answer = svc.call("GET", "/api/v1/namespaces", bogus, None).await;
        assert_problem(&answer, 401, &["not valid"], &[bogus]);
        assert!(
            answer.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
    }
    // Expired in effect: the token of a ServiceAccount deleted before first use
    // (once the API server itself refuses it: it learns of the deletion from
    // its own cache, a moment later).
    let gone = svc.account("gone").await;
    Api::<ServiceAccount>::namespaced(svc.fx.client.clone(), &svc.callers)
        .delete(&gone.name, &DeleteParams::default())
        .await
        .unwrap();
    refused_by_the_api_server(&svc.fx.client, &gone.token).await;
    let answer = svc.call("GET", "/api/v1/namespaces", &gone.token, None).await;
    assert_problem(&answer, 401, &["not valid"], &[&gone.token]);

    // Revocation: accepted (and cached), then the ServiceAccount is deleted.
    let revoked = svc.account("revoked").await;
    assert_eq!(
        svc.call("GET", "/api/v1/namespaces", &revoked.token, None)
            .await
            .status,
        200
    );
    assert!(svc.reviewer.cached() >= 1);
    Api::<ServiceAccount>::namespaced(svc.fx.client.clone(), &svc.callers)
        .delete(&revoked.name, &DeleteParams::default())
        .await
        .unwrap();
    let deleted_at = Instant::now();
    let bound = CACHE_TTL + API_SERVER_TOKEN_CACHE + Duration::from_secs(3);
    eventually(
        bound,
        "the deleted ServiceAccount's token to stop working",
        || async {
            let answer = svc.call("GET", "/api/v1/namespaces", &revoked.token, None).await;
            (answer.status == 401)
                .then_some(())
                .ok_or(format!("status {}", answer.status))
        },
    )
    .await;
    let window = deleted_at.elapsed();
    eprintln!("revocation observed after {window:?} (provisioner cache {CACHE_TTL:?})");
    assert!(window <= bound);
    // Refusals are not cached and the cache never outgrows its capacity.
    assert!(svc.reviewer.cached() <= 64);
}

#[tokio::test]
async fn callers_see_and_touch_only_their_own_unless_rbac_grants_it() {
    let svc = Service::new(vec![]).await;
    let (a, b, lead) = (
        svc.account("caller-a").await,
        svc.account("caller-b").await,
        svc.account("lead").await,
    );
    for c in [&a, &b] {
        svc.grant(c, CREATOR).await;
    }
    svc.grant(&lead, MANAGER).await;
    let of_a = svc.create(&a, "{}").await;
    let of_b = svc.create(&b, "{}").await;

    assert_eq!(svc.names(&a.token).await, vec![of_a.clone()]);
    assert_eq!(svc.names(&b.token).await, vec![of_b.clone()]);
    for (method, body) in [
        ("GET", None),
        ("PATCH", Some(r#"{"ttl":"20m"}"#)),
        ("DELETE", None),
    ] {
        let answer = svc
            .call(method, &format!("/api/v1/namespaces/{of_a}"), &b.token, body)
            .await;
        assert_problem(&answer, 404, &["no namespace"], &[&b.token]);
    }
    let answer = svc
        .call("DELETE", &format!("/api/v1/namespace/{of_a}"), &b.token, None)
        .await;
    assert_eq!(answer.status, 404, "{}", answer.body);

    // The lead holds list/get/patch/delete: sees both, extends and deletes A's.
    let mut seen = svc.names(&lead.token).await;
    seen.sort();
    let mut both = vec![of_a.clone(), of_b.clone()];
    both.sort();
    assert_eq!(seen, both);
    let extended = svc
        .call(
            "PATCH",
            &format!("/api/v1/namespaces/{of_a}"),
            &lead.token,
            Some(r#"{"ttl":"20m"}"#),
        )
        .await;
    assert_eq!(extended.status, 200, "{}", extended.body);
    let ns = Api::<Namespace>::all(svc.fx.client.clone())
        .get(&of_a)
        .await
        .unwrap();
    assert_eq!(
        ns.annotations()[OWNER_ANNOTATION],
        a.username,
        "extend keeps the owner"
    );
    let deleted = svc
        .call("DELETE", &format!("/api/v1/namespaces/{of_a}"), &lead.token, None)
        .await;
    assert_eq!(deleted.status, 202, "{}", deleted.body);
    // B's namespace survived everything.
    let ns = Api::<Namespace>::all(svc.fx.client.clone())
        .get(&of_b)
        .await
        .unwrap();
    assert!(ns.metadata.deletion_timestamp.is_none());
}

#[tokio::test]
async fn static_tokens_and_identities_side_by_side() {
    let svc = Service::new(vec![]).await;
    let user = svc.account("side").await;
    svc.grant(&user, CREATOR).await;
    let of_user = svc.create(&user, "{}").await;
    let answer = svc
        .call("POST", "/api/v1/namespace?ttl=10m", STATIC_TOKEN, None)
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    let of_static = answer.headers["location"]
        .to_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(svc.names(STATIC_TOKEN).await, vec![of_static.clone()]);
    assert_eq!(svc.names(&user.token).await, vec![of_user.clone()]);
    let ns = Api::<Namespace>::all(svc.fx.client.clone())
        .get(&of_static)
        .await
        .unwrap();
    assert_eq!(ns.labels()[TENANT_LABEL], "ci");
    assert!(!ns.annotations().contains_key(OWNER_ANNOTATION));
    let across = svc
        .call(
            "GET",
            &format!("/api/v1/namespaces/{of_user}"),
            STATIC_TOKEN,
            None,
        )
        .await;
    assert_eq!(across.status, 404, "{}", across.body);
    let across = svc
        .call(
            "GET",
            &format!("/api/v1/namespaces/{of_static}"),
            &user.token,
            None,
        )
        .await;
    assert_eq!(across.status, 404, "{}", across.body);
    // A static tenant has no user to bind.
    let refused = svc
        .call(
            "POST",
            "/api/v1/namespaces",
            STATIC_TOKEN,
            Some(r#"{"bindCaller":true}"#),
        )
        .await;
    assert_problem(&refused, 400, &["bindCaller"], &[STATIC_TOKEN]);
}

#[tokio::test]
async fn bind_caller_lets_the_caller_and_no_one_else_act_in_the_namespace() {
    let svc = Service::new(vec![support::rule(&[""], &["configmaps"], &["*"])]).await;
    let (me, other) = (svc.account("binder").await, svc.account("other").await);
    for c in [&me, &other] {
        svc.grant(c, CREATOR).await;
    }
    let answer = svc
        .call(
            "POST",
            "/api/v1/namespaces",
            &me.token,
            Some(r#"{"ttl":"10m","bindCaller":true}"#),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    let name = answer.json()["name"].as_str().unwrap().to_owned();
    let returned = temp_file(answer.json()["kubeconfig"].as_str().unwrap());

    let ns = Api::<Namespace>::all(svc.fx.client.clone())
        .get(&name)
        .await
        .unwrap();
    assert_eq!(ns.annotations()[BOUND_USER_ANNOTATION], me.username);
    let rb = Api::<RoleBinding>::namespaced(svc.fx.client.clone(), &name)
        .get(OBJECT_NAME)
        .await
        .unwrap();
    let subjects = rb.subjects.unwrap();
    assert!(
        subjects.iter().any(|s| s.kind == "User" && s.name == me.username),
        "{subjects:?}"
    );

    // The reaper sees the bound user as part of the set: nothing to repair.
    // Remove it, and the next sweep puts it back.
    let sweep = SweepConfig {
        plan: PlanConfig {
            set: svc.fx.set.clone(),
            max_ttl: Duration::from_secs(7200),
            max_deletions: None,
        },
        page_size: 500,
        concurrency: 4,
        dry_run: false,
        instance: "identity-test".to_owned(),
    };
    let report = reaper::sweep(&svc.fx.client, &sweep, support::now())
        .await
        .unwrap();
    assert!(
        report.entries.iter().all(|e| !format!("{e:?}").contains(&name)),
        "the reaper would change a fresh bound set: {report:?}"
    );
    let only_sa = serde_json::json!({"subjects": [subjects[0]]});
    Api::<RoleBinding>::namespaced(svc.fx.client.clone(), &name)
        .patch(OBJECT_NAME, &PatchParams::default(), &Patch::Merge(only_sa))
        .await
        .unwrap();
    reaper::sweep(&svc.fx.client, &sweep, support::now())
        .await
        .unwrap();
    let repaired = Api::<RoleBinding>::namespaced(svc.fx.client.clone(), &name)
        .get(OBJECT_NAME)
        .await
        .unwrap();
    assert_eq!(
        repaired.subjects.as_deref(),
        Some(&subjects[..]),
        "the reaper restores the bound user"
    );

    let mine = temp_file(&me.kubeconfig);
    let theirs = temp_file(&other.kubeconfig);
    let cm = unique("cm");
    for (kubeconfig, who) in [
        (mine.path(), "the caller"),
        (returned.path(), "the returned kubeconfig"),
    ] {
        let out = kubectl(kubeconfig, &["create", "configmap", &unique("cm"), "-n", &name]);
        assert!(out.status.success(), "{who}: {}", support::text(&out));
    }
    let out = kubectl(mine.path(), &["create", "configmap", &cm, "-n", &name]);
    assert!(out.status.success(), "{}", support::text(&out));
    let out = kubectl(mine.path(), &["get", "configmap", &cm, "-n", &name]);
    assert!(out.status.success(), "{}", support::text(&out));
    for args in [
        vec!["get", "configmap", cm.as_str(), "-n", name.as_str()],
        vec!["create", "configmap", "intruder", "-n", name.as_str()],
    ] {
        let out = kubectl(theirs.path(), &args);
        assert!(!out.status.success(), "another identity could {args:?}");
        assert!(
            support::text(&out).contains("forbidden"),
            "{}",
            support::text(&out)
        );
    }
}

#[tokio::test]
async fn authorization_in_a_parent_follows_rbac_held_in_the_parent() {
    let svc = Service::new(vec![]).await;
    aggregated(&svc.fx.client, "edit").await;
    let member = svc.account("member").await;
    let team = svc.fx.create_unmanaged("team", BTreeMap::new()).await;
    let elsewhere = svc.fx.create_unmanaged("elsewhere", BTreeMap::new()).await;
    // "Members of team may create short-lived children of team": `edit` in team.
    Api::<RoleBinding>::namespaced(svc.fx.client.clone(), &team)
        .create(
            &PostParams::default(),
            &RoleBinding {
                metadata: ObjectMeta {
                    name: Some("members-edit".into()),
                    ..ObjectMeta::default()
                },
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "ClusterRole".into(),
                    name: "edit".into(),
                },
                subjects: Some(vec![svc.subject(&member)]),
            },
        )
        .await
        .unwrap();
    let who = svc
        .reviewer
        .review(&member.token)
        .await
        .map(Identity::user)
        .unwrap();
    svc.provisioner
        .authorize(&who, Verb::Create, Some(&team))
        .await
        .unwrap();
    for (parent, scope) in [
        (None, "at cluster scope".to_owned()),
        (Some(elsewhere.as_str()), format!("in namespace {elsewhere}")),
    ] {
        match svc.provisioner.authorize(&who, Verb::Create, parent).await {
            Err(e @ ProvisionError::Forbidden { .. }) => assert!(e.to_string().contains(&scope), "{e}"),
            other => panic!("expected Forbidden {scope}, got {other:?}"),
        }
    }
    // `edit` does not make a lead: no delete of others' children there.
    assert!(matches!(
        svc.provisioner.authorize(&who, Verb::Delete, Some(&team)).await,
        Err(ProvisionError::Forbidden { .. })
    ));
    // Static tenants are authorized by their token, not by RBAC.
    let tenant = Identity::Tenant("ci".parse().unwrap());
    svc.provisioner
        .authorize(&tenant, Verb::Create, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn function_runtime_events_get_the_same_checks() {
    let svc = Service::new(vec![]).await;
    let (allowed, denied) = (svc.account("fn-allowed").await, svc.account("fn-denied").await);
    svc.grant(&allowed, CREATOR).await;
    const EVENT: &str = "apigw-v2-create-identity.json";
    let created = svc.lambda(EVENT, &allowed.token).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let name = created.json()["name"].as_str().unwrap().to_owned();
    let ns = Api::<Namespace>::all(svc.fx.client.clone())
        .get(&name)
        .await
        .unwrap();
    assert_eq!(ns.annotations()[BOUND_USER_ANNOTATION], allowed.username);
    let refused = svc.lambda(EVENT, &denied.token).await;
    assert_problem(
        &refused,
        403,
        &["verb create", "at cluster scope"],
        &[&denied.token],
    );
    let bogus = svc.lambda(EVENT, "bogus-token-0123456789abcdef").await;
    assert_problem(&bogus, 401, &["not valid"], &[]);
}

#[tokio::test]
async fn the_review_cache_never_outgrows_its_capacity() {
    let svc = Service::new(vec![]).await;
    let caller = svc.account("many-tokens").await;
    let reviewer = TokenReviewer::new(
        svc.fx.client.clone(),
        ReviewConfig {
            audiences: Vec::new(),
            cache_ttl: Duration::from_secs(600),
            cache_capacity: 4,
        },
    );
    // Ten distinct valid tokens of one ServiceAccount, all accepted.
    for _ in 0..10 {
        let kubeconfig =
            support::service_account_kubeconfig(&svc.fx.client, &svc.callers, &caller.name).await;
        let user = reviewer.review(&token_of(&kubeconfig)).await.unwrap();
        assert_eq!(user.username, caller.username);
        assert!(reviewer.cached() <= 4, "cache grew to {}", reviewer.cached());
    }
    // Refusals are never remembered.
    let before = reviewer.cached();
    for i in 0..10 {
        assert!(
            reviewer
                .review(&format!("bogus-{i}-0123456789abcdef"))
                .await
                .is_err()
        );
    }
    assert!(reviewer.cached() <= before);
}

#[tokio::test]
async fn audiences_when_configured_must_match() {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    let svc = Service::new(vec![]).await;
    let caller = svc.account("audience").await;
    let issue = |audiences: Vec<String>| {
        let api = Api::<ServiceAccount>::namespaced(svc.fx.client.clone(), &svc.callers);
        let name = caller.name.clone();
        async move {
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences,
                    expiration_seconds: Some(600),
                    bound_object_ref: None,
                },
                ..TokenRequest::default()
            };
            api.create_token_request(&name, &PostParams::default(), &request)
                .await
                .unwrap()
                .status
                .unwrap()
                .token
        }
    };
    let for_us = issue(vec!["namespace-provisioner".into()]).await;
    let reviewer = TokenReviewer::new(
        svc.fx.client.clone(),
        ReviewConfig {
            audiences: vec!["namespace-provisioner".into()],
            cache_ttl: Duration::from_secs(10),
            cache_capacity: 8,
        },
    );
    assert_eq!(reviewer.review(&for_us).await.unwrap().username, caller.username);
    // A token for the API server itself is not for us.
    assert!(reviewer.review(&caller.token).await.is_err());
}

#[tokio::test]
async fn a_static_token_user_of_the_control_plane_is_a_user_too() {
    // Not a ServiceAccount: the control plane's --token-auth-file user
    // `admin` (group system:masters), whose bearer token the test kubeconfig holds.
    let svc = Service::new(vec![]).await;
    let kubeconfig = std::fs::read_to_string(&cluster().kubeconfig).unwrap();
    let token = token_of(&kubeconfig);
    let answer = svc
        .call(
            "POST",
            "/api/v1/namespaces",
            &token,
            Some(r#"{"bindCaller":true}"#),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    let name = answer.json()["name"].as_str().unwrap().to_owned();
    let ns = Api::<Namespace>::all(svc.fx.client.clone())
        .get(&name)
        .await
        .unwrap();
    assert_eq!(ns.annotations()[OWNER_ANNOTATION], "admin");
    assert_eq!(ns.annotations()[BOUND_USER_ANNOTATION], "admin");
    assert_eq!(ns.labels()[TENANT_LABEL], user_tenant("admin").as_str());
    assert!(svc.names(&token).await.contains(&name));
}
