//! Watch mode: a kube-runtime controller over managed Namespaces
//! ([`k8s::managed_controller`]), woken by changes to them and to
//! selector-labelled objects of every other managed kind (mapped to their
//! namespace), and requeued at each
//! namespace's expiry instant; no polling loop. Each reconcile observes one
//! namespace and runs the same pure [`plan::plan_set`] as a sweep.
//!
//! Only the holder of a `coordination.k8s.io` Lease (kube-lease-manager)
//! runs the controller. Losing the Lease, or failing to confirm it, stops the
//! controller at once; shutdown stops it gracefully and releases the Lease.
//! Does Kubernetes I/O through [`crate::k8s`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::controller::{self, Action as Requeue};
use kube::{Client, ResourceExt};
use kube_lease_manager::LeaseManager;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::execute::{ExecuteError, Executor, Outcome};
use super::metrics::{self, InFlight, Metrics};
use super::plan::{self, PlanConfig};
use super::tree_watch::{self, TreeWatch};
use super::{ReaperError, observe_namespace};
use crate::clock::{system_clock, system_clock_f64};
use crate::k8s;
use crate::rules::params::Expiry;
use crate::telemetry::{ErrorLabels, chain};

/// The leader Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica's `holderIdentity`.
    pub identity: String,
    duration_secs: u64,
    grace_secs: u64,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LeaseConfigError {
    #[error("--lease-duration must be whole seconds, at least 2s (got {got:?})")]
    Duration { got: Duration },
    #[error("--lease-name and --lease-identity must not be empty")]
    Empty,
}

impl LeaseConfig {
    /// A Lease held for `duration` after each renewal; the holder renews a
    /// third of it (at least 1 s) before it runs out.
    pub fn new(
        name: String,
        namespace: String,
        identity: String,
        duration: Duration,
    ) -> Result<Self, LeaseConfigError> {
        if name.is_empty() || identity.is_empty() || namespace.is_empty() {
            return Err(LeaseConfigError::Empty);
        }
        let secs = duration.as_secs();
        if secs < 2 || duration.subsec_nanos() != 0 {
            return Err(LeaseConfigError::Duration { got: duration });
        }
        Ok(Self {
            name,
            namespace,
            identity,
            duration_secs: secs,
            grace_secs: (secs / 3).max(1),
        })
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.duration_secs)
    }
}

/// Everything watch mode needs besides a client and a listener.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchConfig {
    /// `max_deletions` does not apply: there is no "run" to cap.
    pub plan: PlanConfig,
    pub page_size: u32,
    /// Reconciles at the same time.
    pub concurrency: u16,
    pub lease: LeaseConfig,
}

#[derive(Debug, Error)]
pub enum WatchError {
    #[error("serve /healthz and /metrics")]
    Serve(#[source] std::io::Error),
}

#[derive(Debug, Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Observe(#[from] ReaperError),
    #[error("{failed} write(s) for namespace {namespace} failed, the first")]
    Execute {
        namespace: String,
        failed: usize,
        #[source]
        first: ExecuteError,
    },
}

impl ReconcileError {
    /// Stable name for metric labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Observe(e) => e.kind(),
            Self::Execute { first, .. } => first.kind(),
        }
    }
}

struct Context {
    client: Client,
    trees: Option<TreeWatch>,
    executor: Executor,
    plan: PlanConfig,
    page_size: u32,
    metrics: Arc<Metrics>,
}

/// Longest requeue: tokio timers cap out near two years, and an hourly-or-so
/// look also covers a missed watch event. Expiries beyond it just get a
/// look that finds nothing to do.
const MAX_REQUEUE: Duration = Duration::from_secs(24 * 3600);

/// Requeue a little after the expiry second starts, so the look finds it due.
const EXPIRY_MARGIN: Duration = Duration::from_millis(10);

/// Retry delay after a failed reconcile.
const ERROR_REQUEUE: Duration = Duration::from_secs(5);

/// How long a graceful stop waits for running reconciles.
const GRACEFUL_STOP: Duration = Duration::from_secs(20);

/// Run until `shutdown` resolves: serve `/healthz` and `/metrics` on
/// `listener`, take part in leader election, and reconcile while leading.
pub async fn watch(
    client: Client,
    config: WatchConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WatchError> {
    watch_with_trees(client, config, None, listener, shutdown).await
}

/// [`watch`], plus tree labels, cascades and propagation ([`tree_watch`]) while leading.
pub async fn watch_with_trees(
    client: Client,
    config: WatchConfig,
    trees: Option<TreeWatch>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WatchError> {
    let metrics = Arc::new(Metrics::default());
    let addr = listener.local_addr().ok();
    let (stop_http, http_stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, metrics::router(metrics.clone()))
            .with_graceful_shutdown(http_stopped.map(drop))
            .into_future(),
    );
    info!(addr = ?addr.map(|a: SocketAddr| a.to_string()), identity = %config.lease.identity, "watch mode: serving /healthz and /metrics");
    let context = Arc::new(Context {
        executor: Executor::new(client.clone(), &config.lease.identity),
        client: client.clone(),
        trees,
        plan: config.plan.clone(),
        page_size: config.page_size,
        metrics: metrics.clone(),
    });
    lead(&client, &config, context, shutdown).await;
    let _ = stop_http.send(());
    match server.await {
        Ok(served) => served.map_err(WatchError::Serve),
        Err(join) => {
            warn!(error = %join, "the /metrics server task ended abnormally");
            Ok(())
        }
    }
}

/// A running controller.
struct Running {
    task: JoinHandle<()>,
    stop: oneshot::Sender<()>,
}

impl Running {
    fn start(context: Arc<Context>, concurrency: u16) -> Self {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run_controller(context, concurrency, stopped));
        Self { task, stop }
    }

    /// Leadership lost: stop acting now (a write in progress is cut at its next await).
    async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Shutdown: let running reconciles finish, within limits.
    async fn stop(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(GRACEFUL_STOP, &mut task).await.is_err() {
            warn!("reconciles did not finish in time; aborting them");
            task.abort();
            let _ = task.await;
        }
    }
}

async fn build_manager(
    client: &Client,
    lease: &LeaseConfig,
) -> Result<LeaseManager, kube_lease_manager::LeaseManagerError> {
    k8s::build_lease_manager(
        client,
        &lease.name,
        &lease.namespace,
        &lease.identity,
        lease.duration_secs,
        lease.grace_secs,
    )
    .await
}

enum LeaseEvent {
    Shutdown,
    Built(Result<Box<LeaseManager>, kube_lease_manager::LeaseManagerError>),
    Changed(Result<bool, kube_lease_manager::LeaseManagerError>),
}

/// The leader loop: run the controller exactly while the Lease is ours.
async fn lead(
    client: &Client,
    config: &WatchConfig,
    context: Arc<Context>,
    shutdown: impl Future<Output = ()>,
) {
    let metrics = context.metrics.clone();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut manager: Option<Box<LeaseManager>> = None;
    let mut running: Option<Running> = None;
    let mut backoff = Duration::from_secs(1);
    loop {
        let event = match &manager {
            None => tokio::select! {
                () = &mut shutdown => LeaseEvent::Shutdown,
                built = build_manager(client, &config.lease) => LeaseEvent::Built(built.map(Box::new)),
            },
            Some(m) => tokio::select! {
                () = &mut shutdown => LeaseEvent::Shutdown,
                changed = m.changed() => LeaseEvent::Changed(changed),
            },
        };
        let failed = match event {
            LeaseEvent::Shutdown => break,
            LeaseEvent::Built(Ok(m)) => {
                manager = Some(m);
                None
            }
            LeaseEvent::Built(Err(e)) => Some(chain(&e)),
            LeaseEvent::Changed(Ok(true)) => {
                info!(identity = %config.lease.identity, lease = %config.lease.name, "acquired the Lease; reconciling");
                metrics.leader.set(1);
                if running.is_none() {
                    running = Some(Running::start(context.clone(), config.concurrency));
                }
                backoff = Duration::from_secs(1);
                None
            }
            LeaseEvent::Changed(Ok(false)) => {
                warn!(identity = %config.lease.identity, "lost the Lease; stopping");
                metrics.leader.set(0);
                if let Some(r) = running.take() {
                    r.abort().await;
                }
                None
            }
            LeaseEvent::Changed(Err(e)) => Some(chain(&e)),
        };
        if let Some(error) = failed {
            // Leadership cannot be confirmed: stop acting, then start over
            // with a fresh manager (same identity: if the Lease is still
            // ours, it is ours again at once).
            warn!(%error, retry_in = ?backoff, "Lease not confirmed; not acting until it is");
            metrics.leader.set(0);
            if let Some(r) = running.take() {
                r.abort().await;
            }
            manager = None;
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
    info!("shutting down");
    if let Some(r) = running.take() {
        r.stop().await;
    }
    metrics.leader.set(0);
    if let Some(m) = manager {
        match m.release().await {
            Ok(()) => info!(lease = %config.lease.name, "released the Lease"),
            Err(e) => warn!(error = %chain(&e), "could not release the Lease; it expires on its own"),
        }
    }
}

/// Aborts a task when dropped: the tree watch stops with the controller, also when aborted.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run_controller(context: Arc<Context>, concurrency: u16, stopped: oneshot::Receiver<()>) {
    let _trees = context.trees.clone().map(|trees| {
        AbortOnDrop(tokio::spawn(tree_watch::run(
            context.client.clone(),
            trees,
            context.metrics.clone(),
        )))
    });
    let selector = context.plan.set.selector.to_label_selector();
    k8s::managed_controller(&context.client, &selector)
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(stopped.map(drop))
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok(_) => {}
                // A namespace deleted between trigger and reconcile: expected.
                Err(controller::Error::ObjectNotFound(obj)) => debug!(%obj, "gone before reconcile"),
                Err(e) => debug!(error = %chain(&e), "controller"),
            }
        })
        .await;
    info!("controller stopped");
}

/// When to look again: at the expiry instant (plus a margin), at most a day out.
fn requeue_at(next: Option<Expiry>, now: f64) -> Requeue {
    match next {
        None => Requeue::await_change(),
        Some(expiry) => {
            #[allow(clippy::cast_precision_loss)]
            let wait = (expiry.unix() as f64 - now).max(0.0);
            let wait = Duration::try_from_secs_f64(wait).unwrap_or(MAX_REQUEUE);
            Requeue::requeue((wait + EXPIRY_MARGIN).min(MAX_REQUEUE))
        }
    }
}

async fn reconcile(namespace: Arc<Namespace>, context: Arc<Context>) -> Result<Requeue, ReconcileError> {
    let _in_flight = InFlight::start(&context.metrics.in_flight);
    context.metrics.reconciles.inc();
    let name = namespace.name_any();
    let observed = observe_namespace(
        &context.client,
        (*namespace).clone(),
        &context.plan.set.selector,
        context.page_size,
    )
    .await?;
    let (now, now_f) = (system_clock(), system_clock_f64());
    // Nothing carries the selector any more (the labels were changed): not ours.
    let Some(observed) = observed.sets().first().copied() else {
        return Ok(Requeue::await_change());
    };
    let set = plan::plan_set(&observed, now, &context.plan);
    debug!(namespace = %name, action = set.action.name(), "reconcile");
    let outcome = context.executor.execute_set(&set).await;
    context.metrics.record(&set, &outcome, system_clock_f64());
    if let Outcome::Failed { errors, .. } = outcome {
        let failed = errors.len();
        if let Some(first) = errors.into_iter().next() {
            return Err(ReconcileError::Execute {
                namespace: name,
                failed,
                first,
            });
        }
    }
    Ok(requeue_at(set.action.next_look(), now_f))
}

fn error_policy(namespace: Arc<Namespace>, error: &ReconcileError, context: Arc<Context>) -> Requeue {
    context
        .metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels::new(error.kind()))
        .inc();
    warn!(namespace = %namespace.name_any(), error = %chain(error), retry_in = ?ERROR_REQUEUE, "reconcile failed");
    Requeue::requeue(ERROR_REQUEUE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_timing_is_checked() {
        let ok = |d| LeaseConfig::new("l".into(), "default".into(), "me".into(), Duration::from_secs(d));
        assert_eq!(ok(15).unwrap().grace_secs, 5);
        assert_eq!(ok(3).unwrap().grace_secs, 1);
        assert_eq!(ok(2).unwrap().grace_secs, 1);
        assert!(ok(1).is_err());
        assert!(ok(0).is_err());
        assert!(LeaseConfig::new("l".into(), "d".into(), "me".into(), Duration::from_millis(2500)).is_err());
        assert_eq!(
            LeaseConfig::new("l".into(), "d".into(), String::new(), Duration::from_secs(5)),
            Err(LeaseConfigError::Empty)
        );
    }

    #[test]
    fn requeue_lands_just_after_expiry_and_never_too_far() {
        let at = |expiry: i64, now: f64| requeue_at(Some(Expiry::from_unix(expiry)), now);
        assert_eq!(at(100, 97.5), Requeue::requeue(Duration::from_millis(2510)));
        assert_eq!(at(100, 150.0), Requeue::requeue(EXPIRY_MARGIN));
        assert_eq!(at(i64::MAX, 0.0), Requeue::requeue(MAX_REQUEUE));
        assert_eq!(requeue_at(None, 0.0), Requeue::await_change());
    }
}
