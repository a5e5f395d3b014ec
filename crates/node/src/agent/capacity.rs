//! Admission: what a node may hand out (physical resources × overcommit ratio) and whether
//! one more VM fits beside the ones it already holds.

use boxcutter_types::api::Resources;
use boxcutter_types::{VmSpec, VmState};

/// The node's budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CapacityConfig {
    /// Physical CPUs offered to guests.
    pub vcpus: u64,
    /// Physical RAM offered to guests, MiB.
    pub ram_mib: u64,
    /// Storage pool size, bytes.
    pub disk_bytes: u64,
    /// vCPUs handed out per physical CPU.
    pub cpu_overcommit: f64,
    /// Guest RAM handed out per MiB of physical RAM.
    pub ram_overcommit: f64,
    /// Virtual disk bytes handed out per byte of pool (disks are sparse clones).
    pub disk_overcommit: f64,
}

impl CapacityConfig {
    /// This machine's CPUs and RAM (minus `reserved_ram_mib` for the node itself), the
    /// given pool size, and the default ratios: 4× CPU, 1× RAM, 4× disk.
    pub fn from_host(reserved_ram_mib: u64, disk_bytes: u64) -> Self {
        let vcpus = std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(1);
        Self {
            vcpus,
            ram_mib: host_ram_mib().saturating_sub(reserved_ram_mib),
            disk_bytes,
            cpu_overcommit: 4.0,
            ram_overcommit: 1.0,
            disk_overcommit: 4.0,
        }
    }

    /// What may be handed out in total.
    pub fn totals(&self) -> Resources {
        Resources {
            vcpus: (self.vcpus as f64 * self.cpu_overcommit) as u64,
            ram_mib: (self.ram_mib as f64 * self.ram_overcommit) as u64,
            disk_bytes: (self.disk_bytes as f64 * self.disk_overcommit) as u64,
        }
    }
}

/// What one VM holds: CPU and RAM while it may run, its disk always.
pub fn held_by(spec: &VmSpec, state: VmState) -> Resources {
    let runs = match state {
        VmState::Creating | VmState::Running => true,
        VmState::Stopped | VmState::Failed | VmState::Destroying => false,
    };
    Resources {
        vcpus: if runs { spec.vcpus.into() } else { 0 },
        ram_mib: if runs { spec.ram_mib.into() } else { 0 },
        disk_bytes: spec.disk.bytes(),
    }
}

/// The sum of several holdings.
pub fn sum<'a>(held: impl IntoIterator<Item = &'a Resources>) -> Resources {
    held.into_iter()
        .fold(Resources::default(), |a, b| Resources {
            vcpus: a.vcpus + b.vcpus,
            ram_mib: a.ram_mib + b.ram_mib,
            disk_bytes: a.disk_bytes + b.disk_bytes,
        })
}

/// What is left of `totals` after `allocated`.
pub fn free(totals: Resources, allocated: Resources) -> Resources {
    Resources {
        vcpus: totals.vcpus.saturating_sub(allocated.vcpus),
        ram_mib: totals.ram_mib.saturating_sub(allocated.ram_mib),
        disk_bytes: totals.disk_bytes.saturating_sub(allocated.disk_bytes),
    }
}

/// `None` when `want` fits in `free`, else which resource is short, as a message.
pub fn shortfall(free: Resources, want: Resources) -> Option<String> {
    if want.ram_mib > free.ram_mib {
        return Some(format!(
            "not enough RAM: {} MiB asked, {} MiB free",
            want.ram_mib, free.ram_mib
        ));
    }
    if want.vcpus > free.vcpus {
        return Some(format!(
            "not enough vCPUs: {} asked, {} free",
            want.vcpus, free.vcpus
        ));
    }
    if want.disk_bytes > free.disk_bytes {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        return Some(format!(
            "not enough disk: {:.1} GiB asked, {:.1} GiB free",
            gib(want.disk_bytes),
            gib(free.disk_bytes)
        ));
    }
    None
}

fn host_ram_mib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CapacityConfig {
        CapacityConfig {
            vcpus: 2,
            ram_mib: 4096,
            disk_bytes: 100 << 30,
            cpu_overcommit: 4.0,
            ram_overcommit: 1.0,
            disk_overcommit: 2.0,
        }
    }

    #[test]
    fn totals_apply_the_ratios() {
        let t = config().totals();
        assert_eq!((t.vcpus, t.ram_mib, t.disk_bytes), (8, 4096, 200 << 30));
    }

    #[test]
    fn shortfall_names_the_first_missing_resource() {
        let free = free(
            config().totals(),
            Resources {
                vcpus: 7,
                ram_mib: 1024,
                disk_bytes: 0,
            },
        );
        let want = Resources {
            vcpus: 1,
            ram_mib: 3072,
            disk_bytes: 50 << 30,
        };
        assert_eq!(shortfall(free, want), None);
        let too_much_ram = Resources {
            ram_mib: 3073,
            ..want
        };
        assert_eq!(
            shortfall(free, too_much_ram).unwrap(),
            "not enough RAM: 3073 MiB asked, 3072 MiB free"
        );
        let too_many_cpus = Resources { vcpus: 2, ..want };
        assert!(shortfall(free, too_many_cpus)
            .unwrap()
            .starts_with("not enough vCPUs"));
        let too_much_disk = Resources {
            disk_bytes: 201 << 30,
            ..want
        };
        assert!(shortfall(free, too_much_disk)
            .unwrap()
            .starts_with("not enough disk"));
    }

    #[test]
    fn this_host_has_ram() {
        assert!(host_ram_mib() > 256);
    }
}
