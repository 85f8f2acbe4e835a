//! Identities with exactly chosen permissions, from the permission list
//! itself: for the preflight and error-line tests.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Subject};
use kube::api::{Api, ObjectMeta, PostParams};
use namespace_provisioner::k8s::preflight::preflight;
use namespace_provisioner::rules::permissions::Permission;

use crate::support::{self, Fixture, eventually};

pub fn rule(p: &Permission) -> PolicyRule {
    let resource = match p.subresource {
        Some(sub) => format!("{}/{sub}", p.resource),
        None => p.resource.clone(),
    };
    PolicyRule {
        api_groups: Some(vec![p.group.clone()]),
        resources: Some(vec![resource]),
        verbs: vec![p.verb.to_owned()],
        resource_names: p.name.clone().map(|n| vec![n]),
        non_resource_urls: None,
    }
}

/// A ServiceAccount in `home` holding exactly `grants` (cluster-wide), and
/// a kubeconfig acting as it.
pub async fn identity(
    fx: &Fixture,
    home: &str,
    name: &str,
    grants: &[&Permission],
) -> tempfile::NamedTempFile {
    Api::<ServiceAccount>::namespaced(fx.client.clone(), home)
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            },
        )
        .await
        .unwrap();
    let role = support::unique(&format!("np-preflight-{name}"));
    fx.create_cluster_role(&role, grants.iter().map(|p| rule(p)).collect())
        .await;
    fx.create_cluster_role_binding(
        &role,
        &role,
        Subject {
            kind: "ServiceAccount".into(),
            name: name.to_owned(),
            namespace: Some(home.to_owned()),
            api_group: None,
        },
    )
    .await;
    support::temp_file(&support::service_account_kubeconfig(&fx.client, home, name).await)
}

/// RBAC reaches the authorizer through an informer: wait until `granted`
/// is visible to the identity before asking the binaries.
pub async fn await_rbac(kubeconfig: &Path, granted: &Permission) {
    let client = support::client_from_file(kubeconfig).await;
    eventually(Duration::from_secs(20), "RBAC to reach the authorizer", || {
        let client = client.clone();
        let wanted = vec![granted.clone()];
        async move { preflight(&client, &wanted).await.is_ok_and(|p| p.passed()) }
    })
    .await;
}
