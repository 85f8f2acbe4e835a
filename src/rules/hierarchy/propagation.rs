//! Propagation of objects from ancestors to descendants: which objects may ever travel, which
//! source wins for a destination, what a copy looks like, its content hash, whether an existing
//! object is our copy, and the plan for each (destination, kind, name). Pure: objects come in as
//! JSON (`DynamicObject` serialized), plans go out as data for the executor. No I/O.
//!
//! Ownership is proven, never assumed from a label anyone can write: an existing object is our
//! copy only if it carries [`keys::INHERITED_FROM_LABEL`] and a [`keys::SOURCE_UID_ANNOTATION`]
//! that is the uid of the same-named object in the namespace the label names, or, when that
//! source is gone or was recreated, if its own canonical content still hashes to its
//! [`keys::SOURCE_HASH_ANNOTATION`] (an intact copy we wrote). Anything else with the label is a
//! forged copy: reported, never updated or deleted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::config::{Mode, StripRules};
use super::exceptions::{ExceptionError, Exceptions};
use super::keys;

mod compact;
pub use compact::{CompactCopy, Interner};

/// Why an object is never propagated, whatever the mode and exceptions say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NeverReason {
    /// Finalizers would make copies undeletable by us; HNC refuses them too.
    Finalizers,
    /// `kubernetes.io/service-account-token` Secrets: identity is not inherited, and Kubernetes
    /// deletes copies of them anyway.
    ServiceAccountToken,
    /// `helm.sh/release.v1` Secrets: Helm's own release records.
    HelmRelease,
    /// `kube-root-ca.crt` / `istio-ca-root-cert` ConfigMaps, created in every namespace.
    CaBundle,
}

impl NeverReason {
    /// Stable name for reports and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            NeverReason::Finalizers => "finalizers",
            NeverReason::ServiceAccountToken => "service-account-token",
            NeverReason::HelmRelease => "helm-release",
            NeverReason::CaBundle => "ca-bundle",
        }
    }
}

fn metadata(object: &Value) -> Option<&Map<String, Value>> {
    object.get("metadata")?.as_object()
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    metadata(object)?.get(field)?.as_str()
}

/// `metadata.name`.
pub fn name(object: &Value) -> Option<&str> {
    meta_str(object, "name")
}

/// `metadata.uid`.
pub fn uid(object: &Value) -> Option<&str> {
    meta_str(object, "uid")
}

fn string_map(object: &Value, field: &str) -> BTreeMap<String, String> {
    metadata(object)
        .and_then(|meta| meta.get(field))
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// `metadata.labels`.
pub fn labels(object: &Value) -> BTreeMap<String, String> {
    string_map(object, "labels")
}

/// `metadata.annotations`.
pub fn annotations(object: &Value) -> BTreeMap<String, String> {
    string_map(object, "annotations")
}

/// API group (`""` for core) and kind.
pub fn group_kind(object: &Value) -> (&str, &str) {
    let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    (group, kind)
}

/// Whether an object is a copy (carries the inherited-from label): copies are never sources.
pub fn is_copy(object: &Value) -> bool {
    labels(object).contains_key(keys::INHERITED_FROM_LABEL)
}

/// Whether an object may never be propagated, and why.
pub fn never_propagated(object: &Value) -> Option<NeverReason> {
    let has_finalizers = metadata(object)
        .and_then(|meta| meta.get("finalizers"))
        .and_then(Value::as_array)
        .is_some_and(|finalizers| !finalizers.is_empty());
    if has_finalizers {
        return Some(NeverReason::Finalizers);
    }
    let secret_type = object.get("type").and_then(Value::as_str);
    match (group_kind(object), secret_type) {
        (("", "Secret"), Some("kubernetes.io/service-account-token")) => {
            Some(NeverReason::ServiceAccountToken)
        }
        (("", "Secret"), Some("helm.sh/release.v1")) => Some(NeverReason::HelmRelease),
        (("", "ConfigMap"), _) if matches!(name(object), Some("kube-root-ca.crt" | "istio-ca-root-cert")) => {
            Some(NeverReason::CaBundle)
        }
        _ => None,
    }
}

/// Labels we set on a copy ourselves, never taken from its source.
fn is_our_label(key: &str) -> bool {
    keys::is_ours(key) || key == keys::MANAGED_BY_LABEL
}

/// Labels a copy keeps from its source: not ours, not managed-by (we set it), not GitOps.
fn kept_labels(object: &Value, strip: &StripRules) -> Map<String, Value> {
    labels(object)
        .into_iter()
        .filter(|(k, _)| !is_our_label(k) && !strip.strips_label(k))
        .map(|(k, v)| (k, Value::String(v)))
        .collect()
}

fn kept_annotations(object: &Value, strip: &StripRules) -> Map<String, Value> {
    annotations(object)
        .into_iter()
        .filter(|(k, _)| !keys::is_ours(k) && !strip.strips_annotation(k))
        .map(|(k, v)| (k, Value::String(v)))
        .collect()
}

/// The part of an object that a copy reproduces: everything but `status` and `metadata`, plus
/// the name and the kept labels and annotations. Source and intact copy canonicalize equal.
pub fn canonical(object: &Value, strip: &StripRules) -> Value {
    let mut out: Map<String, Value> = object
        .as_object()
        .map(|map| {
            map.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mut meta = Map::new();
    meta.insert("name".into(), Value::String(name(object).unwrap_or("").into()));
    meta.insert("labels".into(), Value::Object(kept_labels(object, strip)));
    meta.insert(
        "annotations".into(),
        Value::Object(kept_annotations(object, strip)),
    );
    out.insert("metadata".into(), Value::Object(meta));
    Value::Object(out)
}

/// SHA-256 (hex) of the canonical content, with object keys sorted so that key order (and
/// serde_json's `preserve_order` feature, if anything turns it on) never changes it.
pub fn content_hash(object: &Value, strip: &StripRules) -> String {
    let mut text = String::new();
    write_sorted(&canonical(object, strip), &mut text);
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().fold(String::with_capacity(64), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}

/// Content hashes remembered by object identity: a uid and a resourceVersion fix an object's
/// content, so a source seen from a thousand destinations in one sweep is hashed once, not a
/// thousand times. One memo serves one sweep (one set of strip rules); objects without a uid or
/// resourceVersion are hashed every time.
#[derive(Debug, Default)]
pub struct HashMemo(Mutex<HashMap<(String, String), String>>);

impl HashMemo {
    /// `object`'s content hash, remembered for the next object of its identity.
    pub fn content_hash(&self, object: &Value, strip: &StripRules) -> String {
        let Some(key) = identity(object) else {
            return content_hash(object, strip);
        };
        self.remembered(&key).unwrap_or_else(|| {
            let hash = content_hash(object, strip);
            self.remember(key, hash.clone());
            hash
        })
    }

    /// `object`'s remembered hash, else its hash computed and not remembered: a destination's
    /// object is seen once per sweep, so remembering it would only hold memory.
    pub fn known_or_hash(&self, object: &Value, strip: &StripRules) -> String {
        identity(object)
            .and_then(|key| self.remembered(&key))
            .unwrap_or_else(|| content_hash(object, strip))
    }

    fn remembered(&self, key: &(String, String)) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    fn remember(&self, key: (String, String), hash: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, hash);
    }
}

/// An object's uid and resourceVersion, which fix its content.
fn identity(object: &Value) -> Option<(String, String)> {
    let meta = metadata(object)?;
    let field = |name: &str| meta.get(name)?.as_str().map(str::to_owned);
    Some((field("uid")?, field("resourceVersion")?))
}

fn write_sorted(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            out.push('{');
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_sorted(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// An object in an ancestor namespace that may be the source of copies.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub namespace: &'a str,
    pub object: &'a Value,
}

/// The copy of `source` to write into `destination`: canonical content, namespace set, our
/// labels and annotations added. No ownerReferences, finalizers, status, managedFields, uid,
/// resourceVersion, timestamps, generation, selfLink or GitOps metadata survive.
pub fn build_copy(source: Source<'_>, destination: &str, strip: &StripRules) -> Value {
    copy_with_hash(source, destination, strip, content_hash(source.object, strip))
}

fn copy_with_hash(source: Source<'_>, destination: &str, strip: &StripRules, hash: String) -> Value {
    let mut copy = canonical(source.object, strip);
    if let Some(meta) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("namespace".into(), Value::String(destination.into()));
        if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
            labels.insert(keys::INHERITED_FROM_LABEL.into(), source.namespace.into());
            labels.insert(keys::MANAGED_BY_LABEL.into(), keys::MANAGED_BY_VALUE.into());
        }
        if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            let source_uid = uid(source.object).unwrap_or("");
            annotations.insert(keys::SOURCE_UID_ANNOTATION.into(), source_uid.into());
            annotations.insert(keys::SOURCE_HASH_ANNOTATION.into(), hash.into());
        }
    }
    copy
}

/// Who an existing destination object belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// No inherited-from label: the destination's own object.
    Foreign,
    /// Our copy (proven by source uid or intact content hash).
    Ours,
    /// Inherited-from label without proof: never updated or deleted.
    Forged { claimed_source: String },
}

/// Decides ownership of `existing` against every same-named object in the ancestors (`sources`,
/// eligible or not).
pub fn ownership(existing: &Value, sources: &[Source<'_>], strip: &StripRules) -> Ownership {
    ownership_hashed(existing, sources, || content_hash(existing, strip))
}

/// [`ownership`], with the existing object's content hash from `existing_hash`.
fn ownership_hashed(
    existing: &Value,
    sources: &[Source<'_>],
    existing_hash: impl FnOnce() -> String,
) -> Ownership {
    let labels = labels(existing);
    let Some(claimed) = labels.get(keys::INHERITED_FROM_LABEL) else {
        return Ownership::Foreign;
    };
    let annotations = annotations(existing);
    let Some(source_uid) = annotations
        .get(keys::SOURCE_UID_ANNOTATION)
        .filter(|u| !u.is_empty())
    else {
        return Ownership::Forged {
            claimed_source: claimed.clone(),
        };
    };
    let uid_matches = sources
        .iter()
        .any(|s| s.namespace == claimed && uid(s.object) == Some(source_uid.as_str()));
    // Hashing is the costlier proof; only needed when the source is gone or was recreated.
    let intact = || {
        annotations
            .get(keys::SOURCE_HASH_ANNOTATION)
            .is_some_and(|hash| *hash == existing_hash())
    };
    if uid_matches || intact() {
        Ownership::Ours
    } else {
        Ownership::Forged {
            claimed_source: claimed.clone(),
        }
    }
}

/// Why a source was passed over for a destination; the caller reports these (deduplicated per
/// source, since the same source is considered for every descendant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    Never {
        source_namespace: String,
        reason: NeverReason,
    },
    Exception {
        source_namespace: String,
        error: ExceptionError,
    },
}

impl Skip {
    /// Stable name for reports and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Skip::Never { reason, .. } => reason.as_str(),
            Skip::Exception { error, .. } => error.kind(),
        }
    }
}

/// Why a copy is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// No ancestor has a source of this name any more (deleted, or the namespace left the tree).
    SourceGone,
    /// Sources exist but none propagates here (exceptions, never-propagated, AllowPropagate).
    NotSelected,
    /// The kind's mode is `Remove`.
    ModeRemove,
}

/// Why a copy is deleted and created again instead of updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecreateReason {
    /// A RoleBinding's `roleRef` cannot be changed in place.
    RoleRefChanged,
    /// The copy is an `immutable: true` ConfigMap or Secret whose content changed.
    Immutable,
    /// A Secret's `type` cannot be changed in place.
    SecretTypeChanged,
}

/// What to do with one (destination, kind, name).
#[derive(Debug, Clone, PartialEq)]
pub enum CopyPlan {
    /// Nothing to write (mode Ignore, no source and no copy, or a foreign object no source names).
    Nothing,
    /// Our copy matches the winning source.
    InSync,
    /// Create this copy.
    Create { copy: Value },
    /// Replace our copy with this one (it carries the existing resourceVersion).
    Update { copy: Value },
    /// Delete our copy (uid precondition) and create this one.
    Recreate {
        uid: String,
        copy: Value,
        reason: RecreateReason,
    },
    /// Delete our copy (uid precondition).
    Delete { uid: String, reason: DeleteReason },
    /// The destination's own object has a propagating source's name: never overwritten; report.
    Conflict { source_namespace: String },
    /// An object claims to be a copy but is not provably ours: never touched; report.
    Forged { claimed_source: String },
}

impl CopyPlan {
    /// Stable name for reports and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            CopyPlan::Nothing => "nothing",
            CopyPlan::InSync => "in-sync",
            CopyPlan::Create { .. } => "create",
            CopyPlan::Update { .. } => "update",
            CopyPlan::Recreate { .. } => "recreate",
            CopyPlan::Delete { .. } => "delete",
            CopyPlan::Conflict { .. } => "conflict",
            CopyPlan::Forged { .. } => "forged",
        }
    }

    /// Whether executing it writes to the API server.
    pub fn writes(&self) -> bool {
        matches!(
            self,
            CopyPlan::Create { .. }
                | CopyPlan::Update { .. }
                | CopyPlan::Recreate { .. }
                | CopyPlan::Delete { .. }
        )
    }
}

/// The plan for one name plus the skips seen while choosing its source.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectPlan {
    pub plan: CopyPlan,
    pub skipped: Vec<Skip>,
}

/// One destination namespace and how copies are made there.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    pub mode: Mode,
    pub strip: &'a StripRules,
    /// The destination namespace.
    pub name: &'a str,
    /// The destination namespace's labels, tree labels included (exceptions select on them).
    pub labels: &'a BTreeMap<String, String>,
    /// The sweep's memo of source hashes, if it plans many destinations.
    pub hashes: Option<&'a HashMemo>,
}

impl Destination<'_> {
    /// A source's content hash, through the sweep's memo when there is one.
    fn source_hash(&self, source: &Value) -> String {
        match self.hashes {
            Some(memo) => memo.content_hash(source, self.strip),
            None => content_hash(source, self.strip),
        }
    }

    /// The content hash of an object in this destination: the memo knows it for a
    /// [`CompactCopy`], whose content is not at hand.
    fn existing_hash(&self, existing: &Value) -> String {
        match self.hashes {
            Some(memo) => memo.known_or_hash(existing, self.strip),
            None => content_hash(existing, self.strip),
        }
    }
}

/// Everything that decides one (destination, kind, name).
#[derive(Debug, Clone, Copy)]
pub struct Slot<'a> {
    pub destination: Destination<'a>,
    /// Same-named objects of this kind in the destination's ancestors, top-most first.
    pub sources: &'a [Source<'a>],
    /// The object of that name already in the destination, if any.
    pub existing: Option<&'a Value>,
}

/// Whether one source propagates to one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It propagates there.
    Propagate,
    /// The mode or its exceptions leave this destination out (or the object is a copy).
    NotSelected,
    /// It never propagates anywhere.
    Never(NeverReason),
    /// Its exception annotations are invalid; it propagates nowhere until fixed.
    Invalid(ExceptionError),
}

/// Decides one source for one destination: mode, built-in exclusions, then the exceptions.
pub fn decide(source: &Value, mode: Mode, destination_labels: &BTreeMap<String, String>) -> Decision {
    if !matches!(mode, Mode::Propagate | Mode::AllowPropagate) || is_copy(source) {
        return Decision::NotSelected;
    }
    if let Some(reason) = never_propagated(source) {
        return Decision::Never(reason);
    }
    match Exceptions::from_annotations(&annotations(source)).allows(mode, destination_labels) {
        Ok(true) => Decision::Propagate,
        Ok(false) => Decision::NotSelected,
        Err(error) => Decision::Invalid(error),
    }
}

/// The source that propagates to the destination: the top-most ancestor's, skipping sources
/// that are copies, never propagated, or excluded by their exceptions (HNC's
/// `getTopSourceToPropagate`).
fn winner<'a>(slot: &Slot<'a>, skipped: &mut Vec<Skip>) -> Option<Source<'a>> {
    for source in slot.sources {
        let source_namespace = source.namespace.to_string();
        match decide(source.object, slot.destination.mode, slot.destination.labels) {
            Decision::Propagate => return Some(*source),
            Decision::NotSelected => {}
            Decision::Never(reason) => skipped.push(Skip::Never {
                source_namespace,
                reason,
            }),
            Decision::Invalid(error) => skipped.push(Skip::Exception {
                source_namespace,
                error,
            }),
        }
    }
    None
}

/// Plans one (destination, kind, name).
pub fn plan_object(slot: &Slot<'_>) -> ObjectPlan {
    let mut skipped = Vec::new();
    // Ignore touches nothing; an object being deleted is left to finish (as HNC does).
    if slot.destination.mode == Mode::Ignore || slot.existing.is_some_and(is_terminating) {
        return ObjectPlan {
            plan: CopyPlan::Nothing,
            skipped,
        };
    }
    let chosen = winner(slot, &mut skipped);
    let plan = match (chosen, slot.existing) {
        (None, None) => CopyPlan::Nothing,
        (Some(source), None) => CopyPlan::Create {
            copy: copy_with_hash(
                source,
                slot.destination.name,
                slot.destination.strip,
                slot.destination.source_hash(source.object),
            ),
        },
        (chosen, Some(existing)) => plan_existing(slot, chosen, existing),
    };
    ObjectPlan { plan, skipped }
}

fn plan_existing(slot: &Slot<'_>, chosen: Option<Source<'_>>, existing: &Value) -> CopyPlan {
    let owner = ownership_hashed(existing, slot.sources, || {
        slot.destination.existing_hash(existing)
    });
    match (owner, chosen) {
        (Ownership::Foreign, None) => CopyPlan::Nothing,
        (Ownership::Foreign, Some(source)) => CopyPlan::Conflict {
            source_namespace: source.namespace.into(),
        },
        (Ownership::Forged { claimed_source }, _) => CopyPlan::Forged { claimed_source },
        (Ownership::Ours, None) => CopyPlan::Delete {
            uid: uid(existing).unwrap_or("").into(),
            reason: delete_reason(slot),
        },
        (Ownership::Ours, Some(source)) => refresh(slot, source, existing),
    }
}

fn is_terminating(object: &Value) -> bool {
    metadata(object).is_some_and(|meta| meta.get("deletionTimestamp").is_some_and(|t| !t.is_null()))
}

fn delete_reason(slot: &Slot<'_>) -> DeleteReason {
    if slot.destination.mode == Mode::Remove {
        DeleteReason::ModeRemove
    } else if slot.sources.iter().all(|s| is_copy(s.object)) {
        DeleteReason::SourceGone
    } else {
        DeleteReason::NotSelected
    }
}

/// Our copy exists and a source wins: in sync, update, or recreate.
fn refresh(slot: &Slot<'_>, source: Source<'_>, existing: &Value) -> CopyPlan {
    let source_hash = slot.destination.source_hash(source.object);
    let expected_marks = [
        Some(source.namespace.to_string()),
        Some(keys::MANAGED_BY_VALUE.to_string()),
        Some(uid(source.object).unwrap_or("").to_string()),
        Some(source_hash.clone()),
    ];
    // The steady state: decided without building a copy.
    if our_metadata(existing) == expected_marks && slot.destination.existing_hash(existing) == source_hash {
        return CopyPlan::InSync;
    }
    let want = copy_with_hash(source, slot.destination.name, slot.destination.strip, source_hash);
    let existing_uid = uid(existing).unwrap_or("").to_string();
    if let Some(reason) = recreate_reason(existing, source.object) {
        return CopyPlan::Recreate {
            uid: existing_uid,
            copy: want,
            reason,
        };
    }
    CopyPlan::Update {
        copy: with_resource_version(want, existing),
    }
}

/// The labels and annotations we set on copies, as they are on `object`.
fn our_metadata(object: &Value) -> [Option<String>; 4] {
    let labels = labels(object);
    let annotations = annotations(object);
    [
        labels.get(keys::INHERITED_FROM_LABEL).cloned(),
        labels.get(keys::MANAGED_BY_LABEL).cloned(),
        annotations.get(keys::SOURCE_UID_ANNOTATION).cloned(),
        annotations.get(keys::SOURCE_HASH_ANNOTATION).cloned(),
    ]
}

/// Top-level fields [`recreate_reason`] compares between a copy and its source (besides the
/// body of an immutable object): a [`CompactCopy`] keeps them.
const ROLE_REF: &str = "roleRef";
const SECRET_TYPE: &str = "type";

/// Fields the API server will not change in place. Labels and annotations of an immutable
/// ConfigMap/Secret can still be updated, so only its body counts.
fn recreate_reason(existing: &Value, source: &Value) -> Option<RecreateReason> {
    let field = |object: &Value, key: &str| object.get(key).cloned();
    match group_kind(existing) {
        ("rbac.authorization.k8s.io", "RoleBinding")
            if field(existing, ROLE_REF) != field(source, ROLE_REF) =>
        {
            Some(RecreateReason::RoleRefChanged)
        }
        ("", "Secret") if field(existing, SECRET_TYPE) != field(source, SECRET_TYPE) => {
            Some(RecreateReason::SecretTypeChanged)
        }
        ("", "ConfigMap" | "Secret") if is_immutable(existing) && body(existing) != body(source) => {
            Some(RecreateReason::Immutable)
        }
        _ => None,
    }
}

/// `immutable: true` (a ConfigMap or Secret): its body is replaced only by a recreate.
fn is_immutable(object: &Value) -> bool {
    object.get("immutable") == Some(&Value::Bool(true))
}

/// Everything but metadata and status.
fn body(object: &Value) -> Vec<(&String, &Value)> {
    let mut fields: Vec<(&String, &Value)> = object
        .as_object()
        .map(|map| {
            map.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status"))
                .collect()
        })
        .unwrap_or_default();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    fields
}

fn with_resource_version(mut copy: Value, existing: &Value) -> Value {
    let version = meta_str(existing, "resourceVersion").map(str::to_string);
    if let (Some(version), Some(meta)) = (version, copy.get_mut("metadata").and_then(Value::as_object_mut)) {
        meta.insert("resourceVersion".into(), Value::String(version));
    }
    copy
}

/// One kind in one destination: every ancestor's objects of the kind (top-most ancestor first)
/// and the destination's own.
#[derive(Debug, Clone, Copy)]
pub struct KindInDestination<'a> {
    pub destination: Destination<'a>,
    /// `(ancestor namespace, its objects of this kind)`, top-most ancestor first.
    pub ancestors: &'a [(&'a str, &'a [Value])],
    pub existing: &'a [Value],
}

/// Plans every name of one kind in one destination. Names with nothing to do are left out, so a
/// steady state yields only `InSync` entries for the copies.
pub fn plan_kind(input: &KindInDestination<'_>) -> BTreeMap<String, ObjectPlan> {
    let mut by_name: BTreeMap<&str, Vec<Source<'_>>> = BTreeMap::new();
    for (namespace, objects) in input.ancestors {
        for object in *objects {
            if let Some(n) = name(object) {
                by_name.entry(n).or_default().push(Source { namespace, object });
            }
        }
    }
    let existing: BTreeMap<&str, &Value> = input
        .existing
        .iter()
        .filter_map(|object| Some((name(object)?, object)))
        .collect();
    let names: BTreeSet<&str> = by_name.keys().chain(existing.keys()).copied().collect();
    let mut plans = BTreeMap::new();
    for n in names {
        let sources = by_name.get(n).map(Vec::as_slice).unwrap_or(&[]);
        let plan = plan_object(&Slot {
            destination: input.destination,
            sources,
            existing: existing.get(n).copied(),
        });
        if plan.plan != CopyPlan::Nothing || !plan.skipped.is_empty() {
            plans.insert(n.to_string(), plan);
        }
    }
    plans
}

#[cfg(test)]
mod tests;
