//! SSH public keys: parsing `authorized_keys`-style lines, fingerprints, and importing a
//! GitHub user's keys from `<keys-url>/<login>.keys`.

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use sha2::{Digest, Sha256};

/// Key algorithms accepted for login.
const ALGORITHMS: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Why a key line or a key import was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The line is not `<algorithm> <base64 blob> [comment]` with a known algorithm.
    #[error("not an SSH public key: {0:?}")]
    Malformed(String),
    /// The keys URL could not be fetched.
    #[error("fetch {url}")]
    Fetch {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The keys URL answered with an error.
    #[error("{url} answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// Its HTTP status.
        status: u16,
    },
}

/// A parsed SSH public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    algorithm: String,
    blob: String,
    comment: String,
    fingerprint: String,
}

impl PublicKey {
    /// Parses one `authorized_keys`-style line (options are not accepted).
    pub fn parse(line: &str) -> Result<Self, KeyError> {
        let malformed = || KeyError::Malformed(line.chars().take(80).collect());
        let mut fields = line.split_ascii_whitespace();
        let (Some(algorithm), Some(blob)) = (fields.next(), fields.next()) else {
            return Err(malformed());
        };
        if !ALGORITHMS.contains(&algorithm) {
            return Err(malformed());
        }
        let bytes = STANDARD.decode(blob).map_err(|_| malformed())?;
        if blob_algorithm(&bytes) != Some(algorithm.as_bytes()) {
            return Err(malformed());
        }
        let comment: String = fields.collect::<Vec<_>>().join(" ");
        Ok(Self {
            algorithm: algorithm.into(),
            blob: blob.into(),
            comment: comment
                .chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .collect(),
            fingerprint: format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(&bytes))),
        })
    }

    /// The base64 key blob (what sshd's `%k` gives `AuthorizedKeysCommand`).
    pub fn blob(&self) -> &str {
        &self.blob
    }

    /// The OpenSSH fingerprint, `SHA256:...`.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The key as an `authorized_keys` line.
    pub fn line(&self) -> String {
        if self.comment.is_empty() {
            format!("{} {}", self.algorithm, self.blob)
        } else {
            format!("{} {} {}", self.algorithm, self.blob, self.comment)
        }
    }
}

/// The algorithm name a key blob starts with (an SSH wire string).
fn blob_algorithm(bytes: &[u8]) -> Option<&[u8]> {
    let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    bytes.get(4..4 + len)
}

/// Every key of a file or HTTP body, one per line; blank lines and `#` comments skipped.
pub fn parse_all(text: &str) -> Result<Vec<PublicKey>, KeyError> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(PublicKey::parse)
        .collect()
}

/// Fetches `<keys_url>/<login>.keys` (GitHub's format). `Ok(None)` when the user does not
/// exist there (404).
pub async fn fetch_keys(
    http: &reqwest::Client,
    keys_url: &str,
    login: &str,
) -> Result<Option<Vec<PublicKey>>, KeyError> {
    let url = format!("{}/{login}.keys", keys_url.trim_end_matches('/'));
    let fetch = |source| KeyError::Fetch {
        url: url.clone(),
        source,
    };
    let response = http
        .get(&url)
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .map_err(fetch)?;
    match response.status().as_u16() {
        404 => return Ok(None),
        200..=299 => {}
        status => return Err(KeyError::Status { url, status }),
    }
    let text = response.text().await.map_err(fetch)?;
    parse_all(&text).map(Some)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A real ed25519 key (from `ssh-keygen`), and its fingerprint as `ssh-keygen -l`
    /// prints it.
    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKQsWVqoF9mapdG7DXoaRwHRImiReQHggYsrU8u/kjmm test@host";
    const FINGERPRINT: &str = "SHA256:gWONwRCZbBFzXFwtES39x/8nxIlqwTSM52Ny/qgHSyY";

    #[test]
    fn parses_keys_and_computes_openssh_fingerprints() {
        let key = PublicKey::parse(KEY).unwrap();
        assert_eq!(key.fingerprint(), FINGERPRINT);
        assert_eq!(key.line(), KEY);
        assert!(key.blob().starts_with("AAAAC3NzaC1lZDI1NTE5"));
    }

    #[test]
    fn refuses_what_is_not_a_key() {
        let mismatched = KEY.replace("ssh-ed25519", "ssh-rsa");
        for bad in [
            "",
            "ssh-ed25519",
            "ssh-ed25519 !!!",
            "ssh-dss AAAAB3NzaC1kc3M= x",
            "command=\"x\" ssh-ed25519 AAAA",
            &mismatched,
        ] {
            assert!(PublicKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn files_skip_blanks_and_comments() {
        let keys = parse_all(&format!("# mine\n\n{KEY}\n")).unwrap();
        assert_eq!(keys.len(), 1);
    }
}
