//! Extractors that turn requests into typed input, answering bad input with
//! the same problem+json shape as every other error (never axum's plain text).
//! Authentication is checked here (static tokens against [`crate::rules::auth`],
//! Kubernetes tokens through [`crate::access`], which may ask the API server).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, header};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;
use crate::access::AuthError;
use crate::rules::auth::Identity;

/// Who makes the request: a static-token tenant or a Kubernetes user. Handlers
/// pass the [`Identity`] to the provisioner unchanged.
#[derive(Debug, Clone)]
pub struct Caller(pub Identity);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if state.auth.is_open() {
            return Ok(Caller(Identity::Tenant(state.anonymous_tenant.clone())));
        }
        // Checked before the token, so a guessing client costs no TokenReview.
        let throttled = state
            .auth
            .throttle
            .as_ref()
            .zip(client_address(parts, state.client_ip_header.as_ref()));
        if let Some((throttle, address)) = throttled
            && let Err(wait) = throttle.check(address)
        {
            state.metrics.count_throttled();
            return Err(ApiError::auth_throttled(wait));
        }
        let failed = |error: ApiError| {
            if let Some((throttle, address)) = throttled {
                throttle.fail(address);
            }
            error
        };
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("send Authorization: Bearer <token>", false))?;
        let value = header.to_str().map_err(|_| {
            failed(ApiError::unauthorized(
                "the Authorization header is not valid text",
                true,
            ))
        })?;
        // RFC 9110: the scheme is case-insensitive (the original tool's CI sends `bearer`).
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => {
                return Err(failed(ApiError::unauthorized(
                    "the Authorization header must use the Bearer scheme",
                    true,
                )));
            }
        };
        match state.auth.authenticate(token).await {
            Ok(who) => Ok(Caller(who)),
            Err(AuthError::Rejected) => Err(failed(ApiError::unauthorized(
                "the bearer token is not valid (neither a tenant token nor an accepted Kubernetes token)",
                true,
            ))),
            Err(err) => Err(ApiError::from(err)),
        }
    }
}

/// The client's address: the last entry of `trusted_header` (the one the
/// trusted proxy in front appended) when configured, else the connection's peer.
fn client_address(parts: &Parts, trusted_header: Option<&HeaderName>) -> Option<IpAddr> {
    let Some(name) = trusted_header else {
        return parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip());
    };
    let value = parts.headers.get_all(name).iter().next_back()?.to_str().ok()?;
    let last = value.rsplit(',').next()?.trim();
    last.parse::<IpAddr>()
        .ok()
        .or_else(|| last.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// Query parameters, with unknown or malformed ones refused by name.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(v)| QueryParams(v))
            .map_err(|e| ApiError::bad_request(format!("bad query parameters: {}", e.body_text())))
    }
}

/// The `{name}` path segment.
pub struct NamePath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for NamePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(name)| NamePath(name))
            .map_err(|e| ApiError::bad_request(format!("bad path: {}", e.body_text())))
    }
}

/// A JSON body; an empty body means "all defaults".
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| {
                let v = v.trim().to_ascii_lowercase();
                v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
            });
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
            ApiError::new(
                e.status(),
                "bad_body",
                format!("cannot read the request body: {}", e.body_text()),
            )
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(T::default()));
        }
        if json_type == Some(false) {
            return Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            ));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON for this request: {e}")))
    }
}
