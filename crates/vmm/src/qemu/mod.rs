//! QEMU driver: the QMP client today; process launch and supervision join it here.

pub mod qmp;
