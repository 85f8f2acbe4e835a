//! The brake of watch mode: at most `max` deletions per sliding `window`.
//! A bug or a bad bulk edit of expiry labels would otherwise delete every
//! namespace it touches within seconds; past the bound the reaper holds
//! expired namespaces (repairs go on), and when slots free up again the
//! held namespaces go oldest expiry first. `--allow-mass-deletion` lifts it.
//!
//! Pure bookkeeping (times are passed in as Unix seconds) plus the two
//! metrics it raises; the Event and the log line are written by the caller.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A namespace waiting for a slot that has not been looked at for this many
/// windows is forgotten (deleted by someone else, or no longer expired and
/// never reconciled again), so it cannot keep younger ones waiting.
const STALE_WINDOWS: u32 = 2;

/// A namespace that found free slots taken by older waiting ones looks again after this long.
const YIELD_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BrakeConfig {
    /// Most deletions in any `window`.
    pub max_deletions: u32,
    pub window: Duration,
    /// `--allow-mass-deletion`: no bound.
    pub allow_mass_deletion: bool,
}

/// What the brake says about one expired namespace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    Delete,
    /// Not now: look again at `until` (Unix seconds).
    Hold {
        until: f64,
        /// Deletions in the current window.
        recent: usize,
        /// This hold engaged the brake (it was released before): say so once.
        engaged: bool,
    },
}

#[derive(Debug, Default)]
struct State {
    /// Instants of the deletions in the current window, oldest first.
    recent: VecDeque<f64>,
    /// Held namespaces by (expiry, name), with when each was last seen.
    waiting: BTreeMap<(i64, String), f64>,
    engaged: bool,
}

/// The two metrics the brake raises.
#[derive(Debug, Clone, Default)]
pub struct BrakeMetrics {
    /// Expired namespaces not deleted (yet) because of the bound.
    pub held: Counter,
    /// 1 while the brake holds deletions.
    pub engaged: Gauge,
}

impl BrakeMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "deletions_held",
            "Expired namespaces held back by the watch-mode deletion bound (--watch-max-deletions per --watch-deletion-window)",
            self.held.clone(),
        );
        registry.register(
            "deletion_brake_engaged",
            "1 while the watch-mode deletion bound holds expired namespaces, else 0",
            self.engaged.clone(),
        );
    }
}

#[derive(Debug)]
pub struct Brake {
    config: BrakeConfig,
    state: Mutex<State>,
    metrics: BrakeMetrics,
}

impl Brake {
    pub fn new(config: BrakeConfig, metrics: BrakeMetrics) -> Self {
        Self {
            config,
            state: Mutex::new(State::default()),
            metrics,
        }
    }

    pub fn config(&self) -> BrakeConfig {
        self.config
    }

    /// May the expired namespace `name` (expiry `expiry`) be deleted `now`?
    /// A `Delete` takes a slot of the window.
    pub fn request(&self, name: &str, expiry: i64, now: f64) -> Decision {
        if self.config.allow_mass_deletion {
            return Decision::Delete;
        }
        // A poisoned lock only means a panic elsewhere mid-update; the
        // bookkeeping is still usable.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let window = self.config.window.as_secs_f64();
        while state.recent.front().is_some_and(|t| *t <= now - window) {
            state.recent.pop_front();
        }
        let stale = now - window * f64::from(STALE_WINDOWS) - YIELD_RETRY.as_secs_f64();
        state.waiting.retain(|_, seen| *seen >= stale);
        let key = (expiry, name.to_owned());
        let max = usize::try_from(self.config.max_deletions).unwrap_or(usize::MAX);
        let free = max.saturating_sub(state.recent.len());
        let older = state.waiting.range(..key.clone()).count();
        if free > 0 && older < free {
            state.waiting.remove(&key);
            state.recent.push_back(now);
            if state.engaged && state.waiting.is_empty() {
                state.engaged = false;
                self.metrics.engaged.set(0);
            }
            return Decision::Delete;
        }
        state.waiting.insert(key, now);
        let until = match (free, state.recent.front()) {
            (0, Some(oldest)) => oldest + window,
            _ => now + YIELD_RETRY.as_secs_f64(),
        };
        let engaged = !state.engaged;
        state.engaged = true;
        self.metrics.engaged.set(1);
        self.metrics.held.inc();
        Decision::Hold {
            until,
            recent: state.recent.len(),
            engaged,
        }
    }

    /// `name` is no longer waiting to be deleted (it was looked at and is not expired).
    pub fn forget(&self, name: &str) {
        if self.config.allow_mass_deletion {
            return;
        }
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.waiting.retain(|(_, n), _| n != name);
        if state.engaged && state.waiting.is_empty() {
            state.engaged = false;
            self.metrics.engaged.set(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brake(max: u32, allow: bool) -> Brake {
        Brake::new(
            BrakeConfig {
                max_deletions: max,
                window: Duration::from_secs(60),
                allow_mass_deletion: allow,
            },
            BrakeMetrics::default(),
        )
    }

    #[test]
    fn deletes_stop_at_the_bound_until_the_window_passes() {
        let b = brake(2, false);
        assert_eq!(b.request("a", 10, 100.0), Decision::Delete);
        assert_eq!(b.request("b", 10, 101.0), Decision::Delete);
        assert_eq!(
            b.request("c", 10, 102.0),
            Decision::Hold {
                until: 160.0,
                recent: 2,
                engaged: true
            }
        );
        assert!(matches!(
            b.request("d", 10, 103.0),
            Decision::Hold { engaged: false, .. }
        ));
        assert_eq!(b.metrics.held.get(), 2);
        assert_eq!(b.metrics.engaged.get(), 1);
        // The first slot frees at 160.
        assert_eq!(b.request("c", 10, 160.0), Decision::Delete);
    }

    #[test]
    fn held_namespaces_resume_oldest_expiry_first() {
        let b = brake(1, false);
        assert_eq!(b.request("first", 5, 0.0), Decision::Delete);
        // Held in this order, expiries reversed.
        for (name, expiry) in [("young", 30), ("middle", 20), ("old", 10)] {
            assert!(matches!(b.request(name, expiry, 1.0), Decision::Hold { .. }));
        }
        // Window over: the young one arrives first but yields to the oldest.
        assert!(matches!(b.request("young", 30, 61.0), Decision::Hold { until, .. } if until == 62.0));
        assert_eq!(b.request("old", 10, 61.0), Decision::Delete);
        assert!(matches!(b.request("middle", 20, 61.5), Decision::Hold { .. }));
        assert_eq!(b.request("middle", 20, 122.0), Decision::Delete);
        assert_eq!(b.request("young", 30, 183.0), Decision::Delete);
        assert_eq!(b.metrics.engaged.get(), 0);
    }

    #[test]
    fn forgotten_and_stale_waiters_block_nobody() {
        let b = brake(1, false);
        assert_eq!(b.request("a", 1, 0.0), Decision::Delete);
        assert!(matches!(b.request("relabelled", 2, 1.0), Decision::Hold { .. }));
        assert!(matches!(b.request("vanished", 3, 1.0), Decision::Hold { .. }));
        b.forget("relabelled");
        // "vanished" is never seen again: stale after two windows.
        assert_eq!(b.request("late", 4, 200.0), Decision::Delete);
        assert_eq!(b.metrics.engaged.get(), 0);
    }

    #[test]
    fn allow_mass_deletion_lifts_the_bound() {
        let b = brake(0, true);
        for i in 0..1000 {
            assert_eq!(b.request(&format!("n{i}"), 1, 0.0), Decision::Delete);
        }
        assert_eq!(b.metrics.held.get(), 0);
    }
}
