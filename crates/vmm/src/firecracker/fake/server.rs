//! Serving the contract over HTTP/1.1 on the API socket. Each connection is a task in one
//! `JoinSet`; each request runs the contract on the blocking pool (it touches files). When
//! the contract says the process ends, the loop returns the exit status and dropping the
//! set cuts every connection, as a dying process would.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::contract::{After, Contract, GuestWork, Reply, MAX_PAYLOAD_BYTES};

/// How long a process that exits after replying takes to go: long enough for the reply to
/// leave, like a guest that reboots right after the keystroke.
const EXIT_AFTER_REPLY: Duration = Duration::from_millis(50);

/// Serves until the contract ends the process; returns its exit status.
pub(super) async fn serve(
    listener: UnixListener,
    contract: Arc<Mutex<Contract>>,
    echo: bool,
) -> i32 {
    let (exit_tx, mut exit_rx) = mpsc::unbounded_channel::<i32>();
    let (guest_tx, mut guest_rx) = mpsc::unbounded_channel::<GuestWork>();
    let mut connections = JoinSet::new();
    // The simulated guest's tasks end with the process, as a guest does.
    let mut guest = JoinSet::new();
    loop {
        tokio::select! {
            status = exit_rx.recv() => return status.unwrap_or(0),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let (exit, guest) = (exit_tx.clone(), guest_tx.clone());
                    let exchange = Exchange { contract: contract.clone(), exit, guest, echo };
                    connections.spawn(serve_connection(stream, exchange));
                }
                Err(error) => tracing::warn!(%error, "fake-firecracker cannot accept"),
            },
            Some(work) = guest_rx.recv() => {
                guest.spawn(super::guest::run(work, contract.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            Some(_) = guest.join_next(), if !guest.is_empty() => {}
        }
    }
}

/// What each request needs.
#[derive(Clone)]
struct Exchange {
    contract: Arc<Mutex<Contract>>,
    exit: mpsc::UnboundedSender<i32>,
    guest: mpsc::UnboundedSender<GuestWork>,
    echo: bool,
}

async fn serve_connection(stream: UnixStream, exchange: Exchange) {
    let service = service_fn(move |request| answer(request, exchange.clone()));
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn answer(
    request: hyper::Request<Incoming>,
    exchange: Exchange,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let body = match Limited::new(request.into_body(), MAX_PAYLOAD_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => return Ok(too_large()),
    };

    let contract = exchange.contract.clone();
    let (log_method, log_path) = (method.clone(), path.clone());
    let answered = tokio::task::spawn_blocking(move || {
        let body = (!body.is_empty()).then_some(&body[..]);
        let mut contract = contract.lock().unwrap_or_else(PoisonError::into_inner);
        let reply = contract.handle(&method, &path, body);
        (reply, contract.take_guest_work())
    })
    .await;
    let reply = match answered {
        Ok((reply, work)) => {
            for work in work {
                let _ = exchange.guest.send(work);
            }
            reply
        }
        Err(_) => internal_error(),
    };
    if exchange.echo {
        eprintln!(
            "fake-firecracker: {log_method} {log_path} -> {}",
            reply.status
        );
    }

    match reply.after {
        After::Nothing => {}
        After::Exit(status) => {
            let exit = exchange.exit.clone();
            tokio::spawn(async move {
                tokio::time::sleep(EXIT_AFTER_REPLY).await;
                let _ = exit.send(status);
            });
        }
        After::Die(status) => {
            let _ = exchange.exit.send(status);
            std::future::pending::<()>().await;
        }
        After::Hang => std::future::pending::<()>().await,
    }
    Ok(into_response(reply))
}

fn into_response(reply: Reply) -> Response<Full<Bytes>> {
    let mut response = Response::builder().status(reply.status);
    if reply.body.is_some() {
        response = response.header(CONTENT_TYPE, "application/json");
    }
    let body = Full::new(Bytes::from(reply.body.unwrap_or_default()));
    response
        .body(body)
        .unwrap_or_else(|_| Response::new(Full::default()))
}

fn too_large() -> Response<Full<Bytes>> {
    let message = format!(
        "{{\"fault_message\":\"Request payload is larger than the limit of {MAX_PAYLOAD_BYTES} \
         bytes allowed by the server.\"}}"
    );
    let mut response = Response::new(Full::new(Bytes::from(message)));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
}

fn internal_error() -> Reply {
    Reply {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        body: Some(r#"{"fault_message":"fake-firecracker: the contract panicked"}"#.into()),
        after: After::Nothing,
    }
}
