//! Control groups (cgroup v2) as consumers of CPU time: naming a cgroup
//! (a systemd unit or a path), finding its directory under a root path,
//! and reading its cumulative CPU time (`cpu.stat` `usage_usec`).
//!
//! Everything starts from a root path ([`CgroupRoot`]): the cgroup v2 mount
//! in production (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid
//! hierarchy: [`CgroupRoot::detect`] reads the mount table), a fixture tree
//! in tests ([`crate::fixtures::CgroupTree`]). A systemd unit's cgroup is
//! the directory named like the unit: `system.slice/nginx.service`,
//! `user.slice/user-1000.slice/user@1000.service/app.slice/x.service`;
//! [`CgroupRoot::find_unit`] walks the tree (bounded) for it, so nested
//! slices and user units resolve without re-implementing systemd's naming.
//!
//! `cpu.stat` is one of the cgroup core files: present in every cgroup v2
//! directory whether or not the `cpu` controller is enabled; `usage_usec`
//! counts the CPU time of every task that ran in the cgroup and its
//! descendants, in microseconds, since the cgroup was created.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use thiserror::Error;

/// Directories visited at most when looking for a unit's cgroup: a machine
/// with thousands of containers stays well inside it, while a walk of a
/// hostile tree cannot run unbounded.
pub const MAX_DIRS_WALKED: usize = 100_000;

/// Depth at most of a unit's cgroup below the root (systemd's deepest
/// usual nesting is about 6: user.slice/user-N.slice/user@N.service/
/// app.slice/x.slice/y.service).
pub const MAX_DEPTH: usize = 16;

/// Unit types that own a cgroup.
const CGROUP_UNIT_SUFFIXES: [&str; 6] =
    [".service", ".scope", ".slice", ".socket", ".mount", ".swap"];

/// Why a cgroup cannot be named, found or read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CgroupError {
    /// The name is not a systemd unit name with a cgroup.
    #[error("{name:?} is not a unit name with a cgroup ({why})")]
    BadUnitName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The path is not a cgroup path relative to the root.
    #[error("{path:?} is not a cgroup path ({why})")]
    BadPath {
        /// The path given.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Nothing of that name or path exists under the root.
    #[error("no cgroup {what} under {root}")]
    NotFound {
        /// The unit or path.
        what: String,
        /// The cgroup root searched.
        root: PathBuf,
    },
    /// More than one cgroup has that unit's name.
    #[error(
        "unit {name} names {count} cgroups ({first} and others): give the cgroup path instead"
    )]
    Ambiguous {
        /// The unit.
        name: String,
        /// How many matched.
        count: usize,
        /// One of them.
        first: String,
    },
    /// The directory exists but is not a cgroup v2 directory.
    #[error("{dir} has no cpu.stat: not a cgroup v2 directory")]
    NotCgroup {
        /// The directory.
        dir: PathBuf,
    },
}

/// Validates a systemd unit name that owns a cgroup (`nginx.service`,
/// `user@1000.service`, `machine.slice`, `session-3.scope`).
pub fn validate_unit_name(name: &str) -> Result<(), CgroupError> {
    let bad = |why| {
        Err(CgroupError::BadUnitName {
            name: name.chars().take(300).collect(),
            why,
        })
    };
    if name.is_empty() || name.len() > 255 {
        return bad("empty or longer than 255 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'.' | b'@' | b'\\'))
    {
        return bad("only ASCII letters, digits and :-_.@\\ are allowed");
    }
    let Some(suffix) = CGROUP_UNIT_SUFFIXES.iter().find(|s| name.ends_with(*s)) else {
        return bad("the suffix must be .service, .scope, .slice, .socket, .mount or .swap");
    };
    if name.len() == suffix.len() {
        return bad("nothing before the suffix");
    }
    Ok(())
}

/// A cgroup path relative to the root (`/system.slice/x.service` or
/// `system.slice/x.service`), as the list of its normal components. `/`
/// (the root cgroup) is allowed: the whole machine's tasks.
pub fn relative_path(path: &str) -> Result<PathBuf, CgroupError> {
    let bad = |why| {
        Err(CgroupError::BadPath {
            path: path.chars().take(300).collect(),
            why,
        })
    };
    if path.len() > 4096 || path.contains('\0') {
        return bad("longer than 4096 bytes or holding NUL");
    }
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => out.push(part),
            Component::ParentDir | Component::Prefix(_) => {
                return bad("`..` is not allowed");
            }
        }
    }
    Ok(out)
}

/// The printable form of a relative cgroup path: `/` then its components.
pub fn display_path(relative: &Path) -> String {
    format!("/{}", relative.display())
}

/// The cgroup v2 hierarchy the daemon reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRoot {
    root: PathBuf,
}

impl CgroupRoot {
    /// The hierarchy mounted at `root` (a fixture tree, or a host's
    /// hierarchy mounted elsewhere in a container).
    pub fn at(root: impl Into<PathBuf>) -> CgroupRoot {
        CgroupRoot { root: root.into() }
    }

    /// The cgroup2 mount of this machine, from `<proc_root>/self/mountinfo`
    /// (`/sys/fs/cgroup` on a unified hierarchy, `/sys/fs/cgroup/unified`
    /// on a hybrid one); `/sys/fs/cgroup` when the table names none.
    pub fn detect(proc_root: &Path) -> CgroupRoot {
        let found = procfs::process::Process::new_with_root(proc_root.join("self"))
            .and_then(|p| p.mountinfo())
            .ok()
            .and_then(|mounts| {
                mounts
                    .into_iter()
                    .find(|m| m.fs_type == "cgroup2")
                    .map(|m| m.mount_point)
            });
        CgroupRoot::at(found.unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup")))
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The directory of the cgroup at `relative` (from [`relative_path`]),
    /// checked to be a cgroup v2 directory.
    pub fn dir_of(&self, relative: &Path) -> Result<PathBuf, CgroupError> {
        let dir = self.root.join(relative);
        if !dir.is_dir() {
            return Err(CgroupError::NotFound {
                what: display_path(relative),
                root: self.root.clone(),
            });
        }
        if !dir.join("cpu.stat").is_file() {
            return Err(CgroupError::NotCgroup { dir });
        }
        Ok(dir)
    }

    /// Every cgroup directory named `unit` (relative paths, sorted) that
    /// `keep` accepts, walking at most [`MAX_DIRS_WALKED`] directories to
    /// depth [`MAX_DEPTH`]. Unreadable directories are skipped.
    pub fn find_unit(
        &self,
        unit: &str,
        mut keep: impl FnMut(&Path) -> bool,
    ) -> Result<Vec<PathBuf>, CgroupError> {
        validate_unit_name(unit)?;
        let mut found = Vec::new();
        let mut queue = std::collections::VecDeque::from([(PathBuf::new(), 0usize)]);
        let mut walked = 0usize;
        while let Some((relative, depth)) = queue.pop_front() {
            walked += 1;
            if walked > MAX_DIRS_WALKED {
                break;
            }
            let Ok(entries) = std::fs::read_dir(self.root.join(&relative)) else {
                continue;
            };
            for entry in entries.flatten() {
                // Cgroup directories are real directories, never links.
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let child = relative.join(entry.file_name());
                if entry.file_name() == unit {
                    if keep(&self.root.join(&child)) {
                        found.push(child.clone());
                    }
                    // A unit's cgroup holds no other unit of the same name.
                    continue;
                }
                if depth + 1 < MAX_DEPTH {
                    queue.push_back((child, depth + 1));
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// The one cgroup of `unit` that `keep` accepts.
    pub fn resolve_unit(
        &self,
        unit: &str,
        keep: impl FnMut(&Path) -> bool,
    ) -> Result<PathBuf, CgroupError> {
        let mut found = self.find_unit(unit, keep)?;
        match found.len() {
            0 => Err(CgroupError::NotFound {
                what: unit.to_owned(),
                root: self.root.clone(),
            }),
            1 => Ok(found.remove(0)),
            count => Err(CgroupError::Ambiguous {
                name: unit.to_owned(),
                count,
                first: display_path(&found[0]),
            }),
        }
    }
}

/// A cgroup's `cpu.stat`, kept open and re-read from offset 0 (cgroupfs,
/// like sysfs, regenerates the text at each read; a fixture changes it in
/// place).
#[derive(Debug)]
pub struct CpuStatFile {
    file: File,
    /// Inode and device of the file opened: a cgroup removed and created
    /// again under the same path (a unit restarted) has a new one.
    identity: (u64, u64),
    buf: Vec<u8>,
}

impl CpuStatFile {
    /// Opens `<dir>/cpu.stat`.
    pub fn open(dir: &Path) -> std::io::Result<CpuStatFile> {
        let file = File::open(dir.join("cpu.stat"))?;
        let meta = file.metadata()?;
        Ok(CpuStatFile {
            file,
            identity: (meta.ino(), meta.dev()),
            buf: vec![0; 4096],
        })
    }

    /// Whether `<dir>/cpu.stat` is still the file this reader holds: false
    /// once the cgroup was removed (and maybe created again). The kernel
    /// also fails reads of a removed cgroup's files (ENODEV); a fixture
    /// tree's unlinked file would still read, so this check is what tells.
    pub fn is_current(&self, dir: &Path) -> bool {
        std::fs::metadata(dir.join("cpu.stat")).is_ok_and(|m| (m.ino(), m.dev()) == self.identity)
    }

    /// The cgroup's CPU time in nanoseconds (`usage_usec` × 1000). An
    /// error when the cgroup was removed (the kernel answers ENODEV) or the
    /// text holds no `usage_usec`.
    pub fn usage_ns(&mut self) -> std::io::Result<u64> {
        let n = self.file.read_at(&mut self.buf, 0)?;
        parse_usage_usec(&self.buf[..n])
            .map(|us| us.saturating_mul(1_000))
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "no usage_usec in cpu.stat")
            })
    }
}

/// `usage_usec` of a `cpu.stat` text.
pub fn parse_usage_usec(text: &[u8]) -> Option<u64> {
    std::str::from_utf8(text)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_are_checked() {
        for good in [
            "nginx.service",
            "user@1000.service",
            "machine.slice",
            "session-3.scope",
            "dev-sda1.swap",
        ] {
            assert!(validate_unit_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "nginx",
            ".service",
            "a/b.service",
            "../x.service",
            "x.timer",
            "sp ace.service",
        ] {
            assert!(validate_unit_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_stay_under_the_root() {
        assert_eq!(
            relative_path("/system.slice/x.service").unwrap(),
            PathBuf::from("system.slice/x.service")
        );
        assert_eq!(relative_path("/").unwrap(), PathBuf::new());
        assert!(relative_path("/system.slice/../../etc").is_err());
        assert!(relative_path("a\0b").is_err());
        assert_eq!(display_path(Path::new("a/b")), "/a/b");
    }

    #[test]
    fn usage_is_parsed_from_cpu_stat() {
        let text = b"usage_usec 275391710\nuser_usec 241993697\nsystem_usec 33398013\n";
        assert_eq!(parse_usage_usec(text), Some(275_391_710));
        assert_eq!(parse_usage_usec(b"user_usec 3\n"), None);
        assert_eq!(parse_usage_usec(b"usage_usec x\n"), None);
    }
}
