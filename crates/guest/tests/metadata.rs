//! The metadata client against a real TCP server on loopback: a one-connection server
//! that answers a canned response, written in pieces, in each framing the node's server
//! may use, and the ways a server can fail (refusing, stalling, erring, answering too much).

// A test: every unwrap failing is the test failing, with its location.
#![allow(clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use boxcutter_guest::metadata::{fetch_ssh_keys, MetadataError, Timeouts, MAX_BODY};

const KEYS: &str = "ssh-ed25519 AAAAC3Nza a@laptop\nssh-ed25519 AAAAC3Nzb b@desk\n";

/// What the canned server does after writing its answer.
#[derive(Clone, Copy)]
enum After {
    /// Closes the connection, as a server honouring `Connection: close` does.
    Close,
    /// Keeps it open until the client closes it.
    Hold,
}

/// Serves one connection on `127.0.0.1`: reads the request, writes `parts` with `pause`
/// between them, then does `after`. The handle returns the request as received.
fn serve(parts: Vec<Vec<u8>>, pause: Duration, after: After) -> (SocketAddr, JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || answer(&listener, parts, pause, after));
    (addr, server)
}

fn answer(listener: &TcpListener, parts: Vec<Vec<u8>>, pause: Duration, after: After) -> String {
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.ends_with(b"\r\n\r\n") {
        let n = conn.read(&mut buf).unwrap();
        assert_ne!(
            n,
            0,
            "request cut short: {:?}",
            String::from_utf8_lossy(&request)
        );
        request.extend_from_slice(&buf[..n]);
    }
    for part in parts {
        // The client may rightly hang up early (a cap, an error status).
        if conn.write_all(&part).is_err() {
            break;
        }
        std::thread::sleep(pause);
    }
    if let After::Hold = after {
        while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
    }
    String::from_utf8(request).unwrap()
}

fn ok_head(framing: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\n{framing}\r\n")
        .into_bytes()
}

fn expected_keys() -> Vec<String> {
    KEYS.lines().map(str::to_string).collect()
}

#[test]
fn content_length_answer_gives_the_keys_and_the_request_asks_to_close() {
    let head = ok_head(&format!("content-length: {}\r\n", KEYS.len()));
    let (addr, server) = serve(vec![head, KEYS.into()], Duration::ZERO, After::Close);

    assert_eq!(
        fetch_ssh_keys(addr, Timeouts::BOOT).unwrap(),
        expected_keys()
    );
    let request = server.join().unwrap();
    assert!(
        request.starts_with("GET /v1/ssh-keys HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request.contains(&format!("\r\nHost: {addr}\r\n")),
        "{request}"
    );
    assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
}

#[test]
fn chunked_answer_arriving_in_pieces_is_reassembled() {
    let head = ok_head("transfer-encoding: chunked\r\n");
    let (first, second) = KEYS.split_at(10);
    let body = format!(
        "{:x}\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\n\r\n",
        10,
        second.len()
    );
    let (middle, end) = body.split_at(body.len() - 7);
    let parts = vec![head, middle.into(), end.into()];
    let (addr, _server) = serve(parts, Duration::from_millis(20), After::Close);

    assert_eq!(
        fetch_ssh_keys(addr, Timeouts::BOOT).unwrap(),
        expected_keys()
    );
}

#[test]
fn unframed_answer_ends_with_the_connection() {
    let (addr, _server) = serve(vec![ok_head(""), KEYS.into()], Duration::ZERO, After::Close);
    assert_eq!(
        fetch_ssh_keys(addr, Timeouts::BOOT).unwrap(),
        expected_keys()
    );
}

#[test]
fn complete_answer_is_taken_from_a_server_that_keeps_the_connection_open() {
    let head = ok_head(&format!("content-length: {}\r\n", KEYS.len()));
    let (addr, server) = serve(vec![head, KEYS.into()], Duration::ZERO, After::Hold);

    let started = Instant::now();
    assert_eq!(
        fetch_ssh_keys(addr, Timeouts::BOOT).unwrap(),
        expected_keys()
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    // The client hung up: the server's wait for that ends.
    server.join().unwrap();
}

#[test]
fn error_status_is_reported_with_its_code() {
    let answer = "HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain; charset=utf-8\r\n\
                  content-length: 21\r\n\r\nnot a VM of this node";
    let (addr, _server) = serve(vec![answer.into()], Duration::ZERO, After::Close);

    let err = fetch_ssh_keys(addr, Timeouts::BOOT).unwrap_err();
    assert!(
        matches!(err, MetadataError::Status { status: 403, .. }),
        "{err}"
    );
}

#[test]
fn refused_connection_is_retried_once_then_reported() {
    let addr = unused_port();

    let started = Instant::now();
    let err = fetch_ssh_keys(addr, Timeouts::BOOT).unwrap_err();
    let elapsed = started.elapsed();
    let MetadataError::Connect { source, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(source.kind(), ErrorKind::ConnectionRefused);
    assert!(
        elapsed >= Duration::from_millis(50) && elapsed < Duration::from_millis(500),
        "{elapsed:?}"
    );
}

#[test]
fn listener_that_comes_up_late_is_reached_by_the_retry() {
    let addr = unused_port();
    let head = ok_head(&format!("content-length: {}\r\n", KEYS.len()));
    let late = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        let listener = TcpListener::bind(addr).unwrap();
        answer(
            &listener,
            vec![head, KEYS.into()],
            Duration::ZERO,
            After::Close,
        )
    });

    // The listener is bound 10 ms in, the retry comes 50 ms after the first refusal.
    assert_eq!(
        fetch_ssh_keys(addr, Timeouts::BOOT).unwrap(),
        expected_keys()
    );
    late.join().unwrap();
}

#[test]
fn stalled_server_is_given_up_at_the_deadline() {
    let head = ok_head(&format!("content-length: {}\r\n", KEYS.len()));
    let (addr, _server) = serve(vec![head], Duration::ZERO, After::Hold);
    let timeouts = Timeouts {
        connect: Duration::from_millis(500),
        total: Duration::from_millis(300),
    };

    let started = Instant::now();
    let err = fetch_ssh_keys(addr, timeouts).unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(err, MetadataError::Timeout { limit_ms: 300, .. }),
        "{err}"
    );
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(800),
        "{elapsed:?}"
    );
}

#[test]
fn oversized_body_is_refused_before_it_is_all_read() {
    let keys = "k".repeat(MAX_BODY + 1);
    let (addr, _server) = serve(vec![ok_head(""), keys.into()], Duration::ZERO, After::Hold);

    let err = fetch_ssh_keys(addr, Timeouts::BOOT).unwrap_err();
    assert!(
        matches!(err, MetadataError::TooLarge { what: "body", .. }),
        "{err}"
    );
}

/// A loopback address nothing listens on (the port was free a moment ago).
fn unused_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}
