//! Internal API credentials: bearer tokens signed with the cluster secret.
//!
//! A token is `v1.<audience>.<expiry>.<mac>`: the audience names the API it is for
//! (`node`, `orchestrator`), the expiry is Unix seconds, and the MAC is HMAC-SHA256 of
//! everything before it under the cluster secret, in hex. Whoever holds the secret can
//! issue tokens; a token for one API is refused by another, and every token expires.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of a generated secret.
const SECRET_BYTES: usize = 32;

/// Why a token was refused, or a secret could not be loaded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// The token is not of the `v1.<aud>.<exp>.<mac>` form.
    #[error("malformed token")]
    Malformed,
    /// The token is for another API.
    #[error("token is for {found:?}, not {expected:?}")]
    WrongAudience {
        /// The audience this API expects.
        expected: String,
        /// The token's audience.
        found: String,
    },
    /// The token's expiry has passed.
    #[error("token expired")]
    Expired,
    /// The MAC does not match: not signed with this cluster's secret.
    #[error("bad token signature")]
    BadSignature,
    /// The secret file cannot be read or written.
    #[error("cluster secret {path}: {message}")]
    Secret {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// The cluster secret.
#[derive(Clone)]
pub struct ClusterSecret(Vec<u8>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// A secret from raw bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// Reads the secret (hex) from `path`, creating it (mode 0600) with fresh random
    /// bytes if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, AuthError> {
        let err = |message: String| AuthError::Secret {
            path: path.display().to_string(),
            message,
        };
        if !path.exists() {
            let mut bytes = [0u8; SECRET_BYTES];
            getrandom::fill(&mut bytes).map_err(|e| err(e.to_string()))?;
            write_private(path, hex::encode(bytes).as_bytes()).map_err(|e| err(e.to_string()))?;
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let bytes = hex::decode(text.trim()).map_err(|_| err("not hex".into()))?;
        if bytes.len() < 16 {
            return Err(err("shorter than 16 bytes".into()));
        }
        Ok(Self(bytes))
    }

    /// Issues a token for `audience`, valid for `ttl_secs` seconds.
    pub fn issue(&self, audience: &str, ttl_secs: u64) -> String {
        let body = format!("v1.{audience}.{}", now() + ttl_secs);
        format!("{body}.{}", hex::encode(self.mac(&body)))
    }

    /// Checks a token for `audience`.
    pub fn verify(&self, token: &str, audience: &str) -> Result<(), AuthError> {
        let (body, mac) = token.rsplit_once('.').ok_or(AuthError::Malformed)?;
        let mut parts = body.split('.');
        let (Some("v1"), Some(aud), Some(expiry), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let expiry: u64 = expiry.parse().map_err(|_| AuthError::Malformed)?;
        let mac = hex::decode(mac).map_err(|_| AuthError::Malformed)?;
        let mut check = self.hmac();
        check.update(body.as_bytes());
        check
            .verify_slice(&mac)
            .map_err(|_| AuthError::BadSignature)?;
        if aud != audience {
            return Err(AuthError::WrongAudience {
                expected: audience.into(),
                found: aud.into(),
            });
        }
        if expiry < now() {
            return Err(AuthError::Expired);
        }
        Ok(())
    }

    fn mac(&self, body: &str) -> Vec<u8> {
        let mut mac = self.hmac();
        mac.update(body.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    fn hmac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> ClusterSecret {
        ClusterSecret::from_bytes(b"0123456789abcdef0123456789abcdef".to_vec())
    }

    #[test]
    fn issued_tokens_verify_for_their_audience_only() {
        let token = secret().issue("node", 60);
        assert_eq!(secret().verify(&token, "node"), Ok(()));
        assert!(matches!(
            secret().verify(&token, "orchestrator"),
            Err(AuthError::WrongAudience { .. })
        ));
    }

    #[test]
    fn another_secret_or_a_tampered_token_is_refused() {
        let token = secret().issue("node", 60);
        let other = ClusterSecret::from_bytes(b"another secret, 32 bytes long!!".to_vec());
        assert_eq!(other.verify(&token, "node"), Err(AuthError::BadSignature));
        let tampered = token.replacen("v1.node.", "v1.node.9", 1);
        assert_eq!(
            secret().verify(&tampered, "node"),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn expired_and_malformed_tokens_are_refused() {
        let body = format!("v1.node.{}", now() - 10);
        let expired = format!("{body}.{}", hex::encode(secret().mac(&body)));
        assert_eq!(secret().verify(&expired, "node"), Err(AuthError::Expired));
        for bad in [
            "",
            "v1",
            "v1.node.1",
            "v2.node.1.00",
            "v1.node.x.00",
            "v1.a.b.1.00",
        ] {
            assert!(secret().verify(bad, "node").is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_are_created_private_and_reloaded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets/cluster.key");
        let first = ClusterSecret::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let token = first.issue("node", 60);
        assert_eq!(
            ClusterSecret::load_or_create(&path)
                .unwrap()
                .verify(&token, "node"),
            Ok(())
        );
    }
}
