//! Bearer tokens and the tenants they belong to, and who a caller is
//! ([`Identity`]: a static-token tenant or a Kubernetes user). Tokens are kept
//! only as SHA-256 digests and compared in constant time. No I/O.

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::rules::params::TenantName;

/// Tenant of the single token given by `NP_TOKEN` or `--token`.
pub const DEFAULT_TENANT: &str = "default";

/// The token -> tenant table.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], TenantName)>,
}

// Digests only, but keep them out of logs all the same.
impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("tenants", &self.entries.len())
            .finish()
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokensError {
    #[error("token file line {line}: expected `tenant token`, found {fields} field(s)")]
    Fields { line: usize, fields: usize },
    // The offending name is not repeated: with the columns swapped it is a token.
    #[error(
        "token file line {line}: the tenant name (first field) is not a DNS label: use 1-63 lower-case letters, digits and '-'"
    )]
    Tenant { line: usize },
    #[error(
        "token file: a tenant name (a key of the mapping) is not a DNS label: use 1-63 lower-case letters, digits and '-'"
    )]
    YamlTenant,
    #[error("token file holds no token")]
    Empty,
    #[error("token for tenant {tenant} is shorter than 16 characters; use a random token of at least 16")]
    TooShort { tenant: String },
    #[error("the same token is given to tenants {first} and {second}; every tenant needs its own")]
    Shared { first: String, second: String },
    #[error("token file is YAML but not a mapping of tenant: token ({reason})")]
    Yaml { reason: String },
    #[error(
        "tenant name {tenant} has the form reserved for Kubernetes users (`{USER_TENANT_PREFIX}` and 56 hex digits); rename the tenant"
    )]
    Reserved { tenant: String },
}

/// SHA-256 of a token: what is stored, compared and used as a cache key,
/// never the token itself.
pub fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// Prefix of the tenant of a Kubernetes user: `u-` + 56 hex digits of the
/// SHA-256 of the username (label-safe, selectable, one per user).
pub const USER_TENANT_PREFIX: &str = "u-";
const USER_TENANT_HEX: usize = 56;

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The tenant standing for Kubernetes user `username` (the label value that
/// selects the namespaces the user owns).
pub fn user_tenant(username: &str) -> TenantName {
    let mut hashed = hex(&digest(username.as_bytes()));
    hashed.truncate(USER_TENANT_HEX);
    // `u-` + lower-case hex is a DNS label by construction.
    TenantName::from_trusted(format!("{USER_TENANT_PREFIX}{hashed}"))
}

/// Whether `tenant` has the form of a Kubernetes user's tenant.
pub fn is_user_tenant(tenant: &str) -> bool {
    tenant
        .strip_prefix(USER_TENANT_PREFIX)
        .is_some_and(|h| h.len() == USER_TENANT_HEX && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A Kubernetes user as the TokenReview API reported it: what a
/// SubjectAccessReview needs to ask about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Who is calling: a static-token tenant, or a Kubernetes user (whose tenant
/// is [`user_tenant`] of the username). Handlers pass it through unchanged;
/// the provisioning pipeline authorizes and scopes by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Tenant(TenantName),
    User { user: UserInfo, tenant: TenantName },
}

impl Identity {
    pub fn user(user: UserInfo) -> Self {
        let tenant = user_tenant(&user.username);
        Self::User { user, tenant }
    }

    /// The tenant label value of the namespaces this caller owns.
    pub fn tenant(&self) -> &TenantName {
        match self {
            Self::Tenant(t) | Self::User { tenant: t, .. } => t,
        }
    }

    /// The Kubernetes user, if the caller is one.
    pub fn kubernetes_user(&self) -> Option<&UserInfo> {
        match self {
            Self::Tenant(_) => None,
            Self::User { user, .. } => Some(user),
        }
    }
}

/// Whether a TokenReview answer holds for the audiences asked: with none
/// asked, the API server's own; else the granted audiences must include one
/// of them (an authenticator that ignores audiences grants none).
pub fn audiences_match(asked: &[String], granted: &[String]) -> bool {
    asked.is_empty() || granted.iter().any(|g| asked.contains(g))
}

/// API group of the rights RBAC grants on the provisioner's namespaces
/// (no such API is served: the group exists only for SubjectAccessReviews).
pub const ACCESS_GROUP: &str = "controller.observatorium.io";
/// Resource of those rights.
pub const ACCESS_RESOURCE: &str = "namespaces";

/// What a Kubernetes user may be allowed to do with managed namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Create,
    List,
    Get,
    Delete,
    /// Extend.
    Patch,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::List => "list",
            Self::Get => "get",
            Self::Delete => "delete",
            Self::Patch => "patch",
        }
    }
}

/// One right a SubjectAccessReview asks about: `verb` on
/// `namespaces.controller.observatorium.io`, cluster-wide (`namespace: None`,
/// top-level namespaces) or in a parent namespace (its children).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Right {
    pub verb: Verb,
    pub namespace: Option<String>,
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "verb {} on resource {ACCESS_RESOURCE} of group {ACCESS_GROUP} ",
            self.verb.as_str()
        )?;
        match &self.namespace {
            None => f.write_str("at cluster scope"),
            Some(ns) => write!(f, "in namespace {ns}"),
        }
    }
}

impl From<TenantName> for Identity {
    fn from(tenant: TenantName) -> Self {
        Self::Tenant(tenant)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tenant(t) => write!(f, "tenant {t}"),
            Self::User { user, .. } => write!(f, "user {}", user.username),
        }
    }
}

impl Tokens {
    /// Parse a token file: `tenant token` per line (`#` comments, blank lines
    /// ignored), or a YAML mapping `tenant: token`.
    pub fn parse(contents: &str) -> Result<Self, TokensError> {
        let mut tokens = Self::default();
        if let Ok(map) = serde_yaml_ng::from_str::<std::collections::BTreeMap<String, String>>(contents) {
            for (tenant, token) in map {
                let tenant = tenant.parse().map_err(|_| TokensError::YamlTenant)?;
                tokens.add(tenant, token.trim())?;
            }
            return Ok(tokens);
        }
        for (index, raw) in contents.lines().enumerate() {
            let line = index + 1;
            let text = raw.split('#').next().unwrap_or_default().trim();
            if text.is_empty() {
                continue;
            }
            let fields: Vec<&str> = text.split_whitespace().collect();
            let [tenant, token] = fields[..] else {
                return Err(TokensError::Fields {
                    line,
                    fields: fields.len(),
                });
            };
            let tenant = tenant.parse().map_err(|_| TokensError::Tenant { line })?;
            tokens.add(tenant, token)?;
        }
        Ok(tokens)
    }

    /// Add one tenant's token.
    pub fn add(&mut self, tenant: TenantName, token: &str) -> Result<(), TokensError> {
        if token.len() < 16 {
            return Err(TokensError::TooShort {
                tenant: tenant.to_string(),
            });
        }
        if is_user_tenant(tenant.as_str()) {
            return Err(TokensError::Reserved {
                tenant: tenant.to_string(),
            });
        }
        let d = digest(token.as_bytes());
        if let Some((_, first)) = self.entries.iter().find(|(e, _)| *e == d) {
            return Err(TokensError::Shared {
                first: first.to_string(),
                second: tenant.to_string(),
            });
        }
        self.entries.push((d, tenant));
        Ok(())
    }

    /// [`Tokens::parse`], refusing a file without a token: a reload of an
    /// emptied or truncated file must not lock every tenant out.
    pub fn parse_nonempty(contents: &str) -> Result<Self, TokensError> {
        let tokens = Self::parse(contents)?;
        if tokens.is_empty() {
            return Err(TokensError::Empty);
        }
        Ok(tokens)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The tenant owning `presented`, comparing digests in constant time and
    /// always against every entry, so timing tells nothing about which matched.
    pub fn authenticate(&self, presented: &str) -> Option<&TenantName> {
        let d = digest(presented.as_bytes());
        let mut found = None;
        for (entry, tenant) in &self.entries {
            if bool::from(entry.ct_eq(&d)) {
                found = Some(tenant);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn parses_lines_with_comments() {
        let t = Tokens::parse(&format!("# tenants\nalice {A}\n\n bob   {B}  # ci\n")).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.authenticate(A).unwrap().as_str(), "alice");
        assert_eq!(t.authenticate(B).unwrap().as_str(), "bob");
        assert!(t.authenticate("cccccccccccccccccccc").is_none());
        assert!(t.authenticate("").is_none());
    }

    #[test]
    fn parses_yaml_mapping() {
        let t = Tokens::parse(&format!("alice: {A}\nbob: \"{B}\"\n")).unwrap();
        assert_eq!(t.authenticate(B).unwrap().as_str(), "bob");
    }

    #[test]
    fn rejects_bad_files_with_line_numbers() {
        assert_eq!(
            Tokens::parse(&format!("alice {A}\nbob\n")).unwrap_err(),
            TokensError::Fields { line: 2, fields: 1 }
        );
        assert!(matches!(
            Tokens::parse(&format!("Alice {A}\n")),
            Err(TokensError::Tenant { line: 1 })
        ));
        // Columns swapped: the error must not repeat the token.
        let swapped = Tokens::parse(&format!("{}_X alice\n", A)).unwrap_err();
        assert!(!swapped.to_string().contains(A), "{swapped}");
        let swapped = Tokens::parse(&format!("{}_X: alice\n", A)).unwrap_err();
        assert!(!swapped.to_string().contains(A), "{swapped}");
        assert_eq!(
            Tokens::parse_nonempty("# nobody\n").unwrap_err(),
            TokensError::Empty
        );
        assert!(matches!(
            Tokens::parse("alice short\n"),
            Err(TokensError::TooShort { .. })
        ));
        assert!(matches!(
            Tokens::parse(&format!("alice {A}\nbob {A}\n")),
            Err(TokensError::Shared { .. })
        ));
    }

    #[test]
    fn user_tenants_are_label_safe_distinct_and_reserved() {
        let a = user_tenant("system:serviceaccount:team-a:ci");
        let b = user_tenant("system:serviceaccount:team-a:cd");
        assert_ne!(a, b);
        assert!(a.as_str().len() <= 63);
        assert!(is_user_tenant(a.as_str()));
        assert!(!is_user_tenant("alice"));
        assert_eq!(
            Tokens::parse(&format!("{a} {A}\n")).unwrap_err(),
            TokensError::Reserved {
                tenant: a.to_string()
            }
        );
        let who = Identity::user(UserInfo {
            username: "jane".into(),
            uid: None,
            groups: vec![],
            extra: BTreeMap::new(),
        });
        assert_eq!(who.tenant(), &user_tenant("jane"));
        assert_eq!(who.to_string(), "user jane");
    }

    #[test]
    fn audiences_must_intersect_when_asked() {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert!(audiences_match(&[], &[]));
        assert!(audiences_match(&s(&["np"]), &s(&["other", "np"])));
        assert!(!audiences_match(&s(&["np"]), &[]));
        assert!(!audiences_match(&s(&["np"]), &s(&["other"])));
    }

    #[test]
    fn debug_shows_no_token() {
        let t = Tokens::parse(&format!("alice {A}\n")).unwrap();
        assert!(!format!("{t:?}").contains(A));
    }
}

/// Hostile token files (issue 15): never a panic, refusals that say something
/// and never repeat a token, and every well-formed file authenticates exactly
/// its tenants.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_file_parses_or_says_why(contents in "(\\PC{0,30}\n?){0,5}") {
            match Tokens::parse(&contents) {
                Ok(tokens) => prop_assert!(tokens.authenticate("").is_none()),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }

        #[test]
        fn well_formed_files_authenticate_their_tenants(
            entries in proptest::collection::btree_map("[a-z][a-z0-9]{0,10}", "[A-Za-z0-9_.~+/-]{16,40}", 1..6),
            yaml in any::<bool>(),
        ) {
            // Every tenant its own token.
            let mut seen = std::collections::BTreeSet::new();
            prop_assume!(entries.values().all(|t| seen.insert(t.clone())));
            let contents: String = entries
                .iter()
                .map(|(tenant, token)| if yaml { format!("{tenant}: \"{token}\"\n") } else { format!("{tenant} {token}\n") })
                .collect();
            let tokens = Tokens::parse(&contents).unwrap();
            prop_assert_eq!(tokens.len(), entries.len());
            for (tenant, token) in &entries {
                prop_assert_eq!(tokens.authenticate(token).map(TenantName::as_str), Some(tenant.as_str()));
                let wrong = format!("{token}x");
                prop_assert!(tokens.authenticate(&wrong).is_none());
            }
        }

        #[test]
        fn refusals_never_repeat_a_token(
            token in "[A-Za-z0-9_]{16,40}",
            tenant in "[a-z]{1,10}",
            form in 0..4usize,
        ) {
            // A token where the tenant belongs, a third field, a short token, a shared token.
            let contents = match form {
                0 => format!("{token}_ {tenant}\n"),
                1 => format!("{tenant} {token} {token}\n"),
                2 => format!("{token}_: {tenant}\n"),
                _ => format!("{tenant} {token}\n{tenant}x {token}\n"),
            };
            if let Err(e) = Tokens::parse(&contents) {
                prop_assert!(!e.to_string().contains(&token), "{}", e);
            }
        }
    }
}
