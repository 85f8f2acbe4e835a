//! The web page at `/ui/` (`ui/` in the repository, compiled into the binary):
//! plain HTML, CSS and JavaScript that call the public API with the bearer
//! token the user signs in with. Owns the routes, content types, caching and
//! security headers of those files; no I/O, no state.
//!
//! The page needs no authentication of its own: it is the same for everyone,
//! and every API call it makes carries the user's token.

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// Only our own files, no inline script or style, no framing, nothing sent
/// anywhere but this origin; with Trusted Types required and no policy
/// allowed, a string can never become script even through a DOM sink.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'; require-trusted-types-for 'script'; \
     trusted-types 'none'";

/// Revalidate every time: the files are small and change with the binary, and
/// their ETags make an unchanged file a 304 without a body.
const CACHE_CONTROL: &str = "no-cache";

/// Headers on every answer under `/ui`, the redirect included.
const SECURITY_HEADERS: [(HeaderName, &str); 6] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    ),
    (
        HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    ),
];

/// One compiled-in file.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    /// Strong validator: a quoted prefix of the SHA-256 of the body.
    etag: String,
}

impl Asset {
    fn new(body: &'static [u8], content_type: &'static str) -> Asset {
        let digest = Sha256::digest(body);
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        Asset {
            body,
            content_type,
            etag: format!("\"{hex}\""),
        }
    }
}

static INDEX: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_bytes!("../../ui/index.html"), "text/html; charset=utf-8"));
static SCRIPT: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_bytes!("../../ui/app.js"),
        "text/javascript; charset=utf-8",
    )
});
static STYLE: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_bytes!("../../ui/app.css"), "text/css; charset=utf-8"));

/// The page's routes, or none when it is turned off (`--no-ui`): then `/ui/`
/// is the API's ordinary 404. Other methods get the API's 405.
pub fn routes<S>(enabled: bool) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    if !enabled {
        return Router::new();
    }
    Router::new()
        .route("/ui", get(redirect))
        .route("/ui/", get(|headers: HeaderMap| serve(&INDEX, headers)))
        .route("/ui/index.html", get(|headers: HeaderMap| serve(&INDEX, headers)))
        .route("/ui/app.js", get(|headers: HeaderMap| serve(&SCRIPT, headers)))
        .route("/ui/app.css", get(|headers: HeaderMap| serve(&STYLE, headers)))
}

/// `/ui` -> `/ui/`, so the page's relative URLs resolve under it. The target
/// is relative (`ui/` from `/ui` is `/ui/`) so it stays right behind a proxy
/// or a function URL that serves the API under a path prefix.
async fn redirect() -> Response {
    with_security_headers((StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, "ui/")]).into_response())
}

async fn serve(asset: &'static Asset, headers: HeaderMap) -> Response {
    let unchanged = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == asset.etag || tag == "*");
    let response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type))],
            asset.body,
        )
            .into_response()
    };
    let mut response = with_security_headers(response);
    let out = response.headers_mut();
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL));
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        out.insert(header::ETAG, etag);
    }
    response
}

fn with_security_headers(mut response: Response) -> Response {
    let out = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        out.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Method, Request};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn get_with(path: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::builder().method(Method::GET).uri(path);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        routes::<()>(true)
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn header_of<'a>(response: &'a Response, name: &HeaderName) -> &'a str {
        response
            .headers()
            .get(name)
            .unwrap_or_else(|| panic!("no {name}"))
            .to_str()
            .unwrap()
    }

    fn assert_security_headers(response: &Response) {
        let csp = header_of(response, &header::CONTENT_SECURITY_POLICY);
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "img-src 'self' data:",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{directive} missing from {csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(header_of(response, &header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        assert_eq!(header_of(response, &header::REFERRER_POLICY), "no-referrer");
        assert_eq!(header_of(response, &header::X_FRAME_OPTIONS), "DENY");
    }

    #[tokio::test]
    async fn files_have_their_content_types_and_headers() {
        for (path, content_type, starts) in [
            ("/ui/", "text/html; charset=utf-8", "<!doctype html>"),
            ("/ui/index.html", "text/html; charset=utf-8", "<!doctype html>"),
            (
                "/ui/app.js",
                "text/javascript; charset=utf-8",
                "// The provisioner's web page",
            ),
            (
                "/ui/app.css",
                "text/css; charset=utf-8",
                "/* The provisioner's web page",
            ),
        ] {
            let response = get_with(path, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(
                header_of(&response, &header::CONTENT_TYPE),
                content_type,
                "{path}"
            );
            assert_eq!(header_of(&response, &header::CACHE_CONTROL), "no-cache", "{path}");
            assert!(header_of(&response, &header::ETAG).starts_with('"'), "{path}");
            assert_security_headers(&response);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert!(String::from_utf8_lossy(&body).starts_with(starts), "{path}");
        }
    }

    #[tokio::test]
    async fn an_unchanged_file_is_not_sent_again() {
        let first = get_with("/ui/app.js", None).await;
        let etag = header_of(&first, &header::ETAG).to_owned();
        for tag in [etag.clone(), format!("W/{etag}"), format!("\"other\", {etag}")] {
            let again = get_with("/ui/app.js", Some(&tag)).await;
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{tag}");
            assert_eq!(header_of(&again, &header::ETAG), etag);
            assert_security_headers(&again);
            let body = again.into_body().collect().await.unwrap().to_bytes();
            assert!(body.is_empty());
        }
        let changed = get_with("/ui/app.js", Some("\"stale\"")).await;
        assert_eq!(changed.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn ui_without_slash_redirects_to_the_page() {
        let response = get_with("/ui", None).await;
        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(header_of(&response, &header::LOCATION), "ui/");
        assert_security_headers(&response);
        let resolved = url::Url::parse("http://provisioner.example/ui")
            .unwrap()
            .join("ui/")
            .unwrap();
        assert_eq!(resolved.path(), "/ui/");
    }

    #[tokio::test]
    async fn turned_off_serves_nothing() {
        for path in ["/ui", "/ui/", "/ui/app.js"] {
            let response = routes::<()>(false)
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }

    /// A state whose API server is never reached: the page needs none.
    fn state(ui: bool) -> crate::api::AppState {
        let service = tower::service_fn(|_: Request<kube::client::Body>| async {
            Err::<axum::http::Response<kube::client::Body>, _>(std::io::Error::other("no API server"))
        });
        let provisioner = crate::provision::Provisioner::new(
            kube::Client::new(service, "default"),
            crate::provision::ProvisionerConfig {
                set: crate::rules::desired::SetConfig {
                    selector: crate::rules::labels::DEFAULT_SELECTOR.parse().unwrap(),
                    cluster_role: "grant".into(),
                    role_rules: None,
                },
                ttl: crate::rules::params::TtlPolicy::new(std::time::Duration::from_secs(3600), None)
                    .unwrap(),
                prefix: "np".parse().unwrap(),
                server: "https://kube.example:6443".parse().unwrap(),
                ca_pem: None,
                max_namespaces_per_tenant: None,
                page_size: 500,
                max_depth: 3,
                propagation: Default::default(),
            },
        );
        let mut state = crate::api::AppState::new(provisioner, None).unwrap();
        state.ui = ui;
        state
    }

    /// Mounted on the public router and on the function (Lambda) router, without
    /// a token; other methods are the API's 405; `--no-ui` leaves the API's 404.
    #[tokio::test]
    async fn served_by_the_public_and_function_routers() {
        let timeout = std::time::Duration::from_secs(5);
        for app in [
            crate::api::router(state(true), timeout),
            crate::api::function_router(state(true), timeout),
        ] {
            let page = app
                .clone()
                .oneshot(Request::get("/ui/").body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(page.status(), StatusCode::OK);
            assert_security_headers(&page);
            let post = app
                .oneshot(Request::post("/ui/").body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(
                header_of(&post, &header::CONTENT_TYPE),
                "application/problem+json"
            );
        }
        let off = crate::api::router(state(false), timeout)
            .oneshot(Request::get("/ui/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(off.status(), StatusCode::NOT_FOUND);
        assert_eq!(header_of(&off, &header::CONTENT_TYPE), "application/problem+json");
    }

    /// The page keeps to its CSP: no inline script or style, no third-party
    /// URL, and the token never goes to localStorage or a cookie.
    #[test]
    fn the_page_keeps_to_its_policy() {
        let html = String::from_utf8_lossy(INDEX.body);
        let script = String::from_utf8_lossy(SCRIPT.body);
        let style = String::from_utf8_lossy(STYLE.body);
        assert_eq!(html.matches("<script").count(), 1);
        assert!(html.contains("<script src=\"app.js\" defer></script>"));
        assert!(!html.contains("<style"), "inline style element");
        assert!(!html.contains(" style="), "inline style attribute");
        let handler = regex::Regex::new(r"\son[a-z]+\s*=").unwrap();
        assert!(!handler.is_match(&html), "inline event handler");
        for text in [&html, &script, &style] {
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "absolute URL"
            );
        }
        assert!(!script.contains("localStorage"));
        assert!(!script.contains("document.cookie"));
        assert!(!script.contains("innerHTML"));
        assert!(!script.contains("eval("));
    }
}
