//! The per-op energy table of a profiled program: self and total
//! (inclusive) energy per op with uncertainties, and roll-ups per profiler
//! step, `record_function` label and `nn.Module`.
//!
//! # Method: the process's dynamic energy, split by self time
//!
//! energyd attributes each domain's energy to the process by activity
//! (CPU time on CPU domains, GPU time on GPUs): `process_dynamic_j`. The
//! self-time segments of the trace partition the traced busy time, so
//! each CPU op's self energy is the process's dynamic energy on the kernel
//! domains (packages; else the estimated CPU domain; else psys — the same
//! choice as energyd's kernel figures) × its self time / the CPU threads'
//! busy time, and each GPU kernel's is the GPU domains' dynamic energy ×
//! its time / the streams' busy time. This charges every op the process's
//! average dynamic power; it is exact on energyd's estimated source, whose
//! energy *is* CPU time × power, and it assumes the traced threads do the
//! process's CPU work over the traced interval (say so where they do not).
//!
//! Why not energyd's per-type regression (kept in the rows as `fit_*`):
//! a training loop repeats the same mixture of ops every few
//! milliseconds, and the self segments cover the process's busy time, so
//! over 10 ms sample windows the per-type busy times are nearly
//! collinear with each other and with the fit's baseline; on the
//! committed trace replayed for 20 s on a model of the estimated source
//! the fit gave `aten::addmm` (2.0 s of self time) 0 J and `aten::div`
//! (0.3 s) 5.6 J, ten times what a CPU can spend in that time. Where a
//! source resolves ops (RAPL at 1 kHz, spans of distinct phases) the fit
//! is there to compare.
//!
//! Uncertainty: the process energy's uncertainty, shared by all ops in
//! proportion to their time (added linearly), and, on a measured source,
//! a model term of [`MEASURED_POWER_SPREAD`] × the op's energy for how far
//! one op's power may sit from the process average (independent between
//! ops, added in quadrature); on an estimated or simulated source there is
//! no such term, since the source itself charges CPU time at one power.
//! Each op's self energy is spread over its instances by self time, so a
//! subtree's energy is `Σ_ops self_time_in_subtree × rate(op)`; a GPU
//! kernel counts in the inclusive figures of the op that launched it.
//!
//! Formatting ([`OpTable::render_text`], [`OpTable::to_json`]) returns
//! values; printing is the caller's.

use crate::calltree::{CallForest, NodeKind};
use serde_json::json;
use shared::protocol::{AttributionMethod, Breakdown, KernelEnergy};
use shared::source::SourceInfo;
use shared::{Domain, Provenance, SourceId};
use std::collections::HashMap;

/// Relative spread of one op's power around the process average on a
/// measured source (1σ): compute-bound GEMMs draw more than memory-bound
/// element-wise ops; ±30 % is an assumption, stated wherever it is used.
pub const MEASURED_POWER_SPREAD: f64 = 0.3;

/// One op: self and inclusive figures.
#[derive(Debug, Clone, PartialEq)]
pub struct OpRow {
    /// Op name (`ProfilerStep#*` for all steps).
    pub name: String,
    /// What it is.
    pub kind: NodeKind,
    /// Instances.
    pub count: u64,
    /// Self time, summed over instances.
    pub self_ns: u64,
    /// Inclusive time of the outermost instances.
    pub total_ns: u64,
    /// Self energy, when energyd could say.
    pub self_j: Option<f64>,
    /// One-sigma uncertainty of `self_j`.
    pub self_uncertainty_j: f64,
    /// Inclusive energy: self energy of the subtrees (and launched GPU
    /// kernels) of the outermost instances, over the parts with a figure.
    pub total_j: f64,
    /// One-sigma uncertainty of `total_j`.
    pub total_uncertainty_j: f64,
    /// Time of the subtrees whose op has no figure (`total_j` is then a
    /// lower bound).
    pub unknown_ns: u64,
    /// `self_ns / busy time` of the trace's CPU threads (GPU rows: of the
    /// GPU streams).
    pub time_share: f64,
    /// `self_j / Σ self_j` over the ops with a figure.
    pub energy_share: Option<f64>,
    /// energyd's own per-type regression figure for the op's self
    /// segments, for comparison (see the module doc), when it gave one.
    pub fit_j: Option<f64>,
    /// Its one-sigma uncertainty.
    pub fit_uncertainty_j: f64,
    /// How energyd obtained `fit_j`.
    pub fit_method: AttributionMethod,
}

/// What a roll-up groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RollupKind {
    /// One `ProfilerStep#N`.
    Step,
    /// A `record_function` label.
    Label,
    /// An `nn.Module` instance (`nn.Module: Linear_1`).
    Module,
}

impl RollupKind {
    /// Lowercase label.
    pub fn label(self) -> &'static str {
        match self {
            RollupKind::Step => "step",
            RollupKind::Label => "label",
            RollupKind::Module => "module",
        }
    }
}

/// Inclusive figures of a step, label or module.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollup {
    /// What it groups.
    pub kind: RollupKind,
    /// The span name (`ProfilerStep#3`, `forward`, `nn.Module: Linear_0`).
    pub name: String,
    /// Instances.
    pub count: u64,
    /// Inclusive time of the outermost instances.
    pub total_ns: u64,
    /// Inclusive energy over the parts with a figure.
    pub total_j: f64,
    /// Its one-sigma uncertainty.
    pub total_uncertainty_j: f64,
    /// Time without a figure inside.
    pub unknown_ns: u64,
}

/// The table.
#[derive(Debug, Clone, PartialEq)]
pub struct OpTable {
    /// Ops, by self energy (largest first), then those without a figure by
    /// self time.
    pub rows: Vec<OpRow>,
    /// Steps in order, then labels and modules by inclusive energy.
    pub rollups: Vec<Rollup>,
    /// Busy time of the CPU threads (union of top-level spans).
    pub cpu_busy_ns: u64,
    /// Busy time of the GPU streams.
    pub gpu_busy_ns: u64,
    /// Self time of CPU ops that have an energy figure.
    pub explained_ns: u64,
    /// Σ self energy of the ops with a figure.
    pub attributed_j: f64,
    /// The process's energy on the domains charged (dynamic and static).
    pub process_j: f64,
    /// Its dynamic part, which the ops share.
    pub process_dynamic_j: f64,
    /// Provenance of every energy figure here.
    pub provenance: Provenance,
    /// Threads and streams.
    pub threads: usize,
    /// Time clipped from spans that overhung their parent.
    pub clipped_ns: u64,
    /// GPU kernels linked to a launch / not linked.
    pub linked_kernels: (usize, usize),
}

impl OpTable {
    /// Builds the table from the forest, energyd's breakdown of the
    /// process over the traced interval, and the daemon's sources.
    pub fn build(forest: &CallForest, breakdown: &Breakdown, sources: &[SourceInfo]) -> OpTable {
        let fits: HashMap<&str, &KernelEnergy> = breakdown
            .kernels
            .iter()
            .map(|k| (k.name.as_str(), k))
            .collect();
        let times = forest.op_times();
        let cpu_busy_ns = forest.cpu_busy_ns();
        let gpu_busy_ns = forest.busy_ns() - cpu_busy_ns;
        let cpu_domains = cpu_kernel_domains(sources);
        let gpu_domains: Vec<SourceId> = sources
            .iter()
            .filter(|s| matches!(s.domain, Domain::Gpu { .. }))
            .map(|s| s.id)
            .collect();
        // Per side: (dynamic J, σ J, process J, provenance) over its domains.
        let side = |ids: &[SourceId]| {
            let shares: Vec<_> = breakdown
                .domains
                .iter()
                .filter(|d| ids.contains(&d.source))
                .collect();
            let dynamic: f64 = shares.iter().map(|d| d.process_dynamic_j).sum();
            let sigma = shares
                .iter()
                .map(|d| d.uncertainty_j.powi(2))
                .sum::<f64>()
                .sqrt();
            let total: f64 = shares.iter().map(|d| d.process_j).sum();
            let provenance = shares
                .iter()
                .map(|d| d.provenance)
                .reduce(Provenance::combine);
            (dynamic, sigma, total, provenance)
        };
        let cpu = side(&cpu_domains);
        let gpu = side(&gpu_domains);
        let provenance = match (cpu.3, gpu.3) {
            (Some(a), Some(b)) if gpu_busy_ns > 0 => a.combine(b),
            (Some(a), _) => a,
            (None, Some(b)) => b,
            (None, None) => Provenance::Simulated,
        };
        let spread = |p: Option<Provenance>| match p {
            Some(Provenance::Measured) => MEASURED_POWER_SPREAD,
            _ => 0.0,
        };
        // Per op: (J per ns, shared σ J per ns, model spread) where known.
        let rate_of = |kind: NodeKind| -> Option<(f64, f64, f64)> {
            let (busy, (dynamic, sigma, _, p)) = if kind == NodeKind::GpuKernel {
                (gpu_busy_ns, gpu)
            } else {
                (cpu_busy_ns, cpu)
            };
            (busy > 0 && p.is_some())
                .then(|| (dynamic / busy as f64, sigma / busy as f64, spread(p)))
        };
        let rates: Vec<Option<(f64, f64, f64)>> = times.iter().map(|t| rate_of(t.kind)).collect();
        let launched = launched_kernels(forest);
        let inclusive = |roots: &mut dyn Iterator<Item = usize>| -> (f64, f64, u64) {
            let mut per_op: HashMap<u32, u64> = HashMap::new();
            let mut stack: Vec<usize> = Vec::new();
            for root in roots {
                let n = &forest.nodes[root];
                for i in root..=root + n.descendants as usize {
                    stack.push(i);
                }
                while let Some(i) = stack.pop() {
                    let node = &forest.nodes[i];
                    *per_op.entry(node.op).or_default() += node.self_ns;
                    if let Some(ks) = launched.get(&(i as u32)) {
                        stack.extend(ks.iter().map(|&k| k as usize));
                    }
                }
            }
            let (mut j, mut shared_sigma, mut model_var, mut unknown) = (0.0, 0.0, 0.0, 0u64);
            for (op, ns) in per_op {
                match rates[op as usize] {
                    Some((rate, sigma, spread)) => {
                        let e = rate * ns as f64;
                        j += e;
                        shared_sigma += sigma * ns as f64;
                        model_var += (spread * e).powi(2);
                    }
                    None => unknown += ns,
                }
            }
            (j, (shared_sigma.powi(2) + model_var).sqrt(), unknown)
        };

        let self_energy = |op: usize, t: &crate::calltree::OpTimes| {
            rates[op].map(|(rate, sigma, spread)| {
                let e = rate * t.self_ns as f64;
                let s = sigma * t.self_ns as f64;
                (e, (s * s + (spread * e).powi(2)).sqrt())
            })
        };
        let attributed_j: f64 = times
            .iter()
            .enumerate()
            .filter_map(|(op, t)| self_energy(op, t).map(|(e, _)| e))
            .sum();
        let mut rows: Vec<OpRow> = times
            .iter()
            .enumerate()
            .map(|(op, t)| {
                let fit = fits.get(t.name.as_str());
                let own = self_energy(op, t);
                let outermost =
                    forest.nodes.iter().enumerate().filter(|(i, n)| {
                        n.op == op as u32 && !forest.has_ancestor_op(*i, op as u32)
                    });
                let (total_j, total_uncertainty_j, unknown_ns) =
                    inclusive(&mut outermost.map(|(i, _)| i));
                let busy = if t.kind == NodeKind::GpuKernel {
                    gpu_busy_ns
                } else {
                    cpu_busy_ns
                };
                OpRow {
                    name: t.name.clone(),
                    kind: t.kind,
                    count: t.count,
                    self_ns: t.self_ns,
                    total_ns: t.total_ns,
                    self_j: own.map(|(e, _)| e),
                    self_uncertainty_j: own.map_or(0.0, |(_, s)| s),
                    total_j,
                    total_uncertainty_j,
                    unknown_ns,
                    time_share: if busy > 0 {
                        t.self_ns as f64 / busy as f64
                    } else {
                        0.0
                    },
                    energy_share: own
                        .filter(|_| attributed_j > 0.0)
                        .map(|(e, _)| e / attributed_j),
                    fit_j: fit.and_then(|k| k.energy_j),
                    fit_uncertainty_j: fit.map_or(0.0, |k| k.uncertainty_j),
                    fit_method: fit.map_or(AttributionMethod::Insufficient, |k| k.method),
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            let ea = a.self_j.unwrap_or(f64::NEG_INFINITY);
            let eb = b.self_j.unwrap_or(f64::NEG_INFINITY);
            eb.total_cmp(&ea)
                .then(b.self_ns.cmp(&a.self_ns))
                .then(a.name.cmp(&b.name))
        });
        let explained_ns = rows
            .iter()
            .filter(|r| r.self_j.is_some() && r.kind != NodeKind::GpuKernel)
            .map(|r| r.self_ns)
            .sum();

        // Roll-ups: by span name, outermost instances.
        let mut groups: HashMap<(RollupKind, u32), Vec<usize>> = HashMap::new();
        for (i, n) in forest.nodes.iter().enumerate() {
            let kind = match n.kind {
                NodeKind::Step => RollupKind::Step,
                NodeKind::Label => RollupKind::Label,
                NodeKind::Module => RollupKind::Module,
                _ => continue,
            };
            let nested_in_same = {
                let mut at = n.parent;
                let mut found = false;
                while let Some(p) = at {
                    let pn = &forest.nodes[p as usize];
                    if pn.name == n.name && pn.kind == n.kind {
                        found = true;
                        break;
                    }
                    at = pn.parent;
                }
                found
            };
            if !nested_in_same {
                groups.entry((kind, n.name)).or_default().push(i);
            }
        }
        let mut rollups: Vec<(Rollup, u64)> = groups
            .into_iter()
            .map(|((kind, name), members)| {
                let (total_j, total_uncertainty_j, unknown_ns) =
                    inclusive(&mut members.iter().copied());
                let first_start = members
                    .iter()
                    .map(|&i| forest.nodes[i].start.0)
                    .min()
                    .unwrap_or(0);
                (
                    Rollup {
                        kind,
                        name: forest
                            .span_names
                            .get(name as usize)
                            .cloned()
                            .unwrap_or_default(),
                        count: members.len() as u64,
                        total_ns: members.iter().map(|&i| forest.nodes[i].total_ns()).sum(),
                        total_j,
                        total_uncertainty_j,
                        unknown_ns,
                    },
                    first_start,
                )
            })
            .collect();
        rollups.sort_by(|(a, sa), (b, sb)| {
            a.kind.cmp(&b.kind).then_with(|| match a.kind {
                RollupKind::Step => sa.cmp(sb),
                _ => b
                    .total_j
                    .total_cmp(&a.total_j)
                    .then(b.total_ns.cmp(&a.total_ns))
                    .then(a.name.cmp(&b.name)),
            })
        });
        OpTable {
            rows,
            rollups: rollups.into_iter().map(|(r, _)| r).collect(),
            cpu_busy_ns,
            gpu_busy_ns,
            explained_ns,
            attributed_j,
            provenance,
            threads: forest.threads.len(),
            clipped_ns: forest.clipped_ns,
            linked_kernels: (forest.linked_kernels, forest.unlinked_kernels),
            process_j: cpu.2 + if gpu_busy_ns > 0 { gpu.2 } else { 0.0 },
            process_dynamic_j: cpu.0 + if gpu_busy_ns > 0 { gpu.0 } else { 0.0 },
        }
    }

    /// Share of the CPU busy time whose ops have an energy figure (0..=1).
    pub fn busy_time_explained(&self) -> f64 {
        if self.cpu_busy_ns == 0 {
            0.0
        } else {
            self.explained_ns as f64 / self.cpu_busy_ns as f64
        }
    }

    /// The table for a person: the `top` ops by self energy, a `rest` row
    /// summing the others, then the roll-ups (at most `top` of each kind).
    pub fn render_text(&self, top: usize) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let p = self.provenance.label();
        let _ = writeln!(
            out,
            "  {:<44} {:>6} {:>10} {:>6} {:>12} {:>10} {:>6} {:>10} {:>12}  energyd fit",
            "op (by self energy)",
            "count",
            "self ms",
            "time%",
            format!("self J {p}"),
            "± J",
            "J%",
            "total ms",
            "total J"
        );
        let shown = self.rows.len().min(top);
        for r in &self.rows[..shown] {
            let _ = writeln!(
                out,
                "  {:<44} {:>6} {:>10.3} {:>5.1}% {:>12} {:>10} {:>6} {:>10.3} {:>12}  {}",
                clip(&r.name, 44),
                r.count,
                r.self_ns as f64 * 1e-6,
                r.time_share * 100.0,
                r.self_j.map_or("n/a".to_owned(), fmt_j),
                if r.self_j.is_some() {
                    fmt_j(r.self_uncertainty_j)
                } else {
                    String::new()
                },
                r.energy_share
                    .map_or("n/a".to_owned(), |s| format!("{:.1}%", s * 100.0)),
                r.total_ns as f64 * 1e-6,
                format!(
                    "{}{}",
                    fmt_j(r.total_j),
                    if r.unknown_ns > 0 { "+" } else { "" }
                ),
                match r.fit_j {
                    Some(f) => format!("{} ± {}", fmt_j(f), fmt_j(r.fit_uncertainty_j)),
                    None => method_label(r.fit_method).to_owned(),
                }
            );
        }
        if self.rows.len() > shown {
            let rest = &self.rows[shown..];
            let count: u64 = rest.iter().map(|r| r.count).sum();
            let self_ns: u64 = rest.iter().map(|r| r.self_ns).sum();
            let known: Vec<&OpRow> = rest.iter().filter(|r| r.self_j.is_some()).collect();
            let e: f64 = known.iter().filter_map(|r| r.self_j).sum();
            let var: f64 = known.iter().map(|r| r.self_uncertainty_j.powi(2)).sum();
            let busy = self.cpu_busy_ns.max(1) as f64;
            let _ = writeln!(
                out,
                "  {:<44} {:>6} {:>10.3} {:>5.1}% {:>12} {:>10} {:>6}  {} without a figure",
                format!("rest ({} ops)", rest.len()),
                count,
                self_ns as f64 * 1e-6,
                self_ns as f64 / busy * 100.0,
                fmt_j(e),
                fmt_j(var.sqrt()),
                if self.attributed_j > 0.0 {
                    format!("{:.1}%", e / self.attributed_j * 100.0)
                } else {
                    "n/a".to_owned()
                },
                rest.len() - known.len()
            );
        }
        let _ = writeln!(
            out,
            "  busy time {:.3} ms on {} thread(s){}; ops with an energy figure cover {:.1}% of it; \
             self energy {} ({p}): the process's dynamic energy {} split by self time \
             (static share {} not in op figures); `+`: a lower bound (part of the subtree \
             has no figure)",
            self.cpu_busy_ns as f64 * 1e-6,
            self.threads,
            if self.gpu_busy_ns > 0 {
                format!(
                    ", GPU streams busy {:.3} ms ({} kernels linked to their launch, {} not)",
                    self.gpu_busy_ns as f64 * 1e-6,
                    self.linked_kernels.0,
                    self.linked_kernels.1
                )
            } else {
                String::new()
            },
            self.busy_time_explained() * 100.0,
            fmt_j(self.attributed_j),
            fmt_j(self.process_dynamic_j),
            fmt_j(self.process_j - self.process_dynamic_j)
        );
        if self.clipped_ns > 0 {
            let _ = writeln!(
                out,
                "  {:.3} ms of spans overhanging their parent were clipped",
                self.clipped_ns as f64 * 1e-6
            );
        }
        for kind in [RollupKind::Step, RollupKind::Label, RollupKind::Module] {
            let of_kind: Vec<&Rollup> = self.rollups.iter().filter(|r| r.kind == kind).collect();
            if of_kind.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "\n  {:<44} {:>6} {:>10} {:>12} {:>10}",
                format!("per {} (inclusive)", kind.label()),
                "count",
                "total ms",
                "total J",
                "± J"
            );
            for r in of_kind.iter().take(top) {
                let _ = writeln!(
                    out,
                    "  {:<44} {:>6} {:>10.3} {:>12} {:>10}",
                    clip(&r.name, 44),
                    r.count,
                    r.total_ns as f64 * 1e-6,
                    format!(
                        "{}{}",
                        fmt_j(r.total_j),
                        if r.unknown_ns > 0 { "+" } else { "" }
                    ),
                    fmt_j(r.total_uncertainty_j)
                );
            }
            if of_kind.len() > top {
                let _ = writeln!(out, "  ({} more in --json)", of_kind.len() - top);
            }
        }
        out
    }

    /// Every row and roll-up, for `--json`.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "provenance": self.provenance.label(),
            "cpu_busy_time_s": self.cpu_busy_ns as f64 * 1e-9,
            "gpu_busy_time_s": self.gpu_busy_ns as f64 * 1e-9,
            "busy_time_explained": self.busy_time_explained(),
            "attributed_self_energy_j": self.attributed_j,
            "process_energy_j": self.process_j,
            "process_dynamic_energy_j": self.process_dynamic_j,
            "method": "process dynamic energy split by self time",
            "threads": self.threads,
            "clipped_s": self.clipped_ns as f64 * 1e-9,
            "gpu_kernels_linked": self.linked_kernels.0,
            "gpu_kernels_unlinked": self.linked_kernels.1,
            "ops": self.rows.iter().map(|r| json!({
                "name": r.name,
                "kind": r.kind.label(),
                "count": r.count,
                "self_time_s": r.self_ns as f64 * 1e-9,
                "total_time_s": r.total_ns as f64 * 1e-9,
                "self_energy_j": r.self_j,
                "self_uncertainty_j": r.self_uncertainty_j,
                "total_energy_j": r.total_j,
                "total_uncertainty_j": r.total_uncertainty_j,
                "total_time_without_figure_s": r.unknown_ns as f64 * 1e-9,
                "time_share": r.time_share,
                "energy_share": r.energy_share,
                "fit_energy_j": r.fit_j,
                "fit_uncertainty_j": r.fit_uncertainty_j,
                "fit_method": method_label(r.fit_method),
            })).collect::<Vec<_>>(),
            "rollups": self.rollups.iter().map(|r| json!({
                "kind": r.kind.label(),
                "name": r.name,
                "count": r.count,
                "total_time_s": r.total_ns as f64 * 1e-9,
                "total_energy_j": r.total_j,
                "total_uncertainty_j": r.total_uncertainty_j,
                "total_time_without_figure_s": r.unknown_ns as f64 * 1e-9,
            })).collect::<Vec<_>>(),
        })
    }
}

/// GPU kernels by the node that launched them.
fn launched_kernels(forest: &CallForest) -> HashMap<u32, Vec<u32>> {
    let mut map: HashMap<u32, Vec<u32>> = HashMap::new();
    for (i, n) in forest.nodes.iter().enumerate() {
        if let Some(l) = n.launched_by {
            map.entry(l).or_default().push(i as u32);
        }
    }
    map
}

/// `lowercase` method name.
pub fn method_label(m: AttributionMethod) -> &'static str {
    match m {
        AttributionMethod::Integrated => "integrated",
        AttributionMethod::Regression => "regression",
        AttributionMethod::Deconvolved => "deconvolved",
        AttributionMethod::Insufficient => "insufficient",
    }
}

/// Energy with a unit a person reads at a glance.
pub fn fmt_j(j: f64) -> String {
    let a = j.abs();
    if a == 0.0 {
        "0 J".to_owned()
    } else if a >= 1.0 {
        format!("{j:.3} J")
    } else if a >= 1e-3 {
        format!("{:.3} mJ", j * 1e3)
    } else {
        format!("{:.3} µJ", j * 1e6)
    }
}

fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(width - 1).collect();
        t.push('…');
        t
    }
}

/// The CPU-side domains energyd gives kernel figures on: every package;
/// else the estimated whole-CPU domain; else psys; else every non-GPU
/// source (cores, uncore and DRAM are parts of a package).
pub fn cpu_kernel_domains(sources: &[SourceInfo]) -> Vec<SourceId> {
    let pick = |f: &dyn Fn(&Domain) -> bool| -> Vec<SourceId> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calltree::CallTreeOptions;
    use crate::spanfile::{parse_chrome_trace, SpanFileOptions};
    use shared::protocol::DomainShare;
    use shared::source::{ReadingKind, SourceKind};
    use shared::MonotonicNs;

    fn source(id: u32, domain: Domain) -> SourceInfo {
        SourceInfo {
            id: SourceId(id),
            name: format!("s{id}"),
            domain,
            kind: SourceKind::Simulated,
            provenance: Provenance::Measured,
            reading: ReadingKind::CumulativeEnergy,
            period_ns: 1_000_000,
            resolution_j: 0.0,
            update_period_ns: 1_000_000,
        }
    }

    fn share(id: u32, dynamic: f64) -> DomainShare {
        DomainShare {
            source: SourceId(id),
            machine_j: dynamic,
            process_j: dynamic,
            process_dynamic_j: dynamic,
            activity_share: 1.0,
            unattributed_j: dynamic,
            uncertainty_j: 0.0,
            provenance: Provenance::Measured,
        }
    }

    #[test]
    fn gpu_kernels_get_gpu_energy_and_count_in_their_launcher() {
        let trace = r#"{"traceEvents": [
  {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#7", "pid": 1, "tid": 1, "ts": 0, "dur": 100},
  {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 10, "dur": 20},
  {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": 15, "dur": 5},
  {"ph": "s", "cat": "ac2g", "name": "ac2g", "id": 42, "pid": 1, "tid": 1, "ts": 15},
  {"ph": "X", "cat": "kernel", "name": "gemm_kernel", "pid": 0, "tid": "stream 7", "ts": 40, "dur": 30},
  {"ph": "f", "cat": "ac2g", "name": "ac2g", "id": 42, "pid": 0, "tid": "stream 7", "ts": 40, "bp": "e"},
  {"ph": "X", "cat": "kernel", "name": "orphan", "pid": 0, "tid": 7, "ts": 80, "dur": 5}
]}"#;
        let file = parse_chrome_trace(
            trace,
            std::path::Path::new("t.json"),
            &SpanFileOptions::default(),
        )
        .unwrap();
        let forest = CallForest::build(&file, &CallTreeOptions::default());
        let breakdown = Breakdown {
            pid: 1,
            from: MonotonicNs(0),
            to: MonotonicNs(1),
            domains: vec![share(0, 1.0), share(1, 3.5)],
            kernels: Vec::new(),
            notes: Vec::new(),
        };
        let sources = [
            source(0, Domain::Package { index: 0 }),
            source(1, Domain::Gpu { index: 0 }),
        ];
        let table = OpTable::build(&forest, &breakdown, &sources);
        let row = |name: &str| table.rows.iter().find(|r| r.name == name).unwrap();
        // CPU: 1 J over 100 µs busy; GPU: 3.5 J over 35 µs of streams.
        assert!((row("gemm_kernel").self_j.unwrap() - 3.0).abs() < 1e-12);
        assert!((row("aten::mm").self_j.unwrap() - 0.15).abs() < 1e-12);
        assert!((row("aten::mm").total_j - 3.2).abs() < 1e-12);
        assert_eq!(table.linked_kernels, (1, 1));
        assert_eq!(table.gpu_busy_ns, 35_000);
        assert!(table.render_text(10).contains("GPU streams busy"));
    }
}
