//! Energy-aware architecture search commands (`search`, `report`, `compare`).
//!
//! This module owns the command-line surface of the search and the training
//! evaluator that connects `nas_search` (spaces, strategies, studies) to
//! nas-client's training loop and to energyd for per-trial energy.

pub mod calibrated;
pub mod carbon_aware;
pub mod trainer;

use anyhow::{bail, Context, Result};
use calibrated::{
    measure_front, network_run, predicted_objective_name, prescreen_metrics, CalibratedEvaluator,
    CalibrationPricer, EnergyModel, TrialPricer,
};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use nas_search::evaluator::{Evaluator, TableColumns, TableEvaluator};
use nas_search::footprint::{
    account_search, CarbonSettings, ClockContext, PueOrigin, SearchCarbon,
};
use nas_search::objective::{Constraint, Direction, Metrics, Objective, ObjectiveSet};
use nas_search::payback::{BaselineModel, PaybackSettings, PredictionsPerDay};
use nas_search::prescreen::{Prescreen, PrescreenCounts};
use nas_search::report::{summarize_with, write_report_with, ReportSummary};
use nas_search::runner::{run_study, Progress, RunOptions};
use nas_search::space::SearchSpace;
use nas_search::strategy::strategy_from_spec;
use nas_search::strategy::Strategy;
use nas_search::study::{copy_study, Study, StudyLocation, StudySpec, TrialRecord, TrialStatus};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use trainer::{metric, DataSource, TrainingEvaluator, TrialMetric};

/// The default search space (MLP / ResNet-style MLP for tabular data).
pub const DEFAULT_SPACE_TOML: &str = include_str!("default_space.toml");

/// Default objectives: validation accuracy against measured inference energy.
pub const DEFAULT_OBJECTIVES: &str = "val_accuracy:max:ref=0:ideal=1,inference_energy_j_per_1k:min";

/// Default constraint: the front keeps accuracy within 98% of the best found.
pub const DEFAULT_CONSTRAINTS: &str = "val_accuracy>=0.98*best";

/// Arguments of `nas-client search`.
#[derive(Debug, Clone, Args)]
pub struct SearchArgs {
    /// Bundled dataset to search on (see `nas-client datasets`).
    #[arg(long, conflicts_with = "data", required_unless_present_any = ["data", "evaluator"])]
    pub dataset: Option<String>,
    /// CSV file to search on instead of a bundled dataset (needs --target).
    #[arg(long, requires = "target")]
    pub data: Option<PathBuf>,
    /// Target column of --data.
    #[arg(long)]
    pub target: Option<String>,
    /// Number of trials (full-training equivalents for multi-fidelity strategies).
    #[arg(long, default_value_t = 50)]
    pub budget: u32,
    /// Study: a SQLite file, or `postgresql://user@host/db?study=NAME` for
    /// workers on several machines; created if missing.
    #[arg(long)]
    pub study: StudyLocation,
    /// Continue an existing study (re-runs trials a killed process left unfinished).
    #[arg(long)]
    pub resume: bool,
    /// Grace period, seconds: a running trial whose worker sent no
    /// heartbeat for this long is re-queued for another worker.
    #[arg(long, default_value_t = 600.0)]
    pub stale_after: f64,
    /// Trials evaluated in parallel.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Search-space TOML (defaults to the bundled MLP space).
    #[arg(long)]
    pub space: Option<PathBuf>,
    /// Search strategy: random, evolution, nsga2, sha, hyperband, tpe,
    /// lamoo, lamoo-tpe, optionally with `:key=value,…` settings (default:
    /// `nas_search::strategy::default_spec_for_budget`, LaMOO sized to the
    /// budget: a model-based strategy once a few trials exist).
    #[arg(long)]
    pub strategy: Option<String>,
    /// Seed of the strategy's random choices.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where objective values come from: `train` (default) or `table:FILE.csv`.
    #[arg(long, default_value = "train")]
    pub evaluator: String,
    /// energyd socket (default: the daemon's standard socket).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Calibrated search: energy predicted from a calibration file.
    #[command(flatten)]
    pub calibrated: CalibrationArgs,
    /// Objectives, `METRIC:min|max[:ref=X][:ideal=Y]`, comma-separated.
    #[arg(long, default_value = DEFAULT_OBJECTIVES)]
    pub objectives: String,
    /// Constraints, e.g. `val_accuracy>=0.98*best`, comma-separated (`none` for none).
    #[arg(long, default_value = DEFAULT_CONSTRAINTS)]
    pub constraints: String,
    /// Threads per training process (default: cores / workers).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Carbon of the search, in its summary.
    #[command(flatten)]
    pub carbon: CarbonArgs,
    /// Carbon-aware scheduling of light and heavy work.
    #[command(flatten)]
    pub carbon_aware: carbon_aware::CarbonAwareArgs,
    /// Print the final Pareto front as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `nas-client report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Study to report on: a SQLite file or a `postgresql://` URL.
    #[arg(long)]
    pub study: StudyLocation,
    /// Directory for CSV, JSON, SVG, PNG and Markdown outputs (required
    /// unless --json).
    #[arg(long, required_unless_present = "json")]
    pub out: Option<PathBuf>,
    /// Print a JSON summary (finished_trials, front, hypervolume) on stdout.
    #[arg(long)]
    pub json: bool,
    /// Whether the search pays for itself: rate, baseline, carbon.
    #[command(flatten)]
    pub payback: PaybackArgs,
}

/// What a payback is computed against (`report` and `compare`).
#[derive(Debug, Clone, Args)]
pub struct PaybackArgs {
    /// Predictions the deployed network serves per day: the payback is
    /// also stated in days.
    #[arg(long)]
    pub predictions_per_day: Option<PredictionsPerDay>,
    /// Inference energy of the model in use today, joules per 1000
    /// predictions: the saving is also measured against it.
    #[arg(long)]
    pub baseline_energy_per_1000: Option<f64>,
    /// One-sigma uncertainty of --baseline-energy-per-1000, joules.
    #[arg(long, requires = "baseline_energy_per_1000")]
    pub baseline_energy_sigma: Option<f64>,
    /// Accuracy of the model in use today (fraction).
    #[arg(long, requires = "baseline_energy_per_1000")]
    pub baseline_accuracy: Option<f64>,
    /// Where the grid's carbon intensity comes from: the search's carbon
    /// is reported and the payback is also stated in CO2.
    #[command(flatten)]
    pub carbon: CarbonArgs,
}

impl PaybackArgs {
    /// The payback settings; with an intensity source, the search's carbon
    /// is accounted from `trials` (the study whose payback is computed).
    fn settings(&self, trials: &[TrialRecord]) -> Result<PaybackSettings> {
        self.settings_with(trials, self.carbon.settings()?.as_ref())
    }

    /// [`PaybackArgs::settings`] with the intensity source already loaded.
    fn settings_with(
        &self,
        trials: &[TrialRecord],
        carbon: Option<&CarbonSettings>,
    ) -> Result<PaybackSettings> {
        let settings = PaybackSettings {
            baseline: self
                .baseline_energy_per_1000
                .map(|e| BaselineModel::new(e, self.baseline_energy_sigma, self.baseline_accuracy))
                .transpose()
                .context("--baseline-energy-per-1000")?,
            predictions_per_day: self.predictions_per_day,
            carbon: None,
            search_carbon: None,
        };
        Ok(match carbon {
            Some(c) => settings.with_search_carbon(search_carbon(trials, c)?),
            None => settings,
        })
    }
}

/// Carbon flags (`search`, `report`, `compare`). Without
/// `--carbon-intensity` no carbon figure is given: there is no default
/// intensity.
#[derive(Debug, Clone, Args)]
pub struct CarbonArgs {
    /// Grid carbon intensity: `const:G` (gCO2eq/kWh for every hour),
    /// `trace:PATH` (CSV `Time,Carbon Intensity`, UTC), `electricitymaps:PATH`
    /// (Electricity Maps CSV export), `watttime:PATH` (WattTime MOER CSV
    /// `point_time,value` in lbs/MWh; marginal) or `cmd:COMMAND` (prints the
    /// current gCO2eq/kWh; run once). A bare number is read as `const:`
    /// (what this flag took before). Each trial's energy is charged at the
    /// intensity of the UTC hours it ran in.
    #[arg(long, value_name = "SPEC", value_parser = parse_intensity_spec)]
    pub carbon_intensity: Option<carbon::IntensitySpec>,
    /// Power usage effectiveness of the site (facility energy over IT
    /// energy, >= 1.0); default 1.0, no overhead counted (reports say so).
    #[arg(long, value_name = "X", requires = "carbon_intensity", value_parser = parse_pue)]
    pub pue: Option<carbon::Pue>,
}

impl CarbonArgs {
    /// Loads the source (reads the trace, runs the command) and reads the
    /// clocks; `None` without `--carbon-intensity`.
    fn settings(&self) -> Result<Option<CarbonSettings>> {
        let Some(spec) = &self.carbon_intensity else {
            return Ok(None);
        };
        let signal = spec
            .load()
            .with_context(|| format!("--carbon-intensity {}", spec.name()))?;
        let (pue, pue_origin) = match self.pue {
            Some(p) => (p, PueOrigin::Given),
            None => (
                carbon::Pue::new(1.0).context("the default PUE")?,
                PueOrigin::Default,
            ),
        };
        Ok(Some(CarbonSettings {
            signal,
            pue,
            pue_origin,
            clock: ClockContext::current(),
        }))
    }
}

/// `--carbon-intensity`: a spec, or a bare number as `const:` (the flag
/// took a number before specs existed).
pub fn parse_intensity_spec(s: &str) -> std::result::Result<carbon::IntensitySpec, String> {
    let spec = if s.trim().parse::<f64>().is_ok() {
        format!("const:{s}")
    } else {
        s.to_owned()
    };
    spec.parse().map_err(|e: carbon::CarbonError| e.to_string())
}

/// `--pue`: a finite number >= 1.0.
fn parse_pue(s: &str) -> std::result::Result<carbon::Pue, String> {
    let x: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number (PUE, >= 1.0)"))?;
    carbon::Pue::new(x).map_err(|e| e.to_string())
}

/// The search's carbon from its trials, with the error naming the study's
/// trial when the trials cannot be placed in time.
fn search_carbon(trials: &[TrialRecord], c: &CarbonSettings) -> Result<SearchCarbon> {
    account_search(trials, c).context("--carbon-intensity: the search's carbon")
}

/// Arguments of `nas-client compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Bundled dataset to compare on.
    #[arg(long, conflicts_with = "data", required_unless_present_any = ["data", "evaluator"])]
    pub dataset: Option<String>,
    /// CSV file to compare on instead of a bundled dataset (needs --target).
    #[arg(long, requires = "target")]
    pub data: Option<PathBuf>,
    /// Target column of --data.
    #[arg(long)]
    pub target: Option<String>,
    /// Trials per search (each of the two searches gets this budget).
    #[arg(long, default_value_t = 30)]
    pub budget: u32,
    /// Directory holding the two study databases (reused when they exist)
    /// and the report.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the studies in PostgreSQL instead of --dir:
    /// `postgresql://…?study=NAME` holds them as NAME_conventional,
    /// NAME_energy_aware and NAME_calibrated.
    #[arg(long)]
    pub studies: Option<StudyLocation>,
    /// Trials evaluated in parallel.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Search-space TOML (defaults to the bundled MLP space).
    #[arg(long)]
    pub space: Option<PathBuf>,
    /// Seed of the strategies' random choices.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Strategy of both searches (only the objectives differ); the same
    /// choices and default as `search --strategy`.
    #[arg(long)]
    pub strategy: Option<String>,
    /// Threads per training process (default: cores / workers).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where objective values come from: `train` (default) or `table:FILE.csv`.
    #[arg(long, default_value = "train")]
    pub evaluator: String,
    /// energyd socket (default: the daemon's standard socket).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// With a calibration, also a calibrated energy-aware search
    /// (predicted energy, pre-screening, its front re-measured), compared
    /// with the measured one on measured hypervolume and energy spent.
    #[command(flatten)]
    pub calibration: CalibrationFileArgs,
    /// A one-shot search too (`nas-client oneshot`: MLP supernet, TabNAS
    /// rejection at --oneshot-energy-budget, --budget children retrained),
    /// compared on measured hypervolume, search energy (supernet included)
    /// and its pick's inference energy. Needs --calibration and a bundled
    /// --dataset.
    #[arg(long, requires = "calibration")]
    pub oneshot: bool,
    /// The one-shot search's energy budget, J per 1000 rows predicted
    /// (default: the geometric mean of the space's smallest and largest
    /// child's prediction).
    #[arg(long, requires = "oneshot")]
    pub oneshot_energy_budget: Option<f64>,
    /// The one-shot supernet's training epochs.
    #[arg(long, default_value_t = 10, requires = "oneshot")]
    pub oneshot_supernet_epochs: usize,
    /// The one-shot controller's steps.
    #[arg(long, default_value_t = 200, requires = "oneshot")]
    pub oneshot_controller_steps: u64,
    /// Epochs of each one-shot retraining.
    #[arg(long, default_value_t = 20, requires = "oneshot")]
    pub oneshot_retrain_epochs: usize,
    /// Whether the energy-aware search pays for itself: rate, baseline, carbon.
    #[command(flatten)]
    pub payback: PaybackArgs,
    /// Print the comparison as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Which calibration to predict energy with (`search` and `compare`).
#[derive(Debug, Clone, Args)]
pub struct CalibrationFileArgs {
    /// Calibration file (`calibration run`): the energy objectives
    /// (`inference_energy_j_per_1k`, `training_energy_j`) are predicted from
    /// it instead of measured; energyd, when running, still measures what
    /// each training spent.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Use a calibration made on another machine.
    #[arg(long, requires = "calibration")]
    pub force_calibration: bool,
}

/// Calibrated-search flags of `nas-client search`.
#[derive(Debug, Clone, Args)]
pub struct CalibrationArgs {
    /// The calibration.
    #[command(flatten)]
    pub file: CalibrationFileArgs,
    /// Price each new candidate before training it and redraw those
    /// predicted to cost more than --prescreen-factor times the most
    /// accurate network found so far.
    #[arg(long, requires = "calibration")]
    pub prescreen: bool,
    /// Pre-screening threshold, relative to the predicted inference energy
    /// of the most accurate trial.
    #[arg(long, default_value_t = 1.5, requires = "prescreen")]
    pub prescreen_factor: f64,
    /// Trials to finish before pre-screening starts.
    #[arg(long, default_value_t = 8, requires = "prescreen")]
    pub prescreen_warmup: usize,
    /// After the search, train the predicted front again with energyd
    /// measuring, and store the measured energy next to the predicted.
    #[arg(long, requires = "calibration")]
    pub measure_front: bool,
}

/// A calibrated search's evaluator and the pieces its strategy and front
/// measurement share.
struct Calibrated {
    model: Arc<EnergyModel>,
    pricer: TrialPricer,
}

impl Calibrated {
    /// Loads the calibration for the data of the training `evaluator` and
    /// checks it prices a small network of this search's data.
    fn setup(
        evaluator: &EvaluatorChoice,
        calibration: &Path,
        flags: &CalibrationFileArgs,
    ) -> Result<Calibrated> {
        let EvaluatorChoice::Train(trainer) = evaluator else {
            bail!("--calibration predicts the energy of trained networks: it does not combine with --evaluator table:");
        };
        let dataset = trainer
            .data
            .load()
            .context("loading the data to price its networks")?;
        let shape = dataset.shape();
        let probe = network_run(
            &tabular_nn::TrainConfig {
                model: nn_plan::ModelSpec {
                    backbone: nn_plan::Backbone::Mlp { widths: vec![8] },
                    ..nn_plan::ModelSpec::default()
                },
                threads: trainer.threads.max(1),
                ..tabular_nn::TrainConfig::default()
            },
            &shape,
            1,
        );
        let model = EnergyModel::load(calibration, flags.force_calibration)?;
        // A calibration that cannot price this search's kernels (another
        // trainer version, an uncalibrated thread count) fails here, before
        // anything is trained.
        model
            .predict(&probe)
            .with_context(|| format!("calibration {}", calibration.display()))?;
        let mut trainer = trainer.clone();
        trainer.measure_inference = false;
        Ok(Calibrated {
            model: Arc::new(model),
            pricer: TrialPricer { trainer, shape },
        })
    }

    fn evaluator(&self) -> CalibratedEvaluator {
        CalibratedEvaluator {
            pricer: self.pricer.clone(),
            model: Arc::clone(&self.model),
        }
    }

    /// The trainer that measures both phases (for the front).
    fn measurer(&self) -> TrainingEvaluator {
        TrainingEvaluator {
            measure_inference: true,
            ..self.pricer.trainer.clone()
        }
    }
}

/// Renames the energy objectives of `set` to their predicted counterparts.
fn predicted_objectives(mut set: ObjectiveSet) -> ObjectiveSet {
    for o in &mut set.objectives {
        o.name = predicted_objective_name(&o.name).to_owned();
    }
    for c in &mut set.constraints {
        c.metric = predicted_objective_name(&c.metric).to_owned();
    }
    set
}

/// Runs a calibrated search to its budget: predicted energy objectives,
/// pre-screening when asked, the front re-measured when asked. Returns the
/// trials (after any re-measurement) and the pre-screening counts.
#[allow(clippy::too_many_arguments)]
fn run_calibrated(
    cal: &Calibrated,
    spec: StudySpec,
    strategy: Box<dyn Strategy>,
    prescreen: Option<(f64, usize)>,
    measure: bool,
    options: &RunOptions,
    on_progress: &(dyn Fn(&Progress) + Sync),
    quiet: bool,
) -> Result<CalibratedRun> {
    let (strategy, counts): (Box<dyn Strategy>, _) = match prescreen {
        Some((factor, warmup)) => {
            let pricer = CalibrationPricer {
                pricer: cal.pricer.clone(),
                model: Arc::clone(&cal.model),
            };
            let p = Prescreen::new(
                strategy,
                Box::new(pricer),
                prescreen_metrics()?,
                factor,
                warmup,
            );
            let counts = p.counts();
            (Box::new(p), Some(counts))
        }
        None => (strategy, None),
    };
    let mut spec = spec;
    spec.strategy = strategy.spec();
    let summary = run_study(
        spec.clone(),
        Arc::new(cal.evaluator()),
        strategy,
        options,
        on_progress,
    )
    .with_context(|| format!("running study {}", options.study))?;
    let mut trials = summary.trials.clone();
    if measure {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(0)
        };
        bar.set_prefix("measuring the predicted front");
        if let Ok(style) =
            ProgressStyle::with_template("{prefix} [{elapsed_precise}] {bar:30} {pos}/{len}")
        {
            bar.set_style(style);
        }
        let measurer = cal.measurer();
        measure_front(
            &options.study,
            &spec.objectives,
            &measurer,
            &|done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            },
        )?;
        bar.finish_and_clear();
        trials = load_study(&options.study)?.1;
    }
    Ok(CalibratedRun {
        spec,
        trials,
        counts,
        summary,
    })
}

/// What [`run_calibrated`] returns.
struct CalibratedRun {
    /// The study's spec as stored (pre-screening wrapper in the strategy).
    spec: StudySpec,
    /// Every trial, after any re-measurement.
    trials: Vec<TrialRecord>,
    /// Pre-screening counts, when it ran.
    counts: Option<Arc<PrescreenCounts>>,
    /// The runner's summary (stop reason, trials evaluated here).
    summary: nas_search::runner::RunSummary,
}

/// Runs `nas-client search`.
pub fn search(args: SearchArgs) -> Result<()> {
    let evaluator = EvaluatorChoice::parse(
        &args.evaluator,
        data_source(
            args.dataset.as_deref(),
            args.data.as_ref(),
            args.target.as_deref(),
        )?,
        args.socket.clone(),
        threads_per_trial(args.threads, args.workers),
    )?;
    let objectives = objective_set(&args.objectives, &args.constraints, &evaluator)?;
    let space = search_space(args.space.as_deref(), &evaluator)?;
    // Read the intensity source now: a bad trace fails before any training.
    let carbon = args.carbon.settings()?;
    let strategy = strategy_from_spec(&strategy_spec(args.strategy.as_deref(), args.budget))
        .context("--strategy")?;
    let spec = StudySpec {
        space,
        objectives,
        strategy: strategy.spec(),
        seed: args.seed,
        metrics: TrialMetric::registry(),
    };
    let mut options = RunOptions::new(&args.study, args.budget as usize);
    options.workers = args.workers.max(1);
    options.resume = args.resume;
    options.stale_after = stale_after(args.stale_after)?;
    if args.carbon_aware.carbon_aware {
        return search_carbon_aware(&args, evaluator, spec, strategy, carbon, &options);
    }
    let bar = progress_bar(args.budget as u64, args.json);
    let names: Vec<String> = spec
        .objectives
        .objectives
        .iter()
        .map(|o| o.name.clone())
        .collect();
    let on_progress = |p: &Progress| {
        bar.set_position(p.finished as u64);
        bar.set_message(front_line(&names, p));
    };
    let cal_args = &args.calibrated;
    let (spec, trials, summary, counts) = match &cal_args.file.calibration {
        None => {
            let summary = run_study(
                spec.clone(),
                evaluator.into_evaluator()?,
                strategy,
                &options,
                &on_progress,
            )
            .with_context(|| format!("running study {}", args.study))?;
            (spec, summary.trials.clone(), summary, None)
        }
        Some(file) => {
            let cal = Calibrated::setup(&evaluator, file, &cal_args.file)?;
            let mut spec = spec;
            spec.objectives = predicted_objectives(spec.objectives);
            let prescreen = cal_args
                .prescreen
                .then_some((cal_args.prescreen_factor, cal_args.prescreen_warmup));
            let run = run_calibrated(
                &cal,
                spec,
                strategy,
                prescreen,
                cal_args.measure_front,
                &options,
                &on_progress,
                args.json,
            )?;
            (run.spec, run.trials, run.summary, run.counts)
        }
    };
    bar.finish_and_clear();
    let settings = match carbon {
        Some(mut c) => {
            c.clock = ClockContext::current();
            match search_carbon(&trials, &c) {
                Ok(sc) => PaybackSettings::default().with_search_carbon(sc),
                // The search itself succeeded and is stored (a resumed
                // study may hold trials of an earlier boot): say why its
                // carbon is missing rather than fail the command.
                Err(e) => {
                    eprintln!("note: no carbon figures: {e:#}");
                    PaybackSettings::default()
                }
            }
        }
        None => PaybackSettings::default(),
    };
    let report = summarize_with(&with_derived_references(&spec, &trials), &trials, &settings);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report, &args.study);
        if let Some(c) = counts {
            println!(
                "pre-screening: {} new candidates priced, {} turned down before training ({} proposals with every draw turned down)",
                c.priced.load(std::sync::atomic::Ordering::Relaxed),
                c.rejected.load(std::sync::atomic::Ordering::Relaxed),
                c.forced.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
        eprintln!(
            "stopped: {:?}; {} trials evaluated by this process",
            summary.stop_reason, summary.evaluated_here
        );
    }
    Ok(())
}

/// `search --carbon-aware`: the live (or replayed) carbon-aware search,
/// then the same summary as a search, with the schedule it followed.
fn search_carbon_aware(
    args: &SearchArgs,
    evaluator: EvaluatorChoice,
    spec: StudySpec,
    strategy: Box<dyn Strategy>,
    carbon: Option<CarbonSettings>,
    options: &RunOptions,
) -> Result<()> {
    // With a calibration, the queue ranks by predicted inference energy;
    // heavy work is still measured (the calibration prices, never replaces,
    // a training here).
    let pricer = match &args.calibrated.file.calibration {
        Some(file) => {
            if args.calibrated.prescreen || args.calibrated.measure_front {
                bail!("--carbon-aware uses --calibration to rank its queue only: drop --prescreen and --measure-front");
            }
            let cal = Calibrated::setup(&evaluator, file, &args.calibrated.file)?;
            Some(CalibrationPricer {
                pricer: cal.pricer.clone(),
                model: Arc::clone(&cal.model),
            })
        }
        None => None,
    };
    let EvaluatorChoice::Train(trainer) = evaluator else {
        bail!("--carbon-aware trains its heavy work: it does not combine with --evaluator table:");
    };
    if args.resume {
        bail!("--carbon-aware starts a new study: its queue is not stored, so it cannot --resume");
    }
    let mut carbon = carbon.context("--carbon-aware needs --carbon-intensity")?;
    // The anchor is checked now and re-taken at the instant the hour clock
    // started (below).
    let (clock, _) = args.carbon_aware.clock(shared::MonotonicNs::now())?;
    let schedule = carbon_aware::run(
        carbon_aware::CarbonAwareRun {
            args: &args.carbon_aware,
            study: &args.study,
            spec: spec.clone(),
            trainer,
            pricer,
            strategy,
            signal: carbon.signal.clone(),
            budget: args.budget as usize,
            slots: options.workers,
            stale_after: options.stale_after,
        },
        clock,
    )?;
    eprintln!("carbon-aware: stopped: {}", schedule.stopped);
    let (spec, trials) = load_study(&args.study)?;
    carbon.clock = ClockContext::current();
    if let (_, Some(anchor)) = args.carbon_aware.clock(schedule.started_ns)? {
        // Trial times are placed on the replayed trace's hours, and the
        // report names the source as replayed.
        carbon.clock.anchor = anchor;
        if let carbon::IntensitySignal::Hourly(h) = &mut carbon.signal {
            h.source.name = format!(
                "{} (replayed from {} at {} s per hour)",
                h.source.name,
                carbon::UtcMillis::from_hour_index(
                    args.carbon_aware
                        .carbon_replay_from
                        .map_or(0, |t| t.hour_index())
                ),
                args.carbon_aware.hour_seconds.unwrap_or_default()
            );
        }
    }
    let settings = match search_carbon(&trials, &carbon) {
        Ok(sc) => PaybackSettings::default().with_search_carbon(sc),
        Err(e) => {
            eprintln!("note: no carbon figures: {e:#}");
            PaybackSettings::default()
        }
    };
    // The same accounting over each kind's trials alone: what light and
    // heavy work each emitted (their sum is the search's).
    let by_kind: Vec<(&str, f64, Option<f64>)> = [
        ("light", carbon_aware::LIGHT_TAG),
        ("heavy", carbon_aware::HEAVY_TAG),
    ]
    .into_iter()
    .map(|(kind, tag)| {
        let part: Vec<TrialRecord> = trials
            .iter()
            .filter(|t| t.tag.as_deref().is_some_and(|x| x.starts_with(tag)))
            .cloned()
            .collect();
        let joules = part.iter().filter_map(|t| t.energy_spent_j).sum();
        let grams = account_search(&part, &carbon).ok().map(|c| c.grams_co2eq);
        (kind, joules, grams)
    })
    .collect();
    let report = summarize_with(&with_derived_references(&spec, &trials), &trials, &settings);
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("carbon_schedule".into(), serde_json::to_value(&schedule)?);
            let kinds: serde_json::Map<String, serde_json::Value> = by_kind
                .iter()
                .map(|(k, j, g)| {
                    (
                        (*k).to_owned(),
                        serde_json::json!({ "energy_spent_j": j, "grams_co2eq": g }),
                    )
                })
                .collect();
            obj.insert("carbon_by_kind".into(), kinds.into());
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_summary(&report, &args.study);
        let light = schedule
            .evaluations
            .iter()
            .filter(|e| e.kind == "light")
            .count();
        println!(
            "carbon-aware ({}, {}): {} hours, {} light evaluations ({}), {} trainings",
            schedule.mode,
            schedule.policy,
            schedule.hours.len(),
            light,
            schedule.light_proxy,
            schedule.evaluations.len() - light
        );
        for (kind, joules, grams) in &by_kind {
            println!(
                "  {kind} work: {joules:.3} J{}",
                grams.map_or(String::new(), |g| format!(", {g:.6} gCO2eq"))
            );
        }
    }
    Ok(())
}

/// The grace period from `--stale-after` seconds.
fn stale_after(seconds: f64) -> Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("--stale-after {seconds}: give a positive number of seconds"))
}

/// Arguments of `nas-client study copy`.
#[derive(Debug, Clone, Args)]
pub struct StudyCopyArgs {
    /// The study to copy: a SQLite file or a `postgresql://` URL.
    pub from: StudyLocation,
    /// A new study to copy it into (SQLite or PostgreSQL).
    pub to: StudyLocation,
}

/// Runs `nas-client study copy FROM TO`: the spec, the metric registry
/// and every trial, with numbers, statuses, seeds and measurements.
pub fn study_copy(args: StudyCopyArgs) -> Result<()> {
    let summary = copy_study(&args.from, &args.to)
        .with_context(|| format!("copying study {} to {}", args.from, args.to))?;
    println!(
        "copied {} trials and {} metadata entries from {} to {}",
        summary.trials, summary.meta_entries, args.from, args.to
    );
    Ok(())
}

/// Runs `nas-client report`.
pub fn report(args: ReportArgs) -> Result<()> {
    let (spec, trials) = load_study(&args.study)?;
    let spec = with_derived_references(&spec, &trials);
    let settings = args.payback.settings(&trials)?;
    let summary = match &args.out {
        Some(out) => {
            let (summary, files) =
                write_report_with(&spec, &trials, &args.study, out, &settings)
                    .with_context(|| format!("writing the report into {}", out.display()))?;
            if !args.json {
                for f in &files.files {
                    println!("wrote {}", f.display());
                }
                if !files.png_has_text {
                    eprintln!("note: no font found, pareto.png has no axis labels");
                }
            }
            summary
        }
        None => summarize_with(&spec, &trials, &settings),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary, &args.study);
        for line in summary.decision_text() {
            println!("{line}");
        }
    }
    Ok(())
}

/// Runs `nas-client compare`: an accuracy-only search and an energy-aware
/// search on the same data, budget, strategy and seed (each continued if its
/// study already exists), then compares their picks.
pub fn compare(args: CompareArgs) -> Result<()> {
    let source = data_source(
        args.dataset.as_deref(),
        args.data.as_ref(),
        args.target.as_deref(),
    )?;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => PathBuf::from(format!(
            "compare-{}",
            source
                .as_ref()
                .map(|s| sanitize(&s.label()))
                .unwrap_or_else(|| "table".into())
        )),
    };
    // Read the intensity source now: a bad trace fails before any training.
    let carbon = args.payback.carbon.settings()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let studies_at = args
        .studies
        .clone()
        .unwrap_or_else(|| StudyLocation::Sqlite(dir.clone()));
    let threads = threads_per_trial(args.threads, args.workers);
    let mut studies = Vec::new();
    for (name, objectives, constraints) in [
        ("conventional", "val_accuracy:max:ref=0:ideal=1", "none"),
        ("energy-aware", DEFAULT_OBJECTIVES, DEFAULT_CONSTRAINTS),
    ] {
        let evaluator = EvaluatorChoice::parse(
            &args.evaluator,
            source.clone(),
            args.socket.clone(),
            threads,
        )?;
        let objectives = objective_set(objectives, constraints, &evaluator)?;
        let space = search_space(args.space.as_deref(), &evaluator)?;
        let strategy = strategy_from_spec(&strategy_spec(args.strategy.as_deref(), args.budget))
            .context("--strategy")?;
        let spec = StudySpec {
            space,
            objectives,
            strategy: strategy.spec(),
            seed: args.seed,
            metrics: TrialMetric::registry(),
        };
        let file = studies_at.child(name);
        let mut options = RunOptions::new(&file, args.budget as usize);
        options.workers = args.workers.max(1);
        options.resume = true;
        let bar = progress_bar(args.budget as u64, args.json);
        bar.set_prefix(name);
        let on_progress = |p: &Progress| bar.set_position(p.finished as u64);
        let summary = run_study(
            spec,
            evaluator.into_evaluator()?,
            strategy,
            &options,
            &on_progress,
        )
        .with_context(|| format!("running the {name} study {file}"))?;
        bar.finish_and_clear();
        studies.push((file, summary.trials));
    }
    let calibrated = match &args.calibration.calibration {
        None => None,
        Some(file) => {
            let evaluator = EvaluatorChoice::parse(
                &args.evaluator,
                source.clone(),
                args.socket.clone(),
                threads,
            )?;
            let cal = Calibrated::setup(&evaluator, file, &args.calibration)?;
            let objectives = predicted_objectives(objective_set(
                DEFAULT_OBJECTIVES,
                DEFAULT_CONSTRAINTS,
                &evaluator,
            )?);
            let space = search_space(args.space.as_deref(), &evaluator)?;
            let strategy =
                strategy_from_spec(&strategy_spec(args.strategy.as_deref(), args.budget))
                    .context("--strategy")?;
            let spec = StudySpec {
                space,
                objectives,
                strategy: strategy.spec(),
                seed: args.seed,
                metrics: TrialMetric::registry(),
            };
            let file = studies_at.child("calibrated");
            let mut options = RunOptions::new(&file, args.budget as usize);
            options.workers = args.workers.max(1);
            options.resume = true;
            let bar = progress_bar(args.budget as u64, args.json);
            bar.set_prefix("calibrated");
            let on_progress = |p: &Progress| bar.set_position(p.finished as u64);
            let run = run_calibrated(
                &cal,
                spec,
                strategy,
                Some((DEFAULT_PRESCREEN_FACTOR, DEFAULT_PRESCREEN_WARMUP)),
                true,
                &options,
                &on_progress,
                args.json,
            )
            .with_context(|| format!("the calibrated study {file}"))?;
            bar.finish_and_clear();
            Some((file, run))
        }
    };
    let oneshot_run = if args.oneshot {
        Some(run_compare_oneshot(&args, &studies_at, threads)?)
    } else {
        None
    };
    let options = nas_search::compare::CompareOptions::default();
    let comparison = nas_search::compare::compare(&studies[0].1, &studies[1].1, &options)
        .context("comparing the two searches")?;
    let spent = nas_search::report::search_energy;
    let mut payback = nas_search::compare::compare_report(
        &studies[0].1,
        &studies[1].1,
        calibrated.as_ref().map(|(_, run)| run.trials.as_slice()),
        &options,
        &args.payback.settings_with(&studies[1].1, carbon.as_ref())?,
    )
    .context("comparing the two searches")?;
    payback.search_carbon_conventional = carbon
        .as_ref()
        .map(|c| search_carbon(&studies[0].1, c))
        .transpose()?;
    if let Some((file, trials)) = &oneshot_run {
        let mut o = nas_search::compare::oneshot_comparison(
            &studies[0].1,
            &studies[1].1,
            trials,
            &options,
            &payback.settings,
        )
        .with_context(|| format!("comparing the one-shot study {file}"))?;
        // Both fronts under one set of objectives and reference point, as
        // the calibrated search's.
        let f = calibration_comparison(&studies[1].1, trials);
        o.hypervolume = f.hypervolume_calibrated;
        o.hypervolume_multi_trial = f.hypervolume_measured;
        payback.oneshot = Some(o);
    }
    let energy_aware_spec = load_study(&studies[1].0)?.0;
    let report_dir = dir.join("report");
    let report_files = nas_search::compare::write_compare_report(
        &payback,
        (&energy_aware_spec, &studies[1].1),
        &studies[0].1,
        &report_dir,
    )
    .with_context(|| {
        format!(
            "writing the comparison report into {}",
            report_dir.display()
        )
    })?;
    let calibration_figures = calibrated
        .as_ref()
        .map(|(_, run)| calibration_comparison(&studies[1].1, &run.trials));
    if args.json {
        let mut v = serde_json::json!({
            "conventional_study": studies[0].0.to_string(),
            "energy_aware_study": studies[1].0.to_string(),
            "comparison": comparison,
            "search_energy_conventional": spent(&studies[0].1),
            "search_energy_energy_aware": spent(&studies[1].1),
            "payback": payback,
            "report_files": report_files.files,
        });
        if let (Some((file, _)), Some(obj)) = (&oneshot_run, v.as_object_mut()) {
            obj.insert("oneshot_study".into(), serde_json::json!(file.to_string()));
        }
        if let (Some((file, run)), Some(figures), Some(obj)) =
            (&calibrated, &calibration_figures, v.as_object_mut())
        {
            obj.insert(
                "calibrated_study".into(),
                serde_json::json!(file.to_string()),
            );
            obj.insert("calibrated".into(), serde_json::to_value(figures)?);
            if let Some(c) = &run.counts {
                obj.insert(
                    "prescreen".into(),
                    serde_json::json!({
                        "priced": c.priced.load(std::sync::atomic::Ordering::Relaxed),
                        "rejected": c.rejected.load(std::sync::atomic::Ordering::Relaxed),
                    }),
                );
            }
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let prov = comparison
        .energy_provenance
        .map(|p| p.label().to_string())
        .unwrap_or_else(|| "unknown".into());
    let c = &comparison.conventional_pick;
    println!(
        "conventional pick  : trial {} accuracy {:.4} inference {:.6} J/1k rows ({})",
        c.number, c.accuracy, c.energy, c.config
    );
    match &comparison.energy_aware_pick {
        Some(e) => println!(
            "energy-aware pick  : trial {} accuracy {:.4} inference {:.6} J/1k rows ({})",
            e.number, e.accuracy, e.energy, e.config
        ),
        None => println!(
            "energy-aware pick  : none (its most accurate trial, {}, reached {:.4})",
            comparison.energy_aware_best.number, comparison.energy_aware_best.accuracy
        ),
    }
    println!(
        "accuracy floor     : {:.4} ({} x conventional)",
        comparison.accuracy_floor, options.accuracy_fraction
    );
    match comparison.inference_energy_reduction {
        Some(r) => println!(
            "inference energy reduction at >= {:.0}% accuracy: {:.1}% [{prov}]",
            options.accuracy_fraction * 100.0,
            r * 100.0
        ),
        None => println!(
            "inference energy reduction at >= {:.0}% accuracy: not defined: no energy-aware trial is accurate enough",
            options.accuracy_fraction * 100.0
        ),
    }
    match comparison.spearman_flops_energy {
        Some(r) => println!(
            "Spearman rank correlation FLOPs vs measured inference energy: {r:.3} over {} trials",
            comparison.correlated_trials
        ),
        None => println!("Spearman rank correlation FLOPs vs energy: not enough trials with both"),
    }
    for (label, trials) in [
        ("conventional", &studies[0].1),
        ("energy-aware", &studies[1].1),
    ] {
        let e = spent(trials);
        match e.energy_j {
            Some(j) => println!(
                "energy spent by the {label} search: {j:.1} J [{}]",
                e.provenance.map_or("unknown", |p| p.label())
            ),
            None => println!("energy spent by the {label} search: not measured"),
        }
    }
    for (label, c) in [
        ("accuracy-only", &payback.search_carbon_conventional),
        ("energy-aware", &payback.settings.search_carbon),
    ] {
        if let Some(c) = c {
            println!(
                "{}",
                carbon_line(c).replacen("the search", &format!("the {label} search"), 1)
            );
        }
    }
    if let (Some((file, run)), Some(f)) = (&calibrated, &calibration_figures) {
        println!(
            "calibrated search  : {} ({} trials)",
            file,
            run.trials.len()
        );
        if let Some(c) = &run.counts {
            println!(
                "  pre-screening    : {} new candidates priced, {} turned down before training (by this run)",
                c.priced.load(std::sync::atomic::Ordering::Relaxed),
                c.rejected.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
        println!(
            "  predicted front  : {} members re-measured; inference energy predicted vs measured: mean |error| {}",
            f.front_measured,
            f.front_mean_abs_error_pct
                .map_or("-".to_owned(), |e| format!("{e:.1}%"))
        );
        match (f.hypervolume_calibrated, f.hypervolume_measured) {
            (Some(c), Some(m)) => println!(
                "  measured hypervolume: calibrated {c:.6} vs measured search {m:.6} (ratio {:.3}; same reference point)",
                c / m
            ),
            _ => println!("  measured hypervolume: not computable (no measured front)"),
        }
        match (f.search_energy_calibrated_j, f.search_energy_measured_j) {
            (Some(c), Some(m)) => println!(
                "  search energy    : calibrated {c:.1} J vs measured search {m:.1} J (ratio {:.3}) [{}]",
                c / m,
                f.provenance.unwrap_or("unknown")
            ),
            _ => println!("  search energy    : not measured"),
        }
    }
    for line in payback.decision_text() {
        println!("{line}");
    }
    println!("report: {}", report_dir.join("summary.md").display());
    Ok(())
}

/// `compare --oneshot`: runs (or resumes) the one-shot study beside the
/// others, with as many retrained children as each search has trials;
/// returns its location and trials.
fn run_compare_oneshot(
    args: &CompareArgs,
    studies_at: &StudyLocation,
    threads: usize,
) -> Result<(StudyLocation, Vec<TrialRecord>)> {
    use crate::oneshot::{self as os, OneshotArgs, OneshotBackbone};
    let Some(dataset) = &args.dataset else {
        bail!("--oneshot needs a bundled --dataset (the supernet trains in process on it)");
    };
    if args.evaluator != "train" {
        bail!(
            "--oneshot trains its picks: it cannot use --evaluator {}",
            args.evaluator
        );
    }
    if args.budget == 0 {
        bail!("--oneshot: --budget must be at least 1 (the one-shot pick is retrained)");
    }
    let calibration = args
        .calibration
        .calibration
        .clone()
        .context("--oneshot needs --calibration")?;
    let budget = match args.oneshot_energy_budget {
        Some(b) => b,
        None => os::default_energy_budget(os::predicted_range(
            OneshotBackbone::Mlp,
            dataset,
            &calibration,
            args.calibration.force_calibration,
            threads,
        )?),
    };
    let file = studies_at.child("oneshot");
    let oneshot_args = OneshotArgs {
        dataset: dataset.clone(),
        backbone: OneshotBackbone::Mlp,
        study: file.clone(),
        calibration: Some(calibration),
        force_calibration: args.calibration.force_calibration,
        energy_budget: Some(budget),
        reward: None,
        supernet_epochs: args.oneshot_supernet_epochs,
        controller_steps: args.oneshot_controller_steps,
        // The pick and the next best: as many final trainings as each
        // multi-trial search has trials.
        retrain: args.budget as usize - 1,
        retrain_by: os::RetrainChoice::Reward,
        retrain_epochs: args.oneshot_retrain_epochs,
        seed: args.seed,
        threads: Some(threads),
        socket: args.socket.clone(),
        json: false,
        stop_after_epochs: None,
    };
    let quiet = args.json;
    os::oneshot(&oneshot_args, &|line| {
        if !quiet {
            eprintln!("nas-client compare: one-shot: {line}");
        }
    })
    .with_context(|| format!("the one-shot study {file}"))?;
    let trials = load_study(&file)?.1;
    Ok((file, trials))
}

/// Default pre-screening of the calibrated search of `compare`.
const DEFAULT_PRESCREEN_FACTOR: f64 = 1.5;
/// Default pre-screening warm-up of the calibrated search of `compare`.
const DEFAULT_PRESCREEN_WARMUP: usize = 8;

/// A calibrated search against the measured energy-aware one, on measured
/// figures only.
#[derive(Debug, Clone, serde::Serialize)]
struct CalibrationComparison {
    /// Hypervolume of the calibrated search's measured front.
    hypervolume_calibrated: Option<f64>,
    /// Hypervolume of the measured search's front.
    hypervolume_measured: Option<f64>,
    /// `hypervolume_calibrated / hypervolume_measured`.
    hypervolume_ratio: Option<f64>,
    /// Energy the calibrated search spent (its front re-measurement included).
    search_energy_calibrated_j: Option<f64>,
    /// Energy the measured search spent.
    search_energy_measured_j: Option<f64>,
    /// `search_energy_calibrated_j / search_energy_measured_j`.
    search_energy_ratio: Option<f64>,
    /// Trials of the calibrated search with a measured inference energy.
    front_measured: usize,
    /// Mean |predicted − measured| / measured of those, percent.
    front_mean_abs_error_pct: Option<f64>,
    /// Weakest provenance of the energy figures.
    provenance: Option<&'static str>,
}

/// Compares on measured figures: both fronts under the same objectives
/// (validation accuracy, measured inference energy; accuracy at least 98%
/// of each search's best) and the same reference point (accuracy 0, energy
/// 10% above the worst measured in either search), so the hypervolumes are
/// comparable.
fn calibration_comparison(
    measured: &[TrialRecord],
    calibrated: &[TrialRecord],
) -> CalibrationComparison {
    let energies = measured
        .iter()
        .chain(calibrated)
        .filter(|t| t.status == TrialStatus::Finished)
        .filter_map(|t| {
            t.metrics
                .as_ref()?
                .get(metric::INFERENCE_ENERGY_J_PER_1K)
                .copied()
        });
    let worst = energies.fold(f64::NAN, f64::max);
    let hv = |trials: &[TrialRecord]| -> Option<f64> {
        if !worst.is_finite() {
            return None;
        }
        let mut set = ObjectiveSet::new(vec![
            Objective::parse("val_accuracy:max:ref=0:ideal=1").ok()?,
            Objective {
                reference: Some(worst * 1.1),
                ideal: Some(0.0),
                ..Objective::new(metric::INFERENCE_ENERGY_J_PER_1K, Direction::Minimize)
            },
        ])
        .ok()?;
        set = set.with_constraint(Constraint::parse(DEFAULT_CONSTRAINTS).ok()?);
        nas_search::runner::trials_hypervolume(trials, &set)
    };
    let (hc, hm) = (hv(calibrated), hv(measured));
    let (c, m) = (
        nas_search::report::search_energy(calibrated),
        nas_search::report::search_energy(measured),
    );
    let (ec, em) = (c.energy_j, m.energy_j);
    let errors: Vec<f64> =
        nas_search::report::predicted_vs_measured(calibrated, &TrialMetric::registry())
            .into_iter()
            .filter(|p| p.metric == metric::INFERENCE_ENERGY_J_PER_1K)
            .filter_map(|p| p.error_pct.map(f64::abs))
            .collect();
    CalibrationComparison {
        hypervolume_calibrated: hc,
        hypervolume_measured: hm,
        hypervolume_ratio: hc.zip(hm).filter(|(_, m)| *m > 0.0).map(|(c, m)| c / m),
        search_energy_calibrated_j: ec,
        search_energy_measured_j: em,
        search_energy_ratio: ec.zip(em).filter(|(_, m)| *m > 0.0).map(|(c, m)| c / m),
        front_measured: errors.len(),
        front_mean_abs_error_pct: (!errors.is_empty())
            .then(|| errors.iter().sum::<f64>() / errors.len() as f64),
        provenance: match (c.provenance, m.provenance) {
            (Some(a), Some(b)) => Some(a.combine(b).label()),
            (a, b) => a.or(b).map(|p| p.label()),
        },
    }
}

/// Where objective values come from.
enum EvaluatorChoice {
    /// Look-up in a table of precomputed results.
    Table(PathBuf),
    /// Train each trial.
    Train(TrainingEvaluator),
}

impl EvaluatorChoice {
    fn parse(
        spec: &str,
        source: Option<DataSource>,
        socket: Option<PathBuf>,
        threads: usize,
    ) -> Result<EvaluatorChoice> {
        if let Some(file) = spec.strip_prefix("table:") {
            return Ok(EvaluatorChoice::Table(PathBuf::from(file)));
        }
        if spec != "train" {
            bail!("--evaluator `{spec}`: expected `train` or `table:FILE.csv`");
        }
        let Some(data) = source else {
            bail!("training needs data: give --dataset NAME or --data FILE --target COL");
        };
        let exe = std::env::current_exe().context("locating the nas-client executable")?;
        Ok(EvaluatorChoice::Train(TrainingEvaluator {
            exe,
            data,
            socket,
            threads,
            measure_inference: true,
        }))
    }

    /// Metric columns a table must provide besides the objectives.
    fn table(&self, objectives: &[Objective]) -> Result<Option<TableEvaluator>> {
        let EvaluatorChoice::Table(file) = self else {
            return Ok(None);
        };
        let mut names: Vec<String> = objectives.iter().map(|o| o.name.clone()).collect();
        // The columns compare and report use, when the table has them.
        let header = csv::Reader::from_path(file)
            .with_context(|| format!("reading table {}", file.display()))?
            .headers()
            .with_context(|| format!("reading the header of {}", file.display()))?
            .clone();
        for extra in [
            metric::VAL_ACCURACY,
            metric::TEST_ACCURACY,
            metric::INFERENCE_ENERGY_J_PER_1K,
            metric::TRAINING_ENERGY_J,
            metric::LATENCY_MS_PER_1K,
            metric::PARAMS,
            metric::FLOPS,
            metric::TRAIN_TIME_S,
        ] {
            if header.iter().any(|h| h == extra) && !names.iter().any(|n| n == extra) {
                names.push(extra.to_string());
            }
        }
        let table = TableEvaluator::from_csv(file, TableColumns::Metrics(&names))
            .with_context(|| format!("loading table {}", file.display()))?;
        Ok(Some(table))
    }

    fn into_evaluator(self) -> Result<Arc<dyn Evaluator>> {
        Ok(match self {
            EvaluatorChoice::Train(t) => Arc::new(t),
            EvaluatorChoice::Table(_) => {
                let table = self.table(&[])?.context("table evaluator")?;
                Arc::new(table)
            }
        })
    }
}

fn data_source(
    dataset: Option<&str>,
    data: Option<&PathBuf>,
    target: Option<&str>,
) -> Result<Option<DataSource>> {
    Ok(match (dataset, data, target) {
        (Some(name), None, _) => {
            // Refused here, not by every trial's child.
            tabular_nn::data::bundled::find(name).context("--dataset")?;
            Some(DataSource::Bundled(name.to_string()))
        }
        (None, Some(path), Some(target)) => Some(DataSource::File {
            path: path.clone(),
            target: target.to_string(),
        }),
        (None, Some(path), None) => bail!("--data {} needs --target COL", path.display()),
        (Some(_), Some(_), _) => bail!("give either --dataset or --data, not both"),
        (None, None, _) => None,
    })
}

fn threads_per_trial(threads: Option<usize>, workers: usize) -> usize {
    threads.unwrap_or_else(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / workers.max(1)).max(1)
    })
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty() && *x != "none")
        .map(String::from)
        .collect()
}

/// Parses objectives and constraints. With a table, missing reference
/// points and ideals come from the table (worst value plus 10% of the range,
/// best value) so that hypervolumes are comparable across runs on it.
fn objective_set(
    objectives: &str,
    constraints: &str,
    evaluator: &EvaluatorChoice,
) -> Result<ObjectiveSet> {
    let mut list: Vec<Objective> = split_list(objectives)
        .iter()
        .map(|s| Objective::parse(s))
        .collect::<Result<_, _>>()
        .context("--objectives")?;
    if list.is_empty() {
        bail!("--objectives: at least one objective is needed");
    }
    if let Some(table) = evaluator.table(&list)? {
        let all: Vec<Metrics> = table
            .full_fidelity_metrics()
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        for o in &mut list {
            o.derive_reference(&all)
                .with_context(|| format!("objective `{}` has no values in the table", o.name))?;
        }
    }
    let mut set = ObjectiveSet::new(list).context("--objectives")?;
    for c in split_list(constraints) {
        set = set.with_constraint(Constraint::parse(&c).context("--constraints")?);
    }
    Ok(set)
}

/// A copy of `spec` whose objectives without a reference point get one from
/// the finished trials (worst value plus 10% of the range), so that a
/// hypervolume can be reported; declared reference points are kept.
pub fn with_derived_references(spec: &StudySpec, trials: &[TrialRecord]) -> StudySpec {
    let all: Vec<Metrics> = trials
        .iter()
        .filter(|t| t.status == TrialStatus::Finished)
        .filter_map(|t| t.metrics.clone())
        .collect();
    let mut out = spec.clone();
    for o in &mut out.objectives.objectives {
        if o.reference.is_none() {
            let _ = o.derive_reference(&all);
        }
    }
    out
}

fn search_space(file: Option<&Path>, evaluator: &EvaluatorChoice) -> Result<SearchSpace> {
    if let Some(file) = file {
        let space = SearchSpace::from_toml_file(file)
            .with_context(|| format!("reading search space {}", file.display()))?;
        if let Some(table) = evaluator.table(&[])? {
            let allowed = table
                .space()
                .allowed()
                .map(<[_]>::to_vec)
                .unwrap_or_default();
            return space
                .with_allowed(allowed)
                .with_context(|| format!("restricting {} to the table's rows", file.display()));
        }
        return Ok(space);
    }
    if let Some(table) = evaluator.table(&[])? {
        return Ok(table.space().clone());
    }
    SearchSpace::from_toml_str(DEFAULT_SPACE_TOML, "default_space.toml")
        .context("the bundled default search space")
}

fn load_study(file: &StudyLocation) -> Result<(StudySpec, Vec<TrialRecord>)> {
    let mut study = Study::open_existing(file).with_context(|| format!("opening study {file}"))?;
    let trials = study
        .trials()
        .with_context(|| format!("reading trials of {file}"))?;
    let mut spec = study.spec().clone();
    if spec.metrics.is_empty() {
        // A study written before studies stored their metric registry:
        // its trials were reported by this client, under these names.
        eprintln!(
            "nas-client: {file} declares no metrics (written before metric registries); reading it with nas-client's own"
        );
        spec.metrics = TrialMetric::registry();
    }
    Ok((spec, trials))
}

fn progress_bar(len: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} trials | {msg}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// One line describing the current front: its size and up to four points.
fn front_line(names: &[String], p: &Progress) -> String {
    let mut points = p.front.clone();
    points.sort_by(|a, b| {
        a.values
            .first()
            .unwrap_or(&0.0)
            .total_cmp(b.values.first().unwrap_or(&0.0))
    });
    let shown: Vec<String> = points
        .iter()
        .rev()
        .take(4)
        .map(|f| {
            let vals: Vec<String> = f.values.iter().map(|v| format!("{v:.4}")).collect();
            format!("#{} ({})", f.number, vals.join(", "))
        })
        .collect();
    format!(
        "front {} [{}]: {}{}",
        points.len(),
        names.join(", "),
        shown.join(" "),
        if p.failed > 0 {
            format!(" | {} failed", p.failed)
        } else {
            String::new()
        }
    )
}

fn print_summary(summary: &ReportSummary, study: &StudyLocation) {
    println!(
        "study {}: {} finished, {} failed, {} unfinished; strategy {}",
        study,
        summary.finished_trials,
        summary.failed_trials,
        summary.unfinished_trials,
        summary.strategy
    );
    match summary.hypervolume {
        Some(hv) => println!("hypervolume {hv:.6} ({})", summary.objectives.join(", ")),
        None => println!("hypervolume: not defined (an objective has no reference point)"),
    }
    println!("front ({} trials):", summary.front.len());
    for e in &summary.front {
        let vals: Vec<String> = summary
            .objectives
            .iter()
            .filter_map(|o| o.split(':').next())
            .map(|n| {
                format!(
                    "{n}={}",
                    e.metrics.get(n).map_or("-".into(), |v| format!("{v:.6}"))
                )
            })
            .collect();
        println!("  #{} {} {}", e.number, vals.join(" "), e.config);
    }
    match summary.search_energy.energy_j {
        Some(j) => println!(
            "energy spent by the search: {j:.1} J over {} trials [{}]",
            summary.search_energy.trials_with_energy,
            summary
                .search_energy
                .provenance
                .map_or("unknown", |p| p.label())
        ),
        None => println!("energy spent by the search: not measured"),
    }
    if let Some(c) = &summary.carbon {
        println!("{}", carbon_line(c));
    }
}

/// The search's carbon in one line of terminal output.
fn carbon_line(c: &SearchCarbon) -> String {
    if c.trials_charged == 0 {
        return format!(
            "carbon of the search: nothing to charge, no trial reported energy ({})",
            c.label()
        );
    }
    format!(
        "carbon of the search: {:.3} gCO2eq ({}; {:.6} kWh of {} energy over {} trials{})",
        c.grams_co2eq,
        c.label(),
        c.it_energy_kwh,
        c.energy_provenance.map_or("unknown", |p| p.label()),
        c.trials_charged,
        match c.timing {
            nas_search::footprint::CarbonTiming::HourlyFromTrialTimes =>
                format!(", charged over {} UTC hours", c.hours.len()),
            nas_search::footprint::CarbonTiming::ConstantIntensity => String::new(),
        }
    )
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The strategy a user named, or the default for the budget.
fn strategy_spec(named: Option<&str>, budget: u32) -> String {
    named.map_or_else(
        || nas_search::strategy::default_spec_for_budget(budget as usize),
        str::to_owned,
    )
}
