//! The orchestrator's client of the node agent's API: every call carries a fresh
//! short-lived token for the `node` audience; create and copy return their progress
//! stream line by line.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use boxcutter_auth::ClusterSecret;
use boxcutter_types::api::{
    ApiError, CopyRequest, DescribeRequest, ErrorCode, NodeHealth, ProgressLine,
};
use boxcutter_types::{VmName, VmRecord, VmSpec};
use futures_util::{Stream, StreamExt};

/// The audience of node API tokens.
pub const NODE_AUDIENCE: &str = "node";

/// Lifetime of the tokens sent to nodes.
const TOKEN_TTL_SECS: u64 = 300;

/// Time allowed for a node to answer a call other than a progress stream. Stop waits for
/// the guest to power off (the node gives it 30 s before killing it).
const CALL_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a call to a node failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeCallError {
    /// The node could not be reached, or the connection broke.
    #[error("unreachable")]
    Unreachable(#[source] reqwest::Error),
    /// The node answered with an error.
    #[error(transparent)]
    Refused(ApiError),
    /// The node's answer made no sense.
    #[error("unexpected answer: {0}")]
    BadAnswer(String),
}

impl NodeCallError {
    /// The code to relay to the orchestrator's caller. A node refusing our token is the
    /// cluster's fault, not the caller's.
    pub fn code(&self) -> ErrorCode {
        match self {
            NodeCallError::Refused(e) if e.code != ErrorCode::Unauthorized => e.code,
            _ => ErrorCode::Internal,
        }
    }
}

/// A client for every node's API.
#[derive(Debug, Clone)]
pub struct NodeClient {
    http: reqwest::Client,
    secret: Arc<ClusterSecret>,
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// A create or copy stream being read.
pub struct ProgressStream {
    body: ByteStream,
    buffer: Vec<u8>,
}

impl ProgressStream {
    /// The next line; `None` when the stream ends.
    pub async fn next(&mut self) -> Result<Option<ProgressLine>, NodeCallError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line)
                    .map(Some)
                    .map_err(|e| NodeCallError::BadAnswer(format!("progress line: {e}")));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(NodeCallError::Unreachable(e)),
                None if self.buffer.is_empty() => return Ok(None),
                None => self.buffer.push(b'\n'),
            }
        }
    }
}

impl NodeClient {
    /// A client that signs its calls with `secret`.
    pub fn new(secret: Arc<ClusterSecret>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .unwrap_or_default();
        Self { http, secret }
    }

    fn request(&self, method: reqwest::Method, url: &str, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", url.trim_end_matches('/'));
        self.http
            .request(method, url)
            .bearer_auth(self.secret.issue(NODE_AUDIENCE, TOKEN_TTL_SECS))
    }

    /// `GET /v1/health`, answered within `timeout`.
    pub async fn health(&self, url: &str, timeout: Duration) -> Result<NodeHealth, NodeCallError> {
        let request = self
            .request(reqwest::Method::GET, url, "/v1/health")
            .timeout(timeout);
        json(send(request).await?).await
    }

    /// `GET /v1/vms`, answered within `timeout`.
    pub async fn list(&self, url: &str, timeout: Duration) -> Result<Vec<VmRecord>, NodeCallError> {
        let request = self
            .request(reqwest::Method::GET, url, "/v1/vms")
            .timeout(timeout);
        json(send(request).await?).await
    }

    /// `POST /v1/vms`: starts a create and returns its progress stream.
    pub async fn create(&self, url: &str, spec: &VmSpec) -> Result<ProgressStream, NodeCallError> {
        let request = self
            .request(reqwest::Method::POST, url, "/v1/vms")
            .json(spec);
        Ok(progress(send(request).await?))
    }

    /// `POST /v1/vms/{name}/copy`: starts a copy and returns its progress stream.
    pub async fn copy(
        &self,
        url: &str,
        source: &VmName,
        copy: &CopyRequest,
    ) -> Result<ProgressStream, NodeCallError> {
        let path = format!("/v1/vms/{source}/copy");
        let request = self.request(reqwest::Method::POST, url, &path).json(copy);
        Ok(progress(send(request).await?))
    }

    /// `POST /v1/vms/{name}/{operation}` (`start`, `stop`).
    pub async fn operate(
        &self,
        url: &str,
        name: &VmName,
        operation: &str,
    ) -> Result<VmRecord, NodeCallError> {
        let path = format!("/v1/vms/{name}/{operation}");
        let request = self
            .request(reqwest::Method::POST, url, &path)
            .timeout(CALL_TIMEOUT);
        json(send(request).await?).await
    }

    /// `PUT /v1/vms/{name}/description`.
    pub async fn describe(
        &self,
        url: &str,
        name: &VmName,
        description: &str,
    ) -> Result<VmRecord, NodeCallError> {
        let path = format!("/v1/vms/{name}/description");
        let body = DescribeRequest {
            description: description.into(),
        };
        let request = self.request(reqwest::Method::PUT, url, &path).json(&body);
        json(send(request.timeout(CALL_TIMEOUT)).await?).await
    }

    /// `DELETE /v1/vms/{name}`.
    pub async fn destroy(&self, url: &str, name: &VmName) -> Result<(), NodeCallError> {
        let path = format!("/v1/vms/{name}");
        let request = self.request(reqwest::Method::DELETE, url, &path);
        send(request.timeout(CALL_TIMEOUT)).await.map(drop)
    }

    /// `GET /v1/vms/{name}/logs?lines=N`.
    pub async fn logs(
        &self,
        url: &str,
        name: &VmName,
        lines: usize,
    ) -> Result<String, NodeCallError> {
        let path = format!("/v1/vms/{name}/logs?lines={lines}");
        let request = self.request(reqwest::Method::GET, url, &path);
        let response = send(request.timeout(CALL_TIMEOUT)).await?;
        response.text().await.map_err(NodeCallError::Unreachable)
    }
}

/// Sends `request`; an error status becomes [`NodeCallError::Refused`].
async fn send(request: reqwest::RequestBuilder) -> Result<reqwest::Response, NodeCallError> {
    let response = request.send().await.map_err(NodeCallError::Unreachable)?;
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body = response.bytes().await.map_err(NodeCallError::Unreachable)?;
    match serde_json::from_slice::<ApiError>(&body) {
        Ok(error) => Err(NodeCallError::Refused(error)),
        Err(_) => Err(NodeCallError::BadAnswer(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(200)
                .collect::<String>()
        ))),
    }
}

async fn json<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, NodeCallError> {
    let body = response.bytes().await.map_err(NodeCallError::Unreachable)?;
    serde_json::from_slice(&body).map_err(|e| NodeCallError::BadAnswer(e.to_string()))
}

fn progress(response: reqwest::Response) -> ProgressStream {
    ProgressStream {
        body: Box::pin(response.bytes_stream()),
        buffer: Vec::new(),
    }
}
