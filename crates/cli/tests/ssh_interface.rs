//! The `boxcutter` binary, driven the way sshd drives it: `ssh-command` with
//! `$SSH_ORIGINAL_COMMAND` and an `$SSH_USER_AUTH` file, and `authorized-keys %u %t %k`,
//! against the [`common::StandInOrchestrator`].

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use boxcutter_auth::ClusterSecret;
use boxcutter_types::guest::VmType;
use boxcutter_types::orch::NewVmRequest;
use boxcutter_types::{ByteSize, NetMode, VmName};

use common::{boxcutter, run, write_config, Cluster, ALICE_KEY, BOB_KEY, HOST_KEY, STRANGER_KEY};

#[test]
fn new_streams_progress_then_prints_the_readme_block() {
    let cluster = Cluster::new();
    let ran = cluster.ssh(ALICE_KEY, "new").ok();
    assert_eq!(
        ran.stdout,
        "Name: bold-fox\nNode: boxcutter-node-1\nvCPU: 2\nRAM: 2G\nDisk: 50G\n\
         IP: 100.64.1.42\nStatus: running\nConnect: ssh bold-fox\n"
    );
    assert_eq!(
        ran.stderr,
        "[ 0.0s] scheduling: boxcutter-node-1 has the most free RAM\n\
         [ 0.2s] boot: guest ready\n"
    );
    let created = cluster.orch.state.lock().unwrap().created.clone();
    assert_eq!(
        created,
        [NewVmRequest {
            vcpus: Some(2),
            ram_mib: Some(2048),
            disk: Some(ByteSize(50 << 30)),
            mode: Some(NetMode::Normal),
            ..NewVmRequest::default()
        }]
    );
    assert!(cluster
        .orch
        .calls()
        .contains(&"alice POST /v1/vms".to_string()));
}

#[test]
fn new_passes_every_flag() {
    let cluster = Cluster::new();
    let line = "new --type qemu --name my-vm --desc 'my box; with quotes' --clone org/a \
                --clone github.com/org/b --vcpu 1 --ram 1024 --disk 10G --mode paranoid \
                --node boxcutter-node-1";
    let ran = cluster.ssh(BOB_KEY, line).ok();
    assert!(ran.stdout.starts_with("Name: my-vm\n"), "{}", ran.stdout);
    assert!(
        ran.stdout.contains("vCPU: 1\nRAM: 1G\nDisk: 10G\n"),
        "{}",
        ran.stdout
    );
    let created = cluster.orch.state.lock().unwrap().created.clone();
    assert_eq!(
        created,
        [NewVmRequest {
            name: Some(VmName::new("my-vm").unwrap()),
            vm_type: Some(VmType::Qemu),
            description: "my box; with quotes".into(),
            clone: vec!["org/a".into(), "github.com/org/b".into()],
            vcpus: Some(1),
            ram_mib: Some(1024),
            disk: Some(ByteSize(10 << 30)),
            mode: Some(NetMode::Paranoid),
            node: Some("boxcutter-node-1".into()),
        }]
    );
    let list = cluster.ssh(BOB_KEY, "list").ok().stdout;
    assert!(list.contains("my-vm "), "{list}");
    assert!(list.contains(" qemu "), "{list}");
}

#[test]
fn list_shows_the_readme_columns_and_only_the_users_vms() {
    let cluster = Cluster::new();
    assert_eq!(
        cluster.ssh(BOB_KEY, "list").ok().stdout,
        "\
NAME     TAILSCALE IP  NODE              TYPE  VCPU  RAM  MODE    STATUS
bob-box  100.64.1.50   boxcutter-node-1  qemu  2     4G   normal  running
"
    );
    // alice is an admin: she sees every VM.
    let all = cluster.ssh(ALICE_KEY, "list").ok().stdout;
    assert_eq!(all.lines().count(), 3, "{all}");
    assert!(
        all.contains("\ndev-box  100.64.1.42   boxcutter-node-1  fc "),
        "{all}"
    );
}

#[test]
fn lifecycle_commands_act_on_the_named_vm() {
    let cluster = Cluster::new();
    assert_eq!(
        cluster.ssh(BOB_KEY, "stop bob-box").ok().stdout,
        "bob-box: stopped\n"
    );
    assert!(cluster
        .ssh(BOB_KEY, "list")
        .ok()
        .stdout
        .contains(" stopped\n"));
    assert_eq!(
        cluster.ssh(BOB_KEY, "start bob-box").ok().stdout,
        "bob-box: running\n"
    );

    let copy = cluster.ssh(BOB_KEY, "cp bob-box bob-copy").ok();
    assert!(
        copy.stdout.starts_with("Name: bob-copy\n"),
        "{}",
        copy.stdout
    );
    assert!(
        copy.stdout.ends_with("Connect: ssh bob-copy\n"),
        "{}",
        copy.stdout
    );
    assert!(
        copy.stderr.contains("] boot: guest ready\n"),
        "{}",
        copy.stderr
    );
    let random = cluster.ssh(BOB_KEY, "cp bob-box").ok();
    assert!(
        random.stdout.starts_with("Name: calm-otter\n"),
        "{}",
        random.stdout
    );

    assert_eq!(
        cluster.ssh(BOB_KEY, "destroy bob-copy").ok().stdout,
        "Destroyed bob-copy\n"
    );
    assert_eq!(
        cluster.orch.vm_names(),
        ["dev-box", "bob-box", "calm-otter"]
    );
}

#[test]
fn describe_shows_or_sets_and_logs_show_the_console() {
    let cluster = Cluster::new();
    let shown = cluster.ssh(ALICE_KEY, "describe dev-box").ok().stdout;
    for line in [
        "Name: dev-box\n",
        "Owner: alice\n",
        "Type: firecracker\n",
        "Created: 2023-11-14 22:13:20 UTC\n",
        "Description: \n",
        &format!("Host key: {HOST_KEY}\n"),
    ] {
        assert!(shown.contains(line), "{line:?} not in\n{shown}");
    }
    let set = cluster
        .ssh(ALICE_KEY, "describe dev-box 'rust builds;' and tests")
        .ok();
    assert!(
        set.stdout.contains("Description: rust builds; and tests\n"),
        "{}",
        set.stdout
    );
    assert!(cluster
        .ssh(ALICE_KEY, "describe dev-box")
        .ok()
        .stdout
        .contains("Description: rust builds; and tests\n"));

    assert_eq!(
        cluster.ssh(ALICE_KEY, "logs dev-box").ok().stdout,
        "[    0.000000] Linux version 6.1.0\nboxcutter-guest: ready\n"
    );
    assert_eq!(
        cluster.ssh(ALICE_KEY, "logs dev-box --lines 1").ok().stdout,
        "boxcutter-guest: ready\n"
    );
}

#[test]
fn cluster_users_and_repos() {
    let cluster = Cluster::new();
    assert_eq!(
        cluster.ssh(BOB_KEY, "status").ok().stdout,
        "Nodes: 1 up, 1 down\nvCPU: 4 of 16 allocated (25%), 12 free\n\
         RAM: 8G of 64G allocated (12%), 56G free\n\
         Disk: 100G of 500G allocated (20%), 400G free\nVMs: 2\n"
    );
    assert_eq!(
        cluster.ssh(BOB_KEY, "nodes").ok().stdout,
        "\
NODE              STATE  VMS  VCPU  RAM  DISK  TYPES  LAST SEEN
boxcutter-node-1  up     -    -     -    -     -      never
boxcutter-node-2  down   -    -     -    -     -      never
"
    );
    assert_eq!(
        cluster.ssh(ALICE_KEY, "adduser octocat").ok().stdout,
        "Added user octocat with 2 SSH keys\n"
    );
    cluster
        .ssh(BOB_KEY, "adduser mallory")
        .failed(1, "only admins can add users");

    assert_eq!(
        cluster
            .ssh(BOB_KEY, "repos add bob-box org/main-repo")
            .ok()
            .stdout,
        "bob-box can now access org/main-repo\n"
    );
    cluster.ssh(BOB_KEY, "repos add bob-box org/sub").ok();
    assert_eq!(
        cluster.ssh(BOB_KEY, "repos list bob-box").ok().stdout,
        "org/main-repo\norg/sub\n"
    );
    cluster
        .ssh(BOB_KEY, "repos add bob-box not-a-repo")
        .failed(1, "is not owner/repo");
}

#[test]
fn users_never_reach_each_others_vms() {
    let cluster = Cluster::new();
    for command in [
        "describe dev-box",
        "destroy dev-box",
        "stop dev-box",
        "logs dev-box",
        "cp dev-box",
        "connect dev-box",
        "repos list dev-box",
    ] {
        cluster
            .ssh(BOB_KEY, command)
            .failed(1, "no such VM: dev-box");
    }
    assert_eq!(cluster.orch.vm_names(), ["dev-box", "bob-box"]);
    // Every call went out as bob: nothing he typed could change that.
    let calls = cluster.orch.calls();
    assert!(calls
        .iter()
        .all(|c| c.starts_with("bob ") || c.starts_with("- GET /v1/auth/key")));
}

#[test]
fn bad_input_is_one_error_line_and_changes_nothing() {
    let cluster = Cluster::new();
    let cases = [
        (
            "new --ram 0",
            2,
            "invalid value '0' for '--ram <MiB>': must be at least 1",
        ),
        (
            "new --ram 99999999",
            1,
            "--ram 99999999 MiB is more than a VM may have",
        ),
        (
            "new --type vmware",
            2,
            "invalid value 'vmware' for '--type <TYPE>'",
        ),
        ("new --name 'a;b'", 2, "invalid name \"a;b\""),
        ("new --name \"$(id)\"", 2, "invalid name \"$(id)\""),
        ("new --name dev-box", 1, "a VM named dev-box exists"),
        ("new --bogus", 2, "unexpected argument '--bogus'"),
        ("new --desc 'unclosed", 2, "unterminated single quote"),
        ("frobnicate", 2, "unrecognized subcommand 'frobnicate'"),
        ("destroy", 2, "required arguments were not provided"),
        ("cp", 2, "required arguments were not provided"),
        ("destroy ghost", 1, "no such VM: ghost"),
        ("start ghost", 1, "no such VM: ghost"),
        ("repos", 2, "requires a subcommand"),
        ("list ; destroy dev-box", 2, "unexpected argument ';'"),
    ];
    for (command, code, want) in cases {
        cluster.ssh(ALICE_KEY, command).failed(code, want);
    }
    assert_eq!(cluster.orch.vm_names(), ["dev-box", "bob-box"]);
}

#[test]
fn a_create_failing_midway_ends_its_progress_with_the_error() {
    let cluster = Cluster::new();
    let ran = cluster.ssh(ALICE_KEY, "new --node full-node");
    assert_eq!(ran.code, 1);
    assert_eq!(ran.stdout, "");
    assert_eq!(
        ran.stderr.lines().last(),
        Some("error: full-node has no room for 2048 MiB"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.starts_with("[ 0.0s] scheduling: "),
        "{}",
        ran.stderr
    );
}

#[test]
fn help_needs_no_orchestrator() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("missing.toml");
    for command in [
        "",
        "help",
        "--help",
        "new --help",
        "repos add --help",
        "help describe",
    ] {
        let mut cmd = boxcutter(&config, &["ssh-command"]);
        cmd.env("SSH_ORIGINAL_COMMAND", command);
        let ran = run(cmd, b"").ok();
        assert!(
            ran.stdout.contains("Usage: ssh boxcutter"),
            "{command}: {}",
            ran.stdout
        );
        assert_eq!(ran.stderr, "");
    }
    // No command at all (`ssh boxcutter`): sshd sets no SSH_ORIGINAL_COMMAND.
    let ran = run(boxcutter(&config, &["ssh-command"]), b"").ok();
    assert!(ran.stdout.contains("new "), "{}", ran.stdout);
}

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
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let cluster = Cluster::with_ssh_port(port);
    cluster
        .ssh(ALICE_KEY, "connect dev-box")
        .failed(1, &format!("cannot reach dev-box at 127.0.0.1:{port}"));
}

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

#[test]
fn the_user_comes_from_the_login_key_only() {
    let cluster = Cluster::new();
    cluster
        .ssh(STRANGER_KEY, "list")
        .failed(1, "belongs to no Boxcutter user");

    let mut no_auth_info = boxcutter(&cluster.config, &["ssh-command"]);
    no_auth_info.env("SSH_ORIGINAL_COMMAND", "list");
    run(no_auth_info, b"").failed(1, "ExposeAuthInfo");

    // Inside a forced session, neither --user nor a direct command is accepted.
    let mut pick_user = boxcutter(&cluster.config, &["--user", "alice", "list"]);
    pick_user.env("SSH_ORIGINAL_COMMAND", "list");
    run(pick_user, b"").failed(2, "only `boxcutter ssh-command` runs");
    let mut both = boxcutter(&cluster.config, &["--user", "alice", "ssh-command"]);
    both.env("SSH_ORIGINAL_COMMAND", "list");
    run(both, b"").failed(2, "never from --user");
    // The control grammar has no --user at all.
    cluster
        .ssh(BOB_KEY, "--user alice list")
        .failed(2, "unexpected argument '--user'");
    cluster
        .ssh(BOB_KEY, "list --user alice")
        .failed(2, "unexpected argument '--user'");

    // Outside sshd, whoever can read the secret is an admin and names the user.
    let direct = run(boxcutter(&cluster.config, &["--user", "bob", "list"]), b"").ok();
    assert!(direct.stdout.contains("bob-box"), "{}", direct.stdout);
    run(boxcutter(&cluster.config, &["list"]), b"").failed(2, "--user NAME is needed");
}

#[test]
fn a_wrong_secret_or_a_missing_config_is_reported() {
    let cluster = Cluster::new();
    let other = cluster.dir.path().join("other.key");
    ClusterSecret::load_or_create(&other).unwrap();
    let text = std::fs::read_to_string(&cluster.config).unwrap();
    let url = text.lines().next().unwrap().split('"').nth(1).unwrap();
    write_config(&cluster.config, url, &other, None);
    cluster
        .ssh(ALICE_KEY, "list")
        .failed(1, "bad token signature");

    std::fs::remove_file(&cluster.config).unwrap();
    cluster.ssh(ALICE_KEY, "list").failed(1, "cli.toml");
}
