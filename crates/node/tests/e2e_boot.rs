//! End to end: build (or reuse) the golden image, boot it under the real QEMU driver on a
//! TAP in a network namespace of the test's own, wait for the guest agent's ready report,
//! SSH in with the real OpenSSH client, power off through QMP, and check that nothing is
//! left behind. Needs root, QEMU and the Debian packages `scripts/install-deps` installs.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use boxcutter_node::guest::{boot_guest, BootEnv, BootError, GuestNetSpec, GuestSpec};
use boxcutter_types::guest::GuestNet;
use boxcutter_types::{ByteSize, VmName};
use support::guest_sandbox::{GuestSandbox, Ssh};

const GATEWAY: &str = "10.77.0.1";
const GUEST: &str = "10.77.0.2";

fn env(sandbox: &GuestSandbox, image: PathBuf) -> BootEnv {
    sandbox.boot_env(image, ByteSize(3 << 30), Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_guest_boots_answers_ssh_and_powers_off_cleanly() {
    let image = support::test_image();
    let sandbox = GuestSandbox::new("e2e", "boxcutter-e2e-");
    let tap = sandbox.network(GATEWAY);
    let gateway = GATEWAY.parse().unwrap();
    let (key, public) = support::keypair(sandbox.dir.path());

    let spec = GuestSpec {
        name: VmName::new("e2e-guest").unwrap(),
        vcpus: 2,
        memory_mib: 512,
        net: Some(GuestNetSpec {
            tap: tap.to_string(),
            guest: GuestNet {
                address: GUEST.parse().unwrap(),
                prefix_len: 24,
                gateway,
                dns: vec![gateway],
            },
        }),
        authorized_keys: vec![public],
    };
    let booted = boot_guest(&spec, &env(&sandbox, image)).await.unwrap();
    eprintln!("timings: {:?}", booted.timings);

    let ssh = Ssh::new(&sandbox, &key, GUEST, &booted.host_public_key);
    assert_eq!(ssh.run("hostname"), (true, "e2e-guest".into()));
    assert_eq!(ssh.run("cat /etc/boxcutter/vm-type"), (true, "qemu".into()));
    let (ok, id) = ssh.run("id dev");
    assert!(ok && id.contains("(dev)") && id.contains("(sudo)"), "{id}");
    assert_eq!(
        ssh.run("sudo -n true && echo root-ok"),
        (true, "root-ok".into())
    );
    let (ok, size) = ssh.run("df -B1 --output=size / | tail -n 1");
    let size: u64 = size.trim().parse().unwrap_or(0);
    assert!(
        ok && size > (3u64 << 30) * 9 / 10 && size <= 3 << 30,
        "root fs is {size} bytes"
    );

    let vm = booted.vm.clone();
    vm.shutdown(Duration::from_secs(30)).await.unwrap();
    assert!(!vm.is_running());
    let console = std::fs::read_to_string(vm.paths().console.clone()).unwrap();
    assert!(
        console.contains("reboot: Power down"),
        "not a clean power-off:\n{console}"
    );

    sandbox.remove_and_assert_nothing_left();
}

#[tokio::test]
async fn e2e_corrupted_or_missing_image_is_named_without_booting() {
    let image = support::test_image();
    let sandbox = GuestSandbox::new("bad", "boxcutter-e2e-");
    let spec = GuestSpec {
        name: VmName::new("broken").unwrap(),
        vcpus: 1,
        memory_mib: 256,
        net: None,
        authorized_keys: vec![],
    };

    let missing = sandbox.dir.path().join("no-image");
    let err = boot_guest(&spec, &env(&sandbox, missing.clone()))
        .await
        .unwrap_err();
    assert!(
        chain(&err).contains(&missing.join("manifest.json").display().to_string()),
        "{}",
        chain(&err)
    );

    // A copy of the image whose root filesystem lost its superblock.
    let bad = sandbox.dir.path().join("bad-image");
    std::fs::create_dir(&bad).unwrap();
    for name in ["vmlinuz", "vmlinux", "initrd.img", "manifest.json"] {
        std::fs::copy(image.join(name), bad.join(name)).unwrap();
    }
    let rootfs_size = std::fs::metadata(image.join("rootfs.ext4")).unwrap().len();
    let file = std::fs::File::create(bad.join("rootfs.ext4")).unwrap();
    file.set_len(rootfs_size).unwrap();
    let started = Instant::now();
    let err = boot_guest(&spec, &env(&sandbox, bad.clone()))
        .await
        .unwrap_err();
    let text = chain(&err);
    assert!(matches!(err, BootError::Image(_)), "{text}");
    assert!(
        text.contains(&format!(
            "{} is not an ext4 filesystem",
            bad.join("rootfs.ext4").display()
        )),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        !sandbox.vm_dir().join("root.qcow2").exists(),
        "a failed boot left its disk"
    );
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
