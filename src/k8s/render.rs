//! How a failed API call reads: one line with the API server's message once,
//! the HTTP status and reason, and a hint for the common causes; never the
//! `Debug` dump of the `Status` that `kube::Error` prints. Also the same
//! facts as fields for JSON logs ([`ApiFailure`]). No I/O.

use std::error::Error as StdError;

use kube::core::Status;

/// An API refusal, as fields: what JSON logs carry besides the line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiFailure {
    /// HTTP status code.
    pub status: u16,
    /// The API server's machine-readable reason (`Forbidden`, `NotFound`, ...).
    pub reason: String,
    /// The resource the API server names (plural, e.g. `namespaces`).
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

impl ApiFailure {
    pub fn from_status(status: &Status) -> Self {
        let details = status.details.as_ref();
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let kind = details.and_then(|d| non_empty(&d.kind));
        let name = details.and_then(|d| non_empty(&d.name));
        // The Status has no namespace field; a namespace is either the
        // object itself or named in an RBAC refusal's message.
        let namespace = if kind.as_deref() == Some("namespaces") {
            name.clone()
        } else {
            quoted_after(&status.message, "in the namespace ")
        };
        Self {
            status: status.code,
            reason: status.reason.clone(),
            kind,
            name,
            namespace,
        }
    }
}

/// `prefix"value"` in `text` -> `value`.
fn quoted_after(text: &str, prefix: &str) -> Option<String> {
    let rest = &text[text.find(prefix)? + prefix.len()..];
    let rest = rest.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_owned())
}

/// What a person can do about a refusal, for the common causes.
pub fn hint(status: &Status) -> Option<&'static str> {
    let kind = status
        .details
        .as_ref()
        .map(|d| d.kind.as_str())
        .unwrap_or_default();
    let admission = status.message.contains("admission") || status.message.contains("denied request");
    Some(match status.code {
        401 => "the credentials were refused: the token expired or the kubeconfig is wrong",
        403 if admission => {
            "an admission policy refused the object (RBAC allowed it): see admission-policy.yaml; not retried"
        }
        403 => {
            "RBAC does not grant the permission named above: apply function/clusterrole.yaml (provisioner) or cronjob/base/clusterrole.yaml (reaper); not retried"
        }
        404 if kind == "clusterroles" => {
            "the ClusterRole to bind does not exist: create it: function/grant-clusterrole.yaml (or set --cluster-role to one that exists)"
        }
        // Writing a RoleBinding whose ClusterRole is missing (without `bind`
        // on that name) comes back as a 404 naming the ClusterRole as if it
        // were the RoleBinding.
        404 if kind == "rolebindings" => {
            "the role this RoleBinding binds (named above) does not exist: create it: function/grant-clusterrole.yaml (or set --cluster-role to one that exists)"
        }
        404 => "the object is gone (deleted meanwhile)",
        409 if status.reason == "AlreadyExists" => "an object of that name exists already",
        409 => {
            "the object changed or was replaced meanwhile (a uid/resourceVersion precondition or another field manager); not retried at once: the next look sees the new state"
        }
        410 => "the resource version is too old; the next list starts afresh",
        422 => {
            "the API server found the object invalid (see the fields above): check the flags that shape it (--role-rules-file, --selector, --prefix)"
        }
        429 => {
            "the API server is throttling this client: retried (reaper: at its next look; provisioner: answers 503 with Retry-After)"
        }
        500..=599 => {
            "the API server failed: retried (reaper: at its next look; provisioner: answers 503 with Retry-After)"
        }
        _ => return None,
    })
}

/// `message (403 Forbidden; hint)`.
pub fn status_line(status: &Status) -> String {
    let message = if status.message.is_empty() {
        "the API server gave no message"
    } else {
        status.message.as_str()
    };
    let mut line = format!("{message} ({}", status.code);
    if !status.reason.is_empty() {
        line.push(' ');
        line.push_str(&status.reason);
    }
    if let Some(hint) = hint(status) {
        line.push_str("; ");
        line.push_str(hint);
    }
    line.push(')');
    line
}

/// An error and its sources, `: `-separated, skipping a source whose text
/// the line already holds (many errors repeat their source's message).
pub fn dedup_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

const UNREACHABLE_HINT: &str = "check the server URL (--kubeconfig, --context) and that the API server runs; retried (reaper: at its next look or run; provisioner: answers 503 with Retry-After)";

/// One line for any `kube::Error`.
pub fn line(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status_line(status),
        kube::Error::HyperError(e) => format!(
            "cannot reach the API server: {} ({UNREACHABLE_HINT})",
            dedup_chain(e)
        ),
        kube::Error::Service(e) => {
            format!(
                "cannot reach the API server: {} ({UNREACHABLE_HINT})",
                dedup_chain(e.as_ref())
            )
        }
        other => dedup_chain(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::response::StatusDetails;

    fn status(code: u16, reason: &str, message: &str, kind: &str, name: &str) -> Status {
        Status {
            code,
            reason: reason.into(),
            message: message.into(),
            details: Some(StatusDetails {
                kind: kind.into(),
                name: name.into(),
                group: String::new(),
                uid: String::new(),
                causes: Vec::new(),
                retry_after_seconds: 0,
            }),
            ..Status::default()
        }
    }

    const FORBIDDEN: &str = r#"serviceaccounts "sa" is forbidden: User "system:serviceaccount:a:b" cannot patch resource "serviceaccounts" in API group "" in the namespace "np-x""#;

    #[test]
    fn a_refusal_reads_as_one_line_with_its_message_once() {
        let s = status(403, "Forbidden", FORBIDDEN, "serviceaccounts", "sa");
        let text = line(&kube::Error::Api(Box::new(s.clone())));
        assert_eq!(text.matches("is forbidden").count(), 1, "{text}");
        assert!(!text.contains("Status {"), "{text}");
        assert!(text.contains("(403 Forbidden; RBAC does not grant"), "{text}");
        assert!(!text.contains('\n'));
        let fields = ApiFailure::from_status(&s);
        assert_eq!(fields.namespace.as_deref(), Some("np-x"));
        assert_eq!(fields.kind.as_deref(), Some("serviceaccounts"));
        assert_eq!(fields.name.as_deref(), Some("sa"));
        assert_eq!(fields.reason, "Forbidden");
    }

    #[test]
    fn common_causes_get_hints() {
        let grant = status(
            404,
            "NotFound",
            r#"clusterroles.rbac.authorization.k8s.io "g" not found"#,
            "clusterroles",
            "g",
        );
        assert!(status_line(&grant).contains("create it: function/grant-clusterrole.yaml"));
        // What the API server really answers for a RoleBinding to a missing ClusterRole.
        let binding = status(
            404,
            "NotFound",
            r#"rolebindings.rbac.authorization.k8s.io "g" not found"#,
            "rolebindings",
            "g",
        );
        assert!(status_line(&binding).contains("create it: function/grant-clusterrole.yaml"));
        let gone = status(404, "NotFound", "x", "namespaces", "n");
        assert!(status_line(&gone).contains("gone"));
        assert_eq!(ApiFailure::from_status(&gone).namespace.as_deref(), Some("n"));
        assert!(status_line(&status(409, "Conflict", "x", "", "")).contains("not retried at once"));
        assert!(status_line(&status(409, "AlreadyExists", "x", "", "")).contains("exists already"));
        assert!(status_line(&status(422, "Invalid", "x", "", "")).contains("invalid"));
        assert!(status_line(&status(429, "TooManyRequests", "x", "", "")).contains("retried"));
        assert!(status_line(&status(503, "ServiceUnavailable", "x", "", "")).contains("retried"));
        let denied = status(
            403,
            "Forbidden",
            "ValidatingAdmissionPolicy 'p' denied request",
            "",
            "",
        );
        assert!(status_line(&denied).contains("admission policy"));
        assert_eq!(
            status_line(&Status::default()),
            "the API server gave no message (0)"
        );
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn chains_skip_repeated_sources() {
        let e = Repeats(std::io::Error::other("connection refused"));
        assert_eq!(dedup_chain(&e), "outer: connection refused");
    }
}
