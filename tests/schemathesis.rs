//! Schemathesis (issue 15 item 5) against the live `/openapi.json` of the
//! real provisioner binary over the real control plane: generated requests
//! for every operation (valid and invalid), no 5xx, every response matching
//! the schema (status, content type, headers, body).
//!
//! Schemathesis comes from the venv `tests/run` installs (`PY_TOOLS`), or
//! `NP_SCHEMATHESIS` (the path of its executable). Missing, the test fails
//! saying so: it never skips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::PathBuf;
use std::time::Instant;

use support::process::start_provisioner;
use support::{Fixture, cluster, repo_root, temp_file};

const ALICE: &str = "alice-token-0123456789abcdef";
const SELECTOR_KEY: &str = "np-test.example.com/schemathesis";
/// Examples per operation: bounded, so the run stays well under a minute.
const MAX_EXAMPLES: &str = "50";

fn schemathesis() -> PathBuf {
    let path = std::env::var_os("NP_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/tools/venv/bin/schemathesis"));
    assert!(
        path.exists(),
        "schemathesis not found at {}: run tests/run once (it installs PY_TOOLS into target/tools/venv), \
         or set NP_SCHEMATHESIS to its path (pip install schemathesis)",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_api_matches_its_openapi_and_never_answers_5xx() {
    let program = schemathesis();
    let fx = Fixture::new(SELECTOR_KEY).await.create_grant(vec![]).await;
    let tokens = temp_file(&format!("alice {ALICE}\n"));
    let served = start_provisioner(
        "provisioner-schemathesis",
        &[],
        &[
            ("NP_TOKEN_FILE", tokens.path().display().to_string()),
            ("NP_KUBECONFIG", cluster().kubeconfig.display().to_string()),
            ("NP_SELECTOR", fx.selector.to_string()),
            ("NP_CLUSTER_ROLE", fx.set.cluster_role.clone()),
            // Generated creates stop at a handful (then 429, documented).
            ("NP_MAX_NAMESPACES_PER_TENANT", "5".to_owned()),
            // Generated bad tokens must not throttle the good one.
            ("NP_AUTH_FAILURE_LIMIT", "0".to_owned()),
        ],
        "/readyz",
    )
    .await;
    let base = format!("http://{}", served.addr);
    let reports = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(program)
            .args(["run", &format!("{base}/openapi.json"), "--url", &base])
            .args(["--max-examples", MAX_EXAMPLES, "--seed", "15"])
            // What issue 15 asks: no 5xx, every response as documented. Not the checks of
            // input validation (negative/positive data acceptance): the schema does not carry
            // the rules of ttl, server and parent (see the notes); nor use-after-free (a
            // deleted namespace is still readable while Terminating, by design).
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,\
                 response_headers_conformance,response_schema_conformance",
                "--request-timeout",
                "30",
            ])
            .args(["--header", &format!("Authorization: Bearer {ALICE}")])
            .arg("--report-dir")
            .arg(reports.path())
            // Its cache (`.schemathesis/`) goes there too, not into the repository.
            .current_dir(reports.path())
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let took = started.elapsed();
    let text = support::text(&out);
    eprintln!("schemathesis ran {took:?}:\n{text}");
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
}
