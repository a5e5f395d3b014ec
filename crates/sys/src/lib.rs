//! Small wrappers over OS facilities that several Boxcutter crates share: running an
//! external program from an argument vector (never a shell) and writing files atomically.

pub mod command;
pub mod error;
pub mod fs;
pub mod proc;

pub use command::{run, CommandError};
pub use error::error_chain;
pub use fs::write_atomic;
