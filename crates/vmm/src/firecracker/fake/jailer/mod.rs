//! `fake-jailer`: Firecracker's jailer (its docs/jailer.md and source), done for real as far
//! as this machine allows, so that code driving the jailer meets real paths, owners,
//! permissions and namespaces. Test-only, like the rest of `fake`.
//!
//! What it does, in the real jailer's order: parse the command line as Firecracker's parser
//! does (`args`); check the id, exec file, chroot base, uid, gid, cgroup and limit formats
//! (`config`); then (`jail`) create `<chroot_base>/<exec_file_name>/<id>/root`, copy the
//! exec file in, join `--netns`, set the resource limits, enter a new mount namespace,
//! chroot into the jail, give `/`, `/dev`, `/dev/net` and `/run` (mode 0700) to uid:gid,
//! mknod `/dev/net/tun`, `/dev/kvm`, `/dev/urandom` and `/dev/userfaultfd` (0600, owned
//! by uid:gid), daemonize (double fork, `setsid`, stdio to `/dev/null`) when asked, write
//! `/<exec_file_name>.pid`, fork into a new pid namespace when asked, drop to uid:gid with
//! no supplementary groups and exec `/<exec_file_name> --id <id> --start-time-us <n>
//! --start-time-cpu-us <n> --parent-cpu-time-us <n> [args after --]` with an empty
//! environment.
//!
//! Failures look like the real jailer's: a command line its parser refuses prints
//! `Failed to parse arguments: ...` and exits 1; anything later prints `Jailer error: ...`
//! and dies of SIGABRT (the real one panics, built with `panic = "abort"`).
//!
//! Where it differs from the real jailer:
//! - The host's `/usr` is bind-mounted read-only at `<chroot_dir>/usr`, with the host's
//!   merged-usr links (`bin`, `sbin`, `lib`, `lib64` into `usr/`) beside it, because
//!   `fake-firecracker` is dynamically linked where the real binary is static. The mount
//!   lives only in the jailed process's mount namespace (made private first, so nothing
//!   reaches the host); the empty `usr` directory and the links stay in the jail directory
//!   on the host. The jailed process can therefore read the host's `/usr`, which a real
//!   jailed Firecracker cannot.
//! - `chroot` instead of `pivot_root`: the old root stays reachable to a process that is
//!   root inside the jail, which the jailed uid is not.
//! - cgroups: `--cgroup`, `--cgroup-version` and `--parent-cgroup` are checked for format
//!   and the cgroup v2 hierarchy must exist when version 2 is asked for, but no `--cgroup`
//!   value is written and no cgroup is created. With version 2 and no `--cgroup`, the
//!   process moves into `<cgroup2>/<parent_cgroup>` when that exists, as the real one does.
//! - The device nodes exist but nothing opens them: `fake-firecracker` uses neither KVM nor
//!   TAP devices.
//! - No Landlock rules (newer jailers add them): the chroot already hides the host.

mod args;
mod config;
mod jail;

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use nix::sys::resource::{setrlimit, Resource};
use nix::time::{clock_gettime, ClockId};

use super::FAKE_VMM_VERSION;
use args::Command;

/// The `fake-jailer` binary's `main`: the jailer's command line (see the module docs).
/// Returns only when it does not exec: after `--help`, `--version` or a refused command
/// line; a failure after parsing aborts the process, as the real jailer's panic does.
pub fn run_jailer(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let started = Started::now();
    jail::close_inherited_fds();

    let args: Result<Vec<String>, OsString> = args
        .into_iter()
        .skip(1)
        .map(OsString::into_string)
        .collect();
    let command = match args {
        Ok(args) => args::parse(&args).map_err(|e| e.to_string()),
        Err(arg) => Err(format!("argument {arg:?} is not UTF-8")),
    };
    match command {
        Err(message) => {
            eprintln!("Failed to parse arguments: {message}");
            ExitCode::FAILURE
        }
        Ok(Command::Help) => {
            println!("{}", args::help());
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("Jailer v{FAKE_VMM_VERSION}\n");
            ExitCode::SUCCESS
        }
        Ok(Command::Jail(options)) => {
            let Err(error) = config::validate(options).and_then(|c| jail::run(c, started));
            die(&error)
        }
    }
}

/// Ends the process as the real jailer's panic does, under `panic = "abort"`.
fn die(error: &JailError) -> ! {
    eprintln!("Jailer error: {error}");
    // No core file from a test double's deliberate abort.
    let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
    std::process::abort()
}

/// When the jailer started, for the times it hands Firecracker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Started {
    monotonic_us: u64,
    cpu_us: u64,
}

impl Started {
    fn now() -> Self {
        Self {
            monotonic_us: micros(ClockId::CLOCK_MONOTONIC),
            cpu_us: micros(ClockId::CLOCK_PROCESS_CPUTIME_ID),
        }
    }

    /// CPU time the jailer has spent since it started.
    fn cpu_spent_us(&self) -> u64 {
        micros(ClockId::CLOCK_PROCESS_CPUTIME_ID).saturating_sub(self.cpu_us)
    }
}

fn micros(clock: ClockId) -> u64 {
    clock_gettime(clock).map_or(0, |t| {
        let micros = i128::from(t.tv_sec()) * 1_000_000 + i128::from(t.tv_nsec()) / 1_000;
        u64::try_from(micros).unwrap_or(0)
    })
}

/// Why the jailer gives up after parsing its command line. The messages are the real
/// jailer's, so that its output can be matched.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JailError {
    #[error("Invalid instance ID: {0}")]
    InvalidInstanceId(String),
    #[error("Failed to canonicalize path {}: {error}", path.display())]
    Canonicalize { path: PathBuf, error: io::Error },
    #[error("{} is not a file", .0.display())]
    NotAFile(PathBuf),
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error(
        "Invalid filename. The filename of `--exec-file` option must contain \"firecracker\": {0}"
    )]
    ExecFileName(String),
    #[error("Invalid uid: {0}")]
    Uid(String),
    #[error("Invalid gid: {0}")]
    Gid(String),
    #[error("Parent cgroup path is invalid. Path should not be absolute or contain '..' or '.'")]
    CgroupInvalidParentPath,
    #[error("{0} is an invalid cgroup version specifier")]
    CgroupInvalidVersion(String),
    #[error("Invalid format for cgroups: {0}")]
    CgroupFormat(String),
    #[error("Cgroup invalid file: {0}")]
    CgroupInvalidFile(String),
    #[error("Hierarchy not found: {0}")]
    CgroupHierarchyMissing(String),
    #[error("Failed to write to cgroups file: {0}")]
    CgroupWrite(io::Error),
    #[error("Invalid format for resources limits: {0}")]
    ResLimitFormat(String),
    #[error("Invalid limit value for resource: {0}: {1}")]
    ResLimitValue(String, String),
    #[error("Invalid resource argument: {0}")]
    ResLimitArgument(String),
    #[error("Failed to set limit for resource: {0}")]
    Setrlimit(&'static str),
    #[error("Failed to create directory {}: {error}", path.display())]
    CreateDir { path: PathBuf, error: io::Error },
    #[error("Failed to copy {} to {}: {error}", from.display(), to.display())]
    Copy {
        from: PathBuf,
        to: PathBuf,
        error: io::Error,
    },
    #[error("Failed to open file {}: {error}", path.display())]
    FileOpen { path: PathBuf, error: io::Error },
    #[error("Failed to write to {}: {error}", path.display())]
    Write { path: PathBuf, error: io::Error },
    #[error("Failed to join network namespace: netns: {0}")]
    SetNetNs(io::Error),
    #[error("Failed to open /dev/null: {0}")]
    OpenDevNull(io::Error),
    #[error("Failed to unshare into new mount namespace: {0}")]
    UnshareNewNs(io::Error),
    #[error("Failed to change the propagation type to private: {0}")]
    MountPropagation(io::Error),
    #[error("fake-jailer: failed to bind-mount the host's /usr at {}: {error}", path.display())]
    MountUsr { path: PathBuf, error: io::Error },
    #[error("Failed to chroot into {}: {error}", path.display())]
    Chroot { path: PathBuf, error: io::Error },
    #[error("Failed to chdir into chroot directory: {0}")]
    ChdirNewRoot(io::Error),
    #[error("Failed to change permissions on {}: {error}", path.display())]
    Chmod { path: PathBuf, error: io::Error },
    #[error("Failed to change owner for {}: {error}", path.display())]
    ChangeFileOwner { path: PathBuf, error: io::Error },
    #[error("Failed to create {} via mknod inside the jail: {error}", path.display())]
    MknodDev { path: PathBuf, error: io::Error },
    #[error("Failed to daemonize: {0}")]
    Daemonize(io::Error),
    #[error("Failed to daemonize: setsid: {0}")]
    SetSid(io::Error),
    #[error("Failed to duplicate fd: {0}")]
    Dup2(io::Error),
    #[error("Failed cloning into a new child process: {0}")]
    Clone(io::Error),
    #[error("Failed to exec into Firecracker: {0}")]
    Exec(io::Error),
}
