//! Who a caller is: a static tenant token (constant-time digests, no I/O) or
//! a Kubernetes bearer token checked with the TokenReview API, whose outcome
//! is cached briefly in a fixed-capacity cache keyed by the SHA-256 of the
//! token (never the token). Does Kubernetes I/O through [`crate::k8s`].
//!
//! Revocation window: an accepted token keeps working for at most the cache
//! TTL (`--token-review-cache-ttl`) after the API server stops accepting it.
//! Refusals are not cached, so a token that starts working (a new
//! ServiceAccount) works at once, and a flood of bogus tokens cannot evict
//! accepted ones through the cache (each one costs a TokenReview instead).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Client;
use quick_cache::sync::Cache;
use thiserror::Error;

use crate::k8s::{self, KubeError};
use crate::rules::auth::{Identity, Tokens, UserInfo, digest};

/// Longest bearer token sent to the API server; anything longer is refused
/// without a review (service account JWTs are ~1 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Settings of the TokenReview authenticator.
#[derive(Debug, Clone)]
pub struct ReviewConfig {
    /// Audiences the token must be for (empty: the API server's own).
    pub audiences: Vec<String>,
    /// How long an accepted token is trusted without asking again.
    pub cache_ttl: Duration,
    /// Most tokens remembered at once.
    pub cache_capacity: usize,
}

impl Default for ReviewConfig {
    fn default() -> Self {
        Self {
            audiences: Vec::new(),
            cache_ttl: Duration::from_secs(10),
            cache_capacity: 1024,
        }
    }
}

#[derive(Clone)]
struct Cached {
    user: UserInfo,
    until: Instant,
}

/// TokenReview with a bounded cache of accepted tokens.
#[derive(Clone)]
pub struct TokenReviewer {
    client: Client,
    config: Arc<ReviewConfig>,
    cache: Arc<Cache<[u8; 32], Cached>>,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("config", &self.config)
            .field("cached", &self.cache.len())
            .finish()
    }
}

#[derive(Debug, Error)]
pub enum AuthError {
    #[error("the bearer token is not valid")]
    Rejected,
    #[error("review the bearer token")]
    Review(#[source] KubeError),
}

impl AuthError {
    /// The API server did not answer: worth a retry (503).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Review(e) if e.is_unavailable())
    }
}

impl TokenReviewer {
    pub fn new(client: Client, config: ReviewConfig) -> Self {
        let capacity = config.cache_capacity.max(1);
        Self {
            client,
            cache: Arc::new(Cache::new(capacity)),
            config: Arc::new(config),
        }
    }

    /// Tokens currently remembered (never more than the capacity).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// The Kubernetes user `token` authenticates, from the cache while fresh.
    pub async fn review(&self, token: &str) -> Result<UserInfo, AuthError> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Rejected);
        }
        let key = digest(token.as_bytes());
        if let Some(hit) = self.cache.get(&key) {
            if hit.until > Instant::now() {
                return Ok(hit.user);
            }
            self.cache.remove(&key);
        }
        let user = k8s::review_token(&self.client, token, &self.config.audiences)
            .await
            .map_err(AuthError::Review)?
            .ok_or(AuthError::Rejected)?;
        if !self.config.cache_ttl.is_zero() {
            self.cache.insert(
                key,
                Cached {
                    user: user.clone(),
                    until: Instant::now() + self.config.cache_ttl,
                },
            );
        }
        Ok(user)
    }
}

/// Every way a caller may authenticate on one provisioner (`--auth`).
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    /// Static tenant tokens (`static`, `both`).
    pub tokens: Option<Arc<Tokens>>,
    /// Kubernetes bearer tokens (`kubernetes`, `both`).
    pub reviewer: Option<TokenReviewer>,
}

impl Authenticator {
    /// No way to authenticate is configured (`--insecure-allow-unauthenticated`).
    pub fn is_open(&self) -> bool {
        self.tokens.is_none() && self.reviewer.is_none()
    }

    /// Who `token` belongs to: a static tenant first (no I/O), then a
    /// Kubernetes user.
    pub async fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        if let Some(tenant) = self.tokens.as_deref().and_then(|t| t.authenticate(token)) {
            return Ok(Identity::Tenant(tenant.clone()));
        }
        match &self.reviewer {
            Some(reviewer) => reviewer.review(token).await.map(Identity::user),
            None => Err(AuthError::Rejected),
        }
    }
}
