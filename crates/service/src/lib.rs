//! What every Boxcutter daemon's HTTP service shares: streaming progress as
//! newline-delimited JSON, and waiting for the signal that stops a daemon.

use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

/// A response that streams each value of `lines` as one JSON line, as it arrives.
pub fn ndjson<T: Serialize + Send + 'static>(lines: UnboundedReceiver<T>) -> Response {
    let body = UnboundedReceiverStream::new(lines).map(|line| {
        let mut json = serde_json::to_vec(&line).unwrap_or_default();
        json.push(b'\n');
        Ok::<_, std::convert::Infallible>(json)
    });
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// Resolves when the process receives SIGTERM or SIGINT (never, if the handlers cannot
/// be installed).
pub async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_become_json_lines() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send(serde_json::json!({"phase": "disk"})).unwrap();
        tx.send(serde_json::json!({"done": true})).unwrap();
        drop(tx);
        let response = ndjson(rx);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/x-ndjson"
        );
        let bytes = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(&bytes[..], b"{\"phase\":\"disk\"}\n{\"done\":true}\n");
    }
}
