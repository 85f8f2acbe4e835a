use super::*;

fn ns(name: &str, parent: Option<&str>) -> ObservedNamespace {
    let mut labels = BTreeMap::new();
    if let Some(parent) = parent {
        labels.insert(keys::PARENT_LABEL.to_string(), parent.to_string());
    }
    ObservedNamespace {
        name: name.into(),
        uid: format!("uid-{name}"),
        labels,
        annotations: BTreeMap::new(),
    }
}

fn forest(spec: &[(&str, Option<&str>)]) -> Forest {
    let namespaces: Vec<_> = spec.iter().map(|(n, p)| ns(n, *p)).collect();
    Forest::build(&namespaces)
}

fn three_levels() -> Forest {
    forest(&[
        ("org", None),
        ("team", Some("org")),
        ("dev", Some("team")),
        ("qa", Some("team")),
        ("other", Some("org")),
        ("alone", None),
    ])
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `got` is the error `want`, and its message says `says`.
fn assert_error<T, E>(got: Result<T, E>, want: E, says: &str)
where
    T: PartialEq + std::fmt::Debug,
    E: PartialEq + std::fmt::Debug + std::fmt::Display,
{
    assert_eq!(got, Err(want));
    assert!(got.err().is_some_and(|e| e.to_string().contains(says)));
}

#[test]
fn ancestors_top_most_first_and_depth() {
    let f = three_levels();
    assert_eq!(f.ancestors("dev"), vec!["org", "team"]);
    assert_eq!(f.depth("dev"), 2);
    assert_eq!(f.depth("org"), 0);
    assert_eq!(f.parent("dev"), Some("team"));
    assert_eq!(f.children("team").collect::<Vec<_>>(), vec!["dev", "qa"]);
    assert_eq!(f.descendants("org"), vec!["other", "team", "dev", "qa"]);
    assert!(f.descendants("dev").is_empty());
    assert!(f.problems().is_empty());
    assert!(f.in_tree("org") && f.in_tree("dev") && !f.in_tree("alone"));
}

#[test]
fn tree_labels_itself_zero_and_each_ancestor_at_its_distance() {
    let f = three_levels();
    assert_eq!(
        f.desired_tree_labels("dev"),
        map(&[
            ("dev.tree.controller.observatorium.io/depth", "0"),
            ("team.tree.controller.observatorium.io/depth", "1"),
            ("org.tree.controller.observatorium.io/depth", "2"),
        ])
    );
    assert_eq!(
        f.desired_tree_labels("org"),
        map(&[("org.tree.controller.observatorium.io/depth", "0")])
    );
    assert!(f.desired_tree_labels("alone").is_empty());
}

#[test]
fn diff_touches_only_tree_labels() {
    let desired = map(&[
        ("dev.tree.controller.observatorium.io/depth", "0"),
        ("team.tree.controller.observatorium.io/depth", "1"),
    ]);
    let current = map(&[
        ("dev.tree.controller.observatorium.io/depth", "0"),
        ("team.tree.controller.observatorium.io/depth", "2"),
        ("old.tree.controller.observatorium.io/depth", "1"),
        ("app", "web"),
        (keys::PARENT_LABEL, "team"),
    ]);
    let diff = tree_label_diff(&desired, &current);
    assert_eq!(
        diff.set,
        map(&[("team.tree.controller.observatorium.io/depth", "1")])
    );
    assert_eq!(
        diff.remove.into_iter().collect::<Vec<_>>(),
        vec!["old.tree.controller.observatorium.io/depth".to_string()]
    );
    assert!(tree_label_diff(&desired, &desired).is_empty());
    // detached: every tree label goes, nothing else
    let detached = tree_label_diff(&BTreeMap::new(), &current);
    assert!(detached.set.is_empty());
    assert_eq!(detached.remove.len(), 3);
}

#[test]
fn missing_parent_is_reported_and_treated_as_root() {
    let f = forest(&[("child", Some("gone")), ("grandchild", Some("child"))]);
    assert_eq!(
        f.problems(),
        &[TreeProblem::MissingParent {
            namespace: "child".into(),
            parent: "gone".into()
        }]
    );
    assert_eq!(f.parent("child"), None);
    assert_eq!(f.ancestors("grandchild"), vec!["child"]);
    assert!(!f.contains("gone"));
}

#[test]
fn cycles_are_reported_and_halted_with_their_subtrees() {
    let f = forest(&[
        ("a", Some("b")),
        ("b", Some("a")),
        ("under", Some("a")),
        ("self", Some("self")),
        ("fine", None),
        ("fine-child", Some("fine")),
    ]);
    let mut cycles: Vec<_> = f
        .problems()
        .iter()
        .filter_map(|p| match p {
            TreeProblem::Cycle { members } => Some(members.clone()),
            TreeProblem::MissingParent { .. } => None,
        })
        .collect();
    cycles.sort();
    assert_eq!(
        cycles,
        vec![vec!["a".to_string(), "b".to_string()], vec!["self".to_string()]]
    );
    for halted in ["a", "b", "under", "self"] {
        assert!(f.is_halted(halted), "{halted}");
        assert!(f.ancestors(halted).is_empty());
        assert!(f.desired_tree_labels(halted).is_empty());
    }
    assert!(!f.is_halted("fine-child"));
    // walking down a ring ends
    assert_eq!(f.descendants("a"), vec!["b", "under"]);
    assert!(f.descendants("self").is_empty());
    assert_eq!(f.ancestors("fine-child"), vec!["fine"]);
}

#[test]
fn depth_limit() {
    let f = three_levels();
    assert_eq!(check_child_depth(&f, "org", 3), Ok(1));
    assert_eq!(check_child_depth(&f, "dev", 3), Ok(3));
    assert_error(
        check_child_depth(&f, "dev", 2),
        DepthError::TooDeep {
            parent: "dev".into(),
            depth: 3,
            max_depth: 2,
        },
        "deeper than the maximum 2",
    );
}

#[test]
fn child_never_outlives_parent() {
    assert_eq!(child_expiry(100, None), Ok(100));
    assert_eq!(child_expiry(100, Some(100)), Ok(100));
    assert_eq!(child_expiry(50, Some(100)), Ok(50));
    assert_error(
        child_expiry(101, Some(100)),
        ExpiryBeyondParent {
            requested: 101,
            parent_expiry: 100,
        },
        "parent's expiry 100",
    );
}

#[test]
fn cascade_by_parent_state() {
    let mut child = ns("child", Some("p"));
    child
        .annotations
        .insert(keys::PARENT_UID_ANNOTATION.into(), "uid-1".into());
    let live = ParentState {
        uid: "uid-1",
        terminating: false,
    };
    let recreated = ParentState {
        uid: "uid-2",
        terminating: false,
    };
    let terminating = ParentState {
        uid: "uid-1",
        terminating: true,
    };
    assert_eq!(cascade(&child, true, Some(live)), Cascade::Keep);
    assert_eq!(
        cascade(&child, true, None),
        Cascade::Reap(CascadeReason::ParentGone)
    );
    assert_eq!(
        cascade(&child, true, Some(recreated)),
        Cascade::Reap(CascadeReason::ParentRecreated)
    );
    assert_eq!(
        cascade(&child, true, Some(terminating)),
        Cascade::Reap(CascadeReason::ParentTerminating)
    );
    // full namespaces are detached, never reaped
    assert_eq!(cascade(&child, false, None), Cascade::Detach);
    assert_eq!(cascade(&child, false, Some(recreated)), Cascade::Keep);
}

#[test]
fn parent_policy_parses() {
    assert_eq!(parent_policy(&BTreeMap::new()), Ok(None));
    let policy = parent_policy(&map(&[
        (keys::ALLOWED_TENANTS_ANNOTATION, "team-a, team-b"),
        (keys::MAX_TTL_ANNOTATION, "1h30m"),
        (keys::MAX_CHILDREN_ANNOTATION, "5"),
    ]));
    let Ok(Some(policy)) = policy else {
        unreachable!("{policy:?}")
    };
    assert!(policy.allowed_tenants.allows("team-a"));
    assert!(!policy.allowed_tenants.allows("team-c"));
    assert_eq!(policy.max_ttl, Some(Duration::from_secs(5400)));
    assert_eq!(policy.max_children, Some(5));
    assert_eq!(
        policy.effective_max_ttl(Duration::from_secs(3600)),
        Duration::from_secs(3600)
    );
    assert_eq!(
        policy.effective_max_ttl(Duration::from_secs(7200)),
        Duration::from_secs(5400)
    );

    let any = parent_policy(&map(&[(keys::ALLOWED_TENANTS_ANNOTATION, "*")]));
    assert!(matches!(
        any,
        Ok(Some(ParentPolicy {
            allowed_tenants: AllowedTenants::Any,
            max_ttl: None,
            max_children: None
        }))
    ));
}

#[test]
fn parent_policy_refusals_say_what_to_write() {
    let cases = [
        (keys::ALLOWED_TENANTS_ANNOTATION, "", "empty tenant name"),
        (keys::ALLOWED_TENANTS_ANNOTATION, "a,,b", "empty tenant name"),
        (keys::ALLOWED_TENANTS_ANNOTATION, "a,*", "`*` must stand alone"),
        (
            keys::ALLOWED_TENANTS_ANNOTATION,
            "a b",
            "separate tenants with ','",
        ),
        (keys::MAX_TTL_ANNOTATION, "soon", "write a duration such as"),
        (keys::MAX_TTL_ANNOTATION, "0s", "must be more than 0"),
        (keys::MAX_CHILDREN_ANNOTATION, "-1", "write a whole number"),
        (keys::MAX_CHILDREN_ANNOTATION, "many", "write a whole number"),
    ];
    for (key, value, want) in cases {
        let mut annotations = map(&[(keys::ALLOWED_TENANTS_ANNOTATION, "a")]);
        annotations.insert(key.to_string(), value.to_string());
        let message = parent_policy(&annotations)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            message.contains(want) && message.contains(key),
            "{key}={value:?}: {message}"
        );
    }
}

#[test]
fn no_child_under_a_cycle() {
    let f = forest(&[("a", Some("b")), ("b", Some("a"))]);
    assert_eq!(
        check_child_depth(&f, "a", 10),
        Err(DepthError::ParentInCycle { parent: "a".into() })
    );
}

#[test]
fn tree_label_changes_leave_halted_namespaces_alone() {
    let mut a = ns("a", Some("b"));
    a.labels.insert(keys::tree_label("a"), "0".into());
    let b = ns("b", Some("a"));
    let mut dev = ns("dev", None);
    dev.labels.insert(keys::tree_label("gone"), "1".into());
    let f = Forest::build([&a, &b, &dev]);
    assert_eq!(f.tree_label_changes(&a), None);
    let detach = f.tree_label_changes(&dev).unwrap_or_default();
    assert!(detach.set.is_empty());
    assert_eq!(detach.remove.len(), 1);
}

#[test]
fn new_child_labels_before_the_child_exists() {
    let f = three_levels();
    assert_eq!(
        f.new_child_tree_labels("team", "new"),
        map(&[
            ("new.tree.controller.observatorium.io/depth", "0"),
            ("team.tree.controller.observatorium.io/depth", "1"),
            ("org.tree.controller.observatorium.io/depth", "2"),
        ])
    );
    // first child of a namespace in no tree yet
    assert_eq!(
        f.new_child_tree_labels("alone", "first"),
        map(&[
            ("first.tree.controller.observatorium.io/depth", "0"),
            ("alone.tree.controller.observatorium.io/depth", "1"),
        ])
    );
}

#[test]
fn max_children() {
    let annotations = map(&[
        (keys::ALLOWED_TENANTS_ANNOTATION, "*"),
        (keys::MAX_CHILDREN_ANNOTATION, "2"),
    ]);
    let Ok(Some(policy)) = parent_policy(&annotations) else {
        unreachable!()
    };
    assert_eq!(policy.check_children("p", 1), Ok(()));
    assert_error(
        policy.check_children("p", 2),
        TooManyChildren {
            parent: "p".into(),
            live: 2,
            max: 2,
        },
        "its maximum (2",
    );
    let unlimited = parent_policy(&map(&[(keys::ALLOWED_TENANTS_ANNOTATION, "*")]));
    assert!(matches!(unlimited, Ok(Some(p)) if p.check_children("p", 1000).is_ok()));
}

#[test]
fn observed_from_a_namespace_object() {
    let namespace: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": "dev",
            "uid": "u-dev",
            "labels": {(keys::PARENT_LABEL): "team"},
            "annotations": {(keys::PARENT_UID_ANNOTATION): "u-team"},
        }
    }))
    .unwrap();
    let observed = ObservedNamespace::from(&namespace);
    assert_eq!(observed.name, "dev");
    assert_eq!(observed.uid, "u-dev");
    assert_eq!(observed.parent_label(), Some("team"));
    assert_eq!(
        observed
            .annotations
            .get(keys::PARENT_UID_ANNOTATION)
            .map(String::as_str),
        Some("u-team")
    );
    assert_eq!(
        ObservedNamespace::from(&k8s_openapi::api::core::v1::Namespace::default()).parent_label(),
        None
    );
}
