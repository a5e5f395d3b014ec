//! Who is at the other end of the SSH connection.
//!
//! Every Boxcutter user logs in as the same OS account; what tells them apart is the
//! public key they authenticated with. With `ExposeAuthInfo yes`, sshd writes the
//! methods that succeeded to a file and names it in `$SSH_USER_AUTH`, one per line:
//! `publickey ssh-ed25519 AAAA...`. sshd sets that variable after any the client sent,
//! so a user cannot point it elsewhere. The key's owner is then the orchestrator's
//! answer to `GET /v1/auth/key`; nothing the user types is consulted.

use crate::error::CliError;

/// The environment variable sshd names the auth-info file in.
pub const AUTH_INFO_ENV: &str = "SSH_USER_AUTH";

/// A public key as sshd presents it: type and base64 blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// E.g. `ssh-ed25519`.
    pub key_type: String,
    /// The base64 key blob.
    pub blob: String,
}

impl PublicKey {
    /// A key from sshd's `%t` and `%k`, if both look like what sshd produces. Anything
    /// else is refused, so nothing odd can reach an `authorized_keys` line.
    pub fn new(key_type: &str, blob: &str) -> Option<Self> {
        let type_ok = !key_type.is_empty()
            && key_type
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-@.".contains(&b));
        let blob_ok = blob.len() >= 16
            && blob
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
        (type_ok && blob_ok).then(|| Self {
            key_type: key_type.into(),
            blob: blob.into(),
        })
    }
}

/// The distinct public keys the session authenticated with, from the auth-info file's
/// text. Usually one; more when `AuthenticationMethods` asks for several.
pub fn login_keys(auth_info: &str) -> Result<Vec<PublicKey>, CliError> {
    let mut keys: Vec<PublicKey> = Vec::new();
    for line in auth_info.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("publickey") {
            continue;
        }
        let key = match (words.next(), words.next()) {
            (Some(key_type), Some(blob)) => PublicKey::new(key_type, blob),
            _ => None,
        };
        let key = key.ok_or_else(|| {
            CliError::Identity(format!("unreadable key in sshd's auth info: {line:?}"))
        })?;
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    if keys.is_empty() {
        return Err(CliError::Identity(
            "this session did not log in with a public key".into(),
        ));
    }
    Ok(keys)
}

/// Reads the auth-info file named by `$SSH_USER_AUTH` (given as `path`).
pub fn read_login_keys(path: Option<String>) -> Result<Vec<PublicKey>, CliError> {
    let path = path.filter(|p| !p.is_empty()).ok_or_else(|| {
        CliError::Identity(
            "sshd did not say which key logged in: set ExposeAuthInfo yes in sshd_config".into(),
        )
    })?;
    let text = std::fs::read_to_string(&path).map_err(|source| CliError::Io {
        what: format!("cannot read sshd's auth info {path}"),
        source,
    })?;
    login_keys(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOB: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIBOXCUTTERxTESTxKEYxONLYxxxxxxxxxxxxxxxxx";

    #[test]
    fn finds_the_publickey_lines() {
        let info = format!("publickey ssh-ed25519 {BLOB}\n");
        assert_eq!(
            login_keys(&info).unwrap(),
            [PublicKey::new("ssh-ed25519", BLOB).unwrap()]
        );
        let several = format!(
            "password\npublickey ssh-ed25519 {BLOB}\npublickey ssh-ed25519 {BLOB}\n\
             publickey ecdsa-sha2-nistp256 {BLOB}x\n"
        );
        assert_eq!(login_keys(&several).unwrap().len(), 2);
    }

    #[test]
    fn refuses_sessions_without_a_key() {
        for info in ["", "password\n", "keyboard-interactive\n"] {
            assert!(login_keys(info).is_err(), "{info:?}");
        }
        assert!(login_keys("publickey ssh-ed25519\n").is_err());
        assert!(login_keys("publickey ssh-ed25519 AAAA;rm\n").is_err());
        assert!(read_login_keys(None)
            .unwrap_err()
            .to_string()
            .contains("ExposeAuthInfo"));
    }

    #[test]
    fn keys_must_look_like_sshds() {
        assert!(PublicKey::new("ssh-ed25519", BLOB).is_some());
        assert!(PublicKey::new("sk-ssh-ed25519@openssh.com", BLOB).is_some());
        for (t, k) in [
            ("", BLOB),
            ("ssh-ed25519", ""),
            ("ssh-ed25519", "short"),
            ("ssh ed25519", BLOB),
            ("ssh-ed25519", &format!("{BLOB} extra")),
            ("command=\"x\"", BLOB),
            ("ssh-ed25519", &format!("{BLOB}\nrestrict")),
        ] {
            assert!(PublicKey::new(t, k).is_none(), "{t} {k}");
        }
    }
}
