//! Per-process GPU activity, for splitting a GPU's energy between processes.
//!
//! NVML reports, per device, per-process utilisation samples: the share of
//! the driver's last sample window in which a kernel of that process ran on
//! the streaming multiprocessors. A thread polls every device at a fixed
//! period and turns those samples into cumulative *busy ns* per process
//! (elapsed time since the previous poll × the process's mean SM
//! utilisation over the samples that arrived), plus the device's total
//! (the sum over processes). Breakdowns read these cumulative series like
//! the CPU ones: a process's share of a GPU's dynamic energy is its share of
//! the device's busy time; its share of static energy is its busy time over
//! the device's wall-clock capacity.
//!
//! Processes are recognised as members of a tracked tree by their ancestry,
//! recorded from `/proc/<pid>/stat` when NVML first shows them (a process
//! that has exited by then cannot be placed, and is counted as the rest of
//! the machine).
//!
//! Limits: NVML's per-process samples have the driver's own period
//! (~1/6 s on recent GPUs) and granularity (whole percent of SM time); a
//! process using the GPU less than the sample window may be missed. These
//! figures are activity shares, never energy on their own.

use sampling::nvml::GpuProvider;
use shared::MonotonicNs;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// Settings of the GPU activity poller.
#[derive(Debug, Clone)]
pub struct GpuActivityConfig {
    /// Poll period.
    pub period_ns: u64,
    /// How far back the history reaches.
    pub history_window_ns: u64,
    /// procfs root, for process ancestry.
    pub proc_root: PathBuf,
}

/// One poll of one device: cumulative busy ns of the device and of every
/// process seen so far on it.
#[derive(Debug, Clone)]
struct Snapshot {
    t: MonotonicNs,
    device_busy_ns: f64,
    per_pid_busy_ns: HashMap<u32, f64>,
}

#[derive(Debug, Default)]
struct DeviceHistory {
    /// Driver timestamp (µs) of the newest sample consumed.
    last_sample_us: u64,
    snapshots: VecDeque<Snapshot>,
    /// Ancestry (pid first, then parent, ... up to 1) of every pid seen.
    ancestry: HashMap<u32, Vec<u32>>,
}

/// Cumulative activity series of one GPU over an interval, as attribution
/// takes them: `(t, ns)` samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuSeries {
    /// Busy ns of the whole device (sum over its processes).
    pub device_busy: Vec<(MonotonicNs, f64)>,
    /// Wall-clock capacity ns of the device (one device: elapsed time).
    pub capacity: Vec<(MonotonicNs, f64)>,
    /// Busy ns of the tracked process tree.
    pub process_busy: Vec<(MonotonicNs, f64)>,
}

struct Inner {
    provider: Arc<dyn GpuProvider>,
    config: GpuActivityConfig,
    capacity: usize,
    stop: AtomicBool,
    devices: RwLock<HashMap<u32, DeviceHistory>>,
}

/// Polls per-process GPU utilisation on its own thread.
pub struct GpuActivity {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for GpuActivity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuActivity")
            .field("devices", &self.devices())
            .finish()
    }
}

impl GpuActivity {
    /// Starts polling `devices` of `provider` on a thread.
    pub fn start(
        provider: Arc<dyn GpuProvider>,
        devices: Vec<u32>,
        config: GpuActivityConfig,
    ) -> GpuActivity {
        let period = config.period_ns.max(1_000_000);
        let activity = GpuActivity::unstarted(provider, devices, config);
        let worker = Arc::clone(&activity.inner);
        let thread = std::thread::Builder::new()
            .name("gpu-activity".into())
            .spawn(move || {
                while !worker.stop.load(Ordering::Relaxed) {
                    worker.poll(MonotonicNs::now());
                    std::thread::sleep(Duration::from_nanos(period));
                }
            })
            .map_err(|e| tracing::warn!(error = %e, "cannot start the GPU activity thread"))
            .ok();
        *activity
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = thread;
        activity
    }

    /// The poller without its thread: polls are driven by [`Self::poll_at`].
    pub fn unstarted(
        provider: Arc<dyn GpuProvider>,
        devices: Vec<u32>,
        config: GpuActivityConfig,
    ) -> GpuActivity {
        let period = config.period_ns.max(1_000_000);
        let capacity = (config.history_window_ns / period).clamp(16, 1 << 20) as usize;
        GpuActivity {
            inner: Arc::new(Inner {
                provider,
                capacity,
                stop: AtomicBool::new(false),
                devices: RwLock::new(
                    devices
                        .into_iter()
                        .map(|d| (d, DeviceHistory::default()))
                        .collect(),
                ),
                config,
            }),
            thread: Mutex::new(None),
        }
    }

    /// Devices polled.
    pub fn devices(&self) -> Vec<u32> {
        let mut d: Vec<u32> = self.inner.read().keys().copied().collect();
        d.sort_unstable();
        d
    }

    /// One poll at `now` (what the thread does each period). Polls must
    /// come in time order.
    pub fn poll_at(&self, now: MonotonicNs) {
        self.inner.poll(now);
    }

    /// Activity of device `index` over `[from, to]` (with the snapshots
    /// just outside), the process being `root` and, if `include_children`,
    /// every process whose recorded ancestry contains `root`.
    pub fn series(
        &self,
        index: u32,
        root: u32,
        include_children: bool,
        from: MonotonicNs,
        to: MonotonicNs,
    ) -> Option<GpuSeries> {
        let devices = self.inner.read();
        let dev = devices.get(&index)?;
        let member = |pid: &u32| {
            *pid == root
                || (include_children
                    && dev
                        .ancestry
                        .get(pid)
                        .is_some_and(|chain| chain.contains(&root)))
        };
        let snaps = &dev.snapshots;
        let first = snaps.partition_point(|s| s.t < from).saturating_sub(1);
        let last = snaps.partition_point(|s| s.t <= to).min(snaps.len());
        let last = (last + 1).min(snaps.len());
        let window = snaps.range(first..last);
        let mut out = GpuSeries::default();
        let t0 = window.clone().next()?.t;
        for s in window {
            out.device_busy.push((s.t, s.device_busy_ns));
            out.capacity.push((s.t, s.t.saturating_sub(t0) as f64));
            let busy: f64 = s
                .per_pid_busy_ns
                .iter()
                .filter(|(pid, _)| member(pid))
                .map(|(_, ns)| ns)
                .sum();
            out.process_busy.push((s.t, busy));
        }
        Some(out)
    }

    /// Stops and joins the thread. Idempotent.
    pub fn shutdown(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for GpuActivity {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Inner {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u32, DeviceHistory>> {
        self.devices.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn poll(&self, now: MonotonicNs) {
        let indices: Vec<u32> = self.read().keys().copied().collect();
        for index in indices {
            let since = self.read().get(&index).map_or(0, |d| d.last_sample_us);
            // An error (no process data yet, a transient driver failure)
            // counts as no activity in this poll: the series keep going.
            let samples = self
                .provider
                .process_utilization(index, since)
                .unwrap_or_default();
            let mut devices = self.devices.write().unwrap_or_else(PoisonError::into_inner);
            let Some(dev) = devices.get_mut(&index) else {
                continue;
            };
            // Mean SM utilisation per process over the new samples.
            let mut per_pid: HashMap<u32, (f64, u32)> = HashMap::new();
            for s in samples.iter().filter(|s| s.timestamp_us > since) {
                let e = per_pid.entry(s.pid).or_default();
                e.0 += f64::from(s.sm_percent.min(100));
                e.1 += 1;
                dev.last_sample_us = dev.last_sample_us.max(s.timestamp_us);
            }
            let (prev_t, mut busy, mut per_pid_busy) = match dev.snapshots.back() {
                Some(s) => (Some(s.t), s.device_busy_ns, s.per_pid_busy_ns.clone()),
                None => (None, 0.0, HashMap::new()),
            };
            if let Some(prev_t) = prev_t {
                let elapsed = now.saturating_sub(prev_t) as f64;
                for (pid, (sum, n)) in &per_pid {
                    let ns = elapsed * sum / f64::from(*n) / 100.0;
                    *per_pid_busy.entry(*pid).or_default() += ns;
                    busy += ns;
                }
            }
            for pid in per_pid.keys() {
                if !dev.ancestry.contains_key(pid) {
                    let chain = ancestry(&self.config.proc_root, *pid);
                    dev.ancestry.insert(*pid, chain);
                }
            }
            if dev.snapshots.len() >= self.capacity {
                if let Some(old) = dev.snapshots.pop_front() {
                    // Forget pids that no longer change and are out of the
                    // history, so the map cannot grow without bound.
                    per_pid_busy.retain(|pid, ns| {
                        per_pid.contains_key(pid) || old.per_pid_busy_ns.get(pid) != Some(ns)
                    });
                }
            }
            dev.snapshots.push_back(Snapshot {
                t: now,
                device_busy_ns: busy,
                per_pid_busy_ns: per_pid_busy,
            });
        }
    }
}

/// `pid`, its parent, grandparent, ... up to init, from procfs (empty if
/// `pid` is already gone).
fn ancestry(proc_root: &Path, pid: u32) -> Vec<u32> {
    let mut chain = Vec::new();
    let mut current = pid;
    while current > 1 && chain.len() < 64 {
        chain.push(current);
        let Ok(stat) = std::fs::read_to_string(proc_root.join(current.to_string()).join("stat"))
        else {
            break;
        };
        // Field 4 (ppid) follows the parenthesised command name.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            break;
        };
        match after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            Some(ppid) => current = ppid,
            None => break,
        }
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;
    use sampling::nvml::{GpuDeviceInfo, GpuError, GpuProcessUtilization};

    /// A GPU whose per-process samples the test queues.
    struct QueuedGpu {
        queue: Mutex<Vec<GpuProcessUtilization>>,
    }

    impl GpuProvider for QueuedGpu {
        fn device_count(&self) -> Result<u32, GpuError> {
            Ok(1)
        }
        fn device_info(&self, _: u32) -> Result<GpuDeviceInfo, GpuError> {
            Err(GpuError::NotSupported("test".into()))
        }
        fn total_energy_mj(&self, _: u32) -> Result<u64, GpuError> {
            Err(GpuError::NotSupported("test".into()))
        }
        fn power_usage_mw(&self, _: u32) -> Result<u32, GpuError> {
            Err(GpuError::NotSupported("test".into()))
        }
        fn instant_power_mw(&self, _: u32) -> Result<u32, GpuError> {
            Err(GpuError::NotSupported("test".into()))
        }
        fn process_utilization(
            &self,
            _: u32,
            since_us: u64,
        ) -> Result<Vec<GpuProcessUtilization>, GpuError> {
            let q = self.queue.lock().unwrap();
            Ok(q.iter()
                .filter(|s| s.timestamp_us > since_us)
                .copied()
                .collect())
        }
    }

    fn sample(pid: u32, ts: u64, sm: u32) -> GpuProcessUtilization {
        GpuProcessUtilization {
            pid,
            timestamp_us: ts,
            sm_percent: sm,
            memory_percent: 0,
        }
    }

    #[test]
    fn busy_time_accumulates_per_process_tree_and_device() {
        let proc_dir = tempfile::tempdir().unwrap();
        // 200 is the tracked root; 201 its child; 300 a stranger.
        for (pid, ppid) in [(200u32, 1u32), (201, 200), (300, 1)] {
            let d = proc_dir.path().join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("stat"), format!("{pid} (x y) S {ppid} 0 0\n")).unwrap();
        }
        let gpu = Arc::new(QueuedGpu {
            queue: Mutex::new(Vec::new()),
        });
        let activity = GpuActivity::unstarted(
            gpu.clone(),
            vec![0],
            GpuActivityConfig {
                period_ns: 100_000_000,
                history_window_ns: 600_000_000_000,
                proc_root: proc_dir.path().to_owned(),
            },
        );
        let t = |ms: u64| MonotonicNs(1_000_000_000_000 + ms * 1_000_000);
        activity.poll_at(t(0));
        gpu.queue.lock().unwrap().extend([
            sample(200, 10, 50),
            sample(201, 10, 20),
            sample(300, 10, 30),
        ]);
        activity.poll_at(t(100));
        // A second window: only the stranger.
        gpu.queue.lock().unwrap().push(sample(300, 20, 100));
        activity.poll_at(t(300));

        let tree = activity.series(0, 200, true, t(0), t(300)).unwrap();
        let last = |v: &Vec<(MonotonicNs, f64)>| v.last().unwrap().1;
        let first = |v: &Vec<(MonotonicNs, f64)>| v.iter().find(|(ts, _)| *ts == t(0)).unwrap().1;
        let ms = 1_000_000.0;
        // Tree: 100 ms × (50% + 20%) = 70 ms.
        assert!((last(&tree.process_busy) - first(&tree.process_busy) - 70.0 * ms).abs() < 1.0);
        // Device: 100 ms × 100% + 200 ms × 100% = 300 ms.
        assert!((last(&tree.device_busy) - first(&tree.device_busy) - 300.0 * ms).abs() < 1.0);
        // Capacity is wall-clock time.
        assert!((last(&tree.capacity) - first(&tree.capacity) - 300.0 * ms).abs() < 1.0);
        // Without children, only the root's 50 ms.
        let root_only = activity.series(0, 200, false, t(0), t(300)).unwrap();
        assert!(
            (last(&root_only.process_busy) - first(&root_only.process_busy) - 50.0 * ms).abs()
                < 1.0
        );
        // An unknown device has no series.
        assert!(activity.series(7, 200, true, t(0), t(300)).is_none());
        activity.shutdown();
    }
}
