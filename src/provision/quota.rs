//! The aggregate quota in a create (issue 12): reserve the child's allocation in the parent's
//! HierarchicalResourceQuota ledger with optimistic concurrency, lower the parent's remainder
//! quota and re-check its usage, then (after the namespace exists) the child's allocation
//! quota, and confirm or release. The steps and why their order is safe are in the module docs
//! of [`crate::rules::quota`]; every decision is made there, every call goes through [`crate::k8s`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ResourceQuota, ResourceQuotaStatus};
use kube::ResourceExt;
use tracing::warn;

use super::{ProvisionError, Provisioner};
use crate::k8s;
use crate::rules::quota::allocation::{check_parent_within, effective_budget, resolve_allocation};
use crate::rules::quota::crd::{
    HierarchicalResourceQuota, HierarchicalResourceQuotaStatus, ObservedUsage, ledger_from_status, status_for,
};
use crate::rules::quota::ledger::{self, Ledger, ReserveError};
use crate::rules::quota::objects::{
    ALLOCATION_QUOTA, BudgetRef, REMAINDER_QUOTA, allocation_quota, hard_of, ledger_revision_of,
    remainder_quota, used_of,
};
use crate::rules::quota::resources::{Resources, ResourcesError};

/// Ledger writes tried before a create gives up on a contended budget (each conflict means
/// another writer landed: progress was made, just not ours).
const LEDGER_ATTEMPTS: u32 = 30;

/// How long a reservation may wait for its namespace: past this the create gives up and
/// releases. Shorter than the reaper's rebuild grace (300 s, `reaper::quota`) by a margin for
/// clock skew, so the reaper never drops a reservation whose create is still going to happen.
pub(super) const RESERVATION_GRACE_SECONDS: i64 = 120;

/// How long to wait for the quota controller to apply a lowered remainder (`status.hard`):
/// admission enforces `status.hard`, so until then the parent's usage is not yet bounded.
const SYNC_TIMEOUT: Duration = Duration::from_secs(15);

/// An allocation held in a parent's ledger for a child being created.
#[derive(Debug, Clone)]
pub(super) struct Reservation {
    pub parent: String,
    pub budget: String,
    pub child: String,
    pub allocation: Resources,
    pub reserved_at: i64,
    /// As read before the reservation was written (the confirm reuses them).
    surroundings: Surroundings,
}

impl Reservation {
    fn budget_ref(&self) -> BudgetRef<'_> {
        BudgetRef {
            namespace: &self.parent,
            name: &self.budget,
        }
    }
}

impl Provisioner {
    /// Step 1–6 of a create with quota: `None` when the parent has no budget and nothing was
    /// asked. On refusal nothing stays written (a reservation already written is released).
    pub(super) async fn reserve(
        &self,
        parent: &str,
        child: &str,
        ask: Option<&Resources>,
        now: i64,
    ) -> Result<Option<Reservation>, ProvisionError> {
        let Some(mut hrq) = self.budget_of(parent, ask.is_some()).await? else {
            return Ok(None);
        };
        let surroundings = self.surroundings(parent, &hrq.name_any()).await?;
        for attempt in 0..LEDGER_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt - 1).await;
            }
            // One ledger writer per parent in this process: its creates queue here instead of
            // conflicting with each other (other replicas still meet the precondition).
            let (turn, waited) = ledger_turn(parent).await;
            if attempt > 0 || waited {
                let Some(fresh) = self.reread_budget(parent, &hrq.name_any(), ask.is_some()).await? else {
                    return Ok(None);
                };
                hrq = fresh;
            }
            let budget_name = hrq.name_any();
            let unreadable = |source| ProvisionError::BudgetUnreadable {
                parent: parent.to_owned(),
                budget: budget_name.clone(),
                source,
            };
            let budget = surroundings.budget(&hrq).map_err(unreadable)?;
            let default = hrq.spec.default_allocation().map_err(unreadable)?;
            let allocation =
                resolve_allocation(&budget, &default, ask).map_err(|source| ProvisionError::Allocation {
                    parent: parent.to_owned(),
                    source,
                })?;
            let parent_used = surroundings.parent_used.clone();
            let ledger = ledger_from_status(hrq.status.as_ref()).map_err(unreadable)?;
            let next = ledger::reserve(&ledger, &budget, &parent_used, child, allocation.clone(), now)
                .map_err(|e| match e {
                    ReserveError::Refused(refusal) => ProvisionError::QuotaRefused {
                        parent: parent.to_owned(),
                        refusal,
                    },
                    ReserveError::AlreadyAllocated(_) => ProvisionError::LedgerContended {
                        parent: parent.to_owned(),
                    },
                })?;
            hrq.status =
                Some(status_with(&budget, &next, hrq.status.as_ref(), parent_used).map_err(unreadable)?);
            let written = k8s::replace_budget_status(&self.client, &hrq).await;
            drop(turn);
            match written {
                Ok(_) => {}
                Err(e) if e.is_conflict() => continue,
                Err(source) => {
                    return Err(ProvisionError::WriteLedger {
                        parent: parent.to_owned(),
                        source,
                    });
                }
            }
            let reservation = Reservation {
                parent: parent.to_owned(),
                budget: budget_name,
                child: child.to_owned(),
                allocation,
                reserved_at: now,
                surroundings: surroundings.clone(),
            };
            let checked = async {
                let written = self
                    .write_remainder(&reservation, &budget, &next, surroundings.remainder.clone())
                    .await?;
                self.check_parent_usage(parent, written).await
            };
            if let Err(err) = checked.await {
                self.release(&reservation, None).await;
                return Err(err);
            }
            return Ok(Some(reservation));
        }
        Err(ProvisionError::LedgerContended {
            parent: parent.to_owned(),
        })
    }

    /// The budget again after a conflict: one GET by name (the window until the next write
    /// stays short); when it is gone, whatever [`Self::budget_of`] finds now.
    async fn reread_budget(
        &self,
        parent: &str,
        name: &str,
        asked: bool,
    ) -> Result<Option<HierarchicalResourceQuota>, ProvisionError> {
        match k8s::get_budget(&self.client, parent, name).await {
            Ok(Some(hrq)) => Ok(Some(hrq)),
            Ok(None) => self.budget_of(parent, asked).await,
            Err(source) => Err(ProvisionError::ReadBudget {
                parent: parent.to_owned(),
                source,
            }),
        }
    }

    /// What a ledger write needs besides the budget, read once per write rather than per
    /// attempt: the parent's own allocation (nested trees) and its usage. A usage grown since
    /// is caught by step 6, which reads it again after the remainder is lowered.
    async fn surroundings(&self, parent: &str, budget: &str) -> Result<Surroundings, ProvisionError> {
        let unreadable = |source| ProvisionError::BudgetUnreadable {
            parent: parent.to_owned(),
            budget: budget.to_owned(),
            source,
        };
        let (allocation, remainder) = futures::try_join!(
            self.read_quota(parent, ALLOCATION_QUOTA),
            self.read_quota(parent, REMAINDER_QUOTA)
        )?;
        let inherited = allocation.as_ref().map(hard_of).transpose().map_err(unreadable)?;
        let parent_used = remainder
            .as_ref()
            .map(used_of)
            .transpose()
            .map_err(unreadable)?
            .unwrap_or_default();
        Ok(Surroundings {
            inherited,
            parent_used,
            remainder,
        })
    }

    /// The parent's one budget. `None` when it has none and none is needed; an ask under a
    /// parent without a budget is a 400 (there is nothing to allocate from).
    async fn budget_of(
        &self,
        parent: &str,
        asked: bool,
    ) -> Result<Option<HierarchicalResourceQuota>, ProvisionError> {
        let mut budgets = match k8s::list_budgets(&self.client, parent).await {
            Ok(budgets) => budgets,
            // The CRD is not installed: no parent has a budget.
            Err(e) if e.is_not_found() => Vec::new(),
            Err(source) => {
                return Err(ProvisionError::ReadBudget {
                    parent: parent.to_owned(),
                    source,
                });
            }
        };
        match budgets.len() {
            0 if asked => Err(ProvisionError::NoBudget {
                parent: parent.to_owned(),
            }),
            0 => Ok(None),
            1 => Ok(budgets.pop()),
            _ => Err(ProvisionError::SeveralBudgets {
                parent: parent.to_owned(),
                names: budgets.iter().map(ResourceExt::name_any).collect(),
            }),
        }
    }

    pub(super) async fn read_quota(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ResourceQuota>, ProvisionError> {
        k8s::get_quota(&self.client, namespace, name)
            .await
            .map_err(|source| ProvisionError::ReadQuota {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                source,
            })
    }

    /// Step 5: the parent's remainder quota from `ledger`, unless a newer ledger already wrote
    /// it (a slow writer must never raise it back). `known`: the quota as last read (the first
    /// attempt writes over it instead of reading it again; a stale one is a conflict, re-read).
    /// Returns the quota as written, `None` when a newer ledger had written it.
    async fn write_remainder(
        &self,
        reservation: &Reservation,
        budget: &Resources,
        ledger: &Ledger,
        mut known: Option<ResourceQuota>,
    ) -> Result<Option<ResourceQuota>, ProvisionError> {
        let parent = reservation.parent.as_str();
        let remainder = ledger
            .remainder(budget)
            .map_err(|source| ProvisionError::BudgetUnreadable {
                parent: parent.to_owned(),
                budget: reservation.budget.clone(),
                source,
            })?;
        let selector = &self.config.set.selector;
        let mut desired = remainder_quota(
            &reservation.budget_ref(),
            &remainder,
            ledger.revision,
            (selector.key(), selector.value()),
        );
        let write_error = |source| ProvisionError::WriteQuota {
            namespace: parent.to_owned(),
            name: REMAINDER_QUOTA.to_owned(),
            source,
        };
        for attempt in 0..LEDGER_ATTEMPTS {
            let live = match known.take() {
                Some(known) => Some(known),
                None => self.read_quota(parent, REMAINDER_QUOTA).await?,
            };
            let written = match &live {
                Some(live) if !ledger::remainder_is_newer(ledger_revision_of(live), ledger.revision) => {
                    return Ok(None);
                }
                Some(live) => {
                    desired.metadata.resource_version = live.resource_version();
                    k8s::replace_quota(&self.client, parent, &desired).await
                }
                None => k8s::create_quota(&self.client, parent, &desired).await,
            };
            match written {
                Ok(written) => return Ok(Some(written)),
                Err(e) if e.is_conflict() => backoff(attempt).await,
                Err(source) => return Err(write_error(source)),
            }
        }
        Err(ProvisionError::LedgerContended {
            parent: parent.to_owned(),
        })
    }

    /// Step 6: once the lowered remainder is applied (admission checks `status.hard`),
    /// everything the parent runs is in `status.used`; it must fit.
    ///
    /// Applied by the quota controller, or by us: when the quota's `status.used` already counts
    /// every budget resource, we write `status.hard` = `spec.hard` ourselves with the read
    /// `resourceVersion` as precondition. Admission raises `status.used` with the same kind of
    /// precondition, so a success means nothing was admitted since the read (the `used` we
    /// check is complete) and every admission after it evaluates the lowered hard (one that
    /// read the older quota fails its own status write and re-evaluates). A conflict re-reads;
    /// without the right (`resourcequotas/status` update: 403) the controller's sync is awaited.
    /// `written`: the quota as our write answered it (saves the first read).
    async fn check_parent_usage(
        &self,
        parent: &str,
        mut written: Option<ResourceQuota>,
    ) -> Result<(), ProvisionError> {
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            let quota = match written.take() {
                Some(quota) => Some(quota),
                None => self.read_quota(parent, REMAINDER_QUOTA).await?,
            };
            let applied = match quota {
                Some(quota) => match synced(&quota) {
                    Some(applied) => Applied::Yes(applied),
                    None => self.apply_remainder(parent, &quota).await?,
                },
                None => Applied::Wait,
            };
            if let Applied::Yes((hard, used)) = applied {
                return check_parent_within(&hard, &used).map_err(|refusal| ProvisionError::QuotaRefused {
                    parent: parent.to_owned(),
                    refusal,
                });
            }
            if started.elapsed() > SYNC_TIMEOUT {
                return Err(ProvisionError::QuotaNotSynced {
                    namespace: parent.to_owned(),
                });
            }
            // After a conflict someone wrote the quota since the read (admission, the
            // controller): read again at once; otherwise wait for the controller.
            if let Applied::Wait = applied {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        }
    }

    /// Write `status.hard` = `spec.hard` of the parent's remainder quota (see
    /// [`Self::check_parent_usage`]).
    async fn apply_remainder(&self, parent: &str, quota: &ResourceQuota) -> Result<Applied, ProvisionError> {
        if STATUS_WRITE_FORBIDDEN.load(Ordering::Relaxed) {
            return Ok(Applied::Wait);
        }
        let Some(applying) = with_status_hard(quota) else {
            return Ok(Applied::Wait);
        };
        match k8s::replace_quota_status(&self.client, parent, &applying).await {
            Ok(written) => Ok(synced(&written).map_or(Applied::Wait, Applied::Yes)),
            Err(e) if e.is_conflict() => Ok(Applied::Reread),
            Err(e) if e.status_code() == Some(403) => {
                STATUS_WRITE_FORBIDDEN.store(true, Ordering::Relaxed);
                warn!(namespace = %parent, "no right to update resourcequotas/status: each create waits for the quota controller (grant it to the provisioner to skip the wait)");
                Ok(Applied::Wait)
            }
            Err(source) => Err(ProvisionError::WriteQuota {
                namespace: parent.to_owned(),
                name: REMAINDER_QUOTA.to_owned(),
                source,
            }),
        }
    }

    /// The child's allocation quota, before any token exists: nothing can run there unbounded.
    pub(super) async fn create_allocation_quota(
        &self,
        reservation: &Reservation,
    ) -> Result<(), ProvisionError> {
        let selector = &self.config.set.selector;
        let quota = allocation_quota(
            &reservation.child,
            &reservation.budget_ref(),
            &reservation.allocation,
            (selector.key(), selector.value()),
        );
        k8s::create_quota(&self.client, &reservation.child, &quota)
            .await
            .map(drop)
            .map_err(|source| ProvisionError::WriteQuota {
                namespace: reservation.child.clone(),
                name: ALLOCATION_QUOTA.to_owned(),
                source,
            })
    }

    /// Record the child's uid in the ledger. Best effort: the reaper's rebuild does it too.
    /// Allocations do not change, so neither does the remainder: one GET and one status write
    /// (the parent's usage and own allocation as read for the reservation: display only).
    pub(super) async fn confirm(&self, reservation: &Reservation, uid: &str) {
        if let Err(err) = self.try_confirm(reservation, uid).await {
            warn!(parent = %reservation.parent, child = %reservation.child, error = %crate::telemetry::chain(&err),
                "recording the child's uid in the quota ledger failed; the reaper's rebuild does it");
        }
    }

    async fn try_confirm(&self, reservation: &Reservation, uid: &str) -> Result<(), ProvisionError> {
        let parent = reservation.parent.as_str();
        for attempt in 0..LEDGER_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt - 1).await;
            }
            let (turn, _) = ledger_turn(parent).await;
            let Some(mut hrq) = k8s::get_budget(&self.client, parent, &reservation.budget)
                .await
                .map_err(|source| ProvisionError::ReadBudget {
                    parent: parent.to_owned(),
                    source,
                })?
            else {
                return Ok(());
            };
            let unreadable = |source| ProvisionError::BudgetUnreadable {
                parent: parent.to_owned(),
                budget: reservation.budget.clone(),
                source,
            };
            let ledger = ledger_from_status(hrq.status.as_ref()).map_err(unreadable)?;
            let Some(next) = ledger::confirm(&ledger, &reservation.child, uid) else {
                return Ok(());
            };
            let surroundings = &reservation.surroundings;
            let budget = surroundings.budget(&hrq).map_err(unreadable)?;
            hrq.status = Some(
                status_with(
                    &budget,
                    &next,
                    hrq.status.as_ref(),
                    surroundings.parent_used.clone(),
                )
                .map_err(unreadable)?,
            );
            let written = k8s::replace_budget_status(&self.client, &hrq).await;
            drop(turn);
            match written {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() => {}
                Err(source) => {
                    return Err(ProvisionError::WriteLedger {
                        parent: parent.to_owned(),
                        source,
                    });
                }
            }
        }
        Err(ProvisionError::LedgerContended {
            parent: parent.to_owned(),
        })
    }

    /// Return a reservation (a create that failed or was refused). Safe right after the child
    /// namespace's delete, before it is gone: a Terminating namespace admits no new objects and
    /// this one never had a token. Best effort: a failure is logged, and the reaper's rebuild
    /// drops the reservation after its grace.
    pub(super) async fn release(&self, reservation: &Reservation, uid: Option<&str>) {
        self.update_ledger(reservation, |ledger| {
            ledger::release(ledger, &reservation.child, uid)
        })
        .await;
    }

    async fn update_ledger(&self, reservation: &Reservation, transition: impl Fn(&Ledger) -> Option<Ledger>) {
        if let Err(err) = self.try_update_ledger(reservation, transition).await {
            warn!(parent = %reservation.parent, child = %reservation.child, error = %crate::telemetry::chain(&err),
                "updating the quota ledger failed; the reaper's rebuild repairs it");
        }
    }

    async fn try_update_ledger(
        &self,
        reservation: &Reservation,
        transition: impl Fn(&Ledger) -> Option<Ledger>,
    ) -> Result<(), ProvisionError> {
        let parent = reservation.parent.as_str();
        let Some(mut hrq) = self.budget_of(parent, false).await? else {
            return Ok(());
        };
        let surroundings = self.surroundings(parent, &hrq.name_any()).await?;
        for attempt in 0..LEDGER_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt - 1).await;
            }
            let (turn, waited) = ledger_turn(parent).await;
            if attempt > 0 || waited {
                let Some(fresh) = self.reread_budget(parent, &hrq.name_any(), false).await? else {
                    return Ok(());
                };
                hrq = fresh;
            }
            let unreadable = |source| ProvisionError::BudgetUnreadable {
                parent: parent.to_owned(),
                budget: hrq.name_any(),
                source,
            };
            let ledger = ledger_from_status(hrq.status.as_ref()).map_err(unreadable)?;
            let Some(next) = transition(&ledger) else {
                return Ok(());
            };
            let budget = surroundings.budget(&hrq).map_err(unreadable)?;
            hrq.status = Some(
                status_with(
                    &budget,
                    &next,
                    hrq.status.as_ref(),
                    surroundings.parent_used.clone(),
                )
                .map_err(unreadable)?,
            );
            let written = k8s::replace_budget_status(&self.client, &hrq).await;
            drop(turn);
            match written {
                Ok(_) => {
                    return self
                        .write_remainder(reservation, &budget, &next, None)
                        .await
                        .map(drop);
                }
                Err(e) if e.is_conflict() => {}
                Err(source) => {
                    return Err(ProvisionError::WriteLedger {
                        parent: parent.to_owned(),
                        source,
                    });
                }
            }
        }
        Err(ProvisionError::LedgerContended {
            parent: parent.to_owned(),
        })
    }
}

/// The parent's own allocation and usage, as read before a ledger write.
#[derive(Debug, Clone)]
struct Surroundings {
    /// The parent's allocation quota when it is itself a child in a quota tree.
    inherited: Option<Resources>,
    parent_used: Resources,
    /// The parent's remainder quota as read (its `status.used` is `parent_used`).
    remainder: Option<ResourceQuota>,
}

impl Surroundings {
    /// `spec.hard`, clamped by the parent's own allocation (grandchildren allocate from their
    /// parent's allocation).
    fn budget(&self, hrq: &HierarchicalResourceQuota) -> Result<Resources, ResourcesError> {
        Ok(effective_budget(&hrq.spec.budget()?, self.inherited.as_ref()))
    }
}

/// The status for `ledger`, keeping each child's last observed usage from `previous` (the
/// reaper refreshes it) and the parent's usage as just read.
fn status_with(
    budget: &Resources,
    ledger: &Ledger,
    previous: Option<&HierarchicalResourceQuotaStatus>,
    parent_used: Resources,
) -> Result<HierarchicalResourceQuotaStatus, ResourcesError> {
    let mut usage = ObservedUsage {
        parent: parent_used,
        ..ObservedUsage::default()
    };
    for child in previous.map(|s| s.children.as_slice()).unwrap_or_default() {
        if ledger.entries.contains_key(&child.name) {
            usage
                .children
                .insert(child.name.clone(), Resources::parse(&child.used)?);
        }
    }
    status_for(budget, ledger, &usage)
}

/// `(status.hard, status.used)` once the quota controller has applied `spec.hard`.
fn synced(quota: &ResourceQuota) -> Option<(Resources, Resources)> {
    let spec = hard_of(quota).ok()?;
    let status = quota.status.as_ref()?;
    let applied = Resources::parse(status.hard.as_ref()?).ok()?;
    (applied == spec).then_some(())?;
    Some((applied, used_of(quota).ok()?))
}

/// Ledger and remainder writes that met a `409 Conflict` (another writer landed first) and
/// were tried again, since the process started. The API's metrics export it.
static CONFLICTS_RETRIED: AtomicU64 = AtomicU64::new(0);

/// See [`CONFLICTS_RETRIED`].
pub fn conflicts_retried() -> u64 {
    CONFLICTS_RETRIED.load(Ordering::Relaxed)
}

/// Per parent, the lock its ledger writers in this process take in turn.
type LedgerLocks = std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;
static LEDGER_LOCKS: LazyLock<LedgerLocks> = LazyLock::new(Default::default);

/// A turn at writing `parent`'s ledger, and whether another writer held it first (then the
/// budget read before must be read again).
async fn ledger_turn(parent: &str) -> (LedgerTurn, bool) {
    let lock = LEDGER_LOCKS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(parent.to_owned())
        .or_default()
        .clone();
    let (guard, waited) = match lock.clone().try_lock_owned() {
        Ok(guard) => (guard, false),
        Err(_) => (lock.clone().lock_owned().await, true),
    };
    let turn = LedgerTurn {
        parent: parent.to_owned(),
        lock,
        guard: Some(guard),
    };
    (turn, waited)
}

/// Held while writing one parent's ledger; forgets the parent's lock when nobody else holds it.
struct LedgerTurn {
    parent: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for LedgerTurn {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = LEDGER_LOCKS.lock().unwrap_or_else(PoisonError::into_inner);
        // The map's clone and ours: no writer waits for this parent.
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(&self.parent);
        }
    }
}

/// Whether the parent's lowered remainder is enforced yet (step 6).
enum Applied {
    /// `(status.hard, status.used)`, applied.
    Yes((Resources, Resources)),
    /// Our status write met a newer quota: read it again.
    Reread,
    /// Not yet: the quota controller applies it.
    Wait,
}

/// Set at the first 403 on a quota status write: this identity may not, so every later create
/// waits for the quota controller instead of asking again.
static STATUS_WRITE_FORBIDDEN: AtomicBool = AtomicBool::new(false);

/// `quota` with `status.hard` = `spec.hard`, when its `status.used` (as the quota controller
/// and admission keep it) already counts every resource of `spec.hard`: then the usage to check
/// is known. `None` for a quota never synced or with a resource not yet counted.
fn with_status_hard(quota: &ResourceQuota) -> Option<ResourceQuota> {
    let spec = quota.spec.as_ref()?.hard.clone()?;
    let status = quota.status.as_ref()?;
    let used = Resources::parse(status.used.as_ref()?).ok()?;
    Resources::parse(&spec)
        .ok()?
        .names()
        .all(|name| used.contains(name))
        .then_some(())?;
    let mut applying = quota.clone();
    applying.status = Some(ResourceQuotaStatus {
        hard: Some(spec),
        used: status.used.clone(),
    });
    Some(applying)
}

/// A short, jittered pause after a conflict, so racing writers spread out.
async fn backoff(attempt: u32) {
    use rand::Rng;
    CONFLICTS_RETRIED.fetch_add(1, Ordering::Relaxed);
    let ceiling = 10u64.saturating_mul(1 << attempt.min(5));
    let millis = rand::rng().random_range(1..=ceiling);
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceQuotaSpec;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn list(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, Quantity> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect()
    }

    type Pairs<'a> = &'a [(&'a str, &'a str)];

    fn quota(spec: Pairs<'_>, status: Option<(Pairs<'_>, Pairs<'_>)>) -> ResourceQuota {
        ResourceQuota {
            spec: Some(ResourceQuotaSpec {
                hard: Some(list(spec)),
                ..ResourceQuotaSpec::default()
            }),
            status: status.map(|(hard, used)| ResourceQuotaStatus {
                hard: Some(list(hard)),
                used: Some(list(used)),
            }),
            ..ResourceQuota::default()
        }
    }

    #[test]
    fn usage_counts_only_once_the_controller_applied_the_lowered_hard() {
        assert!(synced(&quota(&[("count/pods", "3")], None)).is_none());
        let stale = quota(
            &[("count/pods", "3")],
            Some((&[("count/pods", "5")], &[("count/pods", "4")])),
        );
        assert!(synced(&stale).is_none());
        // Same amounts, different spellings: applied.
        let applied = quota(
            &[("cpu", "1.5")],
            Some((&[("requests.cpu", "1500m")], &[("requests.cpu", "1")])),
        );
        let (hard, used) = synced(&applied).unwrap();
        assert_eq!(
            hard,
            used_of(&quota(&[], Some((&[], &[("cpu", "1500m")])))).unwrap()
        );
        assert_eq!(used.get("requests.cpu").to_string(), "1");
    }

    #[test]
    fn the_lowered_hard_is_applied_only_over_a_complete_usage() {
        // Never synced: wait for the controller's first count.
        assert!(with_status_hard(&quota(&[("count/pods", "3")], None)).is_none());
        // A budget resource the controller has not counted yet: wait.
        let uncounted = quota(
            &[("count/pods", "3"), ("requests.cpu", "1")],
            Some((&[("count/pods", "5")], &[("count/pods", "1")])),
        );
        assert!(with_status_hard(&uncounted).is_none());
        // Counted (`cpu` is `requests.cpu`): status.hard = spec.hard, used kept as read.
        let counted = quota(
            &[("count/pods", "3"), ("requests.cpu", "1")],
            Some((
                &[("count/pods", "5"), ("cpu", "2")],
                &[("count/pods", "1"), ("cpu", "250m")],
            )),
        );
        let applying = with_status_hard(&counted).unwrap();
        let (hard, used) = synced(&applying).unwrap();
        assert_eq!(hard.get("count/pods").to_string(), "3");
        assert_eq!(used.get("requests.cpu").to_string(), "250m");
        assert_eq!(applying.spec, counted.spec);
    }

    #[tokio::test]
    async fn ledger_writers_of_one_parent_take_turns_and_the_lock_is_forgotten() {
        let (first, waited) = ledger_turn("turns-a").await;
        assert!(!waited);
        // Another parent is not held up.
        let (other, waited) = ledger_turn("turns-b").await;
        assert!(!waited);
        drop(other);
        let second = tokio::spawn(async { ledger_turn("turns-a").await.1 });
        tokio::task::yield_now().await;
        assert!(!second.is_finished());
        drop(first);
        assert!(second.await.unwrap(), "the second writer waited");
        let locks = LEDGER_LOCKS.lock().unwrap();
        assert!(!locks.contains_key("turns-a") && !locks.contains_key("turns-b"));
    }
}
