//! `nas-client search --carbon-aware`: a live carbon-aware search (issue
//! 17, after CE-NAS). Each hour (a UTC hour of the wall clock, or a
//! replayed trace hour) the simulator's policy
//! ([`carbon_schedule::live::HourPlanner`] over
//! [`carbon_schedule::sim::Policy`]) splits the `--workers` slots: `k` do
//! heavy work (training the best queued candidate as a normal
//! `nas-client trial` process, measured by energyd) and the rest light work
//! (a candidate proposed by the search strategy, scored with a zero-cost
//! proxy in a `nas-client light-trial` process that measures its scoring
//! phase through energyd). Light results join a queue ranked by dominance
//! ([`carbon_schedule::queue::DominanceQueue`]: proxy score, max, against
//! the network's FLOPs per row, min, as its inference-energy stand-in);
//! heavy slots pop its best. With `--calibration`, the energy axis is the
//! inference energy the calibration predicts (stored on the light trial
//! as `predicted_inference_energy_j_per_1k`, a prediction), not FLOPs.
//!
//! Every evaluation is a trial of the study, tagged `carbon-light` or
//! `carbon-heavy`, with the intensity of the hour it started in
//! (`hour_intensity_g_per_kwh`) and a note; its energy is its own process's,
//! so the study's carbon report (`nas_search::footprint`) charges each
//! light and heavy evaluation once, in the hours it ran in. A training that
//! runs past the end of its hour continues (carry-over); the policy
//! re-decides at the hour boundary for new work only. A heavy slot with an
//! empty queue scores instead (as in the simulator).
//!
//! The budget counts trainings; light evaluations come on top. The light
//! queue holds at most `--queue-capacity` candidates (CE-NAS's simulator:
//! 10); a light slot facing a full queue waits (idle, not charged).

use anyhow::{bail, Context, Result};
use carbon::{IntensitySignal, UtcMillis};
use carbon_schedule::live::{
    HourClock, HourDecision, HourPlanner, LivePolicy, LIVE_LOOKBACK_HOURS,
};
use carbon_schedule::policy::ThresholdPolicy;
use carbon_schedule::queue::DominanceQueue;
use clap::{Args, ValueEnum};
use nas_search::evaluator::{EvalError, Evaluator, TrialResult};
use nas_search::space::Config;
use nas_search::strategy::{Ask, History, Proposal, Strategy};
use nas_search::study::{Claim, Study, StudyLocation, StudySpec, WorkerIdentity};
use serde::{Deserialize, Serialize};
use shared::{MonotonicNs, Provenance};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::calibrated::CalibrationPricer;
use super::trainer::{metric, DataSource, TrainingEvaluator, TrialMetric};
use nas_search::prescreen::CandidatePricer;

/// Tag of a light evaluation's trial.
pub const LIGHT_TAG: &str = "carbon-light";
/// Tag of a heavy evaluation's trial.
pub const HEAVY_TAG: &str = "carbon-heavy";

/// Proposals a claim may hold, far above any budget (the study's own
/// budget check is not ours: the budget counts trainings only).
const CLAIM_BUDGET: usize = 1_000_000_000;
/// Poll period of an idle slot (a full queue, a strategy waiting).
const IDLE_POLL: Duration = Duration::from_millis(20);
/// Failed evaluations in a row after which the search stops.
const MAX_FAILURES_IN_A_ROW: usize = 5;

/// Which policy splits the slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CarbonPolicyArg {
    /// CE-NAS heuristic: heavy share falls as the intensity rises within
    /// the last 24 h and the next 24 h's forecast.
    Heuristic,
    /// All slots heavy at or below a percentile of the past 4 weeks, else
    /// `--threshold-floor` heavy slots.
    Threshold,
}

/// Flags of a carbon-aware search (`search --carbon-aware`).
#[derive(Debug, Clone, Args)]
pub struct CarbonAwareArgs {
    /// Split the --workers slots each hour between light (zero-cost proxy
    /// scoring) and heavy (training) work by the grid's carbon intensity
    /// (needs --carbon-intensity with an hourly trace or a constant).
    #[arg(long, requires = "carbon_intensity")]
    pub carbon_aware: bool,
    /// The policy of the split.
    #[arg(
        long,
        value_enum,
        default_value = "heuristic",
        requires = "carbon_aware"
    )]
    pub carbon_policy: CarbonPolicyArg,
    /// Threshold policy: percentile (0, 100] of the past 4 weeks' hours at
    /// or below which every slot trains (default 30: among the bench's
    /// choices on earlier weeks, bench/README.carbon.md).
    #[arg(long, default_value_t = 30.0, requires = "carbon_aware")]
    pub threshold_percentile: f64,
    /// Threshold policy: heavy slots in the other hours (1 keeps trainings
    /// going, as CE-NAS does; 0 trains only in clean hours).
    #[arg(long, default_value_t = 1, requires = "carbon_aware")]
    pub threshold_floor: usize,
    /// Zero-cost proxy of light work (default zen: the best hand-made proxy
    /// by stratified Kendall tau in bench/README.proxies.md, and
    /// forward passes only, no gradients: cheap).
    #[arg(long, default_value = "zen", requires = "carbon_aware")]
    pub light_proxy: proxies::ProxyKind,
    /// Rows of the minibatch a proxy scores on.
    #[arg(long, default_value_t = 64, requires = "carbon_aware")]
    pub light_batch_rows: usize,
    /// Candidates the light queue holds at most (CE-NAS's simulator: 10).
    #[arg(long, default_value_t = 10, requires = "carbon_aware")]
    pub queue_capacity: usize,
    /// Replay the trace from this UTC time (e.g. `2020-01-06T00:00:00Z`)
    /// instead of following the wall clock: for demonstrations and tests;
    /// every report says "replayed".
    #[arg(long, value_name = "UTC_TIME", requires_all = ["carbon_aware", "hour_seconds"], value_parser = parse_utc)]
    pub carbon_replay_from: Option<UtcMillis>,
    /// Replay: real seconds per trace hour.
    #[arg(long, value_name = "S", requires = "carbon_replay_from")]
    pub hour_seconds: Option<f64>,
    /// Replay: start no new work after this many trace hours (running
    /// trainings still finish and are charged to the hours they run in).
    #[arg(long, value_name = "N", requires = "carbon_replay_from")]
    pub replay_hours: Option<u32>,
}

fn parse_utc(s: &str) -> std::result::Result<UtcMillis, String> {
    carbon::trace::parse_utc(s)
        .ok_or_else(|| format!("`{s}` is not a UTC time (e.g. 2020-01-06T00:00:00Z)"))
}

/// What a `nas-client light-trial` child scores: read as JSON on stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LightRequest {
    /// The data.
    pub data: DataSource,
    /// The network to score (untrained).
    pub model: nn_plan::ModelSpec,
    /// The proxy, by name.
    pub proxy: String,
    /// Seed of the minibatch and the initialisation.
    pub seed: u64,
    /// Rows of the minibatch.
    pub batch_rows: usize,
    /// energyd socket (the default socket when `None`).
    pub socket: Option<PathBuf>,
}

/// What a light trial found, written as JSON on stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LightReport {
    /// The proxy's score; `None` for a degenerate network (−∞).
    pub score: Option<f64>,
    /// Forward FLOPs per row of the network.
    pub flops: f64,
    /// Energy of this process over the scoring phase, joules, when energyd
    /// answered.
    pub energy_j: Option<f64>,
    /// Its one-sigma uncertainty.
    pub energy_sigma_j: Option<f64>,
    /// Its provenance.
    pub provenance: Option<Provenance>,
    /// Why there is no energy figure.
    pub energy_note: Option<String>,
}

/// `nas-client light-trial`: scores one untrained network with a proxy,
/// measuring the scoring phase (not the process's start or data loading)
/// with energyd as this process's energy.
pub fn light_trial() -> Result<()> {
    let request: LightRequest = serde_json::from_reader(std::io::stdin().lock())
        .context("reading the light-trial request (JSON) on stdin")?;
    let kind: proxies::ProxyKind = request
        .proxy
        .parse()
        .map_err(|e: proxies::UnknownProxy| anyhow::anyhow!("{e}"))?;
    let dataset = request.data.load()?;
    let batches = kind.min_batches().max(1);
    let data =
        crate::proxies_cli::minibatches(&dataset, request.batch_rows, batches, request.seed)?;
    let socket = request
        .socket
        .clone()
        .unwrap_or_else(shared::paths::client_default_socket);
    let session = tabular_nn::session::ProcessSession::connect(&socket, "nas-client light", false);
    let from = MonotonicNs::now();
    let score = proxies::score(kind, &request.model, &data, request.seed)
        .with_context(|| format!("{kind} on {}", request.model.describe()))?;
    let flops = proxies::score(
        proxies::ProxyKind::Flops,
        &request.model,
        &data,
        request.seed,
    )
    .context("flops")?;
    let to = MonotonicNs::now();
    let mut report = LightReport {
        score: score.is_finite().then_some(score),
        flops,
        energy_j: None,
        energy_sigma_j: None,
        provenance: None,
        energy_note: None,
    };
    match session {
        // The daemon's samplers must pass `to` before the window is asked
        // for: its activity samples come every 10 ms while we are tracked.
        Ok(mut s) => match s.measure_window("light_proxy", from, to, Duration::from_millis(60)) {
            Ok(e) => {
                report.energy_j = Some(e.process_j);
                report.energy_sigma_j = Some(e.uncertainty_j);
                report.provenance = Some(e.provenance);
                s.close();
            }
            Err(e) => report.energy_note = Some(format!("energyd: {e}")),
        },
        Err(e) => report.energy_note = Some(format!("energyd not reachable ({e})")),
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// A strategy that tags the inner strategy's proposals as light work.
struct LightProposals<'a> {
    inner: &'a mut dyn Strategy,
}

impl Strategy for LightProposals<'_> {
    fn spec(&self) -> String {
        self.inner.spec()
    }
    fn ask(&mut self, history: &History<'_>, rng: &mut rand::rngs::StdRng) -> Ask {
        match self.inner.ask(history, rng) {
            Ask::Propose(p) => Ask::Propose(Proposal {
                tag: Some(match p.tag {
                    Some(t) => format!("{LIGHT_TAG} {t}"),
                    None => LIGHT_TAG.to_owned(),
                }),
                ..p
            }),
            other => other,
        }
    }
}

/// A strategy proposing one given candidate (the queue's best), once.
struct QueuedPick {
    spec: String,
    pick: Option<Proposal>,
}

impl Strategy for QueuedPick {
    fn spec(&self) -> String {
        self.spec.clone()
    }
    fn ask(&mut self, _history: &History<'_>, _rng: &mut rand::rngs::StdRng) -> Ask {
        self.pick.take().map_or(Ask::Wait, Ask::Propose)
    }
}

/// A scored candidate waiting in the queue.
#[derive(Debug, Clone)]
struct Queued {
    config: Config,
    fidelity: f64,
    light_trial: u64,
}

/// One slot's record of an evaluation, for the summary.
#[derive(Debug, Clone, Serialize)]
pub struct EvaluationRecord {
    /// Trial number in the study.
    pub trial: u64,
    /// `light` or `heavy`.
    pub kind: &'static str,
    /// The hour it started in, hours since the epoch.
    pub hour: i64,
    /// For a training: the light trial whose score queued it.
    pub from_light_trial: Option<u64>,
    /// Slot that ran it.
    pub slot: usize,
}

/// The schedule of a carbon-aware search, kept for the summary.
#[derive(Debug, Clone, Serialize)]
pub struct CarbonSchedule {
    /// `live` or `replayed`.
    pub mode: &'static str,
    /// The policy's name.
    pub policy: String,
    /// Worker slots.
    pub slots: usize,
    /// The light work's proxy.
    pub light_proxy: String,
    /// The intensity source.
    pub intensity_source: String,
    /// One per hour the search started work in, in order.
    pub hours: Vec<HourRow>,
    /// Every evaluation, in the order they started.
    pub evaluations: Vec<EvaluationRecord>,
    /// Why new work stopped.
    pub stopped: String,
    /// CLOCK_MONOTONIC at the instant the hour clock started (a replay's
    /// calendar is anchored here, so trials are charged on the hours the
    /// decisions were made for).
    #[serde(skip)]
    pub started_ns: MonotonicNs,
}

/// One hour's decision, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct HourRow {
    /// Hours since the epoch.
    pub hour: i64,
    /// Its start, UTC.
    pub hour_start_utc: String,
    /// gCO2eq/kWh.
    pub intensity: f64,
    /// Slots given to training.
    pub heavy_slots: usize,
    /// Slots given to scoring.
    pub light_slots: usize,
    /// Hours of forecast used.
    pub forecast_hours: usize,
    /// Why no forecast, when none.
    pub forecast_note: Option<String>,
    /// Candidates waiting in the queue when it was decided.
    pub queued: usize,
    /// Trainings carried over into it.
    pub carried_over: usize,
}

/// Shared state of the slots.
struct State {
    queue: DominanceQueue<u64>,
    queued: HashMap<u64, Queued>,
    decision: Option<HourDecision>,
    schedule: CarbonSchedule,
    heavy_started: usize,
    heavy_running: usize,
    light_running: usize,
    failures_in_a_row: usize,
    exhausted: bool,
    stop: Option<String>,
}

/// Everything a carbon-aware run needs.
pub struct CarbonAwareRun<'a> {
    /// The flags.
    pub args: &'a CarbonAwareArgs,
    /// The study (created; resuming is refused).
    pub study: &'a StudyLocation,
    /// Its spec.
    pub spec: StudySpec,
    /// The trainer of heavy work.
    pub trainer: TrainingEvaluator,
    /// Prices a candidate's inference energy from a calibration (the
    /// queue's energy axis); without one, the network's FLOPs per row.
    pub pricer: Option<CalibrationPricer>,
    /// The strategy proposing light work.
    pub strategy: Box<dyn Strategy>,
    /// The intensity signal.
    pub signal: IntensitySignal,
    /// Trainings to run.
    pub budget: usize,
    /// Worker slots.
    pub slots: usize,
    /// How long a silent claim stays claimed.
    pub stale_after: Duration,
}

impl CarbonAwareArgs {
    /// The policy the flags name.
    fn policy(&self) -> Result<LivePolicy> {
        Ok(match self.carbon_policy {
            CarbonPolicyArg::Heuristic => LivePolicy::Heuristic,
            CarbonPolicyArg::Threshold => {
                let p = self.threshold_percentile;
                if !(p > 0.0 && p <= 100.0) {
                    bail!("--threshold-percentile {p}: give a percentile in (0, 100]");
                }
                LivePolicy::Threshold(ThresholdPolicy {
                    percentile: p,
                    window_hours: LIVE_LOOKBACK_HOURS,
                    floor: self.threshold_floor,
                })
            }
        })
    }

    /// The hour clock and, for a replay, the calendar anchor that puts the
    /// trials' monotonic times on the replayed trace's hours.
    pub fn clock(&self, start: MonotonicNs) -> Result<(HourClock, Option<carbon::ClockAnchor>)> {
        match (self.carbon_replay_from, self.hour_seconds) {
            (Some(from), Some(s)) => {
                let clock = HourClock::replay(from, s)?;
                let ms = (s * 1000.0).round();
                if ms < 1.0 {
                    bail!("--hour-seconds {s}: at least a millisecond per trace hour");
                }
                let anchor = carbon::ClockAnchor::replayed(start, from, ms as u64)
                    .context("--hour-seconds")?;
                Ok((clock, Some(anchor)))
            }
            _ => Ok((HourClock::Wall, None)),
        }
    }
}

fn hour_start(hour: i64) -> String {
    UtcMillis::from_hour_index(hour).to_string()
}

/// Runs the search until `budget` trainings started and finished, the
/// strategy is exhausted, a replay's hours are over, or the signal has no
/// value for the hour. Progress goes to stderr.
pub fn run(run: CarbonAwareRun<'_>, clock: HourClock) -> Result<CarbonSchedule> {
    let args = run.args;
    if args.queue_capacity == 0 {
        bail!("--queue-capacity must be at least 1");
    }
    let planner = HourPlanner::new(run.signal.clone(), args.policy()?, run.slots)?;
    let study = Study::open(run.study, run.spec.clone(), false)
        .with_context(|| format!("opening study {}", run.study))?;
    let policy_name = match args.policy()? {
        LivePolicy::Heuristic => "ce-nas-heuristic".to_owned(),
        LivePolicy::Threshold(t) => {
            use carbon_schedule::sim::Policy;
            t.name()
        }
    };
    let state = Mutex::new(State {
        queue: DominanceQueue::new(),
        queued: HashMap::new(),
        decision: None,
        schedule: CarbonSchedule {
            mode: if clock.is_replay() {
                "replayed"
            } else {
                "live"
            },
            policy: policy_name,
            slots: run.slots,
            light_proxy: args.light_proxy.name().to_owned(),
            intensity_source: run.signal.source().name.clone(),
            hours: Vec::new(),
            evaluations: Vec::new(),
            stopped: String::new(),
            started_ns: MonotonicNs(0),
        },
        heavy_started: 0,
        heavy_running: 0,
        light_running: 0,
        failures_in_a_row: 0,
        exhausted: false,
        stop: None,
    });
    let strategy = Mutex::new(run.strategy);
    let started = Instant::now();
    state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .schedule
        .started_ns = MonotonicNs::now();
    let first_hour = clock.hour(now_utc(), 0.0);
    let slot_ctx = SlotContext {
        args,
        run_spec: &run.spec,
        trainer: &run.trainer,
        pricer: run.pricer.as_ref(),
        planner: &planner,
        clock,
        started,
        first_hour,
        budget: run.budget,
        stale_after: run.stale_after,
        state: &state,
        strategy: &strategy,
    };
    if !slot_ctx.decide(first_hour) {
        // Nothing has run: an intensity source without the first hour is
        // the user's to fix (a wall-clock search on a past trace, a replay
        // outside it), not a search that ended.
        let why = slot_ctx.lock().stop.take().unwrap_or_default();
        bail!("{why} (replay a past trace with --carbon-replay-from UTC_TIME --hour-seconds S)");
    }
    let ended = AtomicUsize::new(0);
    let result: Result<()> = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for slot in 0..run.slots {
            let conn = study.reopen();
            let ctx = &slot_ctx;
            let ended = &ended;
            handles.push(scope.spawn(move || -> Result<()> {
                let out = conn
                    .map_err(anyhow::Error::from)
                    .and_then(|mut study| ctx.slot_loop(slot, &mut study));
                if out.is_err() {
                    // The other slots stop starting work too.
                    ctx.lock()
                        .stop
                        .get_or_insert_with(|| "a slot failed".into());
                }
                ended.fetch_add(1, Ordering::Release);
                out
            }));
        }
        slot_ctx.hour_loop(&ended, run.slots);
        let mut out = Ok(());
        for h in handles {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => out = Err(e),
                Err(_) => out = Err(anyhow::anyhow!("a worker slot panicked")),
            }
        }
        out
    });
    result?;
    let mut state = state.into_inner().unwrap_or_else(|e| e.into_inner());
    state.schedule.stopped = state.stop.take().unwrap_or_else(|| "done".into());
    Ok(state.schedule)
}

fn now_utc() -> UtcMillis {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    UtcMillis(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

/// What every slot thread shares.
struct SlotContext<'a> {
    args: &'a CarbonAwareArgs,
    run_spec: &'a StudySpec,
    trainer: &'a TrainingEvaluator,
    pricer: Option<&'a CalibrationPricer>,
    planner: &'a HourPlanner,
    clock: HourClock,
    started: Instant,
    first_hour: i64,
    budget: usize,
    stale_after: Duration,
    state: &'a Mutex<State>,
    strategy: &'a Mutex<Box<dyn Strategy>>,
}

/// The work a slot takes next.
enum Work {
    Heavy(u64, Queued),
    Light,
    Wait,
    Done,
}

impl SlotContext<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the decision of hour `hour`; `false` (and new work stops)
    /// when there is none.
    fn decide(&self, hour: i64) -> bool {
        let mut st = self.lock();
        if st.stop.is_some() {
            return false;
        }
        if let Some(n) = self.args.replay_hours {
            if hour - self.first_hour >= i64::from(n) {
                st.stop = Some(format!("replayed {n} trace hours"));
                return false;
            }
        }
        match self.planner.decide(hour, st.queue.len(), st.heavy_running) {
            Ok(d) => {
                let mode = if self.clock.is_replay() {
                    " (replayed)"
                } else {
                    ""
                };
                eprintln!(
                    "carbon-aware: hour {}{mode}: {:.1} gCO2eq/kWh, {} heavy / {} light slots ({}), {} queued, {} trainings carried over",
                    hour_start(hour),
                    d.intensity,
                    d.heavy_slots,
                    d.light_slots,
                    match &d.forecast_note {
                        None => format!("{} h forecast", d.forecast_hours),
                        Some(n) => format!("no forecast ({n})"),
                    },
                    st.queue.len(),
                    st.heavy_running
                );
                let row = HourRow {
                    hour,
                    hour_start_utc: hour_start(hour),
                    intensity: d.intensity,
                    heavy_slots: d.heavy_slots,
                    light_slots: d.light_slots,
                    forecast_hours: d.forecast_hours,
                    forecast_note: d.forecast_note.clone(),
                    queued: st.queue.len(),
                    carried_over: st.heavy_running,
                };
                st.schedule.hours.push(row);
                st.decision = Some(d);
                true
            }
            Err(e) => {
                st.stop = Some(format!("no decision for hour {}: {e}", hour_start(hour)));
                false
            }
        }
    }

    /// Decides every hour in turn at its start (one thread, so no hour is
    /// skipped however busy the slots are) until the slots have all ended.
    fn hour_loop(&self, ended: &AtomicUsize, slots: usize) {
        let mut hour = self.first_hour;
        let mut deciding = true;
        while ended.load(Ordering::Acquire) < slots {
            let wait =
                self.clock
                    .seconds_until(hour + 1, now_utc(), self.started.elapsed().as_secs_f64());
            if !deciding {
                std::thread::sleep(IDLE_POLL);
                continue;
            }
            if wait > 0.0 {
                std::thread::sleep(IDLE_POLL.min(Duration::from_secs_f64(wait)));
                continue;
            }
            hour += 1;
            deciding = self.decide(hour);
        }
    }

    /// The current hour's decision; `None` once new work must stop.
    fn current(&self, st: &mut State) -> Option<HourDecision> {
        if st.stop.is_some() {
            return None;
        }
        st.decision.clone()
    }

    /// Chooses this slot's next work under the lock.
    fn next_work(&self, slot: usize) -> (Work, Option<HourDecision>) {
        let mut st = self.lock();
        if st.heavy_started >= self.budget && st.stop.is_none() {
            st.stop = Some(format!("{} trainings started", self.budget));
        }
        if st.failures_in_a_row >= MAX_FAILURES_IN_A_ROW && st.stop.is_none() {
            st.stop = Some(format!(
                "{MAX_FAILURES_IN_A_ROW} evaluations failed in a row"
            ));
        }
        let Some(d) = self.current(&mut st) else {
            return (Work::Done, None);
        };
        if slot < d.heavy_slots {
            if let Some(n) = st.queue.pop() {
                if let Some(q) = st.queued.remove(&n) {
                    st.heavy_started += 1;
                    st.heavy_running += 1;
                    return (Work::Heavy(n, q), Some(d));
                }
            }
        }
        if st.exhausted {
            // Nothing new to score: heavy slots still drain the queue.
            if st.queue.is_empty() && st.light_running == 0 && st.heavy_running == 0 {
                st.stop = Some("the strategy has nothing new to propose".into());
                return (Work::Done, None);
            }
            return (Work::Wait, Some(d));
        }
        if st.queue.len() + st.light_running >= self.args.queue_capacity {
            return (Work::Wait, Some(d));
        }
        st.light_running += 1;
        (Work::Light, Some(d))
    }

    fn slot_loop(&self, slot: usize, study: &mut Study) -> Result<()> {
        let me = WorkerIdentity::current(slot);
        loop {
            let (work, decision) = self.next_work(slot);
            match work {
                Work::Done => return Ok(()),
                Work::Wait => std::thread::sleep(IDLE_POLL),
                Work::Heavy(light_trial, q) => {
                    let d = decision.context("a decision precedes work")?;
                    let ok = self.heavy(slot, study, &me, &d, light_trial, q);
                    let mut st = self.lock();
                    st.heavy_running -= 1;
                    self.count(&mut st, ok?);
                }
                Work::Light => {
                    let d = decision.context("a decision precedes work")?;
                    let ok = self.light(slot, study, &me, &d);
                    let mut st = self.lock();
                    st.light_running -= 1;
                    self.count(&mut st, ok?);
                }
            }
        }
    }

    fn count(&self, st: &mut State, ok: bool) {
        if ok {
            st.failures_in_a_row = 0;
        } else {
            st.failures_in_a_row += 1;
        }
    }

    fn hour_note(&self, d: &HourDecision) -> String {
        format!(
            "hour {}{} at {:.1} gCO2eq/kWh ({})",
            hour_start(d.hour),
            if self.clock.is_replay() {
                " (replayed)"
            } else {
                ""
            },
            d.intensity,
            self.planner.signal().source().name
        )
    }

    /// One light evaluation; `Ok(false)` when it failed (stored as such).
    fn light(
        &self,
        slot: usize,
        study: &mut Study,
        me: &WorkerIdentity,
        d: &HourDecision,
    ) -> Result<bool> {
        let claim = {
            let mut s = self.strategy.lock().unwrap_or_else(|e| e.into_inner());
            let mut tagged = LightProposals { inner: s.as_mut() };
            study.claim(me, CLAIM_BUDGET, &mut tagged, self.stale_after)?
        };
        let trial = match claim {
            Claim::Trial(t) => t,
            Claim::Exhausted => {
                self.lock().exhausted = true;
                return Ok(true);
            }
            Claim::Wait | Claim::BudgetReached => {
                std::thread::sleep(IDLE_POLL);
                return Ok(true);
            }
        };
        self.lock().schedule.evaluations.push(EvaluationRecord {
            trial: trial.number,
            kind: "light",
            hour: d.hour,
            from_light_trial: None,
            slot,
        });
        let t0 = Instant::now();
        let outcome = self.score(&trial.config, trial.fidelity, trial.seed);
        let eval_ns = t0.elapsed().as_nanos() as u64;
        let stored = match outcome {
            Ok(report) => {
                let mut r = TrialResult::default();
                if let Some(s) = report.score {
                    r.metrics.insert(metric::LIGHT_SCORE.into(), s);
                }
                r.metrics.insert(metric::FLOPS.into(), report.flops);
                r.metrics.insert(metric::HOUR_INTENSITY.into(), d.intensity);
                let predicted = self
                    .pricer
                    .and_then(|p| p.predicted_cost(&trial.config, trial.fidelity))
                    .filter(|e| e.is_finite());
                if let Some(e) = predicted {
                    r.metrics
                        .insert(TrialMetric::PredictedInferenceEnergyJPer1k.name().into(), e);
                }
                r.energy_spent_j = report.energy_j;
                r.provenance = report.provenance;
                r.notes.push(format!(
                    "carbon-aware: light evaluation ({} proxy on {} rows; queued against {}), {}",
                    self.args.light_proxy,
                    self.args.light_batch_rows,
                    match (predicted, self.pricer) {
                        (Some(_), Some(p)) => format!(
                            "the inference energy predicted from calibration {}",
                            p.model.path().display()
                        ),
                        (None, Some(_)) => {
                            "FLOPs per row (the calibration could not price it)".to_owned()
                        }
                        (_, None) => "FLOPs per row".to_owned(),
                    },
                    self.hour_note(d)
                ));
                if let Some(n) = &report.energy_note {
                    r.notes.push(format!("energy not measured: {n}"));
                }
                let score = report.score.unwrap_or(f64::NEG_INFINITY);
                study.finish(trial.id, &Ok(r), eval_ns, 0)?;
                let mut st = self.lock();
                st.queue
                    .push(trial.number, score, predicted.unwrap_or(report.flops));
                st.queued.insert(
                    trial.number,
                    Queued {
                        config: trial.config.clone(),
                        fidelity: trial.fidelity,
                        light_trial: trial.number,
                    },
                );
                eprintln!(
                    "carbon-aware: light #{} {}={} flops={:.0} ({} queued)",
                    trial.number,
                    self.args.light_proxy,
                    report
                        .score
                        .map_or("-inf".to_owned(), |s| format!("{s:.4}")),
                    report.flops,
                    st.queue.len()
                );
                true
            }
            Err(e) => {
                study.finish(trial.id, &Err(e.to_string()), eval_ns, 0)?;
                eprintln!("carbon-aware: light #{} failed: {e}", trial.number);
                false
            }
        };
        Ok(stored)
    }

    /// Scores a candidate in a `nas-client light-trial` child.
    fn score(&self, config: &Config, fidelity: f64, seed: u64) -> Result<LightReport, EvalError> {
        let bad = EvalError::Failed;
        let model = super::trainer::train_config(config, fidelity)?.model;
        let request = LightRequest {
            data: self.trainer.data.clone(),
            model,
            proxy: self.args.light_proxy.name().to_owned(),
            seed,
            batch_rows: self.args.light_batch_rows,
            socket: self.trainer.socket.clone(),
        };
        let input = serde_json::to_vec(&request)
            .map_err(|e| bad(format!("encoding the light request: {e}")))?;
        let mut child = Command::new(&self.trainer.exe)
            .arg("light-trial")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                bad(format!(
                    "cannot start {} light-trial: {e}",
                    self.trainer.exe.display()
                ))
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A child that exits early closes the pipe; its status says why.
            let _ = stdin.write_all(&input);
        }
        let output = child
            .wait_with_output()
            .map_err(|e| bad(format!("waiting for light-trial: {e}")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
            return Err(bad(format!(
                "nas-client light-trial exited with {}: {}",
                output.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        serde_json::from_slice(&output.stdout)
            .map_err(|e| bad(format!("light-trial: unreadable report: {e}")))
    }

    /// One training of the queue's best; `Ok(false)` when it failed.
    fn heavy(
        &self,
        slot: usize,
        study: &mut Study,
        me: &WorkerIdentity,
        d: &HourDecision,
        light_trial: u64,
        q: Queued,
    ) -> Result<bool> {
        let mut pick = QueuedPick {
            spec: self.run_spec.strategy.clone(),
            pick: Some(Proposal {
                config: q.config.clone(),
                fidelity: q.fidelity,
                tag: Some(format!("{HEAVY_TAG} from #{light_trial}")),
            }),
        };
        let trial = loop {
            match study.claim(me, CLAIM_BUDGET, &mut pick, self.stale_after)? {
                Claim::Trial(t) => break t,
                Claim::Wait => std::thread::sleep(IDLE_POLL),
                other => bail!("claiming the training of light trial #{light_trial}: {other:?}"),
            }
        };
        self.lock().schedule.evaluations.push(EvaluationRecord {
            trial: trial.number,
            kind: "heavy",
            hour: d.hour,
            from_light_trial: Some(q.light_trial),
            slot,
        });
        eprintln!(
            "carbon-aware: heavy #{} trains light #{light_trial}'s candidate (slot {slot})",
            trial.number
        );
        let t0 = Instant::now();
        let outcome = self
            .trainer
            .evaluate(&trial.config, trial.fidelity, trial.seed);
        let eval_ns = t0.elapsed().as_nanos() as u64;
        match outcome {
            Ok(mut r) => {
                r.metrics.insert(metric::HOUR_INTENSITY.into(), d.intensity);
                r.notes.push(format!(
                    "carbon-aware: heavy evaluation (training) of light trial #{light_trial}'s candidate, started in {}",
                    self.hour_note(d)
                ));
                let acc = r.metrics.get(metric::VAL_ACCURACY).copied();
                study.finish(trial.id, &Ok(r), eval_ns, 0)?;
                eprintln!(
                    "carbon-aware: heavy #{} done{}",
                    trial.number,
                    acc.map_or(String::new(), |a| format!(", val_accuracy {a:.4}"))
                );
                Ok(true)
            }
            Err(e) => {
                study.finish(trial.id, &Err(e.to_string()), eval_ns, 0)?;
                eprintln!("carbon-aware: heavy #{} failed: {e}", trial.number);
                Ok(false)
            }
        }
    }
}
