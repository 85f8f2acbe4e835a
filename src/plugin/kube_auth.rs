//! Credentials from the kubeconfig (issue 14): with Kubernetes-identity auth
//! on the provisioner (`--auth kubernetes|both`), `kubectl np` sends the
//! bearer token of a kubeconfig context, as kubectl would send it to the API
//! server: a `token`, a `tokenFile`, or an `exec` credential plugin (cloud
//! CLIs, OIDC helpers), refreshed when it expires.
//!
//! The kubeconfig is read and the credentials obtained by kube-rs itself
//! (`kube::Config` and its `ConfigExt::auth_layer`): nothing here runs exec
//! plugins or reads token files. What this module adds is the choice of
//! context and a clear refusal of a context whose user has no
//! bearer token to give (client certificates, basic auth): the provisioner
//! checks identities with TokenReview, which reviews tokens only.
//! Reads files and may run the context's exec plugin; no network of its own.

use std::path::Path;

use kube::client::ConfigExt;
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig, KubeconfigError};
use tower::Layer;

use super::error::PluginError;

/// The Authorization layer of one kubeconfig context.
pub struct KubeCredentials {
    layer: kube::client::middleware::AuthLayer,
    /// For messages: the context and its user.
    pub context: String,
    pub user: String,
}

impl std::fmt::Debug for KubeCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCredentials")
            .field("context", &self.context)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl KubeCredentials {
    /// Wrap `service` so each request gets the context's bearer token.
    pub fn layer<S>(&self, service: S) -> <kube::client::middleware::AuthLayer as Layer<S>>::Service {
        self.layer.layer(service)
    }
}

/// Why a context's user cannot authenticate to the provisioner, if it cannot.
pub fn unusable(auth: &AuthInfo) -> Option<&'static str> {
    let bearer = auth.token.is_some()
        || auth.token_file.is_some()
        || auth.exec.is_some()
        || auth.auth_provider.is_some();
    if bearer {
        return None;
    }
    if auth.client_certificate.is_some() || auth.client_certificate_data.is_some() {
        return Some(
            "authenticates with a client certificate only; the provisioner reviews bearer tokens \
             (TokenReview), which a certificate is not",
        );
    }
    if auth.username.is_some() || auth.password.is_some() {
        return Some(
            "authenticates with a user name and password; the provisioner reviews bearer tokens only",
        );
    }
    Some("has no credentials")
}

/// The credentials of `context` (default: the current context) of the
/// kubeconfig at `path` (default: `$KUBECONFIG`, else `~/.kube/config`).
/// `Ok(None)` when `required` is false and there is no kubeconfig at all;
/// [`PluginError::NoBearer`] when the context's user has no bearer token to give.
pub async fn load(
    path: Option<&Path>,
    context: Option<&str>,
    required: bool,
) -> Result<Option<KubeCredentials>, PluginError> {
    let read = match path {
        Some(path) => Kubeconfig::read_from(path),
        None => Kubeconfig::read(),
    };
    let kubeconfig = match read {
        Ok(k) => k,
        Err(e) if !required && is_absent(&e) => return Ok(None),
        Err(e) => {
            return Err(PluginError::Usage(format!(
                "cannot read the kubeconfig for credentials: {e} (or give a provisioner token: NP_TOKEN / --token-file)"
            )));
        }
    };
    let name = context
        .map(str::to_owned)
        .or_else(|| kubeconfig.current_context.clone())
        .ok_or_else(|| {
            PluginError::Usage(
                "the kubeconfig has no current context; name one with --context (NP_CONTEXT)".to_owned(),
            )
        })?;
    let known: Vec<&str> = kubeconfig.contexts.iter().map(|c| c.name.as_str()).collect();
    let user = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| {
            PluginError::Usage(format!(
                "no context {name:?} in the kubeconfig (contexts: {})",
                known.join(", ")
            ))
        })?
        .context
        .as_ref()
        .and_then(|c| c.user.clone())
        .unwrap_or_default();
    let auth = kubeconfig
        .auth_infos
        .iter()
        .find(|u| u.name == user)
        .and_then(|u| u.auth_info.clone())
        .unwrap_or_default();
    if let Some(why) = unusable(&auth) {
        return Err(PluginError::NoBearer {
            context: name,
            user,
            why,
        });
    }
    let options = KubeConfigOptions {
        context: Some(name.clone()),
        ..KubeConfigOptions::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| PluginError::Usage(format!("kubeconfig context {name:?}: {e}")))?;
    // kube runs an exec plugin here (blocking, once; again when it expires).
    let layer = tokio::task::spawn_blocking(move || config.auth_layer())
        .await
        .map_err(|e| PluginError::KubeAuth {
            context: name.clone(),
            reason: e.to_string(),
        })?
        .map_err(|e| PluginError::KubeAuth {
            context: name.clone(),
            reason: chain(&e),
        })?
        .ok_or_else(|| PluginError::KubeAuth {
            context: name.clone(),
            reason: "kube found no bearer credentials in it".to_owned(),
        })?;
    Ok(Some(KubeCredentials {
        layer,
        context: name,
        user,
    }))
}

/// No kubeconfig file at all (as opposed to one that cannot be read or parsed).
fn is_absent(error: &KubeconfigError) -> bool {
    match error {
        KubeconfigError::FindPath => true,
        KubeconfigError::ReadConfig(e, _) => e.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: ctx\n\
             clusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n\
             contexts:\n- name: ctx\n  context:\n    cluster: c\n    user: u\n\
             - name: other\n  context:\n    cluster: c\n    user: u\n\
             users:\n- name: u\n  user:\n{user}"
        )
    }

    async fn try_load(text: &str, context: Option<&str>) -> Result<Option<KubeCredentials>, String> {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        load(Some(file.path()), context, true)
            .await
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn tokens_token_files_and_exec_plugins_are_bearer_credentials() {
        let creds = try_load(&kubeconfig("    token: abc\n"), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((creds.context.as_str(), creds.user.as_str()), ("ctx", "u"));
        assert!(!format!("{creds:?}").contains("abc"));
        let token_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(token_file.path(), "from-file\n").unwrap();
        let text = kubeconfig(&format!("    tokenFile: {}\n", token_file.path().display()));
        assert!(try_load(&text, Some("other")).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn certificates_and_passwords_are_refused_by_name() {
        let err = try_load(
            &kubeconfig("    client-certificate-data: AAAA\n    client-key-data: BBBB\n"),
            None,
        )
        .await
        .unwrap_err();
        assert!(
            err.contains("context \"ctx\" (user \"u\") authenticates with a client certificate only"),
            "{err}"
        );
        assert!(err.contains("NP_TOKEN"), "{err}");
        let err = try_load(&kubeconfig("    username: a\n    password: hunter2\n"), None)
            .await
            .unwrap_err();
        assert!(
            err.contains("user name and password") && !err.contains("hunter2"),
            "{err}"
        );
        let err = try_load(&kubeconfig("    token: abc\n"), Some("nope"))
            .await
            .unwrap_err();
        assert!(
            err.contains("no context \"nope\"") && err.contains("ctx, other"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_failing_exec_plugin_is_a_credential_error() {
        let err = try_load(
            &kubeconfig(
                "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /nonexistent/np-cred\n      interactiveMode: Never\n",
            ),
            None,
        )
        .await
        .unwrap_err();
        assert!(err.contains("credentials of kubeconfig context \"ctx\""), "{err}");
    }

    #[tokio::test]
    async fn no_kubeconfig_is_fine_unless_required() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("config");
        assert!(load(Some(&absent), None, false).await.unwrap().is_none());
        assert!(load(Some(&absent), None, true).await.is_err());
    }
}
