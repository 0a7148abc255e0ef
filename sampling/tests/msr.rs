//! MSR source against device images: Intel and AMD layouts, energy unit,
//! dram absent, per-core AMD sum, 32-bit wraparound.

use sampling::fixtures::MsrImage;
use sampling::msr::{
    self, MsrVendor, AMD_CORE_ENERGY, AMD_PKG_ENERGY, INTEL_DRAM_ENERGY, INTEL_PKG_ENERGY,
};
use sampling::source::{Reading, Sampler};
use shared::{Domain, Joules};

fn energy_j(s: &mut msr::MsrSampler) -> f64 {
    match s.sample().unwrap() {
        Reading::Energy(Joules(j)) => j,
        other => panic!("msr reads energy, got {other:?}"),
    }
}

#[test]
fn intel_two_packages_domains_and_unit() {
    let dir = tempfile::tempdir().unwrap();
    let img = MsrImage::build(dir.path(), MsrVendor::Intel, 2, 2, 14, true).unwrap();
    let (mut samplers, problems) =
        msr::open_all_with(&img.msr_root(), &img.cpu_sysfs_root(), img.addressing());
    assert!(problems.is_empty(), "{problems:?}");
    let domains: Vec<Domain> = samplers.iter().map(|s| s.descriptor().domain).collect();
    // PP1 reads 0 (absent); psys only once.
    assert_eq!(
        domains,
        vec![
            Domain::Package { index: 0 },
            Domain::Core { package: 0 },
            Domain::Dram { package: 0 },
            Domain::Psys,
            Domain::Package { index: 1 },
            Domain::Core { package: 1 },
            Domain::Dram { package: 1 },
        ]
    );
    assert_eq!(samplers[0].descriptor().resolution_j, 1.0 / 16384.0);
    // Package 1 is read on its first CPU, cpu2.
    assert!(samplers[4].descriptor().name.contains("cpu2"));
    assert_eq!(energy_j(&mut samplers[4]), 0.0);
    img.add_units(2, INTEL_PKG_ENERGY, 16384 * 3).unwrap();
    assert!((energy_j(&mut samplers[4]) - 3.0).abs() < 1e-12);
}

#[test]
fn intel_without_dram_has_no_dram_domain() {
    let dir = tempfile::tempdir().unwrap();
    let img = MsrImage::build(dir.path(), MsrVendor::Intel, 1, 1, 16, false).unwrap();
    let (samplers, _) =
        msr::open_all_with(&img.msr_root(), &img.cpu_sysfs_root(), img.addressing());
    assert!(samplers
        .iter()
        .all(|s| !matches!(s.descriptor().domain, Domain::Dram { .. })));
    assert_eq!(img.register(0, INTEL_DRAM_ENERGY).unwrap(), 0);
}

#[test]
fn thirty_two_bit_register_wrap_is_corrected() {
    let dir = tempfile::tempdir().unwrap();
    let img = MsrImage::build(dir.path(), MsrVendor::Intel, 1, 1, 14, false).unwrap();
    img.set_register(0, INTEL_PKG_ENERGY, 0xffff_ff00).unwrap();
    let (mut samplers, _) =
        msr::open_all_with(&img.msr_root(), &img.cpu_sysfs_root(), img.addressing());
    let pkg = &mut samplers[0];
    assert_eq!(energy_j(pkg), 0.0);
    assert!(
        img.add_units(0, INTEL_PKG_ENERGY, 0x200).unwrap(),
        "fixture wrapped"
    );
    assert!((energy_j(pkg) - 0x200 as f64 / 16384.0).abs() < 1e-12);
    assert_eq!(pkg.wraps(), 1);
}

#[test]
fn amd_package_and_summed_cores() {
    let dir = tempfile::tempdir().unwrap();
    let img = MsrImage::build(dir.path(), MsrVendor::Amd, 1, 4, 16, false).unwrap();
    let (mut samplers, problems) =
        msr::open_all_with(&img.msr_root(), &img.cpu_sysfs_root(), img.addressing());
    assert!(problems.is_empty(), "{problems:?}");
    let domains: Vec<Domain> = samplers.iter().map(|s| s.descriptor().domain).collect();
    assert_eq!(
        domains,
        vec![Domain::Package { index: 0 }, Domain::Core { package: 0 }]
    );
    assert_eq!(samplers[0].unit_j(), 1.0 / 65536.0);
    energy_j(&mut samplers[1]);
    // One joule on each of two cores.
    img.add_units(1, AMD_CORE_ENERGY, 65536).unwrap();
    img.add_units(3, AMD_CORE_ENERGY, 65536).unwrap();
    assert!((energy_j(&mut samplers[1]) - 2.0).abs() < 1e-12);
    img.add_units(0, AMD_PKG_ENERGY, 65536 / 2).unwrap();
    energy_j(&mut samplers[0]);
    assert!((energy_j(&mut samplers[0]) - 0.5).abs() < 1e-12);
}

#[test]
fn missing_device_directory_is_a_problem() {
    let (samplers, problems) = msr::open_all(
        std::path::Path::new("/nonexistent/cpu"),
        std::path::Path::new("/nonexistent"),
    );
    assert!(samplers.is_empty());
    assert!(problems[0].why.contains("msr module"), "{problems:?}");
}
