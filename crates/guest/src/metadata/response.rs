//! Parsing the metadata service's HTTP/1.x answer as it arrives: the status line, the
//! headers acted on, and the body framed by `Content-Length`, chunked, or by the connection
//! closing. Every part is capped; only `200` with `text/plain` yields a body.

use super::{MetadataError, MAX_BODY};

/// The largest status line and headers accepted.
pub(super) const MAX_HEAD: usize = 8 * 1024;

/// The largest chunked body accepted before decoding: room for framing around `MAX_BODY`.
const MAX_CHUNKED: usize = 2 * MAX_BODY;

/// The body of `answer` if it is a complete `200 text/plain` response; `None` if more is
/// needed. `eof`: the peer has closed, nothing more will come. A non-200 status is an
/// error as soon as the head is in: its body is not read.
pub(super) fn parse_text_response(
    answer: &[u8],
    eof: bool,
) -> Result<Option<String>, MetadataError> {
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
