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

use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Where the metadata service listens.
pub const METADATA_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)), 80);

/// The path answering the caller's authorized keys, one per line.
pub const SSH_KEYS_PATH: &str = "/v1/ssh-keys";

/// The largest body accepted, decoded; a few hundred keys.
pub const MAX_BODY: usize = 256 * 1024;

/// The largest status line and headers accepted.
const MAX_HEAD: usize = 8 * 1024;

/// The largest chunked body accepted before decoding: room for framing around `MAX_BODY`.
const MAX_CHUNKED: usize = 2 * MAX_BODY;

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

/// The body of `answer` if it is a complete `200 text/plain` response; `None` if more is
/// needed. `eof`: the peer has closed, nothing more will come. A non-200 status is an
/// error as soon as the head is in: its body is not read.
fn parse_text_response(answer: &[u8], eof: bool) -> Result<Option<String>, MetadataError> {
    let Some(head) = parse_head(answer, eof)? else {
        return Ok(None);
    };
    if head.status != 200 {
        return Err(MetadataError::Status {
            status: head.status,
            reason: head.reason,
        });
    }
    if !is_plain_text(head.content_type.as_deref()) {
        let found = head.content_type.unwrap_or_default();
        return Err(MetadataError::ContentType { found });
    }
    let Some(body) = head.framing.body(&answer[head.len..], eof)? else {
        return Ok(None);
    };
    String::from_utf8(body)
        .map(Some)
        .map_err(|_| MetadataError::NotUtf8)
}

/// A response's status line and the headers acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    status: u16,
    reason: String,
    content_type: Option<String>,
    framing: Framing,
    /// Bytes up to and including the blank line.
    len: usize,
}

/// How the body's end is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    /// The body ends when the connection does.
    Close,
}

/// The head of `answer` once its blank line has arrived.
fn parse_head(answer: &[u8], eof: bool) -> Result<Option<Head>, MetadataError> {
    let searched = &answer[..answer.len().min(MAX_HEAD)];
    let Some(end) = find(searched, b"\r\n\r\n") else {
        if answer.len() >= MAX_HEAD {
            return Err(MetadataError::TooLarge {
                what: "head",
                limit: MAX_HEAD,
            });
        }
        return if eof {
            Err(MetadataError::Truncated)
        } else {
            Ok(None)
        };
    };
    let text = std::str::from_utf8(&answer[..end]).map_err(|_| malformed("head is not text"))?;
    let mut lines = text.split("\r\n");
    let (status, reason) = parse_status_line(lines.next().unwrap_or_default())?;

    let mut head = Head {
        status,
        reason,
        content_type: None,
        framing: Framing::Close,
        len: end + 4,
    };
    let mut chunked = false;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .filter(|(name, _)| !name.is_empty() && !name.contains([' ', '\t']))
            .ok_or(malformed("bad header line"))?;
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-type" => head.content_type = Some(value.to_string()),
            "content-length" => head.framing = Framing::Length(parse_length(value, head.framing)?),
            "transfer-encoding" => chunked = parse_transfer_encoding(value)?,
            "content-encoding" if !value.eq_ignore_ascii_case("identity") => {
                return Err(malformed("compressed body"));
            }
            _ => {}
        }
    }
    // A transfer coding overrides any length (RFC 9112, section 6.3).
    if chunked {
        head.framing = Framing::Chunked;
    }
    Ok(Some(head))
}

/// `HTTP/1.x SSS reason`; the reason may be empty.
fn parse_status_line(line: &str) -> Result<(u16, String), MetadataError> {
    let (version, rest) = line.split_once(' ').ok_or(malformed("bad status line"))?;
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return Err(malformed("not HTTP/1.x"));
    }
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("bad status code"));
    }
    let status = code.parse().map_err(|_| malformed("bad status code"))?;
    Ok((status, reason.trim().to_string()))
}

/// A `Content-Length` value; a second one must agree with the first.
fn parse_length(value: &str, framing: Framing) -> Result<usize, MetadataError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("bad content-length"));
    }
    // Too many digits for usize is too large for us anyway.
    let length = value.parse().unwrap_or(usize::MAX);
    match framing {
        Framing::Length(earlier) if earlier != length => Err(malformed("two content-lengths")),
        _ => Ok(length),
    }
}

/// Whether the body is chunked; any other transfer coding is refused.
fn parse_transfer_encoding(value: &str) -> Result<bool, MetadataError> {
    match value.to_ascii_lowercase().as_str() {
        "chunked" => Ok(true),
        "identity" => Ok(false),
        _ => Err(malformed("unsupported transfer-encoding")),
    }
}

fn is_plain_text(content_type: Option<&str>) -> bool {
    let Some(value) = content_type else {
        return false;
    };
    let media_type = value.split(';').next().unwrap_or_default().trim();
    media_type.eq_ignore_ascii_case("text/plain")
}

impl Framing {
    /// The decoded body if `raw`, everything after the head, holds all of it.
    fn body(self, raw: &[u8], eof: bool) -> Result<Option<Vec<u8>>, MetadataError> {
        let too_large = |limit| MetadataError::TooLarge {
            what: "body",
            limit,
        };
        match self {
            Framing::Length(length) if length > MAX_BODY => Err(too_large(MAX_BODY)),
            Framing::Length(length) if raw.len() >= length => Ok(Some(raw[..length].to_vec())),
            Framing::Close if raw.len() > MAX_BODY => Err(too_large(MAX_BODY)),
            Framing::Close if eof => Ok(Some(raw.to_vec())),
            Framing::Chunked if raw.len() > MAX_CHUNKED => Err(too_large(MAX_CHUNKED)),
            // A complete chunked body ends with a line break: decode only then.
            Framing::Chunked if eof || raw.ends_with(b"\r\n") => match decode_chunked(raw)? {
                Some(body) => Ok(Some(body)),
                None if eof => Err(MetadataError::Truncated),
                None => Ok(None),
            },
            _ if eof => Err(MetadataError::Truncated),
            _ => Ok(None),
        }
    }
}

/// Decodes a chunked body (RFC 9112, section 7.1); `None` if it is not complete yet.
/// Chunk extensions and trailers are skipped.
fn decode_chunked(mut raw: &[u8]) -> Result<Option<Vec<u8>>, MetadataError> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(raw, b"\r\n") else {
            return Ok(None);
        };
        let size = parse_chunk_size(&raw[..line_end])?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            // Trailer lines, if any, then a blank line.
            let complete = raw.starts_with(b"\r\n") || find(raw, b"\r\n\r\n").is_some();
            return Ok(complete.then_some(body));
        }
        if body.len() + size > MAX_BODY {
            return Err(MetadataError::TooLarge {
                what: "body",
                limit: MAX_BODY,
            });
        }
        if raw.len() < size + 2 {
            return Ok(None);
        }
        if &raw[size..size + 2] != b"\r\n" {
            return Err(malformed("chunk longer than its size"));
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// A chunk-size line: hex digits, then an optional `;extension`.
fn parse_chunk_size(line: &[u8]) -> Result<usize, MetadataError> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    let digits = digits.trim_ascii();
    // Eight hex digits are 4 GiB, far past the cap; more could overflow.
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(malformed("bad chunk size"));
    }
    let digits = std::str::from_utf8(digits).map_err(|_| malformed("bad chunk size"))?;
    usize::from_str_radix(digits, 16).map_err(|_| malformed("bad chunk size"))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn malformed(what: &'static str) -> MetadataError {
    MetadataError::Malformed { what }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK_HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\n";

    fn parse(answer: &str, eof: bool) -> Result<Option<String>, MetadataError> {
        parse_text_response(answer.as_bytes(), eof)
    }

    #[test]
    fn content_length_body_is_complete_without_waiting_for_close() {
        let answer = format!("{OK_HEAD}content-length: 6\r\n\r\nkey a\nEXTRA");
        assert_eq!(parse(&answer, false).unwrap().as_deref(), Some("key a\n"));

        let partial = format!("{OK_HEAD}content-length: 6\r\n\r\nkey");
        assert_eq!(parse(&partial, false).unwrap(), None);
        assert!(matches!(
            parse(&partial, true),
            Err(MetadataError::Truncated)
        ));
    }

    #[test]
    fn chunked_body_is_decoded_with_extensions_and_trailers() {
        let head = format!("{OK_HEAD}Transfer-Encoding: chunked\r\n\r\n");
        let body = "6;ext=1\r\nkey a\n\r\nA\r\nkey bbbbb\n\r\n0\r\nX-Trailer: y\r\n\r\n";
        let answer = format!("{head}{body}");
        let expected = Some("key a\nkey bbbbb\n".to_string());
        assert_eq!(parse(&answer, false).unwrap(), expected);

        // Cut anywhere before the final blank line, it is incomplete, not wrong.
        for cut in head.len()..answer.len() {
            let part = &answer[..cut];
            assert_eq!(parse(part, false).unwrap(), None, "cut at {cut}");
            assert!(
                matches!(parse(part, true), Err(MetadataError::Truncated)),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn transfer_encoding_overrides_content_length() {
        let answer = format!("{OK_HEAD}Content-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n");
        let answer = format!("{answer}1\r\nk\r\n0\r\n\r\n");
        assert_eq!(parse(&answer, false).unwrap().as_deref(), Some("k"));
    }

    #[test]
    fn unframed_body_ends_with_the_connection() {
        let answer = format!("{OK_HEAD}\r\nkey a\nkey b\n");
        assert_eq!(parse(&answer, false).unwrap(), None);
        assert_eq!(
            parse(&answer, true).unwrap().as_deref(),
            Some("key a\nkey b\n")
        );
    }

    #[test]
    fn non_200_is_refused_as_soon_as_the_head_is_in() {
        let answer = "HTTP/1.1 403 Forbidden\r\ncontent-length: 21\r\n\r\nnot a";
        let err = parse(answer, false).unwrap_err();
        assert_eq!(err.to_string(), "answered 403 Forbidden");
        let err = parse("HTTP/1.0 204\r\n\r\n", false).unwrap_err();
        assert!(
            matches!(err, MetadataError::Status { status: 204, .. }),
            "{err}"
        );
    }

    #[test]
    fn only_plain_text_is_accepted() {
        let json = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{}";
        let err = parse(json, true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "answered content type \"application/json\", not text/plain"
        );
        let untyped = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(matches!(
            parse(untyped, true),
            Err(MetadataError::ContentType { .. })
        ));
        let upper = "HTTP/1.1 200 OK\r\nCONTENT-TYPE: Text/Plain\r\ncontent-length: 1\r\n\r\nk";
        assert_eq!(parse(upper, false).unwrap().as_deref(), Some("k"));
        let mut bytes = format!("{OK_HEAD}content-length: 2\r\n\r\n").into_bytes();
        bytes.extend_from_slice(&[0xff, 0xfe]);
        assert!(matches!(
            parse_text_response(&bytes, false),
            Err(MetadataError::NotUtf8)
        ));
    }

    #[test]
    fn bad_status_lines_and_headers_are_malformed() {
        for answer in [
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 +20 OK\r\n\r\n",
            "ICY 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            "HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
        ] {
            let err = parse(answer, false).unwrap_err();
            assert!(
                matches!(err, MetadataError::Malformed { .. }),
                "{answer:?}: {err}"
            );
        }
        let chunk = format!("{OK_HEAD}transfer-encoding: chunked\r\n\r\nzz\r\nkey\r\n");
        assert!(matches!(
            parse(&chunk, false),
            Err(MetadataError::Malformed { .. })
        ));
        let long = format!("{OK_HEAD}transfer-encoding: chunked\r\n\r\n1\r\nkey\r\n");
        assert!(matches!(
            parse(&long, false),
            Err(MetadataError::Malformed { .. })
        ));
    }

    #[test]
    fn body_cap_holds_for_every_framing() {
        let keys = "k".repeat(MAX_BODY);
        let exact = format!("{OK_HEAD}content-length: {MAX_BODY}\r\n\r\n{keys}");
        assert_eq!(
            parse(&exact, false).unwrap().map(|b| b.len()),
            Some(MAX_BODY)
        );

        let too_large = |answer: &str| {
            matches!(
                parse(answer, false),
                Err(MetadataError::TooLarge { what: "body", .. })
            )
        };
        // Refused from the header alone, before any of the body is read.
        let declared = format!("{OK_HEAD}content-length: {}\r\n\r\n", MAX_BODY + 1);
        assert!(too_large(&declared));
        assert!(too_large(&format!(
            "{OK_HEAD}content-length: 99999999999999999999999\r\n\r\n"
        )));
        assert!(too_large(&format!("{OK_HEAD}\r\n{keys}k")));
        let chunked = format!(
            "{OK_HEAD}transfer-encoding: chunked\r\n\r\n{:x}\r\n{keys}\r\n1\r\nk\r\n",
            MAX_BODY
        );
        assert!(too_large(&chunked));
    }

    #[test]
    fn head_cap_holds_without_a_blank_line() {
        let endless = format!("{OK_HEAD}{}", "x-padding: y\r\n".repeat(MAX_HEAD / 14 + 1));
        let err = parse(&endless, false).unwrap_err();
        assert!(
            matches!(err, MetadataError::TooLarge { what: "head", .. }),
            "{err}"
        );
        assert_eq!(parse(OK_HEAD, false).unwrap(), None);
    }
}
