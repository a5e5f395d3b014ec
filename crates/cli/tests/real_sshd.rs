//! The SSH front door with real OpenSSH: an sshd configured as `docs/ssh-interface.md`
//! says, the real `ssh` client, and the `boxcutter` binary as AuthorizedKeysCommand and
//! ForceCommand, in front of the [`common::StandInOrchestrator`].
//!
//! sshd insists that an AuthorizedKeysCommand be owned by root, so this runs as root
//! (as CI does) and is skipped, saying so, elsewhere or where OpenSSH is not installed.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{write_config, Cluster, Ran};

const SSHD: &str = "/usr/sbin/sshd";

/// An sshd on a loopback port, killed when dropped.
struct Sshd {
    child: Child,
    /// Holds the binary sshd runs.
    _bin_dir: tempfile::TempDir,
    port: u16,
    login: String,
    dir: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn usable() -> bool {
    let installed = [SSHD, "/usr/bin/ssh", "/usr/bin/ssh-keygen"]
        .iter()
        .all(|p| Path::new(p).exists());
    let root = output(Command::new("id").arg("-u")).trim() == "0";
    if !(installed && root) {
        eprintln!("skipped: needs root and OpenSSH (sshd, ssh, ssh-keygen)");
    }
    installed && root
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn keygen(path: &Path) -> String {
    output(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
            .arg(path),
    );
    std::fs::read_to_string(path.with_extension("pub")).unwrap()
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// sshd refuses an AuthorizedKeysCommand in a directory that anyone but root can write,
/// up to `/`, so the binary is copied into a private directory in such a place: cargo's
/// test scratch directory when it qualifies, else `/run`.
fn private_binary() -> (tempfile::TempDir, PathBuf) {
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(scratch).unwrap();
    let base = if root_only(scratch) {
        scratch
    } else {
        Path::new("/run")
    };
    let dir = tempfile::tempdir_in(base).unwrap();
    let bin = dir.path().join("boxcutter");
    std::fs::copy(env!("CARGO_BIN_EXE_boxcutter"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, bin)
}

fn root_only(path: &Path) -> bool {
    path.ancestors()
        .all(|p| std::fs::metadata(p).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o022 == 0))
}

/// Starts sshd with the documented `Match User` block for `login`.
fn start_sshd(dir: &Path, port: u16, config: &Path) -> Sshd {
    let login = output(Command::new("id").arg("-un")).trim().to_string();
    let host_key = dir.join("host_key");
    keygen(&host_key);
    let (bin_dir, bin) = private_binary();
    let (bin, config) = (bin.display(), config.display());
    let sshd_config = dir.join("sshd_config");
    std::fs::write(
        &sshd_config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile none\nUsePAM no\n\
             StrictModes no\nLogLevel VERBOSE\n\
             Match User {login}\n\
             \tAuthorizedKeysFile none\n\
             \tAuthorizedKeysCommand {bin} --config {config} authorized-keys %u %t %k\n\
             \tAuthorizedKeysCommandUser {login}\n\
             \tExposeAuthInfo yes\n\
             \tForceCommand {bin} --config {config} ssh-command\n\
             \tDisableForwarding yes\n\
             \tPermitTTY no\n\
             \tPermitUserRC no\n\
             \tAuthenticationMethods publickey\n\
             \tPasswordAuthentication no\n\
             \tKbdInteractiveAuthentication no\n",
            host_key.display()
        ),
    )
    .unwrap();
    // The privilege separation directory Debian's package would have made.
    std::fs::create_dir_all("/run/sshd").unwrap();
    let child = Command::new(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(&sshd_config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
        .spawn()
        .unwrap();
    let sshd = Sshd {
        child,
        _bin_dir: bin_dir,
        port,
        login,
        dir: dir.to_path_buf(),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "sshd did not start: {}",
            sshd.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
    sshd
}

impl Sshd {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// `ssh` options for a client with `key` and no config of its own, checking host
    /// keys strictly against `known_hosts` when given, not at all otherwise.
    fn client_args(&self, key: &Path, known_hosts: Option<&Path>) -> Vec<String> {
        let checking = match known_hosts {
            Some(file) => ["StrictHostKeyChecking=yes".to_string(), {
                format!("UserKnownHostsFile={}", file.display())
            }],
            None => [
                "StrictHostKeyChecking=no".to_string(),
                "UserKnownHostsFile=/dev/null".to_string(),
            ],
        };
        let mut args: Vec<String> = ["-F", "/dev/null", "-p", &self.port.to_string()]
            .map(String::from)
            .to_vec();
        args.extend(["-i".to_string(), key.display().to_string()]);
        args.extend(["-l".to_string(), self.login.clone()]);
        for option in ["IdentitiesOnly=yes", "BatchMode=yes", "LogLevel=ERROR"] {
            args.extend(["-o".to_string(), option.to_string()]);
        }
        for option in checking {
            args.extend(["-o".to_string(), option]);
        }
        args
    }

    /// `ssh boxcutter <args>` with `key`.
    fn ssh(&self, key: &Path, args: &[&str]) -> Ran {
        let mut cmd = Command::new("ssh");
        cmd.args(self.client_args(key, None))
            .arg("127.0.0.1")
            .args(args);
        common::run(cmd, b"")
    }
}

#[test]
fn the_readme_session_through_real_openssh() {
    if !usable() {
        return;
    }
    let port = free_port();
    // `connect` leads to this same sshd, standing in for a VM's.
    let cluster = Cluster::with_ssh_port(port);
    let dir = cluster.dir.path();
    let carol_key = dir.join("carol_key");
    let public = keygen(&carol_key);
    let blob = public.split_whitespace().nth(1).unwrap();
    cluster.add_user(blob, "carol", true);
    let login = output(Command::new("id").arg("-un")).trim().to_string();
    write_config(
        &cluster.config,
        &cluster.url,
        &cluster.secret_file,
        Some(&login),
    );
    let sshd = start_sshd(dir, port, &cluster.config);

    // `new`, with quoting that must survive ssh's joining of words and our split.
    let ran = sshd.ssh(
        &carol_key,
        &["new", "--name", "real-vm", "--desc", "'a; b'"],
    );
    assert_eq!(ran.code, 0, "{}\n{}", ran.stderr, sshd.log());
    assert!(
        ran.stdout
            .starts_with("Name: real-vm\nNode: boxcutter-node-1\n"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout
            .ends_with("Status: running\nConnect: ssh real-vm\n"),
        "{}",
        ran.stdout
    );
    assert!(ran.stderr.contains("] scheduling: "), "{}", ran.stderr);
    let described = sshd.ssh(&carol_key, &["describe", "real-vm"]);
    assert!(
        described.stdout.contains("Description: a; b\n"),
        "{}",
        described.stdout
    );

    // Errors keep their exit status and single line through ssh.
    let bad = sshd.ssh(&carol_key, &["new", "--ram", "0"]);
    assert_eq!(bad.code, 2);
    assert_eq!(bad.stdout, "");
    assert!(
        bad.stderr
            .starts_with("error: invalid value '0' for '--ram <MiB>'"),
        "{}",
        bad.stderr
    );

    // No command: help, not a shell.
    let help = sshd.ssh(&carol_key, &[]);
    assert_eq!(help.code, 0, "{}", help.stderr);
    assert!(
        help.stdout.contains("Usage: ssh boxcutter <COMMAND>"),
        "{}",
        help.stdout
    );
}

#[test]
fn unknown_keys_and_forwarding_are_refused() {
    if !usable() {
        return;
    }
    let port = free_port();
    let cluster = Cluster::with_ssh_port(port);
    let dir = cluster.dir.path();
    let known = dir.join("known_key");
    let blob = keygen(&known)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    cluster.add_user(&blob, "carol", false);
    let stranger = dir.join("stranger_key");
    keygen(&stranger);
    let login = output(Command::new("id").arg("-un")).trim().to_string();
    write_config(
        &cluster.config,
        &cluster.url,
        &cluster.secret_file,
        Some(&login),
    );
    let sshd = start_sshd(dir, port, &cluster.config);

    let refused = sshd.ssh(&stranger, &["list"]);
    assert_eq!(refused.code, 255, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("Permission denied"),
        "{}",
        refused.stderr
    );

    // A remote forward is refused outright, so ssh gives up instead of serving it.
    let mut cmd = Command::new("ssh");
    cmd.args(sshd.client_args(&known, None))
        .args([
            "-o",
            "ExitOnForwardFailure=yes",
            "-N",
            "-R",
            "0:127.0.0.1:9",
        ])
        .arg("127.0.0.1");
    let forward = common::run(cmd, b"");
    assert_eq!(forward.code, 255, "{}", forward.stderr);
    assert!(
        forward.stderr.contains("forwarding failed"),
        "{}",
        forward.stderr
    );
}

#[test]
fn proxy_command_connect_reaches_the_vm_with_its_known_host_key() {
    if !usable() {
        return;
    }
    let port = free_port();
    let cluster = Cluster::with_ssh_port(port);
    let dir = cluster.dir.path();
    let key = dir.join("carol_key");
    let blob = keygen(&key).split_whitespace().nth(1).unwrap().to_string();
    cluster.add_user(&blob, "carol", true);
    let login = output(Command::new("id").arg("-un")).trim().to_string();
    write_config(
        &cluster.config,
        &cluster.url,
        &cluster.secret_file,
        Some(&login),
    );
    let sshd = start_sshd(dir, port, &cluster.config);
    // dev-box's SSH server is this sshd: give the VM its host key.
    let host_key = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
    cluster.set_host_key("dev-box", &host_key);

    let line = sshd.ssh(&key, &["known-hosts", "dev-box"]);
    assert_eq!(line.code, 0, "{}", line.stderr);
    let known_hosts = dir.join("known_hosts");
    std::fs::write(&known_hosts, &line.stdout).unwrap();

    // `ssh dev-box list` through `ProxyCommand ssh boxcutter connect %h`, checking the
    // VM's host key strictly against the line `known-hosts` printed.
    // HostKeyAlias: the stand-in VM listens on sshd's test port, and known_hosts names
    // a host on another port as [host]:port; a real VM's SSH is on 22.
    let outer = sshd.client_args(&key, None).join(" ");
    let mut cmd = Command::new("ssh");
    cmd.args(sshd.client_args(&key, Some(&known_hosts)))
        .args([
            "-o",
            &format!("ProxyCommand=ssh {outer} 127.0.0.1 connect %h"),
        ])
        .args(["-o", "HostKeyAlias=dev-box"])
        .args(["dev-box", "list"]);
    let ran = common::run(cmd, b"");
    assert_eq!(ran.code, 0, "{}\n{}", ran.stderr, sshd.log());
    assert!(ran.stdout.starts_with("NAME "), "{}", ran.stdout);
    assert!(ran.stdout.contains("\ndev-box "), "{}", ran.stdout);
}
