//! Machine-wide CPU time from `<proc_root>/stat`, read through one open file
//! descriptor (pread at offset 0) and parsed with `procfs`. Shared by the
//! estimated CPU power source and the activity tracker.

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
}
