//! The real provisioner binary against the real control plane while its
//! configuration files change the way Kubernetes changes a mounted Secret or
//! ConfigMap (a timestamped directory, `..data` swapped to it by a rename, each
//! file a symlink through `..data`): tokens, the kubeconfig CA and the role
//! rules apply without a restart, a bad file keeps the last good one; its audit
//! trail (one JSON line per state change); failed-authentication throttling per
//! client address; HTTPS with a certificate renewed in place.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role};
use kube::api::Api;
use support::process::start_provisioner;
use support::{Answer, Fixture, cluster, eventually, unique};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SELECTOR_KEY: &str = "np-test.example.com/reload";
const ALICE: &str = "alice-token-0123456789abcdef";
const BOB: &str = "bob-token-0123456789abcdefgh";
/// In the first column, where a tenant belongs: the file is refused, and the
/// error must not repeat it.
const MISPLACED: &str = "Carol_Token_0123456789abcdef";

/// A directory written as the kubelet writes a Secret or ConfigMap volume.
struct Volume {
    dir: tempfile::TempDir,
    generation: u32,
}

impl Volume {
    fn new() -> Volume {
        Volume {
            dir: tempfile::tempdir().unwrap(),
            generation: 0,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Publish `files` as one atomic update: a new `..<timestamp>` directory,
    /// `..data` renamed onto a symlink to it, `name -> ..data/name` links, the
    /// previous directory removed.
    fn publish(&mut self, files: &[(&str, &str)]) {
        self.generation += 1;
        let root = self.dir.path();
        let stamp = format!("..2026_11_30_20_00_{:02}.{}", self.generation, std::process::id());
        std::fs::create_dir(root.join(&stamp)).unwrap();
        for (name, content) in files {
            std::fs::write(root.join(&stamp).join(name), content).unwrap();
        }
        let previous = std::fs::read_link(root.join("..data")).ok();
        std::os::unix::fs::symlink(&stamp, root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        for (name, _) in files {
            let link = root.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(name), &link).unwrap();
            }
        }
        if let Some(previous) = previous {
            std::fs::remove_dir_all(root.join(previous)).unwrap();
        }
    }
}

fn rules(verbs: &[&str]) -> Vec<PolicyRule> {
    vec![PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["configmaps".into()]),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    }]
}

fn kubeconfig_field(kubeconfig: &str, pointer: &str) -> String {
    let value: serde_json::Value = serde_yaml_ng::from_str(kubeconfig).unwrap();
    value.pointer(pointer).unwrap().as_str().unwrap().to_owned()
}

/// One sample of `/metrics` with its labels, e.g.
/// `namespace_provisioner_config_reload_total{file="token-file",outcome="error"}`.
async fn labelled_metric(internal: &str, series: &str) -> f64 {
    let text = support::http(internal, "GET", "/metrics", None, None).await.body;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn reloads(file: &str, outcome: &str) -> String {
    format!("namespace_provisioner_config_reload_total{{file=\"{file}\",outcome=\"{outcome}\"}}")
}

/// One HTTP/1.1 request over a socket bound to `from` (a loopback address),
/// with extra headers; the whole answer.
async fn raw(
    from: &str,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    exchange(stream, method, path, headers, body).await
}

/// One HTTP/1.1 request (`connection: close`) over `stream`, and its answer.
async fn exchange<S>(mut stream: S, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        request.push_str("content-type: application/json\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    // A TLS peer may close without close_notify after the body: what was read is the answer.
    let _ = stream.read_to_end(&mut bytes).await;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let mut header_map = http::HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            header_map.append(
                http::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
                value.trim().parse().unwrap(),
            );
        }
    }
    // Bodies here are small: a chunked one is a single chunk between its size line and `0`.
    let body = if header_map
        .get("transfer-encoding")
        .is_some_and(|v| v == "chunked")
    {
        rest.split("\r\n").nth(1).unwrap_or_default().to_owned()
    } else {
        rest.to_owned()
    };
    Answer {
        status,
        headers: header_map,
        body,
    }
}

fn auth(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

/// Tokens, the CA and the role rules change as a Secret and a ConfigMap do;
/// the provisioner follows within moments (its periodic re-read is an hour
/// away, so the directory watch does it), and a bad version of each file keeps
/// the last good one, counted in the metrics, never logging a token.
#[tokio::test]
async fn rotated_files_apply_without_restart_and_bad_ones_are_kept_out() {
    let fx = Fixture::new(SELECTOR_KEY).await.create_grant(vec![]).await;
    let ca = String::from_utf8(cluster().ca_pem()).unwrap();
    let bundle = format!("{ca}{ca}");
    let v1 = serde_json::to_string(&rules(&["get"])).unwrap();
    let v2 = serde_json::to_string(&rules(&["get", "list"])).unwrap();
    let mut volume = Volume::new();
    volume.publish(&[
        ("tokens", &format!("alice {ALICE}\n")),
        ("ca.crt", &ca),
        ("rules.json", &v1),
    ]);
    let served = start_provisioner(
        "provisioner-reload",
        &["--log-format".to_owned(), "json".to_owned()],
        &[
            ("NP_TOKEN_FILE", volume.path("tokens").display().to_string()),
            (
                "NP_CERTIFICATE_AUTHORITY",
                volume.path("ca.crt").display().to_string(),
            ),
            (
                "NP_ROLE_RULES_FILE",
                volume.path("rules.json").display().to_string(),
            ),
            ("NP_RELOAD_INTERVAL", "1h".to_owned()),
            ("NP_KUBECONFIG", cluster().kubeconfig.display().to_string()),
            ("NP_SELECTOR", fx.selector.to_string()),
            ("NP_CLUSTER_ROLE", fx.set.cluster_role.clone()),
        ],
        "/readyz",
    )
    .await;
    let (addr, internal) = (served.addr.clone(), served.internal.clone());
    let role_rules = |name: String| {
        let client = fx.client.clone();
        async move {
            Api::<Role>::namespaced(client, &name)
                .get("namespace-provisioner")
                .await
                .unwrap()
                .rules
                .unwrap()
        }
    };

    let first = support::http(&addr, "POST", "/api/v1/namespaces", Some(ALICE), None).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let first = first.json();
    assert_eq!(
        role_rules(first["name"].as_str().unwrap().to_owned()).await,
        rules(&["get"])
    );
    let first_kubeconfig = first["kubeconfig"].as_str().unwrap().to_owned();
    let ca_of = |kubeconfig: &str| {
        let data = kubeconfig_field(kubeconfig, "/clusters/0/cluster/certificate-authority-data");
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data).unwrap()).unwrap()
    };
    assert_eq!(ca_of(&first_kubeconfig), ca);

    // Rotate: Alice's token goes, Bob's comes; the CA becomes a bundle; the rules grow.
    let published = std::time::Instant::now();
    volume.publish(&[
        ("tokens", &format!("bob {BOB}\n")),
        ("ca.crt", &bundle),
        ("rules.json", &v2),
    ]);
    eventually(
        Duration::from_secs(30),
        "Alice refused and Bob accepted",
        || async {
            let alice = support::http(&addr, "GET", "/api/v1/namespaces", Some(ALICE), None).await;
            let bob = support::http(&addr, "GET", "/api/v1/namespaces", Some(BOB), None).await;
            (alice.status == 401 && bob.status == 200)
                .then_some(())
                .ok_or(format!("alice {}, bob {}", alice.status, bob.status))
        },
    )
    .await;
    // A figure for the notes (`--nocapture`): the watch, not the hourly re-read, did it.
    eprintln!("rotation took effect within {:?}", published.elapsed());
    for file in ["certificate-authority", "role-rules-file"] {
        let series = reloads(file, "success");
        eventually(Duration::from_secs(30), &series, || async {
            labelled_metric(&internal, &series).await == 2.0
        })
        .await;
    }
    let second = support::http(&addr, "POST", "/api/v1/namespaces", Some(BOB), None).await;
    assert_eq!(second.status, 201, "{}", second.body);
    let second = second.json();
    assert_eq!(
        role_rules(second["name"].as_str().unwrap().to_owned()).await,
        rules(&["get", "list"])
    );
    let second_kubeconfig = second["kubeconfig"].as_str().unwrap().to_owned();
    assert_eq!(ca_of(&second_kubeconfig), bundle);

    // Bad versions of all three: each is refused and counted; the last good ones stay.
    volume.publish(&[
        ("tokens", &format!("{MISPLACED} carol\n")),
        ("ca.crt", "not a certificate"),
        ("rules.json", "[]"),
    ]);
    // (At least once each: a read that meets a swap half-way counts as an error too.)
    for file in ["token-file", "certificate-authority", "role-rules-file"] {
        let series = reloads(file, "error");
        eventually(Duration::from_secs(30), &series, || async {
            labelled_metric(&internal, &series).await >= 1.0
        })
        .await;
    }
    let third = support::http(&addr, "POST", "/api/v1/namespaces", Some(BOB), None).await;
    assert_eq!(third.status, 201, "{}", third.body);
    let third = third.json();
    assert_eq!(
        role_rules(third["name"].as_str().unwrap().to_owned()).await,
        rules(&["get", "list"])
    );
    assert_eq!(ca_of(third["kubeconfig"].as_str().unwrap()), bundle);
    let alice = support::http(&addr, "GET", "/api/v1/namespaces", Some(ALICE), None).await;
    assert_eq!(alice.status, 401);
    assert_eq!(
        labelled_metric(&internal, &reloads("token-file", "success")).await,
        2.0
    );
    assert!(
        labelled_metric(
            &internal,
            "namespace_provisioner_config_last_reload_success_timestamp_seconds{file=\"token-file\"}"
        )
        .await
            > 0.0
    );

    let (status, log) = served.process.terminate().await;
    assert!(status.success(), "{status}\n{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("\"file\":\"token-file\"") && l.contains("not valid")),
        "{log}"
    );
    for secret in [ALICE, BOB, MISPLACED] {
        assert!(!log.contains(secret), "a token in the log:\n{log}");
    }
    for kubeconfig in [&first_kubeconfig, &second_kubeconfig] {
        assert!(!log.contains(&kubeconfig_field(kubeconfig, "/users/0/user/token")));
    }
}

/// Every create, extend and delete (REST and the original tool's calls, and
/// refusals) leaves one JSON audit line with the caller, tenant, namespace,
/// request id and outcome; the request id is the caller's, or a fresh one
/// returned in `x-request-id`.
#[tokio::test]
async fn every_state_change_leaves_one_audit_line() {
    let fx = Fixture::new(SELECTOR_KEY).await.create_grant(vec![]).await;
    let tokens = support::temp_file(&format!("alice {ALICE}\n"));
    let served = start_provisioner(
        "provisioner-audit",
        &["--log-format".to_owned(), "json".to_owned()],
        &[
            ("NP_TOKEN_FILE", tokens.path().display().to_string()),
            ("NP_KUBECONFIG", cluster().kubeconfig.display().to_string()),
            ("NP_SELECTOR", fx.selector.to_string()),
            ("NP_CLUSTER_ROLE", fx.set.cluster_role.clone()),
        ],
        "/readyz",
    )
    .await;
    let addr = served.addr.clone();
    let call = |method: &'static str, path: String, id: &'static str, body: &'static str| {
        let addr = addr.clone();
        async move {
            let (name, value) = auth(ALICE);
            let answer = raw(
                "127.0.0.1",
                &addr,
                method,
                &path,
                &[(name, &value), ("x-request-id", id)],
                body,
            )
            .await;
            assert_eq!(answer.headers["x-request-id"], id, "{}", answer.body);
            answer
        }
    };
    let compat = call(
        "POST",
        "/api/v1/namespace?ttl=10m".into(),
        "audit-compat-create",
        "",
    )
    .await;
    assert_eq!(compat.status, 201, "{}", compat.body);
    let compat_name = kubeconfig_field(&compat.body, "/contexts/0/context/namespace");
    let created = call(
        "POST",
        "/api/v1/namespaces".into(),
        "audit-create",
        "{\"ttl\":\"5m\"}",
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let name = created.json()["name"].as_str().unwrap().to_owned();
    let extended = call(
        "PATCH",
        format!("/api/v1/namespaces/{name}"),
        "audit-extend",
        "{\"ttl\":\"20m\"}",
    )
    .await;
    assert_eq!(extended.status, 200, "{}", extended.body);
    let deleted = call("DELETE", format!("/api/v1/namespaces/{name}"), "audit-delete", "").await;
    assert_eq!(deleted.status, 202, "{}", deleted.body);
    let compat_deleted = call(
        "DELETE",
        format!("/api/v1/namespace/{compat_name}"),
        "audit-compat-delete",
        "",
    )
    .await;
    assert_eq!(compat_deleted.status, 200, "{}", compat_deleted.body);
    let refused = call(
        "DELETE",
        "/api/v1/namespace/kube-system".into(),
        "audit-refused",
        "",
    )
    .await;
    assert_eq!(refused.status, 404, "{}", refused.body);
    // No id given, or one that could forge a log line: a fresh one comes back.
    let (name_header, value) = auth(ALICE);
    let fresh = raw(
        "127.0.0.1",
        &addr,
        "POST",
        "/api/v1/namespace?ttl=-1s",
        &[(name_header, &value), ("x-request-id", "a\"b")],
        "",
    )
    .await;
    assert_eq!(fresh.status, 400);
    assert_eq!(fresh.headers["x-request-id"].len(), 32);

    let (status, log) = served.process.terminate().await;
    assert!(status.success(), "{status}\n{log}");
    let audit: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["audit"] == true)
        .collect();
    let expected = [
        ("audit-compat-create", "create", compat_name.as_str(), "success"),
        ("audit-create", "create", name.as_str(), "success"),
        ("audit-extend", "extend", name.as_str(), "success"),
        ("audit-delete", "delete", name.as_str(), "success"),
        ("audit-compat-delete", "delete", compat_name.as_str(), "success"),
        ("audit-refused", "delete", "kube-system", "failure"),
    ];
    assert_eq!(audit.len(), expected.len(), "{audit:#?}");
    for (line, (id, action, namespace, outcome)) in audit.iter().zip(expected) {
        assert_eq!(line["request_id"], id, "{line}");
        assert_eq!(line["action"], action, "{line}");
        assert_eq!(line["namespace"], namespace, "{line}");
        assert_eq!(line["outcome"], outcome, "{line}");
        assert_eq!(line["tenant"], "alice", "{line}");
        assert_eq!(line["caller"], "alice", "{line}");
        assert_eq!(line["level"], "INFO", "{line}");
    }
    assert_eq!(audit[5]["reason"], "not_found");
    // The failure line of the same request carries the id in its span.
    assert!(
        log.lines()
            .any(|l| l.contains("request refused") && l.contains("\"request_id\":\"audit-refused\"")),
        "{log}"
    );
    assert!(audit[..5].iter().all(|l| l.get("reason").is_none()));
    assert!(!log.contains(ALICE));
}

/// Past `--auth-failure-limit` failures an address gets 429 with Retry-After,
/// even with a good token, while another address is served.
#[tokio::test]
async fn failed_authentications_are_throttled_per_client_address() {
    let fx = Fixture::new(SELECTOR_KEY).await;
    let served = start_provisioner(
        "provisioner-throttle",
        &[],
        &[
            ("NP_TOKEN", ALICE.to_owned()),
            ("NP_AUTH_FAILURE_LIMIT", "3".to_owned()),
            ("NP_AUTH_FAILURE_WINDOW", "10m".to_owned()),
            ("NP_KUBECONFIG", cluster().kubeconfig.display().to_string()),
            ("NP_SELECTOR", fx.selector.to_string()),
        ],
        "/healthz",
    )
    .await;
    let addr = served.addr.clone();
    let wrong = unique("wrong-token-0123456789");
    let list = |from: &'static str, token: String| {
        let addr = addr.clone();
        async move {
            let (name, value) = auth(&token);
            raw(from, &addr, "GET", "/api/v1/namespaces", &[(name, &value)], "").await
        }
    };
    for _ in 0..3 {
        assert_eq!(list("127.0.0.2", wrong.clone()).await.status, 401);
    }
    let throttled = list("127.0.0.2", ALICE.to_owned()).await;
    assert_eq!(throttled.status, 429, "{}", throttled.body);
    assert_eq!(throttled.headers["content-type"], "application/problem+json");
    let retry: u64 = throttled.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=600).contains(&retry), "{retry}");
    // Another client address is not locked out.
    assert_eq!(list("127.0.0.3", ALICE.to_owned()).await.status, 200);
    assert_eq!(list("127.0.0.3", wrong.clone()).await.status, 401);
    let throttled_total =
        support::metric(&served.internal, "namespace_provisioner_auth_throttled_total").await;
    assert_eq!(throttled_total, Some(1.0));
    let (status, log) = served.process.terminate().await;
    assert!(status.success(), "{status}\n{log}");
    assert!(!log.contains(&wrong) && !log.contains(ALICE));
}

/// A self-signed certificate for 127.0.0.1: (certificate PEM, key PEM, certificate DER).
fn self_signed() -> (String, String, Vec<u8>) {
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    (
        made.cert.pem(),
        made.signing_key.serialize_pem(),
        made.cert.der().to_vec(),
    )
}

/// A TLS connection to `addr` trusting only `roots`: the certificate the server
/// presented, and a request's answer; or the handshake's error.
async fn https(
    addr: &str,
    roots: &[&[u8]],
    method: &str,
    path: &str,
    token: &str,
) -> Result<(Vec<u8>, Answer), String> {
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(CertificateDer::from(root.to_vec())).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (header, value) = auth(token);
    Ok((
        presented,
        exchange(tls, method, path, &[(header, &value)], "").await,
    ))
}

/// `--tls-cert-file`/`--tls-key-file`: the API over HTTPS (the CA pinned by the
/// client), and a renewed certificate served to new connections without a
/// restart; a broken renewal keeps the last good one.
#[tokio::test]
async fn https_serves_and_follows_a_renewed_certificate() {
    let fx = Fixture::new(SELECTOR_KEY).await.create_grant(vec![]).await;
    let (cert_a, key_a, der_a) = self_signed();
    let (cert_b, key_b, der_b) = self_signed();
    let mut volume = Volume::new();
    volume.publish(&[("tls.crt", &cert_a), ("tls.key", &key_a)]);
    let served = start_provisioner(
        "provisioner-tls",
        &[],
        &[
            ("NP_TOKEN", ALICE.to_owned()),
            ("NP_TLS_CERT_FILE", volume.path("tls.crt").display().to_string()),
            ("NP_TLS_KEY_FILE", volume.path("tls.key").display().to_string()),
            ("NP_RELOAD_INTERVAL", "1h".to_owned()),
            ("NP_KUBECONFIG", cluster().kubeconfig.display().to_string()),
            ("NP_SELECTOR", fx.selector.to_string()),
            ("NP_CLUSTER_ROLE", fx.set.cluster_role.clone()),
        ],
        "/readyz",
    )
    .await;
    let addr = served.addr.clone();
    let (presented, created) = https(&addr, &[&der_a], "POST", "/api/v1/namespace?ttl=10m", ALICE)
        .await
        .unwrap();
    assert_eq!(presented, der_a);
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(created.body.contains("kind: Config"), "{}", created.body);
    // Plain HTTP on the HTTPS port gets no API answer.
    let plain = support::try_http(&addr, "GET", "/api/v1/namespaces", Some(ALICE), None).await;
    assert!(plain.as_ref().is_none_or(|a| a.status != 200), "{plain:?}");

    volume.publish(&[("tls.crt", &cert_b), ("tls.key", &key_b)]);
    eventually(
        Duration::from_secs(30),
        "the renewed certificate to be served",
        || async {
            match https(&addr, &[&der_a, &der_b], "GET", "/api/v1/namespaces", ALICE).await {
                Ok((presented, answer)) if presented == der_b && answer.status == 200 => Ok(()),
                other => Err(format!("{:?}", other.map(|(p, a)| (p == der_a, a.status)))),
            }
        },
    )
    .await;
    assert!(
        https(&addr, &[&der_a], "GET", "/api/v1/namespaces", ALICE)
            .await
            .is_err()
    );

    // A key that does not fit the certificate: refused, counted, B still served.
    // (At least once: a read that meets the swap half-way -- the old directory
    // being removed -- is counted as an error of its own.)
    volume.publish(&[("tls.crt", &cert_a), ("tls.key", &key_b)]);
    let series = reloads("tls-cert-file", "error");
    eventually(Duration::from_secs(30), &series, || async {
        labelled_metric(&served.internal, &series).await >= 1.0
    })
    .await;
    let (presented, answer) = https(&addr, &[&der_b], "GET", "/api/v1/namespaces", ALICE)
        .await
        .unwrap();
    assert_eq!((presented == der_b, answer.status), (true, 200));
    let (status, log) = served.process.terminate().await;
    assert!(status.success(), "{status}\n{log}");
    assert!(!log.contains(ALICE) && !log.contains("PRIVATE KEY"));
}
