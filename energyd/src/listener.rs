//! Getting a listening socket: systemd socket activation (LISTEN_FDS) or a
//! path we bind ourselves, refusing paths we must not take over.

use anyhow::{bail, Context};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// First fd passed by systemd (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// A listening socket and whether we own its file.
pub struct BoundSocket {
    /// The listener.
    pub listener: UnixListener,
    /// The path to remove at shutdown (`None` for an inherited socket,
    /// whose file belongs to systemd).
    pub owned_path: Option<PathBuf>,
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if let Some(path) = &self.owned_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The socket systemd passed us, if this process was socket-activated.
pub fn from_systemd() -> anyhow::Result<Option<UnixListener>> {
    let (Ok(pid), Ok(fds)) = (std::env::var("LISTEN_PID"), std::env::var("LISTEN_FDS")) else {
        return Ok(None);
    };
    if pid.parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    let fds: i32 = fds
        .parse()
        .with_context(|| format!("LISTEN_FDS={fds:?} is not a number"))?;
    if fds < 1 {
        return Ok(None);
    }
    if fds > 1 {
        tracing::warn!(fds, "systemd passed several sockets; using the first");
    }
    // Children must not think the sockets are theirs.
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    let stat =
        nix::sys::stat::fstat(LISTEN_FDS_START).context("LISTEN_FDS set but fd 3 is not open")?;
    if nix::sys::stat::SFlag::from_bits_truncate(stat.st_mode) & nix::sys::stat::SFlag::S_IFMT
        != nix::sys::stat::SFlag::S_IFSOCK
    {
        bail!("fd 3 passed by systemd is not a socket");
    }
    // SAFETY: systemd hands us ownership of fd 3 (checked above to be an
    // open socket); nothing else in this process uses or closes it.
    let listener =
        unsafe { <UnixListener as std::os::fd::FromRawFd>::from_raw_fd(LISTEN_FDS_START) };
    Ok(Some(listener))
}

/// Binds `path` with file mode `mode`. Refuses, with a message that says
/// why: a missing parent directory, a path that exists and is not a socket,
/// and a socket another process is serving. A stale socket file (nobody
/// listening) is replaced.
pub fn bind(path: &Path, mode: u32) -> anyhow::Result<BoundSocket> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        bail!(
            "cannot use socket path {}: directory {} does not exist",
            path.display(),
            parent.display()
        );
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                bail!(
                    "cannot use socket path {}: another process (an energyd?) is listening on it",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
        }
        Ok(_) => bail!(
            "cannot use socket path {}: it exists and is not a socket",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot inspect socket path {}", path.display()))
        }
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot bind socket {}", path.display()))?;
    let socket = BoundSocket {
        listener,
        owned_path: Some(path.to_owned()),
    };
    // bind() applies the umask; set the mode we mean explicitly.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set mode {mode:o} on {}", path.display()))?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_missing_dir_non_socket_and_live_socket_replaces_stale() {
        let dir = tempfile::tempdir().unwrap();
        let err = bind(&dir.path().join("nope/s.sock"), 0o600)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");

        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = bind(&file, 0o600).err().unwrap().to_string();
        assert!(err.contains("not a socket"), "{err}");

        let path = dir.path().join("s.sock");
        let live = bind(&path, 0o640).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let err = bind(&path, 0o600).err().unwrap().to_string();
        assert!(err.contains("listening"), "{err}");

        drop(live);
        assert!(!path.exists());

        // A stale file left by a crashed daemon (nobody listening) is replaced.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        assert!(bind(&path, 0o600).is_ok());
    }

    #[test]
    fn removes_its_socket_file_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        drop(bind(&path, 0o600).unwrap());
        assert!(!path.exists());
    }
}
