//! The scheduler: a pure function from the nodes' last known state and a VM's demand to
//! the VM's type and an ordered list of candidate nodes.
//!
//! Policy: a candidate is up, has reported its health, supports the type and has room
//! for the VM's vCPUs, RAM and disk; candidates are ordered by free RAM, most first (ties
//! by id). A node's free room is the smaller of what it last reported and its totals
//! minus what the registry already placed on it, so VMs created between two heartbeats
//! still spread. `node` pins the VM to one node. Without a type, the VM is a Firecracker
//! VM where a (considered) node supports it, else a QEMU VM with a note saying why.

use boxcutter_types::api::{ErrorCode, NodeHealth, Resources};
use boxcutter_types::guest::VmType;
use boxcutter_types::ByteSize;

/// What the scheduler knows of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// Id.
    pub id: String,
    /// Whether it answers heartbeats.
    pub up: bool,
    /// Its last health report.
    pub health: Option<NodeHealth>,
    /// What the registry's VMs hold on it.
    pub held: Resources,
}

impl NodeView {
    fn free(&self) -> Option<Resources> {
        let health = self.health.as_ref()?;
        let t = health.totals;
        Some(Resources {
            vcpus: health
                .free
                .vcpus
                .min(t.vcpus.saturating_sub(self.held.vcpus)),
            ram_mib: health
                .free
                .ram_mib
                .min(t.ram_mib.saturating_sub(self.held.ram_mib)),
            disk_bytes: (health.free.disk_bytes)
                .min(t.disk_bytes.saturating_sub(self.held.disk_bytes)),
        })
    }

    fn supports(&self, vm_type: VmType) -> bool {
        self.health
            .as_ref()
            .is_some_and(|h| h.supports.contains(&vm_type))
    }
}

/// What a new VM asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    /// The type, if the user chose one.
    pub vm_type: Option<VmType>,
    /// vCPUs.
    pub vcpus: u32,
    /// RAM, MiB.
    pub ram_mib: u32,
    /// Disk.
    pub disk: ByteSize,
    /// The node it is pinned to.
    pub node: Option<String>,
}

impl Demand {
    fn fits(&self, free: Resources) -> bool {
        free.vcpus >= u64::from(self.vcpus)
            && free.ram_mib >= u64::from(self.ram_mib)
            && free.disk_bytes >= self.disk.bytes()
    }

    fn describe(&self) -> String {
        format!(
            "{} vCPU, {} MiB RAM, {} disk",
            self.vcpus, self.ram_mib, self.disk
        )
    }
}

/// The scheduler's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The VM's type.
    pub vm_type: VmType,
    /// Nodes to try, best first; never empty.
    pub candidates: Vec<String>,
    /// A line for the user about a choice they did not make (the type fallback).
    pub note: Option<String>,
}

/// Why no node can take the VM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// No node is registered, or none is up.
    #[error("no node is up to run VMs ({registered} registered)")]
    NoNodeUp {
        /// Registered nodes.
        registered: usize,
    },
    /// The user asked for a type no up node runs.
    #[error("no node can run {vm_type} VMs{why}")]
    Unsupported {
        /// The type.
        vm_type: VmType,
        /// Why, as the nodes reported it (or the likely reason, for Firecracker).
        why: String,
    },
    /// `--node` names an unknown node.
    #[error("no such node: {0}")]
    NoSuchNode(String),
    /// `--node` names a node that is down.
    #[error("node {0} is down")]
    NodeDown(String),
    /// `--node` names a node that has not reported its health yet.
    #[error("node {0} has not reported its health yet")]
    NoHealth(String),
    /// `--node` names a node that cannot run the type.
    #[error("node {node} cannot run {vm_type} VMs{why}")]
    NodeUnsupported {
        /// The node.
        node: String,
        /// The type.
        vm_type: VmType,
        /// The node's reason, when it gave one.
        why: String,
    },
    /// No (or the pinned) node has room.
    #[error("{0}")]
    NoRoom(String),
}

impl ScheduleError {
    /// The stable API code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ScheduleError::NoNodeUp { .. } | ScheduleError::NoRoom(_) => ErrorCode::NoCapacity,
            ScheduleError::Unsupported { .. } | ScheduleError::NodeUnsupported { .. } => {
                ErrorCode::Unsupported
            }
            ScheduleError::NoSuchNode(_) => ErrorCode::BadRequest,
            ScheduleError::NodeDown(_) | ScheduleError::NoHealth(_) => ErrorCode::WrongState,
        }
    }
}

const FIRECRACKER_WHY: &str =
    " (Firecracker needs usable KVM and a firecracker binary on the node); use --type qemu";

/// Picks the VM's type and the nodes to try.
pub fn schedule(nodes: &[NodeView], demand: &Demand) -> Result<Placement, ScheduleError> {
    let considered = considered_nodes(nodes, demand)?;
    let (vm_type, note) = choose_type(&considered, demand)?;
    let mut fitting: Vec<(&NodeView, Resources)> = considered
        .iter()
        .filter(|n| n.supports(vm_type))
        .filter_map(|n| n.free().map(|free| (*n, free)))
        .filter(|(_, free)| demand.fits(*free))
        .collect();
    if fitting.is_empty() {
        return Err(no_room(&considered, demand, vm_type));
    }
    fitting.sort_by(|(a, fa), (b, fb)| fb.ram_mib.cmp(&fa.ram_mib).then(a.id.cmp(&b.id)));
    Ok(Placement {
        vm_type,
        candidates: fitting.into_iter().map(|(n, _)| n.id.clone()).collect(),
        note,
    })
}

/// The up nodes, or the pinned one (which must be up and have reported its health).
fn considered_nodes<'a>(
    nodes: &'a [NodeView],
    demand: &Demand,
) -> Result<Vec<&'a NodeView>, ScheduleError> {
    if let Some(pin) = &demand.node {
        let node = nodes
            .iter()
            .find(|n| &n.id == pin)
            .ok_or_else(|| ScheduleError::NoSuchNode(pin.clone()))?;
        if !node.up {
            return Err(ScheduleError::NodeDown(pin.clone()));
        }
        if node.health.is_none() {
            return Err(ScheduleError::NoHealth(pin.clone()));
        }
        return Ok(vec![node]);
    }
    let up: Vec<&NodeView> = nodes
        .iter()
        .filter(|n| n.up && n.health.is_some())
        .collect();
    if up.is_empty() {
        return Err(ScheduleError::NoNodeUp {
            registered: nodes.len(),
        });
    }
    Ok(up)
}

fn choose_type(
    considered: &[&NodeView],
    demand: &Demand,
) -> Result<(VmType, Option<String>), ScheduleError> {
    let any = |t| considered.iter().any(|n| n.supports(t));
    let unsupported = |vm_type| {
        let reported = reasons(considered, vm_type);
        match &demand.node {
            Some(node) => ScheduleError::NodeUnsupported {
                node: node.clone(),
                vm_type,
                why: reported.map(|r| format!(": {r}")).unwrap_or_default(),
            },
            None => ScheduleError::Unsupported {
                vm_type,
                why: match (reported, vm_type) {
                    (Some(r), _) => format!(" ({r}); use --type qemu"),
                    (None, VmType::Firecracker) => FIRECRACKER_WHY.into(),
                    (None, VmType::Qemu) => String::new(),
                },
            },
        }
    };
    match demand.vm_type {
        Some(t) if any(t) => Ok((t, None)),
        Some(t) => Err(unsupported(t)),
        None if any(VmType::Firecracker) => Ok((VmType::Firecracker, None)),
        None if any(VmType::Qemu) => Ok((VmType::Qemu, Some(fallback_note(considered, demand)))),
        None => Err(unsupported(VmType::Qemu)),
    }
}

/// The considered nodes' own reasons for not running `vm_type`, as `node: reason; ...`.
fn reasons(considered: &[&NodeView], vm_type: VmType) -> Option<String> {
    let found: Vec<String> = considered
        .iter()
        .filter_map(|n| {
            let reason = n.health.as_ref()?.unsupported.get(&vm_type)?;
            Some(if considered.len() == 1 {
                reason.clone()
            } else {
                format!("{}: {reason}", n.id)
            })
        })
        .collect();
    (!found.is_empty()).then(|| found.join("; "))
}

fn fallback_note(considered: &[&NodeView], demand: &Demand) -> String {
    let why = reasons(considered, VmType::Firecracker).unwrap_or_else(|| "no usable KVM".into());
    match &demand.node {
        Some(node) => {
            format!("node {node} does not support firecracker ({why}); creating a qemu VM")
        }
        None => format!("no node supports firecracker ({why}); creating a qemu VM"),
    }
}

fn no_room(considered: &[&NodeView], demand: &Demand, vm_type: VmType) -> ScheduleError {
    let free: Vec<String> = considered
        .iter()
        .filter(|n| n.supports(vm_type))
        .filter_map(|n| {
            let f = n.free()?;
            Some(format!(
                "{} has {} vCPU, {} MiB RAM, {} disk free",
                n.id,
                f.vcpus,
                f.ram_mib,
                ByteSize(f.disk_bytes)
            ))
        })
        .collect();
    let what = match &demand.node {
        Some(node) => format!("node {node} has no room for"),
        None => "every node is out of capacity for".into(),
    };
    ScheduleError::NoRoom(format!(
        "{what} {} ({})",
        demand.describe(),
        free.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxcutter_types::api::VmCounts;

    const GIB: u64 = 1 << 30;

    fn node(id: &str, free_ram: u64, supports: &[VmType]) -> NodeView {
        let totals = Resources {
            vcpus: 16,
            ram_mib: 16384,
            disk_bytes: 500 * GIB,
        };
        let free = Resources {
            ram_mib: free_ram,
            ..totals
        };
        NodeView {
            id: id.into(),
            up: true,
            health: Some(NodeHealth {
                node: id.into(),
                totals,
                allocated: Resources::default(),
                free,
                disk_used_bytes: 0,
                vms: VmCounts::default(),
                supports: supports.to_vec(),
                unsupported: Default::default(),
            }),
            held: Resources::default(),
        }
    }

    fn demand(ram_mib: u32) -> Demand {
        Demand {
            vm_type: None,
            vcpus: 2,
            ram_mib,
            disk: ByteSize(50 * GIB),
            node: None,
        }
    }

    const BOTH: &[VmType] = &[VmType::Firecracker, VmType::Qemu];
    const QEMU: &[VmType] = &[VmType::Qemu];

    #[test]
    fn candidates_are_ordered_by_free_ram() {
        let nodes = [
            node("a", 4096, BOTH),
            node("b", 8192, BOTH),
            node("c", 6144, BOTH),
        ];
        let placement = schedule(&nodes, &demand(2048)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(placement.candidates, ["b", "c", "a"]);
        assert_eq!(
            (placement.vm_type, placement.note),
            (VmType::Firecracker, None)
        );
    }

    #[test]
    fn the_registry_s_own_placements_count_between_heartbeats() {
        let mut busy = node("a", 8192, BOTH);
        busy.held.ram_mib = 12288; // 16384 total: only 4096 really left
        let nodes = [busy, node("b", 6144, BOTH)];
        let placement = schedule(&nodes, &demand(2048)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(placement.candidates, ["b", "a"]);
    }

    #[test]
    fn nodes_that_are_down_full_or_unsupporting_are_skipped() {
        let mut down = node("down", 16384, BOTH);
        down.up = false;
        let nodes = [down, node("full", 1024, BOTH), node("ok", 4096, BOTH)];
        let placement = schedule(&nodes, &demand(2048)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(placement.candidates, ["ok"]);
        let mut fc = demand(2048);
        fc.vm_type = Some(VmType::Firecracker);
        let nodes = [node("q", 8192, QEMU), node("f", 4096, BOTH)];
        let placement = schedule(&nodes, &fc).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(placement.candidates, ["f"]);
    }

    #[test]
    fn no_room_anywhere_says_so() {
        let nodes = [node("a", 1024, BOTH), node("b", 512, BOTH)];
        let err = schedule(&nodes, &demand(2048)).unwrap_err();
        assert_eq!(err.code(), ErrorCode::NoCapacity);
        assert_eq!(
            err.to_string(),
            "every node is out of capacity for 2 vCPU, 2048 MiB RAM, 50G disk \
             (a has 16 vCPU, 1024 MiB RAM, 500G disk free; \
             b has 16 vCPU, 512 MiB RAM, 500G disk free)"
        );
        assert!(matches!(
            schedule(&[], &demand(1)),
            Err(ScheduleError::NoNodeUp { registered: 0 })
        ));
    }

    #[test]
    fn a_pin_is_honoured_or_refused_clearly() {
        let mut down = node("down", 8192, BOTH);
        down.up = false;
        let nodes = [node("big", 8192, BOTH), node("small", 4096, BOTH), down];
        let pinned = |id: &str, ram| Demand {
            node: Some(id.into()),
            ..demand(ram)
        };
        let placement = schedule(&nodes, &pinned("small", 2048)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(placement.candidates, ["small"]);
        let err = |id, ram| schedule(&nodes, &pinned(id, ram)).unwrap_err();
        assert_eq!(err("nope", 1).to_string(), "no such node: nope");
        assert_eq!(err("down", 1).to_string(), "node down is down");
        assert!(err("small", 8192)
            .to_string()
            .starts_with("node small has no room for 2 vCPU, 8192 MiB RAM, 50G disk"));
        assert_eq!(err("small", 8192).code(), ErrorCode::NoCapacity);
    }

    #[test]
    fn without_firecracker_the_default_falls_back_to_qemu_with_a_note() {
        let nodes = [node("a", 8192, QEMU)];
        let placement = schedule(&nodes, &demand(2048)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(placement.vm_type, VmType::Qemu);
        assert_eq!(
            placement.note.as_deref(),
            Some("no node supports firecracker (no usable KVM); creating a qemu VM")
        );
    }

    #[test]
    fn explicit_firecracker_without_support_is_an_error_naming_why() {
        let nodes = [node("a", 8192, QEMU)];
        let mut fc = demand(2048);
        fc.vm_type = Some(VmType::Firecracker);
        let err = schedule(&nodes, &fc).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unsupported);
        assert_eq!(
            err.to_string(),
            "no node can run firecracker VMs (Firecracker needs usable KVM and a firecracker \
             binary on the node); use --type qemu"
        );
    }

    #[test]
    fn the_nodes_own_reasons_are_passed_on() {
        let mut a = node("a", 8192, QEMU);
        let mut b = node("b", 4096, QEMU);
        for (n, why) in [
            (&mut a, "no usable KVM: boot timed out"),
            (&mut b, "binary not found"),
        ] {
            if let Some(health) = n.health.as_mut() {
                health.unsupported.insert(VmType::Firecracker, why.into());
            }
        }
        let nodes = [a, b];
        let note = schedule(&nodes, &demand(2048))
            .unwrap_or_else(|e| panic!("{e}"))
            .note;
        assert_eq!(
            note.as_deref(),
            Some(
                "no node supports firecracker (a: no usable KVM: boot timed out; b: binary not \
                 found); creating a qemu VM"
            )
        );
        let mut fc = demand(2048);
        fc.vm_type = Some(VmType::Firecracker);
        fc.node = Some("b".into());
        let err = schedule(&nodes, &fc).unwrap_err();
        assert_eq!(
            err.to_string(),
            "node b cannot run firecracker VMs: binary not found"
        );
    }
}
