//! Where the agent finds the system: the root filesystem, sysfs and `/dev`.
//!
//! Every step takes a [`Layout`] instead of hard-coding `/`, so tests run the same code
//! against a fake tree in a temporary directory.

use std::path::{Path, PathBuf};

/// The directories the agent reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The root filesystem (`/`).
    pub root: PathBuf,
    /// Where sysfs is mounted (`/sys`).
    pub sys: PathBuf,
    /// Where devtmpfs is mounted (`/dev`).
    pub dev: PathBuf,
    /// Where procfs is mounted (`/proc`).
    pub proc: PathBuf,
}

impl Layout {
    /// The real system, as PID 1 sees it.
    pub fn system() -> Self {
        Layout {
            root: PathBuf::from("/"),
            sys: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
            proc: PathBuf::from("/proc"),
        }
    }

    /// A fake system under `dir`: `dir/sys`, `dir/dev`, `dir/proc`, with `dir` as root.
    pub fn under(dir: &Path) -> Self {
        Layout {
            root: dir.to_path_buf(),
            sys: dir.join("sys"),
            dev: dir.join("dev"),
            proc: dir.join("proc"),
        }
    }

    /// The path of the absolute guest path `path` (such as `/etc/hosts`) in this layout.
    pub fn file(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_paths_resolve_under_the_root() {
        let layout = Layout::under(Path::new("/tmp/x"));
        assert_eq!(layout.file("/etc/hosts"), Path::new("/tmp/x/etc/hosts"));
        assert_eq!(Layout::system().file("/etc/hosts"), Path::new("/etc/hosts"));
    }
}
