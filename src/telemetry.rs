//! What the two processes share for logs and metrics: the one error-chain
//! renderer, the one metric label set for errors, and the one OpenMetrics
//! responder. No Kubernetes I/O.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::registry::Registry;
use tracing::error;

use crate::k8s::{ApiFailure, KubeError, render_kube_error};

/// An error and its sources, `: `-separated, for one log line or report
/// entry. A Kubernetes error ends the line with its own readable rendering
/// (message once, status, reason, hint; never a `Debug` dump), and a source
/// whose text the line already holds is not repeated.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let (part, last) = if let Some(kube) = e.downcast_ref::<KubeError>() {
            (kube.to_string(), true)
        } else if let Some(kube) = e.downcast_ref::<kube::Error>() {
            (render_kube_error(kube), true)
        } else {
            (e.to_string(), false)
        };
        if text.is_empty() {
            text = part;
        } else if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        if last {
            break;
        }
        next = e.source();
    }
    text
}

/// The first Kubernetes refusal in an error's chain, as fields for JSON logs
/// (`status`, `reason`, `kind`, `name`, `namespace`).
pub fn api_failure(error: &(dyn std::error::Error + 'static)) -> Option<ApiFailure> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(kube) = e.downcast_ref::<KubeError>() {
            return kube.failure();
        }
        next = e.source();
    }
    None
}

/// Log `error` at WARN (or ERROR) with its one-line chain and, when the API
/// server refused, the refusal's fields.
#[macro_export]
macro_rules! log_error {
    ($level:ident, $error:expr, $($rest:tt)+) => {{
        let error: &(dyn std::error::Error + 'static) = $error;
        let failure = $crate::telemetry::api_failure(error);
        let f = failure.as_ref();
        tracing::$level!(
            error = %$crate::telemetry::chain(error),
            status = f.map(|f| f.status),
            reason = f.map(|f| f.reason.as_str()),
            kind = f.and_then(|f| f.kind.as_deref()),
            name = f.and_then(|f| f.name.as_deref()),
            namespace = f.and_then(|f| f.namespace.as_deref()),
            $($rest)+
        )
    }};
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

/// Metric labels of one load of a configuration file (`config_reload_total`):
/// the flag's name and the outcome (`success`, `error`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub file: String,
    pub outcome: String,
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

    #[derive(Debug, thiserror::Error)]
    #[error("delete namespace np-x")]
    struct Action(#[source] KubeError);

    #[derive(Debug, thiserror::Error)]
    #[error("lease")]
    struct Foreign(#[source] kube::Error);

    fn forbidden() -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code: 403,
            reason: "Forbidden".into(),
            message: r#"namespaces "np-x" is forbidden: User "u" cannot delete resource "namespaces""#.into(),
            ..kube::core::Status::default()
        }))
    }

    #[test]
    fn kubernetes_errors_read_once_without_debug_dumps() {
        for text in [
            chain(&Action(KubeError::from(forbidden()))),
            chain(&Foreign(forbidden())),
        ] {
            assert_eq!(text.matches("is forbidden").count(), 1, "{text}");
            assert!(!text.contains("Status {") && !text.contains("ApiError"), "{text}");
            assert!(text.contains("(403 Forbidden; RBAC"), "{text}");
        }
        let failure = api_failure(&Action(KubeError::from(forbidden()))).unwrap();
        assert_eq!((failure.status, failure.reason.as_str()), (403, "Forbidden"));
        assert!(api_failure(&Outer(std::io::Error::other("x"))).is_none());
    }
}
