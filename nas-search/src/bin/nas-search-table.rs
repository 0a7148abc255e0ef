//! `nas-search-table`: runs a study whose trials are looked up in a CSV
//! table of precomputed results, and scores studies or foreign trial
//! sequences by hypervolume. Used by the crash tests and by `bench/search`.
//!
//! ```text
//! nas-search-table run   --table T.csv --study S.db --budget N [--strategy nsga2] [--workers K]
//!                        [--seed S] [--resume] [--objectives acc:max,energy:min] [--delay-ms MS]
//!                        [--stale-after-ms MS] [--heartbeat-ms MS]
//! nas-search-table score --table T.csv (--study S.db | --sequence FILE.csv) --at 25,50,100
//! nas-search-table sim   --table T.csv --strategy SPEC --seeds 1-20 --at 25,50,100
//! ```
//! `sim` runs a strategy in memory, one worker and no database, with the
//! proposals seeded as `run` seeds them (the same figures, much faster).
//! It prints each seed's hypervolumes, one line per seed. With
//! `--screen-scores FILE:COLUMN [--screen-keep 0.3] [--screen-pool 10]
//! [--screen-cost-j J]` it compares, per seed, the strategy training every
//! one of the largest `--at` candidates with the same strategy screened by
//! that score column (`nas_search::strategy::Screen`): hypervolume and
//! search energy (trainings' `training_energy_j` plus the light scores').
//! `--study` takes a SQLite file or `postgresql://…[?study=NAME]`.
//! Without a subcommand, `run` is assumed. Reference points default to the
//! table's worst value of each objective plus 10% of its range, ideals to its
//! best value, so hypervolumes are in `[0, 1]`.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use nas_search::evaluator::{EvalError, Evaluator, TableColumns, TableEvaluator, TrialResult};
use nas_search::metric::{MetricInfo, MetricRegistry};
use nas_search::objective::{Metrics, Objective, ObjectiveSet};
use nas_search::runner::{run_study, trials_hypervolume, RunOptions};
use nas_search::space::Config;
use nas_search::strategy::{
    strategy_from_spec, Ask, History, LightScore, LightScorer, Screen, Strategy,
};
use nas_search::study::{derive_seed, Study, StudyLocation, StudySpec, TrialRecord, TrialStatus};
use rand::rngs::StdRng;
use rand::SeedableRng;
use shared::Provenance;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "nas-search-table",
    about = "Architecture search on a lookup table of precomputed results (logs: NAS_SEARCH_LOG=info)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run (or resume) a study.
    Run(RunArgs),
    /// Hypervolume of the first N finished trials of a study or sequence.
    Score(ScoreArgs),
    /// Runs a strategy in memory (one worker, no database; proposals
    /// seeded as `run` seeds them) for several seeds and prints the
    /// hypervolume at the given budgets, one line per seed: the quick loop
    /// for developing a strategy (`bench/search` uses `run`).
    Sim(SimArgs),
    /// Trial-claim throughput and latency (`bench/scale`): worker threads,
    /// each with its own connection, claim and finish trials of a new
    /// study with an evaluator that costs nothing.
    BenchClaims(BenchArgs),
}

#[derive(Args)]
struct SimArgs {
    #[command(flatten)]
    table: TableArgs,
    /// Strategy specification.
    #[arg(long, default_value = "nsga2")]
    strategy: String,
    /// Seeds, `FIRST-LAST` or one number.
    #[arg(long, default_value = "1-20")]
    seeds: String,
    /// Budgets at which to score, comma-separated (the largest is run).
    #[arg(long, default_value = "25,50,100")]
    at: String,
    #[command(flatten)]
    screen: ScreenArgs,
}

/// Screened search (`sim` only): the strategy wrapped in
/// `nas_search::strategy::Screen`, against the same strategy training every
/// candidate.
#[derive(Args, Clone)]
struct ScreenArgs {
    /// `FILE:COLUMN[,COLUMN...]`: a CSV with one row per table row, in
    /// the table's order (as `nas-client proxies --scores-out` writes it),
    /// whose COLUMN is the light score (higher = better; `-COLUMN`: lower
    /// = better; several: pools ranked by Pareto front, then crowding). With it, each seed
    /// runs the strategy twice over the largest `--at` candidates: training
    /// every one, and screened, and prints hypervolume and search energy
    /// of both.
    #[arg(long)]
    screen_scores: Option<String>,
    /// Fraction of each pool that is trained.
    #[arg(long, default_value_t = 0.3)]
    screen_keep: f64,
    /// Candidates per pool.
    #[arg(long, default_value_t = 10)]
    screen_pool: usize,
    /// Energy of one light score, joules (an estimate the caller makes,
    /// e.g. proxy time over training time times a training's energy).
    #[arg(long, default_value_t = 0.0)]
    screen_cost_j: f64,
    /// The table's metric holding a training's energy, joules (give it in
    /// `--metrics` too).
    #[arg(long, default_value = "training_energy_j")]
    energy_metric: String,
}

#[derive(Args)]
struct BenchArgs {
    /// A new study: a SQLite file, or `postgresql://…?study=NAME`.
    #[arg(long)]
    study: StudyLocation,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Trials to claim and finish, all workers together.
    #[arg(long, default_value_t = 500)]
    claims: usize,
}

#[derive(Args, Clone)]
struct TableArgs {
    /// CSV table: parameter columns, metric columns, optional `fidelity`.
    #[arg(long)]
    table: PathBuf,
    /// Objectives, `NAME:min|max[:ref=X][:ideal=Y]`, comma-separated.
    #[arg(long, default_value = "val_accuracy:max,inference_energy_j_per_1k:min")]
    objectives: String,
    /// Metric columns besides the objectives (all other columns are parameters).
    #[arg(long, default_value = "")]
    metrics: String,
    /// Constraints, e.g. `val_accuracy>=0.98*best`, comma-separated.
    #[arg(long, default_value = "")]
    constraints: String,
}

#[derive(Args, Clone)]
struct RunArgs {
    #[command(flatten)]
    table: TableArgs,
    /// Study: a SQLite file, or `postgresql://…[?study=NAME]`.
    #[arg(long)]
    study: StudyLocation,
    /// Finished trials to reach.
    #[arg(long)]
    budget: usize,
    /// random, evolution, nsga2, sha, hyperband (with `:key=value,...`).
    #[arg(long, default_value = "nsga2")]
    strategy: String,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Study seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue an existing study (created if missing).
    #[arg(long)]
    resume: bool,
    /// Sleep this long in each evaluation (to test crashes mid-trial).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Grace period, ms: a running trial whose heartbeat is older is
    /// re-queued (default 10 min).
    #[arg(long, default_value_t = 600_000)]
    stale_after_ms: u64,
    /// Heartbeat period, ms.
    #[arg(long, default_value_t = 2_000)]
    heartbeat_ms: u64,
    /// Print a JSON summary at the end.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ScoreArgs {
    #[command(flatten)]
    table: TableArgs,
    /// Study to score (trials in commit order): a SQLite file or a
    /// PostgreSQL URL.
    #[arg(long, conflicts_with = "sequence")]
    study: Option<StudyLocation>,
    /// CSV of trials in order, with the table's parameter columns (e.g.
    /// Optuna's choices); each row is looked up in the table.
    #[arg(long)]
    sequence: Option<PathBuf>,
    /// Budgets at which to score, comma-separated.
    #[arg(long, default_value = "25,50,100")]
    at: String,
}

struct SlowTable {
    inner: TableEvaluator,
    delay: Duration,
}

impl Evaluator for SlowTable {
    fn evaluate(
        &self,
        config: &Config,
        fidelity: f64,
        seed: u64,
    ) -> Result<TrialResult, EvalError> {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        self.inner.evaluate(config, fidelity, seed)
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect()
}

/// Loads the table and the objectives, filling in reference points from it.
fn load(args: &TableArgs) -> Result<(TableEvaluator, ObjectiveSet)> {
    let mut objectives: Vec<Objective> = split_list(&args.objectives)
        .iter()
        .map(|s| Objective::parse(s))
        .collect::<Result<_, _>>()
        .context("--objectives")?;
    let mut metric_names: Vec<String> = objectives.iter().map(|o| o.name.clone()).collect();
    metric_names.extend(split_list(&args.metrics));
    let table = TableEvaluator::from_csv(&args.table, TableColumns::Metrics(&metric_names))
        .with_context(|| format!("loading table {}", args.table.display()))?;
    let all: Vec<Metrics> = table
        .full_fidelity_metrics()
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    for o in &mut objectives {
        o.derive_reference(&all)
            .with_context(|| format!("objective `{}` has no values in the table", o.name))?;
    }
    let mut set = ObjectiveSet::new(objectives)?;
    for c in split_list(&args.constraints) {
        set = set.with_constraint(nas_search::objective::Constraint::parse(&c)?);
    }
    Ok((table, set))
}

fn run(args: RunArgs) -> Result<()> {
    let (table, objectives) = load(&args.table)?;
    let strategy = strategy_from_spec(&args.strategy)?;
    // A table's columns are measured figures; only the objectives' have
    // a known direction (other columns are reported as undeclared).
    let metrics = MetricRegistry::new(
        objectives
            .objectives
            .iter()
            .map(|o| MetricInfo::measured(&o.name, "as in the table", o.direction)),
    )?;
    let spec = StudySpec {
        space: table.space().clone(),
        objectives,
        strategy: strategy.spec(),
        seed: args.seed,
        metrics,
    };
    let mut options = RunOptions::new(&args.study, args.budget);
    options.workers = args.workers;
    options.resume = args.resume;
    options.stale_after = Duration::from_millis(args.stale_after_ms);
    options.heartbeat_every = Duration::from_millis(args.heartbeat_ms);
    let evaluator = Arc::new(SlowTable {
        inner: table,
        delay: Duration::from_millis(args.delay_ms),
    });
    let summary = run_study(spec, evaluator, strategy, &options, &|p| {
        tracing::debug!(
            finished = p.finished,
            budget = p.budget,
            front = p.front.len(),
            "trial done"
        );
    })
    .with_context(|| format!("running study {}", args.study))?;
    let finished = summary
        .trials
        .iter()
        .filter(|t| t.status == TrialStatus::Finished)
        .count();
    let overhead: Vec<f64> = summary
        .trials
        .iter()
        .filter_map(|t| t.overhead_ns)
        .map(|ns| ns as f64 / 1e6)
        .collect();
    let mean_overhead_ms = overhead.iter().sum::<f64>() / overhead.len().max(1) as f64;
    if args.json {
        let v = serde_json::json!({
            "finished_trials": finished,
            "evaluated_here": summary.evaluated_here,
            "front_size": summary.front.len(),
            "hypervolume": summary.hypervolume,
            "mean_overhead_ms": mean_overhead_ms,
            "stop_reason": format!("{:?}", summary.stop_reason),
        });
        println!("{v}");
    } else {
        println!(
            "finished={finished} evaluated_here={} front={} hypervolume={:.6} mean_overhead_ms={mean_overhead_ms:.4}",
            summary.evaluated_here,
            summary.front.len(),
            summary.hypervolume.unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

fn score(args: ScoreArgs) -> Result<()> {
    let (table, objectives) = load(&args.table)?;
    let at: Vec<usize> = split_list(&args.at)
        .iter()
        .map(|s| {
            s.parse()
                .with_context(|| format!("--at: `{s}` is not a number"))
        })
        .collect::<Result<_>>()?;
    let trials: Vec<TrialRecord> = match (&args.study, &args.sequence) {
        (Some(db), None) => {
            let mut study = Study::open_existing(db)?;
            let mut t: Vec<TrialRecord> = study
                .trials()?
                .into_iter()
                .filter(|t| t.status == TrialStatus::Finished)
                .collect();
            t.sort_by_key(|t| t.finish_seq);
            t
        }
        (None, Some(seq)) => sequence_trials(&table, seq)?,
        _ => bail!("give exactly one of --study or --sequence"),
    };
    let mut parts = Vec::new();
    for n in at {
        let hv =
            trials_hypervolume(&trials[..n.min(trials.len())], &objectives).unwrap_or(f64::NAN);
        parts.push(format!("hv_{n}={hv:.6}"));
    }
    let mean_overhead_ms = {
        let o: Vec<f64> = trials
            .iter()
            .filter_map(|t| t.overhead_ns)
            .map(|ns| ns as f64 / 1e6)
            .collect();
        o.iter().sum::<f64>() / o.len().max(1) as f64
    };
    println!(
        "{} trials={} mean_overhead_ms={mean_overhead_ms:.4}",
        parts.join(" "),
        trials.len()
    );
    Ok(())
}

fn sim(args: SimArgs) -> Result<()> {
    let (table, objectives) = load(&args.table)?;
    let at: Vec<usize> = split_list(&args.at)
        .iter()
        .map(|s| {
            s.parse()
                .with_context(|| format!("--at: `{s}` is not a number"))
        })
        .collect::<Result<_>>()?;
    let budget = at.iter().copied().max().unwrap_or(0);
    let (first, last) = match args.seeds.split_once('-') {
        Some((a, b)) => (a.trim().parse()?, b.trim().parse()?),
        None => {
            let s: u64 = args.seeds.trim().parse()?;
            (s, s)
        }
    };
    if let Some(spec) = &args.screen.screen_scores {
        return sim_screened(&args, spec, &table, &objectives, budget, first, last);
    }
    for seed in first..=last {
        let mut strategy = strategy_from_spec(&args.strategy)?;
        let trials = simulate(strategy.as_mut(), &table, &objectives, seed, &|t| {
            t.len() >= budget
        })?;
        let parts: Vec<String> = at
            .iter()
            .map(|&n| {
                let hv = trials_hypervolume(&trials[..n.min(trials.len())], &objectives)
                    .unwrap_or(f64::NAN);
                format!("hv_{n}={hv:.6}")
            })
            .collect();
        println!("{seed} {}", parts.join(" "));
    }
    Ok(())
}

/// Runs `strategy` in memory over `table`, one trial at a time with the
/// proposals seeded as `run` seeds them, until `done` says so or the
/// strategy stops proposing.
fn simulate(
    strategy: &mut dyn Strategy,
    table: &TableEvaluator,
    objectives: &ObjectiveSet,
    seed: u64,
    done: &dyn Fn(&[TrialRecord]) -> bool,
) -> Result<Vec<TrialRecord>> {
    let space = table.space().clone();
    let mut trials: Vec<TrialRecord> = Vec::new();
    let mut n = 0u64;
    while !done(&trials) {
        let history = History {
            trials: &trials,
            space: &space,
            objectives,
        };
        let mut rng = StdRng::seed_from_u64(derive_seed(seed, n ^ 0x5eed));
        let Ask::Propose(p) = strategy.ask(&history, &mut rng) else {
            break;
        };
        let result = table
            .evaluate(&p.config, p.fidelity, derive_seed(seed, n))
            .with_context(|| format!("evaluating {}", p.config))?;
        let record = TrialRecord {
            number: n,
            config_key: p.config.key(),
            config: p.config,
            fidelity: p.fidelity,
            tag: p.tag,
            status: TrialStatus::Finished,
            worker: None,
            seed: derive_seed(seed, n),
            metrics: Some(result.metrics),
            kernel_energy: Vec::new(),
            provenance: result.provenance,
            energy_spent_j: None,
            error: None,
            notes: Vec::new(),
            created_ns: 0,
            started_ns: None,
            finished_ns: None,
            finish_seq: Some(n),
            eval_ns: None,
            overhead_ns: None,
            attempts: 1,
        };
        strategy.tell(&record);
        trials.push(record);
        n += 1;
    }
    Ok(trials)
}

/// Light scores looked up by configuration (a proxy column of a scores
/// file); the cost of one score is the caller's estimate.
struct TableScores {
    scores: HashMap<String, Vec<f64>>,
    cost_j: f64,
    name: String,
}

impl LightScorer for TableScores {
    fn score(&self, config: &Config) -> Option<LightScore> {
        self.scores.get(&config.key()).map(|values| LightScore {
            values: values.clone(),
            cost_j: self.cost_j,
        })
    }
    fn cost_provenance(&self) -> Provenance {
        Provenance::Estimated
    }
    fn name(&self) -> String {
        self.name.clone()
    }
}

/// Reads `FILE:COLUMN[,COLUMN...]` (a `-` before a column negates it:
/// lower is better there) and pairs its rows with the table's rows (same
/// order). When both files have an accuracy (`accuracy` there,
/// `val_accuracy` here), they must agree row by row, which catches files
/// of different tables or orders.
fn load_scores(spec: &str, args: &TableArgs) -> Result<HashMap<String, Vec<f64>>> {
    let (file, columns) = spec
        .rsplit_once(':')
        .with_context(|| format!("--screen-scores `{spec}`: expected FILE:COLUMN"))?;
    let read = |path: &Path| -> Result<(Vec<String>, Vec<csv::StringRecord>)> {
        let mut r = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_path(path)
            .with_context(|| format!("reading {}", path.display()))?;
        let header = r.headers()?.iter().map(String::from).collect();
        let rows = r
            .records()
            .enumerate()
            .map(|(i, rec)| rec.with_context(|| format!("{} line {}", path.display(), i + 2)))
            .collect::<Result<_>>()?;
        Ok((header, rows))
    };
    let (s_head, s_rows) = read(Path::new(file))?;
    let (t_head, t_rows) = read(&args.table)?;
    let cols: Vec<(usize, f64, &str)> = columns
        .split(',')
        .map(|c| {
            let (sign, name) = match c.trim().strip_prefix('-') {
                Some(n) => (-1.0, n),
                None => (1.0, c.trim()),
            };
            let i = s_head.iter().position(|h| h == name).with_context(|| {
                format!("{file}: no column `{name}` (header: {})", s_head.join(","))
            })?;
            Ok((i, sign, name))
        })
        .collect::<Result<_>>()?;
    if s_rows.len() != t_rows.len() {
        bail!(
            "{file} has {} rows, table {} has {}: scores must have one row per table row",
            s_rows.len(),
            args.table.display(),
            t_rows.len()
        );
    }
    let mut metric_names: Vec<String> = split_list(&args.objectives)
        .iter()
        .map(|o| o.split(':').next().unwrap_or("").to_string())
        .collect();
    metric_names.extend(split_list(&args.metrics));
    let reserved = |c: &str| {
        matches!(c, "fidelity" | "provenance" | "energy_spent_j")
            || c.starts_with("kernel_energy_j:")
    };
    let s_acc = s_head.iter().position(|h| h == "accuracy");
    let t_acc = t_head.iter().position(|h| h == "val_accuracy");
    let mut out = HashMap::new();
    for (i, (s, t)) in s_rows.iter().zip(&t_rows).enumerate() {
        let line = i + 2;
        if let (Some(a), Some(b)) = (s_acc, t_acc) {
            let (a, b) = (s.get(a).unwrap_or(""), t.get(b).unwrap_or(""));
            if let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>()) {
                if (x - y).abs() > 1e-9 {
                    bail!("{file} line {line}: accuracy {a} but the table's row has val_accuracy {b}: not the same rows");
                }
            }
        }
        let values = cols
            .iter()
            .map(|&(c, sign, name)| {
                let cell = s.get(c).unwrap_or("");
                cell.parse::<f64>().map(|v| sign * v).with_context(|| {
                    format!("{file} line {line}, column `{name}`: `{cell}` is not a number")
                })
            })
            .collect::<Result<Vec<f64>>>()?;
        let config = Config(
            t_head
                .iter()
                .zip(t.iter())
                .filter(|(h, v)| !v.is_empty() && !reserved(h) && !metric_names.contains(h))
                .map(|(h, v)| (h.clone(), nas_search::space::ParamValue::parse_cell(v)))
                .collect(),
        );
        out.insert(config.key(), values);
    }
    Ok(out)
}

/// `sim --screen-scores`: per seed, the strategy training every one of
/// `budget` candidates against the same strategy screened (pools drawn
/// until `budget` candidates were considered, trained or screened out).
fn sim_screened(
    args: &SimArgs,
    spec: &str,
    table: &TableEvaluator,
    objectives: &ObjectiveSet,
    budget: usize,
    first: u64,
    last: u64,
) -> Result<()> {
    let o = &args.screen;
    let scores = load_scores(spec, &args.table)?;
    let energy_of = |trials: &[TrialRecord]| -> Result<f64> {
        trials
            .iter()
            .map(|t| {
                t.metrics
                    .as_ref()
                    .and_then(|m| m.get(&o.energy_metric).copied())
                    .with_context(|| {
                        format!(
                            "trial {} has no `{}` (name it in --metrics)",
                            t.config, o.energy_metric
                        )
                    })
            })
            .sum()
    };
    let column = spec.rsplit_once(':').map(|(_, c)| c).unwrap_or(spec);
    let mut sums = [0.0f64; 5];
    let mut n = 0.0f64;
    for seed in first..=last {
        let mut full = strategy_from_spec(&args.strategy)?;
        let full_trials = simulate(full.as_mut(), table, objectives, seed, &|t| {
            t.len() >= budget
        })?;
        let mut screen = Screen::new(
            strategy_from_spec(&args.strategy)?,
            Box::new(TableScores {
                scores: scores.clone(),
                cost_j: o.screen_cost_j,
                name: column.to_string(),
            }),
            o.screen_pool,
            o.screen_keep,
        );
        let log = screen.log();
        let considered = |t: &[TrialRecord]| {
            t.len() + log.lock().map(|l| l.screened_out.len()).unwrap_or(0) >= budget
        };
        let screened_trials = simulate(&mut screen, table, objectives, seed, &considered)?;
        let log = log.lock().map(|l| l.clone()).unwrap_or_default();
        let full_hv = trials_hypervolume(&full_trials, objectives).unwrap_or(f64::NAN);
        let full_e = energy_of(&full_trials)?;
        let hv = trials_hypervolume(&screened_trials, objectives).unwrap_or(f64::NAN);
        let train_e = energy_of(&screened_trials)?;
        let e = train_e + log.light_cost_j;
        // The control: the same unscreened run stopped after as many
        // trainings as the screened one made (is screening better than
        // just training less?).
        let k = screened_trials.len().min(full_trials.len());
        let matched_hv = trials_hypervolume(&full_trials[..k], objectives).unwrap_or(f64::NAN);
        println!(
            "{seed} full_hv={full_hv:.6} full_energy_j={full_e:.3} full_trained={} \
             matched_hv={matched_hv:.6} screened_hv={hv:.6} screened_energy_j={e:.3} screened_training_j={train_e:.3} \
             light_j={:.3} screened_trained={} screened_out={} unscored={}",
            full_trials.len(),
            log.light_cost_j,
            screened_trials.len(),
            log.screened_out.len(),
            log.drawn - log.scored,
        );
        for (s, v) in sums.iter_mut().zip([full_hv, full_e, hv, e, matched_hv]) {
            *s += v;
        }
        n += 1.0;
    }
    let [fh, fe, sh, se, mh] = sums.map(|s| s / n.max(1.0));
    println!(
        "mean full_hv={fh:.6} full_energy_j={fe:.3} matched_hv={mh:.6} screened_hv={sh:.6} screened_energy_j={se:.3} \
         hv_ratio={:.4} energy_ratio={:.4} matched_hv_ratio={:.4} (training energy: the table's provenance; light cost: estimated)",
        sh / fh,
        se / fe,
        mh / fh
    );
    Ok(())
}

/// Reads a sequence of configurations and looks each up at full fidelity.
fn sequence_trials(table: &TableEvaluator, file: &Path) -> Result<Vec<TrialRecord>> {
    let mut reader =
        csv::Reader::from_path(file).with_context(|| format!("reading {}", file.display()))?;
    let header: Vec<String> = reader.headers()?.iter().map(String::from).collect();
    let mut out = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let rec = rec.with_context(|| format!("{} row {}", file.display(), i + 2))?;
        let config = Config(
            header
                .iter()
                .zip(rec.iter())
                .filter(|(_, v)| !v.is_empty())
                .map(|(h, v)| (h.clone(), nas_search::space::ParamValue::parse_cell(v)))
                .collect(),
        );
        let result = table
            .evaluate(&config, 1.0, 0)
            .with_context(|| format!("{} row {}", file.display(), i + 2))?;
        out.push(TrialRecord {
            number: i as u64,
            config_key: config.key(),
            config,
            fidelity: 1.0,
            tag: None,
            status: TrialStatus::Finished,
            worker: None,
            seed: 0,
            metrics: Some(result.metrics),
            kernel_energy: Vec::new(),
            provenance: result.provenance,
            energy_spent_j: None,
            error: None,
            notes: Vec::new(),
            created_ns: 0,
            started_ns: None,
            finished_ns: None,
            finish_seq: Some(i as u64),
            eval_ns: None,
            overhead_ns: None,
            attempts: 1,
        });
    }
    Ok(out)
}

/// Claims and finishes `claims` trials of a new random-search study over
/// the default tabular space with `workers` threads; prints the throughput
/// and the claim latency percentiles.
fn bench_claims(args: BenchArgs) -> Result<()> {
    use nas_search::objective::Direction;
    use nas_search::space::SearchSpace;
    use nas_search::study::{Claim, WorkerIdentity};
    let spec = StudySpec {
        space: SearchSpace::default_tabular(),
        objectives: ObjectiveSet::new(vec![Objective::parse("acc:max")?])?,
        strategy: "random".into(),
        seed: 1,
        metrics: MetricRegistry::new([MetricInfo::measured(
            "acc",
            "fraction",
            Direction::Maximize,
        )])?,
    };
    let study = Study::open(&args.study, spec, false)
        .with_context(|| format!("creating study {}", args.study))?;
    let stale = Duration::from_secs(600);
    let start = std::time::Instant::now();
    let latencies: Vec<Vec<f64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.workers.max(1))
            .map(|w| {
                let handle = study.reopen();
                let budget = args.claims;
                scope.spawn(move || -> Result<Vec<f64>> {
                    let mut study = handle?;
                    let me = WorkerIdentity::current(w);
                    let mut strategy = strategy_from_spec("random")?;
                    let mut out = Vec::new();
                    loop {
                        let t0 = std::time::Instant::now();
                        let claim = study.claim(&me, budget, strategy.as_mut(), stale)?;
                        let ms = t0.elapsed().as_secs_f64() * 1e3;
                        match claim {
                            Claim::Trial(t) => {
                                out.push(ms);
                                let result = TrialResult {
                                    metrics: [("acc".to_string(), 0.5)].into_iter().collect(),
                                    ..Default::default()
                                };
                                study.finish(t.id, &Ok(result), 0, 0)?;
                            }
                            Claim::Wait => std::thread::sleep(Duration::from_millis(1)),
                            Claim::BudgetReached | Claim::Exhausted => return Ok(out),
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("worker panicked")))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let elapsed = start.elapsed().as_secs_f64();
    let mut all: Vec<f64> = latencies.into_iter().flatten().collect();
    all.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        all.get(((all.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "workers={} claims={} elapsed_s={elapsed:.3} claims_per_s={:.1} claim_p50_ms={:.3} claim_p99_ms={:.3}",
        args.workers,
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99)
    );
    Ok(())
}

fn main() -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NAS_SEARCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // `run` is the default subcommand: `nas-search-table --table ...` works.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let first = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
    if !matches!(
        first,
        "run" | "score" | "sim" | "bench-claims" | "help" | "--help" | "-h" | "--version" | "-V"
    ) {
        args.insert(1, "run".into());
    }
    match Cli::parse_from(args).command {
        Command::Run(a) => run(a),
        Command::Score(a) => score(a),
        Command::Sim(a) => sim(a),
        Command::BenchClaims(a) => bench_claims(a),
    }
}
