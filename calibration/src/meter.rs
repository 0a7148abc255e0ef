//! Energy measured by energyd: the [`EnergyMeter`] the binary uses, over
//! tabular-nn's [`ProcessSession`] (the one client that measures its own
//! process, shared with training runs).
//!
//! The calibrating process registers itself, reports each microbenchmark
//! window as one span named after its kernel type (so the daemon's
//! per-kernel breakdown sees it too), and asks for its breakdown over
//! exactly that window. The figure used is the energy attributed to the
//! process over the window, summed over domains: during the window the
//! process runs nothing but that kernel, so it is the kernel's energy
//! whatever method the daemon uses for per-kernel splits.

use crate::microbench::{EnergyMeter, MeteredEnergy};
use shared::MonotonicNs;
use std::path::Path;
use std::time::Duration;
use tabular_nn::meter::PhaseEnergy;
use tabular_nn::session::{ProcessSession, SessionError};

/// How long to wait after a window before asking for its energy, so the
/// daemon's samplers have passed its end.
pub const SETTLE: Duration = Duration::from_millis(100);

/// energyd measuring this process.
pub struct DaemonMeter {
    session: ProcessSession,
    settle: Duration,
}

impl DaemonMeter {
    /// Connects to energyd at `socket` and registers this process (with
    /// its children).
    pub fn connect(socket: &Path, client_name: &str) -> Result<Self, SessionError> {
        Ok(DaemonMeter {
            session: ProcessSession::connect(socket, client_name, true)?,
            settle: SETTLE,
        })
    }

    /// Waits `settle` instead of [`SETTLE`] after each window.
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// The session (training runs measured by the same connection).
    pub fn session(&mut self) -> &mut ProcessSession {
        &mut self.session
    }
}

/// The figure a microbenchmark keeps of a phase's energy.
pub fn metered(phase: &PhaseEnergy) -> MeteredEnergy {
    MeteredEnergy {
        joules: phase.process_j,
        uncertainty_j: phase.uncertainty_j,
        provenance: phase.provenance,
    }
}

impl EnergyMeter for DaemonMeter {
    fn measure(
        &mut self,
        kernel: &str,
        from: MonotonicNs,
        to: MonotonicNs,
    ) -> Result<MeteredEnergy, String> {
        self.session
            .measure_window(kernel, from, to, self.settle)
            .map(|p| metered(&p))
            .map_err(|e| e.to_string())
    }
}
