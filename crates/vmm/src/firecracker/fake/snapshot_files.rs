//! The files a `FakeFirecracker` snapshot consists of. The state file is JSON holding the
//! saved resources (the real one is Firecracker's binary format); the memory file is a
//! sparse file as large as guest memory with a marker at its start, so sizes and paths are
//! real while the disk cost is nothing.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::resources::Resources;
use crate::firecracker::api::SnapshotType;

/// First field of every fake state file.
const STATE_MAGIC: &str = "fake-firecracker snapshot v1";

/// First bytes of every fake memory file.
const MEMORY_MARKER: &[u8] = b"FAKE-FIRECRACKER-MEMORY\n";

/// What a fake state file holds.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct SavedState {
    magic: String,
    pub snapshot_type: SnapshotType,
    pub resources: Resources,
}

/// How far writing a snapshot gets before it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Completion {
    /// Both files, whole.
    Whole,
    /// The state file and half of the memory file (an injected failure).
    Halfway,
}

/// Writes the state file, then the memory file, as Firecracker does.
pub(super) fn write(
    snapshot_type: SnapshotType,
    resources: &Resources,
    state_path: &Path,
    memory_path: &Path,
    completion: Completion,
) -> Result<(), String> {
    let state = SavedState {
        magic: STATE_MAGIC.to_owned(),
        snapshot_type,
        resources: resources.clone(),
    };
    let json = serde_json::to_vec(&state).map_err(|e| e.to_string())?;
    write_file(state_path, &json, None)
        .map_err(|e| format!("Cannot perform open on the snapshot backing file: {e}"))?;

    let length = match completion {
        Completion::Whole => resources.memory_bytes(),
        Completion::Halfway => resources.memory_bytes() / 2,
    };
    write_file(memory_path, MEMORY_MARKER, Some(length))
        .map_err(|e| format!("Cannot write memory file: {e}"))
}

/// Reads a fake state file and checks the memory file belongs with it.
pub(super) fn read(state_path: &Path, memory_path: &Path) -> Result<SavedState, String> {
    let bytes = std::fs::read(state_path)
        .map_err(|e| format!("Failed to open the snapshot state file: {e}"))?;
    let state: SavedState = serde_json::from_slice(&bytes)
        .ok()
        .filter(|s: &SavedState| s.magic == STATE_MAGIC)
        .ok_or("The snapshot state file is not a fake-firecracker snapshot")?;

    let memory = std::fs::metadata(memory_path)
        .map_err(|e| format!("Failed to open the memory file: {e}"))?;
    let expected = state.resources.memory_bytes();
    if memory.len() < expected {
        return Err(format!(
            "The memory file holds {} bytes; the snapshot's guest has {expected}",
            memory.len()
        ));
    }
    Ok(state)
}

fn write_file(path: &Path, contents: &[u8], length: Option<u64>) -> std::io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(contents)?;
    if let Some(length) = length {
        file.set_len(length.max(contents.len() as u64))?;
    }
    file.sync_all()
}
