//! HTTP handlers: parse input, call the provisioner, shape the answer. No
//! Kubernetes calls of their own: they go through [`crate::provision`].

use std::collections::BTreeMap;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::audit::{self, Action, RequestId};
use super::error::{ApiError, Problem};
use super::extract::{Caller, JsonBody, NamePath, QueryParams};
use crate::provision::{CreateRequest, NamespaceInfo, NamespaceView, ProvisionError, Provisioned};
use crate::rules::auth::Identity;
use crate::rules::kubeconfig;
use crate::rules::params::{Expiry, ServerUrl, Ttl, is_dns_label};
use crate::rules::quota::resources::{ResourceList, Resources};

/// Query of the original tool's create call.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CreateQuery {
    /// Lifetime, e.g. `30s`, `5m`, `1h30m`; absent or `0` = the default; at most the maximum.
    ttl: Option<String>,
    /// API server URL to write into the kubeconfig (absolute http/https URL).
    server: Option<String>,
    /// Create a sub-namespace of this parent namespace (see `parent` of the JSON create).
    parent: Option<String>,
    /// Only with `parent`: the allocation asked from the parent's budget as comma-separated
    /// `name=quantity` pairs (`kubectl create quota --hard` style), URL-encoded:
    /// `quota=requests.cpu%3D1500m%2Ccount%2Fpods%3D4`. Same rules as `quota` of the JSON create
    /// (400 malformed or outside the budget, 409 does not fit).
    quota: Option<String>,
}

/// Body of create.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateRequestBody {
    /// Lifetime from now, e.g. `30s`, `5m`, `1h30m`; absent or `0` = the default; at most the maximum
    /// (and, under a parent, at most its `max-ttl` and never past its expiry).
    ttl: Option<String>,
    /// API server URL to write into the kubeconfig (absolute http/https URL).
    server: Option<String>,
    /// Create a sub-namespace of this parent namespace. The parent must carry the
    /// `controller.observatorium.io/allowed-tenants` annotation naming the caller's tenant.
    /// Refusals: 404 no such namespace, 409 being deleted, 403 not a parent or tenant not
    /// allowed, 400 too deep / ttl above the parent's `max-ttl` / past the parent's expiry,
    /// 409 the parent's `max-children` reached.
    parent: Option<String>,
    /// Only with `parent`: the allocation asked from the parent's budget (its
    /// HierarchicalResourceQuota), quota resource name → quantity (`{"requests.cpu": "1.5",
    /// "count/pods": 4}`). Budget resources left out get the budget's `defaultAllocation`, else 0;
    /// absent = the default allocation. A resource outside the budget is a 400; an allocation
    /// that does not fit is a 409 whose `shortfalls` name each resource, what was asked and what is left.
    /// Kubernetes writes `kube-root-ca.crt` and the `default` ServiceAccount into every child,
    /// possibly before its quota exists: ask `count/configmaps` and `count/serviceaccounts` with
    /// room for them (docs/quota.md).
    #[schema(value_type = Option<Object>)]
    quota: Option<BTreeMap<String, serde_json::Value>>,
    /// Kubernetes callers only: also bind your own user (not your groups) to
    /// the grant ClusterRole inside the new namespace, so your usual
    /// kubeconfig works with `-n <name>`. The returned kubeconfig still works.
    #[serde(default)]
    bind_caller: bool,
}

/// Body of extend.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LifetimeRequest {
    /// Lifetime from now, e.g. `30s`, `5m`, `1h30m`; absent or `0` = the default; at most the maximum.
    ttl: Option<String>,
    /// API server URL to write into the kubeconfig (absolute http/https URL).
    server: Option<String>,
}

/// A namespace with a fresh kubeconfig.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedKubeconfig {
    pub name: String,
    /// RFC 3339 expiry of the namespace.
    pub expires_at: String,
    /// RFC 3339 expiry of the token in the kubeconfig (at least 10 minutes, a Kubernetes floor;
    /// the token also stops working when the namespace is deleted).
    pub token_expires_at: String,
    /// The kubeconfig, YAML.
    pub kubeconfig: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NamespaceList {
    pub items: Vec<NamespaceInfo>,
}

fn parse_inputs(
    ttl: Option<String>,
    server: Option<String>,
) -> Result<(Option<Ttl>, Option<ServerUrl>), ApiError> {
    let ttl = ttl
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<Ttl>())
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let server = server
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<ServerUrl>())
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((ttl, server))
}

/// A parent name is a namespace name: a DNS label. Empty means none.
fn parse_parent(parent: Option<String>) -> Result<Option<String>, ApiError> {
    match parent.filter(|p| !p.is_empty()) {
        Some(p) if !is_dns_label(&p) => Err(ApiError::bad_request(format!(
            "parent {p:?} is not a namespace name: use lower-case letters, digits and '-', at most 63 characters"
        ))),
        other => Ok(other),
    }
}

/// `quota` of the body: quantities as JSON strings or numbers, checked exactly.
fn parse_quota(quota: Option<BTreeMap<String, serde_json::Value>>) -> Result<Option<Resources>, ApiError> {
    let Some(quota) = quota else {
        return Ok(None);
    };
    let mut list = ResourceList::new();
    for (name, value) in quota {
        let quantity = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            other => {
                return Err(ApiError::bad_request(format!(
                    "quota {name:?}: {other} is not a quantity; write a string such as \"1500m\" or \"2Gi\", or a number"
                )));
            }
        };
        list.insert(
            name,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity(quantity),
        );
    }
    Resources::parse(&list)
        .map(Some)
        .map_err(|e| ApiError::bad_request(format!("quota: {e}")))
}

fn kubeconfig_yaml(done: &Provisioned) -> Result<String, ApiError> {
    kubeconfig::to_yaml(&done.kubeconfig).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encode_kubeconfig",
            format!("encoding the kubeconfig failed: {e}"),
        )
    })
}

fn issued(done: &Provisioned) -> Result<IssuedKubeconfig, ApiError> {
    Ok(IssuedKubeconfig {
        name: done.name.clone(),
        expires_at: done.expiry.rfc3339(),
        token_expires_at: Expiry::from_unix(done.token_expires_at).rfc3339(),
        kubeconfig: kubeconfig_yaml(done)?,
    })
}

fn location(name: &str) -> HeaderValue {
    // Namespace names are DNS labels, always a valid header value.
    HeaderValue::from_str(&format!("/api/v1/namespaces/{name}")).unwrap_or(HeaderValue::from_static("/"))
}

/// The audit line of a create: the new namespace's name, or the failure.
fn audit_create(who: &Identity, request_id: &RequestId, done: &Result<Provisioned, ProvisionError>) {
    let name = done.as_ref().ok().map(|d| d.name.as_str());
    let pool = done.as_ref().ok().and_then(|d| d.pool);
    audit::record_pooled(Action::Create, who, name, request_id, done.as_ref().err(), pool);
}

/// Create a namespace (the original tool's call); answers with the kubeconfig.
#[utoipa::path(post, path = "/api/v1/namespace", params(CreateQuery), tag = "compat",
    responses(
        (status = 201, description = "Created; body is the kubeconfig (a YAML document)", content_type = "application/yaml", body = serde_json::Value,
         headers(("Location" = String, description = "the namespace's REST URL"))),
        (status = 400, description = "Bad ttl, server, parent or quota; too deep; ttl past the parent's max-ttl or expiry; quota without a parent or outside its budget", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A Kubernetes caller lacks the RBAC right to create (named in the detail); the parent is not a parent, or does not allow the caller's tenant", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The parent does not exist", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The parent is being deleted, is misconfigured or has its most children; the quota does not fit (`shortfalls`: resource, asked, left; `overAllocated` when the budget was lowered; `overruns` when the parent's own usage grew)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Tenant at its namespace limit", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "API server unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn compat_create(
    State(state): State<AppState>,
    Caller(who): Caller,
    request_id: RequestId,
    QueryParams(query): QueryParams<CreateQuery>,
) -> Result<Response, ApiError> {
    let (ttl, server) = parse_inputs(query.ttl, query.server)?;
    let parent = parse_parent(query.parent)?;
    let quota = query
        .quota
        .filter(|q| !q.is_empty())
        .map(|q| Resources::parse_pairs(&q))
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("quota: {e}")))?;
    let started = Instant::now();
    let request = CreateRequest {
        ttl,
        server,
        parent,
        quota,
        bind_caller: false,
    };
    let done = state.provisioner.create_with(&who, request).await;
    audit_create(&who, &request_id, &done);
    let done = done?;
    state.metrics.observe_create(started);
    let yaml = kubeconfig_yaml(&done)?;
    Ok((
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/yaml")),
            (header::LOCATION, location(&done.name)),
        ],
        yaml,
    )
        .into_response())
}

/// Delete one of the caller's namespaces (the original tool's call).
#[utoipa::path(delete, path = "/api/v1/namespace/{name}", tag = "compat",
    params(("name" = String, Path, description = "namespace name")),
    responses(
        (status = 200, description = "Deletion started"),
        (status = 401, description = "Missing or wrong token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not one of the caller's namespaces", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn compat_delete(
    State(state): State<AppState>,
    Caller(who): Caller,
    request_id: RequestId,
    NamePath(name): NamePath,
) -> Result<StatusCode, ApiError> {
    let deleted = state.provisioner.delete(&who, &name).await;
    audit::record(
        Action::Delete,
        &who,
        Some(&name),
        &request_id,
        deleted.as_ref().err(),
    );
    deleted?;
    Ok(StatusCode::OK)
}

/// Create a namespace; answers with its name, expiry and kubeconfig.
#[utoipa::path(post, path = "/api/v1/namespaces", tag = "namespaces",
    request_body(content = CreateRequestBody, description = "empty body = defaults"),
    responses(
        (status = 201, description = "Created", body = IssuedKubeconfig,
         headers(("Location" = String, description = "the namespace's URL"))),
        (status = 400, description = "Bad ttl, server, parent or JSON; too deep; ttl past the parent's max-ttl or expiry", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A Kubernetes caller lacks the RBAC right to create (named in the detail); the parent is not a parent, or does not allow the caller's tenant", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The parent does not exist", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The parent is being deleted, is misconfigured or has its most children; the quota does not fit (`shortfalls`: resource, asked, left; `overAllocated` when the budget was lowered; `overruns` when the parent's own usage grew)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Tenant at its namespace limit", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "API server unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Caller(who): Caller,
    request_id: RequestId,
    JsonBody(body): JsonBody<CreateRequestBody>,
) -> Result<Response, ApiError> {
    let (ttl, server) = parse_inputs(body.ttl, body.server)?;
    let parent = parse_parent(body.parent)?;
    let quota = parse_quota(body.quota)?;
    let started = Instant::now();
    let request = CreateRequest {
        ttl,
        server,
        parent,
        quota,
        bind_caller: body.bind_caller,
    };
    let done = state.provisioner.create_with(&who, request).await;
    audit_create(&who, &request_id, &done);
    let done = done?;
    state.metrics.observe_create(started);
    let location = location(&done.name);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(issued(&done)?),
    )
        .into_response())
}

/// Query of the list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only the caller's namespaces anywhere below this namespace (children, grandchildren, ...).
    parent: Option<String>,
}

/// The caller's namespaces (below `parent`, when given).
#[utoipa::path(get, path = "/api/v1/namespaces", tag = "namespaces", params(ListQuery),
    responses(
        (status = 200, description = "The caller's namespaces", body = NamespaceList),
        (status = 400, description = "Bad parent", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Caller(who): Caller,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<NamespaceList>, ApiError> {
    let items = match parse_parent(query.parent)? {
        Some(parent) => state.provisioner.list_under(&who, &parent).await?,
        None => state.provisioner.list(&who).await?,
    };
    Ok(Json(NamespaceList { items }))
}

/// One of the caller's namespaces, with its parent, children, copies, conflicts and allocation.
#[utoipa::path(get, path = "/api/v1/namespaces/{name}", tag = "namespaces",
    params(("name" = String, Path, description = "namespace name")),
    responses(
        (status = 200, description = "The namespace", body = NamespaceView),
        (status = 404, description = "Not one of the caller's namespaces", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn get_one(
    State(state): State<AppState>,
    Caller(who): Caller,
    NamePath(name): NamePath,
) -> Result<Json<NamespaceView>, ApiError> {
    Ok(Json(state.provisioner.describe(&who, &name).await?))
}

/// Delete one of the caller's namespaces.
#[utoipa::path(delete, path = "/api/v1/namespaces/{name}", tag = "namespaces",
    params(("name" = String, Path, description = "namespace name")),
    responses(
        (status = 202, description = "Deletion started", body = NamespaceInfo),
        (status = 404, description = "Not one of the caller's namespaces", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn delete_one(
    State(state): State<AppState>,
    Caller(who): Caller,
    request_id: RequestId,
    NamePath(name): NamePath,
) -> Result<(StatusCode, Json<NamespaceInfo>), ApiError> {
    let deleted = state.provisioner.delete(&who, &name).await;
    audit::record(
        Action::Delete,
        &who,
        Some(&name),
        &request_id,
        deleted.as_ref().err(),
    );
    Ok((StatusCode::ACCEPTED, Json(deleted?)))
}

/// Extend one of the caller's namespaces: `ttl` from now, within the maximum; fresh kubeconfig.
#[utoipa::path(patch, path = "/api/v1/namespaces/{name}", tag = "namespaces",
    params(("name" = String, Path, description = "namespace name")),
    request_body(content = LifetimeRequest, description = "empty body = the default ttl"),
    responses(
        (status = 200, description = "Extended", body = IssuedKubeconfig),
        (status = 400, description = "Bad ttl, server or JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not one of the caller's namespaces", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Being deleted", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn extend(
    State(state): State<AppState>,
    Caller(who): Caller,
    request_id: RequestId,
    NamePath(name): NamePath,
    JsonBody(body): JsonBody<LifetimeRequest>,
) -> Result<Json<IssuedKubeconfig>, ApiError> {
    let (ttl, server) = parse_inputs(body.ttl, body.server)?;
    let done = state.provisioner.extend(&who, &name, ttl, server).await;
    audit::record(
        Action::Extend,
        &who,
        Some(&name),
        &request_id,
        done.as_ref().err(),
    );
    let done = done?;
    Ok(Json(issued(&done)?))
}

/// Liveness: the process answers.
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the permission preflight passed and the Kubernetes API server answers.
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    if let Some(reason) = state.readiness.refused() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            reason,
        ));
    }
    state.provisioner.ping().await.map(|()| "ok").map_err(|e| {
        tracing::warn!(error = %crate::telemetry::chain(&e), "readiness check: API server unreachable");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the Kubernetes API server is not reachable",
        )
    })
}

/// Prometheus text exposition. The per-tenant gauge is counted (one LIST of
/// every managed namespace) only when `--count-live-namespaces` asks for it:
/// a stateless handler should not cost O(namespaces) per scrape by default.
pub async fn metrics(State(state): State<AppState>) -> Response {
    if state.count_live_namespaces {
        match state.provisioner.list_all_tenants().await {
            Ok(tenants) => state.metrics.set_live(tenants.iter().map(String::as_str)),
            Err(e) => {
                tracing::warn!(error = %crate::telemetry::chain(&e), "metrics: counting live namespaces failed")
            }
        }
    }
    crate::telemetry::openmetrics(state.metrics.registry())
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /openapi.json")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see /openapi.json",
    )
}

/// Hostile JSON bodies (issue 15): never a panic, and a body of well-formed
/// fields means what its fields mean on their own.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_body_decodes_or_is_refused(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            if let Ok(body) = serde_json::from_slice::<CreateRequestBody>(&bytes) {
                let _ = parse_inputs(body.ttl, body.server);
                let _ = parse_parent(body.parent);
                let _ = parse_quota(body.quota);
            }
            if let Ok(body) = serde_json::from_slice::<LifetimeRequest>(&bytes) {
                let _ = parse_inputs(body.ttl, body.server);
            }
        }

        #[test]
        fn fields_mean_the_same_in_a_body(
            ttl in proptest::option::of("\\PC{0,12}"),
            server in proptest::option::of("(https?://)?[a-z.:0-9/]{0,20}"),
            parent in proptest::option::of("[a-z0-9-]{0,12}"),
            quota in proptest::option::of(proptest::collection::btree_map("[a-z./]{1,16}", "[0-9.]{0,6}[a-zA-Z]{0,2}", 0..3)),
        ) {
            let body = serde_json::json!({"ttl": ttl, "server": server, "parent": parent, "quota": quota});
            let decoded: CreateRequestBody = serde_json::from_value(body).unwrap();
            let each = parse_inputs(ttl.clone(), server.clone());
            let whole = parse_inputs(decoded.ttl, decoded.server);
            prop_assert_eq!(each.is_ok(), whole.is_ok());
            if let (Ok(each), Ok(whole)) = (each, whole) {
                prop_assert_eq!(each, whole);
            }
            prop_assert_eq!(parse_parent(parent.clone()).ok(), parse_parent(decoded.parent).ok());
            let json_quota = quota.map(|q| q.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect());
            prop_assert_eq!(parse_quota(json_quota).is_ok(), parse_quota(decoded.quota).is_ok());
            if let Err(e) = parse_inputs(ttl, server) {
                prop_assert!(!e.detail().is_empty());
            }
        }
    }
}
