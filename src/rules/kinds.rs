//! The managed kinds as data, and typed objects tagged with their kind.
//!
//! [`MANAGED_KINDS`] is the one list: listing, observing, applying and
//! watching iterate it. A kind is described by its [`ApiResource`] (group,
//! version, plural, scope), which is what discovery returns for kinds chosen
//! at run time; those will join as a `Kind::Dynamic(ApiResource)` holding
//! `DynamicObject`s, beside the four built-in kinds typed here. Pure: the
//! calls per kind live in [`crate::k8s`].

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt;
use kube::discovery::ApiResource;

/// A kind the provisioner writes and the reaper lists, repairs and watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    ServiceAccount,
    Role,
    RoleBinding,
}

/// The kinds a managed set is made of, in the order they are listed and shown.
pub const MANAGED_KINDS: [Kind; 4] = [
    Kind::Namespace,
    Kind::ServiceAccount,
    Kind::Role,
    Kind::RoleBinding,
];

impl Kind {
    /// The API server's name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Namespace => "Namespace",
            Self::ServiceAccount => "ServiceAccount",
            Self::Role => "Role",
            Self::RoleBinding => "RoleBinding",
        }
    }

    /// Group, version, plural and scope, as discovery describes any kind.
    pub fn api_resource(self) -> ApiResource {
        match self {
            Self::Namespace => ApiResource::erase::<Namespace>(&()),
            Self::ServiceAccount => ApiResource::erase::<ServiceAccount>(&()),
            Self::Role => ApiResource::erase::<Role>(&()),
            Self::RoleBinding => ApiResource::erase::<RoleBinding>(&()),
        }
    }

    /// Objects of this kind live inside a namespace (all but the Namespace).
    pub fn is_namespaced(self) -> bool {
        !matches!(self, Self::Namespace)
    }
}

/// An object of one of the managed kinds, as read from or written to the API.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Namespace(Box<Namespace>),
    ServiceAccount(Box<ServiceAccount>),
    Role(Box<Role>),
    RoleBinding(Box<RoleBinding>),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Self::Namespace(_) => Kind::Namespace,
            Self::ServiceAccount(_) => Kind::ServiceAccount,
            Self::Role(_) => Kind::Role,
            Self::RoleBinding(_) => Kind::RoleBinding,
        }
    }

    pub fn name(&self) -> String {
        match self {
            Self::Namespace(o) => o.name_any(),
            Self::ServiceAccount(o) => o.name_any(),
            Self::Role(o) => o.name_any(),
            Self::RoleBinding(o) => o.name_any(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_describes_each_kind() {
        for kind in MANAGED_KINDS {
            let resource = kind.api_resource();
            assert_eq!(resource.kind, kind.as_str());
        }
        assert_eq!(Kind::Role.api_resource().group, "rbac.authorization.k8s.io");
        assert_eq!(Kind::ServiceAccount.api_resource().plural, "serviceaccounts");
        assert_eq!(MANAGED_KINDS.iter().filter(|k| k.is_namespaced()).count(), 3);
    }
}
