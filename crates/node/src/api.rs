//! The node agent's HTTP API. Every request must carry `Authorization: Bearer <token>`,
//! a token for the `node` audience signed with the cluster secret; anything else gets 401
//! before a handler runs. Errors are `{"code", "message"}` bodies with the status
//! `ErrorCode::http_status` gives. Create and copy answer with a stream of JSON lines.
//!
//! | method | path                          | does                                  |
//! |--------|-------------------------------|---------------------------------------|
//! | GET    | /v1/health                    | capacity, counts, supported types     |
//! | GET    | /v1/vms                       | list                                  |
//! | POST   | /v1/vms                       | create (`VmSpec`), streams progress   |
//! | GET    | /v1/vms/{name}                | get                                   |
//! | DELETE | /v1/vms/{name}                | destroy                               |
//! | POST   | /v1/vms/{name}/start          | start                                 |
//! | POST   | /v1/vms/{name}/stop           | stop                                  |
//! | POST   | /v1/vms/{name}/restart        | restart                               |
//! | POST   | /v1/vms/{name}/copy           | copy (`CopyRequest`), streams progress|
//! | PUT    | /v1/vms/{name}/description    | describe (`DescribeRequest`)          |
//! | GET    | /v1/vms/{name}/logs?lines=N   | console tail (text)                   |

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use boxcutter_auth::ClusterSecret;
use boxcutter_types::api::{ApiError, CopyRequest, DescribeRequest, ErrorCode};
use boxcutter_types::{VmName, VmSpec};
use serde::de::DeserializeOwned;

use crate::agent::error::NodeError;
use crate::agent::Node;

/// The audience of node API tokens.
pub const AUDIENCE: &str = "node";

#[derive(Clone)]
struct ApiState {
    node: Node,
    secret: Arc<ClusterSecret>,
}

/// The API's router.
pub fn router(node: Node, secret: ClusterSecret) -> Router {
    let state = ApiState {
        node,
        secret: Arc::new(secret),
    };
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/vms", get(list).post(create))
        .route("/v1/vms/{name}", get(get_vm).delete(destroy))
        .route("/v1/vms/{name}/start", post(start))
        .route("/v1/vms/{name}/stop", post(stop))
        .route("/v1/vms/{name}/restart", post(restart))
        .route("/v1/vms/{name}/copy", post(copy))
        .route("/v1/vms/{name}/description", put(describe))
        .route("/v1/vms/{name}/logs", get(logs))
        .fallback(|| async { error(ErrorCode::NotFound, "no such endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

async fn authenticate(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token.map(|t| state.secret.verify(t, AUDIENCE)) {
        Some(Ok(())) => next.run(request).await,
        Some(Err(why)) => error(ErrorCode::Unauthorized, format!("unauthorized: {why}")),
        None => error(ErrorCode::Unauthorized, "unauthorized: no bearer token"),
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(ApiError::new(code, message))).into_response()
}

fn node_error(err: NodeError) -> Response {
    error(err.code(), err.to_string())
}

/// An early answer to a request that cannot go on (boxed: a `Response` is large).
type Rejection = Box<Response>;

fn parse_name(name: &str) -> Result<VmName, Rejection> {
    VmName::new(name).map_err(|e| Box::new(error(ErrorCode::NotFound, format!("no such VM: {e}"))))
}

fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, Rejection> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            ErrorCode::BadRequest,
            format!("bad request body: {e}"),
        ))
    })
}

async fn health(State(s): State<ApiState>) -> Response {
    Json(s.node.health()).into_response()
}

async fn list(State(s): State<ApiState>) -> Response {
    Json(s.node.list()).into_response()
}

async fn create(State(s): State<ApiState>, body: Bytes) -> Response {
    let spec: VmSpec = match parse_body(&body) {
        Ok(spec) => spec,
        Err(response) => return *response,
    };
    match s.node.create(spec) {
        Ok(lines) => boxcutter_service::ndjson(lines),
        Err(e) => node_error(e),
    }
}

async fn copy(State(s): State<ApiState>, Path(name): Path<String>, body: Bytes) -> Response {
    let (name, request) = match (parse_name(&name), parse_body::<CopyRequest>(&body)) {
        (Ok(name), Ok(request)) => (name, request),
        (Err(response), _) | (_, Err(response)) => return *response,
    };
    match s.node.copy(&name, request) {
        Ok(lines) => boxcutter_service::ndjson(lines),
        Err(e) => node_error(e),
    }
}

async fn get_vm(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    match parse_name(&name).map(|n| s.node.get(&n)) {
        Ok(Ok(record)) => Json(record).into_response(),
        Ok(Err(e)) => node_error(e),
        Err(response) => *response,
    }
}

/// Runs a VM operation that answers with the VM's record.
async fn record_op<F, Fut>(name: &str, op: F) -> Response
where
    F: FnOnce(VmName) -> Fut,
    Fut: std::future::Future<Output = Result<boxcutter_types::VmRecord, NodeError>>,
{
    match parse_name(name) {
        Ok(name) => match op(name).await {
            Ok(record) => Json(record).into_response(),
            Err(e) => node_error(e),
        },
        Err(response) => *response,
    }
}

async fn start(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    record_op(&name, |n| async move { s.node.start_vm(&n).await }).await
}

async fn stop(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    record_op(&name, |n| async move { s.node.stop_vm(&n).await }).await
}

async fn restart(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    record_op(&name, |n| async move { s.node.restart_vm(&n).await }).await
}

async fn describe(State(s): State<ApiState>, Path(name): Path<String>, body: Bytes) -> Response {
    let request: DescribeRequest = match parse_body(&body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    record_op(&name, |n| async move {
        s.node.describe_vm(&n, request.description).await
    })
    .await
}

async fn destroy(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    let name = match parse_name(&name) {
        Ok(name) => name,
        Err(response) => return *response,
    };
    match s.node.destroy_vm(&name).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => node_error(e),
    }
}

#[derive(serde::Deserialize)]
struct LogsQuery {
    lines: Option<usize>,
}

async fn logs(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Response {
    let name = match parse_name(&name) {
        Ok(name) => name,
        Err(response) => return *response,
    };
    match s.node.logs(&name, q.lines.unwrap_or(100)) {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
        Err(e) => node_error(e),
    }
}
