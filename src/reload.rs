//! Configuration files that change while the process runs (a mounted Secret or
//! ConfigMap: tenant tokens, the kubeconfig CA, role rules, the TLS certificate):
//! read once at start, then re-read on a file event and every interval, and
//! swapped in whole. Reads files; no Kubernetes I/O.
//!
//! Kubernetes updates a mounted volume by an atomic symlink swap (`..data` ->
//! `..<timestamp>`): the file's own inode never changes, so the watch is on
//! the file's directory, and a periodic re-read covers what a watch can miss
//! (an exhausted inotify limit, a network file system). A file is parsed only
//! when its bytes changed (SHA-256), so a steady file costs one read per
//! interval and logs nothing. A file that fails to read or parse keeps the
//! last good value, is logged once per distinct content (the error, never the
//! content: a token file's line may be a token) and counted.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use crate::rules::auth::digest;
use crate::telemetry::chain;

/// The current value of a reloaded file; cheap to clone, always the last good
/// value (a reader never sees a half-swapped one).
pub struct Live<T>(watch::Receiver<Arc<T>>);

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: fmt::Debug> fmt::Debug for Live<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Live").field(&*self.get()).finish()
    }
}

impl<T> Live<T> {
    /// A value that never changes (no file behind it).
    pub fn fixed(value: T) -> Self {
        let (_, rx) = watch::channel(Arc::new(value));
        Self(rx)
    }

    /// The value now.
    pub fn get(&self) -> Arc<T> {
        self.0.borrow().clone()
    }
}

/// How one reload ended (the `outcome` label of `config_reload_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Error => "error",
        }
    }
}

/// Told of every load and reload: `(file, outcome)`, `file` being the flag
/// name (e.g. `token-file`).
pub type Report = Arc<dyn Fn(&'static str, Outcome) + Send + Sync>;

/// A parser of a file's bytes into the value it configures.
pub type Parse<T> = Arc<dyn Fn(&[u8]) -> Result<T, ParseError> + Send + Sync>;

/// Why a file's content was refused: a message that names no secret.
pub type ParseError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("read --{flag} {path}")]
    Read {
        flag: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("fetch --{flag} {source_name}")]
    Fetch {
        flag: &'static str,
        source_name: String,
        #[source]
        source: FetchError,
    },
    #[error("--{flag} {path}")]
    Parse {
        flag: &'static str,
        path: String,
        #[source]
        source: ParseError,
    },
}

/// One reloaded file: which flag set it, where it is and how to read it.
pub struct Watched<T> {
    /// The flag's name without dashes (`token-file`): log field and metric label.
    pub flag: &'static str,
    pub path: PathBuf,
    /// A second file read with it, its bytes appended after a newline (a TLS
    /// key beside its certificate): a change to either reloads both.
    pub also: Option<PathBuf>,
    pub parse: Parse<T>,
}

impl<T> Clone for Watched<T> {
    fn clone(&self) -> Self {
        Self {
            flag: self.flag,
            path: self.path.clone(),
            also: self.also.clone(),
            parse: self.parse.clone(),
        }
    }
}

/// What was last seen of the file: its content's digest, or why it could not be read.
#[derive(PartialEq, Eq)]
enum Seen {
    Content([u8; 32]),
    Unreadable(String),
}

impl<T: Send + Sync + 'static> Watched<T> {
    /// Read and parse the file now (at start: a bad file stops the process).
    pub fn load(&self) -> Result<T, ReloadError> {
        self.load_bytes().map(|(value, _)| value)
    }

    /// The file's bytes (and those of `also`, after a newline).
    fn read(path: &Path, also: Option<&Path>) -> std::io::Result<Vec<u8>> {
        let mut bytes = std::fs::read(path)?;
        if let Some(also) = also {
            bytes.push(b'\n');
            bytes.extend(std::fs::read(also)?);
        }
        Ok(bytes)
    }

    fn load_bytes(&self) -> Result<(T, [u8; 32]), ReloadError> {
        let path = self.path.display().to_string();
        let bytes = Self::read(&self.path, self.also.as_deref()).map_err(|source| ReloadError::Read {
            flag: self.flag,
            path: path.clone(),
            source,
        })?;
        let value = (self.parse)(&bytes).map_err(|source| ReloadError::Parse {
            flag: self.flag,
            path,
            source,
        })?;
        Ok((value, digest(&bytes)))
    }

    /// Load the file now, then keep reloading it in a task (on a change in its
    /// directory, and every `interval`) for as long as the process runs.
    pub fn start(self, interval: Duration, report: Report) -> Result<Live<T>, ReloadError> {
        let (value, first) = self.load_bytes()?;
        report(self.flag, Outcome::Success);
        let (tx, rx) = watch::channel(Arc::new(value));
        let changed = Arc::new(Notify::new());
        let watcher = self.watch_directory(changed.clone());
        tokio::spawn(self.reload_loop(tx, Seen::Content(first), changed, watcher, interval, report));
        Ok(Live(rx))
    }

    /// A watch of the file's directory that wakes `changed`; `None` (logged) when
    /// the system refuses one: the periodic re-read still applies.
    fn watch_directory(&self, changed: Arc<Notify>) -> Option<RecommendedWatcher> {
        let directory = |path: &Path| match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => Path::new(".").to_path_buf(),
        };
        let mut directories = vec![directory(&self.path)];
        if let Some(also) = &self.also
            && !directories.contains(&directory(also))
        {
            directories.push(directory(also));
        }
        let watched = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                changed.notify_one();
            }
        })
        .and_then(|mut watcher| {
            for directory in &directories {
                watcher.watch(directory, RecursiveMode::NonRecursive)?;
            }
            Ok(watcher)
        });
        match watched {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                warn!(file = self.flag, path = %self.path.display(), error = %e,
                    "cannot watch the file's directory; re-reading it periodically only");
                None
            }
        }
    }

    async fn reload_loop(
        self,
        tx: watch::Sender<Arc<T>>,
        mut seen: Seen,
        changed: Arc<Notify>,
        // Dropping the watcher ends the watch: it lives as long as this loop.
        _watcher: Option<RecommendedWatcher>,
        interval: Duration,
        report: Report,
    ) {
        loop {
            tokio::select! {
                () = changed.notified() => {}
                () = tokio::time::sleep(interval) => {}
            }
            seen = self.reload(&tx, seen, &report).await;
        }
    }

    /// Read the file; when it changed, parse it and swap it in, or keep the last good value.
    async fn reload(&self, tx: &watch::Sender<Arc<T>>, seen: Seen, report: &Report) -> Seen {
        let path = self.path.display().to_string();
        let (file, also) = (self.path.clone(), self.also.clone());
        // Small files, but a read may block (a network file system): off the runtime's threads.
        let read = tokio::task::spawn_blocking(move || Self::read(&file, also.as_deref()))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            .map_err(|e| Unreadable {
                key: format!("{:?}", e.kind()),
                error: e.to_string(),
            });
        settle(self.flag, &path, &self.parse, read, tx, seen, report)
    }
}

/// Why a source could not be read: `key` tells one failure from another (a
/// repeat is neither logged nor counted again), `error` is logged.
struct Unreadable {
    key: String,
    error: String,
}

/// What every source shares after a read: when the bytes changed, parse them
/// and swap the value in, or keep the last good value; log and report
/// changes of state only.
fn settle<T>(
    flag: &'static str,
    source: &str,
    parse: &Parse<T>,
    read: Result<Vec<u8>, Unreadable>,
    tx: &watch::Sender<Arc<T>>,
    seen: Seen,
    report: &Report,
) -> Seen {
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(Unreadable { key, error }) => {
            let now = Seen::Unreadable(key);
            if now != seen {
                report(flag, Outcome::Error);
                error!(file = flag, path = %source, %error, "cannot read it; keeping the last good one");
            }
            return now;
        }
    };
    let now = Seen::Content(digest(&bytes));
    if now == seen {
        return now;
    }
    match parse(&bytes) {
        Ok(value) => {
            tx.send_replace(Arc::new(value));
            report(flag, Outcome::Success);
            info!(file = flag, path = %source, "reloaded");
        }
        Err(e) => {
            report(flag, Outcome::Error);
            error!(file = flag, path = %source, error = %chain(e.as_ref()), "the content is not valid; keeping the last good one");
        }
    }
    now
}

/// Fetches a value's bytes from elsewhere than a file (a secret store).
pub type Fetch = Arc<dyn Fn() -> BoxFuture<'static, Result<Vec<u8>, FetchError>> + Send + Sync>;

/// Why a fetch failed: a message that names no secret value.
pub type FetchError = Box<dyn std::error::Error + Send + Sync>;

/// A value fetched (rather than read from a file), re-fetched every
/// interval with the same rules as a file: only a change is parsed, a
/// failure keeps the last good value, logged once and counted.
pub struct Fetched<T> {
    /// The flag's name without dashes (`tokens-secret`): log field and metric label.
    pub flag: &'static str,
    /// What is fetched, as logged (a secret's name or ARN).
    pub source: String,
    pub fetch: Fetch,
    pub parse: Parse<T>,
}

impl<T: Send + Sync + 'static> Fetched<T> {
    /// Fetch and parse now (a failure is a start-up error), then keep
    /// re-fetching every `interval` in a task for as long as the process runs.
    pub async fn start(self, interval: Duration, report: Report) -> Result<Live<T>, ReloadError> {
        let bytes = (self.fetch)().await.map_err(|source| ReloadError::Fetch {
            flag: self.flag,
            source_name: self.source.clone(),
            source,
        })?;
        let value = (self.parse)(&bytes).map_err(|source| ReloadError::Parse {
            flag: self.flag,
            path: self.source.clone(),
            source,
        })?;
        report(self.flag, Outcome::Success);
        let (tx, rx) = watch::channel(Arc::new(value));
        let mut seen = Seen::Content(digest(&bytes));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let read = (self.fetch)().await.map_err(|e| {
                    let error = chain(e.as_ref());
                    Unreadable {
                        key: error.clone(),
                        error,
                    }
                });
                seen = settle(self.flag, &self.source, &self.parse, read, &tx, seen, &report);
            }
        });
        Ok(Live(rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn numbers() -> Parse<u32> {
        Arc::new(|bytes: &[u8]| {
            let text = std::str::from_utf8(bytes)?;
            Ok(text.trim().parse::<u32>()?)
        })
    }

    fn recorder() -> (Report, Arc<Mutex<Vec<Outcome>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let report: Report = Arc::new(move |_, outcome| log.lock().unwrap().push(outcome));
        (report, seen)
    }

    #[test]
    fn a_fixed_value_stays() {
        let live = Live::fixed(7);
        assert_eq!(*live.get(), 7);
        assert_eq!(format!("{live:?}"), "Live(7)");
    }

    #[test]
    fn a_bad_file_at_start_is_an_error_naming_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        let watched = Watched {
            flag: "numbers",
            path: path.clone(),
            also: None,
            parse: numbers(),
        };
        let missing = watched.load().unwrap_err();
        assert!(matches!(missing, ReloadError::Read { .. }));
        std::fs::write(&path, "x").unwrap();
        let bad = watched.load().unwrap_err();
        assert!(chain(&bad).starts_with("--numbers "), "{}", chain(&bad));
    }

    #[tokio::test]
    async fn changes_swap_in_bad_files_keep_the_last_good_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        std::fs::write(&path, "1").unwrap();
        let (report, outcomes) = recorder();
        let watched = Watched {
            flag: "numbers",
            path: path.clone(),
            also: None,
            parse: numbers(),
        };
        // A long interval: only the file events (or the explicit reloads below) act.
        let (tx, _rx) = watch::channel(Arc::new(1));
        let mut seen = Seen::Content(digest(b"1"));
        std::fs::write(&path, "2").unwrap();
        seen = watched.reload(&tx, seen, &report).await;
        assert_eq!(**tx.borrow(), 2);
        std::fs::write(&path, "not a number").unwrap();
        seen = watched.reload(&tx, seen, &report).await;
        assert_eq!(**tx.borrow(), 2);
        // The same bad content again: neither logged nor counted twice.
        seen = watched.reload(&tx, seen, &report).await;
        std::fs::remove_file(&path).unwrap();
        seen = watched.reload(&tx, seen, &report).await;
        assert_eq!(**tx.borrow(), 2);
        std::fs::write(&path, "3").unwrap();
        let _ = watched.reload(&tx, seen, &report).await;
        assert_eq!(**tx.borrow(), 3);
        assert_eq!(
            *outcomes.lock().unwrap(),
            [Outcome::Success, Outcome::Error, Outcome::Error, Outcome::Success]
        );
    }

    /// Without a watch (refused by the system), the periodic re-read alone picks a change up.
    #[tokio::test]
    async fn the_periodic_reread_works_without_a_watch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        std::fs::write(&path, "1").unwrap();
        let (report, outcomes) = recorder();
        let watched = Watched {
            flag: "numbers",
            path: path.clone(),
            also: None,
            parse: numbers(),
        };
        let (tx, rx) = watch::channel(Arc::new(1));
        let never = Arc::new(Notify::new());
        let seen = Seen::Content(digest(b"1"));
        let task =
            tokio::spawn(watched.reload_loop(tx, seen, never, None, Duration::from_millis(50), report));
        std::fs::write(&path, "9").unwrap();
        let live = Live(rx);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while *live.get() != 9 {
            assert!(std::time::Instant::now() < deadline, "never re-read");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
        assert_eq!(*outcomes.lock().unwrap(), [Outcome::Success]);
    }

    /// A fetched source (a secret store) behind the same rules as a file.
    #[tokio::test]
    async fn a_fetched_value_follows_its_source_and_keeps_the_last_good_one() {
        let value: Arc<Mutex<Result<Vec<u8>, String>>> = Arc::new(Mutex::new(Ok(b"1".to_vec())));
        let source = value.clone();
        let fetch: Fetch = Arc::new(move || {
            let now = source.lock().unwrap().clone();
            Box::pin(async move { now.map_err(FetchError::from) })
        });
        let (report, outcomes) = recorder();
        let fetched = |fetch: Fetch| Fetched {
            flag: "numbers",
            source: "store".to_owned(),
            fetch,
            parse: numbers(),
        };
        let live = fetched(fetch.clone())
            .start(Duration::from_millis(10), report)
            .await
            .unwrap();
        assert_eq!(*live.get(), 1);
        let settled = |count: usize| {
            let outcomes = outcomes.clone();
            async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                while outcomes.lock().unwrap().len() < count {
                    assert!(std::time::Instant::now() < deadline, "never fetched again");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        *value.lock().unwrap() = Err("denied".to_owned());
        settled(2).await;
        *value.lock().unwrap() = Ok(b"not a number".to_vec());
        settled(3).await;
        assert_eq!(*live.get(), 1);
        *value.lock().unwrap() = Ok(b"5".to_vec());
        settled(4).await;
        assert_eq!(*live.get(), 5);
        assert_eq!(
            outcomes.lock().unwrap()[..4],
            [Outcome::Success, Outcome::Error, Outcome::Error, Outcome::Success]
        );
        // At start, a failed fetch is an error naming the flag and the source.
        *value.lock().unwrap() = Err("denied".to_owned());
        let (report, _) = recorder();
        let error = fetched(fetch)
            .start(Duration::from_secs(60), report)
            .await
            .unwrap_err();
        assert_eq!(chain(&error), "fetch --numbers store: denied");
    }

    #[tokio::test]
    async fn a_running_reloader_follows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        std::fs::write(&path, "1").unwrap();
        let (report, _) = recorder();
        let live = Watched {
            flag: "numbers",
            path: path.clone(),
            also: None,
            parse: numbers(),
        }
        .start(Duration::from_millis(50), report)
        .unwrap();
        assert_eq!(*live.get(), 1);
        std::fs::write(&path, "5").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while *live.get() != 5 {
            assert!(std::time::Instant::now() < deadline, "never reloaded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
