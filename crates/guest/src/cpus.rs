//! Keeping only the vCPUs the VM asked for online. A node may boot a guest with more
//! vCPUs than requested (under TCG, 1-vCPU guests of Debian's kernel often panic in early
//! boot, 2-vCPU ones do not) and says how many to keep with `boxcutter.vcpus`.

use std::path::Path;

use crate::layout::Layout;

/// Takes every CPU numbered `keep` or higher offline; returns how many it took offline.
pub fn keep_online(layout: &Layout, keep: u32) -> std::io::Result<u32> {
    let dir = layout.sys.join("devices/system/cpu");
    let mut offlined = 0;
    for entry in std::fs::read_dir(&dir)?.flatten() {
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix("cpu")?.parse::<u32>().ok())
        else {
            continue;
        };
        if n >= keep && take_offline(&entry.path())? {
            offlined += 1;
        }
    }
    Ok(offlined)
}

/// Writes 0 to the CPU's `online` file; false when it has none (CPU 0 usually cannot go).
fn take_offline(cpu: &Path) -> std::io::Result<bool> {
    let online = cpu.join("online");
    if !online.exists() || std::fs::read_to_string(&online)?.trim() == "0" {
        return Ok(false);
    }
    std::fs::write(&online, b"0")?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_beyond_the_count_go_offline() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::under(dir.path());
        let cpus = layout.sys.join("devices/system/cpu");
        for n in 0..3 {
            std::fs::create_dir_all(cpus.join(format!("cpu{n}"))).unwrap();
        }
        std::fs::create_dir_all(cpus.join("cpufreq")).unwrap();
        std::fs::write(cpus.join("cpu1/online"), "1\n").unwrap();
        std::fs::write(cpus.join("cpu2/online"), "0\n").unwrap();

        assert_eq!(keep_online(&layout, 1).unwrap(), 1);
        assert_eq!(
            std::fs::read_to_string(cpus.join("cpu1/online")).unwrap(),
            "0"
        );
        assert_eq!(keep_online(&layout, 1).unwrap(), 0, "already offline");
    }
}
