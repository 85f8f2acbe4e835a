//! Values parsed at the edge (flags, query parameters, bodies, labels) into
//! newtypes that can only hold valid values. No I/O.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

/// A requested lifetime, as written by a caller (`30s`, `5m`, `1h30m`, `0`).
///
/// Zero means "the default"; it is resolved against a [`TtlPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(Duration);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TtlError {
    #[error("ttl {input:?} is negative; give a duration such as 30s, 5m or 1h30m")]
    Negative { input: String },
    #[error("ttl {input:?} is not a duration ({reason}); give one such as 30s, 5m or 1h30m")]
    Invalid { input: String, reason: String },
    #[error("ttl {requested} is above the maximum {max}; ask for at most {max}")]
    AboveMax { requested: String, max: String },
    #[error("ttl {requested} is below the minimum 1s")]
    BelowMin { requested: String },
}

impl Ttl {
    pub fn new(duration: Duration) -> Self {
        Self(duration)
    }

    pub fn duration(self) -> Duration {
        self.0
    }
}

impl FromStr for Ttl {
    type Err = TtlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        if trimmed.starts_with('-') {
            return Err(TtlError::Negative { input: s.to_owned() });
        }
        // The original tool accepted a bare `0` for "default"; humantime wants a unit.
        if trimmed == "0" {
            return Ok(Self(Duration::ZERO));
        }
        humantime::parse_duration(trimmed)
            .map(Self)
            .map_err(|e| TtlError::Invalid {
                input: s.to_owned(),
                reason: e.to_string(),
            })
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// Default and maximum lifetimes; turns a requested [`Ttl`] into whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlPolicy {
    default: Duration,
    max: Duration,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TtlPolicyError {
    #[error("--ttl {default} is above --max-ttl {max}")]
    DefaultAboveMax { default: String, max: String },
    #[error("--ttl must be at least 1s")]
    ZeroDefault,
}

impl TtlPolicy {
    pub fn new(default: Duration, max: Option<Duration>) -> Result<Self, TtlPolicyError> {
        let max = max.unwrap_or(default);
        if default < Duration::from_secs(1) {
            return Err(TtlPolicyError::ZeroDefault);
        }
        if default > max {
            return Err(TtlPolicyError::DefaultAboveMax {
                default: humantime::format_duration(default).to_string(),
                max: humantime::format_duration(max).to_string(),
            });
        }
        Ok(Self { default, max })
    }

    pub fn default_ttl(&self) -> Duration {
        self.default
    }

    pub fn max(&self) -> Duration {
        self.max
    }

    /// The lifetime in whole seconds (rounded up): absent or zero means the
    /// default; above the maximum is an error, never a silent clamp.
    pub fn resolve(&self, requested: Option<Ttl>) -> Result<u64, TtlError> {
        let wanted = match requested {
            None => self.default,
            Some(t) if t.0.is_zero() => self.default,
            Some(t) => t.0,
        };
        if wanted > self.max {
            return Err(TtlError::AboveMax {
                requested: humantime::format_duration(wanted).to_string(),
                max: humantime::format_duration(self.max).to_string(),
            });
        }
        if wanted < Duration::from_secs(1) {
            return Err(TtlError::BelowMin {
                requested: humantime::format_duration(wanted).to_string(),
            });
        }
        let secs = wanted.as_secs() + u64::from(wanted.subsec_nanos() > 0);
        Ok(secs)
    }
}

/// The expiry instant, in Unix seconds, as stored in [`crate::rules::labels::EXPIRY_LABEL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Expiry(i64);

#[derive(Debug, Error, PartialEq, Eq)]
#[error("expiry {input:?} is not a Unix timestamp in seconds")]
pub struct ExpiryError {
    input: String,
}

impl Expiry {
    pub fn from_unix(secs: i64) -> Self {
        Self(secs)
    }

    /// `now + ttl`, saturating rather than wrapping on absurd inputs.
    pub fn after(now: i64, ttl_secs: u64) -> Self {
        Self(now.saturating_add(i64::try_from(ttl_secs).unwrap_or(i64::MAX)))
    }

    pub fn unix(self) -> i64 {
        self.0
    }

    pub fn is_due(self, now: i64) -> bool {
        self.0 <= now
    }

    /// RFC 3339 in UTC, or the raw number if it is outside the calendar.
    pub fn rfc3339(self) -> String {
        jiff::Timestamp::from_second(self.0)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| self.0.to_string())
    }
}

impl FromStr for Expiry {
    type Err = ExpiryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<i64>()
            .ok()
            .filter(|v| *v > 0)
            .map(Self)
            .ok_or_else(|| ExpiryError { input: s.to_owned() })
    }
}

impl fmt::Display for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A tenant name: it becomes a label value, so it must be a DNS label
/// (lower-case alphanumerics and `-`, at most 63 characters).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantName(String);

#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "tenant name {input:?} is not a DNS label: use 1-63 lower-case letters, digits and '-', starting and ending with a letter or digit"
)]
pub struct TenantNameError {
    input: String,
}

impl TenantName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For names built by this crate that are DNS labels by construction.
    pub(crate) fn from_trusted(name: String) -> Self {
        debug_assert!(is_dns_label(&name));
        Self(name)
    }
}

impl FromStr for TenantName {
    type Err = TenantNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if is_dns_label(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(TenantNameError { input: s.to_owned() })
        }
    }
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// RFC 1123 label, as Kubernetes checks namespace names.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// The `key=value` label that marks managed objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    key: String,
    value: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SelectorError {
    #[error("selector {input:?} must have the form key=value")]
    Form { input: String },
    #[error(
        "selector key {key:?} is not a valid label key ([prefix/]name, name at most 63 characters of [A-Za-z0-9-_.])"
    )]
    Key { key: String },
    #[error(
        "selector value {value:?} is not a valid label value (1-63 characters of [A-Za-z0-9-_.], alphanumeric at both ends)"
    )]
    Value { value: String },
}

impl Selector {
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    /// The selector as a Kubernetes label selector string.
    pub fn to_label_selector(&self) -> String {
        format!("{}={}", self.key, self.value)
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| SelectorError::Form { input: s.to_owned() })?;
        if !is_label_key(key) {
            return Err(SelectorError::Key { key: key.to_owned() });
        }
        // An empty value would select objects that merely carry the key.
        if value.is_empty() || !is_label_name(value) {
            return Err(SelectorError::Value {
                value: value.to_owned(),
            });
        }
        Ok(Self {
            key: key.to_owned(),
            value: value.to_owned(),
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

fn is_label_key(s: &str) -> bool {
    match s.rsplit_once('/') {
        Some((prefix, name)) => {
            prefix.len() <= 253 && prefix.split('.').all(is_dns_label) && is_label_name(name)
        }
        None => is_label_name(s),
    }
}

/// The `<prefix>` of generated namespace names (`<prefix>-<random>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePrefix(String);

#[derive(Debug, Error, PartialEq, Eq)]
#[error("namespace prefix {input:?} must be 1-40 lower-case letters, digits and '-', starting with a letter")]
pub struct NamePrefixError {
    input: String,
}

impl NamePrefix {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NamePrefix {
    type Err = NamePrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // 40 leaves room for `-` and the random suffix within 63.
        if s.len() <= 40 && is_dns_label(s) && s.as_bytes()[0].is_ascii_lowercase() {
            Ok(Self(s.to_owned()))
        } else {
            Err(NamePrefixError { input: s.to_owned() })
        }
    }
}

/// The API server URL written into a kubeconfig: absolute, http or https.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl(String);

#[derive(Debug, Error, PartialEq, Eq)]
#[error("server {input:?} is not an absolute http(s) URL such as https://api.example.com:6443 ({reason})")]
pub struct ServerUrlError {
    input: String,
    reason: &'static str,
}

impl ServerUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ServerUrl {
    type Err = ServerUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ServerUrlError {
            input: s.to_owned(),
            reason,
        };
        let url = url::Url::parse(s).map_err(|_| err("not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err("scheme must be http or https"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(err("no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(err("credentials do not belong in the URL"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(err("no query or fragment allowed"));
        }
        Ok(Self(s.trim_end_matches('/').to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_parses_humantime_and_zero() {
        for (input, secs) in [
            ("30s", 30),
            ("5m", 300),
            ("1h", 3600),
            ("1h30m", 5400),
            ("0", 0),
            ("0s", 0),
        ] {
            assert_eq!(
                input.parse::<Ttl>().unwrap().duration(),
                Duration::from_secs(secs),
                "{input}"
            );
        }
    }

    #[test]
    fn ttl_rejects_negative_garbage_and_overflow() {
        assert!(matches!("-5m".parse::<Ttl>(), Err(TtlError::Negative { .. })));
        assert!(matches!(
            "five minutes".parse::<Ttl>(),
            Err(TtlError::Invalid { .. })
        ));
        assert!(matches!("".parse::<Ttl>(), Err(TtlError::Invalid { .. })));
        assert!(matches!("5".parse::<Ttl>(), Err(TtlError::Invalid { .. })));
        assert!(matches!(
            "99999999999999999999999h".parse::<Ttl>(),
            Err(TtlError::Invalid { .. })
        ));
        let msg = "-5m".parse::<Ttl>().unwrap_err().to_string();
        assert!(msg.contains("negative"), "{msg}");
    }

    #[test]
    fn policy_defaults_rejects_above_max_and_rounds_up() {
        let p = TtlPolicy::new(Duration::from_secs(3600), Some(Duration::from_secs(7200))).unwrap();
        assert_eq!(p.resolve(None), Ok(3600));
        assert_eq!(p.resolve(Some(Ttl::new(Duration::ZERO))), Ok(3600));
        assert_eq!(p.resolve(Some(Ttl::new(Duration::from_secs(7200)))), Ok(7200));
        assert_eq!(p.resolve(Some(Ttl::new(Duration::from_millis(1500)))), Ok(2));
        let err = p.resolve(Some(Ttl::new(Duration::from_secs(7201)))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ttl 2h 1s is above the maximum 2h; ask for at most 2h"
        );
        assert!(matches!(
            p.resolve(Some(Ttl::new(Duration::from_millis(10)))),
            Err(TtlError::BelowMin { .. })
        ));
    }

    #[test]
    fn policy_max_defaults_to_ttl_and_must_cover_it() {
        let p = TtlPolicy::new(Duration::from_secs(60), None).unwrap();
        assert_eq!(p.max(), Duration::from_secs(60));
        assert!(TtlPolicy::new(Duration::from_secs(61), Some(Duration::from_secs(60))).is_err());
        assert!(TtlPolicy::new(Duration::ZERO, None).is_err());
    }

    #[test]
    fn expiry_parses_positive_unix_seconds_only() {
        assert_eq!("1700000000".parse::<Expiry>().unwrap().unix(), 1_700_000_000);
        for bad in ["", "abc", "-1", "0", "1.5", "17e8"] {
            assert!(bad.parse::<Expiry>().is_err(), "{bad}");
        }
        assert_eq!(Expiry::from_unix(0).rfc3339(), "1970-01-01T00:00:00Z");
        assert!(Expiry::from_unix(10).is_due(10));
        assert!(!Expiry::from_unix(11).is_due(10));
        assert_eq!(Expiry::after(i64::MAX - 1, u64::MAX).unix(), i64::MAX);
    }

    #[test]
    fn tenant_names_are_dns_labels() {
        for ok in ["a", "team-1", "ci"] {
            assert!(ok.parse::<TenantName>().is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"x".repeat(64)] {
            assert!(bad.parse::<TenantName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn selectors_need_valid_key_and_value() {
        let s: Selector = "controller.observatorium.io=namespace-provisioner"
            .parse()
            .unwrap();
        assert_eq!(s.key(), "controller.observatorium.io");
        assert_eq!(s.value(), "namespace-provisioner");
        assert_eq!(
            s.to_label_selector(),
            "controller.observatorium.io=namespace-provisioner"
        );
        assert!("example.com/team=a".parse::<Selector>().is_ok());
        for bad in [
            "novalue",
            "k=",
            "=v",
            "k=v=w",
            "bad key=v",
            "Example.COM/x=v",
            "k=-v",
        ] {
            assert!(bad.parse::<Selector>().is_err(), "{bad}");
        }
    }

    #[test]
    fn server_urls_must_be_absolute_http() {
        for ok in [
            "https://api.example.com:6443",
            "http://127.0.0.1:8080/",
            "https://[::1]:6443",
        ] {
            assert!(ok.parse::<ServerUrl>().is_ok(), "{ok}");
        }
        assert_eq!(
            "http://127.0.0.1:8080/".parse::<ServerUrl>().unwrap().as_str(),
            "http://127.0.0.1:8080"
        );
        for bad in [
            "foo",
            "",
            "/relative",
            "ftp://x",
            "https://u:p@host",
            "https://h/?q=1",
            "https://",
        ] {
            assert!(bad.parse::<ServerUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_leave_room_for_the_suffix() {
        assert!("np".parse::<NamePrefix>().is_ok());
        for bad in ["", "1np", "np-", "NP", &"a".repeat(41)] {
            assert!(bad.parse::<NamePrefix>().is_err(), "{bad}");
        }
    }
}

/// Hostile input, systematically (issue 15): no parser panics on any string,
/// every refusal says something, and what is accepted reads back the same from
/// its canonical form.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn config() -> ProptestConfig {
        ProptestConfig::with_cases(256)
    }

    /// A label name: alphanumeric ends, `-_.` inside, at most 63 characters.
    fn label_name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?"
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn ttl_never_panics_and_round_trips(input in "\\PC{0,24}") {
            match input.parse::<Ttl>() {
                Ok(ttl) => prop_assert_eq!(ttl.to_string().parse::<Ttl>().ok(), Some(ttl)),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }

        #[test]
        fn every_written_duration_is_a_ttl(secs in 0u64..100_000_000, nanos in 0u32..1_000_000_000) {
            let duration = Duration::new(secs, nanos);
            let written = humantime::format_duration(duration).to_string();
            prop_assert_eq!(written.parse::<Ttl>().map(Ttl::duration), Ok(duration));
            let negative = format!("-{written}");
            let refused = matches!(negative.parse::<Ttl>(), Err(TtlError::Negative { .. }));
            prop_assert!(refused);
        }

        #[test]
        fn ttl_policy_never_panics(secs in any::<u64>(), nanos in 0u32..1_000_000_000) {
            let policy = TtlPolicy::new(Duration::from_secs(3600), Some(Duration::from_secs(7200))).unwrap();
            match policy.resolve(Some(Ttl::new(Duration::new(secs, nanos)))) {
                Ok(resolved) => prop_assert!((1..=7200).contains(&resolved)),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }

        #[test]
        fn server_url_never_panics_and_is_stable(input in "\\PC{0,40}") {
            match input.parse::<ServerUrl>() {
                Ok(url) => prop_assert_eq!(url.as_str().parse::<ServerUrl>().ok(), Some(url)),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }

        #[test]
        fn server_urls_of_hosts_and_ports_are_accepted(
            scheme in "https?",
            host in "[a-z]([a-z0-9-]{0,20}[a-z0-9])?(\\.[a-z]{2,6}){0,2}",
            port in proptest::option::of(1u16..),
            path in "(/[a-z0-9]{1,8}){0,2}",
        ) {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let input = format!("{scheme}://{host}{port}{path}");
            let url = input.parse::<ServerUrl>();
            prop_assert!(url.is_ok(), "{input}: {url:?}");
            let query = format!("{input}?x=1").parse::<ServerUrl>();
            prop_assert!(query.is_err());
        }

        #[test]
        fn selector_never_panics_and_round_trips(input in "\\PC{0,40}") {
            match input.parse::<Selector>() {
                Ok(selector) => {
                    prop_assert_eq!(selector.to_string().parse::<Selector>().ok(), Some(selector.clone()));
                    prop_assert_eq!(selector.to_label_selector(), input);
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }

        #[test]
        fn selectors_of_label_keys_and_values_are_accepted(
            prefix in proptest::option::of("[a-z0-9]{1,10}(\\.[a-z0-9]{1,10}){0,2}"),
            name in label_name(),
            value in label_name(),
        ) {
            let key = prefix.map(|p| format!("{p}/{name}")).unwrap_or(name);
            let input = format!("{key}={value}");
            let selector = input.parse::<Selector>().unwrap();
            prop_assert_eq!((selector.key(), selector.value()), (key.as_str(), value.as_str()));
        }

        #[test]
        fn names_never_panic_and_round_trip(input in "\\PC{0,70}") {
            if let Ok(tenant) = input.parse::<TenantName>() {
                prop_assert!(is_dns_label(tenant.as_str()));
                prop_assert_eq!(tenant.to_string().parse::<TenantName>().ok(), Some(tenant));
            }
            if let Ok(prefix) = input.parse::<NamePrefix>() {
                prop_assert!(prefix.as_str().len() <= 40);
            }
            match input.parse::<Expiry>() {
                Ok(expiry) => prop_assert_eq!(expiry.to_string().parse::<Expiry>().ok(), Some(expiry)),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    }
}
