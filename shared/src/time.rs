//! The one timestamp type: nanoseconds on CLOCK_MONOTONIC.
//!
//! energyd, its samplers, and every client that reports kernel spans take
//! their timestamps from the same clock, so spans and samples can be compared
//! without conversion. CLOCK_MONOTONIC is shared by all processes of a boot
//! and never jumps with wall-clock changes.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Nanoseconds since an arbitrary point of CLOCK_MONOTONIC (boot, in practice).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct MonotonicNs(pub u64);

impl MonotonicNs {
    /// Reads CLOCK_MONOTONIC now.
    pub fn now() -> Self {
        // CLOCK_MONOTONIC is always available on Linux; clock_gettime only
        // fails for an invalid clock id, so failure here is a kernel bug.
        let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .expect("CLOCK_MONOTONIC is always readable on Linux");
        Self(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
    }

    /// Nanoseconds as a plain integer.
    pub const fn as_ns(self) -> u64 {
        self.0
    }

    /// Seconds as a float (for display and rate arithmetic).
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// `self - earlier`, saturating at zero.
    pub const fn saturating_sub(self, earlier: MonotonicNs) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// `self + ns`, saturating.
    pub const fn saturating_add_ns(self, ns: u64) -> MonotonicNs {
        MonotonicNs(self.0.saturating_add(ns))
    }

    /// `self - ns`, saturating at zero.
    pub const fn saturating_sub_ns(self, ns: u64) -> MonotonicNs {
        MonotonicNs(self.0.saturating_sub(ns))
    }
}

impl fmt::Display for MonotonicNs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ns", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_does_not_go_back() {
        let a = MonotonicNs::now();
        let b = MonotonicNs::now();
        assert!(b >= a);
        assert!(a.as_ns() > 0);
    }

    #[test]
    fn saturating_arithmetic() {
        assert_eq!(MonotonicNs(5).saturating_sub(MonotonicNs(9)), 0);
        assert_eq!(MonotonicNs(9).saturating_sub(MonotonicNs(5)), 4);
        assert_eq!(
            MonotonicNs(u64::MAX).saturating_add_ns(1),
            MonotonicNs(u64::MAX)
        );
        assert_eq!(MonotonicNs(3).saturating_sub_ns(4), MonotonicNs(0));
    }
}
