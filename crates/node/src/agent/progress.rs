//! Progress lines of a create or copy, sent to whoever streams them to the caller. The
//! channel is unbounded so a slow HTTP client never stalls the VM's task; a create
//! produces a handful of lines.

use std::time::Instant;

use boxcutter_types::api::ProgressLine;
use boxcutter_types::VmRecord;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::error::NodeError;

/// The sending side of a progress stream.
#[derive(Debug, Clone)]
pub struct Progress {
    tx: UnboundedSender<ProgressLine>,
    started: Instant,
}

impl Progress {
    /// A new stream and its receiving end.
    pub fn channel() -> (Self, UnboundedReceiver<ProgressLine>) {
        let (tx, rx) = unbounded_channel();
        (
            Self {
                tx,
                started: Instant::now(),
            },
            rx,
        )
    }

    /// Reports a step.
    pub fn step(&self, phase: &str, message: impl Into<String>) {
        let elapsed_ms = self.started.elapsed().as_millis() as u64;
        let message = message.into();
        tracing::debug!(phase, %message, elapsed_ms, "progress");
        let _ = self.tx.send(ProgressLine::Progress {
            phase: phase.into(),
            message,
            elapsed_ms,
        });
    }

    /// Ends the stream with the VM's record.
    pub fn done(&self, record: &VmRecord) {
        let _ = self.tx.send(ProgressLine::Done {
            vm: Box::new(record.clone()),
        });
    }

    /// Ends the stream with an error.
    pub fn failed(&self, error: &NodeError) {
        let _ = self.tx.send(ProgressLine::Failed {
            error: error.to_api(),
        });
    }
}
