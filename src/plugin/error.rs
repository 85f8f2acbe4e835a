//! The plugin's one error type, its exit codes, and how a problem+json
//! answer becomes one readable line.

use thiserror::Error;

/// Process exit codes, documented in `kubectl np --help` and docs/plugin.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 1: the provisioner refused or failed, or could not be reached.
    Failure = 1,
    /// 2: bad flags, environment or config file; nothing was sent.
    Usage = 2,
    /// 3: the name is not one of the caller's namespaces (HTTP 404).
    NotFound = 3,
}

/// An RFC 9457 answer (or any other non-2xx answer) from the provisioner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub status: u16,
    pub title: String,
    pub detail: String,
}

impl Problem {
    /// From a non-2xx answer: problem+json when it is one, else the start of the body.
    pub fn from_answer(status: u16, body: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        struct Wire {
            #[serde(default)]
            title: String,
            #[serde(default)]
            detail: String,
            /// A Kubernetes `Status` (a proxy or an API server answering instead).
            #[serde(default)]
            message: String,
        }
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        match serde_json::from_slice::<Wire>(body) {
            Ok(wire) if !(wire.title.is_empty() && wire.detail.is_empty() && wire.message.is_empty()) => {
                Self {
                    status,
                    title: if wire.title.is_empty() {
                        reason.to_owned()
                    } else {
                        wire.title
                    },
                    detail: if wire.detail.is_empty() {
                        wire.message
                    } else {
                        wire.detail
                    },
                }
            }
            _ => Self {
                status,
                title: reason.to_owned(),
                detail: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
            },
        }
    }
}

impl std::fmt::Display for Problem {
    /// `Bad Request (400): ttl 5h is above the maximum 1h; ask for at most 1h`,
    /// on one line whatever the server sent.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let title = one_line(&self.title);
        let detail = one_line(&self.detail);
        if detail.is_empty() {
            write!(f, "{title} ({})", self.status)
        } else {
            write!(f, "{title} ({}): {detail}", self.status)
        }
    }
}

/// Collapse whitespace and drop control characters: a server's text must not
/// break the one-line format or drive the terminal.
pub fn one_line(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Error)]
pub enum PluginError {
    /// A flag combination or value the plugin refuses before sending anything.
    #[error("{0}")]
    Usage(String),
    #[error("config file {path}: {reason}")]
    Config { path: String, reason: String },
    #[error("read {what} {path}")]
    ReadFile {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{problem}{hint}")]
    Api { problem: Problem, hint: String },
    #[error("cannot reach the provisioner at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the provisioner did not answer {what} within {timeout}")]
    Timeout { what: String, timeout: String },
    #[error("unexpected answer from the provisioner to {what}: {reason}")]
    Decode { what: String, reason: String },
    #[error("{0}")]
    WaitTimedOut(String),
    #[error("write {path}")]
    WriteFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("encode output: {0}")]
    Encode(String),
    #[error("write output")]
    Output(#[from] std::io::Error),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("cannot get the credentials of kubeconfig context {context:?}: {reason}")]
    KubeAuth { context: String, reason: String },
    #[error(
        "kubeconfig context {context:?} (user {user:?}) {why}; use a context whose user has a token or an exec \
         plugin (--context), or a provisioner token (NP_TOKEN / --token-file)"
    )]
    NoBearer {
        context: String,
        user: String,
        why: &'static str,
    },
}

impl PluginError {
    pub fn api(problem: Problem) -> Self {
        Self::Api {
            problem,
            hint: String::new(),
        }
    }

    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Self::Usage(_) | Self::Config { .. } => ExitStatus::Usage,
            // The caller's kubeconfig or exec plugin: their setup; nothing was sent.
            Self::KubeAuth { .. } | Self::NoBearer { .. } => ExitStatus::Usage,
            // A token or CA file named by the user that cannot be read is their setup, not the server.
            Self::ReadFile { .. } => ExitStatus::Usage,
            Self::Api { problem, .. } if problem.status == 404 => ExitStatus::NotFound,
            _ => ExitStatus::Failure,
        }
    }

    /// The status of a provisioner answer, when this is one.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Api { problem, .. } => Some(problem.status),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_render_on_one_line() {
        let body = br#"{"type":"about:blank","title":"Bad Request","status":400,
            "detail":"failed to parse the JSON body: unknown field `parent`,\n expected `ttl` or `server`"}"#;
        let problem = Problem::from_answer(400, body);
        assert_eq!(
            problem.to_string(),
            "Bad Request (400): failed to parse the JSON body: unknown field `parent`, expected `ttl` or `server`"
        );
        let not_json = Problem::from_answer(502, b"<html>\n<b>bad gateway</b>\x1b[31m</html>");
        assert_eq!(
            not_json.to_string(),
            "Bad Gateway (502): <html> <b>bad gateway</b> [31m</html>"
        );
        assert_eq!(
            Problem::from_answer(500, b"").to_string(),
            "Internal Server Error (500)"
        );
        let status = Problem::from_answer(
            401,
            br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Unauthorized","code":401}"#,
        );
        assert_eq!(status.to_string(), "Unauthorized (401): Unauthorized");
        let untitled = Problem::from_answer(429, br#"{"detail":"at most 3"}"#);
        assert_eq!(untitled.to_string(), "Too Many Requests (429): at most 3");
    }

    #[test]
    fn exit_codes_follow_the_documented_table() {
        let api = |status| PluginError::api(Problem::from_answer(status, b""));
        assert_eq!(api(404).exit_status(), ExitStatus::NotFound);
        assert_eq!(api(400).exit_status(), ExitStatus::Failure);
        assert_eq!(api(401).exit_status(), ExitStatus::Failure);
        assert_eq!(api(503).exit_status(), ExitStatus::Failure);
        assert_eq!(PluginError::Usage("x".into()).exit_status(), ExitStatus::Usage);
        let config = PluginError::Config {
            path: "c".into(),
            reason: "r".into(),
        };
        assert_eq!(config.exit_status(), ExitStatus::Usage);
        let connect = PluginError::Connect {
            url: "u".into(),
            reason: "r".into(),
        };
        assert_eq!(connect.exit_status(), ExitStatus::Failure);
    }
}
