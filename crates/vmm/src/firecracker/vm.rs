//! One running Firecracker microVM: one `firecracker` process per VM, driven through its
//! API socket.
//!
//! Firecracker does not daemonize, so [`FirecrackerVm::launch`] starts it in a session of
//! its own (`setsid`), its serial console (stdout and stderr) going to the console log, and
//! writes the pidfile itself. The process then belongs to no daemon of ours: it keeps
//! running when a daemon dies or restarts, and a `FirecrackerVm` is only a handle, the pid
//! (checked against the process's command line, which names the API socket, so a recycled
//! pid is never mistaken for the VM) and the VM's runtime paths.
//!
//! Launching is a step list, each with its undo:
//!
//! ```text
//! remove stale socket/pidfile ─ spawn ─ pidfile ─ socket ─ logger ─ metrics
//!   ─ machine config ─ boot source ─ drives ─ network interface ─ vsock ─ instance start
//! ```
//!
//! A copy of a running guest starts from a snapshot instead ([`FirecrackerVm::restore`]):
//!
//! ```text
//! remove stale socket/pidfile ─ spawn ─ pidfile ─ socket ─ logger ─ metrics
//!   ─ snapshot load (this VM's TAP and vsock socket) ─ drives → this VM's files ─ resume
//! ```
//!
//! Any failure after the spawn kills the process and removes the API socket, the vsock
//! socket and the pidfile; the console log and Firecracker's log are kept, they explain
//! the failure.
//!
//! With a `jailer` in the config, the jailer is started instead and execs Firecracker in
//! the VM's jail as an unprivileged uid/gid, keeping the pid (`super::jail`): the files are
//! put into the jail first and every path Firecracker is given is the jail's, the process
//! is recognised by its `--id` rather than its socket, snapshots are moved out of the jail
//! once written, and the jail is removed with the process. Without one, Firecracker runs
//! with the daemon's privileges. Limitations: cgroups are not used (no `--cgroup`), and
//! each launch truncates the console log, so the console of an earlier boot is lost.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use boxcutter_types::guest::{AgentEvent, HostCommand};

use super::api::{
    ApiClient, ApiError, BootSource, DriveUpdate, InstanceInfo, Logger, MachineConfig, Metrics,
    NetworkInterface, NetworkOverride, SnapshotCreate, SnapshotLoad, SnapshotType, Vsock,
    VsockOverride,
};
use super::placement::{
    self, drives, place, place_snapshot, Placed, SNAPSHOT_MEMORY, SNAPSHOT_STATE,
};
use super::vsock::{send_command, AgentListener};
use crate::qemu::vm::console_tail;

pub use super::vm_config::{
    FirecrackerConfig, FirecrackerError, FirecrackerNic, FirecrackerPaths, LaunchStep,
};

/// How long a freshly spawned Firecracker may take to create its API socket by default.
pub const DEFAULT_SOCKET_WAIT: Duration = Duration::from_secs(5);

/// How many console lines an error about the guest carries.
const CONSOLE_TAIL_LINES: usize = 15;

/// How long a failed call waits for the process to be seen gone before blaming the call.
const EXIT_GRACE: Duration = Duration::from_millis(500);

/// How often the socket wait checks that the process still lives.
const SOCKET_POLL: Duration = Duration::from_millis(50);

/// The drive id of the root disk (the guest's `/dev/vda`).
pub const ROOT_DRIVE_ID: &str = "rootfs";

/// The drive id of the config drive (the guest's `/dev/vdb`).
pub const CONFIG_DRIVE_ID: &str = "config";

/// The interface id of the guest's network interface.
pub const NIC_ID: &str = "eth0";

/// A handle on one running Firecracker microVM.
#[derive(Debug, Clone)]
pub struct FirecrackerVm {
    pid: Pid,
    paths: FirecrackerPaths,
    client: ApiClient,
}

impl FirecrackerVm {
    /// Starts Firecracker for `config`, inside the network namespace at `netns` if given
    /// (the TAP device lives there), configures the microVM and boots it. On failure nothing
    /// is left running and the error names the step.
    pub async fn launch(
        config: &FirecrackerConfig,
        netns: Option<&Path>,
    ) -> Result<Self, FirecrackerError> {
        check_inputs(config, [])?;
        let placed = place(config)?;
        let vm = Self::spawn_fresh(config, &placed, netns)?;
        let booted = vm.boot(config, &placed).await;
        vm.settle(booted, &config.id, "started").await
    }

    /// Starts Firecracker for `config` from a snapshot of another guest: the guest continues
    /// from the moment of the snapshot, but on this VM's TAP device, vsock socket, root
    /// disk and config drive. The snapshot's drives must still exist while it loads (the
    /// load opens them before they are switched); nothing else of the source is used. The
    /// guest runs when this returns; it does not know yet that it is a copy
    /// ([`FirecrackerVm::refresh`]).
    pub async fn restore(
        config: &FirecrackerConfig,
        snapshot: &SnapshotFiles,
        netns: Option<&Path>,
    ) -> Result<Self, FirecrackerError> {
        let snapshot_files = [
            ("snapshot", snapshot.state.as_path()),
            ("memory file", snapshot.memory.as_path()),
        ];
        check_inputs(config, snapshot_files)?;
        let placed = place(config)?;
        let snapshot = place_snapshot(config, snapshot)?;
        let vm = Self::spawn_fresh(config, &placed, netns)?;
        let loaded = vm.load(config, &placed, &snapshot).await;
        vm.settle(loaded, &config.id, "restored").await
    }

    /// Removes the runtime files an earlier process may have left and spawns Firecracker.
    fn spawn_fresh(
        config: &FirecrackerConfig,
        placed: &Placed,
        netns: Option<&Path>,
    ) -> Result<Self, FirecrackerError> {
        let paths = &config.paths;
        for stale in [&paths.socket, &paths.pidfile, &paths.vsock] {
            remove_if_exists(stale, "remove stale")?;
        }
        let pid = spawn(config, placed, netns)?;
        Ok(Self {
            pid,
            paths: paths.clone(),
            client: ApiClient::new(&paths.socket),
        })
    }

    /// The handle once the steps after the spawn worked; otherwise kills the process,
    /// which removes its runtime files, and returns the error.
    async fn settle(
        self,
        steps: Result<(), FirecrackerError>,
        id: &str,
        done: &str,
    ) -> Result<Self, FirecrackerError> {
        match steps {
            Ok(()) => {
                tracing::info!(%id, pid = self.pid(), "firecracker microvm {done}");
                Ok(self)
            }
            Err(error) => {
                self.kill().await;
                Err(error)
            }
        }
    }

    /// Waits for the guest agent's ready report on `listener` (bound before the launch),
    /// for at most `timeout`; returns the guest's uptime at ready. Firecracker is left
    /// running whatever the outcome: the caller decides.
    pub async fn wait_ready(
        &self,
        listener: &AgentListener,
        timeout: Duration,
    ) -> Result<Duration, FirecrackerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let waiting = async {
            loop {
                let mut events = listener.accept().await?;
                while let Some(event) = events.next().await? {
                    match event {
                        AgentEvent::Ready { uptime_ms } => {
                            return Ok(Duration::from_millis(uptime_ms))
                        }
                        AgentEvent::Failed { step, error } => {
                            return Err(FirecrackerError::GuestFailed { step, error })
                        }
                        AgentEvent::ShuttingDown | AgentEvent::Refreshed { .. } => {}
                    }
                }
            }
        };
        tokio::pin!(waiting);
        let mut liveness = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                result = &mut waiting => return result,
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(FirecrackerError::ReadyTimeout {
                        timeout,
                        console: self.console_tail(),
                    })
                }
                _ = liveness.tick() => {
                    if !self.is_running() {
                        return Err(FirecrackerError::GuestExited {
                            console: self.console_tail(),
                        });
                    }
                }
            }
        }
    }

    /// Tells a restored guest that it is now another VM (new name, network, clock, RNG
    /// state, host key) and waits up to `within` for the agent to confirm.
    pub async fn refresh(
        &self,
        command: &HostCommand,
        within: Duration,
    ) -> Result<(), FirecrackerError> {
        match send_command(&self.paths.vsock, command, within).await? {
            AgentEvent::Refreshed { .. } => Ok(()),
            AgentEvent::Failed { step, error } => {
                Err(FirecrackerError::GuestFailed { step, error })
            }
            other => Err(FirecrackerError::GuestFailed {
                step: "refresh".into(),
                error: format!("unexpected answer {other:?}"),
            }),
        }
    }

    /// Finds the running Firecracker of a VM from its pidfile, checking that the process
    /// really is the one serving `paths.socket`.
    pub fn adopt(paths: &FirecrackerPaths) -> Result<Self, FirecrackerError> {
        let not_running = || FirecrackerError::NotRunning {
            pidfile: paths.pidfile.clone(),
        };
        let text = std::fs::read_to_string(&paths.pidfile).map_err(|_| not_running())?;
        let pid = Pid::from_raw(text.trim().parse().map_err(|_| not_running())?);
        let vm = Self {
            pid,
            paths: paths.clone(),
            client: ApiClient::new(&paths.socket),
        };
        if vm.is_running() {
            Ok(vm)
        } else {
            Err(not_running())
        }
    }

    /// Firecracker's process id.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// The VM's runtime paths.
    pub fn paths(&self) -> &FirecrackerPaths {
        &self.paths
    }

    /// A client for this VM's API socket.
    pub fn client(&self) -> &ApiClient {
        &self.client
    }

    /// True while this VM's Firecracker exists and is not a zombie.
    pub fn is_running(&self) -> bool {
        let marker = match &self.paths.jail {
            Some(jail) => jail.process_marker(),
            None => self.paths.socket.as_os_str().as_encoded_bytes().to_vec(),
        };
        boxcutter_sys::proc::runs_with(self.pid.as_raw(), &marker)
    }

    /// `GET /`: the instance's id, state and Firecracker's version.
    pub async fn describe(&self) -> Result<InstanceInfo, FirecrackerError> {
        Ok(self.client.describe_instance().await?)
    }

    /// Pauses the guest's vCPUs.
    pub async fn pause(&self) -> Result<(), FirecrackerError> {
        Ok(self.client.pause().await?)
    }

    /// Resumes a paused guest.
    pub async fn resume(&self) -> Result<(), FirecrackerError> {
        Ok(self.client.resume().await?)
    }

    /// Writes a `kind` snapshot of the guest: its device state to `state` and its memory
    /// to `memory`. The guest must be paused by the caller first (Firecracker refuses to
    /// snapshot a running guest), so that a caller copying disks can keep it paused for
    /// as long as the copy takes; it stays paused afterwards, whether the snapshot worked
    /// or not. A failed snapshot leaves no partial file behind.
    pub async fn snapshot(
        &self,
        kind: SnapshotType,
        state: &Path,
        memory: &Path,
    ) -> Result<(), FirecrackerError> {
        // A jailed Firecracker writes into its jail; the files are moved out after.
        let (written_state, written_memory) = match &self.paths.jail {
            Some(jail) => (
                jail.host_path(SNAPSHOT_STATE),
                jail.host_path(SNAPSHOT_MEMORY),
            ),
            None => (state.to_owned(), memory.to_owned()),
        };
        let request = SnapshotCreate {
            snapshot_type: Some(kind),
            ..SnapshotCreate::full(self.inside(&written_state)?, self.inside(&written_memory)?)
        };
        let source = match self.client.create_snapshot(&request).await {
            Ok(()) => {
                for (from, to) in [(&written_state, state), (&written_memory, memory)] {
                    if from != to {
                        std::fs::rename(from, to).map_err(|source| FirecrackerError::File {
                            action: "move snapshot out of the jail",
                            path: from.clone(),
                            source,
                        })?;
                    }
                }
                return Ok(());
            }
            Err(source) => source,
        };
        if let ApiError::SnapshotIncomplete { .. } = &source {
            for file in [&written_state, &written_memory] {
                if let Err(error) = remove_if_exists(file, "remove partial snapshot") {
                    tracing::warn!(%error, "cannot remove partial snapshot");
                }
            }
        }
        Err(FirecrackerError::Snapshot {
            state: state.to_owned(),
            source,
        })
    }

    /// Asks the guest to reboot (Ctrl-Alt-Del, which ends Firecracker) and waits up to
    /// `timeout` for the process to exit; then kills it. Removes the runtime sockets and
    /// the pidfile either way.
    pub async fn shutdown(&self, timeout: Duration) {
        match self.client.send_ctrl_alt_del().await {
            Ok(()) if self.wait_exit(timeout).await => {}
            Ok(()) => tracing::warn!(pid = self.pid(), "guest ignored ctrl-alt-del; killing it"),
            Err(error) => tracing::warn!(pid = self.pid(), %error, "cannot send ctrl-alt-del"),
        }
        self.kill().await;
    }

    /// Kills Firecracker at once, waits for it to be gone and removes the runtime sockets
    /// and the pidfile.
    pub async fn kill(&self) {
        if self.is_running() {
            let _ = kill(self.pid, Signal::SIGKILL);
        }
        if !self.wait_exit(Duration::from_secs(10)).await {
            tracing::error!(pid = self.pid(), "firecracker survived SIGKILL");
        }
        for file in [&self.paths.socket, &self.paths.pidfile, &self.paths.vsock] {
            if let Err(error) = remove_if_exists(file, "remove") {
                tracing::warn!(%error, "cannot clean up after firecracker");
            }
        }
        if let Some(jail) = &self.paths.jail {
            if let Err(error) = jail.remove() {
                tracing::warn!(jail = %jail.root.display(), %error, "cannot remove the jail");
            }
        }
    }

    /// How Firecracker names `host`: the same path, or the path inside its jail.
    fn inside(&self, host: &Path) -> Result<PathBuf, FirecrackerError> {
        match &self.paths.jail {
            Some(jail) => placement::inside(jail, host),
            None => Ok(host.to_owned()),
        }
    }

    /// Waits up to `timeout` for Firecracker to exit; true if it did.
    pub async fn wait_exit(&self, timeout: Duration) -> bool {
        crate::process::wait_gone(|| self.is_running(), timeout).await
    }

    /// The last lines of the guest's serial console.
    pub fn console_tail(&self) -> String {
        console_tail(&self.paths.console, CONSOLE_TAIL_LINES)
    }

    /// The first steps after the spawn, for a boot and a restore alike: pidfile, API
    /// socket, logger and metrics.
    async fn open_api(
        &self,
        config: &FirecrackerConfig,
        placed: &Placed,
    ) -> Result<(), FirecrackerError> {
        write_pidfile(&self.paths.pidfile, self.pid).map_err(|source| FirecrackerError::File {
            action: "write pidfile",
            path: self.paths.pidfile.clone(),
            source,
        })?;
        self.wait_for_socket(config.socket_wait).await?;
        self.configure_logging(placed).await?;
        Ok(())
    }

    /// Every launch step after the spawn, in order.
    async fn boot(
        &self,
        config: &FirecrackerConfig,
        placed: &Placed,
    ) -> Result<(), FirecrackerError> {
        self.open_api(config, placed).await?;

        let machine = MachineConfig {
            track_dirty_pages: Some(config.track_dirty_pages),
            ..MachineConfig::new(config.vcpus, config.memory_mib)
        };
        self.step(
            LaunchStep::MachineConfig,
            self.client.put_machine_config(&machine),
        )
        .await?;
        let boot = BootSource {
            kernel_image_path: placed.kernel.clone(),
            boot_args: Some(config.cmdline.clone()),
            initrd_path: placed.initrd.clone(),
        };
        self.step(LaunchStep::BootSource, self.client.put_boot_source(&boot))
            .await?;
        for drive in drives(placed) {
            let step = LaunchStep::Drive(drive.drive_id.clone());
            self.step(step, self.client.put_drive(&drive)).await?;
        }
        if let Some(nic) = &config.nic {
            let nic = NetworkInterface::new(NIC_ID, &nic.tap, nic.mac);
            let step = LaunchStep::NetworkInterface(NIC_ID.to_owned());
            self.step(step, self.client.put_network_interface(&nic))
                .await?;
        }
        let vsock = Vsock {
            guest_cid: config.guest_cid,
            uds_path: placed.vsock.clone(),
        };
        self.step(LaunchStep::Vsock, self.client.put_vsock(&vsock))
            .await?;
        self.step(LaunchStep::InstanceStart, self.client.start_instance())
            .await
    }

    /// Every restore step after the spawn, in order.
    async fn load(
        &self,
        config: &FirecrackerConfig,
        placed: &Placed,
        snapshot: &SnapshotFiles,
    ) -> Result<(), FirecrackerError> {
        self.open_api(config, placed).await?;
        let mut load = SnapshotLoad::from_files(&snapshot.state, &snapshot.memory);
        if config.track_dirty_pages {
            load = load.tracking_dirty_pages();
        }
        load.network_overrides = config.nic.as_ref().map(|nic| {
            vec![NetworkOverride {
                iface_id: NIC_ID.to_owned(),
                host_dev_name: nic.tap.clone(),
            }]
        });
        load.vsock_override = Some(VsockOverride {
            uds_path: placed.vsock.clone(),
        });
        self.step(LaunchStep::LoadSnapshot, self.client.load_snapshot(&load))
            .await?;
        for drive in drives(placed) {
            let update = DriveUpdate::backing_file(&drive.drive_id, &drive.path_on_host);
            let step = LaunchStep::UpdateDrive(drive.drive_id.clone());
            self.step(step, self.client.patch_drive(&update)).await?;
        }
        self.step(LaunchStep::Resume, self.client.resume()).await
    }

    /// Waits for the API socket, giving up early when the process is gone.
    async fn wait_for_socket(&self, within: Duration) -> Result<(), FirecrackerError> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if ApiClient::wait_for_socket(&self.paths.socket, left.min(SOCKET_POLL))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if !self.is_running() {
                return Err(self.exited(LaunchStep::Socket));
            }
            if left.is_zero() {
                return Err(FirecrackerError::SocketNeverAppeared {
                    socket: self.paths.socket.clone(),
                    after: within,
                });
            }
        }
    }

    /// `PUT /logger` and `PUT /metrics`, when the paths name them.
    async fn configure_logging(&self, placed: &Placed) -> Result<(), FirecrackerError> {
        if let Some(log) = &placed.log {
            let logger = Logger {
                log_path: Some(log.clone()),
                ..Logger::default()
            };
            self.step(LaunchStep::Logger, self.client.put_logger(&logger))
                .await?;
        }
        if let Some(path) = &placed.metrics {
            let metrics = Metrics {
                metrics_path: path.clone(),
            };
            self.step(LaunchStep::Metrics, self.client.put_metrics(&metrics))
                .await?;
        }
        Ok(())
    }

    /// Runs one API step; a failure is blamed on the process when it is gone.
    async fn step(
        &self,
        step: LaunchStep,
        call: impl std::future::Future<Output = Result<(), ApiError>>,
    ) -> Result<(), FirecrackerError> {
        let Err(source) = call.await else {
            return Ok(());
        };
        if self.wait_exit(EXIT_GRACE).await {
            return Err(self.exited(step));
        }
        Err(FirecrackerError::Launch { step, source })
    }

    fn exited(&self, step: LaunchStep) -> FirecrackerError {
        FirecrackerError::ExitedDuringBoot {
            step,
            console: self.console_tail(),
        }
    }
}

/// The two files of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFiles {
    /// The microVM state (devices, vCPUs).
    pub state: std::path::PathBuf,
    /// Guest memory.
    pub memory: std::path::PathBuf,
}

impl SnapshotFiles {
    /// The usual names in a directory.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            state: dir.join("snapshot.state"),
            memory: dir.join("snapshot.mem"),
        }
    }

    /// Removes both files (missing ones are fine).
    pub fn remove(&self) {
        for file in [&self.state, &self.memory] {
            if let Err(error) = remove_if_exists(file, "remove") {
                tracing::warn!(%error, "cannot remove snapshot file");
            }
        }
    }
}

/// Spawns Firecracker detached (a session of its own, optionally in `netns`), its console
/// going to the console log, and lets go of it.
fn spawn(
    config: &FirecrackerConfig,
    placed: &Placed,
    netns: Option<&Path>,
) -> Result<Pid, FirecrackerError> {
    let console =
        std::fs::File::create(&config.paths.console).map_err(|source| FirecrackerError::File {
            action: "create console log",
            path: config.paths.console.clone(),
            source,
        })?;
    let console_err = console
        .try_clone()
        .map_err(|source| FirecrackerError::File {
            action: "open console log",
            path: config.paths.console.clone(),
            source,
        })?;
    let firecracker_args = [OsString::from("--api-sock"), placed.socket.clone().into()]
        .into_iter()
        .chain(config.extra_args.iter().cloned());
    let (program, args): (&Path, Vec<OsString>) = match (&config.jailer, &config.paths.jail) {
        // The jailer passes `--id=<id>` on itself.
        (Some(jailer), Some(jail)) => (
            &jailer.jailer,
            jail.command_line(jailer, &config.binary, firecracker_args),
        ),
        _ => {
            let id = [OsString::from("--id"), config.id.clone().into()];
            (&config.binary, firecracker_args.chain(id).collect())
        }
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(console)
        .stderr(console_err);
    let _netns =
        boxcutter_sys::proc::place_child(cmd.as_std_mut(), netns, true).map_err(|source| {
            FirecrackerError::Netns {
                path: netns.map(Path::to_owned).unwrap_or_default(),
                source,
            }
        })?;
    let child = cmd.spawn().map_err(|source| FirecrackerError::Spawn {
        binary: program.to_owned(),
        source,
    })?;
    let pid = child.id().ok_or_else(|| FirecrackerError::Spawn {
        binary: config.binary.clone(),
        source: std::io::Error::other("exited before its pid was read"),
    })?;
    // Dropping the child lets tokio reap it whenever it exits; we track it by pid.
    drop(child);
    let pid = i32::try_from(pid).map_err(|_| FirecrackerError::Spawn {
        binary: config.binary.clone(),
        source: std::io::Error::other(format!("pid {pid} out of range")),
    })?;
    Ok(Pid::from_raw(pid))
}

/// Writes the pidfile atomically: a temporary file renamed over it.
fn write_pidfile(pidfile: &Path, pid: Pid) -> std::io::Result<()> {
    let mut tmp = pidfile.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, format!("{pid}\n"))?;
    std::fs::rename(&tmp, pidfile)
}

/// Creates `path` empty if it does not exist (Firecracker opens its log without creating
/// it); an existing file or named pipe is left as it is.
pub(super) fn ensure_file(path: &Path) -> Result<(), FirecrackerError> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map(drop)
        .map_err(|source| FirecrackerError::File {
            action: "create",
            path: path.to_owned(),
            source,
        })
}

fn remove_if_exists(path: &Path, action: &'static str) -> Result<(), FirecrackerError> {
    match std::fs::remove_file(path) {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
            Err(FirecrackerError::File {
                action,
                path: path.to_owned(),
                source,
            })
        }
        _ => Ok(()),
    }
}

fn check_inputs<'a>(
    config: &'a FirecrackerConfig,
    more: impl IntoIterator<Item = (&'static str, &'a Path)>,
) -> Result<(), FirecrackerError> {
    let jailer = config.jailer.iter().map(|j| ("jailer", j.jailer.as_path()));
    let files = [
        ("firecracker binary", config.binary.as_path()),
        ("kernel", config.kernel.as_path()),
        ("root disk", config.root_disk.as_path()),
    ];
    let initrd = config.initrd.iter().map(|p| ("initramfs", p.as_path()));
    let config_drive = config
        .config_drive
        .iter()
        .map(|p| ("config drive", p.as_path()));
    let all = files
        .into_iter()
        .chain(jailer)
        .chain(initrd)
        .chain(config_drive)
        .chain(more);
    match crate::files::first_missing(all) {
        Some((what, path)) => Err(FirecrackerError::MissingFile { what, path }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adopting_without_a_process_fails() {
        let dir = tempfile::tempdir().unwrap();
        let paths = FirecrackerPaths::in_dir(dir.path());
        assert!(matches!(
            FirecrackerVm::adopt(&paths),
            Err(FirecrackerError::NotRunning { .. })
        ));
        // Our own pid exists but is not this VM's Firecracker.
        std::fs::write(&paths.pidfile, std::process::id().to_string()).unwrap();
        assert!(matches!(
            FirecrackerVm::adopt(&paths),
            Err(FirecrackerError::NotRunning { .. })
        ));
    }

    #[test]
    fn steps_name_their_resource() {
        assert_eq!(
            LaunchStep::Drive("rootfs".into()).to_string(),
            "drive rootfs"
        );
        assert_eq!(LaunchStep::InstanceStart.to_string(), "instance start");
    }

    #[test]
    fn the_pidfile_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("fc.pid");
        std::fs::write(&pidfile, "999999 stale").unwrap();
        write_pidfile(&pidfile, Pid::from_raw(42)).unwrap();
        assert_eq!(std::fs::read_to_string(&pidfile).unwrap(), "42\n");
        assert!(!dir.path().join("fc.pid.tmp").exists());
    }
}
