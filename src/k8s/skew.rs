//! How far this process's clock is from the API server's (issue 15: time you
//! can trust). Expiry decisions use the local clock; a node running an hour
//! ahead would delete everything expiring within that hour. One cheap GET of
//! `/version` (readable by every identity through `system:public-info-viewer`,
//! no write, no RBAC to add) brings the server's `Date` header; the local
//! clock is read just before and just after. Shared by both binaries.
//!
//! Why the `Date` header rather than a Lease's server-written renewTime: no
//! write, no object to own, works before the preflight and for the
//! provisioner too; its one-second resolution is far below any useful bound.
//! [`judge`] is pure; [`measure`] does Kubernetes I/O.

use std::fmt;
use std::time::Duration;

use kube::Client;
use kube::client::Body;

use super::KubeError;
use crate::clock::Clock;

/// The local clock against the API server's, in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skew {
    /// Local minus server: positive when the local clock runs ahead. The
    /// smallest offset consistent with the readings (0 when they overlap).
    pub ahead_secs: i64,
}

impl Skew {
    /// Whether the offset is beyond `bound` either way.
    pub fn exceeds(&self, bound: Duration) -> bool {
        self.ahead_secs.unsigned_abs() > bound.as_secs()
    }

    /// As a person reads it, with the bound (`--max-clock-skew`).
    pub fn describe(&self, bound: Duration) -> String {
        format!(
            "the local clock is {self} the API server's (--max-clock-skew {})",
            humantime::format_duration(bound)
        )
    }
}

impl fmt::Display for Skew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ahead_secs {
            0 => f.write_str("within a second of"),
            s if s > 0 => write!(f, "{s}s ahead of"),
            s => write!(f, "{}s behind", s.unsigned_abs()),
        }
    }
}

/// The skew from local readings before and after the request and the
/// server's `Date` (whole seconds, truncated): the server's instant lies in
/// `[server, server + 1)` and was taken between the two local readings
/// (each truncated too), so only an offset beyond those windows counts.
pub fn judge(local_before: i64, local_after: i64, server: i64) -> Skew {
    let ahead_secs = if local_before > server + 1 {
        local_before - (server + 1)
    } else if local_after + 1 < server {
        local_after + 1 - server
    } else {
        0
    };
    Skew { ahead_secs }
}

#[derive(Debug, thiserror::Error)]
pub enum SkewError {
    #[error("ask the API server for the time (GET /version)")]
    Request(#[source] KubeError),
    #[error("build the request for the API server's time")]
    Build(#[source] http::Error),
    #[error("the API server's answer has no usable Date header ({0:?})")]
    NoDate(Option<String>),
}

/// The server's time from an HTTP `Date` header (`Mon, 30 Nov 2026 20:15:44 GMT`).
pub fn parse_http_date(value: &str) -> Option<i64> {
    jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()
        .map(|t| t.as_second())
}

/// Measure the skew of `clock` against the API server's.
pub async fn measure(client: &Client, clock: Clock) -> Result<Skew, SkewError> {
    let request = http::Request::get("/version")
        .body(Body::from(Vec::new()))
        .map_err(SkewError::Build)?;
    let before = clock();
    let response = client
        .send(request)
        .await
        .map_err(|e| SkewError::Request(KubeError::from(e)))?;
    let after = clock();
    let date = response
        .headers()
        .get(http::header::DATE)
        .and_then(|v| v.to_str().ok());
    let server = date
        .and_then(parse_http_date)
        .ok_or_else(|| SkewError::NoDate(date.map(str::to_owned)))?;
    Ok(judge(before, after, server))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_readings_are_no_skew() {
        for (before, after, server) in [(100, 100, 100), (100, 101, 100), (101, 101, 100), (100, 100, 101)] {
            assert_eq!(
                judge(before, after, server).ahead_secs,
                0,
                "{before} {after} {server}"
            );
        }
    }

    #[test]
    fn skew_counts_beyond_the_reading_windows() {
        // An hour ahead: the case that would delete everything due within the hour.
        assert_eq!(judge(3700, 3700, 100).ahead_secs, 3599);
        assert_eq!(judge(100, 101, 3700).ahead_secs, -3598);
        let bound = Duration::from_secs(30);
        assert!(!judge(130, 130, 100).exceeds(bound));
        assert!(judge(132, 132, 100).exceeds(bound));
        assert!(judge(68, 68, 100).exceeds(bound));
        assert_eq!(
            judge(3700, 3700, 100).describe(bound),
            "the local clock is 3599s ahead of the API server's (--max-clock-skew 30s)"
        );
        assert_eq!(Skew { ahead_secs: -5 }.to_string(), "5s behind");
    }

    #[test]
    fn http_dates_parse() {
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:01 GMT"), Some(1));
        assert_eq!(
            parse_http_date("Mon, 30 Nov 2026 20:15:44 GMT"),
            Some(1_796_069_744)
        );
        assert_eq!(parse_http_date("yesterday"), None);
    }
}
