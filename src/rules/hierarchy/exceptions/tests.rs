//! The exception matrix of issue 11, mirroring HNC's own table in
//! `internal/objects/reconciler_test.go` (parent `p`, children `c1`..`c3`, grandchild `g1` under `c1`).

use super::*;

/// What `allows` should say for one destination.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Yes,
    No,
    Error,
}
use Want::{Error, No, Yes};

/// The same answer for every one of `DESTINATIONS`.
const EVERYWHERE: [Want; 4] = [Yes; 4];
const NOWHERE: [Want; 4] = [No; 4];
const ERRORS: [Want; 4] = [Error; 4];

/// (case name, annotations, what each of `DESTINATIONS` should get).
type Row<'a> = (&'a str, &'a [(&'a str, &'a str)], [Want; 4]);

const DESTINATIONS: [&str; 4] = ["c1", "c2", "c3", "g1"];

/// Tree labels (plus one ordinary label on c2) as the reaper keeps them.
fn destination_labels(name: &str) -> BTreeMap<String, String> {
    let chain: &[&str] = match name {
        "c1" => &["c1", "p"],
        "c2" => &["c2", "p"],
        "c3" => &["c3", "p"],
        _ => &["g1", "c1", "p"],
    };
    let mut labels: BTreeMap<String, String> = chain
        .iter()
        .enumerate()
        .map(|(depth, ns)| (keys::tree_label(ns), depth.to_string()))
        .collect();
    if name == "c2" {
        labels.insert("env".into(), "prod".into());
    }
    labels
}

fn exceptions(pairs: &[(&str, &str)]) -> Exceptions {
    let annotations = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Exceptions::from_annotations(&annotations)
}

/// The error message `allows` gives for c1, empty if none.
fn error_message(pairs: &[(&str, &str)]) -> String {
    exceptions(pairs)
        .allows(Mode::Propagate, &destination_labels("c1"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

fn check(name: &str, mode: Mode, pairs: &[(&str, &str)], want: [Want; 4]) {
    let ex = exceptions(pairs);
    for (dest, want) in DESTINATIONS.iter().zip(want) {
        let got = match ex.allows(mode, &destination_labels(dest)) {
            Ok(true) => Yes,
            Ok(false) => No,
            Err(_) => Error,
        };
        assert_eq!(got, want, "{name}: destination {dest} under {mode:?}");
    }
}

const SEL: &str = keys::SELECT_ANNOTATION;
const TREE: &str = keys::TREE_SELECT_ANNOTATION;
const NONE: &str = keys::NONE_ANNOTATION;
const ALL: &str = keys::ALL_ANNOTATION;

#[test]
fn matrix_under_propagate() {
    let p = Mode::Propagate;
    let rows: &[Row] = &[
        ("no annotation", &[], EVERYWHERE),
        ("empty select", &[(SEL, "")], EVERYWHERE),
        (
            "select tree label",
            &[(SEL, "c1.tree.controller.observatorium.io/depth")],
            [Yes, No, No, Yes],
        ),
        (
            "select depth value",
            &[(SEL, "c1.tree.controller.observatorium.io/depth=0")],
            [Yes, No, No, No],
        ),
        ("select ordinary label", &[(SEL, "env=prod")], [No, Yes, No, No]),
        (
            "select negated",
            &[(SEL, "!c1.tree.controller.observatorium.io/depth")],
            [No, Yes, Yes, No],
        ),
        (
            "select two negated",
            &[(
                SEL,
                "!c1.tree.controller.observatorium.io/depth, !c2.tree.controller.observatorium.io/depth",
            )],
            [No, No, Yes, No],
        ),
        ("select invalid", &[(SEL, "$foo")], ERRORS),
        // HNC goes through a LabelSelector, which has no `!=`: an error there, so here too
        ("select !=", &[(SEL, "env!=prod")], ERRORS),
        ("select notin", &[(SEL, "env notin (prod)")], [Yes, No, Yes, Yes]),
        ("treeSelect x", &[(TREE, "c1")], [Yes, No, No, Yes]),
        ("treeSelect !x", &[(TREE, "!c1")], [No, Yes, Yes, No]),
        ("treeSelect !x, !y", &[(TREE, "!c1, !c2")], [No, No, Yes, No]),
        (
            "treeSelect x, !child of x",
            &[(TREE, "c1, !g1")],
            [Yes, No, No, No],
        ),
        ("treeSelect two positives", &[(TREE, "c1, c2")], ERRORS),
        ("treeSelect invalid name", &[(TREE, "$foo")], ERRORS),
        ("treeSelect upper case", &[(TREE, "C1")], ERRORS),
        ("treeSelect lone !", &[(TREE, "!")], ERRORS),
        ("treeSelect empty part", &[(TREE, "c1,")], ERRORS),
        ("none true", &[(NONE, "true")], NOWHERE),
        ("none false", &[(NONE, "false")], EVERYWHERE),
        ("none invalid", &[(NONE, "$foo")], ERRORS),
        ("none yes is not Go's bool", &[(NONE, "yes")], ERRORS),
        ("none mixed case is not Go's bool", &[(NONE, "tRuE")], ERRORS),
        ("all true", &[(ALL, "true")], EVERYWHERE),
        ("all invalid", &[(ALL, "all")], ERRORS),
        // several at once: the intersection, in HNC's order
        (
            "select and treeSelect negations",
            &[(SEL, "!c1.tree.controller.observatorium.io/depth"), (TREE, "!c2")],
            [No, No, Yes, No],
        ),
        (
            "select and treeSelect disjoint",
            &[(SEL, "c1.tree.controller.observatorium.io/depth"), (TREE, "c2")],
            NOWHERE,
        ),
        // select excludes c2/c3 before the bad treeSelect is looked at: no error there
        (
            "select first, then two positives",
            &[
                (SEL, "c1.tree.controller.observatorium.io/depth"),
                (TREE, "c1, c2"),
            ],
            [Error, No, No, Error],
        ),
        (
            "select, treeSelect and none",
            &[
                (SEL, "c1.tree.controller.observatorium.io/depth"),
                (TREE, "c1"),
                (NONE, "true"),
            ],
            NOWHERE,
        ),
        ("none and invalid all", &[(NONE, "true"), (ALL, "all")], NOWHERE),
        (
            "invalid none wins over all",
            &[(NONE, "x"), (ALL, "true")],
            ERRORS,
        ),
        (
            "all four",
            &[
                (SEL, "c1.tree.controller.observatorium.io/depth"),
                (TREE, "c1"),
                (NONE, "true"),
                (ALL, "true"),
            ],
            NOWHERE,
        ),
        ("none false and all true", &[(NONE, "0"), (ALL, "1")], EVERYWHERE),
    ];
    for (name, pairs, want) in rows {
        check(name, p, pairs, *want);
    }
}

#[test]
fn go_parse_bool_spellings() {
    for truthy in ["1", "t", "T", "TRUE", "true", "True"] {
        check(truthy, Mode::Propagate, &[(NONE, truthy)], NOWHERE);
        check(truthy, Mode::AllowPropagate, &[(ALL, truthy)], EVERYWHERE);
    }
    for falsy in ["0", "f", "F", "FALSE", "false", "False", ""] {
        check(falsy, Mode::Propagate, &[(NONE, falsy)], EVERYWHERE);
        check(falsy, Mode::AllowPropagate, &[(ALL, falsy)], NOWHERE);
    }
    for invalid in ["yes", "no", "on", " true", "tRUE", "2"] {
        check(invalid, Mode::AllowPropagate, &[(ALL, invalid)], ERRORS);
    }
}

#[test]
fn matrix_under_allow_propagate() {
    let a = Mode::AllowPropagate;
    let rows: &[Row] = &[
        ("no annotation: opt-in only", &[], NOWHERE),
        ("empty select does not opt in", &[(SEL, "")], NOWHERE),
        ("select opts in", &[(SEL, "env=prod")], [No, Yes, No, No]),
        ("treeSelect x opts in", &[(TREE, "c1")], [Yes, No, No, Yes]),
        (
            "treeSelect !x opts in elsewhere",
            &[(TREE, "!c1")],
            [No, Yes, Yes, No],
        ),
        ("all opts in", &[(ALL, "true")], EVERYWHERE),
        ("all false", &[(ALL, "false")], NOWHERE),
        ("none true", &[(NONE, "true")], NOWHERE),
        ("none false does not opt in", &[(NONE, "false")], NOWHERE),
    ];
    for (name, pairs, want) in rows {
        check(name, a, pairs, *want);
    }
}

#[test]
fn remove_and_ignore_never_propagate() {
    for mode in [Mode::Remove, Mode::Ignore] {
        check("all", mode, &[(ALL, "true")], NOWHERE);
        check("plain", mode, &[], NOWHERE);
    }
}

#[test]
fn namespace_label_change_moves_it_in_and_out() {
    let ex = exceptions(&[(SEL, "env=prod")]);
    let mut labels = destination_labels("c3");
    assert_eq!(ex.allows(Mode::Propagate, &labels), Ok(false));
    labels.insert("env".into(), "prod".into());
    assert_eq!(ex.allows(Mode::Propagate, &labels), Ok(true));
    labels.insert("env".into(), "dev".into());
    assert_eq!(ex.allows(Mode::Propagate, &labels), Ok(false));

    // Moving g1 from under c1 to under c2 changes its tree labels and so the treeSelect answer.
    let ex = exceptions(&[(TREE, "c1")]);
    let mut g1 = destination_labels("g1");
    assert_eq!(ex.allows(Mode::Propagate, &g1), Ok(true));
    g1.remove(&keys::tree_label("c1"));
    g1.insert(keys::tree_label("c2"), "1".into());
    assert_eq!(ex.allows(Mode::Propagate, &g1), Ok(false));
}

#[test]
fn errors_say_what_to_fix() {
    let ex = exceptions(&[(TREE, "c1, c2")]);
    let err = ex.allows(Mode::Propagate, &destination_labels("c1"));
    assert_eq!(
        err,
        Err(ExceptionError::TreeSelectPositives {
            key: TREE,
            value: "c1, c2".into(),
            names: vec!["c1".into(), "c2".into()],
        })
    );
    let message = error_message(&[(TREE, "!Bad")]);
    assert!(
        message.contains("\"Bad\" is not a valid namespace name"),
        "{message}"
    );
    let message = error_message(&[(NONE, "yes")]);
    assert!(message.contains("not a boolean"), "{message}");
}
