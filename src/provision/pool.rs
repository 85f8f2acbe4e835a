//! The provisioner's half of the warm pool (issue 16): a create that a ready member already
//! satisfies (same pool, no quota asked, no caller to bind) LISTs a few members of its pool,
//! claims one with one conditional write ([`crate::rules::pool::claim_patch`]: the member's
//! resourceVersion as precondition, so two claimers never get the same namespace), then
//! requests the token: two sequential round trips after the LIST instead of three plus copies.
//! A 409 (another claimer won) tries the next member; an empty pool, or any failure before the
//! claim, is a miss and the caller goes on with a cold create. Authorization, the tenant's
//! limit and a child's placement are checked before, exactly as for a cold create.
//! Decisions come from [`crate::rules::pool`]; calls go through [`crate::k8s`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::Namespace;

use kube::ResourceExt;
use tracing::{info, warn};

use super::parent::Placement;
use super::{ProvisionError, Provisioned, Provisioner};
use crate::k8s;
use crate::rules::desired::{Owner, desired_set_for};
use crate::rules::hierarchy::keys::PARENT_UID_ANNOTATION;
use crate::rules::params::{Expiry, ServerUrl};
use crate::rules::pool::{self, Member, PoolKey, READY, claim_order};

/// Members one claim LISTs: enough that concurrent claimers starting at random places rarely
/// collide, few enough that the LIST stays small whatever the pool's size.
const CANDIDATES: u32 = 8;

/// A member that expires sooner than this is not worth a conditional write: the reaper may
/// be deleting it (its precondition would make one of the two fail anyway).
const MIN_MEMBER_LIFE_SECS: i64 = 30;

static CLAIMS: AtomicU64 = AtomicU64::new(0);
static MISSES: AtomicU64 = AtomicU64::new(0);

/// Creates answered with a claimed pool member, in this process.
pub fn claims() -> u64 {
    CLAIMS.load(Ordering::Relaxed)
}

/// Creates that tried a pool and found no member to claim, in this process.
pub fn misses() -> u64 {
    MISSES.load(Ordering::Relaxed)
}

/// A cold create after a pool miss, marked so for the audit line.
pub(super) fn missed_then(
    created: Result<Provisioned, ProvisionError>,
) -> Result<Provisioned, ProvisionError> {
    created.map(|mut done| {
        done.pool = Some("miss");
        done
    })
}

/// Where a claim looks, and what it must match.
pub(super) struct ClaimFrom {
    key: PoolKey,
    /// A child's member must still belong to this parent (its uid annotation).
    parent_uid: Option<String>,
}

impl ClaimFrom {
    pub fn top_level() -> Self {
        Self {
            key: PoolKey::TopLevel,
            parent_uid: None,
        }
    }

    pub fn child_of(placement: &Placement) -> Self {
        Self {
            key: PoolKey::Parent(placement.parent_name.clone()),
            parent_uid: Some(placement.parent.uid().unwrap_or_default()),
        }
    }
}

/// Members listed by an earlier claim and not claimed by it, per pool (this process only).
/// A claim pops one and patches it at once: the LIST is then off the request's path, and
/// concurrent claims in one process never race for the same member. A member someone else
/// claimed meanwhile costs one 409; a stale list is never trusted for more than that.
#[derive(Clone, Default)]
pub(super) struct Candidates(Arc<Mutex<HashMap<PoolKey, Vec<Member>>>>);

impl Candidates {
    /// A candidate of `key` still live for a while at `now`, taken out of the cache.
    fn pop(&self, key: &PoolKey, now: i64) -> Option<Member> {
        let mut cache = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let members = cache.get_mut(key)?;
        while let Some(member) = members.pop() {
            if !claim_order(std::slice::from_ref(&member), now, MIN_MEMBER_LIFE_SECS, 0).is_empty() {
                return Some(member);
            }
        }
        None
    }

    /// Replace `key`'s candidates.
    fn put(&self, key: &PoolKey, members: Vec<Member>) {
        let mut cache = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        cache.insert(key.clone(), members);
    }

    fn is_empty(&self, key: &PoolKey) -> bool {
        let cache = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        cache.get(key).is_none_or(Vec::is_empty)
    }
}

/// What one conditional write of a claim came to.
enum Attempt {
    Won(Box<Namespace>),
    /// Another claimer (or the reaper) changed or removed it first.
    Lost,
    /// Any other failure: stop trying, create cold.
    Failed,
}

impl Provisioner {
    /// Claim a ready member for `owner` until `expiry` and issue its credentials. `Ok(None)`:
    /// nothing was claimed (empty pool, every candidate taken, or the LIST failed): create
    /// cold. After a claim, a failure deletes the namespace, as a cold create rolls back.
    pub(super) async fn claim(
        &self,
        from: ClaimFrom,
        owner: &Owner,
        expiry: Expiry,
        server: &Option<ServerUrl>,
    ) -> Result<Option<Provisioned>, ProvisionError> {
        let pool_name = from.key.name().to_owned();
        let set_config = self.set_config();
        let attempt = |member: Member| {
            let patch = pool::claim_patch(&member.name, &member.resource_version, owner, expiry, &set_config);
            async move {
                match k8s::patch_namespace_if_unchanged(&self.client, &member.name, &patch).await {
                    Ok(claimed) => Attempt::Won(Box::new(claimed)),
                    Err(e) if e.is_gone() => Attempt::Lost,
                    Err(error) => {
                        warn!(namespace = %member.name, error = %error, "claiming a pool member failed; creating cold");
                        Attempt::Failed
                    }
                }
            }
        };
        let mut won = None;
        // Candidates an earlier LIST left: no LIST on this request's path.
        while let Some(member) = self.pool_candidates.pop(&from.key, (self.clock)()) {
            match attempt(member).await {
                Attempt::Won(ns) => {
                    won = Some(ns);
                    break;
                }
                Attempt::Lost => {}
                Attempt::Failed => return Ok(self.missed(&pool_name)),
            }
        }
        if won.is_none() {
            let mut listed = self.list_candidates(&from).await.into_iter();
            for member in listed.by_ref() {
                match attempt(member).await {
                    Attempt::Won(ns) => {
                        won = Some(ns);
                        break;
                    }
                    Attempt::Lost => {}
                    Attempt::Failed => return Ok(self.missed(&pool_name)),
                }
            }
            self.pool_candidates.put(&from.key, listed.collect());
        }
        let Some(claimed) = won else {
            return Ok(self.missed(&pool_name));
        };
        if self.pool_candidates.is_empty(&from.key) {
            // The next claim finds candidates waiting; off this request's path.
            let this = self.clone();
            let key = from.key.clone();
            tokio::spawn(async move {
                let members = this
                    .list_candidates(&ClaimFrom {
                        key: key.clone(),
                        ..from
                    })
                    .await;
                this.pool_candidates.put(&key, members);
            });
        }
        let name = claimed.name_any();
        let uid = claimed.uid().unwrap_or_default();
        let set = desired_set_for(&name, owner, expiry, &set_config);
        match self.issue(&set, &uid, expiry, server.clone()).await {
            Ok(mut done) => {
                done.pool = Some("hit");
                CLAIMS.fetch_add(1, Ordering::Relaxed);
                info!(namespace = %name, tenant = %owner.tenant, owner = owner.user.as_deref(), expiry = %expiry,
                    pool = "hit", from = %pool_name, "namespace created");
                Ok(Some(done))
            }
            Err(err) => {
                warn!(namespace = %name, error = %err, "issuing credentials for a claimed member failed; deleting the namespace");
                if let Err(rollback) = k8s::delete_namespace(&self.client, &name, &uid).await {
                    warn!(namespace = %name, error = %rollback, "rollback failed; the reaper will remove it at expiry");
                }
                Err(err)
            }
        }
    }

    /// Up to [`CANDIDATES`] ready members of the pool, in the order a claim tries them (from a
    /// random start); none when the LIST fails (logged: the create goes cold).
    async fn list_candidates(&self, from: &ClaimFrom) -> Vec<Member> {
        let selector = pool::member_selector(&self.config.set.selector, &from.key, Some(READY));
        let listed = match k8s::list_namespaces_page(&self.client, &selector, CANDIDATES, None).await {
            Ok((items, _)) => items,
            Err(error) => {
                warn!(pool = %from.key.name(), error = %error, "listing the pool failed");
                return Vec::new();
            }
        };
        let members: Vec<Member> = listed
            .iter()
            .filter(|ns| match &from.parent_uid {
                Some(uid) => ns.annotations().get(PARENT_UID_ANNOTATION) == Some(uid),
                None => true,
            })
            .map(Member::of)
            .collect();
        let start = {
            use rand::Rng;
            rand::rng().random_range(0..usize::MAX)
        };
        claim_order(&members, (self.clock)(), MIN_MEMBER_LIFE_SECS, start)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Whether the placed child's parent asks for a pool the reaper keeps: a valid, non-zero
    /// pool size and no aggregate budget (members hold no allocation, see docs/pool.md). A
    /// failed budget read says no: the cold path then reads it again and reports.
    pub(super) async fn parent_keeps_pool(&self, placement: &Placement) -> bool {
        let parent = placement.parent_name.as_str();
        if !matches!(pool::parent_pool_size(parent, placement.parent.annotations()), Ok(size) if size > 0) {
            return false;
        }
        match k8s::list_budgets(&self.client, parent).await {
            Ok(budgets) => budgets.is_empty(),
            // The CRD is not installed: no parent has a budget.
            Err(e) => e.is_not_found(),
        }
    }

    fn missed(&self, pool_name: &str) -> Option<Provisioned> {
        MISSES.fetch_add(1, Ordering::Relaxed);
        info!(pool = "miss", from = %pool_name, "no pool member to claim; creating cold");
        None
    }
}
