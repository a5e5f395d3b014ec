//! The command line. As PID 1 the binary is the guest's init, whatever its arguments;
//! anywhere else it only prints things, so running it by mistake on a host or inside a
//! booted guest is harmless.

use std::process::ExitCode;

use boxcutter_types::guest::{BootParams, AGENT_PORT_NAME};

use crate::layout::Layout;
use crate::{channel, config_drive, disks, init, net, power_button};

const USAGE: &str = "\
usage: boxcutter-guest            run as the guest's init (only as PID 1)
       boxcutter-guest probe      print what boot would find on this system (read-only)
       boxcutter-guest --version  print the version
       boxcutter-guest --help     print this help";

/// Runs the binary with `args` (without the program name).
pub fn main(args: &[String]) -> ExitCode {
    if std::process::id() == 1 {
        init::run();
    }
    match args.first().map(String::as_str) {
        None => {
            eprintln!(
                "boxcutter-guest: refusing to run as init: this is pid {}, not 1\n{USAGE}",
                std::process::id()
            );
            ExitCode::from(2)
        }
        Some("--version" | "-V") => {
            println!("boxcutter-guest {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--help" | "-h") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("probe") => {
            print!("{}", probe(&Layout::system()));
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("boxcutter-guest: unknown argument {other:?}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// A report of what boot would find under `layout`, reading files only.
pub fn probe(layout: &Layout) -> String {
    let cmdline = std::fs::read_to_string(layout.proc.join("cmdline")).unwrap_or_default();
    let params = match BootParams::parse(&cmdline) {
        Ok(params) => params.to_cmdline(),
        Err(e) => format!("invalid: {e}"),
    };
    let root = disks::device_number(&layout.root)
        .and_then(|number| disks::device_by_number(&layout.sys, number));
    let (root_text, config) = match &root {
        Ok(root) => (
            format!("{} on disk {}", root.name, root.disk),
            config_drive::find(layout, &root.disk).map(|p| p.display().to_string()),
        ),
        Err(e) => (format!("unknown: {e}"), None),
    };
    let port = channel::find_virtio_port(layout, AGENT_PORT_NAME).map(|p| p.display().to_string());
    let interface =
        net::find_interface(&layout.sys).map(|i| format!("{} (index {})", i.name, i.index));
    let none = || "none".to_string();
    format!(
        "boot params:   {params}\nroot device:   {root_text}\nconfig drive:  {}\n\
         agent port:    {}\ninterface:     {}\npower buttons: {:?}\n",
        config.unwrap_or_else(none),
        port.unwrap_or_else(none),
        interface.unwrap_or_else(none),
        power_button::find(layout),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_of_an_empty_system_says_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let report = probe(&Layout::under(dir.path()));
        assert!(
            report.contains("boot params:   invalid: kernel command line lacks boxcutter.name"),
            "{report}"
        );
        assert!(report.contains("agent port:    none"), "{report}");
        assert!(report.contains("power buttons: []"), "{report}");
    }

    #[test]
    fn without_pid_1_nothing_runs() {
        assert_eq!(main(&[]), ExitCode::from(2));
        assert_eq!(main(&["--version".into()]), ExitCode::SUCCESS);
        assert_eq!(main(&["reboot".into()]), ExitCode::from(2));
    }
}
