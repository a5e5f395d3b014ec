//! `FakeGuest`: the guest side of a `FakeFirecracker`'s vsock device, standing in for a
//! Boxcutter guest agent inside a real microVM (nothing boots here: no KVM). It speaks the
//! host side of Firecracker's vsock proxy exactly as the real device does, and the guest
//! agent's protocol (`boxcutter_types::guest`) as the real agent does:
//!
//! - **Guest → host:** once the guest booted (`InstanceStart`, not a snapshot load), it
//!   connects to the host's listener at `<uds_path>_1024` ([`AGENT_VSOCK_PORT`]), retrying
//!   while nobody listens, and sends one `ready` event.
//! - **Host → guest:** it accepts connections on `uds_path`, reads `CONNECT <port>\n`, and
//!   while the guest runs answers `OK <host port>\n` for [`CONTROL_VSOCK_PORT`], then reads
//!   one [`HostCommand`] line and answers `refreshed`. Any other port, a paused guest, or a
//!   malformed handshake gets the connection closed, as Firecracker does when no guest
//!   listener accepts.
//!
//! What happened is appended to the fake's request log as `VSOCK ...` lines.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use boxcutter_types::guest::{AgentEvent, HostCommand, AGENT_VSOCK_PORT, CONTROL_VSOCK_PORT};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::contract::{Contract, GuestWork};
use crate::firecracker::vsock::port_socket;

/// How long the booted guest keeps trying to reach the host's listener.
const ANNOUNCE_WITHIN: Duration = Duration::from_secs(30);

/// How long a host-initiated connection may take to say what it wants.
const HANDSHAKE_WITHIN: Duration = Duration::from_secs(5);

/// The first host-side port Firecracker hands out to host-initiated connections.
const FIRST_HOST_PORT: u32 = 1 << 30;

/// Runs the guest's side of the vsock device until the fake ends.
pub(super) async fn run(work: GuestWork, contract: Arc<Mutex<Contract>>) {
    let GuestWork {
        listener,
        uds_path,
        booted,
    } = work;
    if booted {
        let (contract, uds_path) = (contract.clone(), uds_path.clone());
        tokio::spawn(async move { announce(&uds_path, &contract).await });
    }
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| UnixListener::from_std(listener))
    {
        Ok(listener) => listener,
        Err(error) => {
            note(&contract, format!("VSOCK cannot listen: {error}"));
            return;
        }
    };
    let mut next_port = FIRST_HOST_PORT;
    while let Ok((stream, _)) = listener.accept().await {
        let contract = contract.clone();
        tokio::spawn(async move { host_connection(stream, next_port, &contract).await });
        next_port += 1;
    }
}

/// The guest agent's ready report, once the host listens.
async fn announce(uds_path: &Path, contract: &Arc<Mutex<Contract>>) {
    let target = port_socket(uds_path, AGENT_VSOCK_PORT);
    let deadline = tokio::time::Instant::now() + ANNOUNCE_WITHIN;
    loop {
        if let Ok(mut stream) = UnixStream::connect(&target).await {
            let line = event_line(&AgentEvent::Ready { uptime_ms: 1 });
            if stream.write_all(line.as_bytes()).await.is_ok() {
                note(contract, format!("VSOCK {AGENT_VSOCK_PORT} ready"));
                return;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            note(
                contract,
                format!("VSOCK {AGENT_VSOCK_PORT} nobody listened"),
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn host_connection(stream: UnixStream, host_port: u32, contract: &Arc<Mutex<Contract>>) {
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    let read = tokio::time::timeout(HANDSHAKE_WITHIN, stream.read_line(&mut line)).await;
    let port = match read {
        Ok(Ok(_)) => line
            .strip_prefix("CONNECT ")
            .and_then(|p| p.trim_end().parse::<u32>().ok()),
        _ => None,
    };
    let running = lock(contract).guest_running();
    let Some(port) = port.filter(|p| *p == CONTROL_VSOCK_PORT && running) else {
        note(contract, format!("VSOCK refused {:?}", line.trim_end()));
        return;
    };
    if stream
        .get_mut()
        .write_all(format!("OK {host_port}\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let mut command = String::new();
    if !matches!(
        tokio::time::timeout(HANDSHAKE_WITHIN, stream.read_line(&mut command)).await,
        Ok(Ok(n)) if n > 0
    ) {
        return;
    }
    let answer = match serde_json::from_str::<HostCommand>(&command) {
        Ok(HostCommand::Refresh(refresh)) => {
            note(contract, format!("VSOCK {port} refresh {}", refresh.name));
            AgentEvent::Refreshed { uptime_ms: 2 }
        }
        Err(error) => {
            note(contract, format!("VSOCK {port} bad command"));
            AgentEvent::Failed {
                step: "refresh".into(),
                error: error.to_string(),
            }
        }
    };
    let _ = stream
        .get_mut()
        .write_all(event_line(&answer).as_bytes())
        .await;
}

fn event_line(event: &AgentEvent) -> String {
    let mut line = serde_json::to_string(event).unwrap_or_default();
    line.push('\n');
    line
}

fn note(contract: &Arc<Mutex<Contract>>, line: String) {
    lock(contract).note(line);
}

fn lock(contract: &Arc<Mutex<Contract>>) -> std::sync::MutexGuard<'_, Contract> {
    contract.lock().unwrap_or_else(PoisonError::into_inner)
}
