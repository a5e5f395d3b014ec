//! The `boxcutter` binary, driven the way sshd drives it: `ssh-command` with
//! `$SSH_ORIGINAL_COMMAND` and an `$SSH_USER_AUTH` file, and `authorized-keys %u %t %k`,
//! against the [`common::StandInOrchestrator`]. One test binary, a module per concern.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "../common/mod.rs"]
mod common;

mod authorized_keys;
mod cluster;
mod connect;
mod identity;
mod inspect;
mod lifecycle;
mod usage;
