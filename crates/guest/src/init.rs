//! PID 1: boot, then the init loop until shutdown. The kernel panics if PID 1 exits, so
//! nothing here returns, and a panic is caught and the loop re-entered.
//!
//! Ownership: the main thread runs boot and then the loop, which alone handles signals,
//! reaps children (all orphans of the guest become ours), supervises sshd and shuts the
//! guest down. Helper threads: the agent channel writer, the thread that takes the node's
//! commands (a reader of the virtio-serial port, or a vsock server), one watcher per power
//! button and, during boot only, `resize2fs`. Every handled signal is blocked in all
//! threads (the mask is set before any thread starts) and read from a signalfd by the loop.
//!
//! The boot parameters live on in [`Commands`] once boot is over: a refresh changes the
//! name and network, and needs the network in effect to move away from it. A refresh that
//! installs a host key asks the loop for an sshd reload with a SIGHUP to PID 1, since only
//! the loop knows sshd's pid; the loop passes the SIGHUP on to sshd.

use std::os::fd::AsFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

use crate::boot::{self, Booted};
use crate::channel::{self, Reporter};
use crate::commands::Commands;
use crate::console;
use crate::layout::Layout;
use crate::shutdown::{self, Halt, SystemOps};
use crate::sshd::{self, RestartPolicy, Supervisor};

/// The signals the loop acts on. SIGINT is Ctrl-Alt-Del once `reboot(RB_DISABLE_CAD)`
/// is in force (Firecracker's `SendCtrlAltDel`); SIGPWR also comes from the power button;
/// SIGHUP reloads sshd.
const HANDLED: [Signal; 5] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGPWR,
    Signal::SIGHUP,
];

/// Runs the guest as its init. Never returns.
pub fn run() -> ! {
    let layout = Layout::system();
    console::open(&layout.dev.join("console"));
    info!("starting version={} pid=1", env!("CARGO_PKG_VERSION"));
    std::panic::set_hook(Box::new(|panic| error!("panic: {panic}")));

    let signals = signals_ensure();
    // Ctrl-Alt-Del then sends us SIGINT instead of rebooting on the spot.
    if let Err(e) = nix::sys::reboot::set_cad_enabled(false) {
        warn!("cannot disable Ctrl-Alt-Del reboot: {e}");
    }

    let (reporter, pending) = channel::reporter();
    let commands = Arc::new(Commands::new(layout.clone()));
    let booted = catch_unwind(AssertUnwindSafe(|| {
        boot::boot(&layout, &reporter, pending, &commands)
    }))
    .unwrap_or_else(|_| {
        error!("boot panicked; continuing as a bare init");
        Booted::default()
    });
    // Boot handed its parameters to the command threads unless it panicked first.
    commands.boot_finished(booted.params.clone());

    let mut init = Init::new(signals, reporter, &booted);
    loop {
        let _ = catch_unwind(AssertUnwindSafe(|| init.serve()));
        error!("init loop panicked; re-entering it");
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Blocks [`HANDLED`] in this thread (and so in every thread started later) and opens a
/// signalfd for them. Without one (it cannot normally fail) the loop still reaps, by
/// polling, but cannot act on shutdown signals.
fn signals_ensure() -> Option<SignalFd> {
    let mut mask = SigSet::empty();
    for signal in HANDLED {
        mask.add(signal);
    }
    let opened = mask
        .thread_block()
        .and_then(|()| SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC));
    match opened {
        Ok(fd) => Some(fd),
        Err(e) => {
            error!("cannot set up signal handling: {e}; shutdown signals will be missed");
            None
        }
    }
}

/// The init loop's state.
struct Init {
    signals: Option<SignalFd>,
    reporter: Reporter,
    sshd: Supervisor,
    halt: Halt,
}

impl Init {
    fn new(signals: Option<SignalFd>, reporter: Reporter, booted: &Booted) -> Self {
        let pid = booted.sshd.as_ref().map(|c| Pid::from_raw(c.id() as i32));
        Init {
            signals,
            reporter,
            sshd: Supervisor::new(pid, Instant::now(), RestartPolicy::default()),
            halt: Halt::for_vm(booted.vm_type()),
        }
    }

    fn serve(&mut self) -> std::convert::Infallible {
        loop {
            self.wait(self.timeout());
            let shutdown = self.take_signals();
            self.reap();
            if let Some(signal) = shutdown {
                self.shut_down(signal);
            }
            self.sshd_restart_if_due();
        }
    }

    /// Until sshd's restart is due; otherwise a minute, as a safety net.
    fn timeout(&self) -> Duration {
        let idle = Duration::from_secs(60);
        match self.sshd.deadline() {
            Some(at) => at.saturating_duration_since(Instant::now()).min(idle),
            None => idle,
        }
    }

    fn wait(&self, timeout: Duration) {
        let Some(signals) = &self.signals else {
            std::thread::sleep(timeout.min(Duration::from_secs(1)));
            return;
        };
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, timeout);
    }

    /// Drains pending signals; returns the first one asking for shutdown.
    fn take_signals(&self) -> Option<Signal> {
        let signals = self.signals.as_ref()?;
        let mut shutdown = None;
        while let Ok(Some(info)) = signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(signal @ (Signal::SIGTERM | Signal::SIGINT | Signal::SIGPWR)) => {
                    shutdown = shutdown.or(Some(signal));
                }
                Ok(Signal::SIGHUP) => self.sshd_reload(),
                _ => {} // SIGCHLD: the reap that follows handles it
            }
        }
        shutdown
    }

    /// Passes a SIGHUP on to sshd, which re-executes itself and so loads its host key
    /// again; a refresh asks for this after installing a new key.
    fn sshd_reload(&self) {
        match self.sshd.pid() {
            Some(pid) => match kill(pid, Signal::SIGHUP) {
                Ok(()) => info!("SIGHUP: reloading sshd pid={pid}"),
                Err(e) => warn!("SIGHUP: cannot signal sshd pid={pid}: {e}"),
            },
            None => info!("SIGHUP: no sshd running; its next start loads the new host key"),
        }
    }

    fn reap(&mut self) {
        let now = Instant::now();
        let sshd = &mut self.sshd;
        shutdown::reap_with(|pid, status| {
            if sshd.child_exited(pid, now) {
                let wait_ms = sshd
                    .deadline()
                    .map_or(0, |at| at.saturating_duration_since(now).as_millis());
                warn!("sshd exited status={status:?}; restarting in {wait_ms} ms");
            }
        });
    }

    fn sshd_restart_if_due(&mut self) {
        let spawn = || {
            sshd::prepare(&Layout::system())?;
            sshd::spawn().map(|c| Pid::from_raw(c.id() as i32))
        };
        match self.sshd.restart_if_due(Instant::now(), spawn) {
            Some(Ok(pid)) => info!("sshd started pid={pid}"),
            Some(Err(e)) => error!("sshd restart failed: {}", console::chain(&e)),
            None => {}
        }
    }

    fn shut_down(&mut self, signal: Signal) -> ! {
        info!("shutdown: requested by {signal}");
        let errno = shutdown::run_sequence(&mut SystemOps::new(self.reporter.clone()), self.halt);
        error!("shutdown: the kernel refused to stop the machine: {errno}");
        loop {
            shutdown::reap_with(|_, _| {});
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}
