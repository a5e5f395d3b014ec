//! Shutting the guest down cleanly, whatever asked for it (power button, SIGTERM, SIGPWR,
//! or SIGINT, which is how the kernel delivers Ctrl-Alt-Del and so Firecracker's
//! `SendCtrlAltDel`).
//!
//! ```text
//! announce ShuttingDown (flushed, at most 250 ms)
//!   -> SIGTERM to every process -> reap until none is left, at most 3 s
//!   -> SIGKILL to the rest      -> reap until none is left, at most 1 s
//!   -> sync -> remount / read-only -> power off (QEMU) or reset (Firecracker)
//! ```
//!
//! The sequence is written against [`ShutdownOps`] so tests can run it with a fake clock
//! and fake processes; [`SystemOps`] is the real one, for PID 1 only.

use std::time::{Duration, Instant};

use boxcutter_types::guest::{AgentEvent, VmType};
use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::channel::Reporter;

/// How long processes get to exit after SIGTERM.
pub const TERM_GRACE: Duration = Duration::from_secs(3);

/// How long to wait for processes to vanish after SIGKILL.
pub const KILL_WAIT: Duration = Duration::from_secs(1);

/// How long the host gets to read the `ShuttingDown` event.
pub const ANNOUNCE_WAIT: Duration = Duration::from_millis(250);

const REAP_POLL: Duration = Duration::from_millis(20);

/// How the machine stops at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    /// ACPI power-off: QEMU exits.
    PowerOff,
    /// A reset: Firecracker has no power-off and exits when the guest resets.
    Reset,
}

impl Halt {
    /// The way to stop a VM of `vm_type` (power-off when unknown).
    pub fn for_vm(vm_type: Option<VmType>) -> Self {
        match vm_type {
            Some(VmType::Firecracker) => Halt::Reset,
            Some(VmType::Qemu) | None => Halt::PowerOff,
        }
    }
}

/// Asks the init loop to shut down, by sending ourselves SIGPWR: the power button's
/// handler, so every trigger arrives through the same signal path.
pub fn power_button_pressed() {
    info!("power button pressed");
    let _ = kill(Pid::this(), Signal::SIGPWR);
}

/// The operations the shutdown sequence is made of.
pub trait ShutdownOps {
    /// Tells the node the guest is going down.
    fn announce(&mut self);
    /// Sends `signal` to every process but ourselves.
    fn signal_all(&mut self, signal: Signal);
    /// Reaps exited children; returns whether any process is left.
    fn processes_remain(&mut self) -> bool;
    /// Waits a little.
    fn pause(&mut self, duration: Duration);
    /// Time since the shutdown began.
    fn elapsed(&self) -> Duration;
    /// Flushes filesystem buffers.
    fn sync(&mut self);
    /// Remounts the root filesystem read-only.
    fn remount_root_read_only(&mut self) -> Result<(), Errno>;
    /// Stops the machine; returns only if it could not.
    fn halt(&mut self, how: Halt) -> Errno;
}

/// Runs the whole sequence; returns only if the machine could not be stopped.
pub fn run_sequence(ops: &mut impl ShutdownOps, how: Halt) -> Errno {
    ops.announce();

    ops.signal_all(Signal::SIGTERM);
    if !wait_for_exit(ops, TERM_GRACE) {
        warn!(
            "shutdown: processes left after {} ms; sending SIGKILL",
            TERM_GRACE.as_millis()
        );
        ops.signal_all(Signal::SIGKILL);
        if !wait_for_exit(ops, KILL_WAIT) {
            warn!("shutdown: processes survive SIGKILL; stopping anyway");
        }
    }
    info!(
        "shutdown: processes stopped elapsed_ms={}",
        ops.elapsed().as_millis()
    );

    ops.sync();
    if let Err(e) = ops.remount_root_read_only() {
        warn!("shutdown: remount / read-only failed: {e}; the journal will recover it");
    }
    info!("shutdown: halting how={how:?}");
    ops.halt(how)
}

fn wait_for_exit(ops: &mut impl ShutdownOps, limit: Duration) -> bool {
    let deadline = ops.elapsed() + limit;
    loop {
        if !ops.processes_remain() {
            return true;
        }
        if ops.elapsed() >= deadline {
            return false;
        }
        ops.pause(REAP_POLL);
    }
}

/// The real operations, for PID 1.
pub struct SystemOps {
    reporter: Reporter,
    started: Instant,
}

impl SystemOps {
    /// Operations reporting on `reporter`, timed from now.
    pub fn new(reporter: Reporter) -> Self {
        SystemOps {
            reporter,
            started: Instant::now(),
        }
    }
}

impl ShutdownOps for SystemOps {
    fn announce(&mut self) {
        self.reporter.send(AgentEvent::ShuttingDown);
        if !self.reporter.flush(ANNOUNCE_WAIT) {
            warn!("shutdown: the node did not take the shutting_down event in time");
        }
    }

    fn signal_all(&mut self, signal: Signal) {
        // -1: every process we may signal, except ourselves; ESRCH means none is left.
        let _ = kill(Pid::from_raw(-1), signal);
    }

    fn processes_remain(&mut self) -> bool {
        reap_all() == Reaped::SomeRunning
    }

    fn pause(&mut self, duration: Duration) {
        std::thread::sleep(duration);
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn sync(&mut self) {
        nix::unistd::sync();
    }

    fn remount_root_read_only(&mut self) -> Result<(), Errno> {
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
    }

    fn halt(&mut self, how: Halt) -> Errno {
        let mode = match how {
            Halt::PowerOff => RebootMode::RB_POWER_OFF,
            Halt::Reset => RebootMode::RB_AUTOBOOT,
        };
        match reboot(mode) {
            Err(e) => e,
            Ok(never) => match never {},
        }
    }
}

/// What a reaping pass found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaped {
    /// Children are still running.
    SomeRunning,
    /// No child is left (as PID 1: no process at all).
    None,
}

/// Reaps every exited child, calling `on_exit` for each; never blocks.
pub fn reap_with(mut on_exit: impl FnMut(Pid, WaitStatus)) -> Reaped {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return Reaped::SomeRunning,
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    on_exit(pid, status);
                }
            }
            Err(Errno::EINTR) => {}
            Err(_) => return Reaped::None, // ECHILD
        }
    }
}

fn reap_all() -> Reaped {
    reap_with(|_, _| {})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Processes that exit `exit_after_term` after SIGTERM (never, if `None`).
    struct FakeSystem {
        now: Duration,
        exit_after_term: Option<Duration>,
        term_at: Option<Duration>,
        killed: bool,
        remount: Result<(), Errno>,
        calls: Vec<String>,
    }

    impl FakeSystem {
        fn new(exit_after_term: Option<Duration>) -> Self {
            FakeSystem {
                now: Duration::ZERO,
                exit_after_term,
                term_at: None,
                killed: false,
                remount: Ok(()),
                calls: Vec::new(),
            }
        }
    }

    impl ShutdownOps for FakeSystem {
        fn announce(&mut self) {
            self.calls.push("announce".into());
        }
        fn signal_all(&mut self, signal: Signal) {
            self.calls
                .push(format!("{signal} at {}ms", self.now.as_millis()));
            match signal {
                Signal::SIGKILL => self.killed = true,
                _ => self.term_at = Some(self.now),
            }
        }
        fn processes_remain(&mut self) -> bool {
            let exited = match (self.term_at, self.exit_after_term) {
                (Some(at), Some(after)) => self.now >= at + after,
                _ => false,
            };
            !(exited || self.killed)
        }
        fn pause(&mut self, duration: Duration) {
            self.now += duration;
        }
        fn elapsed(&self) -> Duration {
            self.now
        }
        fn sync(&mut self) {
            self.calls.push("sync".into());
        }
        fn remount_root_read_only(&mut self) -> Result<(), Errno> {
            self.calls.push("remount ro".into());
            self.remount
        }
        fn halt(&mut self, how: Halt) -> Errno {
            self.calls.push(format!("halt {how:?}"));
            Errno::EPERM
        }
    }

    #[test]
    fn polite_processes_are_not_killed() {
        let mut fake = FakeSystem::new(Some(Duration::from_millis(100)));
        run_sequence(&mut fake, Halt::PowerOff);
        assert_eq!(
            fake.calls,
            [
                "announce",
                "SIGTERM at 0ms",
                "sync",
                "remount ro",
                "halt PowerOff"
            ]
        );
        assert!(fake.now < Duration::from_millis(200));
    }

    #[test]
    fn stragglers_are_killed_after_the_grace_period() {
        let mut fake = FakeSystem::new(None);
        run_sequence(&mut fake, Halt::Reset);
        assert_eq!(
            fake.calls,
            [
                "announce",
                "SIGTERM at 0ms",
                "SIGKILL at 3000ms",
                "sync",
                "remount ro",
                "halt Reset"
            ]
        );
    }

    #[test]
    fn failed_remount_still_halts() {
        let mut fake = FakeSystem::new(Some(Duration::ZERO));
        fake.remount = Err(Errno::EBUSY);
        assert_eq!(run_sequence(&mut fake, Halt::PowerOff), Errno::EPERM);
        assert_eq!(fake.calls.last().unwrap(), "halt PowerOff");
    }

    #[test]
    fn firecracker_resets_and_qemu_powers_off() {
        assert_eq!(Halt::for_vm(Some(VmType::Firecracker)), Halt::Reset);
        assert_eq!(Halt::for_vm(Some(VmType::Qemu)), Halt::PowerOff);
        assert_eq!(Halt::for_vm(None), Halt::PowerOff);
    }
}
