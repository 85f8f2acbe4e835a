//! Router tests without sockets or a cluster: every error path that is decided
//! before the Kubernetes API is called, plus an API server that fails at once
//! and one that never answers (under tokio's paused clock: no real timers).
//! Kubernetes behaviour itself is tested in tests/ against the real thing.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;
use crate::provision::{Provisioner, ProvisionerConfig};
use crate::rules::desired::SetConfig;
use crate::rules::params::TtlPolicy;

const TOKEN: &str = "tenant-a-token-0123456789";

/// A client whose every request fails at once, as if the API server were down.
fn unreachable_client() -> kube::Client {
    let service = tower::service_fn(|_: Request<kube::client::Body>| async {
        Err::<axum::http::Response<kube::client::Body>, _>(std::io::Error::other("connection refused"))
    });
    kube::Client::new(service, "default")
}

/// A client whose every request waits forever, as if the API server hung.
fn silent_client() -> kube::Client {
    let service = tower::service_fn(|_: Request<kube::client::Body>| {
        std::future::pending::<Result<axum::http::Response<kube::client::Body>, std::io::Error>>()
    });
    kube::Client::new(service, "default")
}

/// A state whose client cannot reach an API server: any API call fails fast.
fn state(tokens: bool) -> AppState {
    state_with(unreachable_client(), tokens)
}

fn state_with(client: kube::Client, tokens: bool) -> AppState {
    let provisioner = Provisioner::new(
        client,
        ProvisionerConfig {
            set: SetConfig {
                selector: crate::rules::labels::DEFAULT_SELECTOR.parse().unwrap(),
                cluster_role: "namespace-provisioner-grant".into(),
                role_rules: None,
            },
            ttl: TtlPolicy::new(Duration::from_secs(3600), Some(Duration::from_secs(7200))).unwrap(),
            prefix: "np".parse().unwrap(),
            server: "https://kube.example:6443".parse().unwrap(),
            ca_pem: None,
            max_namespaces_per_tenant: None,
            page_size: 500,
            max_depth: 3,
            propagation: Default::default(),
        },
    );
    let tokens = tokens.then(|| Tokens::parse(&format!("team-a {TOKEN}\n")).unwrap());
    AppState::new(provisioner, tokens).unwrap()
}

fn app(tokens: bool) -> Router {
    router(state(tokens), Duration::from_secs(5)).merge(internal_router(state(tokens)))
}

async fn send(app: Router, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, headers, body)
}

fn authed(method: &str, uri: &str, body: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn assert_problem(
    status: StatusCode,
    headers: &axum::http::HeaderMap,
    body: &serde_json::Value,
    want: StatusCode,
) {
    assert_eq!(status, want, "{body}");
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(body["status"], want.as_u16());
    assert_eq!(body["type"], "about:blank");
    assert!(!body["detail"].as_str().unwrap().is_empty());
    assert!(!body.to_string().contains(TOKEN), "token echoed: {body}");
}

#[tokio::test]
async fn missing_token_is_401_with_bearer_challenge() {
    let request = Request::post("/api/v1/namespace").body(Body::empty()).unwrap();
    let (status, headers, body) = send(app(true), request).await;
    assert_problem(status, &headers, &body, StatusCode::UNAUTHORIZED);
    assert!(
        headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
}

#[tokio::test]
async fn wrong_token_and_wrong_scheme_are_401() {
    for value in [
        "Bearer wrong-token-0123456789".to_owned(),
        format!("Basic {TOKEN}"),
        TOKEN.to_owned(),
    ] {
        let request = Request::get("/api/v1/namespaces")
            .header(header::AUTHORIZATION, value)
            .body(Body::empty())
            .unwrap();
        let (status, headers, body) = send(app(true), request).await;
        assert_problem(status, &headers, &body, StatusCode::UNAUTHORIZED);
        assert!(
            headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
    }
}

#[tokio::test]
async fn auth_is_checked_before_input_unless_tokens_are_off() {
    // With tokens, an anonymous request stops at auth; with tokens off (every
    // caller is tenant `default`) the same request reaches validation.
    for (tokens, want) in [(true, StatusCode::UNAUTHORIZED), (false, StatusCode::BAD_REQUEST)] {
        let request = Request::post("/api/v1/namespace?ttl=garbage")
            .body(Body::empty())
            .unwrap();
        let (status, ..) = send(app(tokens), request).await;
        assert_eq!(status, want, "tokens: {tokens}");
    }
}

#[tokio::test]
async fn scheme_is_case_insensitive() {
    // Passes auth, then fails on the ttl: proof the lower-case scheme was accepted.
    let request = Request::post("/api/v1/namespace?ttl=garbage")
        .header(header::AUTHORIZATION, format!("bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let (status, ..) = send(app(true), request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bad_ttl_is_400_naming_the_allowed_range() {
    let cases = [
        ("garbage", "not a duration"),
        ("-5m", "negative"),
        ("99999999999999999999999999h", "not a duration"),
        ("3h", "at most 2h"),
        ("5", "not a duration"),
    ];
    for (ttl, expect) in cases {
        let uri = format!("/api/v1/namespace?ttl={ttl}");
        let (status, headers, body) = send(app(true), authed("POST", &uri, "")).await;
        assert_problem(status, &headers, &body, StatusCode::BAD_REQUEST);
        assert!(body["detail"].as_str().unwrap().contains(expect), "{ttl}: {body}");
    }
}

#[tokio::test]
async fn bad_server_is_400() {
    for server in ["foo", "ftp://x", "/relative", "https://user:pw@host"] {
        let uri = format!("/api/v1/namespace?server={server}");
        let (status, headers, body) = send(app(true), authed("POST", &uri, "")).await;
        assert_problem(status, &headers, &body, StatusCode::BAD_REQUEST);
        assert!(
            body["detail"].as_str().unwrap().contains("absolute http(s) URL"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn unknown_query_parameter_is_named() {
    let (status, headers, body) = send(app(true), authed("POST", "/api/v1/namespace?tll=5m", "")).await;
    assert_problem(status, &headers, &body, StatusCode::BAD_REQUEST);
    assert!(body["detail"].as_str().unwrap().contains("tll"), "{body}");
}

#[tokio::test]
async fn bad_json_bodies_are_400_or_415() {
    for (payload, expect) in [
        ("{", "not valid JSON"),
        (r#"{"ttl": 5}"#, "invalid type"),
        (r#"{"tll":"5m"}"#, "tll"),
    ] {
        let (status, headers, body) = send(app(true), authed("POST", "/api/v1/namespaces", payload)).await;
        assert_problem(status, &headers, &body, StatusCode::BAD_REQUEST);
        assert!(
            body["detail"].as_str().unwrap().contains(expect),
            "{payload}: {body}"
        );
    }
    let request = Request::post("/api/v1/namespaces")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("ttl=5m"))
        .unwrap();
    let (status, headers, body) = send(app(true), request).await;
    assert_problem(status, &headers, &body, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, headers, body) = send(
        app(true),
        authed("PATCH", "/api/v1/namespaces/np-x", r#"{"ttl":"-1s"}"#),
    )
    .await;
    assert_problem(status, &headers, &body, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn oversized_body_is_refused() {
    let big = format!(r#"{{"ttl":"{}"}}"#, "1".repeat(BODY_LIMIT));
    let (status, headers, body) = send(app(true), authed("POST", "/api/v1/namespaces", &big)).await;
    assert_problem(status, &headers, &body, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn unknown_route_and_method_are_problems() {
    let (status, headers, body) = send(app(true), authed("GET", "/api/v2/things", "")).await;
    assert_problem(status, &headers, &body, StatusCode::NOT_FOUND);
    let (status, headers, body) = send(app(true), authed("PUT", "/api/v1/namespaces", "")).await;
    assert_problem(status, &headers, &body, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn invalid_names_are_404_without_an_api_call() {
    for name in ["Kube-System", "a_b", "..", &"x".repeat(64)] {
        let uri = format!("/api/v1/namespaces/{name}");
        let (status, headers, body) = send(app(true), authed("DELETE", &uri, "")).await;
        assert_problem(status, &headers, &body, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn unreachable_api_server_is_503_with_retry_after() {
    let (status, headers, body) = send(app(true), authed("GET", "/api/v1/namespaces", "")).await;
    assert_problem(status, &headers, &body, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::RETRY_AFTER], "5");
    let request = Request::get("/readyz").body(Body::empty()).unwrap();
    let (status, ..) = send(app(true), request).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn health_metrics_and_openapi_answer() {
    let (status, ..) = send(app(true), Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let response = app(true)
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(
        text.contains("namespace_provisioner_create_duration_seconds"),
        "{text}"
    );
    let (status, _, body) = send(
        app(true),
        Request::get("/openapi.json").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["paths"]["/api/v1/namespaces/{name}"]["patch"].is_object());
}

/// Lambda-shaped requests: API Gateway HTTP API (v2) / function URL events go
/// through the same router the function runtime serves.
async fn lambda(fixture: &str) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let path = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
    let event = std::fs::read_to_string(path).unwrap();
    let request = lambda_http::request::from_str(&event).unwrap();
    let app = function_router(state(true), Duration::from_secs(5));
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or_default(),
    )
}

#[tokio::test]
async fn lambda_event_with_bad_ttl_is_400() {
    let (status, headers, body) = lambda("apigw-v2-create-bad-ttl.json").await;
    assert_problem(status, &headers, &body, StatusCode::BAD_REQUEST);
    assert!(body["detail"].as_str().unwrap().contains("forever"));
}

#[tokio::test]
async fn lambda_event_without_token_is_401() {
    let (status, headers, body) = lambda("apigw-v2-list-no-auth.json").await;
    assert_problem(status, &headers, &body, StatusCode::UNAUTHORIZED);
}

#[tokio::test(start_paused = true)]
async fn slow_api_server_is_504_problem() {
    // The API server never answers; the paused clock jumps to the deadline.
    let app = router(state_with(silent_client(), true), Duration::from_millis(300));
    let (status, headers, body) = send(app, authed("GET", "/api/v1/namespaces", "")).await;
    assert_problem(status, &headers, &body, StatusCode::GATEWAY_TIMEOUT);
    assert!(body["detail"].as_str().unwrap().contains("300ms"), "{body}");
    assert_eq!(headers["retry-after"], "5");
}

#[tokio::test]
async fn live_namespace_gauge_is_opt_in() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let service = tower::service_fn(move |_: Request<kube::client::Body>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Err::<axum::http::Response<kube::client::Body>, _>(std::io::Error::other("down")) }
    });
    let mut state = state_with(kube::Client::new(service, "default"), true);
    let scrape = |state: AppState| async move {
        let response = internal_router(state)
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    };
    scrape(state.clone()).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "a scrape listed namespaces by default"
    );
    state.count_live_namespaces = true;
    scrape(state).await;
    assert!(calls.load(Ordering::SeqCst) > 0);
}

#[tokio::test]
async fn a_failed_preflight_makes_readyz_503_with_the_reason() {
    let state = state(true);
    // The client is unreachable, so /readyz is 503 either way: the detail shows the gate answered.
    let reason = "preflight: this identity lacks 1 permission(s): cannot create namespaces at cluster scope — apply function/clusterrole.yaml";
    state.readiness.refuse(reason.to_owned());
    let router = internal_router(state);
    let (status, headers, body) = send(router, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_problem(status, &headers, &body, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["detail"], reason);
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let mut request = authed("POST", "/api/v1/namespace?ttl=-1s", "");
    request
        .headers_mut()
        .insert("x-request-id", "client-id.42".parse().unwrap());
    let (_, headers, _) = send(app(true), request).await;
    assert_eq!(headers["x-request-id"], "client-id.42");
    // Unsafe ids (spaces, quotes: log forging) are replaced by a fresh one.
    for unsafe_id in ["two words", "\"quoted\"", &"a".repeat(200)] {
        let mut request = authed("GET", "/api/v1/namespaces", "");
        request
            .headers_mut()
            .insert("x-request-id", unsafe_id.parse().unwrap());
        let (_, headers, _) = send(app(true), request).await;
        let made = headers["x-request-id"].to_str().unwrap();
        assert_ne!(made, unsafe_id);
        assert_eq!(made.len(), 32, "{made}");
    }
    let (_, headers, _) = send(app(true), Request::get("/nowhere").body(Body::empty()).unwrap()).await;
    assert_eq!(headers["x-request-id"].len(), 32);
}

fn throttled_state(header: Option<&str>) -> AppState {
    let mut state = state(true);
    state.auth.throttle = Some(crate::access::AuthThrottle::new(crate::access::ThrottleConfig {
        max_failures: 3,
        window: Duration::from_secs(60),
        capacity: 100,
    }));
    state.client_ip_header = header.map(|h| h.parse().unwrap());
    state
}

fn from_peer(peer: &str, token: &str) -> Request<Body> {
    let mut request = Request::get("/api/v1/namespaces")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    request.extensions_mut().insert(axum::extract::ConnectInfo(
        peer.parse::<std::net::SocketAddr>().unwrap(),
    ));
    request
}

#[tokio::test(start_paused = true)]
async fn failed_authentications_are_throttled_per_address() {
    let state = throttled_state(None);
    let app = router(state.clone(), Duration::from_secs(5));
    let bad = "wrong-token-0123456789";
    for _ in 0..3 {
        let (status, _, _) = send(app.clone(), from_peer("192.0.2.1:4000", bad)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // The 4th try from that address, even with the right token, waits.
    let (status, headers, body) = send(app.clone(), from_peer("192.0.2.1:4001", TOKEN)).await;
    assert_problem(status, &headers, &body, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers[header::RETRY_AFTER], "60");
    // Another address is not locked out: its good token reaches the (unreachable) API server.
    let (status, _, _) = send(app.clone(), from_peer("192.0.2.2:4000", TOKEN)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::advance(Duration::from_secs(30)).await;
    let (_, headers, _) = send(app.clone(), from_peer("192.0.2.1:4000", bad)).await;
    assert_eq!(headers[header::RETRY_AFTER], "30");
    tokio::time::advance(Duration::from_secs(30)).await;
    let (status, _, _) = send(app.clone(), from_peer("192.0.2.1:4000", TOKEN)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let metrics = crate::telemetry::openmetrics(state.metrics.registry());
    let text = String::from_utf8(metrics.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(
        text.contains("namespace_provisioner_auth_throttled_total 2"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_trusted_header_names_the_client_and_no_address_means_no_throttle() {
    let app = router(throttled_state(Some("x-forwarded-for")), Duration::from_secs(5));
    let bad = |forwarded: &str| {
        Request::get("/api/v1/namespaces")
            .header(header::AUTHORIZATION, "Bearer wrong-token-0123456789")
            .header("x-forwarded-for", forwarded)
            .body(Body::empty())
            .unwrap()
    };
    for _ in 0..3 {
        // The client wrote the first entry; the proxy appended the last.
        send(app.clone(), bad("203.0.113.9, 198.51.100.1")).await;
    }
    let (status, _, _) = send(app.clone(), bad("203.0.113.10, 198.51.100.1")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, _, _) = send(app.clone(), bad("198.51.100.2")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Without the header (and no peer address) nothing is counted.
    let app = router(throttled_state(None), Duration::from_secs(5));
    for _ in 0..5 {
        let (status, _, _) = send(app.clone(), authed("GET", "/api/v1/namespaces", "")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let (status, _, _) = send(
            app.clone(),
            Request::get("/api/v1/namespaces")
                .header(header::AUTHORIZATION, "Bearer wrong-token-0123456789")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
}
