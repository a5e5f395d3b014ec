//! Who a session acts for: only the login key names the user, no command reaches another
//! user's VM, and a wrong secret or a missing config is reported.

use boxcutter_auth::ClusterSecret;

use crate::common::{boxcutter, run, write_config, Cluster, ALICE_KEY, BOB_KEY, STRANGER_KEY};

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
