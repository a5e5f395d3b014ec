//! The boot sequence: the set-up steps in order, each timed, logged with its elapsed
//! milliseconds, and reported to the node as `Failed` if it fails. Boot goes on after a
//! failure wherever later steps still make sense, so the guest stays reachable and its
//! console readable.
//!
//! ```text
//! mounts -> cmdline -> root-disk -> keys -> sshd-launch
//!        -> [resize2fs: thread --------------------------------------------+]
//!        -> [agent channel writer, command reader, power buttons: threads]  |
//!        -> identity -> network -> metadata-keys                           |
//!        -> sshd (until it accepts) -> join resize <-----------------------+
//!        -> Ready
//! ```
//!
//! The critical path is keys, then sshd's own start-up (hundreds of milliseconds under
//! TCG: it loads its libraries and its key): everything else is done while sshd starts.
//! Everything but `resize2fs` and sshd runs in-process with syscalls. Ready waits for all
//! of it, `resize2fs` included: the node checks the filesystem's size right after.
//!
//! `metadata-keys` (only with `boxcutter.net`) replaces the config drive's authorized keys
//! with the metadata service's, before Ready because the node may log in right after.
//! If the service cannot be used the config drive's keys stay: that is one console
//! warning, not a `Failed` event, since the guest is usable as it is.

use std::any::Any;
use std::io;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::Child;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxcutter_types::guest::{AgentEvent, BootParams, BootParamsError, VmType};

use crate::channel::{self, Endpoint, Pending, Reporter, Transport};
use crate::commands::{self, Commands};
use crate::config_drive::{self, ConfigDriveError};
use crate::console;
use crate::disks::{self, DiskError, RootDevice};
use crate::identity::{self, IdentityError};
use crate::keys::{self, KeysError};
use crate::layout::Layout;
use crate::metadata::{self, MetadataError, Timeouts};
use crate::mounts::{self, MountError};
use crate::net::{self, Interface, NetError};
use crate::power_button;
use crate::resize::{self, GrowOutcome, ResizeError};
use crate::shutdown;
use crate::sshd::{self, SshdError};

/// A boot step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Mounting the kernel filesystems failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// `/proc/cmdline` could not be read.
    #[error("read {path}")]
    Cmdline {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The `boxcutter.*` parameters are wrong.
    #[error("parse kernel command line")]
    Params(#[source] BootParamsError),
    /// Taking extra vCPUs offline failed.
    #[error("take extra vCPUs offline")]
    Cpus(#[source] io::Error),
    /// The root disk could not be identified.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// Setting the hostname or writing identity files failed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Configuring the network failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// Reading the config drive failed.
    #[error(transparent)]
    ConfigDrive(#[from] ConfigDriveError),
    /// Installing keys failed.
    #[error(transparent)]
    Keys(#[from] KeysError),
    /// The metadata service could not be used.
    #[error("get authorized keys from the metadata service")]
    Metadata(#[from] MetadataError),
    /// Growing the root filesystem failed.
    #[error(transparent)]
    Resize(#[from] ResizeError),
    /// sshd did not come up.
    #[error(transparent)]
    Sshd(#[from] SshdError),
    /// A boot step was skipped because an earlier one failed.
    #[error("skipped: {0}")]
    Skipped(&'static str),
    /// A helper thread could not be started.
    #[error("start {name} thread")]
    Thread {
        /// The thread's name.
        name: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The step did not finish in time; it may still finish later.
    #[error("not finished after {limit_ms} ms")]
    Timeout {
        /// The limit.
        limit_ms: u64,
    },
    /// The step panicked (its message is on the console).
    #[error("panicked: {0}")]
    Panicked(String),
}

/// What boot leaves to the init loop.
#[derive(Debug, Default)]
pub struct Booted {
    /// The boot parameters, if they parsed.
    pub params: Option<BootParams>,
    /// sshd, if it started and accepts connections.
    pub sshd: Option<Child>,
}

impl Booted {
    /// The VM type, if known.
    pub fn vm_type(&self) -> Option<VmType> {
        self.params.as_ref().map(|p| p.vm_type)
    }
}

/// Runs the whole boot sequence on the real system and reports `Ready` if sshd is up.
/// The threads that take the node's commands start here and pass them to `commands`.
pub fn boot(
    layout: &Layout,
    reporter: &Reporter,
    pending: Pending,
    commands: &Arc<Commands>,
) -> Booted {
    let steps = Steps { reporter };
    let started = Instant::now();

    let mounted = |m: &Vec<&str>| format!("mounted={m:?}");
    steps.run("mounts", || Ok(mounts::mount_all()?), mounted);
    console::open(&layout.dev.join("console"));
    let params = steps.run("cmdline", || read_params(layout), |p| p.to_cmdline());
    if let Some(keep) = params.as_ref().and_then(|p| p.vcpus) {
        let cpus = || crate::cpus::keep_online(layout, keep).map_err(StepError::Cpus);
        steps.run("cpus", cpus, |n| format!("offlined={n}"));
    }
    let device = |r: &RootDevice| format!("device={}", r.name);
    let root = steps.run("root-disk", || root_device(layout), device);

    // sshd needs only its keys; everything else is done while it starts up. resize2fs
    // starts after the keys are written: an online grow holds the filesystem's locks.
    steps.run("keys", || keys_step(layout, root.as_ref()), |k| k.clone());
    let pid = |c: &Child| format!("pid={}", c.id());
    let sshd = steps.run("sshd-launch", || Ok(sshd::launch(layout)?), pid);
    let resize = root.as_ref().map(|_| spawn_resize(layout));
    start_background(layout, params.as_ref(), pending, reporter, commands);
    let nothing = |_: &()| String::new();
    steps.run(
        "identity",
        || identity_step(layout, params.as_ref()),
        nothing,
    );
    let net = params.as_ref().and_then(|p| p.net.as_ref());
    steps.run("network", || Ok(net::configure(layout, net)?), describe_net);
    if net.is_some() {
        let fetch = || metadata_keys_step(layout, metadata::METADATA_ADDR, Timeouts::BOOT);
        let count = |n: &usize| format!("authorized_keys={n}");
        steps.run_optional(
            "metadata-keys",
            "keeping the config-drive keys",
            fetch,
            count,
        );
    }

    let sshd = sshd.and_then(|c| steps.run("sshd", || Ok(sshd::await_ready(c)?), pid));
    if let Some(resize) = resize {
        steps.run("resize", || join_resize(resize), describe_growth);
    }
    // The node may send a command as soon as it reads ready: take them from before then.
    commands.boot_finished(params.clone());
    report_readiness(reporter, sshd.is_some(), started);
    Booted { params, sshd }
}

/// Ready means SSH works: it is sent only if sshd accepts connections.
fn report_readiness(reporter: &Reporter, sshd_up: bool, started: Instant) {
    if !sshd_up {
        error!("not ready: sshd is not running; the init loop keeps trying to start it");
        return;
    }
    let uptime_ms = console::uptime_ms();
    let boot_ms = started.elapsed().as_millis();
    info!("ready uptime_ms={uptime_ms} boot_ms={boot_ms}");
    reporter.send(AgentEvent::Ready { uptime_ms });
}

/// Starts the agent channel's writer, the command readers and the power-button watchers;
/// events sent before the writer runs wait in its queue.
fn start_background(
    layout: &Layout,
    params: Option<&BootParams>,
    pending: Pending,
    reporter: &Reporter,
    commands: &Arc<Commands>,
) {
    let vm_type = params.map(|p| p.vm_type);
    start_channel(layout, vm_type, pending, reporter, commands);
    if vm_type == Some(VmType::Firecracker) {
        if let Err(e) = commands::spawn_vsock_server(commands.clone()) {
            error!("commands: cannot start the vsock server thread: {e}");
        }
    }
    let buttons = power_button::watch_all(layout, shutdown::power_button_pressed);
    info!("power button: watching devices={buttons}");
}

fn describe_net(interface: &Option<Interface>) -> String {
    match interface {
        Some(i) => format!("interface={} index={}", i.name, i.index),
        None => "loopback only".into(),
    }
}

/// Runs steps: times each, logs it, reports a failure; catches panics.
struct Steps<'a> {
    reporter: &'a Reporter,
}

impl Steps<'_> {
    /// Runs a step whose failure is reported to the node as `Failed`.
    fn run<T>(
        &self,
        name: &'static str,
        step: impl FnOnce() -> Result<T, StepError>,
        describe: impl FnOnce(&T) -> String,
    ) -> Option<T> {
        let (result, elapsed_ms) = timed(step);
        match result {
            Ok(value) => Some(log_done(name, elapsed_ms, value, describe)),
            Err(e) => {
                let text = console::chain(&e);
                error!("{name}: failed elapsed_ms={elapsed_ms}: {text}");
                self.reporter.send(AgentEvent::Failed {
                    step: name.to_string(),
                    error: text,
                });
                None
            }
        }
    }

    /// Runs a step whose failure leaves the guest usable as it is: the failure is one
    /// warning saying what stays in effect (`fallback`), and is not reported.
    fn run_optional<T>(
        &self,
        name: &'static str,
        fallback: &str,
        step: impl FnOnce() -> Result<T, StepError>,
        describe: impl FnOnce(&T) -> String,
    ) -> Option<T> {
        let (result, elapsed_ms) = timed(step);
        match result {
            Ok(value) => Some(log_done(name, elapsed_ms, value, describe)),
            Err(e) => {
                let text = console::chain(&e);
                warn!("{name}: {fallback} elapsed_ms={elapsed_ms}: {text}");
                None
            }
        }
    }
}

/// Runs `step`, a panic turned into an error; returns its result and its milliseconds.
fn timed<T>(step: impl FnOnce() -> Result<T, StepError>) -> (Result<T, StepError>, u128) {
    let started = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(step))
        .unwrap_or_else(|panic| Err(StepError::Panicked(panic_message(&*panic))));
    (result, started.elapsed().as_millis())
}

fn log_done<T>(name: &str, elapsed_ms: u128, value: T, describe: impl FnOnce(&T) -> String) -> T {
    let detail = describe(&value);
    let space = if detail.is_empty() { "" } else { " " };
    info!("{name}: done elapsed_ms={elapsed_ms}{space}{detail}");
    value
}

fn read_params(layout: &Layout) -> Result<BootParams, StepError> {
    let path = layout.proc.join("cmdline");
    let cmdline =
        std::fs::read_to_string(&path).map_err(|source| StepError::Cmdline { path, source })?;
    BootParams::parse(&cmdline).map_err(StepError::Params)
}

/// Starts the writer; for a virtio-serial port it also starts the thread that reads the
/// node's commands from the same port, once the writer has opened it.
fn start_channel(
    layout: &Layout,
    vm_type: Option<VmType>,
    pending: Pending,
    reporter: &Reporter,
    commands: &Arc<Commands>,
) {
    let endpoint = Endpoint::for_vm(vm_type);
    let (layout, reporter, commands) = (layout.clone(), reporter.clone(), commands.clone());
    let open = move || match endpoint {
        Endpoint::VirtioSerial { name } => {
            let port = channel::open_virtio_port(&layout, name, channel::PORT_WAIT)?;
            let reader = port.command_reader();
            let started = reader.and_then(|r| commands::spawn_port_reader(r, commands, reporter));
            if let Err(e) = started {
                error!("commands: cannot read {}: {e}", port.path().display());
            }
            Some(Box::new(port) as Box<dyn Transport>)
        }
        Endpoint::Vsock => channel::open_endpoint(&layout, &endpoint, channel::PORT_WAIT),
    };
    if let Err(e) = pending.start(open) {
        error!("agent channel: cannot start its writer thread: {e}");
    }
}

fn root_device(layout: &Layout) -> Result<RootDevice, StepError> {
    let number = disks::device_number(&layout.root)?;
    Ok(disks::device_by_number(&layout.sys, number)?)
}

fn identity_step(layout: &Layout, params: Option<&BootParams>) -> Result<(), StepError> {
    let params = params.ok_or(StepError::Skipped("no valid boot parameters"))?;
    Ok(identity::apply(layout, params)?)
}

fn keys_step(layout: &Layout, root: Option<&RootDevice>) -> Result<String, StepError> {
    let root = root.ok_or(StepError::Skipped("root disk unknown"))?;
    let (drive, config) = config_drive::load(layout, &root.disk, config_drive::DRIVE_WAIT)?;
    let installed = keys::install(layout, &config)?;
    Ok(format!(
        "drive={} authorized_keys={} host_key={}",
        drive.display(),
        installed.authorized_keys,
        installed.host_key_fingerprint
    ))
}

/// Replaces the config drive's authorized keys with the metadata service's at `addr`;
/// returns how many it installed. Nothing is written unless the whole answer is good.
fn metadata_keys_step(
    layout: &Layout,
    addr: SocketAddr,
    timeouts: Timeouts,
) -> Result<usize, StepError> {
    let keys = metadata::fetch_ssh_keys(addr, timeouts)?;
    Ok(keys::install_authorized_keys(layout, &keys)?)
}

/// How long ready may wait for `resize2fs`; an online grow of a large disk under TCG takes
/// seconds, but a hung one must not keep the guest from ever reporting.
const RESIZE_LIMIT: Duration = Duration::from_secs(120);

type ResizeJob = Receiver<Result<GrowOutcome, ResizeError>>;

fn spawn_resize(layout: &Layout) -> Result<ResizeJob, StepError> {
    let layout = layout.clone();
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("resize".into())
        .spawn(move || {
            let _ = tx.send(resize::grow_root(&layout));
        })
        .map_err(|e| StepError::Thread {
            name: "resize",
            source: e,
        })?;
    Ok(rx)
}

fn join_resize(job: Result<ResizeJob, StepError>) -> Result<GrowOutcome, StepError> {
    match job?.recv_timeout(RESIZE_LIMIT) {
        Ok(outcome) => Ok(outcome?),
        Err(RecvTimeoutError::Timeout) => Err(StepError::Timeout {
            limit_ms: RESIZE_LIMIT.as_millis() as u64,
        }),
        // The thread ended without sending: it panicked, and the hook logged why.
        Err(RecvTimeoutError::Disconnected) => Err(StepError::Panicked("resize thread".into())),
    }
}

fn describe_growth(outcome: &GrowOutcome) -> String {
    const MIB: u64 = 1 << 20;
    match outcome {
        GrowOutcome::AlreadyFull { fs_bytes } => format!("already full fs_mib={}", fs_bytes / MIB),
        GrowOutcome::Grown {
            from,
            to,
            elapsed_ms,
        } => format!(
            "grown from_mib={} to_mib={} resize2fs_ms={elapsed_ms}",
            from / MIB,
            to / MIB
        ),
    }
}

/// The message a panic was raised with.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_step_is_reported_with_its_cause_chain() {
        let (reporter, pending) = channel::reporter();
        let steps = Steps {
            reporter: &reporter,
        };
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::under(dir.path());
        let result = steps.run("cmdline", || read_params(&layout), |_| String::new());
        assert!(result.is_none());

        let events = drain(reporter, pending);
        let [AgentEvent::Failed { step, error }] = events.as_slice() else {
            panic!("{events:?}");
        };
        assert_eq!(step, "cmdline");
        assert!(
            error.starts_with("read ") && error.ends_with("No such file or directory (os error 2)"),
            "{error}"
        );
    }

    #[test]
    fn panicking_step_becomes_a_failure_not_a_crash() {
        let (reporter, pending) = channel::reporter();
        let steps = Steps {
            reporter: &reporter,
        };
        let result: Option<()> = steps.run("keys", || panic!("boom"), |_| String::new());
        assert!(result.is_none());
        assert_eq!(
            drain(reporter, pending),
            [AgentEvent::Failed {
                step: "keys".into(),
                error: "panicked: boom".into()
            }]
        );
    }

    #[test]
    fn params_are_read_from_proc_cmdline() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::under(dir.path());
        std::fs::create_dir(&layout.proc).unwrap();
        std::fs::write(
            layout.proc.join("cmdline"),
            "console=ttyS0 boxcutter.name=bold-fox boxcutter.type=qemu\n",
        )
        .unwrap();
        let params = read_params(&layout).unwrap();
        assert_eq!(params.name.as_str(), "bold-fox");
        assert_eq!(params.net, None);
    }

    #[test]
    fn metadata_keys_replace_the_config_drive_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, file) = root_with_config_drive_keys(dir.path());
        let keys = "ssh-ed25519 AAAA new@x\n\nk2\n";
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8";
        let addr = serve_once(format!(
            "{head}\r\ncontent-length: {}\r\n\r\n{keys}",
            keys.len()
        ));

        let (reporter, pending) = channel::reporter();
        let steps = Steps {
            reporter: &reporter,
        };
        let fetch = || metadata_keys_step(&layout, addr, Timeouts::BOOT);
        let installed = steps.run_optional("metadata-keys", "keeping", fetch, |_| String::new());
        assert_eq!(installed, Some(2));
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "ssh-ed25519 AAAA new@x\nk2\n"
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(&file.metadata().unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(drain(reporter, pending), []);
    }

    #[test]
    fn metadata_error_keeps_the_config_drive_keys_and_is_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, file) = root_with_config_drive_keys(dir.path());
        let addr = serve_once("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".into());

        let (reporter, pending) = channel::reporter();
        let steps = Steps {
            reporter: &reporter,
        };
        let fetch = || metadata_keys_step(&layout, addr, Timeouts::BOOT);
        let installed = steps.run_optional("metadata-keys", "keeping", fetch, |_| String::new());
        assert_eq!(installed, None);
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "config-drive-key\n"
        );
        assert_eq!(drain(reporter, pending), []);
    }

    /// A fake root whose `dev` is the test's user, with one key from "the config drive";
    /// returns the layout and the `authorized_keys` path.
    fn root_with_config_drive_keys(dir: &std::path::Path) -> (Layout, PathBuf) {
        let layout = Layout::under(dir);
        std::fs::create_dir_all(layout.file("/etc")).unwrap();
        std::fs::create_dir_all(layout.file("/home/dev")).unwrap();
        let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
        let passwd = format!("dev:x:{uid}:{gid}::/home/dev:/bin/bash\n");
        std::fs::write(layout.file("/etc/passwd"), passwd).unwrap();
        keys::install_authorized_keys(&layout, &["config-drive-key".into()]).unwrap();
        let file = layout.file("/home/dev/.ssh/authorized_keys");
        (layout, file)
    }

    /// Answers one HTTP request on a loopback port with `answer`, then closes.
    fn serve_once(answer: String) -> SocketAddr {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = conn.read(&mut buf).unwrap();
                assert_ne!(n, 0, "request cut short");
                request.extend_from_slice(&buf[..n]);
            }
            conn.write_all(answer.as_bytes()).unwrap();
        });
        addr
    }

    /// Collects the events a reporter sent, through an in-memory transport.
    fn drain(reporter: Reporter, pending: Pending) -> Vec<AgentEvent> {
        struct Collect(std::sync::mpsc::Sender<Vec<u8>>);
        impl channel::Transport for Collect {
            fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
                let _ = self.0.send(line.to_vec());
                Ok(())
            }
            fn describe(&self) -> String {
                "collector".into()
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        pending
            .start(move || Some(Box::new(Collect(tx)) as Box<_>))
            .unwrap();
        assert!(reporter.flush(std::time::Duration::from_secs(5)));
        rx.try_iter()
            .map(|line| serde_json::from_slice(&line).unwrap())
            .collect()
    }
}
