//! Conversions at the crate's edges: from what the daemon holds (a
//! [`SourceInfo`], CPU-time samples of the activity tracker, the span
//! records of a [`SpanBatch`](shared::protocol::SpanBatch)) to this
//! crate's inputs, and from its answers to the protocol's [`DomainShare`]
//! and [`KernelEnergy`]. Plain data in, plain data out, so this crate does
//! not depend on the sampling crate.

use crate::kernels::{KernelAttribution, KernelSpan};
use crate::process::ProcessShare;
use crate::series::SeriesMeta;
use shared::protocol::{DomainShare, KernelEnergy, SpanRecord};
use shared::source::{SourceId, SourceInfo};
use shared::MonotonicNs;

impl From<&SourceInfo> for SeriesMeta {
    fn from(info: &SourceInfo) -> Self {
        SeriesMeta {
            provenance: info.provenance,
            resolution_j: info.resolution_j,
            update_period_ns: info.update_period_ns,
            reading: info.reading,
        }
    }
}

/// `(t, cumulative CPU ns)` as the activity tracker gives them
/// (`ActivityTracker::cpu_samples`), as an activity series' samples.
pub fn cpu_series(samples: &[(MonotonicNs, u64)]) -> CumulativeSamples {
    samples.iter().map(|&(t, ns)| (t, ns as f64)).collect()
}

/// Samples of a cumulative series, `(time, value)`.
pub type CumulativeSamples = Vec<(MonotonicNs, f64)>;

/// `(t, busy ns, total ns)` machine samples (`ActivityTracker::machine_samples`)
/// as the `(busy, capacity)` samples of a
/// [`MachineActivity`](crate::series::MachineActivity).
pub fn machine_cpu_series(
    samples: &[(MonotonicNs, u64, u64)],
) -> (CumulativeSamples, CumulativeSamples) {
    samples
        .iter()
        .map(|&(t, busy, total)| ((t, busy as f64), (t, total as f64)))
        .unzip()
}

/// The spans of process `pid` among `records`, as [`KernelSpan`]s (name
/// indices are kept, so the caller's name table still applies).
pub fn spans_of_process(records: &[SpanRecord], pid: u32) -> Vec<KernelSpan> {
    records
        .iter()
        .filter(|r| r.pid == pid)
        .map(|r| KernelSpan {
            name: r.name,
            start: r.start,
            end: r.end,
            tid: r.tid,
        })
        .collect()
}

/// A process's share of one source as the protocol's [`DomainShare`];
/// `kernels` (the attribution of that share, if one was made) gives the
/// unattributed part, otherwise all of `process_j` is unattributed.
pub fn domain_share(
    source: SourceId,
    share: &ProcessShare,
    kernels: Option<&KernelAttribution>,
) -> DomainShare {
    DomainShare {
        source,
        machine_j: share.machine_j,
        process_j: share.process_j,
        process_dynamic_j: share.process_dynamic_j,
        activity_share: share.activity_share,
        unattributed_j: kernels.map_or(share.process_j, |k| k.unattributed_j),
        uncertainty_j: share.uncertainty_j,
        provenance: share.provenance,
    }
}

/// The kernel types of an attribution as the protocol's [`KernelEnergy`],
/// named from `names` (a missing name shows as `#<index>`).
pub fn kernel_energies(attribution: &KernelAttribution, names: &[String]) -> Vec<KernelEnergy> {
    attribution
        .types
        .iter()
        .map(|t| KernelEnergy {
            name: names
                .get(t.name as usize)
                .cloned()
                .unwrap_or_else(|| format!("#{}", t.name)),
            count: t.count,
            total_time_ns: t.total_time_ns,
            energy_j: t.energy_j,
            share: t.share,
            uncertainty_j: t.uncertainty_j,
            confidence: t.confidence,
            method: t.method,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_samples_split_into_busy_and_capacity() {
        let (busy, cap) = machine_cpu_series(&[(MonotonicNs(1), 5, 20), (MonotonicNs(2), 7, 40)]);
        assert_eq!(busy, vec![(MonotonicNs(1), 5.0), (MonotonicNs(2), 7.0)]);
        assert_eq!(cap, vec![(MonotonicNs(1), 20.0), (MonotonicNs(2), 40.0)]);
    }

    #[test]
    fn spans_are_filtered_by_process() {
        let rec = |pid, name| SpanRecord {
            name,
            start: MonotonicNs(10),
            end: MonotonicNs(20),
            pid,
            tid: 3,
        };
        let spans = spans_of_process(&[rec(1, 0), rec(2, 1), rec(1, 2)], 1);
        assert_eq!(spans.iter().map(|s| s.name).collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(spans[0].tid, 3);
    }
}
