//! The one clock: "now" in Unix seconds. Reads the system time and nothing
//! else; every rule takes `now` as an input, so only the pipelines' entry
//! points call this.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch; passed in (not called) where tests fix the time.
pub type Clock = fn() -> i64;

/// Now, in whole Unix seconds.
pub fn system_clock() -> i64 {
    i64::try_from(since_epoch().as_secs()).unwrap_or(i64::MAX)
}

/// Now, in fractional Unix seconds (for delays shorter than a second).
pub fn system_clock_f64() -> f64 {
    since_epoch().as_secs_f64()
}

fn since_epoch() -> std::time::Duration {
    // A clock before 1970 reads as the epoch: expiries only ever look later.
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}
