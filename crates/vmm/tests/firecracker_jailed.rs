//! `FirecrackerVm` under `fake-jailer`: Firecracker in a chroot of its own as an
//! unprivileged uid, copied through a snapshot, its jail gone with it.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod firecracker_vm_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use boxcutter_vmm::firecracker::api::{InstanceState, SnapshotType};
use boxcutter_vmm::firecracker::jail::{Jail, JailerConfig};
use boxcutter_vmm::firecracker::vm::{
    FirecrackerConfig, FirecrackerError, FirecrackerPaths, FirecrackerVm, LaunchStep, SnapshotFiles,
};
use boxcutter_vmm::firecracker::vsock::AgentListener;
use firecracker_vm_common::{assert_nothing_left, config, refresh, state, Reaper, FAKE};

const FAKE_JAILER: &str = env!("CARGO_BIN_EXE_fake-jailer");

/// The uid and gid jailed test guests run as (no passwd entry needed).
const JAIL_UID: u32 = 64123;

/// A guest like [`config`]'s, run under `fake-jailer` as [`JAIL_UID`], jailed as `id`
/// under `base`.
fn jailed_config(dir: &Path, base: &Path, id: &str) -> FirecrackerConfig {
    let jailer = JailerConfig {
        jailer: PathBuf::from(FAKE_JAILER),
        uid: JAIL_UID,
        gid: JAIL_UID,
        chroot_base: base.to_owned(),
    };
    let jail = Jail::new(&jailer, Path::new(FAKE), id);
    FirecrackerConfig {
        id: id.into(),
        paths: FirecrackerPaths::jailed(dir, jail),
        jailer: Some(jailer),
        ..config(dir, &[])
    }
}

/// A directory the jail's uid can traverse (tempdirs are 0700).
fn open_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("bc-jail-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn process_uid(pid: i32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_jailed_microvm_runs_unprivileged_is_copied_and_leaves_no_jail() {
    let top = open_tempdir();
    let base = top.path().join("jails");
    let (src_dir, copy_dir) = (top.path().join("src"), top.path().join("copy"));
    for dir in [&src_dir, &copy_dir] {
        std::fs::create_dir(dir).unwrap();
    }
    let source_config = jailed_config(&src_dir, &base, "vm-src");
    let jail = source_config.paths.jail.clone().unwrap();
    assert!(jail.root.starts_with(base.join("fake-firecracker/vm-src")));
    let listener = AgentListener::bind(&source_config.paths.vsock).unwrap();
    listener.hand_over(JAIL_UID, JAIL_UID).unwrap();

    let _reaper = Reaper::for_config(&source_config);
    let source = FirecrackerVm::launch(&source_config, None).await.unwrap();
    assert_eq!(
        process_uid(source.pid()),
        JAIL_UID,
        "firecracker dropped root"
    );
    assert!(source_config.paths.socket.starts_with(&jail.root));
    source
        .wait_ready(&listener, Duration::from_secs(10))
        .await
        .unwrap();
    let seen = source.client().vm_config().await.unwrap();
    assert_eq!(
        seen.drives[0].path_on_host.as_deref(),
        Some(Path::new("/rootfs.img")),
        "firecracker is given the jail's paths"
    );
    assert_eq!(seen.vsock.unwrap().uds_path, Path::new("/v.sock"));

    // A copy of the running guest: the snapshot is written in the source's jail and moved
    // out, then put into the copy's own jail.
    source.pause().await.unwrap();
    let snapshot = SnapshotFiles::in_dir(&copy_dir);
    source
        .snapshot(SnapshotType::Full, &snapshot.state, &snapshot.memory)
        .await
        .unwrap();
    source.resume().await.unwrap();
    assert!(snapshot.state.is_file() && snapshot.memory.is_file());
    assert!(
        !jail.host_path("snapshot.state").exists(),
        "moved out of the jail"
    );

    let copy_config = jailed_config(&copy_dir, &base, "vm-copy");
    let _reaper = Reaper::for_config(&copy_config);
    let copy = FirecrackerVm::restore(&copy_config, &snapshot, None)
        .await
        .unwrap();
    assert_eq!(process_uid(copy.pid()), JAIL_UID);
    assert_eq!(state(&copy).await, InstanceState::Running);
    copy.refresh(&refresh("vm-copy"), Duration::from_secs(5))
        .await
        .unwrap();

    // Adoption recognises a jailed process by its id.
    let adopted = FirecrackerVm::adopt(&copy_config.paths).unwrap();
    assert_eq!(adopted.pid(), copy.pid());

    copy.shutdown(Duration::from_secs(5)).await;
    source.kill().await;
    drop(listener);
    for config in [&source_config, &copy_config] {
        assert_nothing_left(config);
        let jail = config.paths.jail.as_ref().unwrap();
        assert!(!jail.dir().exists(), "{} left", jail.dir().display());
    }
    assert!(copy_config.root_disk.is_file(), "the VM's own disk stays");
}

#[tokio::test]
async fn a_disk_the_jailed_firecracker_cannot_open_fails_the_launch_and_leaves_nothing() {
    let top = open_tempdir();
    let base = top.path().join("jails");
    let config = jailed_config(top.path(), &base, "vm-locked");
    // The kernel is only linked in, not handed over: unreadable to the jail's uid.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&config.kernel, std::fs::Permissions::from_mode(0o600)).unwrap();
    let _reaper = Reaper::for_config(&config);
    let error = FirecrackerVm::launch(&config, None).await.unwrap_err();
    assert!(
        matches!(
            &error,
            FirecrackerError::Launch {
                step: LaunchStep::BootSource,
                ..
            }
        ),
        "{error:?}"
    );
    assert_nothing_left(&config);
    assert!(!config.paths.jail.as_ref().unwrap().dir().exists());
}
