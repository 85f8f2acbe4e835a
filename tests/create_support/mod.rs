//! Support shared by tests/hierarchy_create.rs and tests/quota.rs: the provisioner's router
//! over the real control plane for one fixture, and parents made as an administrator makes
//! them (a namespace with the allowed-tenants annotation).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use namespace_provisioner::api::{self, AppState};
use namespace_provisioner::auth::Tokens;
use namespace_provisioner::params::TtlPolicy;
use namespace_provisioner::provision::{Provisioner, ProvisionerConfig};
use tower::ServiceExt;

use crate::support::{self, Answer, Fixture, cluster};

pub const ALICE: &str = "alice-token-0123456789abcdef";
pub const BOB: &str = "bob-token-0123456789abcdefgh";
pub const SELECTOR_KEY: &str = "np-test.example.com/hierarchy-create";
pub const PARENT: &str = "controller.observatorium.io/parent";
pub const ALLOWED: &str = "controller.observatorium.io/allowed-tenants";
pub const EXPIRY: &str = "controller.observatorium.io/expiry";

pub struct Service {
    pub fx: Fixture,
    pub app: Router,
}

impl Service {
    pub async fn new() -> Service {
        Self::with_client(None).await
    }

    /// The provisioner talks through `client` (e.g. one that counts requests), else the fixture's.
    pub async fn with_client(client: Option<kube::Client>) -> Service {
        // The provisioner's logs (a 5xx's cause chain) in the test's output.
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let fx = Fixture::new(SELECTOR_KEY).await.create_grant(vec![]).await;
        let client = client.unwrap_or_else(|| fx.client.clone());
        let config = ProvisionerConfig {
            set: fx.set.clone(),
            ttl: TtlPolicy::new(Duration::from_secs(1800), Some(Duration::from_secs(7200))).unwrap(),
            prefix: "np".parse().unwrap(),
            server: cluster().server_url(),
            ca_pem: Some(cluster().ca_pem()),
            max_namespaces_per_tenant: None,
            page_size: 500,
            max_depth: 3,
            propagation: Default::default(),
        };
        let tokens = Tokens::parse(&format!("alice {ALICE}\nbob {BOB}\n")).unwrap();
        let state = AppState::new(Provisioner::new(client, config), Some(tokens)).unwrap();
        Service {
            app: api::router(state, Duration::from_secs(120)),
            fx,
        }
    }

    pub async fn call(&self, method: &str, uri: &str, token: Option<&str>, body: Option<&str>) -> Answer {
        let request = support::request(method, uri, token, body).map(Body::from);
        support::answer(self.app.clone().oneshot(request).await.unwrap()).await
    }

    /// POST /api/v1/namespaces with `body` as alice.
    pub async fn create(&self, body: serde_json::Value) -> Answer {
        self.call("POST", "/api/v1/namespaces", Some(ALICE), Some(&body.to_string()))
            .await
    }

    /// A namespace of this test's (owner label), with `labels` and `annotations`.
    pub async fn namespace(
        &self,
        prefix: &str,
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> String {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let name = self.fx.create_unmanaged(prefix, labels).await;
        if !annotations.is_empty() {
            let annotations: BTreeMap<&str, &str> = annotations.iter().copied().collect();
            Api::<Namespace>::all(self.fx.client.clone())
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"metadata": {"annotations": annotations}})),
                )
                .await
                .unwrap();
        }
        name
    }

    /// A parent every tenant may create children under, with extra annotations.
    pub async fn parent(&self, annotations: &[(&str, &str)]) -> String {
        let mut all = vec![(ALLOWED, "*")];
        all.extend_from_slice(annotations);
        self.namespace("parent", &[], &all).await
    }

    /// The managed namespaces of this test under `parent`.
    pub async fn children(&self, parent: &str) -> Vec<Namespace> {
        self.fx
            .managed()
            .await
            .into_iter()
            .filter(|ns| {
                ns.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(PARENT))
                    .map(String::as_str)
                    == Some(parent)
            })
            .collect()
    }
}

/// The status, content type and detail of a problem answer.
pub fn assert_problem(answer: &Answer, status: u16, detail_contains: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.headers["content-type"], "application/problem+json");
    let body = answer.json();
    assert_eq!(body["status"], status);
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains(detail_contains),
        "{detail:?} lacks {detail_contains:?}"
    );
}

/// The name a 201 of the JSON create answers with.
pub fn created_name(answer: &Answer) -> String {
    assert_eq!(answer.status, 201, "{}", answer.body);
    answer.json()["name"].as_str().unwrap().to_owned()
}
