//! The orchestrator: VM and node registry, scheduler, users and keys, and the HTTP API behind the SSH control interface.
