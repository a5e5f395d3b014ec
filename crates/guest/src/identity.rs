//! Boot step 2: the VM's name and type become its hostname, `/etc/hostname`, the
//! `127.0.1.1` line of `/etc/hosts` and `/etc/boxcutter/vm-type`.

use std::io;
use std::path::PathBuf;

use boxcutter_types::guest::BootParams;

use crate::files;
use crate::layout::Layout;

/// Where the VM type is written for programs in the guest.
pub const VM_TYPE_PATH: &str = "/etc/boxcutter/vm-type";

/// Setting the guest's identity failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The kernel refused the hostname.
    #[error("set hostname {name}")]
    Hostname {
        /// The hostname.
        name: String,
        /// The kernel's answer.
        #[source]
        source: nix::Error,
    },
    /// A file could not be read or written.
    #[error("write {path}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Sets the kernel hostname, then writes the identity files.
pub fn apply(layout: &Layout, params: &BootParams) -> Result<(), IdentityError> {
    let name = params.name.as_str();
    nix::unistd::sethostname(name).map_err(|source| IdentityError::Hostname {
        name: name.to_string(),
        source,
    })?;
    write_files(layout, params)
}

/// Writes `/etc/hostname`, `/etc/hosts` and `/etc/boxcutter/vm-type` under `layout`.
pub fn write_files(layout: &Layout, params: &BootParams) -> Result<(), IdentityError> {
    let name = params.name.as_str();
    write(layout.file("/etc/hostname"), format!("{name}\n"))?;

    let hosts = layout.file("/etc/hosts");
    let existing = match std::fs::read_to_string(&hosts) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        other => other.map_err(|source| file_error(&hosts, source))?,
    };
    write(hosts, render_hosts(&existing, name))?;

    let vm_type = layout.file(VM_TYPE_PATH);
    if let Some(dir) = vm_type.parent() {
        files::dir_ensure(dir, 0o755, None).map_err(|source| file_error(dir, source))?;
    }
    write(vm_type, format!("{}\n", params.vm_type))
}

/// `/etc/hosts` with the `127.0.1.1` line naming this guest, other lines kept as they are;
/// a `localhost` line is added if missing.
pub fn render_hosts(existing: &str, name: &str) -> String {
    let first_field = |line: &str| line.split_whitespace().next().unwrap_or("").to_string();
    let mut lines: Vec<String> = existing
        .lines()
        .filter(|line| first_field(line) != "127.0.1.1")
        .map(str::to_string)
        .collect();
    let localhost = lines
        .iter()
        .position(|line| first_field(line) == "127.0.0.1");
    let at = match localhost {
        Some(i) => i + 1,
        None => {
            lines.insert(0, "127.0.0.1\tlocalhost".to_string());
            1
        }
    };
    lines.insert(at, format!("127.0.1.1\t{name}"));
    lines.join("\n") + "\n"
}

fn write(path: PathBuf, contents: String) -> Result<(), IdentityError> {
    files::replace(&path, contents.as_bytes(), 0o644, None)
        .map_err(|source| file_error(&path, source))
}

fn file_error(path: &std::path::Path, source: io::Error) -> IdentityError {
    IdentityError::File {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use boxcutter_types::guest::VmType;
    use boxcutter_types::VmName;

    use super::*;

    const DEBIAN_HOSTS: &str = "127.0.0.1\tlocalhost\n127.0.1.1\tbuilder\n\n\
        ::1     localhost ip6-localhost ip6-loopback\nff02::1 ip6-allnodes\n";

    #[test]
    fn hosts_replaces_the_debian_name_line_and_keeps_the_rest() {
        let hosts = render_hosts(DEBIAN_HOSTS, "bold-fox");
        assert_eq!(
            hosts,
            "127.0.0.1\tlocalhost\n127.0.1.1\tbold-fox\n\n\
             ::1     localhost ip6-localhost ip6-loopback\nff02::1 ip6-allnodes\n"
        );
        assert_eq!(render_hosts(&hosts, "bold-fox"), hosts);
    }

    #[test]
    fn hosts_from_nothing_has_localhost_and_the_name() {
        assert_eq!(
            render_hosts("", "a"),
            "127.0.0.1\tlocalhost\n127.0.1.1\ta\n"
        );
    }

    #[test]
    fn files_are_written_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::under(dir.path());
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(layout.file("/etc/hosts"), DEBIAN_HOSTS).unwrap();
        let params = BootParams {
            name: VmName::new("bold-fox").unwrap(),
            vm_type: VmType::Firecracker,
            net: None,
            vcpus: None,
        };
        write_files(&layout, &params).unwrap();

        let read = |p: &str| std::fs::read_to_string(layout.file(p)).unwrap();
        assert_eq!(read("/etc/hostname"), "bold-fox\n");
        assert_eq!(read(VM_TYPE_PATH), "firecracker\n");
        assert!(read("/etc/hosts").contains("127.0.1.1\tbold-fox\n"));
    }
}
