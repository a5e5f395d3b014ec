//! The `refresh` host command: a guest restored from a snapshot (a copy of a running VM,
//! or a migration) becomes the VM the node names, with its own clock, random state, host
//! key, name and network.
//!
//! ```text
//! check: entropy is hex, >= 32 bytes; host key is one sshd loads     (nothing changed yet)
//!   -> clock     clock_settime(CLOCK_REALTIME, unix_time_ms)
//!   -> entropy   RNDADDENTROPY on /dev/urandom, credited
//!   -> host key  the files as the keys step writes them -> sshd reloads, listens again
//!   -> identity  hostname, /etc/hostname, /etc/hosts, vm-type (kept from boot)
//!   -> network   old address out, new address in, default route, resolv.conf
//! ```
//!
//! The clock and the RNG go first: every copy of one snapshot starts with the same random
//! state and a stopped clock, and sshd's reload (a re-exec) should already draw from the
//! fresh state. A failed step stops the refresh and is not undone: each step done leaves
//! the guest nearer the VM it should be, none is wrong on its own, and a refresh may be
//! sent again as a whole. The caller's [`BootParams`] record what is in effect.
//!
//! The steps that reach outside files go through [`RefreshOps`], so tests can record them
//! instead of setting the test machine's clock; [`SystemOps`] is the real one.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use boxcutter_types::guest::{BootParams, GuestNet, Refresh};
use nix::errno::Errno;
use nix::sys::time::TimeSpec;
use nix::time::{clock_settime, ClockId};

use crate::identity::{self, IdentityError};
use crate::keys::{self, KeysError};
use crate::layout::Layout;
use crate::net::{self, NetError};
use crate::sshd::{self, SshdError};

/// The least entropy a refresh must carry, in bytes.
pub const MIN_ENTROPY: usize = 32;

/// A refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// `entropy` has a character that is not a hex digit, or an odd length.
    #[error("entropy is not hex")]
    EntropyNotHex,
    /// `entropy` is too short.
    #[error("entropy is {bytes} bytes; at least {MIN_ENTROPY} are needed")]
    EntropyShort {
        /// How many bytes it has.
        bytes: usize,
    },
    /// `ssh_host_key` is not a key sshd loads.
    #[error("check ssh host key")]
    HostKeyInvalid(#[source] KeysError),
    /// The kernel refused the new time.
    #[error("set the clock to {unix_time_ms} ms after the epoch")]
    Clock {
        /// The time asked for.
        unix_time_ms: u64,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// The kernel's RNG did not take the entropy.
    #[error("add entropy through {path}")]
    Entropy {
        /// The random device.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The host key files could not be written.
    #[error("install ssh host key")]
    HostKey(#[source] KeysError),
    /// sshd did not reload.
    #[error("reload sshd")]
    Sshd(#[source] SshdError),
    /// The hostname or identity files could not be set.
    #[error("redo identity")]
    Identity(#[source] IdentityError),
    /// The network could not be moved.
    #[error("reconfigure network")]
    Net(#[source] NetError),
}

/// What a refresh does outside the files under its [`Layout`].
pub trait RefreshOps {
    /// Sets the wall clock.
    fn set_clock(&mut self, unix_time_ms: u64) -> Result<(), RefreshError>;
    /// Mixes `entropy` into the kernel's RNG and credits it.
    fn add_entropy(&mut self, entropy: &[u8]) -> Result<(), RefreshError>;
    /// Has sshd load its host key again; returns once it listens with it.
    fn reload_sshd(&mut self) -> Result<(), RefreshError>;
    /// Sets the hostname and writes the identity files for `params`.
    fn identity(&mut self, params: &BootParams) -> Result<(), RefreshError>;
    /// Moves the network from `old` to `new`, resolver included.
    fn network(&mut self, old: Option<&GuestNet>, new: &GuestNet) -> Result<(), RefreshError>;
}

/// Checks `refresh`, then carries it out in order; `current` (the guest's boot parameters
/// as boot and earlier refreshes left them) follows each step that succeeds.
pub fn run(
    layout: &Layout,
    ops: &mut impl RefreshOps,
    current: &mut BootParams,
    refresh: &Refresh,
) -> Result<(), RefreshError> {
    let entropy = decode_entropy(&refresh.entropy)?;
    if let Some(pem) = &refresh.ssh_host_key {
        keys::parse_host_key(pem).map_err(RefreshError::HostKeyInvalid)?;
    }

    ops.set_clock(refresh.unix_time_ms)?;
    ops.add_entropy(&entropy)?;

    if let Some(pem) = &refresh.ssh_host_key {
        let fingerprint = keys::install_host_key(layout, pem).map_err(RefreshError::HostKey)?;
        ops.reload_sshd()?;
        info!("refresh: sshd reloaded host_key={fingerprint}");
    }

    let renamed = BootParams {
        name: refresh.name.clone(),
        ..current.clone()
    };
    ops.identity(&renamed)?;
    current.name = renamed.name;

    if let Some(net) = &refresh.net {
        ops.network(current.net.as_ref(), net)?;
        current.net = Some(net.clone());
    }
    Ok(())
}

/// The bytes of hex-encoded `entropy`, at least [`MIN_ENTROPY`] of them.
pub fn decode_entropy(entropy: &str) -> Result<Vec<u8>, RefreshError> {
    let digits = entropy.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return Err(RefreshError::EntropyNotHex);
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let bytes = digits
        .chunks(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect::<Option<Vec<u8>>>()
        .ok_or(RefreshError::EntropyNotHex)?;
    if bytes.len() < MIN_ENTROPY {
        return Err(RefreshError::EntropyShort { bytes: bytes.len() });
    }
    Ok(bytes)
}

/// The refresh's effects on the running guest: the kernel, sshd, the network.
pub struct SystemOps {
    layout: Layout,
}

impl SystemOps {
    /// The real operations, on the system under `layout`.
    pub fn new(layout: Layout) -> Self {
        SystemOps { layout }
    }
}

impl RefreshOps for SystemOps {
    fn set_clock(&mut self, unix_time_ms: u64) -> Result<(), RefreshError> {
        let secs = (unix_time_ms / 1000) as libc::time_t;
        let nanos = ((unix_time_ms % 1000) * 1_000_000) as libc::c_long;
        clock_settime(ClockId::CLOCK_REALTIME, TimeSpec::new(secs, nanos)).map_err(|source| {
            RefreshError::Clock {
                unix_time_ms,
                source,
            }
        })
    }

    fn add_entropy(&mut self, entropy: &[u8]) -> Result<(), RefreshError> {
        let path = self.layout.dev.join("urandom");
        add_entropy(&path, entropy).map_err(|source| RefreshError::Entropy { path, source })
    }

    /// Asks the init loop, which owns sshd, to send it SIGHUP, then waits until sshd
    /// listens on new sockets: it has re-executed itself and loaded the new key.
    fn reload_sshd(&mut self) -> Result<(), RefreshError> {
        let (proc, port) = (&self.layout.proc, sshd::SSH_ADDR.port());
        let before = sshd::listeners(proc, port).map_err(RefreshError::Sshd)?;
        sshd::request_reload().map_err(RefreshError::Sshd)?;
        sshd::await_relisten(proc, port, &before, sshd::RELOAD_TIMEOUT).map_err(RefreshError::Sshd)
    }

    fn identity(&mut self, params: &BootParams) -> Result<(), RefreshError> {
        identity::apply(&self.layout, params).map_err(RefreshError::Identity)
    }

    fn network(&mut self, old: Option<&GuestNet>, new: &GuestNet) -> Result<(), RefreshError> {
        let interface = net::reconfigure(&self.layout, old, new).map_err(RefreshError::Net)?;
        info!(
            "refresh: network moved interface={} address={}/{}",
            interface.name, new.address, new.prefix_len
        );
        Ok(())
    }
}

nix::ioctl_write_ptr!(
    /// `RNDADDENTROPY`: adds a `struct rand_pool_info` to the kernel's RNG and credits it.
    rnd_add_entropy,
    b'R',
    0x03,
    [libc::c_int; 2]
);

/// Mixes `entropy` into the kernel's RNG through the random device at `path`, crediting
/// every bit (the node drew it from its own RNG). Needs `CAP_SYS_ADMIN`.
///
/// Untested outside a guest: crediting test bytes to the test machine's RNG would weaken
/// it. The end-to-end refresh test covers it.
fn add_entropy(path: &Path, entropy: &[u8]) -> io::Result<()> {
    let device = OpenOptions::new().write(true).open(path)?;
    let info = rand_pool_info(entropy);
    // SAFETY: `info` is a rand_pool_info: two ints, then `buf_size` bytes of buffer, all
    // in one allocation that outlives the call; the kernel only reads it.
    unsafe { rnd_add_entropy(device.as_raw_fd(), info.as_ptr().cast()) }?;
    Ok(())
}

/// `struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }` for
/// `entropy`, credited in full: `entropy_count` is in bits, `buf_size` in bytes.
fn rand_pool_info(entropy: &[u8]) -> Vec<u32> {
    let mut info = vec![(entropy.len() * 8) as u32, entropy.len() as u32];
    info.extend(entropy.chunks(4).map(|chunk| {
        let mut word = [0u8; 4];
        word[..chunk.len()].copy_from_slice(chunk);
        u32::from_ne_bytes(word)
    }));
    info
}

#[cfg(test)]
pub(crate) mod tests {
    use boxcutter_types::guest::VmType;
    use boxcutter_types::VmName;

    use super::*;

    /// A throwaway key made with `ssh-keygen -t ed25519 -N '' -C test-host-key`.
    pub(crate) const HOST_KEY: &str = include_str!("../testdata/throwaway_host_key");
    const HOST_KEY_PUB: &str = include_str!("../testdata/throwaway_host_key.pub");

    /// Records what a refresh asked of the system; identity and network write their files
    /// under the layout as the real ones do. `fail` names an operation that fails.
    pub(crate) struct FakeOps {
        pub(crate) layout: Layout,
        pub(crate) calls: Vec<String>,
        pub(crate) fail: Option<&'static str>,
    }

    impl FakeOps {
        pub(crate) fn new(layout: &Layout) -> Self {
            FakeOps {
                layout: layout.clone(),
                calls: Vec::new(),
                fail: None,
            }
        }

        fn call(&mut self, name: &'static str, detail: String) -> Result<(), RefreshError> {
            self.calls
                .push(format!("{name} {detail}").trim_end().to_string());
            match self.fail {
                Some(failing) if failing == name => Err(RefreshError::Sshd(SshdError::Reload {
                    port: 22,
                    waited_ms: 1,
                })),
                _ => Ok(()),
            }
        }
    }

    impl RefreshOps for FakeOps {
        fn set_clock(&mut self, unix_time_ms: u64) -> Result<(), RefreshError> {
            self.call("clock", unix_time_ms.to_string())
        }

        fn add_entropy(&mut self, entropy: &[u8]) -> Result<(), RefreshError> {
            self.call("entropy", format!("{} bytes", entropy.len()))
        }

        fn reload_sshd(&mut self) -> Result<(), RefreshError> {
            self.call("reload-sshd", String::new())
        }

        fn identity(&mut self, params: &BootParams) -> Result<(), RefreshError> {
            self.call("identity", params.name.to_string())?;
            identity::write_files(&self.layout, params).map_err(RefreshError::Identity)
        }

        fn network(&mut self, old: Option<&GuestNet>, new: &GuestNet) -> Result<(), RefreshError> {
            let old = old.map_or("none".into(), |o| o.address.to_string());
            self.call("network", format!("{old} -> {}", new.address))?;
            net::write_resolv_conf(&self.layout, new).map_err(RefreshError::Net)
        }
    }

    /// A fake image root with the directories a refresh writes into.
    pub(crate) fn fake_root(dir: &Path) -> Layout {
        let layout = Layout::under(dir);
        std::fs::create_dir_all(layout.file("/etc/ssh")).unwrap();
        layout
    }

    pub(crate) fn booted_params() -> BootParams {
        BootParams {
            name: VmName::new("original").unwrap(),
            vm_type: VmType::Firecracker,
            net: Some(net("10.0.0.2", "10.0.0.1")),
            vcpus: Some(1),
        }
    }

    fn net(address: &str, gateway: &str) -> GuestNet {
        GuestNet {
            address: address.parse().unwrap(),
            prefix_len: 30,
            gateway: gateway.parse().unwrap(),
            dns: vec![gateway.parse().unwrap()],
        }
    }

    pub(crate) fn refresh() -> Refresh {
        Refresh {
            name: VmName::new("copy-1").unwrap(),
            net: Some(net("10.0.0.6", "10.0.0.5")),
            unix_time_ms: 1_893_456_000_123,
            entropy: "ab".repeat(MIN_ENTROPY),
            ssh_host_key: Some(HOST_KEY.into()),
        }
    }

    #[test]
    fn steps_run_in_order_and_the_params_follow() {
        let dir = tempfile::tempdir().unwrap();
        let layout = fake_root(dir.path());
        let mut ops = FakeOps::new(&layout);
        let mut current = booted_params();
        run(&layout, &mut ops, &mut current, &refresh()).unwrap();

        assert_eq!(
            ops.calls,
            [
                "clock 1893456000123",
                "entropy 32 bytes",
                "reload-sshd",
                "identity copy-1",
                "network 10.0.0.2 -> 10.0.0.6",
            ]
        );
        let read = |p: &str| std::fs::read_to_string(layout.file(p)).unwrap();
        assert_eq!(read(keys::HOST_KEY_PATH), HOST_KEY);
        assert_eq!(read("/etc/ssh/ssh_host_ed25519_key.pub"), HOST_KEY_PUB);
        assert_eq!(read("/etc/hostname"), "copy-1\n");
        assert_eq!(read(identity::VM_TYPE_PATH), "firecracker\n");
        assert!(read("/etc/resolv.conf").ends_with("nameserver 10.0.0.5\n"));
        assert_eq!(current.name.as_str(), "copy-1");
        assert_eq!(current.net, refresh().net);
        assert_eq!(current.vcpus, Some(1));
    }

    #[test]
    fn without_key_or_network_those_steps_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let layout = fake_root(dir.path());
        let mut ops = FakeOps::new(&layout);
        let mut current = booted_params();
        let bare = Refresh {
            net: None,
            ssh_host_key: None,
            ..refresh()
        };
        run(&layout, &mut ops, &mut current, &bare).unwrap();
        assert_eq!(
            ops.calls,
            ["clock 1893456000123", "entropy 32 bytes", "identity copy-1"]
        );
        assert!(!layout.file(keys::HOST_KEY_PATH).exists());
        assert_eq!(current.net, booted_params().net, "the old network stays");
    }

    #[test]
    fn bad_input_is_refused_before_anything_changes() {
        let dir = tempfile::tempdir().unwrap();
        let layout = fake_root(dir.path());
        let cases = [
            (
                "ab".repeat(MIN_ENTROPY - 1),
                None,
                "entropy is 31 bytes; at least 32 are needed",
            ),
            ("zz".repeat(MIN_ENTROPY), None, "entropy is not hex"),
            (format!("+{}", "a".repeat(63)), None, "entropy is not hex"),
            ("a".repeat(65), None, "entropy is not hex"),
            (
                "ab".repeat(MIN_ENTROPY),
                Some("not a key"),
                "check ssh host key",
            ),
        ];
        for (entropy, key, message) in cases {
            let mut ops = FakeOps::new(&layout);
            let mut current = booted_params();
            let bad = Refresh {
                entropy,
                ssh_host_key: key.map(str::to_string).or(Some(HOST_KEY.into())),
                ..refresh()
            };
            let err = run(&layout, &mut ops, &mut current, &bad).unwrap_err();
            assert_eq!(err.to_string(), message);
            assert_eq!(ops.calls, Vec::<String>::new(), "{message}");
            assert_eq!(current, booted_params());
        }
        assert_eq!(
            std::fs::read_dir(layout.file("/etc/ssh")).unwrap().count(),
            0
        );
    }

    #[test]
    fn a_failed_step_stops_the_refresh_and_the_params_keep_what_was_done() {
        let dir = tempfile::tempdir().unwrap();
        let layout = fake_root(dir.path());
        let mut ops = FakeOps::new(&layout);
        ops.fail = Some("network");
        let mut current = booted_params();
        let err = run(&layout, &mut ops, &mut current, &refresh()).unwrap_err();
        assert!(
            matches!(err, RefreshError::Sshd(_)),
            "the fake's error: {err}"
        );
        assert_eq!(current.name.as_str(), "copy-1");
        assert_eq!(current.net, booted_params().net);

        let mut ops = FakeOps::new(&layout);
        ops.fail = Some("reload-sshd");
        let mut current = booted_params();
        run(&layout, &mut ops, &mut current, &refresh()).unwrap_err();
        assert_eq!(ops.calls.last().unwrap(), "reload-sshd");
        assert_eq!(current, booted_params());
    }

    #[test]
    fn entropy_decodes_any_case_and_the_pool_info_credits_every_bit() {
        let bytes = decode_entropy(&"0aF1".repeat(16)).unwrap();
        assert_eq!(bytes[..2], [0x0a, 0xf1]);
        assert_eq!(bytes.len(), 32);

        let info = rand_pool_info(&[1, 2, 3, 4, 5]);
        assert_eq!(info[..2], [40, 5]);
        assert_eq!(info[2], u32::from_ne_bytes([1, 2, 3, 4]));
        assert_eq!(info[3], u32::from_ne_bytes([5, 0, 0, 0]));
        assert_eq!(info.len(), 4);
    }
}
