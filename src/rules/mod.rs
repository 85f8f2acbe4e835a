//! The ground floor: the rules of the product as pure functions and types.
//! Nothing here has a client, a clock or randomness; everything above calls
//! down into it and it calls nothing above.
//!
//! - [`params`]: values parsed at the edge (TTL, expiry, tenant, selector, URLs);
//! - [`labels`]: the label and annotation vocabulary every managed object carries;
//! - [`desired`]: the one definition of a complete managed set;
//! - [`kinds`]: the managed kinds, as data, and objects tagged with their kind;
//! - [`kubeconfig`]: the kubeconfig handed to callers;
//! - [`auth`]: bearer tokens and the tenants they belong to;
//! - [`eks`]: the EKS IAM bearer token as data (presigned STS URL, refresh timing);
//! - [`hierarchy`]: the namespace tree, HNC's propagation modes and exceptions, copy plans;
//! - [`quota`]: exact quantities and the allocation model of the aggregate quota;
//! - [`pool`]: the warm pool: members, sizes, stale and surplus members, claim order.

pub mod auth;
pub mod desired;
pub mod eks;
pub mod hierarchy;
pub mod kinds;
pub mod kubeconfig;
pub mod labels;
pub mod notice;
pub mod params;
pub mod permissions;
pub mod pool;
pub mod quota;
pub mod webhook;
