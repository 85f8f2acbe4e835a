//! The aggregate quota in a create (issue 12): reserve the child's allocation in the parent's
//! HierarchicalResourceQuota ledger with optimistic concurrency, lower the parent's remainder
//! quota and re-check its usage, then (after the namespace exists) the child's allocation
//! quota, and confirm or release. The steps and why their order is safe are in the module docs
//! of [`crate::rules::quota`]; every decision is made there, every call goes through [`crate::k8s`].

use std::time::Duration;

use k8s_openapi::api::core::v1::ResourceQuota;
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
        for attempt in 0..LEDGER_ATTEMPTS {
            let Some(mut hrq) = self.budget_of(parent, ask.is_some()).await? else {
                return Ok(None);
            };
            let budget_name = hrq.name_any();
            let unreadable = |source| ProvisionError::BudgetUnreadable {
                parent: parent.to_owned(),
                budget: budget_name.clone(),
                source,
            };
            let budget = self.effective_budget(parent, &hrq).await?;
            let default = hrq.spec.default_allocation().map_err(unreadable)?;
            let allocation =
                resolve_allocation(&budget, &default, ask).map_err(|source| ProvisionError::Allocation {
                    parent: parent.to_owned(),
                    source,
                })?;
            let parent_used = self
                .read_quota(parent, REMAINDER_QUOTA)
                .await?
                .map(|q| used_of(&q))
                .transpose()
                .map_err(unreadable)?
                .unwrap_or_default();
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
            match k8s::replace_budget_status(&self.client, &hrq).await {
                Ok(_) => {}
                Err(e) if e.is_conflict() => {
                    backoff(attempt).await;
                    continue;
                }
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
            };
            let checked = async {
                self.write_remainder(&reservation, &budget, &next).await?;
                self.check_parent_usage(parent).await
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

    /// `spec.hard`, clamped by the parent's own allocation when it is itself a child in a
    /// quota tree (grandchildren allocate from their parent's allocation).
    async fn effective_budget(
        &self,
        parent: &str,
        hrq: &HierarchicalResourceQuota,
    ) -> Result<Resources, ProvisionError> {
        let unreadable = |source| ProvisionError::BudgetUnreadable {
            parent: parent.to_owned(),
            budget: hrq.name_any(),
            source,
        };
        let hard = hrq.spec.budget().map_err(unreadable)?;
        let inherited = self
            .read_quota(parent, ALLOCATION_QUOTA)
            .await?
            .map(|q| hard_of(&q))
            .transpose()
            .map_err(unreadable)?;
        Ok(effective_budget(&hard, inherited.as_ref()))
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
    /// it (a slow writer must never raise it back).
    async fn write_remainder(
        &self,
        reservation: &Reservation,
        budget: &Resources,
        ledger: &Ledger,
    ) -> Result<(), ProvisionError> {
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
            let live = self.read_quota(parent, REMAINDER_QUOTA).await?;
            let written = match &live {
                Some(live) if !ledger::remainder_is_newer(ledger_revision_of(live), ledger.revision) => {
                    return Ok(());
                }
                Some(live) => {
                    desired.metadata.resource_version = live.resource_version();
                    k8s::replace_quota(&self.client, parent, &desired).await
                }
                None => k8s::create_quota(&self.client, parent, &desired).await,
            };
            match written {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() => backoff(attempt).await,
                Err(source) => return Err(write_error(source)),
            }
        }
        Err(ProvisionError::LedgerContended {
            parent: parent.to_owned(),
        })
    }

    /// Step 6: once the quota controller has applied the lowered remainder (admission checks
    /// `status.hard`), everything the parent runs is in `status.used`; it must fit.
    async fn check_parent_usage(&self, parent: &str) -> Result<(), ProvisionError> {
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            if let Some(quota) = self.read_quota(parent, REMAINDER_QUOTA).await?
                && let Some((hard, used)) = synced(&quota)
            {
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
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
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
    pub(super) async fn confirm(&self, reservation: &Reservation, uid: &str) {
        self.update_ledger(reservation, |ledger| {
            ledger::confirm(ledger, &reservation.child, uid)
        })
        .await;
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
        for attempt in 0..LEDGER_ATTEMPTS {
            let Some(mut hrq) = self.budget_of(parent, false).await? else {
                return Ok(());
            };
            let unreadable = |source| ProvisionError::BudgetUnreadable {
                parent: parent.to_owned(),
                budget: hrq.name_any(),
                source,
            };
            let ledger = ledger_from_status(hrq.status.as_ref()).map_err(unreadable)?;
            let Some(next) = transition(&ledger) else {
                return Ok(());
            };
            let budget = self.effective_budget(parent, &hrq).await?;
            let parent_used = self
                .read_quota(parent, REMAINDER_QUOTA)
                .await?
                .map(|q| used_of(&q))
                .transpose()
                .map_err(unreadable)?
                .unwrap_or_default();
            hrq.status =
                Some(status_with(&budget, &next, hrq.status.as_ref(), parent_used).map_err(unreadable)?);
            match k8s::replace_budget_status(&self.client, &hrq).await {
                Ok(_) => return self.write_remainder(reservation, &budget, &next).await,
                Err(e) if e.is_conflict() => backoff(attempt).await,
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

/// A short, jittered pause after a conflict, so racing writers spread out.
async fn backoff(attempt: u32) {
    use rand::Rng;
    let ceiling = 10u64.saturating_mul(1 << attempt.min(5));
    let millis = rand::rng().random_range(1..=ceiling);
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ResourceQuotaSpec, ResourceQuotaStatus};
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
}
