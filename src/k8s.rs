//! All Kubernetes I/O: paginated list by selector, server-side apply under one
//! field manager, namespace deletion guarded by a uid precondition, and the
//! TokenRequest API. Everything else in the crate calls through here.

use std::fmt::Debug;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy,
};
use kube::{Client, Resource, ResourceExt};
use secrecy::SecretString;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::desired::{DesiredSet, NamespacedRole};
use crate::labels::{FIELD_MANAGER, OBJECT_NAME};

/// The kinds a managed set is made of, in the order they are listed and shown.
pub const MANAGED_KINDS: [&str; 4] = ["Namespace", "ServiceAccount", "Role", "RoleBinding"];

/// Kubernetes' floor for TokenRequest `expirationSeconds`.
pub const MIN_TOKEN_SECONDS: i64 = 600;

/// The API server treats exactly this lifetime as a legacy "warn only" token
/// and may extend it to a year; never ask for it.
const WARN_ONLY_TOKEN_SECONDS: i64 = 3607;

/// A client that reports every API request's HTTP method to `on_request`
/// (for the Kubernetes-requests metric and for benchmarks' request counts).
pub fn counted_client(
    config: kube::Config,
    on_request: impl Fn(&http::Method) + Clone + Send + Sync + 'static,
) -> Result<Client, kube::Error> {
    let counting = tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
        on_request(request.method());
        request
    });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&counting)
        .build())
}

/// Every object of kind `K` that carries `selector`, page by page.
pub async fn list_all<K>(api: &Api<K>, selector: &str, page_size: u32) -> Result<Vec<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    list_all_map(api, selector, page_size, |object| object).await
}

/// Like [`list_all`], but turns each object into `T` as its page arrives, so
/// only one page of full objects is in memory at a time (e.g. to drop
/// `managedFields`, the bulk of a listed object).
pub async fn list_all_map<K, T>(
    api: &Api<K>,
    selector: &str,
    page_size: u32,
    mut map: impl FnMut(K) -> T,
) -> Result<Vec<T>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut items = Vec::new();
    let mut params = ListParams::default().labels(selector).limit(page_size);
    loop {
        let page = api.list(&params).await?;
        items.extend(page.items.into_iter().map(&mut map));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(items),
        }
    }
}

fn apply_params() -> PatchParams {
    // Force: we own these objects; a human's kubectl edit is drift to undo.
    PatchParams::apply(FIELD_MANAGER).force()
}

pub fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    }
}

/// Server-side apply of one object, created if absent.
pub async fn apply<K>(api: Api<K>, object: &K) -> Result<K, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    api.patch(&object.name_any(), &apply_params(), &Patch::Apply(object))
        .await
}

/// Which object of a set failed to apply.
#[derive(Debug, thiserror::Error)]
#[error("apply {kind} {namespace}/{name}")]
pub struct ApplyError {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    #[source]
    pub source: kube::Error,
}

/// Apply everything of a set inside its namespace (not the Namespace itself),
/// concurrently: the objects do not depend on each other.
pub async fn apply_contents(client: &Client, set: &DesiredSet) -> Result<(), ApplyError> {
    let DesiredSet {
        namespace,
        service_account,
        role_binding,
        role,
    } = set;
    let ns = namespace.name_any();
    let tag = |kind: &'static str, name: &str| {
        let ns = ns.clone();
        let name = name.to_owned();
        move |source| ApplyError {
            kind,
            namespace: ns,
            name,
            source,
        }
    };
    let sa = apply(
        Api::<ServiceAccount>::namespaced(client.clone(), &ns),
        service_account,
    );
    let rb = apply(Api::<RoleBinding>::namespaced(client.clone(), &ns), role_binding);
    let roles = async {
        if let Some(NamespacedRole { role, binding }) = role {
            let (r, b) = tokio::join!(
                apply(Api::<Role>::namespaced(client.clone(), &ns), role),
                apply(Api::<RoleBinding>::namespaced(client.clone(), &ns), binding)
            );
            r.map_err(tag("Role", &role.name_any()))?;
            b.map_err(tag("RoleBinding", &binding.name_any()))?;
        }
        Ok::<(), ApplyError>(())
    };
    let (sa, rb, roles) = tokio::join!(sa, rb, roles);
    sa.map_err(tag("ServiceAccount", &service_account.name_any()))?;
    rb.map_err(tag("RoleBinding", &role_binding.name_any()))?;
    roles
}

/// Delete a Namespace, only if it is still the object with `uid` (a namespace
/// recreated under the same name is left alone). Kubernetes deletes its contents.
pub async fn delete_namespace(client: &Client, name: &str, uid: &str) -> Result<(), kube::Error> {
    delete_namespace_if(client, name, uid, None).await
}

/// Delete a Namespace only if it is still exactly the object we looked at:
/// same `uid` and same `resourceVersion` (so one extended or relabelled since
/// it was read is left for the next look). A mismatch is a 409.
pub async fn delete_namespace_unchanged(
    client: &Client,
    name: &str,
    uid: &str,
    resource_version: &str,
) -> Result<(), kube::Error> {
    delete_namespace_if(client, name, uid, Some(resource_version)).await
}

async fn delete_namespace_if(
    client: &Client,
    name: &str,
    uid: &str,
    resource_version: Option<&str>,
) -> Result<(), kube::Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: resource_version.map(str::to_owned),
        }),
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    Api::<Namespace>::all(client.clone())
        .delete(name, &params)
        .await
        .map(|_| ())
}

/// Delete one object only if it is still the one with `uid`.
pub async fn delete_with_uid<K>(api: &Api<K>, name: &str, uid: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    api.delete(name, &params).await.map(|_| ())
}

/// A bearer token for the set's ServiceAccount and when it really expires.
pub struct IssuedToken {
    pub token: SecretString,
    /// Unix seconds, as granted by the API server (it may shorten what we ask).
    pub expires_at: i64,
}

/// The lifetime to ask for: the namespace's remaining life, but at least
/// Kubernetes' 10-minute floor (the token still dies with the ServiceAccount).
pub fn token_seconds(remaining: i64) -> i64 {
    let secs = remaining.max(MIN_TOKEN_SECONDS);
    if secs == WARN_ONLY_TOKEN_SECONDS {
        secs + 1
    } else {
        secs
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenRequestError {
    #[error("request token for {namespace}/{OBJECT_NAME}")]
    Api {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("token request for {namespace}/{OBJECT_NAME} came back without a token")]
    Empty { namespace: String },
}

/// TokenRequest for the set's ServiceAccount in `namespace`.
pub async fn request_token(
    client: &Client,
    namespace: &str,
    seconds: i64,
) -> Result<IssuedToken, TokenRequestError> {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(seconds),
            audiences: Vec::new(),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    let issued = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(OBJECT_NAME, &post_params(), &request)
        .await
        .map_err(|source| TokenRequestError::Api {
            namespace: namespace.to_owned(),
            source,
        })?;
    let status = issued
        .status
        .filter(|s| !s.token.is_empty())
        .ok_or_else(|| TokenRequestError::Empty {
            namespace: namespace.to_owned(),
        })?;
    Ok(IssuedToken {
        token: SecretString::from(status.token),
        expires_at: status.expiration_timestamp.0.as_second(),
    })
}

/// PEM bundle of the CA a kube `Config` trusts, if it names one.
pub fn trusted_ca_pem(config: &kube::Config) -> std::io::Result<Option<Vec<u8>>> {
    if let Some(path) = &config.root_cert_file {
        return std::fs::read(path).map(Some);
    }
    Ok(config.root_cert.as_ref().map(|certs| {
        let mut pem = String::new();
        for der in certs {
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            let b64 = STANDARD.encode(der);
            for chunk in b64.as_bytes().chunks(64) {
                pem.push_str(&String::from_utf8_lossy(chunk));
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
        }
        pem.into_bytes()
    }))
}

/// Whether an API error means "the API server is not answering" (503 territory)
/// rather than a refusal.
pub fn is_unavailable(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => matches!(status.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// The HTTP status of an API refusal, if it was one.
pub fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lifetime_respects_floor_and_avoids_the_warn_only_value() {
        assert_eq!(token_seconds(30), 600);
        assert_eq!(token_seconds(-5), 600);
        assert_eq!(token_seconds(3600), 3600);
        assert_eq!(token_seconds(3607), 3608);
    }
}
