//! The EKS bearer token as data (issue 17): what the presigned STS request
//! is, how the token wraps it, and when a token is due for a refresh. The
//! signing itself (credentials, SigV4) is `crate::aws::eks`'s.
//!
//! An EKS token is `k8s-aws-v1.` + base64url (no padding) of a presigned
//! `GET https://sts.<region>.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15`
//! whose signed headers include `x-k8s-aws-id: <cluster name>`. The API
//! server's authenticator replays it against STS to learn the caller's ARN
//! and accepts it for 15 minutes from its signing time.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use thiserror::Error;

/// What every EKS token starts with.
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";

/// The header naming the cluster, signed into the presigned URL.
pub const CLUSTER_ID_HEADER: &str = "x-k8s-aws-id";

/// The service the URL is signed for.
pub const SIGNING_SERVICE: &str = "sts";

/// `X-Amz-Expires` of the presigned URL (what `aws eks get-token` writes;
/// EKS itself accepts the token for [`TOKEN_LIFETIME`] from its signing time).
pub const PRESIGNED_EXPIRES: Duration = Duration::from_secs(60);

/// How long EKS accepts a token after it was signed.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// A token this old is replaced: well before [`TOKEN_LIFETIME`], so a
/// refresh that fails (STS or the credential source briefly down) has five
/// minutes of retries before requests are refused.
pub const REFRESH_AFTER: Duration = Duration::from_secs(10 * 60);

/// After an API server answer 401, a token at least this old is replaced at
/// once; a younger one is not (a 401 for a fresh token is not the token's
/// age, and refreshing on every 401 would hammer the credential source).
pub const MIN_REFRESH_GAP: Duration = Duration::from_secs(30);

/// Wait between attempts after a refresh failed.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);

/// The query of the presigned request, before the signature's parameters.
const QUERY: &str = "Action=GetCallerIdentity&Version=2011-06-15";

/// Whether a token of `age` is replaced now; `unauthorized` when the API
/// server just answered 401.
pub fn refresh_due(age: Duration, unauthorized: bool) -> bool {
    age >= REFRESH_AFTER || (unauthorized && age >= MIN_REFRESH_GAP)
}

/// How long until a token of `age` is due for its scheduled refresh.
pub fn until_refresh(age: Duration) -> Duration {
    REFRESH_AFTER.saturating_sub(age)
}

/// The URL to presign: the STS endpoint (`endpoint`, else the regional one)
/// with the GetCallerIdentity query.
pub fn sts_request_url(endpoint: Option<&url::Url>, region: &Region) -> String {
    let base = match endpoint {
        Some(endpoint) => endpoint.as_str().trim_end_matches('/').to_owned(),
        None => format!("https://sts.{region}.amazonaws.com"),
    };
    format!("{base}/?{QUERY}")
}

/// The bearer token of a presigned URL.
pub fn token(presigned_url: &str) -> String {
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(presigned_url))
}

/// An EKS cluster name (`--eks-cluster-name`): 1-100 characters, letters,
/// digits, `-` and `_`, starting with a letter or digit (EKS's own rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterName(String);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum EksNameError {
    #[error("an EKS cluster name has 1 to 100 characters")]
    ClusterLength,
    #[error("an EKS cluster name has only letters, digits, '-' and '_', and starts with a letter or digit")]
    ClusterCharacters,
    #[error("an AWS region looks like `eu-west-1`: lowercase letters, digits and '-'")]
    Region,
}

impl FromStr for ClusterName {
    type Err = EksNameError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() || text.len() > 100 {
            return Err(EksNameError::ClusterLength);
        }
        let mut chars = text.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(EksNameError::ClusterCharacters);
        }
        Ok(Self(text.to_owned()))
    }
}

impl ClusterName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An AWS region (`--eks-region`), e.g. `eu-west-1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region(String);

impl FromStr for Region {
    type Err = EksNameError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let ok = !text.is_empty()
            && text.len() <= 32
            && text.contains('-')
            && !text.starts_with('-')
            && text
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(EksNameError::Region)
        }
    }
}

impl Region {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region() -> Region {
        "eu-west-1".parse().unwrap()
    }

    #[test]
    fn the_url_is_the_regional_sts_get_caller_identity_or_the_override() {
        assert_eq!(
            sts_request_url(None, &region()),
            "https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15"
        );
        let local: url::Url = "http://127.0.0.1:5000/".parse().unwrap();
        assert_eq!(
            sts_request_url(Some(&local), &region()),
            "http://127.0.0.1:5000/?Action=GetCallerIdentity&Version=2011-06-15"
        );
    }

    #[test]
    fn the_token_is_the_prefixed_unpadded_base64url_of_the_url() {
        // Lengths that would need padding, and bytes that differ between base64 and base64url.
        for url in ["https://a/?b=c", "https://a/?b=cd", "https://a/?x=>>>???"] {
            let token = token(url);
            let body = token.strip_prefix(TOKEN_PREFIX).unwrap();
            assert!(!body.contains(['=', '+', '/']), "{token}");
            assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap(), url.as_bytes());
        }
    }

    #[test]
    fn refresh_is_due_at_ten_minutes_or_on_a_401_past_the_gap() {
        let secs = Duration::from_secs;
        assert!(!refresh_due(secs(0), false));
        assert!(!refresh_due(secs(599), false));
        assert!(refresh_due(secs(600), false));
        assert!(
            !refresh_due(secs(10), true),
            "a fresh token is not replaced on a 401"
        );
        assert!(refresh_due(secs(30), true));
        assert_eq!(until_refresh(secs(0)), REFRESH_AFTER);
        assert_eq!(until_refresh(secs(700)), Duration::ZERO);
        const { assert!(REFRESH_AFTER.as_secs() + 4 * 60 <= TOKEN_LIFETIME.as_secs()) };
    }

    #[test]
    fn cluster_names_and_regions_are_checked() {
        assert_eq!("prod-1_a".parse::<ClusterName>().unwrap().as_str(), "prod-1_a");
        assert_eq!("".parse::<ClusterName>(), Err(EksNameError::ClusterLength));
        assert_eq!(
            "a".repeat(101).parse::<ClusterName>(),
            Err(EksNameError::ClusterLength)
        );
        assert_eq!("-a".parse::<ClusterName>(), Err(EksNameError::ClusterCharacters));
        assert_eq!("a b".parse::<ClusterName>(), Err(EksNameError::ClusterCharacters));
        assert_eq!(region().to_string(), "eu-west-1");
        for bad in ["", "EU-WEST-1", "euwest1", "-eu", "eu west-1"] {
            assert_eq!(bad.parse::<Region>(), Err(EksNameError::Region), "{bad:?}");
        }
    }
}
