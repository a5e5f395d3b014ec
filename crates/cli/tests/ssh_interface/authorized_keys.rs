//! `authorized-keys %u %t %k`, sshd's AuthorizedKeysCommand: it vouches only for
//! Boxcutter users' keys on the Boxcutter login, and gives up quickly when the
//! orchestrator is down or stuck.

use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use boxcutter_auth::ClusterSecret;

use crate::common::{boxcutter, run, write_config, Cluster, ALICE_KEY, STRANGER_KEY};

#[test]
fn authorized_keys_vouches_only_for_boxcutter_users() {
    let cluster = Cluster::new();
    assert_eq!(
        cluster
            .authorized_keys("boxcutter", "ssh-ed25519", ALICE_KEY)
            .ok()
            .stdout,
        format!("restrict ssh-ed25519 {ALICE_KEY}\n")
    );
    for (login, key_type, key) in [
        ("boxcutter", "ssh-ed25519", STRANGER_KEY),
        ("root", "ssh-ed25519", ALICE_KEY),
        ("boxcutter", "ssh-ed25519", "AAAA;touch /tmp/x"),
        ("boxcutter", "command=\"sh\" ssh-ed25519", ALICE_KEY),
    ] {
        let ran = cluster.authorized_keys(login, key_type, key).ok();
        assert_eq!(ran.stdout, "", "{login} {key_type} {key}");
    }
}

#[test]
fn authorized_keys_fails_fast_when_the_orchestrator_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("cluster.key");
    ClusterSecret::load_or_create(&secret).unwrap();
    let config = dir.path().join("cli.toml");
    let gone = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", gone.local_addr().unwrap());
    drop(gone);
    write_config(&config, &url, &secret, None);
    let started = Instant::now();
    let ran = run(
        boxcutter(
            &config,
            &["authorized-keys", "boxcutter", "ssh-ed25519", ALICE_KEY],
        ),
        b"",
    );
    ran.failed(1, "cannot reach the orchestrator at http://127.0.0.1:");
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[test]
fn authorized_keys_never_waits_long_for_a_stuck_orchestrator() {
    // Accepts connections and never answers.
    let stuck = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", stuck.local_addr().unwrap());
    thread::spawn(move || {
        let held: Vec<TcpStream> = stuck.incoming().map_while(Result::ok).collect();
        drop(held);
    });
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("cluster.key");
    ClusterSecret::load_or_create(&secret).unwrap();
    let config = dir.path().join("cli.toml");
    write_config(&config, &url, &secret, None);
    let started = Instant::now();
    let ran = run(
        boxcutter(
            &config,
            &["authorized-keys", "boxcutter", "ssh-ed25519", ALICE_KEY],
        ),
        b"",
    );
    ran.failed(1, "cannot reach the orchestrator");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}
