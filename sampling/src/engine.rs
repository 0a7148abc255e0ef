//! The sampling engine: dedicated OS threads that read every source at its
//! period, stamp each reading with CLOCK_MONOTONIC, and append it to the
//! source's [`EnergyHistory`]; plus the queries the daemon answers from
//! those histories.
//!
//! Architecture invariants:
//! - Sampling never runs on an async runtime: one OS thread per distinct
//!   period (sources with the same period share a thread, read one after
//!   the other).
//! - Scheduling is drift-free: each thread sleeps to an absolute deadline
//!   (`clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`), and the next
//!   deadline is the previous one plus the period, so sleep errors do not
//!   accumulate. A deadline already past when the thread wakes is skipped
//!   (never made up by a burst of reads) and counted as an overrun.
//! - A reading's timestamp is the midpoint of the clock read just before and
//!   just after the `sample()` call.
//! - Readers hold a source's history lock only for a binary search and a few
//!   arithmetic operations; the writer holds it for one push.
//! - No wrapping counter is read less often than twice per wrap at
//!   [`crate::counter::MAX_PLAUSIBLE_POWER_W`]: a longer configured period
//!   is shortened at start (with a warning), so a second wrap between two
//!   reads cannot happen.
//! - Timing quality is measured, not assumed: [`SamplingEngine::timing`]
//!   gives percentiles of the sample interval error from the timestamps in
//!   the history, at query time, so the sampling loop pays nothing for it.

use crate::history::{EnergyHistory, IntervalEnergy};
use crate::source::{Reading, SampleError, Sampler};
use shared::source::SourceStats;
use shared::{MonotonicNs, SourceId, SourceInfo};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;

/// Longest single sleep, so that `shutdown` is seen within this time even
/// for sources with long periods.
const MAX_SLEEP_SLICE_NS: u64 = 50_000_000;

/// Window over which the achieved sampling rate is measured.
const RATE_WINDOW_NS: u64 = 1_000_000_000;

/// A cumulative energy counter that has not moved for this long is
/// *stuck*: every domain we read draws power all the time (a package's
/// idle floor is watts, RAPL refreshes every millisecond, NVML every
/// ~100 ms), so two seconds without a single step is a broken or
/// unsupported counter, not a quiet machine. Its figures are then not
/// measurements (answers downgrade `Measured` to `Estimated`).
pub const STUCK_AFTER_NS: u64 = 2_000_000_000;

/// Glitch times kept per source for the answers that cover them.
const GLITCH_TIMES_KEPT: usize = 1024;

/// What the engine knows about a counter's trustworthiness over an
/// interval (see [`SamplingEngine::health`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CounterHealth {
    /// Glitches re-based within the interval.
    pub glitches: u64,
    /// The counter is stuck now.
    pub stuck: bool,
}

impl CounterHealth {
    /// The provenance an answer over the interval may claim: a measured
    /// figure that includes a re-based glitch, or comes from a stuck
    /// counter, is an estimate.
    pub fn provenance(&self, base: shared::Provenance) -> shared::Provenance {
        if self.glitches > 0 || self.stuck {
            base.combine(shared::Provenance::Estimated)
        } else {
            base
        }
    }
}

/// Screens one source's cumulative readings for glitches (owned by its
/// sampling thread). A step larger than [`crate::counter::MAX_PLAUSIBLE_POWER_W`]
/// over the time since the counter last moved (plus one hardware update
/// period), or larger than half the counter's range (the engine reads every
/// counter at least twice per wrap, so no honest step is that large), or a
/// step backwards, cannot be energy: it is a glitch (a counter that stepped
/// back by a few millijoules is taken by the wrap logic for a wrap of the
/// whole range). It is re-based: the reading is replaced by the power seen
/// before it over the same time, and later readings are shifted by the
/// difference, so one bad read costs at most one sample's estimate.
#[derive(Debug, Clone, Default)]
struct GlitchFilter {
    range_j: Option<f64>,
    update_period_ns: u64,
    /// (t, raw cumulative J) of the previous reading.
    last: Option<(u64, f64)>,
    /// When the raw counter last moved.
    last_change_ns: u64,
    /// Power between the last two changes, for re-basing.
    last_power_w: f64,
    /// Sum of re-based steps, subtracted from raw readings.
    offset_j: f64,
}

impl GlitchFilter {
    /// The corrected cumulative value and whether this reading was a glitch.
    fn screen(&mut self, t_ns: u64, raw_j: f64) -> (f64, bool) {
        let Some((last_t, last_j)) = self.last else {
            self.last = Some((t_ns, raw_j));
            self.last_change_ns = t_ns;
            return (raw_j, false);
        };
        let delta = raw_j - last_j;
        let since_change_ns = t_ns.saturating_sub(self.last_change_ns) + self.update_period_ns;
        let power_bound_j = crate::counter::MAX_PLAUSIBLE_POWER_W * since_change_ns as f64 * 1e-9;
        let glitch = !delta.is_finite()
            || delta < 0.0
            || delta > power_bound_j
            || self.range_j.is_some_and(|r| delta > r / 2.0);
        if glitch {
            let estimate = self.last_power_w * t_ns.saturating_sub(last_t) as f64 * 1e-9;
            self.offset_j += if delta.is_finite() { delta } else { 0.0 } - estimate;
            if estimate > 0.0 {
                self.last_change_ns = t_ns;
            }
        } else if delta > 0.0 {
            let dt_ns = t_ns.saturating_sub(self.last_change_ns).max(1);
            self.last_power_w = delta / (dt_ns as f64 * 1e-9);
            self.last_change_ns = t_ns;
        }
        self.last = Some((t_ns, if raw_j.is_finite() { raw_j } else { last_j }));
        let corrected = self.last.map_or(raw_j, |(_, j)| j) - self.offset_j;
        (corrected, glitch)
    }
}

/// A source and the period to sample it at.
pub struct ConfiguredSource {
    /// The source.
    pub sampler: Box<dyn Sampler>,
    /// Sampling period.
    pub period_ns: u64,
}

impl std::fmt::Debug for ConfiguredSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfiguredSource")
            .field("source", &self.sampler.descriptor().name)
            .field("period_ns", &self.period_ns)
            .finish()
    }
}

/// Engine settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// How far back each source's history reaches. Default 10 minutes
    /// (606 003 samples × 16 B ≈ 9.25 MiB for a 1 kHz source, with the
    /// ring's 1 % headroom).
    pub history_window_ns: u64,
    /// `SCHED_FIFO` priority of the sampling threads, or `None` for the
    /// normal scheduler. Default `Some(1)`, the lowest real-time priority:
    /// a sampling thread then preempts ordinary work when its deadline
    /// comes (on a loaded machine a normal thread can wait milliseconds for
    /// a core, turning deadlines into overruns), yet yields to any other
    /// real-time task. It runs a few µs per period, so it cannot starve a
    /// core, and the kernel's real-time throttling bounds it regardless.
    /// Setting it needs root or CAP_SYS_NICE; without them the thread keeps
    /// the normal scheduler and says so in the log.
    pub fifo_priority: Option<i32>,
    /// A cumulative counter that has not moved for this long is stuck.
    /// Default [`STUCK_AFTER_NS`].
    pub stuck_after_ns: u64,
    /// Adaptive sampling: while no one needs full resolution (see
    /// [`RateDemand`]), every source is read at this longer period instead
    /// of its own. Default `None`: always the full rate (library users and
    /// tests); energyd sets it from `[sampling] idle_period_ms`.
    pub idle_period_ns: Option<u64>,
}

/// Whether anyone needs samples at the full rate now: a tracked process, a
/// live subscription (holders), or a query in the last `hold` (touched).
/// Shared by the daemon, which reports demand, and the sampling threads,
/// which read at the full period while there is demand and at the idle
/// period otherwise, waking at once when demand appears.
///
/// History stays correct across rate changes: every sample lands in the
/// same cumulative series, so an interval is still the difference of the
/// interpolated series at its ends; over stretches sampled at the idle
/// period the interpolation gap is longer, and the answer's uncertainty
/// (which grows with the gap around each end) says so.
#[derive(Debug, Default)]
pub struct RateDemand {
    hold_until_ns: AtomicU64,
    holders: AtomicU64,
    wake: (Mutex<u64>, std::sync::Condvar),
}

/// One holder of [`RateDemand`]; the demand ends when the last is dropped.
#[derive(Debug)]
pub struct DemandGuard(Arc<RateDemand>);

impl Drop for DemandGuard {
    fn drop(&mut self) {
        self.0.holders.fetch_sub(1, Ordering::SeqCst);
    }
}

impl RateDemand {
    /// Full rate until at least `now + hold_ns`.
    pub fn touch(&self, now: MonotonicNs, hold_ns: u64) {
        let until = now.as_ns().saturating_add(hold_ns);
        let before = self.hold_until_ns.fetch_max(until, Ordering::SeqCst);
        if before < now.as_ns() && self.holders.load(Ordering::SeqCst) == 0 {
            self.wake_all();
        }
    }

    /// Full rate for as long as the guard lives.
    pub fn hold(self: &Arc<Self>) -> DemandGuard {
        if self.holders.fetch_add(1, Ordering::SeqCst) == 0 {
            self.wake_all();
        }
        DemandGuard(self.clone())
    }

    /// Whether the full rate is wanted at `now`.
    pub fn is_full(&self, now: MonotonicNs) -> bool {
        self.holders.load(Ordering::SeqCst) > 0
            || self.hold_until_ns.load(Ordering::SeqCst) > now.as_ns()
    }

    fn wake_all(&self) {
        *self.wake.0.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.wake.1.notify_all();
    }

    /// Sleeps until `deadline`, or until demand appears, or a stop.
    fn idle_sleep_until(&self, deadline: MonotonicNs, stop: &AtomicBool) {
        let mut generation = self.wake.0.lock().unwrap_or_else(PoisonError::into_inner);
        let start = *generation;
        loop {
            let now = MonotonicNs::now();
            if *generation != start || now >= deadline || stop.load(Ordering::Relaxed) {
                return;
            }
            let wait = std::time::Duration::from_nanos(
                deadline.saturating_sub(now).min(MAX_SLEEP_SLICE_NS),
            );
            generation = self
                .wake
                .1
                .wait_timeout(generation, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            history_window_ns: 600_000_000_000,
            fifo_priority: Some(1),
            stuck_after_ns: STUCK_AFTER_NS,
            idle_period_ns: None,
        }
    }
}

/// Moves the calling thread to `SCHED_FIFO` at `priority`; the OS error if
/// not permitted.
fn set_fifo_priority(priority: i32) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `param` is a valid sched_param that outlives the call; pid 0
    // is the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Everything the engine keeps about one source, shared between its
/// sampling thread and readers.
#[derive(Debug)]
struct SourceSlot {
    info: SourceInfo,
    history: RwLock<EnergyHistory>,
    samples: AtomicU64,
    overruns: AtomicU64,
    read_errors: AtomicU64,
    wraps: AtomicU64,
    /// Readings re-based as glitches.
    glitches: AtomicU64,
    /// When those glitches happened (the latest [`GLITCH_TIMES_KEPT`]).
    glitch_times: Mutex<std::collections::VecDeque<u64>>,
    /// When the cumulative counter last moved (ns; 0 before the first read).
    last_change_ns: AtomicU64,
    /// Why the source stopped, once it has.
    failure: Mutex<Option<String>>,
}

impl SourceSlot {
    fn record(&self, t: MonotonicNs, reading: Reading, filter: &mut GlitchFilter) {
        let mut glitch = false;
        let mut history = self.history.write().unwrap_or_else(PoisonError::into_inner);
        match reading {
            Reading::Energy(j) => {
                let (corrected, was_glitch) = filter.screen(t.as_ns(), j.0);
                glitch = was_glitch;
                history.push_energy(t, corrected);
            }
            Reading::Power(w) => history.push_power(t, w.0),
        }
        drop(history);
        if matches!(reading, Reading::Energy(_)) {
            self.last_change_ns
                .store(filter.last_change_ns, Ordering::Relaxed);
        } else {
            self.last_change_ns.store(t.as_ns(), Ordering::Relaxed);
        }
        if glitch {
            let n = self.glitches.fetch_add(1, Ordering::Relaxed) + 1;
            let mut times = self
                .glitch_times
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if times.len() >= GLITCH_TIMES_KEPT {
                times.pop_front();
            }
            times.push_back(t.as_ns());
            drop(times);
            // The first glitch and then every 1000th: a broken counter at
            // 1 kHz must not flood the log.
            if n == 1 || n % 1000 == 0 {
                tracing::warn!(source = %self.info.name, glitches = n, "counter glitch re-based (a step no load can draw, or backwards)");
            }
        }
        self.samples.fetch_add(1, Ordering::Relaxed);
    }

    fn history(&self) -> std::sync::RwLockReadGuard<'_, EnergyHistory> {
        self.history.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How regularly a source was sampled: statistics of the interval error
/// `|(t[i] - t[i-1]) - period|` over consecutive sample timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SampleTiming {
    /// Intervals measured.
    pub intervals: usize,
    /// Mean interval, in nanoseconds (0 without intervals).
    pub mean_interval_ns: f64,
    /// Median interval error, in nanoseconds.
    pub error_p50_ns: u64,
    /// 99th-percentile interval error, in nanoseconds.
    pub error_p99_ns: u64,
    /// Largest interval error, in nanoseconds.
    pub error_max_ns: u64,
}

impl SampleTiming {
    /// Statistics of sorted-in-time `timestamps_ns` sampled at `period_ns`.
    pub fn from_timestamps(timestamps_ns: &[u64], period_ns: u64) -> SampleTiming {
        let mut errors: Vec<u64> = timestamps_ns
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]).abs_diff(period_ns))
            .collect();
        if errors.is_empty() {
            return SampleTiming::default();
        }
        errors.sort_unstable();
        let n = errors.len();
        // Nearest-rank percentiles.
        let rank = |p: f64| errors[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        let span_ns = timestamps_ns[timestamps_ns.len() - 1] - timestamps_ns[0];
        SampleTiming {
            intervals: n,
            mean_interval_ns: span_ns as f64 / n as f64,
            error_p50_ns: rank(0.50),
            error_p99_ns: rank(0.99),
            error_max_ns: errors[n - 1],
        }
    }
}

/// A source and its slot, as owned by the sampling thread of its period.
type GroupMember = (Box<dyn Sampler>, Arc<SourceSlot>, GlitchFilter);

/// Runs the sampling threads and answers queries on the histories.
/// `Send + Sync`: the daemon keeps it in an `Arc`.
#[derive(Debug)]
pub struct SamplingEngine {
    slots: Vec<Arc<SourceSlot>>,
    stuck_after_ns: u64,
    demand: Arc<RateDemand>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl SamplingEngine {
    /// Starts sampling. Sources get `SourceId(0..n)` in the given order.
    pub fn start(sources: Vec<ConfiguredSource>, config: EngineConfig) -> SamplingEngine {
        let stop = Arc::new(AtomicBool::new(false));
        let mut groups: BTreeMap<u64, Vec<GroupMember>> = BTreeMap::new();
        let mut slots = Vec::with_capacity(sources.len());
        for (index, source) in sources.into_iter().enumerate() {
            let d = source.sampler.descriptor();
            let mut period_ns = source.period_ns.max(1);
            if let Some(range_j) = source.sampler.counter_range_j() {
                let safe_ns = crate::counter::max_period_ns_for_range(range_j);
                if period_ns > safe_ns {
                    tracing::warn!(
                        source = %d.name,
                        configured_period_ns = period_ns,
                        period_ns = safe_ns,
                        counter_range_j = range_j,
                        "period shortened so the counter cannot wrap twice between reads"
                    );
                    period_ns = safe_ns;
                }
            }
            let info = SourceInfo {
                id: SourceId(index as u32),
                name: d.name,
                domain: d.domain,
                kind: d.kind,
                provenance: d.provenance,
                reading: d.reading,
                period_ns,
                resolution_j: d.resolution_j,
                update_period_ns: d.update_period_ns,
            };
            let capacity = EnergyHistory::capacity_for(config.history_window_ns, period_ns);
            let slot = Arc::new(SourceSlot {
                info,
                history: RwLock::new(EnergyHistory::new(
                    capacity,
                    d.resolution_j,
                    d.update_period_ns,
                )),
                samples: AtomicU64::new(0),
                overruns: AtomicU64::new(0),
                read_errors: AtomicU64::new(0),
                wraps: AtomicU64::new(0),
                glitches: AtomicU64::new(0),
                glitch_times: Mutex::new(std::collections::VecDeque::new()),
                last_change_ns: AtomicU64::new(0),
                failure: Mutex::new(None),
            });
            slots.push(Arc::clone(&slot));
            let filter = GlitchFilter {
                range_j: source.sampler.counter_range_j(),
                update_period_ns: d.update_period_ns,
                ..GlitchFilter::default()
            };
            groups
                .entry(period_ns)
                .or_default()
                .push((source.sampler, slot, filter));
        }
        let mut threads = Vec::new();
        let demand = Arc::new(RateDemand::default());
        for (period_ns, members) in groups {
            let stop = Arc::clone(&stop);
            let demand = Arc::clone(&demand);
            let idle_period_ns = config.idle_period_ns.map(|p| p.max(period_ns));
            let fifo_priority = config.fifo_priority;
            let spawned = std::thread::Builder::new()
                .name(format!("sampling-{period_ns}ns"))
                .spawn(move || {
                    if let Some(priority) = fifo_priority {
                        match set_fifo_priority(priority) {
                            Ok(()) => tracing::debug!(period_ns, priority, "sampling thread is SCHED_FIFO"),
                            Err(e) => tracing::info!(period_ns, error = %e, "sampling thread keeps the normal scheduler (SCHED_FIFO refused)"),
                        }
                    }
                    run_group(period_ns, idle_period_ns, members, &stop, &demand)
                });
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => tracing::error!(period_ns, error = %e, "cannot start a sampling thread"),
            }
        }
        SamplingEngine {
            slots,
            stuck_after_ns: config.stuck_after_ns,
            demand,
            stop,
            threads: Mutex::new(threads),
        }
    }

    fn slot(&self, id: SourceId) -> Option<&SourceSlot> {
        self.slots.get(id.0 as usize).map(|s| s.as_ref())
    }

    /// The sources, `SourceId(0..n)` in the order given to [`Self::start`].
    pub fn sources(&self) -> Vec<SourceInfo> {
        self.slots.iter().map(|s| s.info.clone()).collect()
    }

    /// Who needs the full sampling rate (see [`EngineConfig::idle_period_ns`]).
    pub fn demand(&self) -> &Arc<RateDemand> {
        &self.demand
    }

    /// Live statistics of a source.
    pub fn stats(&self, id: SourceId) -> Option<SourceStats> {
        let slot = self.slot(id)?;
        let (count, span_ns) = slot.history().recent_count(RATE_WINDOW_NS);
        let rate_hz = if count >= 2 && span_ns > 0 {
            (count - 1) as f64 / (span_ns as f64 * 1e-9)
        } else {
            0.0
        };
        Some(SourceStats {
            samples: slot.samples.load(Ordering::Relaxed),
            rate_hz,
            overruns: slot.overruns.load(Ordering::Relaxed),
            read_errors: slot.read_errors.load(Ordering::Relaxed),
            wraps: slot.wraps.load(Ordering::Relaxed),
            glitches: slot.glitches.load(Ordering::Relaxed),
            stuck: self.stuck(slot, MonotonicNs::now()),
        })
    }

    fn stuck(&self, slot: &SourceSlot, now: MonotonicNs) -> bool {
        let last_change = slot.last_change_ns.load(Ordering::Relaxed);
        last_change != 0 && now.as_ns().saturating_sub(last_change) > self.stuck_after_ns
    }

    /// Glitches re-based within `[from, to]` and whether the counter is
    /// stuck now: what an answer over that interval must say about its
    /// provenance ([`CounterHealth::provenance`]).
    pub fn health(&self, id: SourceId, from: MonotonicNs, to: MonotonicNs) -> CounterHealth {
        let Some(slot) = self.slot(id) else {
            return CounterHealth::default();
        };
        let glitches = slot
            .glitch_times
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|&&t| t >= from.as_ns() && t <= to.as_ns())
            .count() as u64;
        CounterHealth {
            glitches,
            stuck: self.stuck(slot, MonotonicNs::now()),
        }
    }

    /// Sample-interval error of a source over the `window_ns` before its
    /// newest sample, from the timestamps kept in its history.
    pub fn timing(&self, id: SourceId, window_ns: u64) -> Option<SampleTiming> {
        let slot = self.slot(id)?;
        let times = slot.history().timestamps_since_last(window_ns);
        Some(SampleTiming::from_timestamps(&times, slot.info.period_ns))
    }

    /// Memory the histories take once full: ring capacity × entry size,
    /// summed over the sources (rings grow to capacity as samples arrive).
    pub fn history_capacity_bytes(&self) -> usize {
        self.slots
            .iter()
            .map(|s| s.history().capacity_bytes())
            .sum()
    }

    /// Why a source stopped sampling (a fatal read error), if it has.
    pub fn failure(&self, id: SourceId) -> Option<String> {
        self.slot(id)?
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Energy of a source over `[from, to]`.
    pub fn energy(
        &self,
        id: SourceId,
        from: MonotonicNs,
        to: MonotonicNs,
    ) -> Option<IntervalEnergy> {
        self.slot(id)?.history().energy(from, to)
    }

    /// `(t, cumulative J)` samples in `[from, to]`, including the sample
    /// just before `from` and just after `to` when present.
    pub fn samples(
        &self,
        id: SourceId,
        from: MonotonicNs,
        to: MonotonicNs,
    ) -> Vec<(MonotonicNs, f64)> {
        self.slot(id)
            .map(|s| s.history().samples(from, to))
            .unwrap_or_default()
    }

    /// Energy of a source from its first sample to `at` (see
    /// [`EnergyHistory::energy_since_start`]).
    pub fn energy_since_start(&self, id: SourceId, at: MonotonicNs) -> Option<f64> {
        self.slot(id)?.history().energy_since_start(at)
    }

    /// Newest `(t, cumulative J)` sample.
    pub fn latest(&self, id: SourceId) -> Option<(MonotonicNs, f64)> {
        self.slot(id)?.history().latest()
    }

    /// Stops and joins the sampling threads. Idempotent; also run on drop.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let handles: Vec<_> = self
            .threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        for h in handles {
            if h.join().is_err() {
                tracing::error!("a sampling thread panicked");
            }
        }
    }
}

impl Drop for SamplingEngine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Sleeps until `deadline` on CLOCK_MONOTONIC, absolute, in slices of at
/// most 50 ms so a stop request is seen promptly. The sleep every sampling
/// thread uses (also by `bench/sampler` to measure the machine's wake-up
/// floor).
pub fn sleep_until(deadline: MonotonicNs, stop: &AtomicBool) {
    use nix::time::{clock_nanosleep, ClockId, ClockNanosleepFlags};
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let now = MonotonicNs::now();
        if now >= deadline {
            return;
        }
        let target = deadline.as_ns().min(now.as_ns() + MAX_SLEEP_SLICE_NS);
        let ts = nix::sys::time::TimeSpec::new(
            (target / 1_000_000_000) as libc::time_t,
            (target % 1_000_000_000) as libc::c_long,
        );
        // EINTR just loops; the deadline is absolute so nothing drifts.
        let _ = clock_nanosleep(
            ClockId::CLOCK_MONOTONIC,
            ClockNanosleepFlags::TIMER_ABSTIME,
            &ts,
        );
    }
}

/// Body of one sampling thread: reads every member at each deadline.
fn run_group(
    period_ns: u64,
    idle_period_ns: Option<u64>,
    mut members: Vec<GroupMember>,
    stop: &AtomicBool,
    demand: &RateDemand,
) {
    let mut deadline = MonotonicNs::now();
    while !stop.load(Ordering::Relaxed) && !members.is_empty() {
        let mut failed = Vec::new();
        for (i, (sampler, slot, filter)) in members.iter_mut().enumerate() {
            let before = MonotonicNs::now();
            let result = sampler.sample();
            let after = MonotonicNs::now();
            let t = MonotonicNs(before.as_ns() + after.saturating_sub(before) / 2);
            match result {
                Ok(reading) => {
                    slot.record(t, reading, filter);
                    slot.wraps.store(sampler.wraps(), Ordering::Relaxed);
                }
                Err(SampleError::Retry(why)) => {
                    let errors = slot.read_errors.fetch_add(1, Ordering::Relaxed) + 1;
                    // Log the first failure and then every 1000th, not each one at 1 kHz.
                    if errors == 1 || errors % 1000 == 0 {
                        tracing::warn!(source = %slot.info.name, errors, reason = %why, "read failed");
                    }
                }
                Err(SampleError::Fatal(why)) => {
                    tracing::error!(source = %slot.info.name, reason = %why, "source failed; no longer sampled");
                    *slot.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
                    failed.push(i);
                }
            }
        }
        for i in failed.into_iter().rev() {
            members.remove(i);
        }
        // No one needs the full rate: read at the idle period, in a sleep
        // that demand ends at once.
        let idle = idle_period_ns.filter(|_| !demand.is_full(MonotonicNs::now()));
        let step_ns = idle.unwrap_or(period_ns);
        deadline = deadline.saturating_add_ns(step_ns);
        let now = MonotonicNs::now();
        if now > deadline {
            // Deadlines already past are skipped, not caught up in a burst.
            let missed = now.saturating_sub(deadline) / step_ns + 1;
            if now.saturating_sub(deadline) >= step_ns {
                for (_, slot, _) in &members {
                    slot.overruns.fetch_add(missed - 1, Ordering::Relaxed);
                }
            }
            deadline = deadline.saturating_add_ns((missed - 1) * step_ns);
        }
        if idle.is_some() {
            demand.idle_sleep_until(deadline, stop);
            // Woken by demand: the full rate starts now.
            deadline = deadline.min(MonotonicNs::now());
        } else {
            sleep_until(deadline, stop);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulated::{PowerCurve, SimulatedConfig, SimulatedSampler};
    use shared::Provenance;

    #[test]
    fn samples_at_period_and_answers_energy() {
        let sim = SimulatedSampler::new(SimulatedConfig {
            curve: PowerCurve::Constant { watts: 100.0 },
            ..SimulatedConfig::default()
        });
        let engine = SamplingEngine::start(
            vec![ConfiguredSource {
                sampler: Box::new(sim),
                period_ns: 2_000_000,
            }],
            EngineConfig::default(),
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
        let id = SourceId(0);
        let (t_end, _) = engine.latest(id).unwrap();
        let from = t_end.saturating_sub_ns(200_000_000);
        let e = engine.energy(id, from, t_end).unwrap();
        assert!((e.joules - 20.0).abs() < 0.05, "{e:?}");
        assert_eq!(e.coverage, 1.0);
        let stats = engine.stats(id).unwrap();
        assert!(stats.samples > 50, "{stats:?}");
        assert!(stats.rate_hz > 300.0 && stats.rate_hz < 700.0, "{stats:?}");
        assert_eq!(engine.sources()[0].provenance, Provenance::Simulated);
        engine.shutdown();
        let n = engine.stats(id).unwrap().samples;
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(engine.stats(id).unwrap().samples, n, "threads stopped");
        assert!(engine.stats(SourceId(7)).is_none());
    }

    /// A counter source with a 1 J range, read at a 1 s period.
    struct TinyRangeCounter;

    impl Sampler for TinyRangeCounter {
        fn descriptor(&self) -> crate::SourceDescriptor {
            crate::SourceDescriptor {
                name: "tiny".into(),
                domain: shared::Domain::Psys,
                kind: shared::source::SourceKind::RaplPowercap,
                provenance: Provenance::Measured,
                reading: shared::source::ReadingKind::CumulativeEnergy,
                resolution_j: 1e-6,
                update_period_ns: 0,
                default_period_ns: 1_000_000_000,
            }
        }
        fn sample(&mut self) -> Result<Reading, SampleError> {
            Ok(Reading::Energy(shared::Joules(0.0)))
        }
        fn counter_range_j(&self) -> Option<f64> {
            Some(1.0)
        }
    }

    #[test]
    fn period_is_shortened_below_half_a_wrap_at_max_power() {
        let engine = SamplingEngine::start(
            vec![ConfiguredSource {
                sampler: Box::new(TinyRangeCounter),
                period_ns: 1_000_000_000,
            }],
            EngineConfig {
                history_window_ns: 1_000_000_000,
                ..EngineConfig::default()
            },
        );
        // 1 J at 2 kW wraps in 500 µs: read at least every 250 µs.
        assert_eq!(engine.sources()[0].period_ns, 250_000);
        engine.shutdown();
    }

    #[test]
    fn timing_percentiles_of_interval_error() {
        // Period 1000: intervals 1000 ×97, 1010, 1500, 900.
        let mut t = vec![0u64];
        for _ in 0..97 {
            t.push(t[t.len() - 1] + 1000);
        }
        for step in [1010, 1500, 900] {
            t.push(t[t.len() - 1] + step);
        }
        let timing = SampleTiming::from_timestamps(&t, 1000);
        assert_eq!(timing.intervals, 100);
        assert_eq!(timing.error_p50_ns, 0);
        assert_eq!(timing.error_p99_ns, 100);
        assert_eq!(timing.error_max_ns, 500);
        assert!((timing.mean_interval_ns - 1004.1).abs() < 1e-9);
        assert_eq!(SampleTiming::from_timestamps(&[5], 1000).intervals, 0);
    }

    #[test]
    fn engine_reports_its_timing_and_history_memory() {
        let sim = SimulatedSampler::new(SimulatedConfig::default());
        let engine = SamplingEngine::start(
            vec![ConfiguredSource {
                sampler: Box::new(sim),
                period_ns: 1_000_000,
            }],
            EngineConfig::default(),
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
        let timing = engine.timing(SourceId(0), 1_000_000_000).unwrap();
        assert!(timing.intervals > 100, "{timing:?}");
        // Deadlines are absolute and missed ones skipped, so even on a busy
        // machine most intervals are within a period of the target.
        assert!(
            timing.error_p50_ns < 1_000_000,
            "median error below one period: {timing:?}"
        );
        // 10 min at 1 kHz, +1 % headroom, 16 B per entry.
        assert_eq!(engine.history_capacity_bytes(), 606_003 * 16);
        engine.shutdown();
    }
}
