//! The real `energyd` binary on a temporary socket, and `energyctl`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The daemon binary cargo built for these tests.
pub const ENERGYD: &str = env!("CARGO_BIN_EXE_energyd");
/// The client binary cargo built for these tests.
pub const ENERGYCTL: &str = env!("CARGO_BIN_EXE_energyctl");

/// A config that makes the daemon use a simulated constant-power source
/// (plus whatever it discovers).
pub const SIMULATED_CONFIG: &str = r#"
[sources]
powercap_root = "/nonexistent-powercap"
msr_root = "/nonexistent-msr"
nvml = false

[sources.simulated]
curve = { shape = "constant", watts = 50.0 }
"#;

/// A running `energyd --user` on a temporary socket; killed on drop.
pub struct Daemon {
    /// The process.
    pub child: Child,
    /// Its socket.
    pub socket: PathBuf,
    /// Temporary directory holding socket, config and fixtures.
    pub dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `energyd --user` with `config` (TOML text) and `extra` args,
    /// and waits until its socket accepts connections.
    pub fn start(config: &str, extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let socket = dir.path().join("energyd.sock");
        let config_path = dir.path().join("energyd.toml");
        std::fs::write(&config_path, config).expect("write config");
        let child = Command::new(ENERGYD)
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
        shared::client::Client::connect(&self.socket, "energyd-process-test")
            .expect("connect to energyd")
    }

    /// `energyctl --socket SOCKET`, arguments still to add.
    pub fn energyctl(&self) -> Command {
        let mut c = Command::new(ENERGYCTL);
        c.arg("--socket").arg(&self.socket);
        c
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
