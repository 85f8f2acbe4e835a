//! The provisioner on AWS (issue 17, docs/aws.md) against a local AWS:
//! `moto` in server mode (PyPI `moto[server]`, installed by tests/run) on a
//! free port, dummy credentials. Tenant tokens from a Secrets Manager secret
//! and from an SSM SecureString parameter, a rotation picked up without a
//! restart, a bad value kept out, a missing secret a clear start-up error;
//! the EKS IAM token on every request to the API server (a recording stand-in
//! here), refreshed after a 401, and accepted by (moto's) STS when replayed
//! the way the EKS authenticator replays it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use support::process::{Process, start_provisioner};
use support::{Fixture, cluster, eventually, unique};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SELECTOR_KEY: &str = "np-test.example.com/aws";
const ALICE: &str = "alice-token-0123456789abcdef";
const BOB: &str = "bob-token-0123456789abcdefgh";
const REGION: &str = "us-east-1";

/// moto's server on a free loopback port, stopped when dropped.
struct Moto {
    _process: Process,
    url: String,
    addr: String,
}

impl Moto {
    async fn start() -> Moto {
        let ok = Command::new("moto_server")
            .arg("--help")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            ok,
            "`moto_server` does not run; install it with `pip install 'moto[server]'` (tests/run installs it into target/tools/venv)"
        );
        let port = support::free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut process = Process::spawn(
            "moto",
            "moto_server",
            &[
                "-H".to_owned(),
                "127.0.0.1".to_owned(),
                "-p".to_owned(),
                port.to_string(),
            ],
            &[],
        );
        eventually(Duration::from_secs(60), "moto_server to listen", || {
            process.assert_running();
            let addr = addr.clone();
            async move {
                tokio::net::TcpStream::connect(&addr)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        Moto {
            _process: process,
            url: format!("http://{addr}"),
            addr,
        }
    }

    /// The environment a process uses to reach this AWS.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.url.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
    }

    /// An SDK configuration for this AWS (the test's own calls).
    async fn sdk(&self) -> SdkConfig {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .region(Region::new(REGION))
            .endpoint_url(&self.url)
            .credentials_provider(aws_credential_types::Credentials::new(
                "testing", "testing", None, None, "moto",
            ))
            .load()
            .await
    }

    async fn secrets(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk().await)
    }

    async fn ssm(&self) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.sdk().await)
    }
}

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
