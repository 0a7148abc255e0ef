//! The committed real PyTorch trace (fixtures/pytorch, recorded by
//! `record_trace.py` beside it from a real CPU training run): call trees,
//! self time, and per-op energy on a model of energyd's estimated source.

use attribution::calltree::{CallForest, CallTreeOptions, NodeKind, PythonFrames, STEP_OP_NAME};
use attribution::optable::{OpTable, RollupKind};
use attribution::spanfile::{parse_csv, read_span_file, ClockOption, SpanFile, SpanFileOptions};
use attribution::{
    attribute_spans, domain_share, kernel_energies, process_share, ActivitySeries,
    AttributionInterval, EnergySeries, IdlePower, KernelConfig, KernelSpan, MachineActivity,
    ProcessEnergy, ProcessShareConfig, SeriesMeta,
};
use rand::{Rng, SeedableRng};
use shared::protocol::{Breakdown, DomainShare};
use shared::source::{ReadingKind, SourceInfo, SourceKind};
use shared::{Domain, MonotonicNs, Provenance, SourceId};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pytorch")
        .join(name)
}

/// The trace with its own times (no clock conversion: only durations matter).
fn trace() -> SpanFile {
    let options = SpanFileOptions {
        clock: ClockOption::OffsetNs(0),
        ..SpanFileOptions::default()
    };
    read_span_file(&fixture("mlp_train_trace.json.gz"), &options).expect("fixture reads")
}

/// PyTorch's own `key_averages()` of the same run: name → (count, self µs, total µs).
fn pytorch_averages() -> HashMap<String, (u64, f64, f64)> {
    let text = std::fs::read_to_string(fixture("mlp_train_key_averages.json")).unwrap();
    let rows: serde_json::Value = serde_json::from_str(&text).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                (
                    r["count"].as_u64().unwrap(),
                    r["self_cpu_us"].as_f64().unwrap(),
                    r["total_cpu_us"].as_f64().unwrap(),
                ),
            )
        })
        .collect()
}

#[test]
fn leaves_partition_the_traced_busy_time() {
    let file = trace();
    let forest = CallForest::build(&file, &CallTreeOptions::default());
    assert_eq!(forest.clipped_spans, 0, "a real trace nests cleanly");
    // The busy time, computed without the tree: the union of the
    // intervals of every operator and annotation of the thread.
    let category = |s: &attribution::spanfile::FileSpan| {
        s.category.map(|c| file.categories[c as usize].as_str())
    };
    let mut intervals: Vec<(u64, u64)> = file
        .spans
        .iter()
        .filter(|s| matches!(category(s), Some("cpu_op" | "user_annotation")))
        .map(|s| (s.start.0, s.end.0))
        .collect();
    intervals.sort_unstable();
    let mut union = 0u64;
    let mut reach = 0u64;
    for (a, b) in intervals {
        if b > reach {
            union += b - a.max(reach);
            reach = b;
        }
    }
    assert_eq!(forest.threads.len(), 1);
    assert_eq!(forest.cpu_busy_ns(), union);
    assert_eq!(forest.self_ns_total(), union);
    let segments: u64 = forest
        .segments
        .iter()
        .map(|s| s.end.saturating_sub(s.start))
        .sum();
    assert_eq!(segments, union);
    for w in forest.segments.windows(2) {
        assert!(w[0].end <= w[1].start, "segments overlap: {w:?}");
    }
    // Every span is in the tree but the profiler's whole-trace marker and
    // the Python frames other than modules.
    let modules = forest
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Module)
        .count();
    assert_eq!(
        modules,
        4 * 7,
        "Sequential, 3 Linear, 2 ReLU, MSELoss per step"
    );
    assert!(forest.excluded_spans > 1000, "python frames left out");
}

#[test]
fn operator_self_and_total_times_match_pytorchs_own_tables() {
    let file = trace();
    // Without Python frames, as PyTorch's key_averages counts.
    let forest = CallForest::build(
        &file,
        &CallTreeOptions {
            python_frames: PythonFrames::None,
        },
    );
    let ours: HashMap<String, _> = forest
        .op_times()
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    let theirs = pytorch_averages();
    let mut compared = 0;
    for (name, &(count, self_us, total_us)) in &theirs {
        let Some(row) = ours.get(name) else {
            continue;
        };
        if row.kind != NodeKind::Op {
            // PyTorch's self time of annotations is no partition: its
            // ProfilerStep* self time in this very run is negative.
            continue;
        }
        compared += 1;
        // Rounding of µs with three decimals to ns: a ns per instance.
        let tolerance_us = 0.002 * count as f64 + 0.001;
        assert!(
            (row.self_ns as f64 / 1e3 - self_us).abs() <= tolerance_us,
            "{name}: self {} µs, PyTorch {self_us} µs",
            row.self_ns as f64 / 1e3
        );
        // PyTorch counts a recursive op's instances and totals its own way
        // (here `aten::div_` inside `aten::div_`: 4 of our 8 instances,
        // same total; `aten::mse_loss_backward`: same count, inner total
        // added again). We count every instance and total the outermost.
        // Where nothing recurses, all agree.
        let recursive = forest.nodes.iter().enumerate().any(|(i, n)| {
            forest.op_names[n.op as usize] == *name && forest.has_ancestor_op(i, n.op)
        });
        if !recursive {
            assert_eq!(row.count, count, "{name}");
            assert!(
                (row.total_ns as f64 / 1e3 - total_us).abs() <= tolerance_us,
                "{name}: total {} µs, PyTorch {total_us} µs",
                row.total_ns as f64 / 1e3
            );
        }
    }
    assert!(compared >= 40, "only {compared} ops compared");
    assert!(theirs["ProfilerStep*"].1 < 0.0, "see the comment above");
    // The GEMMs hold the largest share of the self time.
    let gemm = ours["aten::mm"].self_ns + ours["aten::addmm"].self_ns;
    let busy = forest.cpu_busy_ns();
    assert!(gemm as f64 / busy as f64 > 0.3, "{gemm} of {busy}");
    let largest_other = ours
        .values()
        .filter(|r| r.name != "aten::mm" && r.name != "aten::addmm")
        .map(|r| r.self_ns)
        .max()
        .unwrap();
    assert!(ours["aten::mm"].self_ns > 2 * largest_other);
    assert_eq!(ours[STEP_OP_NAME].count, 4);
}

/// energyd's estimated CPU source (sampling/src/estimated.rs), modelled:
/// `E(t) = idle_w × cpus × t + dynamic_w × busy CPU-seconds`, the busy time
/// read from a /proc/stat that counts whole 10 ms ticks, sampled every
/// 10 ms; the process's CPU time from task-clock (to the ns).
const TICK_NS: u64 = 10_000_000;
const CPUS: f64 = 2.0;
const IDLE_W_PER_CPU: f64 = 0.74;
const DYNAMIC_W: f64 = 3.5 - 0.74;

fn estimated_cpu_source() -> SourceInfo {
    SourceInfo {
        id: SourceId(0),
        name: "estimated-cpu (2 cpus)".to_owned(),
        domain: Domain::Cpu,
        kind: SourceKind::EstimatedCpu,
        provenance: Provenance::Estimated,
        reading: ReadingKind::CumulativeEnergy,
        period_ns: TICK_NS,
        resolution_j: DYNAMIC_W * TICK_NS as f64 * 1e-9,
        update_period_ns: TICK_NS,
    }
}

/// The trace's spans replayed `until` ns of a longer training: each replay
/// of the four profiled steps stretched by a seeded factor (0.7–1.3) and
/// followed by a 0–3 ms pause, as a run of many steps looks.
fn replay(file: &SpanFile, start: u64, until: u64, seed: u64) -> SpanFile {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let kept: Vec<_> = file.spans.iter().filter(|s| s.pid.is_some()).collect();
    let t0 = kept.iter().map(|s| s.start.0).min().unwrap();
    let t1 = kept.iter().map(|s| s.end.0).max().unwrap();
    let mut out = SpanFile {
        spans: Vec::new(),
        ..file.clone()
    };
    let mut now = start;
    while now < until {
        let stretch: f64 = rng.gen_range(0.7..1.3);
        let at = |t: u64| now + ((t - t0) as f64 * stretch).round() as u64;
        for s in &kept {
            let mut r = **s;
            r.start = MonotonicNs(at(s.start.0));
            r.end = MonotonicNs(at(s.end.0));
            out.spans.push(r);
        }
        now = at(t1) + rng.gen_range(0..3_000_000u64);
    }
    out
}

#[test]
fn energy_shares_follow_self_time_shares_on_the_estimated_source() {
    let origin = 1_000_000_000u64;
    // Half a second of idle history first (the idle power estimate).
    let from = origin + 500_000_000;
    let run_ns = 5_000_000_000u64;
    let file = replay(&trace(), from, from + run_ns, 18);
    let forest = CallForest::build(&file, &CallTreeOptions::default());
    let to = file.time_range().unwrap().1 .0 + 50_000_000;
    let end = to + 100_000_000;

    // Busy ns per 1 ms cell: the process (its self segments partition its
    // busy time) and another process's background load, piecewise
    // constant over 50 ms blocks.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let grid = 1_000_000u64;
    let n = ((end - origin) / grid) as usize + 1;
    let mut process_busy = vec![0u64; n];
    for seg in &forest.segments {
        let mut t = seg.start.0;
        while t < seg.end.0 {
            let cell = ((t - origin) / grid) as usize;
            let until = (origin + (cell as u64 + 1) * grid).min(seg.end.0);
            process_busy[cell] += until - t;
            t = until;
        }
    }
    let mut background = vec![0u64; n];
    let mut level = 0.0;
    for (i, b) in background.iter_mut().enumerate() {
        if i % 50 == 0 {
            level = rng.gen_range(0.0..0.3);
        }
        *b = (level * grid as f64) as u64;
    }
    let (mut energy, mut process_cpu, mut busy, mut capacity) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut proc_cum, mut machine_cum) = (0u64, 0u64);
    for i in 0..n {
        let t = origin + i as u64 * grid;
        if i > 0 {
            proc_cum += process_busy[i - 1];
            machine_cum += process_busy[i - 1] + background[i - 1];
        }
        if (t - origin) % TICK_NS == 0 {
            let ticks_busy = machine_cum / TICK_NS * TICK_NS;
            let elapsed = (t - origin) as f64 * 1e-9;
            let joules = IDLE_W_PER_CPU * CPUS * elapsed + DYNAMIC_W * ticks_busy as f64 * 1e-9;
            energy.push((MonotonicNs(t), joules));
            process_cpu.push((MonotonicNs(t), proc_cum as f64));
            busy.push((MonotonicNs(t), ticks_busy as f64));
            capacity.push((MonotonicNs(t), CPUS * (t - origin) as f64));
        }
    }
    let source = estimated_cpu_source();
    let series = EnergySeries::new(&energy, SeriesMeta::from(&source)).unwrap();
    let machine = MachineActivity {
        busy: ActivitySeries::new("machine busy", &busy).unwrap(),
        capacity: ActivitySeries::new("machine capacity", &capacity).unwrap(),
    };
    let process = ActivitySeries::new("process", &process_cpu).unwrap();
    // What energyd does for this source (energyd/src/breakdown.rs): the
    // process share, then its per-type fit over the submitted segments.
    let config = ProcessShareConfig {
        activity_resolution_ns: 1_000.0,
        idle_power: IdlePower::FromHistory { percentile: 5.0 },
        ..ProcessShareConfig::default()
    };
    let (from, to) = (MonotonicNs(from), MonotonicNs(to));
    let ps = process_share(&series, &machine, &process, from, to, &config).unwrap();
    let batch = forest.segments_batch(Some(1), 1);
    let spans: Vec<KernelSpan> = batch
        .spans
        .iter()
        .map(|s| KernelSpan {
            name: s.name,
            start: s.start,
            end: s.end,
            tid: s.tid,
        })
        .collect();
    let ka = attribute_spans(
        &series,
        &spans,
        batch.names.len(),
        &AttributionInterval::new(from, to),
        &ProcessEnergy::from(&ps),
        &KernelConfig::default(),
    )
    .unwrap();
    let breakdown = Breakdown {
        pid: 1,
        from,
        to,
        domains: vec![domain_share(source.id, &ps, Some(&ka))],
        kernels: kernel_energies(&ka, &batch.names),
        notes: Vec::new(),
    };
    let table = OpTable::build(&forest, &breakdown, &[source]);
    assert_eq!(table.provenance, Provenance::Estimated);

    // The truth of this source: the process's CPU time × the dynamic power.
    let process_busy_ns = forest.cpu_busy_ns();
    assert_eq!(process_busy_ns, process_busy.iter().sum::<u64>());
    let truth_j = DYNAMIC_W * process_busy_ns as f64 * 1e-9;
    assert!(
        (table.attributed_j - truth_j).abs() <= 3.0 * ps.uncertainty_j + 0.01 * truth_j,
        "ops {} J, truth {truth_j} J ± {}",
        table.attributed_j,
        ps.uncertainty_j
    );
    let mut report = String::new();
    for r in &table.rows {
        let e = r.self_j.expect("every CPU op has a figure");
        let e_share = r.energy_share.unwrap();
        let t_share = r.self_ns as f64 / process_busy_ns as f64;
        let op_truth = DYNAMIC_W * r.self_ns as f64 * 1e-9;
        report.push_str(&format!(
            "{:<50} time {:>6.2}% energy {:>6.2}% {:.4} J ± {:.4} (truth {:.4} J)\n",
            r.name,
            t_share * 100.0,
            e_share * 100.0,
            e,
            r.self_uncertainty_j,
            op_truth
        ));
        // Shares follow self-time shares, and each figure is the truth
        // within its reported uncertainty.
        assert!((e_share - t_share).abs() < 1e-9, "{report}");
        assert!(
            (e - op_truth).abs() <= 3.0 * r.self_uncertainty_j + 0.01 * op_truth,
            "{report}"
        );
        // No op gets more than its time explains: its implied power is at
        // most what one busy CPU draws on this source.
        let watts = e / (r.self_ns as f64 * 1e-9);
        assert!(
            watts <= DYNAMIC_W * 1.02 + 3.0 * r.self_uncertainty_j / (r.self_ns as f64 * 1e-9),
            "{} at {watts} W\n{report}",
            r.name
        );
    }
    // The GEMMs dominate as their time does.
    let energy_of = |name: &str| {
        table
            .rows
            .iter()
            .find(|r| r.name == name)
            .unwrap()
            .self_j
            .unwrap()
    };
    let gemm = energy_of("aten::mm") + energy_of("aten::addmm");
    assert!(gemm / table.attributed_j > 0.3, "{report}");
    assert_eq!(table.rows[0].name, "aten::mm", "{report}");
    assert!(table.busy_time_explained() > 0.999);
    // The inclusive figure of all steps is everything the ops were given.
    let steps = table.rows.iter().find(|r| r.name == STEP_OP_NAME).unwrap();
    assert!((steps.total_j - table.attributed_j).abs() <= 1e-9 * table.attributed_j);
    // Per step, per label, per module.
    let step_rollups = table
        .rollups
        .iter()
        .filter(|r| r.kind == RollupKind::Step)
        .count();
    assert_eq!(step_rollups, 4, "ProfilerStep#2..#5, each over its replays");
    let forward = table
        .rollups
        .iter()
        .find(|r| r.kind == RollupKind::Label && r.name == "forward")
        .unwrap();
    let linear1 = table
        .rollups
        .iter()
        .find(|r| r.kind == RollupKind::Module && r.name == "nn.Module: Linear_1")
        .unwrap();
    assert!(forward.total_j > linear1.total_j && linear1.total_j > 0.0);
}

#[test]
fn nested_csv_spans_are_attributed_by_self_time_and_tables_read_well() {
    // A training loop written by hand to CSV: steps > labels > ops.
    let mut csv = String::from("name,start_ns,end_ns,pid,tid\n");
    let mut t = 1_000u64;
    for step in 0..3 {
        let s0 = t;
        csv.push_str(&format!("forward,{},{},7,7\n", t, t + 600));
        csv.push_str(&format!("linear,{},{},7,7\n", t + 10, t + 500));
        csv.push_str(&format!("gemm,{},{},7,7\n", t + 20, t + 480));
        csv.push_str(&format!("relu,{},{},7,7\n", t + 510, t + 590));
        csv.push_str(&format!("backward,{},{},7,7\n", t + 600, t + 1_000));
        csv.push_str(&format!("gemm,{},{},7,7\n", t + 610, t + 990));
        t += 1_100;
        csv.push_str(&format!("ProfilerStep#{step},{s0},{t},7,7\n"));
    }
    let file = parse_csv(&csv, Path::new("nested.csv"), &SpanFileOptions::default()).unwrap();
    let forest = CallForest::build(&file, &CallTreeOptions::default());
    assert_eq!(forest.cpu_busy_ns(), 3 * 1_100);
    assert_eq!(forest.self_ns_total(), 3 * 1_100);
    // `ProfilerStep#N` spans are steps in CSV files too: one op, and
    // roll-ups per step.
    let times: HashMap<String, _> = forest
        .op_times()
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    assert_eq!(times["gemm"].self_ns, 3 * (460 + 380));
    assert_eq!(times["linear"].self_ns, 3 * (490 - 460));
    assert_eq!(times["forward"].total_ns, 3 * 600);
    assert_eq!(times[STEP_OP_NAME].self_ns, 3 * 100);
    assert_eq!(times[STEP_OP_NAME].count, 3);

    // energyd's answer for the process: 3.3 µJ of dynamic energy (1 W over
    // the 3.3 µs busy), ± 10 %, on a measured package.
    let mut source = estimated_cpu_source();
    source.domain = Domain::Package { index: 0 };
    source.provenance = Provenance::Measured;
    let breakdown = Breakdown {
        pid: 7,
        from: MonotonicNs(1_000),
        to: MonotonicNs(4_300),
        domains: vec![DomainShare {
            source: source.id,
            machine_j: 1e-5,
            process_j: 4e-6,
            process_dynamic_j: 3.3e-6,
            activity_share: 1.0,
            unattributed_j: 4e-6,
            uncertainty_j: 3.3e-7,
            provenance: Provenance::Measured,
        }],
        kernels: Vec::new(),
        notes: Vec::new(),
    };
    let table = OpTable::build(&forest, &breakdown, &[source]);
    assert_eq!(table.rows[0].name, "gemm", "largest self energy first");
    let row = |name: &str| table.rows.iter().find(|r| r.name == name).unwrap();
    let gemm = row("gemm");
    assert!((gemm.self_j.unwrap() - 2.52e-6).abs() < 1e-15);
    // σ: its share of the process's uncertainty, and on a measured source
    // 30 % for how far one op's power may sit from the average.
    let expect = ((0.1 * 2.52e-6f64).powi(2) + (0.3 * 2.52e-6f64).powi(2)).sqrt();
    assert!((gemm.self_uncertainty_j - expect).abs() < 1e-15);
    let forward = row("forward");
    assert!((forward.total_j - 1.8e-6).abs() < 1e-15);
    assert_eq!(forward.unknown_ns, 0);
    // The process's share is added linearly over ops, the model term in
    // quadrature: forward's subtree holds forward, linear, gemm, relu.
    let parts = [3.0 * 10.0 + 3.0 * 20.0, 3.0 * 30.0, 3.0 * 460.0, 3.0 * 80.0];
    let shared_part: f64 = parts.iter().map(|ns| 0.1 * ns * 1e-9).sum();
    let model: f64 = parts.iter().map(|ns| (0.3 * ns * 1e-9f64).powi(2)).sum();
    assert!((forward.total_uncertainty_j - (shared_part.powi(2) + model).sqrt()).abs() < 1e-15);
    let text = table.render_text(2);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[1].trim_start().starts_with("gemm"), "{text}");
    assert!(text.contains("rest (4 ops)"), "{text}");
    assert!(text.contains("measured"), "{text}");
    let json = table.to_json();
    assert_eq!(json["ops"].as_array().unwrap().len(), 6, "all rows in JSON");
    assert_eq!(json["provenance"], "measured");
    let steps: Vec<_> = table
        .rollups
        .iter()
        .filter(|r| r.kind == RollupKind::Step)
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(
        steps,
        ["ProfilerStep#0", "ProfilerStep#1", "ProfilerStep#2"]
    );
}
