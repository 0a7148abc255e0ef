//! Fixture builders for tests and benchmarks: fake powercap trees, MSR
//! device images, perf `power` PMU directories, `/proc/stat` files and a
//! mock GPU provider. Public so the integration tests and `bench/` use the
//! same builders; nothing in the daemon's code path calls them.
//!
//! Broken zones: [`BrokenZone`] leaves `energy_uj` out or makes it a
//! directory (`read` then fails with EISDIR). Real "permission denied" is
//! tested in `tests/permissions.rs`, which reads a root-only fixture file
//! from a child running as `nobody` (root reads `chmod 0400` files anyway).

use shared::MonotonicNs;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// How a fixture zone is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokenZone {
    /// `energy_uj` is missing.
    MissingEnergy,
    /// `energy_uj` is a directory (reads fail with EISDIR).
    EnergyIsDirectory,
}

/// Builds a powercap tree like `/sys/class/powercap`: the `intel-rapl`
/// control-type directory plus one flat directory per zone.
#[derive(Debug, Clone)]
pub struct PowercapTreeBuilder {
    packages: u32,
    core: bool,
    uncore: bool,
    dram: bool,
    psys: bool,
    mmio: bool,
    max_energy_range_uj: u64,
    initial_energy_uj: u64,
    broken: Vec<(String, BrokenZone)>,
}

impl Default for PowercapTreeBuilder {
    fn default() -> Self {
        Self {
            packages: 1,
            core: true,
            uncore: false,
            dram: true,
            psys: false,
            mmio: false,
            // The value a typical Intel package reports (2^32 × 61 µJ).
            max_energy_range_uj: 262_143_328_850,
            initial_energy_uj: 0,
            broken: Vec::new(),
        }
    }
}

impl PowercapTreeBuilder {
    /// Number of packages (default 1).
    pub fn packages(mut self, n: u32) -> Self {
        self.packages = n;
        self
    }
    /// Core (PP0) subzone per package (default on).
    pub fn core(mut self, on: bool) -> Self {
        self.core = on;
        self
    }
    /// Uncore (PP1) subzone per package (default off).
    pub fn uncore(mut self, on: bool) -> Self {
        self.uncore = on;
        self
    }
    /// DRAM subzone per package (default on).
    pub fn dram(mut self, on: bool) -> Self {
        self.dram = on;
        self
    }
    /// A psys zone after the packages (default off).
    pub fn psys(mut self, on: bool) -> Self {
        self.psys = on;
        self
    }
    /// An `intel-rapl-mmio:0` package zone (default off).
    pub fn mmio(mut self, on: bool) -> Self {
        self.mmio = on;
        self
    }
    /// `max_energy_range_uj` of every zone.
    pub fn max_energy_range_uj(mut self, max: u64) -> Self {
        self.max_energy_range_uj = max;
        self
    }
    /// Starting `energy_uj` of every zone.
    pub fn initial_energy_uj(mut self, uj: u64) -> Self {
        self.initial_energy_uj = uj;
        self
    }
    /// Breaks one zone (by directory name, e.g. `intel-rapl:1:0`).
    pub fn broken(mut self, zone: &str, how: BrokenZone) -> Self {
        self.broken.push((zone.to_string(), how));
        self
    }

    /// Writes the tree under `root` (which must exist).
    pub fn build(&self, root: &Path) -> io::Result<PowercapTree> {
        fs::create_dir_all(root.join("intel-rapl"))?;
        fs::write(root.join("intel-rapl").join("enabled"), "1\n")?;
        let mut zones = Vec::new();
        for p in 0..self.packages {
            zones.push((format!("intel-rapl:{p}"), format!("package-{p}")));
            let mut sub = 0;
            for (on, name) in [
                (self.core, "core"),
                (self.uncore, "uncore"),
                (self.dram, "dram"),
            ] {
                if on {
                    zones.push((format!("intel-rapl:{p}:{sub}"), name.to_string()));
                    sub += 1;
                }
            }
        }
        if self.psys {
            zones.push((format!("intel-rapl:{}", self.packages), "psys".to_string()));
        }
        if self.mmio {
            zones.push(("intel-rapl-mmio:0".to_string(), "package-0".to_string()));
        }
        let mut tree = PowercapTree {
            root: root.to_path_buf(),
            zones: Vec::new(),
            max_energy_range_uj: self.max_energy_range_uj,
        };
        for (dir, name) in zones {
            let path = root.join(&dir);
            fs::create_dir_all(&path)?;
            fs::write(path.join("name"), format!("{name}\n"))?;
            fs::write(
                path.join("max_energy_range_uj"),
                format!("{}\n", self.max_energy_range_uj),
            )?;
            fs::write(path.join("enabled"), "1\n")?;
            match self.broken.iter().find(|(z, _)| *z == dir).map(|b| b.1) {
                Some(BrokenZone::MissingEnergy) => {}
                Some(BrokenZone::EnergyIsDirectory) => fs::create_dir_all(path.join("energy_uj"))?,
                None => {
                    File::create(path.join("energy_uj"))?;
                    tree.zones.push(dir.clone());
                    tree.set_energy_uj(&dir, self.initial_energy_uj)?;
                }
            }
        }
        Ok(tree)
    }
}

/// A powercap tree on disk whose counters tests move.
#[derive(Debug, Clone)]
pub struct PowercapTree {
    root: PathBuf,
    zones: Vec<String>,
    max_energy_range_uj: u64,
}

impl PowercapTree {
    /// A builder with one package, core and dram.
    pub fn builder() -> PowercapTreeBuilder {
        PowercapTreeBuilder::default()
    }

    /// The tree's root (pass as `powercap_root`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Zones with a counter, by directory name.
    pub fn zones(&self) -> &[String] {
        &self.zones
    }

    fn energy_path(&self, zone: &str) -> PathBuf {
        self.root.join(zone).join("energy_uj")
    }

    /// Sets a zone's `energy_uj`. Written in place at a fixed width so a
    /// concurrent reader never sees an empty file.
    pub fn set_energy_uj(&self, zone: &str, uj: u64) -> io::Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .open(self.energy_path(zone))?;
        f.write_all_at(format!("{uj:020}\n").as_bytes(), 0)
    }

    /// A zone's current `energy_uj`.
    pub fn energy_uj(&self, zone: &str) -> io::Result<u64> {
        fs::read_to_string(self.energy_path(zone))?
            .trim()
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e}")))
    }

    /// Adds energy to a zone, wrapping past `max_energy_range_uj` like the
    /// hardware. Returns whether it wrapped.
    pub fn add_energy_uj(&self, zone: &str, uj: u64) -> io::Result<bool> {
        let modulus = self.max_energy_range_uj as u128 + 1;
        let next = self.energy_uj(zone)? as u128 + uj as u128;
        self.set_energy_uj(zone, (next % modulus) as u64)?;
        Ok(next >= modulus)
    }

    /// Starts a thread that advances `zone` at `watts`, every `step_ns`,
    /// by the energy of the time actually elapsed (so the total matches the
    /// power exactly, whatever the thread's scheduling).
    pub fn drive(&self, zone: &str, watts: f64, step_ns: u64) -> PowerDriver {
        let tree = self.clone();
        let zone = zone.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_thread = Arc::clone(&stop);
        let start = MonotonicNs::now();
        let handle = std::thread::spawn(move || {
            let mut added_uj: u128 = 0;
            while !stop_thread.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_nanos(step_ns));
                let due_uj =
                    (watts * MonotonicNs::now().saturating_sub(start) as f64 * 1e-3) as u128;
                if due_uj > added_uj {
                    if tree
                        .add_energy_uj(&zone, (due_uj - added_uj) as u64)
                        .is_err()
                    {
                        break;
                    }
                    added_uj = due_uj;
                }
            }
            added_uj
        });
        PowerDriver {
            stop,
            handle: Some(handle),
            start,
        }
    }
}

/// A thread advancing a fixture counter at a known power.
#[derive(Debug)]
pub struct PowerDriver {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<u128>>,
    start: MonotonicNs,
}

impl PowerDriver {
    /// When driving started.
    pub fn start(&self) -> MonotonicNs {
        self.start
    }

    /// Stops the thread; returns the microjoules it added.
    pub fn stop(mut self) -> u128 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().and_then(|h| h.join().ok()).unwrap_or(0)
    }
}

impl Drop for PowerDriver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Builds MSR device images (`<root>/msr/<cpu>/msr`, read with `pread` at
/// the register's offset, 8 bytes little-endian) and the CPU topology the MSR path reads
/// (`<root>/cpu/cpu<N>/topology/{physical_package_id,core_id}`). Files are
/// sparse: the AMD registers sit above 3 GiB.
#[derive(Debug, Clone)]
pub struct MsrImage {
    root: PathBuf,
    vendor: crate::msr::MsrVendor,
    cpus_per_package: u32,
    packages: u32,
}

impl MsrImage {
    /// Writes an image: `packages` × `cpus_per_package` CPUs (each its own
    /// core), energy unit 1/2^`esu` J, every energy register of the layout
    /// set to a non-zero start value, except DRAM when `dram` is false and
    /// Intel PP1 (left at 0, as on servers).
    pub fn build(
        root: &Path,
        vendor: crate::msr::MsrVendor,
        packages: u32,
        cpus_per_package: u32,
        esu: u8,
        dram: bool,
    ) -> io::Result<MsrImage> {
        use crate::msr::*;
        let image = MsrImage {
            root: root.to_path_buf(),
            vendor,
            cpus_per_package,
            packages,
        };
        let unit = 0x000A_0003u64 | ((esu as u64 & 0x1f) << 8);
        for cpu in 0..packages * cpus_per_package {
            let dir = image.msr_root().join(cpu.to_string());
            fs::create_dir_all(&dir)?;
            File::create(dir.join("msr"))?;
            let topo = image
                .cpu_sysfs_root()
                .join(format!("cpu{cpu}"))
                .join("topology");
            fs::create_dir_all(&topo)?;
            fs::write(
                topo.join("physical_package_id"),
                format!("{}\n", cpu / cpus_per_package),
            )?;
            fs::write(
                topo.join("core_id"),
                format!("{}\n", cpu % cpus_per_package),
            )?;
            match vendor {
                MsrVendor::Intel => {
                    image.set_register(cpu, INTEL_POWER_UNIT, unit)?;
                    image.set_register(cpu, INTEL_PKG_ENERGY, 1000)?;
                    image.set_register(cpu, INTEL_PP0_ENERGY, 1000)?;
                    image.set_register(cpu, INTEL_PP1_ENERGY, 0)?;
                    image.set_register(cpu, INTEL_DRAM_ENERGY, if dram { 1000 } else { 0 })?;
                    image.set_register(cpu, INTEL_PSYS_ENERGY, 1000)?;
                }
                MsrVendor::Amd => {
                    image.set_register(cpu, AMD_POWER_UNIT, unit)?;
                    image.set_register(cpu, AMD_CORE_ENERGY, 1000)?;
                    image.set_register(cpu, AMD_PKG_ENERGY, 1000)?;
                }
            }
        }
        Ok(image)
    }

    /// Pass as `msr_root`.
    pub fn msr_root(&self) -> PathBuf {
        self.root.join("msr")
    }

    /// Pass as `cpu_sysfs_root`.
    pub fn cpu_sysfs_root(&self) -> PathBuf {
        self.root.join("cpu")
    }

    /// The register addressing of this image: pass to
    /// [`crate::msr::open_all_with`].
    pub fn addressing(&self) -> crate::msr::MsrAddressing {
        match self.vendor {
            crate::msr::MsrVendor::Intel => crate::msr::MsrAddressing::Device,
            crate::msr::MsrVendor::Amd => crate::msr::MsrAddressing::EightBytesPerRegister,
        }
    }

    /// The layout written.
    pub fn vendor(&self) -> crate::msr::MsrVendor {
        self.vendor
    }

    /// CPUs in the image.
    pub fn cpus(&self) -> u32 {
        self.packages * self.cpus_per_package
    }

    /// Writes a register (8 bytes little-endian at its address).
    pub fn set_register(&self, cpu: u32, register: u64, value: u64) -> io::Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .open(self.msr_root().join(cpu.to_string()).join("msr"))?;
        f.write_all_at(&value.to_le_bytes(), self.addressing().offset(register))
    }

    /// Reads a register.
    pub fn register(&self, cpu: u32, register: u64) -> io::Result<u64> {
        let f = File::open(self.msr_root().join(cpu.to_string()).join("msr"))?;
        let mut buf = [0u8; 8];
        f.read_exact_at(&mut buf, self.addressing().offset(register))?;
        Ok(u64::from_le_bytes(buf))
    }

    /// Adds `units` to a 32-bit energy-status register, wrapping like the
    /// hardware. Returns whether it wrapped.
    pub fn add_units(&self, cpu: u32, register: u64, units: u64) -> io::Result<bool> {
        let next = (self.register(cpu, register)? & 0xffff_ffff) + units;
        self.set_register(cpu, register, next & 0xffff_ffff)?;
        Ok(next > 0xffff_ffff)
    }
}

/// Writes a perf `power` PMU description like
/// `/sys/bus/event_source/devices/power` under `<root>/power`.
pub fn write_power_pmu(
    root: &Path,
    pmu_type: u32,
    cpumask: &str,
    events: &[(&str, u64)],
) -> io::Result<()> {
    let dir = root.join("power");
    fs::create_dir_all(dir.join("events"))?;
    fs::create_dir_all(dir.join("format"))?;
    fs::write(dir.join("type"), format!("{pmu_type}\n"))?;
    fs::write(dir.join("cpumask"), format!("{cpumask}\n"))?;
    fs::write(dir.join("format").join("event"), "config:0-7\n")?;
    for (name, event) in events {
        let base = dir.join("events");
        fs::write(base.join(name), format!("event=0x{event:02x}\n"))?;
        fs::write(
            base.join(format!("{name}.scale")),
            "2.3283064365386962890625e-10\n",
        )?;
        fs::write(base.join(format!("{name}.unit")), "Joules\n")?;
    }
    Ok(())
}

/// Writes a `/proc/stat` with `cpus` CPUs and the given cumulative busy and
/// idle ticks (split evenly over the CPUs).
pub fn write_proc_stat(
    proc_root: &Path,
    cpus: u32,
    busy_ticks: u64,
    idle_ticks: u64,
) -> io::Result<()> {
    let mut text = format!("cpu  {busy_ticks} 0 0 {idle_ticks} 0 0 0 0 0 0\n");
    for c in 0..cpus {
        text += &format!(
            "cpu{c} {} 0 0 {} 0 0 0 0 0 0\n",
            busy_ticks / cpus as u64,
            idle_ticks / cpus as u64
        );
    }
    text += "intr 0\nctxt 0\nbtime 0\nprocesses 1\nprocs_running 1\nprocs_blocked 0\n";
    fs::create_dir_all(proc_root)?;
    fs::write(proc_root.join("stat"), text)
}

/// One mock GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct MockGpu {
    /// Name and generation.
    pub info: crate::nvml::GpuDeviceInfo,
    /// Total energy counter in mJ, or `None` when unsupported.
    pub total_energy_mj: Option<u64>,
    /// `NVML_FI_DEV_POWER_INSTANT` in mW, or `None` when unsupported.
    pub instant_power_mw: Option<u32>,
    /// `power_usage` in mW, or `None` when unsupported.
    pub power_usage_mw: Option<u32>,
    /// Per-process utilisation samples.
    pub processes: Vec<crate::nvml::GpuProcessUtilization>,
    /// Every query fails with "device lost".
    pub lost: bool,
}

/// A [`GpuProvider`](crate::nvml::GpuProvider) over mock GPUs whose values
/// tests change while sources read them.
#[derive(Debug, Default)]
pub struct MockGpuProvider {
    gpus: std::sync::Mutex<Vec<MockGpu>>,
}

impl MockGpuProvider {
    /// A provider over these GPUs.
    pub fn new(gpus: Vec<MockGpu>) -> Self {
        Self {
            gpus: std::sync::Mutex::new(gpus),
        }
    }

    /// Changes one GPU.
    pub fn update(&self, index: u32, change: impl FnOnce(&mut MockGpu)) {
        let mut gpus = self
            .gpus
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(g) = gpus.get_mut(index as usize) {
            change(g);
        }
    }

    fn with<T>(
        &self,
        index: u32,
        f: impl FnOnce(&MockGpu) -> Result<T, crate::nvml::GpuError>,
    ) -> Result<T, crate::nvml::GpuError> {
        use crate::nvml::GpuError;
        let gpus = self
            .gpus
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let g = gpus
            .get(index as usize)
            .ok_or_else(|| GpuError::Other(format!("no GPU {index}")))?;
        if g.lost {
            return Err(GpuError::Lost(format!("GPU {index} fell off the bus")));
        }
        f(g)
    }
}

fn unsupported<T>(v: Option<T>, what: &str) -> Result<T, crate::nvml::GpuError> {
    v.ok_or_else(|| crate::nvml::GpuError::NotSupported(what.to_string()))
}

impl crate::nvml::GpuProvider for MockGpuProvider {
    fn device_count(&self) -> Result<u32, crate::nvml::GpuError> {
        Ok(self
            .gpus
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len() as u32)
    }
    fn device_info(&self, index: u32) -> Result<crate::nvml::GpuDeviceInfo, crate::nvml::GpuError> {
        self.with(index, |g| Ok(g.info.clone()))
    }
    fn total_energy_mj(&self, index: u32) -> Result<u64, crate::nvml::GpuError> {
        self.with(index, |g| unsupported(g.total_energy_mj, "total energy"))
    }
    fn power_usage_mw(&self, index: u32) -> Result<u32, crate::nvml::GpuError> {
        self.with(index, |g| unsupported(g.power_usage_mw, "power usage"))
    }
    fn instant_power_mw(&self, index: u32) -> Result<u32, crate::nvml::GpuError> {
        self.with(index, |g| unsupported(g.instant_power_mw, "instant power"))
    }
    fn process_utilization(
        &self,
        index: u32,
        since_us: u64,
    ) -> Result<Vec<crate::nvml::GpuProcessUtilization>, crate::nvml::GpuError> {
        self.with(index, |g| {
            Ok(g.processes
                .iter()
                .filter(|p| p.timestamp_us > since_us)
                .copied()
                .collect())
        })
    }
}

/// A cgroup v2 tree like `/sys/fs/cgroup`: directories with a `cpu.stat`
/// each, whose `usage_usec` is changed in place (same inode, fixed width),
/// as the kernel's files are regenerated at each read.
#[derive(Debug, Clone)]
pub struct CgroupTree {
    root: PathBuf,
}

impl CgroupTree {
    /// A tree at `root` holding only the root cgroup.
    pub fn new(root: &Path) -> io::Result<CgroupTree> {
        let tree = CgroupTree {
            root: root.to_path_buf(),
        };
        tree.add("")?;
        Ok(tree)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of the cgroup at `relative` (`system.slice/x.service`).
    pub fn dir(&self, relative: &str) -> PathBuf {
        self.root.join(relative.trim_start_matches('/'))
    }

    /// Creates the cgroup at `relative` and its parents, each with a
    /// `cpu.stat` at zero usage (an existing one is left as it is).
    pub fn add(&self, relative: &str) -> io::Result<PathBuf> {
        let dir = self.dir(relative);
        fs::create_dir_all(&dir)?;
        let mut at = dir.clone();
        loop {
            let stat = at.join("cpu.stat");
            if !stat.exists() {
                fs::write(&stat, cpu_stat_text(0))?;
            }
            if at == self.root || !at.pop() {
                break;
            }
        }
        Ok(dir)
    }

    /// Removes the cgroup at `relative` (a stopped unit): its open
    /// `cpu.stat` then reads as the kernel's would not (here: the file is
    /// unlinked and its directory gone; readers holding it open find the
    /// directory missing when they look again).
    pub fn remove(&self, relative: &str) -> io::Result<()> {
        fs::remove_dir_all(self.dir(relative))
    }

    /// Sets `usage_usec` of the cgroup at `relative`, in place.
    pub fn set_usage_usec(&self, relative: &str, usec: u64) -> io::Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .open(self.dir(relative).join("cpu.stat"))?;
        f.write_all_at(cpu_stat_text(usec).as_bytes(), 0)
    }

    /// `usage_usec` of the cgroup at `relative`.
    pub fn usage_usec(&self, relative: &str) -> io::Result<u64> {
        let text = fs::read(self.dir(relative).join("cpu.stat"))?;
        crate::cgroup::parse_usage_usec(&text)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no usage_usec"))
    }
}

/// A `cpu.stat` text at a fixed width (so rewriting it in place never
/// leaves a shorter text's tail behind).
fn cpu_stat_text(usec: u64) -> String {
    format!(
        "usage_usec {usec:020}\nuser_usec {usec:020}\nsystem_usec {:020}\nnr_periods 0\n",
        0
    )
}

/// Writes `<proc_root>/stat` in place at a fixed width: `cpus` CPUs with
/// the given cumulative busy and idle ticks (split evenly). Unlike
/// [`write_proc_stat`], a reader holding the file open never sees it
/// empty or short.
pub fn write_proc_stat_in_place(
    proc_root: &Path,
    cpus: u32,
    busy_ticks: u64,
    idle_ticks: u64,
) -> io::Result<()> {
    let mut text = format!("cpu  {busy_ticks:020} 0 0 {idle_ticks:020} 0 0 0 0 0 0\n");
    for c in 0..cpus {
        text += &format!(
            "cpu{c} {:020} 0 0 {:020} 0 0 0 0 0 0\n",
            busy_ticks / cpus as u64,
            idle_ticks / cpus as u64
        );
    }
    text += "intr 0\nctxt 0\nbtime 0\nprocesses 1\nprocs_running 1\nprocs_blocked 0\n";
    fs::create_dir_all(proc_root)?;
    let path = proc_root.join("stat");
    if !path.exists() {
        File::create(&path)?;
    }
    let f = OpenOptions::new().write(true).open(&path)?;
    f.write_all_at(text.as_bytes(), 0)
}

/// A thread advancing a fixture machine's CPU time (`<proc_root>/stat`)
/// and fixture cgroups' `usage_usec` at known loads: `busy_cpus` of the
/// machine's `cpus` busy, each listed cgroup using its CPUs, all by the
/// wall time actually elapsed.
#[derive(Debug)]
pub struct CpuLoadDriver {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl CpuLoadDriver {
    /// Starts driving every `step_ns`. Ticks are at 100 per second (the
    /// fixture `/proc/stat`'s USER_HZ).
    pub fn start(
        proc_root: &Path,
        cpus: u32,
        busy_cpus: f64,
        cgroups: Vec<(CgroupTree, String, f64)>,
        step_ns: u64,
    ) -> io::Result<CpuLoadDriver> {
        let proc_root = proc_root.to_path_buf();
        write_proc_stat_in_place(&proc_root, cpus, 0, 0)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_thread = Arc::clone(&stop);
        let start = MonotonicNs::now();
        let ticks_per_ns = crate::procstat::ns_per_tick() as f64;
        let handle = std::thread::spawn(move || {
            while !stop_thread.load(Ordering::Relaxed) {
                let elapsed = MonotonicNs::now().saturating_sub(start) as f64;
                let busy = (busy_cpus * elapsed / ticks_per_ns) as u64;
                let total = (cpus as f64 * elapsed / ticks_per_ns) as u64;
                if write_proc_stat_in_place(&proc_root, cpus, busy, total - busy.min(total))
                    .is_err()
                {
                    break;
                }
                for (tree, relative, cg_cpus) in &cgroups {
                    // A removed cgroup (a stopped unit) is simply skipped.
                    let _ = tree.set_usage_usec(relative, (cg_cpus * elapsed / 1e3) as u64);
                }
                std::thread::sleep(std::time::Duration::from_nanos(step_ns));
            }
        });
        Ok(CpuLoadDriver {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for CpuLoadDriver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
