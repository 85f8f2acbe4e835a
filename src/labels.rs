//! The label and annotation contract every managed object carries, and the
//! names we give objects. No I/O.

/// Default `--selector`: the label that marks an object as ours.
pub const DEFAULT_SELECTOR: &str = "controller.observatorium.io=namespace-provisioner";

/// Selector the original Go tool wrote (its code default); used to adopt its namespaces.
pub const LEGACY_SELECTOR: &str = "controller.observatorium.io=namespace-selector";

/// Unix seconds of the expiry instant, as the original tool wrote it.
pub const EXPIRY_LABEL: &str = "controller.observatorium.io/expiry";

/// The same instant in RFC 3339, for people reading `kubectl get -o yaml`.
pub const EXPIRES_AT_ANNOTATION: &str = "controller.observatorium.io/expires-at";

/// The tenant that asked for the namespace.
pub const TENANT_LABEL: &str = "controller.observatorium.io/tenant";

/// Field manager for every write, so server-side apply ownership is ours alone.
pub const FIELD_MANAGER: &str = "namespace-provisioner";

/// Name of the ServiceAccount, RoleBinding and Role inside a managed namespace.
pub const OBJECT_NAME: &str = "namespace-provisioner";

/// Name of the RoleBinding that binds the optional namespaced Role.
pub const ROLE_BINDING_FOR_ROLE: &str = "namespace-provisioner-role";
