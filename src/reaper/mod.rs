//! The reaper: finds every set the provisioner made (by the selector label),
//! deletes the expired ones and repairs the incomplete ones.
//!
//! A sweep is list -> [`plan`] -> [`execute`] -> [`report`]: paginated LISTs
//! of the four managed kinds grouped by namespace, a pure decision per
//! namespace, the writes, and a summary. [`watch`] runs the same plan per
//! namespace from a kube-runtime controller, under a leader Lease.
//!
//! Rules the code keeps:
//! - nothing without the selector label is planned for (checked again
//!   client-side after the server's label selection);
//! - a Namespace is deleted only with a uid + resourceVersion precondition;
//! - inside a managed namespace, the objects the desired set names are ours
//!   (re-applied even if someone stripped their labels); other
//!   selector-labelled objects there are reported as strays, not deleted;
//! - a managed namespace without a tenant label (e.g. adopted from the
//!   original tool with `--selector controller.observatorium.io=namespace-selector`)
//!   only gets an expiry; no ServiceAccount or RoleBinding is created in it.
//!
//! This module does Kubernetes I/O (listing) through [`crate::k8s`].

pub mod execute;
pub mod metrics;
pub mod plan;
pub mod report;
pub mod watch;

use std::fmt::Debug;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use thiserror::Error;

use self::execute::Executor;
use self::plan::{Observed, PlanConfig};
use self::report::{Durations, Report};
use crate::k8s;
use crate::params::Selector;

/// Everything a sweep needs besides a client.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepConfig {
    pub plan: PlanConfig,
    /// Objects per LIST page.
    pub page_size: u32,
    /// Sets written at the same time.
    pub concurrency: usize,
    /// Plan and report only; write nothing.
    pub dry_run: bool,
    /// Names this process in the Events it emits.
    pub instance: String,
}

#[derive(Debug, Error)]
pub enum ReaperError {
    #[error("list {kind} with selector {selector}")]
    List {
        kind: &'static str,
        selector: String,
        #[source]
        source: kube::Error,
    },
}

impl ReaperError {
    /// Stable name for metric labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::List { .. } => "list",
        }
    }
}

/// Every object of kind `K` carrying `selector`, paginated, each turned into
/// what the plan reads of it (`T`) as its page arrives: a sweep never holds
/// more than one page of full objects per kind.
async fn list_kind<K, T>(api: Api<K>, selector: &Selector, page_size: u32) -> Result<Vec<T>, ReaperError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    T: From<K>,
{
    let label_selector = selector.to_label_selector();
    k8s::list_all_map(&api, &label_selector, page_size, T::from)
        .await
        .map_err(|source| ReaperError::List {
            kind: kind_name::<K>(),
            selector: label_selector,
            source,
        })
}

fn kind_name<K: Resource<DynamicType = ()>>() -> &'static str {
    k8s::MANAGED_KINDS
        .iter()
        .copied()
        .find(|k| *k == K::kind(&()).as_ref())
        .unwrap_or("object")
}

/// LIST the four managed kinds cluster-wide (concurrently, paginated) and
/// group them by namespace.
pub async fn observe(client: &Client, selector: &Selector, page_size: u32) -> Result<Observed, ReaperError> {
    let (namespaces, service_accounts, roles, role_bindings) = tokio::try_join!(
        list_kind(Api::<Namespace>::all(client.clone()), selector, page_size),
        list_kind(Api::<ServiceAccount>::all(client.clone()), selector, page_size),
        list_kind(Api::<Role>::all(client.clone()), selector, page_size),
        list_kind(Api::<RoleBinding>::all(client.clone()), selector, page_size),
    )?;
    Ok(Observed::new(
        selector,
        namespaces,
        service_accounts,
        roles,
        role_bindings,
    ))
}

/// The selector-labelled contents of one namespace, with `namespace` as its
/// Namespace (as the watch saw it).
pub async fn observe_namespace(
    client: &Client,
    namespace: Namespace,
    selector: &Selector,
    page_size: u32,
) -> Result<Observed, ReaperError> {
    let name = namespace.metadata.name.clone().unwrap_or_default();
    let (service_accounts, roles, role_bindings) = tokio::try_join!(
        list_kind(
            Api::<ServiceAccount>::namespaced(client.clone(), &name),
            selector,
            page_size
        ),
        list_kind(
            Api::<Role>::namespaced(client.clone(), &name),
            selector,
            page_size
        ),
        list_kind(
            Api::<RoleBinding>::namespaced(client.clone(), &name),
            selector,
            page_size
        ),
    )?;
    Ok(Observed::new(
        selector,
        vec![namespace.into()],
        service_accounts,
        roles,
        role_bindings,
    ))
}

/// One sweep at `now` (Unix seconds): list, plan, execute (unless dry run), report.
///
/// Only a failed LIST is an error; failures of single sets are in the report.
pub async fn sweep(client: &Client, config: &SweepConfig, now: i64) -> Result<Report, ReaperError> {
    let started = Instant::now();
    let observed = observe(client, &config.plan.set.selector, config.page_size).await?;
    let listed = Instant::now();
    let plan = plan::plan(&observed.sets(), now, &config.plan);
    drop(observed);
    let planned = Instant::now();
    let outcomes = if config.dry_run {
        None
    } else {
        Some(
            Executor::new(client.clone(), &config.instance)
                .execute(&plan, config.concurrency)
                .await,
        )
    };
    let durations = Durations {
        list: listed - started,
        plan: planned - listed,
        execute: planned.elapsed(),
    };
    Ok(Report::new(
        &plan,
        outcomes.as_deref(),
        durations,
        config.plan.max_deletions,
        peak_rss_kib(),
    ))
}

/// One sweep now.
pub async fn run(client: &Client, config: &SweepConfig) -> Result<Report, ReaperError> {
    sweep(client, config, crate::provision::system_clock()).await
}

/// Peak resident set size of this process (`VmHWM`), on Linux.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_named_from_the_managed_list() {
        assert_eq!(kind_name::<Namespace>(), "Namespace");
        assert_eq!(kind_name::<RoleBinding>(), "RoleBinding");
    }

    #[test]
    fn peak_rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_kib().is_some_and(|k| k > 0));
        }
    }
}
