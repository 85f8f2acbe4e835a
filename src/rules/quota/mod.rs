//! Aggregate quota over a tree (issue 12, DESIGN.md § Aggregate quota): HNC's
//! HierarchicalResourceQuota made strict, with no webhook. This module is the PURE core: no
//! client, no clock, no I/O. The I/O (provisioner create in `crate::provision`, reaper rebuild
//! in `crate::reaper::quota`) follows the steps described below.
//!
//! # The model
//!
//! * A parent namespace holds a [`crd::HierarchicalResourceQuota`] whose `spec.hard` is its
//!   **budget** (any quota resource names) and optional `spec.defaultAllocation`.
//! * A child is created with an **allocation** ([`allocation::resolve_allocation`]: the ask,
//!   else the default; a budget resource the ask leaves out is defaulted, then zero; a resource
//!   outside the budget is refused). The child gets a native ResourceQuota
//!   [`objects::ALLOCATION_QUOTA`] with `hard` = its allocation.
//! * The parent gets [`objects::REMAINDER_QUOTA`] with `hard` = budget − Σ allocations
//!   ([`allocation::remainder`], never negative). So for every budget resource, at every
//!   instant: parent usage + Σ child usage ≤ Σ hard ≤ budget.
//! * A create fits when `budget − Σ allocations − parent usage ≥ ask` for every resource
//!   ([`allocation::check_fit`]); otherwise a [`allocation::Refusal`] names each resource, what
//!   was asked and what is left (the 409's problem+json). A budget lowered below what is
//!   allocated refuses every create and leaves the children alone.
//! * The **ledger** ([`ledger::Ledger`], stored in the HRQ's `status.children`) says who holds
//!   what. [`ledger::reserve`], [`ledger::confirm`], [`ledger::release`] and
//!   [`ledger::rebuild`] are its transitions; each returns a new ledger (or refuses and changes
//!   nothing) for the I/O layer to write with a `resourceVersion` precondition.
//! * **Nested trees**: a child with children has its own HRQ; its budget is
//!   [`allocation::effective_budget`] of that HRQ and its own allocation (never more than the
//!   allocation, and every allocated resource stays budgeted), and the same functions run one
//!   level down.
//! * **Usage** ([`allocation::aggregate_used`]): the parent's remainder quota `status.used`
//!   plus each child's allocation quota `status.used`; [`crd::status_for`] writes it with
//!   `kubectl get hrq` summaries.
//! * Quantities are exact ([`quantity::Amount`], nano-units in `i128`; `1.5` == `1500m`) and
//!   resource names are normalized (`cpu` == `requests.cpu`, [`resources::canonical_name`]).
//!
//! # Why this is strict without a webhook
//!
//! * Every `hard` is enforced by the API server's own ResourceQuota admission, which is not
//!   optional and does not fail open: it updates `status.used` with a compare-and-swap before
//!   the object is persisted. Nothing of ours sits in the request path of a pod.
//! * Allocations are serialized by the HRQ's `resourceVersion`: two provisioner replicas (or
//!   Lambda instances) that read the same ledger both compute a reservation, only the first
//!   status write lands, the second gets 409 Conflict, re-reads and re-runs [`ledger::reserve`]
//!   against the new ledger, which refuses if the slot is gone.
//! * The parent's own workloads race with a reservation: the fit check read its usage a moment
//!   ago. So the provisioner *lowers the remainder quota first* and then *re-reads its
//!   `status.used`*: admission checks every later parent object against the lowered `hard`, and
//!   any object admitted before the lowering is already in the re-read usage. If that usage
//!   exceeds the lowered `hard`, the reservation is rolled back and the create refused.
//! * The remainder is only ever written from a ledger newer than the one it was last written
//!   from ([`ledger::remainder_is_newer`], [`objects::LEDGER_REVISION_ANNOTATION`]), so a slow
//!   writer holding an old ledger cannot raise it back over a newer allocation.
//! * Order makes every intermediate state safe: the ledger is raised before the remainder is
//!   lowered, and both before the child's quota exists; on release the child is gone before the
//!   ledger drops it and the remainder rises last. A crash anywhere leaves the ledger *too high*
//!   (an allocation leaked, refused creates) never too low; [`ledger::rebuild`] returns leaks.
//!
//! # The provisioner's create, step by step (to build)
//!
//! 1. Get the parent's HRQ (one per parent namespace; more than one is a 409 naming them) and
//!    its `resourceVersion`; budget = [`allocation::effective_budget`] of `spec.hard` and, when
//!    the parent is itself a child in a quota tree, its own allocation quota's `hard`.
//!    [`allocation::resolve_allocation`] of the body's `quota` (400 on error).
//! 2. Get the parent's remainder quota: `status.used` is the parent's usage.
//! 3. [`crd::ledger_from_status`] → [`ledger::reserve`] with the generated child name and
//!    `now` (409 problem+json on [`allocation::Refusal`]).
//! 4. Replace the HRQ status with [`crd::status_for`] of the new ledger, with the
//!    `resourceVersion` of step 1. On Conflict go back to 1 (bounded retries, jittered).
//! 5. Apply [`objects::remainder_quota`] from the new ledger's remainder and revision, if
//!    [`ledger::remainder_is_newer`] than the revision on the live quota (update with the
//!    quota's own `resourceVersion`; on Conflict re-read and re-check).
//! 6. Re-read the remainder quota. If [`allocation::check_parent_within`] refuses, the parent
//!    grew meanwhile: [`ledger::release`] the reservation (steps 4–5 again, with a
//!    precondition) and answer 409 with that refusal.
//! 7. If [`ledger::reservation_expired`] (with the provisioner's grace, shorter than the
//!    reaper's by a clock-skew margin), release and fail: a rebuild may already have dropped
//!    the reservation. Otherwise create the child namespace, then
//!    [`objects::allocation_quota`] in it, *before* any token or kubeconfig exists, so nothing
//!    can run there unbounded.
//! 8. [`ledger::confirm`] the child's uid (optional: the reaper's rebuild does it too). If the
//!    create failed in 7, roll back: delete what was created, [`ledger::release`] with
//!    precondition, recompute the remainder.
//!
//! # The reaper's rebuild, each run (to build)
//!
//! 1. List HRQs; for each, list the namespaces whose parent label names its namespace
//!    (Terminating included: their objects still count until they are gone) and their
//!    [`objects::ALLOCATION_QUOTA`]s ([`objects::hard_of`], [`objects::used_of`]). Only a
//!    *complete* listing may be passed on: rebuild reads absence as "gone" and releases, so a
//!    failed page must abort the rebuild for that parent, never shrink it.
//! 2. [`ledger::rebuild`] with `now` and a grace longer than the provisioner's create timeout
//!    (in-flight reservations survive; crashed ones older than the grace are dropped; gone
//!    children release their allocation; live quotas are the truth).
//! 3. For a child in the ledger with no allocation quota, apply the quota from the ledger.
//! 4. Write the HRQ status ([`crd::status_for`], usage from every quota's `status.used`) with
//!    a `resourceVersion` precondition (on Conflict: next run, or re-read and redo), then the
//!    remainder quota as in create step 5.
//! 5. Export budget / allocated / used per parent and resource as metrics.

pub mod allocation;
pub mod crd;
pub mod ledger;
pub mod objects;
pub mod quantity;
pub mod resources;

#[cfg(test)]
mod invariants;
