//! HNC's per-object exceptions, under our prefix: `select`, `treeSelect`, `none`, `all`
//! (see [`super::keys`]). Parsed once per source object, evaluated per destination. No I/O.
//!
//! Evaluation follows HNC's `selectors.ShouldPropagate` step by step, because the order decides
//! which error is reported and when a later annotation is never looked at:
//! 1. `select`: a parse error is an error; a non-empty selector opts in, and a destination it
//!    does not match is excluded at once (later annotations are not consulted).
//! 2. `treeSelect`: same, after its own validation (each comma-separated part is `x` or `!x` with
//!    `x` a DNS-1123 label; at most one positive name).
//! 3. `none`: `strconv.ParseBool`; an invalid value is an error, `true` excludes.
//! 4. `all`: `strconv.ParseBool`; an invalid value is an error, `true` opts in.
//!
//! With no opt-in, `Propagate` propagates and `AllowPropagate` does not. An error means the
//! object is not propagated to that destination; the caller reports it.

use std::collections::BTreeMap;

use kube::core::{Expression, Selector, SelectorExt};

use super::config::Mode;
use super::keys;
use super::selector::{self, SelectorError};

/// Why an object's exception annotations could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExceptionError {
    #[error("annotation {key}={value:?} is not a valid label selector: {source}")]
    Select {
        key: &'static str,
        value: String,
        source: SelectorError,
    },
    #[error("annotation {key}={value:?}: {name:?} is not a valid namespace name: {problem}")]
    TreeSelectName {
        key: &'static str,
        value: String,
        name: String,
        problem: String,
    },
    #[error(
        "annotation {key}={value:?} names more than one namespace without '!' ({names:?}); \
         no namespace can be in two subtrees at once, so use one positive name and '!' for the rest"
    )]
    TreeSelectPositives {
        key: &'static str,
        value: String,
        names: Vec<String>,
    },
    #[error(
        "annotation {key}={value:?} is not a boolean; use true or false (also 1, t, T, TRUE, True, 0, f, F, FALSE, False)"
    )]
    NotBoolean { key: &'static str, value: String },
}

impl ExceptionError {
    /// Stable name for reports and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ExceptionError::Select { .. } => "invalid-select",
            ExceptionError::TreeSelectName { .. } => "invalid-tree-select-name",
            ExceptionError::TreeSelectPositives { .. } => "tree-select-positives",
            ExceptionError::NotBoolean { .. } => "invalid-boolean",
        }
    }
}

/// The exception annotations of one source object, each parsed (or failed) up front.
#[derive(Debug, Clone)]
pub struct Exceptions {
    select: Result<Selector, ExceptionError>,
    tree_select: Result<Selector, ExceptionError>,
    none: Result<bool, ExceptionError>,
    all: Result<bool, ExceptionError>,
}

impl Exceptions {
    /// Reads the four annotations from an object's annotations. Absent and empty are the same.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Self {
        let get = |key: &str| annotations.get(key).map(String::as_str).unwrap_or("");
        Self {
            select: parse_select(get(keys::SELECT_ANNOTATION)),
            tree_select: parse_tree_select(get(keys::TREE_SELECT_ANNOTATION)),
            none: parse_bool(keys::NONE_ANNOTATION, get(keys::NONE_ANNOTATION)),
            all: parse_bool(keys::ALL_ANNOTATION, get(keys::ALL_ANNOTATION)),
        }
    }

    /// Whether the object propagates to a destination with these labels (tree labels included)
    /// under `mode`. `Remove` and `Ignore` never propagate; the caller normally decides those
    /// before asking.
    pub fn allows(
        &self,
        mode: Mode,
        destination_labels: &BTreeMap<String, String>,
    ) -> Result<bool, ExceptionError> {
        let mut opted_in = mode == Mode::Propagate;
        for selector in [&self.select, &self.tree_select] {
            let selector = selector.as_ref().map_err(Clone::clone)?;
            if !selector.selects_all() {
                opted_in = true;
                if !selector.matches(destination_labels) {
                    return Ok(false);
                }
            }
        }
        if self.none.clone()? {
            return Ok(false);
        }
        if self.all.clone()? {
            opted_in = true;
        }
        Ok(opted_in && matches!(mode, Mode::Propagate | Mode::AllowPropagate))
    }
}

fn parse_select(value: &str) -> Result<Selector, ExceptionError> {
    selector::parse_label_selector(value).map_err(|source| ExceptionError::Select {
        key: keys::SELECT_ANNOTATION,
        value: value.into(),
        source,
    })
}

/// `x` means "x and its descendants" (x's tree label exists); `!x` means "not in x's subtree".
fn parse_tree_select(value: &str) -> Result<Selector, ExceptionError> {
    if value.is_empty() {
        return Ok(Selector::default());
    }
    let mut expressions = Vec::new();
    let mut positives = Vec::new();
    for part in value.split(',').map(str::trim) {
        let (negated, name) = match part.strip_prefix('!') {
            Some(name) => (true, name),
            None => (false, part),
        };
        // HNC indexes part[0] here and would panic on an empty part ("a,"); we report it.
        if let Some(problem) = selector::dns1123_label_problem(name) {
            return Err(ExceptionError::TreeSelectName {
                key: keys::TREE_SELECT_ANNOTATION,
                value: value.into(),
                name: name.into(),
                problem,
            });
        }
        let key = keys::tree_label(name);
        if negated {
            expressions.push(Expression::DoesNotExist(key));
        } else {
            positives.push(name.to_string());
            expressions.push(Expression::Exists(key));
        }
    }
    if positives.len() > 1 {
        return Err(ExceptionError::TreeSelectPositives {
            key: keys::TREE_SELECT_ANNOTATION,
            value: value.into(),
            names: positives,
        });
    }
    Ok(expressions.into_iter().collect())
}

/// Go's `strconv.ParseBool`, which HNC uses: exactly these spellings, nothing else.
/// The empty string is `false` (HNC checks it before calling ParseBool).
fn parse_bool(key: &'static str, value: &str) -> Result<bool, ExceptionError> {
    match value {
        "" => Ok(false),
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(ExceptionError::NotBoolean {
            key,
            value: value.into(),
        }),
    }
}

#[cfg(test)]
mod tests;
