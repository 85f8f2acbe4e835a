//! The one room that talks to AWS (issue 17): the SDK's configuration (the
//! standard credential chain: environment, web identity/IRSA, EKS Pod
//! Identity and container credentials, profile, instance metadata), the EKS
//! bearer token made from those credentials ([`eks`]), and values held in
//! Secrets Manager or SSM Parameter Store ([`secrets`]). The rules of the
//! token are `crate::rules::eks`'s; this floor signs and fetches.
//!
//! The SDK's HTTP client is the same hyper + rustls (ring) stack the
//! Kubernetes client uses, not the SDK's default (aws-lc).

pub mod eks;
pub mod secrets;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

/// The SDK's configuration from the standard sources (`AWS_REGION`,
/// `AWS_ENDPOINT_URL`, credentials chain), with `region` first when given.
pub async fn sdk_config(region: Option<&str>) -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    loader.load().await
}
