//! The node's VMs by name. Held only for short, synchronous moments (never across an
//! await): insertion is where names, subnets and capacity are checked together, so two
//! concurrent creates cannot both take the last slot.

use std::collections::BTreeMap;
use std::sync::Mutex;

use boxcutter_types::api::Resources;
use boxcutter_types::{VmName, VmRecord, VmSpec, VmState};

use super::actor::VmHandle;
use super::capacity::{free, held_by, shortfall, sum};
use super::error::NodeError;

/// The node's VMs.
#[derive(Debug, Default)]
pub struct Registry {
    vms: Mutex<BTreeMap<VmName, VmHandle>>,
}

impl Registry {
    /// Checks that `spec` can be added (name and subnet free, capacity left) and, if so,
    /// adds the handle `make` returns, all under one lock.
    pub fn admit(
        &self,
        spec: &VmSpec,
        totals: Resources,
        make: impl FnOnce() -> VmHandle,
    ) -> Result<VmHandle, NodeError> {
        let mut vms = self.lock();
        if vms.contains_key(&spec.name) {
            return Err(NodeError::NameTaken(spec.name.clone()));
        }
        let records: Vec<VmRecord> = vms.values().map(VmHandle::record).collect();
        if let Some(holder) = records.iter().find(|r| r.spec.subnet == spec.subnet) {
            return Err(NodeError::SubnetTaken {
                subnet: spec.subnet.base(),
                holder: holder.spec.name.clone(),
            });
        }
        let held: Vec<Resources> = records.iter().map(|r| held_by(&r.spec, r.state)).collect();
        let want = held_by(spec, VmState::Creating);
        if let Some(short) = shortfall(free(totals, sum(&held)), want) {
            return Err(NodeError::NoCapacity(short));
        }
        let handle = make();
        vms.insert(spec.name.clone(), handle.clone());
        Ok(handle)
    }

    /// Adds a VM found at start-up.
    pub fn insert(&self, handle: VmHandle) {
        let name = handle.record().spec.name;
        self.lock().insert(name, handle);
    }

    /// The handle of VM `name`.
    pub fn get(&self, name: &VmName) -> Result<VmHandle, NodeError> {
        self.lock()
            .get(name)
            .cloned()
            .ok_or_else(|| NodeError::NotFound(name.clone()))
    }

    /// Forgets a VM (after destroy or a failed create).
    pub fn remove(&self, name: &VmName) {
        self.lock().remove(name);
    }

    /// Every VM's latest record, by name.
    pub fn records(&self) -> Vec<VmRecord> {
        self.lock().values().map(VmHandle::record).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<VmName, VmHandle>> {
        // A panic while holding this lock cannot leave the map half-changed: every
        // critical section is a single insert, remove or read.
        self.vms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
