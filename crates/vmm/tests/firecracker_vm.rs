//! `FirecrackerVm` against `FakeFirecracker` (the `fake-firecracker` binary): the whole
//! lifecycle with a snapshot, adoption after an agent restart, and launch and snapshot
//! failures, each of which must leave no process, socket, pidfile or partial file behind.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod firecracker_vm_common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use boxcutter_vmm::firecracker::api::{ApiError, InstanceState, SnapshotType};
use boxcutter_vmm::firecracker::vm::{
    FirecrackerConfig, FirecrackerError, FirecrackerNic, FirecrackerVm, LaunchStep, SnapshotFiles,
    CONFIG_DRIVE_ID, ROOT_DRIVE_ID,
};
use boxcutter_vmm::firecracker::vsock::AgentListener;
use firecracker_vm_common::{
    assert_nothing_left, config, processes_serving, refresh, state, Reaper,
};
use hyper::StatusCode;

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
