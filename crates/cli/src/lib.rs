//! The `boxcutter` command: the SSH control interface's ForceCommand and AuthorizedKeysCommand, and the admin client.
