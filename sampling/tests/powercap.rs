//! Powercap source against fixture trees: zone discovery (two packages,
//! dram present/absent, psys, mmio, AMD-style), per-zone problems, wrap
//! correction mid-run, and the engine reading a counter driven at a known
//! power.

use sampling::engine::{ConfiguredSource, EngineConfig, SamplingEngine};
use sampling::fixtures::{BrokenZone, PowercapTree};
use sampling::powercap::{self, PowercapSampler};
use sampling::source::{Reading, Sampler};
use shared::{Domain, Joules, Provenance, SourceId};

fn energy_j(s: &mut PowercapSampler) -> f64 {
    match s.sample().expect("fixture zone is readable") {
        Reading::Energy(Joules(j)) => j,
        other => panic!("powercap reads energy, got {other:?}"),
    }
}

#[test]
fn two_packages_with_dram_give_every_zone_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let tree = PowercapTree::builder()
        .packages(2)
        .dram(true)
        .psys(true)
        .build(dir.path())
        .unwrap();
    let (samplers, problems) = powercap::open_all(tree.root());
    assert!(problems.is_empty(), "{problems:?}");
    let domains: Vec<Domain> = samplers.iter().map(|s| s.descriptor().domain).collect();
    assert_eq!(
        domains,
        vec![
            Domain::Package { index: 0 },
            Domain::Core { package: 0 },
            Domain::Dram { package: 0 },
            Domain::Package { index: 1 },
            Domain::Core { package: 1 },
            Domain::Dram { package: 1 },
            Domain::Psys,
        ]
    );
    let d = samplers[0].descriptor();
    assert_eq!(d.name, "intel-rapl:0 (package-0)");
    assert_eq!(d.provenance, Provenance::Measured);
    assert_eq!(d.default_period_ns, 1_000_000);
}

#[test]
fn dram_absent_and_amd_style_tree() {
    let dir = tempfile::tempdir().unwrap();
    // AMD exposes package + per-package core zones through intel-rapl, no dram.
    let tree = PowercapTree::builder()
        .packages(1)
        .dram(false)
        .core(true)
        .build(dir.path())
        .unwrap();
    let (samplers, problems) = powercap::open_all(tree.root());
    assert!(problems.is_empty());
    let domains: Vec<Domain> = samplers.iter().map(|s| s.descriptor().domain).collect();
    assert_eq!(
        domains,
        vec![Domain::Package { index: 0 }, Domain::Core { package: 0 }]
    );
}

#[test]
fn mmio_zone_gets_its_own_domain() {
    let dir = tempfile::tempdir().unwrap();
    let tree = PowercapTree::builder()
        .dram(false)
        .core(false)
        .mmio(true)
        .build(dir.path())
        .unwrap();
    let (samplers, _) = powercap::open_all(tree.root());
    let names: Vec<String> = samplers.iter().map(|s| s.descriptor().name).collect();
    assert_eq!(
        names,
        vec!["intel-rapl:0 (package-0)", "intel-rapl-mmio:0 (package-0)"]
    );
    assert_eq!(
        samplers[1].descriptor().domain,
        Domain::Other("package-0-mmio".into())
    );
}

#[test]
fn unreadable_zones_are_reported_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let tree = PowercapTree::builder()
        .packages(2)
        .broken("intel-rapl:1", BrokenZone::EnergyIsDirectory)
        .broken("intel-rapl:0:1", BrokenZone::MissingEnergy)
        .build(dir.path())
        .unwrap();
    let (samplers, problems) = powercap::open_all(tree.root());
    let opened: Vec<String> = samplers.iter().map(|s| s.zone().zone.clone()).collect();
    assert_eq!(
        opened,
        vec![
            "intel-rapl:0",
            "intel-rapl:0:0",
            "intel-rapl:1:0",
            "intel-rapl:1:1"
        ]
    );
    assert_eq!(problems.len(), 2, "{problems:?}");
    let by_zone = |z: &str| {
        problems
            .iter()
            .find(|p| p.what == z)
            .map(|p| p.why.clone())
            .unwrap_or_default()
    };
    assert!(
        by_zone("intel-rapl:1").contains("is a directory"),
        "{problems:?}"
    );
    assert!(
        by_zone("intel-rapl:0:1").contains("energy_uj"),
        "{problems:?}"
    );
}

#[test]
fn missing_root_is_one_problem_not_a_crash() {
    let (samplers, problems) = powercap::open_all(std::path::Path::new("/nonexistent/powercap"));
    assert!(samplers.is_empty());
    assert_eq!(problems.len(), 1);
    assert!(problems[0].why.contains("/nonexistent/powercap"));
}

#[test]
fn wraparound_mid_run_is_corrected() {
    let dir = tempfile::tempdir().unwrap();
    // A 1 J counter range so a few steps wrap it.
    let tree = PowercapTree::builder()
        .core(false)
        .dram(false)
        .max_energy_range_uj(999_999)
        .initial_energy_uj(900_000)
        .build(dir.path())
        .unwrap();
    let zone = powercap::find_zones(tree.root()).0.remove(0);
    let mut s = PowercapSampler::open(zone).unwrap();
    assert_eq!(energy_j(&mut s), 0.0);
    let mut wrapped = 0;
    for _ in 0..7 {
        // 0.3 J per step: wraps every 3–4 steps.
        wrapped += u64::from(tree.add_energy_uj("intel-rapl:0", 300_000).unwrap());
        energy_j(&mut s);
    }
    assert!((energy_j(&mut s) - 2.1).abs() < 1e-9);
    assert_eq!(s.wraps(), wrapped);
    assert!(wrapped >= 2);
}

#[test]
fn bad_counter_text_is_a_retry_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let tree = PowercapTree::builder()
        .core(false)
        .dram(false)
        .build(dir.path())
        .unwrap();
    let zone = powercap::find_zones(tree.root()).0.remove(0);
    let mut s = PowercapSampler::open(zone).unwrap();
    std::fs::write(dir.path().join("intel-rapl:0/energy_uj"), "garbage\n").unwrap();
    let err = s.sample().unwrap_err();
    assert!(matches!(err, sampling::SampleError::Retry(_)), "{err:?}");
}

#[test]
fn engine_measures_a_counter_driven_at_known_power() {
    let dir = tempfile::tempdir().unwrap();
    let tree = PowercapTree::builder()
        .packages(1)
        .core(false)
        .dram(false)
        .build(dir.path())
        .unwrap();
    let (mut samplers, _) = powercap::open_all(tree.root());
    let driver = tree.drive("intel-rapl:0", 40.0, 1_000_000);
    let engine = SamplingEngine::start(
        vec![ConfiguredSource {
            sampler: Box::new(samplers.remove(0)),
            period_ns: 1_000_000,
        }],
        EngineConfig::default(),
    );
    std::thread::sleep(std::time::Duration::from_millis(600));
    let (t_end, _) = engine.latest(SourceId(0)).unwrap();
    let from = t_end.saturating_sub_ns(400_000_000);
    let e = engine.energy(SourceId(0), from, t_end).unwrap();
    // 40 W over 0.4 s, with the driver stepping every ~1 ms.
    assert!((e.joules - 16.0).abs() < 0.4, "{e:?}");
    assert_eq!(e.coverage, 1.0);
    let stats = engine.stats(SourceId(0)).unwrap();
    assert!(stats.rate_hz > 500.0, "{stats:?}");
    assert_eq!(stats.read_errors, 0, "{stats:?}");
    engine.shutdown();
    driver.stop();
}

#[test]
fn engine_corrects_wraps_mid_run_on_two_packages() {
    let dir = tempfile::tempdir().unwrap();
    // A 5 J range wraps every 125 ms at 40 W: several wraps in the run,
    // yet 1 ms reads stay within the engine's half-range-at-2-kW bound.
    let tree = PowercapTree::builder()
        .packages(2)
        .dram(true)
        .max_energy_range_uj(4_999_999)
        .initial_energy_uj(4_900_000)
        .build(dir.path())
        .unwrap();
    let (samplers, problems) = powercap::open_all(tree.root());
    assert!(problems.is_empty(), "{problems:?}");
    let zones: Vec<String> = samplers.iter().map(|s| s.zone().zone.clone()).collect();
    let pkg0 = zones.iter().position(|z| z == "intel-rapl:0").unwrap();
    let dram1 = zones.iter().position(|z| z == "intel-rapl:1:1").unwrap();
    let engine = SamplingEngine::start(
        samplers
            .into_iter()
            .map(|s| ConfiguredSource {
                sampler: Box::new(s),
                period_ns: 1_000_000,
            })
            .collect(),
        EngineConfig::default(),
    );
    assert!(engine.sources().iter().all(|s| s.period_ns == 1_000_000));
    let drive_pkg0 = tree.drive("intel-rapl:0", 40.0, 1_000_000);
    let drive_dram1 = tree.drive("intel-rapl:1:1", 10.0, 1_000_000);
    std::thread::sleep(std::time::Duration::from_millis(700));
    for (index, watts) in [(pkg0, 40.0), (dram1, 10.0)] {
        let id = SourceId(index as u32);
        let (t_end, _) = engine.latest(id).unwrap();
        let e = engine
            .energy(id, t_end.saturating_sub_ns(500_000_000), t_end)
            .unwrap();
        let expected = watts * 0.5;
        assert!(
            (e.joules - expected).abs() < 0.03 * expected,
            "{}: {e:?}, expected {expected} J",
            zones[index]
        );
    }
    assert!(engine.stats(SourceId(pkg0 as u32)).unwrap().wraps >= 4);
    assert!(engine.stats(SourceId(dram1 as u32)).unwrap().wraps >= 1);
    // Zones nobody drives stay at zero energy.
    let idle = SourceId(zones.iter().position(|z| z == "intel-rapl:1").unwrap() as u32);
    assert_eq!(engine.latest(idle).unwrap().1, 0.0);
    engine.shutdown();
    drive_pkg0.stop();
    drive_dram1.stop();
}
