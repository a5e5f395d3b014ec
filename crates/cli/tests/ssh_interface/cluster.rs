//! Commands about the cluster rather than one VM: `status`, `nodes`, `adduser` (admins
//! only) and a VM's `repos`.

use crate::common::{Cluster, ALICE_KEY, BOB_KEY};

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
