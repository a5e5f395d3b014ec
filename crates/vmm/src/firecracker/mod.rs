//! The Firecracker driver. So far: whether this node can run Firecracker at all
//! ([`capability`]).

pub mod capability;
