//! A throw-away PostgreSQL server for tests: `initdb` into a temporary
//! directory, a free TCP port on 127.0.0.1, the Unix socket in that
//! directory (never the system's), trust authentication (plus one role that
//! must give a password, for the login-failure test), stopped when dropped
//! (also when a test panics).
//!
//! The server binaries come from `$PG_BIN`, else the newest
//! `/usr/lib/postgresql/*/bin` (Debian, Ubuntu), else `initdb` on `PATH`.
//! `initdb` and `postgres` refuse to run as root: as root the server runs
//! as `nobody` (through `setpriv`, else `runuser`), owning its directory.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The role that must log in with [`PASSWORD_ROLE_SECRET`].
pub const PASSWORD_ROLE: &str = "pw_user";
/// Its password.
pub const PASSWORD_ROLE_SECRET: &str = "right-password";

/// A running server; stopped on drop.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`, if any.
pub fn server_binaries() -> Option<PathBuf> {
    let has = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(d) = std::env::var_os("PG_BIN").map(PathBuf::from) {
        return has(&d).then_some(d);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has(d))
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return Some(d);
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|d| has(d))
}

fn euid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX)
}

/// uid and gid of `nobody`.
fn nobody() -> (u32, u32) {
    let out = Command::new("getent")
        .args(["passwd", "nobody"])
        .output()
        .expect("getent passwd nobody");
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let f: Vec<&str> = line.trim().split(':').collect();
    assert!(
        f.len() >= 4,
        "no `nobody` user to run PostgreSQL as (getent: {line:?})"
    );
    (f[2].parse().expect("uid"), f[3].parse().expect("gid"))
}

impl PgServer {
    /// Starts a server, or prints why not and returns `None` when the
    /// server binaries are not installed (the only reason to skip).
    pub fn start() -> Option<PgServer> {
        let Some(bin) = server_binaries() else {
            eprintln!(
                "SKIPPED: PostgreSQL server binaries (initdb, pg_ctl) not found in $PG_BIN, \
                 /usr/lib/postgresql/*/bin or PATH; install the distribution's `postgresql` \
                 package (.ci/run does) to run the PostgreSQL study tests"
            );
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("nas-pg-")
            .tempdir()
            .expect("temporary directory");
        let run_as = (euid() == 0).then(nobody);
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let mut server = PgServer {
            dir,
            bin,
            port: 0,
            run_as,
        };
        server.init();
        // A port free now may be taken before the server binds it: retry.
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.try_start() {
                Ok(()) => {
                    server.create_password_role();
                    return Some(server);
                }
                Err(e) => last = e,
            }
        }
        panic!("PostgreSQL did not start: {last}");
    }

    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        match self.run_as {
            None => Command::new(exe),
            Some((uid, gid)) => {
                let mut c = if Path::new("/usr/bin/setpriv").exists()
                    || Path::new("/bin/setpriv").exists()
                {
                    let mut c = Command::new("setpriv");
                    c.arg(format!("--reuid={uid}"))
                        .arg(format!("--regid={gid}"))
                        .arg("--clear-groups")
                        .arg("--");
                    c
                } else {
                    let mut c = Command::new("runuser");
                    c.args(["-u", "nobody", "--"]);
                    c
                };
                c.arg(exe);
                c
            }
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn init(&self) {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.data())
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "--locale=C",
                "--encoding=UTF8",
            ])
            .env("HOME", self.dir.path())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let hba = format!(
            "local all all trust\n\
             host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n\
             host all all 127.0.0.1/32 trust\n"
        );
        std::fs::write(self.data().join("pg_hba.conf"), hba).expect("write pg_hba.conf");
    }

    fn try_start(&self) -> Result<(), String> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "-o", &opts, "start"])
            .output()
            .map_err(|e| format!("pg_ctl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            Err(format!(
                "{}{}{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn create_password_role(&self) {
        let mut admin = postgres::Client::connect(&self.admin_url(), postgres::NoTls)
            .expect("connect as postgres");
        admin
            .batch_execute(&format!(
                "CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD_ROLE_SECRET}'"
            ))
            .expect("create role");
    }

    fn admin_url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates database `name` and returns its URL (superuser `postgres`,
    /// trusted).
    pub fn database(&self, name: &str) -> String {
        let mut admin = postgres::Client::connect(&self.admin_url(), postgres::NoTls)
            .expect("connect as postgres");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        format!("postgresql://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs SQL as the superuser in database `db`.
    pub fn execute(&self, db: &str, sql: &str) {
        let url = format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port);
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        c.batch_execute(sql).expect("execute");
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
