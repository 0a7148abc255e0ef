//! End to end on a fixture RAPL tree: the real `energyd` reads a powercap
//! tree (`--powercap-root`) whose `energy_uj` counters a thread of this
//! test advances at a known power, wrapping mid-run; `energyctl energy
//! --json` must then report that power times the interval, within 1 %.
//!
//! The test runs as root, so the daemon treats it as a privileged peer and
//! answers at full resolution. An unprivileged peer would get energy over
//! windows aligned to `policy.min_window_ms` and rounded to
//! `policy.energy_quantum_j` (Platypus mitigation), and the 1 % check would
//! have to allow for that coarsening.

use crate::support::{Daemon, ENERGYCTL};
use shared::MonotonicNs;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Only the powercap path (not auto, which prefers a perf power PMU when
/// the machine has one) and no GPU: the fixture is the only source.
const POWERCAP_ONLY: &str = r#"
[sources]
rapl = "powercap"
nvml = false

# Full rate from the start: the test checks wraps seen at 1 kHz, and an idle
# daemon would sample at 10 Hz until the first query.
[sampling]
idle_period_ms = 0
"#;

/// Counter range of the fixture zones: 20 J, so the package counter wraps
/// every 0.8 s at 25 W (and 20 J stays far above the 2 µJ the daemon's
/// period-sizing rule needs for 1 ms reads).
const MAX_ENERGY_RANGE_UJ: u64 = 19_999_999;
const PACKAGE_W: f64 = 25.0;
const DRAM_W: f64 = 4.0;

/// A powercap tree with one package and its dram subzone.
fn write_tree(root: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(root.join("intel-rapl"))?;
    for (dir, name) in [("intel-rapl:0", "package-0"), ("intel-rapl:0:0", "dram")] {
        let zone = root.join(dir);
        std::fs::create_dir_all(&zone)?;
        std::fs::write(zone.join("name"), format!("{name}\n"))?;
        std::fs::write(
            zone.join("max_energy_range_uj"),
            format!("{MAX_ENERGY_RANGE_UJ}\n"),
        )?;
        std::fs::write(zone.join("energy_uj"), format!("{:020}\n", 0))?;
    }
    Ok(())
}

/// Advances every zone's counter to exactly `watts × elapsed` (modulo the
/// range, like the hardware) every millisecond, from an offset just below
/// the range so the first wrap comes early.
struct CounterDriver {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<u64>>,
}

impl CounterDriver {
    fn start(zones: Vec<(PathBuf, f64)>) -> CounterDriver {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_thread = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let files: Vec<_> = zones
                .iter()
                .map(|(path, watts)| {
                    let f = OpenOptions::new()
                        .write(true)
                        .open(path.join("energy_uj"))
                        .expect("fixture energy_uj is writable");
                    (f, *watts)
                })
                .collect();
            let start = MonotonicNs::now();
            let offset_uj = MAX_ENERGY_RANGE_UJ - 500_000;
            let mut wraps = 0u64;
            while !stop_thread.load(Ordering::Relaxed) {
                let elapsed_s = MonotonicNs::now().saturating_sub(start) as f64 * 1e-9;
                for (i, (f, watts)) in files.iter().enumerate() {
                    let total_uj = offset_uj + (watts * elapsed_s * 1e6) as u64;
                    let raw = total_uj % (MAX_ENERGY_RANGE_UJ + 1);
                    if i == 0 {
                        wraps = total_uj / (MAX_ENERGY_RANGE_UJ + 1);
                    }
                    // Fixed width, written in place: a reader never sees a
                    // short or empty file.
                    f.write_all_at(format!("{raw:020}\n").as_bytes(), 0)
                        .expect("write energy_uj");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            wraps
        });
        CounterDriver {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops driving; returns how often the package counter wrapped.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .map(|h| h.join().expect("driver thread"))
            .unwrap_or(0)
    }
}

impl Drop for CounterDriver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn energyctl_json(socket: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(ENERGYCTL)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run energyctl");
    assert!(
        out.status.success(),
        "energyctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("energyctl --json prints one JSON document")
}

/// The entry of the zone named `zone` in an energyctl sources array.
fn by_zone<'a>(doc: &'a serde_json::Value, zone: &str) -> &'a serde_json::Value {
    doc["sources"]
        .as_array()
        .expect("sources array")
        .iter()
        .find(|s| {
            s["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&format!("{zone} ")))
        })
        .unwrap_or_else(|| panic!("no source for {zone} in {doc}"))
}

fn assert_within_1pct(what: &str, got_j: f64, expected_j: f64) {
    assert!(
        (got_j - expected_j).abs() <= 0.01 * expected_j,
        "{what}: got {got_j:.4} J, expected {expected_j:.4} J (±1 %)"
    );
}

#[test]
fn energyctl_reports_fixture_rapl_energy_within_one_percent() {
    let fixture = tempfile::tempdir().expect("tempdir");
    write_tree(fixture.path()).expect("write the fixture tree");
    let package = fixture.path().join("intel-rapl:0");
    let dram = fixture.path().join("intel-rapl:0:0");
    let driver = CounterDriver::start(vec![(package, PACKAGE_W), (dram, DRAM_W)]);

    let root = fixture.path().to_str().expect("utf-8 temp path");
    let d = Daemon::start(POWERCAP_ONLY, &["--powercap-root", root]);
    // Let the history cover at least two wraps of the package counter.
    std::thread::sleep(Duration::from_millis(2500));

    // A 2 s interval ending a little in the past, so it is fully sampled.
    let to = MonotonicNs::now().saturating_sub_ns(50_000_000);
    let from = to.saturating_sub_ns(2_000_000_000);
    let (from_arg, to_arg) = (from.0.to_string(), to.0.to_string());
    let doc = energyctl_json(
        &d.socket,
        &["energy", "--from", &from_arg, "--to", &to_arg, "--json"],
    );
    for (zone, watts) in [("intel-rapl:0", PACKAGE_W), ("intel-rapl:0:0", DRAM_W)] {
        let e = by_zone(&doc, zone);
        assert_eq!(e["provenance"], "measured", "{e}");
        assert!(e["coverage"].as_f64().unwrap() > 0.999, "{e}");
        assert_within_1pct(zone, e["energy_j"].as_f64().unwrap(), watts * 2.0);
    }

    // `--last`: the daemon's newest sample may be up to a period old, so
    // the expected energy is the power over the covered part.
    let doc = energyctl_json(&d.socket, &["energy", "--last", "1s", "--json"]);
    let e = by_zone(&doc, "intel-rapl:0");
    let covered_s = doc["duration_s"].as_f64().unwrap() * e["coverage"].as_f64().unwrap();
    assert!(covered_s > 0.98, "{doc}");
    assert_within_1pct(
        "intel-rapl:0 --last 1s",
        e["energy_j"].as_f64().unwrap(),
        PACKAGE_W * covered_s,
    );

    // The wraps were seen and corrected, at the full 1 kHz rate.
    let status = energyctl_json(&d.socket, &["status", "--json"]);
    let pkg = by_zone(&status, "intel-rapl:0");
    assert!(pkg["wraps"].as_u64().unwrap() >= 2, "{pkg}");
    assert_eq!(pkg["kind"], "rapl-powercap", "{pkg}");
    assert!(pkg["rate_hz"].as_f64().unwrap() > 500.0, "{pkg}");
    assert_eq!(pkg["read_errors"], 0, "{pkg}");
    if nix::unistd::geteuid().is_root() {
        assert_eq!(
            status["peer"]["privileged"], true,
            "root sees full resolution"
        );
    }

    let (exit, _stderr) = d.terminate();
    assert!(exit.success());
    assert!(driver.stop() >= 2, "the fixture counter wrapped");
}
