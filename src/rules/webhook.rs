//! Notice webhooks (issue 14): the administrator's configuration file, the
//! CloudEvents 1.0 body of each notice, its HMAC-SHA256 signature and the
//! retry schedule. Pure: file *text* in, values out; the time is an input.
//! Reading the files and sending is in `reaper::webhook`.
//!
//! URLs come only from the administrator's file, never from a request or a
//! namespace (no SSRF through a tenant). Each tenant (the tenant label) has
//! at most one endpoint; a `default` endpoint takes the tenants not named.
//!
//! Signature: `X-Namespace-Provisioner-Signature: sha256=<hex>` where
//! `<hex>` is HMAC-SHA256 with the tenant's secret over
//! `<timestamp>.<raw body>` and `<timestamp>` is the Unix-seconds value of
//! `X-Namespace-Provisioner-Timestamp`. A receiver recomputes it over the
//! bytes it received, compares in constant time ([`verify`]) and refuses a
//! timestamp too far from its clock (a replayed request).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use thiserror::Error;
use url::Url;

use crate::rules::params::{Expiry, TenantName};

/// Header carrying `sha256=<hex HMAC>`.
pub const SIGNATURE_HEADER: &str = "x-namespace-provisioner-signature";
/// Header carrying the Unix seconds included in the MAC.
pub const TIMESTAMP_HEADER: &str = "x-namespace-provisioner-timestamp";
/// Content type of a structured-mode CloudEvent in JSON.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";
/// The CloudEvents `source` of every notice.
pub const SOURCE: &str = "/namespace-provisioner/reaper";
/// What [`verify`] accepts between the sender's timestamp and the receiver's clock.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// Keys of the file, for messages.
const KEYS: &str = "tenants, default, allowInsecureHttp, delivery";

/// The kind of notice: the suffix of the CloudEvents `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    /// The namespace entered the `--notify-before` window (once per expiry).
    Expiring,
    /// The reaper found it expired and is deleting it.
    Expired,
    /// Its deletion was accepted by the API server (it is Terminating).
    Deleted,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [Self::Expiring, Self::Expired, Self::Deleted];

    /// Metric label and id part.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expiring => "expiring",
            Self::Expired => "expired",
            Self::Deleted => "deleted",
        }
    }

    /// The CloudEvents `type`.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Expiring => "io.observatorium.namespace.expiring",
            Self::Expired => "io.observatorium.namespace.expired",
            Self::Deleted => "io.observatorium.namespace.deleted",
        }
    }
}

/// What happened to which namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceEvent {
    pub kind: EventKind,
    pub namespace: String,
    /// The Namespace's uid: with kind and expiry it makes the event id.
    pub uid: String,
    pub tenant: Option<String>,
    pub parent: Option<String>,
    pub expiry: Expiry,
}

/// The `data` of a notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeData {
    pub namespace: String,
    pub tenant: Option<String>,
    /// RFC 3339.
    pub expiry: String,
    pub parent: Option<String>,
}

/// A structured-mode CloudEvent 1.0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudEvent {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// RFC 3339.
    pub time: String,
    pub subject: String,
    pub datacontenttype: String,
    pub data: NoticeData,
}

impl NamespaceEvent {
    /// The id: the same for every delivery (and retry) of this event, and
    /// for every replica that could send it, so receivers can dedupe.
    pub fn id(&self) -> String {
        let who = if self.uid.is_empty() {
            &self.namespace
        } else {
            &self.uid
        };
        format!("{who}.{}.{}", self.kind.as_str(), self.expiry.unix())
    }

    /// The CloudEvent of this event happening at `now` (Unix seconds).
    pub fn cloud_event(&self, now: i64) -> CloudEvent {
        CloudEvent {
            specversion: "1.0".to_owned(),
            id: self.id(),
            source: SOURCE.to_owned(),
            event_type: self.kind.event_type().to_owned(),
            time: Expiry::from_unix(now).rfc3339(),
            subject: self.namespace.clone(),
            datacontenttype: "application/json".to_owned(),
            data: NoticeData {
                namespace: self.namespace.clone(),
                tenant: self.tenant.clone(),
                expiry: self.expiry.rfc3339(),
                parent: self.parent.clone(),
            },
        }
    }

    /// The body sent: the CloudEvent as JSON bytes.
    pub fn body(&self, now: i64) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&self.cloud_event(now))
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the signing secret is empty")]
    EmptySecret,
    #[error("no {SIGNATURE_HEADER} header of the form sha256=<64 hex digits>")]
    Malformed,
    #[error("the timestamp is not Unix seconds")]
    Timestamp,
    #[error("the timestamp is {off_secs}s away from now, more than {tolerance_secs}s (a replay?)")]
    Stale { off_secs: i64, tolerance_secs: i64 },
    #[error("the signature does not match the body")]
    Mismatch,
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Result<Hmac<Sha256>, SignatureError> {
    if secret.is_empty() {
        return Err(SignatureError::EmptySecret);
    }
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).map_err(|_| SignatureError::EmptySecret)?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(mac)
}

/// The value of [`SIGNATURE_HEADER`]: `sha256=<hex>`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> Result<String, SignatureError> {
    let digest = mac(secret, timestamp, body)?.finalize().into_bytes();
    let mut text = String::with_capacity(7 + 64);
    text.push_str("sha256=");
    for byte in digest {
        text.push(hex_digit(byte >> 4));
        text.push(hex_digit(byte & 0x0f));
    }
    Ok(text)
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(nibble & 0x0f)])
}

/// What a receiver does: check the timestamp is within `tolerance_secs` of
/// `now`, recompute the MAC over the raw body and compare in constant time.
pub fn verify(
    secret: &[u8],
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let sent: i64 = timestamp.trim().parse().map_err(|_| SignatureError::Timestamp)?;
    let off_secs = now.saturating_sub(sent).saturating_abs();
    if off_secs > tolerance_secs {
        return Err(SignatureError::Stale {
            off_secs,
            tolerance_secs,
        });
    }
    let given = signature.trim();
    if given.len() != 71 || !given.starts_with("sha256=") {
        return Err(SignatureError::Malformed);
    }
    let expected = sign(secret, sent, body)?;
    if bool::from(expected.as_bytes().ct_eq(given.to_ascii_lowercase().as_bytes())) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// What an answer (or its absence) means for a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// 5xx, 429, no answer (connection error or timeout): try again later.
    Retry,
    /// Any other answer: the receiver refuses it; trying again would not help.
    GiveUp,
}

/// `status`: the HTTP status, `None` when no answer came.
pub fn verdict(status: Option<u16>) -> Verdict {
    match status {
        Some(200..=299) => Verdict::Delivered,
        None | Some(429 | 500..=599) => Verdict::Retry,
        Some(_) => Verdict::GiveUp,
    }
}

/// Bounded retries with exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1..=20).
    pub attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// The wait after failed attempt `n` (1-based): initial × 2^(n-1), at most the max.
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.initial_backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

/// How notices are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub retry: RetryPolicy,
    /// Bound of one request (connect to last byte of the answer).
    pub timeout: Duration,
    /// Notices waiting at most; past it new ones are dropped (counted, logged).
    pub queue: usize,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// `--once`: the longest wait for the queue to empty before exiting.
    pub drain_timeout: Duration,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            retry: RetryPolicy {
                attempts: 5,
                initial_backoff: Duration::from_secs(1),
                max_backoff: Duration::from_secs(30),
            },
            timeout: Duration::from_secs(10),
            queue: 1000,
            concurrency: 8,
            drain_timeout: Duration::from_secs(60),
        }
    }
}

/// One receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: Url,
    /// The file holding the HMAC secret (relative paths taken from the config file's folder).
    pub secret_file: PathBuf,
}

/// The validated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub tenants: BTreeMap<TenantName, Endpoint>,
    pub default: Option<Endpoint>,
    pub delivery: Delivery,
}

impl WebhookConfig {
    /// Where notices of `tenant` go: its own endpoint, else the default, else nowhere.
    pub fn endpoint_for(&self, tenant: Option<&str>) -> Option<&Endpoint> {
        tenant
            .and_then(|t| self.tenants.iter().find(|(name, _)| name.as_str() == t))
            .map(|(_, e)| e)
            .or(self.default.as_ref())
    }

    /// Every endpoint with who it serves (`tenant NAME` or `default`), for
    /// messages and for reading the secrets.
    pub fn endpoints(&self) -> impl Iterator<Item = (String, &Endpoint)> {
        self.tenants
            .iter()
            .map(|(t, e)| (format!("tenant {t}"), e))
            .chain(self.default.iter().map(|e| ("default".to_owned(), e)))
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WebhookConfigError {
    #[error("not a webhook configuration ({reason}); expected a mapping with keys {KEYS}")]
    Yaml { reason: String },
    #[error(
        "names no tenant and no default: no notice would be sent; add `tenants: {{NAME: {{url, secretFile}}}}`"
    )]
    Empty,
    #[error("{0}")]
    Tenant(#[from] crate::rules::params::TenantNameError),
    #[error("{who}: url {url:?} {reason}")]
    Url {
        who: String,
        /// Shown without any credentials it held.
        url: String,
        reason: String,
    },
    #[error(
        "{who}: secretFile must not be empty (a file holding the HMAC secret, e.g. /etc/np-webhook/{example})"
    )]
    SecretFile { who: String, example: String },
    #[error("delivery.{field}: {reason}")]
    Delivery { field: &'static str, reason: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawFile {
    #[serde(default)]
    allow_insecure_http: bool,
    default: Option<RawEndpoint>,
    #[serde(default)]
    tenants: BTreeMap<String, RawEndpoint>,
    #[serde(default)]
    delivery: RawDelivery,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawEndpoint {
    url: String,
    secret_file: String,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDelivery {
    attempts: Option<u32>,
    timeout: Option<String>,
    initial_backoff: Option<String>,
    max_backoff: Option<String>,
    queue: Option<usize>,
    concurrency: Option<usize>,
    drain_timeout: Option<String>,
}

/// Parse and validate the file's `text`; `base` is its folder (for relative secret files).
pub fn parse_config(text: &str, base: &Path) -> Result<WebhookConfig, WebhookConfigError> {
    let raw: RawFile = serde_yaml_ng::from_str(text).map_err(|e| WebhookConfigError::Yaml {
        reason: e.to_string(),
    })?;
    let allow_http = raw.allow_insecure_http;
    let build = |who: String, raw: RawEndpoint| -> Result<Endpoint, WebhookConfigError> {
        Ok(Endpoint {
            url: parse_url(&who, &raw.url, allow_http)?,
            secret_file: secret_path(&who, &raw.secret_file, base)?,
        })
    };
    let mut tenants = BTreeMap::new();
    for (name, raw_endpoint) in raw.tenants {
        let tenant: TenantName = name.parse()?;
        let endpoint = build(format!("tenant {tenant}"), raw_endpoint)?;
        tenants.insert(tenant, endpoint);
    }
    let default = raw.default.map(|e| build("default".to_owned(), e)).transpose()?;
    if tenants.is_empty() && default.is_none() {
        return Err(WebhookConfigError::Empty);
    }
    Ok(WebhookConfig {
        tenants,
        default,
        delivery: delivery(raw.delivery)?,
    })
}

/// An absolute https URL (http only when allowed), with a host, without
/// credentials (they would be logged with it) or a fragment.
fn parse_url(who: &str, text: &str, allow_http: bool) -> Result<Url, WebhookConfigError> {
    let bad = |shown: String, reason: &str| WebhookConfigError::Url {
        who: who.to_owned(),
        url: shown,
        reason: reason.to_owned(),
    };
    let url = Url::parse(text.trim()).map_err(|e| {
        // Not a URL: show it only if it cannot hold a password.
        let shown = if text.contains('@') {
            "<hidden: holds '@'>".to_owned()
        } else {
            text.to_owned()
        };
        bad(shown, &format!("is not an absolute URL ({e})"))
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        let mut shown = url.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        return Err(bad(
            shown.to_string(),
            "holds credentials; authenticate the receiver with the HMAC signature (secretFile) instead",
        ));
    }
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            return Err(bad(
                url.to_string(),
                "is plain http; use https (or, for a test receiver, set `allowInsecureHttp: true`)",
            ));
        }
        _ => return Err(bad(url.to_string(), "is not https")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad(url.to_string(), "has no host"));
    }
    if url.fragment().is_some() {
        return Err(bad(url.to_string(), "has a fragment (#...), which is never sent"));
    }
    Ok(url)
}

fn secret_path(who: &str, text: &str, base: &Path) -> Result<PathBuf, WebhookConfigError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(WebhookConfigError::SecretFile {
            who: who.to_owned(),
            example: who.rsplit(' ').next().unwrap_or("secret").to_owned(),
        });
    }
    let path = Path::new(text);
    Ok(if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    })
}

fn duration(
    field: &'static str,
    text: Option<String>,
    default: Duration,
) -> Result<Duration, WebhookConfigError> {
    let Some(text) = text else {
        return Ok(default);
    };
    let value = humantime::parse_duration(text.trim()).map_err(|e| WebhookConfigError::Delivery {
        field,
        reason: format!("{text:?} is not a duration ({e}); e.g. 10s"),
    })?;
    if value.is_zero() {
        return Err(WebhookConfigError::Delivery {
            field,
            reason: "must be more than 0s".to_owned(),
        });
    }
    Ok(value)
}

fn delivery(raw: RawDelivery) -> Result<Delivery, WebhookConfigError> {
    let d = Delivery::default();
    let attempts = raw.attempts.unwrap_or(d.retry.attempts);
    if !(1..=20).contains(&attempts) {
        return Err(WebhookConfigError::Delivery {
            field: "attempts",
            reason: format!("{attempts} is not between 1 and 20 (attempts in all, the first included)"),
        });
    }
    let initial_backoff = duration("initialBackoff", raw.initial_backoff, d.retry.initial_backoff)?;
    let max_backoff = duration("maxBackoff", raw.max_backoff, d.retry.max_backoff)?;
    if max_backoff < initial_backoff {
        return Err(WebhookConfigError::Delivery {
            field: "maxBackoff",
            reason: "is below initialBackoff".to_owned(),
        });
    }
    let bounded = |field: &'static str, value: Option<usize>, default: usize, max: usize| {
        let value = value.unwrap_or(default);
        if (1..=max).contains(&value) {
            Ok(value)
        } else {
            Err(WebhookConfigError::Delivery {
                field,
                reason: format!("{value} is not between 1 and {max}"),
            })
        }
    };
    Ok(Delivery {
        retry: RetryPolicy {
            attempts,
            initial_backoff,
            max_backoff,
        },
        timeout: duration("timeout", raw.timeout, d.timeout)?,
        queue: bounded("queue", raw.queue, d.queue, 100_000)?,
        concurrency: bounded("concurrency", raw.concurrency, d.concurrency, 256)?,
        drain_timeout: duration("drainTimeout", raw.drain_timeout, d.drain_timeout)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WebhookConfig, String> {
        parse_config(text, Path::new("/etc/np")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_config_routes_tenants_and_falls_back_to_the_default() {
        let config = parse(
            "tenants:\n  alice:\n    url: https://a.example.com/hook?x=1\n    secretFile: alice.key\n\
             default:\n  url: https://all.example.com/\n  secretFile: /run/default.key\n\
             delivery:\n  attempts: 3\n  initialBackoff: 100ms\n  timeout: 2s\n",
        )
        .unwrap();
        let alice = config.endpoint_for(Some("alice")).unwrap();
        assert_eq!(alice.url.as_str(), "https://a.example.com/hook?x=1");
        assert_eq!(alice.secret_file, PathBuf::from("/etc/np/alice.key"));
        let other = config.endpoint_for(Some("bob")).unwrap();
        assert_eq!(other.secret_file, PathBuf::from("/run/default.key"));
        assert_eq!(config.endpoint_for(None), Some(other));
        assert_eq!(config.delivery.retry.attempts, 3);
        assert_eq!(config.delivery.retry.initial_backoff, Duration::from_millis(100));
        assert_eq!(config.delivery.timeout, Duration::from_secs(2));
        assert_eq!(config.delivery.queue, 1000);
        assert_eq!(config.endpoints().count(), 2);

        let only = parse("tenants:\n  alice:\n    url: https://a.example.com\n    secretFile: k\n").unwrap();
        assert_eq!(only.endpoint_for(Some("bob")), None);
        let http = parse(
            "allowInsecureHttp: true\ntenants:\n  ci:\n    url: http://127.0.0.1:9/\n    secretFile: k\n",
        )
        .unwrap();
        assert_eq!(http.endpoint_for(Some("ci")).unwrap().url.scheme(), "http");
    }

    #[test]
    fn bad_configs_say_what_to_change() {
        let t = |url: &str| format!("tenants:\n  alice:\n    url: {url}\n    secretFile: k\n");
        for (text, words) in [
            ("", "names no tenant and no default".to_owned()),
            ("tenants: {}\n", "names no tenant and no default".to_owned()),
            ("- a\n", "expected a mapping with keys".to_owned()),
            ("tenant: {}\n", "unknown field `tenant`".to_owned()),
            (&t("http://a.example.com"), "allowInsecureHttp: true".to_owned()),
            (&t("ftp://a.example.com"), "is not https".to_owned()),
            (&t("a.example.com/hook"), "is not an absolute URL".to_owned()),
            (&t("https://a.example.com/#x"), "fragment".to_owned()),
            (
                &t("https://user:hunter2@a.example.com/"),
                "tenant alice: url \"https://a.example.com/\" holds credentials".to_owned(),
            ),
            (
                "tenants:\n  Alice:\n    url: https://a.example.com\n    secretFile: k\n",
                "is not a DNS label".to_owned(),
            ),
            (
                "tenants:\n  alice:\n    url: https://a.example.com\n    secretFile: ''\n",
                "tenant alice: secretFile must not be empty".to_owned(),
            ),
            (
                "tenants:\n  alice:\n    url: https://a.example.com\n",
                "missing field `secretFile`".to_owned(),
            ),
            (
                &format!("{}delivery:\n  attempts: 0\n", t("https://a.example.com")),
                "delivery.attempts: 0 is not between 1 and 20".to_owned(),
            ),
            (
                &format!("{}delivery:\n  timeout: soon\n", t("https://a.example.com")),
                "delivery.timeout: \"soon\" is not a duration".to_owned(),
            ),
            (
                &format!("{}delivery:\n  queue: 0\n", t("https://a.example.com")),
                "delivery.queue: 0".to_owned(),
            ),
            (
                &format!(
                    "{}delivery:\n  initialBackoff: 1m\n  maxBackoff: 1s\n",
                    t("https://a.example.com")
                ),
                "delivery.maxBackoff: is below initialBackoff".to_owned(),
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(&words), "{text:?}: {err}");
            assert!(!err.contains("hunter2"), "a password in a message: {err}");
        }
    }

    fn event(kind: EventKind) -> NamespaceEvent {
        NamespaceEvent {
            kind,
            namespace: "np-abc".to_owned(),
            uid: "1234-uid".to_owned(),
            tenant: Some("alice".to_owned()),
            parent: None,
            expiry: Expiry::from_unix(1_800_000_000),
        }
    }

    #[test]
    fn cloud_events_are_structured_json_with_stable_ids() {
        let e = event(EventKind::Expiring);
        let body: serde_json::Value = serde_json::from_slice(&e.body(1_799_999_400).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "specversion": "1.0",
                "id": "1234-uid.expiring.1800000000",
                "source": "/namespace-provisioner/reaper",
                "type": "io.observatorium.namespace.expiring",
                "time": "2027-01-15T07:50:00Z",
                "subject": "np-abc",
                "datacontenttype": "application/json",
                "data": {
                    "namespace": "np-abc",
                    "tenant": "alice",
                    "expiry": "2027-01-15T08:00:00Z",
                    "parent": null
                }
            })
        );
        // Same event later (a retry, another replica): same id; another kind: another id.
        assert_eq!(e.cloud_event(1).id, e.cloud_event(2).id);
        let ids: std::collections::BTreeSet<String> = EventKind::ALL.iter().map(|k| event(*k).id()).collect();
        assert_eq!(ids.len(), 3);
        assert_eq!(
            event(EventKind::Deleted).cloud_event(0).event_type,
            "io.observatorium.namespace.deleted"
        );
    }

    #[test]
    fn signatures_verify_only_for_the_same_secret_body_and_a_fresh_timestamp() {
        let body = br#"{"a":1}"#;
        let signature = sign(b"s3cret", 1_000, body).unwrap();
        assert!(
            signature.starts_with("sha256=") && signature.len() == 71,
            "{signature}"
        );
        // RFC 4231-style check against an independent computation.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"s3cret").unwrap();
        mac.update(b"1000.{\"a\":1}");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(signature, format!("sha256={hex}"));
        assert_eq!(verify(b"s3cret", "1000", body, &signature, 1_100, 300), Ok(()));
        assert_eq!(
            verify(
                b"s3cret",
                "1000",
                body,
                &signature.to_uppercase().replace("SHA256", "sha256"),
                1_000,
                300
            ),
            Ok(())
        );
        assert_eq!(
            verify(b"other", "1000", body, &signature, 1_000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", "1000", br#"{"a":2}"#, &signature, 1_000, 300),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is inside the MAC: changing it breaks the signature.
        assert_eq!(
            verify(b"s3cret", "1001", body, &signature, 1_000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", "1000", body, &signature, 2_000, 300),
            Err(SignatureError::Stale {
                off_secs: 1_000,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            verify(b"s3cret", "x", body, &signature, 1_000, 300),
            Err(SignatureError::Timestamp)
        );
        assert_eq!(
            verify(b"s3cret", "1000", body, "sha1=abc", 1_000, 300),
            Err(SignatureError::Malformed)
        );
        assert_eq!(sign(b"", 1, body), Err(SignatureError::EmptySecret));
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap_and_only_when_it_can_help() {
        let policy = RetryPolicy {
            attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(3),
        };
        let waits: Vec<u128> = (1..=6).map(|n| policy.backoff(n).as_millis()).collect();
        assert_eq!(waits, [500, 1_000, 2_000, 3_000, 3_000, 3_000]);
        assert_eq!(policy.backoff(200), Duration::from_secs(3));
        for (status, want) in [
            (Some(200), Verdict::Delivered),
            (Some(204), Verdict::Delivered),
            (Some(500), Verdict::Retry),
            (Some(503), Verdict::Retry),
            (Some(429), Verdict::Retry),
            (None, Verdict::Retry),
            (Some(400), Verdict::GiveUp),
            (Some(401), Verdict::GiveUp),
            (Some(404), Verdict::GiveUp),
            (Some(301), Verdict::GiveUp),
        ] {
            assert_eq!(verdict(status), want, "{status:?}");
        }
    }
}
