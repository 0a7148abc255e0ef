//! A process's energy split between kernel types, from the spans it
//! reported and the domain's energy history.
//!
//! Two methods, chosen per kernel type:
//!
//! - **Integrated** (types whose median span is at least
//!   [`KernelConfig::long_span_factor`] sample windows long): the history is
//!   integrated over each span; in each sample interval, the energy above
//!   the baseline, less what the fit attributes to short kernels running
//!   there, is shared between the long spans running then by their overlap.
//! - **Regression** (short types): each sample window's energy is modelled
//!   as `Σ_types busy_time(type, window) × power(type) + baseline × length`
//!   (busy time summed over threads, so overlapping spans add up) and the
//!   per-type dynamic powers and the baseline are fitted together by
//!   non-negative least squares over all windows. The baseline (idle power,
//!   other processes, this process's non-kernel work) is not assumed
//!   constant: it is piecewise constant over blocks of
//!   [`KernelConfig::baseline_block_ns`] (at least four averaging windows),
//!   one unknown per block, so a slow drift of the rest of the machine is
//!   not mistaken for the power of whichever kernel type happened to run
//!   more while it was high. Kernel powers are then identified from the
//!   variation within blocks. A type's energy is its
//!   power × its total span time. Standard errors come from the residual
//!   variance and (XᵀX)⁻¹ on the active set, inflated for residual
//!   autocorrelation (AR(1)); confidence is `1 / (1 + (rse / ref)²)`, 0.5
//!   at a relative standard error of [`KernelConfig::confidence_reference_rse`].
//! - **Deconvolved**: the same fit on a sensor that reports power averaged
//!   over a trailing window W (NVML on recent GPUs). The observed energy of
//!   a window is then the integral of the smoothed power, so each type's
//!   regressor is its busy time convolved with the W-long boxcar and
//!   integrated over the window (computed exactly from the piecewise-linear
//!   cumulative busy time); the baseline blocks are convolved the same way.
//!   When W is much longer than the variation of the schedule the
//!   regressors become nearly collinear, and that shows up, honestly, as
//!   wide standard errors and low confidence.
//!
//! Averaging sensors, in short: short spans are **deconvolved** (the
//! design models the sensor's window, method `Deconvolved`); long spans are
//! integrated from the smoothed history, which misplaces about
//! `ΔP × W / 2` of energy at each span edge, and that much is added to their
//! uncertainty (**widened confidence**, method `Integrated`). Each answer
//! says which in its notes.
//!
//! Sensor refresh: a counter refreshed every U (RAPL ~1 ms, NVML ~20–100
//! ms) shows the value of its last refresh; read at times unrelated to the
//! refreshes that value is on average U/2 old, so regression windows are
//! moved U/2 earlier and are at least U long.
//! - **Insufficient**: too few instances, too few windows where the type
//!   ran, activity indistinguishable from the baseline or from other
//!   types, or a standard error too wide. The energy is `None` and the
//!   reason is given; such types still take part in the fit as nuisance
//!   columns so they do not bias the others.
//!
//! Kernel energies are dynamic energy (above the baseline). The parts add
//! up: `Σ energy_j + unattributed_j == process_j`, where the unattributed
//! part holds the static share, non-kernel activity and the types marked
//! insufficient. If the kernels' estimates exceed the process's energy they
//! are scaled down to it, with a note.

use crate::error::AttributionError;
use crate::nnls::{inverse_on, nnls_normal, NormalEquations};
use crate::process::ProcessShare;
use crate::series::EnergySeries;
pub use shared::protocol::AttributionMethod as Method;
use shared::{MonotonicNs, Provenance};

/// One kernel execution of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSpan {
    /// Kernel type: index into the caller's name table.
    pub name: u32,
    /// Start (CLOCK_MONOTONIC ns).
    pub start: MonotonicNs,
    /// End, `>= start`.
    pub end: MonotonicNs,
    /// Thread (informational: busy time is summed over threads).
    pub tid: u32,
}

/// The interval attributed and how far back the spans are complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributionInterval {
    /// Start of the interval.
    pub from: MonotonicNs,
    /// End of the interval.
    pub to: MonotonicNs,
    /// Spans are known to be complete from this time on (usually `from`;
    /// for an averaging sensor pass spans from `from - window` and set this
    /// to that time, so windows near `from` can be modelled).
    pub spans_complete_from: MonotonicNs,
}

impl AttributionInterval {
    /// `[from, to]`, spans complete from `from`.
    pub fn new(from: MonotonicNs, to: MonotonicNs) -> Self {
        AttributionInterval {
            from,
            to,
            spans_complete_from: from,
        }
    }
}

/// What the kernels are a part of: the process's energy in this domain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessEnergy {
    /// Energy of the process in the domain (dynamic + static share).
    pub process_j: f64,
    /// Its dynamic part.
    pub process_dynamic_j: f64,
    /// Process dynamic energy / machine dynamic energy (0..=1): scales the
    /// machine's dynamic power to the process when there is no fit.
    pub dynamic_share_of_machine: f64,
    /// Idle power of the domain (baseline when there is no fit).
    pub idle_power_w: f64,
    /// Where the process's energy comes from.
    pub provenance: Provenance,
}

impl From<&ProcessShare> for ProcessEnergy {
    fn from(s: &ProcessShare) -> Self {
        ProcessEnergy {
            process_j: s.process_j,
            process_dynamic_j: s.process_dynamic_j,
            dynamic_share_of_machine: if s.machine_dynamic_j > 0.0 {
                (s.process_dynamic_j / s.machine_dynamic_j).clamp(0.0, 1.0)
            } else {
                0.0
            },
            idle_power_w: s.idle.watts,
            provenance: s.provenance,
        }
    }
}

/// Settings of the kernel attribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelConfig {
    /// A type is integrated when its median span is at least this many
    /// sample windows (and, for an averaging sensor, averaging windows) long.
    pub long_span_factor: f64,
    /// Fewest instances for a regression figure.
    pub min_instances: u64,
    /// Fewest windows in which the type ran, for a regression figure.
    pub min_active_windows: usize,
    /// Largest relative standard error of a published regression figure.
    pub max_relative_se: f64,
    /// Relative standard error at which confidence is 0.5.
    pub confidence_reference_rse: f64,
    /// Most kernel types fitted at once (by total time); the rest are
    /// reported insufficient.
    pub max_fit_types: usize,
    /// Most non-zero design entries; beyond it, consecutive sample windows
    /// are merged.
    pub max_design_entries: usize,
    /// Length of a block of constant baseline power in the fit (raised to
    /// four averaging windows for an averaging sensor); 0 fits one constant
    /// baseline over the whole interval. Shorter blocks follow a drifting
    /// baseline more closely but leave less variation per block to tell
    /// kernel power from the baseline.
    pub baseline_block_ns: u64,
    /// Most baseline blocks; longer intervals get longer blocks.
    pub max_baseline_blocks: usize,
}

impl Default for KernelConfig {
    fn default() -> Self {
        KernelConfig {
            long_span_factor: 4.0,
            min_instances: 30,
            min_active_windows: 20,
            max_relative_se: 0.5,
            confidence_reference_rse: 0.2,
            max_fit_types: 256,
            max_design_entries: 20_000_000,
            baseline_block_ns: 2_000_000_000,
            max_baseline_blocks: 200,
        }
    }
}

/// The answer for one kernel type.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelTypeResult {
    /// Kernel type (index into the caller's names).
    pub name: u32,
    /// Spans overlapping the interval.
    pub count: u64,
    /// Their total duration within the interval.
    pub total_time_ns: u64,
    /// Dynamic energy, or `None` when there is not enough information.
    pub energy_j: Option<f64>,
    /// `energy_j / process_j`, when known.
    pub share: Option<f64>,
    /// One-sigma uncertainty of `energy_j`.
    pub uncertainty_j: f64,
    /// Confidence (0..=1).
    pub confidence: f64,
    /// How the figure was obtained.
    pub method: Method,
    /// Average dynamic power while an instance runs (per-instance energy is
    /// this × its duration), when known.
    pub power_w: Option<f64>,
    /// One-sigma uncertainty of `power_w`.
    pub power_uncertainty_w: f64,
    /// Why the figure is missing or weak, if it is.
    pub reason: Option<String>,
}

/// Summary of the regression.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitSummary {
    /// Windows used.
    pub windows: usize,
    /// Sample intervals merged into one window.
    pub stride: usize,
    /// Mean window length.
    pub window_ns: u64,
    /// Fitted baseline power (everything that is not a kernel of this
    /// process: idle power, other processes, non-kernel work), time-weighted
    /// mean over the baseline blocks.
    pub baseline_w: f64,
    /// Its one-sigma uncertainty (block uncertainties combined as if
    /// independent).
    pub baseline_uncertainty_w: f64,
    /// Number of blocks of constant baseline fitted.
    pub baseline_blocks: usize,
    /// Their length.
    pub baseline_block_ns: u64,
    /// Standard deviation of the residual per window.
    pub residual_sd_j: f64,
    /// Lag-1 autocorrelation of the residuals (variances were inflated by
    /// (1+ρ)/(1−ρ) for it).
    pub residual_autocorrelation: f64,
    /// The design modelled an averaging sensor of this window.
    pub averaging_window_ns: Option<u64>,
}

/// Energy of a process split between kernel types.
///
/// Invariant: `Σ types[i].energy_j.unwrap_or(0) + unattributed_j == process_j`
/// and `unattributed_j >= 0` (unless `process_j < 0`, which is refused).
#[derive(Debug, Clone, PartialEq)]
pub struct KernelAttribution {
    /// One entry per kernel type with spans in the interval, by name index.
    pub types: Vec<KernelTypeResult>,
    /// The process's energy being split.
    pub process_j: f64,
    /// Part of `process_j` not attributed to any kernel type.
    pub unattributed_j: f64,
    /// The fit, if one was made.
    pub fit: Option<FitSummary>,
    /// The interval is shorter than the sensor's update period.
    pub below_update_period: bool,
    /// Where the process's energy comes from.
    pub provenance: Provenance,
    /// How figures were obtained, caveats.
    pub notes: Vec<String>,
}

/// Cumulative busy time of one kernel type: piecewise linear. Times in
/// seconds from an origin.
struct Timeline {
    t: Vec<f64>,
    busy: Vec<f64>,
    slope: Vec<f64>,
}

impl Timeline {
    fn new(intervals: impl Iterator<Item = (f64, f64)>) -> Timeline {
        let mut events: Vec<(f64, f64)> = Vec::new();
        for (a, b) in intervals {
            if b > a {
                events.push((a, 1.0));
                events.push((b, -1.0));
            }
        }
        events.sort_by(|x, y| x.0.total_cmp(&y.0));
        let mut tl = Timeline {
            t: Vec::new(),
            busy: Vec::new(),
            slope: Vec::new(),
        };
        let (mut busy, mut slope) = (0.0, 0.0);
        let mut i = 0;
        while i < events.len() {
            let t = events[i].0;
            if let Some(&tp) = tl.t.last() {
                busy += slope * (t - tp);
            }
            while i < events.len() && events[i].0 == t {
                slope += events[i].1;
                i += 1;
            }
            // Guard against -0.0 drift from float sums of ±1.
            slope = slope.round();
            tl.t.push(t);
            tl.busy.push(busy);
            tl.slope.push(slope);
        }
        tl
    }

    fn locate(&self, x: f64) -> Option<(usize, f64)> {
        let i = self.t.partition_point(|&t| t <= x);
        (i > 0).then(|| (i - 1, x - self.t[i - 1]))
    }

    /// Busy seconds up to `x`.
    fn busy_at(&self, x: f64) -> f64 {
        self.locate(x)
            .map_or(0.0, |(i, d)| self.busy[i] + self.slope[i] * d)
    }

    /// What a sensor averaging over the trailing `w` seconds sees of this
    /// type at `x`: its busy time in `[x − w, x]` over `w` (threads add up).
    fn averaged_at(&self, x: f64, w: f64) -> f64 {
        (self.busy_at(x) - self.busy_at(x - w)) / w
    }
}

/// What a sensor averaging over the trailing `w` seconds sees at `x` of a
/// baseline block `[lo, hi]`: the fraction of `[x − w, x]` inside it.
fn block_averaged_at(lo: f64, hi: f64, x: f64, w: f64) -> f64 {
    ((x.min(hi) - (x - w).max(lo)) / w).max(0.0)
}

/// The trapezoid rule over the sample times `t` of `f`: how the daemon's
/// history integrates power readings, applied to the model's terms.
fn trapezoid(t: &[f64], f: impl Fn(f64) -> f64) -> f64 {
    let mut sum = 0.0;
    let mut prev = match t.first() {
        Some(&t0) => (t0, f(t0)),
        None => return 0.0,
    };
    for &ti in &t[1..] {
        let fi = f(ti);
        sum += 0.5 * (prev.1 + fi) * (ti - prev.0);
        prev = (ti, fi);
    }
    sum
}

#[derive(Debug, Clone, Default)]
struct TypeStats {
    count: u64,
    total_time_ns: u64,
    durations_ns: Vec<u64>,
}

struct Window {
    /// Start and end on the model's clock (sample times less the refresh lag).
    start: MonotonicNs,
    end: MonotonicNs,
    energy_j: f64,
    /// The sample times inside, ends included, in seconds from the origin
    /// (for the trapezoid model of an averaging sensor; empty otherwise).
    sample_s: Vec<f64>,
}

/// A block of constant baseline power in the fit.
#[derive(Debug, Clone, Copy)]
struct BaselineBlock {
    start: MonotonicNs,
    power_w: f64,
    uncertainty_w: f64,
}

struct Fit {
    /// Baseline blocks in time order (the first starts at or before the
    /// first window).
    baseline: Vec<BaselineBlock>,
    /// Power per fitted column (type order as `columns`), W.
    power_w: Vec<f64>,
    power_se_w: Vec<f64>,
    /// Column of each type in the fit, if any.
    dependent: Vec<bool>,
    active_windows: Vec<usize>,
    summary: FitSummary,
}

impl Fit {
    /// Fitted baseline power and its uncertainty at `t`.
    fn baseline_at(&self, t: MonotonicNs) -> (f64, f64) {
        let i = self
            .baseline
            .partition_point(|b| b.start <= t)
            .saturating_sub(1);
        self.baseline.get(i).map_or(
            (self.summary.baseline_w, self.summary.baseline_uncertainty_w),
            |b| (b.power_w, b.uncertainty_w),
        )
    }
}

fn confidence(rse: f64, reference: f64) -> f64 {
    if !rse.is_finite() {
        return 0.0;
    }
    1.0 / (1.0 + (rse / reference).powi(2))
}

fn validate(
    spans: &[KernelSpan],
    type_count: usize,
    interval: &AttributionInterval,
    process: &ProcessEnergy,
    config: &KernelConfig,
) -> Result<(), AttributionError> {
    if interval.to <= interval.from {
        return Err(AttributionError::BadInterval {
            from: interval.from,
            to: interval.to,
        });
    }
    if interval.spans_complete_from > interval.from {
        return Err(AttributionError::BadConfig(format!(
            "spans complete from {} is after the interval start {}",
            interval.spans_complete_from, interval.from
        )));
    }
    for (index, s) in spans.iter().enumerate() {
        if s.end < s.start {
            return Err(AttributionError::BadSpan {
                index,
                reason: format!("end {} before start {}", s.end, s.start),
            });
        }
        if s.name as usize >= type_count {
            return Err(AttributionError::BadSpan {
                index,
                reason: format!("name index {} but only {type_count} names", s.name),
            });
        }
    }
    if !(process.process_j.is_finite() && process.process_j >= 0.0) {
        return Err(AttributionError::BadConfig(format!(
            "process energy {} J is not a non-negative number",
            process.process_j
        )));
    }
    if !(config.long_span_factor > 0.0
        && config.max_relative_se > 0.0
        && config.confidence_reference_rse > 0.0)
    {
        return Err(AttributionError::BadConfig(
            "long_span_factor, max_relative_se and confidence_reference_rse must be positive"
                .to_owned(),
        ));
    }
    Ok(())
}

/// Splits `process.process_j` between the kernel types of `spans` (name
/// indices `< type_count`) over `interval`, from the domain's `series`.
/// See the module documentation for the methods.
pub fn attribute_spans(
    series: &EnergySeries<'_>,
    spans: &[KernelSpan],
    type_count: usize,
    interval: &AttributionInterval,
    process: &ProcessEnergy,
    config: &KernelConfig,
) -> Result<KernelAttribution, AttributionError> {
    validate(spans, type_count, interval, process, config)?;
    let (from, to) = (interval.from, interval.to);
    let mut notes = Vec::new();
    let below_update_period = to.0 - from.0 < series.meta().update_period_ns;
    if below_update_period {
        notes.push(format!(
            "interval shorter than the sensor's update period ({} ns): figures are \
             interpolated between updates, not observed",
            series.meta().update_period_ns
        ));
    }

    // Per-type statistics over the interval (spans clipped to it).
    let mut stats = vec![TypeStats::default(); type_count];
    for s in spans {
        if s.end < from || s.start > to {
            continue;
        }
        let st = &mut stats[s.name as usize];
        st.count += 1;
        let clipped = s.end.min(to).saturating_sub(s.start.max(from));
        // Hostile or corrupt spans can cover the whole clock many times
        // over: saturate rather than wrap (or panic) on the sum.
        st.total_time_ns = st.total_time_ns.saturating_add(clipped);
        st.durations_ns.push(s.end.0 - s.start.0);
    }
    let present: Vec<usize> = (0..type_count).filter(|&j| stats[j].count > 0).collect();

    let averaging_ns = series.averaging_window_ns();
    let fit = fit_short_types(
        series, spans, type_count, interval, &stats, config, &mut notes,
    );
    let window_ns = fit
        .as_ref()
        .map_or(series.median_period_ns(), |f| f.summary.window_ns);

    let long_threshold_ns =
        config.long_span_factor * (window_ns.max(averaging_ns.unwrap_or(0))) as f64;
    let is_long: Vec<bool> = (0..type_count)
        .map(|j| {
            let d = &stats[j].durations_ns;
            if d.is_empty() {
                return false;
            }
            let mut d = d.clone();
            d.sort_unstable();
            d[d.len() / 2] as f64 >= long_threshold_ns
        })
        .collect();

    let mut results: Vec<KernelTypeResult> = Vec::with_capacity(present.len());
    let reg_method = if averaging_ns.is_some() {
        Method::Deconvolved
    } else {
        Method::Regression
    };
    // Scale for "is a zero power estimate informative": the median of the
    // positive fitted powers.
    let power_scale = fit.as_ref().map_or(0.0, |f| {
        let mut p: Vec<f64> = f.power_w.iter().copied().filter(|&p| p > 0.0).collect();
        p.sort_by(f64::total_cmp);
        p.get(p.len() / 2).copied().unwrap_or(0.0)
    });
    for &j in &present {
        let st = &stats[j];
        let total_s = st.total_time_ns as f64 * 1e-9;
        let mut r = KernelTypeResult {
            name: j as u32,
            count: st.count,
            total_time_ns: st.total_time_ns,
            energy_j: None,
            share: None,
            uncertainty_j: 0.0,
            confidence: 0.0,
            method: Method::Insufficient,
            power_w: None,
            power_uncertainty_w: 0.0,
            reason: None,
        };
        if is_long[j] {
            // Filled in by the integration below.
            r.method = Method::Integrated;
            results.push(r);
            continue;
        }
        let insufficient = |r: &mut KernelTypeResult, why: String| {
            r.method = Method::Insufficient;
            r.reason = Some(why);
        };
        if st.count < config.min_instances {
            insufficient(
                &mut r,
                format!(
                    "only {} instance(s) shorter than the sample window; at least {} are \
                     needed to separate its power from the rest",
                    st.count, config.min_instances
                ),
            );
            results.push(r);
            continue;
        }
        let Some(f) = fit.as_ref() else {
            insufficient(&mut r, "no regression could be made (see notes)".to_owned());
            results.push(r);
            continue;
        };
        if f.active_windows[j] < config.min_active_windows {
            insufficient(
                &mut r,
                format!(
                    "ran in only {} sample windows; at least {} are needed",
                    f.active_windows[j], config.min_active_windows
                ),
            );
            results.push(r);
            continue;
        }
        if f.dependent[j] {
            insufficient(
                &mut r,
                "its activity is indistinguishable from the baseline or from other \
                 kernel types (collinear regressors)"
                    .to_owned(),
            );
            results.push(r);
            continue;
        }
        let (p, se) = (f.power_w[j], f.power_se_w[j]);
        let rse = if p > 0.0 {
            se / p
        } else if power_scale > 0.0 {
            se / power_scale
        } else {
            f64::INFINITY
        };
        // NaN (a degenerate fit) must also count as insufficient.
        if rse.is_nan() || rse > config.max_relative_se {
            insufficient(
                &mut r,
                format!(
                    "fitted power {p:.4} ± {se:.4} W: relative standard error {:.0}% exceeds \
                     {:.0}%",
                    rse * 100.0,
                    config.max_relative_se * 100.0
                ),
            );
            r.power_uncertainty_w = se;
            results.push(r);
            continue;
        }
        r.method = reg_method;
        r.power_w = Some(p);
        r.power_uncertainty_w = se;
        r.energy_j = Some(p * total_s);
        r.uncertainty_j = se * total_s;
        r.confidence = confidence(rse, config.confidence_reference_rse);
        results.push(r);
    }

    integrate_long_spans(
        series,
        spans,
        interval,
        process,
        fit.as_ref(),
        &is_long,
        &mut results,
        config,
        &mut notes,
    );

    // Parts add up: kernels never exceed the process's energy.
    let kernel_sum: f64 = results.iter().filter_map(|r| r.energy_j).sum();
    if kernel_sum > process.process_j {
        let factor = if kernel_sum > 0.0 {
            process.process_j / kernel_sum
        } else {
            0.0
        };
        notes.push(format!(
            "kernel estimates ({kernel_sum:.6} J) exceeded the process's energy \
             ({:.6} J) and were scaled by {factor:.4}",
            process.process_j
        ));
        for r in &mut results {
            if let Some(e) = r.energy_j.as_mut() {
                *e *= factor;
                r.uncertainty_j *= factor;
            }
        }
    } else if kernel_sum > process.process_dynamic_j * 1.05 + 1e-9 {
        notes.push(format!(
            "kernel estimates ({kernel_sum:.6} J) exceed the process's dynamic energy \
             ({:.6} J) by its activity share: the activity split may undercount this process",
            process.process_dynamic_j
        ));
    }
    let kernel_sum: f64 = results.iter().filter_map(|r| r.energy_j).sum();
    let unattributed_j = (process.process_j - kernel_sum).max(0.0);
    for r in &mut results {
        r.share = r.energy_j.map(|e| {
            if process.process_j > 0.0 {
                e / process.process_j
            } else {
                0.0
            }
        });
    }
    let insufficient = results
        .iter()
        .filter(|r| r.method == Method::Insufficient)
        .count();
    if insufficient > 0 {
        notes.push(format!(
            "{insufficient} kernel type(s) without a figure (not enough information); \
             their energy is in the unattributed part"
        ));
    }
    notes.push(
        "kernel energies are dynamic energy above the baseline; the unattributed part \
         holds static power, non-kernel work and types without a figure"
            .to_owned(),
    );
    Ok(KernelAttribution {
        types: results,
        process_j: process.process_j,
        unattributed_j,
        fit: fit.map(|f| f.summary),
        below_update_period,
        provenance: process.provenance.combine(series.meta().provenance),
        notes,
    })
}

/// The regression over sample windows (see the module doc). `None` when
/// no fit can be made; the reason is in `notes`.
fn fit_short_types(
    series: &EnergySeries<'_>,
    spans: &[KernelSpan],
    type_count: usize,
    interval: &AttributionInterval,
    stats: &[TypeStats],
    config: &KernelConfig,
    notes: &mut Vec<String>,
) -> Option<Fit> {
    let (from, to) = (interval.from, interval.to);
    let averaging_ns = series.averaging_window_ns();
    let w_ns = averaging_ns.unwrap_or(0);
    // Types in the design: those with spans, the longest-running first up
    // to the cap.
    let mut by_time: Vec<usize> = (0..type_count).filter(|&j| stats[j].count > 0).collect();
    if by_time.is_empty() {
        return None;
    }
    by_time.sort_by_key(|&j| std::cmp::Reverse(stats[j].total_time_ns));
    if by_time.len() > config.max_fit_types {
        notes.push(format!(
            "{} kernel types; only the {} with the most time were fitted",
            by_time.len(),
            config.max_fit_types
        ));
        by_time.truncate(config.max_fit_types);
    }
    let mut column_of = vec![usize::MAX; type_count];
    for (c, &j) in by_time.iter().enumerate() {
        column_of[j] = c;
    }
    let n_types = by_time.len();

    // Sample indices inside the interval.
    let samples = series.samples();
    let first = samples.partition_point(|s| s.0 < from);
    let last = samples.partition_point(|s| s.0 <= to);
    let idx: Vec<usize> = (first..last).collect();
    if idx.len() < 2 {
        notes.push("fewer than two samples in the interval: no regression".to_owned());
        return None;
    }
    // Windows at least as long as the sensor's update period (a window
    // without a counter update would carry its energy into the next), and
    // few enough for the design-size cap.
    let median_ns = series.median_period_ns().max(1);
    // (10% slack: a sampler at the update period with jitter has a median
    // a hair below it, and doubling the window for that would halve the data.)
    let mut stride =
        ((series.meta().update_period_ns * 9 / 10).div_ceil(median_ns)).max(1) as usize;
    let nnz_per_window = if averaging_ns.is_some() {
        n_types + 1
    } else {
        4
    };
    while (idx.len() / stride) * nnz_per_window > config.max_design_entries {
        stride *= 2;
    }
    if stride > 1 {
        notes.push(format!(
            "{stride} sample intervals merged per regression window (sensor update \
             period or design size)"
        ));
    }
    let refresh_lag_ns = series.meta().update_period_ns / 2;
    let origin_ns = interval
        .spans_complete_from
        .0
        .saturating_sub(w_ns + refresh_lag_ns);
    let secs = |t: MonotonicNs| (t.0 as f64 - origin_ns as f64) * 1e-9;
    let mut windows = Vec::new();
    let mut k = 0;
    while k + stride < idx.len() {
        let (a, ea) = samples[idx[k]];
        let (b, eb) = samples[idx[k + stride]];
        k += stride;
        // The model needs the activity of [a - W, b] to be known.
        if a.saturating_sub_ns(w_ns) < interval.spans_complete_from
            || (w_ns > 0 && a.0 < interval.spans_complete_from.0.saturating_add(w_ns))
        {
            continue;
        }
        // A sensor refreshed every U shows the value of its last refresh:
        // read at unsynchronised times, that is on average U/2 old, so the
        // energy between two readings is that of the window U/2 earlier.
        let sample_s = if w_ns > 0 {
            idx[k - stride..=k]
                .iter()
                .map(|&i| secs(samples[i].0.saturating_sub_ns(refresh_lag_ns)))
                .collect()
        } else {
            Vec::new()
        };
        windows.push(Window {
            start: a.saturating_sub_ns(refresh_lag_ns),
            end: b.saturating_sub_ns(refresh_lag_ns),
            energy_j: eb - ea,
            sample_s,
        });
    }
    // Baseline blocks tile [origin, to]: block k is column n_types + k.
    let span_ns = to.0.saturating_sub(origin_ns).max(1);
    let mut block_ns = if config.baseline_block_ns == 0 {
        span_ns
    } else {
        config.baseline_block_ns.max(4 * w_ns)
    };
    let max_blocks = config.max_baseline_blocks.max(1) as u64;
    if span_ns.div_ceil(block_ns) > max_blocks {
        block_ns = span_ns.div_ceil(max_blocks);
    }
    // A last block shorter than half a block joins the one before.
    let mut n_blocks = (span_ns / block_ns).max(1) as usize;
    if span_ns % block_ns >= block_ns / 2 && span_ns > block_ns {
        n_blocks += 1;
    }
    let block_start_s = |k: usize| (k as u64 * block_ns) as f64 * 1e-9;
    let block_end_s = |k: usize| {
        if k + 1 == n_blocks {
            f64::INFINITY
        } else {
            ((k as u64 + 1) * block_ns) as f64 * 1e-9
        }
    };
    let block_of = |x: f64| ((x.max(0.0) / (block_ns as f64 * 1e-9)) as usize).min(n_blocks - 1);
    let unknowns = n_types + n_blocks;
    if windows.len() < unknowns + 2 {
        notes.push(format!(
            "only {} usable sample windows for {unknowns} unknowns: no regression{}",
            windows.len(),
            if w_ns > 0 {
                " (windows within one averaging window of the span coverage start are unusable)"
            } else {
                ""
            }
        ));
        return None;
    }

    // Design rows, sparse.
    let timelines: Vec<Timeline> = by_time
        .iter()
        .map(|&j| {
            Timeline::new(
                spans
                    .iter()
                    .filter(|s| s.name as usize == j)
                    .map(|s| (secs(s.start), secs(s.end))),
            )
        })
        .collect();
    let w_s = averaging_ns.map(|w| w as f64 * 1e-9);
    // Baseline regressors: the part of the window that falls in each block,
    // or for an averaging sensor the trapezoid of the block's averaged view.
    let mut rows: Vec<Vec<(usize, f64)>> = windows
        .iter()
        .map(|w| {
            let (a, b) = (secs(w.start), secs(w.end));
            let reach = w_s.unwrap_or(0.0);
            (block_of(a - reach)..=block_of(b))
                .filter_map(|k| {
                    let (lo, hi) = (block_start_s(k), block_end_s(k));
                    let x = match w_s {
                        None => (b.min(hi) - a.max(lo)).max(0.0),
                        Some(avg) => trapezoid(&w.sample_s, |t| block_averaged_at(lo, hi, t, avg)),
                    };
                    (x > 1e-15).then_some((n_types + k, x))
                })
                .collect()
        })
        .collect();
    let mut active_windows = vec![0usize; type_count];
    for (c, tl) in timelines.iter().enumerate() {
        let (Some(&t_first), Some(&t_last)) = (tl.t.first(), tl.t.last()) else {
            continue;
        };
        let reach = w_s.unwrap_or(0.0);
        // Windows that can see this type: ending after its first span
        // starts, starting before its last span ends plus the averaging window.
        let lo = windows.partition_point(|w| secs(w.end) <= t_first);
        let hi = windows.partition_point(|w| secs(w.start) < t_last + reach);
        for (k, w) in windows.iter().enumerate().take(hi).skip(lo) {
            let x = match w_s {
                None => tl.busy_at(secs(w.end)) - tl.busy_at(secs(w.start)),
                Some(avg) => trapezoid(&w.sample_s, |t| tl.averaged_at(t, avg)),
            };
            if x > 1e-15 {
                rows[k].push((c, x));
                active_windows[by_time[c]] += 1;
            }
        }
    }
    let mut eq = NormalEquations::new(unknowns);
    for (row, w) in rows.iter().zip(&windows) {
        eq.add_sparse_row(row, w.energy_j);
    }
    let solution = match nnls_normal(&eq) {
        Ok(s) => s,
        Err(e) => {
            notes.push(format!("regression failed: {e}"));
            return None;
        }
    };
    // Residuals from the rows themselves (no cancellation).
    let residuals: Vec<f64> = rows
        .iter()
        .zip(&windows)
        .map(|(row, w)| w.energy_j - row.iter().map(|&(c, v)| v * solution.x[c]).sum::<f64>())
        .collect();
    let rss: f64 = residuals.iter().map(|r| r * r).sum();
    let passive: Vec<usize> = (0..unknowns).filter(|&c| solution.passive[c]).collect();
    let dof = windows.len().saturating_sub(passive.len()).max(1);
    let sigma2 = rss / dof as f64;
    let rho = {
        let num: f64 = residuals.windows(2).map(|p| p[0] * p[1]).sum();
        if rss > 0.0 {
            (num / rss).clamp(0.0, 0.99)
        } else {
            0.0
        }
    };
    let inflation = (1.0 + rho) / (1.0 - rho);
    let var_scale = sigma2 * inflation;

    let mut se = vec![f64::INFINITY; unknowns];
    let mut dependent = solution.dependent.clone();
    if let Some(inv) = inverse_on(&eq.gram, unknowns, &passive) {
        for (a, &c) in passive.iter().enumerate() {
            se[c] = (var_scale * inv[a * passive.len() + a]).max(0.0).sqrt();
        }
    }
    for c in 0..unknowns {
        if solution.passive[c] || dependent[c] {
            continue;
        }
        // At the zero bound: the standard error it would have if free.
        let mut set = passive.clone();
        set.push(c);
        match inverse_on(&eq.gram, unknowns, &set) {
            Some(inv) => {
                let a = set.len() - 1;
                se[c] = (var_scale * inv[a * set.len() + a]).max(0.0).sqrt();
            }
            None => dependent[c] = true,
        }
    }

    let mut power_w = vec![0.0; type_count];
    let mut power_se_w = vec![f64::INFINITY; type_count];
    let mut type_dependent = vec![true; type_count];
    for (c, &j) in by_time.iter().enumerate() {
        power_w[j] = solution.x[c];
        power_se_w[j] = se[c];
        type_dependent[j] = dependent[c];
    }
    let mean_window_ns =
        windows.iter().map(|w| w.end.0 - w.start.0).sum::<u64>() / windows.len() as u64;
    let baseline: Vec<BaselineBlock> = (0..n_blocks)
        .map(|k| BaselineBlock {
            start: MonotonicNs(origin_ns.saturating_add(k as u64 * block_ns)),
            power_w: solution.x[n_types + k],
            uncertainty_w: se[n_types + k],
        })
        .collect();
    // Time-weighted mean over the windows' span (blocks before the first
    // window only hold the averaging sensor's lead-in).
    let (first_s, last_s) = (secs(windows[0].start), secs(windows[windows.len() - 1].end));
    let mut weight_sum = 0.0;
    let mut baseline_w = 0.0;
    let mut baseline_var = 0.0;
    for (k, block) in baseline.iter().enumerate() {
        let weight = (last_s.min(block_end_s(k)) - first_s.max(block_start_s(k))).max(0.0);
        weight_sum += weight;
        baseline_w += weight * block.power_w;
        baseline_var += (weight * block.uncertainty_w).powi(2);
    }
    let (baseline_w, baseline_uncertainty_w) = if weight_sum > 0.0 {
        (baseline_w / weight_sum, baseline_var.sqrt() / weight_sum)
    } else {
        (baseline[0].power_w, baseline[0].uncertainty_w)
    };
    let (baseline_min_w, baseline_max_w) = baseline
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), b| {
            (lo.min(b.power_w), hi.max(b.power_w))
        });
    notes.push(format!(
        "{} fit over {} windows of ~{} µs: baseline {:.4} W (mean of {n_blocks} block(s) of \
         {:.1} s, {baseline_min_w:.4}..{baseline_max_w:.4} W), residual sd {:.3e} J, \
         residual autocorrelation {:.2}{}",
        if averaging_ns.is_some() {
            "deconvolved non-negative least-squares"
        } else {
            "non-negative least-squares"
        },
        windows.len(),
        mean_window_ns / 1000,
        baseline_w,
        block_ns as f64 * 1e-9,
        sigma2.sqrt(),
        rho,
        match averaging_ns {
            Some(w) => format!(
                "; design convolved with the sensor's {} ms averaging window",
                w / 1_000_000
            ),
            None => String::new(),
        }
    ));
    Some(Fit {
        baseline,
        power_w,
        power_se_w,
        dependent: type_dependent,
        active_windows,
        summary: FitSummary {
            windows: windows.len(),
            stride,
            window_ns: mean_window_ns,
            baseline_w,
            baseline_uncertainty_w,
            baseline_blocks: n_blocks,
            baseline_block_ns: block_ns,
            residual_sd_j: sigma2.sqrt(),
            residual_autocorrelation: rho,
            averaging_window_ns: averaging_ns,
        },
    })
}

/// Integration of long spans (see the module doc); fills the results of
/// types marked long.
#[allow(clippy::too_many_arguments)]
fn integrate_long_spans(
    series: &EnergySeries<'_>,
    spans: &[KernelSpan],
    interval: &AttributionInterval,
    process: &ProcessEnergy,
    fit: Option<&Fit>,
    is_long: &[bool],
    results: &mut [KernelTypeResult],
    config: &KernelConfig,
    notes: &mut Vec<String>,
) {
    if !is_long.iter().any(|&l| l) {
        return;
    }
    let (from, to) = (interval.from, interval.to);
    let pieces = series.pieces(from, to);
    if pieces.is_empty() {
        for r in results
            .iter_mut()
            .filter(|r| r.method == Method::Integrated)
        {
            r.method = Method::Insufficient;
            r.reason = Some("no energy samples cover the interval".to_owned());
        }
        return;
    }
    // Baseline: the fit's when there is one (power with no kernel of this
    // process running, so what is above it is this process's kernels);
    // otherwise the idle power, scaled to the process's share of dynamic power.
    let (baseline_w, baseline_se_w, process_factor) = match fit {
        Some(f) => (f.summary.baseline_w, f.summary.baseline_uncertainty_w, 1.0),
        None => (
            process.idle_power_w,
            0.0,
            process.dynamic_share_of_machine.clamp(0.0, 1.0),
        ),
    };
    if let Some(w) = series.averaging_window_ns() {
        notes.push(format!(
            "long spans integrated from the {} ms averaging sensor's smoothed history: \
             not deconvolved; their uncertainty is widened by ΔP × W / 2 at each span edge",
            w / 1_000_000
        ));
    }
    notes.push(match fit {
        Some(_) => format!(
            "long spans integrated over the history above the fitted baseline (mean \
             {baseline_w:.4} W, per block)"
        ),
        None => format!(
            "long spans integrated over the history above idle power ({baseline_w:.4} W), \
             times the process's share of dynamic power ({process_factor:.3})"
        ),
    });
    // Baseline power and its uncertainty in each piece: the fit's block
    // baseline there, or the constant fallback.
    let piece_baseline: Vec<(f64, f64)> = pieces
        .iter()
        .map(|p| match fit {
            Some(f) => f.baseline_at(MonotonicNs(p.start.0 + p.len_ns() / 2)),
            None => (baseline_w, baseline_se_w),
        })
        .collect();
    let piece_start: Vec<u64> = pieces.iter().map(|p| p.start.0).collect();
    let overlap = |p: &crate::series::Piece, s: &KernelSpan| -> u64 {
        s.end.min(p.end).saturating_sub(s.start.max(p.start))
    };
    // Per piece: long-span overlap and the fitted energy of short kernels.
    let mut long_overlap_ns = vec![0u64; pieces.len()];
    let mut short_j = vec![0.0; pieces.len()];
    for s in spans {
        if s.end <= from || s.start >= to {
            continue;
        }
        let lo = piece_start
            .partition_point(|&t| t < s.start.0)
            .saturating_sub(1);
        for (k, p) in pieces.iter().enumerate().skip(lo) {
            if p.start >= s.end {
                break;
            }
            let o = overlap(p, s);
            if o == 0 {
                continue;
            }
            let j = s.name as usize;
            if is_long[j] {
                long_overlap_ns[k] += o;
            } else if let Some(f) = fit {
                short_j[k] += f.power_w[j] * o as f64 * 1e-9;
            }
        }
    }
    let window_w = series.averaging_window_ns().map(|w| w as f64 * 1e-9);
    let type_count = is_long.len();
    let mut energy = vec![0.0; type_count];
    let mut var = vec![0.0; type_count];
    let mut covered_ns = vec![0u64; type_count];
    for s in spans {
        let j = s.name as usize;
        if !is_long[j] || s.end <= from || s.start >= to {
            continue;
        }
        let lo = piece_start
            .partition_point(|&t| t < s.start.0)
            .saturating_sub(1);
        let mut end_error = 0.0;
        let mut baseline_sd_j = 0.0;
        for (k, p) in pieces.iter().enumerate().skip(lo) {
            if p.start >= s.end {
                break;
            }
            let o = overlap(p, s);
            if o == 0 || long_overlap_ns[k] == 0 {
                continue;
            }
            covered_ns[j] = covered_ns[j].saturating_add(o);
            let dt_s = p.len_ns() as f64 * 1e-9;
            let (piece_baseline_w, piece_baseline_se_w) = piece_baseline[k];
            let above = ((p.energy_j - piece_baseline_w * dt_s).max(0.0) * process_factor
                - short_j[k])
                .max(0.0);
            energy[j] += above * o as f64 / long_overlap_ns[k] as f64;
            // Baseline errors within a block are one error: add linearly.
            baseline_sd_j += piece_baseline_se_w * o as f64 * 1e-9;
            // A span end inside a sample interval: where in it the energy
            // fell is unknown (same bound as the series' interpolation).
            let f = o as f64 / p.sample_interval_ns as f64;
            if f < 1.0 {
                let whole = p.energy_j * p.sample_interval_ns as f64 / p.len_ns().max(1) as f64;
                end_error += (whole * f.min(1.0 - f)).powi(2) / 3.0;
            }
        }
        let smear = match window_w {
            // The integral of a trailing average is off by about
            // ΔP × W / 2 at each end of the span.
            Some(w) => {
                let pa = series.power_at_w(s.start).unwrap_or(0.0);
                let pb = series.power_at_w(s.end).unwrap_or(0.0);
                (pa - pb).abs() * w / 2.0
            }
            None => 0.0,
        };
        var[j] += end_error + baseline_sd_j.powi(2) + smear * smear;
    }
    // Counter quantisation: two readings per span end, independent.
    let res = series.meta().resolution_j;
    for r in results
        .iter_mut()
        .filter(|r| r.method == Method::Integrated)
    {
        let j = r.name as usize;
        let quant_var = r.count as f64 * res * res / 6.0;
        let sd = (var[j] + quant_var).sqrt();
        let coverage = if r.total_time_ns > 0 {
            (covered_ns[j] as f64 / r.total_time_ns as f64).min(1.0)
        } else {
            0.0
        };
        let e = energy[j];
        r.energy_j = Some(e);
        r.uncertainty_j = sd;
        r.power_w = (r.total_time_ns > 0).then(|| e / (r.total_time_ns as f64 * 1e-9));
        r.power_uncertainty_w = if r.total_time_ns > 0 {
            sd / (r.total_time_ns as f64 * 1e-9)
        } else {
            0.0
        };
        let rse = if e > 0.0 { sd / e } else { f64::INFINITY };
        r.confidence = coverage * confidence(rse, config.confidence_reference_rse);
        if coverage < 1.0 {
            r.reason = Some(format!(
                "samples cover {:.1}% of its span time",
                coverage * 100.0
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::SeriesMeta;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use shared::source::ReadingKind;

    const BASE: u64 = 1_000_000_000_000;

    /// A schedule of `types.len()` kernel types with the given powers on
    /// `threads` threads: each thread runs kernels of ~`mean_ns`, types
    /// drawn from a mix that changes every `phase_ns`, with gaps.
    fn schedule(
        powers_w: &[f64],
        threads: u32,
        mean_ns: u64,
        duration_ns: u64,
        phase_ns: u64,
        seed: u64,
    ) -> Vec<(KernelSpan, f64)> {
        let mut rng = StdRng::seed_from_u64(seed);
        let phases = duration_ns / phase_ns + 1;
        let mixes: Vec<Vec<f64>> = (0..phases)
            .map(|_| {
                (0..powers_w.len())
                    .map(|_| rng.gen_range(0.05..1.0))
                    .collect()
            })
            .collect();
        let mut out = Vec::new();
        for tid in 0..threads {
            let mut t = rng.gen_range(0..mean_ns);
            while t < duration_ns {
                let mix = &mixes[(t / phase_ns) as usize];
                let total: f64 = mix.iter().sum();
                let mut u = rng.gen_range(0.0..total);
                let mut j = 0;
                while j + 1 < mix.len() && u >= mix[j] {
                    u -= mix[j];
                    j += 1;
                }
                let dur = rng.gen_range(mean_ns / 2..mean_ns * 3 / 2);
                let end = (t + dur).min(duration_ns);
                out.push((
                    KernelSpan {
                        name: j as u32,
                        start: MonotonicNs(BASE + t),
                        end: MonotonicNs(BASE + end),
                        tid,
                    },
                    powers_w[j],
                ));
                t = end + rng.gen_range(0..mean_ns);
            }
        }
        out
    }

    /// True cumulative energy at `t`: baseline plus every span's power over
    /// its overlap with [BASE, t].
    fn true_energy(spans: &[(KernelSpan, f64)], baseline_w: f64, t: u64) -> f64 {
        let dynamic: f64 = spans
            .iter()
            .map(|(s, p)| p * (s.end.0.min(t).saturating_sub(s.start.0)) as f64 * 1e-9)
            .sum();
        // The baseline has been running for long (a second before BASE).
        dynamic + baseline_w * t.saturating_sub(BASE - 1_000_000_000) as f64 * 1e-9
    }

    fn counter_history(
        spans: &[(KernelSpan, f64)],
        baseline_w: f64,
        period_ns: u64,
        duration_ns: u64,
    ) -> Vec<(MonotonicNs, f64)> {
        (0..=duration_ns / period_ns)
            .map(|k| {
                let t = BASE + k * period_ns;
                (MonotonicNs(t), true_energy(spans, baseline_w, t))
            })
            .collect()
    }

    fn meta(reading: ReadingKind, update_period_ns: u64) -> SeriesMeta {
        SeriesMeta {
            provenance: Provenance::Simulated,
            resolution_j: 0.0,
            update_period_ns,
            reading,
        }
    }

    fn process_of(series: &EnergySeries<'_>, idle_w: f64) -> ProcessEnergy {
        let (a, b) = series.span();
        let total = series.energy_between(a, b).unwrap().joules;
        ProcessEnergy {
            process_j: total,
            process_dynamic_j: total - idle_w * b.saturating_sub(a) as f64 * 1e-9,
            dynamic_share_of_machine: 1.0,
            idle_power_w: idle_w,
            provenance: Provenance::Simulated,
        }
    }

    fn assert_parts_add_up(a: &KernelAttribution) {
        let sum: f64 = a.types.iter().filter_map(|t| t.energy_j).sum();
        assert!(
            (sum + a.unattributed_j - a.process_j).abs() <= 1e-9 * a.process_j.max(1.0),
            "{sum} + {} != {}",
            a.unattributed_j,
            a.process_j
        );
        assert!(a.unattributed_j >= 0.0);
    }

    #[test]
    fn regression_recovers_known_powers_of_short_overlapping_kernels() {
        let powers = [5.0, 12.0, 30.0];
        let duration = 20_000_000_000;
        let spans = schedule(&powers, 2, 1_000_000, duration, 500_000_000, 7);
        let history = counter_history(&spans, 15.0, 10_000_000, duration);
        let series = EnergySeries::new(&history, meta(ReadingKind::CumulativeEnergy, 0)).unwrap();
        let (from, to) = series.span();
        let ks: Vec<KernelSpan> = spans.iter().map(|s| s.0).collect();
        let a = attribute_spans(
            &series,
            &ks,
            3,
            &AttributionInterval::new(from, to),
            &process_of(&series, 15.0),
            &KernelConfig::default(),
        )
        .unwrap();
        assert_parts_add_up(&a);
        for r in &a.types {
            let want = powers[r.name as usize];
            assert_eq!(r.method, Method::Regression);
            let got = r.power_w.unwrap();
            assert!(
                (got - want).abs() < 0.01 * want,
                "type {}: {got} vs {want}",
                r.name
            );
            let truth: f64 = spans
                .iter()
                .filter(|s| s.0.name == r.name)
                .map(|s| s.1 * s.0.end.saturating_sub(s.0.start) as f64 * 1e-9)
                .sum();
            let e = r.energy_j.unwrap();
            assert!(
                (e - truth).abs() < 0.01 * truth,
                "type {}: {e} vs {truth}",
                r.name
            );
            assert!(r.confidence > 0.9);
        }
        let fit = a.fit.unwrap();
        assert!((fit.baseline_w - 15.0).abs() < 0.1, "{}", fit.baseline_w);
        assert!(fit.baseline_blocks >= 10);
    }

    #[test]
    fn a_single_short_instance_gets_no_figure() {
        let powers = [10.0, 20.0];
        let duration = 10_000_000_000;
        let mut spans = schedule(&powers, 1, 1_000_000, duration, 500_000_000, 3);
        spans.push((
            KernelSpan {
                name: 2,
                start: MonotonicNs(BASE + 5_000_000_000),
                end: MonotonicNs(BASE + 5_001_000_000),
                tid: 9,
            },
            50.0,
        ));
        let history = counter_history(&spans, 10.0, 10_000_000, duration);
        let series =
            EnergySeries::new(&history, meta(ReadingKind::CumulativeEnergy, 1_000_000)).unwrap();
        let (from, to) = series.span();
        let ks: Vec<KernelSpan> = spans.iter().map(|s| s.0).collect();
        let a = attribute_spans(
            &series,
            &ks,
            3,
            &AttributionInterval::new(from, to),
            &process_of(&series, 10.0),
            &KernelConfig::default(),
        )
        .unwrap();
        assert_parts_add_up(&a);
        let single = a.types.iter().find(|t| t.name == 2).unwrap();
        assert_eq!(single.method, Method::Insufficient);
        assert_eq!(single.energy_j, None);
        assert_eq!(single.count, 1);
        assert!(single.reason.as_deref().unwrap().contains("1 instance"));
        assert!(a.notes.iter().any(|n| n.contains("without a figure")));
    }

    #[test]
    fn types_that_always_run_together_are_not_separated() {
        // Type 1 runs exactly when type 0 does (on another thread): their
        // regressors are identical, only their sum is known.
        let duration = 10_000_000_000;
        let base_spans = schedule(&[10.0], 1, 1_000_000, duration, 500_000_000, 5);
        let mut spans = Vec::new();
        for (s, _) in &base_spans {
            spans.push((*s, 10.0));
            spans.push((
                KernelSpan {
                    name: 1,
                    tid: 1,
                    ..*s
                },
                5.0,
            ));
        }
        let history = counter_history(&spans, 10.0, 10_000_000, duration);
        let series =
            EnergySeries::new(&history, meta(ReadingKind::CumulativeEnergy, 1_000_000)).unwrap();
        let (from, to) = series.span();
        let ks: Vec<KernelSpan> = spans.iter().map(|s| s.0).collect();
        let a = attribute_spans(
            &series,
            &ks,
            2,
            &AttributionInterval::new(from, to),
            &process_of(&series, 10.0),
            &KernelConfig::default(),
        )
        .unwrap();
        assert_parts_add_up(&a);
        let insufficient = a
            .types
            .iter()
            .filter(|t| t.method == Method::Insufficient)
            .count();
        assert!(insufficient >= 1, "{:?}", a.types);
    }

    #[test]
    fn long_spans_are_integrated_above_the_baseline() {
        // Two long spans (1 s each at 40 W above a 10 W baseline) among
        // short kernels that give the fit its baseline.
        let duration = 10_000_000_000;
        let mut spans = schedule(&[8.0], 1, 1_000_000, duration, 500_000_000, 11);
        for start_s in [2u64, 6] {
            spans.push((
                KernelSpan {
                    name: 1,
                    start: MonotonicNs(BASE + start_s * 1_000_000_000),
                    end: MonotonicNs(BASE + (start_s + 1) * 1_000_000_000),
                    tid: 5,
                },
                40.0,
            ));
        }
        let history = counter_history(&spans, 10.0, 10_000_000, duration);
        let series =
            EnergySeries::new(&history, meta(ReadingKind::CumulativeEnergy, 1_000_000)).unwrap();
        let (from, to) = series.span();
        let ks: Vec<KernelSpan> = spans.iter().map(|s| s.0).collect();
        let a = attribute_spans(
            &series,
            &ks,
            2,
            &AttributionInterval::new(from, to),
            &process_of(&series, 10.0),
            &KernelConfig::default(),
        )
        .unwrap();
        assert_parts_add_up(&a);
        let long = a.types.iter().find(|t| t.name == 1).unwrap();
        assert_eq!(long.method, Method::Integrated);
        let e = long.energy_j.unwrap();
        assert!((e - 80.0).abs() < 0.8, "{e}");
        assert!(long.confidence > 0.9);
    }

    #[test]
    fn averaging_sensor_is_deconvolved() {
        // A sensor averaging over 200 ms, read every 10 ms, integrated by
        // the trapezoid rule; the kernel mix changes every 400 ms.
        let powers = [6.0, 25.0];
        let duration = 30_000_000_000;
        let window = 200_000_000;
        let spans = schedule(&powers, 2, 1_000_000, duration, 400_000_000, 13);
        let avg = |t: u64| {
            (true_energy(&spans, 20.0, t) - true_energy(&spans, 20.0, t - window))
                / (window as f64 * 1e-9)
        };
        let mut history = Vec::new();
        let mut cumulative = 0.0;
        let mut last: Option<(u64, f64)> = None;
        for k in 0..=duration / 10_000_000 {
            let t = BASE + k * 10_000_000;
            let p = avg(t);
            if let Some((tp, pp)) = last {
                cumulative += 0.5 * (p + pp) * (t - tp) as f64 * 1e-9;
            }
            last = Some((t, p));
            history.push((MonotonicNs(t), cumulative));
        }
        let series = EnergySeries::new(
            &history,
            meta(ReadingKind::AveragedPower { window_ns: window }, 0),
        )
        .unwrap();
        let (from, to) = series.span();
        let ks: Vec<KernelSpan> = spans.iter().map(|s| s.0).collect();
        // Nothing ran before BASE: spans are complete from a window earlier.
        let interval = AttributionInterval {
            from,
            to,
            spans_complete_from: from.saturating_sub_ns(window),
        };
        let a = attribute_spans(
            &series,
            &ks,
            2,
            &interval,
            &process_of(&series, 20.0),
            &KernelConfig::default(),
        )
        .unwrap();
        assert_parts_add_up(&a);
        for r in &a.types {
            assert_eq!(r.method, Method::Deconvolved);
            let want = powers[r.name as usize];
            let got = r.power_w.unwrap();
            assert!(
                (got - want).abs() < 0.03 * want,
                "type {}: {got} vs {want}",
                r.name
            );
        }
        assert_eq!(a.fit.unwrap().averaging_window_ns, Some(window));
        assert!(a.notes.iter().any(|n| n.contains("deconvolved")));
    }

    #[test]
    fn short_interval_is_flagged_and_bad_input_refused() {
        let history = [
            (MonotonicNs(BASE), 0.0),
            (MonotonicNs(BASE + 1_000_000), 0.01),
        ];
        let series =
            EnergySeries::new(&history, meta(ReadingKind::CumulativeEnergy, 50_000_000)).unwrap();
        let span = KernelSpan {
            name: 0,
            start: MonotonicNs(BASE + 100_000),
            end: MonotonicNs(BASE + 200_000),
            tid: 1,
        };
        let interval = AttributionInterval::new(MonotonicNs(BASE), MonotonicNs(BASE + 1_000_000));
        let process = process_of(&series, 0.0);
        let a = attribute_spans(
            &series,
            &[span],
            1,
            &interval,
            &process,
            &KernelConfig::default(),
        )
        .unwrap();
        assert!(a.below_update_period);
        assert_eq!(a.types[0].energy_j, None);
        assert_parts_add_up(&a);

        let reversed = KernelSpan {
            start: span.end,
            end: span.start,
            ..span
        };
        let cfg = KernelConfig::default();
        assert!(matches!(
            attribute_spans(&series, &[reversed], 1, &interval, &process, &cfg),
            Err(AttributionError::BadSpan { index: 0, .. })
        ));
        assert!(matches!(
            attribute_spans(&series, &[span], 0, &interval, &process, &cfg),
            Err(AttributionError::BadSpan { index: 0, .. })
        ));
        let backwards = AttributionInterval::new(interval.to, interval.from);
        assert!(matches!(
            attribute_spans(&series, &[span], 1, &backwards, &process, &cfg),
            Err(AttributionError::BadInterval { .. })
        ));
        let negative = ProcessEnergy {
            process_j: -1.0,
            ..process
        };
        assert!(attribute_spans(&series, &[span], 1, &interval, &negative, &cfg).is_err());
    }

    /// Spans and intervals at the ends of the clock (a hostile or corrupt
    /// client's) give an answer whose parts add up, not an overflow.
    #[test]
    fn spans_covering_the_whole_clock_do_not_overflow() {
        let history: Vec<(MonotonicNs, f64)> = (0..50u64)
            .map(|k| (MonotonicNs(BASE + k * 10_000_000), k as f64 * 0.1))
            .collect();
        let series =
            EnergySeries::new(&history, meta(ReadingKind::CumulativeEnergy, 1_000_000)).unwrap();
        let process = process_of(&series, 0.0);
        let whole = KernelSpan {
            name: 0,
            start: MonotonicNs(0),
            end: MonotonicNs(u64::MAX),
            tid: 1,
        };
        let late = KernelSpan {
            name: 1,
            start: MonotonicNs(u64::MAX - 1),
            end: MonotonicNs(u64::MAX),
            tid: 2,
        };
        let spans: Vec<KernelSpan> = (0..8).map(|_| whole).chain([late; 3]).collect();
        for interval in [
            AttributionInterval::new(MonotonicNs(0), MonotonicNs(u64::MAX)),
            AttributionInterval::new(MonotonicNs(BASE), MonotonicNs(u64::MAX)),
            AttributionInterval::new(MonotonicNs(BASE), MonotonicNs(BASE + 490_000_000)),
        ] {
            let a = attribute_spans(
                &series,
                &spans,
                2,
                &interval,
                &process,
                &KernelConfig::default(),
            )
            .unwrap();
            assert_parts_add_up(&a);
            assert_eq!(a.types[0].count, 8);
        }
    }
}

#[cfg(test)]
mod invariant_tests {
    use super::*;
    use crate::series::SeriesMeta;
    use proptest::prelude::*;
    use shared::source::ReadingKind;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever the spans and the process energy, the parts add up and
        /// nothing is negative.
        #[test]
        fn parts_always_add_up(
            powers in proptest::collection::vec(0.0f64..50.0, 41),
            raw_spans in proptest::collection::vec((0u32..4, 0u64..400_000_000, 0u64..60_000_000), 0..300),
            process_scale in 0.0f64..2.0,
        ) {
            // A history of 400 ms in 10 ms samples with arbitrary powers.
            let mut e = 0.0;
            let history: Vec<(MonotonicNs, f64)> = powers
                .iter()
                .enumerate()
                .map(|(k, p)| {
                    if k > 0 {
                        e += p * 0.01;
                    }
                    (MonotonicNs(1_000_000_000 + k as u64 * 10_000_000), e)
                })
                .collect();
            let meta = SeriesMeta {
                provenance: Provenance::Simulated,
                resolution_j: 1e-6,
                update_period_ns: 1_000_000,
                reading: ReadingKind::CumulativeEnergy,
            };
            let series = EnergySeries::new(&history, meta).unwrap();
            let spans: Vec<KernelSpan> = raw_spans
                .iter()
                .map(|&(name, start, len)| KernelSpan {
                    name,
                    start: MonotonicNs(1_000_000_000 + start),
                    end: MonotonicNs(1_000_000_000 + start + len),
                    tid: name,
                })
                .collect();
            let (from, to) = series.span();
            let total = series.energy_between(from, to).unwrap().joules;
            let process = ProcessEnergy {
                process_j: total * process_scale,
                process_dynamic_j: total * process_scale * 0.5,
                dynamic_share_of_machine: 0.5,
                idle_power_w: 5.0,
                provenance: Provenance::Simulated,
            };
            let config = KernelConfig { min_instances: 5, min_active_windows: 3, ..KernelConfig::default() };
            let a = attribute_spans(&series, &spans, 4, &AttributionInterval::new(from, to), &process, &config).unwrap();
            let sum: f64 = a.types.iter().filter_map(|t| t.energy_j).sum();
            prop_assert!((sum + a.unattributed_j - a.process_j).abs() <= 1e-9 * a.process_j.max(1.0));
            prop_assert!(a.unattributed_j >= 0.0);
            for t in &a.types {
                if let Some(e) = t.energy_j {
                    prop_assert!(e >= 0.0 && e.is_finite());
                    prop_assert!((0.0..=1.0).contains(&t.confidence));
                } else {
                    prop_assert!(t.method == Method::Insufficient);
                    prop_assert!(t.reason.is_some());
                }
            }
        }
    }
}
