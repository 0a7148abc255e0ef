//! One-shot client for the integration tests, run under other uids.
//!
//! `probe-client SOCKET register PID` | `breakdown PID` | `unregister PID`
//! | `spans PID` | `energy` | `status`. Prints `ok` or `error CODE message` on stdout and
//! exits 0 either way (the tests read the answer); exits 2 on usage or
//! connection errors.

use shared::client::{Client, ClientError};
use shared::MonotonicNs;
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!(
            "usage: probe-client SOCKET (register|breakdown|unregister|spans) PID | energy | status"
        );
        std::process::exit(2);
    }
    let mut client = match Client::connect(Path::new(&args[1]), "probe-client") {
        Ok(c) => c,
        Err(e) => {
            eprintln!("connect: {e}");
            std::process::exit(2);
        }
    };
    let pid = || args.get(3).and_then(|p| p.parse::<u32>().ok()).unwrap_or(0);
    let result: Result<String, ClientError> = match args[2].as_str() {
        "register" => client.register_process(pid(), true).map(|_| "ok".into()),
        "unregister" => client.unregister_process(pid()).map(|_| "ok".into()),
        "breakdown" => client.breakdown(pid(), None, None).map(|b| {
            let total: f64 = b.domains.iter().map(|d| d.process_j).sum();
            format!("ok {total}")
        }),
        "energy" => {
            let now = MonotonicNs::now();
            client
                .energy(now.saturating_sub_ns(1_000_000_000), now)
                .map(|e| {
                    let total: f64 = e.sources.iter().map(|s| s.joules).sum();
                    format!("ok {} {} {total}", e.from.0, e.to.0)
                })
        }
        "spans" => {
            // 100 one-millisecond spans of kernel `probe` over the last 200 ms.
            let now = MonotonicNs::now();
            let mut batch = shared::protocol::SpanBatch::default();
            for i in 0..100u64 {
                let start = now.saturating_sub_ns(200_000_000 - i * 2_000_000);
                batch.push(
                    "probe",
                    start,
                    MonotonicNs(start.0 + 1_000_000),
                    pid(),
                    pid(),
                );
            }
            client
                .submit_spans(&batch)
                .map(|(accepted, rejected)| format!("ok {accepted} {rejected}"))
        }
        "status" => client
            .status()
            .map(|s| format!("ok {}", s.tracked_processes)),
        other => {
            eprintln!("unknown action {other}");
            std::process::exit(2);
        }
    };
    match result {
        Ok(line) => println!("{line}"),
        Err(ClientError::Daemon { code, message }) => println!("error {code:?} {message}"),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    }
}
