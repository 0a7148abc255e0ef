//! Trace-file parsers. Every error names the file, the 1-based line (the
//! header is line 1) and the field.
//!
//! Formats and the columns relied on:
//! - **Bundled** (`data/carbon/*.csv`, Wiesner et al. 2021):
//!   `Time,Carbon Intensity`, UTC `YYYY-MM-DD HH:MM:SS`, gCO2eq/kWh, average.
//! - **Electricity Maps** CSV export. The data portal's hourly/daily files
//!   have `Datetime (UTC)` and `Carbon Intensity gCO₂eq/kWh (direct)` (also
//!   `... (life cycle assessment)`, Zone Id, percentages; the field list
//!   is on electricitymaps.com/data-portal, checked 2026-12). We take the *direct* factor, the one
//!   the portal says complies with the GHG Protocol's Scope-2 guidance.
//!   The older research export (used by CE-NAS) has `datetime` and
//!   `carbon_intensity_avg`; it is accepted too. Average intensity.
//! - **WattTime** MOER: the v3 API's `data` points `point_time` (ISO 8601)
//!   and `value` in lbs CO2/MWh, as CSV with those two columns; converted by
//!   1 lb/MWh = 0.453592 g/kWh and labelled marginal.
//!
//! Timestamps: `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DDTHH:MM:SS` (fraction
//! allowed), read as UTC, or RFC 3339 with an offset. Rows must strictly
//! increase in time; values must be finite and non-negative.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime};

use crate::error::CarbonError;
use crate::intensity::{GramsPerKwh, IntensityKind, IntensityPoint, UtcMillis};

/// A trace file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceFormat {
    /// `Time,Carbon Intensity` in gCO2eq/kWh.
    Bundled,
    /// Electricity Maps CSV export (portal or research layout).
    ElectricityMaps,
    /// WattTime MOER `point_time,value` in lbs CO2/MWh.
    WattTime,
}

impl TraceFormat {
    /// What the format's values measure.
    pub fn kind(self) -> IntensityKind {
        match self {
            TraceFormat::WattTime => IntensityKind::Marginal,
            TraceFormat::Bundled | TraceFormat::ElectricityMaps => IntensityKind::Average,
        }
    }

    /// Accepted (time column, value column) pairs, in order of preference.
    fn column_pairs(self) -> &'static [(&'static str, &'static str)] {
        match self {
            TraceFormat::Bundled => &[("Time", "Carbon Intensity")],
            TraceFormat::ElectricityMaps => &[
                ("Datetime (UTC)", "Carbon Intensity gCO₂eq/kWh (direct)"),
                ("datetime", "carbon_intensity_avg"),
            ],
            TraceFormat::WattTime => &[("point_time", "value")],
        }
    }

    /// Factor from the file's unit to gCO2eq/kWh.
    fn to_grams_per_kwh(self) -> f64 {
        match self {
            TraceFormat::WattTime => GramsPerKwh::PER_LB_PER_MWH,
            TraceFormat::Bundled | TraceFormat::ElectricityMaps => 1.0,
        }
    }
}

/// Reads and validates a trace file.
pub fn read_trace_file(
    path: &Path,
    format: TraceFormat,
) -> Result<Vec<IntensityPoint>, CarbonError> {
    let file = std::fs::File::open(path).map_err(|source| CarbonError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_trace(std::io::BufReader::new(file), path, format)
}

/// Parses a trace from any reader; `path` is only used in errors.
pub fn parse_trace<R: std::io::Read>(
    reader: R,
    path: &Path,
    format: TraceFormat,
) -> Result<Vec<IntensityPoint>, CarbonError> {
    let path_buf = || PathBuf::from(path);
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        // Rows of unequal length are reported by us, naming the field.
        .flexible(true)
        .from_reader(reader);
    let io_err = |e: csv::Error, line: u64| match e.into_kind() {
        csv::ErrorKind::Io(source) => CarbonError::Io {
            path: path_buf(),
            source,
        },
        other => CarbonError::Malformed {
            path: path_buf(),
            line,
            field: String::new(),
            reason: format!("{other:?}"),
        },
    };
    let header = rdr.headers().map_err(|e| io_err(e, 1))?.clone();
    let find = |name: &str| header.iter().position(|h| h.trim() == name);
    let pairs = format.column_pairs();
    let Some((time_col, value_col, time_name, value_name)) = pairs
        .iter()
        .find_map(|(t, v)| Some((find(t)?, find(v)?, *t, *v)))
    else {
        let (t, v) = pairs[0];
        let missing = if find(t).is_none() { t } else { v };
        return Err(CarbonError::MissingColumn {
            path: path_buf(),
            column: missing.to_string(),
            header: header.iter().collect::<Vec<_>>().join(","),
        });
    };
    let factor = format.to_grams_per_kwh();
    let mut points: Vec<IntensityPoint> = Vec::new();
    let mut record = csv::StringRecord::new();
    let mut line = 1u64;
    loop {
        match rdr.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(io_err(e, line + 1)),
        }
        line = record.position().map_or(line + 1, |p| p.line());
        let malformed = |field: &str, reason: String| CarbonError::Malformed {
            path: path_buf(),
            line,
            field: field.to_string(),
            reason,
        };
        let time_text = record
            .get(time_col)
            .ok_or_else(|| malformed(time_name, "missing (row too short)".into()))?
            .trim();
        let time = parse_time(time_text).ok_or_else(|| {
            malformed(
                time_name,
                format!(
                    "bad timestamp {time_text:?} (expected YYYY-MM-DD HH:MM:SS UTC or RFC 3339)"
                ),
            )
        })?;
        let value_text = record
            .get(value_col)
            .ok_or_else(|| malformed(value_name, "missing (row too short)".into()))?
            .trim();
        let raw: f64 = value_text
            .parse()
            .map_err(|_| malformed(value_name, format!("not a number: {value_text:?}")))?;
        if !raw.is_finite() || raw < 0.0 {
            return Err(malformed(
                value_name,
                format!("intensity must be finite and >= 0, got {value_text}"),
            ));
        }
        if let Some(prev) = points.last() {
            if time <= prev.time {
                return Err(CarbonError::NonMonotonic {
                    path: path_buf(),
                    line,
                    field: time_name.to_string(),
                    previous: prev.time.to_string(),
                    this: time.to_string(),
                });
            }
        }
        let value =
            GramsPerKwh::new(raw * factor).map_err(|e| malformed(value_name, e.to_string()))?;
        points.push(IntensityPoint { time, value });
    }
    if points.is_empty() {
        return Err(CarbonError::Empty { path: path_buf() });
    }
    Ok(points)
}

/// A UTC instant as the traces write them (RFC 3339, or `YYYY-MM-DD
/// HH:MM:SS[.f]` / `…T…` with an optional `Z`, read as UTC); `None` when
/// the text is none of these.
pub fn parse_utc(text: &str) -> Option<UtcMillis> {
    parse_time(text.trim())
}

/// Parses the timestamp forms listed in the module doc.
fn parse_time(text: &str) -> Option<UtcMillis> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(UtcMillis(t.timestamp_millis()));
    }
    let text = text.strip_suffix('Z').unwrap_or(text);
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| UtcMillis(t.and_utc().timestamp_millis()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, format: TraceFormat) -> Result<Vec<IntensityPoint>, CarbonError> {
        parse_trace(text.as_bytes(), Path::new("t.csv"), format)
    }

    fn malformed_at(r: Result<Vec<IntensityPoint>, CarbonError>) -> (u64, String, String) {
        match r {
            Err(CarbonError::Malformed {
                line,
                field,
                reason,
                ..
            }) => (line, field, reason),
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn bundled_format_reads_times_and_values() {
        let p = parse(
            "Time,Carbon Intensity\n2020-01-01 00:00:00,42.5\n2020-01-01 00:30:00,40\n",
            TraceFormat::Bundled,
        )
        .unwrap();
        assert_eq!(p.len(), 2);
        // 2020-01-01T00:00Z = 18262 days after the epoch.
        assert_eq!(p[0].time, UtcMillis(18_262 * 86_400_000));
        assert_eq!(p[1].time.0 - p[0].time.0, 30 * 60_000);
        assert_eq!(p[0].value.get(), 42.5);
    }

    #[test]
    fn bad_timestamp_names_line_and_field() {
        let (line, field, reason) = malformed_at(parse(
            "Time,Carbon Intensity\n2020-01-01 00:00:00,1\n2020-13-01 00:00:00,2\n",
            TraceFormat::Bundled,
        ));
        assert_eq!((line, field.as_str()), (3, "Time"));
        assert!(reason.contains("2020-13-01"), "{reason}");
        let e = parse("Time,Carbon Intensity\nyesterday,1\n", TraceFormat::Bundled).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.csv: line 2: field \"Time\": bad timestamp \"yesterday\" (expected YYYY-MM-DD HH:MM:SS UTC or RFC 3339)"
        );
    }

    #[test]
    fn non_numeric_negative_or_missing_value_names_line_and_field() {
        let (line, field, _) = malformed_at(parse(
            "Time,Carbon Intensity\n2020-01-01 00:00:00,abc\n",
            TraceFormat::Bundled,
        ));
        assert_eq!((line, field.as_str()), (2, "Carbon Intensity"));
        let (line, _, reason) = malformed_at(parse(
            "Time,Carbon Intensity\n2020-01-01 00:00:00,1\n2020-01-01 01:00:00,-4\n",
            TraceFormat::Bundled,
        ));
        assert_eq!(line, 3);
        assert!(reason.contains(">= 0"));
        let (line, field, reason) = malformed_at(parse(
            "Time,Carbon Intensity\n2020-01-01 00:00:00\n",
            TraceFormat::Bundled,
        ));
        assert_eq!((line, field.as_str()), (2, "Carbon Intensity"));
        assert!(reason.contains("missing"));
    }

    #[test]
    fn missing_column_is_named() {
        match parse(
            "Time,Intensity\n2020-01-01 00:00:00,1\n",
            TraceFormat::Bundled,
        ) {
            Err(CarbonError::MissingColumn { column, header, .. }) => {
                assert_eq!(column, "Carbon Intensity");
                assert_eq!(header, "Time,Intensity");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn time_must_strictly_increase() {
        let e = parse(
            "Time,Carbon Intensity\n2020-01-01 01:00:00,1\n2020-01-01 00:00:00,2\n",
            TraceFormat::Bundled,
        )
        .unwrap_err();
        match e {
            CarbonError::NonMonotonic { line, field, .. } => {
                assert_eq!((line, field.as_str()), (3, "Time"))
            }
            other => panic!("{other:?}"),
        }
        let dup = parse(
            "Time,Carbon Intensity\n2020-01-01 01:00:00,1\n2020-01-01 01:00:00,2\n",
            TraceFormat::Bundled,
        );
        assert!(matches!(
            dup,
            Err(CarbonError::NonMonotonic { line: 3, .. })
        ));
    }

    #[test]
    fn empty_file_is_an_error() {
        assert!(matches!(
            parse("Time,Carbon Intensity\n", TraceFormat::Bundled),
            Err(CarbonError::Empty { .. })
        ));
    }

    #[test]
    fn electricity_maps_portal_and_research_layouts() {
        let portal = "Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),Carbon Intensity gCO₂eq/kWh (life cycle assessment),Low Carbon Percentage\n\
                      2022-01-01 00:00:00,France,France,FR,20.5,50.1,95\n\
                      2022-01-01 01:00:00,France,France,FR,21.0,51.0,95\n";
        let p = parse(portal, TraceFormat::ElectricityMaps).unwrap();
        assert_eq!(
            p.iter().map(|x| x.value.get()).collect::<Vec<_>>(),
            vec![20.5, 21.0]
        );
        assert_eq!(TraceFormat::ElectricityMaps.kind(), IntensityKind::Average);
        let research = "datetime,carbon_intensity_avg,power_origin_percent_solar_avg\n2021-07-02T00:00:00.000Z,250,3\n";
        let p = parse(research, TraceFormat::ElectricityMaps).unwrap();
        assert_eq!(p[0].value.get(), 250.0);
        let (line, field, _) = malformed_at(parse(
            "Datetime (UTC),Carbon Intensity gCO₂eq/kWh (direct)\n2022-01-01 00:00:00,\n",
            TraceFormat::ElectricityMaps,
        ));
        assert_eq!(
            (line, field.as_str()),
            (2, "Carbon Intensity gCO₂eq/kWh (direct)")
        );
    }

    #[test]
    fn watttime_is_converted_from_lbs_per_mwh_and_marginal() {
        let p = parse(
            "point_time,value\n2023-01-01T00:00:00+00:00,1000\n2023-01-01T00:05:00+00:00,500\n",
            TraceFormat::WattTime,
        )
        .unwrap();
        // 1000 lbs/MWh = 453.592 g/kWh.
        assert!((p[0].value.get() - 453.592).abs() < 1e-9);
        assert!((p[1].value.get() - 226.796).abs() < 1e-9);
        assert_eq!(p[1].time.0 - p[0].time.0, 300_000);
        assert_eq!(TraceFormat::WattTime.kind(), IntensityKind::Marginal);
    }

    #[test]
    fn bundled_traces_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/carbon");
        for f in ["fr_2020_ci.csv", "gb_2020_ci.csv", "ger_2020_ci.csv"] {
            let p = read_trace_file(&dir.join(f), TraceFormat::Bundled).unwrap();
            assert!(p.len() > 17_000, "{f}: {}", p.len());
        }
    }
}
