//! Energy and power units. Energy travels as joules in `f64`: a double holds
//! microjoule resolution up to about 9 GJ, far beyond any query window.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, AddAssign, Sub};

/// Energy in joules.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
pub struct Joules(pub f64);

/// Power in watts.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
pub struct Watts(pub f64);

impl Joules {
    /// From microjoules, the unit of powercap's `energy_uj`.
    pub fn from_uj(uj: u64) -> Self {
        Joules(uj as f64 * 1e-6)
    }
    /// Average power over `ns` nanoseconds; zero for an empty interval.
    pub fn over_ns(self, ns: u64) -> Watts {
        if ns == 0 {
            Watts(0.0)
        } else {
            Watts(self.0 / (ns as f64 * 1e-9))
        }
    }
}

impl Watts {
    /// Energy spent at this power during `ns` nanoseconds.
    pub fn for_ns(self, ns: u64) -> Joules {
        Joules(self.0 * ns as f64 * 1e-9)
    }
}

impl Add for Joules {
    type Output = Joules;
    fn add(self, rhs: Joules) -> Joules {
        Joules(self.0 + rhs.0)
    }
}
impl AddAssign for Joules {
    fn add_assign(&mut self, rhs: Joules) {
        self.0 += rhs.0;
    }
}
impl Sub for Joules {
    type Output = Joules;
    fn sub(self, rhs: Joules) -> Joules {
        Joules(self.0 - rhs.0)
    }
}

impl fmt::Display for Joules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.6} J", self.0)
    }
}
impl fmt::Display for Watts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3} W", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_and_energy_convert_both_ways() {
        let e = Watts(10.0).for_ns(500_000_000);
        assert!((e.0 - 5.0).abs() < 1e-12);
        assert!((e.over_ns(500_000_000).0 - 10.0).abs() < 1e-12);
        assert_eq!(Joules(1.0).over_ns(0), Watts(0.0));
        assert!((Joules::from_uj(1_500_000).0 - 1.5).abs() < 1e-12);
    }
}
