//! Create-time checks of a child namespace under a parent (issue 11): read the parent and its
//! ancestors, apply the administrator's policy on the parent (`allowed-tenants`, `max-ttl`,
//! `max-children`), the depth limit and the parent's expiry, and say what the child's first
//! write carries (parent label, parent-uid annotation, tree labels). Decisions come from
//! [`crate::rules::hierarchy::tree`]; reads go through [`crate::k8s`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;

use super::{ProvisionError, Provisioner};
use crate::k8s;
use crate::rules::hierarchy::keys::{PARENT_LABEL, PARENT_UID_ANNOTATION};
use crate::rules::hierarchy::tree::{
    Forest, ObservedNamespace, check_child_depth, child_expiry, parent_policy,
};
use crate::rules::labels;
use crate::rules::params::{Expiry, TenantName, Ttl};

/// Where a child goes and what its first write carries, once every check passed.
#[derive(Debug, Clone)]
pub(super) struct Placement {
    /// The parent as read (its uid goes into the child's annotation).
    pub parent: Namespace,
    pub parent_name: String,
    pub expiry: Expiry,
    /// Ancestors top-most first, then the parent: the namespaces whose objects propagate here.
    pub ancestors: Vec<String>,
}

impl Placement {
    /// The labels and annotations a child named `child` is created with, beside the set's own.
    pub fn metadata(&self, child: &str) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        // A forest of the chain alone is enough for the labels: each link names the one above.
        let linked: Vec<ObservedNamespace> = self
            .ancestors
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut ns = ObservedNamespace {
                    name: name.clone(),
                    ..ObservedNamespace::default()
                };
                if let Some(above) = i.checked_sub(1).and_then(|up| self.ancestors.get(up)) {
                    ns.labels.insert(PARENT_LABEL.to_owned(), above.clone());
                }
                ns
            })
            .collect();
        let forest = Forest::build(&linked);
        let mut labels = forest.new_child_tree_labels(&self.parent_name, child);
        labels.insert(PARENT_LABEL.to_owned(), self.parent_name.clone());
        let annotations = BTreeMap::from([(
            PARENT_UID_ANNOTATION.to_owned(),
            self.parent.uid().unwrap_or_default(),
        )]);
        (labels, annotations)
    }
}

impl Provisioner {
    /// Read `parent` and its ancestors and check that `tenant` may create a child there for
    /// `ttl`. Nothing is written.
    pub(super) async fn place_child(
        &self,
        tenant: &TenantName,
        parent_name: &str,
        ttl: Option<Ttl>,
        now: i64,
    ) -> Result<Placement, ProvisionError> {
        let parent = self.read_parent(parent_name).await?;
        if parent.metadata.deletion_timestamp.is_some() {
            return Err(ProvisionError::ParentTerminating {
                parent: parent_name.to_owned(),
            });
        }
        let policy = parent_policy(parent.annotations())
            .map_err(|source| ProvisionError::ParentAnnotation {
                parent: parent_name.to_owned(),
                source,
            })?
            .ok_or_else(|| ProvisionError::NotAParent {
                parent: parent_name.to_owned(),
            })?;
        if !policy.allowed_tenants.allows(tenant.as_str()) {
            return Err(ProvisionError::TenantNotAllowed {
                parent: parent_name.to_owned(),
                tenant: tenant.to_string(),
            });
        }
        let chain = self.ancestry(&parent).await?;
        let forest = Forest::build(&chain);
        check_child_depth(&forest, parent_name, self.config.max_depth).map_err(ProvisionError::Depth)?;
        let mut ancestors: Vec<String> = forest
            .ancestors(parent_name)
            .into_iter()
            .map(str::to_owned)
            .collect();
        ancestors.push(parent_name.to_owned());

        let max = policy.effective_max_ttl(self.config.ttl.max());
        let ttl_secs = resolve_under(&self.config.ttl, ttl, max, parent_name)?;
        let asked = ttl.is_some_and(|t| !t.duration().is_zero());
        let expiry = expiry_under(&parent, parent_name, now, ttl_secs, asked)?;

        // Counting children is a LIST that grows with them: only for a parent that has a limit.
        if policy.max_children.is_some() {
            let live = self.live_children(parent_name).await?;
            policy
                .check_children(parent_name, live)
                .map_err(ProvisionError::TooManyChildren)?;
        }
        Ok(Placement {
            parent,
            parent_name: parent_name.to_owned(),
            expiry,
            ancestors,
        })
    }

    async fn read_parent(&self, name: &str) -> Result<Namespace, ProvisionError> {
        k8s::get_namespace(&self.client, name)
            .await
            .map_err(|source| ProvisionError::ReadParent {
                parent: name.to_owned(),
                source,
            })?
            .ok_or_else(|| ProvisionError::ParentNotFound {
                parent: name.to_owned(),
            })
    }

    /// The parent and the namespaces above it, read one by one up the parent labels. Stops
    /// at a missing ancestor (the forest then makes the last one a root), at a name seen
    /// twice (a ring: the forest halts it) and one past the depth limit (deep enough to refuse).
    pub(super) async fn ancestry(
        &self,
        parent: &Namespace,
    ) -> Result<Vec<ObservedNamespace>, ProvisionError> {
        let mut chain = vec![ObservedNamespace::from(parent)];
        let mut seen = BTreeSet::from([parent.name_any()]);
        while chain.len() <= self.config.max_depth + 1 {
            let Some(above) = chain.last().and_then(|ns| ns.parent_label()).map(str::to_owned) else {
                break;
            };
            if !seen.insert(above.clone()) {
                break;
            }
            let read = k8s::get_namespace(&self.client, &above).await.map_err(|source| {
                ProvisionError::ReadParent {
                    parent: above.clone(),
                    source,
                }
            })?;
            match read {
                Some(ns) => chain.push(ObservedNamespace::from(&ns)),
                None => break,
            }
        }
        Ok(chain)
    }

    /// Children of `parent` that are not being deleted and not unclaimed pool members (managed
    /// or not: `max-children` bounds the tree, not one tenant). Best effort across replicas, like the tenant limit.
    async fn live_children(&self, parent: &str) -> Result<usize, ProvisionError> {
        let selector = format!("{PARENT_LABEL}={parent}");
        let children = k8s::list_namespaces(&self.client, &selector, self.config.page_size)
            .await
            .map_err(|source| ProvisionError::ListChildren {
                parent: parent.to_owned(),
                source,
            })?;
        // Unclaimed warm-pool members (issue 16) are not children yet: a pool must not use up
        // the room `max-children` leaves for creates.
        Ok(children
            .iter()
            .filter(|ns| ns.metadata.deletion_timestamp.is_none())
            .filter(|ns| !crate::rules::pool::is_member(ns.labels()))
            .count())
    }

    /// The bound an extend of a child must respect: its parent's expiry, if it has one. A
    /// parent that is gone bounds nothing here: the reaper cascades the child.
    pub(super) async fn check_extend_under_parent(
        &self,
        child: &Namespace,
        now: i64,
        ttl_secs: u64,
    ) -> Result<Expiry, ProvisionError> {
        let Some(parent_name) = child.labels().get(PARENT_LABEL).filter(|p| !p.is_empty()) else {
            return Ok(Expiry::after(now, ttl_secs));
        };
        match k8s::get_namespace(&self.client, parent_name)
            .await
            .map_err(|source| ProvisionError::ReadParent {
                parent: parent_name.clone(),
                source,
            })? {
            Some(parent) => bounded_expiry(&parent, parent_name, now, ttl_secs),
            None => Ok(Expiry::after(now, ttl_secs)),
        }
    }
}

/// The TTL in seconds against the provisioner's policy, and against the parent's `max-ttl`
/// when that is lower (a separate error, so the caller learns which ceiling it hit).
fn resolve_under(
    policy: &crate::rules::params::TtlPolicy,
    ttl: Option<Ttl>,
    max: Duration,
    parent: &str,
) -> Result<u64, ProvisionError> {
    let secs = policy.resolve(ttl)?;
    if Duration::from_secs(secs) > max {
        return Err(ProvisionError::AboveParentMaxTtl {
            parent: parent.to_owned(),
            requested: humantime::format_duration(Duration::from_secs(secs)).to_string(),
            max: humantime::format_duration(max).to_string(),
        });
    }
    Ok(secs)
}

/// A new child's expiry. No TTL asked: the default ends with the parent rather than being
/// refused; an explicit ask past the parent's expiry is a 400.
fn expiry_under(
    parent: &Namespace,
    parent_name: &str,
    now: i64,
    ttl_secs: u64,
    asked: bool,
) -> Result<Expiry, ProvisionError> {
    match bounded_expiry(parent, parent_name, now, ttl_secs) {
        Err(refused) if !asked => labels::expiry_of(parent.labels())
            .filter(|e| e.unix() > now)
            .ok_or(refused),
        other => other,
    }
}

/// `now + ttl`, refused when it is after the parent's expiry (a parent without one bounds nothing).
fn bounded_expiry(
    parent: &Namespace,
    parent_name: &str,
    now: i64,
    ttl_secs: u64,
) -> Result<Expiry, ProvisionError> {
    let requested = Expiry::after(now, ttl_secs);
    let parent_expiry = labels::expiry_of(parent.labels()).map(Expiry::unix);
    child_expiry(requested.unix(), parent_expiry)
        .map(Expiry::from_unix)
        .map_err(|refused| {
            let left = refused.parent_expiry.saturating_sub(now).max(0);
            ProvisionError::BeyondParentExpiry {
                parent: parent_name.to_owned(),
                parent_expires_at: Expiry::from_unix(refused.parent_expiry).rfc3339(),
                left: humantime::format_duration(Duration::from_secs(left.unsigned_abs())).to_string(),
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::hierarchy::keys::tree_label;
    use kube::api::ObjectMeta;

    fn placement(ancestors: &[&str]) -> Placement {
        Placement {
            parent: Namespace {
                metadata: ObjectMeta {
                    name: ancestors.last().map(|s| s.to_string()),
                    uid: Some("uid-p".into()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
            parent_name: ancestors.last().map(|s| s.to_string()).unwrap_or_default(),
            expiry: Expiry::from_unix(0),
            ancestors: ancestors.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn first_write_carries_parent_and_every_tree_label() {
        let (labels, annotations) = placement(&["root", "team"]).metadata("np-child");
        assert_eq!(labels[PARENT_LABEL], "team");
        assert_eq!(labels[&tree_label("np-child")], "0");
        assert_eq!(labels[&tree_label("team")], "1");
        assert_eq!(labels[&tree_label("root")], "2");
        assert_eq!(annotations[PARENT_UID_ANNOTATION], "uid-p");
    }

    fn parent_expiring(at: Option<i64>) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                labels: at.map(|e| [(labels::EXPIRY_LABEL.to_owned(), e.to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        }
    }

    #[test]
    fn a_child_never_outlives_its_parent() {
        let parent = parent_expiring(Some(1_000));
        assert_eq!(bounded_expiry(&parent, "p", 100, 900).unwrap().unix(), 1_000);
        let refused = bounded_expiry(&parent, "p", 100, 901).unwrap_err();
        let message = refused.to_string();
        assert!(message.contains("1970-01-01T00:16:40Z"), "{message}");
        assert!(message.contains("15m"), "{message}");
        // The default (nothing asked) ends with the parent instead.
        assert_eq!(expiry_under(&parent, "p", 100, 901, false).unwrap().unix(), 1_000);
        assert!(expiry_under(&parent, "p", 100, 901, true).is_err());
        assert!(expiry_under(&parent, "p", 1_000, 1, false).is_err());
        // A parent without an expiry (an administrator's namespace) bounds nothing.
        assert!(bounded_expiry(&parent_expiring(None), "p", 100, 1_000_000).is_ok());
    }

    #[test]
    fn the_parent_max_ttl_is_its_own_refusal() {
        let policy =
            crate::rules::params::TtlPolicy::new(Duration::from_secs(600), Some(Duration::from_secs(7200)))
                .unwrap();
        let ttl = Some(Ttl::new(Duration::from_secs(3600)));
        let refused = resolve_under(&policy, ttl, Duration::from_secs(1800), "team").unwrap_err();
        assert!(
            matches!(refused, ProvisionError::AboveParentMaxTtl { .. }),
            "{refused}"
        );
        assert!(matches!(
            resolve_under(
                &policy,
                Some(Ttl::new(Duration::from_secs(9000))),
                Duration::from_secs(1800),
                "team"
            ),
            Err(ProvisionError::Ttl(_))
        ));
        assert_eq!(
            resolve_under(&policy, None, Duration::from_secs(1800), "team").unwrap(),
            600
        );
    }
}
