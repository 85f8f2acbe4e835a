//! Credentials from the API: TokenRequest for a set's ServiceAccount, and
//! the CA bundle the client trusts. Does Kubernetes I/O.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Client;
use kube::api::Api;
use secrecy::SecretString;

use super::{KubeError, post_params};
use crate::rules::labels::OBJECT_NAME;

/// Kubernetes' floor for TokenRequest `expirationSeconds`.
pub const MIN_TOKEN_SECONDS: i64 = 600;

/// The API server treats exactly this lifetime as a legacy "warn only" token
/// and may extend it to a year; never ask for it.
const WARN_ONLY_TOKEN_SECONDS: i64 = 3607;

/// A bearer token for the set's ServiceAccount and when it really expires.
pub struct IssuedToken {
    pub token: SecretString,
    /// Unix seconds, as granted by the API server (it may shorten what we ask).
    pub expires_at: i64,
}

/// The lifetime to ask for: the namespace's remaining life, but at least
/// Kubernetes' 10-minute floor (the token still dies with the ServiceAccount).
pub fn token_seconds(remaining: i64) -> i64 {
    let secs = remaining.max(MIN_TOKEN_SECONDS);
    if secs == WARN_ONLY_TOKEN_SECONDS {
        secs + 1
    } else {
        secs
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenRequestError {
    #[error("request token for {namespace}/{OBJECT_NAME}")]
    Api {
        namespace: String,
        #[source]
        source: KubeError,
    },
    #[error("token request for {namespace}/{OBJECT_NAME} came back without a token")]
    Empty { namespace: String },
}

/// TokenRequest (a POST to the ServiceAccount's `token` subresource) for the
/// set's ServiceAccount in `namespace`.
pub async fn request_token(
    client: &Client,
    namespace: &str,
    seconds: i64,
) -> Result<IssuedToken, TokenRequestError> {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(seconds),
            audiences: Vec::new(),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    let issued = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(OBJECT_NAME, &post_params(), &request)
        .await
        .map_err(|source| TokenRequestError::Api {
            namespace: namespace.to_owned(),
            source: source.into(),
        })?;
    let status = issued
        .status
        .filter(|s| !s.token.is_empty())
        .ok_or_else(|| TokenRequestError::Empty {
            namespace: namespace.to_owned(),
        })?;
    Ok(IssuedToken {
        token: SecretString::from(status.token),
        expires_at: status.expiration_timestamp.0.as_second(),
    })
}

/// PEM bundle of the CA a kube `Config` trusts, if it names one.
pub fn trusted_ca_pem(config: &kube::Config) -> std::io::Result<Option<Vec<u8>>> {
    if let Some(path) = &config.root_cert_file {
        return std::fs::read(path).map(Some);
    }
    Ok(config.root_cert.as_ref().map(|certs| {
        let mut pem = String::new();
        for der in certs {
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            let b64 = STANDARD.encode(der);
            for chunk in b64.as_bytes().chunks(64) {
                pem.push_str(&String::from_utf8_lossy(chunk));
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
        }
        pem.into_bytes()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lifetime_respects_floor_and_avoids_the_warn_only_value() {
        assert_eq!(token_seconds(30), 600);
        assert_eq!(token_seconds(-5), 600);
        assert_eq!(token_seconds(3600), 3600);
        assert_eq!(token_seconds(3607), 3608);
    }
}
