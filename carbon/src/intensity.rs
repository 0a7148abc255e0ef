//! Grid carbon-intensity signals: values, kinds, sources, and the spec
//! string that says where a signal comes from.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::CarbonError;
use crate::trace::{self, TraceFormat};

/// Milliseconds in one hour: the accounting bucket.
pub const HOUR_MS: i64 = 3_600_000;

/// A wall-clock instant: UTC milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UtcMillis(pub i64);

impl UtcMillis {
    /// Index of the UTC hour holding this instant (hours since the epoch).
    pub fn hour_index(self) -> i64 {
        self.0.div_euclid(HOUR_MS)
    }

    /// The start of hour `index` (hours since the epoch).
    pub fn from_hour_index(index: i64) -> Self {
        UtcMillis(index * HOUR_MS)
    }
}

impl fmt::Display for UtcMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match chrono::DateTime::from_timestamp_millis(self.0) {
            Some(t) => write!(f, "{}", t.format("%Y-%m-%d %H:%M:%S")),
            None => write!(f, "{} ms", self.0),
        }
    }
}

/// A carbon intensity in gCO2eq per kWh; finite and non-negative.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct GramsPerKwh(f64);

impl GramsPerKwh {
    /// One lb CO2 per MWh in g per kWh (453.592 g / 1000 kWh): WattTime's unit.
    pub const PER_LB_PER_MWH: f64 = 0.453_592;

    /// A validated intensity.
    pub fn new(value: f64) -> Result<Self, CarbonError> {
        if value.is_finite() && value >= 0.0 {
            Ok(GramsPerKwh(value))
        } else {
            Err(CarbonError::BadIntensity(value))
        }
    }

    /// The value in gCO2eq/kWh.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// What a signal measures. Average and marginal intensities are not
/// interchangeable: an average (Electricity Maps, the bundled traces) is the
/// emission of the whole mix per kWh consumed; a marginal one (WattTime MOER)
/// is the emission of the plants that respond to one more kWh of load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntensityKind {
    /// Emissions of the whole generation mix per kWh.
    Average,
    /// Emissions of the marginal generator per extra kWh.
    Marginal,
}

impl fmt::Display for IntensityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IntensityKind::Average => "average",
            IntensityKind::Marginal => "marginal",
        })
    }
}

/// Where an intensity figure came from: the spec that produced it and its kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IntensitySource {
    /// The spec string, e.g. `trace:data/carbon/fr_2020_ci.csv`.
    pub name: String,
    /// Average or marginal.
    pub kind: IntensityKind,
}

impl fmt::Display for IntensitySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.kind)
    }
}

/// Where a signal comes from, parsed from a flag such as `--carbon-intensity`.
#[derive(Debug, Clone, PartialEq)]
pub enum IntensitySpec {
    /// `const:VALUE`: one value in gCO2eq/kWh for every hour (average).
    Constant(GramsPerKwh),
    /// `trace:PATH`: the bundled `Time,Carbon Intensity` CSV (average).
    Trace(PathBuf),
    /// `electricitymaps:PATH`: an Electricity Maps CSV export (average, direct).
    ElectricityMaps(PathBuf),
    /// `watttime:PATH`: WattTime MOER CSV in lbs/MWh (marginal).
    WattTime(PathBuf),
    /// `cmd:COMMAND`: a shell command that prints the current gCO2eq/kWh
    /// (taken as average: the command's output carries no kind).
    Command(String),
}

impl IntensitySpec {
    /// Parses an optional flag value. `None` is an error that tells the
    /// user how to give a source: carbon is never computed from a default.
    pub fn from_flag(flag: Option<&str>) -> Result<Self, CarbonError> {
        match flag {
            None => Err(CarbonError::NoSpec),
            Some(s) => s.parse(),
        }
    }

    /// The name every figure computed from this spec carries.
    pub fn name(&self) -> String {
        match self {
            IntensitySpec::Constant(v) => format!("const:{}", v.get()),
            IntensitySpec::Trace(p) => format!("trace:{}", p.display()),
            IntensitySpec::ElectricityMaps(p) => format!("electricitymaps:{}", p.display()),
            IntensitySpec::WattTime(p) => format!("watttime:{}", p.display()),
            IntensitySpec::Command(c) => format!("cmd:{c}"),
        }
    }

    /// Reads the signal: parses the file, or runs the command once.
    pub fn load(&self) -> Result<IntensitySignal, CarbonError> {
        let name = self.name();
        match self {
            IntensitySpec::Constant(v) => Ok(IntensitySignal::Constant {
                value: *v,
                source: IntensitySource {
                    name,
                    kind: IntensityKind::Average,
                },
            }),
            IntensitySpec::Trace(p) => load_trace(p, TraceFormat::Bundled, name),
            IntensitySpec::ElectricityMaps(p) => load_trace(p, TraceFormat::ElectricityMaps, name),
            IntensitySpec::WattTime(p) => load_trace(p, TraceFormat::WattTime, name),
            IntensitySpec::Command(c) => {
                let value = run_intensity_command(c)?;
                Ok(IntensitySignal::Constant {
                    value,
                    source: IntensitySource {
                        name,
                        kind: IntensityKind::Average,
                    },
                })
            }
        }
    }
}

fn load_trace(
    path: &std::path::Path,
    format: TraceFormat,
    name: String,
) -> Result<IntensitySignal, CarbonError> {
    let points = trace::read_trace_file(path, format)?;
    let source = IntensitySource {
        name,
        kind: format.kind(),
    };
    Ok(IntensitySignal::Hourly(HourlyIntensity::from_points(
        source, &points,
    )))
}

fn run_intensity_command(command: &str) -> Result<GramsPerKwh, CarbonError> {
    let fail = |reason: String| CarbonError::Command {
        command: command.to_string(),
        reason,
    };
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .output()
        .map_err(|e| fail(format!("could not start: {e}")))?;
    if !output.status.success() {
        return Err(fail(format!(
            "exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let text = text.trim();
    let value: f64 = text
        .parse()
        .map_err(|_| fail(format!("printed {text:?}, not a number of gCO2eq/kWh")))?;
    GramsPerKwh::new(value).map_err(|e| fail(e.to_string()))
}

impl FromStr for IntensitySpec {
    type Err = CarbonError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| CarbonError::BadSpec {
            spec: s.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = s
            .split_once(':')
            .ok_or_else(|| bad("expected SCHEME:VALUE with SCHEME one of const, trace, electricitymaps, watttime, cmd"))?;
        if rest.is_empty() {
            return Err(bad("nothing after the colon"));
        }
        match scheme {
            "const" => {
                let v: f64 = rest
                    .trim()
                    .parse()
                    .map_err(|_| bad("const: needs a number of gCO2eq/kWh"))?;
                Ok(IntensitySpec::Constant(
                    GramsPerKwh::new(v).map_err(|e| bad(&e.to_string()))?,
                ))
            }
            "trace" => Ok(IntensitySpec::Trace(PathBuf::from(rest))),
            "electricitymaps" => Ok(IntensitySpec::ElectricityMaps(PathBuf::from(rest))),
            "watttime" => Ok(IntensitySpec::WattTime(PathBuf::from(rest))),
            "cmd" => Ok(IntensitySpec::Command(rest.to_string())),
            _ => Err(bad(
                "unknown scheme; use const, trace, electricitymaps, watttime or cmd",
            )),
        }
    }
}

/// One reading of a trace: its start time and value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntensityPoint {
    /// The time the reading is stamped with (start of its step).
    pub time: UtcMillis,
    /// The intensity.
    pub value: GramsPerKwh,
}

/// A trace reduced to UTC hours: each hour's value is the mean of the
/// trace's points stamped within that hour; an hour with no point is `None`
/// (never filled in silently: accounting refuses it, forecasting
/// interpolates it and says so).
#[derive(Debug, Clone, PartialEq)]
pub struct HourlyIntensity {
    /// Where the values came from.
    pub source: IntensitySource,
    /// Hour index (hours since the epoch) of `values[0]`.
    pub first_hour: i64,
    /// One entry per consecutive hour.
    pub values: Vec<Option<f64>>,
}

impl HourlyIntensity {
    /// Buckets points by UTC hour (any order; the parsers already refuse
    /// rows out of time order).
    pub fn from_points(source: IntensitySource, points: &[IntensityPoint]) -> Self {
        let hours = points.iter().map(|p| p.time.hour_index());
        let (Some(first_hour), Some(last_hour)) = (hours.clone().min(), hours.max()) else {
            return HourlyIntensity {
                source,
                first_hour: 0,
                values: Vec::new(),
            };
        };
        let n = usize::try_from(last_hour - first_hour + 1).unwrap_or(0);
        let mut sums = vec![(0.0f64, 0u32); n];
        for p in points {
            if let Some(slot) = usize::try_from(p.time.hour_index() - first_hour)
                .ok()
                .and_then(|i| sums.get_mut(i))
            {
                slot.0 += p.value.get();
                slot.1 += 1;
            }
        }
        let values = sums
            .into_iter()
            .map(|(s, c)| (c > 0).then(|| s / f64::from(c)))
            .collect();
        HourlyIntensity {
            source,
            first_hour,
            values,
        }
    }

    /// The value of hour `hour` (hours since the epoch), if the trace has one.
    pub fn at_hour(&self, hour: i64) -> Option<f64> {
        let i = hour.checked_sub(self.first_hour)?;
        usize::try_from(i)
            .ok()
            .and_then(|i| self.values.get(i).copied().flatten())
    }
}

/// A signal ready for accounting.
#[derive(Debug, Clone, PartialEq)]
pub enum IntensitySignal {
    /// The same value for every hour.
    Constant {
        /// The value.
        value: GramsPerKwh,
        /// Its source.
        source: IntensitySource,
    },
    /// One value per UTC hour.
    Hourly(HourlyIntensity),
}

impl IntensitySignal {
    /// The signal's source.
    pub fn source(&self) -> &IntensitySource {
        match self {
            IntensitySignal::Constant { source, .. } => source,
            IntensitySignal::Hourly(h) => &h.source,
        }
    }

    /// The intensity of hour `hour`, or an error naming the source and hour.
    pub fn for_hour(&self, hour: i64) -> Result<f64, CarbonError> {
        match self {
            IntensitySignal::Constant { value, .. } => Ok(value.get()),
            IntensitySignal::Hourly(h) => h.at_hour(hour).ok_or_else(|| CarbonError::NoIntensity {
                source_name: h.source.name.clone(),
                hour_start: UtcMillis::from_hour_index(hour).to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_each_scheme() {
        assert_eq!(
            "const:250".parse::<IntensitySpec>().unwrap(),
            IntensitySpec::Constant(GramsPerKwh::new(250.0).unwrap())
        );
        assert_eq!(
            "trace:a/b.csv".parse::<IntensitySpec>().unwrap(),
            IntensitySpec::Trace("a/b.csv".into())
        );
        assert_eq!(
            "electricitymaps:x.csv".parse::<IntensitySpec>().unwrap(),
            IntensitySpec::ElectricityMaps("x.csv".into())
        );
        assert_eq!(
            "watttime:w.csv".parse::<IntensitySpec>().unwrap(),
            IntensitySpec::WattTime("w.csv".into())
        );
        assert_eq!(
            "cmd:echo 1:2".parse::<IntensitySpec>().unwrap(),
            IntensitySpec::Command("echo 1:2".into())
        );
    }

    #[test]
    fn missing_or_bad_spec_is_an_error_that_says_how() {
        let e = IntensitySpec::from_flag(None).unwrap_err();
        assert!(matches!(e, CarbonError::NoSpec));
        let msg = e.to_string();
        assert!(msg.contains("const:") && msg.contains("trace:") && msg.contains("watttime:"));
        for bad in ["250", "const:-3", "const:abc", "gas:1", "trace:"] {
            assert!(
                matches!(
                    bad.parse::<IntensitySpec>(),
                    Err(CarbonError::BadSpec { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn command_value_is_read_and_checked() {
        let s = IntensitySpec::Command("echo ' 123.5 '".into())
            .load()
            .unwrap();
        assert_eq!(s.for_hour(0).unwrap(), 123.5);
        assert_eq!(s.source().name, "cmd:echo ' 123.5 '");
        for bad in ["echo hello", "echo -5", "exit 3"] {
            let e = IntensitySpec::Command(bad.into()).load().unwrap_err();
            assert!(matches!(e, CarbonError::Command { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn hourly_buckets_are_means_of_points_in_the_hour() {
        let src = IntensitySource {
            name: "t".into(),
            kind: IntensityKind::Average,
        };
        let p = |min: i64, v: f64| IntensityPoint {
            time: UtcMillis(min * 60_000),
            value: GramsPerKwh::new(v).unwrap(),
        };
        // Hour 0: 10, 20 → 15; hour 1: none; hour 2: 30 (order does not matter).
        let h = HourlyIntensity::from_points(src, &[p(30, 20.0), p(150, 30.0), p(0, 10.0)]);
        assert_eq!(h.first_hour, 0);
        assert_eq!(h.values, vec![Some(15.0), None, Some(30.0)]);
        assert_eq!(h.at_hour(-1), None);
        assert_eq!(h.at_hour(3), None);
    }
}
