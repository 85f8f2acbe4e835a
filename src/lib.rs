//! namespace-provisioner: self-service, short-lived Kubernetes namespaces.
//!
//! The pure core ([`params`], [`labels`], [`desired`], [`kubeconfig`], [`auth`])
//! has no client and no clock; Kubernetes I/O lives in [`k8s`]. The [`reaper`]
//! deletes expired sets and repairs incomplete ones.

pub mod api;
pub mod auth;
pub mod cli;
pub mod desired;
pub mod hierarchy;
pub mod k8s;
pub mod kubeconfig;
pub mod labels;
pub mod params;
pub mod plugin;
pub mod provision;
pub mod reaper;
