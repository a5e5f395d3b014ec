//! `connect` (stdio piped to the VM's SSH port) and `known-hosts`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;

use crate::common::{Cluster, ALICE_KEY, HOST_KEY};

#[test]
fn connect_pipes_stdio_to_the_vm_and_known_hosts_prints_its_key() {
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = echo.local_addr().unwrap().port();
    thread::spawn(move || {
        let (mut conn, _) = echo.accept().unwrap();
        conn.write_all(b"SSH-2.0-OpenSSH_9.2 stand-in\r\n").unwrap();
        let mut input = Vec::new();
        conn.read_to_end(&mut input).unwrap();
        conn.write_all(&input).unwrap();
    });
    let cluster = Cluster::with_ssh_port(port);
    let ran = cluster
        .ssh_with_stdin(
            ALICE_KEY,
            "connect dev-box",
            b"SSH-2.0-client\r\n\x00\x01binary",
        )
        .ok();
    assert_eq!(
        ran.stdout,
        "SSH-2.0-OpenSSH_9.2 stand-in\r\nSSH-2.0-client\r\n\x00\x01binary"
    );
    assert_eq!(
        cluster.ssh(ALICE_KEY, "known-hosts dev-box").ok().stdout,
        format!("dev-box {HOST_KEY}\n")
    );
}

#[test]
fn connect_to_a_vm_that_does_not_answer_fails_clearly() {
    // Bound but not listening: connections are refused, and no other test can take the
    // port meanwhile (a listener dropped before the connect could be re-bound by one).
    use nix::sys::socket::{
        bind, getsockname, socket, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    let closed = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&closed),
        &SockaddrIn::new(127, 0, 0, 1, 0),
    )
    .unwrap();
    let port = getsockname::<SockaddrIn>(std::os::fd::AsRawFd::as_raw_fd(&closed))
        .unwrap()
        .port();
    let cluster = Cluster::with_ssh_port(port);
    cluster
        .ssh(ALICE_KEY, "connect dev-box")
        .failed(1, &format!("cannot reach dev-box at 127.0.0.1:{port}"));
}
