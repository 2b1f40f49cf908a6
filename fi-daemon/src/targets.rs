//! Watch targets: the cgroups whose outgoing requests the kernel reports.
//!
//! A target is pinned (added by the user until removed) or leased (held by an open watch
//! stream). The kernel map has an entry while a target has either.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use aya::maps::{HashMap as BpfHashMap, MapData, MapError};
use fi_common::flow::{MAX_TARGETS, TARGET_WATCH, TARGETS_GENERATION};

use crate::cgroup_fs::{self, CgroupError};

/// Failures of target operations.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("target {spec:?}: {source}")]
    Resolve {
        spec: String,
        #[source]
        source: CgroupError,
    },
    #[error("target {spec:?}: reading its cgroup id: {source}")]
    CgroupId {
        spec: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no target {0:?} was added")]
    NotFound(String),
    #[error("too many targets (at most {MAX_TARGETS})")]
    TooMany,
    #[error("updating the kernel's target map: {0}")]
    Map(#[from] MapError),
}

/// Where targets are written: the kernel map, or a fake in unit tests.
pub trait TargetSink: Send {
    fn insert(&mut self, cgroup_id: u64) -> Result<(), MapError>;
    fn remove(&mut self, cgroup_id: u64) -> Result<(), MapError>;
}

impl TargetSink for BpfHashMap<MapData, u64, u32> {
    fn insert(&mut self, cgroup_id: u64) -> Result<(), MapError> {
        BpfHashMap::insert(self, cgroup_id, TARGET_WATCH, 0)?;
        next_generation(self)
    }

    fn remove(&mut self, cgroup_id: u64) -> Result<(), MapError> {
        BpfHashMap::remove(self, &cgroup_id)?;
        next_generation(self)
    }
}

/// Bumps the targets' generation (see `fi_common::flow::TARGETS_GENERATION`), after the
/// change: every flow then looks at the targets again at its next packet, so a target
/// applies to connections already open at once. Only this daemon writes the map.
fn next_generation(map: &mut BpfHashMap<MapData, u64, u32>) -> Result<(), MapError> {
    let generation = match map.get(&TARGETS_GENERATION, 0) {
        Ok(generation) => generation,
        Err(MapError::KeyNotFound) => 0,
        Err(err) => return Err(err),
    };
    map.insert(TARGETS_GENERATION, generation.wrapping_add(1), 0)
}

/// A resolved target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInfo {
    /// As the user gave it.
    pub spec: String,
    /// Relative to the cgroup2 mount.
    pub cgroup: String,
    pub cgroup_id: u64,
}

#[derive(Debug)]
struct Entry {
    info: TargetInfo,
    pinned: bool,
    leases: u32,
}

/// The registry of targets.
pub struct Targets {
    mount: PathBuf,
    sink: Box<dyn TargetSink>,
    entries: BTreeMap<u64, Entry>,
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Targets")
            .field("mount", &self.mount)
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

impl Targets {
    pub fn new(mount: PathBuf, sink: Box<dyn TargetSink>) -> Self {
        Self {
            mount,
            sink,
            entries: BTreeMap::new(),
        }
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// Resolves a spec (container id or cgroup path) without changing anything.
    pub fn resolve(&self, spec: &str) -> Result<TargetInfo, TargetError> {
        resolve(&self.mount, spec)
    }

    fn hold(&mut self, info: TargetInfo, pin: bool) -> Result<TargetInfo, TargetError> {
        let spec = info.spec.clone();
        if !self.entries.contains_key(&info.cgroup_id) {
            if self.entries.len() >= MAX_TARGETS as usize {
                return Err(TargetError::TooMany);
            }
            self.sink.insert(info.cgroup_id)?;
            self.entries.insert(
                info.cgroup_id,
                Entry {
                    info: info.clone(),
                    pinned: false,
                    leases: 0,
                },
            );
        }
        let entry = self
            .entries
            .get_mut(&info.cgroup_id)
            .ok_or(TargetError::NotFound(spec))?;
        if pin {
            entry.pinned = true;
        } else {
            entry.leases += 1;
        }
        Ok(entry.info.clone())
    }

    /// Adds a target until [`Targets::remove`] (resolving it here: at start-up and in
    /// tests; the daemon's core resolves first, off its locks, and calls [`Targets::pin`]).
    pub fn add(&mut self, spec: &str) -> Result<TargetInfo, TargetError> {
        let info = self.resolve(spec)?;
        self.pin(info)
    }

    /// Adds a resolved target until [`Targets::remove`].
    pub fn pin(&mut self, info: TargetInfo) -> Result<TargetInfo, TargetError> {
        self.hold(info, true)
    }

    /// Holds a resolved target for a watch or an exploration; give it back with
    /// [`Targets::release`].
    pub fn lease(&mut self, info: TargetInfo) -> Result<TargetInfo, TargetError> {
        self.hold(info, false)
    }

    /// Removes a pinned target, by its spec, by the cgroup it resolved to, or (given
    /// `resolved`, what the spec resolves to now) by its cgroup id.
    pub fn remove(
        &mut self,
        spec: &str,
        resolved: Option<TargetInfo>,
    ) -> Result<TargetInfo, TargetError> {
        let id = self
            .entries
            .iter()
            .find(|(_, e)| e.pinned && (e.info.spec == spec || e.info.cgroup == spec))
            .map(|(id, _)| *id)
            .or_else(|| {
                let info = resolved?;
                self.entries
                    .get(&info.cgroup_id)
                    .is_some_and(|e| e.pinned)
                    .then_some(info.cgroup_id)
            })
            .ok_or_else(|| TargetError::NotFound(spec.to_owned()))?;
        let info = self
            .entries
            .get(&id)
            .map(|e| e.info.clone())
            .ok_or_else(|| TargetError::NotFound(spec.to_owned()))?;
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.pinned = false;
        }
        self.drop_if_unused(id)?;
        Ok(info)
    }

    /// Gives back a lease taken with [`Targets::lease`].
    pub fn release(&mut self, cgroup_id: u64) -> Result<(), TargetError> {
        if let Some(entry) = self.entries.get_mut(&cgroup_id) {
            entry.leases = entry.leases.saturating_sub(1);
        }
        self.drop_if_unused(cgroup_id)
    }

    fn drop_if_unused(&mut self, cgroup_id: u64) -> Result<(), TargetError> {
        if self
            .entries
            .get(&cgroup_id)
            .is_some_and(|e| !e.pinned && e.leases == 0)
        {
            self.entries.remove(&cgroup_id);
            self.sink.remove(cgroup_id)?;
        }
        Ok(())
    }

    /// The pinned targets.
    pub fn list(&self) -> Vec<TargetInfo> {
        self.entries
            .values()
            .filter(|e| e.pinned)
            .map(|e| e.info.clone())
            .collect()
    }

    /// Whether a cgroup (relative path) is at or below any target in `cgroups`.
    pub fn is_under(cgroup: &str, targets: &[String]) -> bool {
        targets.iter().any(|t| {
            t == "/"
                || cgroup == t
                || cgroup
                    .strip_prefix(t.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }
}

/// Resolves a spec (container id or cgroup path) under a cgroup2 mount. It reads cgroupfs
/// (a container id walks the tree): call it off the async threads and under no lock.
pub fn resolve(mount: &Path, spec: &str) -> Result<TargetInfo, TargetError> {
    let path = cgroup_fs::resolve_target(mount, spec).map_err(|source| TargetError::Resolve {
        spec: spec.to_owned(),
        source,
    })?;
    let cgroup_id = cgroup_fs::cgroup_id(&path).map_err(|source| TargetError::CgroupId {
        spec: spec.to_owned(),
        source,
    })?;
    Ok(TargetInfo {
        spec: spec.to_owned(),
        cgroup: cgroup_fs::display_path(mount, &path),
        cgroup_id,
    })
}

/// Whatever resolves target specs: the registry, or a bare cgroup2 mount.
pub trait Resolve {
    fn resolve_target(&self, spec: &str) -> Result<TargetInfo, TargetError>;
}

impl Resolve for Targets {
    fn resolve_target(&self, spec: &str) -> Result<TargetInfo, TargetError> {
        self.resolve(spec)
    }
}

impl Resolve for Path {
    fn resolve_target(&self, spec: &str) -> Result<TargetInfo, TargetError> {
        resolve(self, spec)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct FakeMap(Arc<Mutex<Vec<u64>>>);

    impl TargetSink for FakeMap {
        fn insert(&mut self, id: u64) -> Result<(), MapError> {
            self.0.lock().unwrap().push(id);
            Ok(())
        }
        fn remove(&mut self, id: u64) -> Result<(), MapError> {
            self.0.lock().unwrap().retain(|x| *x != id);
            Ok(())
        }
    }

    fn fixture() -> (PathBuf, Targets, FakeMap) {
        let mount = std::env::temp_dir().join(format!(
            "fi-targets-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        for dir in ["app", "app/web", "other"] {
            std::fs::create_dir_all(mount.join(dir)).unwrap();
            std::fs::write(mount.join(dir).join("cgroup.procs"), "").unwrap();
        }
        let map = FakeMap::default();
        (
            mount.clone(),
            Targets::new(mount, Box::new(map.clone())),
            map,
        )
    }

    #[test]
    fn pins_and_leases_keep_the_kernel_entry_until_both_are_gone() {
        let (mount, mut targets, map) = fixture();
        let pinned = targets.add("app").unwrap();
        assert_eq!(pinned.cgroup, "/app");
        let leased = targets.lease(targets.resolve("/app").unwrap()).unwrap();
        assert_eq!(leased.cgroup_id, pinned.cgroup_id);
        assert_eq!(map.0.lock().unwrap().len(), 1, "one cgroup, one entry");
        targets.remove("app", None).unwrap();
        assert_eq!(map.0.lock().unwrap().len(), 1, "the lease still holds it");
        assert!(targets.list().is_empty());
        targets.release(leased.cgroup_id).unwrap();
        assert!(map.0.lock().unwrap().is_empty());
        std::fs::remove_dir_all(mount).unwrap();
    }

    #[test]
    fn bad_specs_change_nothing() {
        let (mount, mut targets, map) = fixture();
        assert!(matches!(
            targets.add("nope"),
            Err(TargetError::Resolve { .. })
        ));
        assert!(matches!(
            targets.add("../etc"),
            Err(TargetError::Resolve { .. })
        ));
        assert!(matches!(
            targets.remove("app", None),
            Err(TargetError::NotFound(_))
        ));
        assert!(map.0.lock().unwrap().is_empty());
        std::fs::remove_dir_all(mount).unwrap();
    }

    #[test]
    fn descendants_are_under_their_target() {
        let t = ["/app".to_owned()];
        assert!(Targets::is_under("/app", &t));
        assert!(Targets::is_under("/app/web", &t));
        assert!(!Targets::is_under("/application", &t));
        assert!(!Targets::is_under("/other", &t));
        assert!(Targets::is_under("/anything", &["/".to_owned()]));
    }
}
