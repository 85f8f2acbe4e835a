//! Bearer tokens and the tenants they belong to. Tokens are kept only as
//! SHA-256 digests and compared in constant time. No I/O.

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
    #[error("token file line {line}: {source}")]
    Tenant {
        line: usize,
        source: crate::rules::params::TenantNameError,
    },
    #[error("token file: {source}")]
    YamlTenant {
        source: crate::rules::params::TenantNameError,
    },
    #[error("token for tenant {tenant} is shorter than 16 characters; use a random token of at least 16")]
    TooShort { tenant: String },
    #[error("the same token is given to tenants {first} and {second}; every tenant needs its own")]
    Shared { first: String, second: String },
    #[error("token file is YAML but not a mapping of tenant: token ({reason})")]
    Yaml { reason: String },
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Tokens {
    /// Parse a token file: `tenant token` per line (`#` comments, blank lines
    /// ignored), or a YAML mapping `tenant: token`.
    pub fn parse(contents: &str) -> Result<Self, TokensError> {
        let mut tokens = Self::default();
        if let Ok(map) = serde_yaml_ng::from_str::<std::collections::BTreeMap<String, String>>(contents) {
            for (tenant, token) in map {
                let tenant = tenant
                    .parse()
                    .map_err(|source| TokensError::YamlTenant { source })?;
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
            let tenant = tenant
                .parse()
                .map_err(|source| TokensError::Tenant { line, source })?;
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
            Err(TokensError::Tenant { line: 1, .. })
        ));
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
    fn debug_shows_no_token() {
        let t = Tokens::parse(&format!("alice {A}\n")).unwrap();
        assert!(!format!("{t:?}").contains(A));
    }
}
