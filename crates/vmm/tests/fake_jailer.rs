//! `fake-jailer` jailing `fake-firecracker`, looked at from the host as the node will look
//! at a real jailed Firecracker: where the jail is and what is in it, which uid the process
//! runs as and what it can see, which files it can open, what the jailer refuses, and that
//! nothing of the jail's mount namespace reaches the host. Needs root, as the jailer does.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use boxcutter_types::guest::AGENT_VSOCK_PORT;
use boxcutter_vmm::firecracker::api::{
    ApiClient, ApiError, BootSource, Drive, MachineConfig, SnapshotCreate, Vsock,
};
use boxcutter_vmm::firecracker::fake::FAULTS_ENV;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixListener;

const JAILER: &str = env!("CARGO_BIN_EXE_fake-jailer");
const FIRECRACKER: &str = env!("CARGO_BIN_EXE_fake-firecracker");
/// The exec file's name: the jail's middle path component and the jailed program.
const EXEC_NAME: &str = "fake-firecracker";
/// Ids with no passwd entry, different from each other so that a swap shows.
const UID: u32 = 64123;
const GID: u32 = 64124;
/// The API socket, as the jailed process names it.
const API_SOCK: &str = "/fc.sock";
/// How long anything the jailer starts may take.
const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn the_jailed_fake_serves_inside_the_jail_as_the_given_uid() {
    let base = Base::new();
    let jailed = base.launch("vm-uid", &[]).await;

    let info = jailed.client.describe_instance().await.unwrap();
    assert_eq!(info.id, "vm-uid", "the jailer passes the id on");
    assert_eq!(jailed.status("Uid"), format!("{UID}\t{UID}\t{UID}\t{UID}"));
    assert_eq!(jailed.status("Gid"), format!("{GID}\t{GID}\t{GID}\t{GID}"));
    assert_eq!(jailed.status("Groups"), "", "no supplementary groups");
    let root = fs::read_link(jailed.proc("root")).unwrap();
    assert_eq!(root, base.root("vm-uid").canonicalize().unwrap());
    assert_eq!(fs::read_link(jailed.proc("cwd")).unwrap(), root);
    let pid_file = fs::read_to_string(jailed.host_path("/fake-firecracker.pid")).unwrap();
    assert_eq!(
        pid_file,
        jailed.pid.to_string(),
        "without --new-pid-ns, the jailer's own pid"
    );

    let cmdline = fs::read(jailed.proc("cmdline")).unwrap();
    let cmdline: Vec<_> = cmdline
        .split(|b| *b == 0)
        .map(String::from_utf8_lossy)
        .collect();
    assert_eq!(cmdline[..3], ["/fake-firecracker", "--id", "vm-uid"]);
    assert_eq!(cmdline[3], "--start-time-us");
    assert_eq!(
        cmdline[5..8],
        ["--start-time-cpu-us", "0", "--parent-cpu-time-us"]
    );
    assert_eq!(
        cmdline[9..11],
        ["--api-sock", API_SOCK],
        "then the arguments after --"
    );
}

#[tokio::test]
async fn the_jail_is_laid_out_as_the_real_jailer_lays_it_out() {
    let base = Base::new();
    let jailed = base.launch("vm-layout", &[]).await;
    let owned_by_uid = |path: &str, kind: &str, mode: u32| {
        let meta = fs::symlink_metadata(jailed.host_path(path)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (UID, GID), "{path}");
        assert_eq!(meta.mode() & 0o7777, mode, "{path}");
        let is_kind = match kind {
            "dir" => meta.is_dir(),
            "char" => meta.file_type().is_char_device(),
            _ => meta.file_type().is_socket(),
        };
        assert!(is_kind, "{path} is a {kind}");
        meta
    };

    for dir in ["/", "/dev", "/dev/net", "/run"] {
        owned_by_uid(dir, "dir", 0o700);
    }
    for (device, major, minor) in [("/dev/net/tun", 10, 200), ("/dev/kvm", 10, 232)] {
        let rdev = owned_by_uid(device, "char", 0o600).rdev();
        assert_eq!(
            (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev)),
            (major, minor)
        );
    }
    owned_by_uid(API_SOCK, "socket", 0o755 & !umask());

    let copy = fs::metadata(jailed.host_path("/fake-firecracker")).unwrap();
    let original = fs::metadata(FIRECRACKER).unwrap();
    assert_ne!(copy.ino(), original.ino(), "a copy, not a link");
    assert_eq!((copy.len(), copy.mode()), (original.len(), original.mode()));
    assert_eq!(copy.uid(), 0, "the copy stays root's");
}

#[tokio::test]
async fn the_environment_and_inherited_descriptors_do_not_reach_firecracker() {
    let base = Base::new();
    let mut command = base.jailer(&base.usual_args("vm-env"), &["--api-sock", API_SOCK]);
    // A fault that would keep the socket from ever appearing, if the environment leaked.
    command.env(FAULTS_ENV, "no-socket");
    // SAFETY: dup2 is async-signal-safe; fd 9 is left open across exec, not close-on-exec.
    unsafe { command.pre_exec(|| nix::unistd::dup2(2, 9).map(drop).map_err(Into::into)) };
    let jailed = base.start(command, "vm-env").await;

    assert!(fs::read(jailed.proc("environ")).unwrap().is_empty());
    let output = fs::read_link(jailed.proc("fd/2")).unwrap();
    let mut on_output: Vec<String> = fs::read_dir(jailed.proc("fd"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|fd| fs::read_link(fd).ok().as_ref() == Some(&output))
        .map(|fd| fd.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    on_output.sort();
    assert_eq!(on_output, ["1", "2"], "the jailer closed fd 9");
}

#[tokio::test]
async fn resource_limits_reach_firecracker() {
    let base = Base::new();
    let limits = [
        "--resource-limit",
        "no-file=512",
        "--resource-limit",
        "fsize=1048576",
    ];
    let jailed = base.launch("vm-limits", &limits).await;
    let default = base.launch("vm-default-limits", &[]).await;

    let limit = |jailed: &Jailed, name: &str| {
        let limits = fs::read_to_string(jailed.proc("limits")).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .to_owned();
        line.split_whitespace()
            .rev()
            .skip(1)
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(limit(&jailed, "Max open files"), "512 512");
    assert_eq!(limit(&jailed, "Max file size"), "1048576 1048576");
    assert_eq!(
        limit(&default, "Max open files"),
        "2048 2048",
        "the jailer's default"
    );
}

#[tokio::test]
async fn drives_open_inside_the_jail_with_the_uids_rights() {
    let base = Base::new();
    let jailed = base.launch("vm-drives", &[]).await;
    let host_disk = base.path().join("disk.img");
    fs::write(&host_disk, vec![0u8; 4096]).unwrap();

    // Hard-linked in and handed to the uid, as the node admits a writable disk.
    fs::hard_link(&host_disk, jailed.host_path("/disk.img")).unwrap();
    chown(&jailed.host_path("/disk.img"), UID, GID);
    let client = jailed.client.clone();
    let put = |id: &str, path: &str, read_only: bool| {
        let (client, drive) = (client.clone(), Drive::new(id, path, read_only));
        async move { client.put_drive(&drive).await }
    };
    put("disk", "/disk.img", false).await.unwrap();

    let private = jailed.host_path("/private.img");
    fs::write(&private, b"root's").unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o600)).unwrap();
    assert_refused(
        put("private", "/private.img", true).await,
        "Permission denied",
    );

    let shared = jailed.host_path("/shared.img");
    fs::write(&shared, b"everyone's to read").unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o644)).unwrap();
    assert_refused(
        put("shared", "/shared.img", false).await,
        "Permission denied",
    );
    put("shared", "/shared.img", true).await.unwrap();

    let host_path = host_disk.to_str().unwrap();
    assert_refused(put("outside", host_path, true).await, "No such file");
}

#[tokio::test]
async fn the_guest_reports_ready_only_to_a_listener_the_uid_may_connect_to() {
    let base = Base::new();
    let jailed = base.launch("vm-vsock", &[]).await;
    boot(&jailed).await;
    let vsock = jailed.client.vm_config().await.unwrap().vsock.unwrap();
    assert_eq!(
        vsock.uds_path,
        Path::new("/v.sock"),
        "the fake keeps jail paths as given"
    );

    let listener_path = jailed.host_path(&format!("/v.sock_{AGENT_VSOCK_PORT}"));
    let listener = UnixListener::bind(&listener_path).unwrap();
    fs::set_permissions(&listener_path, fs::Permissions::from_mode(0o755)).unwrap();
    let early = tokio::time::timeout(Duration::from_secs(1), listener.accept()).await;
    assert!(
        early.is_err(),
        "the uid cannot connect to root's 0755 socket"
    );

    chown(&listener_path, UID, GID);
    let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).await.unwrap();
    assert!(line.contains(r#""event":"ready""#), "{line}");
}

#[tokio::test]
async fn snapshots_are_written_inside_the_jail_as_the_uid() {
    let base = Base::new();
    let jailed = base.launch("vm-snapshot", &[]).await;
    boot(&jailed).await;
    jailed.client.pause().await.unwrap();

    let snapshot = SnapshotCreate::full("/snap.state", "/snap.mem");
    jailed.client.create_snapshot(&snapshot).await.unwrap();
    for file in ["/snap.state", "/snap.mem"] {
        let meta = fs::metadata(jailed.host_path(file)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (UID, GID), "{file}");
    }

    fs::create_dir(jailed.host_path("/roots")).unwrap();
    let refused = SnapshotCreate::full("/roots/snap.state", "/roots/snap.mem");
    assert_refused(
        jailed.client.create_snapshot(&refused).await,
        "Permission denied",
    );
}

#[tokio::test]
async fn nothing_of_the_jail_is_mounted_on_the_host() {
    let base = Base::new();
    let mut jailed = base.launch("vm-mounts", &[]).await;

    let own_mounts = fs::read_to_string(jailed.proc("mountinfo")).unwrap();
    let usr = own_mounts
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/usr"));
    assert!(
        usr.unwrap().contains(" ro,"),
        "the host's /usr, read-only, in the jail only"
    );
    assert_eq!(host_mounts_under(base.path()), Vec::<String>::new());

    jailed.kill();
    assert_eq!(host_mounts_under(base.path()), Vec::<String>::new());
    assert!(
        !fs::read_dir(jailed.host_path("/usr"))
            .unwrap()
            .any(|_| true),
        "the mount point is an empty directory on the host"
    );
}

#[tokio::test]
async fn command_lines_the_parser_refuses_exit_1() {
    let base = Base::new();
    let usual = base.usual_args("vm-parse");
    let with = |extra: &[&str]| {
        let mut args = usual.clone();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let cases = [
        (with(&["--node", "0"]), "Found argument 'node'"),
        (with(&["--uid", "1"]), "'uid' was provided more than once"),
        (with(&["--netns"]), "'netns' requires a value"),
        (
            args(&["--id=vm-parse", "--exec-file", FIRECRACKER]),
            "'id=vm-parse'",
        ),
        (
            args(&["--id", "vm-parse", "--exec-file", FIRECRACKER]),
            "'gid' required",
        ),
    ];
    for (args, message) in cases {
        let (status, output) = base.run_to_end(&args);
        assert_eq!(status.code(), Some(1), "{args:?}: {output}");
        assert!(output.contains("Failed to parse arguments"), "{output}");
        assert!(output.contains(message), "{args:?}: {output}");
    }
    assert!(!base.path().join(EXEC_NAME).exists(), "nothing was made");
}

#[tokio::test]
async fn invalid_values_abort_the_jailer_before_it_makes_anything() {
    let base = Base::new();
    let misnamed = base.path().join("vmm");
    fs::copy(FIRECRACKER, &misnamed).unwrap();
    let id = |id: &str| replace(&base.usual_args("vm-values"), "--id", id);
    let exec = |file: &Path| {
        replace(
            &base.usual_args("vm-values"),
            "--exec-file",
            file.to_str().unwrap(),
        )
    };
    let cases = [
        (
            id("vm_1"),
            "Invalid instance ID: Invalid char (_) at position 2",
        ),
        (id(&"a".repeat(65)), "Invalid instance ID: Invalid len (65)"),
        (exec(&misnamed), "must contain \"firecracker\": vmm"),
        (
            exec(&base.path().join("firecracker")),
            "Failed to canonicalize path",
        ),
        (
            replace(&base.usual_args("vm-values"), "--uid", "nobody"),
            "Invalid uid: nobody",
        ),
        (
            replace(&base.usual_args("vm-values"), "--gid", "-1"),
            "Invalid gid: -1",
        ),
        (
            replace(
                &base.usual_args("vm-values"),
                "--chroot-base-dir",
                "/nonexistent",
            ),
            "Failed to canonicalize path /nonexistent",
        ),
    ];
    for (args, message) in cases {
        let (status, output) = base.run_to_end(&args);
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{args:?}: {output}");
        assert!(output.starts_with("Jailer error: "), "{output}");
        assert!(output.contains(message), "{args:?}: {output}");
    }
    assert!(!base.path().join(EXEC_NAME).exists(), "nothing was made");
    assert!(!base.path().join("vmm").join("vm-values").exists());
}

#[tokio::test]
async fn a_jail_left_behind_is_refused_until_it_is_removed() {
    let base = Base::new();
    let mut first = base.launch("vm-again", &[]).await;
    first.kill();

    let (status, output) = base.run_to_end(&base.usual_args("vm-again"));
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{output}");
    assert!(
        output.contains("/dev/net/tun via mknod inside the jail: File exists"),
        "{output}"
    );

    fs::remove_dir_all(base.root("vm-again").parent().unwrap()).unwrap();
    let again = base.launch("vm-again", &[]).await;
    again.client.describe_instance().await.unwrap();
}

#[tokio::test]
async fn daemonize_detaches_firecracker_and_the_pid_file_names_it() {
    let base = Base::new();
    let jailed = base.launch_detached("vm-daemon", &["--daemonize"]).await;

    assert_eq!(jailed.status("Uid"), format!("{UID}\t{UID}\t{UID}\t{UID}"));
    for stdio in ["fd/0", "fd/1", "fd/2"] {
        assert_eq!(
            fs::read_link(jailed.proc(stdio)).unwrap(),
            Path::new("/dev/null")
        );
    }
    let session = |pid: &str| {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(3).unwrap().to_owned()
    };
    assert_ne!(
        session(&jailed.pid.to_string()),
        session("self"),
        "a session of its own"
    );
    jailed.client.describe_instance().await.unwrap();
}

#[tokio::test]
async fn new_pid_ns_runs_firecracker_as_init_of_its_own_pid_namespace() {
    let base = Base::new();
    let jailed = base.launch_detached("vm-pidns", &["--new-pid-ns"]).await;

    assert_eq!(jailed.status("NSpid"), format!("{}\t1", jailed.pid));
    assert_eq!(jailed.status("Uid"), format!("{UID}\t{UID}\t{UID}\t{UID}"));
    jailed.client.describe_instance().await.unwrap();
}

#[tokio::test]
async fn netns_puts_firecracker_in_the_given_network_namespace() {
    let mut holder = Command::new("sleep");
    holder.arg("60");
    // SAFETY: unshare is a plain system call, sound between fork and exec.
    unsafe {
        holder.pre_exec(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(Into::into)
        });
    }
    let holder = Holder(holder.spawn().unwrap());
    let netns = format!("/proc/{}/ns/net", holder.0.id());

    let base = Base::new();
    let jailed = base.launch("vm-netns", &["--netns", &netns]).await;
    let theirs = fs::read_link(jailed.proc("ns/net")).unwrap();
    assert_eq!(theirs, fs::read_link(&netns).unwrap());
    assert_ne!(theirs, fs::read_link("/proc/self/ns/net").unwrap());
}

#[tokio::test]
async fn cgroup_options_are_checked_but_not_applied() {
    let base = Base::new();
    let cgroups = [
        "--cgroup-version",
        "2",
        "--parent-cgroup",
        "vms",
        "--cgroup",
        "cpu.weight=50",
    ];
    let jailed = base.launch("vm-cgroups", &cgroups).await;
    let ours = fs::read_to_string("/proc/self/cgroup").unwrap();
    assert_eq!(fs::read_to_string(jailed.proc("cgroup")).unwrap(), ours);

    let mut args = base.usual_args("vm-bad-cgroup");
    args.extend(self::args(&["--cgroup", "cpu.weight"]));
    let (status, output) = base.run_to_end(&args);
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{output}");
    assert!(
        output.contains("Invalid format for cgroups: cpu.weight"),
        "{output}"
    );
}

/// A chroot base under /var/tmp, removed with everything in it.
struct Base {
    dir: tempfile::TempDir,
}

impl Base {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("fake-jailer-")
            .tempdir_in("/var/tmp")
            .unwrap();
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The jail of `id`, as the host sees it.
    fn root(&self, id: &str) -> PathBuf {
        self.path().join(EXEC_NAME).join(id).join("root")
    }

    /// Where the jailer started for `id` writes (outside the jail).
    fn output(&self, id: &str) -> PathBuf {
        self.path().join(format!("{id}.out"))
    }

    /// The required options, with this base as the chroot base.
    fn usual_args(&self, id: &str) -> Vec<String> {
        let base = self.path().to_str().unwrap();
        let (uid, gid) = (UID.to_string(), GID.to_string());
        args(&[
            "--id",
            id,
            "--exec-file",
            FIRECRACKER,
            "--uid",
            &uid,
            "--gid",
            &gid,
        ])
        .into_iter()
        .chain(args(&["--chroot-base-dir", base]))
        .collect()
    }

    /// The jailer with `args`, then `--` and `firecracker_args`; output to a file named
    /// after the `--id` given, if any.
    fn jailer(&self, args: &[String], firecracker_args: &[&str]) -> Command {
        let id = args.iter().skip_while(|a| *a != "--id").nth(1);
        let out = fs::File::create(self.output(id.map_or("none", |s| s))).unwrap();
        let mut command = Command::new(JAILER);
        command.args(args);
        if !firecracker_args.is_empty() {
            command.arg("--").args(firecracker_args);
        }
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        command
    }

    /// Runs a jailer expected to end by itself; how it ended and what it printed.
    fn run_to_end(&self, args: &[String]) -> (ExitStatus, String) {
        let id = args.iter().skip_while(|a| *a != "--id").nth(1).cloned();
        let mut child = self
            .jailer(args, &["--api-sock", API_SOCK])
            .spawn()
            .unwrap();
        let status = wait_exit(&mut child);
        let output = fs::read_to_string(self.output(id.as_deref().unwrap_or("none")));
        (status, output.unwrap_or_default())
    }

    /// A jailed fake serving at [`API_SOCK`], with `jailer_args` besides the usual ones.
    async fn launch(&self, id: &str, jailer_args: &[&str]) -> Jailed {
        let mut args = self.usual_args(id);
        args.extend(jailer_args.iter().map(|a| a.to_string()));
        self.start(self.jailer(&args, &["--api-sock", API_SOCK]), id)
            .await
    }

    /// Spawns `command`, a jailer that execs in place, and waits for the API socket.
    async fn start(&self, mut command: Command, id: &str) -> Jailed {
        let child = command.spawn().unwrap();
        let jailed = Jailed::new(
            child.id() as i32,
            Some(child),
            self.root(id),
            self.output(id),
        );
        jailed.wait_for_socket().await;
        jailed
    }

    /// A jailer that leaves (`--daemonize`, `--new-pid-ns`): it must exit 0, and the pid
    /// file then names the jailed process.
    async fn launch_detached(&self, id: &str, jailer_args: &[&str]) -> Jailed {
        let mut args = self.usual_args(id);
        args.extend(jailer_args.iter().map(|a| a.to_string()));
        let mut jailer = self
            .jailer(&args, &["--api-sock", API_SOCK])
            .spawn()
            .unwrap();
        let status = wait_exit(&mut jailer);
        let output = fs::read_to_string(self.output(id)).unwrap_or_default();
        assert!(status.success(), "{status}: {output}");

        let pid_file = self.root(id).join(format!("{EXEC_NAME}.pid"));
        let pid = poll(|| fs::read_to_string(&pid_file).ok()?.parse().ok());
        let jailed = Jailed::new(pid, None, self.root(id), self.output(id));
        jailed.wait_for_socket().await;
        jailed
    }
}

/// A jailed fake; killed when dropped.
struct Jailed {
    pid: i32,
    /// The jailer's process when the fake runs in it (no `--daemonize`, no `--new-pid-ns`).
    child: Option<Child>,
    root: PathBuf,
    output: PathBuf,
    client: ApiClient,
    killed: bool,
}

impl Jailed {
    fn new(pid: i32, child: Option<Child>, root: PathBuf, output: PathBuf) -> Self {
        let client = ApiClient::new(root.join(API_SOCK.trim_start_matches('/')));
        Self {
            pid,
            child,
            root,
            output,
            client,
            killed: false,
        }
    }

    async fn wait_for_socket(&self) {
        if let Err(error) = ApiClient::wait_for_socket(self.client.socket(), WAIT).await {
            let output = fs::read_to_string(&self.output).unwrap_or_default();
            panic!("{error}; output:\n{output}");
        }
    }

    /// A path inside the jail, as the host sees it.
    fn host_path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }

    /// `/proc/<pid>/<name>`.
    fn proc(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/{name}", self.pid))
    }

    /// A field of `/proc/<pid>/status`.
    fn status(&self, field: &str) -> String {
        let status = fs::read_to_string(self.proc("status")).unwrap();
        let line = status.lines().find(|l| l.starts_with(&format!("{field}:")));
        line.unwrap()[field.len() + 1..].trim().to_owned()
    }

    /// Kills the process, once, and waits until it has exited.
    fn kill(&mut self) {
        if std::mem::replace(&mut self.killed, true) {
            return;
        }
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        match self.child.take() {
            Some(mut child) => {
                let _ = child.wait();
            }
            // Not our child: someone else reaps it; gone or a zombie will do.
            None => poll_until(|| !is_running(self.pid)),
        }
    }
}

impl Drop for Jailed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A process holding a network namespace; killed when dropped.
struct Holder(Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Configures and starts a guest with its kernel and vsock socket in the jail.
async fn boot(jailed: &Jailed) {
    fs::write(jailed.host_path("/vmlinux"), b"fake kernel").unwrap();
    let client = &jailed.client;
    client
        .put_machine_config(&MachineConfig::new(1, 128))
        .await
        .unwrap();
    let boot = BootSource {
        kernel_image_path: "/vmlinux".into(),
        boot_args: None,
        initrd_path: None,
    };
    client.put_boot_source(&boot).await.unwrap();
    let vsock = Vsock {
        guest_cid: 3,
        uds_path: "/v.sock".into(),
    };
    client.put_vsock(&vsock).await.unwrap();
    client.start_instance().await.unwrap();
}

fn assert_refused<T: std::fmt::Debug>(result: Result<T, ApiError>, needle: &str) {
    let error = result.expect_err("the request must be refused");
    let message = error.fault_message().unwrap_or_default();
    assert!(message.contains(needle), "{error}");
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| a.to_string()).collect()
}

/// `args` with the value of `option` replaced.
fn replace(args: &[String], option: &str, value: &str) -> Vec<String> {
    let mut args = args.to_vec();
    let at = args.iter().position(|a| a == option).unwrap();
    args[at + 1] = value.to_owned();
    args
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

fn umask() -> u32 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
}

/// The host's mounts at or below `dir`.
fn host_mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_str().unwrap();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    mounts
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(dir)))
        .map(String::from)
        .collect()
}

/// Whether `pid` is alive and not a zombie.
fn is_running(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    stat.rfind(')')
        .is_some_and(|at| !stat[at + 2..].starts_with('Z'))
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    poll(|| child.try_wait().unwrap())
}

/// Polls `check` until it gives a value, for up to [`WAIT`].
fn poll<T>(mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "nothing after {WAIT:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn poll_until(mut done: impl FnMut() -> bool) {
    poll(|| done().then_some(()));
}
