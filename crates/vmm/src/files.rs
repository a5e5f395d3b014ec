//! Checks on the files a VMM is started with, before anything is started.

use std::path::{Path, PathBuf};

/// The first of `files` (what it is for, its path) that is not a regular file.
pub fn first_missing<'a>(
    files: impl IntoIterator<Item = (&'static str, &'a Path)>,
) -> Option<(&'static str, PathBuf)> {
    files
        .into_iter()
        .find(|(_, path)| !path.is_file())
        .map(|(what, path)| (what, path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_first_file_that_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let here = dir.path().join("kernel");
        std::fs::write(&here, b"k").unwrap();
        let gone = dir.path().join("disk");
        assert_eq!(first_missing([("kernel", here.as_path())]), None);
        assert_eq!(
            first_missing([
                ("kernel", here.as_path()),
                ("root disk", gone.as_path()),
                ("directory", dir.path()),
            ]),
            Some(("root disk", gone.clone()))
        );
    }
}
