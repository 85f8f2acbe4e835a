//! Notice webhooks (issue 14): sending the CloudEvents that
//! [`crate::rules::webhook`] builds to the endpoints of the administrator's
//! `--notify-webhook-config` file, signed with each endpoint's secret.
//!
//! [`Webhooks::load`] reads the file and the secret files at start (a bad one
//! stops the reaper with a message naming what to fix). [`WebhookSender::start`]
//! spawns the delivery task; [`WebhookSender::notify`] only puts a notice in
//! a bounded queue and returns at once, so a sweep or a deletion never waits
//! on a receiver: a full queue drops the notice (metric + log line). The task
//! delivers a few at a time, each request bounded by a timeout, retried with
//! exponential backoff on 5xx, 429 and no answer, never on another 4xx.
//! `--once` waits a bounded time for the queue to empty ([`WebhookSender::drain`]).
//!
//! HTTP: hyper-util's client with rustls (ring) and the system roots, the
//! stack kube already brings. Secrets are never logged (their type hides them).
//! Does network and file I/O; no Kubernetes I/O.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use secrecy::{ExposeSecret, SecretSlice};
use thiserror::Error;
use tokio::sync::{Notify, mpsc};
use tracing::{debug, info, warn};
use url::Url;

use crate::rules::webhook::{
    self, CONTENT_TYPE, Delivery, EventKind, NamespaceEvent, SIGNATURE_HEADER, TIMESTAMP_HEADER, Verdict,
    WebhookConfig, WebhookConfigError,
};

/// Most of an answer read (then dropped): receivers answer with little or nothing.
const MAX_ANSWER_BYTES: usize = 64 << 10;

#[derive(Debug, Error)]
pub enum WebhookLoadError {
    #[error("read --notify-webhook-config {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--notify-webhook-config {path}")]
    Invalid {
        path: String,
        #[source]
        source: WebhookConfigError,
    },
    #[error("--notify-webhook-config {config}: {who}: read secretFile {path}")]
    ReadSecret {
        config: String,
        who: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "--notify-webhook-config {config}: {who}: secretFile {path} is empty; put the HMAC secret in it (e.g. 32 random bytes, hex)"
    )]
    EmptySecret {
        config: String,
        who: String,
        path: String,
    },
    #[error("--notify-webhook-config: build the TLS client: {0}")]
    Tls(String),
}

/// One receiver with its secret.
struct Target {
    url: Url,
    secret: Arc<SecretSlice<u8>>,
}

/// The loaded configuration: endpoints with their secrets, and the HTTP client.
pub struct Webhooks {
    config: WebhookConfig,
    /// Secrets by secret file (an endpoint's file is read once).
    secrets: BTreeMap<PathBuf, Arc<SecretSlice<u8>>>,
    http: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("config", &self.config)
            .field("secrets", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// Read and validate the file at `path` and every secret file it names.
    pub fn load(path: &Path) -> Result<Self, WebhookLoadError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| WebhookLoadError::Read {
            path: shown.clone(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let config = webhook::parse_config(&text, base).map_err(|source| WebhookLoadError::Invalid {
            path: shown.clone(),
            source,
        })?;
        let mut secrets = BTreeMap::new();
        for (who, endpoint) in config.endpoints() {
            if secrets.contains_key(&endpoint.secret_file) {
                continue;
            }
            let file = endpoint.secret_file.display().to_string();
            let bytes =
                std::fs::read(&endpoint.secret_file).map_err(|source| WebhookLoadError::ReadSecret {
                    config: shown.clone(),
                    who: who.clone(),
                    path: file.clone(),
                    source,
                })?;
            let secret = bytes.trim_ascii();
            if secret.is_empty() {
                return Err(WebhookLoadError::EmptySecret {
                    config: shown,
                    who,
                    path: file,
                });
            }
            secrets.insert(
                endpoint.secret_file.clone(),
                Arc::new(SecretSlice::from(secret.to_vec())),
            );
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config()?)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            config,
            secrets,
            http: HyperClient::builder(TokioExecutor::new()).build(connector),
        })
    }

    pub fn delivery(&self) -> Delivery {
        self.config.delivery
    }

    /// How many endpoints, for the start-up line.
    pub fn endpoint_count(&self) -> usize {
        self.config.endpoints().count()
    }

    fn target_for(&self, tenant: Option<&str>) -> Option<Target> {
        let endpoint = self.config.endpoint_for(tenant)?;
        let secret = self.secrets.get(&endpoint.secret_file)?;
        Some(Target {
            url: endpoint.url.clone(),
            secret: secret.clone(),
        })
    }
}

fn tls_config() -> Result<rustls::ClientConfig, WebhookLoadError> {
    let mut roots = rustls::RootCertStore::empty();
    // Without a system trust store only http test receivers are reachable; not an error here.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WebhookLoadError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event: String,
}

/// Notices per event type: delivered, given up on, dropped on a full queue.
#[derive(Debug, Clone, Default)]
pub struct WebhookMetrics {
    pub sent: Family<EventLabels, Counter>,
    pub failed: Family<EventLabels, Counter>,
    pub dropped: Family<EventLabels, Counter>,
}

impl WebhookMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "webhook_notices_sent",
            "Webhook notices delivered (a 2xx answer), per event type",
            self.sent.clone(),
        );
        registry.register(
            "webhook_notices_failed",
            "Webhook notices given up on (a 4xx answer, or every attempt failed), per event type",
            self.failed.clone(),
        );
        registry.register(
            "webhook_notices_dropped",
            "Webhook notices dropped because the delivery queue was full, per event type",
            self.dropped.clone(),
        );
        for kind in EventKind::ALL {
            let labels = labels(kind);
            drop(self.sent.get_or_create(&labels));
            drop(self.failed.get_or_create(&labels));
            drop(self.dropped.get_or_create(&labels));
        }
    }
}

fn labels(kind: EventKind) -> EventLabels {
    EventLabels {
        event: kind.as_str().to_owned(),
    }
}

/// What the webhooks of a `--once` run came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WebhookTally {
    pub sent: usize,
    pub failed: usize,
    pub dropped: usize,
    /// Still queued or in flight (the drain ran out of time).
    pub pending: usize,
}

struct Job {
    kind: EventKind,
    namespace: String,
    target: Target,
    body: Bytes,
}

/// What the delivery task and the senders share.
struct Shared {
    webhooks: Arc<Webhooks>,
    metrics: WebhookMetrics,
    pending: AtomicUsize,
    sent: AtomicUsize,
    failed: AtomicUsize,
    dropped: AtomicUsize,
    idle: Notify,
}

impl Shared {
    fn finished(&self) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
        self.idle.notify_waiters();
    }
}

/// Puts notices on the delivery queue. Cheap to clone.
#[derive(Clone)]
pub struct WebhookSender {
    queue: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

impl WebhookSender {
    /// Spawn the delivery task (it ends when every sender is dropped).
    pub fn start(webhooks: Arc<Webhooks>, metrics: WebhookMetrics) -> Self {
        let delivery = webhooks.delivery();
        let (queue, jobs) = mpsc::channel(delivery.queue);
        let shared = Arc::new(Shared {
            webhooks,
            metrics,
            pending: AtomicUsize::new(0),
            sent: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            idle: Notify::new(),
        });
        let worker = shared.clone();
        tokio::spawn(async move {
            let jobs = futures::stream::unfold(jobs, |mut jobs| async {
                jobs.recv().await.map(|job| (job, jobs))
            });
            jobs.for_each_concurrent(delivery.concurrency, |job| {
                let shared = worker.clone();
                async move {
                    deliver(&shared, job).await;
                    shared.finished();
                }
            })
            .await;
        });
        Self { queue, shared }
    }

    /// Queue `event` (happening at `now`) for its tenant's endpoint, if it
    /// has one. Never waits: a full queue drops it.
    pub fn notify(&self, event: &NamespaceEvent, now: i64) {
        let Some(target) = self.shared.webhooks.target_for(event.tenant.as_deref()) else {
            debug!(namespace = %event.namespace, tenant = event.tenant.as_deref(), "no webhook for this tenant");
            return;
        };
        let body = match event.body(now) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                warn!(namespace = %event.namespace, error = %e, "could not encode the webhook notice");
                return;
            }
        };
        let job = Job {
            kind: event.kind,
            namespace: event.namespace.clone(),
            target,
            body,
        };
        self.shared.pending.fetch_add(1, Ordering::SeqCst);
        if let Err(refused) = self.queue.try_send(job) {
            self.shared.finished();
            let kind = event.kind.as_str();
            self.shared
                .metrics
                .dropped
                .get_or_create(&labels(event.kind))
                .inc();
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            let why = match refused {
                mpsc::error::TrySendError::Full(_) => "the delivery queue is full (delivery.queue)",
                mpsc::error::TrySendError::Closed(_) => "the delivery task has stopped",
            };
            warn!(namespace = %event.namespace, event = kind, "webhook notice dropped: {why}");
        }
    }

    /// Wait until every queued notice is delivered or given up on, at most
    /// `within`; whether the queue emptied.
    pub async fn drain(&self, within: Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.shared.idle.notified();
                if self.shared.pending.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(within, wait).await.is_ok()
    }

    pub fn tally(&self) -> WebhookTally {
        WebhookTally {
            sent: self.shared.sent.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            pending: self.shared.pending.load(Ordering::SeqCst),
        }
    }

    pub fn drain_timeout(&self) -> Duration {
        self.shared.webhooks.delivery().drain_timeout
    }
}

/// One notice: attempts until delivered, refused, or the bound.
async fn deliver(shared: &Shared, job: Job) {
    let delivery = shared.webhooks.delivery();
    let policy = delivery.retry;
    let event = job.kind.as_str();
    let mut attempt = 1;
    loop {
        let (status, reason) = match send(&shared.webhooks.http, &job, delivery.timeout).await {
            Ok(status) => (Some(status), format!("HTTP {status}")),
            Err(reason) => (None, reason),
        };
        match webhook::verdict(status) {
            Verdict::Delivered => {
                shared.metrics.sent.get_or_create(&labels(job.kind)).inc();
                shared.sent.fetch_add(1, Ordering::Relaxed);
                info!(namespace = %job.namespace, event, attempt, "webhook notice delivered");
                return;
            }
            Verdict::Retry if attempt < policy.attempts => {
                let wait = policy.backoff(attempt);
                debug!(namespace = %job.namespace, event, attempt, %reason, retry_in = ?wait, "webhook notice not delivered; retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            verdict => {
                shared.metrics.failed.get_or_create(&labels(job.kind)).inc();
                shared.failed.fetch_add(1, Ordering::Relaxed);
                let why = if verdict == Verdict::GiveUp {
                    "the receiver refused it (not retried)"
                } else {
                    "every attempt failed"
                };
                warn!(
                    namespace = %job.namespace,
                    event,
                    attempts = attempt,
                    %reason,
                    host = job.target.url.host_str().unwrap_or_default(),
                    "webhook notice given up: {why}"
                );
                return;
            }
        }
    }
}

/// One POST: the status, or why there was none.
async fn send(
    http: &HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    job: &Job,
    timeout: Duration,
) -> Result<u16, String> {
    let timestamp = crate::clock::system_clock();
    let signature =
        webhook::sign(job.target.secret.expose_secret(), timestamp, &job.body).map_err(|e| e.to_string())?;
    let request = Request::builder()
        .method(Method::POST)
        .uri(job.target.url.as_str())
        .header(header::CONTENT_TYPE, CONTENT_TYPE)
        .header(
            header::USER_AGENT,
            concat!("namespace-provisioner-reaper/", env!("CARGO_PKG_VERSION")),
        )
        .header(TIMESTAMP_HEADER, HeaderValue::from(timestamp))
        .header(SIGNATURE_HEADER, signature)
        .body(Full::new(job.body.clone()))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let exchange = async {
        let response = http.request(request).await.map_err(|e| innermost(&e))?;
        let status = response.status().as_u16();
        // Read (a bounded part of) the answer so the connection can be reused.
        let _ = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await;
        Ok(status)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {}", humantime::format_duration(timeout)))?
}

/// The innermost cause of a connection failure (hyper-util wraps it).
fn innermost(error: &hyper_util::client::legacy::Error) -> String {
    let mut source: &dyn std::error::Error = error;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::params::Expiry;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn secrets_are_read_and_checked_at_load() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "alice.key", "s3cret\n");
        write(dir.path(), "empty.key", "\n");
        let config = write(
            dir.path(),
            "ok.yaml",
            "tenants:\n  alice:\n    url: https://a.example.com\n    secretFile: alice.key\n",
        );
        let webhooks = Webhooks::load(&config).unwrap();
        let target = webhooks.target_for(Some("alice")).unwrap();
        assert_eq!(target.secret.expose_secret(), b"s3cret");
        assert!(webhooks.target_for(Some("bob")).is_none());
        assert!(!format!("{webhooks:?}").contains("s3cret"));

        let empty = write(
            dir.path(),
            "empty.yaml",
            "tenants:\n  alice:\n    url: https://a.example.com\n    secretFile: empty.key\n",
        );
        let err = crate::telemetry::chain(&Webhooks::load(&empty).unwrap_err());
        assert!(
            err.contains("tenant alice: secretFile") && err.contains("is empty"),
            "{err}"
        );
        let missing = write(
            dir.path(),
            "missing.yaml",
            "tenants:\n  alice:\n    url: https://a.example.com\n    secretFile: nope.key\n",
        );
        let err = crate::telemetry::chain(&Webhooks::load(&missing).unwrap_err());
        assert!(
            err.contains("read secretFile") && err.contains("nope.key"),
            "{err}"
        );
        let err = crate::telemetry::chain(&Webhooks::load(&dir.path().join("absent.yaml")).unwrap_err());
        assert!(err.contains("read --notify-webhook-config"), "{err}");
    }

    #[tokio::test]
    async fn a_full_queue_drops_without_waiting_and_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "k", "s");
        // A port nobody listens on, one attempt, a queue of one.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = write(
            dir.path(),
            "c.yaml",
            &format!(
                "allowInsecureHttp: true\ndefault:\n  url: http://127.0.0.1:{port}/\n  secretFile: k\n\
                 delivery:\n  attempts: 1\n  queue: 1\n  concurrency: 1\n"
            ),
        );
        let metrics = WebhookMetrics::default();
        let sender = WebhookSender::start(Arc::new(Webhooks::load(&config).unwrap()), metrics.clone());
        let event = NamespaceEvent {
            kind: EventKind::Deleted,
            namespace: "np-a".to_owned(),
            uid: "u".to_owned(),
            tenant: None,
            parent: None,
            expiry: Expiry::from_unix(1),
        };
        for _ in 0..50 {
            sender.notify(&event, 1);
        }
        assert!(sender.drain(Duration::from_secs(20)).await);
        let tally = sender.tally();
        assert!(tally.dropped >= 40, "{tally:?}");
        assert_eq!(tally.sent, 0);
        assert_eq!(tally.failed + tally.dropped, 50, "{tally:?}");
        assert_eq!(tally.pending, 0);
        let dropped = metrics.dropped.get_or_create(&labels(EventKind::Deleted)).get();
        assert_eq!(usize::try_from(dropped).unwrap(), tally.dropped);
    }
}
