//! moto (PyPI `moto[server]`, installed by tests/run) in server mode as the
//! local AWS of the tests that need one (tests/aws.rs, tests/lambda.rs):
//! Secrets Manager, SSM and STS on a free loopback port, dummy credentials.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

use crate::support::{Process, eventually, free_port};

pub const REGION: &str = "us-east-1";

/// moto's server on a free loopback port, stopped when dropped.
pub struct Moto {
    _process: Process,
    pub url: String,
    pub addr: String,
}

impl Moto {
    pub async fn start() -> Moto {
        let ok = Command::new("moto_server")
            .arg("--help")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            ok,
            "`moto_server` does not run; install it with `pip install 'moto[server]'` (tests/run installs it into target/tools/venv)"
        );
        let port = free_port();
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
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.url.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
    }

    /// An SDK configuration for this AWS (the test's own calls).
    pub async fn sdk(&self) -> SdkConfig {
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

    pub async fn secrets(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk().await)
    }

    pub async fn ssm(&self) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.sdk().await)
    }
}
