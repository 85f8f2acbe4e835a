//! Two `reaper --watch` replicas (the real binary; one leads by Lease) and the provisioner (the
//! real binary) under concurrent creates of children and edits of the sources in their parent,
//! the leading replica killed mid-way: the other takes the Lease, and afterwards every child
//! holds exactly one copy of every source of every propagated kind, each carrying its source's
//! uid and the hash of the source's current content (no duplicate, lost or stale copy), and no
//! copy of a deleted source.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hierarchy_support;
mod reaper_support;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::discovery::ApiResource;
use kube::{Client, ResourceExt};
use namespace_provisioner::rules::hierarchy::config::PropagationConfig;
use namespace_provisioner::rules::hierarchy::keys;
use namespace_provisioner::rules::hierarchy::propagation::content_hash;
use serde_json::{Value, json};

use hierarchy_support::{CONFIG, config_map, role, role_binding, tree_namespace};
use reaper_support::{lease_holder, spawn_reaper};
use support::process::start_provisioner;
use support::{Fixture, Process, cluster, eventually, temp_file, unique};

const SELECTOR_KEY: &str = "np-test/hierarchy-concurrency";
const TOKEN: &str = "token-c-0123456789abcdef";
const CHILDREN: usize = 8;
const EDITS: usize = 12;

/// The propagated kinds of [`CONFIG`].
fn kinds() -> [ApiResource; 3] {
    [
        ApiResource::erase::<ConfigMap>(&()),
        ApiResource::erase::<Role>(&()),
        ApiResource::erase::<RoleBinding>(&()),
    ]
}

async fn list(client: &Client, resource: &ApiResource, namespace: &str) -> Vec<Value> {
    namespace_provisioner::k8s::list_dynamic(client, resource, Some(namespace), "", 500)
        .await
        .unwrap()
}

fn name(object: &Value) -> String {
    object["metadata"]["name"].as_str().unwrap_or_default().to_owned()
}

fn has_label(object: &Value, key: &str) -> bool {
    object["metadata"]["labels"].get(key).is_some()
}

/// What is wrong with `child`'s copies of `parent`'s sources, or nothing.
async fn copies_wrong(client: &Client, config: &PropagationConfig, parent: &str, child: &str) -> Vec<String> {
    let mut wrong = Vec::new();
    for resource in kinds() {
        // Sources: the parent's objects but the never-propagated CA bundle and any set object.
        let sources: BTreeMap<String, Value> = list(client, &resource, parent)
            .await
            .into_iter()
            .filter(|o| name(o) != "kube-root-ca.crt")
            .map(|o| (name(&o), o))
            .collect();
        let copies: BTreeMap<String, Value> = list(client, &resource, child)
            .await
            .into_iter()
            .filter(|o| has_label(o, keys::INHERITED_FROM_LABEL))
            .map(|o| (name(&o), o))
            .collect();
        let kind = &resource.kind;
        for (name, source) in &sources {
            let Some(copy) = copies.get(name) else {
                wrong.push(format!("{child}: {kind} {name} has no copy"));
                continue;
            };
            let annotations = &copy["metadata"]["annotations"];
            let uid = source["metadata"]["uid"].as_str();
            if annotations[keys::SOURCE_UID_ANNOTATION].as_str() != uid {
                wrong.push(format!("{child}: {kind} {name} copies another source uid"));
            }
            let hash = content_hash(source, config.strip());
            if annotations[keys::SOURCE_HASH_ANNOTATION].as_str() != Some(hash.as_str()) {
                wrong.push(format!("{child}: {kind} {name} is stale (hash)"));
            }
            if kind == "ConfigMap" && copy["data"] != source["data"] {
                wrong.push(format!(
                    "{child}: ConfigMap {name} has {} for {}",
                    copy["data"], source["data"]
                ));
            }
        }
        for name in copies.keys().filter(|n| !sources.contains_key(*n)) {
            wrong.push(format!("{child}: {kind} {name} is a copy of no source"));
        }
    }
    wrong
}

fn replica(fx: &Fixture, lease: &str, identity: &str, config: &str) -> Process {
    let metrics = format!("127.0.0.1:{}", support::free_port());
    spawn_reaper(
        fx,
        identity,
        &[
            "--watch",
            "--lease-name",
            lease,
            "--lease-namespace",
            "default",
            "--lease-identity",
            identity,
            "--lease-duration",
            "3s",
            "--cluster-role",
            &fx.set.cluster_role,
            "--propagation-config",
            config,
            "--metrics-addr",
            &metrics,
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_and_the_provisioner_converge_under_concurrent_creates_edits_and_a_kill() {
    let fx = Fixture::new(SELECTOR_KEY).await.create_grant(vec![]).await;
    let client = fx.client.clone();
    let config_file = temp_file(CONFIG);
    let config_path = config_file.path().display().to_string();
    let config = PropagationConfig::from_yaml(CONFIG).unwrap();

    let parent = tree_namespace(&fx, "hc-p", None, &[]).await;
    Api::<Namespace>::all(client.clone())
        .patch(
            &parent,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {keys::ALLOWED_TENANTS_ANNOTATION: "*"}}})),
        )
        .await
        .unwrap();
    for i in 0..3 {
        config_map(&client, &parent, &format!("cfg-{i}"), "v0", &[], &[]).await;
    }
    role(&client, &parent, "reader", &["get"]).await;
    role_binding(&client, &parent, "readers", "reader", "alice").await;

    let lease = unique("hc-lease");
    let ids = ["replica-a", "replica-b"];
    let mut replicas: Vec<Process> = ids
        .iter()
        .map(|id| replica(&fx, &lease, id, &config_path))
        .collect();
    let leader = eventually(Duration::from_secs(30), "a leader", || async {
        lease_holder(&client, &lease).await
    })
    .await;
    let leader = ids.iter().position(|id| *id == leader).unwrap();
    let follower = ids[1 - leader];

    let tokens = temp_file(&format!("ci-c {TOKEN}\n"));
    let served = start_provisioner(
        "provisioner",
        &[],
        &[
            ("NP_KUBECONFIG", cluster().kubeconfig.display().to_string()),
            ("NP_TOKEN_FILE", tokens.path().display().to_string()),
            ("NP_SELECTOR", fx.selector.to_string()),
            ("NP_CLUSTER_ROLE", fx.set.cluster_role.clone()),
            ("NP_PROPAGATION_CONFIG", config_path.clone()),
            ("NP_TTL", "15m".into()),
            ("NP_MAX_TTL", "1h".into()),
        ],
        "/readyz",
    )
    .await;

    // Children are created two at a time while the sources change and the leader dies.
    let body = json!({"parent": parent, "ttl": "20m"}).to_string();
    let creates = futures::stream::iter(0..CHILDREN)
        .map(|_| {
            support::http(
                &served.addr,
                "POST",
                "/api/v1/namespaces",
                Some(TOKEN),
                Some(&body),
            )
        })
        .buffer_unordered(2)
        .collect::<Vec<_>>();
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &parent);
    let edits = async {
        for n in 1..=EDITS {
            let patch = json!({"data": {"k": format!("v{n}")}});
            config_maps
                .patch(
                    &format!("cfg-{}", n % 3),
                    &PatchParams::default(),
                    &Patch::Merge(patch),
                )
                .await
                .unwrap();
            match n {
                3 => {
                    config_map(&client, &parent, "cfg-new", "fresh", &[], &[]).await;
                }
                5 => {
                    Api::<Role>::namespaced(client.clone(), &parent)
                        .patch(
                            "reader",
                            &PatchParams::default(),
                            &Patch::Merge(json!({"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]})),
                        )
                        .await
                        .unwrap();
                }
                6 => replicas[leader].kill(),
                9 => {
                    config_maps
                        .delete("cfg-new", &DeleteParams::default())
                        .await
                        .unwrap();
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    };
    let (answers, ()) = futures::join!(creates, edits);
    let mut children = Vec::new();
    for answer in answers {
        assert_eq!(answer.status, 201, "{answer:?}\n{}", served.process.log());
        children.push(answer.json()["name"].as_str().unwrap().to_owned());
    }
    let listed = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{}={parent}", keys::PARENT_LABEL)))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), CHILDREN, "children of {parent}");

    let survivor = &replicas[1 - leader];
    eventually(
        Duration::from_secs(30),
        "the follower to take the Lease",
        || async {
            let holder = lease_holder(&client, &lease).await;
            if holder.as_deref() == Some(follower) {
                Ok(())
            } else {
                Err(format!("holder {holder:?}; {follower}:\n{}", survivor.log()))
            }
        },
    )
    .await;
    eventually(
        Duration::from_secs(60),
        "every child to hold exactly the current copies",
        || async {
            let mut wrong = Vec::new();
            for child in &children {
                wrong.extend(copies_wrong(&client, &config, &parent, child).await);
            }
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(wrong.join("\n"))
            }
        },
    )
    .await;
    // And the copies carry the last edit of each source.
    for child in &children {
        let data = Api::<ConfigMap>::namespaced(client.clone(), child)
            .get(&format!("cfg-{}", EDITS % 3))
            .await
            .unwrap()
            .data
            .unwrap();
        assert_eq!(data["k"], format!("v{EDITS}"), "{child}");
        let copy = Api::<Role>::namespaced(client.clone(), child)
            .get("reader")
            .await
            .unwrap();
        assert_eq!(copy.labels()[keys::INHERITED_FROM_LABEL], parent);
        assert_eq!(copy.rules.unwrap()[0].verbs, ["get", "list"], "{child}");
    }

    let (status, log) = served.process.terminate().await;
    assert!(status.success(), "provisioner: {status}\n{log}");
    let survivor = replicas.remove(1 - leader);
    let (status, log) = survivor.terminate().await;
    assert!(status.success(), "{follower}: {status}\n{log}");
}
