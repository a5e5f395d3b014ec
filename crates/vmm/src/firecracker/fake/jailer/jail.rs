//! The jailer's work once its command line is valid, step by step in the real jailer's
//! order (`run`). The process is single-threaded throughout, which is what makes its forks
//! sound.

use std::convert::Infallible;
use std::ffi::CString;
use std::fs::{File, OpenOptions, Permissions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{
    chown, chroot, close, dup2, execve, fork, getpid, setgid, setgroups, setsid, setuid,
    ForkResult, Gid, Pid, Uid,
};

use super::config::{JailConfig, ResourceLimits};
use super::{JailError, Started};

/// The jail's directories the jailed uid owns (mode 0700): its root for the API socket,
/// `/dev` for the device nodes, `/run` for Firecracker's default socket path.
const FOLDER_HIERARCHY: [&str; 4] = ["/", "/dev", "/dev/net", "/run"];
const FOLDER_MODE: u32 = 0o700;

/// Device nodes the jailer must create: path, major, minor.
const DEVICES: [(&str, u64, u64); 2] = [("/dev/net/tun", 10, 200), ("/dev/kvm", 10, 232)];

/// `/dev/urandom`, which the jailer creates if it can.
const URANDOM: (&str, u64, u64) = ("/dev/urandom", 1, 9);

/// `/dev/userfaultfd`: a misc device (major 10) whose minor `/proc/misc` tells.
const USERFAULTFD: &str = "/dev/userfaultfd";
const MISC_MAJOR: u64 = 10;

/// Top-level names a merged-usr host makes links into `/usr`; the jail gets the host's.
const MERGED_USR_LINKS: [&str; 4] = ["bin", "sbin", "lib", "lib64"];

/// Builds the jail and execs Firecracker in it; returns only on failure.
pub(super) fn run(config: JailConfig, started: Started) -> Result<Infallible, JailError> {
    if let Some(parent) = &config.parent_cgroup {
        join_cgroup(parent)?;
    }
    create_dir_all(&config.chroot_dir)?;
    copy_exec_file(&config)?;

    if let Some(netns) = &config.netns {
        join_netns(netns)?;
    }
    install_limits(config.limits)?;
    let dev_null = config.daemonize.then(open_dev_null).transpose()?;
    let userfaultfd_minor = userfaultfd_minor();

    enter_jail(&config.chroot_dir)?;
    for folder in FOLDER_HIERARCHY {
        own_folder(Path::new(folder), &config)?;
    }
    make_devices(&config, userfaultfd_minor)?;

    if let Some(dev_null) = dev_null {
        daemonize(&dev_null)?;
    }
    let firecracker = Path::new("/").join(&config.exec_file_name);
    let pid_file = PathBuf::from(format!("/{}.pid", config.exec_file_name));
    if config.new_pid_ns {
        continue_in_new_pid_ns(&pid_file)?;
    } else {
        write_pid_file(&pid_file, getpid())?;
    }
    exec(&config, &firecracker, started)
}

/// Closes every descriptor but stdin, stdout and stderr, as the jailer does first.
pub(super) fn close_inherited_fds() {
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // The directory's own descriptor is among them, already closed: EBADF.
        let _ = close(fd);
    }
}

fn join_cgroup(parent: &Path) -> Result<(), JailError> {
    std::fs::write(parent.join("cgroup.procs"), std::process::id().to_string())
        .map_err(JailError::CgroupWrite)
}

fn create_dir_all(path: &Path) -> Result<(), JailError> {
    std::fs::create_dir_all(path).map_err(|error| JailError::CreateDir {
        path: path.to_owned(),
        error,
    })
}

/// A copy, not a link, as the real jailer makes: same permissions as the original.
fn copy_exec_file(config: &JailConfig) -> Result<(), JailError> {
    let to = config.chroot_dir.join(&config.exec_file_name);
    std::fs::copy(&config.exec_file, &to)
        .map(drop)
        .map_err(|error| JailError::Copy {
            from: config.exec_file.clone(),
            to,
            error,
        })
}

fn join_netns(path: &Path) -> Result<(), JailError> {
    let netns = File::open(path).map_err(|error| JailError::FileOpen {
        path: path.to_owned(),
        error,
    })?;
    setns(&netns, CloneFlags::CLONE_NEWNET).map_err(|e| JailError::SetNetNs(e.into()))
}

fn install_limits(limits: ResourceLimits) -> Result<(), JailError> {
    if let Some(size) = limits.file_size {
        setrlimit(Resource::RLIMIT_FSIZE, size, size)
            .map_err(|_| JailError::Setrlimit("size of file"))?;
    }
    setrlimit(Resource::RLIMIT_NOFILE, limits.no_file, limits.no_file)
        .map_err(|_| JailError::Setrlimit("number of file descriptors"))
}

fn open_dev_null() -> Result<File, JailError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(JailError::OpenDevNull)
}

fn userfaultfd_minor() -> Option<u64> {
    let misc = std::fs::read_to_string("/proc/misc").ok()?;
    misc.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let minor = fields.next()?.parse().ok()?;
        (fields.next()? == "userfaultfd").then_some(minor)
    })
}

/// A new mount namespace, private so that nothing mounted in it reaches the host; the
/// host's `/usr` in the jail; then the chroot.
fn enter_jail(chroot_dir: &Path) -> Result<(), JailError> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| JailError::UnshareNewNs(e.into()))?;
    let private = MsFlags::MS_PRIVATE | MsFlags::MS_REC;
    mount(None::<&str>, "/", None::<&str>, private, None::<&str>)
        .map_err(|e| JailError::MountPropagation(e.into()))?;
    mount_host_usr(chroot_dir)?;

    chroot(chroot_dir).map_err(|e| JailError::Chroot {
        path: chroot_dir.to_owned(),
        error: e.into(),
    })?;
    std::env::set_current_dir("/").map_err(JailError::ChdirNewRoot)
}

/// The one addition to the real jail: `fake-firecracker` is dynamically linked, so it needs
/// the host's libraries and loader. Read-only, and only in this mount namespace.
fn mount_host_usr(chroot_dir: &Path) -> Result<(), JailError> {
    let usr = chroot_dir.join("usr");
    let failed = |error: std::io::Error| JailError::MountUsr {
        path: usr.clone(),
        error,
    };
    match std::fs::create_dir(&usr) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(failed(e)),
        _ => {}
    }
    let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount(Some("/usr"), &usr, None::<&str>, bind, None::<&str>).map_err(|e| failed(e.into()))?;
    let read_only = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV;
    mount(None::<&str>, &usr, None::<&str>, read_only, None::<&str>)
        .map_err(|e| failed(e.into()))?;

    for name in MERGED_USR_LINKS {
        let Ok(target) = std::fs::read_link(Path::new("/").join(name)) else {
            continue;
        };
        match std::os::unix::fs::symlink(&target, chroot_dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(failed(e)),
            _ => {}
        }
    }
    Ok(())
}

fn own_folder(path: &Path, config: &JailConfig) -> Result<(), JailError> {
    create_dir_all(path)?;
    std::fs::set_permissions(path, Permissions::from_mode(FOLDER_MODE)).map_err(|error| {
        JailError::Chmod {
            path: path.to_owned(),
            error,
        }
    })?;
    give(path, config)
}

fn make_devices(config: &JailConfig, userfaultfd_minor: Option<u64>) -> Result<(), JailError> {
    for device in DEVICES {
        make_device(device, config)?;
    }
    if let Err(error) = make_device(URANDOM, config) {
        println!("Warning! Could not create /dev/urandom device inside jailer: {error}.");
        println!("MMDS version 2 will not be available to use.");
    }
    if let Some(minor) = userfaultfd_minor {
        make_device((USERFAULTFD, MISC_MAJOR, minor), config)?;
    }
    Ok(())
}

/// A character device only its owner, the jailed uid, may read and write.
fn make_device(
    (path, major, minor): (&str, u64, u64),
    config: &JailConfig,
) -> Result<(), JailError> {
    let mode = Mode::S_IRUSR | Mode::S_IWUSR;
    mknod(path, SFlag::S_IFCHR, mode, makedev(major, minor)).map_err(|e| JailError::MknodDev {
        path: path.into(),
        error: e.into(),
    })?;
    give(Path::new(path), config)
}

fn give(path: &Path, config: &JailConfig) -> Result<(), JailError> {
    let (uid, gid) = (Uid::from_raw(config.uid), Gid::from_raw(config.gid));
    chown(path, Some(uid), Some(gid)).map_err(|e| JailError::ChangeFileOwner {
        path: path.to_owned(),
        error: e.into(),
    })
}

/// The double fork: the jailer's own process exits 0 at once, the grandchild runs on in a
/// session of its own child's, with stdio on `/dev/null`.
fn daemonize(dev_null: &File) -> Result<(), JailError> {
    continue_in_child()?;
    setsid().map_err(|e| JailError::SetSid(e.into()))?;
    continue_in_child()?;
    for stdio in 0..=2 {
        dup2(dev_null.as_raw_fd(), stdio).map_err(|e| JailError::Dup2(e.into()))?;
    }
    Ok(())
}

fn continue_in_child() -> Result<(), JailError> {
    // SAFETY: the fake jailer runs a single thread, so the child may do anything.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => std::process::exit(0),
        Ok(ForkResult::Child) => Ok(()),
        Err(e) => Err(JailError::Daemonize(e.into())),
    }
}

/// Forks into a new pid namespace, whose init the child becomes; the parent records the
/// child's pid and exits 0.
fn continue_in_new_pid_ns(pid_file: &Path) -> Result<(), JailError> {
    unshare(CloneFlags::CLONE_NEWPID).map_err(|e| JailError::Clone(e.into()))?;
    // SAFETY: the fake jailer runs a single thread, so the child may do anything.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => Ok(()),
        Ok(ForkResult::Parent { child }) => {
            write_pid_file(pid_file, child)?;
            std::process::exit(0)
        }
        Err(e) => Err(JailError::Clone(e.into())),
    }
}

/// `/<exec_file_name>.pid`, which must not exist yet.
fn write_pid_file(path: &Path, pid: Pid) -> Result<(), JailError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|error| JailError::FileOpen {
            path: path.to_owned(),
            error,
        })?;
    write!(file, "{pid}").map_err(|error| JailError::Write {
        path: path.to_owned(),
        error,
    })
}

/// Drops to uid:gid with no supplementary groups and execs Firecracker with an empty
/// environment.
fn exec(
    config: &JailConfig,
    firecracker: &Path,
    started: Started,
) -> Result<Infallible, JailError> {
    let argv = firecracker_args(config, firecracker, started)?;
    let failed = |e: nix::Error| JailError::Exec(e.into());
    setgroups(&[]).map_err(failed)?;
    setgid(Gid::from_raw(config.gid)).map_err(failed)?;
    setuid(Uid::from_raw(config.uid)).map_err(failed)?;
    execve::<CString, CString>(&argv[0], &argv, &[]).map_err(failed)
}

fn firecracker_args(
    config: &JailConfig,
    firecracker: &Path,
    started: Started,
) -> Result<Vec<CString>, JailError> {
    let own = [
        firecracker.to_string_lossy().into_owned(),
        "--id".into(),
        config.id.clone(),
        "--start-time-us".into(),
        started.monotonic_us.to_string(),
        "--start-time-cpu-us".into(),
        "0".into(),
        "--parent-cpu-time-us".into(),
        started.cpu_spent_us().to_string(),
    ];
    own.into_iter()
        .chain(config.extra_args.iter().cloned())
        .map(|arg| CString::new(arg).map_err(|e| JailError::Exec(std::io::Error::other(e))))
        .collect()
}
