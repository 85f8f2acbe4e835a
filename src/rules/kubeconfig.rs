//! Builds the kubeconfig handed to callers: one cluster, one user, one context,
//! all named after the namespace, the context's namespace set. Pure.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube::config::{AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext};
use secrecy::SecretString;

use crate::rules::params::ServerUrl;

/// Everything a kubeconfig for one managed namespace needs.
pub struct Credentials<'a> {
    pub namespace: &'a str,
    pub server: &'a ServerUrl,
    /// PEM bundle of the API server's CA; `None` trusts the system roots.
    pub ca_pem: Option<&'a [u8]>,
    pub token: SecretString,
}

pub fn build(creds: Credentials<'_>) -> Kubeconfig {
    let name = creds.namespace.to_owned();
    Kubeconfig {
        api_version: Some("v1".to_owned()),
        kind: Some("Config".to_owned()),
        clusters: vec![NamedCluster {
            name: name.clone(),
            cluster: Some(Cluster {
                server: Some(creds.server.as_str().to_owned()),
                certificate_authority_data: creds.ca_pem.map(|pem| STANDARD.encode(pem)),
                ..Cluster::default()
            }),
            other: Default::default(),
        }],
        auth_infos: vec![NamedAuthInfo {
            name: name.clone(),
            auth_info: Some(AuthInfo {
                token: Some(creds.token),
                ..AuthInfo::default()
            }),
            other: Default::default(),
        }],
        contexts: vec![NamedContext {
            name: name.clone(),
            context: Some(Context {
                cluster: name.clone(),
                user: Some(name.clone()),
                namespace: Some(name.clone()),
                ..Context::default()
            }),
            other: Default::default(),
        }],
        current_context: Some(name),
        ..Kubeconfig::default()
    }
}

/// The kubeconfig as YAML, the format the original tool returned.
pub fn to_yaml(config: &Kubeconfig) -> Result<String, serde_yaml_ng::Error> {
    serde_yaml_ng::to_string(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_everything_after_the_namespace_and_round_trips() {
        let server: ServerUrl = "https://127.0.0.1:6443".parse().unwrap();
        let config = build(Credentials {
            namespace: "np-abcde",
            server: &server,
            ca_pem: Some(b"-----BEGIN CERTIFICATE-----\n"),
            token: SecretString::from("tok".to_owned()),
        });
        let yaml = to_yaml(&config).unwrap();
        let value: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(value["apiVersion"], "v1");
        assert_eq!(value["kind"], "Config");
        assert_eq!(value["current-context"], "np-abcde");
        // What the original tool's clients read.
        assert_eq!(value["contexts"][0]["context"]["namespace"], "np-abcde");
        assert_eq!(value["contexts"][0]["context"]["cluster"], "np-abcde");
        assert_eq!(value["contexts"][0]["context"]["user"], "np-abcde");
        assert_eq!(
            value["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        assert_eq!(
            value["clusters"][0]["cluster"]["certificate-authority-data"],
            STANDARD.encode(b"-----BEGIN CERTIFICATE-----\n")
        );
        assert_eq!(value["users"][0]["user"]["token"], "tok");
        let parsed = Kubeconfig::from_yaml(&yaml).unwrap();
        assert_eq!(parsed.current_context.as_deref(), Some("np-abcde"));
    }
}
