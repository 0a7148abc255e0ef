//! `nas-client proxies`: scores trained architectures with zero-cost
//! proxies (the `proxies` crate) and says how well each proxy ranks them
//! against their trained validation accuracy: Kendall τ-b and Spearman ρ
//! on every architecture, on uniform random samples and on stratified
//! samples (equal draws from accuracy bins), and the proxy's cost (wall
//! time per scored architecture; energy is not measured by this command).
//!
//! The architectures come from a finished study (`--study`: every finished
//! trial's configuration, read as `search` trains it) or from a table of
//! real trainings (`--table`: a CSV with `n_layers`, `width_1..`,
//! `activation`, and optionally `backbone`, `dropout`, `normalization`,
//! plus an accuracy column), as bench/proxies does with its tables.

use crate::search::trainer::{train_config, DataSource};
use anyhow::{bail, Context, Result};
use clap::Args;
use nas_search::study::{Study, StudyLocation, TrialStatus};
use nn_plan::{Activation, Backbone, ModelSpec, Norm};
use proxies::rank::{kendall_tau_b, random_sample, spearman_rho, stratified_sample};
use proxies::{LossKind, Proxy, ProxyBatch, ProxyData, ProxyKind};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tabular_nn::data::Dataset;

/// Arguments of `nas-client proxies`.
#[derive(Debug, Clone, Args)]
pub struct ProxiesArgs {
    /// Study whose finished trials to score (a SQLite file or a
    /// `postgresql://` URL).
    #[arg(long, conflicts_with = "table", required_unless_present = "table")]
    pub study: Option<StudyLocation>,
    /// CSV table of trained architectures to score instead of a study.
    #[arg(long)]
    pub table: Option<PathBuf>,
    /// Bundled dataset the architectures were trained on (studies do not
    /// record it).
    #[arg(long, conflicts_with = "data", required_unless_present = "data")]
    pub dataset: Option<String>,
    /// CSV file the architectures were trained on (needs --target).
    #[arg(long, requires = "target")]
    pub data: Option<PathBuf>,
    /// Target column of --data.
    #[arg(long)]
    pub target: Option<String>,
    /// Proxies to compute (repeat; default: every standard one). Names:
    /// grad_norm, snip, grasp, fisher, synflow, jacob_cov, naswot, zen,
    /// zico, expressflow, params, flops; a bundled evolved proxy
    /// (evolved_phoneme, evolved_combined); or a saved expression file
    /// (`PATH.expr`, as --evolve-out writes, of either --evolve-terminals
    /// level), reported under its file name.
    #[arg(long = "proxy", value_parser = parse_proxy)]
    pub proxies: Vec<Proxy>,
    /// Trained-accuracy metric (study metric or table column).
    #[arg(long, default_value = "val_accuracy")]
    pub metric: String,
    /// Rows per minibatch (drawn from the training split).
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Minibatches (ZiCo uses them all, the other proxies the first).
    #[arg(long, default_value_t = 2)]
    pub batches: usize,
    /// Seed of the minibatch draw, of every network's initialisation, and
    /// of the samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Architectures per random or stratified sample (all when larger).
    #[arg(long, default_value_t = 100)]
    pub sample_size: usize,
    /// Accuracy bins of the stratified samples.
    #[arg(long, default_value_t = 5)]
    pub bins: usize,
    /// Samples of each kind (τ and ρ are averaged over them).
    #[arg(long, default_value_t = 20)]
    pub repeats: usize,
    /// Write every architecture's scores to this CSV.
    #[arg(long)]
    pub scores_out: Option<PathBuf>,
    /// Print a JSON summary instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Evolve a proxy (`proxies::evolve::Evolution`) on this other table
    /// of trainings (repeat, with one --evolve-dataset each, to evolve on
    /// several datasets: fitness is the mean Kendall τ over them) and judge
    /// it here beside the standard ones, as the row `evolved` (or
    /// `evolved_combined`, see --evolve-terminals).
    #[arg(long, requires = "evolve_dataset")]
    pub evolve_table: Vec<PathBuf>,
    /// Bundled dataset of each --evolve-table, in the same order.
    #[arg(long)]
    pub evolve_dataset: Vec<String>,
    /// Architectures of each --evolve-table evolution may see: a
    /// stratified sample of --bins equal-range accuracy bins, this / --bins
    /// draws per bin (all of a bin that has fewer).
    #[arg(long, default_value_t = 150)]
    pub evolve_sample: usize,
    /// Architectures of each --evolve-table held out from evolution (a
    /// stratified sample of the rest, drawn like --evolve-sample): the
    /// final expression is the generation best with the highest τ there.
    /// 0: no validation, the best by search τ.
    #[arg(long, default_value_t = 150)]
    pub evolve_validation_sample: usize,
    /// Population of the evolution.
    #[arg(long, default_value_t = 40)]
    pub evolve_population: usize,
    /// Generations of the evolution.
    #[arg(long, default_value_t = 20)]
    pub evolve_generations: usize,
    /// What evolved expressions are made of: `tensors` (per-layer tensor
    /// expressions `AGG_layers(RED(T))`, the GreenMachine/EZNAS form;
    /// judged as the row `evolved`) or `proxies+tensors`
    /// (architecture-level expressions over the standard proxies' scores
    /// and per-layer expressions, `proxies::scalar`; row
    /// `evolved_combined`; the proxies are scored on --batches batches, so
    /// ZiCo needs 2).
    #[arg(long, value_enum, default_value_t = EvolveTerminals::Tensors)]
    pub evolve_terminals: EvolveTerminals,
    /// Save the evolution here after every generation, and resume from it
    /// when it exists (same settings; more generations may be asked).
    #[arg(long, requires = "evolve_table")]
    pub evolve_checkpoint: Option<PathBuf>,
    /// Write the evolved expression to this file (readable: comment lines
    /// say where it was evolved, then the expression on one line); it is
    /// then usable as `--proxy FILE`.
    #[arg(long, requires = "evolve_table")]
    pub evolve_out: Option<PathBuf>,
}

/// Terminals of evolved expressions (`--evolve-terminals`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EvolveTerminals {
    /// Per-layer tensors only (`proxies::evolve::Expression`).
    #[value(name = "tensors")]
    Tensors,
    /// Standard proxies' scores and per-layer expressions
    /// (`proxies::scalar::ScalarExpr`).
    #[value(name = "proxies+tensors")]
    ProxiesAndTensors,
}

impl EvolveTerminals {
    /// The flag's value.
    fn name(self) -> &'static str {
        match self {
            EvolveTerminals::Tensors => "tensors",
            EvolveTerminals::ProxiesAndTensors => "proxies+tensors",
        }
    }

    /// The row the evolved proxy is judged under.
    fn row(self) -> &'static str {
        match self {
            EvolveTerminals::Tensors => "evolved",
            EvolveTerminals::ProxiesAndTensors => "evolved_combined",
        }
    }
}

/// One architecture to score and the accuracy it trained to.
struct Scored {
    label: String,
    spec: ModelSpec,
    accuracy: f64,
}

/// Correlations of one proxy.
#[derive(Debug, Clone, serde::Serialize)]
struct ProxyFigures {
    proxy: String,
    tau_all: Option<f64>,
    rho_all: Option<f64>,
    tau_random: Option<f64>,
    rho_random: Option<f64>,
    tau_stratified: Option<f64>,
    rho_stratified: Option<f64>,
    /// Wall time per architecture (network build + the proxy), ms.
    ms_per_arch: f64,
    /// Architectures whose score was -∞ (degenerate).
    degenerate: usize,
}

/// Runs `nas-client proxies`.
pub fn proxies(args: ProxiesArgs) -> Result<()> {
    let source = match (&args.dataset, &args.data, &args.target) {
        (Some(name), None, _) => {
            tabular_nn::data::bundled::find(name).context("--dataset")?;
            DataSource::Bundled(name.clone())
        }
        (None, Some(path), Some(target)) => DataSource::File {
            path: path.clone(),
            target: target.clone(),
        },
        _ => bail!("give --dataset NAME or --data FILE --target COLUMN"),
    };
    let dataset = source.load()?;
    let data = minibatches(&dataset, args.batch_size, args.batches, args.seed)?;
    let archs = match (&args.study, &args.table) {
        (Some(study), _) => from_study(study, &args.metric)?,
        (None, Some(table)) => from_table(table, &args.metric)?,
        (None, None) => bail!("give --study S or --table FILE"),
    };
    if archs.len() < 2 {
        bail!(
            "{} architectures with a finite {}: need at least 2 to rank",
            archs.len(),
            args.metric
        );
    }
    let chosen: Vec<Proxy> = if args.proxies.is_empty() {
        ProxyKind::ALL.into_iter().map(Proxy::Standard).collect()
    } else {
        args.proxies.clone()
    };
    let accuracy: Vec<f64> = archs.iter().map(|a| a.accuracy).collect();
    let random: Vec<Vec<usize>> = (0..args.repeats)
        .map(|r| random_sample(archs.len(), args.sample_size, args.seed + r as u64))
        .collect();
    let per_bin = (args.sample_size / args.bins.max(1)).max(1);
    let strat: Vec<Vec<usize>> = (0..args.repeats)
        .map(|r| stratified_sample(&accuracy, args.bins, per_bin, args.seed + r as u64))
        .collect();
    let mut all_scores = Vec::new();
    let mut figures = Vec::new();
    let score_all = |proxy: &Proxy| -> Result<(Vec<f64>, ProxyFigures)> {
        let start = Instant::now();
        let mut scores = Vec::with_capacity(archs.len());
        for a in &archs {
            let s = proxy
                .score(&a.spec, &data, args.seed)
                .with_context(|| format!("{proxy} on {}", a.label))?;
            scores.push(s);
        }
        let ms = start.elapsed().as_secs_f64() * 1e3 / archs.len() as f64;
        let f = figures_of(proxy.name(), &scores, &accuracy, &random, &strat, ms);
        Ok((scores, f))
    };
    for proxy in &chosen {
        let (scores, f) = score_all(proxy)?;
        figures.push(f);
        all_scores.push(scores);
    }
    let mut evolved_expression = None;
    if !args.evolve_table.is_empty() {
        let evolved = evolve_on(&args)?;
        let (_, f) = score_all(&evolved.proxy)?;
        figures.push(f);
        if let Some(path) = &args.evolve_out {
            let text = format!(
                "# evolved by nas-client proxies on {}, terminals {}, seed {}, population {}, {} generations; picked: generation {}, mean Kendall tau {:.4} on its search samples{}\n{}\n",
                evolved.on,
                args.evolve_terminals.name(),
                args.seed,
                args.evolve_population,
                args.evolve_generations,
                evolved.generation,
                evolved.search_tau,
                evolved
                    .validation_tau
                    .map_or(String::new(), |v| format!(", {v:.4} on its validation samples")),
                evolved.expression
            );
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        evolved_expression = Some(serde_json::json!({
            "row": evolved.proxy.name(),
            "terminals": args.evolve_terminals.name(),
            "expression": evolved.expression,
            "evolved_on": evolved.on,
            "search_sample_tau": evolved.search_tau,
            "validation_sample_tau": evolved.validation_tau,
            "generation": evolved.generation,
        }));
    }
    if let Some(path) = &args.scores_out {
        write_scores(path, &archs, &chosen, &all_scores)?;
    }
    let strat_size = strat.first().map_or(0, Vec::len);
    if args.json {
        let summary = serde_json::json!({
            "dataset": source.label(),
            "architectures": archs.len(),
            "metric": args.metric,
            "batch_size": args.batch_size,
            "batches": args.batches,
            "random_sample_size": args.sample_size.min(archs.len()),
            "stratified_sample_size": strat_size,
            "bins": args.bins,
            "repeats": args.repeats,
            "cost": "wall time per architecture on this machine (measured); energy not measured",
            "proxies": figures,
            "evolved": evolved_expression,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!(
        "{} architectures on {} against {}; one batch of {} rows ({} for zico); random samples of {}, stratified samples of {} ({} bins), {} each",
        archs.len(),
        source.label(),
        args.metric,
        args.batch_size,
        args.batches,
        args.sample_size.min(archs.len()),
        strat_size,
        args.bins,
        args.repeats
    );
    println!(
        "{:<12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10} {:>6}",
        "proxy",
        "tau_all",
        "rho_all",
        "tau_rnd",
        "rho_rnd",
        "tau_str",
        "rho_str",
        "ms/arch",
        "-inf"
    );
    let show = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.3}"));
    for f in &figures {
        println!(
            "{:<12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10.3} {:>6}",
            f.proxy,
            show(f.tau_all),
            show(f.rho_all),
            show(f.tau_random),
            show(f.rho_random),
            show(f.tau_stratified),
            show(f.rho_stratified),
            f.ms_per_arch,
            f.degenerate
        );
    }
    if let Some(e) = &evolved_expression {
        println!("evolved: {e}");
    }
    println!("cost: wall time per architecture on this machine (measured); energy not measured");
    Ok(())
}

/// τ and ρ of `scores` over all architectures and averaged over samples.
fn figures_of(
    name: &str,
    scores: &[f64],
    accuracy: &[f64],
    random: &[Vec<usize>],
    strat: &[Vec<usize>],
    ms_per_arch: f64,
) -> ProxyFigures {
    let mean_over = |samples: &[Vec<usize>], f: fn(&[f64], &[f64]) -> Option<f64>| {
        let v: Vec<f64> = samples
            .iter()
            .filter_map(|idx| {
                let x: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
                let y: Vec<f64> = idx.iter().map(|&i| accuracy[i]).collect();
                f(&x, &y)
            })
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    ProxyFigures {
        proxy: name.to_owned(),
        tau_all: kendall_tau_b(scores, accuracy),
        rho_all: spearman_rho(scores, accuracy),
        tau_random: mean_over(random, kendall_tau_b),
        rho_random: mean_over(random, spearman_rho),
        tau_stratified: mean_over(strat, kendall_tau_b),
        rho_stratified: mean_over(strat, spearman_rho),
        ms_per_arch,
        degenerate: scores.iter().filter(|s| **s == f64::NEG_INFINITY).count(),
    }
}

/// `--proxy`'s value: a name or a saved expression file.
fn parse_proxy(text: &str) -> std::result::Result<Proxy, String> {
    Proxy::resolve(text).map_err(|e| e.to_string())
}

/// What an evolution found.
struct Evolved {
    /// Its text.
    expression: String,
    /// The proxy judged here, named by [`EvolveTerminals::row`].
    proxy: Proxy,
    /// The tables and datasets it was evolved on.
    on: String,
    search_tau: f64,
    validation_tau: Option<f64>,
    generation: usize,
}

/// What evolved expressions read of each architecture of a sample, and
/// the accuracies.
type TaskData<A> = (Vec<A>, Vec<f64>);

/// What an expression of one level reads of an architecture.
type InputsOf<A> = fn(&ModelSpec, &ProxyData, u64) -> Result<A, proxies::ProxyError>;

fn task_of<A>(
    archs: &[Scored],
    sample: &[usize],
    data: &ProxyData,
    seed: u64,
    inputs: InputsOf<A>,
) -> Result<TaskData<A>> {
    let mut read = Vec::with_capacity(sample.len());
    for &i in sample {
        read.push(
            inputs(&archs[i].spec, data, seed)
                .with_context(|| format!("evolution inputs of {}", archs[i].label))?,
        );
    }
    Ok((read, sample.iter().map(|&i| archs[i].accuracy).collect()))
}

/// Evolves an expression of the level `--evolve-terminals` names.
fn evolve_on(args: &ProxiesArgs) -> Result<Evolved> {
    use proxies::evolve::{layer_tensors, Expression};
    use proxies::scalar::{scalar_inputs, ScalarExpr, Terminal};
    let row = args.evolve_terminals.row();
    match args.evolve_terminals {
        // One batch: the tensors are read on the first only.
        EvolveTerminals::Tensors => evolve_level::<Expression>(args, 1, layer_tensors, |e| {
            Proxy::evolved(row, ScalarExpr::Terminal(Terminal::Layers(e)))
        }),
        // Every batch the standard proxies are judged on here (ZiCo needs
        // 2), so a terminal's value in evolution is the proxy's score.
        EvolveTerminals::ProxiesAndTensors => evolve_level::<ScalarExpr>(
            args,
            args.batches,
            |spec, data, seed| scalar_inputs(spec, data, seed, &ProxyKind::ALL, true),
            |e| Proxy::evolved(row, e),
        ),
    }
}

/// Evolves an expression of level `G` on stratified samples of the
/// `--evolve-table`s' architectures (trained on their
/// `--evolve-dataset`s, read on `batches` minibatches), picking it on
/// disjoint validation samples of the same tables when asked; resumes
/// from and saves to `--evolve-checkpoint`; progress on stderr.
fn evolve_level<G: proxies::evolve::Genome>(
    args: &ProxiesArgs,
    batches: usize,
    inputs: InputsOf<G::Arch>,
    to_proxy: impl Fn(G) -> Proxy,
) -> Result<Evolved> {
    use proxies::evolve::{Evolution, EvolveSettings, RankTask};
    if args.evolve_table.len() != args.evolve_dataset.len() {
        bail!(
            "{} --evolve-table but {} --evolve-dataset: give one dataset per table, in order",
            args.evolve_table.len(),
            args.evolve_dataset.len()
        );
    }
    let per_bin = (args.evolve_sample / args.bins.max(1)).max(1);
    let valid_per_bin = args.evolve_validation_sample / args.bins.max(1);
    let mut search_data = Vec::new();
    let mut valid_data = Vec::new();
    let mut on = Vec::new();
    for (table, dataset) in args.evolve_table.iter().zip(&args.evolve_dataset) {
        let ds = DataSource::Bundled(dataset.clone()).load()?;
        let data = minibatches(&ds, args.batch_size, batches, args.seed)?;
        let archs = from_table(table, &args.metric)?;
        let accuracy: Vec<f64> = archs.iter().map(|a| a.accuracy).collect();
        let sample = stratified_sample(&accuracy, args.bins, per_bin, args.seed);
        search_data.push(task_of(&archs, &sample, &data, args.seed, inputs)?);
        let mut counts = format!("{} search", sample.len());
        if valid_per_bin > 0 {
            // The rest of the table, then a stratified draw from it.
            let rest: Vec<usize> = (0..archs.len()).filter(|i| !sample.contains(i)).collect();
            let rest_acc: Vec<f64> = rest.iter().map(|&i| accuracy[i]).collect();
            let picked: Vec<usize> =
                stratified_sample(&rest_acc, args.bins, valid_per_bin, args.seed)
                    .into_iter()
                    .map(|k| rest[k])
                    .collect();
            counts.push_str(&format!(", {} validation", picked.len()));
            if picked.len() >= 2 {
                valid_data.push(task_of(&archs, &picked, &data, args.seed, inputs)?);
            }
        }
        on.push(format!("{} ({dataset}; {counts})", table.display()));
    }
    let search: Vec<RankTask<'_, G::Arch>> = search_data
        .iter()
        .map(|(archs, accuracy)| RankTask { archs, accuracy })
        .collect();
    let validation: Vec<RankTask<'_, G::Arch>> = valid_data
        .iter()
        .map(|(archs, accuracy)| RankTask { archs, accuracy })
        .collect();
    let settings = EvolveSettings {
        population: args.evolve_population,
        generations: args.evolve_generations,
        seed: args.seed,
        ..EvolveSettings::default()
    };
    let mut run = match &args.evolve_checkpoint {
        Some(path) if path.exists() => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let run = Evolution::<G>::resume(&settings, &text)
                .with_context(|| format!("resuming from {}", path.display()))?;
            eprintln!(
                "evolution resumed from {} at generation {}",
                path.display(),
                run.generation()
            );
            run
        }
        _ => Evolution::<G>::start(&settings, &search, &validation),
    };
    let show = |run: &Evolution<G>| {
        if let Some(b) = run.bests().last() {
            eprintln!(
                "evolution generation {}/{}: best search tau {:.4}{}  {}",
                b.generation,
                settings.generations,
                b.fitness,
                b.validation
                    .map_or(String::new(), |v| format!(", validation tau {v:.4}")),
                b.expression
            );
        }
    };
    let save = |run: &Evolution<G>| -> Result<()> {
        if let Some(path) = &args.evolve_checkpoint {
            // Written beside and renamed, so a stop mid-write keeps the
            // previous generation's checkpoint.
            let tmp = path.with_extension("partial");
            std::fs::write(&tmp, run.checkpoint())
                .with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    };
    show(&run);
    save(&run)?;
    while !run.finished() {
        run.step(&search, &validation);
        show(&run);
        save(&run)?;
    }
    let result = run.result();
    Ok(Evolved {
        expression: result.best.to_string(),
        proxy: to_proxy(result.best),
        on: on.join(" + "),
        search_tau: result.fitness,
        validation_tau: result.validation,
        generation: result.generation,
    })
}

/// `count` minibatches of `rows` rows drawn without replacement from the
/// training split (seeded), with the task's loss.
pub(crate) fn minibatches(
    dataset: &Dataset,
    rows: usize,
    count: usize,
    seed: u64,
) -> Result<ProxyData> {
    let n = dataset.train.rows();
    if rows < 2 || count == 0 || rows * count > n {
        bail!(
            "{count} batches of {rows} rows do not fit the {n} training rows of {} (need rows >= 2)",
            dataset.name
        );
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut SmallRng::seed_from_u64(seed));
    let batches = order
        .chunks(rows)
        .take(count)
        .map(|idx| ProxyBatch {
            x: dataset.train.x.select(ndarray::Axis(0), idx),
            y: dataset.train.y.select(ndarray::Axis(0), idx),
        })
        .collect();
    let loss = if dataset.task.is_classification() {
        LossKind::SoftmaxCrossEntropy
    } else {
        LossKind::Mse
    };
    Ok(ProxyData::new(batches, loss, dataset.n_outputs())?)
}

/// Every finished trial of `location` with a finite `metric`.
fn from_study(location: &StudyLocation, metric: &str) -> Result<Vec<Scored>> {
    let mut study =
        Study::open_existing(location).with_context(|| format!("opening study {location}"))?;
    let trials = study
        .trials()
        .with_context(|| format!("reading trials of {location}"))?;
    let mut out = Vec::new();
    for t in trials {
        if t.status != TrialStatus::Finished {
            continue;
        }
        let Some(acc) = t
            .metrics
            .as_ref()
            .and_then(|m| m.get(metric))
            .copied()
            .filter(|v| v.is_finite())
        else {
            continue;
        };
        let config = train_config(&t.config, t.fidelity)
            .map_err(|e| anyhow::anyhow!("{location}: trial {}: {e}", t.number))?;
        out.push(Scored {
            label: format!("trial {}", t.number),
            spec: config.model,
            accuracy: acc,
        });
    }
    Ok(out)
}

/// The architectures of a CSV table of trainings: `n_layers`, `width_1..`
/// (empty for absent layers), `activation`, optional `backbone`
/// (mlp/resnet), `dropout`, `normalization`; rows whose `metric` is empty
/// are skipped.
fn from_table(path: &Path, metric: &str) -> Result<Vec<Scored>> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let headers = reader
        .headers()
        .with_context(|| format!("{}: header", path.display()))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let need =
        |name: &str| col(name).with_context(|| format!("{}: no column {name:?}", path.display()));
    let (n_layers_col, metric_col) = (need("n_layers")?, need(metric)?);
    let mut out = Vec::new();
    for (i, record) in reader.records().enumerate() {
        // Line 1 is the header.
        let line = i + 2;
        let record = record.with_context(|| format!("{}: line {line}", path.display()))?;
        let field = |c: Option<usize>| c.and_then(|c| record.get(c)).map(str::trim).unwrap_or("");
        let at = |name: &str| format!("{}: line {line}, column {name}", path.display());
        let acc_text = field(Some(metric_col));
        if acc_text.is_empty() {
            continue;
        }
        let accuracy: f64 = acc_text
            .parse()
            .with_context(|| format!("{}: {acc_text:?} is not a number", at(metric)))?;
        let n_layers: usize = field(Some(n_layers_col))
            .parse()
            .with_context(|| format!("{}: not a layer count", at("n_layers")))?;
        let mut widths = Vec::with_capacity(n_layers);
        for k in 1..=n_layers {
            let name = format!("width_{k}");
            let w: usize = field(col(&name))
                .parse()
                .with_context(|| format!("{}: not a width", at(&name)))?;
            widths.push(w);
        }
        let mut spec = ModelSpec {
            backbone: Backbone::Mlp { widths },
            dropout: 0.0,
            norm: Norm::None,
            ..ModelSpec::default()
        };
        let text = field(col("activation"));
        if !text.is_empty() {
            spec.activation = Activation::parse(text)
                .with_context(|| format!("{}: unknown activation {text:?}", at("activation")))?;
        }
        let text = field(col("normalization"));
        if !text.is_empty() {
            spec.norm = Norm::parse(text).with_context(|| {
                format!("{}: unknown normalization {text:?}", at("normalization"))
            })?;
        }
        if field(col("backbone")) == "resnet" {
            let Backbone::Mlp { widths } = &spec.backbone else {
                unreachable!("built as an MLP above")
            };
            let d_main = *widths
                .first()
                .with_context(|| format!("{}: a resnet needs a layer", at("n_layers")))?;
            spec.backbone = Backbone::Resnet {
                d_main,
                d_hidden: widths.clone(),
            };
        }
        // Dropout is read only to be exact about the row; proxies remove it.
        let text = field(col("dropout"));
        if !text.is_empty() {
            spec.dropout = text
                .parse()
                .with_context(|| format!("{}: not a probability", at("dropout")))?;
        }
        out.push(Scored {
            label: format!("{} line {line}", path.display()),
            spec,
            accuracy,
        });
    }
    Ok(out)
}

fn write_scores(
    path: &Path,
    archs: &[Scored],
    proxies: &[Proxy],
    scores: &[Vec<f64>],
) -> Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("writing {}", path.display()))?;
    let mut header = vec!["architecture".to_owned(), "accuracy".to_owned()];
    header.extend(proxies.iter().map(|p| p.name().to_owned()));
    w.write_record(&header)?;
    for (i, a) in archs.iter().enumerate() {
        let mut row = vec![a.spec.describe(), a.accuracy.to_string()];
        row.extend(scores.iter().map(|s| s[i].to_string()));
        w.write_record(&row)?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.csv");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    #[test]
    fn reads_architectures_from_a_table() {
        let (_dir, path) = table(
            "n_layers,width_1,width_2,activation,dropout,val_accuracy\n\
             2,32,8,tanh,0.25,0.75\n\
             1,16,,relu,,0.5\n\
             1,16,,relu,,\n",
        );
        let archs = from_table(&path, "val_accuracy").expect("reads");
        // The row without an accuracy is skipped.
        assert_eq!(archs.len(), 2);
        assert_eq!(
            archs[0].spec.backbone,
            Backbone::Mlp {
                widths: vec![32, 8]
            }
        );
        assert_eq!(archs[0].spec.activation, Activation::Tanh);
        assert_eq!(archs[0].spec.dropout, 0.25);
        assert_eq!(archs[0].accuracy, 0.75);
        assert_eq!(archs[1].spec.norm, Norm::None);
    }

    #[test]
    fn table_errors_name_the_line_and_column() {
        let (_dir, path) =
            table("n_layers,width_1,activation,val_accuracy\n1,8,relu,0.5\n2,8,relu,0.6\n");
        let err = format!(
            "{:#}",
            from_table(&path, "val_accuracy").err().expect("fails")
        );
        assert!(err.contains("line 3, column width_2"), "{err}");
        let (_dir, path) = table("n_layers,width_1,activation,val_accuracy\n1,8,bogus,0.5\n");
        let err = format!(
            "{:#}",
            from_table(&path, "val_accuracy").err().expect("fails")
        );
        assert!(err.contains("line 2, column activation"), "{err}");
        let err = format!("{:#}", from_table(&path, "accuracy").err().expect("fails"));
        assert!(err.contains("no column \"accuracy\""), "{err}");
    }
}

#[cfg(test)]
mod study_tests {
    use super::*;
    use crate::search::{search, SearchArgs};
    use clap::Parser;

    #[derive(Parser)]
    struct SearchCli {
        #[command(flatten)]
        args: SearchArgs,
    }

    #[test]
    fn reads_the_architectures_of_a_finished_study() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A look-up table stands in for trainings, so the search runs in
        // process: 4 configurations, each evaluated once.
        let table = dir.path().join("t.csv");
        std::fs::write(
            &table,
            "n_layers,width_1,width_2,activation,val_accuracy,inference_energy_j_per_1k\n\
             1,8,,relu,0.6,1.0\n\
             1,32,,tanh,0.7,2.0\n\
             2,8,8,relu,0.8,3.0\n\
             2,32,8,tanh,0.9,4.0\n",
        )
        .expect("write");
        let study = dir.path().join("s.db");
        let evaluator = format!("table:{}", table.display());
        let cli = SearchCli::try_parse_from([
            "search",
            "--evaluator",
            &evaluator,
            "--study",
            study.to_str().expect("utf-8 path"),
            "--budget",
            "4",
            "--strategy",
            "random",
            "--json",
        ])
        .expect("flags parse");
        search(cli.args).expect("search runs");
        let archs =
            from_study(&StudyLocation::from(study.clone()), "val_accuracy").expect("study reads");
        // Four finished trials (random draws may repeat a row), each with
        // its row's architecture.
        assert_eq!(archs.len(), 4);
        for a in &archs {
            let (widths, activation) = match (a.accuracy * 10.0).round() as u32 {
                6 => (vec![8], Activation::Relu),
                7 => (vec![32], Activation::Tanh),
                8 => (vec![8, 8], Activation::Relu),
                9 => (vec![32, 8], Activation::Tanh),
                other => panic!("accuracy {other} is not a table row's"),
            };
            assert_eq!(a.spec.backbone, Backbone::Mlp { widths });
            assert_eq!(a.spec.activation, activation);
        }
        // A metric no trial reports leaves nothing to rank.
        assert!(from_study(&StudyLocation::from(study), "test_accuracy")
            .expect("study reads")
            .is_empty());
    }
}
