//! Running external programs. Every program is started from an argument vector; a failure
//! carries the program, its exit status and the tail of its stderr, so the error says why.

use std::ffi::OsStr;
use std::process::{Command, Output};
use std::time::Instant;

/// How much of a failed program's stderr an error keeps.
const STDERR_TAIL: usize = 2000;

/// A program could not be run or reported failure.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program could not be started at all (usually: not installed).
    #[error("cannot run {program}")]
    Spawn {
        /// The program's name.
        program: String,
        /// Why it could not start.
        #[source]
        source: std::io::Error,
    },
    /// The program ran and exited unsuccessfully.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// The program's name.
        program: String,
        /// Its exit status, as printed by the OS.
        status: String,
        /// The end of what it wrote to stderr.
        stderr: String,
    },
}

/// Runs `cmd` to completion, capturing its output; a non-zero exit is an error.
pub fn run(cmd: &mut Command) -> Result<Output, CommandError> {
    let program = program_name(cmd.get_program());
    let started = Instant::now();
    let output = cmd.output().map_err(|source| CommandError::Spawn {
        program: program.clone(),
        source,
    })?;
    tracing::debug!(
        program,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "ran program"
    );
    if output.status.success() {
        return Ok(output);
    }
    Err(CommandError::Failed {
        program,
        status: output.status.to_string(),
        stderr: stderr_tail(&output.stderr),
    })
}

fn program_name(program: &OsStr) -> String {
    program.to_string_lossy().into_owned()
}

fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    match text.char_indices().rev().nth(STDERR_TAIL) {
        Some((cut, _)) => format!("…{}", &text[cut..]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_returns_output() {
        let out = run(Command::new("echo").arg("a b")).unwrap();
        assert_eq!(out.stdout, b"a b\n");
    }

    #[test]
    fn failure_names_program_status_and_stderr() {
        let err = run(Command::new("ls").arg("/nonexistent-boxcutter")).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("ls failed (exit status: 2)"), "{text}");
        assert!(text.contains("nonexistent-boxcutter"), "{text}");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = run(&mut Command::new("/nonexistent/boxcutter-tool")).unwrap_err();
        assert!(matches!(err, CommandError::Spawn { .. }));
        assert_eq!(err.to_string(), "cannot run /nonexistent/boxcutter-tool");
    }

    #[test]
    fn long_stderr_keeps_its_end() {
        let tail = stderr_tail("x".repeat(5000).as_bytes());
        assert_eq!(tail.chars().count(), STDERR_TAIL + 2);
    }
}
