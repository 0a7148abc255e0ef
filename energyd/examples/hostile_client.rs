//! One hostile (or victim) client for `bench/hostile`. Bounded loops, the
//! local socket only.
//!
//! ```text
//! hostile_client SOCKET exhaust N SECONDS      # hold up to N idle connections
//! hostile_client SOCKET flood PROCS SPANS      # PROCS idle children, SPANS spans each
//! hostile_client SOCKET breakdowns N SPANS     # N concurrent breakdowns over SPANS spans
//! hostile_client SOCKET madeup SECONDS         # 1 ms spans every 10 ms on an idle child
//! hostile_client SOCKET victim SECONDS         # connect + Status every 50 ms, timed
//! ```
//! Each prints one `key=value …` line.

use shared::client::{Client, ClientError};
use shared::protocol::SpanBatch;
use shared::MonotonicNs;
use std::path::Path;
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

fn idle_children(n: usize) -> Vec<Child> {
    (0..n)
        .filter_map(|_| Command::new("sleep").arg("600").spawn().ok())
        .collect()
}

fn spans_for(pid: u32, n: usize) -> SpanBatch {
    let now = MonotonicNs::now().as_ns();
    let mut b = SpanBatch::default();
    for i in 0..n as u64 {
        let end = now.saturating_sub(i * 1_000);
        b.push(
            "flood",
            MonotonicNs(end.saturating_sub(500)),
            MonotonicNs(end),
            pid,
            pid,
        );
    }
    b
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: hostile_client SOCKET MODE ARGS…");
        return ExitCode::from(2);
    }
    let socket = Path::new(&args[1]);
    let num = |i: usize| -> u64 { args.get(i).and_then(|s| s.parse().ok()).unwrap_or(0) };
    match args[2].as_str() {
        "exhaust" => {
            let (n, secs) = (num(3) as usize, num(4));
            let mut held = Vec::new();
            let mut refused = 0;
            let mut failed = 0;
            for _ in 0..n {
                match Client::connect_with_timeout(socket, "exhaust", Duration::from_secs(5)) {
                    Ok(c) => held.push(c),
                    Err(e) if e.retry_later() => refused += 1,
                    Err(_) => failed += 1,
                }
            }
            println!(
                "mode=exhaust held={} refused={refused} failed={failed}",
                held.len()
            );
            std::thread::sleep(Duration::from_secs(secs));
        }
        "flood" => {
            let (procs, spans) = (num(3) as usize, num(4) as usize);
            let kids = idle_children(procs);
            let mut c = match Client::connect(socket, "flood") {
                Ok(c) => c,
                Err(e) => {
                    println!("mode=flood error={e:?}");
                    return ExitCode::FAILURE;
                }
            };
            let (mut accepted, mut rejected, mut limited) = (0u64, 0u64, 0u64);
            for k in &kids {
                let _ = c.register_process(k.id(), false);
                let batch = spans_for(k.id(), spans);
                for chunk in batch.spans.chunks(shared::client::SPANS_PER_FRAME) {
                    let part = SpanBatch {
                        names: batch.names.clone(),
                        spans: chunk.to_vec(),
                    };
                    match c.submit_spans(&part) {
                        Ok((a, r)) => {
                            accepted += a;
                            rejected += r;
                        }
                        Err(e) if e.retry_later() => limited += 1,
                        Err(_) => break,
                    }
                }
            }
            println!("mode=flood procs={procs} accepted={accepted} rejected={rejected} rate_limited={limited}");
            for mut k in kids {
                let _ = k.kill();
                let _ = k.wait();
            }
        }
        "breakdowns" => {
            let (n, spans) = (num(3) as usize, num(4) as usize);
            let mut kids = idle_children(1);
            let pid = kids[0].id();
            if let Ok(mut c) = Client::connect(socket, "breakdowns") {
                let _ = c.register_process(pid, false);
                let _ = c.submit_spans(&spans_for(pid, spans));
            }
            let started = Instant::now();
            let results: Vec<Result<(), ClientError>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..n)
                    .map(|_| {
                        s.spawn(move || {
                            let mut c = Client::connect(socket, "breakdown")?;
                            c.breakdown(pid, None, None).map(|_| ())
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or(Err(ClientError::Closed)))
                    .collect()
            });
            let ok = results.iter().filter(|r| r.is_ok()).count();
            let refused = results
                .iter()
                .filter(|r| matches!(r, Err(e) if e.retry_later()))
                .count();
            println!(
                "mode=breakdowns n={n} spans={spans} ok={ok} refused={refused} wall_s={:.2}",
                started.elapsed().as_secs_f64()
            );
            for k in &mut kids {
                let _ = k.kill();
                let _ = k.wait();
            }
        }
        "madeup" => {
            let secs = num(3);
            let mut kids = idle_children(1);
            let pid = kids[0].id();
            let mut c = Client::connect(socket, "madeup").expect("connect");
            let _ = c.register_process(pid, false);
            let start = MonotonicNs::now();
            std::thread::sleep(Duration::from_secs(secs));
            let mut b = SpanBatch::default();
            let mut t = start.as_ns();
            while t + 1_000_000 < MonotonicNs::now().as_ns() {
                b.push(
                    "probe",
                    MonotonicNs(t),
                    MonotonicNs(t + 1_000_000),
                    pid,
                    pid,
                );
                t += 10_000_000;
            }
            let _ = c.submit_spans(&b);
            match c.breakdown(pid, Some(start), None) {
                Ok(bd) => {
                    let with_energy = bd.kernels.iter().filter(|k| k.energy_j.is_some()).count();
                    let figures = bd.notes.iter().filter(|n| watts_given(n)).count();
                    println!(
                        "mode=madeup spans={} kernels_with_energy={with_energy} notes_with_watts={figures}",
                        b.spans.len()
                    );
                    // What was given back, so a reader can judge it.
                    for n in &bd.notes {
                        println!("  note: {n}");
                    }
                }
                Err(e) => println!("mode=madeup error={e}"),
            }
            for k in &mut kids {
                let _ = k.kill();
                let _ = k.wait();
            }
        }
        "victim" => {
            let secs = num(3);
            let end = Instant::now() + Duration::from_secs(secs);
            let mut lat = Vec::new();
            let mut failures = 0;
            while Instant::now() < end {
                let t = Instant::now();
                let r = Client::connect_with_timeout(socket, "victim", Duration::from_secs(10))
                    .and_then(|mut c| c.status().map(|_| ()));
                match r {
                    Ok(()) => lat.push(t.elapsed().as_secs_f64() * 1e3),
                    Err(_) => failures += 1,
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            lat.sort_by(f64::total_cmp);
            let q = |p: f64| {
                lat.get(((p * lat.len() as f64) as usize).min(lat.len().saturating_sub(1)))
                    .copied()
                    .unwrap_or(f64::NAN)
            };
            println!(
                "mode=victim ok={} failures={failures} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
                lat.len(),
                q(0.5),
                q(0.99),
                lat.last().copied().unwrap_or(f64::NAN)
            );
        }
        other => {
            eprintln!("unknown mode {other}");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

/// Whether a note states a power figure: a number right before " W" (the
/// policy withholds numbers as `#`, so "idle # W" gives nothing away).
fn watts_given(note: &str) -> bool {
    note.match_indices(" W")
        .any(|(i, _)| note[..i].ends_with(|c: char| c.is_ascii_digit()))
}
