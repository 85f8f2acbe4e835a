//! The propagation configuration both binaries read (`--propagation-config`, a YAML file shipped
//! as a ConfigMap): a mode per kind, and which GitOps tracking metadata copies lose. Parsing and
//! validation only; reading the file is the caller's. No I/O.
//!
//! ```yaml
//! resources:
//!   - resource: secrets          # or `kind: Secret`; `group` omitted = core
//!     mode: Propagate            # Propagate (default) | AllowPropagate | Remove | Ignore
//!   - group: networking.k8s.io
//!     kind: NetworkPolicy
//!     mode: AllowPropagate
//! stripMetadata:
//!   defaults: true               # Argo CD, Flux, Helm, kubectl last-applied (default true)
//!   annotations: ["example.com/"] # extra keys; a trailing '/' means every key with that prefix
//!   labels: []
//! ```
//!
//! As in HNC, a kind not listed is `Ignore`, an entry without `mode` is `Propagate`, and Roles
//! and RoleBindings are always `Propagate` (listing them with another mode is an error, not a
//! silent override). Unlike HNC, an unknown mode is an error instead of `Ignore`.

use serde::Deserialize;

/// The RBAC API group, whose Roles and RoleBindings always propagate.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// HNC's synchronization modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum Mode {
    /// Propagate every object unless an exception excludes it; delete obsolete copies.
    #[default]
    Propagate,
    /// Propagate only objects that opt in with a `select`/`treeSelect`/`all` exception.
    AllowPropagate,
    /// Delete every copy; never touch sources.
    Remove,
    /// Touch nothing of this kind: no new copies, no deletions, existing copies stay as they are.
    Ignore,
}

/// A kind as the configuration names it and as discovery reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KindId {
    /// API group, `""` for core.
    pub group: String,
    /// Kind, e.g. `Secret`.
    pub kind: String,
    /// Plural resource, e.g. `secrets`.
    pub resource: String,
}

impl KindId {
    /// A kind from its three names.
    pub fn new(group: &str, kind: &str, resource: &str) -> Self {
        Self {
            group: group.into(),
            kind: kind.into(),
            resource: resource.into(),
        }
    }

    fn is_enforced(&self) -> bool {
        self.group == RBAC_GROUP
            && (matches!(self.kind.as_str(), "Role" | "RoleBinding")
                || matches!(self.resource.as_str(), "roles" | "rolebindings"))
    }
}

/// Why a propagation configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("propagation config is not valid: {0}")]
    Syntax(#[from] serde_yaml_ng::Error),
    #[error("resources[{index}] names neither `kind` nor `resource`; give one, e.g. `resource: secrets`")]
    Unnamed { index: usize },
    #[error("resources[{index}] gives both kind {kind:?} and resource {resource:?}; give one of them")]
    BothNames {
        index: usize,
        kind: String,
        resource: String,
    },
    #[error("resources[{index}] ({what}) is listed again at resources[{again}]; keep one entry per kind")]
    Duplicate {
        index: usize,
        again: usize,
        what: String,
    },
    #[error(
        "resources[{index}] ({what}) sets mode {mode:?}, but Roles and RoleBindings are always Propagate; remove the entry"
    )]
    Enforced { index: usize, what: String, mode: Mode },
    #[error("resources[{index}] gives apiVersion {api_version:?} and also group or version; give one form")]
    ApiVersionAndGroup { index: usize, api_version: String },
    #[error("stripMetadata {field}[{index}] is empty; give a key or a prefix ending in '/'")]
    EmptyStripKey { field: &'static str, index: usize },
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct File {
    #[serde(default)]
    resources: Vec<Entry>,
    #[serde(default)]
    strip_metadata: StripFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    group: Option<String>,
    /// Accepted for readability; discovery picks the served version.
    version: Option<String>,
    /// `group/version` in one field (`networking.k8s.io/v1`, `v1`), instead of group + version.
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
    resource: Option<String>,
    #[serde(default)]
    mode: Mode,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StripFile {
    #[serde(default = "yes")]
    defaults: bool,
    #[serde(default)]
    annotations: Vec<String>,
    #[serde(default)]
    labels: Vec<String>,
}

impl Default for StripFile {
    fn default() -> Self {
        Self {
            defaults: true,
            annotations: Vec::new(),
            labels: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

/// How one entry names its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Name {
    Kind(String),
    Resource(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    group: String,
    name: Name,
    mode: Mode,
}

impl Rule {
    fn matches(&self, id: &KindId) -> bool {
        self.group == id.group
            && match &self.name {
                Name::Kind(kind) => *kind == id.kind,
                Name::Resource(resource) => *resource == id.resource,
            }
    }

    fn describe(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        match &self.name {
            Name::Kind(kind) => format!("{group} kind {kind}"),
            Name::Resource(resource) => format!("{group} resource {resource}"),
        }
    }
}

/// GitOps tracking metadata that copies never carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripRules {
    annotations: Vec<String>,
    labels: Vec<String>,
}

/// Annotations stripped by default: Argo CD tracking and sync options, Flux ownership, Helm
/// release ownership and hooks, kubectl's last-applied copy (which would make `kubectl apply`
/// in the child think it owns the copy).
pub const DEFAULT_STRIPPED_ANNOTATIONS: &[&str] = &[
    "argocd.argoproj.io/",
    "kustomize.toolkit.fluxcd.io/",
    "helm.toolkit.fluxcd.io/",
    "meta.helm.sh/",
    "helm.sh/",
    "kubectl.kubernetes.io/last-applied-configuration",
];

/// Labels stripped by default: Argo CD's label tracking (`app.kubernetes.io/instance` is its
/// default tracking label), Flux ownership labels, Helm chart labels.
pub const DEFAULT_STRIPPED_LABELS: &[&str] = &[
    "argocd.argoproj.io/",
    "app.kubernetes.io/instance",
    "kustomize.toolkit.fluxcd.io/",
    "helm.toolkit.fluxcd.io/",
    "helm.sh/",
];

impl Default for StripRules {
    fn default() -> Self {
        Self {
            annotations: DEFAULT_STRIPPED_ANNOTATIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            labels: DEFAULT_STRIPPED_LABELS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl StripRules {
    /// Strip nothing (beyond what copies always lose).
    pub fn none() -> Self {
        Self {
            annotations: Vec::new(),
            labels: Vec::new(),
        }
    }

    /// Whether an annotation key is dropped from copies.
    pub fn strips_annotation(&self, key: &str) -> bool {
        self.annotations.iter().any(|rule| rule_matches(rule, key))
    }

    /// Whether a label key is dropped from copies.
    pub fn strips_label(&self, key: &str) -> bool {
        self.labels.iter().any(|rule| rule_matches(rule, key))
    }
}

/// A rule ending in `/` is a prefix (every key under that domain); anything else is a key.
fn rule_matches(rule: &str, key: &str) -> bool {
    if rule.ends_with('/') {
        key.starts_with(rule)
    } else {
        key == rule
    }
}

/// A validated propagation configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PropagationConfig {
    rules: Vec<Rule>,
    strip: StripRules,
}

impl PropagationConfig {
    /// Parses and validates the YAML text of `--propagation-config`.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_yaml_ng::from_str(text)?
        };
        let rules = rules(file.resources)?;
        let strip = strip_rules(file.strip_metadata)?;
        Ok(Self { rules, strip })
    }

    /// The mode for a kind: Roles and RoleBindings always `Propagate`, else its entry, else
    /// `Ignore` (HNC's default for kinds not listed, and what a kind removed from the file gets).
    pub fn mode(&self, id: &KindId) -> Mode {
        if id.is_enforced() {
            return Mode::Propagate;
        }
        self.rules
            .iter()
            .find(|rule| rule.matches(id))
            .map_or(Mode::Ignore, |rule| rule.mode)
    }

    /// The kinds the file names (for discovery to resolve), group and kind-or-resource.
    pub fn listed(&self) -> impl Iterator<Item = (&str, &str)> {
        self.rules.iter().map(|rule| {
            let name = match &rule.name {
                Name::Kind(kind) | Name::Resource(kind) => kind.as_str(),
            };
            (rule.group.as_str(), name)
        })
    }

    /// The GitOps metadata copies lose.
    pub fn strip(&self) -> &StripRules {
        &self.strip
    }
}

fn rules(entries: Vec<Entry>) -> Result<Vec<Rule>, ConfigError> {
    let mut rules: Vec<Rule> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let name = match (entry.kind, entry.resource) {
            (Some(kind), None) => Name::Kind(kind),
            (None, Some(resource)) => Name::Resource(resource),
            (None, None) => return Err(ConfigError::Unnamed { index }),
            (Some(kind), Some(resource)) => {
                return Err(ConfigError::BothNames {
                    index,
                    kind,
                    resource,
                });
            }
        };
        let group = match (entry.api_version, entry.group, entry.version) {
            (Some(api_version), None, None) => api_version
                .rsplit_once('/')
                .map_or(String::new(), |(group, _)| group.to_string()),
            (Some(api_version), _, _) => {
                return Err(ConfigError::ApiVersionAndGroup { index, api_version });
            }
            (None, group, _) => group.unwrap_or_default(),
        };
        let rule = Rule {
            group,
            name,
            mode: entry.mode,
        };
        check_rule(&rules, index, &rule)?;
        rules.push(rule);
    }
    Ok(rules)
}

fn check_rule(earlier: &[Rule], index: usize, rule: &Rule) -> Result<(), ConfigError> {
    let probe = match &rule.name {
        Name::Kind(kind) => KindId::new(&rule.group, kind, ""),
        Name::Resource(resource) => KindId::new(&rule.group, "", resource),
    };
    if probe.is_enforced() && rule.mode != Mode::Propagate {
        return Err(ConfigError::Enforced {
            index,
            what: rule.describe(),
            mode: rule.mode,
        });
    }
    // Same group and same name; a kind named once by `kind` and once by `resource` can only be
    // caught once discovery maps one to the other (see `find_overlaps`).
    if let Some(first) = earlier
        .iter()
        .position(|other| other.group == rule.group && other.name == rule.name)
    {
        return Err(ConfigError::Duplicate {
            index: first,
            again: index,
            what: rule.describe(),
        });
    }
    Ok(())
}

fn strip_rules(file: StripFile) -> Result<StripRules, ConfigError> {
    for (field, keys) in [("annotations", &file.annotations), ("labels", &file.labels)] {
        if let Some(index) = keys.iter().position(|key| key.trim().is_empty()) {
            return Err(ConfigError::EmptyStripKey { field, index });
        }
    }
    let mut strip = if file.defaults {
        StripRules::default()
    } else {
        StripRules::none()
    };
    strip.annotations.extend(file.annotations);
    strip.labels.extend(file.labels);
    Ok(strip)
}

/// After discovery: entries that name the same kind twice (once by `kind`, once by `resource`),
/// as `(first index, second index)`. The runtime refuses such a file with the kind's name.
pub fn find_overlaps(config: &PropagationConfig, discovered: &[KindId]) -> Vec<(usize, usize)> {
    let mut overlaps = Vec::new();
    for id in discovered {
        let hits: Vec<usize> = config
            .rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| rule.matches(id))
            .map(|(index, _)| index)
            .collect();
        if let [first, second, ..] = hits.as_slice() {
            overlaps.push((*first, *second));
        }
    }
    overlaps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> KindId {
        KindId::new("", "Secret", "secrets")
    }

    fn parse(text: &str) -> PropagationConfig {
        PropagationConfig::from_yaml(text).unwrap_or_else(|e| unreachable!("{e}"))
    }

    fn refusal(text: &str) -> String {
        match PropagationConfig::from_yaml(text) {
            Ok(config) => unreachable!("accepted: {config:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_propagate_rbac_and_ignore_the_rest() {
        for config in [parse(""), PropagationConfig::default(), parse("resources: []")] {
            assert_eq!(
                config.mode(&KindId::new(RBAC_GROUP, "Role", "roles")),
                Mode::Propagate
            );
            assert_eq!(
                config.mode(&KindId::new(RBAC_GROUP, "RoleBinding", "rolebindings")),
                Mode::Propagate
            );
            assert_eq!(config.mode(&secret()), Mode::Ignore);
            assert!(
                config
                    .strip()
                    .strips_annotation("kubectl.kubernetes.io/last-applied-configuration")
            );
        }
    }

    #[test]
    fn modes_by_kind_or_resource() {
        let config = parse(
            "resources:\n\
             - resource: secrets\n\
             - group: networking.k8s.io\n  version: v1\n  kind: NetworkPolicy\n  mode: AllowPropagate\n\
             - kind: ConfigMap\n  mode: Remove\n\
             - apiVersion: batch/v1\n  kind: CronJob\n  mode: AllowPropagate\n\
             - apiVersion: v1\n  kind: ResourceQuota\n\
             - group: example.com\n  resource: widgets\n  mode: Ignore\n",
        );
        assert_eq!(
            config.mode(&secret()),
            Mode::Propagate,
            "mode defaults to Propagate"
        );
        assert_eq!(
            config.mode(&KindId::new(
                "networking.k8s.io",
                "NetworkPolicy",
                "networkpolicies"
            )),
            Mode::AllowPropagate
        );
        assert_eq!(
            config.mode(&KindId::new("", "ConfigMap", "configmaps")),
            Mode::Remove
        );
        assert_eq!(
            config.mode(&KindId::new("example.com", "Widget", "widgets")),
            Mode::Ignore
        );
        assert_eq!(
            config.mode(&KindId::new("other.com", "Widget", "widgets")),
            Mode::Ignore,
            "group must match"
        );
        assert_eq!(
            config.mode(&KindId::new("batch", "CronJob", "cronjobs")),
            Mode::AllowPropagate
        );
        assert_eq!(
            config.mode(&KindId::new("", "ResourceQuota", "resourcequotas")),
            Mode::Propagate
        );
        assert_eq!(config.listed().count(), 6);
    }

    #[test]
    fn kind_removed_from_the_file_is_ignored() {
        let before = parse("resources:\n- kind: Secret\n");
        let after = parse("resources: []\n");
        assert_eq!(before.mode(&secret()), Mode::Propagate);
        assert_eq!(after.mode(&secret()), Mode::Ignore);
    }

    #[test]
    fn rbac_explicitly_propagate_is_accepted() {
        let config =
            parse("resources:\n- group: rbac.authorization.k8s.io\n  kind: Role\n  mode: Propagate\n");
        assert_eq!(
            config.mode(&KindId::new(RBAC_GROUP, "Role", "roles")),
            Mode::Propagate
        );
    }

    #[test]
    fn refusals_are_actionable() {
        let cases = [
            (
                "resources:\n- group: rbac.authorization.k8s.io\n  resource: rolebindings\n  mode: Ignore\n",
                "resources[0] (rbac.authorization.k8s.io resource rolebindings) sets mode Ignore, but Roles and RoleBindings are always Propagate",
            ),
            (
                "resources:\n- kind: Secret\n- group: rbac.authorization.k8s.io\n  kind: Role\n  mode: Remove\n",
                "resources[1] (rbac.authorization.k8s.io kind Role) sets mode Remove",
            ),
            (
                "resources:\n- kind: Secret\n- kind: Secret\n  mode: Remove\n",
                "resources[0] (core kind Secret) is listed again at resources[1]",
            ),
            (
                "resources:\n- kind: Secret\n  mode: Sometimes\n",
                "unknown variant `Sometimes`",
            ),
            (
                "resources:\n- kind: Secret\n  mod: Propagate\n",
                "unknown field `mod`",
            ),
            ("resource:\n- kind: Secret\n", "unknown field `resource`"),
            (
                "resources:\n- group: apps\n",
                "resources[0] names neither `kind` nor `resource`",
            ),
            (
                "resources:\n- kind: Secret\n  resource: secrets\n",
                "gives both kind \"Secret\" and resource \"secrets\"",
            ),
            (
                "stripMetadata:\n  labels: ['']\n",
                "stripMetadata labels[0] is empty",
            ),
            (
                "resources:\n- apiVersion: apps/v1\n  group: apps\n  kind: Deployment\n",
                "resources[0] gives apiVersion \"apps/v1\" and also group or version",
            ),
            ("stripMetadata:\n  annotation: []\n", "unknown field `annotation`"),
        ];
        for (text, want) in cases {
            let message = refusal(text);
            assert!(message.contains(want), "{text:?}\n got: {message}\nwant: {want}");
        }
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let message = refusal("resources:\n- kind: Secret\n  mode: [\n");
        assert!(message.contains("line"), "{message}");
    }

    #[test]
    fn strip_rules_are_configurable() {
        let config =
            parse("stripMetadata:\n  defaults: false\n  annotations: ['example.com/']\n  labels: ['team']\n");
        let strip = config.strip();
        assert!(!strip.strips_annotation("argocd.argoproj.io/tracking-id"));
        assert!(strip.strips_annotation("example.com/anything"));
        assert!(!strip.strips_annotation("example.community/x"));
        assert!(strip.strips_label("team"));
        assert!(!strip.strips_label("team2"));

        let defaults = StripRules::default();
        for key in [
            "argocd.argoproj.io/tracking-id",
            "argocd.argoproj.io/sync-options",
            "kustomize.toolkit.fluxcd.io/name",
            "meta.helm.sh/release-name",
            "kubectl.kubernetes.io/last-applied-configuration",
        ] {
            assert!(defaults.strips_annotation(key), "{key}");
        }
        for key in [
            "app.kubernetes.io/instance",
            "helm.sh/chart",
            "kustomize.toolkit.fluxcd.io/namespace",
        ] {
            assert!(defaults.strips_label(key), "{key}");
        }
        assert!(!defaults.strips_label("app.kubernetes.io/name"));
    }

    #[test]
    fn overlaps_found_after_discovery() {
        let config = parse("resources:\n- kind: Secret\n- resource: secrets\n  mode: Remove\n");
        assert_eq!(find_overlaps(&config, &[secret()]), vec![(0, 1)]);
    }
}
