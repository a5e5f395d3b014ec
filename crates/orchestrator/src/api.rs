//! The orchestrator's HTTP API. Every request must carry `Authorization: Bearer <token>`
//! for the `orchestrator` audience (401 before any handler otherwise). User-scoped
//! requests name the acting user in the `x-boxcutter-user` header; an unknown user is
//! 401. Errors are `{"code", "message"}` bodies whose status comes from
//! `ErrorCode::http_status`. Create and copy answer with NDJSON [`OrchLine`]s.
//!
//! | method | path                          | who           | does                          |
//! |--------|-------------------------------|---------------|-------------------------------|
//! | GET    | /v1/vms                       | user          | own VMs (admins: all)         |
//! | POST   | /v1/vms                       | user          | create (`NewVmRequest`), streams |
//! | GET    | /v1/vms/{name}                | user          | one VM                        |
//! | DELETE | /v1/vms/{name}                | user          | destroy                       |
//! | POST   | /v1/vms/{name}/start          | user          | start                         |
//! | POST   | /v1/vms/{name}/stop           | user          | stop                          |
//! | POST   | /v1/vms/{name}/copy           | user          | copy (`CopyVmRequest`), streams |
//! | GET    | /v1/vms/{name}/logs?lines=N   | user          | console tail (text)           |
//! | PUT    | /v1/vms/{name}/description    | user          | describe (`DescribeRequest`)  |
//! | GET    | /v1/vms/{name}/ssh            | user          | `SshTarget`                   |
//! | GET    | /v1/vms/{name}/repos          | user          | granted repositories          |
//! | POST   | /v1/vms/{name}/repos          | user          | grant (`RepoRequest`)         |
//! | GET    | /v1/status                    | any           | `ClusterStatus`               |
//! | GET    | /v1/nodes                     | any           | `NodeInfo`s                   |
//! | POST   | /v1/nodes                     | admin/cluster | register (`RegisterNode`)     |
//! | POST   | /v1/users                     | admin         | import (`AddUserRequest`)     |
//! | GET    | /v1/auth/key?key=BLOB         | any           | the key's owner (`UserInfo`)  |
//!
//! "any" is a user or the cluster itself (a token without a user header).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use boxcutter_types::api::{DescribeRequest, ErrorCode};
use boxcutter_types::orch::{
    AddUserRequest, CopyVmRequest, NewVmRequest, OrchLine, RegisterNode, RepoRequest, USER_HEADER,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::app::{App, Caller};
use crate::db::DbError;
use crate::error::OrchError;
use crate::{cluster, create, registry, vms};

/// The audience of orchestrator API tokens.
pub const AUDIENCE: &str = "orchestrator";

type AppState = State<Arc<App>>;

/// The API's router.
pub fn router(app: Arc<App>) -> Router {
    let vm_routes = Router::new()
        .route("/v1/vms", get(list).post(new_vm))
        .route("/v1/vms/{name}", get(get_vm).delete(destroy))
        .route("/v1/vms/{name}/start", post(start))
        .route("/v1/vms/{name}/stop", post(stop))
        .route("/v1/vms/{name}/copy", post(copy))
        .route("/v1/vms/{name}/logs", get(logs))
        .route("/v1/vms/{name}/description", put(describe))
        .route("/v1/vms/{name}/ssh", get(ssh))
        .route("/v1/vms/{name}/repos", get(repos).post(add_repo));
    vm_routes
        .route("/v1/status", get(status))
        .route("/v1/nodes", get(nodes).post(register))
        .route("/v1/users", post(add_user))
        .route("/v1/auth/key", get(key_owner))
        .fallback(|| async { error(&OrchError::NotFound("no such endpoint".into())) })
        .layer(middleware::from_fn_with_state(app.clone(), authenticate))
        .with_state(app)
}

async fn authenticate(State(app): AppState, request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token.map(|t| app.secret.verify(t, AUDIENCE)) {
        Some(Ok(())) => next.run(request).await,
        Some(Err(why)) => error(&OrchError::Unauthorized(why.to_string())),
        None => error(&OrchError::Unauthorized("no bearer token".into())),
    }
}

/// Who the request acts for: the user the header names (who must exist), or the cluster.
async fn caller(app: &App, headers: &HeaderMap) -> Result<Caller, OrchError> {
    let Some(value) = headers.get(USER_HEADER) else {
        return Ok(Caller::Cluster);
    };
    let name = value
        .to_str()
        .map_err(|_| OrchError::Unauthorized("unreadable user header".into()))?
        .to_string();
    let user = app
        .db
        .call(move |conn| registry::user(conn, &name).map_err(DbError::from))
        .await?;
    user.map(Caller::User)
        .ok_or_else(|| OrchError::Unauthorized("unknown user".into()))
}

async fn user(app: &App, headers: &HeaderMap) -> Result<registry::User, OrchError> {
    caller(app, headers).await?.user().cloned()
}

fn error(err: &OrchError) -> Response {
    let body = err.to_api();
    let status =
        StatusCode::from_u16(body.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if body.code == ErrorCode::Internal {
        tracing::error!(error = %body.message, "request failed");
    } else {
        tracing::debug!(error = %body.message, "request refused");
    }
    (status, Json(body)).into_response()
}

fn reply<T: Serialize>(result: Result<T, OrchError>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(e) => error(&e),
    }
}

fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, OrchError> {
    serde_json::from_slice(body)
        .map_err(|e| OrchError::BadRequest(format!("bad request body: {e}")))
}

fn parse_query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, OrchError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| OrchError::BadRequest(format!("bad query: {}", e.body_text())))
}

fn streamed(result: Result<UnboundedReceiver<OrchLine>, OrchError>) -> Response {
    match result {
        Ok(lines) => boxcutter_service::ndjson(lines),
        Err(e) => error(&e),
    }
}

async fn list(State(app): AppState, headers: HeaderMap) -> Response {
    reply(async { vms::list(&app, &user(&app, &headers).await?).await }.await)
}

async fn new_vm(State(app): AppState, headers: HeaderMap, body: Bytes) -> Response {
    streamed(
        async {
            let user = user(&app, &headers).await?;
            let request: NewVmRequest = parse_body(&body)?;
            create::create(&app, &user, request).await
        }
        .await,
    )
}

async fn copy(
    State(app): AppState,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    streamed(
        async {
            let user = user(&app, &headers).await?;
            let request: CopyVmRequest = parse_body(&body)?;
            create::copy(&app, &user, &name, request).await
        }
        .await,
    )
}

async fn get_vm(State(app): AppState, headers: HeaderMap, Path(name): Path<String>) -> Response {
    reply(async { vms::get(&app, &user(&app, &headers).await?, &name).await }.await)
}

async fn destroy(State(app): AppState, headers: HeaderMap, Path(name): Path<String>) -> Response {
    match async { vms::destroy(&app, &user(&app, &headers).await?, &name).await }.await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(&e),
    }
}

async fn start(State(app): AppState, headers: HeaderMap, Path(name): Path<String>) -> Response {
    reply(async { vms::power(&app, &user(&app, &headers).await?, &name, true).await }.await)
}

async fn stop(State(app): AppState, headers: HeaderMap, Path(name): Path<String>) -> Response {
    reply(async { vms::power(&app, &user(&app, &headers).await?, &name, false).await }.await)
}

#[derive(serde::Deserialize)]
struct LogsQuery {
    lines: Option<usize>,
}

async fn logs(
    State(app): AppState,
    headers: HeaderMap,
    Path(name): Path<String>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> Response {
    let result = async {
        let lines = parse_query(query)?.lines.unwrap_or(100);
        vms::logs(&app, &user(&app, &headers).await?, &name, lines).await
    };
    match result.await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
        Err(e) => error(&e),
    }
}

async fn describe(
    State(app): AppState,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    reply(
        async {
            let user = user(&app, &headers).await?;
            let request: DescribeRequest = parse_body(&body)?;
            vms::describe(&app, &user, &name, request.description).await
        }
        .await,
    )
}

async fn ssh(State(app): AppState, headers: HeaderMap, Path(name): Path<String>) -> Response {
    reply(async { vms::ssh_target(&app, &user(&app, &headers).await?, &name).await }.await)
}

async fn repos(State(app): AppState, headers: HeaderMap, Path(name): Path<String>) -> Response {
    reply(async { vms::repos(&app, &user(&app, &headers).await?, &name).await }.await)
}

async fn add_repo(
    State(app): AppState,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    reply(
        async {
            let user = user(&app, &headers).await?;
            let request: RepoRequest = parse_body(&body)?;
            vms::add_repo(&app, &user, &name, &request.repo).await
        }
        .await,
    )
}

async fn status(State(app): AppState, headers: HeaderMap) -> Response {
    reply(async { cluster::status(&app, &caller(&app, &headers).await?).await }.await)
}

async fn nodes(State(app): AppState, headers: HeaderMap) -> Response {
    reply(
        async {
            caller(&app, &headers).await?;
            cluster::nodes(&app).await
        }
        .await,
    )
}

async fn register(State(app): AppState, headers: HeaderMap, body: Bytes) -> Response {
    reply(
        async {
            let caller = caller(&app, &headers).await?;
            let request: RegisterNode = parse_body(&body)?;
            cluster::register(&app, &caller, request).await
        }
        .await,
    )
}

async fn add_user(State(app): AppState, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let caller = caller(&app, &headers).await?;
        let request: AddUserRequest = parse_body(&body)?;
        cluster::add_user(&app, &caller, &request.github).await
    }
    .await;
    match result {
        Ok(info) => (StatusCode::CREATED, Json(info)).into_response(),
        Err(e) => error(&e),
    }
}

#[derive(serde::Deserialize)]
struct KeyQuery {
    key: String,
}

async fn key_owner(
    State(app): AppState,
    headers: HeaderMap,
    query: Result<Query<KeyQuery>, QueryRejection>,
) -> Response {
    reply(
        async {
            caller(&app, &headers).await?;
            cluster::key_owner(&app, &parse_query(query)?.key).await
        }
        .await,
    )
}
