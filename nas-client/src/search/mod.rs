//! Energy-aware architecture search commands (`search`, `report`, `compare`).
//!
//! This module owns the command-line surface of the search and the training
//! evaluator that connects `nas_search` (spaces, strategies, studies) to
//! nas-client's training loop and to energyd for per-trial energy.

pub mod trainer;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use nas_search::evaluator::{metric_extremes, Evaluator, TableColumns, TableEvaluator};
use nas_search::objective::{Constraint, Direction, Metrics, Objective, ObjectiveSet};
use nas_search::report::{summarize, write_report_for, ReportSummary};
use nas_search::runner::{run_study, Progress, RunOptions};
use nas_search::space::SearchSpace;
use nas_search::strategy::strategy_from_spec;
use nas_search::study::{Study, StudySpec, TrialRecord, TrialStatus};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use trainer::{metric, DataSource, TrainingEvaluator};

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
    /// SQLite study database; created if missing.
    #[arg(long)]
    pub study: PathBuf,
    /// Continue an existing study (re-runs trials a killed process left unfinished).
    #[arg(long)]
    pub resume: bool,
    /// Trials evaluated in parallel.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Search-space TOML (defaults to the bundled MLP space).
    #[arg(long)]
    pub space: Option<PathBuf>,
    /// Search strategy: random, evolution, nsga2, hyperband.
    #[arg(long, default_value = "nsga2")]
    pub strategy: String,
    /// Seed of the strategy's random choices.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where objective values come from: `train` (default) or `table:FILE.csv`.
    #[arg(long, default_value = "train")]
    pub evaluator: String,
    /// energyd socket (default: the daemon's standard socket).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Calibration file for estimated energy (reserved; not yet supported).
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Objectives, `METRIC:min|max[:ref=X][:ideal=Y]`, comma-separated.
    #[arg(long, default_value = DEFAULT_OBJECTIVES)]
    pub objectives: String,
    /// Constraints, e.g. `val_accuracy>=0.98*best`, comma-separated (`none` for none).
    #[arg(long, default_value = DEFAULT_CONSTRAINTS)]
    pub constraints: String,
    /// Threads per training process (default: cores / workers).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the final Pareto front as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `nas-client report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// SQLite study database to report on.
    #[arg(long)]
    pub study: PathBuf,
    /// Directory for CSV, JSON, SVG, PNG and Markdown outputs (required
    /// unless --json).
    #[arg(long, required_unless_present = "json")]
    pub out: Option<PathBuf>,
    /// Print a JSON summary (finished_trials, front, hypervolume) on stdout.
    #[arg(long)]
    pub json: bool,
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
    /// Directory holding the two study databases (reused when they exist).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Trials evaluated in parallel.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Search-space TOML (defaults to the bundled MLP space).
    #[arg(long)]
    pub space: Option<PathBuf>,
    /// Seed of the strategies' random choices.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Strategy of both searches (only the objectives differ).
    #[arg(long, default_value = "nsga2")]
    pub strategy: String,
    /// Threads per training process (default: cores / workers).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where objective values come from: `train` (default) or `table:FILE.csv`.
    #[arg(long, default_value = "train")]
    pub evaluator: String,
    /// energyd socket (default: the daemon's standard socket).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Calibration file for estimated energy (reserved; not yet supported).
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Print the comparison as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `nas-client search`.
pub fn search(args: SearchArgs) -> Result<()> {
    refuse_calibration(args.calibration.as_deref())?;
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
    let strategy = strategy_from_spec(&args.strategy).context("--strategy")?;
    let spec = StudySpec {
        space,
        objectives,
        strategy: strategy.spec(),
        seed: args.seed,
    };
    let mut options = RunOptions::new(&args.study, args.budget as usize);
    options.workers = args.workers.max(1);
    options.resume = args.resume;
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
    let summary = run_study(
        spec.clone(),
        evaluator.into_evaluator()?,
        strategy,
        &options,
        &on_progress,
    )
    .with_context(|| format!("running study {}", args.study.display()))?;
    bar.finish_and_clear();
    let report = summarize(
        &with_derived_references(&spec, &summary.trials),
        &summary.trials,
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report, &args.study);
        eprintln!(
            "stopped: {:?}; {} trials evaluated by this process",
            summary.stop_reason, summary.evaluated_here
        );
    }
    Ok(())
}

/// Runs `nas-client report`.
pub fn report(args: ReportArgs) -> Result<()> {
    let (spec, trials) = load_study(&args.study)?;
    let spec = with_derived_references(&spec, &trials);
    let summary = match &args.out {
        Some(out) => {
            let (summary, files) = write_report_for(&spec, &trials, &args.study, out)
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
        None => summarize(&spec, &trials),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary, &args.study);
    }
    Ok(())
}

/// Runs `nas-client compare`: an accuracy-only search and an energy-aware
/// search on the same data, budget, strategy and seed (each continued if its
/// study already exists), then compares their picks.
pub fn compare(args: CompareArgs) -> Result<()> {
    refuse_calibration(args.calibration.as_deref())?;
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
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
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
        let strategy = strategy_from_spec(&args.strategy).context("--strategy")?;
        let spec = StudySpec {
            space,
            objectives,
            strategy: strategy.spec(),
            seed: args.seed,
        };
        let file = dir.join(format!("{name}.db"));
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
        .with_context(|| format!("running the {name} study {}", file.display()))?;
        bar.finish_and_clear();
        studies.push((file, summary.trials));
    }
    let options = nas_search::compare::CompareOptions::default();
    let comparison = nas_search::compare::compare(&studies[0].1, &studies[1].1, &options)
        .context("comparing the two searches")?;
    let spent = |t: &[TrialRecord]| summarize_energy(t);
    if args.json {
        let v = serde_json::json!({
            "conventional_study": studies[0].0,
            "energy_aware_study": studies[1].0,
            "comparison": comparison,
            "search_energy_conventional": spent(&studies[0].1),
            "search_energy_energy_aware": spent(&studies[1].1),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let prov = comparison
        .energy_provenance
        .map(|p| p.label().to_string())
        .unwrap_or_else(|| "unknown".into());
    let c = &comparison.conventional_pick;
    let e = &comparison.energy_aware_pick;
    println!(
        "conventional pick  : trial {} accuracy {:.4} inference {:.6} J/1k rows ({})",
        c.number, c.accuracy, c.energy, c.config
    );
    println!(
        "energy-aware pick  : trial {} accuracy {:.4} inference {:.6} J/1k rows ({})",
        e.number, e.accuracy, e.energy, e.config
    );
    println!(
        "accuracy floor     : {:.4} ({} x conventional)",
        comparison.accuracy_floor, options.accuracy_fraction
    );
    println!(
        "inference energy reduction at >= {:.0}% accuracy: {:.1}% [{prov}]",
        options.accuracy_fraction * 100.0,
        comparison.inference_energy_reduction * 100.0
    );
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
        let (j, p) = spent(trials);
        match j {
            Some(j) => println!(
                "energy spent by the {label} search: {j:.1} J [{}]",
                p.unwrap_or("unknown")
            ),
            None => println!("energy spent by the {label} search: not measured"),
        }
    }
    Ok(())
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

fn refuse_calibration(calibration: Option<&Path>) -> Result<()> {
    if let Some(c) = calibration {
        bail!(
            "--calibration {}: estimated energy from a calibration file is not yet supported by search (issue 7)",
            c.display()
        );
    }
    Ok(())
}

fn data_source(
    dataset: Option<&str>,
    data: Option<&PathBuf>,
    target: Option<&str>,
) -> Result<Option<DataSource>> {
    Ok(match (dataset, data, target) {
        (Some(name), None, _) => Some(DataSource::Bundled(name.to_string())),
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
            fill_reference(o, &all)
                .with_context(|| format!("objective `{}` has no values in the table", o.name))?;
        }
    }
    let mut set = ObjectiveSet::new(list).context("--objectives")?;
    for c in split_list(constraints) {
        set = set.with_constraint(Constraint::parse(&c).context("--constraints")?);
    }
    Ok(set)
}

fn fill_reference(o: &mut Objective, all: &[Metrics]) -> Option<()> {
    let (lo, hi) = metric_extremes(all, &o.name)?;
    let margin = 0.1 * (hi - lo).max(1e-12);
    let (best, worst) = match o.direction {
        Direction::Minimize => (lo, hi + margin),
        Direction::Maximize => (hi, lo - margin),
    };
    o.reference.get_or_insert(worst);
    o.ideal.get_or_insert(best);
    Some(())
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
            let _ = fill_reference(o, &all);
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

fn load_study(file: &Path) -> Result<(StudySpec, Vec<TrialRecord>)> {
    let mut study =
        Study::open_existing(file).with_context(|| format!("opening study {}", file.display()))?;
    let trials = study
        .trials()
        .with_context(|| format!("reading trials of {}", file.display()))?;
    Ok((study.spec().clone(), trials))
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

fn summarize_energy(trials: &[TrialRecord]) -> (Option<f64>, Option<&'static str>) {
    let mut total = None;
    let mut provenance: Option<shared::Provenance> = None;
    for t in trials {
        if let Some(e) = t.energy_spent_j {
            *total.get_or_insert(0.0) += e;
            let p = t.provenance.unwrap_or(shared::Provenance::Estimated);
            provenance = Some(provenance.map_or(p, |q| q.combine(p)));
        }
    }
    (total, provenance.map(|p| p.label()))
}

fn print_summary(summary: &ReportSummary, study: &Path) {
    println!(
        "study {}: {} finished, {} failed, {} unfinished; strategy {}",
        study.display(),
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
