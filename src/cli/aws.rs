//! The provisioner's AWS flags (issue 17, docs/aws.md): authenticating to
//! EKS with the process's IAM identity, and tenant tokens kept in Secrets
//! Manager or SSM Parameter Store. Turns them into a client configuration,
//! a live bearer token and a live token source; the AWS calls are
//! `crate::aws`'s.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use thiserror::Error;
use tracing::info;

use crate::aws::eks::{EksError, TokenSigner};
use crate::aws::secrets::{SecretReader, SecretRef};
use crate::k8s::LiveBearer;
use crate::reload::{Fetched, Live, Parse, ReloadError, Report};
use crate::rules::eks::{ClusterName, Region};

#[derive(Debug, Clone, Args)]
pub struct AwsArgs {
    /// Tenant tokens (the --token-file format) from this AWS Secrets Manager
    /// secret, by name or ARN: fetched at start (a missing or denied secret
    /// stops the start with the reason) and every --secrets-refresh-interval,
    /// so a rotation applies without a restart; a failed fetch keeps the last
    /// good set (logged, and counted in config_reload_total). Credentials and
    /// region from the standard AWS chain; see docs/aws.md.
    #[arg(long, env = "NP_TOKENS_SECRET", conflicts_with_all = ["token_file", "tokens_parameter"])]
    pub tokens_secret: Option<String>,

    /// Tenant tokens from this SSM Parameter Store parameter (name or ARN;
    /// a SecureString is decrypted), read like --tokens-secret.
    #[arg(long, env = "NP_TOKENS_PARAMETER", conflicts_with = "token_file")]
    pub tokens_parameter: Option<String>,

    /// How often --tokens-secret or --tokens-parameter is fetched again.
    #[arg(long, env = "NP_SECRETS_REFRESH_INTERVAL", default_value = "5m", value_parser = super::provisioner::at_least_a_second)]
    pub secrets_refresh_interval: Duration,

    /// Authenticate to the API server as this process's AWS IAM identity
    /// (Lambda execution role, IRSA, EKS Pod Identity, profile) with an EKS
    /// token for this cluster, made from the credentials of the standard AWS
    /// chain and replaced every 10 minutes and after a 401, instead of the
    /// kubeconfig's credentials. The identity needs an EKS access entry; see
    /// docs/aws.md.
    #[arg(long, env = "NP_EKS_CLUSTER_NAME")]
    pub eks_cluster_name: Option<ClusterName>,

    /// AWS region of --eks-cluster-name (default: the SDK's, e.g. AWS_REGION).
    #[arg(long, env = "NP_EKS_REGION", requires = "eks_cluster_name")]
    pub eks_region: Option<Region>,

    /// STS endpoint the EKS token is signed for (default: AWS_ENDPOINT_URL,
    /// else the regional one, https://sts.<region>.amazonaws.com). For tests
    /// with a local AWS; EKS accepts only AWS's own STS hosts.
    #[arg(long, env = "AWS_ENDPOINT_URL_STS")]
    pub eks_sts_endpoint: Option<url::Url>,

    /// API server URL with --eks-cluster-name (the cluster's endpoint:
    /// `aws eks describe-cluster --query cluster.endpoint`). Default: the
    /// server of the kubeconfig or in-cluster configuration, whose
    /// credentials are then not used.
    #[arg(long, env = "NP_EKS_SERVER", requires = "eks_cluster_name")]
    pub eks_server: Option<url::Url>,

    /// PEM CA bundle of --eks-server (the cluster's
    /// `certificateAuthority.data`, base64-decoded). Default: the system's roots.
    #[arg(long, env = "NP_EKS_CERTIFICATE_AUTHORITY", requires = "eks_server")]
    pub eks_certificate_authority: Option<PathBuf>,
}

#[derive(Debug, Error)]
pub enum AwsArgsError {
    #[error("--eks-server {0} is not a usable URL")]
    Server(String, #[source] http::uri::InvalidUri),
    #[error(transparent)]
    Client(#[from] crate::k8s::ClientError),
    #[error(transparent)]
    Eks(#[from] EksError),
    #[error(transparent)]
    Tokens(#[from] ReloadError),
}

impl AwsArgs {
    /// Where the tenant tokens are kept, when not in a file.
    pub fn tokens_source(&self) -> Option<SecretRef> {
        match (&self.tokens_secret, &self.tokens_parameter) {
            (Some(secret), _) => Some(SecretRef::SecretsManager(secret.clone())),
            (None, Some(parameter)) => Some(SecretRef::Parameter(parameter.clone())),
            (None, None) => None,
        }
    }

    fn wants_aws(&self) -> bool {
        self.eks_cluster_name.is_some() || self.tokens_source().is_some()
    }

    /// The SDK configuration when some flag needs AWS.
    pub async fn sdk_config(&self) -> Option<aws_config::SdkConfig> {
        if !self.wants_aws() {
            return None;
        }
        Some(crate::aws::sdk_config(self.eks_region.as_ref().map(Region::as_str)).await)
    }

    /// The client configuration: with --eks-cluster-name, --eks-server and
    /// its CA (else `kube`'s cluster) without credentials of its own (the
    /// EKS token goes on every request); otherwise `kube`'s.
    pub async fn kube_config(&self, kube: &super::KubeArgs) -> Result<kube::Config, AwsArgsError> {
        let mut config = match (&self.eks_cluster_name, &self.eks_server) {
            (Some(_), Some(server)) => {
                let uri = server
                    .as_str()
                    .parse()
                    .map_err(|e| AwsArgsError::Server(server.to_string(), e))?;
                let mut config = kube::Config::new(uri);
                config.root_cert_file = self.eks_certificate_authority.clone();
                config
            }
            _ => kube.config().await?,
        };
        if self.eks_cluster_name.is_some() {
            config.auth_info = kube::config::AuthInfo::default();
        }
        Ok(config)
    }

    /// The live EKS token with --eks-cluster-name: made now (a failure stops
    /// the start), then kept current.
    pub async fn eks_bearer(
        &self,
        sdk: Option<&aws_config::SdkConfig>,
        report: Report,
    ) -> Result<Option<LiveBearer>, AwsArgsError> {
        let (Some(cluster), Some(sdk)) = (&self.eks_cluster_name, sdk) else {
            return Ok(None);
        };
        let endpoint = match &self.eks_sts_endpoint {
            Some(endpoint) => Some(endpoint.clone()),
            None => sdk.endpoint_url().and_then(|url| url.parse().ok()),
        };
        let signer = TokenSigner::new(sdk, cluster.clone(), self.eks_region.clone(), endpoint.as_ref())?;
        Ok(Some(signer.start(report).await?))
    }

    /// The live tenant tokens from --tokens-secret or --tokens-parameter:
    /// fetched and parsed now (a failure stops the start), then re-fetched.
    pub async fn live_tokens<T: Send + Sync + 'static>(
        &self,
        sdk: Option<&aws_config::SdkConfig>,
        parse: Parse<T>,
        report: Report,
    ) -> Result<Option<Live<T>>, AwsArgsError> {
        let (Some(source), Some(sdk)) = (self.tokens_source(), sdk) else {
            return Ok(None);
        };
        let flag = match source {
            SecretRef::SecretsManager(_) => "tokens-secret",
            SecretRef::Parameter(_) => "tokens-parameter",
        };
        info!(source = %source, every = %humantime::format_duration(self.secrets_refresh_interval), "tenant tokens from AWS");
        let fetched = Fetched {
            flag,
            source: source.to_string(),
            fetch: SecretReader::new(sdk, source).into_fetch(),
            parse,
        };
        Ok(Some(fetched.start(self.secrets_refresh_interval, report).await?))
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::provisioner::ProvisionerArgs;
    use clap::Parser;
    use std::time::Duration;

    fn parse(args: &[&str]) -> Result<ProvisionerArgs, clap::Error> {
        ProvisionerArgs::try_parse_from([&["provisioner"], args].concat())
    }

    #[test]
    fn token_sources_exclude_each_other() {
        assert!(parse(&["--tokens-secret", "s", "--token-file", "t"]).is_err());
        assert!(parse(&["--tokens-parameter", "p", "--token-file", "t"]).is_err());
        assert!(parse(&["--tokens-secret", "s", "--tokens-parameter", "p"]).is_err());
        let args = parse(&["--tokens-parameter", "/np/tokens"]).unwrap();
        assert_eq!(
            args.aws.tokens_source(),
            Some(crate::aws::secrets::SecretRef::Parameter("/np/tokens".to_owned()))
        );
        assert_eq!(args.aws.secrets_refresh_interval, Duration::from_secs(300));
        assert!(parse(&["--secrets-refresh-interval", "10ms"]).is_err());
    }

    #[test]
    fn eks_flags_are_checked() {
        assert!(
            parse(&["--eks-region", "eu-west-1"]).is_err(),
            "needs the cluster"
        );
        assert!(parse(&["--eks-cluster-name", "c", "--eks-certificate-authority", "ca.pem"]).is_err());
        assert!(parse(&["--eks-cluster-name", "not a name"]).is_err());
        assert!(parse(&["--eks-cluster-name", "c", "--eks-region", "EU"]).is_err());
        let args = parse(&[
            "--eks-cluster-name",
            "prod",
            "--eks-server",
            "https://ABC.gr7.eu-west-1.eks.amazonaws.com",
            "--eks-certificate-authority",
            "ca.pem",
        ])
        .unwrap();
        assert_eq!(args.aws.eks_cluster_name.unwrap().as_str(), "prod");
        assert!(parse(&["--eks-sts-endpoint", "not a url"]).is_err());
    }

    #[tokio::test]
    async fn with_eks_the_configuration_has_no_credentials_of_its_own() {
        let args = parse(&[
            "--eks-cluster-name",
            "prod",
            "--eks-server",
            "https://127.0.0.1:6443",
            "--eks-certificate-authority",
            "/ca.pem",
        ])
        .unwrap();
        let config = args.aws.kube_config(&args.shared.kube).await.unwrap();
        assert_eq!(config.cluster_url.to_string(), "https://127.0.0.1:6443/");
        assert_eq!(
            config.root_cert_file.as_deref(),
            Some(std::path::Path::new("/ca.pem"))
        );
        assert!(config.auth_info.token.is_none() && config.auth_info.exec.is_none());
    }
}
