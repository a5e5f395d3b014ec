//! Unit tests of response parsing: every framing, cut anywhere, and every cap and refusal.

use super::response::{parse_text_response, MAX_HEAD};
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
