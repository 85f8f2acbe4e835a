//! The provisioner on AWS (issue 17, docs/aws.md) against a local AWS
//! (tests/moto_support: moto in server mode). Tenant tokens from a Secrets Manager secret
//! and from an SSM SecureString parameter, a rotation picked up without a
//! restart, a bad value kept out, a missing secret a clear start-up error;
//! the EKS IAM token on every request to the API server (a recording stand-in
//! here), refreshed after a 401, and accepted by (moto's) STS when replayed
//! the way the EKS authenticator replays it; and end to end, a control
//! plane whose API server authenticates the provisioner by its IAM identity
//! through a token webhook.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod moto_support;
mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::{Region, SdkConfig};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use moto_support::{Moto, REGION};
use support::process::{Process, start_provisioner};
use support::{Fixture, cluster, eventually, unique};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SELECTOR_KEY: &str = "np-test.example.com/aws";
const ALICE: &str = "alice-token-0123456789abcdef";
const BOB: &str = "bob-token-0123456789abcdefgh";

async fn labelled_metric(internal: &str, series: &str) -> f64 {
    let text = support::http(internal, "GET", "/metrics", None, None).await.body;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn reloads(file: &str, outcome: &str) -> String {
    format!("namespace_provisioner_config_reload_total{{file=\"{file}\",outcome=\"{outcome}\"}}")
}

/// The status of `GET /api/v1/namespaces` with `token`.
async fn status_with(addr: &str, token: &str) -> u16 {
    support::http(addr, "GET", "/api/v1/namespaces", Some(token), None)
        .await
        .status
}

fn cluster_env(fx: &Fixture) -> Vec<(&'static str, String)> {
    vec![
        ("NP_KUBECONFIG", cluster().kubeconfig.display().to_string()),
        ("NP_SELECTOR", fx.selector.to_string()),
        ("NP_CLUSTER_ROLE", fx.set.cluster_role.clone()),
    ]
}

#[tokio::test]
async fn tokens_from_a_secret_rotate_without_a_restart_and_a_bad_value_is_kept_out() {
    let moto = Moto::start().await;
    let fx = Fixture::new(SELECTOR_KEY).await.create_grant(vec![]).await;
    let secrets = moto.secrets().await;
    let name = unique("np/tokens");
    let created = secrets
        .create_secret()
        .name(&name)
        .secret_string(format!("alice {ALICE}\n"))
        .send()
        .await
        .unwrap();
    let arn = created.arn().unwrap().to_owned();
    let mut env = moto.env();
    env.extend(cluster_env(&fx));
    // By ARN, as the SAM template passes it.
    env.push(("NP_TOKENS_SECRET", arn.clone()));
    env.push(("NP_SECRETS_REFRESH_INTERVAL", "1s".to_owned()));
    let served = start_provisioner("provisioner-aws-secret", &[], &env, "/readyz").await;
    let (addr, internal) = (served.addr.clone(), served.internal.clone());
    assert_eq!(status_with(&addr, ALICE).await, 200);
    assert_eq!(status_with(&addr, BOB).await, 401);

    secrets
        .put_secret_value()
        .secret_id(&name)
        .secret_string(format!("bob {BOB}\n"))
        .send()
        .await
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "Alice refused and Bob accepted",
        || async {
            let (alice, bob) = (status_with(&addr, ALICE).await, status_with(&addr, BOB).await);
            (alice == 401 && bob == 200)
                .then_some(())
                .ok_or(format!("alice {alice}, bob {bob}"))
        },
    )
    .await;

    // An empty set would lock everyone out: it is refused, Bob's set stays, and it is counted.
    secrets
        .put_secret_value()
        .secret_id(&name)
        .secret_string("# nobody\n")
        .send()
        .await
        .unwrap();
    let errors = reloads("tokens-secret", "error");
    eventually(Duration::from_secs(60), &errors, || async {
        labelled_metric(&internal, &errors).await >= 1.0
    })
    .await;
    assert_eq!(status_with(&addr, BOB).await, 200);
    assert!(labelled_metric(&internal, &reloads("tokens-secret", "success")).await >= 2.0);
    let log = served.process.log();
    assert!(
        !log.contains(BOB) && !log.contains(ALICE),
        "a token in the log:\n{log}"
    );
    assert!(log.contains("keeping the last good one"), "{log}");
}

#[tokio::test]
async fn tokens_from_an_ssm_secure_string_parameter() {
    let moto = Moto::start().await;
    let fx = Fixture::new(SELECTOR_KEY).await.create_grant(vec![]).await;
    let name = format!("/{}", unique("np/tokens"));
    moto.ssm()
        .await
        .put_parameter()
        .name(&name)
        .value(format!("alice: {ALICE}\n"))
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    let mut env = moto.env();
    env.extend(cluster_env(&fx));
    env.push(("NP_TOKENS_PARAMETER", name));
    let served = start_provisioner("provisioner-aws-parameter", &[], &env, "/readyz").await;
    assert_eq!(status_with(&served.addr, ALICE).await, 200);
    assert_eq!(status_with(&served.addr, BOB).await, 401);
}

#[tokio::test]
async fn a_missing_secret_or_parameter_stops_the_start_with_the_reason() {
    let moto = Moto::start().await;
    for (flag, name, expected) in [
        ("NP_TOKENS_SECRET", "np/missing", "ResourceNotFoundException"),
        ("NP_TOKENS_PARAMETER", "/np/missing", "ParameterNotFound"),
    ] {
        let mut env = moto.env();
        env.push((flag, name.to_owned()));
        env.push(("NP_KUBECONFIG", cluster().kubeconfig.display().to_string()));
        let process = Process::spawn(
            "provisioner-aws-missing",
            env!("CARGO_BIN_EXE_provisioner"),
            &[],
            &env,
        );
        let (status, log) = process.wait(Duration::from_secs(60)).await;
        assert!(!status.success(), "{log}");
        assert!(
            log.contains(name) && log.contains(expected),
            "the error names the secret and the reason:\n{log}"
        );
    }
    // Both sources at once, or with a token file: refused before any fetch.
    let process = Process::spawn(
        "provisioner-aws-both",
        env!("CARGO_BIN_EXE_provisioner"),
        &[
            "--tokens-secret".to_owned(),
            "a".to_owned(),
            "--token-file".to_owned(),
            "t".to_owned(),
        ],
        &[],
    );
    let (status, log) = process.wait(Duration::from_secs(60)).await;
    assert!(!status.success() && log.contains("cannot be used with"), "{log}");
}

/// What the stand-in API server saw: every request's Authorization value.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

/// An HTTP API server stand-in that records the bearer tokens and answers
/// 401 to everything (so the provisioner's 401 path runs too).
async fn recording_api_server() -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let record = record.clone();
        async move {
            if let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
                record.0.lock().unwrap().push(value.to_owned());
            }
            (axum::http::StatusCode::UNAUTHORIZED, "{}")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

/// The presigned URL inside an EKS token.
fn presigned_url(authorization: &str) -> url::Url {
    let token = authorization.strip_prefix("Bearer ").unwrap();
    let body = token.strip_prefix("k8s-aws-v1.").unwrap();
    String::from_utf8(URL_SAFE_NO_PAD.decode(body).unwrap())
        .unwrap()
        .parse()
        .unwrap()
}

/// Replay `url` as the EKS authenticator does (GET with `x-k8s-aws-id`);
/// the raw answer. moto's server picks the service of a request from an
/// `Authorization` header's credential scope only (a query-signed GET would
/// go to its S3), so the replay also carries the URL's own `X-Amz-Credential`,
/// `X-Amz-SignedHeaders` and `X-Amz-Signature` in that header form; moto does
/// not verify signatures either way (the structural checks do that part).
async fn replay(addr: &str, url: &url::Url, cluster_name: &str) -> String {
    let query: std::collections::BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={}, SignedHeaders={}, Signature={}",
        query["X-Amz-Credential"], query["X-Amz-SignedHeaders"], query["X-Amz-Signature"]
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let target = format!("{}?{}", url.path(), url.query().unwrap());
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nx-k8s-aws-id: {cluster_name}\r\nAuthorization: {authorization}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn the_eks_token_goes_on_every_request_is_refreshed_after_a_401_and_sts_accepts_it() {
    let moto = Moto::start().await;
    let (api, seen) = recording_api_server().await;
    let cluster_name = "np-test-cluster";
    let mut env = moto.env();
    env.extend([
        ("NP_EKS_CLUSTER_NAME", cluster_name.to_owned()),
        ("NP_EKS_SERVER", format!("http://{api}")),
        ("AWS_ENDPOINT_URL_STS", moto.url.clone()),
        ("NP_TOKEN", ALICE.to_owned()),
        ("NP_PREFLIGHT_INTERVAL", "1s".to_owned()),
    ]);
    let served = start_provisioner("provisioner-aws-eks", &[], &env, "/healthz").await;
    eventually(Duration::from_secs(60), "a request to the API server", || async {
        (!seen.0.lock().unwrap().is_empty())
            .then_some(())
            .ok_or_else(|| "none yet".to_owned())
    })
    .await;
    let first = seen.0.lock().unwrap()[0].clone();
    let url = presigned_url(&first);
    assert_eq!(url.host_str(), Some("127.0.0.1"));
    let query: std::collections::BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(query["Action"], "GetCallerIdentity");
    assert_eq!(query["Version"], "2011-06-15");
    assert_eq!(query["X-Amz-Expires"], "60");
    assert_eq!(query["X-Amz-SignedHeaders"], "host;x-k8s-aws-id");
    assert!(
        query["X-Amz-Credential"].starts_with("testing/")
            && query["X-Amz-Credential"].ends_with(&format!("/{REGION}/sts/aws4_request")),
        "{}",
        query["X-Amz-Credential"]
    );
    let answer = replay(&moto.addr, &url, cluster_name).await;
    assert!(
        answer.starts_with("HTTP/1.1 200")
            && answer.contains("GetCallerIdentityResult")
            && answer.contains("<Arn>arn:aws:"),
        "STS refused the token's request:\n{answer}"
    );

    // Every answer is 401: past the 30 s gap the token is replaced (not on every 401 before it).
    eventually(
        Duration::from_secs(180),
        "a refreshed token after 401s",
        || async {
            let tokens: std::collections::BTreeSet<String> = seen.0.lock().unwrap().iter().cloned().collect();
            (tokens.len() >= 2)
                .then_some(())
                .ok_or(format!("{} distinct", tokens.len()))
        },
    )
    .await;
    let success = reloads("eks-token", "success");
    assert!(labelled_metric(&served.internal, &success).await >= 2.0);
    let log = served.process.log();
    assert!(!log.contains("k8s-aws-v1."), "a token in the log:\n{log}");
    assert!(log.contains("after_401"), "{log}");
}

/// The username and group the stand-in authenticator gives the mapped ARN:
/// what docs/aws.md's access entry gives the function's role. The shipped
/// admission policies know the group.
const IAM_USER: &str = "namespace-provisioner";
const IAM_GROUP: &str = "namespace-provisioner";

/// What the stand-in IAM authenticator decided, one entry per TokenReview.
#[derive(Clone, Default)]
struct Reviews(Arc<Mutex<Vec<Result<String, String>>>>);

impl Reviews {
    fn accepted(&self) -> usize {
        self.0.lock().unwrap().iter().filter(|r| r.is_ok()).count()
    }

    fn refusals(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|r| r.clone().err())
            .collect()
    }
}

/// A stand-in for the EKS authenticator (aws-iam-authenticator), served as
/// the API server's token webhook: it takes a `k8s-aws-v1.` token apart,
/// checks the presigned request (the STS it trusts, the action, the cluster
/// header signed, not expired), checks the signature for this cluster's name
/// with the key moto holds (what STS does; moto itself does not), replays it
/// against moto's STS and maps the caller's ARN to a Kubernetes user.
struct IamAuthenticator {
    sts: String,
    cluster_name: &'static str,
    mapped_arn: String,
    reviews: Reviews,
}

impl IamAuthenticator {
    async fn authenticate(&self, token: &str) -> Result<String, String> {
        let encoded = token.strip_prefix("k8s-aws-v1.").ok_or("not an EKS token")?;
        let url: url::Url = String::from_utf8(URL_SAFE_NO_PAD.decode(encoded).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?
            .parse()
            .map_err(|e: url::ParseError| e.to_string())?;
        let host = format!("{}:{}", url.host_str().unwrap_or(""), url.port().unwrap_or(443));
        if host != self.sts || url.path() != "/" {
            return Err(format!("not the STS this cluster trusts: {host}{}", url.path()));
        }
        let query: std::collections::BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        let get = |k: &str| query.get(k).map(String::as_str).unwrap_or("");
        if get("Action") != "GetCallerIdentity" || get("Version") != "2011-06-15" {
            return Err(format!("not GetCallerIdentity: {}", get("Action")));
        }
        if !get("X-Amz-SignedHeaders").split(';').any(|h| h == "x-k8s-aws-id") {
            return Err("x-k8s-aws-id is not signed".to_owned());
        }
        let signed_at = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", get("X-Amz-Date"))
            .and_then(|t| t.to_zoned(jiff::tz::TimeZone::UTC))
            .map_err(|e| format!("X-Amz-Date: {e}"))?
            .timestamp();
        let expires: i64 = get("X-Amz-Expires").parse().map_err(|_| "X-Amz-Expires")?;
        let age = jiff::Timestamp::now().as_second() - signed_at.as_second();
        if age > expires || expires > 15 * 60 {
            return Err(format!("expired: signed {age} s ago, valid {expires} s"));
        }
        // STS recomputes the signature over the cluster header it is sent.
        let expected = expected_signature(&self.sts, self.cluster_name, signed_at.into()).await;
        if get("X-Amz-Signature") != expected {
            return Err(format!("the signature is not for cluster {}", self.cluster_name));
        }
        let answer = replay(&self.sts, &url, self.cluster_name).await;
        if !answer.starts_with("HTTP/1.1 200") {
            return Err(format!("STS refused: {}", answer.lines().next().unwrap_or("")));
        }
        let arn = arn_in(&answer).ok_or("no Arn in the STS answer")?;
        if arn != self.mapped_arn {
            return Err(format!("{arn} is not mapped"));
        }
        Ok(arn)
    }

    async fn review(&self, review: serde_json::Value) -> serde_json::Value {
        let token = review["spec"]["token"].as_str().unwrap_or_default();
        let outcome = self.authenticate(token).await;
        self.reviews.0.lock().unwrap().push(outcome.clone());
        let status = match outcome {
            Ok(arn) => serde_json::json!({
                "authenticated": true,
                "user": {
                    "username": IAM_USER,
                    "uid": format!("aws-iam-authenticator:{arn}"),
                    "groups": [IAM_GROUP],
                    "extra": {"arn": [arn]},
                },
            }),
            Err(error) => serde_json::json!({"authenticated": false, "error": error}),
        };
        serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status})
    }

    /// Serve the webhook; the kubeconfig-format file the API server's
    /// `--authentication-token-webhook-config-file` reads.
    async fn serve(self) -> (tempfile::NamedTempFile, Reviews) {
        let reviews = self.reviews.clone();
        let this = Arc::new(self);
        let app = axum::Router::new().route(
            "/authenticate",
            axum::routing::post(move |axum::Json(review): axum::Json<serde_json::Value>| {
                let this = this.clone();
                async move { axum::Json(this.review(review).await) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let config = support::temp_file(&format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: iam\n  cluster:\n    server: http://{addr}/authenticate\n\
             users:\n- name: apiserver\n  user: {{}}\ncontexts:\n- name: iam\n  context:\n    cluster: iam\n    user: apiserver\n\
             current-context: iam\n"
        ));
        (config, reviews)
    }
}

/// The signature STS expects for `cluster_name` at `at` with moto's dummy key.
async fn expected_signature(sts: &str, cluster_name: &str, at: std::time::SystemTime) -> String {
    let signed = moto_signer(sts, cluster_name).presign(at).await.unwrap();
    let url: url::Url = signed.parse().unwrap();
    url.query_pairs()
        .find(|(k, _)| k == "X-Amz-Signature")
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

/// A token signer with the credentials moto's environment hands out.
fn moto_signer(sts: &str, cluster_name: &str) -> namespace_provisioner::aws::eks::TokenSigner {
    let credentials = aws_credential_types::Credentials::new("testing", "testing", None, None, "moto");
    let config = SdkConfig::builder()
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(
            credentials,
        ))
        .region(Region::new(REGION))
        .build();
    let endpoint: url::Url = format!("http://{sts}").parse().unwrap();
    namespace_provisioner::aws::eks::TokenSigner::new(
        &config,
        cluster_name.parse().unwrap(),
        None,
        Some(&endpoint),
    )
    .unwrap()
}

/// The ARN moto's STS gives the dummy credentials (asked the EKS way).
async fn moto_caller_arn(moto: &Moto) -> String {
    let url = moto_signer(&moto.addr, "any")
        .presign(std::time::SystemTime::now())
        .await
        .unwrap();
    let answer = replay(&moto.addr, &url.parse::<url::Url>().unwrap(), "any").await;
    arn_in(&answer).unwrap_or_else(|| panic!("no Arn from moto's STS:\n{answer}"))
}

/// The `<Arn>` of a GetCallerIdentity answer.
fn arn_in(answer: &str) -> Option<String> {
    let (_, rest) = answer.split_once("<Arn>")?;
    Some(rest.split_once("</Arn>")?.0.to_owned())
}

fn apply(kubeconfig: &std::path::Path, files: &[&str]) {
    let mut args = vec!["apply", "--server-side"];
    for file in files {
        args.extend(["-f", file]);
    }
    support::kubectl_ok(kubeconfig, &args);
}

/// Item 3 of issue 17 end to end: a control plane whose API server asks a
/// token webhook (the EKS authenticator's role) about bearer tokens; the
/// provisioner, given no Kubernetes credential at all, authenticates with its
/// IAM identity and creates a namespace whose kubeconfig kubectl uses; the
/// same identity is confined by the shipped admission policy; a token signed
/// for another cluster is refused (the provisioner stays up, not ready).
#[tokio::test]
async fn the_provisioner_authenticated_only_by_iam_creates_a_namespace_on_a_real_control_plane() {
    let moto = Moto::start().await;
    let cluster_name = "np-iam-cluster";
    let (webhook, reviews) = IamAuthenticator {
        sts: moto.addr.clone(),
        cluster_name,
        mapped_arn: moto_caller_arn(&moto).await,
        reviews: Reviews::default(),
    }
    .serve()
    .await;
    let plane = support::Cluster::start_with(&[
        format!(
            "--authentication-token-webhook-config-file={}",
            webhook.path().display()
        ),
        "--authentication-token-webhook-version=v1".to_owned(),
    ]);
    // The access entry's part: the group bound to the provisioner's ClusterRole,
    // the ClusterRoles and the admission policy as shipped.
    apply(
        &plane.kubeconfig,
        &[
            "function/grant-clusterrole.yaml",
            "function/clusterrole.yaml",
            "function/admission-policy.yaml",
        ],
    );
    let admin = plane.client().await;
    let binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "namespace-provisioner-iam"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "namespace-provisioner"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": IAM_GROUP}],
    }))
    .unwrap();
    kube::Api::all(admin.clone())
        .create(&kube::api::PostParams::default(), &binding)
        .await
        .unwrap();
    let ca = plane.data_dir.join("ca.crt");
    let eks_env = |name: &str| {
        let mut env = moto.env();
        env.extend([
            ("NP_EKS_CLUSTER_NAME", name.to_owned()),
            ("NP_EKS_SERVER", plane.server.clone()),
            ("NP_EKS_CERTIFICATE_AUTHORITY", ca.display().to_string()),
            ("AWS_ENDPOINT_URL_STS", moto.url.clone()),
            ("NP_TOKEN", ALICE.to_owned()),
        ]);
        env
    };

    let served = start_provisioner("provisioner-iam", &[], &eks_env(cluster_name), "/readyz").await;
    let created = support::http(
        &served.addr,
        "POST",
        "/api/v1/namespace?ttl=5m",
        Some(ALICE),
        None,
    )
    .await;
    assert_eq!(created.status, 201, "{}\n{}", created.body, served.process.log());
    let returned = support::temp_file(&created.body);
    let whoami = support::kubectl_ok(
        returned.path(),
        &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
    );
    assert!(whoami.starts_with("system:serviceaccount:np-"), "{whoami}");
    assert!(reviews.accepted() >= 1, "refusals: {:?}", reviews.refusals());
    let deleted = support::http(
        &served.addr,
        "DELETE",
        &format!("/api/v1/namespace/{}", namespace_of(returned.path())),
        Some(ALICE),
        None,
    )
    .await;
    assert!(deleted.status < 300, "{}", deleted.body);
    let log = served.process.log();
    assert!(!log.contains("k8s-aws-v1."), "a token in the log:\n{log}");
    drop(served);

    // The same admission policy confines the IAM identity: a namespace without
    // the managed key is refused, though RBAC alone would allow it.
    let token = namespace_provisioner::rules::eks::token(
        &moto_signer(&moto.addr, cluster_name)
            .presign(std::time::SystemTime::now())
            .await
            .unwrap(),
    );
    let as_iam = iam_client(&plane, &token).await;
    let plain: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": unique("not-managed")}})).unwrap();
    let namespaces = kube::Api::all(as_iam);
    // The API server compiles a new policy on its own schedule (about a second after it
    // is written; more on a loaded machine): wait for it with dry runs, which create nothing.
    let dry_run = kube::api::PostParams {
        dry_run: true,
        ..kube::api::PostParams::default()
    };
    eventually(
        Duration::from_secs(30),
        "the admission policy to refuse the IAM identity a namespace without the managed key",
        || async {
            match namespaces.create(&dry_run, &plain).await {
                Ok(_) => Err("a dry-run create was let through".to_owned()),
                Err(refused) if refused.to_string().contains("namespace-provisioner-managed-only") => Ok(()),
                Err(other) => Err(other.to_string()),
            }
        },
    )
    .await;
    let refused = namespaces
        .create(&kube::api::PostParams::default(), &plain)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("namespace-provisioner-managed-only"),
        "not refused by the admission policy: {refused}"
    );

    // A token signed for another cluster: refused; the provisioner stays up,
    // not ready, and says why.
    let internal = format!("127.0.0.1:{}", support::free_port());
    let mut env = eks_env("another-cluster");
    env.extend([
        ("NP_LISTEN", format!("127.0.0.1:{}", support::free_port())),
        ("NP_INTERNAL_LISTEN", internal.clone()),
    ]);
    let mut other = Process::spawn(
        "provisioner-iam-other-cluster",
        env!("CARGO_BIN_EXE_provisioner"),
        &[],
        &env,
    );
    eventually(Duration::from_secs(60), "the refusal in the log", || {
        other.assert_running();
        let log = other.log();
        async move {
            log.contains("not ready")
                .then_some(())
                .ok_or_else(|| "not yet".to_owned())
        }
    })
    .await;
    let log = other.log();
    assert!(log.contains("401 Unauthorized"), "{log}");
    let ready = support::http(&internal, "GET", "/readyz", None, None).await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(
        reviews
            .refusals()
            .iter()
            .any(|r| r.contains("not for cluster np-iam-cluster")),
        "{:?}",
        reviews.refusals()
    );
    plane.stop();
}

/// The namespace a returned kubeconfig's context names.
fn namespace_of(kubeconfig: &std::path::Path) -> String {
    support::kubectl_ok(
        kubeconfig,
        &[
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.contexts[0].context.namespace}",
        ],
    )
}

/// A client of `plane` that presents `token` (and nothing else).
async fn iam_client(plane: &support::Cluster, token: &str) -> kube::Client {
    let ca = base64::engine::general_purpose::STANDARD.encode(plane.ca_pem());
    support::client_from_yaml(&format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\n\
         users:\n- name: iam\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: iam\n\
         current-context: c\n",
        plane.server
    ))
    .await
}
