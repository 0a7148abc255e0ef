//! `energyctl run` and `energyctl attribute` against the real daemon, as a
//! user would call them.

use crate::support::{Daemon, SIMULATED_CONFIG};
use std::process::Command;

#[test]
fn run_reports_labelled_energy_and_passes_the_exit_code() {
    let d = Daemon::start(SIMULATED_CONFIG, &[]);
    let out = d
        .energyctl()
        .args([
            "run",
            "--json",
            "--",
            "sh",
            "-c",
            "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exit 3",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["exit_code"], 3);
    assert!(doc["energy_j"].as_f64().unwrap() > 0.0, "{doc}");
    // The simulated and estimated sources combine to "simulated": the
    // weakest provenance is what the total is labelled with.
    assert_eq!(doc["provenance"], "simulated");
    let labels: Vec<&str> = doc["domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["provenance"].as_str().unwrap())
        .collect();
    assert!(
        labels.contains(&"estimated") && labels.contains(&"simulated"),
        "{labels:?}"
    );
}

#[test]
fn attribute_reads_a_csv_span_file_for_a_tracked_process() {
    let d = Daemon::start(SIMULATED_CONFIG, &[]);
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = sleeper.id();
    let mut client = d.client();
    client.register_process(pid, true).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(600));
    let now = shared::MonotonicNs::now().0;
    let mut csv = String::from("name,start_ns,end_ns,pid,tid\n");
    for i in 0..50u64 {
        let start = now - 500_000_000 + i * 8_000_000;
        csv.push_str(&format!("gemm,{start},{},{pid},{pid}\n", start + 2_000_000));
        csv.push_str(&format!(
            "\"relu, fused\",{},{},{pid},{pid}\n",
            start + 2_000_000,
            start + 3_000_000
        ));
    }
    let path = d.dir.path().join("spans.csv");
    std::fs::write(&path, csv).unwrap();
    let out = d
        .energyctl()
        .args(["attribute", "--json", "--spans"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["pid"], pid);
    let kernels = doc["kernels"].as_array().unwrap();
    let count = |name: &str| {
        kernels
            .iter()
            .find(|k| k["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {doc}"))["count"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(count("gemm"), 50);
    assert_eq!(count("relu, fused"), 50);
    // Kernel figures and the unattributed part add up to the process's
    // energy on every domain (a kernel without a figure counts as zero).
    let known: f64 = kernels.iter().filter_map(|k| k["energy_j"].as_f64()).sum();
    for dom in doc["domains"].as_array().unwrap() {
        let (process, unattributed) = (
            dom["energy_j"].as_f64().unwrap(),
            dom["unattributed_j"].as_f64().unwrap(),
        );
        assert!(unattributed <= process + 1e-9);
        if unattributed < process {
            assert!(
                (known + unattributed - process).abs() <= 1e-6 * process.max(1.0),
                "{doc}"
            );
        }
    }

    // A file whose spans belong to an untracked process is refused clearly.
    let stray = d.dir.path().join("stray.csv");
    std::fs::write(&stray, format!("k,{},{},1,1\n", now - 1000, now)).unwrap();
    let out = d
        .energyctl()
        .args(["attribute", "--spans"])
        .arg(&stray)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not tracked"));

    // A malformed file names the file, line and field.
    let bad = d.dir.path().join("bad.csv");
    std::fs::write(&bad, "name,start_ns,end_ns\nk,10,x\n").unwrap();
    let out = d
        .energyctl()
        .args(["attribute", "--pid", &pid.to_string(), "--spans"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.csv:2: field `end_ns`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}
