//! A writer for the `newc` cpio format, the only archive format the kernel unpacks as an
//! initramfs. Entries carry fixed ownership and timestamps, so the same inputs give the
//! same bytes.

use std::io::{self, Write};

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";

/// Streams a `newc` archive into any writer.
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_inode: u32,
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive.
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_inode: 1,
        }
    }

    /// Adds a directory with permission bits `perm`.
    pub fn dir(&mut self, path: &str, perm: u32) -> io::Result<()> {
        self.entry(path, 0o040000 | perm, &[])
    }

    /// Adds a regular file with permission bits `perm`.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, 0o100000 | perm, data)
    }

    /// Adds a symbolic link `path` pointing at `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.entry(path, 0o120777, target.as_bytes())
    }

    /// Writes the trailer and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.next_inode = 0;
        self.entry(TRAILER, 0, &[])?;
        Ok(self.out)
    }

    fn entry(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        let name_len = path.len() + 1;
        let size = u32::try_from(data.len()).map_err(|_| io::Error::other("entry over 4 GiB"))?;
        let nlink = if mode & 0o040000 != 0 { 2 } else { 1 };
        let fields = [
            self.next_inode,
            mode,
            0,
            0,
            nlink,
            0,
            size,
            0,
            0,
            0,
            0,
            name_len as u32,
            0,
        ];
        self.next_inode += 1;

        let mut header = String::from(MAGIC);
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        self.put(header.as_bytes())?;
        self.put(path.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..pad])
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("bin", 0o755).unwrap();
        w.file("bin/hello", 0o755, b"hello world\n").unwrap();
        w.file("odd", 0o644, b"abc").unwrap();
        w.symlink("sbin", "bin").unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn entries_are_four_byte_aligned_and_end_with_trailer() {
        let bytes = sample();
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("TRAILER!!!"));
    }

    #[test]
    fn gnu_cpio_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("cpio")
            .args(["-idm", "--quiet"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&sample()).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(
            std::fs::read(dir.path().join("bin/hello")).unwrap(),
            b"hello world\n"
        );
        assert_eq!(std::fs::read(dir.path().join("odd")).unwrap(), b"abc");
        assert_eq!(
            std::fs::read_link(dir.path().join("sbin"))
                .unwrap()
                .to_str(),
            Some("bin")
        );
    }
}
