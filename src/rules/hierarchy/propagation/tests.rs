use serde_json::json;

use super::*;

fn config_map(namespace: &str, name: &str, uid: &str, value: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "resourceVersion": "7"},
        "data": {"key": value},
    })
}

fn annotate(mut object: Value, key: &str, value: &str) -> Value {
    object["metadata"]["annotations"][key] = json!(value);
    object
}

fn label(mut object: Value, key: &str, value: &str) -> Value {
    object["metadata"]["labels"][key] = json!(value);
    object
}

/// The copy as the API server returns it after we wrote it.
fn stored(copy: &Value, uid: &str) -> Value {
    let mut stored = copy.clone();
    let meta = &mut stored["metadata"];
    meta["uid"] = json!(uid);
    meta["resourceVersion"] = json!("42");
    meta["creationTimestamp"] = json!("2026-11-30T00:00:00Z");
    meta["managedFields"] = json!([{"manager": "namespace-provisioner", "operation": "Update"}]);
    stored
}

fn dest_labels(chain: &[&str]) -> BTreeMap<String, String> {
    chain
        .iter()
        .enumerate()
        .map(|(depth, ns)| (keys::tree_label(ns), depth.to_string()))
        .collect()
}

fn plan(
    mode: Mode,
    sources: &[Source<'_>],
    existing: Option<&Value>,
    labels: &BTreeMap<String, String>,
) -> ObjectPlan {
    plan_object(&Slot {
        destination: Destination {
            mode,
            strip: &StripRules::default(),
            name: "child",
            labels,
            hashes: None,
        },
        sources,
        existing,
    })
}

/// The destination `name` with `Mode::Propagate`.
fn propagate_to<'a>(
    name: &'a str,
    strip: &'a StripRules,
    labels: &'a BTreeMap<String, String>,
) -> Destination<'a> {
    Destination {
        mode: Mode::Propagate,
        strip,
        name,
        labels,
        hashes: None,
    }
}

/// `object` as the only source, from "parent".
fn from_parent(object: &Value) -> [Source<'_>; 1] {
    [Source {
        namespace: "parent",
        object,
    }]
}

/// The copy created in "child" from `sources`, as stored under `uid`.
fn stored_copy(sources: &[Source<'_>], labels: &BTreeMap<String, String>, uid: &str) -> Value {
    stored(&created(&plan(Mode::Propagate, sources, None, labels)), uid)
}

fn created(plan: &ObjectPlan) -> Value {
    match &plan.plan {
        CopyPlan::Create { copy } => copy.clone(),
        other => unreachable!("expected Create, got {other:?}"),
    }
}

fn child_labels() -> BTreeMap<String, String> {
    dest_labels(&["child", "parent"])
}

#[test]
fn never_propagated_list_with_reasons() {
    let secret = |t: &str| json!({"apiVersion": "v1", "kind": "Secret", "type": t, "metadata": {"name": "s", "uid": "u"}});
    let mut finalized = config_map("parent", "cm", "u", "v");
    finalized["metadata"]["finalizers"] = json!(["example.com/keep"]);
    let cases = [
        (finalized, Some(NeverReason::Finalizers)),
        (
            secret("kubernetes.io/service-account-token"),
            Some(NeverReason::ServiceAccountToken),
        ),
        (secret("helm.sh/release.v1"), Some(NeverReason::HelmRelease)),
        (
            config_map("parent", "kube-root-ca.crt", "u", "ca"),
            Some(NeverReason::CaBundle),
        ),
        (
            config_map("parent", "istio-ca-root-cert", "u", "ca"),
            Some(NeverReason::CaBundle),
        ),
        (secret("Opaque"), None),
        (secret("kubernetes.io/dockerconfigjson"), None),
        (config_map("parent", "settings", "u", "v"), None),
        // same names in another group are ordinary objects
        (
            json!({"apiVersion": "example.com/v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt"}}),
            None,
        ),
        (
            json!({"apiVersion": "example.com/v1", "kind": "Secret", "type": "helm.sh/release.v1", "metadata": {"name": "x"}}),
            None,
        ),
    ];
    for (object, want) in cases {
        assert_eq!(never_propagated(&object), want, "{object}");
        if let Some(reason) = want {
            let sources = from_parent(&object);
            let planned = plan(Mode::Propagate, &sources, None, &child_labels());
            assert_eq!(planned.plan, CopyPlan::Nothing);
            assert_eq!(
                planned.skipped,
                vec![Skip::Never {
                    source_namespace: "parent".into(),
                    reason
                }]
            );
        }
    }
    assert_eq!(NeverReason::HelmRelease.as_str(), "helm-release");
}

#[test]
fn copy_carries_content_and_our_marks_only() {
    let source = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "settings",
            "namespace": "parent",
            "uid": "src-uid",
            "resourceVersion": "9",
            "generation": 3,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "deletionTimestamp": "2026-01-02T00:00:00Z",
            "selfLink": "/api/v1/namespaces/parent/configmaps/settings",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "x"}],
            "managedFields": [{"manager": "kubectl"}],
            "labels": {
                "app": "web",
                "app.kubernetes.io/managed-by": "Helm",
                "app.kubernetes.io/instance": "argo-app",
                "helm.sh/chart": "web-1.0",
                "kustomize.toolkit.fluxcd.io/name": "apps",
                "parent.tree.controller.observatorium.io/depth": "0",
            },
            "annotations": {
                "note": "keep me",
                "argocd.argoproj.io/tracking-id": "app:/ConfigMap:parent/settings",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "meta.helm.sh/release-name": "web",
                "propagate.controller.observatorium.io/treeSelect": "child",
            },
        },
        "data": {"key": "value"},
        "status": {"whatever": true},
    });
    let copy = build_copy(
        Source {
            namespace: "parent",
            object: &source,
        },
        "child",
        &StripRules::default(),
    );
    let hash = content_hash(&source, &StripRules::default());
    assert_eq!(
        copy,
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "settings",
                "namespace": "child",
                "labels": {
                    "app": "web",
                    "app.kubernetes.io/managed-by": "namespace-provisioner",
                    "controller.observatorium.io/inherited-from": "parent",
                },
                "annotations": {
                    "note": "keep me",
                    "controller.observatorium.io/source-uid": "src-uid",
                    "controller.observatorium.io/source-hash": hash,
                },
            },
            "data": {"key": "value"},
        })
    );
    // with GitOps stripping off, the tracking metadata is copied (ours never is)
    let kept = build_copy(
        Source {
            namespace: "parent",
            object: &source,
        },
        "child",
        &StripRules::none(),
    );
    assert_eq!(
        kept["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"],
        json!("app:/ConfigMap:parent/settings")
    );
    assert_eq!(
        kept["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        json!("namespace-provisioner")
    );
    assert!(
        kept["metadata"]["annotations"]
            .get(keys::TREE_SELECT_ANNOTATION)
            .is_none()
    );
}

#[test]
fn hash_is_canonical() {
    let strip = StripRules::default();
    let a: Value = serde_json::from_str(
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"n","labels":{"a":"1","b":"2"}},"data":{"x":"1","y":"2"}}"#,
    )
    .unwrap_or_default();
    let b: Value = serde_json::from_str(
        r#"{"data":{"y":"2","x":"1"},"metadata":{"labels":{"b":"2","a":"1"},"name":"n","uid":"other","resourceVersion":"5"},"kind":"ConfigMap","apiVersion":"v1","status":{"s":1}}"#,
    )
    .unwrap_or_default();
    assert_eq!(content_hash(&a, &strip), content_hash(&b, &strip));
    assert_eq!(content_hash(&a, &strip).len(), 64);
    let gitops = annotate(a.clone(), "argocd.argoproj.io/tracking-id", "x");
    assert_eq!(content_hash(&a, &strip), content_hash(&gitops, &strip));
    let changed = annotate(a.clone(), "note", "x");
    assert_ne!(content_hash(&a, &strip), content_hash(&changed, &strip));
    let mut data = a.clone();
    data["data"]["x"] = json!("2");
    assert_ne!(content_hash(&a, &strip), content_hash(&data, &strip));
}

#[test]
fn create_then_in_sync_then_update_on_source_change_or_copy_edit() {
    let labels = child_labels();
    let source = config_map("parent", "settings", "src-1", "v1");
    let sources = from_parent(&source);
    let copy = created(&plan(Mode::Propagate, &sources, None, &labels));
    let existing = stored(&copy, "copy-1");
    assert_eq!(
        plan(Mode::Propagate, &sources, Some(&existing), &labels).plan,
        CopyPlan::InSync
    );

    // source changed: update, with the copy's resourceVersion for optimistic concurrency
    let changed = config_map("parent", "settings", "src-1", "v2");
    let changed_sources = from_parent(&changed);
    match plan(Mode::Propagate, &changed_sources, Some(&existing), &labels).plan {
        CopyPlan::Update { copy } => {
            assert_eq!(copy["data"]["key"], json!("v2"));
            assert_eq!(copy["metadata"]["resourceVersion"], json!("42"));
            assert_eq!(
                copy["metadata"]["annotations"][keys::SOURCE_HASH_ANNOTATION],
                json!(content_hash(&changed, &StripRules::default()))
            );
        }
        other => unreachable!("{other:?}"),
    }

    // a user edited the copy: restored
    let mut edited = existing.clone();
    edited["data"]["key"] = json!("mine");
    assert!(matches!(
        plan(Mode::Propagate, &sources, Some(&edited), &labels).plan,
        CopyPlan::Update { .. }
    ));
    // a user removed our label value / annotation: restored (ownership still proven by uid)
    let relabelled = label(existing.clone(), keys::MANAGED_BY_LABEL, "someone");
    assert!(matches!(
        plan(Mode::Propagate, &sources, Some(&relabelled), &labels).plan,
        CopyPlan::Update { .. }
    ));
    // a user deleted the copy: created again
    assert!(matches!(
        plan(Mode::Propagate, &sources, None, &labels).plan,
        CopyPlan::Create { .. }
    ));
}

#[test]
fn source_gone_or_unselected_deletes_only_our_copy() {
    let labels = child_labels();
    let source = config_map("parent", "settings", "src-1", "v1");
    let sources = from_parent(&source);
    let existing = stored_copy(&sources, &labels, "copy-1");

    let gone = plan(Mode::Propagate, &[], Some(&existing), &labels);
    assert_eq!(
        gone.plan,
        CopyPlan::Delete {
            uid: "copy-1".into(),
            reason: DeleteReason::SourceGone
        }
    );

    let excluded = annotate(source.clone(), keys::TREE_SELECT_ANNOTATION, "!child");
    let excluded_sources = from_parent(&excluded);
    assert_eq!(
        plan(Mode::Propagate, &excluded_sources, Some(&existing), &labels).plan,
        CopyPlan::Delete {
            uid: "copy-1".into(),
            reason: DeleteReason::NotSelected
        }
    );

    // an exception error is reported and the object is then not propagated
    let broken = annotate(source.clone(), keys::TREE_SELECT_ANNOTATION, "a, b");
    let broken_sources = from_parent(&broken);
    let planned = plan(Mode::Propagate, &broken_sources, Some(&existing), &labels);
    assert_eq!(
        planned.plan,
        CopyPlan::Delete {
            uid: "copy-1".into(),
            reason: DeleteReason::NotSelected
        }
    );
    assert!(
        matches!(&planned.skipped[..], [Skip::Exception { source_namespace, error: ExceptionError::TreeSelectPositives { .. } }] if source_namespace == "parent")
    );

    // a finalizer added to the source later: copy deleted, skip reported
    let mut finalized = source.clone();
    finalized["metadata"]["finalizers"] = json!(["x/y"]);
    let finalized_sources = from_parent(&finalized);
    let planned = plan(Mode::Propagate, &finalized_sources, Some(&existing), &labels);
    assert_eq!(
        planned.plan,
        CopyPlan::Delete {
            uid: "copy-1".into(),
            reason: DeleteReason::NotSelected
        }
    );
    assert_eq!(planned.skipped.len(), 1);
}

#[test]
fn forged_inherited_from_is_never_touched() {
    let labels = child_labels();
    let source = config_map("parent", "settings", "src-1", "v1");
    let sources = from_parent(&source);
    let mine = label(
        config_map("child", "settings", "user-obj", "mine"),
        keys::INHERITED_FROM_LABEL,
        "parent",
    );
    let forged_uid = annotate(mine.clone(), keys::SOURCE_UID_ANNOTATION, "made-up");
    let forged_hash = annotate(forged_uid.clone(), keys::SOURCE_HASH_ANNOTATION, &"0".repeat(64));
    let want = CopyPlan::Forged {
        claimed_source: "parent".into(),
    };
    for object in [&mine, &forged_uid, &forged_hash] {
        // with the source present: not overwritten; with it gone: not deleted
        assert_eq!(plan(Mode::Propagate, &sources, Some(object), &labels).plan, want);
        assert_eq!(plan(Mode::Propagate, &[], Some(object), &labels).plan, want);
        assert_eq!(plan(Mode::Remove, &sources, Some(object), &labels).plan, want);
        assert_eq!(
            ownership(object, &sources, &StripRules::default()),
            Ownership::Forged {
                claimed_source: "parent".into()
            }
        );
    }
    // the right uid but claiming another namespace is not proof either
    let wrong_ns = label(
        annotate(mine.clone(), keys::SOURCE_UID_ANNOTATION, "src-1"),
        keys::INHERITED_FROM_LABEL,
        "elsewhere",
    );
    assert_eq!(
        plan(Mode::Propagate, &sources, Some(&wrong_ns), &labels).plan,
        CopyPlan::Forged {
            claimed_source: "elsewhere".into()
        }
    );
}

#[test]
fn source_recreated_with_new_uid_adopts_intact_copy() {
    let labels = child_labels();
    let old = config_map("parent", "settings", "src-1", "v1");
    let existing = stored_copy(&from_parent(&old), &labels, "copy-1");
    let new = config_map("parent", "settings", "src-2", "v1");
    let sources = from_parent(&new);
    match plan(Mode::Propagate, &sources, Some(&existing), &labels).plan {
        CopyPlan::Update { copy } => assert_eq!(
            copy["metadata"]["annotations"][keys::SOURCE_UID_ANNOTATION],
            json!("src-2")
        ),
        other => unreachable!("{other:?}"),
    }
}

#[test]
fn conflict_is_never_overwritten() {
    let labels = child_labels();
    let source = config_map("parent", "settings", "src-1", "v1");
    let sources = from_parent(&source);
    let own = config_map("child", "settings", "own", "mine");
    assert_eq!(
        plan(Mode::Propagate, &sources, Some(&own), &labels).plan,
        CopyPlan::Conflict {
            source_namespace: "parent".into()
        }
    );
    // no propagating source: just the child's object
    assert_eq!(
        plan(Mode::Remove, &sources, Some(&own), &labels).plan,
        CopyPlan::Nothing
    );
    assert_eq!(
        plan(Mode::AllowPropagate, &sources, Some(&own), &labels).plan,
        CopyPlan::Nothing
    );
}

fn role_binding(namespace: &str, uid: &str, role: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "devs", "namespace": namespace, "uid": uid},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "Group", "name": "devs", "apiGroup": "rbac.authorization.k8s.io"}],
    })
}

#[test]
fn role_ref_change_recreates() {
    let labels = child_labels();
    let before = role_binding("parent", "rb-1", "view");
    let existing = stored_copy(&from_parent(&before), &labels, "copy-rb");
    let after = role_binding("parent", "rb-1", "edit");
    match plan(Mode::Propagate, &from_parent(&after), Some(&existing), &labels).plan {
        CopyPlan::Recreate { uid, copy, reason } => {
            assert_eq!(uid, "copy-rb");
            assert_eq!(reason, RecreateReason::RoleRefChanged);
            assert_eq!(copy["roleRef"]["name"], json!("edit"));
            assert!(copy["metadata"].get("resourceVersion").is_none());
        }
        other => unreachable!("{other:?}"),
    }
    // subjects only: updated in place
    let mut subjects = before.clone();
    subjects["subjects"][0]["name"] = json!("ops");
    assert!(matches!(
        plan(Mode::Propagate, &from_parent(&subjects), Some(&existing), &labels).plan,
        CopyPlan::Update { .. }
    ));
}

#[test]
fn immutable_config_maps_and_secrets_are_recreated_on_change() {
    let labels = child_labels();
    let mut source = config_map("parent", "frozen", "src", "v1");
    source["immutable"] = json!(true);
    let existing = stored_copy(&from_parent(&source), &labels, "copy");
    assert_eq!(existing["immutable"], json!(true));
    assert_eq!(
        plan(Mode::Propagate, &from_parent(&source), Some(&existing), &labels).plan,
        CopyPlan::InSync
    );

    let mut changed = source.clone();
    changed["data"]["key"] = json!("v2");
    assert!(matches!(
        plan(Mode::Propagate, &from_parent(&changed), Some(&existing), &labels).plan,
        CopyPlan::Recreate {
            reason: RecreateReason::Immutable,
            ..
        }
    ));
    // the source dropped `immutable` (new object): the copy cannot follow in place either
    let mut thawed = changed.clone();
    if let Some(object) = thawed.as_object_mut() {
        object.remove("immutable");
    }
    assert!(matches!(
        plan(Mode::Propagate, &from_parent(&thawed), Some(&existing), &labels).plan,
        CopyPlan::Recreate {
            reason: RecreateReason::Immutable,
            ..
        }
    ));

    // only labels changed on the source: an immutable copy's metadata can be updated in place
    let relabelled = label(source.clone(), "team", "a");
    assert!(matches!(
        plan(
            Mode::Propagate,
            &from_parent(&relabelled),
            Some(&existing),
            &labels
        )
        .plan,
        CopyPlan::Update { .. }
    ));

    let secret = |t: &str, immutable: bool| json!({"apiVersion": "v1", "kind": "Secret", "type": t, "immutable": immutable, "metadata": {"name": "s", "uid": "sec"}, "data": {"k": "dg=="}});
    let first = secret("Opaque", true);
    let existing = stored_copy(&from_parent(&first), &labels, "copy-s");
    let mut rotated = first.clone();
    rotated["data"]["k"] = json!("dzI=");
    assert!(matches!(
        plan(Mode::Propagate, &from_parent(&rotated), Some(&existing), &labels).plan,
        CopyPlan::Recreate {
            reason: RecreateReason::Immutable,
            ..
        }
    ));
    let retyped = secret("example.com/other", false);
    let mutable = stored_copy(&from_parent(&secret("Opaque", false)), &labels, "copy-m");
    assert!(matches!(
        plan(Mode::Propagate, &from_parent(&retyped), Some(&mutable), &labels).plan,
        CopyPlan::Recreate {
            reason: RecreateReason::SecretTypeChanged,
            ..
        }
    ));
}

#[test]
fn mode_changes_propagate_ignore_propagate_remove() {
    let labels = child_labels();
    let source = config_map("parent", "settings", "src-1", "v1");
    let sources = from_parent(&source);
    let existing = stored_copy(&sources, &labels, "copy-1");

    // Ignore: nothing, whatever changed
    let changed = config_map("parent", "settings", "src-1", "v2");
    let changed_sources = from_parent(&changed);
    assert_eq!(
        plan(Mode::Ignore, &changed_sources, Some(&existing), &labels).plan,
        CopyPlan::Nothing
    );
    assert_eq!(
        plan(Mode::Ignore, &changed_sources, None, &labels).plan,
        CopyPlan::Nothing
    );
    assert_eq!(
        plan(Mode::Ignore, &[], Some(&existing), &labels).plan,
        CopyPlan::Nothing
    );

    // back to Propagate: the existing copy is adopted (updated, not a conflict, not recreated)
    assert!(matches!(
        plan(Mode::Propagate, &changed_sources, Some(&existing), &labels).plan,
        CopyPlan::Update { .. }
    ));
    assert_eq!(
        plan(Mode::Propagate, &sources, Some(&existing), &labels).plan,
        CopyPlan::InSync
    );

    // Remove: our copies go, sources untouched (nothing created)
    assert_eq!(
        plan(Mode::Remove, &sources, Some(&existing), &labels).plan,
        CopyPlan::Delete {
            uid: "copy-1".into(),
            reason: DeleteReason::ModeRemove
        }
    );
    assert_eq!(
        plan(Mode::Remove, &sources, None, &labels).plan,
        CopyPlan::Nothing
    );

    // AllowPropagate: opt-in only
    assert_eq!(
        plan(Mode::AllowPropagate, &sources, Some(&existing), &labels).plan,
        CopyPlan::Delete {
            uid: "copy-1".into(),
            reason: DeleteReason::NotSelected
        }
    );
    let opted = annotate(source.clone(), keys::ALL_ANNOTATION, "T");
    assert_eq!(
        plan(
            Mode::AllowPropagate,
            &from_parent(&opted),
            Some(&existing),
            &labels
        )
        .plan,
        CopyPlan::InSync
    );
}

#[test]
fn three_level_tree_top_most_wins() {
    // org -> team -> dev; org and team both have "shared"; team also holds a copy of org's "base".
    let strip = StripRules::default();
    let org_shared = config_map("org", "shared", "org-shared", "from-org");
    let org_base = config_map("org", "base", "org-base", "base");
    let team_shared = config_map("team", "shared", "team-shared", "from-team");
    let team_base_copy = stored(
        &build_copy(
            Source {
                namespace: "org",
                object: &org_base,
            },
            "team",
            &strip,
        ),
        "team-base-copy",
    );
    let team_only = config_map("team", "team-only", "team-only", "t");
    let org_objects = [org_shared.clone(), org_base.clone()];
    let team_objects = [team_shared.clone(), team_base_copy, team_only];
    let ancestors: [(&str, &[Value]); 2] = [("org", &org_objects), ("team", &team_objects)];
    let dev_labels = dest_labels(&["dev", "team", "org"]);
    let plans = plan_kind(&KindInDestination {
        destination: propagate_to("dev", &strip, &dev_labels),
        ancestors: &ancestors,
        existing: &[],
    });
    let from = |name: &str| match plans.get(name).map(|p| &p.plan) {
        Some(CopyPlan::Create { copy }) => copy["metadata"]["labels"][keys::INHERITED_FROM_LABEL]
            .as_str()
            .map(str::to_string),
        other => unreachable!("{name}: {other:?}"),
    };
    assert_eq!(from("shared").as_deref(), Some("org"), "top-most wins");
    assert_eq!(from("base").as_deref(), Some("org"), "copies are never sources");
    assert_eq!(from("team-only").as_deref(), Some("team"));
    assert_eq!(plans.len(), 3);

    // in team itself, its own "shared" is a conflict with org's
    let team_labels = dest_labels(&["team", "org"]);
    let org_only: [(&str, &[Value]); 1] = [("org", &org_objects)];
    let team_plans = plan_kind(&KindInDestination {
        destination: propagate_to("team", &strip, &team_labels),
        ancestors: &org_only,
        existing: &team_objects,
    });
    assert_eq!(
        team_plans.get("shared").map(|p| &p.plan),
        Some(&CopyPlan::Conflict {
            source_namespace: "org".into()
        })
    );
    assert_eq!(team_plans.get("base").map(|p| &p.plan), Some(&CopyPlan::InSync));
    assert!(
        !team_plans.contains_key("team-only"),
        "a team's own object with no source is nothing to do"
    );

    // org's "shared" excluded from dev by treeSelect: team's wins there
    let excluded = annotate(org_shared, keys::TREE_SELECT_ANNOTATION, "!dev");
    let sources = [
        Source {
            namespace: "org",
            object: &excluded,
        },
        Source {
            namespace: "team",
            object: &team_shared,
        },
    ];
    let copy = created(&plan_object(&Slot {
        destination: propagate_to("dev", &strip, &dev_labels),
        sources: &sources,
        existing: None,
    }));
    assert_eq!(
        copy["metadata"]["labels"][keys::INHERITED_FROM_LABEL],
        json!("team")
    );
    assert_eq!(copy["data"]["key"], json!("from-team"));
}

#[test]
fn top_most_change_moves_copy_to_the_new_winner() {
    let labels = dest_labels(&["child", "parent", "org"]);
    let parent_source = config_map("parent", "settings", "p-1", "p");
    let existing = stored_copy(&from_parent(&parent_source), &labels, "copy");
    let org_source = config_map("org", "settings", "o-1", "o");
    let sources = [
        Source {
            namespace: "org",
            object: &org_source,
        },
        Source {
            namespace: "parent",
            object: &parent_source,
        },
    ];
    match plan(Mode::Propagate, &sources, Some(&existing), &labels).plan {
        CopyPlan::Update { copy } => {
            assert_eq!(
                copy["metadata"]["labels"][keys::INHERITED_FROM_LABEL],
                json!("org")
            );
            assert_eq!(copy["data"]["key"], json!("o"));
        }
        other => unreachable!("{other:?}"),
    }
}

#[test]
fn namespace_label_change_moves_copy_in_and_out() {
    let source = annotate(
        config_map("parent", "settings", "src", "v"),
        keys::SELECT_ANNOTATION,
        "env=prod",
    );
    let sources = from_parent(&source);
    let mut labels = child_labels();
    assert_eq!(
        plan(Mode::Propagate, &sources, None, &labels).plan,
        CopyPlan::Nothing
    );
    labels.insert("env".into(), "prod".into());
    let existing = stored_copy(&sources, &labels, "copy");
    assert_eq!(
        plan(Mode::Propagate, &sources, Some(&existing), &labels).plan,
        CopyPlan::InSync
    );
    labels.insert("env".into(), "dev".into());
    assert_eq!(
        plan(Mode::Propagate, &sources, Some(&existing), &labels).plan,
        CopyPlan::Delete {
            uid: "copy".into(),
            reason: DeleteReason::NotSelected
        }
    );
}

#[test]
fn steady_state_plans_only_in_sync() {
    let strip = StripRules::default();
    let objects: Vec<Value> = (0..5)
        .map(|i| config_map("parent", &format!("cm-{i}"), &format!("u{i}"), "v"))
        .collect();
    let existing: Vec<Value> = objects
        .iter()
        .map(|o| {
            stored(
                &build_copy(
                    Source {
                        namespace: "parent",
                        object: o,
                    },
                    "child",
                    &strip,
                ),
                "c",
            )
        })
        .chain([config_map("child", "own", "own", "x")])
        .collect();
    let ancestors: [(&str, &[Value]); 1] = [("parent", &objects)];
    let labels = child_labels();
    let plans = plan_kind(&KindInDestination {
        destination: propagate_to("child", &strip, &labels),
        ancestors: &ancestors,
        existing: &existing,
    });
    assert_eq!(plans.len(), 5);
    assert!(
        plans
            .values()
            .all(|p| p.plan == CopyPlan::InSync && p.skipped.is_empty())
    );
}

#[test]
fn detached_namespace_loses_its_copies() {
    // a namespace that left the tree has no ancestors: every provable copy is deleted
    let strip = StripRules::default();
    let source = config_map("old-parent", "settings", "src", "v");
    let existing = [stored(
        &build_copy(
            Source {
                namespace: "old-parent",
                object: &source,
            },
            "full",
            &strip,
        ),
        "copy",
    )];
    let labels = BTreeMap::new();
    let plans = plan_kind(&KindInDestination {
        destination: propagate_to("full", &strip, &labels),
        ancestors: &[],
        existing: &existing,
    });
    assert_eq!(
        plans.get("settings").map(|p| &p.plan),
        Some(&CopyPlan::Delete {
            uid: "copy".into(),
            reason: DeleteReason::SourceGone
        })
    );
}

#[test]
fn decide_one_source_for_one_destination() {
    let labels = child_labels();
    let plain = config_map("parent", "settings", "src", "v");
    assert_eq!(decide(&plain, Mode::Propagate, &labels), Decision::Propagate);
    assert_eq!(
        decide(&plain, Mode::AllowPropagate, &labels),
        Decision::NotSelected
    );
    assert_eq!(decide(&plain, Mode::Remove, &labels), Decision::NotSelected);
    assert_eq!(decide(&plain, Mode::Ignore, &labels), Decision::NotSelected);
    let copy = label(plain.clone(), keys::INHERITED_FROM_LABEL, "org");
    assert_eq!(decide(&copy, Mode::Propagate, &labels), Decision::NotSelected);
    let root_ca = config_map("parent", "kube-root-ca.crt", "ca", "pem");
    assert_eq!(
        decide(&root_ca, Mode::Propagate, &labels),
        Decision::Never(NeverReason::CaBundle)
    );
    let bad = annotate(plain, keys::NONE_ANNOTATION, "maybe");
    assert!(matches!(
        decide(&bad, Mode::Propagate, &labels),
        Decision::Invalid(ExceptionError::NotBoolean { .. })
    ));
}

#[test]
fn terminating_copy_is_left_to_finish() {
    let labels = child_labels();
    let source = config_map("parent", "settings", "src-1", "v1");
    let sources = from_parent(&source);
    let mut existing = stored_copy(&sources, &labels, "copy-1");
    existing["data"]["key"] = json!("edited");
    existing["metadata"]["deletionTimestamp"] = json!("2026-11-30T00:00:00Z");
    assert_eq!(
        plan(Mode::Propagate, &sources, Some(&existing), &labels).plan,
        CopyPlan::Nothing
    );
    assert_eq!(
        plan(Mode::Propagate, &[], Some(&existing), &labels).plan,
        CopyPlan::Nothing
    );
}

/// What the executor would leave behind for a plan, as the API server would return it.
fn execute(plan: &CopyPlan, existing: Option<&Value>) -> Option<Value> {
    match plan {
        CopyPlan::Create { copy } | CopyPlan::Recreate { copy, .. } => Some(stored(copy, "new-copy")),
        CopyPlan::Update { copy } => Some(stored(copy, uid(existing?).unwrap_or(""))),
        CopyPlan::Delete { .. } => None,
        _ => existing.cloned(),
    }
}

#[test]
fn plans_converge_and_a_second_run_writes_nothing() {
    let labels = dest_labels(&["child", "parent", "org"]);
    let strip = StripRules::default();
    let v1 = config_map("parent", "settings", "src-1", "v1");
    let v2 = config_map("parent", "settings", "src-1", "v2");
    let recreated = config_map("parent", "settings", "src-9", "v1");
    let org = config_map("org", "settings", "org-1", "o");
    let rb_view = role_binding("parent", "rb", "view");
    let rb_edit = role_binding("parent", "rb", "edit");
    let mut frozen = config_map("parent", "settings", "src-1", "v1");
    frozen["immutable"] = json!(true);
    let mut frozen2 = frozen.clone();
    frozen2["data"]["key"] = json!("v2");
    let excluded = annotate(v1.clone(), keys::TREE_SELECT_ANNOTATION, "!child");
    let src = |namespace, object| Source { namespace, object };
    // (before, after): the copy written for `before` must reach a stable state for `after`
    let cases: Vec<Case<'_>> = vec![
        (vec![src("parent", &v1)], vec![src("parent", &v2)]),
        (vec![src("parent", &v1)], vec![src("parent", &recreated)]),
        (
            vec![src("parent", &v1)],
            vec![src("org", &org), src("parent", &v1)],
        ),
        (vec![src("parent", &rb_view)], vec![src("parent", &rb_edit)]),
        (vec![src("parent", &frozen)], vec![src("parent", &frozen2)]),
        (vec![src("parent", &v1)], vec![src("parent", &excluded)]),
        (vec![src("parent", &v1)], vec![]),
        (vec![], vec![src("parent", &v1)]),
    ];
    let run = |sources: &[Source<'_>], existing: Option<&Value>| {
        plan_object(&Slot {
            destination: propagate_to("child", &strip, &labels),
            sources,
            existing,
        })
        .plan
    };
    for (before, after) in cases {
        let mut existing = execute(&run(&before, None), None);
        let mut writes = 0;
        for _ in 0..3 {
            let planned = run(&after, existing.as_ref());
            writes += usize::from(planned.writes());
            existing = execute(&planned, existing.as_ref());
        }
        assert!(writes <= 1, "one write per needed change: {after:?}");
        let last = run(&after, existing.as_ref());
        assert!(
            matches!(last, CopyPlan::InSync | CopyPlan::Nothing),
            "{after:?}: {last:?}"
        );
    }
}

/// (sources before, sources after) of one convergence case.
type Case<'a> = (Vec<Source<'a>>, Vec<Source<'a>>);

#[test]
fn stable_kinds_for_reports() {
    assert_eq!(CopyPlan::InSync.kind(), "in-sync");
    assert!(
        !CopyPlan::Conflict {
            source_namespace: "p".into()
        }
        .writes()
    );
    assert!(
        CopyPlan::Delete {
            uid: "u".into(),
            reason: DeleteReason::SourceGone
        }
        .writes()
    );
    let skip = Skip::Never {
        source_namespace: "p".into(),
        reason: NeverReason::Finalizers,
    };
    assert_eq!(skip.kind(), "finalizers");
}

#[test]
fn the_hash_memo_hashes_an_object_once_per_uid_and_resource_version() {
    let strip = StripRules::default();
    let memo = HashMemo::default();
    let v1 = config_map("parent", "cm", "u1", "one");
    assert_eq!(memo.content_hash(&v1, &strip), content_hash(&v1, &strip));
    // Same uid and resourceVersion: the remembered hash (the API server never gives two
    // contents one resourceVersion; this one is forged to show the memo is used).
    let forged = config_map("parent", "cm", "u1", "two");
    assert_eq!(memo.content_hash(&forged, &strip), content_hash(&v1, &strip));
    // A new resourceVersion is a new content.
    let mut v2 = forged.clone();
    v2["metadata"]["resourceVersion"] = json!("8");
    assert_eq!(memo.content_hash(&v2, &strip), content_hash(&v2, &strip));
    assert_ne!(content_hash(&v2, &strip), content_hash(&v1, &strip));
    // Without an identity: hashed every time.
    let mut anonymous = v2.clone();
    anonymous["metadata"].as_object_mut().unwrap().remove("uid");
    anonymous["data"]["key"] = json!("three");
    assert_eq!(
        memo.content_hash(&anonymous, &strip),
        content_hash(&anonymous, &strip)
    );
}

/// Plans `existing` against `sources` from the whole object and from its [`CompactCopy`]
/// (`None` if it is not one).
fn plans_whole_and_compact(
    mode: Mode,
    sources: &[Source<'_>],
    existing: &Value,
) -> (ObjectPlan, Option<ObjectPlan>) {
    let labels = child_labels();
    let strip = StripRules::default();
    let plan_from = |existing: &Value, hashes: Option<&HashMemo>| {
        plan_object(&Slot {
            destination: Destination {
                mode,
                strip: &strip,
                name: "child",
                labels: &labels,
                hashes,
            },
            sources,
            existing: Some(existing),
        })
    };
    let whole = plan_from(existing, None);
    let compact = CompactCopy::of(existing, &strip, &mut Interner::default()).map(|compact| {
        let (api_version, kind) = (
            existing["apiVersion"].as_str().unwrap(),
            existing["kind"].as_str().unwrap(),
        );
        let memo = HashMemo::default();
        let expanded = compact.expand(api_version, kind, "child", name(existing).unwrap(), &memo);
        plan_from(&expanded, Some(&memo))
    });
    (whole, compact)
}

#[test]
fn an_intact_copy_kept_compact_is_planned_as_the_whole_copy() {
    let labels = child_labels();
    let cm = config_map("parent", "cm", "u1", "one");
    let cm_copy = stored_copy(&from_parent(&cm), &labels, "copy-cm");
    let cm_edited_source = config_map("parent", "cm", "u1", "two");
    let cm_recreated_source = config_map("parent", "cm", "u2", "one");
    let cm_labelled_source = label(cm.clone(), "team", "a");
    let rb = role_binding("parent", "rb-1", "view");
    let rb_copy = stored_copy(&from_parent(&rb), &labels, "copy-rb");
    let rb_role_changed = role_binding("parent", "rb-1", "edit");
    let mut rb_subjects_changed = rb.clone();
    rb_subjects_changed["subjects"][0]["name"] = json!("ops");
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "s", "namespace": "parent", "uid": "s1"}, "data": {"k": "dg=="}});
    let secret_copy = stored_copy(&from_parent(&secret), &labels, "copy-s");
    let mut secret_changed = secret.clone();
    secret_changed["data"]["k"] = json!("dzI=");
    let mut secret_retyped = secret.clone();
    secret_retyped["type"] = json!("example.com/other");
    let cases: [(Mode, &Value, Vec<Source<'_>>, &str); 11] = [
        (Mode::Propagate, &cm_copy, from_parent(&cm).to_vec(), "in sync"),
        (
            Mode::Propagate,
            &cm_copy,
            from_parent(&cm_edited_source).to_vec(),
            "update",
        ),
        (
            Mode::Propagate,
            &cm_copy,
            from_parent(&cm_recreated_source).to_vec(),
            "new source uid",
        ),
        (
            Mode::Propagate,
            &cm_copy,
            from_parent(&cm_labelled_source).to_vec(),
            "source label",
        ),
        (Mode::Propagate, &cm_copy, Vec::new(), "source gone"),
        (Mode::Remove, &cm_copy, from_parent(&cm).to_vec(), "mode Remove"),
        (
            Mode::Propagate,
            &rb_copy,
            from_parent(&rb_role_changed).to_vec(),
            "roleRef",
        ),
        (
            Mode::Propagate,
            &rb_copy,
            from_parent(&rb_subjects_changed).to_vec(),
            "subjects",
        ),
        (
            Mode::Propagate,
            &secret_copy,
            from_parent(&secret).to_vec(),
            "secret in sync",
        ),
        (
            Mode::Propagate,
            &secret_copy,
            from_parent(&secret_changed).to_vec(),
            "secret data",
        ),
        (
            Mode::Propagate,
            &secret_copy,
            from_parent(&secret_retyped).to_vec(),
            "secret type",
        ),
    ];
    for (mode, existing, sources, case) in &cases {
        let (whole, compact) = plans_whole_and_compact(*mode, sources, existing);
        assert_eq!(compact.as_ref(), Some(&whole), "{case}");
    }
    // The planner's decisions differ across the cases: the equality above is not vacuous.
    let kinds: BTreeSet<&str> = cases
        .iter()
        .map(|(mode, existing, sources, _)| plans_whole_and_compact(*mode, sources, existing).0.plan.kind())
        .collect();
    assert_eq!(kinds, BTreeSet::from(["delete", "in-sync", "recreate", "update"]));
}

#[test]
fn only_intact_copies_are_kept_compact() {
    let strip = StripRules::default();
    let labels = child_labels();
    let cm = config_map("parent", "cm", "u1", "one");
    let copy = stored_copy(&from_parent(&cm), &labels, "copy-cm");
    assert!(CompactCopy::of(&copy, &strip, &mut Interner::default()).is_some());
    let mut edited = copy.clone();
    edited["data"]["key"] = json!("edited by a user");
    let mut deleting = copy.clone();
    deleting["metadata"]["deletionTimestamp"] = json!("2026-12-02T00:00:00Z");
    let mut immutable_source = cm.clone();
    immutable_source["immutable"] = json!(true);
    let immutable = stored_copy(&from_parent(&immutable_source), &labels, "copy-imm");
    let mut unversioned = copy.clone();
    unversioned["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let own = stored(&cm, "own");
    let forged = label(stored(&cm, "forged"), keys::INHERITED_FROM_LABEL, "parent");
    for (object, case) in [
        (&edited, "edited"),
        (&deleting, "being deleted"),
        (&immutable, "immutable"),
        (&unversioned, "no resourceVersion"),
        (&own, "the namespace's own object"),
        (&forged, "inherited-from label without a mark"),
    ] {
        assert_eq!(
            CompactCopy::of(object, &strip, &mut Interner::default()),
            None,
            "{case}"
        );
    }
    // What a compact copy keeps: identity and our marks, not the content or the source's labels.
    let labelled = stored_copy(&from_parent(&label(cm.clone(), "team", "a")), &labels, "copy-l");
    let memo = HashMemo::default();
    let expanded = CompactCopy::of(&labelled, &strip, &mut Interner::default())
        .unwrap()
        .expand("v1", "ConfigMap", "child", "cm", &memo);
    assert_eq!(expanded.get("data"), None);
    assert_eq!(self::labels(&expanded).get("team"), None);
    assert_eq!(
        self::labels(&expanded)
            .get(keys::INHERITED_FROM_LABEL)
            .map(String::as_str),
        Some("parent")
    );
    assert_eq!(uid(&expanded), Some("copy-l"));
    assert_eq!(
        memo.known_or_hash(&expanded, &strip),
        content_hash(&labelled, &strip)
    );
}
