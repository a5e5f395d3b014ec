//! Recognising our own long-running processes after a restart: a pid is only trusted when
//! the process is alive (not a zombie) and its command line names something that is
//! ours, so a pid the kernel has since recycled is never mistaken for it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// Arranges for `cmd`'s child, before it execs, to start a session of its own (when
/// `new_session`: no terminal signal reaches it and it outlives its parent's group) and to
/// enter the network namespace at `netns` (with `setns` alone, so it keeps our mounts).
///
/// Returns the namespace's file: keep it open until `cmd` has been spawned.
pub fn place_child(
    cmd: &mut Command,
    netns: Option<&Path>,
    new_session: bool,
) -> std::io::Result<Option<File>> {
    let file = netns.map(File::open).transpose()?;
    let fd = file.as_ref().map(AsRawFd::as_raw_fd);
    // SAFETY: setsid and setns are async-signal-safe system calls, and `fd` stays open in
    // the parent (the caller holds the returned file) until the spawn has happened.
    unsafe {
        cmd.pre_exec(move || {
            if new_session && libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            match fd {
                Some(fd) if libc::setns(fd, libc::CLONE_NEWNET) != 0 => {
                    Err(std::io::Error::last_os_error())
                }
                _ => Ok(()),
            }
        });
    }
    Ok(file)
}

/// True when process `pid` exists, is not a zombie, and its command line contains
/// `marker` (a socket path, a state directory).
pub fn runs_with(pid: i32, marker: &[u8]) -> bool {
    let dir = Path::new("/proc").join(pid.to_string());
    let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else {
        return false;
    };
    let ours = !marker.is_empty() && cmdline.windows(marker.len()).any(|w| w == marker);
    ours && !is_zombie(&dir)
}

/// The pid a pidfile holds, if it holds one.
pub fn read_pidfile(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn is_zombie(proc_dir: &Path) -> bool {
    let stat = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
    // The state follows the parenthesised command name, which may itself hold spaces.
    stat.rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_matches_only_its_own_command_line() {
        let me = std::process::id() as i32;
        let exe = std::fs::read(format!("/proc/{me}/cmdline")).unwrap();
        let first_arg = exe.split(|b| *b == 0).next().unwrap();
        assert!(runs_with(me, first_arg));
        assert!(!runs_with(me, b"/no/such/marker"));
        assert!(!runs_with(me, b""));
        assert!(!runs_with(i32::MAX, first_arg));
    }

    #[test]
    fn a_placed_child_starts_its_own_session() {
        let mut cmd = Command::new("cat");
        cmd.arg("/proc/self/stat");
        let _ns = place_child(&mut cmd, None, true).unwrap();
        let out = cmd.output().unwrap();
        let stat = String::from_utf8(out.stdout).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        // pid == session id: the child leads a session of its own.
        assert_eq!(stat.split_whitespace().next(), Some(fields[3]));
    }

    #[test]
    fn a_missing_namespace_is_an_error_before_spawning() {
        let mut cmd = Command::new("true");
        assert!(place_child(&mut cmd, Some(Path::new("/run/netns/no-such-ns")), false).is_err());
    }

    #[test]
    fn pidfiles_hold_one_number() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("x.pid");
        std::fs::write(&pidfile, "42\n").unwrap();
        assert_eq!(read_pidfile(&pidfile), Some(42));
        std::fs::write(&pidfile, "junk").unwrap();
        assert_eq!(read_pidfile(&pidfile), None);
        assert_eq!(read_pidfile(&dir.path().join("none")), None);
    }

    #[test]
    fn this_process_is_not_a_zombie() {
        assert!(!is_zombie(Path::new("/proc/self")));
    }
}
