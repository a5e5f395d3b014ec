//! The cluster-wide guest address allocator. Every VM gets a /30 ([`GuestSubnet`]) from
//! the configured guest range; a subnet is held for exactly as long as the VM's row
//! exists in `vms`, so the registry is the allocator's only state. Allocation picks the
//! lowest free /30; `vms.subnet UNIQUE` is the final guard against handing one out twice.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use boxcutter_types::GuestSubnet;
use rusqlite::{Connection, OptionalExtension};

/// The range guest subnets come from, e.g. `10.240.0.0/12`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestRange {
    base: u32,
    prefix_len: u8,
}

/// Why a range is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid guest range {0:?}: use an aligned IPv4 block of /30 or larger, like 10.240.0.0/12"
)]
pub struct RangeError(pub String);

/// Why no subnet could be handed out.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    /// Every /30 of the range is held by a VM.
    #[error("no free guest subnet: all {subnets} /30 blocks of {range} are in use")]
    Exhausted {
        /// The range.
        range: GuestRange,
        /// How many /30s it has.
        subnets: u64,
    },
    /// The registry query failed.
    #[error("find a free guest subnet")]
    Db(#[source] rusqlite::Error),
}

impl GuestRange {
    /// The first address of the range.
    pub fn base(self) -> Ipv4Addr {
        Ipv4Addr::from(self.base)
    }

    /// One past the last address, as an integer.
    fn end(self) -> u64 {
        u64::from(self.base) + (1u64 << (32 - self.prefix_len))
    }

    /// The number of /30 blocks.
    pub fn subnets(self) -> u64 {
        1u64 << (30 - self.prefix_len)
    }

    /// Whether `subnet` lies in the range.
    pub fn contains(self, subnet: GuestSubnet) -> bool {
        let at = u64::from(u32::from(subnet.base()));
        at >= u64::from(self.base) && at < self.end()
    }
}

impl FromStr for GuestRange {
    type Err = RangeError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || RangeError(text.to_string());
        let (addr, prefix) = text.split_once('/').ok_or_else(err)?;
        let base = u32::from(addr.parse::<Ipv4Addr>().map_err(|_| err())?);
        let prefix_len: u8 = prefix.parse().map_err(|_| err())?;
        if prefix_len > 30 || u64::from(base) % (1u64 << (32 - prefix_len)) != 0 {
            return Err(err());
        }
        Ok(Self { base, prefix_len })
    }
}

impl fmt::Display for GuestRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base(), self.prefix_len)
    }
}

/// The lowest /30 of `range` that no VM holds. Call it in the transaction that inserts
/// the VM, so nothing can take the subnet in between.
pub fn allocate(conn: &Connection, range: GuestRange) -> Result<GuestSubnet, AllocError> {
    let (start, end) = (i64::from(range.base), range.end() as i64);
    let free: Option<i64> = conn
        .query_row(
            "SELECT CASE
                 WHEN NOT EXISTS (SELECT 1 FROM vms WHERE subnet = ?1) THEN ?1
                 ELSE (SELECT min(v.subnet + 4) FROM vms v
                       WHERE v.subnet >= ?1 AND v.subnet + 4 < ?2
                         AND NOT EXISTS (SELECT 1 FROM vms w WHERE w.subnet = v.subnet + 4))
             END",
            [start, end],
            |row| row.get(0),
        )
        .optional()
        .map_err(AllocError::Db)?
        .flatten();
    let exhausted = || AllocError::Exhausted {
        range,
        subnets: range.subnets(),
    };
    let base = u32::try_from(free.ok_or_else(exhausted)?).map_err(|_| exhausted())?;
    GuestSubnet::new(Ipv4Addr::from(base)).map_err(|_| exhausted())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = crate::db::open_connection(&dir.path().join("r.db")).unwrap();
        crate::schema::migrate(&mut conn).unwrap();
        conn.execute_batch(
            "INSERT INTO users VALUES ('ann', 0, 0);
             INSERT INTO nodes VALUES ('n1', 'http://x', 'up', NULL, NULL, 0);",
        )
        .unwrap();
        (dir, conn)
    }

    fn hold(conn: &Connection, name: &str, subnet: GuestSubnet) -> rusqlite::Result<usize> {
        conn.execute(
            "INSERT INTO vms (name, owner, node, subnet, type, vcpus, ram_mib, disk_bytes, mode,
                              state, created_at)
             VALUES (?1, 'ann', 'n1', ?2, 'qemu', 1, 512, 1073741824, 'normal', 'running', 0)",
            rusqlite::params![name, u32::from(subnet.base())],
        )
    }

    fn take(conn: &Connection, range: GuestRange, name: &str) -> GuestSubnet {
        let subnet = allocate(conn, range).unwrap();
        hold(conn, name, subnet).unwrap();
        subnet
    }

    #[test]
    fn ranges_parse_aligned_blocks_only() {
        let range: GuestRange = "10.240.0.0/12".parse().unwrap();
        assert_eq!(range.subnets(), 1 << 18);
        assert_eq!(range.to_string(), "10.240.0.0/12");
        for bad in [
            "10.240.0.1/12",
            "10.0.0.0/31",
            "10.0.0.0",
            "x/12",
            "10.0.0.0/33",
        ] {
            assert!(bad.parse::<GuestRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn held_subnets_are_never_handed_out_and_freed_ones_are() {
        let (_dir, conn) = db();
        let range: GuestRange = "10.240.0.0/28".parse().unwrap();
        let a = take(&conn, range, "a");
        let b = take(&conn, range, "b");
        let c = take(&conn, range, "c");
        let bases: Vec<String> = [a, b, c].iter().map(|s| s.base().to_string()).collect();
        assert_eq!(bases, ["10.240.0.0", "10.240.0.4", "10.240.0.8"]);

        conn.execute("DELETE FROM vms WHERE name = 'b'", [])
            .unwrap();
        assert_eq!(take(&conn, range, "d"), b, "a freed subnet is reused");
        assert_eq!(take(&conn, range, "e").base().to_string(), "10.240.0.12");
        assert!(
            range.contains(a)
                && !range.contains(GuestSubnet::new([10, 240, 0, 16].into()).unwrap())
        );
    }

    #[test]
    fn a_full_range_is_an_error_and_the_unique_guard_holds() {
        let (_dir, conn) = db();
        let range: GuestRange = "10.240.0.0/29".parse().unwrap();
        let first = take(&conn, range, "a");
        take(&conn, range, "b");
        let err = allocate(&conn, range).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no free guest subnet: all 2 /30 blocks of 10.240.0.0/29 are in use"
        );
        assert!(
            hold(&conn, "c", first).is_err(),
            "a held subnet was inserted twice"
        );
    }

    #[test]
    fn subnets_outside_the_range_do_not_count() {
        let (_dir, conn) = db();
        let other = GuestSubnet::new([10, 250, 0, 0].into()).unwrap();
        hold(&conn, "elsewhere", other).unwrap();
        let range: GuestRange = "10.240.0.0/30".parse().unwrap();
        assert_eq!(take(&conn, range, "a").base().to_string(), "10.240.0.0");
        assert!(allocate(&conn, range).is_err());
    }
}
