//! `nas-client measure-inference`: the inference energy of saved networks
//! (growth rounds, `STUDY.grow/round-N.json`), measured interleaved in one
//! process — A B A B … for `--repeats` rounds — so that the machine's drift
//! and load fall on every network alike, and reported as the median and
//! spread of each network and of each network's paired ratio to the first.
//!
//! Why: a growth round's inference energy is one window of a few hundred
//! milliseconds, measured minutes apart from the other variant's; on a
//! shared machine with an *estimated* source two identical networks
//! measured that way differed by up to 40%. Pairs measured back to back
//! share the machine's state, so their ratio is far steadier than either
//! figure.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use shared::{MonotonicNs, Provenance};
use std::path::PathBuf;
use tabular_nn::data::bundled;
use tabular_nn::kernels::SpanRecorder;
use tabular_nn::meter::PhaseMeter;
use tabular_nn::model::layers::Ctx;
use tabular_nn::model::Network;
use tabular_nn::session::ProcessSession;
use tabular_nn::train::forward_all;

/// Arguments of `nas-client measure-inference`.
#[derive(Debug, Clone, Args)]
pub struct MeasureInferenceArgs {
    /// Bundled dataset whose test split the networks run on (the one they
    /// were grown on).
    #[arg(long)]
    pub dataset: String,
    /// A saved network (a growth round's `round-N.json`); give it once per
    /// network, at least once. Ratios are over the first one.
    #[arg(long = "network", required = true)]
    pub networks: Vec<PathBuf>,
    /// Measurements of each network (interleaved: one of each per repeat).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Each measurement's inference phase runs at least this long
    /// (forward passes over the test split, repeated).
    #[arg(long, default_value_t = 2000)]
    pub window_ms: u64,
    /// Rows per forward pass (as the trainer's inference phase).
    #[arg(long, default_value_t = 4096)]
    pub eval_batch_size: usize,
    /// Threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// energyd socket (the default socket when absent).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Also write every measurement and the summaries as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One inference phase of one network.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// Which network (index into the networks measured).
    pub network: usize,
    /// Repetition (0-based).
    pub repeat: usize,
    /// Energy attributed to this process over the phase, joules.
    pub joules: f64,
    /// Its one-sigma uncertainty, joules.
    pub sigma_j: f64,
    /// Where the energy comes from.
    pub provenance: Provenance,
    /// Rows inferred.
    pub rows: u64,
    /// Length of the phase, ns.
    pub ns: u64,
}

impl Measurement {
    /// Joules per 1000 rows.
    pub fn j_per_1k(&self) -> f64 {
        self.joules / self.rows.max(1) as f64 * 1000.0
    }
}

/// Median and range of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Median (mean of the two middle values for an even count).
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; `None` when empty or when a value is not
    /// finite.
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }

    /// Half the range over the median: the relative spread reported.
    pub fn half_range_rel(&self) -> f64 {
        (self.max - self.min) / 2.0 / self.median.abs().max(f64::MIN_POSITIVE)
    }
}

/// Measures every network `repeats` times, interleaved (network 0, 1, …,
/// then again), each phase running forward passes over `x` for at least
/// `window_ns` (and at least four of the meter's shortest windows).
/// Runs on the calling thread's rayon pool (install one for the thread
/// count wanted).
pub fn measure_interleaved(
    nets: &mut [Network],
    x: ndarray::ArrayView2<f32>,
    eval_batch_size: usize,
    window_ns: u64,
    repeats: usize,
    meter: &mut dyn PhaseMeter,
) -> Result<Vec<Measurement>> {
    if x.nrows() == 0 {
        bail!("the test split has no rows to infer");
    }
    let window_ns = window_ns.max(meter.min_window_ns().saturating_mul(4));
    // No uploader: the energy of the process is what is asked for, not its
    // per-kernel split, and spans still cost what they cost in training's
    // inference phase (recorded, totals kept).
    let mut recorder = SpanRecorder::new(tabular_nn::kernels::DEFAULT_SPAN_CAPACITY, None);
    let mut out = Vec::with_capacity(repeats * nets.len());
    for repeat in 0..repeats {
        for (network, net) in nets.iter_mut().enumerate() {
            let start = MonotonicNs::now();
            let mut passes = 0u64;
            {
                let mut ctx = Ctx::new(&mut recorder, 0);
                loop {
                    forward_all(net, x, eval_batch_size.max(1), &mut ctx, |_, _| {});
                    passes += 1;
                    if MonotonicNs::now().saturating_sub(start) >= window_ns {
                        break;
                    }
                }
                ctx.sink.flush();
            }
            let end = MonotonicNs::now();
            let phase = meter
                .phase(start, end)
                .map_err(|e| anyhow::anyhow!("network {network}, repeat {repeat}: {e}"))?;
            out.push(Measurement {
                network,
                repeat,
                joules: phase.process_j,
                sigma_j: phase.uncertainty_j,
                provenance: phase.provenance,
                rows: passes * x.nrows() as u64,
                ns: end.saturating_sub(start),
            });
        }
    }
    Ok(out)
}

/// Per network, its J per 1000 rows in repetition order.
pub fn per_network(measurements: &[Measurement], networks: usize) -> Vec<Vec<f64>> {
    let mut out = vec![Vec::new(); networks];
    for m in measurements {
        if let Some(v) = out.get_mut(m.network) {
            v.push(m.j_per_1k());
        }
    }
    out
}

/// Per network, its J per 1000 rows over network 0's in the same
/// repetition (the paired ratio; network 0's own are all 1).
pub fn paired_ratios(measurements: &[Measurement], networks: usize) -> Vec<Vec<f64>> {
    let values = per_network(measurements, networks);
    let Some(first) = values.first() else {
        return Vec::new();
    };
    values
        .iter()
        .map(|v| v.iter().zip(first).map(|(a, b)| a / b).collect())
        .collect()
}

/// Runs `nas-client measure-inference`.
pub fn measure_inference(args: MeasureInferenceArgs) -> Result<()> {
    if args.repeats == 0 {
        bail!("--repeats: at least 1");
    }
    let dataset = bundled::load(&args.dataset, 0)
        .with_context(|| format!("loading bundled dataset {}", args.dataset))?;
    let mut nets = Vec::with_capacity(args.networks.len());
    let mut specs = Vec::with_capacity(args.networks.len());
    for path in &args.networks {
        let mut net = crate::grow::load_round_file(path)?;
        if net.inputs != dataset.n_features() || net.outputs != dataset.n_outputs() {
            bail!(
                "{}: the network maps {} inputs to {} outputs; {} has {} features and {} outputs",
                path.display(),
                net.inputs,
                net.outputs,
                args.dataset,
                dataset.n_features(),
                dataset.n_outputs()
            );
        }
        specs.push(
            net.spec()
                .context("the saved network has no spec")?
                .describe(),
        );
        nets.push(net);
    }
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(shared::paths::client_default_socket);
    let mut session = ProcessSession::connect(&socket, "nas-client", false)
        .with_context(|| format!("connecting to energyd at {}", socket.display()))?;
    let pool = tabular_nn::threads::build_pool(args.threads)
        .with_context(|| format!("--threads {}", args.threads))?;
    let measured = pool.install(|| {
        measure_interleaved(
            &mut nets,
            dataset.test.x.view(),
            args.eval_batch_size,
            args.window_ms.saturating_mul(1_000_000),
            args.repeats,
            &mut session,
        )
    });
    session.close();
    let measured = measured?;
    for m in &measured {
        println!(
            "repeat {} network {}: {:.6} J/1k ({:.3} ± {:.3} J, {} rows, {:.2} s, {})",
            m.repeat,
            m.network,
            m.j_per_1k(),
            m.joules,
            m.sigma_j,
            m.rows,
            m.ns as f64 * 1e-9,
            m.provenance
        );
    }
    let n = nets.len();
    let values = per_network(&measured, n);
    let ratios = paired_ratios(&measured, n);
    let provenance = measured
        .iter()
        .map(|m| m.provenance)
        .reduce(Provenance::combine)
        .unwrap_or(Provenance::Estimated);
    let mut summaries = Vec::with_capacity(n);
    for (i, path) in args.networks.iter().enumerate() {
        let v = Spread::of(&values[i]).context("a measurement is not a finite number")?;
        let r = Spread::of(&ratios[i]).context("a ratio is not a finite number")?;
        println!(
            "network {i} ({}, {}): median {:.6} J/1k [{:.6}, {:.6}], ±{:.1}%; paired ratio to network 0: median {:.3} [{:.3}, {:.3}]",
            path.display(),
            specs[i],
            v.median,
            v.min,
            v.max,
            100.0 * v.half_range_rel(),
            r.median,
            r.min,
            r.max
        );
        summaries.push(json!({
            "path": path.display().to_string(),
            "spec": specs[i],
            "j_per_1k": values[i],
            "median_j_per_1k": v.median,
            "min_j_per_1k": v.min,
            "max_j_per_1k": v.max,
            "ratio_to_first": ratios[i],
            "ratio_median": r.median,
            "ratio_min": r.min,
            "ratio_max": r.max,
        }));
    }
    println!("provenance: {provenance} (energyd)");
    if let Some(path) = &args.json {
        let doc = json!({
            "dataset": args.dataset,
            "repeats": args.repeats,
            "window_ms": args.window_ms,
            "threads": args.threads,
            "provenance": provenance.to_string(),
            "networks": summaries,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nn_plan::{Activation, Backbone, ModelSpec, Norm};
    use tabular_nn::kernels::SpanUploader;
    use tabular_nn::meter::{MeterError, PhaseEnergy, SpanDelivery};
    use tabular_nn::model::BuildNetwork;

    /// A meter whose phases cost, in turn, the joules listed (cycling), and
    /// that remembers the windows it was asked about.
    struct ScriptedMeter {
        joules: Vec<f64>,
        asked: Vec<(MonotonicNs, MonotonicNs)>,
    }

    struct NoUpload;
    impl SpanUploader for NoUpload {
        fn upload(&mut self, _pid: u32, _tid: u32, _spans: &[tabular_nn::kernels::KernelSpan]) {}
    }

    impl PhaseMeter for ScriptedMeter {
        fn uploader(&self) -> Box<dyn SpanUploader> {
            Box::new(NoUpload)
        }
        fn poll_spans(&mut self) {}
        fn flush_spans(&mut self) {}
        fn min_window_ns(&self) -> u64 {
            0
        }
        fn phase(&mut self, from: MonotonicNs, to: MonotonicNs) -> Result<PhaseEnergy, MeterError> {
            let j = self.joules[self.asked.len() % self.joules.len()];
            self.asked.push((from, to));
            Ok(PhaseEnergy {
                from_ns: from.as_ns(),
                to_ns: to.as_ns(),
                process_j: j,
                uncertainty_j: 0.0,
                provenance: Provenance::Simulated,
                domains: Vec::new(),
                kernels: Vec::new(),
                notes: Vec::new(),
            })
        }
        fn span_delivery(&self) -> SpanDelivery {
            SpanDelivery::default()
        }
    }

    fn mlp(widths: Vec<usize>) -> Network {
        ModelSpec {
            backbone: Backbone::Mlp { widths },
            activation: Activation::Relu,
            dropout: 0.0,
            norm: Norm::None,
        }
        .build(3, 2, 0)
        .expect("mlp builds")
    }

    /// Phases alternate between the networks (A B A B …), never overlap,
    /// and each infers whole passes over the rows; J per 1000 rows and the
    /// paired ratios follow from the meter's joules and the rows.
    #[test]
    fn measurements_interleave_and_ratios_pair_repetitions() {
        let mut nets = vec![mlp(vec![4]), mlp(vec![6, 5])];
        let x = ndarray::Array2::<f32>::from_shape_fn((7, 3), |(i, j)| (i + 2 * j) as f32 * 0.1);
        // A costs 2 J, then B 3 J, A 4 J, B 3 J, A 2 J, B 5 J.
        let mut meter = ScriptedMeter {
            joules: vec![2.0, 3.0, 4.0, 3.0, 2.0, 5.0],
            asked: Vec::new(),
        };
        let m = measure_interleaved(&mut nets, x.view(), 4, 0, 3, &mut meter).unwrap();
        let order: Vec<(usize, usize)> = m.iter().map(|m| (m.repeat, m.network)).collect();
        assert_eq!(order, vec![(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]);
        for w in meter.asked.windows(2) {
            assert!(w[0].0 <= w[0].1 && w[0].1 <= w[1].0, "windows overlap");
        }
        // A zero window still runs one whole pass of 7 rows.
        assert!(m.iter().all(|m| m.rows >= 7 && m.rows % 7 == 0));
        let rows: Vec<f64> = m.iter().map(|m| m.rows as f64).collect();
        let per = per_network(&m, 2);
        assert_eq!(per[0][1], 4.0 / rows[2] * 1000.0);
        assert_eq!(per[1][2], 5.0 / rows[5] * 1000.0);
        let ratios = paired_ratios(&m, 2);
        assert!(ratios[0].iter().all(|&r| r == 1.0));
        assert_eq!(ratios[1][1], (3.0 / rows[3]) / (4.0 / rows[2]));
    }

    #[test]
    fn spread_is_median_and_range() {
        let s = Spread::of(&[3.0, 1.0, 2.0, 10.0, 4.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 10.0));
        assert_eq!(s.half_range_rel(), 1.5);
        let s = Spread::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert!(Spread::of(&[]).is_none());
        assert!(Spread::of(&[1.0, f64::NAN]).is_none());
    }

    #[test]
    fn an_empty_test_split_is_an_error() {
        let mut nets = vec![mlp(vec![4])];
        let x = ndarray::Array2::<f32>::zeros((0, 3));
        let mut meter = ScriptedMeter {
            joules: vec![1.0],
            asked: Vec::new(),
        };
        assert!(measure_interleaved(&mut nets, x.view(), 4, 0, 1, &mut meter).is_err());
    }
}
