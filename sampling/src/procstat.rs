//! Machine-wide CPU time from `<proc_root>/stat`, read through one open file
//! descriptor (pread at offset 0) and parsed with `procfs`. Shared by the
//! estimated CPU power source and the activity tracker. Also
//! [`PidStatFile`]: one process's `<proc_root>/<pid>/stat` kept open and
//! re-read the same way, for the tracker's per-sample reads.

use procfs::{CpuTime, FromBufReadSI, KernelStats};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Reading `/proc/stat` failed.
#[derive(Debug, Error)]
pub enum ProcStatError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The content is not a `/proc/stat` table.
    #[error("cannot parse {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// Machine-wide CPU time at one instant (cumulative since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MachineCpuTime {
    /// CPU time spent running anything (user, nice, system, irq, softirq).
    pub busy_ns: u64,
    /// All CPU time: busy plus idle, iowait and steal.
    pub total_ns: u64,
    /// CPUs listed (online CPUs).
    pub cpus: u32,
}

/// Nanoseconds per kernel clock tick (`USER_HZ`, 100 on most systems).
pub fn ns_per_tick() -> u64 {
    1_000_000_000 / procfs::ticks_per_second().max(1)
}

fn busy_ticks(c: &CpuTime) -> u64 {
    // guest time is already included in user time, so it is not added.
    c.user + c.nice + c.system + c.irq.unwrap_or(0) + c.softirq.unwrap_or(0)
}

fn total_ticks(c: &CpuTime) -> u64 {
    busy_ticks(c) + c.idle + c.iowait.unwrap_or(0) + c.steal.unwrap_or(0)
}

/// Reader of `<proc_root>/stat` that keeps the file open between reads.
#[derive(Debug)]
pub struct ProcStatReader {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    ns_per_tick: u64,
}

impl ProcStatReader {
    /// Opens `<proc_root>/stat`.
    pub fn open(proc_root: &Path) -> Result<Self, ProcStatError> {
        let path = proc_root.join("stat");
        let file = File::open(&path).map_err(|source| ProcStatError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            path,
            file,
            buf: Vec::with_capacity(16 * 1024),
            ns_per_tick: ns_per_tick(),
        })
    }

    /// Reads the whole file again from offset 0 (procfs regenerates it on
    /// each read from the start).
    fn read_all(&mut self) -> Result<(), ProcStatError> {
        self.buf.clear();
        let mut chunk = [0u8; 8192];
        loop {
            let offset = self.buf.len() as u64;
            let n = self
                .file
                .read_at(&mut chunk, offset)
                .map_err(|source| ProcStatError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            if n == 0 {
                return Ok(());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads machine CPU time now.
    pub fn read(&mut self) -> Result<MachineCpuTime, ProcStatError> {
        self.read_all()?;
        let stats = KernelStats::from_buf_read(&self.buf[..], procfs::current_system_info())
            .map_err(|e| ProcStatError::Parse {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        let t = &stats.total;
        Ok(MachineCpuTime {
            busy_ns: busy_ticks(t) * self.ns_per_tick,
            total_ns: total_ticks(t) * self.ns_per_tick,
            cpus: stats.cpu_time.len() as u32,
        })
    }
}

/// The fields of `/proc/<pid>/stat` the activity tracker uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidStat {
    /// State letter (`R`, `S`, `Z`, ...).
    pub state: char,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Threads in the process.
    pub num_threads: u64,
    /// Start time after boot, in clock ticks (identifies the process
    /// across pid reuse).
    pub start_ticks: u64,
}

impl PidStat {
    /// Whether the process has exited (zombie or dead).
    pub fn exited(&self) -> bool {
        self.state == 'Z' || self.state == 'X'
    }

    /// Parses one `stat` line. The command name (field 2) may hold spaces
    /// and parentheses, so fields are counted from the last `)`.
    pub fn parse(line: &str) -> Option<PidStat> {
        let rest = &line[line.rfind(')')? + 1..];
        // Field 3 (state) is index 0 here; field N is index N - 3.
        let mut fields = rest.split_ascii_whitespace();
        let state = fields.next()?.chars().next()?;
        let mut fields = fields.skip(10); // fields 4..=13
        let utime: u64 = fields.next()?.parse().ok()?; // 14
        let stime: u64 = fields.next()?.parse().ok()?; // 15
        let mut fields = fields.skip(4); // 16..=19
        let num_threads: u64 = fields.next()?.parse().ok()?; // 20
        let start_ticks: u64 = fields.nth(1)?.parse().ok()?; // 22
        Some(PidStat {
            state,
            cpu_ticks: utime + stime,
            num_threads,
            start_ticks,
        })
    }
}

/// `<proc_root>/<pid>/stat` kept open: each read is one `pread` at offset
/// 0, no path lookup. The open file stays bound to the process it was
/// opened for: once that process is reaped, reads fail (ESRCH) even if its
/// pid is reused, so a failed read means "gone".
#[derive(Debug)]
pub struct PidStatFile {
    file: File,
    buf: [u8; 1024],
}

impl PidStatFile {
    /// Opens the stat file of `pid`.
    pub fn open(proc_root: &Path, pid: u32) -> std::io::Result<Self> {
        Ok(Self {
            file: File::open(proc_root.join(pid.to_string()).join("stat"))?,
            buf: [0; 1024],
        })
    }

    /// Reads the process's stat now; `None` once it is gone or unreadable.
    pub fn read(&mut self) -> Option<PidStat> {
        // The line is well under 1 KiB (the command name is at most 64 bytes).
        let n = self.file.read_at(&mut self.buf, 0).ok()?;
        PidStat::parse(std::str::from_utf8(&self.buf[..n]).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_real_proc_stat() {
        let mut r = ProcStatReader::open(Path::new("/proc")).unwrap();
        let a = r.read().unwrap();
        assert!(a.cpus >= 1);
        assert!(a.total_ns > a.busy_ns);
        let b = r.read().unwrap();
        assert!(b.total_ns >= a.total_ns);
    }

    #[test]
    fn parses_fixture_and_reports_bad_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("stat"),
            "cpu  100 0 50 800 10 0 0 0 0 0\ncpu0 50 0 25 400 5 0 0 0 0 0\ncpu1 50 0 25 400 5 0 0 0 0 0\nintr 0\nctxt 10\nbtime 1\nprocesses 5\n",
        )
        .unwrap();
        let t = ProcStatReader::open(dir.path()).unwrap().read().unwrap();
        assert_eq!(t.cpus, 2);
        assert_eq!(t.busy_ns, 150 * ns_per_tick());
        assert_eq!(t.total_ns, 960 * ns_per_tick());
        std::fs::write(dir.path().join("stat"), "garbage\n").unwrap();
        let err = ProcStatReader::open(dir.path())
            .unwrap()
            .read()
            .unwrap_err();
        assert!(err.to_string().contains("stat"), "{err}");
        assert!(ProcStatReader::open(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn pid_stat_parses_odd_names_and_reads_our_own_process() {
        let line = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 5 0 12345 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        let s = PidStat::parse(line).unwrap();
        assert_eq!(
            s,
            PidStat {
                state: 'S',
                cpu_ticks: 10,
                num_threads: 5,
                start_ticks: 12345
            }
        );
        assert!(PidStat::parse("42 (truncated").is_none());
        let mut own = PidStatFile::open(Path::new("/proc"), std::process::id()).unwrap();
        let me = own.read().unwrap();
        assert!(!me.exited());
        assert!(me.num_threads >= 1);
        let again = own.read().unwrap();
        assert_eq!(again.start_ticks, me.start_ticks);
    }
}
