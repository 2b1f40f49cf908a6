//! Finding the cgroup v2 hierarchy and resolving user-given cgroup paths inside it.
//!
//! The mount point differs between systems (/sys/fs/cgroup on unified systems,
//! /sys/fs/cgroup/unified on hybrid ones), so it is read from the mount table; only a
//! mount of the hierarchy's root is the machine's own.

use std::path::{Component, Path, PathBuf};

/// Errors about cgroup paths.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup2 filesystem is mounted (looked in /proc/self/mountinfo)")]
    NoCgroup2Mount,
    #[error("reading the mount table: {0}")]
    Mounts(#[source] std::io::Error),
    #[error(
        "the only cgroup2 mount here, {mount:?}, shows the subtree {root:?} of a hierarchy, not \
         the machine's own: a daemon started with `ip netns exec` sees a remounted /sys; start \
         it in a network namespace with `nsenter --net=/run/netns/NAME fi-daemon ...` instead"
    )]
    ForeignCgroup2 { mount: PathBuf, root: String },
    #[error("cgroup {path:?} does not exist under the cgroup2 mount {mount:?}")]
    NotFound { path: PathBuf, mount: PathBuf },
    #[error("cgroup path {0:?} must not contain '..'")]
    Escapes(PathBuf),
    #[error("{path:?} is outside the cgroup2 mount {mount:?}")]
    OutsideMount { path: PathBuf, mount: PathBuf },
    #[error("no container with id {0} (looked for docker, containerd, CRI-O and podman cgroups)")]
    NoSuchContainer(String),
    #[error("container id {id} is ambiguous, it matches {matches:?}; give more digits")]
    AmbiguousContainer { id: String, matches: Vec<String> },
}

/// The first cgroup2 mount point listed in a /proc/mounts text.
pub fn cgroup2_mount_in(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_source, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount_path(target)))
    })
}

/// /proc/mounts escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mount_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The machine's own cgroup2 mount in a /proc/self/mountinfo text: one whose root is the
/// hierarchy's root. A bind mount of a subtree (someone else's cgroup, seen from a
/// namespace) would attach sock_ops to the wrong place and name every cgroup wrongly.
pub fn own_cgroup2_mount_in(mountinfo: &str) -> Result<PathBuf, CgroupError> {
    let mut foreign = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(root), Some(mount), Some(fstype)) =
            (fields.get(3), fields.get(4), fields.get(dash + 1))
        else {
            continue;
        };
        if *fstype != "cgroup2" {
            continue;
        }
        let mount = PathBuf::from(unescape_mount_path(mount));
        if *root == "/" {
            return Ok(mount);
        }
        foreign.get_or_insert(CgroupError::ForeignCgroup2 {
            mount,
            root: unescape_mount_path(root),
        });
    }
    Err(foreign.unwrap_or(CgroupError::NoCgroup2Mount))
}

/// The cgroup2 mount point of this machine.
pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::Mounts)?;
    own_cgroup2_mount_in(&mountinfo)
}

/// Resolves a cgroup given as an absolute directory under `mount`, or as a path relative to
/// `mount` (`system.slice/docker-abc.scope`, `/` for the root), to an existing directory.
pub fn resolve_in(mount: &Path, given: &Path) -> Result<PathBuf, CgroupError> {
    if given.components().any(|c| c == Component::ParentDir) {
        return Err(CgroupError::Escapes(given.to_owned()));
    }
    let path = if given.starts_with(mount) {
        given.to_owned()
    } else if given.is_absolute() && given.exists() && given != Path::new("/") {
        return Err(CgroupError::OutsideMount {
            path: given.to_owned(),
            mount: mount.to_owned(),
        });
    } else {
        let relative: PathBuf = given
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        if relative.as_os_str().is_empty() {
            mount.to_owned()
        } else {
            mount.join(relative)
        }
    };
    if path.join("cgroup.procs").is_file() {
        Ok(path)
    } else {
        Err(CgroupError::NotFound {
            path: given.to_owned(),
            mount: mount.to_owned(),
        })
    }
}

/// [`resolve_in`] against this machine's cgroup2 mount.
pub fn resolve(given: &Path) -> Result<PathBuf, CgroupError> {
    resolve_in(&cgroup2_mount()?, given)
}

#[cfg(test)]
mod tests {

    #[test]
    fn only_the_machines_own_cgroup2_mount_is_taken() {
        let own = "30 1 0:26 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw\n";
        let bind = "41 30 0:26 /system.slice/box.scope /run/box/cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            own_cgroup2_mount_in(&format!("{bind}{own}")).unwrap(),
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        let err = own_cgroup2_mount_in(bind).unwrap_err().to_string();
        assert!(err.contains("nsenter --net="), "{err}");
        assert!(err.contains("/system.slice/box.scope"), "{err}");
        assert!(matches!(
            own_cgroup2_mount_in("22 1 0:5 / /proc rw - proc proc rw\n"),
            Err(CgroupError::NoCgroup2Mount)
        ));
    }

    use super::*;

    #[test]
    fn a_cgroup_created_after_a_scan_is_named_from_its_first_lookup() {
        let root = std::env::temp_dir().join(format!("fi-cgindex-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("old")).unwrap();
        let mut index = CgroupIndex::new(root.clone());
        let old = cgroup_id(&root.join("old")).unwrap();
        assert_eq!(index.path_of(old), "/old");
        // Created right after that scan, well within the one-second throttle.
        std::fs::create_dir(root.join("new")).unwrap();
        let new = cgroup_id(&root.join("new")).unwrap();
        assert_eq!(index.path_of(new), "/new");
        // An id that is nowhere is reported as such, and remembered as missed.
        assert_eq!(index.path_of(u64::MAX), format!("cgroup:{}", u64::MAX));
        assert!(index.missed.contains(&u64::MAX));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_cache_answers_only_what_needs_no_scan() {
        let root = std::env::temp_dir().join(format!("fi-cgcache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("a")).unwrap();
        let mut index = CgroupIndex::new(root.clone());
        let a = cgroup_id(&root.join("a")).unwrap();
        assert_eq!(index.cached(a), None, "nothing is known before a scan");
        assert_eq!(index.path_of(a), "/a");
        assert_eq!(index.cached(a), Some("/a".to_owned()));
        // A cgroup created after the scan: the cache cannot name it, a lookup can.
        std::fs::create_dir(root.join("b")).unwrap();
        let b = cgroup_id(&root.join("b")).unwrap();
        assert_eq!(index.cached(b), None);
        assert_eq!(index.path_of(b), "/b");
        assert_eq!(index.cached(b), Some("/b".to_owned()));
        // A missing id, once looked for, is named as such without a scan for a second.
        assert_eq!(index.cached(u64::MAX), None);
        assert_eq!(index.path_of(u64::MAX), format!("cgroup:{}", u64::MAX));
        assert_eq!(index.cached(u64::MAX), Some(format!("cgroup:{}", u64::MAX)));
        index.last_scan = Some(std::time::Instant::now() - std::time::Duration::from_secs(2));
        assert_eq!(index.cached(u64::MAX), None, "then it is looked for again");
        std::fs::remove_dir_all(&root).unwrap();
    }

    const HYBRID: &str = "sysfs /sys sysfs rw,nosuid 0 0\n\
        tmpfs /sys/fs/cgroup tmpfs ro 0 0\n\
        cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n\
        cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n";

    #[test]
    fn finds_the_hybrid_mount() {
        assert_eq!(
            cgroup2_mount_in(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn finds_the_unified_mount() {
        let mounts = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
        assert_eq!(
            cgroup2_mount_in(mounts),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
    }

    #[test]
    fn no_mount_is_none() {
        assert_eq!(cgroup2_mount_in("proc /proc proc rw 0 0\n"), None);
        assert_eq!(cgroup2_mount_in(""), None);
    }

    #[test]
    fn unescapes_octal_in_mount_paths() {
        let mounts = "cgroup2 /mnt/my\\040cg cgroup2 rw 0 0\n";
        assert_eq!(cgroup2_mount_in(mounts), Some(PathBuf::from("/mnt/my cg")));
    }

    #[test]
    fn parent_components_are_refused() {
        let err = resolve_in(Path::new("/sys/fs/cgroup"), Path::new("a/../../etc"));
        assert!(matches!(err, Err(CgroupError::Escapes(_))), "{err:?}");
    }

    #[test]
    fn relative_and_absolute_forms_resolve_to_the_same_directory() {
        let mount = std::env::temp_dir().join(format!("fi-cgfs-{}", std::process::id()));
        let child = mount.join("app.slice");
        std::fs::create_dir_all(&child).unwrap();
        std::fs::write(mount.join("cgroup.procs"), "").unwrap();
        std::fs::write(child.join("cgroup.procs"), "").unwrap();
        assert_eq!(resolve_in(&mount, Path::new("app.slice")).unwrap(), child);
        assert_eq!(resolve_in(&mount, Path::new("/app.slice")).unwrap(), child);
        assert_eq!(resolve_in(&mount, &child).unwrap(), child);
        assert_eq!(resolve_in(&mount, Path::new("/")).unwrap(), mount);
        let missing = resolve_in(&mount, Path::new("nope.slice"));
        assert!(
            matches!(missing, Err(CgroupError::NotFound { .. })),
            "{missing:?}"
        );
        std::fs::remove_dir_all(&mount).unwrap();
    }
}

/// The id the kernel gives a cgroup (`bpf_get_current_cgroup_id`): the inode number of its
/// directory in the cgroup2 filesystem.
pub fn cgroup_id(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::metadata(path)?.ino())
}

/// A cgroup path as shown to users: relative to the mount, with a leading '/'.
pub fn display_path(mount: &Path, path: &Path) -> String {
    match path.strip_prefix(mount) {
        Ok(rel) if rel.as_os_str().is_empty() => "/".to_owned(),
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => path.display().to_string(),
    }
}

/// Whether `spec` is a container id rather than a path: 12 to 64 hex digits.
pub fn looks_like_container_id(spec: &str) -> bool {
    (12..=64).contains(&spec.len()) && spec.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The container id inside a cgroup directory name, for the usual layouts:
/// `docker-<id>.scope` (docker, systemd driver), `<id>` (docker, cgroupfs driver; Kubernetes
/// cgroupfs), `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope` (podman).
pub fn container_id_of(dir_name: &str) -> Option<&str> {
    let name = dir_name.strip_suffix(".scope").unwrap_or(dir_name);
    let id = [
        "docker-",
        "cri-containerd-",
        "crio-",
        "libpod-",
        "containerd-",
    ]
    .iter()
    .find_map(|prefix| name.strip_prefix(prefix))
    .unwrap_or(name);
    looks_like_container_id(id).then_some(id)
}

/// Finds the cgroup of a container by its id (or a unique prefix of at least 12 digits).
pub fn find_container(mount: &Path, id: &str) -> Result<PathBuf, CgroupError> {
    let id = id.to_ascii_lowercase();
    let mut found = Vec::new();
    let mut stack = vec![(mount.to_owned(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if container_id_of(&name).is_some_and(|c| c.to_ascii_lowercase().starts_with(&id)) {
                found.push(path.clone());
            }
            if depth < 10 {
                stack.push((path, depth + 1));
            }
        }
    }
    match found.len() {
        0 => Err(CgroupError::NoSuchContainer(id)),
        1 => Ok(found.remove(0)),
        _ => Err(CgroupError::AmbiguousContainer {
            id,
            matches: found.iter().map(|p| display_path(mount, p)).collect(),
        }),
    }
}

/// Resolves a target given by a user: a container id, or a cgroup path.
pub fn resolve_target(mount: &Path, spec: &str) -> Result<PathBuf, CgroupError> {
    if looks_like_container_id(spec) {
        find_container(mount, spec)
    } else {
        resolve_in(mount, Path::new(spec))
    }
}

/// Maps cgroup ids back to paths, rescanning the hierarchy when an id is unknown: at once
/// the first time an id is seen (a cgroup created a moment ago, such as an exploration's
/// test cgroup, is named from its first request), then at most once a second for ids still
/// unknown (gone cgroups), so a flood of them cannot turn into a flood of scans.
#[derive(Debug)]
pub struct CgroupIndex {
    mount: PathBuf,
    by_id: std::collections::HashMap<u64, String>,
    /// Ids a scan did not find (bounded: cleared when full).
    missed: std::collections::HashSet<u64>,
    last_scan: Option<std::time::Instant>,
}

/// Cgroup paths by id, as [`CgroupIndex::path_of`] names them: what the event pump hands
/// the request log with a batch of events.
pub type CgroupPaths = std::collections::HashMap<u64, String>;

/// Unknown ids remembered, at most.
const MISSED: usize = 4096;

impl CgroupIndex {
    pub fn new(mount: PathBuf) -> Self {
        Self {
            mount,
            by_id: std::collections::HashMap::new(),
            missed: std::collections::HashSet::new(),
            last_scan: None,
        }
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// The cgroup's path relative to the mount, or `cgroup:<id>` if it is gone.
    /// May walk the whole hierarchy (blocking filesystem work); [`Self::cached`] says
    /// when it would not.
    pub fn path_of(&mut self, id: u64) -> String {
        if let Some(path) = self.by_id.get(&id) {
            return path.clone();
        }
        if self.needs_scan(id) {
            self.rescan();
        }
        match self.by_id.get(&id) {
            Some(path) => path.clone(),
            None => {
                if self.missed.len() >= MISSED {
                    self.missed.clear();
                }
                self.missed.insert(id);
                format!("cgroup:{id}")
            }
        }
    }

    /// What [`Self::path_of`] answers for `id` when it can answer without a scan: a
    /// known cgroup's path, or `cgroup:<id>` for an id a scan missed less than a second
    /// ago. `None` when only a scan can tell. Never touches the filesystem.
    pub fn cached(&self, id: u64) -> Option<String> {
        if let Some(path) = self.by_id.get(&id) {
            return Some(path.clone());
        }
        (!self.needs_scan(id)).then(|| format!("cgroup:{id}"))
    }

    /// Whether naming the unknown `id` takes a scan: the first time it is asked for, then
    /// at most once a second.
    fn needs_scan(&self, id: u64) -> bool {
        let stale = self
            .last_scan
            .is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(1));
        stale || !self.missed.contains(&id)
    }

    fn rescan(&mut self) {
        self.last_scan = Some(std::time::Instant::now());
        let mut stack = vec![self.mount.clone()];
        while let Some(dir) = stack.pop() {
            if let Ok(id) = cgroup_id(&dir) {
                self.by_id.insert(id, display_path(&self.mount, &dir));
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod container_tests {
    use super::*;

    #[test]
    fn container_ids_are_found_in_every_layout() {
        let id = "3f2a9c1d7e5b4a6c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";
        for name in [
            format!("docker-{id}.scope"),
            id.to_owned(),
            format!("cri-containerd-{id}.scope"),
            format!("crio-{id}.scope"),
            format!("libpod-{id}.scope"),
        ] {
            assert_eq!(container_id_of(&name), Some(id), "{name}");
        }
        assert_eq!(container_id_of("system.slice"), None);
        assert_eq!(container_id_of("docker.service"), None);
        assert_eq!(container_id_of("abc"), None);
    }

    #[test]
    fn find_container_walks_the_tree_and_refuses_ambiguity() {
        let mount = std::env::temp_dir().join(format!("fi-cgfind-{}", std::process::id()));
        let a = "aaaaaaaaaaaa1111111111111111111111111111111111111111111111111111";
        let b = "aaaaaaaaaaaa2222222222222222222222222222222222222222222222222222";
        let pod =
            mount.join("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice");
        std::fs::create_dir_all(pod.join(format!("cri-containerd-{a}.scope"))).unwrap();
        std::fs::create_dir_all(mount.join(format!("system.slice/docker-{b}.scope"))).unwrap();
        let found = find_container(&mount, &a[..20]).unwrap();
        assert!(
            found.ends_with(format!("cri-containerd-{a}.scope")),
            "{found:?}"
        );
        assert!(matches!(
            find_container(&mount, &a[..12]),
            Err(CgroupError::AmbiguousContainer { .. })
        ));
        assert!(matches!(
            find_container(&mount, "bbbbbbbbbbbbbbbb"),
            Err(CgroupError::NoSuchContainer(_))
        ));
        std::fs::remove_dir_all(&mount).unwrap();
    }

    #[test]
    fn display_paths_are_relative_to_the_mount() {
        let mount = Path::new("/sys/fs/cgroup");
        assert_eq!(display_path(mount, mount), "/");
        assert_eq!(display_path(mount, &mount.join("a/b")), "/a/b");
    }
}
