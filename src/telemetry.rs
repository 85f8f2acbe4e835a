//! What the two processes share for logs and metrics: the one error-chain
//! renderer, the one metric label set for errors, and the one OpenMetrics
//! responder. No Kubernetes I/O.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::registry::Registry;
use tracing::error;

/// An error and its sources, `: `-separated, for one log line or report entry.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Metric labels of a failure: the error's stable `kind()`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
}

impl ErrorLabels {
    pub fn new(kind: &str) -> Self {
        Self {
            kind: kind.to_owned(),
        }
    }
}

/// `registry` as an OpenMetrics text response (500 if it cannot be encoded).
pub fn openmetrics(registry: &Registry) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            error!(error = %e, "encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_joins_every_source() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(chain(&e), "outer: inner");
    }
}
