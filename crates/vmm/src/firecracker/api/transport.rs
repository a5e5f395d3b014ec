//! One HTTP/1.1 exchange with Firecracker's API server over its Unix socket: connect, send
//! one request, read the whole answer, hang up.
//!
//! A fresh connection per request keeps every call independent: there is no pooled
//! connection that could go stale when Firecracker restarts or exits, and a cancelled call
//! leaves nothing half-read behind. A connect on a Unix socket costs tens of microseconds,
//! noise next to the work behind any Firecracker call.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::ApiError;

/// Largest answer accepted; Firecracker's biggest (`GET /vm/config`) is a few KiB.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// One request on its way: what errors name.
#[derive(Debug, Clone)]
pub(super) struct Call {
    pub(super) socket: PathBuf,
    pub(super) method: Method,
    pub(super) path: String,
}

impl Call {
    pub(super) fn new(socket: &Path, method: Method, path: String) -> Self {
        Self {
            socket: socket.to_owned(),
            method,
            path,
        }
    }

    /// `METHOD /path`, as errors show it.
    pub(super) fn request(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    fn http_error(&self, source: hyper::Error) -> ApiError {
        if source.is_incomplete_message() || source.is_canceled() {
            return ApiError::Closed {
                socket: self.socket.clone(),
                request: self.request(),
            };
        }
        ApiError::Http {
            socket: self.socket.clone(),
            request: self.request(),
            source: Box::new(source),
        }
    }
}

/// Sends `body` (none for `GET`) and returns the status and body of the answer, waiting at
/// most `timeout` for the whole exchange.
pub(super) async fn exchange(
    call: &Call,
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), ApiError> {
    match tokio::time::timeout(timeout, round_trip(call, body)).await {
        Ok(answer) => answer,
        Err(_) => Err(ApiError::Timeout {
            socket: call.socket.clone(),
            request: call.request(),
            after: timeout,
        }),
    }
}

async fn round_trip(call: &Call, body: Option<Vec<u8>>) -> Result<(StatusCode, Bytes), ApiError> {
    let stream = UnixStream::connect(&call.socket)
        .await
        .map_err(|source| ApiError::Connect {
            socket: call.socket.clone(),
            request: call.request(),
            source,
        })?;
    let request = build_request(call, body)?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| call.http_error(e))?;

    let response = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| call.http_error(e))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|source| body_error(call, source))?;
        Ok((status, body.to_bytes()))
    };
    tokio::pin!(response);
    // The connection future drives the socket; it ends when either side hangs up. An answer
    // may be complete yet unread when it ends, so the response is awaited either way.
    tokio::select! {
        biased;
        answer = &mut response => answer,
        ended = connection => {
            ended.map_err(|e| call.http_error(e))?;
            response.await
        }
    }
}

fn build_request(
    call: &Call,
    body: Option<Vec<u8>>,
) -> Result<hyper::Request<Full<Bytes>>, ApiError> {
    let mut builder = hyper::Request::builder()
        .method(call.method.clone())
        .uri(call.path.as_str())
        .header(HOST, "localhost")
        .header(ACCEPT, "application/json");
    if body.is_some() {
        builder = builder.header(CONTENT_TYPE, "application/json");
    }
    let body = Full::new(Bytes::from(body.unwrap_or_default()));
    builder.body(body).map_err(|source| ApiError::Encode {
        request: call.request(),
        source: Box::new(source),
    })
}

fn body_error(call: &Call, source: Box<dyn std::error::Error + Send + Sync>) -> ApiError {
    match source.downcast::<hyper::Error>() {
        Ok(hyper_error) => call.http_error(*hyper_error),
        Err(source) => ApiError::Http {
            socket: call.socket.clone(),
            request: call.request(),
            source,
        },
    }
}
