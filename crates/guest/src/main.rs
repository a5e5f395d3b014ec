//! `boxcutter-guest`: thin binary over the `boxcutter_guest` library.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    boxcutter_guest::cli::main(&args)
}
