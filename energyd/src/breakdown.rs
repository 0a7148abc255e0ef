//! Per-process, per-kernel energy breakdowns: gathers the history, the
//! process's CPU activity and its spans, and hands them to the
//! `attribution` crate.
//!
//! Per domain (source) the process's energy is its share of the domain's
//! dynamic energy by CPU time plus its share of the static (idle) energy by
//! the share of the machine's CPU capacity it held
//! ([`attribution::process_share`]). Kernel figures are computed on the
//! *kernel domains* — every package domain (or, without RAPL, the estimated
//! CPU domain; failing that psys, then any non-GPU source) — and summed
//! over them per kernel type; `unattributed_j` of every domain says what of
//! that domain's share no kernel figure covers, so within each kernel
//! domain `Σ kernels + unattributed == process_j` holds.
//!
//! GPU domains are split by per-process GPU busy time from NVML
//! ([`crate::gpu_activity`]); without it a GPU gets a zero share and a
//! note: a GPU's energy is never charged by CPU time.
//!
//! Unprivileged callers see `machine_j` only over the policy's coarse
//! window grid and quantised (see ARCHITECTURE.md, "Security policy"); what
//! is attributed to their own process and spans stays at full resolution.

use crate::policy::{Caller, Coarsening};
use crate::service::{DaemonState, TrackedProcess};
use attribution::{
    attribute_spans, process_share, ActivitySeries, AttributionInterval, EnergySeries, IdlePower,
    KernelConfig, KernelSpan, MachineActivity, ProcessEnergy, ProcessShareConfig, SeriesMeta,
};
use sampling::activity::CpuTimeSource;
use shared::protocol::{AttributionMethod, Breakdown, DomainShare, KernelEnergy};
use shared::{Domain, MonotonicNs, SourceInfo};
use std::collections::BTreeMap;

/// History before `from` handed to attribution, so the idle power can be
/// estimated from more than the interval itself.
const IDLE_LOOKBACK_NS: u64 = 30_000_000_000;

/// Resolution of CPU-time accounting: procfs counts in clock ticks (10 ms
/// at USER_HZ=100); perf task-clock counts nanoseconds.
const PROCFS_TICK_NS: f64 = 10_000_000.0;
const TASK_CLOCK_RESOLUTION_NS: f64 = 1_000.0;
/// A cgroup's `cpu.stat` counts microseconds.
const CGROUP_USAGE_RESOLUTION_NS: f64 = 1_000.0;
/// NVML per-process utilisation: whole percent of a ~1/6 s sample.
const GPU_ACTIVITY_RESOLUTION_NS: f64 = 2_000_000.0;

/// What a breakdown is of: a tracked process tree, or a tracked cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject {
    /// Its tree key in the activity tracker (and the span store).
    pub key: u64,
    /// The root process, for a process tree (GPU activity is per process:
    /// a cgroup has none, and gets no GPU share).
    pub pid: Option<u32>,
    /// Descendants count too.
    pub include_children: bool,
}

impl From<&TrackedProcess> for Subject {
    fn from(t: &TrackedProcess) -> Subject {
        Subject {
            key: t.key,
            pid: Some(t.pid),
            include_children: t.include_children,
        }
    }
}

/// Breakdown of `pid` over `[from, to]` as `caller` may see it.
pub fn compute(
    state: &DaemonState,
    caller: &Caller,
    tracked: &TrackedProcess,
    from: MonotonicNs,
    to: MonotonicNs,
) -> Breakdown {
    compute_subject(state, caller, &Subject::from(tracked), from, to)
}

/// Breakdown of any tracked subject (a process tree or a cgroup: the same
/// attribution, from its cumulative CPU time) over `[from, to]` as
/// `caller` may see it; `pid` is 0 for a cgroup.
pub fn compute_subject(
    state: &DaemonState,
    caller: &Caller,
    tracked: &Subject,
    from: MonotonicNs,
    to: MonotonicNs,
) -> Breakdown {
    let pid = tracked.pid.unwrap_or(0);
    let mut notes = Vec::new();
    let sources = state.engine.sources();
    let lookback_from = MonotonicNs(from.0.saturating_sub(IDLE_LOOKBACK_NS));

    // Activity: the process and the whole machine, cumulative CPU ns.
    let process_cpu: Vec<(MonotonicNs, f64)> = state
        .tracker
        .cpu_samples(tracked.key, from, to)
        .into_iter()
        .map(|(t, ns)| (t, ns as f64))
        .collect();
    let machine = state.tracker.machine_samples(lookback_from, to);
    let machine_busy: Vec<(MonotonicNs, f64)> =
        machine.iter().map(|&(t, b, _)| (t, b as f64)).collect();
    let machine_capacity: Vec<(MonotonicNs, f64)> =
        machine.iter().map(|&(t, _, c)| (t, c as f64)).collect();
    let activity = if process_cpu.len() < 2 || machine.len() < 2 {
        notes.push(format!(
            "not enough CPU activity samples in the {:.1} ms interval ({} of the process, {} of \
             the machine; the tracker samples every {} ms): a process tracked this briefly gets \
             no energy attributed",
            to.saturating_sub(from) as f64 * 1e-6,
            process_cpu.len(),
            machine.len(),
            state.config.activity.period_ns / 1_000_000
        ));
        None
    } else {
        match (
            ActivitySeries::new("process CPU time", &process_cpu),
            ActivitySeries::new("machine busy CPU time", &machine_busy),
            ActivitySeries::new("machine CPU capacity", &machine_capacity),
        ) {
            (Ok(p), Ok(busy), Ok(capacity)) => Some((p, MachineActivity { busy, capacity })),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                notes.push(format!("activity history unusable: {e}"));
                None
            }
        }
    };
    // The precision of the process's CPU time is how it was counted, not
    // what the configuration asked for: perf may have been refused (a
    // sandbox, perf_event_paranoid) or the tree may be past its counter cap.
    let cpu_time_source = state.tracker.cpu_time_source(tracked.key);
    if state.config.activity.use_task_clock && cpu_time_source == Some(CpuTimeSource::ProcfsTicks) {
        notes.push(
            "the process's CPU time was counted from procfs ticks, not per-thread task-clock \
             counters (perf refused, or the process tree past its counter cap): activity \
             shares are at tick precision"
                .to_owned(),
        );
    }
    let share_config = ProcessShareConfig {
        activity_resolution_ns: match cpu_time_source {
            Some(CpuTimeSource::TaskClock) => TASK_CLOCK_RESOLUTION_NS,
            Some(CpuTimeSource::CgroupCpuStat) => CGROUP_USAGE_RESOLUTION_NS,
            _ => PROCFS_TICK_NS,
        },
        idle_power: IdlePower::FromHistory { percentile: 5.0 },
        ..ProcessShareConfig::default()
    };

    let kernel_domains = kernel_domains(&sources);
    let include_children = tracked.include_children;
    let mut slice = state.spans.slice(tracked.key, from, to);
    if !caller.privileged {
        // Spans are whatever a client says. For an unprivileged caller a
        // span counts only where its process was on CPU during it, so that
        // made-up spans on idle processes cannot sample machine power
        // (issue 12, item 1).
        let before = slice.spans.len();
        slice
            .spans
            .retain(|s| on_cpu_during(&process_cpu, s.start, s.end));
        let refused = before - slice.spans.len();
        if refused > 0 {
            notes.push(format!(
                "{refused} spans lie where the process was not on CPU for at least {}% of \
                 the span (by its activity samples): not attributed (policy for \
                 unprivileged callers)",
                (MIN_ON_CPU_FRACTION * 100.0).round()
            ));
        }
    }
    if slice.dropped > 0 {
        notes.push(format!(
            "{} spans of this process were dropped (store full, limit {} per process): \
             kernel figures cover the spans kept",
            slice.dropped, state.config.policy.max_spans_per_process
        ));
    }
    let spans: Vec<KernelSpan> = slice
        .spans
        .iter()
        .map(|s| KernelSpan {
            name: s.name,
            start: s.start,
            end: s.end,
            tid: s.tid,
        })
        .collect();
    let mut kernels: BTreeMap<u32, KernelSum> = BTreeMap::new();
    let coarsening = Coarsening::for_caller(caller, &state.config.policy);

    let mut domains = Vec::with_capacity(sources.len());
    for info in &sources {
        let machine_fine = state.engine.energy(info.id, from, to);
        let machine_j = visible_machine_energy(state, info, &coarsening, from, to)
            .unwrap_or_else(|| machine_fine.as_ref().map_or(0.0, |e| e.joules));
        let health = state.engine.health(info.id, lookback_from, to);
        if health.stuck {
            notes.push(format!(
                "{}: the counter has not moved for over {} s: stuck or unsupported, its figures \
                 are not measurements",
                info.name,
                sampling::engine::STUCK_AFTER_NS / 1_000_000_000
            ));
        }
        if health.glitches > 0 {
            notes.push(format!(
                "{}: {} counter glitch(es) in the interval were re-based (replaced by the power \
                 before them)",
                info.name, health.glitches
            ));
        }
        let mut share = DomainShare {
            source: info.id,
            machine_j,
            process_j: 0.0,
            process_dynamic_j: 0.0,
            activity_share: 0.0,
            unattributed_j: 0.0,
            uncertainty_j: 0.0,
            provenance: health.provenance(info.provenance),
        };
        // CPU domains share the process's CPU time; a GPU its GPU time.
        let gpu_series = match (info.domain.clone(), tracked.pid) {
            (Domain::Gpu { index }, Some(pid)) => state
                .gpu
                .as_ref()
                .and_then(|g| g.series(index, pid, include_children, lookback_from, to)),
            _ => None,
        };
        let domain_activity = if matches!(info.domain, Domain::Gpu { .. }) {
            match &gpu_series {
                Some(g) if g.device_busy.len() >= 2 => match (
                    ActivitySeries::new("process GPU time", &g.process_busy),
                    ActivitySeries::new("device GPU time", &g.device_busy),
                    ActivitySeries::new("device capacity", &g.capacity),
                ) {
                    (Ok(p), Ok(busy), Ok(capacity)) => {
                        Some((p, MachineActivity { busy, capacity }))
                    }
                    (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                        notes.push(format!("{}: GPU activity unusable: {e}", info.name));
                        None
                    }
                },
                _ if tracked.pid.is_none() => {
                    notes.push(format!(
                        "{}: no GPU energy is attributed to a cgroup (NVML reports GPU time \
                         per process, not per cgroup)",
                        info.name
                    ));
                    None
                }
                _ => {
                    notes.push(format!(
                        "{}: no per-process GPU utilisation from NVML for this interval; no \
                         GPU energy is attributed to the process",
                        info.name
                    ));
                    None
                }
            }
        } else {
            activity
        };
        let Some((process, machine_activity)) = &domain_activity else {
            domains.push(share);
            continue;
        };
        let share_config = if matches!(info.domain, Domain::Gpu { .. }) {
            // NVML utilisation is in whole percent of ~1/6 s samples.
            ProcessShareConfig {
                activity_resolution_ns: GPU_ACTIVITY_RESOLUTION_NS,
                ..share_config
            }
        } else {
            share_config
        };
        let samples = state.engine.samples(info.id, lookback_from, to);
        let series = match EnergySeries::new(&samples, series_meta(info)) {
            Ok(s) if samples.len() >= 2 => s,
            Ok(_) => {
                notes.push(format!("{}: no samples in the interval", info.name));
                domains.push(share);
                continue;
            }
            Err(e) => {
                notes.push(format!("{}: history unusable: {e}", info.name));
                domains.push(share);
                continue;
            }
        };
        let ps = match process_share(&series, machine_activity, process, from, to, &share_config) {
            Ok(ps) => ps,
            Err(e) => {
                notes.push(format!("{}: process share not computed: {e}", info.name));
                domains.push(share);
                continue;
            }
        };
        share.process_j = ps.process_j;
        share.process_dynamic_j = ps.process_dynamic_j;
        share.activity_share = ps.activity_share;
        share.uncertainty_j = ps.uncertainty_j;
        share.unattributed_j = ps.process_j;
        for n in &ps.notes {
            notes.push(format!("{}: {}", info.name, diagnostic(caller, n)));
        }

        if kernel_domains.contains(&info.id) && !spans.is_empty() {
            let interval = AttributionInterval::new(from, to);
            match attribute_spans(
                &series,
                &spans,
                slice.names.len(),
                &interval,
                &ProcessEnergy::from(&ps),
                &KernelConfig::default(),
            ) {
                Ok(ka) => {
                    share.unattributed_j = ka.unattributed_j;
                    for n in &ka.notes {
                        notes.push(format!("{} kernels: {}", info.name, diagnostic(caller, n)));
                    }
                    for t in &ka.types {
                        if let Some(reason) = &t.reason {
                            let name = slice.names.get(t.name as usize).map_or("?", |n| n);
                            notes.push(format!(
                                "{} kernel `{name}`: {}",
                                info.name,
                                diagnostic(caller, reason)
                            ));
                        }
                        kernels.entry(t.name).or_default().add(t);
                    }
                }
                Err(e) => notes.push(format!("{}: kernels not attributed: {e}", info.name)),
            }
        }
        domains.push(share);
    }

    if !spans.is_empty() {
        let names: Vec<&str> = sources
            .iter()
            .filter(|s| kernel_domains.contains(&s.id))
            .map(|s| s.name.as_str())
            .collect();
        notes.push(format!(
            "kernel energies are dynamic energy on {} (summed per kernel type)",
            names.join(", ")
        ));
    }
    let kernel_process_j: f64 = domains
        .iter()
        .filter(|d| kernel_domains.contains(&d.source))
        .map(|d| d.process_j)
        .sum();
    let kernels = kernels
        .into_iter()
        .map(|(name, k)| k.into_protocol(slice.names.get(name as usize), kernel_process_j))
        .collect();
    Breakdown {
        pid,
        from,
        to,
        domains,
        kernels,
        notes,
    }
}

/// Least fraction of a span's duration its process must have been on CPU
/// (its CPU time over the span, interpolated from the activity samples)
/// for the span to be attributed to an unprivileged caller. A process
/// that runs its kernels is on CPU for all of them (or more, with threads);
/// a quarter leaves room for the 10 ms sampling of CPU time.
pub const MIN_ON_CPU_FRACTION: f64 = 0.25;

/// Whether the process's CPU time over `[start, end]`, interpolated in
/// its cumulative CPU series, is at least [`MIN_ON_CPU_FRACTION`] of the
/// span. A span of zero length counts as on CPU when the process ran in
/// the sample interval around it.
fn on_cpu_during(cpu: &[(MonotonicNs, f64)], start: MonotonicNs, end: MonotonicNs) -> bool {
    let at = |t: MonotonicNs| -> Option<f64> {
        let i = cpu.partition_point(|(ts, _)| *ts <= t);
        if i == 0 || i == cpu.len() {
            return None; // outside the activity history: nothing vouches
        }
        let (t0, c0) = cpu[i - 1];
        let (t1, c1) = cpu[i];
        let f = t.saturating_sub(t0) as f64 / t1.saturating_sub(t0).max(1) as f64;
        Some(c0 + f * (c1 - c0))
    };
    let duration = end.saturating_sub(start) as f64;
    let (Some(a), Some(b)) = (at(start), at(end)) else {
        return false;
    };
    if duration <= 0.0 {
        let i = cpu.partition_point(|(ts, _)| *ts <= start);
        return cpu[i].1 > cpu[i - 1].1;
    }
    b - a >= MIN_ON_CPU_FRACTION * duration
}

/// A diagnostic note from attribution as `caller` may read it. Notes name
/// figures of the fit (baseline power to 0.1 mW, fitted power ± W, how far
/// kernel estimates exceeded the process's energy) that, read across many
/// spans, are a fine-grained view of machine power; unprivileged callers
/// get the words with every number withheld (`#`).
fn diagnostic(caller: &Caller, note: &str) -> String {
    if caller.privileged {
        return note.to_owned();
    }
    let mut out = String::with_capacity(note.len());
    let mut in_number = false;
    for c in note.chars() {
        let numeric = c.is_ascii_digit() || (in_number && matches!(c, '.' | 'e' | 'E'));
        if numeric {
            if !in_number {
                out.push('#');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

/// The machine energy an unprivileged caller may see: over the coarse
/// window grid, quantised; `None` for a privileged caller (full resolution).
fn visible_machine_energy(
    state: &DaemonState,
    info: &SourceInfo,
    coarsening: &Coarsening,
    from: MonotonicNs,
    to: MonotonicNs,
) -> Option<f64> {
    if coarsening.window_ns == 0 && coarsening.quantum_j == 0.0 {
        return None;
    }
    let now = MonotonicNs::now();
    let joules = coarsening
        .interval(from, to, now)
        .and_then(|(a, b)| state.engine.energy(info.id, a, b))
        .map_or(0.0, |e| e.joules);
    Some(coarsening.energy(joules))
}

fn series_meta(info: &SourceInfo) -> SeriesMeta {
    SeriesMeta {
        provenance: info.provenance,
        resolution_j: info.resolution_j,
        update_period_ns: if info.update_period_ns > 0 {
            info.update_period_ns
        } else {
            info.period_ns
        },
        reading: info.reading,
    }
}

/// The sources kernel figures are computed on: every package domain; else
/// the estimated whole-CPU domain; else psys; else every non-GPU source.
/// Core, uncore and DRAM are parts of a package and would count it twice.
/// Every GPU as well: a kernel's energy is its dynamic energy on the CPU
/// side plus on the GPU side (a CPU-only kernel fits to ~0 on a GPU).
fn kernel_domains(sources: &[SourceInfo]) -> Vec<shared::SourceId> {
    let mut ids = cpu_kernel_domains(sources);
    ids.extend(
        sources
            .iter()
            .filter(|s| matches!(s.domain, Domain::Gpu { .. }))
            .map(|s| s.id),
    );
    ids
}

fn cpu_kernel_domains(sources: &[SourceInfo]) -> Vec<shared::SourceId> {
    let pick = |f: &dyn Fn(&Domain) -> bool| -> Vec<shared::SourceId> {
        sources
            .iter()
            .filter(|s| f(&s.domain))
            .map(|s| s.id)
            .collect()
    };
    for candidates in [
        pick(&|d| matches!(d, Domain::Package { .. })),
        pick(&|d| matches!(d, Domain::Cpu)),
        pick(&|d| matches!(d, Domain::Psys)),
        pick(&|d| !matches!(d, Domain::Gpu { .. })),
    ] {
        if !candidates.is_empty() {
            return candidates;
        }
    }
    Vec::new()
}

/// One kernel type summed over the kernel domains.
#[derive(Debug, Default)]
struct KernelSum {
    count: u64,
    total_time_ns: u64,
    energy_j: f64,
    /// At least one domain gave no figure: the sum is unknown.
    unknown: bool,
    variance_j2: f64,
    confidence: Option<f64>,
    method: Option<AttributionMethod>,
}

impl KernelSum {
    fn add(&mut self, t: &attribution::KernelTypeResult) {
        // Spans are the same on every domain: count and time once.
        self.count = self.count.max(t.count);
        self.total_time_ns = self.total_time_ns.max(t.total_time_ns);
        match t.energy_j {
            Some(e) => self.energy_j += e,
            None => self.unknown = true,
        }
        self.variance_j2 += t.uncertainty_j * t.uncertainty_j;
        self.confidence = Some(
            self.confidence
                .map_or(t.confidence, |c| c.min(t.confidence)),
        );
        // The least reliable method wins (Insufficient over Regression...).
        self.method = Some(match self.method {
            None => t.method,
            Some(m) if method_rank(t.method) > method_rank(m) => t.method,
            Some(m) => m,
        });
    }

    fn into_protocol(self, name: Option<&String>, process_j: f64) -> KernelEnergy {
        let energy_j = (!self.unknown).then_some(self.energy_j);
        KernelEnergy {
            name: name.cloned().unwrap_or_else(|| "?".to_owned()),
            count: self.count,
            total_time_ns: self.total_time_ns,
            energy_j,
            share: energy_j
                .filter(|_| process_j > 0.0)
                .map(|e| (e / process_j).clamp(0.0, 1.0)),
            uncertainty_j: self.variance_j2.sqrt(),
            confidence: if self.unknown {
                0.0
            } else {
                self.confidence.unwrap_or(0.0)
            },
            method: self.method.unwrap_or(AttributionMethod::Insufficient),
        }
    }
}

fn method_rank(m: AttributionMethod) -> u8 {
    match m {
        AttributionMethod::Integrated => 0,
        AttributionMethod::Regression => 1,
        AttributionMethod::Deconvolved => 2,
        AttributionMethod::Insufficient => 3,
    }
}
