//! `ApiError`: every error the HTTP API returns, as RFC 9457 problem+json,
//! and the one mapping from domain errors to status codes. 5xx details go to
//! the log (by the [`super::metrics::track`] middleware, which reads the
//! [`Failure`] this leaves in the response), never to the caller. Asks
//! domain errors questions (`is_unavailable()`); never reads Kubernetes errors.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::access::AuthError;
use crate::provision::ProvisionError;
use crate::rules::quota::allocation::Refusal;
use crate::telemetry::chain;

/// Seconds a caller should wait after a 503.
const RETRY_AFTER_SECS: u64 = 5;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: String,
    retry_after: Option<u64>,
    challenge: Option<&'static str>,
    /// Full cause chain of a server-side failure, for the log only.
    internal: Option<String>,
    /// The Kubernetes API server's refusal in that chain (HTTP status,
    /// reason), for the log line's `api_status`/`api_reason` fields. Boxed:
    /// every `Result` of this type carries its size.
    api: Option<Box<(u16, String)>>,
    /// Stable error kind for metrics.
    kind: &'static str,
    /// RFC 9457 extension members (e.g. a quota refusal's `shortfalls`); boxed, as most
    /// errors have none and every `Result` of this type carries its size.
    extensions: Option<Box<serde_json::Map<String, serde_json::Value>>>,
}

/// RFC 9457 problem details body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the status code says what kind of problem it is.
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub title: String,
    pub status: u16,
    /// What went wrong and what to do about it.
    pub detail: String,
    /// Extension members of some problems: `parent` and `shortfalls` (`resource`, `asked`,
    /// `left`), `overAllocated` (`resource`, `budget`, `allocated`) or `overruns`
    /// (`resource`, `hard`, `used`) of a quota refusal.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

/// Placed in response extensions so middleware can log and count failures.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: &'static str,
    pub internal: Option<String>,
    /// The API server's status and reason, when it refused.
    pub api: Option<(u16, String)>,
}

/// The API server's refusal somewhere in `error`'s chain, as log fields.
fn api_fields(error: &(dyn std::error::Error + 'static)) -> Option<Box<(u16, String)>> {
    crate::telemetry::api_failure(error).map(|f| Box::new((f.status, f.reason)))
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            retry_after: None,
            challenge: None,
            internal: None,
            api: None,
            kind,
            extensions: None,
        }
    }

    /// Add an RFC 9457 extension member.
    pub fn with_extension(mut self, key: &str, value: serde_json::Value) -> Self {
        self.extensions
            .get_or_insert_with(Box::default)
            .insert(key.to_owned(), value);
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }

    /// 401 with a `WWW-Authenticate: Bearer` challenge (RFC 6750).
    pub fn unauthorized(detail: impl Into<String>, invalid_token: bool) -> Self {
        Self {
            challenge: Some(if invalid_token {
                "Bearer realm=\"namespace-provisioner\", error=\"invalid_token\""
            } else {
                "Bearer realm=\"namespace-provisioner\""
            }),
            ..Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
        }
    }

    /// 504: the request took longer than `limit` (`--request-timeout`: the API server
    /// unreachable or slow). Like a 503, it says when to retry (issue 15).
    pub fn timed_out(limit: std::time::Duration) -> Self {
        Self {
            retry_after: Some(RETRY_AFTER_SECS),
            ..Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!(
                    "the request took longer than {}; retry",
                    humantime::format_duration(limit)
                ),
            )
        }
    }

    /// 429 for a client address that failed authentication too often; retry after `wait`.
    pub fn auth_throttled(wait: std::time::Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Self {
            retry_after: Some(secs.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "auth_throttled",
                "too many failed authentications from this address; wait for Retry-After seconds and check the token",
            )
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl From<ProvisionError> for ApiError {
    fn from(err: ProvisionError) -> Self {
        let kind = err.kind();
        let client_error = |status| Self::new(status, kind, err.to_string());
        match &err {
            ProvisionError::Ttl(_) | ProvisionError::BindNeedsUser => client_error(StatusCode::BAD_REQUEST),
            ProvisionError::Forbidden { .. } => client_error(StatusCode::FORBIDDEN),
            ProvisionError::NotFound { .. } => client_error(StatusCode::NOT_FOUND),
            ProvisionError::TooMany { .. } => client_error(StatusCode::TOO_MANY_REQUESTS),
            ProvisionError::Terminating { .. } => client_error(StatusCode::CONFLICT),
            // A parent that does not exist is named by the request: 404, like a name in the path.
            ProvisionError::ParentNotFound { .. } => client_error(StatusCode::NOT_FOUND),
            ProvisionError::ParentTerminating { .. }
            | ProvisionError::ParentAnnotation { .. }
            | ProvisionError::TooManyChildren(_) => client_error(StatusCode::CONFLICT),
            // Not a parent is a refusal of the caller's right to create there, like a tenant
            // the parent does not allow: 403 (the detail says which).
            ProvisionError::NotAParent { .. } | ProvisionError::TenantNotAllowed { .. } => {
                client_error(StatusCode::FORBIDDEN)
            }
            ProvisionError::Depth(_)
            | ProvisionError::AboveParentMaxTtl { .. }
            | ProvisionError::BeyondParentExpiry { .. }
            | ProvisionError::QuotaWithoutParent
            | ProvisionError::NoBudget { .. }
            | ProvisionError::Allocation { .. } => client_error(StatusCode::BAD_REQUEST),
            ProvisionError::SeveralBudgets { .. }
            | ProvisionError::BudgetUnreadable { .. }
            | ProvisionError::LedgerContended { .. } => client_error(StatusCode::CONFLICT),
            ProvisionError::QuotaRefused { parent, refusal } => {
                quota_refusal(client_error(StatusCode::CONFLICT), parent, refusal)
            }
            _ => {
                let (status, detail, retry_after) = if err.is_unavailable() {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the Kubernetes API server is unavailable; retry later",
                        Some(RETRY_AFTER_SECS),
                    )
                } else if err.is_conflict() {
                    (
                        StatusCode::CONFLICT,
                        "a concurrent change to the same namespace conflicted; retry",
                        None,
                    )
                } else {
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the namespace operation failed inside the provisioner; its operator can find the cause in the logs",
                        None,
                    )
                };
                Self {
                    retry_after,
                    internal: Some(chain(&err)),
                    api: api_fields(&err),
                    ..Self::new(status, kind, detail)
                }
            }
        }
    }
}

/// A TokenReview that did not come back (a refusal is a 401, made by the extractor).
impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        let (status, detail, retry_after) = if err.is_unavailable() {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the Kubernetes API server is unavailable to review the token; retry later",
                Some(RETRY_AFTER_SECS),
            )
        } else {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "reviewing the bearer token failed inside the provisioner; its operator can find the cause in the logs",
                None,
            )
        };
        Self {
            retry_after,
            internal: Some(chain(&err)),
            api: api_fields(&err),
            ..Self::new(status, "token_review", detail)
        }
    }
}

/// The 409 of a quota that does not fit, with what a client needs to retry smaller.
fn quota_refusal(error: ApiError, parent: &str, refusal: &Refusal) -> ApiError {
    // The refusal lists are plain data: serializing them cannot fail.
    fn json<T: Serialize>(value: &T) -> serde_json::Value {
        serde_json::to_value(value).unwrap_or_default()
    }
    let error = error.with_extension("parent", serde_json::Value::from(parent));
    match refusal {
        Refusal::DoesNotFit(shortfalls) => error.with_extension("shortfalls", json(shortfalls)),
        Refusal::BudgetOverAllocated(over) => error.with_extension("overAllocated", json(over)),
        Refusal::ParentGrew(overruns) => error.with_extension("overruns", json(overruns)),
        Refusal::Arithmetic(_) => error,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            type_: "about:blank",
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail,
            extensions: self.extensions.map(|e| *e).unwrap_or_default(),
        };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(challenge) = self.challenge {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response.extensions_mut().insert(Failure {
            kind: self.kind,
            internal: self.internal,
            api: self.api.map(|api| *api),
        });
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::params::TtlError;

    #[test]
    fn client_errors_keep_their_message() {
        let e = ApiError::from(ProvisionError::Ttl(TtlError::AboveMax {
            requested: "2h".into(),
            max: "1h".into(),
        }));
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(e.detail().contains("at most 1h"));
    }

    #[test]
    fn a_missing_right_is_403_naming_it() {
        use crate::rules::auth::{Right, Verb};
        let e = ApiError::from(ProvisionError::Forbidden {
            who: "user jane".into(),
            right: Right {
                verb: Verb::Create,
                namespace: Some("team-a".into()),
            },
        });
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        for part in [
            "user jane",
            "verb create",
            "resource namespaces",
            "group controller.observatorium.io",
            "in namespace team-a",
        ] {
            assert!(e.detail().contains(part), "{} lacks {part}", e.detail());
        }
        assert_eq!(
            ApiError::from(ProvisionError::BindNeedsUser).status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn server_errors_hide_their_cause() {
        let e = ApiError::from(ProvisionError::TaskStopped);
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.detail().contains("task"));
        assert!(e.internal.as_deref().unwrap_or_default().contains("task stopped"));
    }

    #[test]
    fn unreachable_api_server_is_503_with_retry_after() {
        let status = kube::core::Status {
            code: 503,
            ..kube::core::Status::default()
        };
        let e = ApiError::from(ProvisionError::ListNamespaces {
            source: kube::Error::Api(Box::new(status)).into(),
        });
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        let response = e.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }

    #[tokio::test]
    async fn a_quota_that_does_not_fit_names_each_resource_asked_and_left() {
        use crate::rules::quota::allocation::Shortfall;
        let e = ApiError::from(ProvisionError::QuotaRefused {
            parent: "team".into(),
            refusal: Refusal::DoesNotFit(vec![Shortfall {
                resource: "count/pods".into(),
                asked: "3".into(),
                left: "1".into(),
            }]),
        });
        assert_eq!(e.status(), StatusCode::CONFLICT);
        assert!(
            e.detail().contains("count/pods asked 3, left 1"),
            "{}",
            e.detail()
        );
        let body = axum::body::to_bytes(e.into_response().into_body(), 4096)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["parent"], "team");
        assert_eq!(body["shortfalls"][0]["resource"], "count/pods");
        assert_eq!(body["shortfalls"][0]["left"], "1");
        assert_eq!(body["status"], 409);
    }
}
