//! systemd socket activation: energyd serves a listening socket passed as
//! fd 3 with LISTEN_PID/LISTEN_FDS, and leaves the socket file (systemd's)
//! in place when it stops.

use crate::support::ENERGYD;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn serves_the_socket_passed_by_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("activated.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let fd = listener.as_raw_fd();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[sources]\npowercap_root = \"/nonexistent\"\nnvml = false\n[sources.simulated]\ncurve = { shape = \"constant\", watts = 20.0 }\n",
    )
    .unwrap();
    // LISTEN_PID must be the daemon's own pid: the shell exports its pid
    // and execs the daemon, which keeps it.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("export LISTEN_PID=$$ LISTEN_FDS=1; exec \"$0\" --user --config \"$1\"")
        .arg(ENERGYD)
        .arg(&config)
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec we only call dup2 / fcntl, which are
    // async-signal-safe; they put the listener on fd 3 without CLOEXEC.
    unsafe {
        cmd.pre_exec(move || {
            use nix::fcntl::{fcntl, FcntlArg, FdFlag};
            if fd != 3 {
                nix::unistd::dup2(fd, 3)?;
            }
            fcntl(3, FcntlArg::F_SETFD(FdFlag::empty()))?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(listener);

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut client = loop {
        match shared::client::Client::connect(&path, "activation-test") {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "no answer on the activated socket: {e}; energyd said: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    };
    assert!(!client.sources().unwrap().is_empty());

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(
        path.exists(),
        "an inherited socket's file belongs to systemd and stays"
    );
}
