//! The egress proxy of paranoid mode: a separate, unprivileged process, because it parses hostile input.
