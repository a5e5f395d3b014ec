//! Wire types shared by every Boxcutter daemon: validated names, VM specs and records,
//! progress events and the API error body.

pub mod api;
pub mod guest;
pub mod name;
pub mod orch;
pub mod size;
pub mod vm;

pub use name::{NameError, VmName};
pub use size::{ByteSize, SizeError};
pub use vm::{GuestSubnet, NetMode, VmRecord, VmSpec, VmState};
