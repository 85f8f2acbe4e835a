//! The EKS bearer token from this process's AWS credentials: a SigV4
//! presigned STS `GetCallerIdentity` URL carrying `x-k8s-aws-id` (the
//! assembly and timing rules are `crate::rules::eks`'s), kept current by a
//! task that replaces it every 10 minutes and after a 401, and handed to the
//! Kubernetes client as a [`LiveBearer`]. Never logs a token.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign};
use aws_sigv4::sign::v4;
use http::HeaderValue;
use thiserror::Error;
use tokio::sync::{Notify, watch};
use tracing::{error, info};

use crate::k8s::LiveBearer;
use crate::reload::{Outcome, Report};
use crate::rules::eks::{
    self, CLUSTER_ID_HEADER, ClusterName, PRESIGNED_EXPIRES, RETRY_AFTER_FAILURE, Region, SIGNING_SERVICE,
};
use crate::telemetry::chain;

/// The metric label (`config_reload_total{file=...}`) and log field of token refreshes.
pub const REPORT_NAME: &str = "eks-token";

#[derive(Debug, Error)]
pub enum EksError {
    #[error(
        "no AWS region for the EKS token: set --eks-region or AWS_REGION (the Lambda runtime sets AWS_REGION)"
    )]
    NoRegion,
    #[error("the AWS region {0:?} from the environment")]
    Region(String, #[source] eks::EksNameError),
    #[error("no AWS credentials provider is configured (the standard chain found no source of credentials)")]
    NoCredentialsProvider,
    #[error(
        "get AWS credentials for the EKS token (standard chain: environment, web identity, Pod Identity, profile, instance metadata)"
    )]
    Credentials(#[source] aws_credential_types::provider::error::CredentialsError),
    #[error("sign the STS GetCallerIdentity request of the EKS token")]
    Sign(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the signed EKS token is not a valid header value")]
    Header(#[source] http::header::InvalidHeaderValue),
}

/// What makes a token: whose credentials, for which cluster, signed for
/// which region and sent to which STS endpoint.
#[derive(Clone)]
pub struct TokenSigner {
    cluster: ClusterName,
    region: Region,
    url: String,
    credentials: SharedCredentialsProvider,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("cluster", &self.cluster)
            .field("region", &self.region)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// A signer for `cluster` with `config`'s credentials; `region` (else
    /// `config`'s) and `sts_endpoint` (else the regional STS) when given.
    pub fn new(
        config: &SdkConfig,
        cluster: ClusterName,
        region: Option<Region>,
        sts_endpoint: Option<&url::Url>,
    ) -> Result<Self, EksError> {
        let region = match region {
            Some(region) => region,
            None => {
                let from_env = config.region().ok_or(EksError::NoRegion)?.as_ref().to_owned();
                from_env
                    .parse()
                    .map_err(|e| EksError::Region(from_env.clone(), e))?
            }
        };
        let credentials = config
            .credentials_provider()
            .ok_or(EksError::NoCredentialsProvider)?;
        Ok(Self {
            url: eks::sts_request_url(sts_endpoint, &region),
            cluster,
            region,
            credentials,
        })
    }

    /// The presigned URL as of `now`, with fresh credentials.
    pub async fn presign(&self, now: SystemTime) -> Result<String, EksError> {
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(EksError::Credentials)?;
        let identity = credentials.into();
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(PRESIGNED_EXPIRES);
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(self.region.as_str())
            .name(SIGNING_SERVICE)
            .time(now)
            .settings(settings)
            .build()
            .map_err(|e| EksError::Sign(Box::new(e)))?
            .into();
        let headers = [(CLUSTER_ID_HEADER, self.cluster.as_str())];
        let signable = SignableRequest::new(
            "GET",
            self.url.as_str(),
            headers.into_iter(),
            SignableBody::Bytes(&[]),
        )
        .map_err(|e| EksError::Sign(Box::new(e)))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| EksError::Sign(Box::new(e)))?
            .into_parts();
        let mut request = http::Request::get(self.url.as_str())
            .body(())
            .map_err(|e| EksError::Sign(Box::new(e)))?;
        instructions.apply_to_request_http1x(&mut request);
        Ok(request.uri().to_string())
    }

    /// The `Authorization` value of a token as of `now` (marked sensitive:
    /// never printed by `Debug`).
    async fn header(&self, now: SystemTime) -> Result<HeaderValue, EksError> {
        let token = eks::token(&self.presign(now).await?);
        let mut value = HeaderValue::try_from(format!("Bearer {token}")).map_err(EksError::Header)?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// Make the first token now (a failure is a start-up error), then keep it
    /// current in a task for as long as the process runs; every refresh is
    /// told to `report` (the reload metric, as [`REPORT_NAME`]).
    pub async fn start(self, report: Report) -> Result<LiveBearer, EksError> {
        let first = self.header(SystemTime::now()).await?;
        report(REPORT_NAME, Outcome::Success);
        info!(cluster = %self.cluster, region = %self.region, "authenticating to the API server with an EKS IAM token");
        let (tx, rx) = watch::channel(first);
        let unauthorized = Arc::new(Notify::new());
        tokio::spawn(self.refresh_loop(tx, unauthorized.clone(), report));
        Ok(LiveBearer::new(rx, unauthorized))
    }

    /// Replace the token when it is due ([`eks::refresh_due`]): on schedule,
    /// or after a 401 once it is past the gap. A failure keeps the current
    /// token (good for a few minutes more), is logged and counted, and is
    /// retried after [`RETRY_AFTER_FAILURE`].
    async fn refresh_loop(self, tx: watch::Sender<HeaderValue>, unauthorized: Arc<Notify>, report: Report) {
        let mut issued = Instant::now();
        let mut failing = false;
        loop {
            let wait = if failing {
                RETRY_AFTER_FAILURE
            } else {
                eks::until_refresh(issued.elapsed())
            };
            let rejected = tokio::select! {
                () = tokio::time::sleep(wait) => false,
                () = unauthorized.notified() => true,
            };
            if !failing && !eks::refresh_due(issued.elapsed(), rejected) {
                continue;
            }
            match self.header(SystemTime::now()).await {
                Ok(value) => {
                    tx.send_replace(value);
                    issued = Instant::now();
                    report(REPORT_NAME, Outcome::Success);
                    if failing || rejected {
                        info!(cluster = %self.cluster, after_401 = rejected, "EKS token refreshed");
                    }
                    failing = false;
                }
                Err(e) => {
                    report(REPORT_NAME, Outcome::Error);
                    let age: Duration = issued.elapsed();
                    error!(cluster = %self.cluster, token_age_secs = age.as_secs(), retry_in = ?RETRY_AFTER_FAILURE,
                        error = %chain(&e), "cannot refresh the EKS token; keeping the current one");
                    failing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use std::collections::BTreeMap;

    fn signer(endpoint: Option<&str>) -> TokenSigner {
        let credentials = aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("session-token".to_owned()),
            None,
            "test",
        );
        let config = SdkConfig::builder()
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .region(aws_config::Region::new("eu-west-1"))
            .build();
        let endpoint: Option<url::Url> = endpoint.map(|e| e.parse().unwrap());
        TokenSigner::new(&config, "prod-1".parse().unwrap(), None, endpoint.as_ref()).unwrap()
    }

    fn query(url: &url::Url) -> BTreeMap<String, String> {
        url.query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    /// The token decoded and checked the way the EKS authenticator reads it.
    #[tokio::test]
    async fn the_token_is_a_presigned_get_caller_identity_for_the_cluster() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        let header = signer(None).header(now).await.unwrap();
        assert!(header.is_sensitive());
        let token = header.to_str().unwrap().strip_prefix("Bearer ").unwrap();
        let body = token.strip_prefix(eks::TOKEN_PREFIX).unwrap();
        let url: url::Url = String::from_utf8(URL_SAFE_NO_PAD.decode(body).unwrap())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(url.scheme(), "https");
        assert_eq!(url.host_str(), Some("sts.eu-west-1.amazonaws.com"));
        assert_eq!(url.path(), "/");
        let query = query(&url);
        assert_eq!(query["Action"], "GetCallerIdentity");
        assert_eq!(query["Version"], "2011-06-15");
        assert_eq!(query["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
        assert_eq!(query["X-Amz-Expires"], "60");
        assert_eq!(query["X-Amz-Date"], "20261130T005320Z");
        assert_eq!(
            query["X-Amz-Credential"],
            "AKIDEXAMPLE/20261130/eu-west-1/sts/aws4_request"
        );
        assert_eq!(query["X-Amz-SignedHeaders"], "host;x-k8s-aws-id");
        assert_eq!(query["X-Amz-Security-Token"], "session-token");
        assert_eq!(query["X-Amz-Signature"].len(), 64);
        // The same instant and credentials sign the same way; a later one differently.
        assert_eq!(signer(None).header(now).await.unwrap(), header);
        let later = signer(None).header(now + Duration::from_secs(1)).await.unwrap();
        assert_ne!(later, header);
    }

    #[tokio::test]
    async fn an_sts_endpoint_override_keeps_the_signing_region() {
        let url = signer(Some("http://127.0.0.1:5000"))
            .presign(SystemTime::now())
            .await
            .unwrap();
        let url: url::Url = url.parse().unwrap();
        assert_eq!(url.host_str(), Some("127.0.0.1"));
        assert_eq!(url.port(), Some(5000));
        assert!(query(&url)["X-Amz-Credential"].ends_with("/eu-west-1/sts/aws4_request"));
    }

    #[test]
    fn a_region_is_required() {
        let config = SdkConfig::builder()
            .credentials_provider(SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test"),
            ))
            .build();
        let error = TokenSigner::new(&config, "c".parse().unwrap(), None, None).unwrap_err();
        assert!(matches!(error, EksError::NoRegion));
    }
}
