//! What pricing a network costs in process, against the transport alone of
//! the co-process it replaced (`bench/pricing`, README.pricing.md).
//!
//! Prices N networks (MLPs and ResNets over the default search space's
//! widths, depths, activations, norms and batch sizes, on adult's shape)
//! with a calibration (a synthetic one fitted over every kernel kind, or
//! `--calibration FILE`), and times:
//! - `in_process`: `Calibration::predict_network` (plan + price), per
//!   network;
//! - `pipe_echo`: what the old `calibration predict` co-process paid before
//!   any pricing: the network as one JSON line written to a child (`cat`)
//!   and read back, per network (a lower bound of the old cost: the real
//!   co-process also parsed, priced and answered).
//!
//! Last line: `price_us=… pipe_echo_us=… speedup=… networks=…`.

use energy_model::model::{FitShape, KernelModel, Observation};
use energy_model::{Calibration, MachineFingerprint, NetworkRun, FORMAT_VERSION};
use nn_plan::{
    Activation, Backbone, DatasetShape, KernelKind, ModelSpec, Norm, OptimizerKind, RunShape,
};
use shared::Provenance;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

fn synthetic_calibration() -> Calibration {
    let kernels = KernelKind::ALL
        .iter()
        .map(|k| {
            let mut obs = Vec::new();
            for b in [16u64, 64, 256, 1024] {
                for (i, o) in [(8u64, 128u64), (128, 16), (64, 64), (256, 512)] {
                    let work = (b * i * o) as f64;
                    obs.push(Observation {
                        kernel: k.as_str().into(),
                        shape: FitShape {
                            batch: b,
                            in_width: i,
                            out_width: o,
                        },
                        threads: 1,
                        calls: 100,
                        wall_time_per_call_ns: 2000.0 + 0.5 * work,
                        cpu_time_per_call_ns: 2000.0 + 0.5 * work,
                        power_w: 8.0,
                    });
                }
            }
            KernelModel::fit(k.as_str(), 1, &obs).expect("fit")
        })
        .collect();
    Calibration {
        format_version: FORMAT_VERSION,
        created_by: "bench/pricing".into(),
        created_at_unix_s: 0,
        provenance: Provenance::Estimated,
        notes: vec!["synthetic".into()],
        machine: MachineFingerprint::probe(&[]).expect("fingerprint"),
        kernels,
        overheads: Vec::new(),
    }
}

fn networks(n: usize) -> Vec<NetworkRun> {
    let widths = [16usize, 32, 64, 128, 256, 512];
    let acts = [Activation::Relu, Activation::Gelu, Activation::Silu];
    let norms = [Norm::None, Norm::Batch, Norm::Layer];
    (0..n)
        .map(|i| {
            let depth = 1 + i % 4;
            let w: Vec<usize> = (0..depth)
                .map(|d| widths[(i + 3 * d) % widths.len()])
                .collect();
            let backbone = if i % 3 == 0 {
                Backbone::Resnet {
                    d_main: w[0],
                    d_hidden: w.clone(),
                }
            } else {
                Backbone::Mlp { widths: w }
            };
            NetworkRun {
                model: ModelSpec {
                    backbone,
                    activation: acts[i % acts.len()],
                    dropout: if i % 2 == 0 { 0.1 } else { 0.0 },
                    norm: norms[(i / 2) % norms.len()],
                },
                data: DatasetShape {
                    inputs: 108,
                    outputs: 2,
                    regression: false,
                    train_rows: 31_258,
                    val_rows: 7_815,
                    test_rows: 9_769,
                },
                run: RunShape {
                    optimizer: OptimizerKind::AdamW,
                    batch_size: [64, 128, 256, 512][i % 4],
                    eval_batch_size: 4096,
                    epochs: 20,
                    threads: 1,
                },
            }
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let calibration = match args.iter().position(|a| a == "--calibration") {
        Some(i) => Calibration::load_unchecked(std::path::Path::new(&args[i + 1])).expect("load"),
        None => synthetic_calibration(),
    };
    let n = 2000;
    let nets = networks(n);
    // Warm-up, then timed.
    let mut sink = 0.0;
    for net in nets.iter().take(50) {
        sink += calibration.predict_network(net).expect("priced").training_j;
    }
    let t = Instant::now();
    for net in &nets {
        sink += calibration.predict_network(net).expect("priced").training_j;
    }
    let price_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;

    let mut child = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("cat");
    let mut to = child.stdin.take().expect("stdin");
    let mut from = BufReader::new(child.stdout.take().expect("stdout"));
    let lines: Vec<String> = nets
        .iter()
        .map(|n| serde_json::to_string(n).expect("json"))
        .collect();
    let mut echo = String::new();
    let t = Instant::now();
    for line in &lines {
        writeln!(to, "{line}").expect("write");
        to.flush().expect("flush");
        echo.clear();
        from.read_line(&mut echo).expect("read");
        let back: NetworkRun = serde_json::from_str(echo.trim()).expect("parse");
        sink += back.run.epochs as f64;
    }
    let echo_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    drop(to);
    let _ = child.wait();

    println!(
        "networks priced: {n} (MLP and ResNet, 1-4 layers of 16-512, adult's shape, 20 epochs)"
    );
    println!("in process (plan + price): {price_us:.1} us per network");
    println!("co-process transport alone (JSON line through a pipe to `cat` and back): {echo_us:.1} us per network");
    println!("(checksum {sink:.3e})");
    println!(
        "price_us={price_us:.1} pipe_echo_us={echo_us:.1} speedup={:.1} networks={n}",
        echo_us / price_us
    );
}
