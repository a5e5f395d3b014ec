//! The command line itself: help works without an orchestrator, and bad input is one
//! error line that changes nothing.

use crate::common::{boxcutter, run, Cluster, ALICE_KEY};

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
