//! Periods of a limit: `"250ms"`, `"1s"`, `"1m"`, `"1h"`, `"1d"`, parsed and displayed.

use std::fmt;
use std::str::FromStr;

use crate::clock::NANOS_PER_MILLI;
use crate::error::{Error, Result};

/// The longest period a limit may have: 365 days.
pub const MAX_PERIOD_MS: u64 = 365 * DAY_MS;

const SECOND_MS: u64 = 1_000;
const MINUTE_MS: u64 = 60 * SECOND_MS;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;

/// Units from the largest down, so display picks the largest that divides exactly.
const UNITS: [(&str, u64); 5] = [
    ("d", DAY_MS),
    ("h", HOUR_MS),
    ("m", MINUTE_MS),
    ("s", SECOND_MS),
    ("ms", 1),
];

const FIX: &str = "write a positive whole number followed by one of ms, s, m, h, d (for example \"250ms\", \"1m\", \"1d\")";

/// The period `per` of a limit: a whole number of milliseconds, 1 ms to 365 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    ms: u64,
}

impl Period {
    /// A period of `ms` milliseconds, checked against the allowed range.
    pub fn from_millis(ms: u64) -> Result<Self> {
        if ms == 0 {
            return Err(Error::invalid(
                None,
                format!("period 0ms is invalid: the period must be positive; {FIX}"),
            ));
        }
        if ms > MAX_PERIOD_MS {
            return Err(Error::invalid(
                None,
                format!(
                    "period {} is too long: the longest period is 365d",
                    Period { ms }
                ),
            ));
        }
        Ok(Period { ms })
    }

    /// A period given in (possibly fractional) seconds, as Python allows; it must be a
    /// whole number of milliseconds.
    pub fn from_secs_f64(seconds: f64) -> Result<Self> {
        if !seconds.is_finite() || seconds <= 0.0 {
            return Err(Error::invalid(
                None,
                format!("period {seconds} seconds is invalid: the period must be a positive number of seconds, or {FIX}"),
            ));
        }
        let ms = seconds * 1000.0;
        let whole = ms.round();
        if (ms - whole).abs() > 1e-6 * whole.max(1.0) || whole < 1.0 {
            return Err(Error::invalid(
                None,
                format!("period {seconds} seconds is not a whole number of milliseconds: round it to milliseconds"),
            ));
        }
        if whole > MAX_PERIOD_MS as f64 {
            return Err(Error::invalid(
                None,
                format!("period {seconds} seconds is too long: the longest period is 365d"),
            ));
        }
        Period::from_millis(whole as u64)
    }

    /// The period in milliseconds.
    pub fn as_millis(self) -> u64 {
        self.ms
    }

    /// The period in nanoseconds.
    pub fn as_nanos(self) -> u64 {
        self.ms * NANOS_PER_MILLI
    }
}

impl FromStr for Period {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let digits_end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits_end);
        if text.is_empty() {
            return Err(Error::invalid(None, format!("period \"\" is empty: {FIX}")));
        }
        if number.is_empty() {
            return Err(Error::invalid(
                None,
                format!("period {text:?} does not start with a whole number: {FIX}"),
            ));
        }
        if unit.is_empty() {
            return Err(Error::invalid(
                None,
                format!("period {text:?} has no unit: {FIX}"),
            ));
        }
        let Some(&(_, unit_ms)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            let hint = if unit.chars().any(char::is_uppercase) {
                " (units are lower-case: \"M\" could mean minute or month)"
            } else {
                ""
            };
            return Err(Error::invalid(
                None,
                format!("period {text:?} has unknown unit {unit:?}{hint}: {FIX}"),
            ));
        };
        let too_long = || {
            Error::invalid(
                None,
                format!("period {text:?} is too long: the longest period is 365d"),
            )
        };
        let count: u64 = number.parse().map_err(|_| too_long())?;
        let ms = count.checked_mul(unit_ms).ok_or_else(too_long)?;
        if ms == 0 {
            return Err(Error::invalid(
                None,
                format!("period {text:?} is zero: the period must be positive; {FIX}"),
            ));
        }
        if ms > MAX_PERIOD_MS {
            return Err(too_long());
        }
        Ok(Period { ms })
    }
}

impl fmt::Display for Period {
    /// The normalised form: the largest unit that divides the period exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, unit_ms) = UNITS
            .iter()
            .find(|(_, unit_ms)| self.ms.is_multiple_of(*unit_ms))
            .copied()
            .unwrap_or(("ms", 1));
        write!(f, "{}{name}", self.ms / unit_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> u64 {
        text.parse::<Period>().unwrap().as_millis()
    }

    fn rejected(text: &str) -> String {
        match text.parse::<Period>() {
            Err(Error::InvalidArgument { message, .. }) => message,
            other => panic!("{text:?} should be rejected, got {other:?}"),
        }
    }

    #[test]
    fn parses_every_unit() {
        assert_eq!(ms("250ms"), 250);
        assert_eq!(ms("1s"), 1_000);
        assert_eq!(ms("1m"), 60_000);
        assert_eq!(ms("1h"), 3_600_000);
        assert_eq!(ms("1d"), 86_400_000);
        assert_eq!(ms("365d"), MAX_PERIOD_MS);
    }

    #[test]
    fn displays_the_largest_exact_unit() {
        for (input, shown) in [
            ("60s", "1m"),
            ("1000ms", "1s"),
            ("90s", "90s"),
            ("24h", "1d"),
            ("1500ms", "1500ms"),
            ("250ms", "250ms"),
        ] {
            assert_eq!(input.parse::<Period>().unwrap().to_string(), shown);
        }
    }

    #[test]
    fn rejects_missing_unit() {
        assert!(rejected("10").contains("has no unit"));
    }

    #[test]
    fn rejects_upper_case_units() {
        let message = rejected("1M");
        assert!(message.contains("lower-case"), "{message}");
        rejected("1S");
        rejected("1MS");
    }

    #[test]
    fn rejects_zero_negative_and_empty() {
        assert!(rejected("0s").contains("zero"));
        assert!(rejected("0ms").contains("zero"));
        assert!(rejected("-1s").contains("whole number"));
        assert!(rejected("").contains("empty"));
        assert!(rejected("s").contains("whole number"));
    }

    #[test]
    fn rejects_unknown_units_and_fractions() {
        assert!(rejected("1w").contains("unknown unit"));
        assert!(rejected("1 s").contains("unknown unit"));
        assert!(rejected("1.5s").contains("unknown unit"));
        assert!(rejected("1us").contains("unknown unit"));
        assert!(rejected("1s ").contains("unknown unit"));
    }

    #[test]
    fn rejects_periods_over_a_year() {
        assert!(rejected("366d").contains("too long"));
        assert!(rejected("8761h").contains("too long"));
        assert!(rejected("99999999999999999999999d").contains("too long"));
    }

    #[test]
    fn seconds_must_be_whole_milliseconds() {
        assert_eq!(Period::from_secs_f64(0.25).unwrap().as_millis(), 250);
        assert_eq!(Period::from_secs_f64(60.0).unwrap().to_string(), "1m");
        assert_eq!(Period::from_secs_f64(0.1).unwrap().as_millis(), 100);
        assert!(Period::from_secs_f64(0.0001).is_err());
        assert!(Period::from_secs_f64(1.0005).is_err());
        assert!(Period::from_secs_f64(-1.0).is_err());
        assert!(Period::from_secs_f64(f64::NAN).is_err());
        assert!(Period::from_secs_f64(f64::INFINITY).is_err());
        assert!(Period::from_secs_f64(366.0 * 86_400.0).is_err());
    }

    #[test]
    fn from_millis_checks_range() {
        assert!(Period::from_millis(0).is_err());
        assert!(Period::from_millis(MAX_PERIOD_MS + 1).is_err());
        assert_eq!(Period::from_millis(1).unwrap().to_string(), "1ms");
    }
}
