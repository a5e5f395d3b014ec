//! The `boxcutter` command: the SSH control interface behind OpenSSH.
//!
//! sshd runs it twice per login: as the AuthorizedKeysCommand, to vouch for a key that
//! belongs to a Boxcutter user ([`run`] → `authorized-keys`), and as the ForceCommand,
//! to run the user's command (`ssh-command`): the command line is split without a shell
//! ([`words`]), parsed by the README's grammar ([`commands`]), the user is learned from
//! the login key ([`identity`]), and the orchestrator's HTTP API does the work
//! ([`client`]). Output formats live in [`output`]; `connect` pipes stdio to a VM
//! ([`connect`]). `docs/ssh-interface.md` shows the sshd configuration.

pub mod client;
pub mod commands;
pub mod config;
pub mod connect;
pub mod error;
pub mod identity;
pub mod output;
pub mod run;
pub mod words;

pub use run::{run, Env};
