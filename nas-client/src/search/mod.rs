//! Energy-aware architecture search commands (`search`, `report`, `compare`).
//!
//! This module owns the command-line surface of the search and the training
//! evaluator that connects `nas_search` (spaces, strategies, studies) to
//! nas-client's training loop and to energyd for per-trial energy.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

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
    /// Directory for CSV, JSON, SVG, PNG and Markdown outputs.
    #[arg(long)]
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
pub fn search(args: SearchArgs) -> anyhow::Result<()> {
    let _ = args;
    bail!("nas-client search: not built yet")
}

/// Runs `nas-client report`.
pub fn report(args: ReportArgs) -> anyhow::Result<()> {
    let _ = args;
    bail!("nas-client report: not built yet")
}

/// Runs `nas-client compare`.
pub fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let _ = args;
    bail!("nas-client compare: not built yet")
}
