//! Where the daemon's socket lives by default.

use std::path::PathBuf;

/// Socket of the system service (systemd creates `/run/energyd`).
pub const SYSTEM_SOCKET: &str = "/run/energyd/energyd.sock";

/// Default socket in user mode: `$XDG_RUNTIME_DIR/energyd.sock`, or
/// `/tmp/energyd-<uid>.sock` where no runtime directory is set.
pub fn user_socket() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("energyd.sock"),
        _ => PathBuf::from(format!(
            "/tmp/energyd-{}.sock",
            nix::unistd::geteuid().as_raw()
        )),
    }
}

/// The socket a client should try when none is given: the user-mode socket
/// if it exists, else the system one.
pub fn client_default_socket() -> PathBuf {
    let user = user_socket();
    if user.exists() {
        user
    } else {
        PathBuf::from(SYSTEM_SOCKET)
    }
}
