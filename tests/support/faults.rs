//! A fault-injecting TCP proxy (issue 15 item 4): put between a binary and
//! the API server (a kubeconfig whose `server` is the proxy, see
//! [`FaultProxy::kubeconfig`]), it forwards bytes untouched — TLS passes
//! through, the test API server's certificate covers 127.0.0.1 — and injects,
//! on command:
//!
//! - **latency** per direction: every chunk is delivered that long after it
//!   was read, chunks overlap (pure delay, not a throughput cap);
//! - **reset**: every open connection is closed with a TCP RST on both sides;
//! - **partition**, two kinds: [`Partition::Refuse`] resets every open
//!   connection and refuses (RST) new ones, like a host that is down;
//!   [`Partition::Blackhole`] stops moving bytes in both directions and holds
//!   new connections unconnected, like a network that drops packets (TCP
//!   delivers what was held once it heals, as a real network does after
//!   retransmission);
//! - **API server restart**: [`FaultProxy::restart`], a reset then a refusing
//!   partition for a few seconds;
//! - **a trigger**: reset and refuse once so many bytes went towards the
//!   client ([`FaultProxy::restart_after_bytes_down`]), to cut a paginated
//!   LIST after its first pages.
//!
//! The proxy runs on a thread and runtime of its own, so a test that blocks
//! its own runtime (a child process's `output()`) cannot stall it; controls
//! are plain methods. Dropped, it stops and closes everything. Its own tests
//! (a plain TCP echo through it) are the `proxy_*` tests of `tests/faults.rs`,
//! so they do not run again in every binary that includes this module.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// The kinds of partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partition {
    /// Open connections are reset, new ones refused (RST).
    Refuse,
    /// Nothing moves; new connections are accepted but held until healed.
    Blackhole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Open,
    Partitioned(Partition),
}

/// What the proxy saw, for a test's report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted and forwarded (or held).
    pub connections: u64,
    /// Connections refused with a reset.
    pub refused: u64,
    /// Open connections cut with a reset.
    pub reset: u64,
    /// Bytes towards the server and towards the client.
    pub bytes_up: u64,
    pub bytes_down: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    refused: AtomicU64,
    reset: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

struct Shared {
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Bumped to reset every open connection.
    resets: watch::Sender<u64>,
    latency_up_ms: AtomicU64,
    latency_down_ms: AtomicU64,
    /// Reset and refuse once `bytes_down` reaches this (`u64::MAX`: off).
    trigger_down: AtomicU64,
    counters: Counters,
}

impl Shared {
    fn latency(&self, up: bool) -> Duration {
        let ms = if up {
            &self.latency_up_ms
        } else {
            &self.latency_down_ms
        };
        Duration::from_millis(ms.load(Ordering::SeqCst))
    }

    fn reset_all(&self) {
        self.resets.send_modify(|generation| *generation += 1);
    }

    fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Wait while bytes may not move (a blackhole); `false` when the
    /// connection must be dropped instead (refused).
    async fn wait_open(&self) -> bool {
        let mut mode = self.mode.subscribe();
        loop {
            match *mode.borrow_and_update() {
                Mode::Open => return true,
                Mode::Partitioned(Partition::Refuse) => return false,
                Mode::Partitioned(Partition::Blackhole) => {}
            }
            if mode.changed().await.is_err() {
                return false;
            }
        }
    }

    fn count_down(&self, n: usize) {
        let total = self.counters.bytes_down.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        if total >= self.trigger_down.load(Ordering::SeqCst) {
            self.trigger_down.store(u64::MAX, Ordering::SeqCst);
            self.set_mode(Mode::Partitioned(Partition::Refuse));
            self.reset_all();
        }
    }
}

/// A running proxy to one upstream address.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Listen on a free loopback port and forward to `upstream`.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            mode: watch::Sender::new(Mode::Open),
            resets: watch::Sender::new(0),
            latency_up_ms: AtomicU64::new(0),
            latency_down_ms: AtomicU64::new(0),
            trigger_down: AtomicU64::new(u64::MAX),
            counters: Counters::default(),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).unwrap();
                    tokio::select! {
                        _ = stopped => {}
                        () = accept_loop(listener, serving) => {}
                    }
                });
                // Dropping the runtime drops every connection task.
            })
            .unwrap();
        FaultProxy {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// A proxy in front of the shared test cluster's API server.
    pub fn for_cluster() -> FaultProxy {
        let server: url::Url = super::cluster().server.parse().unwrap();
        let upstream = server.socket_addrs(|| None).unwrap()[0];
        FaultProxy::start(upstream)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:<port>`: the API server's URL through this proxy.
    pub fn server_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The shared cluster's admin kubeconfig with its server pointed at this
    /// proxy, written to a file that lives as long as the handle.
    pub fn kubeconfig(&self) -> tempfile::NamedTempFile {
        kubeconfig_via(&super::cluster().kubeconfig, &self.server_url())
    }

    /// Delay every chunk by `up` towards the server and `down` towards the client.
    pub fn set_latency(&self, up: Duration, down: Duration) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap();
        self.shared.latency_up_ms.store(ms(up), Ordering::SeqCst);
        self.shared.latency_down_ms.store(ms(down), Ordering::SeqCst);
    }

    /// Close every open connection with a reset; new ones are accepted.
    pub fn reset_all(&self) {
        self.shared.reset_all();
    }

    /// Start a partition of `kind` until [`Self::heal`].
    pub fn partition(&self, kind: Partition) {
        self.shared.set_mode(Mode::Partitioned(kind));
        if kind == Partition::Refuse {
            self.shared.reset_all();
        }
    }

    /// End a partition: bytes move again, new connections are forwarded.
    pub fn heal(&self) {
        self.shared.set_mode(Mode::Open);
    }

    /// A partition of `kind` for `duration`, healed by the proxy itself.
    pub fn partition_for(&self, kind: Partition, duration: Duration) {
        self.partition(kind);
        let shared = self.shared.clone();
        std::thread::spawn(move || {
            std::thread::sleep(duration);
            shared.set_mode(Mode::Open);
        });
    }

    /// The API server restarting: every connection reset, new ones refused
    /// for `down`, then accepted again.
    pub fn restart(&self, down: Duration) {
        self.partition_for(Partition::Refuse, down);
    }

    /// Once `bytes` more bytes went towards the client, reset everything and
    /// refuse new connections (until [`Self::heal`]).
    pub fn restart_after_bytes_down(&self, bytes: u64) {
        let now = self.shared.counters.bytes_down.load(Ordering::SeqCst);
        self.shared.trigger_down.store(now + bytes, Ordering::SeqCst);
    }

    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        Stats {
            connections: c.connections.load(Ordering::SeqCst),
            refused: c.refused.load(Ordering::SeqCst),
            reset: c.reset.load(Ordering::SeqCst),
            bytes_up: c.bytes_up.load(Ordering::SeqCst),
            bytes_down: c.bytes_down.load(Ordering::SeqCst),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A copy of the kubeconfig at `path` whose clusters all point at `server`.
pub fn kubeconfig_via(path: &Path, server: &str) -> tempfile::NamedTempFile {
    let text = std::fs::read_to_string(path).expect("read the kubeconfig");
    let mut config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("parse the kubeconfig");
    for cluster in config["clusters"].as_sequence_mut().expect("clusters") {
        cluster["cluster"]["server"] = serde_yaml_ng::Value::from(server);
    }
    super::temp_file(&serde_yaml_ng::to_string(&config).unwrap())
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if *shared.mode.borrow() == Mode::Partitioned(Partition::Refuse) {
            shared.counters.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.set_zero_linger();
            drop(client);
            continue;
        }
        shared.counters.connections.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(connection(client, shared.clone()));
    }
}

/// One forwarded connection, until either side closes, an error, or a reset.
async fn connection(mut client: TcpStream, shared: Arc<Shared>) {
    let mut resets = shared.resets.subscribe();
    resets.borrow_and_update();
    let _ = client.set_nodelay(true);
    // Held (blackhole) until open; refused if the partition turns to refusal.
    let upstream = tokio::select! {
        _ = resets.changed() => None,
        open = shared.wait_open() => if open { TcpStream::connect(shared.upstream).await.ok() } else { None },
    };
    let Some(mut upstream) = upstream else {
        shared.counters.reset.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_zero_linger();
        return;
    };
    let _ = upstream.set_nodelay(true);
    let reset = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = upstream.split();
        let up = pump(client_read, server_write, true, &shared);
        let down = pump(server_read, client_write, false, &shared);
        tokio::select! {
            _ = resets.changed() => true,
            done = async { tokio::try_join!(up, down) } => done.is_err(),
        }
    };
    if reset {
        shared.counters.reset.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_zero_linger();
        let _ = upstream.set_zero_linger();
    }
}

/// Bytes one way: read as they come, deliver each chunk `latency` after it
/// was read, never while blackholed. `Err` ends the connection with a reset.
async fn pump(
    mut from: tokio::net::tcp::ReadHalf<'_>,
    mut to: tokio::net::tcp::WriteHalf<'_>,
    up: bool,
    shared: &Shared,
) -> Result<(), ()> {
    let (queue, mut queued) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if !shared.wait_open().await {
                return Err(());
            }
            let n = from.read(&mut buf).await.map_err(drop)?;
            if n == 0 {
                return Ok(());
            }
            if queue.send((Instant::now(), buf[..n].to_vec())).is_err() {
                return Err(());
            }
        }
    };
    let write = async move {
        while let Some((at, chunk)) = queued.recv().await {
            tokio::time::sleep_until(at + shared.latency(up)).await;
            if !shared.wait_open().await {
                return Err(());
            }
            // Counted before the write: whoever reads them sees them counted.
            if up {
                shared
                    .counters
                    .bytes_up
                    .fetch_add(chunk.len() as u64, Ordering::SeqCst);
            } else {
                shared.count_down(chunk.len());
            }
            to.write_all(&chunk).await.map_err(drop)?;
        }
        // The other side sent EOF: pass it on (half-close).
        to.shutdown().await.map_err(drop)
    };
    tokio::try_join!(read, write).map(drop)
}
