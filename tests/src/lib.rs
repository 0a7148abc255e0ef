//! Helpers for the cross-crate integration tests in `tests/tests/`: start
//! the real `energyd` binary on a temporary socket, find the other
//! binaries, wait for readiness.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Directory holding the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// Path of a workspace binary, built up to date once per test process:
/// `cargo test -p integration-tests` alone does not rebuild other
/// packages' binaries, and a stale daemon would test old code.
pub fn workspace_bin(package: &str, name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if !built.iter().any(|p| p == package) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", package, "--bins"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p {package} failed");
        built.push(package.to_owned());
    }
    bin_dir().join(name)
}

/// A running energyd on a temporary socket; killed on drop.
pub struct Daemon {
    /// The process.
    pub child: Child,
    /// Its socket.
    pub socket: PathBuf,
    /// Temporary directory holding socket, config and fixtures.
    pub dir: tempfile::TempDir,
}

/// A config that makes the daemon use a simulated constant-power source
/// (plus whatever it discovers), with the socket open to every uid so tests
/// can connect as other users.
pub const SIMULATED_CONFIG: &str = r#"
[server]
socket_mode = "0666"

[sources]
powercap_root = "/nonexistent-powercap"
msr_root = "/nonexistent-msr"
nvml = false

[sources.simulated]
curve = { shape = "constant", watts = 50.0 }
"#;

impl Daemon {
    /// Starts `energyd --user` with `config` (TOML text) and `extra` args,
    /// and waits until its socket accepts connections.
    pub fn start(config: &str, extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        // Other uids must be able to reach the socket inside.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let socket = dir.path().join("energyd.sock");
        let config_path = dir.path().join("energyd.toml");
        std::fs::write(&config_path, config).expect("write config");
        let child = Command::new(workspace_bin("energyd", "energyd"))
            .arg("--user")
            .arg("--socket")
            .arg(&socket)
            .arg("--config")
            .arg(&config_path)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn energyd");
        let mut daemon = Daemon { child, socket, dir };
        daemon.wait_ready();
        daemon
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                panic!("energyd exited early ({status}): {err}");
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                // Let the samplers take a few samples before tests query.
                std::thread::sleep(Duration::from_millis(150));
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("energyd did not open {} within 20 s", self.socket.display());
    }

    /// A connected, handshaken client.
    pub fn client(&self) -> shared::client::Client {
        shared::client::Client::connect(&self.socket, "integration-test")
            .expect("connect to energyd")
    }

    /// Sends SIGTERM and waits for exit; returns the exit status and stderr.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill");
        let status = self.child.wait().expect("wait");
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        (status, err)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An unprivileged uid that exists on Debian (`nobody`).
pub const NOBODY: u32 = 65534;
/// A second unprivileged uid; it needs no passwd entry to run a process.
pub const OTHER_UID: u32 = 65533;

/// Runs `probe-client SOCKET ARGS…` as `uid` (and gid `uid`) and returns
/// its one-line answer (`ok …` or `error CODE message`).
pub fn probe(socket: &Path, uid: u32, args: &[&str]) -> String {
    use std::os::unix::process::CommandExt;
    let out = Command::new(workspace_bin("integration-tests", "probe-client"))
        .arg(socket)
        .args(args)
        .uid(uid)
        .gid(uid)
        .output()
        .expect("run probe-client");
    assert!(
        out.status.success(),
        "probe-client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
