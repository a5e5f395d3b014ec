//! Local mode end to end, as users live it: `boxcutter-host up --local`, then the real
//! OpenSSH client against the control interface (`ssh -F <state>/ssh_config boxcutter
//! <command>`), into VMs by name through `connect`, and `down` leaving nothing behind.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join(name)
}

fn host(args: &[&str]) -> Output {
    Command::new(bin("boxcutter-host"))
        .args(args)
        .output()
        .unwrap()
}

/// An SSH client of one user.
struct User {
    config: PathBuf,
    key: PathBuf,
}

impl User {
    /// Runs `remote` on `target` (`boxcutter` or a VM): (success, stdout, stderr).
    fn ssh(&self, target: &str, remote: &[&str]) -> (bool, String, String) {
        let out = Command::new("ssh")
            .arg("-F")
            .arg(&self.config)
            .arg("-i")
            .arg(&self.key)
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=20", target])
            .args(remote)
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    }

    /// A control command that must succeed; its stdout.
    fn ok(&self, remote: &[&str]) -> String {
        let (ok, out, err) = self.ssh("boxcutter", remote);
        assert!(ok, "{remote:?} failed: {err}");
        out
    }

    /// A control command that must fail with one line on stderr and nothing on stdout.
    fn refused(&self, remote: &[&str]) -> String {
        let (ok, out, err) = self.ssh("boxcutter", remote);
        assert!(!ok && out.is_empty(), "{remote:?} was not refused: {out}");
        assert!(
            err.starts_with("error: ") && err.lines().count() == 1,
            "{remote:?}: {err}"
        );
        err
    }
}

fn keypair(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(name);
    let mut keygen = Command::new("ssh-keygen");
    keygen
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key);
    assert!(keygen.status().unwrap().success());
    key
}

/// Serves `<login>.keys` files from `dir` over HTTP, standing in for github.com.
fn keys_server(dir: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let n = conn.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            let path = request
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/');
            let body = std::fs::read_to_string(dir.join(path)).ok();
            let reply = match body {
                Some(b) => format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{b}", b.len()),
                None => "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".into(),
            };
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    url
}

/// Brings the instance down even when the test fails midway.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = host(&["down", "--local", "--state-dir", self.0.to_str().unwrap()]);
    }
}

fn field<'a>(block: &'a str, name: &str) -> &'a str {
    block
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_default()
}

#[test]
fn e2e_local_mode_two_nodes_two_users_every_command() {
    let dir = tempfile::Builder::new()
        .prefix("boxcutter-local-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let state = dir.path().join("state");
    let admin_key = keypair(dir.path(), "admin");
    let alice_key = keypair(dir.path(), "alice");
    let keys_dir = dir.path().join("keys");
    std::fs::create_dir(&keys_dir).unwrap();
    std::fs::copy(alice_key.with_extension("pub"), keys_dir.join("alice.keys")).unwrap();
    let keys_url = keys_server(keys_dir);

    let port = (2300 + std::process::id() % 500).to_string();
    let admin_pub = admin_key.with_extension("pub");
    let up_args = [
        "up",
        "--local",
        "--state-dir",
        state.to_str().unwrap(),
        "--nodes",
        "2",
        "--subnet",
        "10.237.0.0",
        "--ssh-port",
        &port,
        "--admin-key",
        admin_pub.to_str().unwrap(),
        "--admin-name",
        "tester",
        "--keys-url",
        &keys_url,
    ];
    let guard = Down(state.clone());
    let up = host(&up_args);
    assert!(
        up.status.success(),
        "up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let config = state.join("ssh_config");
    let admin = User {
        config: config.clone(),
        key: admin_key,
    };
    let alice = User {
        config,
        key: alice_key,
    };

    // `new` with every sizing flag; the guest sees them too.
    let block = admin.ok(&[
        "new",
        "--type",
        "qemu",
        "--name",
        "my-vm",
        "--vcpu",
        "1",
        "--ram",
        "1024",
        "--disk",
        "4G",
        "--desc",
        "'first one'",
        "--mode",
        "normal",
        "--node",
        "boxcutter-node-1",
    ]);
    assert_eq!(
        block.lines().take(5).collect::<Vec<_>>(),
        [
            "Name: my-vm",
            "Node: boxcutter-node-1",
            "vCPU: 1",
            "RAM: 1G",
            "Disk: 4G"
        ]
    );
    assert!(
        block.ends_with("Status: running\nConnect: ssh my-vm"),
        "{block}"
    );
    let probe =
        "cat /etc/boxcutter/vm-type; nproc; df -B1G --output=size / | tail -1 | tr -d ' '; \
                 awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo; echo kept > ~/file; sync";
    let (ok, inside, err) = admin.ssh("my-vm", &[probe]);
    assert!(ok, "{err}");
    let inside: Vec<&str> = inside.lines().collect();
    assert_eq!(inside[..3], ["qemu", "1", "4"]);
    let mem_mib: u32 = inside[3].parse().unwrap();
    assert!((900..=1024).contains(&mem_mib), "guest sees {mem_mib} MiB");

    // --node pins to the second node, and connect reaches guests on either node.
    let second = admin.ok(&[
        "new",
        "--type",
        "qemu",
        "--name",
        "vm-two",
        "--ram",
        "512",
        "--node",
        "boxcutter-node-2",
    ]);
    assert_eq!(field(&second, "Node"), "boxcutter-node-2");
    assert_eq!(admin.ssh("vm-two", &["hostname"]).1, "vm-two");

    // Without --node, the node with the most free RAM gets the VM (node 2 holds less).
    let spread = admin.ok(&["new", "--type", "qemu", "--name", "spread", "--ram", "512"]);
    assert_eq!(field(&spread, "Node"), "boxcutter-node-2");
    admin.ok(&["destroy", "spread"]);

    let list = admin.ok(&["list"]);
    assert!(list.starts_with("NAME"), "{list}");
    for header in [
        "TAILSCALE IP",
        "NODE",
        "TYPE",
        "VCPU",
        "RAM",
        "MODE",
        "STATUS",
    ] {
        assert!(list.lines().next().unwrap().contains(header), "{list}");
    }
    assert!(list.contains("my-vm") && list.contains("vm-two"), "{list}");

    // stop/start keeps files; cp copies them; logs, describe, status, nodes answer.
    assert!(admin.ok(&["stop", "my-vm"]).contains("stopped"));
    admin.ok(&["start", "my-vm"]);
    assert_eq!(admin.ssh("my-vm", &["cat", "file"]).1, "kept");
    let copy = admin.ok(&["cp", "my-vm", "my-copy"]);
    assert_eq!(field(&copy, "Name"), "my-copy");
    assert_eq!(admin.ssh("my-copy", &["cat", "file"]).1, "kept");
    assert!(!admin.ok(&["logs", "my-vm"]).is_empty());
    assert!(admin.ok(&["describe", "my-vm"]).contains("first one"));
    admin.ok(&["describe", "my-vm", "renamed", "text"]);
    assert!(admin.ok(&["describe", "my-vm"]).contains("renamed text"));
    assert!(admin.ok(&["status"]).contains("2 up"));
    let nodes = admin.ok(&["nodes"]);
    assert!(
        nodes.contains("boxcutter-node-1") && nodes.contains("boxcutter-node-2"),
        "{nodes}"
    );

    // A second user, from a keys file: sees and touches nothing of the admin's.
    admin.ok(&["adduser", "alice"]);
    let alice_list = alice.ok(&["list"]);
    assert!(!alice_list.contains("my-vm"), "{alice_list}");
    assert_eq!(
        alice.refused(&["destroy", "my-vm"]),
        "error: no such VM: my-vm"
    );
    assert!(alice
        .refused(&["adduser", "mallory"])
        .starts_with("error: "));

    // Bad input: one line, non-zero, nothing changed.
    for bad in [
        vec!["new", "--name", "a;b"],
        vec!["new", "--ram", "0"],
        vec!["new", "--ram", "99999999"],
        vec!["new", "--type", "vmware"],
        vec!["new", "--type", "firecracker"],
        vec!["new", "--name", "my-vm", "--type", "qemu"],
        vec!["new", "--bogus"],
        vec!["destroy"],
        vec!["destroy", "nope"],
        vec!["frobnicate"],
    ] {
        admin.refused(&bad);
    }
    assert_eq!(
        admin.ok(&["list"]).lines().count(),
        4,
        "bad input changed something"
    );
    // The refusal says why, as the node found it.
    let why = admin.refused(&["new", "--type", "firecracker"]);
    assert!(
        why.contains("firecracker binary not found at firecracker"),
        "{why}"
    );

    check_node_down_and_back(&admin, &up_args, &state);
    check_orchestrator_sigkill(&admin, &up_args, &state);

    for vm in ["my-vm", "vm-two", "my-copy"] {
        admin.ok(&["destroy", vm]);
    }
    drop(guard);
    assert_nothing_left(&state);
}

/// A node whose agent dies is marked down and gets no new VMs; when it is back (a second
/// `up` restarts it), its VMs are listed as running again.
fn check_node_down_and_back(admin: &User, up_args: &[&str], state: &Path) {
    let pidfile = state.join("nodes/2/node.pid");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !admin
        .ok(&["nodes"])
        .lines()
        .any(|l| l.starts_with("boxcutter-node-2") && l.contains("down"))
    {
        assert!(Instant::now() < deadline, "node 2 never marked down");
        std::thread::sleep(Duration::from_millis(500));
    }
    let third = admin.ok(&[
        "new", "--type", "qemu", "--name", "vm-three", "--ram", "512",
    ]);
    assert_eq!(field(&third, "Node"), "boxcutter-node-1");
    admin.ok(&["destroy", "vm-three"]);

    let up = host(up_args);
    assert!(
        up.status.success(),
        "second up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = admin.ok(&["list"]);
        let two = list
            .lines()
            .find(|l| l.starts_with("vm-two "))
            .unwrap_or_default()
            .to_string();
        if two.ends_with("running")
            && admin
                .ok(&["nodes"])
                .lines()
                .any(|l| l.starts_with("boxcutter-node-2") && l.contains(" up "))
        {
            break;
        }
        assert!(Instant::now() < deadline, "node 2 never came back: {list}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        admin.ssh("vm-two", &["hostname"]).1,
        "vm-two",
        "the guest did not survive its agent"
    );
}

/// The orchestrator dies mid-session: after `up` restarts it, nothing is lost and the
/// guests never noticed.
fn check_orchestrator_sigkill(admin: &User, up_args: &[&str], state: &Path) {
    let before = admin.ok(&["list"]);
    let uptime = |vm| {
        admin
            .ssh(vm, &["cut -d' ' -f1 /proc/uptime"])
            .1
            .parse::<f64>()
            .unwrap()
    };
    let up_before = uptime("my-vm");
    let pidfile = state.join("orchestrator/orchestrator.pid");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Without the registry nobody can even log in: the key lookup fails closed.
    assert!(
        !admin.ssh("boxcutter", &["list"]).0,
        "list answered without an orchestrator"
    );
    let up = host(up_args);
    assert!(
        up.status.success(),
        "up after the crash failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert_eq!(admin.ok(&["list"]), before);
    assert!(uptime("my-vm") > up_before, "the guest restarted");
}

fn assert_nothing_left(state: &Path) {
    let marker = state.to_string_lossy().into_owned();
    assert!(
        boxcutter_host::procs::pids_with(&marker).is_empty(),
        "processes left"
    );
    let prefix = boxcutter_host::local::prefix_for(state);
    let text = |args: &[&str]| {
        String::from_utf8_lossy(
            &Command::new(args[0])
                .args(&args[1..])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned()
    };
    assert!(
        !text(&["ip", "netns", "list"]).contains(&prefix),
        "namespace left"
    );
    assert!(
        !text(&["ip", "-o", "link"]).contains(&prefix),
        "device left"
    );
    assert!(
        !text(&["nft", "list", "tables"]).contains(&prefix),
        "nft table left"
    );
    assert!(!text(&["ip", "route"]).contains("10.237.0."), "route left");
    assert!(
        !std::fs::read_to_string("/proc/mounts")
            .unwrap()
            .contains(&marker),
        "mount left"
    );
}
