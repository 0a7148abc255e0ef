//! A fixture powercap tree for benchmarks: `packages` packages, each with
//! core and dram subzones (3 domains per package), whose `energy_uj`
//! counters advance at a fixed power until the process is killed.
//!
//! ```text
//! cargo run --release -p sampling --example powercap_fixture -- DIR [PACKAGES] [WATTS]
//! ```
//!
//! Prints `ready` on stdout once the tree exists, so a script can start the
//! daemon on it. Each counter is rewritten every millisecond (RAPL's own
//! update period) with `watts × elapsed`, modulo `max_energy_range_uj`,
//! through a file kept open: one `pwrite` per zone per millisecond, so the
//! fixture itself stays cheap next to the daemon being measured.

use sampling::fixtures::PowercapTree;
use shared::MonotonicNs;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The value a typical Intel package reports (2^32 × 61 µJ).
const MAX_ENERGY_RANGE_UJ: u64 = 262_143_328_850;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(root) = args.first().map(PathBuf::from) else {
        eprintln!("usage: powercap_fixture DIR [PACKAGES=2] [WATTS=30]");
        return ExitCode::from(2);
    };
    let packages: u32 = match args.get(1).map(|s| s.parse()) {
        None => 2,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("PACKAGES must be a positive integer");
            return ExitCode::from(2);
        }
    };
    let watts: f64 = match args.get(2).map(|s| s.parse()) {
        None => 30.0,
        Some(Ok(w)) if w >= 0.0 => w,
        Some(_) => {
            eprintln!("WATTS must be a non-negative number");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&root) {
        eprintln!("cannot create {}: {e}", root.display());
        return ExitCode::FAILURE;
    }
    let tree = match PowercapTree::builder()
        .packages(packages)
        .core(true)
        .dram(true)
        .max_energy_range_uj(MAX_ENERGY_RANGE_UJ)
        .build(&root)
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "cannot write the fixture tree under {}: {e}",
                root.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let mut files = Vec::new();
    for zone in tree.zones() {
        let path = root.join(zone).join("energy_uj");
        match OpenOptions::new().write(true).open(&path) {
            Ok(f) => files.push(f),
            Err(e) => {
                eprintln!("cannot open {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    println!("ready {} zones at {watts} W each", files.len());
    let _ = std::io::stdout().flush();
    let start = MonotonicNs::now();
    let mut text = Vec::with_capacity(32);
    loop {
        let elapsed_s = MonotonicNs::now().saturating_sub(start) as f64 * 1e-9;
        let raw = (watts * elapsed_s * 1e6) as u64 % (MAX_ENERGY_RANGE_UJ + 1);
        text.clear();
        // Fixed width, in place: a reader never sees a short file.
        let _ = writeln!(text, "{raw:020}");
        for f in &files {
            if let Err(e) = f.write_all_at(&text, 0) {
                eprintln!("cannot advance a fixture counter: {e}");
                return ExitCode::FAILURE;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
