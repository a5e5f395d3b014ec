//! Boot step 4b: install the SSH keys from the config drive.
//!
//! The `dev` user's `authorized_keys` (directory 0700, file 0600, owned by `dev`, as sshd's
//! `StrictModes` requires) and the host key the node generated for this VM, so the node
//! knows the guest's host key before it boots. The public half is derived in-process
//! from the private key file (the `ssh-key` crate), which also checks that the key is an
//! unencrypted ed25519 key, the only kind sshd is configured to load.

use std::io;
use std::path::{Path, PathBuf};

use boxcutter_types::guest::GuestConfig;
use ssh_key::{Algorithm, HashAlg, PrivateKey};

use crate::files::{self, Owner};
use crate::layout::Layout;

/// The user whose `authorized_keys` the agent writes.
pub const DEV_USER: &str = "dev";

/// Where sshd (configured by the image builder) loads its only host key from.
pub const HOST_KEY_PATH: &str = "/etc/ssh/ssh_host_ed25519_key";

/// Installing keys failed.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// `/etc/passwd` could not be read.
    #[error("read {path}")]
    Passwd {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The user does not exist in the image.
    #[error("user {user} not in {path}")]
    NoUser {
        /// The user.
        user: &'static str,
        /// The passwd file searched.
        path: PathBuf,
    },
    /// An authorized key spans lines, which would smuggle in extra entries.
    #[error("authorized key {index} contains a line break")]
    MultiLineKey {
        /// Its position in the config.
        index: usize,
    },
    /// The host key does not parse as an OpenSSH private key.
    #[error("parse ssh host key")]
    HostKey(#[source] ssh_key::Error),
    /// The host key is not one sshd will load.
    #[error("ssh host key is {found}; sshd needs an unencrypted ssh-ed25519 key")]
    HostKeyKind {
        /// What the key is.
        found: String,
    },
    /// A key file or directory could not be written.
    #[error("write {path}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// An account from `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Numeric owner.
    pub owner: Owner,
    /// Home directory, an absolute guest path.
    pub home: String,
}

/// What [`install`] did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// How many authorized keys were written.
    pub authorized_keys: usize,
    /// The host key's SHA-256 fingerprint, as `ssh-keygen -l` prints it.
    pub host_key_fingerprint: String,
}

/// Installs both the authorized keys and the host key under `layout`.
pub fn install(layout: &Layout, config: &GuestConfig) -> Result<Installed, KeysError> {
    let host_key_fingerprint = install_host_key(layout, &config.ssh_host_key)?;
    let authorized_keys = install_authorized_keys(layout, &config.authorized_keys)?;
    Ok(Installed {
        authorized_keys,
        host_key_fingerprint,
    })
}

/// Writes `~dev/.ssh/authorized_keys`; returns how many keys it holds.
pub fn install_authorized_keys(layout: &Layout, keys: &[String]) -> Result<usize, KeysError> {
    let text = render_authorized_keys(keys)?;
    let account = account(layout, DEV_USER)?;
    let ssh_dir = layout.file(&account.home).join(".ssh");
    files::dir_ensure(&ssh_dir, 0o700, Some(account.owner))
        .map_err(|e| write_error(&ssh_dir, e))?;
    let path = ssh_dir.join("authorized_keys");
    files::replace(&path, text.as_bytes(), 0o600, Some(account.owner))
        .map_err(|e| write_error(&path, e))?;
    Ok(text.lines().count())
}

/// Writes the host key (0600) and its public half (0644), owned by the agent's user (root
/// in the guest); returns the key's fingerprint.
pub fn install_host_key(layout: &Layout, pem: &str) -> Result<String, KeysError> {
    let key = parse_host_key(pem)?;
    let public = key.public_key().to_openssh().map_err(KeysError::HostKey)?;
    // The agent runs as root, so new files are root's: no chown needed.
    let root = None;

    let private_path = layout.file(HOST_KEY_PATH);
    let private = with_newline(pem.trim_end());
    files::replace(&private_path, private.as_bytes(), 0o600, root)
        .map_err(|e| write_error(&private_path, e))?;
    let public_path = layout.file(&format!("{HOST_KEY_PATH}.pub"));
    files::replace(&public_path, with_newline(&public).as_bytes(), 0o644, root)
        .map_err(|e| write_error(&public_path, e))?;
    Ok(key.public_key().fingerprint(HashAlg::Sha256).to_string())
}

/// Parses `pem` as a host key sshd will load: an unencrypted OpenSSH ed25519 private key.
pub fn parse_host_key(pem: &str) -> Result<PrivateKey, KeysError> {
    let key = PrivateKey::from_openssh(pem).map_err(KeysError::HostKey)?;
    if key.algorithm() != Algorithm::Ed25519 || key.is_encrypted() {
        let found = match key.is_encrypted() {
            true => format!("an encrypted {}", key.algorithm()),
            false => key.algorithm().to_string(),
        };
        return Err(KeysError::HostKeyKind { found });
    }
    Ok(key)
}

/// The `authorized_keys` file for `keys`, one per line, blank entries dropped.
pub fn render_authorized_keys(keys: &[String]) -> Result<String, KeysError> {
    let mut text = String::new();
    for (index, key) in keys.iter().enumerate() {
        let key = key.trim();
        if key.contains(['\n', '\r']) {
            return Err(KeysError::MultiLineKey { index });
        }
        if !key.is_empty() {
            text.push_str(key);
            text.push('\n');
        }
    }
    Ok(text)
}

/// Looks `user` up in the `/etc/passwd` under `layout`.
pub fn account(layout: &Layout, user: &'static str) -> Result<Account, KeysError> {
    let path = layout.file("/etc/passwd");
    let text = std::fs::read_to_string(&path).map_err(|source| KeysError::Passwd {
        path: path.clone(),
        source,
    })?;
    parse_passwd(&text, user).ok_or(KeysError::NoUser { user, path })
}

/// Finds `user` in passwd-format `text`: `name:x:uid:gid:gecos:home:shell`.
pub fn parse_passwd(text: &str, user: &str) -> Option<Account> {
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 7 || fields[0] != user {
            return None;
        }
        Some(Account {
            owner: Owner {
                uid: fields[2].parse().ok()?,
                gid: fields[3].parse().ok()?,
            },
            home: fields[5].to_string(),
        })
    })
}

fn with_newline(text: &str) -> String {
    format!("{}\n", text.trim_end_matches('\n'))
}

fn write_error(path: &Path, source: io::Error) -> KeysError {
    KeysError::Write {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    use super::*;

    /// A throwaway key made with `ssh-keygen -t ed25519 -N '' -C test-host-key`.
    const HOST_KEY: &str = include_str!("../testdata/throwaway_host_key");
    const HOST_KEY_PUB: &str = include_str!("../testdata/throwaway_host_key.pub");

    /// A fake image root whose `dev` user is the test's own user, so chown works anywhere.
    fn fake_root(dir: &Path) -> (Layout, Owner) {
        let layout = Layout::under(dir);
        let me = Owner {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        };
        fs::create_dir_all(layout.file("/etc/ssh")).unwrap();
        fs::create_dir_all(layout.file("/home/dev")).unwrap();
        let passwd = format!(
            "root:x:0:0:root:/root:/bin/bash\n\
             dev:x:{}:{}:Developer,,,:/home/dev:/bin/bash\n",
            me.uid, me.gid
        );
        fs::write(layout.file("/etc/passwd"), passwd).unwrap();
        (layout, me)
    }

    fn mode_and_owner(path: &Path) -> (u32, u32, u32) {
        let meta = fs::metadata(path).unwrap();
        (meta.mode() & 0o7777, meta.uid(), meta.gid())
    }

    #[test]
    fn authorized_keys_get_sshd_strict_modes_and_the_dev_owner() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, me) = fake_root(dir.path());
        let keys = vec![
            "ssh-ed25519 AAAA a@x".to_string(),
            " ".into(),
            "ssh-rsa BBBB b".into(),
        ];
        assert_eq!(install_authorized_keys(&layout, &keys).unwrap(), 2);

        let ssh = layout.file("/home/dev/.ssh");
        assert_eq!(mode_and_owner(&ssh), (0o700, me.uid, me.gid));
        let file = ssh.join("authorized_keys");
        assert_eq!(mode_and_owner(&file), (0o600, me.uid, me.gid));
        assert_eq!(
            fs::read_to_string(file).unwrap(),
            "ssh-ed25519 AAAA a@x\nssh-rsa BBBB b\n"
        );
    }

    #[test]
    fn host_key_is_private_and_its_public_half_matches_ssh_keygen() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, _) = fake_root(dir.path());
        let fingerprint = install_host_key(&layout, HOST_KEY).unwrap();
        assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");

        let private = layout.file(HOST_KEY_PATH);
        assert_eq!(mode_and_owner(&private).0, 0o600);
        assert_eq!(fs::read_to_string(&private).unwrap(), HOST_KEY);
        let public = layout.file("/etc/ssh/ssh_host_ed25519_key.pub");
        assert_eq!(mode_and_owner(&public).0, 0o644);
        assert_eq!(fs::read_to_string(public).unwrap(), HOST_KEY_PUB);
    }

    #[test]
    fn garbage_host_key_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, _) = fake_root(dir.path());
        let err = install_host_key(&layout, "not a key").unwrap_err();
        assert!(matches!(err, KeysError::HostKey(_)));
        assert!(!layout.file(HOST_KEY_PATH).exists());
    }

    #[test]
    fn multi_line_key_is_refused() {
        let keys = vec!["ssh-ed25519 AAAA a\nssh-ed25519 EVIL b".to_string()];
        assert!(matches!(
            render_authorized_keys(&keys),
            Err(KeysError::MultiLineKey { index: 0 })
        ));
    }

    #[test]
    fn passwd_lookup_reads_ids_and_home() {
        let text = "root:x:0:0:root:/root:/bin/bash\ndev:x:1000:1000::/home/dev:/bin/bash\n";
        let dev = parse_passwd(text, "dev").unwrap();
        assert_eq!(
            dev.owner,
            Owner {
                uid: 1000,
                gid: 1000
            }
        );
        assert_eq!(dev.home, "/home/dev");
        assert_eq!(parse_passwd(text, "de"), None);
    }

    #[test]
    fn missing_user_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, _) = fake_root(dir.path());
        fs::write(layout.file("/etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        let err = install_authorized_keys(&layout, &[]).unwrap_err();
        assert!(err.to_string().starts_with("user dev not in "), "{err}");
    }
}
