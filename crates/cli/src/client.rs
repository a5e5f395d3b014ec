//! The orchestrator's HTTP API as typed calls.
//!
//! Every request carries a short-lived bearer token for the `orchestrator` audience,
//! signed with the cluster secret; user-scoped requests also name the acting user in
//! [`USER_HEADER`]. Non-2xx answers carry an [`ApiError`] body, whose message is shown
//! to the user as it is.

use std::time::Duration;

use boxcutter_auth::ClusterSecret;
use boxcutter_types::api::{ApiError, ErrorCode};
use boxcutter_types::orch::{
    AddUserRequest, ClusterStatus, CopyVmRequest, NewVmRequest, NodeInfo, OrchLine, RepoRequest,
    SshTarget, UserInfo, VmInfo, USER_HEADER,
};
use boxcutter_types::VmName;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use crate::config::CliConfig;
use crate::error::CliError;

/// The audience of orchestrator tokens.
const AUDIENCE: &str = "orchestrator";
/// Tokens are made per invocation; a minute covers any single request's start.
const TOKEN_TTL_SECS: u64 = 60;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Whole-request limit of ordinary calls.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Silence allowed in a `new`/`cp` stream, which may legitimately last minutes.
const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// A client of the orchestrator API.
#[derive(Debug, Clone)]
pub struct OrchClient {
    http: reqwest::Client,
    base: String,
    token: String,
    user: Option<String>,
    timeout: Duration,
}

impl OrchClient {
    /// A client for the orchestrator `config` names, with a token from its secret.
    pub fn new(config: &CliConfig) -> Result<Self, CliError> {
        Self::with_secret(&config.orchestrator_url, &config.secret()?)
    }

    /// A client for `base_url`, signing tokens with `secret`.
    pub fn with_secret(base_url: &str, secret: &ClusterSecret) -> Result<Self, CliError> {
        let base = base_url.trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(STREAM_IDLE_TIMEOUT)
            .build()
            .map_err(|source| CliError::Unreachable {
                url: base.clone(),
                source,
            })?;
        Ok(Self {
            http,
            base,
            token: secret.issue(AUDIENCE, TOKEN_TTL_SECS),
            user: None,
            timeout: REQUEST_TIMEOUT,
        })
    }

    /// The same client acting for `user` on user-scoped calls.
    pub fn acting_for(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The same client with another whole-request limit for ordinary calls.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The user whose key this is (`GET /v1/auth/key`), or `None` for an unknown key.
    pub async fn key_owner(&self, blob: &str) -> Result<Option<UserInfo>, CliError> {
        let request = self
            .request(Method::GET, "/v1/auth/key")
            .query(&[("key", blob)]);
        match self.send(request.timeout(self.timeout)).await {
            Ok(response) => json(response).await.map(Some),
            Err(CliError::Api(e)) if e.code == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /v1/vms`: creates a VM, reporting progress as it streams in.
    pub async fn create_vm(
        &self,
        request: &NewVmRequest,
        progress: impl FnMut(&str, &str, u64),
    ) -> Result<VmInfo, CliError> {
        let response = self
            .send(self.request(Method::POST, "/v1/vms").json(request))
            .await?;
        read_stream(response, progress).await
    }

    /// `POST /v1/vms/{name}/copy`: copies a VM, reporting progress.
    pub async fn copy_vm(
        &self,
        name: &VmName,
        request: &CopyVmRequest,
        progress: impl FnMut(&str, &str, u64),
    ) -> Result<VmInfo, CliError> {
        let path = format!("/v1/vms/{name}/copy");
        let response = self
            .send(self.request(Method::POST, &path).json(request))
            .await?;
        read_stream(response, progress).await
    }

    /// `GET /v1/vms`.
    pub async fn list_vms(&self) -> Result<Vec<VmInfo>, CliError> {
        self.call(Method::GET, "/v1/vms").await
    }

    /// `GET /v1/vms/{name}`.
    pub async fn vm(&self, name: &VmName) -> Result<VmInfo, CliError> {
        self.call(Method::GET, &format!("/v1/vms/{name}")).await
    }

    /// `DELETE /v1/vms/{name}`.
    pub async fn destroy_vm(&self, name: &VmName) -> Result<(), CliError> {
        let path = format!("/v1/vms/{name}");
        self.send(self.simple(Method::DELETE, &path)).await?;
        Ok(())
    }

    /// `POST /v1/vms/{name}/start` or `/stop`.
    pub async fn power(&self, name: &VmName, action: Power) -> Result<VmInfo, CliError> {
        let path = format!("/v1/vms/{name}/{}", action.as_str());
        self.call(Method::POST, &path).await
    }

    /// `GET /v1/vms/{name}/logs`: the console log's last lines.
    pub async fn logs(&self, name: &VmName, lines: Option<u32>) -> Result<String, CliError> {
        let mut request = self.simple(Method::GET, &format!("/v1/vms/{name}/logs"));
        if let Some(lines) = lines {
            request = request.query(&[("lines", lines)]);
        }
        let response = self.send(request).await?;
        response.text().await.map_err(|e| self.unreachable(e))
    }

    /// `PUT /v1/vms/{name}/description`.
    pub async fn set_description(&self, name: &VmName, text: &str) -> Result<VmInfo, CliError> {
        let path = format!("/v1/vms/{name}/description");
        let body = serde_json::json!({ "description": text });
        json(
            self.send(self.simple(Method::PUT, &path).json(&body))
                .await?,
        )
        .await
    }

    /// `GET /v1/vms/{name}/ssh`: where the VM's SSH server is.
    pub async fn ssh_target(&self, name: &VmName) -> Result<SshTarget, CliError> {
        self.call(Method::GET, &format!("/v1/vms/{name}/ssh")).await
    }

    /// `POST /v1/vms/{name}/repos`.
    pub async fn add_repo(&self, name: &VmName, repo: &str) -> Result<(), CliError> {
        let path = format!("/v1/vms/{name}/repos");
        let body = RepoRequest { repo: repo.into() };
        self.send(self.simple(Method::POST, &path).json(&body))
            .await?;
        Ok(())
    }

    /// `GET /v1/vms/{name}/repos`.
    pub async fn repos(&self, name: &VmName) -> Result<Vec<String>, CliError> {
        self.call(Method::GET, &format!("/v1/vms/{name}/repos"))
            .await
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<ClusterStatus, CliError> {
        self.call(Method::GET, "/v1/status").await
    }

    /// `GET /v1/nodes`.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, CliError> {
        self.call(Method::GET, "/v1/nodes").await
    }

    /// `POST /v1/users`.
    pub async fn add_user(&self, github: &str) -> Result<UserInfo, CliError> {
        let body = AddUserRequest {
            github: github.into(),
        };
        json(
            self.send(self.simple(Method::POST, "/v1/users").json(&body))
                .await?,
        )
        .await
    }

    async fn call<T: DeserializeOwned>(&self, method: Method, path: &str) -> Result<T, CliError> {
        json(self.send(self.simple(method, path)).await?).await
    }

    /// A request with the ordinary whole-request limit.
    fn simple(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path).timeout(self.timeout)
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        match &self.user {
            Some(user) => request.header(USER_HEADER, user),
            None => request,
        }
    }

    /// Sends `request`; a non-2xx answer becomes the orchestrator's [`ApiError`].
    async fn send(&self, request: RequestBuilder) -> Result<Response, CliError> {
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        Err(CliError::Api(
            serde_json::from_str::<ApiError>(&body).unwrap_or_else(|_| unparsed(status, &body)),
        ))
    }

    fn unreachable(&self, source: reqwest::Error) -> CliError {
        CliError::Unreachable {
            url: self.base.clone(),
            source,
        }
    }
}

/// `start` or `stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// Boot a stopped VM.
    Start,
    /// Power a running VM off.
    Stop,
}

impl Power {
    fn as_str(self) -> &'static str {
        match self {
            Power::Start => "start",
            Power::Stop => "stop",
        }
    }
}

/// An error answer without a JSON body (a proxy, a crash): keep what there is.
fn unparsed(status: StatusCode, body: &str) -> ApiError {
    let code = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorCode::Unauthorized,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        s if s.is_client_error() => ErrorCode::BadRequest,
        _ => ErrorCode::Internal,
    };
    let detail: String = body.trim().chars().take(200).collect();
    let message = if detail.is_empty() {
        format!("the orchestrator answered {status}")
    } else {
        format!("the orchestrator answered {status}: {detail}")
    };
    ApiError::new(code, message)
}

async fn json<T: DeserializeOwned>(response: Response) -> Result<T, CliError> {
    let bytes = response
        .bytes()
        .await
        .map_err(|e| CliError::Protocol(format!("reading the answer: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| CliError::Protocol(e.to_string()))
}

/// Reads an NDJSON stream of [`OrchLine`]s up to its `vm` or `error` line.
async fn read_stream(
    mut response: Response,
    mut progress: impl FnMut(&str, &str, u64),
) -> Result<VmInfo, CliError> {
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|e| CliError::Protocol(format!("the progress stream broke: {e}")))?;
        let ended = chunk.is_none();
        pending.extend(chunk.unwrap_or_default());
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if let Some(vm) = stream_line(&line, &mut progress)? {
                return Ok(vm);
            }
        }
        if ended {
            // A last line without its newline still counts.
            if let Some(vm) = stream_line(&pending, &mut progress)? {
                return Ok(vm);
            }
            return Err(CliError::Protocol(
                "the progress stream ended before the VM was ready".into(),
            ));
        }
    }
}

/// One stream line: progress is reported, the outcome returned.
fn stream_line(
    line: &[u8],
    progress: &mut impl FnMut(&str, &str, u64),
) -> Result<Option<VmInfo>, CliError> {
    if line.trim_ascii().is_empty() {
        return Ok(None);
    }
    let line: OrchLine =
        serde_json::from_slice(line).map_err(|e| CliError::Protocol(e.to_string()))?;
    match line {
        OrchLine::Progress {
            phase,
            message,
            elapsed_ms,
        } => {
            progress(&phase, &message, elapsed_ms);
            Ok(None)
        }
        OrchLine::Done { vm } => Ok(Some(*vm)),
        OrchLine::Failed { error } => Err(CliError::Api(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_lines_report_progress_and_end_with_the_outcome() {
        let mut seen = Vec::new();
        let mut record = |p: &str, m: &str, ms: u64| seen.push(format!("{p}|{m}|{ms}"));
        let progress = br#"{"phase":"scheduling","message":"node-1","elapsed_ms":2}"#;
        assert!(stream_line(progress, &mut record).unwrap().is_none());
        assert!(stream_line(b"  \n", &mut record).unwrap().is_none());
        let failed = br#"{"error":{"code":"no_capacity","message":"every node is full"}}"#;
        let err = stream_line(failed, &mut record).unwrap_err();
        assert_eq!(err.to_string(), "every node is full");
        assert!(matches!(
            stream_line(b"{\"what\":1}", &mut record),
            Err(CliError::Protocol(_))
        ));
        assert_eq!(seen, ["scheduling|node-1|2"]);
    }

    #[test]
    fn answers_without_a_json_body_keep_their_status() {
        let err = unparsed(StatusCode::BAD_GATEWAY, "<html>oops</html>");
        assert_eq!(err.code, ErrorCode::Internal);
        assert_eq!(
            err.message,
            "the orchestrator answered 502 Bad Gateway: <html>oops</html>"
        );
        assert_eq!(
            unparsed(StatusCode::UNAUTHORIZED, "").code,
            ErrorCode::Unauthorized
        );
    }
}
