//! NVML source without a GPU: the absent library is a clean "no NVML
//! source" problem at discovery, and the reading chosen per GPU (total
//! energy, instantaneous field, 1 s averaged power) is checked on the mock
//! provider, the same trait object the real library sits behind.

use sampling::discovery::{self, RaplPath, SourcesConfig};
use sampling::fixtures::{MockGpu, MockGpuProvider};
use sampling::nvml::{self, GpuArchitecture, GpuDeviceInfo, GpuProvider, NvmlSampler};
use sampling::source::{Reading, SampleError, Sampler};
use shared::source::ReadingKind;
use shared::{Domain, Joules, Provenance, Watts};
use std::path::PathBuf;
use std::sync::Arc;

fn gpu(name: &str, architecture: GpuArchitecture) -> MockGpu {
    MockGpu {
        info: GpuDeviceInfo {
            name: name.to_string(),
            architecture,
        },
        total_energy_mj: None,
        instant_power_mw: None,
        power_usage_mw: None,
        processes: Vec::new(),
        lost: false,
    }
}

/// Sources config with no RAPL and no estimate source reachable, so only
/// what NVML gives (or does not) is left.
fn gpu_only_config() -> SourcesConfig {
    SourcesConfig {
        rapl: RaplPath::Off,
        proc_root: PathBuf::from("/nonexistent-proc"),
        ..SourcesConfig::default()
    }
}

#[test]
fn absent_nvml_is_a_clean_problem_not_a_crash() {
    let found = discovery::discover_with_gpus(
        &gpu_only_config(),
        Some(Err(
            "NVML unavailable: libnvidia-ml.so.1: cannot open shared object file".into(),
        )),
    );
    assert!(found.sources.is_empty());
    let nvml_problem = found
        .problems
        .iter()
        .find(|p| p.what == "nvml")
        .expect("one nvml problem");
    assert!(
        nvml_problem.why.starts_with("no NVML source: "),
        "{nvml_problem:?}"
    );
    assert!(nvml_problem.why.contains("libnvidia-ml.so.1"));
}

#[test]
fn real_nvml_loader_either_finds_gpus_or_reports_no_source() {
    // The real loader: on machines without the driver (like CI) this is
    // the "no NVML source" path; on a GPU machine every GPU is a source.
    let found = discovery::discover(&gpu_only_config());
    let gpus: Vec<_> = found
        .sources
        .iter()
        .filter(|s| matches!(s.sampler.descriptor().domain, Domain::Gpu { .. }))
        .collect();
    let nvml_problems: Vec<_> = found
        .problems
        .iter()
        .filter(|p| p.what == "nvml" || p.what.starts_with("gpu"))
        .collect();
    match nvml::NvmlProvider::init() {
        Err(why) => {
            assert!(gpus.is_empty());
            assert_eq!(nvml_problems.len(), 1, "{nvml_problems:?}");
            assert_eq!(nvml_problems[0].why, format!("no NVML source: {why}"));
        }
        Ok(provider) => {
            let count = provider.device_count().expect("device count");
            assert_eq!(
                gpus.len() + nvml_problems.len(),
                count.max(1) as usize,
                "every GPU is a source or a problem: {nvml_problems:?}"
            );
        }
    }
}

#[test]
fn nvml_off_means_no_nvml_problem_either() {
    let config = SourcesConfig {
        nvml: false,
        ..gpu_only_config()
    };
    let found = discovery::discover(&config);
    assert!(found.problems.iter().all(|p| p.what != "nvml"));
}

#[test]
fn total_energy_counter_is_preferred_and_exact() {
    let mut g = gpu("NVIDIA H100 80GB HBM3", GpuArchitecture::AmpereOrNewer);
    g.total_energy_mj = Some(5_000_000);
    g.instant_power_mw = Some(300_000);
    g.power_usage_mw = Some(290_000);
    let provider = Arc::new(MockGpuProvider::new(vec![g]));
    let mut s = NvmlSampler::open(provider.clone(), 0).unwrap();
    let d = s.descriptor();
    assert_eq!(d.reading, ReadingKind::CumulativeEnergy);
    assert_eq!(d.domain, Domain::Gpu { index: 0 });
    assert_eq!(d.provenance, Provenance::Measured);
    assert_eq!(d.update_period_ns, 100_000_000);
    assert_eq!(d.default_period_ns, 100_000_000);
    assert_eq!(s.sample().unwrap(), Reading::Energy(Joules(0.0)));
    provider.update(0, |g| g.total_energy_mj = Some(5_012_345));
    assert_eq!(s.sample().unwrap(), Reading::Energy(Joules(12.345)));
}

#[test]
fn without_energy_counter_the_reading_kind_says_which_power_it_is() {
    // Instantaneous field available: instant power.
    let mut instant = gpu("NVIDIA L4", GpuArchitecture::AmpereOrNewer);
    instant.instant_power_mw = Some(72_000);
    instant.power_usage_mw = Some(70_000);
    // Ampere without the field: power_usage is a 1 s average...
    let mut averaged = gpu("NVIDIA RTX A6000", GpuArchitecture::AmpereOrNewer);
    averaged.power_usage_mw = Some(150_000);
    // ...except on GA100, where it stays instantaneous.
    let mut ga100 = gpu("NVIDIA A100-SXM4-40GB", GpuArchitecture::AmpereOrNewer);
    ga100.power_usage_mw = Some(250_000);
    // Before Volta: instantaneous, 20 ms sensor.
    let mut pascal = gpu("Tesla P100", GpuArchitecture::PreVolta);
    pascal.power_usage_mw = Some(100_000);
    let provider = Arc::new(MockGpuProvider::new(vec![instant, averaged, ga100, pascal]));
    let (mut samplers, problems) = nvml::open_all(provider);
    assert!(problems.is_empty(), "{problems:?}");
    let kinds: Vec<ReadingKind> = samplers.iter().map(|s| s.descriptor().reading).collect();
    assert_eq!(
        kinds,
        vec![
            ReadingKind::InstantPower,
            ReadingKind::AveragedPower {
                window_ns: 1_000_000_000
            },
            ReadingKind::InstantPower,
            ReadingKind::InstantPower,
        ]
    );
    assert_eq!(samplers[3].descriptor().update_period_ns, 20_000_000);
    assert_eq!(samplers[0].sample().unwrap(), Reading::Power(Watts(72.0)));
    assert_eq!(samplers[1].sample().unwrap(), Reading::Power(Watts(150.0)));
}

#[test]
fn gpu_without_any_reading_or_lost_mid_run_is_per_gpu() {
    let silent = gpu("Mystery GPU", GpuArchitecture::Unknown);
    let mut good = gpu("NVIDIA V100", GpuArchitecture::Volta);
    good.total_energy_mj = Some(1);
    let provider = Arc::new(MockGpuProvider::new(vec![silent, good]));
    let (mut samplers, problems) = nvml::open_all(provider.clone());
    assert_eq!(samplers.len(), 1);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].what, "gpu0");
    assert!(problems[0].why.contains("reports no power or energy"));
    // Falling off the bus stops the source (Fatal), it does not retry forever.
    provider.update(1, |g| g.lost = true);
    assert!(matches!(samplers[0].sample(), Err(SampleError::Fatal(_))));
}

#[test]
fn no_gpu_is_a_problem() {
    let (samplers, problems) = nvml::open_all(Arc::new(MockGpuProvider::new(Vec::new())));
    assert!(samplers.is_empty());
    assert_eq!(problems[0].why, "NVML reports no GPU");
}
