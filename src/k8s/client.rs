//! Building the client (from flags or inferred like kubectl) and the
//! readiness probe. Does Kubernetes I/O.

use std::path::Path;

use kube::Client;

use super::KubeError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("load Kubernetes client configuration")]
    Infer(#[source] kube::config::InferConfigError),
    #[error("load kubeconfig")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("build Kubernetes client")]
    Build(#[source] kube::Error),
}

/// Client configuration from a kubeconfig file and/or context, or inferred
/// like kubectl does (in-cluster, then `$KUBECONFIG`, then `~/.kube/config`).
pub async fn client_config(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<kube::Config, ClientError> {
    let options = kube::config::KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    match (kubeconfig, context) {
        (None, None) => kube::Config::infer().await.map_err(ClientError::Infer),
        (Some(path), _) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(ClientError::Kubeconfig)?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(ClientError::Kubeconfig)
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(ClientError::Kubeconfig),
    }
}

/// A client that reports every API request's HTTP method to `on_request`
/// (for the Kubernetes-requests metric and for benchmarks' request counts).
pub fn counted_client(
    config: kube::Config,
    on_request: impl Fn(&http::Method) + Clone + Send + Sync + 'static,
) -> Result<Client, ClientError> {
    let counting = tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
        on_request(request.method());
        request
    });
    Ok(kube::client::ClientBuilder::try_from(config)
        .map_err(ClientError::Build)?
        .with_layer(&counting)
        .build())
}

/// Readiness: the API server answers (its version endpoint).
pub async fn ping(client: &Client) -> Result<(), KubeError> {
    client.apiserver_version().await.map(drop).map_err(KubeError)
}
