//! The fake as a process: Firecracker's command line, the faults from arguments and the
//! environment, then serving until the contract ends the process.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use super::contract::Contract;
use super::faults::{parse_list, Fault, FAULTS_ENV};
use super::{server, FakeOptions, FAKE_VMM_VERSION};

/// Firecracker options that take a value, accepted and ignored.
const IGNORED_WITH_VALUE: &[&str] = &[
    "--level",
    "--log-path",
    "--module",
    "--metrics-path",
    "--seccomp-filter",
    "--http-api-max-payload-size",
    "--mmds-size-limit",
    "--start-time-us",
    "--start-time-cpu-us",
    "--parent-cpu-time-us",
];

/// Firecracker flags, accepted and ignored.
const IGNORED_FLAGS: &[&str] = &[
    "--show-level",
    "--show-log-origin",
    "--boot-timer",
    "--no-seccomp",
    "--enable-pci",
];

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Version,
    Serve(FakeOptions),
}

/// The `fake-firecracker` binary's `main`: `--api-sock PATH [--id ID] [--fake-fault SPEC]...`
/// or `--version`, plus Firecracker's other options (ignored). Faults also come from
/// [`FAULTS_ENV`]. Exits 1 when the socket path exists, as Firecracker does.
pub fn run_process(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let mut options = match parse_args(args) {
        Ok(Command::Version) => {
            println!("Firecracker v{FAKE_VMM_VERSION}\n");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Serve(options)) => options,
        Err(message) => return fail(&message),
    };
    match parse_list(&std::env::var(FAULTS_ENV).unwrap_or_default()) {
        Ok(faults) => options.faults.extend(faults),
        Err(error) => return fail(&error.to_string()),
    }
    if options.api_sock.exists() {
        return fail(&format!(
            "Failed to open the API socket at: {}. Check that it is not already used.",
            options.api_sock.display()
        ));
    }
    if options.faults.contains(&Fault::NoSocket) {
        loop {
            std::thread::park();
        }
    }
    serve(options)
}

fn serve(options: FakeOptions) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("cannot start a runtime: {error}")),
    };
    let contract = Arc::new(Mutex::new(Contract::new(options.id, options.faults)));
    let status = runtime.block_on(async {
        let listener = tokio::net::UnixListener::bind(&options.api_sock)
            .map_err(|error| format!("cannot bind {}: {error}", options.api_sock.display()))?;
        Ok::<_, String>(server::serve(listener, contract, true).await)
    });
    match status {
        // Like a process that dies: no orderly shutdown of what is still in flight.
        Ok(status) => std::process::exit(status),
        Err(message) => fail(&message),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("fake-firecracker: {message}");
    ExitCode::FAILURE
}

fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut args = args.into_iter().skip(1);
    let (mut api_sock, mut id, mut faults) = (None, None, Vec::new());
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| format!("argument {a:?} is not UTF-8"))?;
        // Firecracker's parser takes `--name value` only, and no value starting with `--`.
        let mut value = || {
            args.next()
                .and_then(|v| v.into_string().ok())
                .filter(|v| !v.starts_with("--"))
                .ok_or_else(|| format!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--version" => return Ok(Command::Version),
            "--api-sock" => api_sock = Some(PathBuf::from(value()?)),
            "--id" => id = Some(value()?),
            "--fake-fault" => faults.push(
                value()?
                    .parse()
                    .map_err(|e: super::InvalidFault| e.to_string())?,
            ),
            known if IGNORED_WITH_VALUE.contains(&known) => drop(value()?),
            known if IGNORED_FLAGS.contains(&known) => {}
            other => return Err(format!("unsupported argument {other}")),
        }
    }
    let api_sock = api_sock.ok_or("--api-sock PATH is required")?;
    Ok(Command::Serve(FakeOptions {
        id: id.unwrap_or_else(|| FakeOptions::new(&api_sock).id),
        api_sock,
        faults,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        std::iter::once("fake-firecracker")
            .chain(list.iter().copied())
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn firecracker_command_lines_parse() {
        let parsed = parse_args(args(&[
            "--api-sock",
            "/tmp/x.sock",
            "--id",
            "vm1",
            "--level",
            "Debug",
            "--boot-timer",
            "--fake-fault",
            "die-during-boot",
        ]));
        let Ok(Command::Serve(options)) = parsed else {
            panic!("{parsed:?}");
        };
        assert_eq!(options.api_sock, PathBuf::from("/tmp/x.sock"));
        assert_eq!(options.id, "vm1");
        assert_eq!(options.faults, vec![Fault::DieDuringBoot]);
        assert_eq!(parse_args(args(&["--version"])), Ok(Command::Version));
    }

    #[test]
    fn bad_command_lines_are_refused() {
        assert!(parse_args(args(&[])).unwrap_err().contains("--api-sock"));
        assert!(parse_args(args(&["--api-sock"]))
            .unwrap_err()
            .contains("needs a value"));
        let unknown = parse_args(args(&["--api-sock", "/s", "--config-file", "c.json"]));
        assert!(unknown.unwrap_err().contains("--config-file"));
        let fault = parse_args(args(&["--api-sock", "/s", "--fake-fault", "explode"]));
        assert!(fault.unwrap_err().contains("explode"));
    }

    #[test]
    fn only_the_form_firecrackers_parser_takes_is_accepted() {
        let equals = parse_args(args(&["--api-sock", "/s", "--id=vm1"]));
        assert!(equals.unwrap_err().contains("--id=vm1"));
        let dashed = parse_args(args(&["--id", "--api-sock", "/s"]));
        assert!(dashed.unwrap_err().contains("--id needs a value"));
        // What the jailer execs: `--name value` throughout.
        let jailed = parse_args(args(&[
            "--id",
            "vm1",
            "--start-time-us",
            "14660979103",
            "--start-time-cpu-us",
            "0",
            "--parent-cpu-time-us",
            "6280",
            "--api-sock",
            "/fc.sock",
        ]));
        assert!(matches!(jailed, Ok(Command::Serve(o)) if o.id == "vm1"));
    }
}
