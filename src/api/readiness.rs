//! A readiness gate the command line closes while a start-up check fails:
//! `/readyz` answers 503 with the reasons until every check passes. Each
//! check (the permission preflight, the clock) holds its own reason, so one
//! passing never opens the gate another keeps closed. No I/O.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

/// The permission preflight's gate (that of [`Readiness::refuse`]).
const PREFLIGHT: &str = "preflight";

/// Shared between `/readyz` and whoever checks (the provisioner's preflight
/// and clock tasks). Open by default, so a router built without a check is
/// ready as before.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<RwLock<BTreeMap<&'static str, String>>>);

impl Readiness {
    /// Not ready, and why (one line a person reads in the `/readyz` body),
    /// for the permission preflight.
    pub fn refuse(&self, reason: String) {
        self.refuse_for(PREFLIGHT, reason);
    }

    /// The permission preflight passes.
    pub fn admit(&self) {
        self.admit_for(PREFLIGHT);
    }

    /// Not ready because of `gate`, and why.
    pub fn refuse_for(&self, gate: &'static str, reason: String) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(gate, reason);
    }

    /// `gate` passes (the others keep their say).
    pub fn admit_for(&self, gate: &'static str) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(gate);
    }

    /// Why not ready, if not: every closed gate's reason, `; `-separated.
    pub fn refused(&self) -> Option<String> {
        let gates = self.0.read().unwrap_or_else(PoisonError::into_inner);
        (!gates.is_empty()).then(|| gates.values().cloned().collect::<Vec<_>>().join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_opens_and_closes() {
        let gate = Readiness::default();
        assert_eq!(gate.refused(), None);
        gate.clone().refuse("cannot create namespaces".into());
        assert_eq!(gate.refused().as_deref(), Some("cannot create namespaces"));
        gate.admit();
        assert_eq!(gate.refused(), None);
    }

    #[test]
    fn each_check_keeps_its_own_reason() {
        let gate = Readiness::default();
        gate.refuse("preflight: lacks 1".into());
        gate.refuse_for("clock", "clock: 3600s ahead".into());
        assert_eq!(
            gate.refused().as_deref(),
            Some("clock: 3600s ahead; preflight: lacks 1")
        );
        gate.admit();
        assert_eq!(gate.refused().as_deref(), Some("clock: 3600s ahead"));
        gate.admit_for("clock");
        assert_eq!(gate.refused(), None);
    }
}
