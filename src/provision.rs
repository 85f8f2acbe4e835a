//! The provisioning pipeline: create, list, get, extend and delete managed
//! sets, each scoped to one caller ([`Identity`]): a static-token tenant sees
//! its own; a Kubernetes user sees its own plus what RBAC grants it
//! (SubjectAccessReview, cluster-wide for top-level namespaces, in the parent
//! for children). Decides with [`crate::rules`], does every Kubernetes call
//! through [`crate::k8s`], reads the time from its [`Clock`].

mod parent;
mod pool;
mod quota;
mod view;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::config::Kubeconfig;
use kube::{Client, ResourceExt};
use serde::Serialize;
use thiserror::Error;
use tracing::{info, warn};

#[cfg(test)]
pub(crate) use pool::count as count_pool;
pub use pool::{PoolCounts, counts as pool_counts};
pub use quota::conflicts_retried as quota_conflicts_retried;
pub use view::{NamespaceView, ObjectRef, QuotaView};

use crate::clock::{Clock, system_clock};
use crate::k8s::{self, ApplyError, KubeError, ResolveKindsError, TokenRequestError};
use crate::propagate::{self, Destination, Propagation, SyncListError};
use crate::reload::Live;
use crate::rules::auth::{Identity, Right, Verb};
use crate::rules::desired::{DesiredSet, Owner, SetConfig, desired_set_for, namespace_to_create_for};
use crate::rules::hierarchy::config::PropagationConfig;
use crate::rules::hierarchy::tree::{DepthError, ParentAnnotationError, TooManyChildren};
use crate::rules::kubeconfig::{self, Credentials};
use crate::rules::labels::{self, OWNER_ANNOTATION, TENANT_LABEL};
use crate::rules::params::{
    Expiry, NamePrefix, ServerUrl, TenantName, Ttl, TtlError, TtlPolicy, is_dns_label,
};
use crate::rules::quota::allocation::{AllocationError, Refusal};
use crate::rules::quota::ledger;
use crate::rules::quota::resources::{Resources, ResourcesError};

mod authorize;

/// What the provisioner needs besides a client.
#[derive(Debug, Clone)]
pub struct ProvisionerConfig {
    pub set: SetConfig,
    pub ttl: TtlPolicy,
    pub prefix: NamePrefix,
    /// Server written into kubeconfigs when the caller names none.
    pub server: ServerUrl,
    /// CA written into kubeconfigs; `None` leaves it to the system roots.
    pub ca_pem: Option<Vec<u8>>,
    pub max_namespaces_per_tenant: Option<u32>,
    pub page_size: u32,
    /// Deepest a child may sit below its top-most ancestor (`--max-depth`; a root is at 0).
    pub max_depth: usize,
    /// What propagates from ancestors into a new child (`--propagation-config`); its kinds are
    /// resolved through discovery at the first child create, not at start-up, so a cold start
    /// (Lambda) pays nothing for it.
    pub propagation: PropagationConfig,
}

/// What a create asks for beyond the tenant. Parsed and validated at the edge.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub ttl: Option<Ttl>,
    pub server: Option<ServerUrl>,
    /// Create a sub-namespace of this parent (a DNS label).
    pub parent: Option<String>,
    /// The allocation asked from the parent's budget (else its `defaultAllocation`).
    pub quota: Option<Resources>,
    /// Also bind a Kubernetes caller's own user to the grant ClusterRole inside it.
    pub bind_caller: bool,
}

#[derive(Clone)]
pub struct Provisioner {
    client: Client,
    config: Arc<ProvisionerConfig>,
    clock: Clock,
    /// `config.propagation` resolved against the API server, once.
    propagation: Arc<tokio::sync::OnceCell<Propagation>>,
    /// `--certificate-authority` as it is now (else `config.ca_pem`).
    live_ca: Option<Live<Vec<u8>>>,
    /// `--role-rules-file` as it is now (else `config.set.role_rules`).
    live_role_rules: Option<Live<Vec<PolicyRule>>>,
    /// `--claim-from-pool`: top-level creates try the reaper's warm pool first (issue 16).
    claim_top_level: bool,
    /// Pool members listed but not claimed yet, per pool: the next claim tries them first.
    pool_candidates: pool::Candidates,
}

/// A managed namespace as a tenant sees it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceInfo {
    pub name: String,
    /// The owner's tenant (`u-<hash>` for a Kubernetes user).
    pub tenant: String,
    /// Kubernetes username of the creator, when it was a Kubernetes identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// RFC 3339.
    pub created: Option<String>,
    /// RFC 3339; absent when the expiry label is missing or unreadable.
    pub expires_at: Option<String>,
    /// `Active` or `Terminating`.
    pub phase: String,
}

/// A namespace and the credentials to use it.
pub struct Provisioned {
    pub name: String,
    /// The namespace's uid (the precondition of a rollback).
    pub uid: String,
    pub expiry: Expiry,
    /// When the token in the kubeconfig expires (Unix seconds).
    pub token_expires_at: i64,
    pub kubeconfig: Kubeconfig,
    /// For the audit line: `Some("hit")` when a warm-pool member was claimed, `Some("miss")`
    /// when a pool was tried and the create went cold, `None` when no pool was tried.
    pub pool: Option<&'static str>,
}

#[derive(Debug, Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Ttl(#[from] TtlError),
    #[error("no namespace {name} belongs to you")]
    NotFound { name: String },
    #[error(
        "tenant {tenant} already has {limit} live namespaces, the most allowed; delete one or wait for one to expire"
    )]
    TooMany { tenant: String, limit: u32 },
    #[error("namespace {name} is being deleted and cannot be extended")]
    Terminating { name: String },
    #[error("count namespaces of tenant {tenant}")]
    CountNamespaces {
        tenant: String,
        #[source]
        source: KubeError,
    },
    #[error("create namespace")]
    CreateNamespace {
        #[source]
        source: KubeError,
    },
    #[error("create namespace: the API server returned no name")]
    NamespaceUnnamed,
    // Boxed: the largest variant, and every Result of this type carries its size.
    #[error(transparent)]
    ApplyContents(Box<ApplyError>),
    #[error("apply namespace {name}")]
    ApplyNamespace {
        name: String,
        #[source]
        source: KubeError,
    },
    #[error(transparent)]
    RequestToken(#[from] TokenRequestError),
    #[error("read namespace {name}")]
    ReadNamespace {
        name: String,
        #[source]
        source: KubeError,
    },
    #[error("list namespaces")]
    ListNamespaces {
        #[source]
        source: KubeError,
    },
    #[error("delete namespace {name}")]
    DeleteNamespace {
        name: String,
        #[source]
        source: KubeError,
    },
    #[error("create namespace: the provisioning task stopped")]
    TaskStopped,
    #[error(
        "{who} lacks the right {right}; an administrator grants it by binding the ClusterRole namespace-provisioner:creator (create) or namespace-provisioner:manager (list, get, patch, delete) to you, see docs/identity.md"
    )]
    Forbidden { who: String, right: Right },
    #[error("bindCaller needs a Kubernetes identity; a static tenant token has no user to bind")]
    BindNeedsUser,
    #[error("review the access of user {user}")]
    ReviewAccess {
        user: String,
        #[source]
        source: KubeError,
    },
    #[error("parent namespace {parent} does not exist; name an existing parent")]
    ParentNotFound { parent: String },
    #[error("parent namespace {parent} is being deleted; no new children can be created under it")]
    ParentTerminating { parent: String },
    #[error(
        "namespace {parent} is not a parent: it has no {annotation} annotation; ask an administrator to add one naming your tenant",
        annotation = crate::rules::hierarchy::keys::ALLOWED_TENANTS_ANNOTATION
    )]
    NotAParent { parent: String },
    #[error(
        "tenant {tenant} may not create children under {parent}: it is not in the parent's {annotation} annotation",
        annotation = crate::rules::hierarchy::keys::ALLOWED_TENANTS_ANNOTATION
    )]
    TenantNotAllowed { parent: String, tenant: String },
    #[error("parent {parent} is misconfigured; ask an administrator to fix it: {source}")]
    ParentAnnotation {
        parent: String,
        source: ParentAnnotationError,
    },
    #[error("{0}")]
    Depth(DepthError),
    #[error("{0}; delete one of its children or wait for one to expire")]
    TooManyChildren(TooManyChildren),
    #[error("ttl {requested} is above the maximum {max} of parent {parent}; ask for at most {max}")]
    AboveParentMaxTtl {
        parent: String,
        requested: String,
        max: String,
    },
    #[error(
        "a child may not outlive its parent: parent {parent} expires at {parent_expires_at}; ask for a ttl of at most {left}"
    )]
    BeyondParentExpiry {
        parent: String,
        parent_expires_at: String,
        left: String,
    },
    #[error("read parent namespace {parent}")]
    ReadParent {
        parent: String,
        #[source]
        source: KubeError,
    },
    #[error("list the children of {parent}")]
    ListChildren {
        parent: String,
        #[source]
        source: KubeError,
    },
    #[error("resolve the propagated kinds")]
    ResolveKinds(#[source] ResolveKindsError),
    #[error(transparent)]
    ListForCopies(#[from] SyncListError),
    #[error("copy {} object(s) from the ancestors into {namespace}: {}", failures.len(), failures.join("; "))]
    WriteCopies {
        namespace: String,
        failures: Vec<String>,
    },
    #[error("quota is an allocation from a parent's budget; name the parent too")]
    QuotaWithoutParent,
    #[error(
        "parent {parent} has no budget (HierarchicalResourceQuota) to allocate quota from; leave quota out or ask an administrator for a budget"
    )]
    NoBudget { parent: String },
    #[error("parent {parent} has several budgets ({}); an administrator must keep one", names.join(", "))]
    SeveralBudgets { parent: String, names: Vec<String> },
    #[error("budget {parent}/{budget} cannot be read; ask an administrator to fix it: {source}")]
    BudgetUnreadable {
        parent: String,
        budget: String,
        source: ResourcesError,
    },
    #[error("quota under parent {parent}: {source}")]
    Allocation { parent: String, source: AllocationError },
    #[error("parent {parent}: {refusal}")]
    QuotaRefused { parent: String, refusal: Refusal },
    #[error("the budget of {parent} is being changed by many creates at once; retry")]
    LedgerContended { parent: String },
    #[error("the quota of {namespace} was not applied by the quota controller in time")]
    QuotaNotSynced { namespace: String },
    #[error("the reservation under {parent} waited too long for its namespace")]
    ReservationExpired { parent: String },
    #[error("read the budget of {parent}")]
    ReadBudget {
        parent: String,
        #[source]
        source: KubeError,
    },
    #[error("write the quota ledger of {parent}")]
    WriteLedger {
        parent: String,
        #[source]
        source: KubeError,
    },
    #[error("read quota {namespace}/{name}")]
    ReadQuota {
        namespace: String,
        name: String,
        #[source]
        source: KubeError,
    },
    #[error("write quota {namespace}/{name}")]
    WriteQuota {
        namespace: String,
        name: String,
        #[source]
        source: KubeError,
    },
}

impl From<ApplyError> for ProvisionError {
    fn from(error: ApplyError) -> Self {
        Self::ApplyContents(Box::new(error))
    }
}

impl ProvisionError {
    /// Stable name for metric labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ttl(_) => "ttl",
            Self::NotFound { .. } => "not_found",
            Self::TooMany { .. } => "too_many",
            Self::Terminating { .. } => "terminating",
            Self::CountNamespaces { .. } => "count_namespaces",
            Self::CreateNamespace { .. } | Self::NamespaceUnnamed => "create_namespace",
            Self::ApplyContents(_) => "apply_contents",
            Self::ApplyNamespace { .. } => "apply_namespace",
            Self::RequestToken(_) => "request_token",
            Self::ReadNamespace { .. } => "read_namespace",
            Self::ListNamespaces { .. } => "list_namespaces",
            Self::DeleteNamespace { .. } => "delete_namespace",
            Self::TaskStopped => "task_stopped",
            Self::Forbidden { .. } => "forbidden",
            Self::BindNeedsUser => "bind_needs_user",
            Self::ReviewAccess { .. } => "review_access",
            Self::ParentNotFound { .. } => "parent_not_found",
            Self::ParentTerminating { .. } => "parent_terminating",
            Self::NotAParent { .. } => "not_a_parent",
            Self::TenantNotAllowed { .. } => "tenant_not_allowed",
            Self::ParentAnnotation { .. } => "parent_annotation",
            Self::Depth(_) => "too_deep",
            Self::TooManyChildren(_) => "too_many_children",
            Self::AboveParentMaxTtl { .. } => "above_parent_max_ttl",
            Self::BeyondParentExpiry { .. } => "beyond_parent_expiry",
            Self::ReadParent { .. } => "read_parent",
            Self::ListChildren { .. } => "list_children",
            Self::ResolveKinds(_) => "resolve_kinds",
            Self::ListForCopies(_) => "list_for_copies",
            Self::WriteCopies { .. } => "write_copies",
            Self::QuotaWithoutParent => "quota_without_parent",
            Self::NoBudget { .. } => "no_budget",
            Self::SeveralBudgets { .. } => "several_budgets",
            Self::BudgetUnreadable { .. } => "budget_unreadable",
            Self::Allocation { .. } => "allocation",
            Self::QuotaRefused { refusal, .. } => refusal.kind(),
            Self::LedgerContended { .. } => "ledger_contended",
            Self::QuotaNotSynced { .. } => "quota_not_synced",
            Self::ReservationExpired { .. } => "reservation_expired",
            Self::ReadBudget { .. } => "read_budget",
            Self::WriteLedger { .. } => "write_ledger",
            Self::ReadQuota { .. } => "read_quota",
            Self::WriteQuota { .. } => "write_quota",
        }
    }

    /// The API server did not answer (rather than refused): worth a retry.
    pub fn is_unavailable(&self) -> bool {
        self.api_error().is_some_and(KubeError::is_unavailable)
    }

    /// A concurrent change conflicted: worth a retry.
    pub fn is_conflict(&self) -> bool {
        self.api_error().is_some_and(KubeError::is_conflict)
    }

    /// The Kubernetes API error behind this one, if any.
    fn api_error(&self) -> Option<&KubeError> {
        match self {
            Self::CountNamespaces { source, .. }
            | Self::CreateNamespace { source }
            | Self::ApplyNamespace { source, .. }
            | Self::ReadNamespace { source, .. }
            | Self::ListNamespaces { source }
            | Self::DeleteNamespace { source, .. }
            | Self::ReviewAccess { source, .. }
            | Self::ReadParent { source, .. }
            | Self::ListChildren { source, .. }
            | Self::ReadBudget { source, .. }
            | Self::WriteLedger { source, .. }
            | Self::ReadQuota { source, .. }
            | Self::WriteQuota { source, .. } => Some(source),
            Self::ApplyContents(e) => Some(&e.source),
            Self::ListForCopies(e) => Some(&e.source),
            Self::ResolveKinds(ResolveKindsError::Discover { source, .. }) => Some(source),
            Self::RequestToken(TokenRequestError::Api { source, .. }) => Some(source),
            _ => None,
        }
    }
}

impl Provisioner {
    pub fn new(client: Client, config: ProvisionerConfig) -> Self {
        Self::with_clock(client, config, system_clock)
    }

    pub fn with_clock(client: Client, config: ProvisionerConfig, clock: Clock) -> Self {
        Self {
            client,
            config: Arc::new(config),
            clock,
            propagation: Arc::default(),
            live_ca: None,
            live_role_rules: None,
            claim_top_level: false,
            pool_candidates: pool::Candidates::default(),
        }
    }

    /// Top-level creates claim a member of the reaper's top-level pool when one is ready
    /// (`--claim-from-pool`); a child's create tries its parent's pool whenever the parent
    /// asks for one.
    pub fn with_pool_claims(mut self, top_level: bool) -> Self {
        self.claim_top_level = top_level;
        self
    }

    /// Write the CA of `ca` (a reloaded `--certificate-authority`) into kubeconfigs.
    pub fn with_live_ca(mut self, ca: Live<Vec<u8>>) -> Self {
        self.live_ca = Some(ca);
        self
    }

    /// Give new sets the Role of `rules` (a reloaded `--role-rules-file`).
    pub fn with_live_role_rules(mut self, rules: Live<Vec<PolicyRule>>) -> Self {
        self.live_role_rules = Some(rules);
        self
    }

    /// The set configuration with the role rules as they are now.
    fn set_config(&self) -> Cow<'_, SetConfig> {
        match &self.live_role_rules {
            None => Cow::Borrowed(&self.config.set),
            Some(rules) => {
                let mut set = self.config.set.clone();
                set.role_rules = Some(rules.get().as_ref().clone());
                Cow::Owned(set)
            }
        }
    }

    /// Readiness: whether the API server answers.
    pub async fn ping(&self) -> Result<(), KubeError> {
        k8s::ping(&self.client).await
    }

    fn tenant_selector(&self, tenant: &TenantName) -> String {
        labels::tenant_selector(&self.config.set.selector, tenant)
    }

    /// Create a namespace set for `who` and return its kubeconfig;
    /// `bind_caller` also binds a Kubernetes caller's user to the grant
    /// ClusterRole inside it.
    pub async fn create(
        &self,
        who: &Identity,
        ttl: Option<Ttl>,
        server: Option<ServerUrl>,
        bind_caller: bool,
    ) -> Result<Provisioned, ProvisionError> {
        self.create_with(
            who,
            CreateRequest {
                ttl,
                server,
                bind_caller,
                ..CreateRequest::default()
            },
        )
        .await
    }

    /// Create a namespace set (under a parent, if the request names one) and return its
    /// kubeconfig. RBAC (for a Kubernetes caller) is asked in the parent, or cluster-wide
    /// for a top-level namespace.
    ///
    /// The work after the Namespace is created runs in its own task, so a
    /// caller that disconnects cannot leave a half-made set: the task finishes
    /// it or rolls it back either way.
    pub async fn create_with(
        &self,
        who: &Identity,
        request: CreateRequest,
    ) -> Result<Provisioned, ProvisionError> {
        let CreateRequest {
            ttl,
            server,
            parent,
            quota,
            bind_caller,
        } = request;
        let username = who.kubernetes_user().map(|u| u.username.clone());
        if bind_caller && username.is_none() {
            return Err(ProvisionError::BindNeedsUser);
        }
        if parent.is_none() && quota.is_some() {
            return Err(ProvisionError::QuotaWithoutParent);
        }
        self.authorize(who, Verb::Create, parent.as_deref()).await?;
        let owner = Owner {
            tenant: who.tenant().clone(),
            bound_user: username.clone().filter(|_| bind_caller),
            user: username,
        };
        let this = self.clone();
        match parent {
            None => {
                let ttl_secs = self.config.ttl.resolve(ttl)?;
                self.check_quota(who.tenant()).await?;
                let expiry = Expiry::after((self.clock)(), ttl_secs);
                self.detached(&owner.clone(), async move {
                    if this.claim_top_level && owner.bound_user.is_none() {
                        let from = pool::ClaimFrom::top_level();
                        if let Some(done) = this.claim(from, &owner, expiry, &server).await? {
                            return Ok(done);
                        }
                        return pool::missed_then(this.create_set(&owner, expiry, server).await);
                    }
                    this.create_set(&owner, expiry, server).await
                })
                .await
            }
            Some(parent) => {
                let placement = self
                    .place_child(who.tenant(), &parent, ttl, (self.clock)())
                    .await?;
                self.check_quota(who.tenant()).await?;
                self.detached(&owner.clone(), async move {
                    if quota.is_none()
                        && owner.bound_user.is_none()
                        && this.parent_keeps_pool(&placement).await
                    {
                        let from = pool::ClaimFrom::child_of(&placement);
                        if let Some(done) = this.claim(from, &owner, placement.expiry, &server).await? {
                            return Ok(done);
                        }
                        return pool::missed_then(this.create_child(&owner, placement, quota, server).await);
                    }
                    this.create_child(&owner, placement, quota, server).await
                })
                .await
            }
        }
    }

    /// Runs a create to its end in a task of its own: a caller that goes away (its request
    /// timed out and was answered 504, or the client hung up) must not cut a create
    /// half-way. If nobody waits for the answer when it is done, the create is rolled back:
    /// the caller never got the kubeconfig, and the namespace would count against the
    /// tenant until it expired.
    ///
    /// The task runs in the request's span (its request id), and a rollback writes the audit
    /// line of the create it undid (`outcome="rolled_back"`): the caller's own line never came,
    /// since its request ended first.
    async fn detached<F>(&self, owner: &Owner, create: F) -> Result<Provisioned, ProvisionError>
    where
        F: std::future::Future<Output = Result<Provisioned, ProvisionError>> + Send + 'static,
    {
        use tracing::Instrument as _;
        let (answer, waiting) = tokio::sync::oneshot::channel();
        let client = self.client.clone();
        let (tenant, caller) = (owner.tenant.to_string(), owner.user.clone());
        let run = async move {
            if let Err(Ok(done)) = answer.send(create.await) {
                warn!(namespace = %done.name, "the create finished after its caller went away; deleting the namespace");
                roll_back(&client, &done.name, &done.uid).await;
                info!(
                    audit = true,
                    action = "create",
                    namespace = %done.name,
                    tenant,
                    caller = caller.as_deref().unwrap_or(tenant.as_str()),
                    outcome = "rolled_back",
                    reason = "the caller went away (request timeout or hang-up) before the answer",
                    "audit"
                );
            }
        };
        tokio::spawn(run.in_current_span());
        waiting.await.map_err(|_| ProvisionError::TaskStopped)?
    }

    /// Best effort across replicas: two concurrent creates may both pass.
    ///
    /// One LIST of at most `limit + 1` of the tenant's namespaces decides it, whatever the
    /// tenant holds (issue 16): a further page is asked for only while the pages seen were
    /// full of namespaces that no longer count (expired or terminating), so the cost grows
    /// with those, never with the live ones.
    async fn check_quota(&self, tenant: &TenantName) -> Result<(), ProvisionError> {
        let Some(limit) = self.config.max_namespaces_per_tenant else {
            return Ok(());
        };
        let now = (self.clock)();
        let selector = self.tenant_selector(tenant);
        let wanted = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut live = 0;
        let mut next: Option<String> = None;
        loop {
            let (page, token) =
                k8s::list_namespaces_page(&self.client, &selector, limit.saturating_add(1), next.as_deref())
                    .await
                    .map_err(|source| ProvisionError::CountNamespaces {
                        tenant: tenant.to_string(),
                        source,
                    })?;
            live += page.iter().filter(|ns| is_live(ns, now)).count();
            if live >= wanted {
                return Err(ProvisionError::TooMany {
                    tenant: tenant.to_string(),
                    limit,
                });
            }
            match token {
                Some(token) => next = Some(token),
                None => return Ok(()),
            }
        }
    }

    async fn create_set(
        &self,
        owner: &Owner,
        expiry: Expiry,
        server: Option<ServerUrl>,
    ) -> Result<Provisioned, ProvisionError> {
        let tenant = &owner.tenant;
        // Labelled from the first write, so the reaper finds it if we die here. Named here
        // rather than by `generateName`: a create whose answer is lost (a reset connection,
        // an API server restart) is then found by name and rolled back.
        let mut namespace = namespace_to_create_for(&self.config.prefix, owner, expiry, &self.set_config());
        namespace.metadata.generate_name = None;
        namespace.metadata.name = Some(namespace_name(&self.config.prefix));
        let created = match k8s::create_namespace(&self.client, &namespace).await {
            Ok(created) => created,
            Err(source) => {
                settle_unanswered(&self.client, &namespace, &source);
                return Err(ProvisionError::CreateNamespace { source });
            }
        };
        let (Some(name), Some(uid)) = (created.metadata.name.clone(), created.metadata.uid.clone()) else {
            return Err(ProvisionError::NamespaceUnnamed);
        };
        let set = desired_set_for(&name, owner, expiry, &self.set_config());
        match self.complete(&set, &uid, expiry, server).await {
            Ok(done) => {
                info!(namespace = %name, %tenant, owner = owner.user.as_deref(), expiry = %expiry, "namespace created");
                Ok(done)
            }
            Err(err) => {
                warn!(namespace = %name, error = %err, "creating the set failed; deleting the namespace");
                roll_back(&self.client, &name, &uid).await;
                Err(err)
            }
        }
    }

    /// A child of `placement.parent`: named here rather than by `generateName`, because its
    /// own tree label (`<name>.tree...=0`) must be in the first write. Everything the child
    /// needs exists before this returns; any failure deletes the namespace.
    async fn create_child(
        &self,
        owner: &Owner,
        placement: parent::Placement,
        ask: Option<Resources>,
        server: Option<ServerUrl>,
    ) -> Result<Provisioned, ProvisionError> {
        let name = namespace_name(&self.config.prefix);
        let parent_name = placement.parent_name.as_str();
        // The allocation is reserved under the child's name before the namespace exists, so a
        // create that does not fit writes nothing.
        let reservation = self
            .reserve(parent_name, &name, ask.as_ref(), (self.clock)())
            .await?;
        if let Some(reservation) = &reservation
            && ledger::reservation_expired(
                reservation.reserved_at,
                (self.clock)(),
                quota::RESERVATION_GRACE_SECONDS,
            )
        {
            self.release(reservation, None).await;
            return Err(ProvisionError::ReservationExpired {
                parent: parent_name.to_owned(),
            });
        }
        let expiry = placement.expiry;
        let (tree_labels, annotations) = placement.metadata(&name);
        let tenant = &owner.tenant;
        let mut namespace = namespace_to_create_for(&self.config.prefix, owner, expiry, &self.set_config());
        namespace.metadata.generate_name = None;
        namespace.metadata.name = Some(name.clone());
        merge_into(&mut namespace.metadata.labels, tree_labels);
        merge_into(&mut namespace.metadata.annotations, annotations);
        let created = match k8s::create_namespace(&self.client, &namespace).await {
            Ok(created) => created,
            Err(source) => {
                settle_unanswered(&self.client, &namespace, &source);
                if let Some(reservation) = &reservation {
                    self.release(reservation, None).await;
                }
                return Err(ProvisionError::CreateNamespace { source });
            }
        };
        let Some(uid) = created.metadata.uid.clone() else {
            if let Some(reservation) = &reservation {
                self.release(reservation, None).await;
            }
            return Err(ProvisionError::NamespaceUnnamed);
        };
        let set = desired_set_for(&name, owner, expiry, &self.set_config());
        let labels = created.metadata.labels.clone().unwrap_or_default();
        let completed = async {
            if let Some(reservation) = &reservation {
                self.create_allocation_quota(reservation).await?;
            }
            // The set's own objects first: an ancestor's object of the same name is then a
            // conflict (reported) instead of a copy the set would overwrite.
            k8s::apply_contents(&self.client, &set).await?;
            self.copy_from_ancestors(&name, &labels, &placement.ancestors)
                .await?;
            self.issue(&set, &uid, expiry, server).await
        };
        match completed.await {
            Ok(done) => {
                if let Some(reservation) = &reservation {
                    self.confirm(reservation, &uid).await;
                }
                info!(namespace = %name, parent = %parent_name, %tenant, expiry = %expiry, "child namespace created");
                Ok(done)
            }
            Err(err) => {
                warn!(namespace = %name, error = %err, "creating the child failed; deleting the namespace");
                roll_back(&self.client, &name, &uid).await;
                if let Some(reservation) = &reservation {
                    self.release(reservation, Some(&uid)).await;
                }
                Err(err)
            }
        }
    }

    /// Write the new child's copies of its ancestors' objects, so the kubeconfig it gets works
    /// at once with every right a propagated RoleBinding gives (HNC leaves a window here).
    /// Conflicts and skips are logged; a failed write fails the create.
    async fn copy_from_ancestors(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        ancestors: &[String],
    ) -> Result<(), ProvisionError> {
        let propagation = self.propagation().await?;
        let destination = Destination { name, labels };
        let report = propagate::sync_namespace(
            &self.client,
            propagation,
            destination,
            ancestors,
            self.config.page_size,
        )
        .await?;
        for conflict in &report.conflicts {
            warn!(namespace = %name, kind = %conflict.kind, object = %conflict.name, source = %conflict.detail,
                "the child's own object has the name of an ancestor's: not copied");
        }
        if !report.failures.is_empty() {
            return Err(ProvisionError::WriteCopies {
                namespace: name.to_owned(),
                failures: report
                    .failures
                    .iter()
                    .map(|f| format!("{} {}: {}", f.kind, f.name, f.detail))
                    .collect(),
            });
        }
        Ok(())
    }

    /// Apply the namespace's contents and issue credentials.
    async fn complete(
        &self,
        set: &DesiredSet,
        uid: &str,
        expiry: Expiry,
        server: Option<ServerUrl>,
    ) -> Result<Provisioned, ProvisionError> {
        k8s::apply_contents(&self.client, set).await?;
        self.issue(set, uid, expiry, server).await
    }

    /// Credentials for a set whose contents exist.
    async fn issue(
        &self,
        set: &DesiredSet,
        uid: &str,
        expiry: Expiry,
        server: Option<ServerUrl>,
    ) -> Result<Provisioned, ProvisionError> {
        let name = set.namespace.name_any();
        let seconds = k8s::token_seconds(expiry.unix() - (self.clock)());
        let issued = k8s::request_token(&self.client, &name, seconds).await?;
        Ok(self.credentials(set, uid, expiry, server, issued))
    }

    /// The answer to a create: a kubeconfig around `issued`, trusting the live CA.
    fn credentials(
        &self,
        set: &DesiredSet,
        uid: &str,
        expiry: Expiry,
        server: Option<ServerUrl>,
        issued: k8s::IssuedToken,
    ) -> Provisioned {
        let name = set.namespace.name_any();
        let server = server.unwrap_or_else(|| self.config.server.clone());
        let live_ca = self.live_ca.as_ref().map(Live::get);
        let config = kubeconfig::build(Credentials {
            namespace: &name,
            server: &server,
            ca_pem: live_ca
                .as_deref()
                .map(Vec::as_slice)
                .or(self.config.ca_pem.as_deref()),
            token: issued.token,
        });
        Provisioned {
            name,
            uid: uid.to_owned(),
            expiry,
            token_expires_at: issued.expires_at,
            kubeconfig: config,
            pool: None,
        }
    }

    /// The caller's managed namespaces; for a Kubernetes user also those RBAC
    /// lets it `list` (cluster-wide, or in their parent).
    pub async fn list(&self, who: &Identity) -> Result<Vec<NamespaceInfo>, ProvisionError> {
        let Some(user) = who.kubernetes_user() else {
            let items = k8s::list_namespaces(
                &self.client,
                &self.tenant_selector(who.tenant()),
                self.config.page_size,
            )
            .await
            .map_err(|source| ProvisionError::ListNamespaces { source })?;
            return Ok(items.iter().map(info_of).collect());
        };
        self.list_for_user(who, user).await
    }

    /// Tenant of every live managed namespace (for the per-tenant gauge).
    pub async fn list_all_tenants(&self) -> Result<Vec<String>, ProvisionError> {
        let selector = self.config.set.selector.to_label_selector();
        let items = k8s::list_namespaces(&self.client, &selector, self.config.page_size)
            .await
            .map_err(|source| ProvisionError::ListNamespaces { source })?;
        Ok(items
            .iter()
            .filter(|ns| is_live(ns, (self.clock)()))
            .filter_map(|ns| ns.labels().get(TENANT_LABEL).cloned())
            .collect())
    }

    /// One of the caller's namespaces, or (for a Kubernetes user) one RBAC
    /// lets it `verb`; anything else is [`ProvisionError::NotFound`] (never
    /// telling whether it exists).
    async fn owned(&self, who: &Identity, name: &str, verb: Verb) -> Result<Namespace, ProvisionError> {
        let not_found = || ProvisionError::NotFound {
            name: name.to_owned(),
        };
        if !is_dns_label(name) {
            return Err(not_found());
        }
        let ns = k8s::get_namespace(&self.client, name)
            .await
            .map_err(|source| ProvisionError::ReadNamespace {
                name: name.to_owned(),
                source,
            })?
            .ok_or_else(not_found)?;
        if !labels::is_managed(&self.config.set.selector, ns.labels()) {
            return Err(not_found());
        }
        if labels::belongs_to(ns.labels(), who.tenant()) {
            return Ok(ns);
        }
        if self.may_touch(who, &ns, verb).await? {
            Ok(ns)
        } else {
            Err(not_found())
        }
    }

    pub async fn get(&self, who: &Identity, name: &str) -> Result<NamespaceInfo, ProvisionError> {
        self.owned(who, name, Verb::Get).await.map(|ns| info_of(&ns))
    }

    /// Delete one of the caller's namespaces (idempotent while it terminates).
    pub async fn delete(&self, who: &Identity, name: &str) -> Result<NamespaceInfo, ProvisionError> {
        let ns = self.owned(who, name, Verb::Delete).await?;
        let mut info = info_of(&ns);
        if ns.metadata.deletion_timestamp.is_none() {
            let uid = ns.uid().unwrap_or_default();
            match k8s::delete_namespace(&self.client, name, &uid).await {
                Ok(()) => info!(namespace = %name, by = %who, "namespace deleted"),
                // Gone already, or replaced by another object of the same name.
                Err(e) if e.is_gone() => {
                    return Err(ProvisionError::NotFound {
                        name: name.to_owned(),
                    });
                }
                Err(source) => {
                    return Err(ProvisionError::DeleteNamespace {
                        name: name.to_owned(),
                        source,
                    });
                }
            }
        }
        info.phase = "Terminating".to_owned();
        Ok(info)
    }

    /// Give one of the caller's namespaces `ttl` from now and fresh
    /// credentials. Its owner (and bound user) stay whoever created it.
    pub async fn extend(
        &self,
        who: &Identity,
        name: &str,
        ttl: Option<Ttl>,
        server: Option<ServerUrl>,
    ) -> Result<Provisioned, ProvisionError> {
        let ttl_secs = self.config.ttl.resolve(ttl)?;
        let ns = self.owned(who, name, Verb::Patch).await?;
        let owner =
            Owner::of(ns.labels(), ns.annotations()).unwrap_or_else(|| Owner::tenant(who.tenant().clone()));
        if ns.metadata.deletion_timestamp.is_some() {
            return Err(ProvisionError::Terminating {
                name: name.to_owned(),
            });
        }
        let expiry = self
            .check_extend_under_parent(&ns, (self.clock)(), ttl_secs)
            .await?;
        let set = desired_set_for(name, &owner, expiry, &self.set_config());
        k8s::apply_namespace(&self.client, &set.namespace)
            .await
            .map_err(|source| ProvisionError::ApplyNamespace {
                name: name.to_owned(),
                source,
            })?;
        let uid = ns.uid().unwrap_or_default();
        let done = self.complete(&set, &uid, expiry, server).await?;
        info!(namespace = %name, by = %who, expiry = %expiry, "namespace extended");
        Ok(done)
    }
}

/// `<prefix>-<8 random characters>` (every new namespace, top-level, child or warm-pool
/// member), from the alphabet `generateName` uses (no vowels, no look-alikes): 27^8 names,
/// so a collision is an AlreadyExists error, not worth a retry.
pub(crate) fn namespace_name(prefix: &NamePrefix) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    let suffix: String = (0..8)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    format!("{}-{suffix}", prefix.as_str())
}

fn merge_into(target: &mut Option<BTreeMap<String, String>>, extra: BTreeMap<String, String>) {
    target.get_or_insert_with(BTreeMap::new).extend(extra);
}

/// Counts against the tenant's limit: not being deleted, not yet expired
/// (an expired one merely awaits the reaper).
fn is_live(ns: &Namespace, now: i64) -> bool {
    let expired = labels::expiry_of(ns.labels()).is_some_and(|e| e.is_due(now));
    ns.metadata.deletion_timestamp.is_none() && !expired
}

fn info_of(ns: &Namespace) -> NamespaceInfo {
    let expiry = labels::expiry_of(ns.labels());
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    NamespaceInfo {
        name: ns.name_any(),
        tenant: ns.labels().get(TENANT_LABEL).cloned().unwrap_or_default(),
        owner: ns.annotations().get(OWNER_ANNOTATION).cloned(),
        created: ns.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()),
        expires_at: expiry.map(Expiry::rfc3339),
        phase: if terminating { "Terminating" } else { "Active" }.to_owned(),
    }
}

/// How long a rollback the API server could not take (unreachable, 5xx, 429)
/// is retried in the background: an API server restart or a reset connection
/// must not leave a half-made set (issue 15). Past it, the reaper finds the
/// namespace by its labels and completes it until its expiry.
const ROLLBACK_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(120);

/// Delete a namespace whose set could not be completed (uid precondition).
/// If the API server is unavailable, the deletion is retried in a task of
/// its own (backing off from 0.5 s to 10 s, for [`ROLLBACK_RETRY_FOR`]), so
/// the caller's error answer is not held up.
async fn roll_back(client: &Client, name: &str, uid: &str) {
    match k8s::delete_namespace(client, name, uid).await {
        Ok(()) => {}
        Err(e) if e.is_gone() => {}
        Err(e) if e.is_unavailable() => {
            warn!(namespace = %name, error = %e, "rollback failed; retrying in the background");
            let (client, name, uid) = (client.clone(), name.to_owned(), uid.to_owned());
            tokio::spawn(async move { retry_roll_back(&client, &name, &uid).await });
        }
        Err(e) => {
            warn!(namespace = %name, error = %e, "rollback failed; the reaper will complete the set and delete it at expiry");
        }
    }
}

/// How long after a create whose answer was lost the namespace may still appear: the API
/// server finishes (or abandons) a request it received within its own request timeout (60 s).
const UNANSWERED_CREATE_SETTLES: std::time::Duration = std::time::Duration::from_secs(65);

/// A Namespace create failed without a clear answer (the API server unavailable: the
/// request may have been carried out, its answer lost). In a task of its own, look the
/// name up until the API server answers; if the namespace exists and carries every label
/// of `namespace` (our first write, under a name drawn for this create), delete it.
fn settle_unanswered(client: &Client, namespace: &Namespace, error: &KubeError) {
    let Some(name) = namespace.metadata.name.clone() else {
        return;
    };
    if !error.is_unavailable() {
        return;
    }
    let client = client.clone();
    let labels = namespace.metadata.labels.clone().unwrap_or_default();
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let mut delay = std::time::Duration::from_millis(500);
        loop {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_secs(10));
            match k8s::get_namespace(&client, &name).await {
                Ok(Some(found)) => {
                    let have = found.metadata.labels.unwrap_or_default();
                    let ours = labels.iter().all(|(k, v)| have.get(k) == Some(v));
                    if let (true, Some(uid)) = (ours, found.metadata.uid) {
                        info!(namespace = %name, "a create whose answer was lost made this namespace; rolling it back");
                        roll_back(&client, &name, &uid).await;
                    }
                    return;
                }
                Ok(None) if started.elapsed() >= UNANSWERED_CREATE_SETTLES => return,
                Ok(None) => {}
                Err(e) if e.is_unavailable() && started.elapsed() < ROLLBACK_RETRY_FOR => {}
                Err(e) => {
                    warn!(namespace = %name, error = %e, "cannot tell whether a create whose answer was lost made this namespace; the reaper completes it and deletes it at expiry");
                    return;
                }
            }
        }
    });
}

async fn retry_roll_back(client: &Client, name: &str, uid: &str) {
    let deadline = tokio::time::Instant::now() + ROLLBACK_RETRY_FOR;
    let mut delay = std::time::Duration::from_millis(500);
    loop {
        tokio::time::sleep(delay).await;
        match k8s::delete_namespace(client, name, uid).await {
            Ok(()) => {
                info!(namespace = %name, "rolled back after retrying");
                return;
            }
            Err(e) if e.is_gone() => return,
            Err(e) if e.is_unavailable() && tokio::time::Instant::now() + delay < deadline => {
                delay = (delay * 2).min(std::time::Duration::from_secs(10));
            }
            Err(e) => {
                warn!(namespace = %name, error = %e, "rollback failed; the reaper will complete the set and delete it at expiry");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::labels::EXPIRY_LABEL;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::ObjectMeta;

    fn ns(expiry: Option<&str>, deleting: bool) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some("np-x".into()),
                labels: expiry.map(|e| [(EXPIRY_LABEL.to_owned(), e.to_owned())].into()),
                deletion_timestamp: deleting.then_some(Time(jiff::Timestamp::UNIX_EPOCH)),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        }
    }

    #[test]
    fn live_means_not_deleting_and_not_expired() {
        assert!(is_live(&ns(Some("200"), false), 100));
        assert!(!is_live(&ns(Some("100"), false), 100));
        assert!(!is_live(&ns(Some("200"), true), 100));
        // Unreadable expiry: the reaper will assign one; it still counts.
        assert!(is_live(&ns(Some("soon"), false), 100));
        assert!(is_live(&ns(None, false), 100));
    }

    #[test]
    fn info_shows_phase_and_expiry() {
        let info = info_of(&ns(Some("1800000000"), true));
        assert_eq!(info.phase, "Terminating");
        assert_eq!(info.expires_at.as_deref(), Some("2027-01-15T08:00:00Z"));
        assert_eq!(info_of(&ns(Some("x"), false)).expires_at, None);
    }
}
