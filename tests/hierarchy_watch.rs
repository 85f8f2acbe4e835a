//! The reaper's tree watch against the real control plane, through the library: a new tree is
//! labelled and receives its copies, a source edit reaches every copy, an edited or deleted copy
//! is restored, a parent's deletion cascades; latency is read from the reaper's own
//! `propagation_lag_seconds` histogram (no wall-clock assertion).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hierarchy_support;
mod reaper_support;
mod support;

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use namespace_provisioner::reaper::tree_watch::TreeWatch;
use namespace_provisioner::reaper::watch::watch_with_trees;
use namespace_provisioner::rules::hierarchy::keys;

use hierarchy_support::*;
use reaper_support::{lease_holder, watch_config};
use support::fixture::is_terminating;
use support::http::sample;
use support::{Fixture, eventually, metric, unique};

const SELECTOR_KEY: &str = "np-test/hierarchy-watch";
const WAIT: Duration = Duration::from_secs(20);

async fn data_in(client: &kube::Client, namespace: &str, name: &str) -> Option<String> {
    get_config_map(client, namespace, name)
        .await
        .map(|cm| data_of(&cm))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_propagates_source_edits_restores_copies_and_cascades() {
    let fx = Fixture::new(SELECTOR_KEY).await;
    let client = fx.client.clone();
    let propagation = propagation(&client, CONFIG)
        .await
        .excluding_sets(fx.selector.clone());
    let trees = TreeWatch {
        propagation: Arc::new(propagation),
        selector: fx.selector.clone(),
        page_size: 500,
        concurrency: 4,
        instance: "test".into(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let lease = unique("hw-lease");
    let (stop, stopped) = futures::channel::oneshot::channel::<()>();
    let task = tokio::spawn(
        watch_with_trees(
            client.clone(),
            watch_config(&fx, &lease, "solo"),
            Some(trees),
            listener,
            stopped.map(drop),
        )
        .map(|done| done.map_err(|e| e.to_string())),
    );
    eventually(WAIT, "the watcher to lead", || async {
        lease_holder(&client, &lease).await.as_deref() == Some("solo")
    })
    .await;

    let parent = tree_namespace(&fx, "hw-p", None, &[]).await;
    config_map(&client, &parent, "cfg", "v1", &[], &[]).await;
    let a = tree_namespace(&fx, "hw-a", Some(&parent), &[]).await;
    let b = tree_namespace(&fx, "hw-b", Some(&parent), &[]).await;
    let a1 = tree_namespace(&fx, "hw-a1", Some(&a), &[]).await;
    let all = [&a, &b, &a1];
    eventually(WAIT, "copies in every descendant", || async {
        for ns in all {
            if data_in(&client, ns, "cfg").await.as_deref() != Some("v1") {
                return Err(format!("{ns} has no v1 copy yet"));
            }
        }
        Ok(())
    })
    .await;
    eventually(WAIT, "tree labels on the grandchild", || async {
        labels_of(&client, &a1)
            .await
            .get(&keys::tree_label(&parent))
            .map(String::as_str)
            == Some("2")
    })
    .await;

    // A source edit reaches every copy.
    let lag_before = metric(
        &addr,
        "namespace_provisioner_reaper_propagation_lag_seconds_count",
    )
    .await;
    Api::<ConfigMap>::namespaced(client.clone(), &parent)
        .patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"k": "v2"}})),
        )
        .await
        .unwrap();
    eventually(WAIT, "the edit in every copy", || async {
        for ns in all {
            if data_in(&client, ns, "cfg").await.as_deref() != Some("v2") {
                return Err(format!("{ns} not updated yet"));
            }
        }
        Ok(())
    })
    .await;

    // An edited copy is restored, a deleted one recreated.
    let copies = Api::<ConfigMap>::namespaced(client.clone(), &a);
    copies
        .patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"k": "hacked"}})),
        )
        .await
        .unwrap();
    eventually(WAIT, "the edited copy restored", || async {
        data_in(&client, &a, "cfg").await.as_deref() == Some("v2")
    })
    .await;
    Api::<ConfigMap>::namespaced(client.clone(), &b)
        .delete("cfg", &DeleteParams::default())
        .await
        .unwrap();
    eventually(WAIT, "the deleted copy recreated", || async {
        data_in(&client, &b, "cfg").await.as_deref() == Some("v2")
    })
    .await;

    let text = reqwest_metrics(&addr).await;
    let writes = sample(&text, "namespace_provisioner_reaper_copy_writes_total").unwrap_or(0.0);
    assert!(
        writes >= 8.0,
        "3 creates + 3 updates + restore + recreate: {writes}\n{text}"
    );
    let lag_count = sample(
        &text,
        "namespace_provisioner_reaper_propagation_lag_seconds_count",
    )
    .unwrap_or(0.0);
    assert!(lag_count > lag_before.unwrap_or(0.0), "{text}");
    let lag_sum = sample(&text, "namespace_provisioner_reaper_propagation_lag_seconds_sum").unwrap_or(0.0);
    eprintln!(
        "watch propagation: {lag_count} passes, mean {:.1} ms per pass (propagation_lag_seconds)",
        1000.0 * lag_sum / lag_count.max(1.0)
    );

    // A conflict (a's own object with a source's name) is reported once as an Event.
    config_map(&client, &a, "taken", "mine", &[], &[]).await;
    config_map(&client, &parent, "taken", "source", &[], &[]).await;
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), "default");
    eventually(WAIT, "a PropagationConflict Event about a", || async {
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("PropagationConflict")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(a.as_str())
            })
    })
    .await;
    assert_eq!(data_in(&client, &a, "taken").await.as_deref(), Some("mine"));

    // A managed child of a deleted parent is reaped (cascade), at once.
    let mut set = fx.desired(&unique("hw-m"), support::now() + 3600);
    let uid = Api::<Namespace>::all(client.clone())
        .get(&b)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let meta = &mut set.namespace.metadata;
    meta.labels
        .get_or_insert_default()
        .insert(keys::PARENT_LABEL.into(), b.clone());
    meta.annotations
        .get_or_insert_default()
        .insert(keys::PARENT_UID_ANNOTATION.into(), uid);
    support::fixture::make_set(&client, &set).await;
    let child = set.namespace.metadata.name.clone().unwrap();
    eventually(WAIT, "the managed child to receive its copy", || async {
        data_in(&client, &child, "cfg").await.is_some()
    })
    .await;
    Api::<Namespace>::all(client.clone())
        .delete(&b, &DeleteParams::default())
        .await
        .unwrap();
    eventually(WAIT, "the managed child of a deleted parent reaped", || async {
        is_terminating(&client, &child).await
    })
    .await;
    let cascades = metric(&addr, "namespace_provisioner_reaper_cascades_total").await;
    assert!(cascades.unwrap_or(0.0) >= 1.0);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("watch stopped within 30s")
        .unwrap()
        .unwrap();
}

async fn reqwest_metrics(addr: &str) -> String {
    support::http(addr, "GET", "/metrics", None, None).await.body
}
