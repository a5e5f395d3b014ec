//! The metadata service guests call at `http://169.254.169.254/`.
//!
//! The caller is identified by its source address alone. That is unforgeable because the
//! firewall drops any packet whose source is not the one address its TAP is pinned to, so
//! a guest asking for another VM's identity simply gets its own.
//!
//! | path            | answer                                           |
//! |-----------------|--------------------------------------------------|
//! | /v1/identity    | `{"name", "type", "mode", "node"}` of the caller |
//! | /v1/ssh-keys    | the caller's authorized keys, one per line       |

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use boxcutter_types::VmRecord;
use serde::Serialize;

use crate::agent::Node;

/// What `/v1/identity` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Identity {
    /// The VM's name.
    pub name: String,
    /// `qemu` or `firecracker`.
    #[serde(rename = "type")]
    pub vm_type: String,
    /// `normal` or `paranoid`.
    pub mode: String,
    /// The node it runs on.
    pub node: String,
}

/// The metadata router; serve it with `into_make_service_with_connect_info`.
pub fn router(node: Node) -> Router {
    Router::new()
        .route("/v1/identity", get(identity))
        .route("/v1/ssh-keys", get(ssh_keys))
        .with_state(node)
}

/// Serves the metadata service on `addr` until the process ends.
pub async fn serve(node: Node, addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = router(node).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).await
}

fn caller(node: &Node, peer: SocketAddr) -> Result<VmRecord, Box<Response>> {
    let IpAddr::V4(ip) = peer.ip() else {
        return Err(Box::new(
            (StatusCode::FORBIDDEN, "IPv4 only").into_response(),
        ));
    };
    node.list()
        .into_iter()
        .find(|r| r.spec.subnet.guest() == ip)
        .ok_or_else(|| Box::new((StatusCode::FORBIDDEN, "not a VM of this node").into_response()))
}

async fn identity(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    match caller(&node, peer) {
        Ok(record) => Json(Identity {
            name: record.spec.name.to_string(),
            vm_type: record.spec.vm_type.to_string(),
            mode: record.spec.mode.as_str().into(),
            node: node.context().node_id.clone(),
        })
        .into_response(),
        Err(response) => *response,
    }
}

async fn ssh_keys(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    match caller(&node, peer) {
        Ok(record) => {
            let mut text = record.spec.authorized_keys.join("\n");
            text.push('\n');
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
        }
        Err(response) => *response,
    }
}
