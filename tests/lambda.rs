//! The provisioner in function mode (function/template.yaml): the Lambda
//! bundle builds with the documented command (function/build-lambda.sh, i.e.
//! `cargo lambda build`), and its `bootstrap` answers a create and a delete
//! sent as Function URL (API Gateway HTTP API v2) events through cargo-lambda's
//! Lambda runtime API emulator, acting on the real control plane as the
//! provisioner's least-privilege ServiceAccount, with its tenant tokens in a
//! Secrets Manager secret (moto, tests/moto_support) as function/template.yaml
//! configures it. The SAM template passes cfn-lint (with the SAM transform).
//!
//! cargo-lambda, zig, moto and cfn-lint come from PyPI (`.ci/run` installs them);
//! without them these tests fail and say so.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod deploy_support;
mod moto_support;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use deploy_support::{PROVISIONER_SA, Running, forbidden_lines, kubectl_as, sa_kubeconfig, text};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::ResourceExt;
use kube::api::Api;
use namespace_provisioner::labels::OBJECT_NAME;

/// The bearer token in tests/fixtures/apigw-v2-deploy-*.json.
const FIXTURE_TOKEN: &str = "lambda-fixture-token-0123456789";

#[test]
fn sam_template_passes_cfn_lint() {
    support::require("cfn-lint", &["--version"], "pip install cfn-lint");
    let out = Command::new("cfn-lint")
        .arg("function/template.yaml")
        .current_dir(deploy_support::repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cfn-lint function/template.yaml:\n{}",
        text(&out)
    );
    // What ties the template to the build and to the binary's configuration.
    let template = std::fs::read_to_string(deploy_support::repo().join("function/template.yaml")).unwrap();
    for needle in [
        "CodeUri: ../target/lambda/provisioner/",
        "Handler: bootstrap",
        "Runtime: provided.al2023",
        "Architectures: [!Ref Architecture]",
        "FunctionUrlConfig:",
        "NP_TOKEN_FILE: !If [UseSecret, !Ref AWS::NoValue, /opt/namespace-provisioner/tokens]",
        "NP_KUBECONFIG: !If [UseEks, !Ref AWS::NoValue, /opt/namespace-provisioner/kubeconfig]",
        // Issue 17: IAM to EKS and tokens from Secrets Manager, least privilege.
        "NP_EKS_CLUSTER_NAME: !If [UseEks, !Ref EksClusterName, !Ref AWS::NoValue]",
        "NP_TOKENS_SECRET: !If [UseSecret, !Ref TokensSecretArn, !Ref AWS::NoValue]",
        "Action: secretsmanager:GetSecretValue\n                Resource: !Ref TokensSecretArn",
        "Action: kms:Decrypt\n                Resource: !Ref KmsKeyArn",
    ] {
        assert!(
            template.contains(needle),
            "function/template.yaml lacks {needle:?}"
        );
    }
    assert!(
        !template.contains("NP_TOKEN:"),
        "tokens go in the layer's file, not in the environment"
    );
}

/// `cargo lambda invoke` of one event file against the emulator on `port`;
/// the function's response (statusCode, headers, body).
fn invoke(port: u16, event: &Path) -> serde_json::Value {
    let out = Command::new("timeout")
        .args(["120", "cargo", "lambda", "invoke", "-A", "127.0.0.1", "-P"])
        .arg(port.to_string())
        .arg("--data-file")
        .arg(event)
        .args(["--output-format", "json"])
        .current_dir(deploy_support::repo())
        .output()
        .expect("run cargo lambda invoke");
    assert!(
        out.status.success(),
        "cargo lambda invoke {}:\n{}",
        event.display(),
        text(&out)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("invoke answered no JSON ({e}):\n{}", text(&out)))
}

#[tokio::test]
async fn lambda_bundle_builds_and_answers_create_and_delete_through_the_runtime_emulator() {
    support::require(
        "cargo",
        &["lambda", "--version"],
        "pip install cargo-lambda ziglang",
    );
    let repo = deploy_support::repo();

    // 1. The documented build command.
    let started = Instant::now();
    let mut command = Command::new("bash");
    command.arg("function/build-lambda.sh").current_dir(&repo);
    // As a person runs it: without the variables `cargo test` sets for its
    // tests, which would make this build and a manual one rebuild each other.
    for (key, _) in std::env::vars() {
        if (key.starts_with("CARGO") && key != "CARGO_HOME") || key == "LD_LIBRARY_PATH" {
            command.env_remove(key);
        }
    }
    let build = command.output().expect("run function/build-lambda.sh");
    let build_time = started.elapsed();
    assert!(
        build.status.success(),
        "function/build-lambda.sh failed:\n{}",
        text(&build)
    );
    let bootstrap = repo.join("target/lambda/provisioner/bootstrap");
    let size = std::fs::metadata(&bootstrap)
        .unwrap_or_else(|e| panic!("no bundle at {} ({e})", bootstrap.display()))
        .len();
    eprintln!("lambda bundle: {} bytes, built in {build_time:?}", size);

    // 2. The runtime API emulator.
    let port = support::free_port();
    let mut emulator = Running::spawn(
        "cargo lambda watch",
        // cargo-lambda itself rather than `cargo lambda`, so that stopping
        // the child stops the emulator (cargo would leave it orphaned).
        Path::new("cargo-lambda"),
        &[
            "lambda".into(),
            "watch".into(),
            "--only-lambda-apis".into(),
            "-A".into(),
            "127.0.0.1".into(),
            "-P".into(),
            port.to_string(),
        ],
        &[],
    );
    let log = emulator.log_path();
    support::eventually(Duration::from_secs(60), "the emulator to listen", || {
        emulator.assert_running();
        let log = log.clone();
        async move {
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(_) => Ok(()),
                Err(e) => Err(format!(
                    "{e}; log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )),
            }
        }
    })
    .await;

    // 3. The bundle's bootstrap, as Lambda starts it, as the provisioner's ServiceAccount.
    let identity = sa_kubeconfig(PROVISIONER_SA).await;
    let moto = moto_support::Moto::start().await;
    let secret = moto
        .secrets()
        .await
        .create_secret()
        .name(support::unique("np/lambda-tokens"))
        .secret_string(format!("lambda-tenant {FIXTURE_TOKEN}\n"))
        .send()
        .await
        .unwrap();
    let mut env = vec![
        // What the emulator says a function needs; `_` is its default function.
        ("AWS_LAMBDA_RUNTIME_API", format!("http://127.0.0.1:{port}/.rt")),
        ("AWS_LAMBDA_FUNCTION_NAME", "_".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "1".into()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".into()),
        // What function/template.yaml sets: the cluster credential from the
        // layer, the tenant tokens from the secret (by ARN).
        ("NP_KUBECONFIG", identity.path().display().to_string()),
        ("NP_TOKENS_SECRET", secret.arn().unwrap().to_owned()),
    ];
    // The function's role, as the Lambda environment hands it over.
    env.extend(moto.env());
    let fx = deploy_support::fixture().await;
    let selector = fx.selector.to_string();
    env.extend([
        ("NP_SELECTOR", selector.clone()),
        ("NP_TTL", "15m".into()),
        ("NP_MAX_TTL", "1h".into()),
        ("NP_LOG_FORMAT", "json".into()),
    ]);
    let spawned = Instant::now();
    let mut function = Running::spawn("bootstrap", &bootstrap, &[], &env);

    // 4. Create (compat POST /api/v1/namespace?ttl=15m, Function URL event);
    // the emulator hands it over once the bootstrap has initialised (tokens
    // fetched from the secret) and asks for work: a cold start.
    let fixtures = repo.join("tests/fixtures");
    let started = Instant::now();
    let created = invoke(port, &fixtures.join("apigw-v2-deploy-create.json"));
    let cold_answer = spawned.elapsed();
    function.assert_running();
    assert_eq!(
        created["statusCode"],
        201,
        "{created}\nfunction log:\n{}",
        function.log()
    );
    assert_eq!(
        created["headers"]["content-type"], "application/yaml",
        "{created}"
    );
    let body = created["body"].as_str().unwrap();
    let config = kube::config::Kubeconfig::from_yaml(body).unwrap();
    let name = config.contexts[0]
        .context
        .as_ref()
        .unwrap()
        .namespace
        .clone()
        .unwrap();
    assert_eq!(
        created["headers"]["location"],
        format!("/api/v1/namespaces/{name}"),
        "{created}"
    );
    let admin = support::admin().await;
    let ns = Api::<Namespace>::all(admin.clone()).get(&name).await.unwrap();
    let (key, value) = selector.split_once('=').unwrap();
    assert_eq!(ns.labels().get(key).map(String::as_str), Some(value));
    Api::<ServiceAccount>::namespaced(admin.clone(), &name)
        .get(OBJECT_NAME)
        .await
        .unwrap();
    // The kubeconfig works with the real kubectl.
    let returned = support::temp_file(body);
    let whoami = kubectl_as(
        returned.path(),
        &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
    );
    assert_eq!(
        String::from_utf8_lossy(&whoami.stdout),
        format!("system:serviceaccount:{name}:{OBJECT_NAME}"),
        "{}",
        text(&whoami)
    );
    let create_time = started.elapsed();

    // 5. Delete (compat DELETE /api/v1/namespace/{name}).
    let template = std::fs::read_to_string(fixtures.join("apigw-v2-deploy-delete.json")).unwrap();
    let event = support::temp_file(&template.replace("NAMESPACE", &name));
    let warm = Instant::now();
    let deleted = invoke(port, event.path());
    let warm_answer = warm.elapsed();
    let status = deleted["statusCode"].as_u64().unwrap();
    assert!(
        (200..300).contains(&status),
        "{deleted}\nfunction log:\n{}",
        function.log()
    );
    let gone = Api::<Namespace>::all(admin.clone()).get_opt(&name).await.unwrap();
    assert!(
        gone.is_none_or(|ns| ns.metadata.deletion_timestamp.is_some()),
        "{name} not deleted"
    );

    let log = function.log();
    assert!(
        forbidden_lines(&log).is_empty(),
        "the function was refused something:\n{log}"
    );
    function.assert_running();
    emulator.assert_running();
    eprintln!(
        "through the emulator: cold start to the create's answer {cold_answer:?} (includes cargo lambda invoke), \
         create + kubectl check {create_time:?}, warm delete {warm_answer:?}, total {:?}",
        started.elapsed()
    );
}
