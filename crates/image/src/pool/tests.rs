//! Unit tests of the pool's parsing and checks that need no mount: mountinfo, golden image
//! versions, the `FICLONE` number, zero detection, loop device names.

use super::clone::{is_zero, FICLONE};
use super::mount::{loop_backing_file, parse_mountinfo, unescape, MountEntry};
use super::*;

const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
46 22 7:0 / /var/tmp/data\\040dir/pool rw,relatime - xfs /dev/loop0 rw,discard
47 22 0:5 / /proc rw,nosuid shared:12 master:3 - proc proc rw
48 46 0:40 / /var/tmp/data\\040dir/pool rw - tmpfs tmpfs rw
garbage line
";

#[test]
fn mountinfo_fields_and_escapes() {
    let mounts = parse_mountinfo(MOUNTINFO);
    assert_eq!(mounts.len(), 4);
    assert_eq!(
        mounts[1],
        MountEntry {
            mount_point: "/var/tmp/data dir/pool".into(),
            fstype: "xfs".into(),
            source: "/dev/loop0".into(),
        }
    );
    // Optional fields (`shared:12 master:3`) do not shift the filesystem type.
    assert_eq!(
        (mounts[2].fstype.as_str(), mounts[2].source.as_str()),
        ("proc", "proc")
    );
}

#[test]
fn topmost_mount_wins() {
    let top = parse_mountinfo(MOUNTINFO)
        .into_iter()
        .rfind(|m| m.mount_point == Path::new("/var/tmp/data dir/pool"));
    assert_eq!(top.map(|m| m.fstype), Some("tmpfs".to_string()));
}

#[test]
fn unescape_keeps_plain_text_and_bad_escapes() {
    assert_eq!(unescape(r"a\134b\011c"), b"a\\b\tc");
    assert_eq!(unescape(r"x\9y\04"), br"x\9y\04");
    assert_eq!(unescape(r"\777"), br"\777");
}

#[test]
fn versions_are_lowercase_hex() {
    let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    for good in ["0", "abc123", sha] {
        assert!(validate_version(good).is_ok(), "{good}");
    }
    let long = "a".repeat(MAX_VERSION_LEN + 1);
    for bad in [
        "", "ABC", "../etc", "abc/def", "a.b", "g", " ab", "ab\n", &long,
    ] {
        assert!(
            matches!(validate_version(bad), Err(PoolError::InvalidVersion { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn ficlone_number_matches_its_definition() {
    let defined = nix::request_code_write!(0x94, 9, std::mem::size_of::<nix::libc::c_int>());
    assert_eq!(defined as nix::sys::ioctl::ioctl_num_type, FICLONE);
}

#[test]
fn zero_detection_covers_unaligned_ends() {
    let mut bytes = vec![0u8; 4099];
    assert!(is_zero(&bytes[1..]));
    bytes[4098] = 1;
    assert!(!is_zero(&bytes[1..]));
    bytes[4098] = 0;
    bytes[1] = 1;
    assert!(!is_zero(&bytes[1..]));
}

#[test]
fn loop_backing_file_refuses_non_loop_devices() {
    assert_eq!(loop_backing_file("/dev/vda"), None);
    assert_eq!(loop_backing_file("tmpfs"), None);
    assert_eq!(loop_backing_file("/dev/loop0/../../x"), None);
}
