//! The Prometheus exporter end to end: energyd served in-process with the
//! exporter on a free loopback port, scraped over HTTP by a client and by
//! a real Prometheus server (Debian's `prometheus`, installed by `.ci/run`;
//! the test says SKIPPED when the binary is missing), whose PromQL
//! `rate()` over a simulated source's energy counter must give its power
//! within 2 %. The policy half: a coarse (default) exporter shows no
//! machine reading finer than the policy window and quantum, and no
//! process of a uid the operator did not list.

use energyd::config::Config;
use energyd::daemon;
use energyd::exporter::Exporter;
use energyd::policy::Caller;
use energyd::service::DaemonState;
use shared::protocol::{Request, Response};
use shared::MonotonicNs;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A simulated source at `watts`, sampled at full rate all the time (so
/// the counter a scrape reads is at most 1 ms old), and the exporter on a
/// free loopback port.
fn config(watts: f64, resolution: &str, extra: &str) -> String {
    format!(
        r#"
[sampling]
idle_period_ms = 0
[sources]
powercap_root = "/nonexistent"
msr_root = "/nonexistent"
nvml = false
[sources.simulated]
curve = {{ shape = "constant", watts = {watts} }}
[exporter]
enabled = true
listen = "127.0.0.1:0"
machine_resolution = "{resolution}"
{extra}
"#
    )
}

/// energyd served in-process (socket and exporter), stopped on drop.
struct Daemon {
    state: Arc<DaemonState>,
    metrics: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(config_text: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config::parse(config_text).expect("config");
        let socket = daemon::open_socket(&config, true, Some(dir.path().join("energyd.sock")))
            .expect("socket");
        let metrics_listener = daemon::open_exporter(&config)
            .expect("bind metrics")
            .expect("exporter enabled");
        let metrics = metrics_listener.local_addr().expect("address");
        let state = daemon::build_state(config, true).expect("state");
        let served = state.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime
                .block_on(daemon::serve_with_exporter(
                    socket,
                    Some(metrics_listener),
                    served,
                    async {
                        let _ = stopped.await;
                    },
                ))
                .expect("serve");
        });
        Daemon {
            state,
            metrics,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.metrics)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// GET `url`: (status, content type, body).
fn get(url: &str) -> (u16, String, String) {
    let mut response = agent().get(url).call().expect("GET");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response.body_mut().read_to_string().expect("body");
    (status, content_type, body)
}

/// The samples of a metrics text: `(name{labels}, value)`.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Waits (bounded) until `cond` holds.
fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what}: not reached in {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn metrics_are_served_and_bad_requests_get_errors_not_a_crash() {
    let daemon = Daemon::start(&config(25.0, "full", ""));
    std::thread::sleep(Duration::from_millis(100));
    let (status, content_type, body) = get(&daemon.url("/metrics"));
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    let energy: Vec<(String, f64)> = samples(&body)
        .into_iter()
        .filter(|(s, _)| {
            s.starts_with("energyd_source_energy_joules_total{")
                && s.contains("source=\"simulated\"")
        })
        .collect();
    assert_eq!(energy.len(), 1, "{body}");
    let (series, joules) = &energy[0];
    for label in [
        "source=\"simulated\"",
        "provenance=\"simulated\"",
        "reading=\"cumulative_energy\"",
        "kind=\"simulated\"",
        "domain=",
    ] {
        assert!(series.contains(label), "{series} lacks {label}");
    }
    assert!(*joules > 0.0, "{series} {joules}");
    for health in [
        "energyd_source_samples_total",
        "energyd_source_overruns_total",
        "energyd_source_sampling_rate_hertz",
        "energyd_source_coverage_ratio",
        "energyd_source_stuck",
    ] {
        assert!(body.contains(health), "{health} missing:\n{body}");
    }
    assert!(body.contains("energyd_exporter_coarse 0"), "{body}");

    assert_eq!(get(&daemon.url("/nope")).0, 404);
    assert_eq!(get(&daemon.url("/metrics/../etc")).0, 404);
    assert_eq!(get(&daemon.url("/")).0, 200);
    let post = agent()
        .post(daemon.url("/metrics"))
        .send_empty()
        .expect("POST");
    assert_eq!(post.status().as_u16(), 405);

    // Garbage instead of HTTP, and a connection that says nothing: the
    // server answers or closes; it keeps serving others.
    let mut raw = TcpStream::connect(daemon.metrics).expect("connect");
    raw.write_all(b"\x00\xffNOT HTTP AT ALL\r\n\r\n")
        .expect("write");
    raw.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer);
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let _silent = TcpStream::connect(daemon.metrics).expect("connect");
    let (status, _, again) = get(&daemon.url("/metrics"));
    assert_eq!(status, 200);
    let later = samples(&again)
        .into_iter()
        .find(|(s, _)| s == series)
        .map(|(_, v)| v)
        .expect("same series");
    assert!(
        later >= *joules,
        "a counter went back: {joules} then {later}"
    );
}

#[test]
fn a_coarse_exporter_shows_nothing_finer_than_the_policy() {
    // Default resolution (coarse), policy defaults (100 ms, 0.01 J); a
    // process of this uid is tracked, but no uid is listed for export.
    let daemon = Daemon::start(&config(37.0, "coarse", ""));
    let root = Caller {
        pid: 1,
        uid: 0,
        gid: 0,
        privileged: true,
    };
    let mut child = Command::new("sleep").arg("30").spawn().expect("sleep");
    match daemon.state.handle(
        &root,
        Request::RegisterProcess {
            pid: child.id(),
            include_children: false,
        },
    ) {
        Response::Registered { tracked: true, .. } => {}
        other => panic!("register: {other:?}"),
    }
    let exporter = Exporter::new(daemon.state.clone());
    let window_ns = 100_000_000;
    let quantum = 0.01;
    let mut seen: BTreeMap<u64, f64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let engine = &daemon.state.engine;
    let simulated = engine
        .sources()
        .into_iter()
        .find(|i| i.name == "simulated")
        .expect("the simulated source")
        .id;
    // The grid point a coarse counter is read at: the last one both `now`
    // and the source's history have passed.
    let grid_point = |now: MonotonicNs| {
        let newest = engine.latest(simulated).map_or(MonotonicNs(0), |(t, _)| t);
        now.min(newest).0 / window_ns
    };
    // Scrape until three grid points were seen, with pairs of scrapes read
    // at the same one.
    let mut same_window = 0;
    while same_window < 3 || seen.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "not enough scrapes within and across windows: {seen:?}"
        );
        let before = grid_point(MonotonicNs::now());
        let text = exporter.render(MonotonicNs::now());
        let after = grid_point(MonotonicNs::now());
        let all = samples(&text);
        assert!(
            !all.iter().any(|(s, _)| s.starts_with("energyd_process_")),
            "a process of an unlisted uid is exported:\n{text}"
        );
        // Every energy counter (both sources) is a whole number of quanta.
        for (series, joules) in all.iter().filter(|(s, _)| s.contains("_joules_total")) {
            let steps = joules / quantum;
            assert!(
                (steps - steps.round()).abs() < 1e-6,
                "{series} {joules} J is not a multiple of the {quantum} J quantum"
            );
        }
        let energy = all
            .iter()
            .find(|(s, _)| {
                s.starts_with("energyd_source_energy_joules_total{")
                    && s.contains("source=\"simulated\"")
            })
            .map(|(_, v)| *v)
            .expect("energy series");
        assert!(text.contains("energyd_exporter_coarse 1"));
        // Both only move forward, so equal ends mean the render read there.
        if before == after {
            if let Some(previous) = seen.insert(before, energy) {
                assert_eq!(
                    previous, energy,
                    "the counter moved within one policy window"
                );
                same_window += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(7));
    }
    // Across windows it advances, at the source's power.
    let values: Vec<f64> = seen.values().copied().collect();
    assert!(
        values.windows(2).all(|w| w[1] >= w[0]) && values[values.len() - 1] > values[0],
        "the counter did not advance across windows: {seen:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn listed_uids_get_per_process_series() {
    let me = nix::unistd::geteuid().as_raw();
    let daemon = Daemon::start(&config(20.0, "full", &format!("process_uids = [{me}]")));
    let caller = Caller {
        pid: std::process::id(),
        uid: me,
        gid: nix::unistd::getegid().as_raw(),
        privileged: me == 0,
    };
    // A busy process: it holds CPU, so it is given energy.
    let mut child = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .expect("sh");
    match daemon.state.handle(
        &caller,
        Request::RegisterProcess {
            pid: child.id(),
            include_children: false,
        },
    ) {
        Response::Registered { tracked: true, .. } => {}
        other => panic!("register: {other:?}"),
    }
    let pid_label = format!("pid=\"{}\"", child.id());
    wait_for(
        "a per-process energy series",
        Duration::from_secs(10),
        || {
            let (_, _, body) = get(&daemon.url("/metrics"));
            samples(&body).iter().any(|(s, v)| {
                s.starts_with("energyd_process_energy_joules_total{")
                    && s.contains(&pid_label)
                    && s.contains("comm=\"sh\"")
                    && *v > 0.0
            })
        },
    );
    let _ = child.kill();
    let _ = child.wait();
}

// ------------------------------------------------------------- Prometheus

/// A Prometheus server on a free port with a temporary data directory,
/// killed on drop.
struct Prometheus {
    child: Child,
    address: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

impl Prometheus {
    /// Starts `binary` scraping each `(job, target)` every 250 ms.
    fn start(binary: &Path, targets: &[(&str, SocketAddr)]) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = String::from(
            "global:\n  scrape_interval: 250ms\n  scrape_timeout: 200ms\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        for (job, target) in targets {
            config += &format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
            );
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write config");
        let address = free_port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start prometheus");
        let mut server = Prometheus {
            child,
            address,
            _dir: dir,
        };
        let url = format!("http://{address}/-/ready");
        wait_for("prometheus ready", Duration::from_secs(60), || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("prometheus exited at start: {status}");
            }
            agent()
                .get(&url)
                .call()
                .is_ok_and(|r| r.status().as_u16() == 200)
        });
        server
    }

    /// An instant PromQL query: the value of each result series, by `job`.
    fn query(&self, promql: &str) -> BTreeMap<String, f64> {
        let mut response = agent()
            .get(format!("http://{}/api/v1/query", self.address))
            .query("query", promql)
            .call()
            .expect("query");
        let body = response.body_mut().read_to_string().expect("body");
        let doc: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(doc["status"], "success", "{body}");
        doc["data"]["result"]
            .as_array()
            .map(|results| {
                results
                    .iter()
                    .filter_map(|r| {
                        let job = r["metric"]["job"].as_str()?.to_owned();
                        let value = r["value"][1].as_str()?.parse().ok()?;
                        Some((job, value))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn prometheus_binary() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PROMETHEUS_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/prometheus".into());
    path.is_file().then_some(path)
}

#[test]
fn prometheus_rate_of_the_energy_counter_is_the_source_power() {
    let Some(binary) = prometheus_binary() else {
        eprintln!(
            "SKIPPED prometheus_rate_of_the_energy_counter_is_the_source_power: no prometheus \
             binary at /usr/bin/prometheus (apt-get install prometheus; .ci/run installs it) \
             or $PROMETHEUS_BIN"
        );
        return;
    };
    // One daemon at full resolution, one coarse (the default): the rate
    // must be right for both.
    let full = Daemon::start(&config(25.0, "full", ""));
    let coarse = Daemon::start(&config(40.0, "coarse", ""));
    let prometheus = Prometheus::start(
        &binary,
        &[("full", full.metrics), ("coarse", coarse.metrics)],
    );
    // A 10 s window of scrapes every 250 ms. rate() divides by the whole
    // window, extrapolating at most half a scrape interval past the first
    // sample: wait until both series are older than the window (over 11 s
    // of scrapes), so it is full.
    let window = "10s";
    wait_for(
        "11 s of scrapes of both daemons",
        Duration::from_secs(60),
        || {
            let counts = prometheus.query(
                "count_over_time(energyd_source_energy_joules_total{source=\"simulated\"}[12s])",
            );
            ["full", "coarse"]
                .iter()
                .all(|job| counts.get(*job).is_some_and(|&n| n >= 44.0))
        },
    );
    let rates = prometheus.query(&format!(
        "rate(energyd_source_energy_joules_total{{source=\"simulated\"}}[{window}])"
    ));
    for (job, watts) in [("full", 25.0), ("coarse", 40.0)] {
        let rate = rates
            .get(job)
            .copied()
            .unwrap_or_else(|| panic!("no rate for {job}: {rates:?}"));
        eprintln!(
            "{job}: rate() = {rate:.4} W for a {watts} W source ({:+.3} %)",
            (rate - watts) / watts * 100.0
        );
        assert!(
            (rate - watts).abs() / watts < 0.02,
            "{job}: rate() {rate} W against the source's {watts} W"
        );
    }
}

#[test]
fn configured_units_are_exported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proc_root = dir.path().join("proc");
    let tree = sampling::fixtures::CgroupTree::new(&dir.path().join("cgroup")).expect("tree");
    tree.add("system.slice/web.service").expect("add");
    let _load = sampling::fixtures::CpuLoadDriver::start(
        &proc_root,
        2,
        1.0,
        vec![(tree.clone(), "system.slice/web.service".into(), 0.5)],
        2_000_000,
    )
    .expect("driver");
    let extra = format!(
        "units = [\"web.service\", \"later.service\"]\n[activity]\nproc_root = \"{}\"\n\
         [cgroups]\nroot = \"{}\"",
        proc_root.display(),
        tree.root().display()
    );
    let daemon = Daemon::start(&config(30.0, "coarse", &extra));
    let web = "cgroup=\"/system.slice/web.service\",unit=\"web.service\"";
    let value = |body: &str, prefix: &str| {
        samples(body)
            .into_iter()
            .find(|(s, _)| s.starts_with(prefix) && s.contains(web) && !s.contains("estimated"))
            .map(|(_, v)| v)
    };
    wait_for(
        "the unit's energy and CPU time",
        Duration::from_secs(10),
        || {
            let (_, _, body) = get(&daemon.url("/metrics"));
            value(&body, "energyd_cgroup_energy_joules_total{").is_some_and(|j| j > 0.0)
                && value(&body, "energyd_cgroup_cpu_seconds_total{").is_some_and(|s| s > 0.1)
        },
    );
    let (_, _, body) = get(&daemon.url("/metrics"));
    assert!(
        !body.contains("later.service"),
        "a unit not started is exported:\n{body}"
    );
    // A unit started after the daemon is picked up at the next expiry pass.
    tree.add("system.slice/later.service").expect("add");
    daemon.state.expire(MonotonicNs::now());
    wait_for("the late unit", Duration::from_secs(10), || {
        get(&daemon.url("/metrics"))
            .2
            .contains("unit=\"later.service\"")
    });
}

/// Metric names of a metrics text, as PromQL sees them (a counter family
/// `x` is queried as `x_total`).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let (name, kind) = l.split_once(' ')?;
            Some(if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            })
        })
        .collect()
}

#[test]
fn the_grafana_dashboard_is_valid_json_over_exported_metrics() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana/energyd.json");
    let text = std::fs::read_to_string(&path).expect("read the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(dashboard["title"], "energyd");
    let panels = dashboard["panels"].as_array().expect("panels");
    let exprs: Vec<&str> = panels
        .iter()
        .filter_map(|p| p["targets"].as_array())
        .flatten()
        .filter_map(|t| t["expr"].as_str())
        .collect();
    // Power by source/domain, sampler health, units and processes.
    for wanted in [
        "rate(energyd_source_energy_joules_total",
        "energyd_source_sampling_rate_hertz",
        "energyd_source_overruns_total",
        "energyd_source_coverage_ratio",
        "energyd_cgroup_energy_joules_total",
        "energyd_process_energy_joules_total",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(wanted)),
            "no panel queries {wanted}"
        );
    }
    // Every metric a panel names is one the exporter publishes (with a
    // unit and a process exported, so every family is present).
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = sampling::fixtures::CgroupTree::new(dir.path()).expect("tree");
    tree.add("system.slice/web.service").expect("add");
    let me = nix::unistd::geteuid().as_raw();
    let daemon = Daemon::start(&config(
        10.0,
        "full",
        &format!(
            "units = [\"web.service\"]\nprocess_uids = [{me}]\n[cgroups]\nroot = \"{}\"",
            tree.root().display()
        ),
    ));
    let mut child = Command::new("sleep").arg("30").spawn().expect("sleep");
    let caller = Caller {
        pid: std::process::id(),
        uid: me,
        gid: nix::unistd::getegid().as_raw(),
        privileged: me == 0,
    };
    match daemon.state.handle(
        &caller,
        Request::RegisterProcess {
            pid: child.id(),
            include_children: false,
        },
    ) {
        Response::Registered { tracked: true, .. } => {}
        other => panic!("register: {other:?}"),
    }
    let names = metric_names(&Exporter::new(daemon.state.clone()).render(MonotonicNs::now()));
    for expr in &exprs {
        let mut rest = *expr;
        while let Some(at) = rest.find("energyd_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                names.contains(&name),
                "the dashboard queries {name}, which the exporter does not publish ({names:?})"
            );
            rest = &rest[at + name.len()..];
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}
