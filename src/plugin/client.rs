//! HTTP calls to the provisioner: the plugin's only network I/O.
//!
//! hyper-util's client with rustls (ring, the provider kube already uses),
//! trusting the system roots plus an optional extra CA. Every call is bounded
//! by one timeout; answers are capped in size; the bearer token is marked
//! sensitive so no layer logs it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use tower::util::BoxCloneService;
use tower::{BoxError, ServiceExt};

use super::config::Settings;
use super::error::{PluginError, Problem};
use super::kube_auth::KubeCredentials;
use super::{CreateRequest, Credentials, ExtendRequest, Namespace, NamespaceList};

/// Largest answer read (a kubeconfig is a few KiB; a list of thousands fits).
const MAX_ANSWER_BYTES: usize = 8 << 20;

pub struct Client {
    http: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: Url,
    token: Option<SecretString>,
    /// The kubeconfig context's credentials (kube's Authorization layer
    /// over the same HTTP client), used instead of `token`.
    kube: Option<(String, Exchange)>,
    /// Why the kubeconfig's current context was not used (for the 401 hint).
    kube_skipped: Option<String>,
    timeout: Duration,
}

/// One request to (status, bounded body), behind kube's Authorization layer.
type Exchange = BoxCloneService<Request<Full<Bytes>>, http::Response<Bytes>, BoxError>;

/// A failure below the Authorization layer: reaching the provisioner or reading its answer.
#[derive(Debug)]
struct Transport(PluginError);

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Transport {}

/// A 2xx answer.
struct Answer {
    body: Bytes,
}

impl Client {
    pub fn new(settings: Settings, timeout: Duration) -> Result<Self, PluginError> {
        let tls = tls_config(settings.ca_pem.as_deref())?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            http: HyperClient::builder(TokioExecutor::new()).build(connector),
            base: settings.server_url,
            token: settings.token,
            kube: None,
            kube_skipped: None,
            timeout,
        })
    }

    /// Say in a 401's hint why the kubeconfig's credentials were not sent.
    pub fn with_kube_skipped(mut self, why: String) -> Self {
        self.kube_skipped = Some(why);
        self
    }

    /// Authenticate with a kubeconfig context's bearer token (token, token
    /// file or exec plugin, refreshed by kube) instead of a provisioner token.
    pub fn with_kube_credentials(mut self, credentials: &KubeCredentials) -> Self {
        let http = self.http.clone();
        let what = "a request";
        let inner = tower::service_fn(move |request: Request<Full<Bytes>>| {
            let http = http.clone();
            async move {
                let origin = request
                    .uri()
                    .authority()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let response = http.request(request).await.map_err(|e| {
                    Transport(PluginError::Connect {
                        url: origin,
                        reason: connect_reason(&e),
                    })
                })?;
                let (parts, body) = response.into_parts();
                let body = Limited::new(body, MAX_ANSWER_BYTES)
                    .collect()
                    .await
                    .map_err(|e| {
                        Transport(PluginError::Decode {
                            what: what.to_owned(),
                            reason: format!("reading the answer: {e}"),
                        })
                    })?
                    .to_bytes();
                Ok::<_, Transport>(http::Response::from_parts(parts, body))
            }
        });
        let exchange = tower::ServiceBuilder::new()
            .map_err(|e: Transport| BoxError::from(e))
            .service(inner);
        self.kube = Some((
            credentials.context.clone(),
            BoxCloneService::new(credentials.layer(exchange)),
        ));
        self.token = None;
        self
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some() || self.kube.is_some()
    }

    /// `base` + `/api/v1/namespaces[/name]`, the name percent-encoded so it
    /// can only ever be one path segment.
    fn url(&self, name: Option<&str>) -> Result<Url, PluginError> {
        let mut url = self.base.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|()| PluginError::Usage(format!("server URL {} cannot take a path", self.base)))?;
            segments.pop_if_empty().extend(["api", "v1", "namespaces"]);
            if let Some(name) = name {
                segments.push(name);
            }
        }
        Ok(url)
    }

    async fn call(
        &self,
        method: Method,
        name: Option<&str>,
        body: Option<Vec<u8>>,
        what: &str,
    ) -> Result<Answer, PluginError> {
        let url = self.url(name)?;
        let mut request = Request::builder()
            .method(method)
            .uri(url.as_str())
            .header(header::ACCEPT, "application/json, application/problem+json")
            .header(
                header::USER_AGENT,
                concat!("kubectl-np/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(token) = &self.token {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {}", token.expose_secret())).map_err(|_| {
                    PluginError::Usage("the token holds characters not allowed in an HTTP header".into())
                })?;
            value.set_sensitive(true);
            request = request.header(header::AUTHORIZATION, value);
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| PluginError::Usage(format!("cannot build a request to {url}: {e}")))?;
        let origin = self.base.origin().ascii_serialization();
        let exchange = async {
            if let Some((context, service)) = &self.kube {
                return match service.clone().oneshot(request).await {
                    Ok(response) => Ok((response.status(), response.into_body())),
                    Err(e) => Err(match e.downcast::<Transport>() {
                        Ok(transport) => transport.0,
                        // Not below the layer: kube's credentials (an exec plugin refresh).
                        Err(e) => PluginError::KubeAuth {
                            context: context.clone(),
                            reason: e.to_string(),
                        },
                    }),
                };
            }
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| PluginError::Connect {
                    url: origin.clone(),
                    reason: connect_reason(&e),
                })?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| PluginError::Decode {
                    what: what.to_owned(),
                    reason: format!("reading the answer: {e}"),
                })?
                .to_bytes();
            Ok::<_, PluginError>((status, body))
        };
        let (status, body) =
            tokio::time::timeout(self.timeout, exchange)
                .await
                .map_err(|_| PluginError::Timeout {
                    what: what.to_owned(),
                    timeout: humantime::format_duration(self.timeout).to_string(),
                })??;
        if status.is_success() {
            return Ok(Answer { body });
        }
        let problem = Problem::from_answer(status.as_u16(), &body);
        let hint = if let (StatusCode::UNAUTHORIZED, Some((context, _))) = (status, &self.kube) {
            format!(
                "; sent the credentials of kubeconfig context {context:?}: is the provisioner run with \
                 --auth kubernetes (or both)?"
            )
        } else if status == StatusCode::UNAUTHORIZED && self.token.is_none() {
            let skipped = self
                .kube_skipped
                .as_ref()
                .map_or_else(String::new, |why| format!(" (not sent: {why})"));
            format!(
                "; no token configured: set NP_TOKEN, --token-file, or token-file in the config file, \
                 or use a kubeconfig context with --context{skipped}"
            )
        } else {
            String::new()
        };
        Err(PluginError::Api { problem, hint })
    }

    fn decode<T: serde::de::DeserializeOwned>(answer: &Answer, what: &str) -> Result<T, PluginError> {
        serde_json::from_slice(&answer.body).map_err(|e| PluginError::Decode {
            what: what.to_owned(),
            reason: e.to_string(),
        })
    }

    pub async fn list(&self) -> Result<Vec<Namespace>, PluginError> {
        let answer = self.call(Method::GET, None, None, "list").await?;
        Ok(Self::decode::<NamespaceList>(&answer, "list")?.items)
    }

    pub async fn get(&self, name: &str) -> Result<Namespace, PluginError> {
        let answer = self.call(Method::GET, Some(name), None, "get").await?;
        Self::decode(&answer, "get")
    }

    /// The namespace, or `None` when the server answers 404.
    pub async fn get_opt(&self, name: &str) -> Result<Option<Namespace>, PluginError> {
        match self.get(name).await {
            Ok(ns) => Ok(Some(ns)),
            Err(e) if e.http_status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn create(&self, request: &CreateRequest) -> Result<Credentials, PluginError> {
        let body = serde_json::to_vec(request).map_err(|e| PluginError::Encode(e.to_string()))?;
        let answer = self.call(Method::POST, None, Some(body), "create").await?;
        Self::decode(&answer, "create")
    }

    pub async fn extend(&self, name: &str, request: &ExtendRequest) -> Result<Credentials, PluginError> {
        let body = serde_json::to_vec(request).map_err(|e| PluginError::Encode(e.to_string()))?;
        let answer = self.call(Method::PATCH, Some(name), Some(body), "extend").await?;
        Self::decode(&answer, "extend")
    }

    pub async fn delete(&self, name: &str) -> Result<Namespace, PluginError> {
        let answer = self.call(Method::DELETE, Some(name), None, "delete").await?;
        Self::decode(&answer, "delete")
    }
}

/// The innermost cause of a connection failure (hyper-util wraps it twice).
fn connect_reason(error: &hyper_util::client::legacy::Error) -> String {
    let mut source: &dyn std::error::Error = error;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

fn tls_config(extra_ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, PluginError> {
    let mut roots = rustls::RootCertStore::empty();
    // A machine without a system trust store can still reach an http:// or --ca-file server.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(pem) = extra_ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| PluginError::Tls(format!("CA file: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| PluginError::Tls(format!("CA file: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PluginError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> Client {
        let settings = Settings {
            server_url: base.parse().unwrap(),
            token: None,
            ca_pem: None,
        };
        Client::new(settings, Duration::from_secs(1)).unwrap()
    }

    #[test]
    fn names_are_one_path_segment() {
        let c = client("https://np.example.com/prefix/");
        assert_eq!(
            c.url(None).unwrap().as_str(),
            "https://np.example.com/prefix/api/v1/namespaces"
        );
        assert_eq!(
            c.url(Some("../x?y")).unwrap().as_str(),
            "https://np.example.com/prefix/api/v1/namespaces/..%2Fx%3Fy"
        );
        let c = client("http://127.0.0.1:8080");
        assert_eq!(
            c.url(Some("np-a")).unwrap().as_str(),
            "http://127.0.0.1:8080/api/v1/namespaces/np-a"
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_connect_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = client(&format!("http://127.0.0.1:{port}"))
            .list()
            .await
            .unwrap_err();
        assert!(matches!(err, PluginError::Connect { .. }), "{err}");
        assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
    }
}
