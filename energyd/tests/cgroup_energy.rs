//! Energy per cgroup: a fixture cgroup v2 tree (files changed in place,
//! like cgroupfs) and a fixture `/proc/stat` driven at known loads, a
//! simulated constant-power source; the handler answers `TrackCgroup` /
//! `CgroupEnergy` with the same attribution as a process's breakdown, and
//! the access rule holds (privileged peers: any cgroup; others: only
//! cgroups whose directory they own, with the same answer for others'
//! cgroups as for none). Plus one test on a real cgroup of a process this
//! test starts, where this machine lets it create one.

use energyd::config::Config;
use energyd::daemon::build_state;
use energyd::policy::Caller;
use energyd::service::DaemonState;
use sampling::fixtures::{CgroupTree, CpuLoadDriver};
use shared::protocol::{CgroupEnergy, CgroupSelector, DomainShare, ErrorCode, Request, Response};
use shared::{MonotonicNs, Provenance};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WATTS: f64 = 10.0;

const ROOT: Caller = Caller {
    pid: 1,
    uid: 0,
    gid: 0,
    privileged: true,
};

fn user(uid: u32) -> Caller {
    Caller {
        pid: 1,
        uid,
        gid: uid,
        privileged: false,
    }
}

fn state(proc_root: &Path, cgroup_root: &Path) -> Arc<DaemonState> {
    let config = Config::parse(&format!(
        r#"
[activity]
proc_root = "{}"
[cgroups]
root = "{}"
[sources]
powercap_root = "/nonexistent"
msr_root = "/nonexistent"
nvml = false
[sources.simulated]
curve = {{ shape = "constant", watts = {WATTS} }}
"#,
        proc_root.display(),
        cgroup_root.display()
    ))
    .expect("config");
    build_state(config, true).expect("state")
}

fn unit(name: &str) -> CgroupSelector {
    CgroupSelector::Unit {
        name: name.to_owned(),
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not reached in 20 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn energy(
    state: &DaemonState,
    caller: &Caller,
    cgroup: &CgroupSelector,
    from: Option<MonotonicNs>,
) -> Result<CgroupEnergy, (ErrorCode, String)> {
    match state.handle(
        caller,
        Request::CgroupEnergy {
            cgroup: cgroup.clone(),
            from,
            to: None,
        },
    ) {
        Response::CgroupEnergy(e) => Ok(e),
        Response::Error { code, message } => Err((code, message)),
        other => panic!("unexpected answer {other:?}"),
    }
}

/// The share of the simulated source (the estimated CPU source, opened
/// because the machine has no RAPL, reads the fixture `/proc/stat` too).
fn simulated<'a>(state: &DaemonState, e: &'a CgroupEnergy) -> &'a DomainShare {
    let id = state
        .engine
        .sources()
        .iter()
        .find(|s| s.kind == shared::source::SourceKind::Simulated)
        .expect("simulated source")
        .id;
    e.domains
        .iter()
        .find(|d| d.source == id)
        .expect("simulated domain")
}

fn track(state: &DaemonState, caller: &Caller, cgroup: &CgroupSelector) -> Result<(), ErrorCode> {
    match state.handle(
        caller,
        Request::TrackCgroup {
            cgroup: cgroup.clone(),
        },
    ) {
        Response::CgroupTracking(t) if t.tracked => Ok(()),
        Response::Error { code, .. } => Err(code),
        other => panic!("unexpected answer {other:?}"),
    }
}

#[test]
fn a_units_energy_is_its_cpu_share_of_each_domain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proc_root = dir.path().join("proc");
    let tree = CgroupTree::new(&dir.path().join("cgroup")).expect("tree");
    tree.add("system.slice/web.service").expect("add");
    tree.add("system.slice/db.service").expect("add");
    // 2 CPUs, 1.0 busy: web uses 0.5 of it, db 0.25.
    let _load = CpuLoadDriver::start(
        &proc_root,
        2,
        1.0,
        vec![
            (tree.clone(), "system.slice/web.service".into(), 0.5),
            (tree.clone(), "system.slice/db.service".into(), 0.25),
        ],
        2_000_000,
    )
    .expect("driver");
    let state = state(&proc_root, tree.root());
    let web = unit("web.service");
    let db = CgroupSelector::Path {
        path: "/system.slice/db.service".into(),
    };
    // Not tracked yet: nothing to report.
    assert_eq!(
        energy(&state, &ROOT, &web, None).map(|_| ()).unwrap_err().0,
        ErrorCode::NotFound
    );
    track(&state, &ROOT, &web).expect("track web");
    track(&state, &ROOT, &db).expect("track db");
    let start = MonotonicNs::now();
    std::thread::sleep(Duration::from_millis(1500));
    let from = Some(start.saturating_add_ns(200_000_000));
    let web_e = energy(&state, &ROOT, &web, from).expect("web energy");
    let db_e = energy(&state, &ROOT, &db, from).expect("db energy");
    assert_eq!(web_e.cgroup.path, "/system.slice/web.service");
    assert!(web_e.cgroup.present && !web_e.cgroup.configured);
    let (w, d) = (simulated(&state, &web_e), simulated(&state, &db_e));
    assert_eq!(w.provenance, Provenance::Simulated);
    let secs = web_e.to.saturating_sub(web_e.from) as f64 * 1e-9;
    assert!(
        (w.machine_j - WATTS * secs).abs() < 0.05 * WATTS * secs,
        "machine {} J over {secs} s",
        w.machine_j
    );
    // Activity share: the cgroup's CPU time over the machine's busy time.
    assert!(
        (w.activity_share - 0.5).abs() < 0.05,
        "web share {}",
        w.activity_share
    );
    assert!(
        (d.activity_share - 0.25).abs() < 0.05,
        "db share {}",
        d.activity_share
    );
    // Each gets part of the machine's energy, in proportion to its CPU.
    assert!(w.process_j > 0.0 && w.process_j < w.machine_j, "{w:?}");
    let ratio = w.process_j / d.process_j;
    assert!((ratio - 2.0).abs() < 0.2, "web/db energy ratio {ratio}");
}

#[test]
fn unprivileged_callers_reach_only_their_own_cgroups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proc_root = dir.path().join("proc");
    let tree = CgroupTree::new(&dir.path().join("cgroup")).expect("tree");
    let mine = "user.slice/user-4242.slice/user@4242.service/app.slice/job.service";
    tree.add(mine).expect("add");
    tree.add("system.slice/nginx.service").expect("add");
    let _load = CpuLoadDriver::start(
        &proc_root,
        2,
        0.5,
        vec![(tree.clone(), mine.into(), 0.25)],
        2_000_000,
    )
    .expect("driver");
    let state = state(&proc_root, tree.root());
    let alice = user(4242);
    let bob = user(4343);
    let job = unit("job.service");
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED the ownership half: needs root to chown the fixture cgroup");
        assert_eq!(
            track(&state, &alice, &job),
            Err(ErrorCode::PermissionDenied)
        );
        return;
    }
    // Before systemd delegates it (root-owned): refused, like a
    // cgroup that does not exist.
    let denied_existing = track(&state, &alice, &unit("nginx.service"));
    let denied_missing = track(&state, &alice, &unit("nothere.service"));
    assert_eq!(denied_existing, Err(ErrorCode::PermissionDenied));
    assert_eq!(denied_missing, Err(ErrorCode::PermissionDenied));
    for (path, uid) in [
        ("user.slice/user-4242.slice/user@4242.service", 4242),
        (mine, 4242),
    ] {
        nix::unistd::chown(
            &tree.dir(path),
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(uid)),
        )
        .expect("chown");
    }
    track(&state, &alice, &job).expect("alice tracks her own unit");
    assert_eq!(track(&state, &bob, &job), Err(ErrorCode::PermissionDenied));
    std::thread::sleep(Duration::from_millis(400));
    let e = energy(&state, &alice, &job, None).expect("alice's energy");
    assert_eq!(e.cgroup.owner_uid, 4242);
    assert!(simulated(&state, &e).process_j > 0.0, "{e:?}");
    // Her view of the machine is coarse: a whole number of quanta.
    let steps = simulated(&state, &e).machine_j / 0.01;
    assert!((steps - steps.round()).abs() < 1e-6, "{e:?}");
    // Bob learns nothing about it, not even that it is tracked.
    let (code, message) = energy(&state, &bob, &job, None).unwrap_err();
    assert_eq!(code, ErrorCode::PermissionDenied);
    assert!(!message.contains("user@4242"), "{message}");
    match state.handle(
        &bob,
        Request::UntrackCgroup {
            cgroup: job.clone(),
        },
    ) {
        Response::Error { code, .. } => assert_eq!(code, ErrorCode::PermissionDenied),
        other => panic!("bob untracked alice's cgroup: {other:?}"),
    }
    // Root sees it; alice lets it go.
    energy(&state, &ROOT, &job, None).expect("root sees every cgroup");
    match state.handle(
        &alice,
        Request::UntrackCgroup {
            cgroup: job.clone(),
        },
    ) {
        Response::CgroupTracking(t) => assert!(!t.tracked),
        other => panic!("untrack: {other:?}"),
    }
    // Bad names are refused as such, for everyone.
    for bad in [unit("../x.service"), unit("nginx")] {
        match state.handle(&alice, Request::TrackCgroup { cgroup: bad }) {
            Response::Error { code, .. } => assert_eq!(code, ErrorCode::InvalidArgument),
            other => panic!("{other:?}"),
        }
    }
    let escape = CgroupSelector::Path {
        path: "/../../etc".into(),
    };
    match state.handle(&ROOT, Request::TrackCgroup { cgroup: escape }) {
        Response::Error { code, .. } => assert_eq!(code, ErrorCode::InvalidArgument),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_restarted_unit_continues_its_series() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proc_root = dir.path().join("proc");
    let tree = CgroupTree::new(&dir.path().join("cgroup")).expect("tree");
    let path = "system.slice/web.service";
    tree.add(path).expect("add");
    let _load = CpuLoadDriver::start(
        &proc_root,
        2,
        1.0,
        vec![(tree.clone(), path.into(), 0.5)],
        2_000_000,
    )
    .expect("driver");
    let state = state(&proc_root, tree.root());
    let web = unit("web.service");
    track(&state, &ROOT, &web).expect("track");
    let key = state.cgroups.lock().unwrap()["/system.slice/web.service"].key;
    wait_for("CPU time counted", || {
        state
            .tracker
            .last_sample(key)
            .is_some_and(|(_, ns)| ns > 100_000_000)
    });
    tree.remove(path).expect("stop the unit");
    wait_for("the stop seen", || state.tracker.exited(key));
    let (_, before_restart) = state.tracker.last_sample(key).expect("sample");
    // Started again: a new cgroup (new inode) whose usage restarts at 0.
    tree.add(path).expect("start the unit");
    wait_for("the restart seen", || !state.tracker.exited(key));
    wait_for("CPU time counted again", || {
        state
            .tracker
            .last_sample(key)
            .is_some_and(|(_, ns)| ns > before_restart + 50_000_000)
    });
    // Still found by unit name while present, and its energy covers both.
    let e = energy(&state, &ROOT, &web, None).expect("energy");
    assert!(e.cgroup.present);
    assert!(simulated(&state, &e).process_j > 0.0);
}

/// The cgroup v2 directory of this process, from `/proc/self/cgroup`.
fn own_cgroup(root: &Path) -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(root.join(rel.trim_start_matches('/')))
}

#[test]
fn the_real_cgroup_of_a_busy_child_is_measured() {
    let root = sampling::cgroup::CgroupRoot::detect(Path::new("/proc"));
    let Some(parent) = own_cgroup(root.path()).filter(|p| p.join("cpu.stat").is_file()) else {
        eprintln!(
            "SKIPPED the_real_cgroup_of_a_busy_child_is_measured: no cgroup v2 hierarchy \
             (cpu.stat) for this process under {}",
            root.path().display()
        );
        return;
    };
    let child_dir = parent.join(format!("energyd-test-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&child_dir) {
        eprintln!(
            "SKIPPED the_real_cgroup_of_a_busy_child_is_measured: cannot create a cgroup \
             under {} ({e}): needs write access to this process's cgroup",
            parent.display()
        );
        return;
    }
    struct Cleanup(std::path::PathBuf, Option<std::process::Child>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Some(c) = self.1.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let mut cleanup = Cleanup(child_dir.clone(), None);
    // The child moves itself into the new cgroup, then spins.
    let script = format!(
        "echo $$ > {} && while :; do :; done",
        child_dir.join("cgroup.procs").display()
    );
    let child = std::process::Command::new("sh")
        .args(["-c", &script])
        .spawn()
        .expect("spawn");
    let pid = child.id();
    cleanup.1 = Some(child);
    let procs = child_dir.join("cgroup.procs");
    wait_for("the child in its cgroup", || {
        std::fs::read_to_string(&procs).is_ok_and(|t| t.lines().any(|l| l == pid.to_string()))
    });
    let config = Config::parse(&format!(
        "[cgroups]\nroot = \"{}\"\n[sources]\npowercap_root = \"/nonexistent\"\n\
         msr_root = \"/nonexistent\"\nnvml = false\n[sources.simulated]\n\
         curve = {{ shape = \"constant\", watts = 10.0 }}\n",
        root.path().display()
    ))
    .expect("config");
    let state = build_state(config, true).expect("state");
    let rel = child_dir.strip_prefix(root.path()).expect("under the root");
    let selector = CgroupSelector::Path {
        path: format!("/{}", rel.display()),
    };
    track(&state, &ROOT, &selector).expect("track the real cgroup");
    let key = state
        .cgroups
        .lock()
        .unwrap()
        .values()
        .next()
        .expect("record")
        .key;
    let start = MonotonicNs::now();
    std::thread::sleep(Duration::from_millis(1000));
    let cpu = state
        .tracker
        .cpu_between(key, start, MonotonicNs::now())
        .expect("cpu history");
    // A spinning shell on a shared 2-core machine: well above zero, at most
    // the wall time (one thread).
    assert!(
        cpu.process_cpu_ns > 100_000_000 && cpu.process_cpu_ns < 1_300_000_000,
        "{cpu:?}"
    );
    let e = energy(&state, &ROOT, &selector, Some(start)).expect("energy");
    assert!(simulated(&state, &e).process_j > 0.0, "{e:?}");
    assert!(simulated(&state, &e).activity_share > 0.0, "{e:?}");
}

#[test]
fn energyctl_reports_a_units_energy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proc_root = dir.path().join("proc");
    let tree = CgroupTree::new(&dir.path().join("cgroup")).expect("tree");
    tree.add("system.slice/web.service").expect("add");
    let _load = CpuLoadDriver::start(
        &proc_root,
        2,
        1.0,
        vec![(tree.clone(), "system.slice/web.service".into(), 0.5)],
        2_000_000,
    )
    .expect("driver");
    let state = state(&proc_root, tree.root());
    let socket_path = dir.path().join("energyd.sock");
    let config = state.config.clone();
    let socket =
        energyd::daemon::open_socket(&config, true, Some(socket_path.clone())).expect("socket");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = state.clone();
    let server = std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(energyd::daemon::serve(socket, served, async {
                let _ = stopped.await;
            }))
            .expect("serve");
    });
    // Not tracked: energyctl tracks it for the --last interval, reports,
    // and lets it go.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_energyctl"))
        .arg("--socket")
        .arg(&socket_path)
        .args([
            "energy",
            "--unit",
            "web.service",
            "--last",
            "600ms",
            "--json",
        ])
        .output()
        .expect("run energyctl");
    assert!(
        out.status.success(),
        "energyctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["cgroup"], "/system.slice/web.service");
    assert_eq!(doc["unit"], "web.service");
    assert!(doc["energy_j"].as_f64().is_some_and(|j| j > 0.0), "{doc}");
    assert!(
        doc["domains"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["provenance"] == "simulated")),
        "{doc}"
    );
    assert!(
        state.cgroups.lock().unwrap().is_empty(),
        "energyctl left the cgroup tracked"
    );
    // Tracked for good, then asked since tracking began, as text.
    let ctl = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_energyctl"))
            .arg("--socket")
            .arg(&socket_path)
            .args(args)
            .output()
            .expect("run energyctl")
    };
    let tracked = ctl(&["track", "--cgroup", "/system.slice/web.service"]);
    assert!(tracked.status.success());
    std::thread::sleep(Duration::from_millis(300));
    let text = ctl(&["energy", "--unit", "web.service"]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.status.success(),
        "{}",
        String::from_utf8_lossy(&text.stderr)
    );
    assert!(
        stdout.contains("web.service (cgroup /system.slice/web.service)")
            && stdout.contains("total"),
        "{stdout}"
    );
    let _ = stop.send(());
    server.join().expect("server");
}
