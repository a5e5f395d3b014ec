//! Looking at VMs: `list`'s columns and who sees what, `describe` (shown and set) and
//! `logs`.

use crate::common::{Cluster, ALICE_KEY, BOB_KEY, HOST_KEY};

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
