//! The client half of `bench/sampler`: asks a running energyd for its
//! sources' achieved sampling rate, then measures query latency over the
//! socket for energy over the last second.
//!
//! ```text
//! cargo run --release -p sampling --example sampler_bench_client -- SOCKET [QUERIES]
//! ```
//!
//! Prints `key=value` lines: `sources=… rate_hz_mean=… rate_hz_min=…
//! overruns=…` and `queries=… query_p50_us=… query_p99_us=…
//! query_max_us=…`. Latency is the wall time of one blocking
//! `Client::energy` round trip (request framed, sent, answered, decoded),
//! measured with CLOCK_MONOTONIC around the call. Run it as root (or as a
//! member of the privileged group): unprivileged peers are rate-limited.

use shared::client::Client;
use shared::MonotonicNs;
use std::path::PathBuf;
use std::process::ExitCode;

/// Queries before timing starts (connection and caches warm).
const WARMUP_QUERIES: usize = 200;

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let n = sorted.len();
    sorted[((p * n as f64).ceil() as usize).clamp(1, n) - 1]
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(socket) = args.first().map(PathBuf::from) else {
        eprintln!("usage: sampler_bench_client SOCKET [QUERIES=20000]");
        return ExitCode::from(2);
    };
    let queries: usize = match args.get(1).map(|s| s.parse()) {
        None => 20_000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("QUERIES must be a positive integer");
            return ExitCode::from(2);
        }
    };
    let mut client = match Client::connect(&socket, "bench/sampler") {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot connect to energyd at {}: {e}", socket.display());
            return ExitCode::FAILURE;
        }
    };
    if !client.peer.privileged {
        eprintln!("warning: not a privileged peer; queries are rate-limited and coarsened");
    }
    let status = match client.status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("status failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rates: Vec<f64> = status.sources.iter().map(|s| s.stats.rate_hz).collect();
    if rates.is_empty() {
        eprintln!("energyd has no sources");
        return ExitCode::FAILURE;
    }
    let overruns: u64 = status.sources.iter().map(|s| s.stats.overruns).sum();
    println!(
        "sources={} rate_hz_mean={:.1} rate_hz_min={:.1} overruns={overruns}",
        rates.len(),
        rates.iter().sum::<f64>() / rates.len() as f64,
        rates.iter().copied().fold(f64::INFINITY, f64::min),
    );

    let mut latencies_ns = Vec::with_capacity(queries);
    for i in 0..WARMUP_QUERIES + queries {
        let now = MonotonicNs::now();
        let from = now.saturating_sub_ns(1_000_000_000);
        let before = MonotonicNs::now();
        let answer = client.energy(from, now);
        let after = MonotonicNs::now();
        match answer {
            Ok(report) if !report.sources.is_empty() => {}
            Ok(_) => {
                eprintln!("energy answer without sources");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("energy query {i} failed: {e}");
                return ExitCode::FAILURE;
            }
        }
        if i >= WARMUP_QUERIES {
            latencies_ns.push(after.saturating_sub(before));
        }
    }
    latencies_ns.sort_unstable();
    println!(
        "queries={} query_p50_us={:.1} query_p99_us={:.1} query_max_us={:.1}",
        latencies_ns.len(),
        percentile(&latencies_ns, 0.50) as f64 / 1e3,
        percentile(&latencies_ns, 0.99) as f64 / 1e3,
        latencies_ns[latencies_ns.len() - 1] as f64 / 1e3,
    );
    ExitCode::SUCCESS
}
