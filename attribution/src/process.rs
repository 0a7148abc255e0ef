//! Splitting one domain's energy between tracked processes and the rest of
//! the machine, by each process's share of the activity the domain sees
//! (CPU time for package/core/DRAM domains, GPU busy time for a GPU).
//!
//! The machine's energy in every sample interval is first cut into a
//! static part (idle power × time, never more than the interval's energy)
//! and a dynamic part (the remainder). Dynamic energy is split by activity
//! share within each *share window* (consecutive sample intervals making up
//! at least [`ProcessShareConfig::share_window_ns`]), so a process that is
//! busy while power is high is charged more than one busy while power is
//! low. The window exists because activity counters are quantised (procfs
//! counts 10 ms ticks): a ratio of two counts of a few ticks each is biased
//! upwards (the mean of `a / b` exceeds `mean a / mean b` when `b` is
//! noisy, and a one-tick `b` makes any one-tick `a` look like all of it),
//! which at one tick per interval let two busy processes each claim more
//! than half of a two-CPU machine. Over twenty ticks the bias is below
//! 0.1%. Static
//! energy is split by [`StaticSplit`] (default: the share of the machine's
//! capacity a process held, so a process that kept one of eight CPUs busy
//! carries an eighth of the idle power). Whatever no tracked process takes
//! is the rest of the machine; processes plus rest add up to the machine's
//! energy exactly.
//!
//! Idle power is either configured (measured once on a quiet machine: the
//! best choice) or estimated from the history as a low percentile of the
//! power over windows of at least four sensor updates. The estimate is
//! biased up on a machine that is never idle (the static part then holds
//! some dynamic energy), never below the true idle power by more than the
//! sensor noise; it only moves energy between "static" and "dynamic", never
//! changes the total.

use crate::error::AttributionError;
use crate::series::{ActivitySeries, EnergySeries, IntervalEnergy, MachineActivity};
use shared::{MonotonicNs, Provenance};

/// Where the idle (static) power comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum IdlePower {
    /// A figure measured on the idle machine (or from a datasheet).
    Configured {
        /// Idle power of the domain.
        watts: f64,
    },
    /// A low percentile of the power seen in the history passed in.
    FromHistory {
        /// Percentile in (0, 100), e.g. 5.
        percentile: f64,
    },
}

/// How static (idle) energy is shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaticSplit {
    /// By the share of the domain's capacity (all CPUs' time, GPU time) a
    /// process used: the idle power of what it held.
    ByCapacityShare,
    /// By the share of the domain's busy time: active processes carry all
    /// idle power between them.
    ByBusyShare,
    /// Static energy stays with the machine; processes get dynamic energy only.
    NotAttributed,
}

/// Settings of the process split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessShareConfig {
    /// Idle power source.
    pub idle_power: IdlePower,
    /// How static energy is split.
    pub static_split: StaticSplit,
    /// Resolution of the activity counters (procfs CPU time: 10 ms ticks;
    /// perf task-clock: ~0). Feeds the uncertainty.
    pub activity_resolution_ns: f64,
    /// Shortest stretch of time over which activity shares are taken
    /// (see the module doc): at least twenty steps of the coarsest
    /// activity counter involved, machine busy time included. Default
    /// 200 ms (twenty procfs ticks); 0 takes shares per sample interval.
    pub share_window_ns: u64,
}

impl Default for ProcessShareConfig {
    fn default() -> Self {
        ProcessShareConfig {
            idle_power: IdlePower::FromHistory { percentile: 5.0 },
            static_split: StaticSplit::ByCapacityShare,
            activity_resolution_ns: 10_000_000.0,
            share_window_ns: DEFAULT_SHARE_WINDOW_NS,
        }
    }
}

/// Default [`ProcessShareConfig::share_window_ns`]: twenty 10 ms ticks.
pub const DEFAULT_SHARE_WINDOW_NS: u64 = 200_000_000;

/// How the idle power used was obtained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum IdleSource {
    /// From [`IdlePower::Configured`].
    Configured,
    /// From [`IdlePower::FromHistory`], over this many windows.
    HistoryPercentile {
        /// The percentile taken.
        percentile: f64,
        /// Number of power windows it was taken over.
        windows: usize,
    },
}

/// The idle power used, with its origin and a one-sigma spread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdleEstimate {
    /// Idle power.
    pub watts: f64,
    /// One-sigma uncertainty of `watts` (0 for a configured figure).
    pub uncertainty_w: f64,
    /// Where it comes from.
    pub source: IdleSource,
}

/// The part of one domain's energy that belongs to one process.
///
/// Invariant: `process_j == process_dynamic_j + process_static_j`, and
/// `machine_j == machine_static_j + machine_dynamic_j`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessShare {
    /// Machine-wide energy of the domain over the covered interval.
    pub machine_j: f64,
    /// Static (idle) part of `machine_j`.
    pub machine_static_j: f64,
    /// Dynamic part of `machine_j`.
    pub machine_dynamic_j: f64,
    /// Energy attributed to the process: dynamic plus its static share.
    pub process_j: f64,
    /// Dynamic part of `process_j`.
    pub process_dynamic_j: f64,
    /// Static part of `process_j` (by [`StaticSplit`]).
    pub process_static_j: f64,
    /// Process activity / machine busy activity over the interval (0..=1).
    pub activity_share: f64,
    /// Process activity / machine capacity over the interval (0..=1).
    pub capacity_share: f64,
    /// Idle power used to separate static from dynamic energy.
    pub idle: IdleEstimate,
    /// Fraction of the interval covered by both energy and activity samples.
    pub coverage: f64,
    /// One-sigma uncertainty of `process_j`.
    pub uncertainty_j: f64,
    /// The interval is shorter than the sensor's update period.
    pub below_update_period: bool,
    /// Where the machine's energy comes from (the split itself is by
    /// measured activity; see the notes).
    pub provenance: Provenance,
    /// How the figures were obtained, caveats.
    pub notes: Vec<String>,
}

/// A domain's energy split between several processes and the rest.
///
/// Invariant: `Σ processes[i].process_j + rest_j == machine.joules`.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineSplit {
    /// Machine energy over the interval.
    pub machine: IntervalEnergy,
    /// One entry per process, in the order given.
    pub processes: Vec<ProcessShare>,
    /// Energy of everything else (untracked processes, the kernel, idle
    /// power not charged to a process).
    pub rest_j: f64,
    /// Dynamic part of `rest_j`.
    pub rest_dynamic_j: f64,
    /// Notes common to all processes.
    pub notes: Vec<String>,
}

/// Smallest window, in sensor updates, over which the history power is
/// taken: a window without a counter update would read as zero power.
const IDLE_WINDOW_UPDATES: u64 = 4;

/// Estimates idle power as the `percentile`-th percentile of the power
/// over the whole series, in windows of at least four sensor updates (and
/// at least one sample interval).
pub fn estimate_idle_power(
    series: &EnergySeries<'_>,
    percentile: f64,
) -> Result<IdleEstimate, AttributionError> {
    if !(percentile > 0.0 && percentile < 100.0) {
        return Err(AttributionError::BadConfig(format!(
            "idle percentile {percentile} is not within (0, 100)"
        )));
    }
    let min_window_ns = series
        .meta()
        .update_period_ns
        .saturating_mul(IDLE_WINDOW_UPDATES)
        .max(1);
    let samples = series.samples();
    let mut powers = Vec::new();
    let mut start = 0;
    for i in 1..samples.len() {
        let dt = samples[i].0.saturating_sub(samples[start].0);
        if dt >= min_window_ns {
            powers.push((samples[i].1 - samples[start].1) / (dt as f64 * 1e-9));
            start = i;
        }
    }
    if powers.is_empty() {
        let (a, b) = series.span();
        let dt = b.saturating_sub(a) as f64 * 1e-9;
        powers.push((samples[samples.len() - 1].1 - samples[0].1) / dt);
    }
    powers.sort_by(f64::total_cmp);
    let at = |p: f64| {
        let idx = ((p / 100.0) * (powers.len() - 1) as f64).round() as usize;
        powers[idx.min(powers.len() - 1)]
    };
    let watts = at(percentile);
    // Spread: how much the figure moves between the chosen percentile and
    // twice it; small on a machine that idles often, large otherwise.
    let uncertainty_w = (at((2.0 * percentile).min(99.0)) - watts).abs();
    Ok(IdleEstimate {
        watts,
        uncertainty_w,
        source: IdleSource::HistoryPercentile {
            percentile,
            windows: powers.len(),
        },
    })
}

fn resolve_idle(
    series: &EnergySeries<'_>,
    idle: IdlePower,
) -> Result<IdleEstimate, AttributionError> {
    match idle {
        IdlePower::Configured { watts } => {
            if !(watts.is_finite() && watts >= 0.0) {
                return Err(AttributionError::BadConfig(format!(
                    "configured idle power {watts} W is not a non-negative number"
                )));
            }
            Ok(IdleEstimate {
                watts,
                uncertainty_w: 0.0,
                source: IdleSource::Configured,
            })
        }
        IdlePower::FromHistory { percentile } => estimate_idle_power(series, percentile),
    }
}

/// Consecutive sample intervals whose energy is split with one set of
/// activity shares.
struct ShareWindow {
    start: MonotonicNs,
    end: MonotonicNs,
    static_j: f64,
    dynamic_j: f64,
}

#[derive(Default, Clone, Copy)]
struct Accum {
    dynamic_j: f64,
    static_j: f64,
    active_ns: f64,
}

/// Splits the domain's energy over `[from, to]` between `processes` (each a
/// cumulative activity series in the same unit as `machine.busy`) and the
/// rest of the machine. The history passed in `series` may be longer than
/// the interval: it is what the idle power is estimated from.
pub fn split_machine(
    series: &EnergySeries<'_>,
    machine: &MachineActivity<'_>,
    processes: &[ActivitySeries<'_>],
    from: MonotonicNs,
    to: MonotonicNs,
    config: &ProcessShareConfig,
) -> Result<MachineSplit, AttributionError> {
    if !(config.activity_resolution_ns.is_finite() && config.activity_resolution_ns >= 0.0) {
        return Err(AttributionError::BadConfig(format!(
            "activity resolution {} ns is not a non-negative number",
            config.activity_resolution_ns
        )));
    }
    let machine_energy = series.energy_between(from, to)?;
    let idle = resolve_idle(series, config.idle_power)?;
    let pieces = series.pieces(from, to);

    let mut acc = vec![Accum::default(); processes.len()];
    let mut machine_static_j = 0.0;
    let mut machine_dynamic_j = 0.0;
    let mut busy_total = 0.0;
    let mut capacity_total = 0.0;
    let mut covered_s = 0.0;
    let mut oversubscribed_windows = 0usize;
    let mut unexplained_dynamic_j = 0.0;
    let mut proc_active = vec![0.0; processes.len()];

    // Static/dynamic cut per sample interval (idle power is a rate), then
    // the intervals grouped into share windows.
    let mut windows: Vec<ShareWindow> = Vec::new();
    let mut open: Option<ShareWindow> = None;
    for piece in &pieces {
        let dt_s = piece.len_ns() as f64 * 1e-9;
        covered_s += dt_s;
        let static_j = piece.energy_j.min(idle.watts * dt_s).max(0.0);
        let dynamic_j = piece.energy_j - static_j;
        machine_static_j += static_j;
        machine_dynamic_j += dynamic_j;
        let w = open.get_or_insert(ShareWindow {
            start: piece.start,
            end: piece.start,
            static_j: 0.0,
            dynamic_j: 0.0,
        });
        w.end = piece.end;
        w.static_j += static_j;
        w.dynamic_j += dynamic_j;
        if w.end.saturating_sub(w.start) >= config.share_window_ns {
            windows.extend(open.take());
        }
    }
    if let Some(tail) = open {
        // A short tail joins the window before it rather than standing
        // alone with a few noisy ticks.
        match windows.last_mut() {
            Some(last) if 2 * tail.end.saturating_sub(tail.start) < config.share_window_ns => {
                last.end = tail.end;
                last.static_j += tail.static_j;
                last.dynamic_j += tail.dynamic_j;
            }
            _ => windows.push(tail),
        }
    }

    for window in &windows {
        let (static_j, dynamic_j) = (window.static_j, window.dynamic_j);
        let busy = machine.busy.delta(window.start, window.end).max(0.0);
        let capacity = machine.capacity.delta(window.start, window.end).max(0.0);
        busy_total += busy;
        capacity_total += capacity;
        let mut sum_active = 0.0;
        for (i, p) in processes.iter().enumerate() {
            proc_active[i] = p.delta(window.start, window.end).max(0.0);
            sum_active += proc_active[i];
        }
        // Counters read at slightly different times can make the tracked
        // processes look busier than the machine; shares are then
        // normalised so they never exceed the whole.
        let busy_denominator = if sum_active > busy {
            if sum_active > busy * (1.0 + 1e-9) + 1.0 {
                oversubscribed_windows += 1;
            }
            sum_active
        } else {
            busy
        };
        let capacity_denominator = capacity.max(sum_active);
        if busy_denominator <= 0.0 {
            unexplained_dynamic_j += dynamic_j;
        }
        for (i, a) in acc.iter_mut().enumerate() {
            a.active_ns += proc_active[i];
            if busy_denominator > 0.0 {
                a.dynamic_j += dynamic_j * proc_active[i] / busy_denominator;
            }
            let static_share = match config.static_split {
                StaticSplit::ByCapacityShare if capacity_denominator > 0.0 => {
                    proc_active[i] / capacity_denominator
                }
                StaticSplit::ByBusyShare if busy_denominator > 0.0 => {
                    proc_active[i] / busy_denominator
                }
                _ => 0.0,
            };
            a.static_j += static_j * static_share;
        }
    }

    let machine_j = machine_static_j + machine_dynamic_j;
    let mut notes = vec![format!(
        "dynamic energy split by activity share per window of at least {:.0} ms; static energy \
         (idle {:.3} W, {}) split {}",
        config.share_window_ns as f64 * 1e-6,
        idle.watts,
        match idle.source {
            IdleSource::Configured => "configured".to_owned(),
            IdleSource::HistoryPercentile {
                percentile,
                windows,
            } => format!("{percentile}th percentile of {windows} history windows"),
        },
        match config.static_split {
            StaticSplit::ByCapacityShare => "by share of capacity",
            StaticSplit::ByBusyShare => "by share of busy time",
            StaticSplit::NotAttributed => "to no process",
        }
    )];
    if oversubscribed_windows > 0 {
        notes.push(format!(
            "tracked activity exceeded the machine's busy time in {oversubscribed_windows} \
             share windows; shares there were normalised"
        ));
    }
    if unexplained_dynamic_j > 0.0 {
        notes.push(format!(
            "{unexplained_dynamic_j:.6} J of dynamic energy fell in intervals with no \
             recorded activity; left to the rest of the machine"
        ));
    }
    if machine_energy.below_update_period {
        notes.push(format!(
            "interval shorter than the sensor's update period ({} ns): energy is \
             interpolated, not observed",
            series.meta().update_period_ns
        ));
    }
    let busy_coverage = machine.busy.coverage(from, to);

    let interval_s = (to.0 - from.0) as f64 * 1e-9;
    let mut shares = Vec::with_capacity(processes.len());
    let mut attributed_j = 0.0;
    let mut attributed_dynamic_j = 0.0;
    for (i, a) in acc.iter().enumerate() {
        let process_j = a.dynamic_j + a.static_j;
        attributed_j += process_j;
        attributed_dynamic_j += a.dynamic_j;
        let activity_share = if busy_total > 0.0 {
            (a.active_ns / busy_total).min(1.0)
        } else {
            0.0
        };
        let capacity_share = if capacity_total > 0.0 {
            (a.active_ns / capacity_total).min(1.0)
        } else {
            0.0
        };
        let fraction = if machine_j > 0.0 {
            process_j / machine_j
        } else {
            0.0
        };
        // Activity counters are off by up to one resolution step at each end.
        let activity_rel = if a.active_ns > 0.0 {
            (config.activity_resolution_ns / (6f64.sqrt() * a.active_ns)).min(1.0)
        } else if busy_total > 0.0 {
            (config.activity_resolution_ns / busy_total).min(1.0)
        } else {
            0.0
        };
        let activity_sigma = if a.active_ns > 0.0 {
            process_j * activity_rel
        } else {
            machine_dynamic_j * activity_rel
        };
        let static_share_of_time = match config.static_split {
            StaticSplit::ByCapacityShare => capacity_share,
            StaticSplit::ByBusyShare => activity_share,
            StaticSplit::NotAttributed => 0.0,
        };
        let idle_sigma =
            (static_share_of_time - activity_share).abs() * idle.uncertainty_w * covered_s;
        let uncertainty_j = ((machine_energy.uncertainty_j * fraction).powi(2)
            + activity_sigma.powi(2)
            + idle_sigma.powi(2))
        .sqrt();
        let coverage = machine_energy
            .coverage
            .min(processes[i].coverage(from, to))
            .min(busy_coverage);
        let mut own_notes = Vec::new();
        if coverage < 1.0 {
            own_notes.push(format!(
                "samples cover {:.1}% of the {interval_s:.3} s interval",
                coverage * 100.0
            ));
        }
        shares.push(ProcessShare {
            machine_j,
            machine_static_j,
            machine_dynamic_j,
            process_j,
            process_dynamic_j: a.dynamic_j,
            process_static_j: a.static_j,
            activity_share,
            capacity_share,
            idle,
            coverage,
            uncertainty_j,
            below_update_period: machine_energy.below_update_period,
            provenance: machine_energy.provenance,
            notes: own_notes,
        });
    }
    Ok(MachineSplit {
        machine: IntervalEnergy {
            joules: machine_j,
            ..machine_energy
        },
        processes: shares,
        rest_j: machine_j - attributed_j,
        rest_dynamic_j: machine_dynamic_j - attributed_dynamic_j,
        notes,
    })
}

/// The share of one process: [`split_machine`] with a single process, its
/// notes merged.
pub fn process_share(
    series: &EnergySeries<'_>,
    machine: &MachineActivity<'_>,
    process: &ActivitySeries<'_>,
    from: MonotonicNs,
    to: MonotonicNs,
    config: &ProcessShareConfig,
) -> Result<ProcessShare, AttributionError> {
    let split = split_machine(
        series,
        machine,
        std::slice::from_ref(process),
        from,
        to,
        config,
    )?;
    let MachineSplit {
        mut processes,
        notes,
        ..
    } = split;
    let mut share = processes.pop().ok_or_else(|| {
        AttributionError::BadConfig("split of one process returned none".to_owned())
    })?;
    let mut all_notes = notes;
    all_notes.append(&mut share.notes);
    share.notes = all_notes;
    Ok(share)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::SeriesMeta;
    use shared::source::ReadingKind;

    const S: u64 = 1_000_000_000;

    fn meta() -> SeriesMeta {
        SeriesMeta {
            provenance: Provenance::Measured,
            resolution_j: 1e-6,
            update_period_ns: 1_000_000,
            reading: ReadingKind::CumulativeEnergy,
        }
    }

    /// `(t, rate × t)` every 100 ms for `secs` seconds.
    fn linear(rate_per_s: f64, secs: u64) -> Vec<(MonotonicNs, f64)> {
        (0..=secs * 10)
            .map(|k| {
                let t = k * S / 10;
                (MonotonicNs(t), rate_per_s * t as f64 * 1e-9)
            })
            .collect()
    }

    #[test]
    fn split_adds_up_and_follows_activity_and_capacity() {
        // 30 W machine, 10 W idle, 4 CPUs; A keeps one CPU busy, B half
        // of one, the machine two in all.
        let energy = linear(30.0, 10);
        let busy = linear(2.0 * S as f64, 10);
        let capacity = linear(4.0 * S as f64, 10);
        let a = linear(S as f64, 10);
        let b = linear(0.5 * S as f64, 10);
        let series = EnergySeries::new(&energy, meta()).unwrap();
        let machine = MachineActivity {
            busy: ActivitySeries::new("busy", &busy).unwrap(),
            capacity: ActivitySeries::new("capacity", &capacity).unwrap(),
        };
        let procs = [
            ActivitySeries::new("a", &a).unwrap(),
            ActivitySeries::new("b", &b).unwrap(),
        ];
        let config = ProcessShareConfig {
            idle_power: IdlePower::Configured { watts: 10.0 },
            static_split: StaticSplit::ByCapacityShare,
            activity_resolution_ns: 0.0,
            share_window_ns: 0,
        };
        let split = split_machine(
            &series,
            &machine,
            &procs,
            MonotonicNs(0),
            MonotonicNs(10 * S),
            &config,
        )
        .unwrap();
        let close = |x: f64, y: f64| (x - y).abs() < 1e-6;
        assert!(close(split.machine.joules, 300.0));
        let (pa, pb) = (&split.processes[0], &split.processes[1]);
        // Dynamic 200 J by busy share (1/2, 1/4); static 100 J by capacity
        // share (1/4, 1/8).
        assert!(
            close(pa.process_dynamic_j, 100.0),
            "{}",
            pa.process_dynamic_j
        );
        assert!(close(pa.process_static_j, 25.0), "{}", pa.process_static_j);
        assert!(close(pb.process_dynamic_j, 50.0));
        assert!(close(pb.process_static_j, 12.5));
        assert!(close(pa.activity_share, 0.5) && close(pa.capacity_share, 0.25));
        let sum = pa.process_j + pb.process_j + split.rest_j;
        assert!(close(sum, split.machine.joules), "{sum}");
        assert!(close(split.rest_dynamic_j, 50.0));
        assert_eq!(pa.provenance, Provenance::Measured);
        assert_eq!(pa.coverage, 1.0);

        // One process alone: the same figures, notes merged.
        let one = process_share(
            &series,
            &machine,
            &procs[0],
            MonotonicNs(0),
            MonotonicNs(10 * S),
            &config,
        )
        .unwrap();
        assert!(close(one.process_j, 125.0));
        assert!(!one.notes.is_empty());

        // Static power kept by the machine.
        let none = ProcessShareConfig {
            static_split: StaticSplit::NotAttributed,
            ..config
        };
        let s = process_share(
            &series,
            &machine,
            &procs[0],
            MonotonicNs(0),
            MonotonicNs(10 * S),
            &none,
        )
        .unwrap();
        assert!(close(s.process_j, 100.0) && s.process_static_j == 0.0);
    }

    #[test]
    fn idle_power_is_a_low_percentile_of_the_history() {
        // 10 W for 5 s, then 50 W for 5 s.
        let energy: Vec<_> = (0..=100u64)
            .map(|k| {
                let t = k * S / 10;
                let secs = t as f64 * 1e-9;
                let e = if secs <= 5.0 {
                    10.0 * secs
                } else {
                    50.0 + 50.0 * (secs - 5.0)
                };
                (MonotonicNs(t), e)
            })
            .collect();
        let series = EnergySeries::new(&energy, meta()).unwrap();
        let idle = estimate_idle_power(&series, 5.0).unwrap();
        assert!((idle.watts - 10.0).abs() < 1e-6, "{}", idle.watts);
        assert!(matches!(idle.source, IdleSource::HistoryPercentile { .. }));
        assert!(estimate_idle_power(&series, 0.0).is_err());
        assert!(estimate_idle_power(&series, 100.0).is_err());
    }

    #[test]
    fn dynamic_energy_without_activity_stays_with_the_machine() {
        let energy = linear(30.0, 2);
        let flat = linear(0.0, 2);
        let capacity = linear(4.0 * S as f64, 2);
        let series = EnergySeries::new(&energy, meta()).unwrap();
        let machine = MachineActivity {
            busy: ActivitySeries::new("busy", &flat).unwrap(),
            capacity: ActivitySeries::new("capacity", &capacity).unwrap(),
        };
        let p = ActivitySeries::new("p", &flat).unwrap();
        let config = ProcessShareConfig {
            idle_power: IdlePower::Configured { watts: 10.0 },
            ..ProcessShareConfig::default()
        };
        let split = split_machine(
            &series,
            &machine,
            &[p],
            MonotonicNs(0),
            MonotonicNs(2 * S),
            &config,
        )
        .unwrap();
        assert_eq!(split.processes[0].process_j, 0.0);
        assert!((split.rest_j - 60.0).abs() < 1e-6);
        assert!(split
            .notes
            .iter()
            .any(|n| n.contains("no recorded activity")));

        let bad = ProcessShareConfig {
            idle_power: IdlePower::Configured { watts: -1.0 },
            ..config
        };
        assert!(matches!(
            split_machine(
                &series,
                &machine,
                &[p],
                MonotonicNs(0),
                MonotonicNs(2 * S),
                &bad
            ),
            Err(AttributionError::BadConfig(_))
        ));
        assert!(matches!(
            split_machine(
                &series,
                &machine,
                &[p],
                MonotonicNs(S),
                MonotonicNs(S),
                &config
            ),
            Err(AttributionError::BadInterval { .. })
        ));
    }

    /// Two processes each keeping one CPU of a two-CPU machine busy, seen
    /// through procfs-like counters: sampled every 10 ms with jitter and
    /// quantised to 10 ms ticks at phases of their own. Asked about one at
    /// a time (as the daemon is), their shares must not add up to more
    /// than the machine's energy. Per sample interval they did (a one-tick
    /// capacity next to a one-tick process reads as 100%); over share
    /// windows they do not.
    #[test]
    fn quantised_counters_do_not_let_shares_exceed_the_machine() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let tick = 10_000_000.0;
        let quantise = |v: f64, phase: f64| ((v + phase) / tick).floor() * tick;
        // 20 W, all of it idle power, sampled every millisecond for 3 s.
        let energy: Vec<_> = (0..=3000u64)
            .map(|k| (MonotonicNs(k * 1_000_000), 20.0 * k as f64 * 1e-3))
            .collect();
        // Every counter ticks at a phase of its own; the machine's are sums
        // over its two CPUs.
        let mut phase = || rng.gen::<f64>() * tick;
        let (pa, pb, pc0, pc1) = (phase(), phase(), phase(), phase());
        let (mut a, mut b, mut busy, mut capacity) = (vec![], vec![], vec![], vec![]);
        let mut t = 0.0f64;
        while t < 3.0e9 {
            let at = MonotonicNs(t as u64);
            // Each process runs 97% of the time, on a CPU of its own; the
            // machine also sees a little other work.
            a.push((at, quantise(0.97 * t, pa)));
            b.push((at, quantise(0.97 * t, pb)));
            busy.push((at, quantise(0.98 * t, pc0) + quantise(0.98 * t, pc1)));
            capacity.push((at, quantise(t, pc0) + quantise(t, pc1)));
            // A loaded machine wakes the sampler late by up to 5 ms.
            t += tick + rng.gen_range(-5.0e6..5.0e6);
        }
        let series = EnergySeries::new(&energy, meta()).unwrap();
        let machine = MachineActivity {
            busy: ActivitySeries::new("busy", &busy).unwrap(),
            capacity: ActivitySeries::new("capacity", &capacity).unwrap(),
        };
        let (a, b) = (
            ActivitySeries::new("a", &a).unwrap(),
            ActivitySeries::new("b", &b).unwrap(),
        );
        let (from, to) = (MonotonicNs(100_000_000), MonotonicNs(2_900_000_000));
        let shares = |window_ns: u64| {
            let config = ProcessShareConfig {
                idle_power: IdlePower::Configured { watts: 20.0 },
                share_window_ns: window_ns,
                ..ProcessShareConfig::default()
            };
            let one = |p| process_share(&series, &machine, p, from, to, &config).unwrap();
            let (sa, sb) = (one(&a), one(&b));
            (sa.process_j / sa.machine_j, sb.process_j / sb.machine_j)
        };
        let (fa, fb) = shares(DEFAULT_SHARE_WINDOW_NS);
        assert!(fa + fb <= 1.0, "shares {fa} + {fb} exceed the machine");
        for f in [fa, fb] {
            assert!((f - 0.485).abs() < 0.01, "share {f}, true 0.485");
        }
        let (ra, rb) = shares(0);
        assert!(
            ra + rb > 1.0,
            "per-interval shares {ra} + {rb} were expected to overshoot"
        );
    }
}
