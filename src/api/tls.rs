//! HTTPS on the public listener (`--tls-cert-file`, `--tls-key-file`): rustls
//! with ring, the certificate and key read through [`crate::reload`] so a
//! renewed certificate (cert-manager, a rotated Secret) is served to the next
//! connection without a restart. Handshakes run concurrently, each bounded in
//! time, so a client that stalls its handshake holds up nobody else. Network
//! I/O, no Kubernetes calls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::debug;

use crate::reload::Live;

/// Longest a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections whose handshake finished, waiting for the server to take them.
const ACCEPTED_BACKLOG: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("holds no PEM certificate")]
    NoCertificate,
    #[error("a PEM certificate does not parse")]
    Certificate(#[source] rustls::pki_types::pem::Error),
    #[error("holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey(#[source] rustls::pki_types::pem::Error),
    #[error("the key does not fit the certificate, or neither is usable")]
    Config(#[source] rustls::Error),
}

/// A server configuration from PEM holding the certificate chain (leaf
/// first) and its private key: the certificate file's bytes followed by the key file's.
pub fn server_config(pem: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::Certificate)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(pem).map_err(TlsError::NoKey)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)?;
    // axum::serve speaks HTTP/1.1 here.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TCP listener that hands axum only connections whose TLS handshake
/// finished, each with the configuration current when it connected.
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Live<Arc<ServerConfig>>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, accepted) = mpsc::channel(ACCEPTED_BACKLOG);
        tokio::spawn(accept_loop(tcp, config, tx));
        Ok(Self { accepted, local })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    config: Live<Arc<ServerConfig>>,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off as axum's own listener does.
                debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = TlsAcceptor::from(config.get().as_ref().clone());
        let handed = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    // An error means the server stopped: nothing more to serve.
                    let _ = handed.send((tls, peer)).await;
                }
                Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => debug!(%peer, "TLS handshake timed out"),
            }
        });
        if tx.is_closed() {
            return;
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept loop only ends once this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed() -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    #[test]
    fn a_certificate_and_its_key_make_a_config() {
        let (cert, key) = self_signed();
        let config = server_config(format!("{cert}{key}").as_bytes()).unwrap();
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
    }

    #[test]
    fn missing_or_mismatched_parts_are_refused() {
        let (cert, key) = self_signed();
        let (_, other_key) = self_signed();
        assert!(matches!(
            server_config(key.as_bytes()),
            Err(TlsError::NoCertificate)
        ));
        assert!(matches!(server_config(cert.as_bytes()), Err(TlsError::NoKey(_))));
        assert!(matches!(
            server_config(format!("{cert}{other_key}").as_bytes()),
            Err(TlsError::Config(_))
        ));
        assert!(server_config(b"garbage").is_err());
    }
}
