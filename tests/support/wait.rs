//! The one wait-until helper: poll a check until it is done or a deadline
//! passes, then fail with what was awaited and the last reason it was not
//! done. For Kubernetes objects prefer `kube::runtime::wait::await_condition`
//! (a watch, see [`crate::support::fixture`]); this is for what cannot be
//! watched: HTTP endpoints, `kubectl auth can-i`, child processes.

use std::future::Future;
use std::time::Duration;

/// What a check answers: done (with a value) or not yet (with a reason).
pub trait Done {
    type Output;
    fn done(self) -> Result<Self::Output, String>;
}

impl Done for bool {
    type Output = ();
    fn done(self) -> Result<(), String> {
        if self { Ok(()) } else { Err(String::new()) }
    }
}

impl<T> Done for Option<T> {
    type Output = T;
    fn done(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T> Done for Result<T, String> {
    type Output = T;
    fn done(self) -> Result<T, String> {
        self
    }
}

/// Poll `check` every 100 ms until it is done; return its value. Panics after
/// `timeout` with `what` and the check's last reason.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F) -> <Fut::Output as Done>::Output
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Done,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match check().await.done() {
            Ok(value) => return value,
            Err(why) if tokio::time::Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
