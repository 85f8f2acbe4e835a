//! Benchmark (not a test): the Lambda bundles of issue 17, x86_64 and arm64
//! (Graviton), built with the documented command (function/build-lambda.sh)
//! and started under cargo-lambda's runtime API emulator: bundle size, and
//! the cold start (bootstrap spawned -> the answer to its first request) next
//! to warm requests of the same process. The request lists the tenant's
//! namespaces: one API call, so the cold-warm difference is the function's
//! init (configuration, tokens, Kubernetes client).
//!
//! An arm64 bundle runs here under `qemu-aarch64-static` (Debian
//! qemu-user-static) unless the host is arm64: its times are emulated, an
//! upper bound that says little about Graviton; its size is exact.
//!
//! `cargo bench --bench lambda` (cargo-lambda and zig on PATH: tests/run puts
//! them in target/tools/venv/bin; NP_BENCH_LAMBDA_TARGETS and
//! NP_BENCH_COLD_STARTS pick the targets and the number of cold starts).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::bench::{ms, pct};

use support::Process;

const TOKEN: &str = "lambda-bench-token-0123456789";
const WARM_REQUESTS: usize = 20;

/// Build the bundle for `target` into its own directory; the bootstrap.
fn build(target: &str) -> (PathBuf, Duration) {
    let repo = support::repo_root();
    let dir = format!("target/lambda-bench/{target}");
    let started = Instant::now();
    let mut command = Command::new("bash");
    command
        .arg("function/build-lambda.sh")
        .env("NP_LAMBDA_TARGET", target)
        .env("NP_LAMBDA_DIR", &dir)
        .current_dir(&repo);
    // As a person runs it: without what `cargo bench` sets for its targets.
    for (key, _) in std::env::vars() {
        if (key.starts_with("CARGO") && key != "CARGO_HOME") || key == "LD_LIBRARY_PATH" {
            command.env_remove(key);
        }
    }
    let out = command.output().expect("run function/build-lambda.sh");
    assert!(
        out.status.success(),
        "function/build-lambda.sh for {target} failed:\n{}",
        support::text(&out)
    );
    (repo.join(dir).join("provisioner/bootstrap"), started.elapsed())
}

/// The bytes of the zip Lambda is given (`cargo lambda build` writes the
/// binary; the zip is what `sam deploy` uploads, made here the same way).
fn zip_size(bootstrap: &Path) -> u64 {
    let zip = bootstrap.with_file_name("bench-bootstrap.zip");
    let _ = std::fs::remove_file(&zip);
    let out = Command::new("python3")
        .args(["-m", "zipfile", "-c"])
        .arg(&zip)
        .arg(bootstrap)
        .output()
        .expect("python3 -m zipfile");
    assert!(out.status.success(), "zip: {}", support::text(&out));
    std::fs::metadata(&zip).unwrap().len()
}

/// How to run a bootstrap built for `target` on this host.
fn runner(target: &str) -> Option<&'static str> {
    let native = if cfg!(target_arch = "aarch64") {
        "aarch64"
    } else {
        "x86_64"
    };
    if target.starts_with(native) {
        None
    } else {
        support::require(
            "qemu-aarch64-static",
            &["--version"],
            "install Debian's qemu-user-static to run the arm64 bundle on this host",
        );
        Some("qemu-aarch64-static")
    }
}

/// A Function URL event listing the tenant's namespaces.
fn list_event() -> serde_json::Value {
    let fixture = support::repo_root().join("tests/fixtures/apigw-v2-deploy-create.json");
    let mut event: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    event["rawPath"] = "/api/v1/namespaces".into();
    event["rawQueryString"] = "".into();
    event["queryStringParameters"] = serde_json::json!({});
    event["headers"]["authorization"] = format!("Bearer {TOKEN}").into();
    event["requestContext"]["http"]["method"] = "GET".into();
    event["requestContext"]["http"]["path"] = "/api/v1/namespaces".into();
    event
}

/// One invocation through the emulator's Invoke API; its time.
async fn invoke(port: u16, event: &str) -> Duration {
    let started = Instant::now();
    let answer = support::http(
        &format!("127.0.0.1:{port}"),
        "POST",
        "/2015-03-31/functions/_/invocations",
        None,
        Some(event),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(answer.status, 200, "emulator: {}", answer.body);
    let response: serde_json::Value = serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("not a function response ({e}): {}", answer.body));
    assert_eq!(response["statusCode"], 200, "{response}");
    took
}

struct Measured {
    target: String,
    build: Duration,
    binary: u64,
    zip: u64,
    cold: Vec<Duration>,
    warm: Vec<Duration>,
    emulated: bool,
}

async fn measure(target: &str, port: u16, kubeconfig: &Path, tokens: &Path, cold_starts: usize) -> Measured {
    let (bootstrap, build) = build(target);
    let runner = runner(target);
    let event = list_event().to_string();
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..cold_starts {
        let (program, args): (PathBuf, Vec<String>) = match runner {
            Some(qemu) => (qemu.into(), vec![bootstrap.display().to_string()]),
            None => (bootstrap.clone(), vec![]),
        };
        let spawned = Instant::now();
        let mut function = Process::spawn(
            "bench-bootstrap",
            &program,
            &args,
            &[
                ("AWS_LAMBDA_RUNTIME_API", format!("http://127.0.0.1:{port}/.rt")),
                ("AWS_LAMBDA_FUNCTION_NAME", "_".into()),
                ("AWS_LAMBDA_FUNCTION_VERSION", "1".into()),
                ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".into()),
                ("NP_KUBECONFIG", kubeconfig.display().to_string()),
                ("NP_TOKEN_FILE", tokens.display().to_string()),
                ("NP_LOG_FORMAT", "json".into()),
            ],
        );
        invoke(port, &event).await;
        cold.push(spawned.elapsed());
        for _ in 0..WARM_REQUESTS {
            warm.push(invoke(port, &event).await);
        }
        function.assert_running();
        drop(function);
        // The emulator notices the runtime is gone before the next one asks.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Measured {
        target: target.to_owned(),
        build,
        binary: std::fs::metadata(&bootstrap).unwrap().len(),
        zip: zip_size(&bootstrap),
        cold,
        warm,
        emulated: runner.is_some(),
    }
}

async fn bench() {
    support::require(
        "cargo-lambda",
        &["lambda", "--version"],
        "pip install cargo-lambda ziglang (tests/run installs them into target/tools/venv/bin)",
    );
    let targets: Vec<String> = std::env::var("NP_BENCH_LAMBDA_TARGETS")
        .unwrap_or_else(|_| "x86_64-unknown-linux-musl,aarch64-unknown-linux-musl".to_owned())
        .split(',')
        .map(str::to_owned)
        .collect();
    let cold_starts = support::bench::env_list("NP_BENCH_COLD_STARTS", "5")[0];

    let port = support::free_port();
    let mut emulator = Process::spawn(
        "bench-emulator",
        "cargo-lambda",
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
    support::eventually(Duration::from_secs(60), "the emulator to listen", || {
        emulator.assert_running();
        async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let kubeconfig = support::cluster().kubeconfig.clone();
    let tokens = support::temp_file(&format!("bench {TOKEN}\n"));

    let mut rows = Vec::new();
    for target in &targets {
        rows.push(measure(target, port, &kubeconfig, tokens.path(), cold_starts).await);
    }
    emulator.assert_running();

    println!(
        "\nLambda bundles under the runtime API emulator ({cold_starts} cold starts each, {WARM_REQUESTS} warm requests after each; request: list, 1 API call)"
    );
    println!(
        "| target | bootstrap bytes | zip bytes | build | cold start p50 | cold p99 | warm p50 | warm p99 | init ≈ cold − warm (p50) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for m in &rows {
        let init = pct(&m.cold, 0.5).saturating_sub(pct(&m.warm, 0.5));
        println!(
            "| {}{} | {} | {} | {:.0} s | {} ms | {} ms | {} ms | {} ms | {} ms |",
            m.target,
            if m.emulated { " (qemu-user, emulated)" } else { "" },
            m.binary,
            m.zip,
            m.build.as_secs_f64(),
            ms(pct(&m.cold, 0.5)),
            ms(pct(&m.cold, 0.99)),
            ms(pct(&m.warm, 0.5)),
            ms(pct(&m.warm, 0.99)),
            ms(init),
        );
    }
}

fn main() {
    support::bench::main("lambda", bench());
}
