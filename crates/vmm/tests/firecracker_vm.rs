//! `FirecrackerVm` against `FakeFirecracker` (the `fake-firecracker` binary): the whole
//! lifecycle with a snapshot, adoption after an agent restart, and launch and snapshot
//! failures, each of which must leave no process, socket, pidfile or partial file behind.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use boxcutter_types::guest::{HostCommand, Refresh};
use boxcutter_types::VmName;
use boxcutter_vmm::firecracker::api::{ApiError, InstanceState, SnapshotType};
use boxcutter_vmm::firecracker::jail::{Jail, JailerConfig};
use boxcutter_vmm::firecracker::vm::{
    FirecrackerConfig, FirecrackerError, FirecrackerNic, FirecrackerPaths, FirecrackerVm,
    LaunchStep, SnapshotFiles, CONFIG_DRIVE_ID, ROOT_DRIVE_ID,
};
use boxcutter_vmm::firecracker::vsock::AgentListener;
use hyper::StatusCode;

const FAKE: &str = env!("CARGO_BIN_EXE_fake-firecracker");

/// A guest in `dir`, with its files, run by the fake with `faults` injected.
fn config(dir: &Path, faults: &[&str]) -> FirecrackerConfig {
    let file = |name: &str, size: usize| {
        let path = dir.join(name);
        std::fs::write(&path, vec![0u8; size]).unwrap();
        path
    };
    FirecrackerConfig {
        binary: PathBuf::from(FAKE),
        id: "vm_test".into(),
        vcpus: 1,
        memory_mib: 128,
        kernel: file("vmlinux", 64),
        initrd: Some(file("initrd.img", 64)),
        cmdline: "console=ttyS0 reboot=k panic=1 root=/dev/vda".into(),
        root_disk: file("root.img", 1 << 20),
        config_drive: Some(file("config.img", 1 << 16)),
        nic: Some(FirecrackerNic {
            tap: "bc-fc-test0".into(),
            mac: "06:00:ac:10:00:02".parse().unwrap(),
        }),
        guest_cid: 3,
        track_dirty_pages: true,
        extra_args: faults
            .iter()
            .flat_map(|fault| [OsString::from("--fake-fault"), OsString::from(fault)])
            .collect(),
        socket_wait: Duration::from_secs(5),
        paths: FirecrackerPaths::in_dir(dir),
        jailer: None,
    }
}

/// The pids of live processes whose command line names `socket`.
fn processes_serving(socket: &Path) -> Vec<u32> {
    let needle = socket.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.windows(needle.len()).any(|w| w == needle)
        })
        .collect()
}

fn assert_nothing_left(config: &FirecrackerConfig) {
    let paths = &config.paths;
    assert_eq!(processes_serving(&paths.socket), Vec::<u32>::new());
    for file in [&paths.socket, &paths.pidfile, &paths.vsock] {
        assert!(!file.exists(), "{} left behind", file.display());
    }
}

/// Kills, when dropped, whatever Firecracker (or fake) still serves a config's socket or
/// carries its jailed id, so a failing test leaves no process behind.
struct Reaper(Vec<u8>);

impl Reaper {
    fn for_config(config: &FirecrackerConfig) -> Self {
        Self(match &config.paths.jail {
            Some(jail) => jail.process_marker(),
            None => config.paths.socket.as_os_str().as_encoded_bytes().to_vec(),
        })
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for pid in entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        {
            if boxcutter_sys::proc::runs_with(pid, &self.0) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

async fn state(vm: &FirecrackerVm) -> InstanceState {
    vm.describe().await.unwrap().state
}

#[tokio::test]
async fn a_microvm_boots_pauses_snapshots_resumes_and_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &[]);
    let _reaper = Reaper::for_config(&config);
    let vm = FirecrackerVm::launch(&config, None).await.unwrap();
    assert!(vm.is_running());
    assert_eq!(
        processes_serving(&config.paths.socket),
        vec![vm.pid() as u32]
    );
    let pidfile = std::fs::read_to_string(&config.paths.pidfile).unwrap();
    assert_eq!(pidfile.trim(), vm.pid().to_string());
    assert_eq!(state(&vm).await, InstanceState::Running);

    let vm_config = vm.client().vm_config().await.unwrap();
    let drives: Vec<(&str, Option<bool>)> = vm_config
        .drives
        .iter()
        .map(|d| (d.drive_id.as_str(), d.is_read_only))
        .collect();
    assert_eq!(
        drives,
        [(ROOT_DRIVE_ID, Some(false)), (CONFIG_DRIVE_ID, Some(true))]
    );
    assert_eq!(vm_config.network_interfaces.len(), 1);
    assert_eq!(vm_config.vsock.unwrap().guest_cid, 3);
    assert_eq!(
        vm_config.machine_config.unwrap().track_dirty_pages,
        Some(true)
    );

    vm.pause().await.unwrap();
    assert_eq!(state(&vm).await, InstanceState::Paused);
    let (snap, mem) = (dir.path().join("vm.state"), dir.path().join("vm.mem"));
    vm.snapshot(SnapshotType::Full, &snap, &mem).await.unwrap();
    assert!(snap.is_file());
    assert_eq!(std::fs::metadata(&mem).unwrap().len(), 128 << 20);
    vm.resume().await.unwrap();
    assert_eq!(state(&vm).await, InstanceState::Running);

    let started = Instant::now();
    vm.shutdown(Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "exited on ctrl-alt-del"
    );
    assert!(!vm.is_running());
    assert_nothing_left(&config);
}

#[tokio::test]
async fn a_restarted_agent_adopts_the_running_microvm() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &[]);
    let _reaper = Reaper::for_config(&config);
    let pid = FirecrackerVm::launch(&config, None).await.unwrap().pid();

    // The handle is gone, as after an agent restart; the process is not.
    let vm = FirecrackerVm::adopt(&config.paths).unwrap();
    assert_eq!(vm.pid(), pid);
    assert_eq!(state(&vm).await, InstanceState::Running);

    vm.kill().await;
    assert_nothing_left(&config);
    assert!(matches!(
        FirecrackerVm::adopt(&config.paths),
        Err(FirecrackerError::NotRunning { .. })
    ));
}

#[tokio::test]
async fn firecracker_dying_during_boot_leaves_nothing_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &["die-during-boot"]);
    let _reaper = Reaper::for_config(&config);
    let error = FirecrackerVm::launch(&config, None).await.unwrap_err();
    let FirecrackerError::ExitedDuringBoot { step, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(step, &LaunchStep::InstanceStart);
    let text = error.to_string();
    assert!(
        text.starts_with("firecracker exited during boot (at instance start): "),
        "{text}"
    );
    assert_nothing_left(&config);
}

#[tokio::test]
async fn an_api_socket_that_never_appears_fails_within_the_wait_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = FirecrackerConfig {
        socket_wait: Duration::from_millis(300),
        ..config(dir.path(), &["no-socket"])
    };
    let started = Instant::now();
    let _reaper = Reaper::for_config(&config);
    let error = FirecrackerVm::launch(&config, None).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(&error, FirecrackerError::SocketNeverAppeared { socket, .. }
            if socket == &config.paths.socket),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "api socket {} never appeared within 300ms",
            config.paths.socket.display()
        )
    );
    assert_nothing_left(&config);
}

#[tokio::test]
async fn a_refused_drive_stops_the_launch_at_that_drive() {
    let dir = tempfile::tempdir().unwrap();
    let fault = format!("500:PUT /drives/{ROOT_DRIVE_ID}");
    let config = config(dir.path(), &[&fault]);
    let _reaper = Reaper::for_config(&config);
    let error = FirecrackerVm::launch(&config, None).await.unwrap_err();
    let FirecrackerError::Launch { step, source } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(step, &LaunchStep::Drive(ROOT_DRIVE_ID.into()));
    assert_eq!(source.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(
        error.to_string(),
        "firecracker launch failed at drive rootfs"
    );
    assert_nothing_left(&config);
}

#[tokio::test]
async fn a_snapshot_failing_halfway_leaves_no_partial_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &["snapshot-halfway"]);
    let _reaper = Reaper::for_config(&config);
    let vm = FirecrackerVm::launch(&config, None).await.unwrap();
    vm.pause().await.unwrap();

    let (snap, mem) = (dir.path().join("vm.state"), dir.path().join("vm.mem"));
    let error = vm
        .snapshot(SnapshotType::Full, &snap, &mem)
        .await
        .unwrap_err();
    let FirecrackerError::Snapshot {
        state: named,
        source,
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(named, &snap);
    assert!(
        matches!(source, ApiError::SnapshotIncomplete { partial_files, .. }
            if partial_files == &[snap.clone(), mem.clone()]),
        "{source:?}"
    );
    assert!(!snap.exists() && !mem.exists(), "partial files removed");

    // The guest stays paused and can go on.
    assert_eq!(state(&vm).await, InstanceState::Paused);
    vm.resume().await.unwrap();
    vm.kill().await;
    assert_nothing_left(&config);
}

#[tokio::test]
async fn a_guest_ignoring_ctrl_alt_del_is_killed_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &["ignore-ctrl-alt-del"]);
    let _reaper = Reaper::for_config(&config);
    let vm = FirecrackerVm::launch(&config, None).await.unwrap();
    vm.shutdown(Duration::from_millis(300)).await;
    assert!(!vm.is_running());
    assert_nothing_left(&config);
}

#[tokio::test]
async fn a_missing_kernel_fails_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config = FirecrackerConfig {
        kernel: dir.path().join("no-vmlinux"),
        ..config(dir.path(), &[])
    };
    let _reaper = Reaper::for_config(&config);
    let error = FirecrackerVm::launch(&config, None).await.unwrap_err();
    assert!(
        matches!(&error, FirecrackerError::MissingFile { what: "kernel", .. }),
        "{error:?}"
    );
    assert!(!config.paths.console.exists(), "nothing was spawned");
}

#[tokio::test]
async fn the_guest_agent_reports_ready_over_vsock() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &[]);
    // Bound before the launch, as the node does: the agent connects as soon as it runs.
    let listener = AgentListener::bind(&config.paths.vsock).unwrap();
    assert_eq!(
        listener.path(),
        PathBuf::from(format!("{}_1024", config.paths.vsock.display()))
    );
    let _reaper = Reaper::for_config(&config);
    let vm = FirecrackerVm::launch(&config, None).await.unwrap();
    vm.wait_ready(&listener, Duration::from_secs(10))
        .await
        .unwrap();
    vm.kill().await;
    drop(listener);
    assert!(!dir.path().join("vsock.sock_1024").exists());
    assert_nothing_left(&config);
}

#[tokio::test]
async fn a_guest_that_never_reports_ready_times_out_with_its_console() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &[]);
    let _reaper = Reaper::for_config(&config);
    let vm = FirecrackerVm::launch(&config, None).await.unwrap();
    // Listening somewhere the guest does not connect to.
    let elsewhere = AgentListener::bind(&dir.path().join("other.sock")).unwrap();
    let error = vm
        .wait_ready(&elsewhere, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(error, FirecrackerError::ReadyTimeout { .. }),
        "{error:?}"
    );
    vm.kill().await;
    assert_nothing_left(&config);
}

fn refresh(name: &str) -> HostCommand {
    HostCommand::Refresh(Refresh {
        name: VmName::new(name).unwrap(),
        net: None,
        unix_time_ms: 1_900_000_000_000,
        entropy: "ab".repeat(32),
        ssh_host_key: None,
    })
}

#[tokio::test]
async fn a_running_microvm_is_copied_through_a_snapshot() {
    let (src_dir, copy_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let source_config = config(src_dir.path(), &[]);
    let listener = AgentListener::bind(&source_config.paths.vsock).unwrap();
    let _reaper = Reaper::for_config(&source_config);
    let source = FirecrackerVm::launch(&source_config, None).await.unwrap();
    source
        .wait_ready(&listener, Duration::from_secs(10))
        .await
        .unwrap();

    source.pause().await.unwrap();
    let snapshot = SnapshotFiles::in_dir(copy_dir.path());
    source
        .snapshot(SnapshotType::Full, &snapshot.state, &snapshot.memory)
        .await
        .unwrap();
    source.resume().await.unwrap();

    let copy_config = FirecrackerConfig {
        id: "vm_copy".into(),
        nic: Some(FirecrackerNic {
            tap: "bc-fc-copy0".into(),
            mac: "06:00:ac:10:00:06".parse().unwrap(),
        }),
        ..config(copy_dir.path(), &[])
    };
    let _reaper = Reaper::for_config(&copy_config);
    let copy = FirecrackerVm::restore(&copy_config, &snapshot, None)
        .await
        .unwrap();
    assert_eq!(state(&copy).await, InstanceState::Running);
    let restored = copy.client().vm_config().await.unwrap();
    let files: Vec<_> = restored
        .drives
        .iter()
        .map(|d| d.path_on_host.clone().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            copy_config.root_disk.clone(),
            copy_config.config_drive.clone().unwrap()
        ],
        "the copy runs on its own disks"
    );
    assert_eq!(restored.network_interfaces[0].host_dev_name, "bc-fc-copy0");
    assert_eq!(restored.vsock.unwrap().uds_path, copy_config.paths.vsock);

    copy.refresh(&refresh("copy-1"), Duration::from_secs(5))
        .await
        .unwrap();
    // The source goes on beside its copy.
    assert_eq!(state(&source).await, InstanceState::Running);

    copy.shutdown(Duration::from_secs(5)).await;
    source.shutdown(Duration::from_secs(5)).await;
    assert_nothing_left(&copy_config);
    assert_nothing_left(&source_config);
}

#[tokio::test]
async fn a_paused_guest_cannot_be_refreshed() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &[]);
    let _reaper = Reaper::for_config(&config);
    let vm = FirecrackerVm::launch(&config, None).await.unwrap();
    vm.pause().await.unwrap();
    let error = vm
        .refresh(&refresh("copy-2"), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        error.to_string() == "guest channel"
            && boxcutter_sys::error_chain(&error).contains("does not accept connections"),
        "{}",
        boxcutter_sys::error_chain(&error)
    );
    vm.kill().await;
    assert_nothing_left(&config);
}

#[tokio::test]
async fn a_missing_snapshot_fails_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &[]);
    let _reaper = Reaper::for_config(&config);
    let error = FirecrackerVm::restore(&config, &SnapshotFiles::in_dir(dir.path()), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            FirecrackerError::MissingFile {
                what: "snapshot",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!config.paths.console.exists(), "nothing was spawned");
}

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
