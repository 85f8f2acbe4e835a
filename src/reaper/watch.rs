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
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::channel::oneshot;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::runtime::controller::{self, Action as Requeue};
use kube::{Client, ResourceExt};
use kube_lease_manager::LeaseManager;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::brake::{Brake, BrakeConfig, Decision};
use super::execute::{ExecuteError, Executor, Outcome, REPORTING_CONTROLLER};
use super::metrics::{self, InFlight, Metrics};
use super::notice::Notifier;
use super::observation::ObservedNamespace;
use super::plan::{self, PlanConfig};
use super::tree_watch::{self, TreeWatch};
use super::webhook::{WebhookSender, Webhooks};
use super::{ReaperError, check_clock, observe_namespace};
use crate::clock::{Clock, system_clock, system_clock_f64};
use crate::k8s;
use crate::reload::{Live, Watched};
use crate::rules::notice::NoticeLead;
use crate::rules::params::Expiry;
use crate::telemetry::{ErrorLabels, ReloadLabels, chain};

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
    /// At most so many deletions per window (see [`super::brake`]).
    pub brake: BrakeConfig,
}

/// Reason of the Warning Event written when the deletion brake engages.
pub const DELETIONS_HELD_REASON: &str = "DeletionsHeld";

#[derive(Debug, Error)]
pub enum WatchError {
    #[error("serve /healthz and /metrics")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    RoleRules(#[from] crate::reload::ReloadError),
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

impl Context {
    /// The plan configuration with the role rules as they are now.
    fn plan_config(&self) -> std::borrow::Cow<'_, PlanConfig> {
        match &self.role_rules {
            None => std::borrow::Cow::Borrowed(&self.plan),
            Some(rules) => {
                let mut plan = self.plan.clone();
                plan.set.role_rules = Some(rules.get().as_ref().clone());
                std::borrow::Cow::Owned(plan)
            }
        }
    }
}

struct Context {
    client: Client,
    trees: Option<TreeWatch>,
    pool: Option<super::pool::PoolWatch>,
    executor: Executor,
    /// Cascades tell it of the children they delete (the executor has its own clone).
    webhook: Option<WebhookSender>,
    plan: PlanConfig,
    /// `--role-rules-file` as it is now (watch mode follows changes).
    role_rules: Option<Live<Vec<PolicyRule>>>,
    page_size: u32,
    metrics: Arc<Metrics>,
    brake: Brake,
    recorder: k8s::EventRecorder,
    /// `--notify-before`: ExpiringSoon notices (issue 14).
    notifier: Option<Notifier>,
    /// Why deletions are refused now because the clock cannot be trusted,
    /// and when the clock is compared again.
    clock_refusal: Arc<RwLock<Option<ClockRefusal>>>,
    /// The clock check, compared again whenever the Lease is taken.
    clock_check: Option<ClockCheck>,
}

/// How often watch mode compares its clock with the API server's, and when
/// a deletion refused for it is looked at again.
const CLOCK_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// How soon the clock is compared again when it could not be (the API server
/// unreachable): deletions wait for it, so a partition that heals must not
/// leave them refused for a whole [`CLOCK_CHECK_INTERVAL`] (issue 15).
const CLOCK_RECHECK_UNMEASURED: Duration = Duration::from_millis(500);

/// Deletions refused by the clock check: why, and when it looks again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ClockRefusal {
    pub(super) reason: String,
    pub(super) recheck: Duration,
}

/// Most time between two attempts to confirm the Lease after a failure: a
/// replica that lost touch with the API server acts again within this of its
/// return, so what expired during a partition is deleted within a second of
/// healing (issue 15). client-go's leader election retries every 2 s, without
/// backoff; two GETs of a Lease a second are nothing to an API server.
const LEASE_RETRY_MAX: Duration = Duration::from_millis(500);

/// The first retry after a failure to confirm the Lease; doubled up to
/// [`LEASE_RETRY_MAX`].
const LEASE_RETRY_MIN: Duration = Duration::from_millis(250);

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
    watch_with(
        client,
        config,
        WatchOptions {
            trees,
            ..WatchOptions::default()
        },
        listener,
        shutdown,
    )
    .await
}

/// What a watch does beyond reconciling managed sets.
#[derive(Default)]
pub struct WatchOptions {
    /// Tree labels, cascade and propagation.
    pub trees: Option<TreeWatch>,
    /// Compare the clock with the API server's; refuse deletions beyond the bound.
    pub clock: Option<ClockCheck>,
    /// `--notify-before`: an `ExpiringSoon` notice this long before each expiry.
    pub notify_before: Option<NoticeLead>,
    /// `--notify-webhook-config`: `expiring`, `expired` and `deleted` notices to webhooks.
    pub webhook: Option<Arc<Webhooks>>,
    /// Warm pools (issue 16), refilled periodically while leading.
    pub pool: Option<super::pool::PoolWatch>,
    /// `--role-rules-file` reloaded on change, re-read every [`RULES_RELOAD_INTERVAL`]
    /// at the latest: a long-running watch must not repair Roles back to rules an
    /// administrator has replaced (the provisioner already makes new sets with the new ones).
    pub role_rules: Option<Watched<Vec<PolicyRule>>>,
}

/// How often watch mode re-reads `--role-rules-file` when no change event came.
pub const RULES_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// [`watch_with_trees`], plus an `ExpiringSoon` notice `lead` before each
/// expiry ([`super::notice`]) when `notify_before` is given.
pub async fn watch_notifying(
    client: Client,
    config: WatchConfig,
    trees: Option<TreeWatch>,
    notify_before: Option<NoticeLead>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WatchError> {
    let options = WatchOptions {
        trees,
        notify_before,
        ..WatchOptions::default()
    };
    watch_with(client, config, options, listener, shutdown).await
}

/// The clock check of watch mode: the bound, and the clock compared (the
/// system clock; tests pass a skewed one).
#[derive(Debug, Clone, Copy)]
pub struct ClockCheck {
    pub max_skew: Duration,
    pub clock: Clock,
}

/// [`watch_with_trees`], comparing the clock with the API server's every
/// [`CLOCK_CHECK_INTERVAL`] when `clock` is set: beyond its bound no
/// namespace is deleted (repairs go on) until the clock is back within it.
pub async fn watch_guarded(
    client: Client,
    config: WatchConfig,
    trees: Option<TreeWatch>,
    clock: Option<ClockCheck>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WatchError> {
    let options = WatchOptions {
        trees,
        clock,
        ..WatchOptions::default()
    };
    watch_with(client, config, options, listener, shutdown).await
}

/// Watch mode with every option ([`WatchOptions`]).
pub async fn watch_with(
    client: Client,
    config: WatchConfig,
    options: WatchOptions,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WatchError> {
    let WatchOptions {
        trees,
        clock,
        notify_before,
        webhook,
        pool,
        role_rules,
    } = options;
    let metrics = Arc::new(Metrics::default());
    let role_rules = match role_rules {
        Some(watched) => {
            let reloads = metrics.reloads.clone();
            let report: crate::reload::Report = Arc::new(move |file, outcome| {
                reloads
                    .get_or_create(&ReloadLabels {
                        file: file.to_owned(),
                        outcome: outcome.as_str().to_owned(),
                    })
                    .inc();
            });
            Some(watched.start(RULES_RELOAD_INTERVAL, report)?)
        }
        None => None,
    };
    let webhook = webhook.map(|w| WebhookSender::start(w, metrics.webhook.clone()));
    let clock_refusal = Arc::new(RwLock::new(None));
    let _clock_checks = match clock {
        Some(check) => {
            // The first answer before any reconcile: no deletion on an unchecked clock.
            check_clock_once(&client, check, &metrics, &clock_refusal, None).await;
            Some(AbortOnDrop(tokio::spawn(check_clock_every(
                client.clone(),
                check,
                metrics.clone(),
                clock_refusal.clone(),
            ))))
        }
        None => None,
    };
    let addr = listener.local_addr().ok();
    let (stop_http, http_stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, metrics::router(metrics.clone()))
            .with_graceful_shutdown(http_stopped.map(drop))
            .into_future(),
    );
    info!(addr = ?addr.map(|a: SocketAddr| a.to_string()), identity = %config.lease.identity, "watch mode: serving /healthz and /metrics");
    let context = Arc::new(Context {
        executor: Executor::new(client.clone(), &config.lease.identity).with_webhook(webhook.clone()),
        webhook: webhook.clone(),
        client: client.clone(),
        trees,
        pool,
        plan: config.plan.clone(),
        role_rules,
        page_size: config.page_size,
        brake: Brake::new(config.brake, metrics.brake.clone()),
        recorder: k8s::EventRecorder::new(client.clone(), REPORTING_CONTROLLER, &config.lease.identity),
        notifier: notify_before.map(|lead| {
            Notifier::new(
                client.clone(),
                &config.lease.identity,
                lead,
                metrics.notices.clone(),
            )
            .with_webhook(webhook.clone())
        }),
        metrics: metrics.clone(),
        clock_refusal,
        clock_check: clock,
    });
    lead(&client, &config, context, shutdown).await;
    if let Some(webhook) = &webhook {
        // Notices of the last reconciles, within the drain bound.
        if !webhook.drain(webhook.drain_timeout()).await {
            warn!(
                pending = webhook.tally().pending,
                "webhook notices still queued at shutdown; dropped"
            );
        }
    }
    let _ = stop_http.send(());
    match server.await {
        Ok(served) => served.map_err(WatchError::Serve),
        Err(join) => {
            warn!(error = %join, "the /metrics server task ended abnormally");
            Ok(())
        }
    }
}

/// Compare the clock now; update the metrics and the refusal, and log when
/// the verdict changes (`last`: the previous refusal, `None` at start).
async fn check_clock_once(
    client: &Client,
    check: ClockCheck,
    metrics: &Metrics,
    refusal: &RwLock<Option<ClockRefusal>>,
    last: Option<&Option<ClockRefusal>>,
) -> Option<ClockRefusal> {
    let (skew, refused) = check_clock(client, check.clock, check.max_skew).await;
    if let Some(skew) = skew {
        metrics.clock.skew_seconds.set(skew.ahead_secs);
    }
    let now = refused.map(|r| ClockRefusal {
        reason: r.to_string(),
        recheck: if skew.is_some() {
            CLOCK_CHECK_INTERVAL
        } else {
            CLOCK_RECHECK_UNMEASURED
        },
    });
    metrics.clock.untrusted.set(i64::from(now.is_some()));
    if last != Some(&now) {
        match now.as_ref().map(|r| &r.reason) {
            Some(reason) => error!(
                skew_secs = skew.map(|s| s.ahead_secs),
                "deletions refused until the clock is trusted again: {reason}"
            ),
            None => info!(
                skew_secs = skew.map(|s| s.ahead_secs),
                "clock within --max-clock-skew of the API server's; deletions allowed"
            ),
        }
    }
    refusal
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .clone_from(&now);
    now
}

/// Compare the clock now if deletions wait for it (leading again after the API server was
/// unreachable: no need to wait for the next periodic check).
async fn recheck_clock(client: &Client, context: &Context) {
    let Some(check) = context.clock_check else {
        return;
    };
    let last = context
        .clock_refusal
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if last.is_some() {
        check_clock_once(
            client,
            check,
            &context.metrics,
            &context.clock_refusal,
            Some(&last),
        )
        .await;
    }
}

async fn check_clock_every(
    client: Client,
    check: ClockCheck,
    metrics: Arc<Metrics>,
    refusal: Arc<RwLock<Option<ClockRefusal>>>,
) {
    let mut last = refusal.read().unwrap_or_else(PoisonError::into_inner).clone();
    loop {
        let wait = last.as_ref().map_or(CLOCK_CHECK_INTERVAL, |r| r.recheck);
        tokio::time::sleep(wait).await;
        last = check_clock_once(&client, check, &metrics, &refusal, Some(&last)).await;
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
    let mut backoff = LEASE_RETRY_MIN;
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
                    recheck_clock(client, &context).await;
                    running = Some(Running::start(context.clone(), config.concurrency));
                }
                backoff = LEASE_RETRY_MIN;
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
            backoff = (backoff * 2).min(LEASE_RETRY_MAX);
        }
    }
    info!("shutting down");
    if let Some(r) = running.take() {
        r.stop().await;
    }
    metrics.leader.set(0);
    if manager.is_some() {
        let lease = &config.lease;
        match k8s::release_lease(client, &lease.name, &lease.namespace, &lease.identity).await {
            Ok(k8s::Released::Freed) => info!(lease = %lease.name, "released the Lease"),
            Ok(k8s::Released::NotHeld(holder)) => {
                info!(lease = %lease.name, ?holder, "the Lease is not ours; left as it is");
            }
            Ok(k8s::Released::Changed) => {
                info!(lease = %lease.name, "the Lease changed while releasing it; left as it is");
            }
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
    let _book = context.metrics.notices.expiries.clear_on_drop();
    let _trees = context.trees.clone().map(|trees| {
        AbortOnDrop(tokio::spawn(tree_watch::run(
            context.client.clone(),
            trees,
            context.metrics.clone(),
            context.clock_refusal.clone(),
            context.webhook.clone(),
        )))
    });
    // Issue 12: allocations of gone children and leaked reservations return while leading.
    let _quota = AbortOnDrop(tokio::spawn(super::quota::rebuild_periodically(
        context.client.clone(),
        context.plan.set.selector.clone(),
        context.page_size,
        context.metrics.clone(),
    )));
    let _pool = context.pool.clone().map(|pool| {
        AbortOnDrop(tokio::spawn(super::pool::refill_periodically(
            context.client.clone(),
            pool,
            context.metrics.clone(),
        )))
    });
    let selector = context.plan.set.selector.to_label_selector();
    k8s::managed_controller(&context.client, &selector)
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(stopped.map(drop))
        .run(reconcile, error_policy, context.clone())
        .for_each(|result| async {
            match result {
                Ok(_) => {}
                // A namespace deleted between trigger and reconcile: expected.
                Err(controller::Error::ObjectNotFound(obj)) => {
                    context.metrics.notices.expiries.forget(&obj.name);
                    debug!(%obj, "gone before reconcile");
                }
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
    let set = plan::plan_set(&observed, now, &context.plan_config());
    debug!(namespace = %name, action = set.action.name(), "reconcile");
    context
        .metrics
        .notices
        .expiries
        .track(&name, observed.namespace, &set.action);
    let notice_at = notice_look(&context, observed.namespace, now).await;
    if let plan::Action::Delete { .. } = set.action {
        let refused = context
            .clock_refusal
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(ClockRefusal { reason, recheck }) = refused {
            context.metrics.clock.refusals.inc();
            warn!(namespace = %name, retry_in = ?recheck, "deletion refused: {reason}");
            return Ok(Requeue::requeue(recheck + EXPIRY_MARGIN));
        }
    }
    if let Some(requeue) = apply_brake(&context, &set, now_f).await {
        return Ok(requeue);
    }
    let parent = observed
        .namespace
        .and_then(|ns| ns.labels.get(crate::rules::hierarchy::keys::PARENT_LABEL));
    let outcome = context.executor.execute_set_under(&set, parent).await;
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
    Ok(requeue_at(
        set.action.next_look().into_iter().chain(notice_at).min(),
        now_f,
    ))
}

/// Give `namespace` its ExpiringSoon notice if owed; when the window is still
/// ahead, the instant it opens (the next look). A failure is logged and
/// counted, and retried a little later.
async fn notice_look(context: &Context, namespace: Option<&ObservedNamespace>, now: i64) -> Option<Expiry> {
    let (notifier, ns) = (context.notifier.as_ref()?, namespace?);
    match notifier.consider(ns, now).await {
        Ok(considered) => considered.next_look(),
        Err(e) => {
            crate::log_error!(warn, &e, namespace = %ns.name, retry_in = ?ERROR_REQUEUE, "ExpiringSoon notice failed");
            Some(Expiry::from_unix(now.saturating_add(
                i64::try_from(ERROR_REQUEUE.as_secs()).unwrap_or(i64::MAX),
            )))
        }
    }
}

/// Ask the brake before a deletion: `Some(requeue)` when it holds this one.
/// Repairs never ask: only deletions are bounded.
async fn apply_brake(context: &Context, set: &plan::SetPlan, now: f64) -> Option<Requeue> {
    let plan::Action::Delete { expiry, uid, .. } = &set.action else {
        context.brake.forget(&set.namespace);
        return None;
    };
    let Decision::Hold {
        until,
        recent,
        engaged,
    } = context.brake.request(&set.namespace, expiry.unix(), now)
    else {
        return None;
    };
    let config = context.brake.config();
    let wait = Duration::try_from_secs_f64((until - now).max(0.0)).unwrap_or(MAX_REQUEUE);
    if engaged {
        let why = format!(
            "{recent} namespaces deleted in the last {window}, the most --watch-max-deletions allows per \
             --watch-deletion-window; holding expired namespaces (repairs go on) until the window passes, \
             oldest expiry first, or until restarted with --allow-mass-deletion",
            window = humantime::format_duration(config.window),
        );
        warn!(namespace = %set.namespace, max_deletions = config.max_deletions, window = ?config.window, resume_in = ?wait, "deletion brake engaged: {why}");
        let note = format!("Deletion of expired namespace {} held: {why}", set.namespace);
        if let Err(e) = context
            .recorder
            .warn_on_namespace(&set.namespace, uid, DELETIONS_HELD_REASON, "Hold", note)
            .await
        {
            crate::log_error!(warn, &e, "could not record the DeletionsHeld Event");
        }
    } else {
        debug!(namespace = %set.namespace, resume_in = ?wait, "deletion held by the brake");
    }
    Some(Requeue::requeue(wait + EXPIRY_MARGIN))
}

fn error_policy(namespace: Arc<Namespace>, error: &ReconcileError, context: Arc<Context>) -> Requeue {
    context
        .metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels::new(error.kind()))
        .inc();
    crate::log_error!(warn, error, reconciled = %namespace.name_any(), retry_in = ?ERROR_REQUEUE, "reconcile failed");
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
