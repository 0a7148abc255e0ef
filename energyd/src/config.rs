//! The daemon's configuration file (TOML) and its defaults.
//!
//! Every limit has its default here, with the reason for it; ARCHITECTURE.md
//! ("Security policy") repeats the ones that protect users from each other.

use anyhow::Context;
use sampling::activity::ActivityConfig;
use sampling::discovery::SourcesConfig;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Whole configuration file. Every section and key is optional.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listener settings.
    pub server: ServerConfig,
    /// Limits for unprivileged peers.
    pub policy: PolicyConfig,
    /// History kept per source.
    pub history: HistoryConfig,
    /// Adaptive sampling rate.
    pub sampling: SamplingConfig,
    /// Process activity tracking.
    pub activity: ActivityConfig,
    /// Which energy sources to open (see [`SourcesConfig`] for every key
    /// and its default). The command-line flags `--powercap-root DIR` and
    /// `--msr-root DIR` override `powercap_root` and `msr_root` here, so
    /// the RAPL sources can be pointed at a fixture tree or at a host tree
    /// mounted elsewhere in a container without editing the file.
    pub sources: SourcesConfig,
    /// Control groups (systemd units, containers) tracked like processes.
    pub cgroups: CgroupsConfig,
    /// The Prometheus/OpenMetrics exporter (off unless enabled).
    pub exporter: ExporterConfig,
}

/// `[cgroups]`: control groups tracked like process trees.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CgroupsConfig {
    /// The cgroup v2 hierarchy. Default: the `cgroup2` mount named in
    /// `<activity.proc_root>/self/mountinfo` (`/sys/fs/cgroup`, or
    /// `/sys/fs/cgroup/unified` on a hybrid hierarchy). A fixture tree in
    /// tests, or the host's hierarchy mounted elsewhere in a container.
    pub root: Option<PathBuf>,
    /// Cgroups one unprivileged uid may track at once. Default 16: a user's
    /// own units (under `user@UID.service`) are few, and each costs one
    /// read per tracker period.
    pub max_tracked_per_uid: usize,
}

impl Default for CgroupsConfig {
    fn default() -> Self {
        CgroupsConfig {
            root: None,
            max_tracked_per_uid: 16,
        }
    }
}

/// Resolution of machine-wide readings on the exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineResolution {
    /// As unprivileged clients get them (the default): counters advance
    /// only at whole `policy.min_window_ms` windows and are rounded to
    /// `policy.energy_quantum_j`. Anyone who can reach the port reads them.
    #[default]
    Coarse,
    /// Counters at the latest sample, unrounded: the operator opts out of
    /// the side-channel protection for whoever can reach the port.
    Full,
}

/// `[exporter]`: Prometheus/OpenMetrics metrics over HTTP (`GET /metrics`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExporterConfig {
    /// Serve metrics. Default false; `energyd --metrics-address ADDR` turns
    /// it on too.
    pub enabled: bool,
    /// Address to listen on. Default `127.0.0.1:9477` (loopback only).
    pub listen: std::net::SocketAddr,
    /// Allow a non-loopback `listen` address. Default false: the metrics
    /// carry no authentication, and who reaches the port sees every series.
    pub allow_non_loopback: bool,
    /// Machine-wide readings `coarse` (default) or `full`.
    pub machine_resolution: MachineResolution,
    /// Systemd units tracked from start-up and exported
    /// (`energyd_cgroup_energy_joules_total{unit=...}`).
    pub units: Vec<String>,
    /// Cgroup paths (relative to the cgroup root, as `/proc/PID/cgroup`
    /// prints them) tracked from start-up and exported.
    pub cgroups: Vec<String>,
    /// Uids whose tracked processes (registered by clients, `energyctl
    /// run`) are exported per process. Default none: one uid's activity is
    /// private unless the operator says otherwise.
    pub process_uids: Vec<u32>,
    /// HTTP connections served at once; beyond, a connection is closed at
    /// once. Default 8: Prometheus keeps one per server scraping.
    pub max_connections: usize,
    /// A connection is closed this long after it opened, whatever it is
    /// doing (a scraper that reads slowly, or idles on keep-alive, cannot
    /// hold a slot longer). Default 60 s; Prometheus reconnects on its own.
    pub connection_timeout_ms: u64,
}

impl Default for ExporterConfig {
    fn default() -> Self {
        ExporterConfig {
            enabled: false,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9477)),
            allow_non_loopback: false,
            machine_resolution: MachineResolution::Coarse,
            units: Vec::new(),
            cgroups: Vec::new(),
            process_uids: Vec::new(),
            max_connections: 8,
            connection_timeout_ms: 60_000,
        }
    }
}

/// Listener settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Socket path; the command line's `--socket` wins over it.
    pub socket: Option<PathBuf>,
    /// Mode of the socket file, octal string. Default `"0666"` in system
    /// mode (any local user may connect; what they see is decided per peer
    /// by SO_PEERCRED, not by the file mode) and `"0600"` in user mode.
    pub socket_mode: Option<String>,
    /// Members of this group are privileged like root (see `policy`).
    pub privileged_group: Option<String>,
    /// Connections served at once. 256 covers a search with many workers
    /// plus tools, and bounds memory at 256 × the maximal frame. A peer
    /// beyond it is answered `ResourceExhausted` and closed at once (never
    /// left waiting in the backlog, where one uid's idle connections made
    /// everyone, root included, time out).
    pub max_connections: usize,
    /// Connections one unprivileged uid may hold at once. Default 32: a
    /// search with 16 workers, each with a trainer connection and a probe,
    /// still fits; one uid can take at most an eighth of the slots.
    pub max_connections_per_uid: usize,
    /// Slots of `max_connections` only privileged peers may take. Default
    /// 16: root (and the privileged group) can always connect to look at,
    /// or stop, a daemon under attack.
    pub reserved_privileged_connections: usize,
    /// A peer must complete the handshake within this time, so idle
    /// connections cannot pin connection slots.
    pub handshake_timeout_ms: u64,
    /// An unprivileged connection with no request for this long is closed.
    /// Default 60 s: a trainer flushes spans every few seconds (the shared
    /// client's uploader flushes at least every 5 s) and clients reconnect
    /// on their own, while abandoned or hostile idle connections free their
    /// slot within a minute.
    pub idle_timeout_ms: u64,
    /// The same for privileged peers. Default 15 min: operators' tools.
    pub privileged_idle_timeout_ms: u64,
    /// Largest accepted frame payload (at most the protocol's 1 MiB).
    pub max_frame_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            socket: None,
            socket_mode: None,
            privileged_group: None,
            max_connections: 256,
            max_connections_per_uid: 32,
            reserved_privileged_connections: 16,
            handshake_timeout_ms: 5_000,
            idle_timeout_ms: 60_000,
            privileged_idle_timeout_ms: 15 * 60_000,
            max_frame_bytes: shared::frame::MAX_FRAME_LEN,
        }
    }
}

/// Limits for unprivileged peers (root and the privileged group are exempt).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Machine-wide energy and power are given to unprivileged peers only
    /// over windows of at least this length, aligned to a grid of this step.
    /// Platypus (CVE-2020-8694/8695) needed RAPL readings every few tens of
    /// microseconds to tell instructions and operands apart; 100 ms windows
    /// average over ~10^5 times more activity, and are still fine enough for
    /// a person watching power.
    pub min_window_ms: u64,
    /// Machine-wide energy for unprivileged peers is rounded to a multiple of
    /// this. 0.01 J over the 100 ms minimum window is a 0.1 W power step:
    /// ample for watching a machine, far coarser than RAPL's 61 µJ.
    pub energy_quantum_j: f64,
    /// Sustained requests per second per uid; a training loop needs about
    /// one span batch a second, a dashboard a few queries.
    pub requests_per_sec: f64,
    /// Burst allowance of the per-uid token bucket.
    pub burst: f64,
    /// Processes one uid may track at once (bounds per-uid memory).
    pub max_tracked_per_uid: usize,
    /// Spans kept per tracked process; the oldest are dropped past this.
    /// 1 M spans of 32 bytes is 32 MiB, about 15 minutes of a trainer
    /// emitting 1 000 kernels a second.
    pub max_spans_per_process: usize,
    /// Spans kept for one uid over all its processes, privileged uids
    /// included; further spans are refused (and counted in the answer).
    /// Default 2 M (~64 MiB): two trainers' worth of a full history window
    /// (issue 12: one uid held 1.6 GiB through 64 processes).
    pub max_spans_per_uid: usize,
    /// Spans kept in all. Default 8 M (~256 MiB): the daemon's span memory
    /// whatever the number of uids.
    pub max_spans_total: usize,
    /// Breakdowns running at once for unprivileged callers, all uids
    /// together. Default 2 (one per core of a small machine): a breakdown
    /// over 1 M spans takes seconds of CPU and hundreds of MiB.
    pub max_concurrent_breakdowns: usize,
    /// Of those, for one uid. Default 1.
    pub max_concurrent_breakdowns_per_uid: usize,
    /// A breakdown costs one request token plus one per this many spans it
    /// considers, from the uid's token bucket, so the rate limit counts
    /// work, not requests. Default 10 000: a breakdown over a full process
    /// (1 M spans, ~2.5 s of CPU) costs 100 tokens, 2 s of the sustained
    /// rate.
    pub breakdown_spans_per_token: u64,
    /// Span-batch ids remembered per uid for idempotent submission
    /// (`SubmitSpansOnce`): a retried batch whose answer was lost is
    /// answered again, not stored twice. Default 1 024 (a trainer retries
    /// within seconds; 16 bytes each).
    pub remembered_batches_per_uid: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            min_window_ms: 100,
            energy_quantum_j: 0.01,
            requests_per_sec: 50.0,
            burst: 200.0,
            max_tracked_per_uid: 64,
            max_spans_per_process: 1_000_000,
            max_spans_per_uid: 2_000_000,
            max_spans_total: 8_000_000,
            max_concurrent_breakdowns: 2,
            max_concurrent_breakdowns_per_uid: 1,
            breakdown_spans_per_token: 10_000,
            remembered_batches_per_uid: 1_024,
        }
    }
}

/// History kept per source.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Seconds of samples kept per source (default 10 minutes: long enough
    /// to attribute a training epoch after it ends).
    pub window_s: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig { window_s: 600 }
    }
}

/// Adaptive sampling: full rate while someone needs it, a low rate
/// otherwise (issue 12, item 10: the sampler cost 5.7 % of a core at 1 kHz
/// whether or not anyone measured anything).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingConfig {
    /// Period at which every source is read while no process is tracked,
    /// no client is subscribed and no query came in the last
    /// `full_rate_hold_ms`. Default 100 ms (10 Hz): an idle daemon costs
    /// about the machine's wake-up floor, and the history still covers
    /// every moment (at a coarser step, with the uncertainty that follows).
    /// 0 disables adaptation (always the sources' own periods).
    pub idle_period_ms: u64,
    /// After a query, the full rate is kept this long. Default 10 s: a
    /// dashboard polling every few seconds, or an `energyctl` session,
    /// keeps full resolution throughout, while a one-off query lets the
    /// daemon fall back soon after.
    pub full_rate_hold_ms: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            idle_period_ms: 100,
            full_rate_hold_ms: 10_000,
        }
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> anyhow::Result<()> {
        let p = &self.policy;
        anyhow::ensure!(p.min_window_ms > 0, "policy.min_window_ms must be > 0");
        anyhow::ensure!(
            p.energy_quantum_j >= 0.0,
            "policy.energy_quantum_j must be >= 0"
        );
        anyhow::ensure!(
            p.requests_per_sec > 0.0,
            "policy.requests_per_sec must be > 0"
        );
        anyhow::ensure!(p.burst >= 1.0, "policy.burst must be >= 1");
        anyhow::ensure!(
            self.server.max_connections > 0,
            "server.max_connections must be > 0"
        );
        anyhow::ensure!(
            self.server.max_connections_per_uid > 0,
            "server.max_connections_per_uid must be > 0"
        );
        anyhow::ensure!(
            self.server.reserved_privileged_connections < self.server.max_connections,
            "server.reserved_privileged_connections must be below server.max_connections"
        );
        anyhow::ensure!(
            self.server.idle_timeout_ms > 0 && self.server.privileged_idle_timeout_ms > 0,
            "server idle timeouts must be > 0"
        );
        anyhow::ensure!(
            p.max_concurrent_breakdowns > 0 && p.max_concurrent_breakdowns_per_uid > 0,
            "policy.max_concurrent_breakdowns and _per_uid must be > 0"
        );
        anyhow::ensure!(
            p.breakdown_spans_per_token > 0,
            "policy.breakdown_spans_per_token must be > 0"
        );
        anyhow::ensure!(
            self.server.max_frame_bytes > 0
                && self.server.max_frame_bytes <= shared::frame::MAX_FRAME_LEN,
            "server.max_frame_bytes must be in 1..={}",
            shared::frame::MAX_FRAME_LEN
        );
        anyhow::ensure!(self.history.window_s > 0, "history.window_s must be > 0");
        anyhow::ensure!(
            self.activity.period_ns > 0,
            "activity.period_ns must be > 0"
        );
        if let Some(mode) = &self.server.socket_mode {
            parse_mode(mode)?;
        }
        let e = &self.exporter;
        anyhow::ensure!(
            e.allow_non_loopback || e.listen.ip().is_loopback(),
            "exporter.listen = {} is not a loopback address: set exporter.allow_non_loopback = true \
             to serve metrics beyond this machine",
            e.listen
        );
        anyhow::ensure!(
            e.max_connections > 0 && e.connection_timeout_ms > 0,
            "exporter.max_connections and exporter.connection_timeout_ms must be > 0"
        );
        for unit in &e.units {
            sampling::cgroup::validate_unit_name(unit)
                .with_context(|| format!("exporter.units: {unit:?}"))?;
        }
        for path in &e.cgroups {
            sampling::cgroup::relative_path(path)
                .with_context(|| format!("exporter.cgroups: {path:?}"))?;
        }
        anyhow::ensure!(
            self.cgroups.max_tracked_per_uid > 0,
            "cgroups.max_tracked_per_uid must be > 0"
        );
        Ok(())
    }

    /// Applies `--powercap-root` and `--msr-root`: each given root replaces
    /// the one from the file (or the default).
    pub fn override_rapl_roots(
        &mut self,
        powercap_root: Option<PathBuf>,
        msr_root: Option<PathBuf>,
    ) {
        if let Some(root) = powercap_root {
            self.sources.powercap_root = root;
        }
        if let Some(root) = msr_root {
            self.sources.msr_root = root;
        }
    }

    /// Applies `--metrics-address`: enables the exporter on that address
    /// (checked like the file's).
    pub fn enable_exporter(&mut self, address: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
        if let Some(address) = address {
            self.exporter.enabled = true;
            self.exporter.listen = address;
            self.validate()?;
        }
        Ok(())
    }

    /// Socket file mode for the given run mode.
    pub fn socket_mode(&self, user_mode: bool) -> u32 {
        self.server
            .socket_mode
            .as_deref()
            .and_then(|m| parse_mode(m).ok())
            .unwrap_or(if user_mode { 0o600 } else { 0o666 })
    }
}

/// Parses an octal mode string such as `"0660"`.
pub fn parse_mode(mode: &str) -> anyhow::Result<u32> {
    let m = u32::from_str_radix(mode.trim_start_matches("0o"), 8)
        .with_context(|| format!("socket_mode {mode:?} is not an octal number"))?;
    anyhow::ensure!(m <= 0o777, "socket_mode {mode:?} is larger than 0777");
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.policy.min_window_ms, 100);
        assert_eq!(c.server.max_connections, 256);
        assert_eq!(c.socket_mode(true), 0o600);
        assert_eq!(c.socket_mode(false), 0o666);
    }

    #[test]
    fn root_flags_override_the_file() {
        let mut c =
            Config::parse("[sources]\npowercap_root = \"/from/file\"\nmsr_root = \"/msr/file\"")
                .unwrap();
        c.override_rapl_roots(Some(PathBuf::from("/fixture/powercap")), None);
        assert_eq!(c.sources.powercap_root, PathBuf::from("/fixture/powercap"));
        assert_eq!(c.sources.msr_root, PathBuf::from("/msr/file"));
        c.override_rapl_roots(None, Some(PathBuf::from("/fixture/msr")));
        assert_eq!(c.sources.msr_root, PathBuf::from("/fixture/msr"));
        let mut d = Config::default();
        d.override_rapl_roots(None, None);
        assert_eq!(
            d.sources.powercap_root,
            PathBuf::from("/sys/class/powercap")
        );
    }

    #[test]
    fn exporter_is_off_by_default_loopback_only_and_checked() {
        let c = Config::parse("").unwrap();
        assert!(!c.exporter.enabled);
        assert!(c.exporter.listen.ip().is_loopback());
        assert_eq!(c.exporter.machine_resolution, MachineResolution::Coarse);
        assert!(c.exporter.process_uids.is_empty());
        assert!(Config::parse("[exporter]\nlisten = \"0.0.0.0:9477\"").is_err());
        let open = Config::parse(
            "[exporter]\nlisten = \"0.0.0.0:9477\"\nallow_non_loopback = true\n\
             machine_resolution = \"full\"\nunits = [\"nginx.service\"]\n\
             cgroups = [\"/system.slice/x.service\"]\nprocess_uids = [1000]",
        )
        .unwrap();
        assert_eq!(open.exporter.machine_resolution, MachineResolution::Full);
        assert!(Config::parse("[exporter]\nunits = [\"nginx\"]").is_err());
        assert!(Config::parse("[exporter]\ncgroups = [\"/a/../../etc\"]").is_err());
        assert!(Config::parse("[exporter]\nmachine_resolution = \"fine\"").is_err());
        let mut flag = Config::default();
        flag.enable_exporter(Some("127.0.0.1:0".parse().unwrap()))
            .unwrap();
        assert!(flag.exporter.enabled);
        assert!(Config::default()
            .enable_exporter(Some("192.0.2.1:9477".parse().unwrap()))
            .is_err());
    }

    #[test]
    fn the_example_config_parses() {
        let c = Config::parse(include_str!("../../docs/energyd.example.toml"))
            .expect("docs/energyd.example.toml");
        assert!(c.exporter.enabled);
        assert_eq!(c.exporter.units, ["nginx.service"]);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(Config::parse("[policy]\nmin_window = 3").is_err());
        assert!(Config::parse("[policy]\nmin_window_ms = 0").is_err());
        assert!(Config::parse("[server]\nsocket_mode = \"0999\"").is_err());
        let c = Config::parse("[server]\nsocket_mode = \"0660\"\nprivileged_group = \"energy\"")
            .unwrap();
        assert_eq!(c.socket_mode(false), 0o660);
    }
}
