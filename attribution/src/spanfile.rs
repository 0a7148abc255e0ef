//! Span files recorded by other programs: a CSV of kernel spans and the
//! Chrome trace JSON that the PyTorch profiler writes. This module owns
//! parsing them, checking them, and bringing their timestamps onto
//! CLOCK_MONOTONIC ns, the clock of the daemon's history.
//!
//! # CSV
//!
//! One span per record: `name,start_ns,end_ns[,pid,tid]`. Times are
//! integer CLOCK_MONOTONIC nanoseconds (what `clock_gettime(CLOCK_MONOTONIC)`
//! or Python's `time.monotonic_ns()` gives). `pid` and `tid` are optional
//! (a record may stop after `pid`, and either may be left empty). A header
//! is optional: a first record whose `start_ns` field is not an integer is
//! taken as a header only if its fields are exactly `name,start_ns,end_ns`
//! (optionally followed by `pid` and `tid`); anything else is an error, so a
//! file with a typo in its first line is not silently shortened. Fields are
//! trimmed; names may be quoted (and then contain commas); a line whose
//! first field starts with `#` is a comment. An explicit clock offset, if given, is added to
//! CSV times too.
//!
//! # Chrome trace JSON (PyTorch profiler)
//!
//! The object form `{"traceEvents": [...], ...}` and the bare array form are
//! read. Complete events (`"ph": "X"`) become spans: `name`, `ts` and `dur`
//! in microseconds (fractions kept to the nanosecond), `pid` and `tid` when
//! they are numbers (kineto writes negative thread ids as their absolute
//! value; we do the same) or strings ending in a number (`"stream 7"`).
//! Other phases (metadata, instant, flow, counter events) are skipped and
//! counted; flow events (`"ph": "s"` / `"f"`, the `ac2g` links from a
//! CUDA launch to its kernel) are kept in [`SpanFile::flows`]. Each span
//! keeps its category (`cat`). Which categories are taken is
//! [`CategoryFilter`]: by default every complete event. Events nest (an
//! `aten::linear` contains its `aten::addmm`): [`crate::calltree`] builds
//! each thread's call tree and splits it into self-time segments, so that
//! nothing is counted twice. The flat [`SpanFile::kernel_spans`] and
//! [`SpanFile::to_batch`] are for files whose spans do not nest.
//!
//! A file whose name ends in `.gz` is decompressed first.
//!
//! ## Clock alignment
//!
//! The PyTorch profiler (libkineto) writes `ts` relative to
//! `baseTimeNanoseconds`, a top-level field it adds: the CLOCK_REALTIME
//! (Unix epoch) time floored to a three-month boundary, so that `ts` fits
//! a double. CPU and GPU (CUPTI) activity timestamps are converted by
//! kineto to that same epoch-based clock. Older PyTorch versions wrote no
//! base and absolute `ts` in microseconds since the Unix epoch. So the
//! absolute time of an event is `baseTimeNanoseconds (or 0) + ts × 1000`
//! ns, and it is on CLOCK_REALTIME. [`ClockOption::Auto`] decides by
//! magnitude: an absolute time after 2001-09-09 (≥ 10¹⁸ ns) can only be an
//! epoch time, and is moved onto CLOCK_MONOTONIC by the offset
//! `monotonic − realtime` read from both clocks back to back when the file
//! is parsed (or given in [`SpanFileOptions::realtime_to_monotonic_ns`]).
//! Smaller absolute times are taken as CLOCK_MONOTONIC already (a profiler
//! configured to use it, or a trace we wrote), provided they are not in
//! the future of the monotonic clock. That conversion is exact while the
//! wall clock was not stepped between recording and parsing and drifts
//! only by NTP slewing (parts per million) otherwise; parse the file on the
//! machine that recorded it, soon after, in the same boot. When that does
//! not hold, pass [`ClockOption::OffsetNs`]: the ns to add to the absolute
//! time (e.g. measured by the program as `time.monotonic_ns() -
//! time.time_ns()` while it recorded). `deviceProperties` and
//! `schemaVersion` only identify a kineto trace; they carry no clock
//! information. The alignment used is returned in [`SpanFile::clock`] and
//! should be shown with the answer.

use crate::kernels::KernelSpan;
use shared::protocol::SpanBatch;
use shared::MonotonicNs;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Absolute times from here on (2001-09-09) can only be Unix epoch times.
const EPOCH_THRESHOLD_NS: u64 = 1_000_000_000_000_000_000;

/// Why a span file could not be read. Every variant names the file; CSV
/// errors name the line and the field, trace errors the event's index in
/// `traceEvents` and the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpanFileError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A CSV record is malformed.
    #[error("{path}:{line}: field `{field}`: {reason}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based line of the record.
        line: u64,
        /// Which field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The file is not valid JSON.
    #[error("{path}: not valid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error (with line and column).
        source: serde_json::Error,
    },
    /// A trace event is malformed.
    #[error("{path}: traceEvents[{index}]: field `{field}`: {reason}")]
    TraceEvent {
        /// The file.
        path: PathBuf,
        /// Index of the event in `traceEvents`.
        index: usize,
        /// Which field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The file as a whole is not a span file of a known format.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The timestamps cannot be brought onto CLOCK_MONOTONIC.
    #[error("{path}: clock alignment: {reason}")]
    Clock {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
}

/// Format of a span file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanFileFormat {
    /// `name,start_ns,end_ns[,pid,tid]`.
    Csv,
    /// Chrome trace JSON (PyTorch profiler).
    ChromeTrace,
}

/// How file times are brought onto CLOCK_MONOTONIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClockOption {
    /// CSV: times are CLOCK_MONOTONIC. Chrome trace: decide from the
    /// magnitude of the absolute times (see the module doc).
    #[default]
    Auto,
    /// Add this many ns to every absolute file time.
    OffsetNs(i64),
    /// The file's absolute times are CLOCK_REALTIME (Unix epoch) ns.
    Realtime,
    /// The file's absolute times are CLOCK_MONOTONIC ns already.
    Monotonic,
}

/// Which Chrome-trace complete events become spans.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CategoryFilter {
    /// GPU kernels and memory operations if the trace has any, else all
    /// (the flat view of a GPU trace: kernels do not nest).
    GpuKernelsIfPresent,
    /// Every complete event (nesting is resolved by [`crate::calltree`]).
    #[default]
    All,
    /// Events whose `cat` is one of these.
    Only(Vec<String>),
}

/// Options of [`read_span_file`] and the parsers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpanFileOptions {
    /// Clock alignment.
    pub clock: ClockOption,
    /// Chrome trace categories.
    pub categories: CategoryFilter,
    /// `CLOCK_MONOTONIC − CLOCK_REALTIME` in ns, for realtime conversion;
    /// `None` reads both clocks when parsing.
    pub realtime_to_monotonic_ns: Option<i64>,
}

/// How a file's times were aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockMethod {
    /// Taken as CLOCK_MONOTONIC.
    Monotonic,
    /// CLOCK_REALTIME, converted with the offset read at parse time (or given).
    Realtime,
    /// A caller-given offset.
    ExplicitOffset,
}

/// The alignment applied: `monotonic = file absolute time + offset_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockAlignment {
    /// How it was decided.
    pub method: ClockMethod,
    /// Added to every absolute file time.
    pub offset_ns: i64,
}

impl ClockAlignment {
    /// A sentence for the answer's notes.
    pub fn describe(&self) -> String {
        match self.method {
            ClockMethod::Monotonic => {
                "span times taken as CLOCK_MONOTONIC ns (no conversion)".to_owned()
            }
            ClockMethod::Realtime => format!(
                "span times were CLOCK_REALTIME (Unix epoch); moved onto CLOCK_MONOTONIC by \
                 {} ns read from both clocks at parse time (exact unless the wall clock was \
                 stepped since recording)",
                self.offset_ns
            ),
            ClockMethod::ExplicitOffset => {
                format!(
                    "span times shifted by the given offset of {} ns",
                    self.offset_ns
                )
            }
        }
    }
}

/// One span of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSpan {
    /// Index into [`SpanFile::names`].
    pub name: u32,
    /// Start, CLOCK_MONOTONIC ns.
    pub start: MonotonicNs,
    /// End, `>= start`.
    pub end: MonotonicNs,
    /// Process, if the file says.
    pub pid: Option<u32>,
    /// Thread, if the file says.
    pub tid: Option<u32>,
    /// Index into [`SpanFile::categories`] (Chrome trace `cat`), if any.
    pub category: Option<u32>,
}

/// Which end of a flow arrow an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowPhase {
    /// `"ph": "s"`: the arrow leaves the slice enclosing this point.
    Start,
    /// `"ph": "f"`: the arrow arrives at the slice enclosing this point
    /// (binding point `"e"`) or at the next slice to start on its thread.
    Finish,
}

/// One end of a flow arrow of a Chrome trace (kineto links a CUDA
/// runtime launch to its GPU kernel with an `ac2g` flow; forward ops to
/// their backward with `fwdbwd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowEvent {
    /// The flow's id, shared by its start and finish.
    pub id: u64,
    /// Index into [`SpanFile::categories`], if any.
    pub category: Option<u32>,
    /// Start or finish.
    pub phase: FlowPhase,
    /// The point, CLOCK_MONOTONIC ns.
    pub at: MonotonicNs,
    /// Process of the slice it binds to.
    pub pid: Option<u32>,
    /// Thread of the slice it binds to.
    pub tid: Option<u32>,
    /// `"bp": "e"`: binds to the enclosing slice (else the next one, for a
    /// finish).
    pub binds_enclosing: bool,
}

/// The spans of a file, aligned to CLOCK_MONOTONIC, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanFile {
    /// Kernel names, referenced by [`FileSpan::name`].
    pub names: Vec<String>,
    /// The spans.
    pub spans: Vec<FileSpan>,
    /// The file's format.
    pub format: SpanFileFormat,
    /// How times were aligned.
    pub clock: ClockAlignment,
    /// Trace events not taken (other phases or categories).
    pub skipped_events: usize,
    /// Category names referenced by [`FileSpan::category`].
    pub categories: Vec<String>,
    /// Flow events (Chrome trace), in file order.
    pub flows: Vec<FlowEvent>,
}

impl SpanFile {
    /// The spans as [`KernelSpan`]s, those of `pid` only if given (spans
    /// without a pid are kept). A missing tid becomes 0.
    pub fn kernel_spans(&self, pid: Option<u32>) -> Vec<KernelSpan> {
        self.spans
            .iter()
            .filter(|s| match (pid, s.pid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            })
            .map(|s| KernelSpan {
                name: s.name,
                start: s.start,
                end: s.end,
                tid: s.tid.unwrap_or(0),
            })
            .collect()
    }

    /// The spans as a protocol batch; spans without a pid get `default_pid`,
    /// without a tid 0.
    pub fn to_batch(&self, default_pid: u32) -> SpanBatch {
        let mut batch = SpanBatch {
            names: self.names.clone(),
            spans: Vec::with_capacity(self.spans.len()),
        };
        for s in &self.spans {
            batch.spans.push(shared::protocol::SpanRecord {
                name: s.name,
                start: s.start,
                end: s.end,
                pid: s.pid.unwrap_or(default_pid),
                tid: s.tid.unwrap_or(0),
            });
        }
        batch
    }

    /// Earliest start and latest end, if any span.
    pub fn time_range(&self) -> Option<(MonotonicNs, MonotonicNs)> {
        let start = self.spans.iter().map(|s| s.start).min()?;
        let end = self.spans.iter().map(|s| s.end).max()?;
        Some((start, end))
    }
}

/// Reads a span file: JSON if its first non-blank character is `{` or `[`,
/// CSV otherwise; gzip-compressed if the name ends in `.gz`.
pub fn read_span_file(path: &Path, options: &SpanFileOptions) -> Result<SpanFile, SpanFileError> {
    let io_err = |source| SpanFileError::Io {
        path: path.to_owned(),
        source,
    };
    let text = if path.extension().is_some_and(|e| e == "gz") {
        use std::io::Read;
        let file = std::fs::File::open(path).map_err(io_err)?;
        let mut text = String::new();
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .map_err(io_err)?;
        text
    } else {
        std::fs::read_to_string(path).map_err(io_err)?
    };
    match text.trim_start().chars().next() {
        Some('{') | Some('[') => parse_chrome_trace(&text, path, options),
        _ => parse_csv(&text, path, options),
    }
}

/// Reads both clocks back to back: `CLOCK_MONOTONIC − CLOCK_REALTIME` ns,
/// the monotonic reading taken as the midpoint of two around the realtime one.
pub fn realtime_to_monotonic_offset_ns() -> Result<i64, String> {
    let before = MonotonicNs::now().as_ns() as i128;
    let realtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| format!("the wall clock is before 1970: {e}"))?
        .as_nanos() as i128;
    let after = MonotonicNs::now().as_ns() as i128;
    i64::try_from((before + after) / 2 - realtime)
        .map_err(|_| "clock offset does not fit 64 bits".to_owned())
}

/// Interns names in first-seen order.
#[derive(Default)]
struct Names {
    names: Vec<String>,
    index: HashMap<String, u32>,
}

impl Names {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), i);
        i
    }
}

fn apply_offset(t: u64, offset_ns: i64) -> Option<MonotonicNs> {
    let v = t as i128 + offset_ns as i128;
    u64::try_from(v).ok().map(MonotonicNs)
}

const CSV_FIELDS: [&str; 5] = ["name", "start_ns", "end_ns", "pid", "tid"];

/// Parses CSV text (see the module doc); `path` names it in errors.
pub fn parse_csv(
    text: &str,
    path: &Path,
    options: &SpanFileOptions,
) -> Result<SpanFile, SpanFileError> {
    let clock = match options.clock {
        ClockOption::Auto | ClockOption::Monotonic => ClockAlignment {
            method: ClockMethod::Monotonic,
            offset_ns: 0,
        },
        ClockOption::OffsetNs(offset_ns) => ClockAlignment {
            method: ClockMethod::ExplicitOffset,
            offset_ns,
        },
        ClockOption::Realtime => ClockAlignment {
            method: ClockMethod::Realtime,
            offset_ns: realtime_offset(options, path)?,
        },
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut names = Names::default();
    let mut spans = Vec::new();
    let mut first = true;
    for record in reader.records() {
        let record = record.map_err(|e| SpanFileError::Csv {
            path: path.to_owned(),
            line: e.position().map_or(0, |p| p.line()),
            field: "record",
            reason: e.to_string(),
        })?;
        let line = record.position().map_or(0, |p| p.line());
        let err = |field: &'static str, reason: String| SpanFileError::Csv {
            path: path.to_owned(),
            line,
            field,
            reason,
        };
        // Comments are records too (the reader's own comment handling
        // would throw off its line count).
        if record.get(0).is_some_and(|f| f.starts_with('#')) {
            continue;
        }
        let is_first = std::mem::replace(&mut first, false);
        if !(3..=5).contains(&record.len()) {
            return Err(err(
                "record",
                format!(
                    "{} fields; expected name,start_ns,end_ns[,pid,tid]",
                    record.len()
                ),
            ));
        }
        let start_text = &record[1];
        if is_first && start_text.parse::<u64>().is_err() {
            let is_header = record
                .iter()
                .zip(CSV_FIELDS)
                .all(|(got, want)| got.eq_ignore_ascii_case(want));
            if is_header {
                continue;
            }
            return Err(err(
                "start_ns",
                format!(
                    "`{start_text}` is not an integer (a header line must read \
                     name,start_ns,end_ns[,pid,tid])"
                ),
            ));
        }
        let name = &record[0];
        if name.is_empty() {
            return Err(err("name", "empty kernel name".to_owned()));
        }
        let parse_ns = |field: &'static str, text: &str| -> Result<u64, SpanFileError> {
            text.parse::<u64>().map_err(|e| {
                err(
                    field,
                    format!("`{text}` is not a non-negative integer of ns: {e}"),
                )
            })
        };
        let start_ns = parse_ns("start_ns", start_text)?;
        let end_ns = parse_ns("end_ns", &record[2])?;
        if end_ns < start_ns {
            return Err(err(
                "end_ns",
                format!("end {end_ns} is before start {start_ns}"),
            ));
        }
        let parse_id = |field: &'static str, index: usize| -> Result<Option<u32>, SpanFileError> {
            match record.get(index) {
                None | Some("") => Ok(None),
                Some(text) => text
                    .parse::<u32>()
                    .map(Some)
                    .map_err(|e| err(field, format!("`{text}` is not a 32-bit id: {e}"))),
            }
        };
        let pid = parse_id("pid", 3)?;
        let tid = parse_id("tid", 4)?;
        let (Some(start), Some(end)) = (
            apply_offset(start_ns, clock.offset_ns),
            apply_offset(end_ns, clock.offset_ns),
        ) else {
            return Err(err(
                "start_ns",
                format!(
                    "with the offset {} ns the time falls before the clock's zero",
                    clock.offset_ns
                ),
            ));
        };
        spans.push(FileSpan {
            name: names.intern(name),
            start,
            end,
            pid,
            tid,
            category: None,
        });
    }
    Ok(SpanFile {
        names: names.names,
        spans,
        format: SpanFileFormat::Csv,
        clock,
        skipped_events: 0,
        categories: Vec::new(),
        flows: Vec::new(),
    })
}

fn realtime_offset(options: &SpanFileOptions, path: &Path) -> Result<i64, SpanFileError> {
    match options.realtime_to_monotonic_ns {
        Some(v) => Ok(v),
        None => realtime_to_monotonic_offset_ns().map_err(|reason| SpanFileError::Clock {
            path: path.to_owned(),
            reason,
        }),
    }
}

/// GPU activity categories of kineto traces.
const GPU_CATEGORIES: [&str; 3] = ["kernel", "gpu_memcpy", "gpu_memset"];

/// A trace event's id field: a number (negative taken as its absolute
/// value, as kineto does) or a string ending in a number.
fn event_id(v: Option<&serde_json::Value>) -> Option<u32> {
    match v? {
        serde_json::Value::Number(n) => n
            .as_i64()
            .and_then(|i| u32::try_from(i.unsigned_abs()).ok()),
        serde_json::Value::String(s) => {
            let digits: String = s
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_digit())
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            digits.parse().ok()
        }
        _ => None,
    }
}

/// A flow event, before alignment.
struct RawFlow {
    index: usize,
    id: u64,
    category: Option<String>,
    phase: FlowPhase,
    at_ns: u64,
    pid: Option<u32>,
    tid: Option<u32>,
    binds_enclosing: bool,
}

/// A flow's id: a non-negative integer, or a string of one (decimal or
/// `0x` hexadecimal).
fn flow_id(v: Option<&serde_json::Value>) -> Option<u64> {
    match v? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => s.parse().ok(),
        },
        _ => None,
    }
}

/// A complete event, before alignment: absolute ns on the file's clock.
struct RawEvent {
    index: usize,
    name: String,
    start_ns: u64,
    end_ns: u64,
    pid: Option<u32>,
    tid: Option<u32>,
}

/// Parses Chrome trace JSON (see the module doc); `path` names it in errors.
pub fn parse_chrome_trace(
    text: &str,
    path: &Path,
    options: &SpanFileOptions,
) -> Result<SpanFile, SpanFileError> {
    let root: serde_json::Value =
        serde_json::from_str(text).map_err(|source| SpanFileError::Json {
            path: path.to_owned(),
            source,
        })?;
    let format_err = |reason: String| SpanFileError::Format {
        path: path.to_owned(),
        reason,
    };
    let (events, base_ns) = match &root {
        serde_json::Value::Array(events) => (events, 0u64),
        serde_json::Value::Object(map) => {
            let events = map
                .get("traceEvents")
                .ok_or_else(|| format_err("no `traceEvents` array: not a Chrome trace".to_owned()))?
                .as_array()
                .ok_or_else(|| format_err("`traceEvents` is not an array".to_owned()))?;
            let base_ns = match map.get("baseTimeNanoseconds") {
                None => 0,
                Some(v) => v.as_u64().ok_or_else(|| {
                    format_err(format!(
                        "`baseTimeNanoseconds` is {v}, not a non-negative integer"
                    ))
                })?,
            };
            (events, base_ns)
        }
        _ => {
            return Err(format_err(
                "neither an object with `traceEvents` nor an array of events".to_owned(),
            ))
        }
    };

    let mut raw = Vec::new();
    let mut raw_flows = Vec::new();
    let mut skipped = 0usize;
    let mut categories: Vec<Option<String>> = Vec::new();
    for (index, event) in events.iter().enumerate() {
        let err = |field: &'static str, reason: String| SpanFileError::TraceEvent {
            path: path.to_owned(),
            index,
            field,
            reason,
        };
        let Some(obj) = event.as_object() else {
            return Err(err("event", format!("{event} is not an object")));
        };
        let phase = obj.get("ph").and_then(|p| p.as_str());
        if let Some(flow_phase) = match phase {
            Some("s") => Some(FlowPhase::Start),
            Some("f") => Some(FlowPhase::Finish),
            _ => None,
        } {
            // A flow end without a usable id or time links nothing: skipped
            // and counted, like other events we do not use.
            let at = obj.get("ts").and_then(|t| t.as_f64());
            match (flow_id(obj.get("id")), at) {
                (Some(id), Some(ts_us)) if ts_us.is_finite() && ts_us >= 0.0 => {
                    raw_flows.push(RawFlow {
                        index,
                        id,
                        category: obj.get("cat").and_then(|c| c.as_str()).map(str::to_owned),
                        phase: flow_phase,
                        at_ns: base_ns.saturating_add((ts_us * 1000.0).round() as u64),
                        pid: event_id(obj.get("pid")),
                        tid: event_id(obj.get("tid")),
                        binds_enclosing: obj.get("bp").and_then(|b| b.as_str()) == Some("e"),
                    });
                }
                _ => skipped += 1,
            }
            continue;
        }
        if phase != Some("X") {
            skipped += 1;
            continue;
        }
        let name = obj
            .get("name")
            .and_then(|n| n.as_str())
            .ok_or_else(|| err("name", "missing or not a string".to_owned()))?;
        if name.is_empty() {
            return Err(err("name", "empty kernel name".to_owned()));
        }
        let micros = |field: &'static str| -> Result<f64, SpanFileError> {
            let v = obj
                .get(field)
                .ok_or_else(|| err(field, "missing".to_owned()))?;
            let us = v
                .as_f64()
                .ok_or_else(|| err(field, format!("{v} is not a number of µs")))?;
            if !(us.is_finite() && us >= 0.0) {
                return Err(err(field, format!("{us} µs is not a non-negative number")));
            }
            Ok(us)
        };
        let ts_us = micros("ts")?;
        let dur_us = micros("dur")?;
        let ts_ns = (ts_us * 1000.0).round();
        let dur_ns = (dur_us * 1000.0).round();
        let start_ns = base_ns
            .checked_add(ts_ns as u64)
            .ok_or_else(|| err("ts", "base time + ts overflows 64-bit ns".to_owned()))?;
        let end_ns = start_ns
            .checked_add(dur_ns as u64)
            .ok_or_else(|| err("dur", "end time overflows 64-bit ns".to_owned()))?;
        categories.push(obj.get("cat").and_then(|c| c.as_str()).map(str::to_owned));
        raw.push(RawEvent {
            index,
            name: name.to_owned(),
            start_ns,
            end_ns,
            pid: event_id(obj.get("pid")),
            tid: event_id(obj.get("tid")),
        });
    }

    // Category filter.
    let keep: Vec<bool> = match &options.categories {
        CategoryFilter::All => vec![true; raw.len()],
        CategoryFilter::Only(wanted) => categories
            .iter()
            .map(|c| c.as_ref().is_some_and(|c| wanted.iter().any(|w| w == c)))
            .collect(),
        CategoryFilter::GpuKernelsIfPresent => {
            let is_gpu: Vec<bool> = categories
                .iter()
                .map(|c| c.as_deref().is_some_and(|c| GPU_CATEGORIES.contains(&c)))
                .collect();
            if is_gpu.iter().any(|&g| g) {
                is_gpu
            } else {
                vec![true; raw.len()]
            }
        }
    };

    let clock = match options.clock {
        ClockOption::OffsetNs(offset_ns) => ClockAlignment {
            method: ClockMethod::ExplicitOffset,
            offset_ns,
        },
        ClockOption::Monotonic => ClockAlignment {
            method: ClockMethod::Monotonic,
            offset_ns: 0,
        },
        ClockOption::Realtime => ClockAlignment {
            method: ClockMethod::Realtime,
            offset_ns: realtime_offset(options, path)?,
        },
        ClockOption::Auto => {
            let kept = raw.iter().zip(&keep).filter(|(_, &k)| k).map(|(e, _)| e);
            let earliest = kept.clone().map(|e| e.start_ns).min();
            let latest = kept.map(|e| e.end_ns).max();
            match (earliest, latest) {
                (Some(lo), Some(_)) if lo >= EPOCH_THRESHOLD_NS => ClockAlignment {
                    method: ClockMethod::Realtime,
                    offset_ns: realtime_offset(options, path)?,
                },
                (Some(lo), Some(hi)) => {
                    let now = MonotonicNs::now().as_ns();
                    if hi > now {
                        return Err(SpanFileError::Clock {
                            path: path.to_owned(),
                            reason: format!(
                                "times from {lo} to {hi} ns are neither Unix epoch times nor \
                                 CLOCK_MONOTONIC times of this boot (now {now} ns); give the \
                                 offset to CLOCK_MONOTONIC explicitly"
                            ),
                        });
                    }
                    ClockAlignment {
                        method: ClockMethod::Monotonic,
                        offset_ns: 0,
                    }
                }
                _ => ClockAlignment {
                    method: ClockMethod::Monotonic,
                    offset_ns: 0,
                },
            }
        }
    };

    let mut names = Names::default();
    let mut category_names = Names::default();
    let mut spans = Vec::new();
    for ((e, k), category) in raw.into_iter().zip(keep).zip(categories) {
        if !k {
            skipped += 1;
            continue;
        }
        let (Some(start), Some(end)) = (
            apply_offset(e.start_ns, clock.offset_ns),
            apply_offset(e.end_ns, clock.offset_ns),
        ) else {
            return Err(SpanFileError::TraceEvent {
                path: path.to_owned(),
                index: e.index,
                field: "ts",
                reason: format!(
                    "with the offset {} ns the time falls before the clock's zero",
                    clock.offset_ns
                ),
            });
        };
        spans.push(FileSpan {
            name: names.intern(&e.name),
            start,
            end,
            pid: e.pid,
            tid: e.tid,
            category: category.as_deref().map(|c| category_names.intern(c)),
        });
    }
    let mut flows = Vec::with_capacity(raw_flows.len());
    for f in raw_flows {
        let Some(at) = apply_offset(f.at_ns, clock.offset_ns) else {
            return Err(SpanFileError::TraceEvent {
                path: path.to_owned(),
                index: f.index,
                field: "ts",
                reason: format!(
                    "with the offset {} ns the time falls before the clock's zero",
                    clock.offset_ns
                ),
            });
        };
        flows.push(FlowEvent {
            id: f.id,
            category: f.category.as_deref().map(|c| category_names.intern(c)),
            phase: f.phase,
            at,
            pid: f.pid,
            tid: f.tid,
            binds_enclosing: f.binds_enclosing,
        });
    }
    if spans.is_empty() && !events.is_empty() {
        tracing::debug!(path = %path.display(), "no complete events taken from the trace");
    }
    Ok(SpanFile {
        names: names.names,
        spans,
        format: SpanFileFormat::ChromeTrace,
        clock,
        skipped_events: skipped,
        categories: category_names.names,
        flows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> &'static Path {
        Path::new("spans.test")
    }

    fn opts() -> SpanFileOptions {
        SpanFileOptions::default()
    }

    #[test]
    fn csv_with_and_without_header_and_optional_ids() {
        let with_header = "name,start_ns,end_ns,pid,tid\n\
                           gemm,100,250,7,8\n\
                           # a comment\n\
                           \"relu, fused\",300,310\n\
                           gemm,400,450,7\n\
                           softmax,500,500,,9\n";
        let f = parse_csv(with_header, path(), &opts()).unwrap();
        assert_eq!(f.names, vec!["gemm", "relu, fused", "softmax"]);
        assert_eq!(f.spans.len(), 4);
        assert_eq!(
            f.spans[0],
            FileSpan {
                name: 0,
                start: MonotonicNs(100),
                end: MonotonicNs(250),
                pid: Some(7),
                tid: Some(8),
                category: None,
            }
        );
        assert_eq!((f.spans[1].pid, f.spans[1].tid), (None, None));
        assert_eq!((f.spans[2].pid, f.spans[2].tid), (Some(7), None));
        assert_eq!((f.spans[3].pid, f.spans[3].tid), (None, Some(9)));
        assert_eq!(f.clock.method, ClockMethod::Monotonic);

        let without = "gemm,100,250\n";
        let g = parse_csv(without, path(), &opts()).unwrap();
        assert_eq!(g.spans.len(), 1);
        assert_eq!(g.time_range(), Some((MonotonicNs(100), MonotonicNs(250))));
    }

    #[test]
    fn csv_errors_name_line_and_field() {
        let cases = [
            ("nme,start,end\n", 1, "start_ns"),
            ("a,1,2\nb,x,3\n", 2, "start_ns"),
            ("a,1,2\n# comment\nb,x,3\n", 3, "start_ns"),
            ("a,1,2\nb,5,3\n", 2, "end_ns"),
            ("a,1,2\n,5,6\n", 2, "name"),
            ("a,1,2\nb,5,6,-1\n", 2, "pid"),
            ("a,1,2\nb,5,6,1,2,3\n", 2, "record"),
            ("a,1\n", 1, "record"),
        ];
        for (text, want_line, want_field) in cases {
            match parse_csv(text, path(), &opts()) {
                Err(SpanFileError::Csv { line, field, .. }) => {
                    assert_eq!((line, field), (want_line, want_field), "{text:?}")
                }
                other => panic!("{text:?}: expected a CSV error, got {other:?}"),
            }
        }
        let e = parse_csv("a,1,2\nb,x,3\n", path(), &opts()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("spans.test:2: field `start_ns`"), "{msg}");
    }

    #[test]
    fn csv_offset_is_applied_and_checked() {
        let o = SpanFileOptions {
            clock: ClockOption::OffsetNs(-50),
            ..opts()
        };
        let f = parse_csv("a,100,200\n", path(), &o).unwrap();
        assert_eq!(f.spans[0].start, MonotonicNs(50));
        assert_eq!(f.clock.method, ClockMethod::ExplicitOffset);
        assert!(parse_csv("a,10,200\n", path(), &o).is_err());
    }

    /// A trace shaped like the PyTorch profiler's (kineto) output.
    fn kineto_trace(base_ns: u64) -> String {
        format!(
            r#"{{
  "schemaVersion": 1,
  "deviceProperties": [{{"id": 0, "name": "NVIDIA H100", "totalGlobalMem": 85000000000}}],
  "displayTimeUnit": "ms",
  "baseTimeNanoseconds": {base_ns},
  "traceEvents": [
    {{"name": "process_name", "ph": "M", "ts": 10.000, "pid": 1234, "tid": 0, "args": {{"name": "python"}}}},
    {{"ph": "X", "cat": "cpu_op", "name": "aten::linear", "pid": 1234, "tid": 1234, "ts": 100.000, "dur": 50.000}},
    {{"ph": "X", "cat": "cpu_op", "name": "aten::addmm", "pid": 1234, "tid": 1234, "ts": 110.000, "dur": 30.000}},
    {{"ph": "X", "cat": "kernel", "name": "sm90_gemm", "pid": 0, "tid": 7, "ts": 120.250, "dur": 12.125}},
    {{"ph": "X", "cat": "kernel", "name": "sm90_gemm", "pid": 0, "tid": 7, "ts": 140.000, "dur": 12.000}},
    {{"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy HtoD", "pid": 0, "tid": "stream 7", "ts": 90.000, "dur": 5.000}},
    {{"ph": "s", "id": 1, "pid": 1234, "tid": 1234, "ts": 110.000, "cat": "ac2g", "name": "ac2g"}}
  ],
  "traceName": "trace.json"
}}"#
        )
    }

    #[test]
    fn pytorch_trace_on_realtime_clock_is_aligned_and_gpu_kernels_kept() {
        // Base time: a three-month boundary in 2026 on the Unix epoch clock.
        let base = 1_766_000_000_000_000_000u64;
        let o = SpanFileOptions {
            realtime_to_monotonic_ns: Some(-1_765_000_000_000_000_000),
            categories: CategoryFilter::GpuKernelsIfPresent,
            ..opts()
        };
        let f = parse_chrome_trace(&kineto_trace(base), path(), &o).unwrap();
        assert_eq!(f.format, SpanFileFormat::ChromeTrace);
        assert_eq!(f.clock.method, ClockMethod::Realtime);
        assert_eq!(f.names, vec!["sm90_gemm", "Memcpy HtoD"]);
        assert_eq!(f.spans.len(), 3);
        // ts 120.250 µs, dur 12.125 µs after the base, minus the offset.
        let offset = base - 1_765_000_000_000_000_000;
        assert_eq!(f.spans[0].start, MonotonicNs(offset + 120_250));
        assert_eq!(f.spans[0].end, MonotonicNs(offset + 132_375));
        assert_eq!((f.spans[0].pid, f.spans[0].tid), (Some(0), Some(7)));
        assert_eq!(f.spans[2].tid, Some(7), "\"stream 7\" reads as tid 7");
        // metadata + 2 CPU ops skipped; the flow start is kept.
        assert_eq!(f.skipped_events, 3);
        assert_eq!(f.flows.len(), 1);
        assert_eq!(f.flows[0].phase, FlowPhase::Start);
        assert_eq!(f.flows[0].at, MonotonicNs(offset + 110_000));
        assert_eq!(f.categories[f.flows[0].category.unwrap() as usize], "ac2g");
        assert_eq!(
            f.categories[f.spans[0].category.unwrap() as usize],
            "kernel"
        );
        assert!(f.clock.describe().contains("CLOCK_REALTIME"));

        let all = SpanFileOptions {
            categories: CategoryFilter::All,
            ..o.clone()
        };
        assert_eq!(
            parse_chrome_trace(&kineto_trace(base), path(), &all)
                .unwrap()
                .spans
                .len(),
            5
        );
        let cpu = SpanFileOptions {
            categories: CategoryFilter::Only(vec!["cpu_op".to_owned()]),
            ..o
        };
        let c = parse_chrome_trace(&kineto_trace(base), path(), &cpu).unwrap();
        assert_eq!(c.names, vec!["aten::linear", "aten::addmm"]);
    }

    #[test]
    fn small_absolute_times_are_taken_as_monotonic_and_offsets_override() {
        // No base, absolute µs that fit this boot's monotonic clock.
        let trace = r#"[{"ph": "X", "name": "k", "ts": 1.5, "dur": 0.25, "pid": 1, "tid": -3}]"#;
        let f = parse_chrome_trace(trace, path(), &opts()).unwrap();
        assert_eq!(f.clock.method, ClockMethod::Monotonic);
        assert_eq!(f.spans[0].start, MonotonicNs(1_500));
        assert_eq!(f.spans[0].end, MonotonicNs(1_750));
        assert_eq!(f.spans[0].tid, Some(3));
        let o = SpanFileOptions {
            clock: ClockOption::OffsetNs(1_000),
            ..opts()
        };
        let g = parse_chrome_trace(trace, path(), &o).unwrap();
        assert_eq!(g.spans[0].start, MonotonicNs(2_500));
        // Far in this boot's future, but before the epoch threshold: refused.
        let future = r#"[{"ph": "X", "name": "k", "ts": 9.0e14, "dur": 1.0}]"#;
        assert!(matches!(
            parse_chrome_trace(future, path(), &opts()),
            Err(SpanFileError::Clock { .. })
        ));
    }

    #[test]
    fn bad_traces_name_the_event_and_field() {
        let cases = [
            (
                r#"{"traceEvents": [{"ph": "X", "ts": 1, "dur": 1}]}"#,
                0,
                "name",
            ),
            (
                r#"{"traceEvents": [{"ph": "M"}, {"ph": "X", "name": "k", "dur": 1}]}"#,
                1,
                "ts",
            ),
            (
                r#"{"traceEvents": [{"ph": "X", "name": "k", "ts": 1, "dur": -2}]}"#,
                0,
                "dur",
            ),
            (
                r#"{"traceEvents": [{"ph": "X", "name": "k", "ts": "1", "dur": 2}]}"#,
                0,
                "ts",
            ),
            (r#"{"traceEvents": [3]}"#, 0, "event"),
        ];
        for (text, want_index, want_field) in cases {
            match parse_chrome_trace(text, path(), &opts()) {
                Err(SpanFileError::TraceEvent { index, field, .. }) => {
                    assert_eq!((index, field), (want_index, want_field), "{text}")
                }
                other => panic!("{text}: expected an event error, got {other:?}"),
            }
        }
        assert!(matches!(
            parse_chrome_trace("{\"traceEvents\": [", path(), &opts()),
            Err(SpanFileError::Json { .. })
        ));
        assert!(matches!(
            parse_chrome_trace("{\"events\": []}", path(), &opts()),
            Err(SpanFileError::Format { .. })
        ));
        assert!(matches!(
            parse_chrome_trace(
                "{\"traceEvents\": [], \"baseTimeNanoseconds\": -5}",
                path(),
                &opts()
            ),
            Err(SpanFileError::Format { .. })
        ));
    }

    #[test]
    fn files_are_read_by_content_and_converted() {
        let dir = tempfile::tempdir().unwrap();
        let csv_path = dir.path().join("spans.csv");
        std::fs::write(&csv_path, "gemm,100,200,5,6\nrelu,300,350\n").unwrap();
        let f = read_span_file(&csv_path, &opts()).unwrap();
        assert_eq!(f.format, SpanFileFormat::Csv);
        let batch = f.to_batch(42);
        assert_eq!(batch.spans[1].pid, 42);
        assert_eq!(batch.spans[0].pid, 5);
        assert_eq!(
            f.kernel_spans(Some(5)).len(),
            2,
            "spans without pid are kept"
        );
        assert_eq!(f.kernel_spans(Some(9)).len(), 1);

        let json_path = dir.path().join("trace.txt");
        std::fs::write(
            &json_path,
            "  [{\"ph\": \"X\", \"name\": \"k\", \"ts\": 1, \"dur\": 1}]",
        )
        .unwrap();
        assert_eq!(
            read_span_file(&json_path, &opts()).unwrap().format,
            SpanFileFormat::ChromeTrace
        );
        let missing = dir.path().join("missing.csv");
        let e = read_span_file(&missing, &opts()).unwrap_err();
        assert!(e.to_string().contains("missing.csv"), "{e}");
    }

    #[test]
    fn realtime_offset_reads_both_clocks() {
        let offset = realtime_to_monotonic_offset_ns().unwrap();
        // Monotonic (since boot) is far smaller than the Unix epoch time.
        assert!(offset < 0);
        let now_real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        let mono = now_real + offset;
        let actual = MonotonicNs::now().as_ns() as i64;
        assert!((mono - actual).abs() < 50_000_000, "{mono} vs {actual}");
    }
}
