//! Notice before expiry (issue 14): whether a managed namespace is owed its
//! `ExpiringSoon` notice now, later, or never. Pure: the time, the expiry and
//! what the namespace records about earlier notices are inputs.
//!
//! A notice is owed once per expiry value: the namespace records the expiry it
//! was given notice of ([`NOTIFIED_EXPIRY_ANNOTATION`]); an extend writes a new
//! expiry, which no longer matches, and so re-arms it. A namespace whose whole
//! life (creation to expiry) is no longer than the lead gets none: it was in
//! the window from its first second, and its creator knew its TTL.

use std::time::Duration;

use thiserror::Error;

use crate::rules::params::Expiry;

/// Annotation on a managed Namespace: the expiry value (Unix seconds, as in
/// the expiry label) it was given notice of.
pub const NOTIFIED_EXPIRY_ANNOTATION: &str = "controller.observatorium.io/notified-expiry";

/// Reason of the Event written when a namespace enters the lead window.
pub const EXPIRING_SOON_REASON: &str = "ExpiringSoon";

/// The longest lead accepted: a notice a month ahead is not "soon".
pub const MAX_LEAD: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long before its expiry a namespace is given notice (`--notify-before`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoticeLead(i64);

#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "--notify-before must be whole seconds between 1s and 30days (got {}); e.g. 10m",
    humantime::format_duration(*got)
)]
pub struct NoticeLeadError {
    got: Duration,
}

impl NoticeLead {
    pub fn new(lead: Duration) -> Result<Self, NoticeLeadError> {
        let secs = lead.as_secs();
        if secs == 0 || lead.subsec_nanos() != 0 || lead > MAX_LEAD {
            return Err(NoticeLeadError { got: lead });
        }
        i64::try_from(secs)
            .map(Self)
            .map_err(|_| NoticeLeadError { got: lead })
    }

    pub fn secs(self) -> i64 {
        self.0
    }
}

/// What one namespace is owed at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// In the window and not yet given notice of this expiry: send now.
    Now { expiry: Expiry, left_secs: i64 },
    /// The window opens at this instant (Unix seconds).
    Later { at: i64 },
    /// Already given notice of this very expiry.
    Sent,
    /// Its whole life is no longer than the lead.
    TooShort,
    /// Expired or being deleted: the deletion speaks for itself.
    Moot,
    /// An unclaimed warm-pool member: nobody uses it, nobody to tell.
    PoolMember,
}

/// What a managed namespace shows the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoticeInput<'a> {
    pub expiry: Expiry,
    /// creationTimestamp, Unix seconds.
    pub created: Option<i64>,
    /// The [`NOTIFIED_EXPIRY_ANNOTATION`] value, if any.
    pub notified: Option<&'a str>,
    /// deletionTimestamp is set.
    pub terminating: bool,
}

/// Whether `input` is owed its notice at `now` (Unix seconds) with `lead`.
pub fn decide(lead: NoticeLead, input: NoticeInput<'_>, now: i64) -> Notice {
    let expiry = input.expiry.unix();
    if input.terminating || input.expiry.is_due(now) {
        return Notice::Moot;
    }
    if input.notified.map(str::trim) == Some(expiry.to_string().as_str()) {
        return Notice::Sent;
    }
    if input
        .created
        .is_some_and(|created| expiry.saturating_sub(created) <= lead.secs())
    {
        return Notice::TooShort;
    }
    let at = expiry.saturating_sub(lead.secs());
    if now >= at {
        Notice::Now {
            expiry: input.expiry,
            left_secs: expiry - now,
        }
    } else {
        Notice::Later { at }
    }
}

/// The Event's message: the expiry instant and the time left.
pub fn message(namespace: &str, expiry: Expiry, left_secs: i64) -> String {
    let left = Duration::from_secs(u64::try_from(left_secs).unwrap_or(0));
    format!(
        "Namespace {namespace} expires at {} (in {}) and will then be deleted with everything in it; \
         extend it (PATCH /api/v1/namespaces/{namespace} or `kubectl np extend {namespace}`) to keep it",
        expiry.rfc3339(),
        humantime::format_duration(left),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEAD: i64 = 600;

    fn lead() -> NoticeLead {
        NoticeLead::new(Duration::from_secs(600)).unwrap()
    }

    fn input(expiry: i64, created: Option<i64>, notified: Option<&str>) -> NoticeInput<'_> {
        NoticeInput {
            expiry: Expiry::from_unix(expiry),
            created,
            notified,
            terminating: false,
        }
    }

    #[test]
    fn lead_is_validated() {
        assert_eq!(NoticeLead::new(Duration::from_secs(600)).unwrap().secs(), 600);
        assert!(NoticeLead::new(Duration::from_secs(1)).is_ok());
        assert!(NoticeLead::new(MAX_LEAD).is_ok());
        for bad in [
            Duration::ZERO,
            Duration::from_millis(1500),
            MAX_LEAD + Duration::from_secs(1),
        ] {
            let e = NoticeLead::new(bad).unwrap_err();
            assert!(e.to_string().contains("--notify-before"), "{e}");
        }
    }

    #[test]
    fn outside_the_window_waits_for_it() {
        assert_eq!(
            decide(lead(), input(10_000, Some(0), None), 1_000),
            Notice::Later { at: 10_000 - LEAD }
        );
    }

    #[test]
    fn entering_the_window_notifies_once_per_expiry() {
        let at = 10_000 - LEAD;
        assert_eq!(
            decide(lead(), input(10_000, Some(0), None), at),
            Notice::Now {
                expiry: Expiry::from_unix(10_000),
                left_secs: LEAD
            }
        );
        assert_eq!(
            decide(lead(), input(10_000, Some(0), None), 9_999),
            Notice::Now {
                expiry: Expiry::from_unix(10_000),
                left_secs: 1
            }
        );
        assert_eq!(
            decide(lead(), input(10_000, Some(0), Some("10000")), at),
            Notice::Sent
        );
    }

    #[test]
    fn an_extend_rearms_the_notice() {
        // Notified of 10 000, then extended to 20 000.
        assert_eq!(
            decide(lead(), input(20_000, Some(0), Some("10000")), 9_800),
            Notice::Later { at: 20_000 - LEAD }
        );
        assert!(matches!(
            decide(lead(), input(20_000, Some(0), Some("10000")), 19_500),
            Notice::Now { .. }
        ));
        // A garbage record does not suppress it either.
        assert!(matches!(
            decide(lead(), input(20_000, Some(0), Some("soon")), 19_500),
            Notice::Now { .. }
        ));
    }

    #[test]
    fn a_life_no_longer_than_the_lead_gets_none() {
        assert_eq!(
            decide(lead(), input(1_300, Some(1_000), None), 1_000),
            Notice::TooShort
        );
        assert_eq!(
            decide(lead(), input(1_600, Some(1_000), None), 1_100),
            Notice::TooShort
        );
        // One second longer than the lead: owed at creation + 1 s.
        assert_eq!(
            decide(lead(), input(1_601, Some(1_000), None), 1_000),
            Notice::Later { at: 1_001 }
        );
        // Extended past the lead: owed after all.
        assert!(matches!(
            decide(lead(), input(5_000, Some(1_000), None), 4_500),
            Notice::Now { .. }
        ));
        // Without a creation time the window alone decides.
        assert!(matches!(
            decide(lead(), input(1_300, None, None), 1_000),
            Notice::Now { .. }
        ));
    }

    #[test]
    fn expired_or_terminating_is_moot() {
        assert_eq!(decide(lead(), input(10_000, Some(0), None), 10_000), Notice::Moot);
        assert_eq!(decide(lead(), input(10_000, Some(0), None), 20_000), Notice::Moot);
        let terminating = NoticeInput {
            terminating: true,
            ..input(10_000, Some(0), None)
        };
        assert_eq!(decide(lead(), terminating, 9_900), Notice::Moot);
    }

    #[test]
    fn message_names_the_instant_and_the_time_left() {
        let text = message("np-abc", Expiry::from_unix(1_800_000_000), 590);
        assert!(text.contains("2027-01-15T08:00:00Z"), "{text}");
        assert!(text.contains("in 9m 50s"), "{text}");
        assert!(text.contains("np-abc"), "{text}");
    }
}
