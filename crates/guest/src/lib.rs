//! The in-guest agent: runs as PID 1 of every Boxcutter VM, sets the guest up from its
//! boot parameters and config drive, reports readiness to the node, then serves as init.
//!
//! The boot protocol (kernel command line, config drive, agent channel) is in
//! `boxcutter_types::guest` and `docs/guest-protocol.md`. Modules, in boot order:
//!
//! - [`mounts`]: kernel filesystems (step 1)
//! - [`identity`]: hostname, `/etc/hosts`, VM type (step 2)
//! - [`net`] over [`netlink`]: loopback, address, route, resolver (step 3)
//! - [`config_drive`] and [`keys`]: SSH keys from the config drive (step 4)
//! - [`metadata`]: authorized keys from the node's metadata service, once the network is
//!   up (step 4c)
//! - [`resize`]: grow the root filesystem (step 5)
//! - [`sshd`]: start sshd, wait for it, restart it (step 6)
//! - [`channel`]: events to the node (step 7)
//! - [`init`], [`power_button`], [`shutdown`]: the init loop (step 8)
//! - [`commands`] and [`refresh`]: the node's commands, served once boot is over
//! - [`boot`]: the steps in order; [`cli`]: the entry point
//!
//! Helpers: [`console`] (logging), [`layout`] (paths, fakeable in tests), [`disks`],
//! [`files`], [`programs`].

#[macro_use]
pub mod console;

pub mod boot;
pub mod channel;
pub mod cli;
pub mod commands;
pub mod config_drive;
pub mod cpus;
pub mod disks;
pub mod files;
pub mod identity;
pub mod init;
pub mod keys;
pub mod layout;
pub mod metadata;
pub mod mounts;
pub mod net;
pub mod netlink;
pub mod power_button;
pub mod programs;
pub mod refresh;
pub mod resize;
pub mod shutdown;
pub mod sshd;
