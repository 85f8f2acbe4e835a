//! `kubectl np`: a command-line client of the provisioner's HTTP API.
//!
//! Owns the plugin's pure parts and its I/O with the provisioner, and nothing
//! of clap (the binary `bin/kubectl-np.rs` parses flags into [`commands::Invocation`]):
//! - [`config`]: where the provisioner URL and token come from (flags, env,
//!   config file), validated; no network.
//! - [`client`]: HTTP calls to the provisioner (the only network I/O).
//! - [`output`]: tables, human durations, JSON/YAML; pure.
//! - [`commands`]: one function per subcommand, including `--wait` polling.
//! - [`error`]: one error type, its one-line rendering and the exit codes.
//! - [`kube_auth`]: the bearer credentials of a kubeconfig context (kube-rs
//!   reads it and runs exec plugins), for Kubernetes-identity auth.
//!
//! The wire types here are the client's view of the API: they ignore fields
//! they do not know (a newer server stays usable) and keep them for `-o json`.

pub mod client;
pub mod commands;
pub mod config;
pub mod error;
pub mod kube_auth;
pub mod output;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use error::{ExitStatus, PluginError};

/// A managed namespace as the API lists it (`NamespaceInfo` in openapi.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    pub name: String,
    pub tenant: String,
    /// Sent for a child namespace by `get` (the list leaves it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    pub phase: String,
    /// Fields this client does not know, passed through to `-o json|yaml`.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `GET /api/v1/namespaces`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamespaceList {
    pub items: Vec<Namespace>,
}

/// A namespace with fresh credentials: the answer of create and extend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    pub name: String,
    pub expires_at: String,
    pub token_expires_at: String,
    /// Kubeconfig YAML holding a namespace-scoped token.
    pub kubeconfig: String,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// Body of create. `parent` makes a sub-namespace, `quota` asks for an
/// allocation from the parent's budget (the server's refusals -- not a parent,
/// tenant not allowed, does not fit -- come back as problem+json).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CreateRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<BTreeMap<String, String>>,
}

/// Body of extend.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ExtendRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}
