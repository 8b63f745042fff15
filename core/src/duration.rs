//! Human durations, the one syntax of the config file, `purgectl` and
//! `purgesim`: a number and a unit ("500ms", "10s", "1.5s", "24h"), or a
//! sum of them ("1m30s"). Units: us, ms, s, m, h, d. A bare "0" is zero.
//!
//! A few lines of parser instead of a dependency: the syntax is tiny, and
//! owning it keeps the error messages in our words.

use std::time::Duration;

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing to parse.
    #[error("empty duration")]
    Empty,
    /// Not a number followed by a unit.
    #[error("duration {0:?}: expected a number followed by a unit (us, ms, s, m, h, d), e.g. 10s or 500ms")]
    Malformed(String),
    /// A unit this syntax does not know.
    #[error("duration {0:?}: unknown unit {1:?} (use us, ms, s, m, h or d)")]
    UnknownUnit(String, String),
    /// Larger than a `Duration` holds.
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

const UNITS: [(&str, u128); 6] = [
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
];

/// Parses a human duration (see the module docs). Fractions below a
/// nanosecond are dropped.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let malformed = || DurationError::Malformed(input.to_string());
    let overflow = || DurationError::Overflow(input.to_string());
    let mut total_ns: u128 = 0;
    let mut rest = s;
    // Each pass consumes at least one digit, so the loop ends.
    while !rest.is_empty() {
        let (whole, frac, after) = split_number(rest).ok_or_else(malformed)?;
        let unit_len = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
        let unit = &after[..unit_len];
        rest = &after[unit_len..];
        let per_unit = match UNITS.iter().find(|(u, _)| *u == unit) {
            Some((_, ns)) => *ns,
            None if unit.is_empty() => return Err(malformed()),
            None => return Err(DurationError::UnknownUnit(input.to_string(), unit.to_string())),
        };
        let whole: u128 = whole.parse().map_err(|_| overflow())?;
        let mut part = whole.checked_mul(per_unit).ok_or_else(overflow)?;
        // Nine fraction digits reach a nanosecond of any unit.
        let frac = &frac[..frac.len().min(9)];
        if !frac.is_empty() {
            let digits: u128 = frac.parse().map_err(|_| malformed())?;
            part += digits * per_unit / 10u128.pow(frac.len() as u32);
        }
        total_ns = total_ns.checked_add(part).ok_or_else(overflow)?;
    }
    let secs = u64::try_from(total_ns / 1_000_000_000).map_err(|_| overflow())?;
    Ok(Duration::new(secs, (total_ns % 1_000_000_000) as u32))
}

/// Splits a leading `123` or `1.25` into whole digits, fraction digits
/// and the rest; `None` without a leading digit or with a bare dot.
fn split_number(s: &str) -> Option<(&str, &str, &str)> {
    let whole_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if whole_len == 0 {
        return None;
    }
    let (whole, rest) = s.split_at(whole_len);
    let Some(after_dot) = rest.strip_prefix('.') else { return Some((whole, "", rest)) };
    let frac_len = after_dot.find(|c: char| !c.is_ascii_digit()).unwrap_or(after_dot.len());
    if frac_len == 0 {
        return None;
    }
    Some((whole, &after_dot[..frac_len], &after_dot[frac_len..]))
}

/// Renders a duration exactly in the largest unit that divides it ("24h",
/// "500ms", "1500ms"), so that [`parse_duration`] reads back the same value.
/// Sub-microsecond parts are rounded down.
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos() / 1_000 * 1_000;
    if ns == 0 {
        return "0s".into();
    }
    // Days read worse than hours in a config ("24h"); start at hours.
    for (unit, per) in &UNITS[1..] {
        if ns.is_multiple_of(*per) {
            return format!("{}{unit}", ns / per);
        }
    }
    format!("{}us", ns / 1_000)
}

/// Serde adapters: a `Duration` as a human string (`#[serde(with = ..)]`),
/// so every config of the project writes durations the same way.
pub mod human {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes a `Duration` as, e.g., `"500ms"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    /// Reads a `Duration` written as, e.g., `"500ms"` or `"1m30s"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration(" 0s ").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("0.25m").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("2.5ms").unwrap(), Duration::from_micros(2500));
        assert_eq!(parse_duration("1.0000000019s").unwrap(), Duration::new(1, 1));
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(parse_duration("").unwrap_err(), DurationError::Empty);
        assert!(matches!(parse_duration("10").unwrap_err(), DurationError::Malformed(_)));
        assert!(matches!(parse_duration("s").unwrap_err(), DurationError::Malformed(_)));
        assert!(matches!(parse_duration("-1s").unwrap_err(), DurationError::Malformed(_)));
        assert!(matches!(parse_duration("1.s").unwrap_err(), DurationError::Malformed(_)));
        assert!(matches!(parse_duration(".5s").unwrap_err(), DurationError::Malformed(_)));
        assert!(matches!(parse_duration("3w").unwrap_err(), DurationError::UnknownUnit(_, u) if u == "w"));
        assert!(matches!(
            parse_duration("99999999999999999999999999999999999999s").unwrap_err(),
            DurationError::Overflow(_)
        ));
        assert!(matches!(parse_duration("18446744073709551616s").unwrap_err(), DurationError::Overflow(_)));
    }

    #[test]
    fn formats_exactly_and_reads_back() {
        for (d, s) in [
            (Duration::from_millis(250), "250ms"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(86_400), "24h"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_micros(7), "7us"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(format_duration(d), s);
            assert_eq!(parse_duration(s).unwrap(), d);
        }
    }
}
