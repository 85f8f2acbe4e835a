//! Serving the router: two listeners in a container (public API, internal
//! health and metrics) with a graceful stop, or the AWS Lambda runtime. Does
//! network I/O, no Kubernetes calls.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;

use tokio::net::TcpListener;
use tracing::{info, warn};

use super::tls::TlsListener;
use super::{AppState, function_router, internal_router, router};
use crate::reload::Live;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serve HTTP")]
    Serve(#[source] std::io::Error),
    #[error("run the AWS Lambda runtime")]
    Lambda(#[source] lambda_http::Error),
}

/// Where and how long to serve in a container.
#[derive(Debug, Clone, Copy)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub internal_listen: SocketAddr,
    /// Longest a request may take before it is answered 504.
    pub request_timeout: Duration,
    /// How long in-flight requests may finish after `stop` resolves.
    pub shutdown_timeout: Duration,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Serve the public API (over HTTPS with `tls`) and the internal listener
/// until `stop` resolves, then let in-flight requests finish for at most
/// `shutdown_timeout`.
pub async fn serve(
    state: AppState,
    config: ServeConfig,
    tls: Option<Live<Arc<rustls::ServerConfig>>>,
    stop: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let public = bind(config.listen).await?;
    let internal = bind(config.internal_listen).await?;
    info!(
        api = ?public.local_addr().ok(),
        internal = ?internal.local_addr().ok(),
        "provisioner listening"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        // An error means the sender is gone: stop as well.
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // The peer address: the key of failed-authentication throttling.
    let app =
        router(state.clone(), config.request_timeout).into_make_service_with_connect_info::<SocketAddr>();
    let public_server: Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> = match tls {
        None => Box::pin(
            axum::serve(public, app)
                .with_graceful_shutdown(stopped(stop_rx.clone()))
                .into_future(),
        ),
        Some(tls) => {
            let listener = TlsListener::new(public, tls).map_err(|source| ServeError::Bind {
                addr: config.listen,
                source,
            })?;
            // `tap_io` lends the listener axum's peer-address connect info.
            Box::pin(
                axum::serve(listener.tap_io(|_| {}), app)
                    .with_graceful_shutdown(stopped(stop_rx.clone()))
                    .into_future(),
            )
        }
    };
    let internal_server =
        axum::serve(internal, internal_router(state)).with_graceful_shutdown(stopped(stop_rx));
    let servers = async { tokio::try_join!(public_server, internal_server.into_future()) };
    tokio::pin!(servers);

    tokio::select! {
        result = &mut servers => return result.map(drop).map_err(ServeError::Serve),
        () = stop => info!("shutting down; finishing in-flight requests"),
    }
    // Every receiver is polled by `servers`; a send cannot fail while it runs.
    let _ = stop_tx.send(true);
    match tokio::time::timeout(config.shutdown_timeout, servers).await {
        Ok(result) => result.map(drop).map_err(ServeError::Serve),
        Err(_) => {
            warn!(timeout = ?config.shutdown_timeout, "in-flight requests did not finish in time");
            Ok(())
        }
    }
}

/// Serve through the AWS Lambda runtime API (one listener: API plus health).
pub async fn serve_function(state: AppState, request_timeout: Duration) -> Result<(), ServeError> {
    info!("serving through the AWS Lambda runtime API");
    lambda_http::run(function_router(state, request_timeout))
        .await
        .map_err(ServeError::Lambda)
}
