//! A VM's life: `new` (its flags, its streamed progress and the closing block, and a
//! create that fails halfway), then `stop`, `start`, `cp` and `destroy`.

use boxcutter_types::guest::VmType;
use boxcutter_types::orch::NewVmRequest;
use boxcutter_types::{ByteSize, NetMode, VmName};

use crate::common::{Cluster, ALICE_KEY, BOB_KEY};

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
