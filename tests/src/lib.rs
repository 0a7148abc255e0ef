//! Helpers for the cross-crate integration tests in `tests/tests/`: an
//! energyd started *in-process* (its library on a runtime thread, serving
//! a temporary socket, as mini-redis's tests start their server), the
//! `probe-client` run under other uids, the lookup of other packages'
//! binaries, and a small search space and a synthetic calibration ([`fixtures`]).
//!
//! No test runs `cargo`: a nested build from inside a test recompiled
//! whatever the outer build had not built with the same features and
//! profile (146 s for a 2 s test). Tests that need the real `energyd` or
//! `energyctl` process (signals, socket activation, the command lines)
//! live in the energyd package (`energyd/tests/processes.rs`), where
//! cargo builds those binaries for them (`CARGO_BIN_EXE_*`).

pub mod fixtures;

use energyd::config::Config;
use energyd::daemon;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::JoinHandle;
use std::time::Duration;

/// Directory holding the workspace's built binaries (`target/debug`):
/// test executables live in `target/<profile>/deps/`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable under target/<profile>/deps")
        .to_path_buf()
}

/// Path of the binary `name` of *another* workspace package, next to the
/// test executable. Cargo builds a package's binaries whenever it builds
/// that package's integration tests, so `cargo test --workspace` (the
/// README's command) has built them, up to date, before any test runs.
/// Run alone (`cargo test -p integration-tests`), build them first
/// (`cargo build -p PACKAGE --bins`); a missing one fails with that advice.
pub fn workspace_bin(package: &str, name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds \
         every package's binaries first, or build it with `cargo build -p {package} --bins`",
        path.display()
    );
    path
}

/// Whether this process runs as root. Tests that start processes under
/// other uids need it; they print why they skip otherwise (CI runs as root).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Prints why a root-only test does nothing here and returns true when not
/// root: `if skip_unless_root("…") { return; }`.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("SKIPPED {test}: needs root to run clients under other uids (CI runs as root)");
    true
}

/// An energyd served from this process on a temporary socket; stopped (as
/// by SIGTERM: connections told to finish, samplers stopped, socket file
/// removed) on drop.
pub struct Daemon {
    /// Its socket.
    pub socket: PathBuf,
    /// Temporary directory holding the socket and any fixtures.
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
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
    /// Starts energyd in user mode with `config` (TOML text): binds the
    /// socket, opens the sources, serves on a runtime thread of its own,
    /// and returns once the samplers have taken their first samples.
    pub fn start(config: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        // Other uids must be able to reach the socket inside.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let socket = dir.path().join("energyd.sock");
        let config = Config::parse(config).expect("test config parses");
        // Bound before serving: connections made from now on wait in the
        // backlog until the server accepts them.
        let bound =
            daemon::open_socket(&config, true, Some(socket.clone())).expect("bind the socket");
        let state = daemon::build_state(config, true).expect("open the sources");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = std::thread::Builder::new()
            .name("energyd-in-process".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                runtime.block_on(daemon::serve(bound, state, async {
                    let _ = stopped.await;
                }))
            })
            .expect("spawn the server thread");
        // Let the samplers take a few samples before tests query.
        std::thread::sleep(Duration::from_millis(150));
        Daemon {
            socket,
            dir,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// A connected, handshaken client.
    pub fn client(&self) -> shared::client::Client {
        shared::client::Client::connect(&self.socket, "integration-test")
            .expect("connect to energyd")
    }

    /// Stops serving as SIGTERM would and returns how serving ended.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.server.take() {
            Some(server) => server
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the server thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// An unprivileged uid that exists on Debian (`nobody`).
pub const NOBODY: u32 = 65534;
/// A second unprivileged uid; it needs no passwd entry to run a process.
pub const OTHER_UID: u32 = 65533;

/// Runs `probe_client SOCKET ARGS…` as `uid` (and gid `uid`) and returns
/// its one-line answer (`ok …` or `error CODE message`). `probe_client` is
/// this package's binary: `env!("CARGO_BIN_EXE_probe-client")` in a test.
pub fn probe(probe_client: &str, socket: &Path, uid: u32, args: &[&str]) -> String {
    use std::os::unix::process::CommandExt;
    let out = Command::new(probe_client)
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
