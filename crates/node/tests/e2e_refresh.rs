//! End to end: the guest agent's `refresh` command on a real QEMU guest. The test boots
//! the golden image on a TAP in a network namespace of its own, then writes commands into
//! the agent's virtio-serial socket (`QemuVm::wait_ready` has let go of it) and reads each
//! answer line back:
//!
//! 1. a refresh with too little entropy is answered `failed` (step `refresh`) and changes
//!    nothing: the guest keeps its name;
//! 2. a good refresh is answered `refreshed`, and over SSH the guest then has the new
//!    hostname and `/etc/hostname`, a clock set to 2030, the new address (the old one
//!    gone) and resolver, and presents the new SSH host key: `ssh-keyscan` sees only it,
//!    and a login that trusts only it succeeds.
//!
//! Needs root, QEMU and the packages `scripts/install-deps` installs. The RNG credit is
//! seen only as the refresh succeeding: a guest cannot tell credited entropy apart.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use boxcutter_node::guest::{boot_guest, BootEnv, GuestNetSpec, GuestSpec};
use boxcutter_types::guest::{AgentEvent, GuestNet, HostCommand, Refresh};
use boxcutter_types::{ByteSize, VmName};
use boxcutter_vmm::qemu::QemuVm;
use support::guest_sandbox::{GuestSandbox, Ssh};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

const GATEWAY: &str = "10.78.0.1";
const BOOT_ADDRESS: &str = "10.78.0.2";
const NEW_ADDRESS: &str = "10.78.0.3";
/// 2030-01-01T00:00:00Z: far from any real clock, so the guest's can only come from us.
const CLOCK_MS: u64 = 1_893_456_000_000;
/// How far the guest's clock may be from the one sent, plus the time since.
const CLOCK_SLACK: Duration = Duration::from_secs(5);
/// A refresh reloads sshd, which takes seconds under TCG.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

fn env(sandbox: &GuestSandbox, image: PathBuf) -> BootEnv {
    sandbox.boot_env(image, ByteSize(2 << 30), Duration::from_secs(90))
}

fn guest_net(address: &str, dns: &[&str]) -> GuestNet {
    GuestNet {
        address: address.parse().unwrap(),
        prefix_len: 24,
        gateway: GATEWAY.parse().unwrap(),
        dns: dns.iter().map(|d| d.parse().unwrap()).collect(),
    }
}

/// Writes `command` as one line into the agent socket and returns the one line answered.
async fn send(agent: &Path, command: &HostCommand) -> AgentEvent {
    let stream = UnixStream::connect(agent).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(command).unwrap();
    line.push('\n');
    write.write_all(line.as_bytes()).await.unwrap();
    let mut answer = String::new();
    let mut lines = BufReader::new(read);
    tokio::time::timeout(ANSWER_TIMEOUT, lines.read_line(&mut answer))
        .await
        .expect("no answer to the command")
        .unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("answer {answer:?}: {e}"))
}

/// A fresh ed25519 key pair made by `ssh-keygen`: (private key file, public key line).
fn ssh_keygen(path: &Path) -> (String, String) {
    support::keygen(path);
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (std::fs::read_to_string(path).unwrap(), public.trim().into())
}

/// The key type and base64 blob of an OpenSSH public key line, without its comment.
fn key_blob(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn random_hex(bytes: usize) -> String {
    let mut random = vec![0u8; bytes];
    let mut urandom = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut urandom, &mut random).unwrap();
    random.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_refresh_renames_rekeys_and_moves_a_qemu_guest() {
    let image = support::test_image();
    let sandbox = GuestSandbox::new("refresh", "boxcutter-e2e-refresh-");
    let tap = sandbox.network(GATEWAY);
    let (key, public) = support::keypair(sandbox.dir.path());

    let spec = GuestSpec {
        name: VmName::new("e2e-original").unwrap(),
        vcpus: 2,
        memory_mib: 512,
        net: Some(GuestNetSpec {
            tap: tap.to_string(),
            guest: guest_net(BOOT_ADDRESS, &[GATEWAY]),
        }),
        authorized_keys: vec![public],
    };
    let booted = boot_guest(&spec, &env(&sandbox, image)).await.unwrap();
    let agent = booted.vm.paths().agent.clone();
    let before = Ssh::new(&sandbox, &key, BOOT_ADDRESS, &booted.host_public_key);

    let (new_host_key, new_host_public) = ssh_keygen(&sandbox.dir.path().join("new_host_key"));
    let refresh = Refresh {
        name: VmName::new("e2e-refreshed").unwrap(),
        net: Some(guest_net(NEW_ADDRESS, &[GATEWAY, "192.0.2.53"])),
        unix_time_ms: CLOCK_MS,
        entropy: random_hex(32),
        ssh_host_key: Some(new_host_key),
    };

    // Too little entropy: refused as a whole, before anything changed.
    let short = Refresh {
        entropy: random_hex(16),
        ..refresh.clone()
    };
    match send(&agent, &HostCommand::Refresh(short)).await {
        AgentEvent::Failed { step, error } => {
            assert_eq!(step, "refresh");
            assert_eq!(error, "entropy is 16 bytes; at least 32 are needed");
        }
        other => panic!("short entropy answered {other:?}"),
    }
    assert_eq!(before.run("hostname"), (true, "e2e-original".into()));

    let sent = Instant::now();
    let answer = send(&agent, &HostCommand::Refresh(refresh)).await;
    assert!(
        matches!(answer, AgentEvent::Refreshed { uptime_ms } if uptime_ms > 0),
        "refresh answered {answer:?}\nconsole:\n{}",
        console(&booted.vm)
    );

    // Debian 12's sshd (OpenSSH 9.2) reads its host key afresh for every connection, so
    // the new key would show even without the reload that newer ones need (they load keys
    // once, in the listener): that sshd got the reload is read from its own console line.
    let console_text = console(&booted.vm);
    assert!(
        console_text.contains("Received SIGHUP; restarting."),
        "sshd was not reloaded:\n{console_text}"
    );

    // The guest presents the new host key, and only it.
    let (ok, scanned) = sandbox.run("ssh-keyscan", &["-t", "ed25519", NEW_ADDRESS]);
    assert!(ok, "ssh-keyscan {NEW_ADDRESS} failed");
    let presented: Vec<String> = scanned
        .lines()
        .map(|l| key_blob(l.split_once(' ').unwrap().1))
        .collect();
    assert_eq!(presented, [key_blob(&new_host_public)]);
    assert_ne!(
        key_blob(&new_host_public),
        key_blob(&booted.host_public_key)
    );

    let after = Ssh::new(&sandbox, &key, NEW_ADDRESS, &new_host_public);
    let (ok, facts) = after.run(
        "hostname; cat /etc/hostname; date +%s; ip -4 -o addr show scope global; \
         grep nameserver /etc/resolv.conf",
    );
    assert!(
        ok,
        "ssh trusting only the new host key failed:\n{}",
        console(&booted.vm)
    );
    let facts: Vec<&str> = facts.lines().collect();
    assert_eq!(facts[..2], ["e2e-refreshed", "e2e-refreshed"], "{facts:?}");

    let guest_clock: u64 = facts[2].parse().unwrap();
    let expected = CLOCK_MS / 1000 + sent.elapsed().as_secs();
    assert!(
        guest_clock.abs_diff(expected) <= CLOCK_SLACK.as_secs(),
        "guest clock {guest_clock}, expected about {expected}"
    );
    let addresses: Vec<&str> = facts
        .iter()
        .filter(|l| l.contains(" inet "))
        .copied()
        .collect();
    assert_eq!(addresses.len(), 1, "{addresses:?}");
    assert!(
        addresses[0].contains(&format!("inet {NEW_ADDRESS}/24 ")),
        "{addresses:?}"
    );
    assert_eq!(
        facts[facts.len() - 2..],
        [
            format!("nameserver {GATEWAY}").as_str(),
            "nameserver 192.0.2.53"
        ]
    );

    booted.vm.shutdown(Duration::from_secs(30)).await.unwrap();
    sandbox.remove_and_assert_nothing_left();
}

fn console(vm: &QemuVm) -> String {
    std::fs::read_to_string(&vm.paths().console).unwrap_or_default()
}
