//! The one wrap-aware counter type. Every source that reads a hardware
//! counter (powercap `energy_uj`, RAPL MSRs, the perf `power` PMU, NVML total
//! energy) feeds its raw values through a [`WrappingCounter`] and never does
//! wraparound arithmetic itself.
//!
//! Limit: a counter that wraps more than once between two readings cannot be
//! told apart from one that wrapped once (the values are the same). So the
//! sampling period is sized from the counter's range, not left to chance:
//! the engine reads every wrapping counter at least twice per wrap time at
//! [`MAX_PLAUSIBLE_POWER_W`] ([`max_period_ns_for_range`]), shortening a
//! configured period that is longer than that. Between two reads less than
//! half a range then passes, so even one wrap is unambiguous.
//!
//! Wrap times of real counters: a 32-bit RAPL status register in units of
//! 2⁻¹⁴ J (61 µJ, most Intel parts; powercap's `max_energy_range_uj` is then
//! 262 143 328 850) holds 2¹⁸ J = 262 kJ, about 22 minutes at 200 W; in AMD's
//! 2⁻¹⁶ J units (15.3 µJ) it holds 65.5 kJ, about 3.6 minutes at 300 W. The
//! 2 kW bound gives safe periods of 65 s and 16 s: the default 1 ms RAPL
//! period is four orders of magnitude inside them. Only fixture counters with
//! tiny ranges ever make the engine shorten a period.

use thiserror::Error;

/// Upper bound on the power any single counter we read can see: above the
/// largest CPU package (about 500 W) and GPU (about 1 kW) made so far, with
/// margin. Used only to size sampling periods.
pub const MAX_PLAUSIBLE_POWER_W: f64 = 2000.0;

/// Longest sampling period at which a counter holding `range_j` joules
/// cannot wrap more than once between two reads, with a factor 2 margin:
/// half the time the counter takes to wrap at [`MAX_PLAUSIBLE_POWER_W`].
///
/// ```
/// use sampling::counter::max_period_ns_for_range;
/// // 2^32 units of 2^-14 J (Intel RAPL): 262 144 J, 65.5 s at 2 kW.
/// assert_eq!(max_period_ns_for_range(262_144.0), 65_536_000_000);
/// // A 1 J fixture counter must be read every 250 µs.
/// assert_eq!(max_period_ns_for_range(1.0), 250_000);
/// ```
pub fn max_period_ns_for_range(range_j: f64) -> u64 {
    let ns = (range_j * 1e9 / (2.0 * MAX_PLAUSIBLE_POWER_W)).round();
    if ns.is_finite() && ns >= 1.0 {
        ns as u64
    } else {
        1
    }
}

/// A raw reading that cannot come from the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("raw counter value {raw} is above the counter's maximum {max_value}")]
pub struct CounterOutOfRange {
    /// The value read.
    pub raw: u64,
    /// The largest value the counter can hold.
    pub max_value: u64,
}

/// Accumulates a counter that counts up to `max_value` and then restarts at 0.
///
/// Invariant: `total()` is monotonic and equals the increase of the counter
/// since the first reading, assuming at most one wrap between readings.
///
/// ```
/// use sampling::counter::WrappingCounter;
///
/// // A counter holding 0..=999 (max_energy_range_uj = 999).
/// let mut c = WrappingCounter::new(999);
/// assert_eq!(c.update(990).unwrap(), 0); // the first reading is the origin
/// assert_eq!(c.update(995).unwrap(), 5);
/// assert_eq!(c.update(3).unwrap(), 8); // 995 -> 999 -> 0 -> 3: one wrap
/// assert_eq!(c.total(), 13);
/// assert_eq!(c.wraps(), 1);
/// assert!(c.update(1000).is_err()); // cannot come from this counter
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappingCounter {
    max_value: u64,
    last_raw: Option<u64>,
    total: u128,
    wraps: u64,
}

impl WrappingCounter {
    /// A counter whose values lie in `0..=max_value` (so it wraps modulo
    /// `max_value + 1`). Use `u32::MAX` for 32-bit registers, `u64::MAX` for
    /// counters the kernel already extends to 64 bits.
    pub fn new(max_value: u64) -> Self {
        Self {
            max_value,
            last_raw: None,
            total: 0,
            wraps: 0,
        }
    }

    /// Feeds one raw reading; returns the increase since the previous one
    /// (0 for the first reading). A reading below the previous one is taken
    /// as exactly one wrap.
    pub fn update(&mut self, raw: u64) -> Result<u64, CounterOutOfRange> {
        if raw > self.max_value {
            return Err(CounterOutOfRange {
                raw,
                max_value: self.max_value,
            });
        }
        let delta = match self.last_raw {
            None => 0,
            Some(last) if raw >= last => raw - last,
            Some(last) => {
                self.wraps += 1;
                // (max - last) + 1 + raw, in u128 so max_value = u64::MAX works.
                let modulus = self.max_value as u128 + 1;
                (modulus - last as u128 + raw as u128) as u64
            }
        };
        self.last_raw = Some(raw);
        self.total += delta as u128;
        Ok(delta)
    }

    /// Increase since the first reading, in counter units.
    pub fn total(&self) -> u128 {
        self.total
    }

    /// Wraparounds corrected so far.
    pub fn wraps(&self) -> u64 {
        self.wraps
    }

    /// The largest raw value.
    pub fn max_value(&self) -> u64 {
        self.max_value
    }

    /// The last raw value fed, if any.
    pub fn last_raw(&self) -> Option<u64> {
        self.last_raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn full_width_counter_wraps_without_overflow() {
        let mut c = WrappingCounter::new(u64::MAX);
        c.update(u64::MAX - 1).unwrap();
        assert_eq!(c.update(2).unwrap(), 4);
        assert_eq!(c.wraps(), 1);
    }

    #[test]
    fn thirty_two_bit_register_wraps() {
        let mut c = WrappingCounter::new(u32::MAX as u64);
        c.update(u32::MAX as u64 - 10).unwrap();
        assert_eq!(c.update(5).unwrap(), 16);
        assert_eq!(c.total(), 16);
    }

    proptest! {
        /// Feeding a counter the raw values of a true running sum (taken
        /// modulo the range) recovers the sum, as long as each step is
        /// smaller than the range.
        #[test]
        fn recovers_true_total(max in 10u64..1_000_000, steps in proptest::collection::vec(0u64..1_000_000, 1..200), start in 0u64..1_000_000) {
            let modulus = max + 1;
            let mut c = WrappingCounter::new(max);
            let mut truth = start % modulus;
            c.update(truth).unwrap();
            let mut expected: u128 = 0;
            for s in steps {
                let s = s % modulus; // at most one wrap per step
                truth = (truth + s) % modulus;
                expected += s as u128;
                c.update(truth).unwrap();
            }
            prop_assert_eq!(c.total(), expected);
        }
    }
}
