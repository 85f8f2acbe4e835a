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
        ("no annotation", &[], [Yes, Yes, Yes, Yes]),
        ("empty select", &[(SEL, "")], [Yes, Yes, Yes, Yes]),
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
        ("select invalid", &[(SEL, "$foo")], [Error, Error, Error, Error]),
        // HNC goes through a LabelSelector, which has no `!=`: an error there, so here too
        ("select !=", &[(SEL, "env!=prod")], [Error, Error, Error, Error]),
        ("select notin", &[(SEL, "env notin (prod)")], [Yes, No, Yes, Yes]),
        ("treeSelect x", &[(TREE, "c1")], [Yes, No, No, Yes]),
        ("treeSelect !x", &[(TREE, "!c1")], [No, Yes, Yes, No]),
        ("treeSelect !x, !y", &[(TREE, "!c1, !c2")], [No, No, Yes, No]),
        (
            "treeSelect x, !child of x",
            &[(TREE, "c1, !g1")],
            [Yes, No, No, No],
        ),
        (
            "treeSelect two positives",
            &[(TREE, "c1, c2")],
            [Error, Error, Error, Error],
        ),
        (
            "treeSelect invalid name",
            &[(TREE, "$foo")],
            [Error, Error, Error, Error],
        ),
        (
            "treeSelect upper case",
            &[(TREE, "C1")],
            [Error, Error, Error, Error],
        ),
        ("treeSelect lone !", &[(TREE, "!")], [Error, Error, Error, Error]),
        (
            "treeSelect empty part",
            &[(TREE, "c1,")],
            [Error, Error, Error, Error],
        ),
        ("none true", &[(NONE, "true")], [No, No, No, No]),
        ("none false", &[(NONE, "false")], [Yes, Yes, Yes, Yes]),
        ("none invalid", &[(NONE, "$foo")], [Error, Error, Error, Error]),
        (
            "none yes is not Go's bool",
            &[(NONE, "yes")],
            [Error, Error, Error, Error],
        ),
        (
            "none mixed case is not Go's bool",
            &[(NONE, "tRuE")],
            [Error, Error, Error, Error],
        ),
        ("all true", &[(ALL, "true")], [Yes, Yes, Yes, Yes]),
        ("all invalid", &[(ALL, "all")], [Error, Error, Error, Error]),
        // several at once: the intersection, in HNC's order
        (
            "select and treeSelect negations",
            &[(SEL, "!c1.tree.controller.observatorium.io/depth"), (TREE, "!c2")],
            [No, No, Yes, No],
        ),
        (
            "select and treeSelect disjoint",
            &[(SEL, "c1.tree.controller.observatorium.io/depth"), (TREE, "c2")],
            [No, No, No, No],
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
            [No, No, No, No],
        ),
        (
            "none and invalid all",
            &[(NONE, "true"), (ALL, "all")],
            [No, No, No, No],
        ),
        (
            "invalid none wins over all",
            &[(NONE, "x"), (ALL, "true")],
            [Error, Error, Error, Error],
        ),
        (
            "all four",
            &[
                (SEL, "c1.tree.controller.observatorium.io/depth"),
                (TREE, "c1"),
                (NONE, "true"),
                (ALL, "true"),
            ],
            [No, No, No, No],
        ),
        (
            "none false and all true",
            &[(NONE, "0"), (ALL, "1")],
            [Yes, Yes, Yes, Yes],
        ),
    ];
    for (name, pairs, want) in rows {
        check(name, p, pairs, *want);
    }
}

#[test]
fn go_parse_bool_spellings() {
    for truthy in ["1", "t", "T", "TRUE", "true", "True"] {
        check(truthy, Mode::Propagate, &[(NONE, truthy)], [No, No, No, No]);
        check(
            truthy,
            Mode::AllowPropagate,
            &[(ALL, truthy)],
            [Yes, Yes, Yes, Yes],
        );
    }
    for falsy in ["0", "f", "F", "FALSE", "false", "False", ""] {
        check(falsy, Mode::Propagate, &[(NONE, falsy)], [Yes, Yes, Yes, Yes]);
        check(falsy, Mode::AllowPropagate, &[(ALL, falsy)], [No, No, No, No]);
    }
    for invalid in ["yes", "no", "on", " true", "tRUE", "2"] {
        check(
            invalid,
            Mode::AllowPropagate,
            &[(ALL, invalid)],
            [Error, Error, Error, Error],
        );
    }
}

#[test]
fn matrix_under_allow_propagate() {
    let a = Mode::AllowPropagate;
    let rows: &[Row] = &[
        ("no annotation: opt-in only", &[], [No, No, No, No]),
        ("empty select does not opt in", &[(SEL, "")], [No, No, No, No]),
        ("select opts in", &[(SEL, "env=prod")], [No, Yes, No, No]),
        ("treeSelect x opts in", &[(TREE, "c1")], [Yes, No, No, Yes]),
        (
            "treeSelect !x opts in elsewhere",
            &[(TREE, "!c1")],
            [No, Yes, Yes, No],
        ),
        ("all opts in", &[(ALL, "true")], [Yes, Yes, Yes, Yes]),
        ("all false", &[(ALL, "false")], [No, No, No, No]),
        ("none true", &[(NONE, "true")], [No, No, No, No]),
        ("none false does not opt in", &[(NONE, "false")], [No, No, No, No]),
    ];
    for (name, pairs, want) in rows {
        check(name, a, pairs, *want);
    }
}

#[test]
fn remove_and_ignore_never_propagate() {
    for mode in [Mode::Remove, Mode::Ignore] {
        check("all", mode, &[(ALL, "true")], [No, No, No, No]);
        check("plain", mode, &[], [No, No, No, No]);
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
    let message = exceptions(&[(TREE, "!Bad")])
        .allows(Mode::Propagate, &destination_labels("c1"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        message.contains("\"Bad\" is not a valid namespace name"),
        "{message}"
    );
    let message = exceptions(&[(NONE, "yes")])
        .allows(Mode::Propagate, &destination_labels("c1"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(message.contains("not a boolean"), "{message}");
}
