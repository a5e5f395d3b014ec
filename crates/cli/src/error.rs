//! Why a command failed, and the exit status that says so.

use std::path::PathBuf;

use boxcutter_types::api::ApiError;

/// Exit status of a command the orchestrator (or the network, or the config) refused.
pub const EXIT_FAILED: i32 = 1;
/// Exit status of a command line that does not parse.
pub const EXIT_USAGE: i32 = 2;

/// A failed command. Printed as one `error: ...` line on stderr.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line is wrong; the message says how.
    #[error("{0}")]
    Usage(String),
    /// The config file or the secret it names is unusable.
    #[error("config {path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Who the SSH user is cannot be established.
    #[error("{0}")]
    Identity(String),
    /// The orchestrator could not be reached or did not answer in time.
    #[error("cannot reach the orchestrator at {url}")]
    Unreachable {
        /// Its base URL.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The orchestrator refused the request; its message is meant for the user.
    #[error("{0}")]
    Api(ApiError),
    /// The orchestrator answered something this command does not understand.
    #[error("unexpected answer from the orchestrator: {0}")]
    Protocol(String),
    /// Local I/O failed (the VM connection, stdout).
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            _ => EXIT_FAILED,
        }
    }

    /// The whole cause chain on one line, `error: ` first.
    pub fn one_line(&self) -> String {
        let mut line = format!("error: {self}");
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            line.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        line.replace('\n', " ")
    }
}

/// One line for a clap error: its message and tips, without the usage block.
pub fn usage_error(err: &clap::Error) -> CliError {
    let text = err.render().to_string();
    let parts: Vec<String> = text
        .split("\n\n")
        .filter(|p| !p.starts_with("Usage:") && !p.starts_with("For more information"))
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect();
    let message = parts.join("; ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    CliError::Usage(format!("{message} (see --help)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxcutter_types::api::ErrorCode;

    #[test]
    fn api_errors_show_the_orchestrators_message() {
        let err = CliError::Api(ApiError::new(ErrorCode::NotFound, "no such VM: x"));
        assert_eq!(err.one_line(), "error: no such VM: x");
        assert_eq!(err.exit_code(), EXIT_FAILED);
    }

    #[test]
    fn the_chain_is_printed_on_one_line() {
        let err = CliError::Io {
            what: "cannot reach bold-fox at 10.0.0.2:22".into(),
            source: std::io::Error::other("connection refused\nreally"),
        };
        assert_eq!(
            err.one_line(),
            "error: cannot reach bold-fox at 10.0.0.2:22: connection refused really"
        );
    }

    #[test]
    fn clap_errors_become_one_line() {
        use clap::Parser;
        #[derive(Parser, Debug)]
        #[command(no_binary_name = true, color = clap::ColorChoice::Never)]
        struct Demo {
            #[arg(long)]
            ram: u32,
        }
        let err = Demo::try_parse_from(["--bogus"]).unwrap_err();
        let line = usage_error(&err).one_line();
        assert!(
            line.starts_with("error: unexpected argument '--bogus' found"),
            "{line}"
        );
        assert!(line.ends_with("(see --help)"), "{line}");
        assert!(!line.contains('\n') && !line.contains("Usage:"), "{line}");
        assert_eq!(usage_error(&err).exit_code(), EXIT_USAGE);
    }
}
