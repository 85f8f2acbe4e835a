//! namespace-provisioner: self-service, short-lived Kubernetes namespaces.
//!
//! The crate is built in floors; each module may use the floors below it,
//! never above (see `docs/architecture.md`):
//!
//! 1. [`rules`]: pure rules and types (the desired set, TTL and expiry,
//!    labels, the managed kinds, kubeconfigs, tokens). No client, no clock.
//! 2. [`k8s`]: the one room that talks to Kubernetes; [`clock`]: the one clock;
//!    [`aws`]: the one room that talks to AWS (EKS token, Secrets Manager, SSM).
//! 3. The pipelines: [`provision`] (create, extend, delete for one caller),
//!    [`access`] (who a caller is: static tokens or TokenReview) and
//!    [`reaper`] (observe -> plan -> execute -> report, once or watching).
//! 4. The edges: [`api`] (HTTP, container or Lambda) and [`cli`] (flags into
//!    configuration, and each binary's `run`). [`telemetry`] is shared by both;
//!    [`reload`] keeps configuration files (tokens, CA, role rules) current.

pub mod access;
pub mod api;
pub mod aws;
pub mod cli;
pub mod clock;
pub mod k8s;
pub mod plugin;
pub mod propagate;
pub mod provision;
pub mod reaper;
pub mod reload;
pub mod rules;
pub mod telemetry;

// Stable paths for code outside the crate (tests, benches, other branches):
// the rules keep the names they had before they moved to `rules/`.
pub use rules::{auth, desired, kubeconfig, labels, params};
