//! A readiness gate the command line closes while the start-up permission
//! check fails: `/readyz` answers 503 with the reason until it passes. No I/O.

use std::sync::{Arc, PoisonError, RwLock};

/// Shared between `/readyz` and whoever checks (the provisioner's preflight
/// task). Open by default, so a router built without a check is ready as before.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<RwLock<Option<String>>>);

impl Readiness {
    /// Not ready, and why (one line a person reads in the `/readyz` body).
    pub fn refuse(&self, reason: String) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(reason);
    }

    pub fn admit(&self) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Why not ready, if not.
    pub fn refused(&self) -> Option<String> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
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
}
