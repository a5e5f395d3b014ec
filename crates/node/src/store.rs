//! VM directories: `<data>/vms/<name>/` holds the VM's record (`vm.json`, replaced
//! atomically), its disk, config drive, host key, sockets and console log. A directory is
//! self-describing: the node rebuilds its whole view from these after a restart.

use std::path::{Path, PathBuf};

use boxcutter_types::{VmName, VmRecord};

const RECORD: &str = "vm.json";

/// Errors reading or writing VM directories.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What a VM directory held when the node started.
#[derive(Debug)]
pub enum Found {
    /// A directory with a readable record.
    Record(Box<VmRecord>),
    /// A directory without a readable record: a create that died before its first save.
    Orphan(PathBuf),
}

/// The VM directories under a node's data directory.
#[derive(Debug, Clone)]
pub struct VmStore {
    root: PathBuf,
}

impl VmStore {
    /// The store under `data_dir/vms`, created if missing.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let root = data_dir.join("vms");
        std::fs::create_dir_all(&root).map_err(io("create", &root))?;
        Ok(Self { root })
    }

    /// The directory all VM directories are in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of VM `name`.
    pub fn dir(&self, name: &VmName) -> PathBuf {
        self.root.join(name.as_str())
    }

    /// Creates the VM's directory; fails if it already exists.
    pub fn create_dir(&self, name: &VmName) -> Result<PathBuf, StoreError> {
        let dir = self.dir(name);
        std::fs::create_dir(&dir).map_err(io("create", &dir))?;
        Ok(dir)
    }

    /// Saves a record atomically.
    pub fn save(&self, record: &VmRecord) -> Result<(), StoreError> {
        let path = self.dir(&record.spec.name).join(RECORD);
        let json = serde_json::to_vec_pretty(record).unwrap_or_default();
        boxcutter_sys::write_atomic(&path, &json, 0o600).map_err(io("write", &path))
    }

    /// Removes a VM's directory and everything in it. Absent is fine.
    pub fn remove(&self, name: &VmName) -> Result<(), StoreError> {
        remove_dir(&self.dir(name))
    }

    /// Every VM directory, with its record when readable.
    pub fn scan(&self) -> Result<Vec<Found>, StoreError> {
        let entries = std::fs::read_dir(&self.root).map_err(io("list", &self.root))?;
        let mut found = Vec::new();
        for entry in entries.flatten().filter(|e| e.path().is_dir()) {
            let path = entry.path();
            let record = std::fs::read(path.join(RECORD))
                .ok()
                .and_then(|bytes| serde_json::from_slice::<VmRecord>(&bytes).ok())
                .filter(|r| {
                    Some(r.spec.name.as_str()) == path.file_name().and_then(|n| n.to_str())
                });
            found.push(match record {
                Some(record) => Found::Record(Box::new(record)),
                None => Found::Orphan(path),
            });
        }
        Ok(found)
    }
}

/// Removes a directory tree; absent is fine.
pub fn remove_dir(dir: &Path) -> Result<(), StoreError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", dir)(e)),
        _ => Ok(()),
    }
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use boxcutter_types::guest::VmType;
    use boxcutter_types::{ByteSize, GuestSubnet, NetMode, VmSpec, VmState};

    use super::*;

    fn record(name: &str) -> VmRecord {
        VmRecord {
            spec: VmSpec {
                name: VmName::new(name).unwrap(),
                vm_type: VmType::Qemu,
                vcpus: 1,
                ram_mib: 512,
                disk: ByteSize(10 << 30),
                mode: NetMode::Normal,
                subnet: GuestSubnet::new("10.0.0.0".parse().unwrap()).unwrap(),
                authorized_keys: vec![],
                description: String::new(),
            },
            state: VmState::Running,
            failure: None,
            pid: Some(42),
            host_key: String::new(),
            created_at: 1,
        }
    }

    #[test]
    fn records_round_trip_and_orphans_are_found() {
        let data = tempfile::tempdir().unwrap();
        let store = VmStore::open(data.path()).unwrap();
        store.create_dir(&VmName::new("a").unwrap()).unwrap();
        store.save(&record("a")).unwrap();
        store.create_dir(&VmName::new("half").unwrap()).unwrap();
        assert!(
            store.create_dir(&VmName::new("a").unwrap()).is_err(),
            "dirs are exclusive"
        );

        let mut found = store.scan().unwrap();
        found.sort_by_key(|f| matches!(f, Found::Orphan(_)));
        assert!(matches!(&found[0], Found::Record(r) if **r == record("a")));
        assert!(matches!(&found[1], Found::Orphan(p) if p.ends_with("half")));

        store.remove(&VmName::new("a").unwrap()).unwrap();
        store.remove(&VmName::new("a").unwrap()).unwrap();
        assert_eq!(store.scan().unwrap().len(), 1);
    }

    #[test]
    fn a_record_in_the_wrong_directory_is_an_orphan() {
        let data = tempfile::tempdir().unwrap();
        let store = VmStore::open(data.path()).unwrap();
        let dir = store.create_dir(&VmName::new("b").unwrap()).unwrap();
        let json = serde_json::to_vec(&record("a")).unwrap();
        std::fs::write(dir.join(RECORD), json).unwrap();
        assert!(matches!(&store.scan().unwrap()[0], Found::Orphan(_)));
    }
}
