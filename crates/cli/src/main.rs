//! `boxcutter`: thin binary over the `boxcutter_cli` library.

fn main() {
    let env = boxcutter_cli::Env::from_process();
    std::process::exit(boxcutter_cli::run(std::env::args_os(), &env));
}
