//! The in-guest agent: runs as the guest's init, sets the VM up from its boot parameters and reports readiness to the node.
