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

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Client;
use quick_cache::sync::Cache;
use thiserror::Error;

use crate::k8s::{self, KubeError};
use crate::reload::Live;
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
    /// Static tenant tokens (`static`, `both`), reloaded when `--token-file` changes.
    pub tokens: Option<Live<Tokens>>,
    /// Kubernetes bearer tokens (`kubernetes`, `both`).
    pub reviewer: Option<TokenReviewer>,
    /// Failed authentications counted per client address (`--auth-failure-limit`).
    pub throttle: Option<AuthThrottle>,
}

impl Authenticator {
    /// No way to authenticate is configured (`--insecure-allow-unauthenticated`).
    pub fn is_open(&self) -> bool {
        self.tokens.is_none() && self.reviewer.is_none()
    }

    /// Who `token` belongs to: a static tenant first (no I/O), then a
    /// Kubernetes user.
    pub async fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        let tenant = self
            .tokens
            .as_ref()
            .and_then(|t| t.get().authenticate(token).cloned());
        if let Some(tenant) = tenant {
            return Ok(Identity::Tenant(tenant));
        }
        match &self.reviewer {
            Some(reviewer) => reviewer.review(token).await.map(Identity::user),
            None => Err(AuthError::Rejected),
        }
    }
}

/// Bounds of [`AuthThrottle`].
#[derive(Debug, Clone, Copy)]
pub struct ThrottleConfig {
    /// Failed authentications an address may make in one window; the next request is refused.
    pub max_failures: u32,
    /// How long a window lasts from an address's first failure.
    pub window: Duration,
    /// Most addresses remembered at once: the memory bound.
    pub capacity: usize,
}

/// One address's window: when it started and the failures in it.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: tokio::time::Instant,
    failures: u32,
}

/// Failed authentications per client address in fixed windows, in a
/// fixed-capacity cache (an attacker rotating addresses evicts old entries,
/// never grows memory). An address past the bound is refused until its window
/// ends; other addresses are not affected. IPv6 addresses count per /64, the
/// block one host usually holds. Counts are best effort under concurrency (a
/// read-then-write per failure): a burst may pass a few over the bound.
/// Time is tokio's, so tests run it paused.
#[derive(Clone)]
pub struct AuthThrottle {
    config: ThrottleConfig,
    windows: Arc<Cache<u128, Window>>,
}

impl std::fmt::Debug for AuthThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthThrottle")
            .field("config", &self.config)
            .field("tracked", &self.windows.len())
            .finish()
    }
}

/// The key of an address: IPv4 (also IPv4-mapped IPv6) whole, IPv6 by its /64.
fn address_key(address: IpAddr) -> u128 {
    match address.to_canonical() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        // Tagged so no /64 prefix can equal an IPv4 key.
        IpAddr::V6(v6) => (u128::from(v6) >> 64) | (1 << 64),
    }
}

impl AuthThrottle {
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            windows: Arc::new(Cache::new(config.capacity.max(1))),
            config,
        }
    }

    /// `Err(wait)` when `address` used up its failures: how long until its window ends.
    pub fn check(&self, address: IpAddr) -> Result<(), Duration> {
        let key = address_key(address);
        let Some(window) = self.windows.get(&key) else {
            return Ok(());
        };
        let elapsed = window.started.elapsed();
        if elapsed >= self.config.window {
            self.windows.remove(&key);
            return Ok(());
        }
        if window.failures >= self.config.max_failures {
            return Err(self.config.window - elapsed);
        }
        Ok(())
    }

    /// Count one failed authentication of `address`.
    pub fn fail(&self, address: IpAddr) {
        let key = address_key(address);
        let now = tokio::time::Instant::now();
        let window = match self.windows.get(&key) {
            Some(w) if now.duration_since(w.started) < self.config.window => Window {
                failures: w.failures.saturating_add(1),
                ..w
            },
            _ => Window {
                started: now,
                failures: 1,
            },
        };
        self.windows.insert(key, window);
    }

    /// Addresses remembered now (never more than the capacity).
    pub fn tracked(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(max_failures: u32, capacity: usize) -> AuthThrottle {
        AuthThrottle::new(ThrottleConfig {
            max_failures,
            window: Duration::from_secs(60),
            capacity,
        })
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_past_the_bound_waits_for_its_window_to_end() {
        let t = throttle(3, 100);
        let a = ip("10.0.0.1");
        for _ in 0..3 {
            assert_eq!(t.check(a), Ok(()));
            t.fail(a);
        }
        assert_eq!(t.check(a), Err(Duration::from_secs(60)));
        // Another address is not affected.
        assert_eq!(t.check(ip("10.0.0.2")), Ok(()));
        tokio::time::advance(Duration::from_secs(45)).await;
        assert_eq!(t.check(a), Err(Duration::from_secs(15)));
        tokio::time::advance(Duration::from_secs(15)).await;
        assert_eq!(t.check(a), Ok(()));
        // A fresh window: one failure is far from the bound.
        t.fail(a);
        assert_eq!(t.check(a), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_spread_over_windows_never_trip_it() {
        let t = throttle(3, 100);
        let a = ip("192.0.2.7");
        for _ in 0..10 {
            t.fail(a);
            t.fail(a);
            assert_eq!(t.check(a), Ok(()));
            tokio::time::advance(Duration::from_secs(61)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let t = throttle(2, 100);
        t.fail(ip("2001:db8:1:2::1"));
        t.fail(ip("2001:db8:1:2::ffff"));
        assert!(t.check(ip("2001:db8:1:2::abcd")).is_err());
        assert_eq!(t.check(ip("2001:db8:1:3::1")), Ok(()));
        t.fail(ip("::ffff:10.1.1.1"));
        t.fail(ip("10.1.1.1"));
        assert!(t.check(ip("10.1.1.1")).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn many_addresses_never_grow_past_the_capacity() {
        let t = throttle(1, 64);
        for i in 0..10_000u32 {
            t.fail(IpAddr::V4(std::net::Ipv4Addr::from(i)));
        }
        assert!(t.tracked() <= 64, "{}", t.tracked());
    }
}
