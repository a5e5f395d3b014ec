//! The `boxcutter` command's configuration: where the orchestrator is and where the
//! cluster secret that signs our tokens lives.
//!
//! ```toml
//! # /etc/boxcutter/cli.toml
//! orchestrator_url = "http://127.0.0.1:8801"
//! secret_file = "/var/lib/boxcutter/cluster.key"
//! # Optional: authorized-keys answers only for this login name.
//! login_user = "boxcutter"
//! ```
//!
//! The file is chosen by `--config`, else `$BOXCUTTER_CONFIG`, else [`DEFAULT_PATH`].
//! Whoever can read the secret can act as any user, so both files belong to the
//! dedicated OS user sshd runs `boxcutter` as, and to root.

use std::path::{Path, PathBuf};

use boxcutter_auth::ClusterSecret;
use serde::Deserialize;

use crate::error::CliError;

/// Where the config lives unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/boxcutter/cli.toml";

/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "BOXCUTTER_CONFIG";

/// The parsed config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliConfig {
    /// Base URL of the orchestrator API, e.g. `http://127.0.0.1:8801`.
    pub orchestrator_url: String,
    /// The cluster secret (hex), as the orchestrator reads it.
    pub secret_file: PathBuf,
    /// When set, `authorized-keys` vouches for keys only when sshd authenticates this
    /// login name, so Boxcutter keys never open any other account.
    #[serde(default)]
    pub login_user: Option<String>,
}

impl CliConfig {
    /// The file named by `flag`, else `$BOXCUTTER_CONFIG`, else [`DEFAULT_PATH`].
    pub fn path(flag: Option<&Path>, env: Option<String>) -> PathBuf {
        match (flag, env) {
            (Some(path), _) => path.to_path_buf(),
            (None, Some(env)) if !env.is_empty() => PathBuf::from(env),
            _ => PathBuf::from(DEFAULT_PATH),
        }
    }

    /// Reads and checks the config at `path`.
    pub fn load(path: &Path) -> Result<Self, CliError> {
        let err = |message: String| CliError::Config {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let config: Self = toml::from_str(&text).map_err(|e| err(e.message().to_string()))?;
        // Limitation: plain HTTP only (no TLS in the client); the API is reached over
        // loopback or the host-only bridge, and every request carries a signed token.
        if !config.orchestrator_url.starts_with("http://") {
            return Err(err(format!(
                "orchestrator_url {:?} is not an http:// URL",
                config.orchestrator_url
            )));
        }
        Ok(config)
    }

    /// The cluster secret. Never creates one: a fresh secret here would only sign tokens
    /// the orchestrator refuses.
    pub fn secret(&self) -> Result<ClusterSecret, CliError> {
        let err = |message: String| CliError::Config {
            path: self.secret_file.clone(),
            message,
        };
        if !self.secret_file.exists() {
            return Err(err("no such file (is this the orchestrator host?)".into()));
        }
        ClusterSecret::load_or_create(&self.secret_file).map_err(|e| err(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_over_the_environment_over_the_default() {
        let flag = Path::new("/a.toml");
        assert_eq!(CliConfig::path(Some(flag), Some("/b".into())), flag);
        assert_eq!(CliConfig::path(None, Some("/b".into())), Path::new("/b"));
        assert_eq!(
            CliConfig::path(None, Some(String::new())),
            Path::new(DEFAULT_PATH)
        );
        assert_eq!(CliConfig::path(None, None), Path::new(DEFAULT_PATH));
    }

    #[test]
    fn loads_a_config_and_refuses_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cli.toml");
        std::fs::write(
            &path,
            "orchestrator_url = \"http://127.0.0.1:8801\"\nsecret_file = \"/s\"\n",
        )
        .unwrap();
        let config = CliConfig::load(&path).unwrap();
        assert_eq!(config.secret_file, Path::new("/s"));
        assert_eq!(config.login_user, None);

        for (bad, why) in [
            (
                "orchestrator_url = \"x\"\nsecret_file = \"/s\"",
                "not an http:// URL",
            ),
            (
                "orchestrator_url = \"http://a\"",
                "missing field `secret_file`",
            ),
            (
                "orchestrator_url = \"http://a\"\nsecret_file = \"/s\"\nport = 1",
                "unknown field `port`",
            ),
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = CliConfig::load(&path).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let missing = CliConfig::load(&dir.path().join("none.toml")).unwrap_err();
        assert!(missing.to_string().contains("none.toml"), "{missing}");
    }

    #[test]
    fn a_missing_secret_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let config = CliConfig {
            orchestrator_url: "http://a".into(),
            secret_file: dir.path().join("cluster.key"),
            login_user: None,
        };
        assert!(config.secret().is_err());
        assert!(!config.secret_file.exists());
    }
}
