//! Waiting on VMM processes, which are not our children (QEMU daemonizes, Firecracker is
//! let go of after the spawn), so they can only be watched, not waited for.

use std::time::Duration;

use tokio::time::Instant;

/// How often the process is looked at.
const POLL: Duration = Duration::from_millis(20);

/// Waits up to `timeout` until `is_running` says the process is gone; true if it is.
pub async fn wait_gone(is_running: impl Fn() -> bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while is_running() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_as_soon_as_the_process_is_gone_or_the_time_is_up() {
        let polls = AtomicU32::new(0);
        let gone_after_three = || polls.fetch_add(1, Ordering::SeqCst) < 3;
        assert!(wait_gone(gone_after_three, Duration::from_secs(5)).await);
        let started = Instant::now();
        assert!(!wait_gone(|| true, Duration::from_millis(100)).await);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
