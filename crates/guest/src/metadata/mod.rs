//! Boot step 4c: the `dev` user's authorized keys from the node's metadata service.
//!
//! After the network is up, one `GET /v1/ssh-keys` to `169.254.169.254:80`; the node knows
//! the caller by its source address, so the request carries nothing but the path. The
//! answer is the node's current list of keys, which may be newer than the config drive's.
//!
//! Why a hand-written client: the agent has no async runtime (it starts faster without),
//! and one GET with `Connection: close` needs a status line, three headers and a body, not
//! an HTTP crate. It is bounded everywhere: one connection (retried once, quickly, only if
//! refused), a connect timeout, a deadline for the whole exchange, a head and a body cap.
//! It accepts only `200` with `text/plain`; the body may be framed by `Content-Length`,
//! chunked, or end with the connection.
//!
//! Layout: this file holds the client (connection, request, deadline); `response` parses
//! and bounds the answer.

mod response;

#[cfg(test)]
mod tests;

use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use response::parse_text_response;

/// Where the metadata service listens.
pub const METADATA_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)), 80);

/// The path answering the caller's authorized keys, one per line.
pub const SSH_KEYS_PATH: &str = "/v1/ssh-keys";

/// The largest body accepted, decoded; a few hundred keys.
pub const MAX_BODY: usize = 256 * 1024;

/// How long to wait before the one retry of a refused connection: long enough for a
/// listener being (re)bound, short enough to stay hidden behind sshd's start-up.
const REFUSED_RETRY_DELAY: Duration = Duration::from_millis(50);

/// How long a fetch may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For each connection attempt.
    pub connect: Duration,
    /// For the whole exchange: connecting, sending, reading the answer.
    pub total: Duration,
}

impl Timeouts {
    /// At boot: the node answers in milliseconds, and ready waits for the fetch.
    pub const BOOT: Timeouts = Timeouts {
        connect: Duration::from_millis(500),
        total: Duration::from_millis(1500),
    };
}

/// Fetching from the metadata service failed.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// No connection could be made.
    #[error("connect to {addr}")]
    Connect {
        /// The service's address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Sending the request or reading the answer failed.
    #[error("exchange with {addr}")]
    Io {
        /// The service's address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The whole answer did not arrive in time.
    #[error("no complete answer from {addr} within {limit_ms} ms")]
    Timeout {
        /// The service's address.
        addr: SocketAddr,
        /// The deadline for the whole exchange.
        limit_ms: u64,
    },
    /// The service answered something other than 200.
    #[error("answered {status} {reason}")]
    Status {
        /// The status code.
        status: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// The service answered something other than plain text.
    #[error("answered content type {found:?}, not text/plain")]
    ContentType {
        /// The `Content-Type`, empty if there was none.
        found: String,
    },
    /// The answer is not HTTP/1.x as understood here.
    #[error("malformed answer: {what}")]
    Malformed {
        /// What is wrong.
        what: &'static str,
    },
    /// A part of the answer exceeds its cap.
    #[error("{what} larger than {limit} bytes")]
    TooLarge {
        /// The part: head or body.
        what: &'static str,
        /// The cap.
        limit: usize,
    },
    /// The connection closed before the answer was complete.
    #[error("connection closed before the end of the answer")]
    Truncated,
    /// The body is not UTF-8.
    #[error("body is not UTF-8")]
    NotUtf8,
}

/// Asks the service at `addr` for the caller's authorized keys; one entry per line of the
/// answer, blank lines included (the key installer drops them).
pub fn fetch_ssh_keys(addr: SocketAddr, timeouts: Timeouts) -> Result<Vec<String>, MetadataError> {
    let body = get_text(addr, SSH_KEYS_PATH, timeouts)?;
    Ok(body.lines().map(str::to_string).collect())
}

/// One `GET path` to `addr`; the body of a `200 text/plain` answer.
fn get_text(addr: SocketAddr, path: &str, timeouts: Timeouts) -> Result<String, MetadataError> {
    let exchange = Exchange {
        addr,
        timeouts,
        deadline: Instant::now() + timeouts.total,
    };
    let mut stream = exchange.connect()?;

    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\n\
         User-Agent: boxcutter-guest\r\nConnection: close\r\n\r\n"
    );
    stream
        .set_write_timeout(Some(exchange.remaining()?))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|e| exchange.io_error(e))?;

    let mut answer = Vec::with_capacity(4096);
    loop {
        let eof = exchange.read_more(&mut stream, &mut answer)?;
        if let Some(body) = parse_text_response(&answer, eof)? {
            return Ok(body);
        }
    }
}

/// One request's connection and deadline.
struct Exchange {
    addr: SocketAddr,
    timeouts: Timeouts,
    deadline: Instant,
}

impl Exchange {
    fn connect(&self) -> Result<TcpStream, MetadataError> {
        let attempt = || {
            let limit = self.timeouts.connect.min(self.remaining()?);
            TcpStream::connect_timeout(&self.addr, limit).map_err(|source| MetadataError::Connect {
                addr: self.addr,
                source,
            })
        };
        match attempt() {
            Err(MetadataError::Connect { source, .. })
                if source.kind() == ErrorKind::ConnectionRefused =>
            {
                std::thread::sleep(REFUSED_RETRY_DELAY);
                attempt()
            }
            other => other,
        }
    }

    /// Appends what the next read brings to `answer`; returns whether the peer closed.
    fn read_more(
        &self,
        stream: &mut TcpStream,
        answer: &mut Vec<u8>,
    ) -> Result<bool, MetadataError> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let read = stream
                .set_read_timeout(Some(self.remaining()?))
                .and_then(|()| stream.read(&mut buf));
            match read {
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    return Ok(n == 0);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_error(e)),
            }
        }
    }

    fn remaining(&self) -> Result<Duration, MetadataError> {
        self.deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| self.timed_out())
    }

    fn io_error(&self, source: io::Error) -> MetadataError {
        match source.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => self.timed_out(),
            _ => MetadataError::Io {
                addr: self.addr,
                source,
            },
        }
    }

    fn timed_out(&self) -> MetadataError {
        MetadataError::Timeout {
            addr: self.addr,
            limit_ms: self.timeouts.total.as_millis() as u64,
        }
    }
}
