//! What the commands print. Pure functions from API bodies to text, so the formats the
//! original README shows are pinned by unit tests.

use boxcutter_types::guest::VmType;
use boxcutter_types::orch::{ClusterStatus, NodeInfo, NodeState, VmInfo};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A progress line of `new` or `cp`, e.g. `[ 0.2s] scheduling: node-1`.
pub fn progress_line(phase: &str, message: &str, elapsed_ms: u64) -> String {
    // Tenths of a second, truncated, without going through floating point.
    let (secs, tenths) = (elapsed_ms / 1000, (elapsed_ms % 1000) / 100);
    format!("[{:>4}s] {phase}: {message}", format!("{secs}.{tenths}"))
}

/// The block `new` and `cp` print, exactly as the original README shows it.
pub fn vm_block(vm: &VmInfo) -> String {
    let lines = [
        ("Name", vm.name.to_string()),
        ("Node", vm.node.clone()),
        ("vCPU", vm.vcpus.to_string()),
        ("RAM", ram(vm.ram_mib)),
        ("Disk", vm.disk.to_string()),
        ("IP", vm.ip.to_string()),
        ("Status", vm.state.as_str().to_string()),
        ("Connect", format!("ssh {}", vm.name)),
    ];
    key_values(&lines)
}

/// `describe`: everything the orchestrator knows about a VM.
pub fn describe_block(vm: &VmInfo) -> String {
    let lines = [
        ("Name", vm.name.to_string()),
        ("Owner", vm.owner.clone()),
        ("Node", vm.node.clone()),
        ("Type", vm.vm_type.as_str().to_string()),
        ("vCPU", vm.vcpus.to_string()),
        ("RAM", ram(vm.ram_mib)),
        ("Disk", vm.disk.to_string()),
        ("Mode", vm.mode.as_str().to_string()),
        ("IP", vm.ip.to_string()),
        ("Status", vm.state.as_str().to_string()),
        ("Created", utc_time(vm.created_at)),
        ("Description", vm.description.clone()),
        ("Host key", vm.host_key.trim().to_string()),
        ("Connect", format!("ssh {}", vm.name)),
    ];
    key_values(&lines)
}

/// `list`: the original README's columns.
///
/// Limitation: the `TAILSCALE IP` column shows the VM's cluster address, because the
/// orchestrator does not yet report a tailnet address; both reach the VM's SSH.
pub fn vm_table(vms: &[VmInfo]) -> String {
    let header = [
        "NAME",
        "TAILSCALE IP",
        "NODE",
        "TYPE",
        "VCPU",
        "RAM",
        "MODE",
        "STATUS",
    ];
    let rows = vms.iter().map(|vm| {
        vec![
            vm.name.to_string(),
            vm.ip.to_string(),
            vm.node.clone(),
            short_type(vm.vm_type).to_string(),
            vm.vcpus.to_string(),
            ram(vm.ram_mib),
            vm.mode.as_str().to_string(),
            vm.state.as_str().to_string(),
        ]
    });
    table(&header, rows)
}

/// `nodes`: one line per node with its health; `now` is Unix seconds.
pub fn node_table(nodes: &[NodeInfo], now: u64) -> String {
    let header = [
        "NODE",
        "STATE",
        "VMS",
        "VCPU",
        "RAM",
        "DISK",
        "TYPES",
        "LAST SEEN",
    ];
    let rows = nodes.iter().map(|node| {
        let mut row = vec![node.id.clone(), node_state(node.state).to_string()];
        match &node.health {
            Some(h) => row.extend([
                h.vms.total.to_string(),
                format!("{}/{}", h.allocated.vcpus, h.totals.vcpus),
                format!(
                    "{}/{}",
                    bytes(h.allocated.ram_mib * MIB),
                    bytes(h.totals.ram_mib * MIB)
                ),
                format!(
                    "{}/{}",
                    bytes(h.allocated.disk_bytes),
                    bytes(h.totals.disk_bytes)
                ),
                types(&h.supports),
            ]),
            None => row.extend(["-"; 5].map(String::from)),
        }
        row.push(match node.last_seen {
            Some(seen) => format!("{}s ago", now.saturating_sub(seen)),
            None => "never".into(),
        });
        row
    });
    table(&header, rows)
}

/// `status`: the cluster's capacity summary.
pub fn status_block(status: &ClusterStatus) -> String {
    let (a, t, f) = (&status.allocated, &status.totals, &status.free);
    let lines = [
        (
            "Nodes",
            format!("{} up, {} down", status.nodes_up, status.nodes_down),
        ),
        ("vCPU", usage(a.vcpus, t.vcpus, f.vcpus, |n| n.to_string())),
        (
            "RAM",
            usage(a.ram_mib, t.ram_mib, f.ram_mib, |n| bytes(n * MIB)),
        ),
        (
            "Disk",
            usage(a.disk_bytes, t.disk_bytes, f.disk_bytes, bytes),
        ),
        ("VMs", status.vms.to_string()),
    ];
    key_values(&lines)
}

/// A `known_hosts` line for a VM.
pub fn known_hosts_line(vm: &str, host_key: &str) -> String {
    // The key's type and base64, without any comment it may carry.
    let key: Vec<&str> = host_key.split_whitespace().take(2).collect();
    format!("{vm} {}\n", key.join(" "))
}

/// RAM in MiB as the README shows it: `2G` for whole GiB, else `1536M`.
pub fn ram(mib: u32) -> String {
    if mib > 0 && mib.is_multiple_of(1024) {
        format!("{}G", mib / 1024)
    } else {
        format!("{mib}M")
    }
}

/// `fc` or `qemu`, as `list` shows the type.
pub fn short_type(vm_type: VmType) -> &'static str {
    match vm_type {
        VmType::Firecracker => "fc",
        VmType::Qemu => "qemu",
    }
}

/// Unix seconds as `2023-11-14 22:13:20 UTC`.
pub fn utc_time(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Year, month and day of a count of days since 1970-01-01 (Howard Hinnant's algorithm,
/// restricted to dates after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

fn usage(allocated: u64, total: u64, free: u64, show: impl Fn(u64) -> String) -> String {
    let percent = (allocated * 100).checked_div(total).unwrap_or(0);
    format!(
        "{} of {} allocated ({percent}%), {} free",
        show(allocated),
        show(total),
        show(free)
    )
}

/// Bytes in the largest binary unit that keeps them readable: `50G`, `1.5G`, `512M`.
fn bytes(n: u64) -> String {
    if n >= GIB {
        if n.is_multiple_of(GIB) {
            format!("{}G", n / GIB)
        } else {
            format!("{}.{}G", n / GIB, n % GIB * 10 / GIB)
        }
    } else {
        format!("{}M", n / MIB)
    }
}

fn types(supports: &[VmType]) -> String {
    let names: Vec<&str> = supports.iter().map(|t| short_type(*t)).collect();
    if names.is_empty() {
        "-".into()
    } else {
        names.join(",")
    }
}

fn node_state(state: NodeState) -> &'static str {
    match state {
        NodeState::Up => "up",
        NodeState::Down => "down",
    }
}

fn key_values(lines: &[(&str, String)]) -> String {
    lines.iter().map(|(k, v)| format!("{k}: {v}\n")).collect()
}

/// Left-aligned columns two spaces apart, without trailing blanks.
fn table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let mut all: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    all.extend(rows);
    let mut widths = vec![0; header.len()];
    for row in &all {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in &all {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use boxcutter_types::api::{NodeHealth, Resources, VmCounts};
    use boxcutter_types::{ByteSize, NetMode, VmName, VmState};

    pub(crate) fn bold_fox() -> VmInfo {
        VmInfo {
            name: VmName::new("bold-fox").unwrap(),
            owner: "alice".into(),
            node: "boxcutter-node-1".into(),
            vm_type: VmType::Firecracker,
            vcpus: 2,
            ram_mib: 2048,
            disk: ByteSize(50 << 30),
            mode: NetMode::Normal,
            state: VmState::Running,
            ip: "100.64.1.42".parse().unwrap(),
            description: "scratch".into(),
            host_key: "ssh-ed25519 AAAAC3Nz root@bold-fox\n".into(),
            created_at: 1_700_000_000,
        }
    }

    #[test]
    fn the_new_block_is_the_readmes() {
        assert_eq!(
            vm_block(&bold_fox()),
            "Name: bold-fox\nNode: boxcutter-node-1\nvCPU: 2\nRAM: 2G\nDisk: 50G\n\
             IP: 100.64.1.42\nStatus: running\nConnect: ssh bold-fox\n"
        );
    }

    #[test]
    fn the_list_has_the_readmes_columns() {
        let docker = VmInfo {
            name: VmName::new("docker-dev").unwrap(),
            vm_type: VmType::Qemu,
            ram_mib: 4096,
            ip: "100.64.1.43".parse().unwrap(),
            ..bold_fox()
        };
        let want = "\
NAME        TAILSCALE IP  NODE              TYPE  VCPU  RAM  MODE    STATUS
bold-fox    100.64.1.42   boxcutter-node-1  fc    2     2G   normal  running
docker-dev  100.64.1.43   boxcutter-node-1  qemu  2     4G   normal  running
";
        assert_eq!(vm_table(&[bold_fox(), docker]), want);
        assert_eq!(
            vm_table(&[]),
            "NAME  TAILSCALE IP  NODE  TYPE  VCPU  RAM  MODE  STATUS\n"
        );
    }

    #[test]
    fn describe_shows_everything() {
        let text = describe_block(&bold_fox());
        for line in [
            "Name: bold-fox\n",
            "Owner: alice\n",
            "Type: firecracker\n",
            "RAM: 2G\n",
            "Mode: normal\n",
            "Status: running\n",
            "Created: 2023-11-14 22:13:20 UTC\n",
            "Description: scratch\n",
            "Host key: ssh-ed25519 AAAAC3Nz root@bold-fox\n",
            "Connect: ssh bold-fox\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }

    #[test]
    fn ram_is_in_g_only_when_whole() {
        assert_eq!(ram(2048), "2G");
        assert_eq!(ram(1024), "1G");
        assert_eq!(ram(1536), "1536M");
        assert_eq!(ram(512), "512M");
        assert_eq!(ram(0), "0M");
    }

    #[test]
    fn progress_lines_show_tenths() {
        assert_eq!(
            progress_line("scheduling", "node-1", 200),
            "[ 0.2s] scheduling: node-1"
        );
        assert_eq!(
            progress_line("boot", "ready", 12_345),
            "[12.3s] boot: ready"
        );
        assert_eq!(
            progress_line("boot", "slow", 123_456),
            "[123.4s] boot: slow"
        );
    }

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_time(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc_time(4_102_444_799), "2099-12-31 23:59:59 UTC");
    }

    #[test]
    fn status_and_nodes_are_readable() {
        let res = |vcpus, gib: u64| Resources {
            vcpus,
            ram_mib: gib * 1024,
            disk_bytes: gib * 10 * GIB,
        };
        let status = ClusterStatus {
            nodes_up: 1,
            nodes_down: 1,
            totals: res(16, 32),
            allocated: res(4, 8),
            free: res(12, 24),
            vms: 3,
        };
        assert_eq!(
            status_block(&status),
            "Nodes: 1 up, 1 down\nvCPU: 4 of 16 allocated (25%), 12 free\n\
             RAM: 8G of 32G allocated (25%), 24G free\n\
             Disk: 80G of 320G allocated (25%), 240G free\nVMs: 3\n"
        );
        let health = NodeHealth {
            node: "node-1".into(),
            totals: res(16, 32),
            allocated: res(4, 8),
            free: res(12, 24),
            disk_used_bytes: 0,
            vms: VmCounts {
                total: 2,
                ..VmCounts::default()
            },
            supports: vec![VmType::Firecracker, VmType::Qemu],
            unsupported: Default::default(),
        };
        let nodes = [
            NodeInfo {
                id: "node-1".into(),
                url: "http://10.0.0.2:8800".into(),
                state: NodeState::Up,
                last_seen: Some(95),
                health: Some(health),
            },
            NodeInfo {
                id: "node-2".into(),
                url: "http://10.0.0.3:8800".into(),
                state: NodeState::Down,
                last_seen: None,
                health: None,
            },
        ];
        assert_eq!(
            node_table(&nodes, 100),
            "\
NODE    STATE  VMS  VCPU  RAM     DISK      TYPES    LAST SEEN
node-1  up     2    4/16  8G/32G  80G/320G  fc,qemu  5s ago
node-2  down   -    -     -       -         -        never
"
        );
    }

    #[test]
    fn sizes_round_to_tenths_of_a_gib() {
        assert_eq!(bytes(3 * GIB / 2), "1.5G");
        assert_eq!(bytes(512 * MIB), "512M");
        assert_eq!(bytes(0), "0M");
    }

    #[test]
    fn known_hosts_drops_the_comment() {
        assert_eq!(
            known_hosts_line("bold-fox", "ssh-ed25519 AAAAC3Nz root@bold-fox\n"),
            "bold-fox ssh-ed25519 AAAAC3Nz\n"
        );
    }
}
