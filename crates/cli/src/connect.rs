//! `connect`: joins the caller's stdin and stdout to a VM's SSH port, so that
//! `ProxyCommand ssh boxcutter connect %h` reaches a VM with no tailnet at all.
//!
//! Two threads own one direction each: a helper copies stdin to the VM and then closes
//! the write half, so the VM sees end of input; the caller copies the VM to stdout until
//! the VM closes. The process ends when the VM's side does, whatever stdin is doing.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use boxcutter_types::orch::SshTarget;
use boxcutter_types::VmName;

use crate::error::CliError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `target` and pipes stdio to it until the VM closes the connection.
pub fn pipe(vm: &VmName, target: &SshTarget) -> Result<(), CliError> {
    let addr = SocketAddr::from((target.ip, target.port));
    let stream =
        TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|source| CliError::Io {
            what: format!("cannot reach {vm} at {addr}"),
            source,
        })?;
    pipe_stream(stream, io::stdin(), io::stdout()).map_err(|source| CliError::Io {
        what: format!("connection to {vm} failed"),
        source,
    })
}

/// Copies `input` to `stream` and `stream` to `output` until `stream`'s peer closes.
pub fn pipe_stream(
    stream: TcpStream,
    mut input: impl Read + Send + 'static,
    mut output: impl Write,
) -> io::Result<()> {
    // SSH is latency-bound and small-packeted.
    stream.set_nodelay(true)?;
    let mut upload = stream.try_clone()?;
    thread::spawn(move || {
        // Errors end this direction only; the VM's side decides when we are done.
        let _ = copy_flushing(&mut input, &mut upload);
        let _ = upload.shutdown(Shutdown::Write);
    });
    copy_flushing(&mut &stream, &mut output)
}

/// Copies until end of input, flushing every write: stdout is line-buffered, and SSH
/// traffic has no lines.
fn copy_flushing(from: &mut impl Read, to: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        to.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Echoes one connection back until the client closes its write half.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut reader = conn.try_clone().unwrap();
            io::copy(&mut reader, &mut conn).unwrap();
        });
        addr
    }

    #[test]
    fn pipes_both_ways_until_the_peer_closes() {
        let stream = TcpStream::connect(echo_server()).unwrap();
        let input = io::Cursor::new(b"SSH-2.0-test\r\nmore bytes without a newline".to_vec());
        let mut output = Vec::new();
        pipe_stream(stream, input, &mut output).unwrap();
        assert_eq!(output, b"SSH-2.0-test\r\nmore bytes without a newline");
    }

    #[test]
    fn an_unreachable_vm_is_a_clear_error() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let target = SshTarget {
            ip: "127.0.0.1".parse().unwrap(),
            port,
            host_key: String::new(),
        };
        let err = pipe(&VmName::new("gone").unwrap(), &target).unwrap_err();
        assert!(
            err.one_line()
                .starts_with(&format!("error: cannot reach gone at 127.0.0.1:{port}: ")),
            "{}",
            err.one_line()
        );
    }
}
