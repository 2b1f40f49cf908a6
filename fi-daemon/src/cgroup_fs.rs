//! Finding the cgroup v2 hierarchy and resolving user-given cgroup paths inside it.
//!
//! The mount point differs between systems (/sys/fs/cgroup on unified systems,
//! /sys/fs/cgroup/unified on hybrid ones), so it is read from /proc/mounts.

use std::path::{Component, Path, PathBuf};

/// Errors about cgroup paths.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup2 filesystem is mounted (looked in /proc/mounts)")]
    NoCgroup2Mount,
    #[error("reading /proc/mounts: {0}")]
    Mounts(#[source] std::io::Error),
    #[error("cgroup {path:?} does not exist under the cgroup2 mount {mount:?}")]
    NotFound { path: PathBuf, mount: PathBuf },
    #[error("cgroup path {0:?} must not contain '..'")]
    Escapes(PathBuf),
    #[error("{path:?} is outside the cgroup2 mount {mount:?}")]
    OutsideMount { path: PathBuf, mount: PathBuf },
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

/// The cgroup2 mount point of this machine.
pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    let mounts = std::fs::read_to_string("/proc/mounts").map_err(CgroupError::Mounts)?;
    cgroup2_mount_in(&mounts).ok_or(CgroupError::NoCgroup2Mount)
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
    use super::*;

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
