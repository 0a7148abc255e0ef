//! Energy measured by energyd: the [`EnergyMeter`] the binary uses.
//!
//! The calibrating process registers itself, reports each microbenchmark
//! window as one span named after its kernel type (so the daemon's
//! per-kernel breakdown sees it too), and asks for its breakdown over
//! exactly that window. The figure used is the energy attributed to the
//! process over the window, summed over domains: during the window the
//! process runs nothing but that kernel, so it is the kernel's energy
//! whatever method the daemon uses for per-kernel splits.

use crate::microbench::{EnergyMeter, MeteredEnergy};
use shared::client::{Client, ClientError};
use shared::protocol::{Breakdown, SpanBatch};
use shared::{MonotonicNs, Provenance, SourceInfo};
use std::path::Path;
use std::time::Duration;

/// How long to wait after a window before asking for its energy, by
/// default: the daemon samples process activity every 10 ms, so the sample
/// that closes the window arrives up to one period later, later still when
/// a loaded machine delays the sampler; ten periods leave margin.
pub const SETTLE: Duration = Duration::from_millis(100);

/// energyd, measuring the calling process.
pub struct DaemonMeter {
    client: Client,
    pid: u32,
    tid: u32,
    settle: Duration,
}

impl DaemonMeter {
    /// Connects to `socket` and registers this process (with its children:
    /// kernel thread pools are threads, but a runner may fork).
    pub fn connect(socket: &Path, client_name: &str) -> Result<Self, ClientError> {
        let mut client = Client::connect(socket, client_name)?;
        let pid = std::process::id();
        client.register_process(pid, true)?;
        Ok(DaemonMeter {
            client,
            pid,
            tid: nix::unistd::gettid().as_raw() as u32,
            settle: SETTLE,
        })
    }

    /// Waits `settle` (instead of [`SETTLE`]) after each window before
    /// asking for its energy.
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// The daemon's sources.
    pub fn sources(&mut self) -> Result<Vec<SourceInfo>, ClientError> {
        self.client.sources()
    }

    /// Breakdown of this process over `[from, to]`.
    pub fn breakdown(
        &mut self,
        from: MonotonicNs,
        to: MonotonicNs,
    ) -> Result<Breakdown, ClientError> {
        self.client.breakdown(self.pid, Some(from), Some(to))
    }

    /// The underlying client (for spans submitted by a trainer).
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// Energy attributed to the process in a breakdown: the sum of its domain
/// shares, with uncertainties added in quadrature (domains are measured
/// independently) and the weakest provenance.
pub fn process_energy(breakdown: &Breakdown) -> Option<MeteredEnergy> {
    if breakdown.domains.is_empty() {
        return None;
    }
    let joules = breakdown.domains.iter().map(|d| d.process_j).sum();
    let uncertainty_j = breakdown
        .domains
        .iter()
        .map(|d| d.uncertainty_j * d.uncertainty_j)
        .sum::<f64>()
        .sqrt();
    let provenance = breakdown
        .domains
        .iter()
        .map(|d| d.provenance)
        .reduce(Provenance::combine)
        .unwrap_or(Provenance::Estimated);
    Some(MeteredEnergy {
        joules,
        uncertainty_j,
        provenance,
    })
}

impl EnergyMeter for DaemonMeter {
    fn measure(
        &mut self,
        kernel: &str,
        from: MonotonicNs,
        to: MonotonicNs,
    ) -> Result<MeteredEnergy, String> {
        let mut batch = SpanBatch::default();
        batch.push(kernel, from, to, self.pid, self.tid);
        self.client
            .submit_spans(&batch)
            .map_err(|e| format!("submitting the span: {e}"))?;
        std::thread::sleep(self.settle);
        let breakdown = self
            .breakdown(from, to)
            .map_err(|e| format!("asking the breakdown: {e}"))?;
        process_energy(&breakdown).ok_or_else(|| {
            format!(
                "energyd reported no energy domains for the window ({})",
                breakdown.notes.join("; ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::protocol::DomainShare;
    use shared::SourceId;

    fn share(process_j: f64, uncertainty_j: f64, provenance: Provenance) -> DomainShare {
        DomainShare {
            source: SourceId(0),
            machine_j: process_j * 2.0,
            process_j,
            process_dynamic_j: process_j / 2.0,
            activity_share: 0.5,
            unattributed_j: 0.0,
            uncertainty_j,
            provenance,
        }
    }

    #[test]
    fn domains_are_summed_with_weakest_provenance() {
        let b = Breakdown {
            pid: 1,
            from: MonotonicNs(0),
            to: MonotonicNs(1),
            domains: vec![
                share(2.0, 0.3, Provenance::Measured),
                share(1.0, 0.4, Provenance::Estimated),
            ],
            kernels: vec![],
            notes: vec![],
        };
        let e = process_energy(&b).unwrap();
        assert!((e.joules - 3.0).abs() < 1e-12);
        assert!((e.uncertainty_j - 0.5).abs() < 1e-12);
        assert_eq!(e.provenance, Provenance::Estimated);
        let empty = Breakdown {
            domains: vec![],
            ..b
        };
        assert!(process_energy(&empty).is_none());
    }
}
