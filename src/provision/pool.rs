//! The provisioner's half of the warm pool (issue 16): a create that a ready member already
//! satisfies (same pool, no quota asked, no caller to bind) LISTs a few members of its pool,
//! claims one with one conditional write ([`crate::rules::pool::claim_patch`]: the member's
//! resourceVersion as precondition, so two claimers never get the same namespace), then
//! requests the token: two sequential round trips after the LIST instead of three plus copies.
//! A 409 (another claimer won) tries the next member; an empty pool, or any failure before the
//! claim, is a miss and the caller goes on with a cold create. Authorization, the tenant's
//! limit and a child's placement are checked before, exactly as for a cold create.
//! Decisions come from [`crate::rules::pool`]; calls go through [`crate::k8s`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::Namespace;

use kube::ResourceExt;
use rand::seq::SliceRandom;
use tracing::{info, warn};

use super::parent::Placement;
use super::{ProvisionError, Provisioned, Provisioner};
use crate::k8s::{self, IssuedToken, TokenRequestError};
use crate::rules::desired::{Owner, desired_set_for};
use crate::rules::hierarchy::keys::PARENT_UID_ANNOTATION;
use crate::rules::params::{Expiry, ServerUrl};
use crate::rules::pool::{self, MAX_POOL_SIZE, Member, PoolKey, READY, claimable};

/// Members one LIST reads: every ready member of a pool (at most [`MAX_POOL_SIZE`], with room
/// for a surplus the reaper has not trimmed yet), so that each claim in this process gets a
/// member of its own and replicas, each shuffling its own list, rarely pick the same one.
const LIST_LIMIT: u32 = 2 * MAX_POOL_SIZE;

/// A hit that leaves fewer cached members than this lists the pool again, off its path.
const LOW_WATER: usize = 8;

/// A member handed to a claim stays out of later LISTs for this long: a LIST sent before the
/// claim's write landed still shows it ready, and would cost the next claim a 409.
const HANDED_OUT_SECS: i64 = 60;

/// A member that expires sooner than this is not worth a conditional write: the reaper may
/// be deleting it (its precondition would make one of the two fail anyway).
const MIN_MEMBER_LIFE_SECS: i64 = 30;

/// Claims and misses per pool (its parent, or `(top-level)`), in this process.
static COUNTS: Mutex<BTreeMap<String, PoolCounts>> = Mutex::new(BTreeMap::new());

/// What the creates that tried one pool came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolCounts {
    /// Creates answered with a claimed member.
    pub claims: u64,
    /// Creates that found no member to claim and created cold.
    pub misses: u64,
}

/// Claims and misses by pool, in this process.
pub fn counts() -> Vec<(String, PoolCounts)> {
    let counts = COUNTS.lock().unwrap_or_else(PoisonError::into_inner);
    counts.iter().map(|(pool, c)| (pool.clone(), *c)).collect()
}

pub(crate) fn count(pool: &str, count: impl FnOnce(&mut PoolCounts)) {
    let mut counts = COUNTS.lock().unwrap_or_else(PoisonError::into_inner);
    count(counts.entry(pool.to_owned()).or_default());
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
#[derive(Clone)]
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

/// One pool's members as this process last listed them.
#[derive(Default)]
struct PoolCache {
    /// Members not handed to a claim yet, shuffled; claims take from the end.
    queue: Vec<Member>,
    /// Members handed to a claim, and when (Unix seconds).
    handed_out: HashMap<String, i64>,
    /// LISTs stored so far: a claim that waited for another claim's LIST sees it changed.
    generation: u64,
    /// Held while the pool is listed: one LIST at a time per pool and process.
    listing: Arc<tokio::sync::Mutex<()>>,
}

/// Ready members listed and not claimed yet, per pool (this process only). Each claim takes a
/// member no other claim in this process holds, so concurrent creates in one replica never
/// race each other; a member another replica claimed meanwhile costs one 409. The cache only
/// saves LISTs: the claim's resourceVersion precondition is what makes a claim exclusive.
#[derive(Clone, Default)]
pub(super) struct Candidates(Arc<Mutex<HashMap<PoolKey, PoolCache>>>);

impl Candidates {
    fn with<T>(&self, key: &PoolKey, f: impl FnOnce(&mut PoolCache) -> T) -> T {
        let mut pools = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(pools.entry(key.clone()).or_default())
    }

    /// The next cached member of `key` still worth claiming at `now`, handed out.
    fn take(&self, key: &PoolKey, now: i64) -> Option<Member> {
        self.with(key, |pool| {
            while let Some(member) = pool.queue.pop() {
                if !claimable(std::slice::from_ref(&member), now, MIN_MEMBER_LIFE_SECS).is_empty() {
                    pool.handed_out.insert(member.name.clone(), now);
                    return Some(member);
                }
            }
            None
        })
    }

    /// Replace `key`'s members with a fresh LIST, less those handed out lately, shuffled.
    fn store(&self, key: &PoolKey, listed: &[Member], now: i64) {
        self.with(key, |pool| {
            pool.handed_out.retain(|_, at| now - *at < HANDED_OUT_SECS);
            let mut queue: Vec<Member> = claimable(listed, now, MIN_MEMBER_LIFE_SECS)
                .into_iter()
                .filter(|m| !pool.handed_out.contains_key(&m.name))
                .cloned()
                .collect();
            queue.shuffle(&mut rand::rng());
            pool.queue = queue;
            pool.generation += 1;
        });
    }

    fn generation(&self, key: &PoolKey) -> (u64, Arc<tokio::sync::Mutex<()>>) {
        self.with(key, |pool| (pool.generation, pool.listing.clone()))
    }

    fn len(&self, key: &PoolKey) -> usize {
        self.with(key, |pool| pool.queue.len())
    }
}

/// What one claim attempt came to.
enum Attempt {
    /// The member is ours; its token was requested alongside the claim.
    Won(Box<Namespace>, Result<IssuedToken, TokenRequestError>),
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
        let mut listed = false;
        let (claimed, issued) = loop {
            let Some(member) = self.next_candidate(&from, &mut listed).await else {
                return Ok(self.missed(&pool_name));
            };
            match self.attempt(&member, owner, expiry).await {
                Attempt::Won(claimed, issued) => break (claimed, issued),
                Attempt::Lost => {}
                Attempt::Failed => return Ok(self.missed(&pool_name)),
            }
        };
        if self.pool_candidates.len(&from.key) < LOW_WATER {
            self.refresh_in_background(from);
        }
        let name = claimed.name_any();
        let uid = claimed.uid().unwrap_or_default();
        let issued = match issued {
            Ok(issued) => issued,
            Err(err) => {
                warn!(namespace = %name, error = %err, "issuing credentials for a claimed member failed; deleting the namespace");
                if let Err(rollback) = k8s::delete_namespace(&self.client, &name, &uid).await {
                    warn!(namespace = %name, error = %rollback, "rollback failed; the reaper will remove it at expiry");
                }
                return Err(err.into());
            }
        };
        let set = desired_set_for(&name, owner, expiry, &self.set_config());
        let mut done = self.credentials(&set, &uid, expiry, server.clone(), issued);
        done.pool = Some("hit");
        count(&pool_name, |c| c.claims += 1);
        info!(namespace = %name, tenant = %owner.tenant, owner = owner.user.as_deref(), expiry = %expiry,
            pool = "hit", from = %pool_name, "namespace created");
        Ok(Some(done))
    }

    /// The claim's conditional write and the member's TokenRequest, sent together: a hit costs
    /// one round trip instead of two. A token for a member another claimer won is dropped
    /// unread; it never leaves this process, and this process may issue that token anyway.
    async fn attempt(&self, member: &Member, owner: &Owner, expiry: Expiry) -> Attempt {
        let patch = pool::claim_patch(
            &member.name,
            &member.resource_version,
            owner,
            expiry,
            &self.set_config(),
        );
        let seconds = k8s::token_seconds(expiry.unix() - (self.clock)());
        let (claimed, issued) = tokio::join!(
            k8s::patch_namespace_if_unchanged(&self.client, &member.name, &patch),
            k8s::request_token(&self.client, &member.name, seconds),
        );
        match claimed {
            Ok(claimed) => Attempt::Won(Box::new(claimed), issued),
            Err(e) if e.is_gone() => Attempt::Lost,
            Err(error) => {
                warn!(namespace = %member.name, error = %error, "claiming a pool member failed; creating cold");
                Attempt::Failed
            }
        }
    }

    /// The next member to try: a cached one, else one from a fresh LIST (at most one per
    /// claim). One LIST at a time per pool: a claim that waited for another's LIST takes from
    /// its result instead of listing again.
    async fn next_candidate(&self, from: &ClaimFrom, listed: &mut bool) -> Option<Member> {
        if let Some(member) = self.pool_candidates.take(&from.key, (self.clock)()) {
            return Some(member);
        }
        if *listed {
            return None;
        }
        *listed = true;
        let (seen, gate) = self.pool_candidates.generation(&from.key);
        let _listing = gate.lock().await;
        if self.pool_candidates.generation(&from.key).0 == seen {
            self.refresh(from).await;
        }
        self.pool_candidates.take(&from.key, (self.clock)())
    }

    /// List the pool again after a hit left few candidates, unless a LIST is under way.
    fn refresh_in_background(&self, from: ClaimFrom) {
        let (_, gate) = self.pool_candidates.generation(&from.key);
        let Ok(listing) = gate.try_lock_owned() else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            this.refresh(&from).await;
            drop(listing);
        });
    }

    /// Store the pool's ready members (of the same parent, for a child's pool). A failed LIST
    /// stores nothing and is logged: the claims waiting on it go cold.
    async fn refresh(&self, from: &ClaimFrom) {
        let selector = pool::member_selector(&self.config.set.selector, &from.key, Some(READY));
        let listed = match k8s::list_namespaces_page(&self.client, &selector, LIST_LIMIT, None).await {
            Ok((items, _)) => items,
            Err(error) => {
                warn!(pool = %from.key.name(), error = %error, "listing the pool failed");
                return;
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
        self.pool_candidates.store(&from.key, &members, (self.clock)());
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
        count(pool_name, |c| c.misses += 1);
        info!(pool = "miss", from = %pool_name, "no pool member to claim; creating cold");
        None
    }
}
