//! The sandbox the guest agent boots in, made without a shell: [`spawn`] starts
//! `boxcutter-guest` as PID 1 of new PID, UTS, network and mount namespaces, chrooted into
//! an overlay of this machine's root (the test's `upper/` on top), with the fake `/sys` and
//! `/dev` bound in and the test's kernel command line over `/proc/cmdline`.
//!
//! A `pre_exec` hook does what `unshare --mount --propagation private`, then `unshare
//! --pid --fork --kill-child --uts --net --mount-proc` and `chroot` would:
//!
//! ```text
//! test
//!  └─ keeper: a mount namespace of its own with the overlay root, fake /sys and /dev
//!     │       mounted; waits for the guest and exits as it does (`unshare --fork`)
//!     └─ boxcutter-guest: PID 1 of the new namespaces with its own /proc, chrooted;
//!                         killed if the keeper dies (`--kill-child`)
//! ```
//!
//! Nothing outside the namespaces is touched: reboot() in a child PID namespace only ends
//! that namespace, kill(-1) reaches only its processes, and every mount is private to it.
//!
//! The hook runs between fork and exec in a copy of a multi-threaded process, so it only
//! makes system calls: every path and option is built before the fork. A step that fails
//! writes its name and error to stderr and exits 1, as a failing command of a `set -e`
//! script would; the names of the steps that mount start with "mount".

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::Signal;
use nix::sys::stat::{major, minor, stat};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{chdir, chroot, fork, symlinkat, ForkResult, Pid};

/// The agent inside the sandbox; the test copies it into the overlay's upper layer.
const GUEST: &str = "/usr/sbin/boxcutter-guest";

/// The host's devices bound over the fake `/dev`'s placeholder files.
const HOST_DEVICES: [&str; 4] = ["null", "zero", "random", "urandom"];

/// The fake root disk's sysfs entry, relative to `/sys/dev/block`.
const ROOT_DISK: &str = "../../devices/virtio/block/vdx";

/// Starts the guest in the sandbox laid out in `work` (`upper/ ovl/ root/ sys/ dev/
/// cmdline`), with stdin from `/dev/null` and stderr piped.
pub fn spawn(work: &Path) -> io::Result<Child> {
    let plan = Plan::new(work)?;
    let mut command = Command::new(GUEST);
    command.stdin(Stdio::null()).stderr(Stdio::piped());
    // SAFETY: the hook only makes system calls and allocates nothing (see the module docs).
    unsafe { command.pre_exec(move || plan.enter()) };
    command.spawn()
}

/// Every path and option the hook needs, built before the fork.
struct Plan {
    root: PathBuf,
    overlay_options: String,
    /// Source and target of each bind mount into the root, in order.
    binds: Vec<(PathBuf, PathBuf)>,
    /// The fake sysfs's `dev/block`, where the root disk's number is linked.
    dev_block: File,
    proc: PathBuf,
    /// The test's kernel command line and the root's `/proc/cmdline`.
    cmdline: (PathBuf, PathBuf),
}

impl Plan {
    fn new(work: &Path) -> io::Result<Self> {
        let root = work.join("root");
        let overlay_options = format!(
            "lowerdir=/,upperdir={},workdir={}",
            work.join("upper").display(),
            work.join("ovl").display()
        );
        let mut binds = vec![
            (work.join("sys"), root.join("sys")),
            (work.join("dev"), root.join("dev")),
        ];
        let dev = root.join("dev");
        binds.extend(HOST_DEVICES.map(|node| (Path::new("/dev").join(node), dev.join(node))));
        Ok(Self {
            dev_block: File::open(work.join("sys/dev/block"))?,
            proc: root.join("proc"),
            cmdline: (work.join("cmdline"), root.join("proc/cmdline")),
            root,
            overlay_options,
            binds,
        })
    }

    /// The hook: builds the root, then forks the guest's PID 1 into new namespaces. Only
    /// that process returns, to exec the guest; the keeper never does.
    fn enter(&self) -> io::Result<()> {
        self.build_root();

        let namespaces = CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWNS;
        check(
            "unshare(CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWNET | CLONE_NEWNS)",
            unshare(namespaces),
        );
        // SAFETY: both sides only make system calls until they exec or exit.
        match check("fork", unsafe { fork() }) {
            ForkResult::Parent { child } => keep(child),
            ForkResult::Child => self.enter_root(),
        }
        Ok(())
    }

    /// In a mount namespace of its own: the overlay root, the fake `/sys` and `/dev`, the
    /// host's null devices, and the root disk's number.
    fn build_root(&self) {
        check("unshare(CLONE_NEWNS)", unshare(CloneFlags::CLONE_NEWNS));
        make_mounts_private();
        let overlay = Some(self.overlay_options.as_str());
        let mounted = mount(
            Some("overlay"),
            &self.root,
            Some("overlay"),
            MsFlags::empty(),
            overlay,
        );
        check("mount overlay on the root", mounted);
        for (source, target) in &self.binds {
            check("mount --bind into the root", bind(source, target));
        }
        self.link_root_disk();
    }

    /// The fake root disk answers to the overlay's device number, as /dev/vda would in a
    /// VM. It is called vdx, not vda: resize2fs checks /proc/mounts by device name, and the
    /// machine running this test may well have its own root on /dev/vda.
    fn link_root_disk(&self) {
        let device = check("stat the root", stat(&self.root)).st_dev;
        let mut name = [0u8; 48];
        let len = format_into(
            &mut name,
            format_args!("{}:{}", major(device), minor(device)),
        );
        let dir = Some(self.dev_block.as_raw_fd());
        check(
            "symlink the root disk's number",
            symlinkat(ROOT_DISK, dir, &name[..len]),
        );
    }

    /// As PID 1 of the new namespaces: dies with the keeper, mounts a /proc of the new PID
    /// namespace with the test's kernel command line over `/proc/cmdline`, enters the root.
    fn enter_root(&self) {
        let killed_with_keeper = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
        check("prctl(PR_SET_PDEATHSIG)", killed_with_keeper);
        make_mounts_private();
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
        let mounted = mount(Some("proc"), &self.proc, Some("proc"), flags, None::<&str>);
        check("mount proc in the root", mounted);
        let (cmdline, target) = &self.cmdline;
        check(
            "mount --bind the kernel command line",
            bind(cmdline, target),
        );
        check("chroot into the root", chroot(&self.root));
        check("chdir /", chdir("/"));
    }
}

/// The keeper's side of the fork: closes every descriptor but stdio, so that the test's
/// `spawn` returns once the guest has exec'd, then waits for the guest and exits as it did.
fn keep(guest: Pid) -> ! {
    // SAFETY: a system call on descriptors nothing else in this process uses.
    unsafe { libc::close_range(3, libc::c_uint::MAX, 0) };
    let code = loop {
        match waitpid(guest, None) {
            Ok(WaitStatus::Exited(_, code)) => break code,
            Ok(WaitStatus::Signaled(_, signal, _)) => break 128 + signal as i32,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(errno) => fail("wait for the guest", errno),
        }
    };
    // SAFETY: ends this process without running anything of the test's.
    unsafe { libc::_exit(code) }
}

fn make_mounts_private() {
    let flags = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
    let changed = mount(None::<&str>, "/", None::<&str>, flags, None::<&str>);
    check("mount --make-rprivate /", changed);
}

fn bind(source: &Path, target: &Path) -> nix::Result<()> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
}

/// The value of a step that succeeded; for one that failed, see [`fail`].
fn check<T>(step: &str, result: nix::Result<T>) -> T {
    match result {
        Ok(value) => value,
        Err(errno) => fail(step, errno),
    }
}

/// Writes `sandbox: STEP: ERROR` to stderr and exits 1.
fn fail(step: &str, errno: Errno) -> ! {
    let mut message = [0u8; 256];
    let len = format_into(&mut message, format_args!("sandbox: {step}: {errno}\n"));
    // SAFETY: a write from a buffer we own, then the end of this process.
    unsafe {
        libc::write(libc::STDERR_FILENO, message.as_ptr().cast(), len);
        libc::_exit(1)
    }
}

/// Formats into `buf` without allocating; returns the length written, cut short if `buf`
/// is too small.
fn format_into(buf: &mut [u8], args: fmt::Arguments<'_>) -> usize {
    let capacity = buf.len();
    let mut rest = buf;
    let _ = rest.write_fmt(args);
    capacity - rest.len()
}
