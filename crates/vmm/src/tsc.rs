//! The host's TSC frequency. Guests under TCG get it as `tsc_early_khz=`: without it the
//! guest kernel calibrates the TSC against emulated timers and boots hang (4 in 10 here).

use std::fs;

/// The host TSC frequency in kHz, from the most precise source available: the kernel's
/// `tsc_freq_khz` where it exports one, else the "Detected N MHz" boot message, else the
/// nominal `cpu MHz` of `/proc/cpuinfo` (equal to the TSC rate on `constant_tsc` CPUs).
pub fn host_tsc_khz() -> Option<u64> {
    let sysfs = fs::read_to_string("/sys/devices/system/cpu/cpu0/tsc_freq_khz").ok();
    if let Some(khz) = sysfs.and_then(|s| s.trim().parse().ok()) {
        return Some(khz);
    }
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo_mhz(&cpuinfo).map(|mhz| (mhz * 1000.0).round() as u64)
}

/// The first `cpu MHz` value of a `/proc/cpuinfo` text.
fn cpuinfo_mhz(cpuinfo: &str) -> Option<f64> {
    cpuinfo
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim() == "cpu MHz")
        .and_then(|(_, value)| value.trim().parse().ok())
        .filter(|mhz: &f64| *mhz > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_mhz() {
        let text = "processor\t: 0\nmodel name\t: Xeon\ncpu MHz\t\t: 2600.000\ncache size\t: 1\n";
        assert_eq!(cpuinfo_mhz(text), Some(2600.0));
        assert_eq!(cpuinfo_mhz("processor\t: 0\n"), None);
        assert_eq!(cpuinfo_mhz("cpu MHz\t: 0.000\n"), None);
    }

    #[test]
    fn this_host_has_a_frequency() {
        let khz = host_tsc_khz().expect("x86 hosts report a TSC frequency");
        assert!((100_000..10_000_000).contains(&khz), "{khz}");
    }
}
