//! How the agent starts the few external programs it needs: always from an argument
//! vector, with a clean environment and no stdin, never through a shell.

use std::process::{Command, Stdio};

/// The `PATH` the agent gives its children (Debian's default for root).
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A command for `program` with the agent's standard environment: `PATH`, `HOME=/root`,
/// `LANG=C.UTF-8`, stdin from `/dev/null`. Whatever the kernel or initramfs left in our
/// own environment is not passed on.
pub fn command(program: &str) -> Command {
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("PATH", PATH)
        .env("HOME", "/root")
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null());
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_see_only_the_standard_environment() {
        let out = command("env").output().unwrap();
        let mut env: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        env.sort();
        assert_eq!(env, ["HOME=/root", "LANG=C.UTF-8", &format!("PATH={PATH}")]);
    }
}
