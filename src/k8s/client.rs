//! Building the client (from flags or inferred like kubectl) and the
//! readiness probe. Does Kubernetes I/O.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::HeaderValue;
use kube::Client;
use tokio::sync::{Notify, watch};

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
    counted_client_with(config, on_request, None)
}

/// [`counted_client`] that authenticates with `bearer` (its current token on
/// every request; a 401 tells its refresher) instead of the configuration's
/// own credentials, when given.
pub fn counted_client_with(
    config: kube::Config,
    on_request: impl Fn(&http::Method) + Clone + Send + Sync + 'static,
    bearer: Option<LiveBearer>,
) -> Result<Client, ClientError> {
    let counting = tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
        on_request(request.method());
        request
    });
    let builder = kube::client::ClientBuilder::try_from(config)
        .map_err(ClientError::Build)?
        .with_layer(&counting);
    Ok(match bearer {
        Some(bearer) => builder.with_layer(&bearer).build(),
        None => builder.build(),
    })
}

/// A bearer token kept current by someone else (the EKS token's refresher,
/// `crate::aws::eks`): read on every request, and told of every 401 so it
/// can replace a token the API server no longer accepts. As a tower layer it
/// sets `Authorization` on each request of the client it wraps.
#[derive(Clone)]
pub struct LiveBearer {
    current: watch::Receiver<HeaderValue>,
    unauthorized: Arc<Notify>,
}

impl fmt::Debug for LiveBearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LiveBearer(..)")
    }
}

impl LiveBearer {
    /// The reading side of `current` (an `Authorization` value, marked
    /// sensitive) and the notice a 401 wakes.
    pub fn new(current: watch::Receiver<HeaderValue>, unauthorized: Arc<Notify>) -> Self {
        Self {
            current,
            unauthorized,
        }
    }
}

impl<S> tower::Layer<S> for LiveBearer {
    type Service = BearerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerService {
            inner,
            bearer: self.clone(),
        }
    }
}

/// The service of [`LiveBearer`].
pub struct BearerService<S> {
    inner: S,
    bearer: LiveBearer,
}

impl<S, B> tower::Service<http::Request<kube::client::Body>> for BearerService<S>
where
    S: tower::Service<http::Request<kube::client::Body>, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<B>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<kube::client::Body>) -> Self::Future {
        let token = self.bearer.current.borrow().clone();
        request.headers_mut().insert(http::header::AUTHORIZATION, token);
        let unauthorized = self.bearer.unauthorized.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            if response.status() == http::StatusCode::UNAUTHORIZED {
                unauthorized.notify_one();
            }
            Ok(response)
        })
    }
}

/// Readiness: the API server answers (its version endpoint).
pub async fn ping(client: &Client) -> Result<(), KubeError> {
    client
        .apiserver_version()
        .await
        .map(drop)
        .map_err(KubeError::from)
}
