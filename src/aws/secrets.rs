//! Values held by the platform rather than in a file: a Secrets Manager
//! secret or an SSM Parameter Store (SecureString) parameter, by name or
//! ARN, fetched whole. `crate::reload::Fetched` caches and re-fetches them;
//! this module only fetches. Never logs a value.

use std::fmt;
use std::sync::Arc;

use aws_config::SdkConfig;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use thiserror::Error;

use crate::reload::{Fetch, FetchError};

/// Where a value is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// A Secrets Manager secret's name or ARN (its current version, `AWSCURRENT`).
    SecretsManager(String),
    /// An SSM parameter's name or ARN (a SecureString is decrypted).
    Parameter(String),
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SecretsManager(id) => write!(f, "Secrets Manager secret {id}"),
            Self::Parameter(name) => write!(f, "SSM parameter {name}"),
        }
    }
}

#[derive(Debug, Error)]
pub enum SecretError {
    #[error("get the Secrets Manager secret {id}: {detail}")]
    GetSecret { id: String, detail: String },
    #[error("the Secrets Manager secret {id} has neither a string nor a binary value")]
    NoSecretValue { id: String },
    #[error("get the SSM parameter {name}: {detail}")]
    GetParameter { name: String, detail: String },
    #[error("the SSM parameter {name} has no value")]
    NoParameterValue { name: String },
}

/// Fetches one value from its store.
#[derive(Clone)]
pub enum SecretReader {
    SecretsManager {
        client: aws_sdk_secretsmanager::Client,
        id: String,
    },
    Parameter {
        client: aws_sdk_ssm::Client,
        name: String,
    },
}

impl fmt::Debug for SecretReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SecretsManager { id, .. } => {
                write!(f, "SecretReader({})", SecretRef::SecretsManager(id.clone()))
            }
            Self::Parameter { name, .. } => write!(f, "SecretReader({})", SecretRef::Parameter(name.clone())),
        }
    }
}

impl SecretReader {
    pub fn new(config: &SdkConfig, secret: SecretRef) -> Self {
        match secret {
            SecretRef::SecretsManager(id) => Self::SecretsManager {
                client: aws_sdk_secretsmanager::Client::new(config),
                id,
            },
            SecretRef::Parameter(name) => Self::Parameter {
                client: aws_sdk_ssm::Client::new(config),
                name,
            },
        }
    }

    /// The value's bytes now.
    pub async fn fetch(&self) -> Result<Vec<u8>, SecretError> {
        match self {
            Self::SecretsManager { client, id } => {
                let out = client
                    .get_secret_value()
                    .secret_id(id)
                    .send()
                    .await
                    .map_err(|e| SecretError::GetSecret {
                        id: id.clone(),
                        detail: describe(&e),
                    })?;
                match (out.secret_string(), out.secret_binary()) {
                    (Some(text), _) => Ok(text.as_bytes().to_vec()),
                    (None, Some(blob)) => Ok(blob.as_ref().to_vec()),
                    (None, None) => Err(SecretError::NoSecretValue { id: id.clone() }),
                }
            }
            Self::Parameter { client, name } => {
                let out = client
                    .get_parameter()
                    .name(name)
                    .with_decryption(true)
                    .send()
                    .await
                    .map_err(|e| SecretError::GetParameter {
                        name: name.clone(),
                        detail: describe(&e),
                    })?;
                out.parameter()
                    .and_then(|p| p.value())
                    .map(|v| v.as_bytes().to_vec())
                    .ok_or_else(|| SecretError::NoParameterValue { name: name.clone() })
            }
        }
    }

    /// The reader as a [`Fetch`] for `crate::reload::Fetched`.
    pub fn into_fetch(self) -> Fetch {
        let reader = Arc::new(self);
        Arc::new(move || {
            let reader = reader.clone();
            Box::pin(async move { reader.fetch().await.map_err(|e| Box::new(e) as FetchError) })
        })
    }
}

/// The store's own words for a failure (`ResourceNotFoundException: Secrets
/// Manager can't find the specified secret.`, `AccessDeniedException: ...`),
/// or the whole chain for a failure to reach it.
fn describe<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug,
{
    match error.as_service_error() {
        Some(service) => format!(
            "{}: {}",
            service.code().unwrap_or("error"),
            service.message().unwrap_or("(no message)")
        ),
        None => DisplayErrorContext(error).to_string(),
    }
}
