//! The Firecracker API contract, as one test list run against two targets: `fake::*`
//! against `FakeFirecracker` (always), `real::*` against the binary named by
//! `BOXCUTTER_TEST_FIRECRACKER` (skipped, saying so, when it is unset). Both run the very
//! same functions below, so the fake cannot drift from the real binary unnoticed wherever
//! a real run happens. Procedure: `docs/firecracker.md`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod firecracker_support;

use std::time::Duration;

use boxcutter_vmm::firecracker::api::{
    ApiClient, ApiError, Balloon, Drive, DriveUpdate, InstanceState, Logger, MachineConfig,
    Metrics, NoContent, Request, SnapshotCreate, SnapshotLoad, VsockOverride,
};
use firecracker_support::{skipped, Target, MEM_MIB};
use hyper::{Method, StatusCode};
use serde::Serialize;

/// Declares each test twice: against the fake and against the real binary.
macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod fake {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Target::fake()).await
                }
            )*
        }
        mod real {
            $(
                #[tokio::test]
                async fn $name() {
                    match super::Target::real() {
                        Some(target) => super::$name(target).await,
                        None => super::skipped(stringify!($name)),
                    }
                }
            )*
        }
    };
}

contract_tests! {
    configure_start_pause_snapshot_resume_and_ctrl_alt_del,
    a_snapshot_loads_in_a_fresh_process,
    unknown_fields_are_refused,
    missing_required_fields_are_refused,
    instance_start_before_a_boot_source_is_refused,
    a_snapshot_of_a_running_guest_is_refused,
    pre_boot_resources_are_refused_after_start,
    runtime_calls_are_refused_before_start,
    a_snapshot_load_after_boot_configuration_is_refused,
    a_drive_id_differing_from_its_path_is_refused,
    a_loaded_snapshot_takes_another_vsock_socket_and_drive_file,
    a_drive_update_before_start_is_refused,
}

/// How long a guest may take to end after Ctrl-Alt-Del.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// Asserts `result` is a 400 refusal whose fault message contains `needle` (any case).
fn assert_refused<T: std::fmt::Debug>(result: Result<T, ApiError>, needle: &str) {
    let error = result.expect_err("the request must be refused");
    assert_eq!(error.status(), Some(StatusCode::BAD_REQUEST), "{error}");
    let message = error.fault_message().unwrap_or_default().to_lowercase();
    assert!(message.contains(&needle.to_lowercase()), "{error}");
}

async fn state(client: &ApiClient) -> InstanceState {
    client.describe_instance().await.expect("GET /").state
}

async fn configure_start_pause_snapshot_resume_and_ctrl_alt_del(target: Target) {
    let dir = tempfile::tempdir().unwrap();
    let mut vm = target.launch(dir.path(), "lifecycle").await;
    let client = vm.client.clone();
    let info = client.describe_instance().await.expect("GET /");
    assert_eq!(
        (info.state, info.app_name.as_str()),
        (InstanceState::NotStarted, "Firecracker")
    );
    assert_eq!(info.id, "lifecycle");
    assert!(!client.version().await.expect("GET /version").is_empty());

    let (log, metrics) = (dir.path().join("fc.log"), dir.path().join("metrics.json"));
    std::fs::write(&log, b"").unwrap();
    std::fs::write(&metrics, b"").unwrap();
    let logger = Logger {
        log_path: Some(log),
        ..Logger::default()
    };
    client.put_logger(&logger).await.expect("logger");
    client
        .put_metrics(&Metrics {
            metrics_path: metrics,
        })
        .await
        .expect("metrics");
    let guest = target.guest(dir.path());
    guest.configure(&client).await;
    let balloon = Balloon {
        amount_mib: 0,
        deflate_on_oom: true,
        stats_polling_interval_s: None,
    };
    client.put_balloon(&balloon).await.expect("balloon");

    let config = client.vm_config().await.expect("GET /vm/config");
    let machine = config.machine_config.expect("machine-config");
    assert_eq!((machine.vcpu_count, machine.mem_size_mib), (1, MEM_MIB));
    assert_eq!(machine.track_dirty_pages, Some(true));
    assert!(config
        .drives
        .iter()
        .any(|d| d.drive_id == "data" && d.is_read_only == Some(false)));
    assert_eq!(config.vsock.expect("vsock").guest_cid, 3);

    client.start_instance().await.expect("InstanceStart");
    assert_eq!(state(&client).await, InstanceState::Running);
    client.flush_metrics().await.expect("FlushMetrics");

    client.pause().await.expect("pause");
    assert_eq!(state(&client).await, InstanceState::Paused);
    let full = SnapshotCreate::full(dir.path().join("full.state"), dir.path().join("full.mem"));
    client.create_snapshot(&full).await.expect("full snapshot");
    assert!(full.snapshot_path.is_file());
    let memory = std::fs::metadata(&full.mem_file_path)
        .expect("memory file")
        .len();
    assert!(
        memory >= u64::from(MEM_MIB) << 20,
        "memory file of {memory} bytes"
    );

    client.resume().await.expect("resume");
    assert_eq!(state(&client).await, InstanceState::Running);
    client.pause().await.expect("pause again");
    let diff = SnapshotCreate::diff(dir.path().join("diff.state"), dir.path().join("diff.mem"));
    client.create_snapshot(&diff).await.expect("diff snapshot");
    assert!(diff.snapshot_path.is_file() && diff.mem_file_path.is_file());
    client.resume().await.expect("resume after diff");

    client.send_ctrl_alt_del().await.expect("SendCtrlAltDel");
    let exit = vm.wait_exit(SHUTDOWN_WAIT).await;
    // A real guest reboots (ending Firecracker) only if its kernel and init react to the
    // keystroke; the fake always models a guest that does.
    if target.is_fake() {
        assert!(exit.expect("the guest rebooted").success(), "{exit:?}");
    } else if exit.is_none() {
        eprintln!("the real guest ignored Ctrl-Alt-Del for {SHUTDOWN_WAIT:?}; killing it");
        vm.kill().await;
    }
}

async fn a_snapshot_loads_in_a_fresh_process(target: Target) {
    let dir = tempfile::tempdir().unwrap();
    let guest = target.guest(dir.path());
    let snapshot = SnapshotCreate::full(dir.path().join("vm.state"), dir.path().join("vm.mem"));
    {
        let mut source = target.launch(dir.path(), "source").await;
        guest.configure(&source.client).await;
        source.client.start_instance().await.expect("InstanceStart");
        source.client.pause().await.expect("pause");
        source
            .client
            .create_snapshot(&snapshot)
            .await
            .expect("snapshot");
        source.kill().await;
    }
    // The source's vsock socket would make the restored device's bind fail.
    std::fs::remove_file(&guest.vsock).expect("the vsock socket existed");

    let restored = target.launch(dir.path(), "restored").await;
    let client = &restored.client;
    let log = dir.path().join("restored.log");
    std::fs::write(&log, b"").unwrap();
    let logger = Logger {
        log_path: Some(log),
        ..Logger::default()
    };
    client
        .put_logger(&logger)
        .await
        .expect("a logger is allowed before a load");
    let load = SnapshotLoad::from_files(&snapshot.snapshot_path, &snapshot.mem_file_path)
        .tracking_dirty_pages();
    client.load_snapshot(&load).await.expect("load");
    assert_eq!(state(client).await, InstanceState::Paused);

    let config = client.vm_config().await.expect("GET /vm/config");
    assert!(config.drives.iter().any(|d| d.drive_id == "data"));
    assert_eq!(config.vsock.expect("vsock").uds_path, guest.vsock);
    assert_eq!(
        config.machine_config.expect("machine").mem_size_mib,
        MEM_MIB
    );

    client.resume().await.expect("resume");
    assert_eq!(state(client).await, InstanceState::Running);
    client.pause().await.expect("pause");
    let diff = SnapshotCreate::diff(dir.path().join("next.state"), dir.path().join("next.mem"));
    client
        .create_snapshot(&diff)
        .await
        .expect("diff snapshot after a tracked load");
}

/// A copy of a running guest, as `cp` makes it: the snapshot is loaded while its source
/// still holds its vsock socket, onto another socket, and the copy's drive is switched to
/// its own file before it runs.
async fn a_loaded_snapshot_takes_another_vsock_socket_and_drive_file(target: Target) {
    let dir = tempfile::tempdir().unwrap();
    let guest = target.guest(dir.path());
    let snapshot = SnapshotCreate::full(dir.path().join("vm.state"), dir.path().join("vm.mem"));
    let source = target.launch(dir.path(), "source").await;
    guest.configure(&source.client).await;
    source.client.start_instance().await.expect("InstanceStart");
    source.client.pause().await.expect("pause");
    source
        .client
        .create_snapshot(&snapshot)
        .await
        .expect("snapshot");
    source.client.resume().await.expect("resume");

    let copy = target.launch(dir.path(), "copy").await;
    let copy_vsock = dir.path().join("copy-vsock.sock");
    let mut load = SnapshotLoad::from_files(&snapshot.snapshot_path, &snapshot.mem_file_path);
    load.vsock_override = Some(VsockOverride {
        uds_path: copy_vsock.clone(),
    });
    copy.client
        .load_snapshot(&load)
        .await
        .expect("load beside the running source");
    let copy_data = dir.path().join("copy-data.img");
    std::fs::copy(&guest.data, &copy_data).unwrap();
    copy.client
        .patch_drive(&DriveUpdate::backing_file("data", &copy_data))
        .await
        .expect("PATCH /drives on a loaded guest");
    let missing = DriveUpdate::backing_file("data", dir.path().join("absent.img"));
    assert_refused(copy.client.patch_drive(&missing).await, "");
    copy.client.resume().await.expect("resume");
    assert_eq!(state(&copy.client).await, InstanceState::Running);

    let config = copy.client.vm_config().await.expect("GET /vm/config");
    assert_eq!(config.vsock.expect("vsock").uds_path, copy_vsock);
    let data = config.drives.iter().find(|d| d.drive_id == "data").unwrap();
    assert_eq!(data.path_on_host.as_ref(), Some(&copy_data));
    assert_eq!(state(&source.client).await, InstanceState::Running);
}

async fn a_drive_update_before_start_is_refused(target: Target) {
    let dir = tempfile::tempdir().unwrap();
    let guest = target.guest(dir.path());
    let vm = target.launch(dir.path(), "vm").await;
    guest.configure(&vm.client).await;
    let update = DriveUpdate::backing_file("data", &guest.data);
    assert_refused(
        vm.client.patch_drive(&update).await,
        "not supported before starting the microVM",
    );
}

/// A request type sending whatever JSON the test wants to a given endpoint.
#[derive(Serialize)]
#[serde(transparent)]
struct Raw {
    #[serde(skip)]
    path: &'static str,
    body: serde_json::Value,
}

impl Request for Raw {
    const METHOD: Method = Method::PUT;
    type Response = NoContent;
    fn path(&self) -> String {
        self.path.into()
    }
}

async fn unknown_fields_are_refused(target: Target) {
    let dir = tempfile::tempdir().unwrap();
    let vm = target.launch(dir.path(), "unknown").await;
    let body = serde_json::json!({"vcpu_count": 1, "mem_size_mib": 128, "turbo": true});
    let raw = Raw {
        path: "/machine-config",
        body,
    };
    assert_refused(vm.client.send(&raw).await, "unknown field `turbo`");
    let action = serde_json::json!({"action_type": "InstanceStart", "when": "now"});
    let raw = Raw {
        path: "/actions",
        body: action,
    };
    assert_refused(vm.client.send(&raw).await, "unknown field `when`");
}

async fn missing_required_fields_are_refused(target: Target) {
    let dir = tempfile::tempdir().unwrap();
    let vm = target.launch(dir.path(), "missing").await;
    let raw = Raw {
        path: "/boot-source",
        body: serde_json::json!({"boot_args": "console=ttyS0"}),
    };
    assert_refused(
        vm.client.send(&raw).await,
        "missing field `kernel_image_path`",
    );
    let raw = Raw {
        path: "/machine-config",
        body: serde_json::json!({"vcpu_count": 1}),
    };
    assert_refused(vm.client.send(&raw).await, "missing field `mem_size_mib`");
}

async fn instance_start_before_a_boot_source_is_refused(target: Target) {
    let dir = tempfile::tempdir().unwrap();
    let vm = target.launch(dir.path(), "nokernel").await;
    vm.client
        .put_machine_config(&MachineConfig::new(1, MEM_MIB))
        .await
        .expect("machine-config");
    assert_refused(vm.client.start_instance().await, "kernel");
    assert_eq!(state(&vm.client).await, InstanceState::NotStarted);
}

async fn a_snapshot_of_a_running_guest_is_refused(target: Target) {
    let dir = tempfile::tempdir().unwrap();
    let vm = target.launch(dir.path(), "running").await;
    target.guest(dir.path()).configure(&vm.client).await;
    vm.client.start_instance().await.expect("InstanceStart");
    let snapshot = SnapshotCreate::full(dir.path().join("s.state"), dir.path().join("s.mem"));
    assert_refused(
        vm.client.create_snapshot(&snapshot).await,
        "unavailable while running",
    );
    assert!(!snapshot.snapshot_path.exists() && !snapshot.mem_file_path.exists());
    assert_eq!(state(&vm.client).await, InstanceState::Running);
}

async fn pre_boot_resources_are_refused_after_start(target: Target) {
    let dir = tempfile::tempdir().unwrap();
    let vm = target.launch(dir.path(), "postboot").await;
    let guest = target.guest(dir.path());
    guest.configure(&vm.client).await;
    vm.client.start_instance().await.expect("InstanceStart");
    let after_start = "not supported after starting the microVM";
    assert_refused(
        vm.client.put_machine_config(&guest.machine()).await,
        after_start,
    );
    assert_refused(
        vm.client.put_boot_source(&guest.boot_source()).await,
        after_start,
    );
    let late = Drive::new("late", &guest.data, true);
    assert_refused(vm.client.put_drive(&late).await, after_start);
    assert_refused(vm.client.start_instance().await, after_start);
}

async fn runtime_calls_are_refused_before_start(target: Target) {
    let dir = tempfile::tempdir().unwrap();
    let vm = target.launch(dir.path(), "preboot").await;
    let before_start = "not supported before starting the microVM";
    assert_refused(vm.client.pause().await, before_start);
    assert_refused(vm.client.resume().await, before_start);
    assert_refused(vm.client.send_ctrl_alt_del().await, before_start);
    let snapshot = SnapshotCreate::full(dir.path().join("s.state"), dir.path().join("s.mem"));
    assert_refused(vm.client.create_snapshot(&snapshot).await, before_start);
}

async fn a_snapshot_load_after_boot_configuration_is_refused(target: Target) {
    let dir = tempfile::tempdir().unwrap();
    let vm = target.launch(dir.path(), "loadlate").await;
    let guest = target.guest(dir.path());
    vm.client
        .put_boot_source(&guest.boot_source())
        .await
        .expect("boot-source");
    let load = SnapshotLoad::from_files(dir.path().join("none.state"), dir.path().join("none.mem"));
    assert_refused(
        vm.client.load_snapshot(&load).await,
        "not allowed after configuring boot-specific resources",
    );
    // Refused before anything was loaded: the process carries on.
    assert_eq!(state(&vm.client).await, InstanceState::NotStarted);
}

async fn a_drive_id_differing_from_its_path_is_refused(target: Target) {
    let dir = tempfile::tempdir().unwrap();
    let vm = target.launch(dir.path(), "driveid").await;
    let guest = target.guest(dir.path());
    let body = serde_json::to_value(Drive::new("data", &guest.data, false)).unwrap();
    let raw = Raw {
        path: "/drives/other",
        body,
    };
    assert_refused(
        vm.client.send(&raw).await,
        "does not match the id from the body",
    );
}
